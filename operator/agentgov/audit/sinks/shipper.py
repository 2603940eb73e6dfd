"""The shipper: copies the local audit log to one sink, from a persisted cursor, losing nothing.

The local JSON lines log is always written first (by the audit writer); each configured sink
gets a ``Shipper``, a background task that

1. resumes from the sink's cursor (``cursor.py``) — or the start of the log for a new sink or a
   new destination — and reads the lines after it (``logread.py``),
2. cuts them into batches (``batching.py``: linger or UTC-aligned windows),
3. hands a batch to the sink; lines that are not usable records, and records the sink refuses
   for good, go to the dead-letter file ``<log>.<sink>.deadletter.jsonl`` (counted, logged,
   never dropped silently); records the sink could not take now are sent again,
4. only then moves the cursor past the batch (atomically, fsynced).

A sink that is down just falls behind: nothing is read past what it has been sent, the cursor
stays, retries back off with jitter, and once it answers again the backlog goes out in order.
The local log *is* the spool; the disk it costs is the log itself (whoever prunes it should
not go past ``cursor.pending_from``: records pruned before delivery are reported as a gap).
Each shipper reports its lag (records and seconds) as metrics and in ``status()``.

``AuditShipping`` runs the shippers of one log and follows configuration changes.

Never a credential in a log line, a status or a metric label; never a record dropped without
a dead letter; never a cursor moved past a record that was not delivered or parked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from agentgov.audit.chain import read_head
from agentgov.audit.files import head_path_for
from agentgov.audit.sinks.base import Rejection, Sink, SinkUnavailable
from agentgov.audit.sinks.batching import Cut, backoff_delay, cut
from agentgov.audit.sinks.cursor import (
    Cursor, CursorError, Inflight, cursor_path, dead_letter_path, read_cursor, set_aside, write_cursor,
)
from agentgov.audit.sinks.logread import LogLine, LogReader
from agentgov.audit.sinks.metrics import FailureReason, ShipperMetrics
from agentgov.audit.sinks.settings import SinkKind, SinkSettings, SinksSettings

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.5
BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 60.0
DRAIN_SECONDS: Final = 5.0
# A dead letter keeps the record, or this much of an unusable line.
DEAD_LETTER_SNIPPET: Final = 4096


@dataclass(frozen=True)
class Timing:
    """How often a shipper looks for new records and how it backs off (tests shorten these)."""

    poll_seconds: float = POLL_SECONDS
    backoff_base_seconds: float = BACKOFF_BASE_SECONDS
    backoff_cap_seconds: float = BACKOFF_CAP_SECONDS


def dead_letter(line: LogLine, reason: str, sink: str, at: float) -> bytes:
    """The dead-letter line for a refused record or an unusable line. Pure."""
    entry: dict[str, object] = {
        "sink": sink,
        "at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reason": reason[:2000],
        "seq": line.seq,
        "hash": line.hash,
    }
    if line.record is not None:
        entry["record"] = line.record
    else:
        entry["line"] = line.raw[:DEAD_LETTER_SNIPPET].decode("utf-8", "replace")
    return json.dumps(entry, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def _append_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _head_seq(log_path: Path) -> int | None:
    """The last seq the writer says it wrote (its head file), or None."""
    try:
        head = read_head(head_path_for(log_path))
    except (OSError, ValueError):
        return None
    return head.seq if head is not None else None


class Shipper:
    """Copies one local log to one sink (see the module docstring)."""

    def __init__(
        self,
        log_path: Path,
        sink: Sink,
        *,
        metrics: ShipperMetrics,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.log_path = log_path
        self.sink = sink
        self.name: SinkKind = sink.kind
        self.cursor_path = cursor_path(log_path, sink.kind)
        self.dead_letter_path = dead_letter_path(log_path, sink.kind)
        self._metrics = metrics
        self._timing = timing
        self._clock = clock
        self._rng = rng or random.Random()
        self._reader = LogReader(log_path)
        self._buffer: list[LogLine] = []
        self._cursor = Cursor(destination=sink.destination)
        self._last_seq: int | None = None  # the last seq read, to notice gaps
        self._head: int | None = None  # the last seq the writer wrote, from its head file
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._attempt = 0
        self._opened = False
        self.up: bool | None = None
        self.last_error: str | None = None
        self.dead_letters = 0
        self.lag_records = 0
        self.lag_seconds = 0.0

    # -- lifecycle --

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"agentgov-audit-ship-{self.name}")

    def notify(self) -> None:
        """New records may be in the log: look now rather than at the next poll."""
        self._wake.set()

    async def close(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Send what is waiting (windows no longer matter) for at most ``drain_seconds``, then stop.
        What is not delivered by then stays in the local log, behind the cursor."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), drain_seconds)
            except TimeoutError:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            except Exception:  # noqa: BLE001 - the run loop logged it
                pass
        if self.lag_records:
            log.warning("audit shipping to %s: %d record(s) not delivered when stopping; they stay in %s "
                        "and go out when shipping starts again", self.sink.destination, self.lag_records,
                        self.log_path)
        try:
            await self.sink.close()
        except Exception as e:  # noqa: BLE001 - closing must not fail the caller's shutdown
            log.warning("audit shipping to %s: closing the sink failed (%s)", self.sink.destination, type(e).__name__)

    @property
    def cursor(self) -> Cursor:
        return self._cursor

    def status(self) -> dict[str, object]:
        return {
            "sink": self.name,
            "destination": self.sink.destination,
            "up": self.up,
            "deliveredSeq": self._cursor.seq if self._cursor.seq >= 0 else None,
            "lagRecords": self.lag_records,
            "lagSeconds": round(self.lag_seconds, 3),
            "deadLetters": self.dead_letters,
            "lastError": self.last_error,
            **self.sink.details(),
        }

    # -- the loop --

    async def _run(self) -> None:
        loaded = False
        while True:
            try:
                if not loaded:
                    await asyncio.to_thread(self._load)
                    loaded = True
                added = await asyncio.to_thread(self._fill)
                now = self._clock()
                self._update_lag(now)
                if not self._opened:
                    await self.sink.open()
                    self._opened = True
                decision = self._next_cut(now, added)
                if decision.count == 0:
                    if self._closing and not added:
                        return  # drained
                    if not added:
                        if self.up is None:
                            self._set_up(True)  # reachable, nothing to send yet
                        timeout = self._timing.poll_seconds
                        if decision.wake_at is not None:
                            timeout = min(timeout, max(0.0, decision.wake_at - now))
                        await self._sleep(timeout)
                    continue
                if await self._ship(self._buffer[:decision.count]):
                    del self._buffer[:decision.count]
                    self._attempt = 0
                    self._update_lag(self._clock())
                    continue
            except SinkUnavailable as e:
                self._failed(e.reason, e.message)
            except OSError as e:
                self._failed("io", f"cannot read the local log {self.log_path.name} "
                                   f"({e.strerror or type(e).__name__})")
            except Exception as e:  # a bug, not a sink failure: say so loudly, keep trying
                if self.last_error != f"internal error ({type(e).__name__})":
                    log.exception("audit shipping to %s: unexpected error", self.sink.destination)
                self._failed("internal", f"internal error ({type(e).__name__})")
            await self._backoff()

    def _next_cut(self, now: float, added: int) -> Cut:
        inflight = self._cursor.inflight
        if inflight is not None:
            for index, line in enumerate(self._buffer):
                if line.seq == inflight.last_seq:
                    return Cut(index + 1)
            if added == 0:
                log.warning("audit shipping to %s: the batch being delivered when it last stopped (seq %d-%d) "
                            "is no longer complete in the log; shipping on without it", self.sink.destination,
                            inflight.first_seq, inflight.last_seq)
                self._cursor = replace(self._cursor, inflight=None)
            return Cut(0)
        return cut(self._buffer, self.sink.batching, now, draining=self._closing)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _backoff(self) -> None:
        policy = self._timing
        delay = backoff_delay(self._attempt, policy.backoff_base_seconds, policy.backoff_cap_seconds, self._rng)
        self._attempt += 1
        await asyncio.sleep(delay)

    # -- blocking parts, in a worker thread --

    def _load(self) -> None:
        """Read the cursor and put the reader after what it delivered."""
        try:
            cursor = read_cursor(self.cursor_path)
        except CursorError as e:
            aside = set_aside(self.cursor_path)
            log.error("audit shipping to %s: the cursor is unusable (%s); kept as %s, shipping the log from "
                      "the beginning", self.sink.destination, e, aside.name)
            cursor = None
        if cursor is not None and cursor.destination != self.sink.destination:
            log.warning("audit shipping: the %s destination changed from %s to %s; shipping the whole local log "
                        "to the new one", self.name, cursor.destination, self.sink.destination)
            cursor = None
        resume = self._reader.locate(cursor)
        if resume.message and resume.kind in ("beginning", "end"):
            log.warning("audit shipping to %s: %s", self.sink.destination, resume.message)
        if cursor is None or resume.kind == "beginning":
            cursor = Cursor(destination=self.sink.destination)
        elif resume.kind != "after":
            # The batch noted in flight cannot be rebuilt exactly: ship on from here.
            cursor = replace(cursor, inflight=None)
        self._cursor = cursor
        self._last_seq = cursor.seq if cursor.seq >= 0 else None

    def _fill(self) -> int:
        """Read more lines into the buffer (as many as the next batch may need); how many."""
        batching = self.sink.batching
        self._head = _head_seq(self.log_path)
        want = batching.max_records + 1 - len(self._buffer)
        if self._cursor.inflight is not None:
            want = batching.max_records
        if want <= 0:
            return 0
        held = sum(line.size for line in self._buffer)
        lines = self._reader.read(want, max(batching.max_bytes * 2 - held, batching.max_bytes // 4, 1))
        for message in self._reader.notices:
            log.warning("audit shipping to %s: %s", self.sink.destination, message)
        self._reader.notices.clear()
        for line in lines:
            if line.seq is None:
                continue
            if self._last_seq is not None and line.seq > self._last_seq + 1:
                missing = line.seq - self._last_seq - 1
                self._metrics.gaps.labels(sink=self.name).inc(missing)
                log.warning("audit shipping to %s: seq %d-%d are not in the local log (removed before they were "
                            "delivered); the copy will show the gap", self.sink.destination, self._last_seq + 1,
                            line.seq - 1)
            self._last_seq = line.seq
        self._buffer.extend(lines)
        return len(lines)

    def _update_lag(self, now: float) -> None:
        newest = self._head
        buffered = [line.seq for line in self._buffer if line.seq is not None]
        if buffered:
            newest = max(buffered[-1], newest if newest is not None else -1)
        delivered = self._cursor.seq
        if newest is None or newest < delivered:
            lag = len(self._buffer)
        else:
            lag = max(newest - delivered, len(self._buffer))
        oldest = next((line.timestamp for line in self._buffer if line.timestamp is not None), None)
        self.lag_records = lag
        self.lag_seconds = max(0.0, now - oldest) if oldest is not None else 0.0
        self._metrics.lag_records.labels(sink=self.name).set(self.lag_records)
        self._metrics.lag_seconds.labels(sink=self.name).set(self.lag_seconds)

    # -- one batch --

    async def _ship(self, batch: Sequence[LogLine]) -> bool:
        """Deliver ``batch`` and move the cursor past it; False when it must be tried again."""
        usable = [line for line in batch if line.problem is None]
        rejected = [Rejection(line, f"unusable line: {line.problem}") for line in batch if line.problem is not None]
        if self.sink.fixed_batches and usable and self._cursor.inflight is None:
            first, last = usable[0].seq, usable[-1].seq
            assert first is not None and last is not None
            noted = replace(self._cursor, inflight=Inflight(first, last))
            if not await self._save(noted):
                return False
            self._cursor = noted
        pending: Sequence[LogLine] = usable
        while pending:
            try:
                delivery = await self.sink.deliver(pending)
            except SinkUnavailable as e:
                self._failed(e.reason, e.message)
                return False
            rejected.extend(delivery.rejected)
            if not delivery.retry:
                break
            self._failed(delivery.retry_reason or "server_error",
                         f"{len(delivery.retry)} of {len(pending)} record(s) not taken this time")
            pending = delivery.retry
            await self._backoff()
        if rejected:
            await self._park(rejected)
        last_usable = usable[-1] if usable else None
        tail = batch[-1]
        cursor = replace(
            self._cursor,
            seq=last_usable.seq if last_usable is not None and last_usable.seq is not None else self._cursor.seq,
            hash=last_usable.hash if last_usable is not None else self._cursor.hash,
            inode=tail.inode, offset=tail.end, inflight=None,
            delivered=self._cursor.delivered + len(usable),
        )
        if cursor.origin_seq is None and usable:
            cursor = replace(cursor, origin_seq=usable[0].seq, origin_hash=usable[0].hash)
        if not await self._save(cursor):
            return False
        self._cursor = cursor
        refused = sum(1 for r in rejected if r.line.problem is None)
        self._metrics.shipped.labels(sink=self.name).inc(len(usable) - refused)
        self._set_up(True)
        self.last_error = None
        return True

    async def _save(self, cursor: Cursor) -> bool:
        try:
            await asyncio.to_thread(write_cursor, self.cursor_path, cursor)
        except OSError as e:
            self._failed("io", f"cannot write the cursor {self.cursor_path.name}: {e.strerror or type(e).__name__}")
            return False
        return True

    async def _park(self, rejected: list[Rejection]) -> None:
        """Dead-letter refused records; they are never sent again (unless the cursor is lost)."""
        now = self._clock()
        data = b"".join(dead_letter(r.line, r.reason, self.name, now) for r in rejected)
        for r in rejected[:5]:
            log.error("audit shipping to %s: seq %s parked in %s: %s", self.sink.destination, r.line.seq,
                      self.dead_letter_path.name, r.reason[:300])
        if len(rejected) > 5:
            log.error("audit shipping to %s: %d more record(s) parked in %s", self.sink.destination,
                      len(rejected) - 5, self.dead_letter_path.name)
        while True:
            try:
                await asyncio.to_thread(_append_durably, self.dead_letter_path, data)
                break
            except OSError as e:
                # The cursor must not pass a record that is neither delivered nor parked.
                self._failed("io", f"cannot write {self.dead_letter_path.name}: {e.strerror or type(e).__name__}")
                await self._backoff()
        self.dead_letters += len(rejected)
        self._metrics.dead_letters.labels(sink=self.name).inc(len(rejected))

    def _failed(self, reason: FailureReason, message: str) -> None:
        self._metrics.failures.labels(sink=self.name, reason=reason).inc()
        if self.up is not False or self.last_error != message:
            log.warning("audit shipping to %s failed (%s): %s; %d record(s) wait in the local log",
                        self.sink.destination, reason, message, self.lag_records)
        self.last_error = message
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        if up and self.up is False:
            log.info("audit shipping to %s works again", self.sink.destination)
        self.up = up
        self._metrics.up.labels(sink=self.name).set(1 if up else 0)


# --- every sink of one log ----------------------------------------------------------------

SinkFactory = Callable[[SinkKind, SinkSettings, SinksSettings], Sink]


def make_sink(kind: SinkKind, settings: SinkSettings, sinks: SinksSettings) -> Sink:
    """The sink for one settings object (SDKs imported only for the sinks configured)."""
    from agentgov.audit.sinks.settings import ElasticsearchSinkSettings, S3SinkSettings, StdoutSinkSettings

    if isinstance(settings, StdoutSinkSettings):
        from agentgov.audit.sinks.stdout import StdoutSink

        return StdoutSink(settings)
    if isinstance(settings, ElasticsearchSinkSettings):
        from agentgov.audit.sinks.elasticsearch import ElasticsearchSink

        return ElasticsearchSink(settings, source=sinks.source)
    if isinstance(settings, S3SinkSettings):
        from agentgov.audit.sinks.s3 import S3Sink

        return S3Sink(settings, stream=sinks.stream, source=sinks.source)
    raise TypeError(f"no sink for {type(settings).__name__}")


class AuditShipping:
    """The shippers of one local log, one per configured sink; ``apply`` follows new settings."""

    def __init__(
        self,
        log_path: Path,
        registry: CollectorRegistry,
        *,
        timing: Timing = Timing(),
        clock: Callable[[], float] = time.time,
        factory: SinkFactory = make_sink,
    ) -> None:
        self.log_path = log_path
        self.metrics = ShipperMetrics(registry)
        self._timing = timing
        self._clock = clock
        self._factory = factory
        self._shippers: dict[SinkKind, Shipper] = {}
        self._applied: dict[SinkKind, tuple[SinkSettings, str, str]] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def shippers(self) -> Mapping[SinkKind, Shipper]:
        return dict(self._shippers)

    async def apply(self, settings: SinksSettings | None, *, drain_seconds: float = 1.0) -> None:
        """Run exactly the sinks ``settings`` configures: stop removed or changed ones (after a
        short drain), start new ones. A sink whose settings did not change keeps running."""
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            wanted = {} if settings is None else {
                kind: (value, settings.stream, settings.source) for kind, value in settings.configured().items()
            }
            for kind in list(self._shippers):
                if self._applied.get(kind) != wanted.get(kind):
                    shipper = self._shippers.pop(kind)
                    self._applied.pop(kind, None)
                    await shipper.close(drain_seconds)
                    self.metrics.forget(kind)
            assert settings is not None or not wanted
            for kind, key in wanted.items():
                if kind in self._shippers:
                    continue
                assert settings is not None
                sink = self._factory(kind, key[0], settings)
                shipper = Shipper(self.log_path, sink, metrics=self.metrics, timing=self._timing, clock=self._clock)
                await shipper.start()
                self._shippers[kind] = shipper
                self._applied[kind] = key
                log.info("audit shipping to %s (%s) started", sink.destination, kind)

    def notify(self) -> None:
        """New records were written: wake the shippers. Safe from any thread (the writer calls
        it from its worker thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._notify_all)

    def _notify_all(self) -> None:
        for shipper in self._shippers.values():
            shipper.notify()

    def status(self) -> list[dict[str, object]]:
        return [shipper.status() for shipper in self._shippers.values()]

    async def close(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Drain every shipper (concurrently, each for at most ``drain_seconds``) and stop."""
        async with self._lock:
            shippers = list(self._shippers.values())
            self._shippers.clear()
            self._applied.clear()
            await asyncio.gather(*(shipper.close(drain_seconds) for shipper in shippers))
