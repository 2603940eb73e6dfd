"""The stdout sink: each record as one JSON line on the process's standard output.

For clusters whose log collector (Fluent Bit, Vector, the cloud's agent) already ships
container output somewhere: the record is written exactly as it is in the local log, so the
collector's copy verifies with the same hash chain. The sidecar's own log lines go to
standard error, so the two never interleave.

This is the one at-least-once sink: a crash between writing and saving the cursor writes the
last batch again on restart (the records' ``hash`` tells the copies apart). Writes run in a
worker thread: a collector that reads slowly blocks the shipper, never the event loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO, Final

from agentgov.audit.sinks.base import Delivery, SinkUnavailable
from agentgov.audit.sinks.batching import BatchPolicy
from agentgov.audit.sinks.logread import LogLine
from agentgov.audit.sinks.settings import SinkKind, StdoutSinkSettings

MAX_BYTES: Final = 1024 * 1024


class StdoutSink:
    kind: SinkKind = "stdout"
    destination = "stdout"
    fixed_batches = False

    def __init__(self, settings: StdoutSinkSettings, stream: BinaryIO | None = None) -> None:
        self._stream = stream
        self.batching = BatchPolicy(max_records=settings.max_records, max_bytes=MAX_BYTES, window_seconds=0)

    async def open(self) -> None:
        return None

    async def deliver(self, batch: Sequence[LogLine]) -> Delivery:
        data = b"".join(line.raw + b"\n" for line in batch)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as e:
            raise SinkUnavailable("io", f"cannot write to standard output: {e.strerror or type(e).__name__}") from None
        return Delivery.all_delivered()

    def _write(self, data: bytes) -> None:
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        stream.write(data)
        stream.flush()

    async def close(self) -> None:
        return None

    def details(self) -> Mapping[str, object]:
        return {}
