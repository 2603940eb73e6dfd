"""The audit log: JSON lines, redacted, hash-chained, written off the request path.

Each record has the playbook's fields (``timestamp``, ``event_type``, ``user``, ``agent``,
``resource``, ``action``, ``result``, ``metadata``, ``client_ip``, ``user_agent``) plus
``execution_id``, ``request_id``, ``retain_until`` (the event's date plus the bundle's
``audit.retentionDays``), ``seq`` (0, 1, 2, ... over the life of the file), ``prev_hash`` (the
previous record's ``hash``, or ``GENESIS_HASH`` for seq 0) and ``hash`` (sha256 of the record's
canonical JSON without ``hash``). The writer also keeps ``<log>.head`` (last seq and hash) so
that records cut off the end are noticed too.

``verify_chain(path)`` finds each kind of tampering and says where: an edited record (its
content no longer matches its hash, or its hash no longer matches what the next record
recorded), deleted records (a gap in ``seq``), reordered records (``seq`` going backwards),
duplicated records, a record cut short, and records missing at the end (against the head).
A hash chain is tamper-*evident*: whoever can rewrite the whole file and its head can rewrite
history; ship the log (and the head) off the node for that.

Pure parts: ``build_record``, ``record_hash``, ``verify_lines``. The :class:`AuditWriter` is
the I/O: a bounded queue, one writer task, file writes and fsyncs in a worker thread. It never
blocks a request for long: ``emit`` never waits (a full queue drops the event, counts it, and
the next record says how many were dropped); ``emit_durable`` (privileged operations) waits
until its record is on disk and raises ``AuditUnavailable`` when it cannot be.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from agentgov.sidecar.errors import AuditUnavailable
from agentgov.sidecar.metrics import Metrics
from agentgov.sidecar.redact import Redactor
from agentgov.sidecar.settings import FsyncPolicy

log = logging.getLogger(__name__)

EventType = Literal[
    "authentication",
    "authorization",
    "agent_execution",
    "tool_access",
    "secret_access",
    "budget_denial",
    "budget_alert",
    "model_call",
    "breaker_transition",
    "token_issued",
    "policy_reload",
    "audit_integrity",
]
Result = Literal["success", "failure", "allowed", "denied", "started"]

GENESIS_HASH: Final = "sha256:" + "0" * 64
BATCH_MAX: Final = 512
TAIL_CHUNK: Final = 64 * 1024
MAX_METADATA_CHARS: Final = 4096


@dataclass(frozen=True)
class AuditEvent:
    """Something that happened, as the request path reports it (before redaction)."""

    event_type: EventType
    result: Result
    action: str
    resource: str
    timestamp: float
    user: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)
    client_ip: str | None = None
    user_agent: str | None = None
    execution_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuditPolicy:
    """What the bundle in force says about auditing, and what to redact."""

    enabled: bool = True
    retention_days: int = 365
    agent: str | None = None
    redactor: Redactor = field(default_factory=Redactor)


def canonical(record: Mapping[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, object]) -> str:
    """sha256 of the record's canonical JSON, ``hash`` member excluded."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_record(event: AuditEvent, *, seq: int, prev_hash: str, policy: AuditPolicy) -> dict[str, object]:
    """The record written for ``event``: redacted, dated, chained. Pure."""
    redact = policy.redactor
    metadata = redact.value(dict(event.metadata))
    if len(canonical(metadata if isinstance(metadata, dict) else {})) > MAX_METADATA_CHARS:
        metadata = {"truncated": True, "note": "metadata over 4 KiB was dropped"}
    when = dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc)
    record: dict[str, object] = {
        "seq": seq,
        "timestamp": _iso(when),
        "event_type": event.event_type,
        "user": redact.text(event.user) if event.user is not None else None,
        "agent": policy.agent,
        "resource": redact.text(event.resource),
        "action": redact.text(event.action),
        "result": event.result,
        "metadata": metadata,
        "client_ip": event.client_ip,
        "user_agent": redact.text(event.user_agent) if event.user_agent is not None else None,
        "execution_id": event.execution_id,
        "request_id": event.request_id,
        "retain_until": (when + dt.timedelta(days=policy.retention_days)).date().isoformat(),
        "prev_hash": prev_hash,
    }
    record["hash"] = record_hash(record)
    return record


# --- verification ------------------------------------------------------------------------

ProblemKind = Literal["edited", "deleted", "reordered", "duplicated", "truncated", "malformed"]


