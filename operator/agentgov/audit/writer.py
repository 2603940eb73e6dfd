"""The audit writer: appends redacted, chained records to the local log, off the request path.

One writer per log (the sidecar's, the operator's). A bounded queue and one writer task; file
writes and fsyncs run in a worker thread, one at a time (``_io``). It never blocks a request
for long: ``emit`` never waits (a full queue drops the event, counts it, and the next record
says how many were dropped); ``emit_durable`` (privileged operations) waits until its record
is on disk and raises ``AuditUnavailable`` when it cannot be.

Besides appending, the writer keeps the log (``LogOptions``):

- rotation: once the active file reaches ``max_bytes`` or its first record ``max_age_seconds``,
  it is renamed to ``<path>.<first seq, 12 digits>`` (atomic) and the next record starts a new
  active file; the chain runs on. ``<path>.head`` notes the last record of the whole log. It is
  decided before each batch, so a file can exceed ``max_bytes`` by one batch (512 records).
- digests: with a key, a signed ``audit.digest`` record after every ``digest_every_records``
  records or once the oldest unsigned one is ``digest_every_seconds`` old, and at close.
- retention: every ``prune_interval_seconds``, rotated files whose records are all past their
  ``retain_until`` are pruned (``retention.py``); never the active file.

It never reads the sidecar's or the operator's state: the policy, metrics and hooks are given.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol

from agentgov.audit.chain import Anchor, ChainHead, read_anchor, read_head
from agentgov.audit.digest import (
    DigestLink, RangeHash, SigningKey, digest_event, load_signing_key, sign, statement,
)
from agentgov.audit.errors import AuditConfigError, AuditUnavailable
from agentgov.audit.files import (
    anchor_path_for, head_path_for, load_json, log_files, open_log, read_lines, rotated_files, rotated_name,
)
from agentgov.audit.record import (
    DIGEST_EVENT, GENESIS_HASH, AuditEvent, AuditPolicy, build_record, canonical, iso_time,
)
from agentgov.audit.retention import FileSummary, anchor_after, plan_prune, pruned_event, summarize
from agentgov.audit.settings import LogOptions

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
BATCH_MAX: Final = 512
TAIL_CHUNK: Final = 64 * 1024


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class AuditMetrics(Protocol):
    """The metrics the writer reports (the sidecar's ``Metrics`` has them)."""

    @property
    def audit_records(self) -> Counter: ...

    @property
    def audit_dropped(self) -> Counter: ...

    @property
    def audit_write_errors(self) -> Counter: ...

    @property
    def audit_sink_up(self) -> Gauge: ...

    @property
    def audit_queue_depth(self) -> Gauge: ...


@dataclass
class _Item:
    event: AuditEvent
    policy: AuditPolicy
    done: asyncio.Future[None] | None = None
    abandoned: bool = False


@dataclass(frozen=True)
class _Pending:
    """An event about to become a record (``redact`` False for the log's own records)."""

    event: AuditEvent
    policy: AuditPolicy
    redact: bool = True


@dataclass(frozen=True)
class ChainTip:
    seq: int  # the next record's seq
    hash: str  # the last record's hash


@dataclass
class _Open:
    fd: int
    needs_newline: bool
    size: int = 0
    first_seq: int | None = None  # of the active file's first record
    first_time: float | None = None  # when it was written (for age-based rotation)


@dataclass
class _Digests:
    """What the next digest covers: the records since the last one."""

    first_seq: int
    covered: RangeHash = field(default_factory=RangeHash)
    since: float | None = None  # when the oldest unsigned record was written
    link: DigestLink | None = None

    def copy(self) -> _Digests:
        return _Digests(self.first_seq, self.covered.copy(), self.since, self.link)


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
        metrics: AuditMetrics | None = None,
        clock: Callable[[], float] = time.time,
        options: LogOptions = LogOptions(),
        retention_hold: Callable[[], int | None] | None = None,
        echo: Callable[[bytes], None] | None = None,
    ) -> None:
        """``retention_hold``: the lowest seq a sink still needs (pruning keeps it), if any;
        ``echo``: called with each batch of written lines (e.g. to copy them to stdout)."""
        self.path = Path(path)
        self.head_path = head_path_for(self.path)
        self.options = options
        self._policy = policy
        self._fsync = fsync
        self._fsync_interval = fsync_interval_seconds
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._metrics = metrics
        self._clock = clock
        self._hold = retention_hold
        self._echo = echo
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._io = asyncio.Lock()
        self._file: _Open | None = None
        self._tip = ChainTip(0, GENESIS_HASH)
        self._last_fsync = 0.0
        self._dropped_unreported = 0
        self._closing = False
        self._signing: SigningKey | None = None
        self._key_stamp: tuple[int, int] | None = None
        self._digests: _Digests | None = None
        self._summaries: dict[str, tuple[tuple[int, int], FileSummary]] = {}
        self._last_prune = 0.0
        self.healthy = True
        self.last_error: str | None = None

    # -- lifecycle --

    async def start(self) -> None:
        """Load the digest key (AuditConfigError when it cannot be used), open the log, pick up
        the chain where it ends, start the writer and maintenance tasks."""
        if self.options.digest_key_file is not None:
            self._signing, self._key_stamp = await asyncio.to_thread(self._load_key, self.options.digest_key_file)
        notes: list[AuditEvent] = []
        try:
            notes = await asyncio.to_thread(self._open_sync)
        except OSError as e:
            self._failed(e)
        for note in notes:
            self._put(_Item(note, self._policy()))
        self._last_prune = self._clock() - self.options.prune_interval_seconds  # prune soon after start
        self._task = asyncio.create_task(self._run(), name="agentgov-audit-writer")
        self._ticker = asyncio.create_task(self._tick(), name="agentgov-audit-maintenance")

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout``), sign what is unsigned, stop, close."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with suppress(asyncio.CancelledError):
                await self._ticker
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except TimeoutError:
                log.warning("audit: %d event(s) not written at shutdown", self._queue.qsize())
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        async with self._io:
            if self._file is not None and self._digests is not None and self._digests.covered.count:
                try:
                    await asyncio.to_thread(self._append_sync, [], True, True)
                except OSError as e:
                    log.warning("audit: no digest at shutdown: %s", e.strerror or e)
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
            raise AuditUnavailable("the audit queue is full")
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

    @property
    def tip(self) -> ChainTip:
        """The next seq and the last hash written."""
        return self._tip

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
        pending = [_Pending(item.event, item.policy) for item in items]
        if dropped:
            note = AuditEvent(
                "audit_integrity", "failure", "drop", "audit-log", self._clock(),
                metadata={"dropped_events": dropped, "reason": "audit queue full"},
            )
            pending.insert(0, _Pending(note, self._policy()))
        durable = any(item.done is not None for item in items)
        if not pending:
            return
        async with self._io:
            written = await asyncio.to_thread(self._append_sync, pending, durable)
        self._dropped_unreported -= dropped
        self._succeeded(written)

    def _succeeded(self, written: int) -> None:
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

    # -- maintenance task: age-based rotation and digests, retention --

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.options.tick_seconds)
            try:
                async with self._io:
                    written = await asyncio.to_thread(self._maintain_sync)
            except OSError as e:
                self._failed(e)
                continue
            except Exception:  # never let maintenance die silently: it guards retention
                log.exception("audit: maintenance failed")
                continue
            if written:
                self._succeeded(written)

    def _maintain_sync(self) -> int:
        """Rotate by age, sign by time, prune by retention: whatever is due. Records written."""
        if self._file is None:
            return 0  # the writer task reopens the log with its next batch
        now = self._clock()
        written = 0
        if self._rotation_due(now):
            self._rotate_sync()
        digests = self._digests
        if (digests is not None and digests.covered.count and digests.since is not None
                and now - digests.since >= self.options.digest_every_seconds):
            written += self._append_sync([], False, True)
        if now - self._last_prune >= self.options.prune_interval_seconds:
            self._last_prune = now
            written += self._prune_sync(now)
        return written

    # -- blocking I/O, run in a worker thread (one at a time: self._io) --

    @staticmethod
    def _load_key(path: Path) -> tuple[SigningKey, tuple[int, int]]:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise AuditConfigError(f"digest key file {path}: {e.strerror or type(e).__name__}") from None
        return load_signing_key(path), (stat.st_mtime_ns, stat.st_size)

    def _current_key(self) -> SigningKey | None:
        """The signing key, re-read when its file changed (a rotated Secret); the old one is
        kept, and the problem logged, when the new file cannot be used."""
        path = self.options.digest_key_file
        if path is None or self._signing is None:
            return self._signing
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._key_stamp:
                self._signing, self._key_stamp = load_signing_key(path), stamp
                log.info("audit: digest key reloaded (%s)", self._signing.key_id)
        except (OSError, AuditConfigError) as e:
            log.warning("audit: keeping the previous digest key: %s", getattr(e, "strerror", None) or e)
        return self._signing

    def _open_sync(self) -> list[AuditEvent]:
        """Open the log for appending and find the chain's tip; events noting anything odd."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        notes: list[AuditEvent] = []
        try:
            last, partial = _last_record(self.path)
            if last is None:
                last = next((found for found in map(lambda p: _last_record(p)[0], reversed(rotated_files(self.path)))
                             if found is not None), None)
            anchor = read_anchor(anchor_path_for(self.path))
            size = os.fstat(fd).st_size
            first = _first_record(self.path) if size else None
        except (OSError, ValueError) as e:
            os.close(fd)
            if isinstance(e, ValueError):
                raise OSError(errno.EINVAL, str(e)) from None
            raise
        if last is not None:
            tip = ChainTip(last.seq + 1, last.hash)
        elif anchor is not None:
            tip = ChainTip(anchor.seq + 1, anchor.hash)
        else:
            tip = ChainTip(0, GENESIS_HASH)
        # After a reopen (the sink failed and came back) the chain continues from memory.
        if self._tip.seq > tip.seq:
            tip = self._tip
        opened = _Open(fd, needs_newline=partial, size=size)
        now = self._clock()
        if first is not None:
            opened.first_seq, opened.first_time = first[0], first[1] if first[1] is not None else now
        self._file = opened
        self._tip = tip
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
        if self._signing is not None and self._digests is None:
            self._digests = _scan_digests(self.path, anchor, tip, now)
        return notes

    def _rotation_due(self, now: float) -> bool:
        opened = self._file
        if opened is None or opened.size == 0 or opened.first_seq is None:
            return False
        if opened.size >= self.options.max_bytes:
            return True
        return opened.first_time is not None and now - opened.first_time >= self.options.max_age_seconds

    def _rotate_sync(self) -> None:
        """Rename the active file to its rotated name and start a new one (the chain runs on)."""
        opened = self._file
        assert opened is not None and opened.first_seq is not None
        target = rotated_name(self.path, opened.first_seq)
        if target.exists():
            # Never overwrite: a file of that name holds records already. Keep appending.
            log.error("audit: not rotating %s: %s already exists", self.path, target.name)
            opened.first_seq = None
            return
        if opened.needs_newline:
            os.write(opened.fd, b"\n")
        os.fsync(opened.fd)
        os.close(opened.fd)
        self._file = None
        os.rename(self.path, target)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._file = _Open(fd, needs_newline=False)
        _fsync_dir(self.path.parent)
        log.info("audit: rotated %s to %s", self.path.name, target.name)

    def _append_sync(self, pending: list[_Pending], durable: bool, force_digest: bool = False) -> int:
        """Write ``pending`` as records (and any digest that falls due); the number written."""
        if self._file is None:
            notes = self._open_sync()
            pending = [_Pending(note, self._policy()) for note in notes] + pending
        now = self._clock()
        if self._rotation_due(now):
            self._rotate_sync()
        assert self._file is not None
        opened = self._file
        tip, digests = self._tip, self._digests.copy() if self._digests is not None else None
        key = self._current_key() if digests is not None else None
        lines: list[bytes] = []
        first_written: int | None = None
        for item in pending:
            record = build_record(item.event, seq=tip.seq, prev_hash=tip.hash, policy=item.policy,
                                  redact_metadata=item.redact)
            lines.append(canonical(record) + b"\n")
            first_written = tip.seq if first_written is None else first_written
            tip = ChainTip(tip.seq + 1, str(record["hash"]))
            if digests is not None:
                if not digests.covered.count:
                    digests.first_seq, digests.since = tip.seq - 1, now
                digests.covered.add(str(record["hash"]))
                if digests.covered.count >= self.options.digest_every_records and key is not None:
                    tip, digests = self._digest_record(lines, tip, digests, key, now)
        if force_digest and digests is not None and digests.covered.count and key is not None:
            first_written = tip.seq if first_written is None else first_written
            tip, digests = self._digest_record(lines, tip, digests, key, now)
        if not lines:
            return 0
        data = b"".join(lines)
        prefix = b"\n" if opened.needs_newline else b""
        start = os.lseek(opened.fd, 0, os.SEEK_END)
        try:
            view = memoryview(prefix + data)
            while view:
                written = os.write(opened.fd, view)
                view = view[written:]
            if durable or self._fsync == "always" or (
                self._fsync == "interval" and now - self._last_fsync >= self._fsync_interval
            ):
                os.fsync(opened.fd)
                self._last_fsync = now
                synced = True
            else:
                synced = False
        except OSError:
            # Take back a partial write so the next attempt starts on a line boundary.
            try:
                os.ftruncate(opened.fd, start)
            except OSError:
                opened.needs_newline = True
            raise
        opened.needs_newline = False
        opened.size = start + len(prefix) + len(data)
        if opened.first_seq is None:
            opened.first_seq, opened.first_time = first_written, now
        self._tip, self._digests = tip, digests
        self._write_head(tip, synced)
        if self._echo is not None:
            try:
                self._echo(data)
            except Exception as e:  # a closed stdout must not stop the log
                log.warning("audit: echo failed: %s", type(e).__name__)
        return len(lines)

    def _digest_record(self, lines: list[bytes], tip: ChainTip, digests: _Digests, key: SigningKey,
                       now: float) -> tuple[ChainTip, _Digests]:
        """Append the digest of ``digests`` to ``lines``; the new tip and an empty range after it."""
        stmt = statement(first_seq=digests.first_seq, last_seq=tip.seq - 1, covered=digests.covered,
                         previous=digests.link, key=key, signed_at=iso_time(dt.datetime.fromtimestamp(now, dt.timezone.utc)))
        signature = sign(stmt, key)
        record = build_record(digest_event(stmt, signature, now), seq=tip.seq, prev_hash=tip.hash,
                              policy=self._policy(), redact_metadata=False)
        lines.append(canonical(record) + b"\n")
        return ChainTip(tip.seq + 1, str(record["hash"])), _Digests(tip.seq + 1, link=DigestLink(tip.seq, signature))

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

    # -- retention --

    def _summary(self, path: Path) -> FileSummary:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        cached = self._summaries.get(path.name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, summarize(path))
            self._summaries[path.name] = cached
        return cached[1]

    def _prune_sync(self, now: float) -> int:
        """Prune the rotated files whose records all expired; the number of records written."""
        anchor_file = anchor_path_for(self.path)
        previous = read_anchor(anchor_file)
        rotated = [self._summary(p) for p in rotated_files(self.path)]
        if previous is not None:
            # A prune that was recorded but stopped before its files were gone: finish it.
            for summary in rotated:
                if summary.last_seq is not None and summary.last_seq <= previous.seq:
                    _unlink(summary.path)
            rotated = [s for s in rotated if s.last_seq is None or s.last_seq > previous.seq]
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
        plan = plan_prune(rotated, today, self._hold() if self._hold else None)
        if not plan:
            return 0
        written = 0
        if self._digests is not None and self._digests.covered.count:
            written += self._append_sync([], True, True)  # sign everything before it goes
        anchor = anchor_after(plan, previous)
        # Announce, then anchor, then delete: a crash in between leaves a state verify accepts.
        written += self._append_sync([_Pending(pruned_event(plan, anchor, now), self._policy(), False)], True)
        _write_json_atomically(anchor_file, anchor.as_json())
        for summary in plan:
            _unlink(summary.path)
            self._summaries.pop(summary.path.name, None)
        _fsync_dir(self.path.parent)
        log.info("audit: pruned %d expired file(s) (%d records, up to seq %d)",
                 len(plan), sum(s.records for s in plan), anchor.seq)
        return written


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomically(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _chain_head(data: object) -> ChainHead | None:
    """``{"seq": int, "hash": str, ...}`` (a head file or a record) as a ChainHead; None if it is not one."""
    if isinstance(data, dict) and isinstance(data.get("seq"), int) and isinstance(data.get("hash"), str):
        return ChainHead(int(data["seq"]), str(data["hash"]))
    return None


def _first_record(path: Path) -> tuple[int, float | None] | None:
    """The seq and time of the file's first readable record (for rotation by name and age)."""
    with open_log(path) as stream:
        for line in read_lines(stream):
            try:
                record = load_json(line.raw) if not line.oversized else None
            except ValueError:
                continue
            head = _chain_head(record)
            if head is None:
                continue
            assert isinstance(record, dict)
            try:
                when: float | None = dt.datetime.fromisoformat(str(record.get("timestamp"))).timestamp()
            except ValueError:
                when = None
            return head.seq, when
    return None


