"""Reading the local audit log for shipping: its lines in order, across rotated files, from a cursor.

The writer appends JSON lines to ``<log>`` and rotates it to ``<log>.<first seq, 12 digits>``
(``agentgov.audit.files.log_files`` lists them oldest first, the active file last). The reader
follows one position — a file's inode and a byte offset — because a rename keeps the inode:
reading goes on in the same file after it was rotated, and moves to the next file only at the
end of a file that is no longer the active one.

Only complete lines are read from the active file (the writer may be in the middle of one);
a rotated file's last line without a newline is reported cut short. A line that is not a
usable record (not JSON, no ``seq``/``hash``/``timestamp``, over ``files.MAX_LINE_BYTES``) is
returned with its ``problem`` so the shipper can park it in the dead-letter file: nothing is
skipped silently.

Resuming (``LogReader.locate``): the cursor's inode and offset are trusted only when the line
that ends there is the record the cursor names (its hash); otherwise the files are scanned for
that record by seq and hash, and ``resume_point`` (pure) decides where to go on — after it;
at the first later record when it was pruned (a gap, reported); at the beginning when the log
is a new one; at the end when the log was cut short.

Reads files, never writes them; no network.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from agentgov.audit.files import MAX_LINE_BYTES, log_files
from agentgov.audit.sinks.cursor import Cursor

READ_CHUNK: Final = 256 * 1024
# How much of an unusable line a dead letter keeps.
PROBLEM_SNIPPET_BYTES: Final = 4096


@dataclass(frozen=True)
class LogLine:
    """One complete line of the local log as read for shipping."""

    raw: bytes  # without its newline
    inode: int  # the file it is in
    end: int  # the offset just after its newline
    seq: int | None = None
    hash: str | None = None
    timestamp: float | None = None  # epoch seconds
    record: Mapping[str, object] | None = None
    problem: str | None = None  # why it cannot be shipped; None for a usable record

    @property
    def size(self) -> int:
        return len(self.raw) + 1


def parse_timestamp(value: object) -> float | None:
    """An ISO 8601 timestamp (``...Z`` or with an offset; naive means UTC) as epoch seconds."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def parse_line(raw: bytes, inode: int, end: int) -> LogLine:
    """What one line holds, or why it cannot be shipped. Pure."""
    try:
        record = json.loads(raw)
    except ValueError:
        return LogLine(raw, inode, end, problem="not a JSON record")
    if not isinstance(record, dict):
        return LogLine(raw, inode, end, problem="not a JSON object")
    seq, digest = record.get("seq"), record.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(digest, str):
        return LogLine(raw, inode, end, problem="seq or hash is missing")
    timestamp = parse_timestamp(record.get("timestamp"))
    if timestamp is None:
        return LogLine(raw, inode, end, seq=seq, hash=digest, problem="timestamp is missing or not ISO 8601")
    return LogLine(raw, inode, end, seq=seq, hash=digest, timestamp=timestamp, record=record)


# --- where to resume --------------------------------------------------------------------


@dataclass(frozen=True)
class Landmark:
    """A record's place: its file, where its line starts and ends, its seq and hash."""

    inode: int
    start: int
    end: int
    seq: int
    hash: str


ResumeKind = Literal["after", "gap", "beginning", "end"]


@dataclass(frozen=True)
class Resume:
    kind: ResumeKind
    inode: int | None  # None: the start of the oldest file
    offset: int
    message: str | None = None  # what the shipper should report (a gap, a new log, a cut log)