@dataclass(frozen=True)
class ChainHead:
    """The writer's note of the last record it wrote, kept next to the log."""

    seq: int
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    kind: ProblemKind
    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    records: int
    last_seq: int | None
    last_hash: str
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Entry:
    line: int
    seq: int
    prev_hash: str
    hash: str
    content_ok: bool


def _parse_line(raw: bytes, line: int) -> _Entry | ChainProblem:
    try:
        record = json.loads(raw)
    except ValueError:
        return ChainProblem("malformed", line, None, "not a JSON record")
    if not isinstance(record, dict):
        return ChainProblem("malformed", line, None, "not a JSON object")
    seq, prev, digest = record.get("seq"), record.get("prev_hash"), record.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(digest, str):
        return ChainProblem("malformed", line, None, "seq, prev_hash or hash is missing")
    return _Entry(line, seq, prev, digest, record_hash(record) == digest)


def verify_lines(lines: Sequence[bytes], *, complete: bool = True, head: ChainHead | None = None) -> ChainReport:
    """Check a log given as its lines; ``complete`` is False when the file did not end in a newline."""
    problems: list[ChainProblem] = []
    entries: list[_Entry] = []
    for index, raw in enumerate(lines, start=1):
        if not raw.strip():
            if index < len(lines):
                problems.append(ChainProblem("malformed", index, None, "an empty line inside the log"))
            continue
        parsed = _parse_line(raw, index)
        if isinstance(parsed, ChainProblem):
            if index == len(lines) and not complete:
                parsed = ChainProblem("truncated", index, None, "the last record is cut short")
            problems.append(parsed)
            continue
        if not parsed.content_ok:
            problems.append(ChainProblem("edited", index, parsed.seq, "the record does not match its hash"))
        entries.append(parsed)
    if not complete and lines and lines[-1].strip() and entries and entries[-1].line == len(lines):
        problems.append(ChainProblem("truncated", len(lines), entries[-1].seq, "the log does not end with a newline"))

    # File order: seq must only go up.
    for before, after in zip(entries, entries[1:]):
        if after.seq == before.seq:
            problems.append(ChainProblem("duplicated", after.line, after.seq,
                                         f"seq {after.seq} already appears on line {before.line}"))
        elif after.seq < before.seq:
            problems.append(ChainProblem("reordered", after.line, after.seq,
                                         f"seq {after.seq} comes after seq {before.seq} (line {before.line})"))

    # Chain order: by seq, each record links to its predecessor; gaps are deletions.
    by_seq: dict[int, _Entry] = {}
    for entry in entries:
        by_seq.setdefault(entry.seq, entry)
    ordered = [by_seq[s] for s in sorted(by_seq)]
    if ordered:
        first = ordered[0]
        if first.seq > 0:
            problems.append(ChainProblem("deleted", first.line, first.seq,
                                         f"{_count(first.seq)} before it missing (seq 0-{first.seq - 1})"))
        elif first.prev_hash != GENESIS_HASH and first.content_ok:
            problems.append(ChainProblem("edited", first.line, 0, "seq 0 does not start from the genesis hash"))
    for before, after in zip(ordered, ordered[1:]):
        if after.seq > before.seq + 1:
            missing = after.seq - before.seq - 1
            span = f"seq {before.seq + 1}" if missing == 1 else f"seq {before.seq + 1}-{after.seq - 1}"
            problems.append(ChainProblem("deleted", after.line, after.seq,
                                         f"{_count(missing)} missing before it ({span}, after line {before.line})"))
        elif after.prev_hash != before.hash and before.content_ok and after.content_ok:
            problems.append(ChainProblem("edited", before.line, before.seq,
                                         f"its hash differs from the one seq {after.seq} (line {after.line}) recorded"))
    last = ordered[-1] if ordered else None
    if head is not None:
        if last is None or last.seq < head.seq:
            end = last.seq if last else -1
            problems.append(ChainProblem("truncated", last.line if last else 0, last.seq if last else None,
                                         f"{_count(head.seq - end)} missing at the end (the head says seq {head.seq})"))
        elif last.seq == head.seq and last.hash != head.hash and last.content_ok:
            problems.append(ChainProblem("edited", last.line, last.seq, "the last record differs from the head"))
    problems.sort(key=lambda p: (p.line, p.kind))
    return ChainReport(
        records=len(entries),
        last_seq=last.seq if last else None,
        last_hash=last.hash if last else GENESIS_HASH,
        problems=tuple(problems),
    )