def _last_record(path: Path) -> tuple[ChainHead | None, bool]:
    """The last complete record of the log (None if there is none) and whether a partial line follows."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None, False
    with f:
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
                    last = _chain_head(load_json(raw))
                except ValueError:
                    continue
                if last is not None:
                    return last, partial
            tail = lines[0]
    return None, partial


def _scan_digests(path: Path, anchor: Anchor | None, tip: ChainTip, now: float) -> _Digests:
    """Where signing resumes after a restart: the last digest in the log, and the records after
    it (hashed again, in order). Reads back to the last digest; all of the log the first time
    digests are turned on."""
    files = log_files(path)
    link: DigestLink | None = anchor.last_digest if anchor else None
    start_index = 0
    for index in range(len(files) - 1, -1, -1):
        found: DigestLink | None = None
        with open_log(files[index]) as stream:
            for line in read_lines(stream):
                if b'"' + DIGEST_EVENT.encode() + b'"' not in line.raw:
                    continue
                try:
                    record = load_json(line.raw)
                except ValueError:
                    continue
                head = _chain_head(record)
                metadata = record.get("metadata") if isinstance(record, dict) else None
                signature = metadata.get("signature") if isinstance(metadata, dict) else None
                if head is not None and isinstance(record, dict) and record.get("event_type") == DIGEST_EVENT \
                        and isinstance(signature, str):
                    found = DigestLink(head.seq, signature)
        if found is not None:
            link, start_index = found, index
            break
    first = link.seq + 1 if link else (anchor.seq + 1 if anchor else 0)
    digests = _Digests(first, link=link)
    expected = first
    for file in files[start_index:]:
        with open_log(file) as stream:
            for line in read_lines(stream):
                head = None
                try:
                    head = _chain_head(load_json(line.raw)) if not line.oversized else None
                except ValueError:
                    pass
                if head is None or head.seq < first or head.seq >= tip.seq:
                    continue
                if head.seq != expected:
                    # A hole (or the range starts before what is left after pruning): sign from here.
                    digests = _Digests(head.seq, link=link)
                    expected = head.seq
                digests.covered.add(head.hash)
                expected += 1
    if digests.covered.count:
        digests.since = now
    return digests
