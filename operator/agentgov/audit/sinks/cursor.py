"""A sink's cursor: how far into the local audit log the sink has been delivered, kept on disk.

Filebeat's registry model: the local log is the spool, and each sink keeps one small file next
to it, ``<log>.<sink>.cursor``, saying which record it delivered last (``seq`` and ``hash``)
and where the next one starts (the log file's inode and a byte offset; inodes survive
rotation, which renames files). It is rewritten atomically (a temporary file, fsync, rename,
fsync of the directory) after each delivered batch, so after a crash a sink resumes from the
last batch it knows was delivered, never skipping one.

``inflight`` is the write-ahead note of a batch being delivered whose boundaries must not
change on a retry (S3 objects are keyed by their first and last seq): after a crash the same
records are sent again under the same key, overwriting rather than duplicating.

``pending_from(log)`` is for whoever prunes the local log: the lowest seq some sink still
needs. Pruning past it loses records for that sink (they are reported as a gap).

I/O is limited to reading and atomically replacing these small files; no network here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

CURSOR_VERSION: Final = 1
CURSOR_SUFFIX: Final = ".cursor"
DEAD_LETTER_SUFFIX: Final = ".deadletter.jsonl"
MAX_CURSOR_BYTES: Final = 64 * 1024


class CursorError(ValueError):
    """The cursor file exists but cannot be used (names the file and the problem)."""


@dataclass(frozen=True)
class Inflight:
    """A batch being delivered: its first and last seq (the records between them, in file order)."""

    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class Cursor:
    """What one sink has delivered of one log."""

    destination: str  # where the sink delivers (no credentials): a new destination starts over
    seq: int = -1  # the last record delivered; -1: none yet
    hash: str | None = None
    inode: int | None = None  # the log file the next record is read from ...
    offset: int = 0  # ... and where in it
    # The first record this cursor ever delivered: tells "the log was cut short" from "a new log".
    origin_seq: int | None = None
    origin_hash: str | None = None
    inflight: Inflight | None = None
    delivered: int = 0  # records delivered since the cursor was created (for status)


def cursor_path(log_path: Path, sink: str) -> Path:
    return log_path.with_name(f"{log_path.name}.{sink}{CURSOR_SUFFIX}")


def dead_letter_path(log_path: Path, sink: str) -> Path:
    return log_path.with_name(f"{log_path.name}.{sink}{DEAD_LETTER_SUFFIX}")


def _int(data: dict[str, object], name: str, *, optional: bool = False) -> int | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CursorError(f"{name} is not an integer")
    return value


def _str(data: dict[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise CursorError(f"{name} is not a string")
    return value


def decode_cursor(payload: bytes) -> Cursor:
    """A cursor from its file's bytes; CursorError saying what is wrong. Pure."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise CursorError("not JSON") from None
    if not isinstance(data, dict):
        raise CursorError("not a JSON object")
    if data.get("version") != CURSOR_VERSION:
        raise CursorError(f"unknown version {data.get('version')!r}")
    destination = _str(data, "destination")
    if not destination:
        raise CursorError("destination is missing")
    inflight = data.get("inflight")
    parsed_inflight = None
    if inflight is not None:
        if not isinstance(inflight, dict):
            raise CursorError("inflight is not an object")
        first, last = _int(inflight, "first_seq"), _int(inflight, "last_seq")
        assert first is not None and last is not None
        if first > last:
            raise CursorError("inflight first_seq is after last_seq")
        parsed_inflight = Inflight(first, last)
    seq, offset, delivered = _int(data, "seq"), _int(data, "offset"), _int(data, "delivered")
    assert seq is not None and offset is not None and delivered is not None
    if seq < -1 or offset < 0 or delivered < 0:
        raise CursorError("seq, offset or delivered is negative")
    return Cursor(
        destination=destination, seq=seq, hash=_str(data, "hash"), inode=_int(data, "inode", optional=True),
        offset=offset, origin_seq=_int(data, "origin_seq", optional=True), origin_hash=_str(data, "origin_hash"),
        inflight=parsed_inflight, delivered=delivered,
    )


def encode_cursor(cursor: Cursor) -> bytes:
    data = {"version": CURSOR_VERSION, **asdict(cursor)}
    return json.dumps(data, sort_keys=True).encode() + b"\n"


def read_cursor(path: Path) -> Cursor | None:
    """The cursor at ``path``; None when there is none; CursorError when it is unusable."""
    try:
        with open(path, "rb") as f:
            payload = f.read(MAX_CURSOR_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CursorError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(payload) > MAX_CURSOR_BYTES:
        raise CursorError(f"{path}: larger than {MAX_CURSOR_BYTES} bytes")
    try:
        return decode_cursor(payload)
    except CursorError as e:
        raise CursorError(f"{path}: {e}") from None


def write_cursor(path: Path, cursor: Cursor) -> None:
    """Replace the cursor file atomically and durably (it survives a crash right after)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(encode_cursor(cursor))
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def set_aside(path: Path) -> Path:
    """Move an unusable cursor out of the way (kept for inspection), returning its new name."""
    aside = path.with_name(path.name + ".unusable")
    os.replace(path, aside)
    return aside


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def pending_from(log_path: Path) -> int | None:
    """The lowest seq not yet delivered by every sink with a cursor next to ``log_path``;
    None when no sink has a cursor. Unreadable cursors count as "needs everything" (0)."""
    lowest: int | None = None
    prefix = log_path.name + "."
    try:
        entries = list(log_path.parent.iterdir())
    except FileNotFoundError:
        return None
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(CURSOR_SUFFIX)):
            continue
        try:
            cursor = read_cursor(entry)
        except CursorError:
            needed = 0
        else:
            if cursor is None:
                continue
            needed = cursor.seq + 1 if cursor.inflight is None else min(cursor.seq + 1, cursor.inflight.first_seq)
        lowest = needed if lowest is None else min(lowest, needed)
    return lowest