def _count(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def head_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _chain_head(data: object) -> ChainHead | None:
    """``{"seq": int, "hash": str, ...}`` (a head file or a record) as a ChainHead; None if it is not one."""
    if isinstance(data, dict) and isinstance(data.get("seq"), int) and isinstance(data.get("hash"), str):
        return ChainHead(int(data["seq"]), str(data["hash"]))
    return None


def read_head(path: Path) -> ChainHead | None:
    """The head file, or None when there is none; ValueError when it is unreadable."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    head = _chain_head(data)
    if head is None:
        raise ValueError(f"{path}: not an audit head file")
    return head


def verify_chain(path: str | Path, head_path: str | Path | None = None) -> ChainReport:
    """Verify an audit log file (and its head file, ``<path>.head`` unless given)."""
    path = Path(path)
    data = path.read_bytes()
    head = read_head(Path(head_path) if head_path is not None else head_path_for(path))
    lines = data.split(b"\n")
    complete = data.endswith(b"\n") or not data
    if complete and lines and lines[-1] == b"":
        lines = lines[:-1]
    return verify_lines(lines, complete=complete, head=head)


# --- writer ------------------------------------------------------------------------------


@dataclass
class _Item:
    event: AuditEvent
    policy: AuditPolicy
    done: asyncio.Future[None] | None = None
    abandoned: bool = False


@dataclass(frozen=True)
class ChainTip:
    seq: int  # the next record's seq
    hash: str  # the last record's hash


@dataclass
class _Open:
    fd: int
    needs_newline: bool


class AuditWriter:
    """Appends redacted, chained records to ``path`` from a bounded queue, off the request path."""

    def __init__(
        self,
        path: Path,
        *,
        policy: Callable[[], AuditPolicy],
        fsync: FsyncPolicy = "always",
        fsync_interval_seconds: float = 1.0,
        queue_size: int = 10_000,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.head_path = head_path_for(path)
        self._policy = policy
        self._fsync = fsync
        self._fsync_interval = fsync_interval_seconds
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._metrics = metrics
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._file: _Open | None = None
        self._tip = ChainTip(0, GENESIS_HASH)
        self._last_fsync = 0.0
        self._dropped_unreported = 0
        self._closing = False
        self.healthy = True
        self.last_error: str | None = None

    # -- lifecycle --

    async def start(self) -> None:
        """Open the log, pick up the chain where the file ends, start the writer task."""
        notes: list[AuditEvent] = []
        try:
            notes = await asyncio.to_thread(self._open_sync)
        except OSError as e:
            self._failed(e)
        for note in notes:
            self._put(_Item(note, self._policy()))
        self._task = asyncio.create_task(self._run(), name="agentgov-audit-writer")

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout``), then stop and close the file."""
        self._closing = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning("audit: %d event(s) not written at shutdown", self._queue.qsize())
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._file is not None:
            os.close(self._file.fd)
            self._file = None

    # -- request path --

    def emit(self, event: AuditEvent) -> bool:
        """Queue an event without waiting; False (and counted) when it had to be dropped."""
        policy = self._policy()
        if not policy.enabled:
            return True
        return self._put(_Item(event, policy))

    async def emit_durable(self, event: AuditEvent, timeout: float = 5.0) -> None:
        """Queue an event and wait until it is written and fsynced; AuditUnavailable otherwise."""
        policy = self._policy()
        if not policy.enabled:
            return
        if not self.healthy:
            raise AuditUnavailable()
        item = _Item(event, policy, asyncio.get_running_loop().create_future())
        if not self._put(item):
            raise AuditUnavailable()
        assert item.done is not None
        try:
            await asyncio.wait_for(asyncio.shield(item.done), timeout)
        except TimeoutError:
            # Not written yet: the writer skips it if it has not started on it, and nobody waits.
            item.abandoned = True
            item.done.cancel()
            raise AuditUnavailable() from None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def _put(self, item: _Item) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped_unreported += 1
            if self._metrics:
                self._metrics.audit_dropped.inc()
            return False
        if self._metrics:
            self._metrics.audit_queue_depth.set(self._queue.qsize())
        return True

    # -- writer task --

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            taken = len(batch)
            while True:
                batch = [item for item in batch if not item.abandoned]
                try:
                    await self._write(batch)
                except OSError as e:
                    self._failed(e)
                    for item in batch:
                        if item.done is not None and not item.done.done():
                            item.done.set_exception(AuditUnavailable())
                    # A refused privileged operation must not be recorded as done later; the
                    # other events wait for the sink to come back (while the queue holds).
                    batch = [item for item in batch if item.done is None]
                    if self._closing:
                        break
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.05
                for item in batch:
                    if item.done is not None and not item.done.done():
                        item.done.set_result(None)
                break
            for _ in range(taken):
                self._queue.task_done()
            if self._metrics:
                self._metrics.audit_queue_depth.set(self._queue.qsize())

    async def _write(self, items: list[_Item]) -> None:
        dropped = self._dropped_unreported
        events = [(item.event, item.policy) for item in items]
        if dropped:
            note = AuditEvent(
                "audit_integrity", "failure", "drop", "audit-log", self._clock(),
                metadata={"dropped_events": dropped, "reason": "audit queue full"},
            )
            events.insert(0, (note, self._policy()))
        durable = any(item.done is not None for item in items)
        if not events:
            return
        written = await asyncio.to_thread(self._write_sync, events, durable)
        self._dropped_unreported -= dropped
        if self._metrics:
            self._metrics.audit_records.inc(written)
            self._metrics.audit_sink_up.set(1)
        if not self.healthy:
            log.info("audit: the log is writable again")
        self.healthy, self.last_error = True, None

    def _failed(self, error: OSError) -> None:
        message = f"{type(error).__name__}: {error.strerror or error}"
        if self.healthy:
            log.error("audit: cannot write %s: %s", self.path, message)
        self.healthy, self.last_error = False, message
        if self._metrics:
            self._metrics.audit_write_errors.inc()
            self._metrics.audit_sink_up.set(0)
        if self._file is not None:
            try:
                os.close(self._file.fd)
            finally:
                self._file = None

    # -- blocking I/O, run in a worker thread --

    def _open_sync(self) -> list[AuditEvent]:
        """Open the log for appending and find the chain's tip; events noting anything odd."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        notes: list[AuditEvent] = []
        try:
            last, partial = _last_record(self.path)
        except OSError:
            os.close(fd)
            raise
        tip = ChainTip(last.seq + 1, last.hash) if last else ChainTip(0, GENESIS_HASH)
        # After a reopen (the sink failed and came back) the chain continues from memory.
        if self._tip.seq > tip.seq:
            tip = self._tip
        self._file = _Open(fd, needs_newline=partial)
        self._tip = tip
        now = self._clock()
        if partial:
            notes.append(AuditEvent("audit_integrity", "failure", "recover", "audit-log", now,
                                    metadata={"problem": "the log ended with a partial record"}))
        try:
            head = read_head(self.head_path)
        except (OSError, ValueError):
            head = None
        if head is not None and head.seq >= tip.seq:
            notes.append(AuditEvent("audit_integrity", "failure", "recover", "audit-log", now, metadata={
                "problem": "the log is shorter than its head: records were removed from the end",
                "head_seq": head.seq, "log_last_seq": tip.seq - 1,
            }))
        return notes

    def _write_sync(self, events: list[tuple[AuditEvent, AuditPolicy]], durable: bool) -> int:
        if self._file is None:
            notes = self._open_sync()
            events = [(note, self._policy()) for note in notes] + events
        assert self._file is not None
        tip = self._tip
        lines: list[bytes] = [b"\n"] if self._file.needs_newline else []
        count = 0
        for event, policy in events:
            record = build_record(event, seq=tip.seq, prev_hash=tip.hash, policy=policy)
            lines.append(canonical(record) + b"\n")
            tip = ChainTip(tip.seq + 1, str(record["hash"]))
            count += 1
        data = b"".join(lines)
        fd = self._file.fd
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            now = self._clock()
            if durable or self._fsync == "always" or (
                self._fsync == "interval" and now - self._last_fsync >= self._fsync_interval
            ):
                os.fsync(fd)
                self._last_fsync = now
                synced = True
            else:
                synced = False
        except OSError:
            # Take back a partial write so the next attempt starts on a line boundary.
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._file.needs_newline = True
            raise
        self._file.needs_newline = False
        self._tip = tip
        self._write_head(tip, synced)
        return count

    def _write_head(self, tip: ChainTip, sync: bool) -> None:
        temporary = self.head_path.with_name(self.head_path.name + ".tmp")
        payload = json.dumps({"seq": tip.seq - 1, "hash": tip.hash}).encode()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, payload)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.head_path)


def _last_record(path: Path) -> tuple[ChainHead | None, bool]:
    """The last complete record of the log (None if there is none) and whether a partial line follows."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None, False
        f.seek(size - 1)
        partial = f.read(1) != b"\n"
        end = size
        tail = b""
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            f.seek(start)
            tail = f.read(end - start) + tail
            end = start
            lines = tail.split(b"\n")
            # lines[0] may be cut unless we reached the start of the file.
            candidates = lines if end == 0 else lines[1:]
            for raw in reversed(candidates):
                try:
                    last = _chain_head(json.loads(raw))
                except ValueError:
                    continue
                if last is not None:
                    return last, partial
    return None, partial