def resume_point(landmarks: Iterable[Landmark], cursor: Cursor) -> Resume:
    """Where to go on after ``cursor`` in a log whose records are ``landmarks`` (file order). Pure.

    - the cursor's record is there (same seq and hash): right after it;
    - a record with the cursor's seq but another hash: the log was replaced by a new one ->
      from the beginning (the new log has not been shipped);
    - it is gone but later records exist: it was pruned or deleted -> at the first later
      record, reporting the missing seqs as a gap;
    - nothing after it: if the first record this cursor delivered is still there, the log was
      cut short (records removed from its end) -> at the end; else a new log -> the beginning.
    """
    if cursor.seq < 0 or cursor.hash is None:
        return Resume("beginning", None, 0)
    first_later: Landmark | None = None
    last: Landmark | None = None
    replaced = origin_present = False
    for mark in landmarks:
        last = mark
        if mark.seq == cursor.seq:
            if mark.hash == cursor.hash:
                return Resume("after", mark.inode, mark.end)
            replaced = True
        if mark.seq == cursor.origin_seq and mark.hash == cursor.origin_hash:
            origin_present = True
        if first_later is None and mark.seq > cursor.seq:
            first_later = mark
    if replaced:
        return Resume("beginning", None, 0, f"seq {cursor.seq} in the log is not the record delivered last "
                                             "(a new log): shipping it from the beginning")
    if first_later is not None:
        missing = first_later.seq - cursor.seq - 1
        message = None
        if missing > 0:
            span = f"seq {cursor.seq + 1}" if missing == 1 else f"seq {cursor.seq + 1}-{first_later.seq - 1}"
            message = f"{missing} record(s) were removed from the log before they were delivered ({span})"
        return Resume("gap", first_later.inode, first_later.start, message)
    if last is None:
        return Resume("beginning", None, 0, None)
    if origin_present:
        return Resume("end", last.inode, last.end, f"the log ends at seq {last.seq}, before seq {cursor.seq} "
                                                    "delivered last (records were removed from its end)")
    return Resume("beginning", None, 0, "the log does not hold the records delivered so far (a new log): "
                                        "shipping it from the beginning")


# --- the reader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _File:
    path: Path
    inode: int
    size: int


