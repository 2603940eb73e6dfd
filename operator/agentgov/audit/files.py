"""Where an audit log's records live on disk: the active file and its rotated predecessors.

The active file is ``<path>`` (e.g. ``audit.jsonl``); a rotated file is
``<path>.<seq of its first record, zero-padded to 12 digits>``, so sorting the names sorts the
files by time and the hash chain runs from one file into the next. Next to them: ``<path>.head``
(the writer's note of the last record) and ``<path>.anchor`` (where the chain restarts after
retention pruned the oldest files).

Naming, listing and line reading; this module never writes or deletes anything. Lines longer
than ``MAX_LINE_BYTES`` (no record comes near it) are reported as oversized and never held in
memory whole, so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

SEQ_DIGITS: Final = 12
MAX_LINE_BYTES: Final = 1024 * 1024
CHUNK_BYTES: Final = 64 * 1024
MAX_SMALL_FILE_BYTES: Final = 64 * 1024  # a head or anchor file is a few hundred bytes


def rotated_name(path: Path, first_seq: int) -> Path:
    """The name a file whose first record has ``first_seq`` gets when it is rotated out."""
    if first_seq < 0:
        raise ValueError(f"a rotated file's first seq cannot be negative: {first_seq}")
    return path.with_name(f"{path.name}.{first_seq:0{SEQ_DIGITS}d}")


def rotated_seq(path: Path, candidate: Path) -> int | None:
    """The first seq encoded in ``candidate``'s name when it is a rotated file of ``path``."""
    match = re.fullmatch(re.escape(path.name) + r"\.(\d{%d})" % SEQ_DIGITS, candidate.name)
    return int(match.group(1)) if match else None


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of the log at ``path``, oldest first (their names sort that way)."""
    path = Path(path)
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return []
    found = [(seq, entry) for entry in entries if (seq := rotated_seq(path, entry)) is not None and entry.is_file()]
    return [entry for _, entry in sorted(found)]


def log_files(path: Path) -> list[Path]:
    """Every file holding records of the log at ``path``: rotated ones oldest first, then the active one.

    The active file is listed only when it exists.
    """
    path = Path(path)
    files = rotated_files(path)
    if path.is_file():
        files.append(path)
    return files


def head_path_for(path: Path) -> Path:
    """``<path>.head``: the last seq and hash the writer wrote (so cut-off records are noticed)."""
    return path.with_name(path.name + ".head")


def anchor_path_for(path: Path) -> Path:
    """``<path>.anchor``: the seq and hash the remaining chain starts from after pruning."""
    return path.with_name(path.name + ".anchor")


@dataclass(frozen=True)
class Line:
    """One line of a log file: its number (from 1), its bytes without the newline, whether a
    newline ended it, and whether it was too long to keep (``raw`` is then empty)."""

    number: int
    raw: bytes
    complete: bool
    oversized: bool = False


def read_lines(stream: BinaryIO) -> Iterator[Line]:
    """The lines of ``stream`` in order, each at most ``MAX_LINE_BYTES`` long in memory."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            yield Line(number, chunk[:-1], True)
            continue
        if len(chunk) <= MAX_LINE_BYTES:
            yield Line(number, chunk, False)  # the last line, without a newline
            return
        complete = False
        while rest := stream.readline(CHUNK_BYTES):  # skip the remainder of the oversized line
            if rest.endswith(b"\n"):
                complete = True
                break
        yield Line(number, b"", complete, oversized=True)
        if not complete:
            return


def open_log(path: Path) -> BinaryIO:
    """A log file for reading; ``.gz`` files (sink copies such as S3 objects) are decompressed."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def reverse_lines(path: Path) -> Iterator[bytes]:
    """The lines of an uncompressed file, last first (without newlines; oversized lines skipped)."""
    with open(path, "rb") as f:
        position = f.seek(0, os.SEEK_END)
        buffer = b""
        skipping = False  # inside an oversized line: drop bytes until its start is found
        first_chunk = True
        while position > 0:
            size = min(CHUNK_BYTES, position)
            position -= size
            f.seek(position)
            data = f.read(size)
            if first_chunk and data.endswith(b"\n"):
                data = data[:-1]
            first_chunk = False
            buffer = data + buffer
            parts = buffer.split(b"\n")
            buffer = parts[0]
            for part in reversed(parts[1:]):
                if skipping:
                    skipping = False  # ``part`` was the oversized line's head
                    continue
                yield part
            if len(buffer) > MAX_LINE_BYTES:
                buffer, skipping = b"", True
        if buffer and not skipping:
            yield buffer


def load_json(raw: bytes) -> object:
    """``json.loads`` for bytes from a file anyone may have written: ValueError for anything
    that is not JSON, nesting too deep for the parser included (it would raise RecursionError)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_small_json(path: Path) -> object:
    """A small JSON file (a head, an anchor); FileNotFoundError if absent, ValueError if it is
    not JSON or far larger than such a file can be."""
    with open(path, "rb") as f:
        data = f.read(MAX_SMALL_FILE_BYTES + 1)
    if len(data) > MAX_SMALL_FILE_BYTES:
        raise ValueError("far larger than such a file")
    return load_json(data)
