"""When a shipper sends what it has read, and how long it waits after a failure. Pure: the clock
and the random source are passed in.

Two ways to close a batch (``BatchPolicy``):

- linger (Elasticsearch, stdout): send once the oldest record waiting is ``window_seconds``
  old, or the batch is full (``max_records`` / ``max_bytes``). A backlog goes out at once.
- aligned windows (S3): one batch per UTC-aligned window of record timestamps (``[k*W,
  (k+1)*W)``, never across midnight, since object keys carry the day). A window is closed by a
  record from a later window, by ``max_records`` / ``max_bytes``, or ``grace_seconds`` after
  its end by the clock (records are stamped when the event happens and written a moment later).
  Records are taken in file order, so a record stamped a little earlier than the window that
  is open joins it rather than reopening an old one.

While draining (the process is stopping) everything waiting goes out, windows or not.

``backoff_delay``: "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"), as
the sidecar's upstream retries use: try ``i`` waits a random time in ``[0, min(cap, base*2**i)]``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agentgov.audit.sinks.logread import LogLine

DAY_SECONDS: Final = 86_400
_MAX_DOUBLINGS: Final = 62


@dataclass(frozen=True)
class BatchPolicy:
    max_records: int
    max_bytes: int
    window_seconds: float  # 0: send at once
    aligned: bool = False
    grace_seconds: float = 2.0


@dataclass(frozen=True)
class Cut:
    """``count`` lines to send now (0: none yet); ``wake_at``: when to look again (None: when
    more lines arrive)."""

    count: int
    wake_at: float | None = None


def window_bounds(timestamp: float, window_seconds: float) -> tuple[float, float]:
    """The UTC-aligned window holding ``timestamp``, cut at the next midnight."""
    width = max(window_seconds, 1e-9)
    start = math.floor(timestamp / width) * width
    midnight = (math.floor(timestamp / DAY_SECONDS) + 1) * DAY_SECONDS
    return start, min(start + width, midnight)


def cut(lines: Sequence[LogLine], policy: BatchPolicy, now: float, *, draining: bool = False) -> Cut:
    """How many of ``lines`` (file order, oldest first) make the next batch, if it is due."""
    if not lines:
        return Cut(0)
    first_ts = next((line.timestamp for line in lines if line.timestamp is not None), None)
    if first_ts is None:
        # Only unusable lines so far: they are dead-lettered, no window to wait for.
        return Cut(len(lines))
    end = window_bounds(first_ts, policy.window_seconds)[1] if policy.aligned else math.inf
    count = size = 0
    for line in lines:
        if count >= policy.max_records or (count and size + line.size > policy.max_bytes):
            return Cut(count)
        if policy.aligned and count and line.timestamp is not None and line.timestamp >= end:
            return Cut(count)  # a later window has begun: this one is complete
        count += 1
        size += line.size
    if draining or count >= policy.max_records or size >= policy.max_bytes:
        return Cut(count)
    due = end + policy.grace_seconds if policy.aligned else first_ts + policy.window_seconds
    if now >= due:
        return Cut(count)
    return Cut(0, wake_at=due)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): full jitter."""
    if attempt < 0 or base <= 0 or cap < 0:
        raise ValueError("attempt must be >= 0, base > 0 and cap >= 0")
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(attempt, _MAX_DOUBLINGS)))