class LogReader:
    """Reads a log's lines in order from a position that survives rotation. Blocking I/O: run
    it in a worker thread. Not thread-safe (one shipper, one reader)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inode: int | None = None  # None: the start of the oldest file
        self.offset = 0
        self._last: tuple[int, str] | None = None  # the last record read (seq, hash)
        self._origin: tuple[int, str] | None = None  # the first one
        # What happened while reading that the shipper should report (gaps, a new log).
        self.notices: list[str] = []

    def _files(self) -> list[_File]:
        found = []
        for path in log_files(self.path):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            found.append(_File(path, st.st_ino, st.st_size))
        return found

    # -- resuming --

    def locate(self, cursor: Cursor | None) -> Resume:
        """Position the reader after what ``cursor`` delivered; say how (see ``resume_point``)."""
        resume = Resume("beginning", None, 0) if cursor is None else self._fast_resume(cursor)
        if resume is None:
            assert cursor is not None
            resume = resume_point(self._landmarks(), cursor)
        self.inode, self.offset = resume.inode, resume.offset
        if cursor is not None and cursor.hash is not None and cursor.seq >= 0 and resume.kind != "beginning":
            self._last = (cursor.seq, cursor.hash)
            if cursor.origin_seq is not None and cursor.origin_hash is not None:
                self._origin = (cursor.origin_seq, cursor.origin_hash)
        return resume

    def _relocate(self) -> None:
        """After the file being read vanished or shrank: on after the last record read."""
        if self._last is None:
            self.inode, self.offset = None, 0
            return
        origin = self._origin or self._last
        resume = resume_point(self._landmarks(), Cursor("reader", seq=self._last[0], hash=self._last[1],
                                                        origin_seq=origin[0], origin_hash=origin[1]))
        self.inode, self.offset = resume.inode, resume.offset
        if resume.message:
            self.notices.append(resume.message)

    def _fast_resume(self, cursor: Cursor) -> Resume | None:
        """``Resume("after")`` when the line ending at the cursor's offset is its record."""
        if cursor.inode is None or cursor.hash is None or cursor.offset <= 0:
            return None
        for file in self._files():
            if file.inode != cursor.inode:
                continue
            if file.size < cursor.offset:
                return None
            line = self._line_ending_at(file, cursor.offset)
            if line is not None and line.hash == cursor.hash and line.seq == cursor.seq:
                return Resume("after", file.inode, cursor.offset)
            return None
        return None

    def _line_ending_at(self, file: _File, offset: int) -> LogLine | None:
        start = max(0, offset - MAX_LINE_BYTES - 1)
        try:
            with open(file.path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != file.inode:
                    return None
                f.seek(start)
                data = f.read(offset - start)
        except OSError:
            return None
        if not data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut < 0 and start > 0:
            return None
        return parse_line(data[cut + 1:-1], file.inode, offset)

    def _landmarks(self) -> Iterator[Landmark]:
        for file in self._files():
            for line, start in self._scan(file):
                if line.seq is not None and line.hash is not None:
                    yield Landmark(file.inode, start, line.end, line.seq, line.hash)

    def _scan(self, file: _File) -> Iterator[tuple[LogLine, int]]:
        """Every complete line of a file with its start offset."""
        offset = 0
        while True:
            lines, new_offset, _ = self._read_file(file, offset, 10_000, READ_CHUNK, complete=False)
            if not lines:
                return
            start = offset
            for line in lines:
                yield line, start
                start = line.end
            offset = new_offset

    # -- reading --

    def read(self, max_lines: int, max_bytes: int) -> list[LogLine]:
        """Up to ``max_lines`` lines (about ``max_bytes``) after the position, which moves past them."""
        out: list[LogLine] = []
        budget = max_bytes
        hops = 0
        while len(out) < max_lines and budget > 0 and hops < 10_000:
            hops += 1
            files = self._files()
            if not files:
                break
            if self.inode is None:
                self.inode, self.offset = files[0].inode, 0
            index = next((i for i, f in enumerate(files) if f.inode == self.inode), None)
            if index is None or files[index].size < self.offset:
                # The file was pruned or rewritten under us: find the last record read again.
                self._relocate()
                continue
            file = files[index]
            last = index == len(files) - 1
            lines, self.offset, at_end = self._read_file(file, self.offset, max_lines - len(out), budget,
                                                         complete=not last)
            out.extend(lines)
            budget -= sum(line.size for line in lines)
            for line in lines:
                if line.seq is not None and line.hash is not None:
                    self._last = (line.seq, line.hash)
                    self._origin = self._origin or self._last
            if at_end and not last:
                self.inode, self.offset = files[index + 1].inode, 0
                continue
            break
        return out

    def _read_file(self, file: _File, offset: int, max_lines: int, max_bytes: int,
                   *, complete: bool) -> tuple[list[LogLine], int, bool]:
        """Lines of ``file`` from ``offset``: (lines, the offset after them, whether the file's end
        was reached). ``complete``: the file is no longer written, so a last line without a
        newline is reported cut short rather than waited for."""
        lines: list[LogLine] = []
        try:
            f = open(file.path, "rb")
        except FileNotFoundError:
            return lines, offset, True
        with f:
            if os.fstat(f.fileno()).st_ino != file.inode:
                return lines, offset, False  # renamed between listing and opening: list again
            f.seek(offset)
            buffer, position, used, eof = b"", offset, 0, False
            while len(lines) < max_lines and used < max_bytes:
                newline = buffer.find(b"\n")
                if newline >= 0:
                    raw, buffer = buffer[:newline], buffer[newline + 1:]
                    position += newline + 1
                    used += newline + 1
                    lines.append(parse_line(raw, file.inode, position) if newline <= MAX_LINE_BYTES else
                                 LogLine(b"", file.inode, position,
                                         problem=f"a line of {newline} bytes (over {MAX_LINE_BYTES})"))
                    continue
                if len(buffer) > MAX_LINE_BYTES:
                    # A hostile or corrupt line: skip to its end without holding all of it.
                    length, buffer, ended = self._skip_line(f, buffer)
                    if not ended and not complete:
                        return lines, position, False  # its end is not written yet
                    end = position + length + (1 if ended else 0)
                    lines.append(LogLine(b"", file.inode, end,
                                         problem=f"a line of {length} bytes (over {MAX_LINE_BYTES})"))
                    position, used = end, used + (end - position)
                    continue
                chunk = f.read(READ_CHUNK)
                if not chunk:
                    eof = True
                    break
                buffer += chunk
            if eof and buffer and complete:
                # A rotated file never grows again: its last line without a newline is cut short.
                position += len(buffer)
                lines.append(LogLine(buffer[:PROBLEM_SNIPPET_BYTES], file.inode, position,
                                     problem="the last line of a rotated file is cut short"))
            at_end = position >= os.fstat(f.fileno()).st_size
            return lines, position, at_end

    @staticmethod
    def _skip_line(f: BinaryIO, buffer: bytes) -> tuple[int, bytes, bool]:
        """Read past the end of an overlong line whose start is ``buffer``: (its length without
        the newline, what follows it already read, whether a newline ended it)."""
        length = len(buffer)
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                return length, b"", False
            newline = chunk.find(b"\n")
            if newline >= 0:
                return length + newline, chunk[newline + 1:], True
            length += len(chunk)
