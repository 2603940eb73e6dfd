"""When to retry an upstream call, and how long to wait between tries. Pure; no I/O, no clock.

The rule (``should_retry``): a retry must never make an upstream do a thing twice.

- The request never left the sidecar — the connection was refused, reset or timed out while
  connecting, DNS failed (``"connect"``): retry, whatever the method. The upstream saw nothing.
- The request was sent and then the connection dropped (``"reset_after_send"``), the answer
  did not come in time (``"timeout"``), or the upstream said 502, 503 or 504 (``"status_502"``,
  ...): retry only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE; RFC 9110 section
  9.2.2). The upstream may have done the work already; doing an idempotent request again is
  harmless, doing a POST again is not — a model call would be paid twice, a tool write applied
  twice. So model POSTs are retried only when they were never sent.
- Anything else (other statuses, a bad answer, ``"other"``): no retry.

Waits use "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter"): try ``i``
waits a uniformly random time in ``[0, min(cap, base * 2**i)]``, which spreads the retries of
many clients instead of synchronising them. The random source is injected.
"""

from __future__ import annotations

import asyncio
import random
from typing import Final, Literal

import aiohttp

from agentgov.audit.sinks.batching import backoff_delay

FailureKind = Literal[
    "connect", "reset_after_send", "timeout", "status_502", "status_503", "status_504", "other",
]
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRYABLE_WHEN_IDEMPOTENT: Final = frozenset({"reset_after_send", "timeout", "status_502", "status_503", "status_504"})


def should_retry(method: str, failure_kind: FailureKind) -> bool:
    """Whether a failed call may be tried again (see the module docstring for the rule)."""
    if failure_kind == "connect":
        return True
    return method.upper() in IDEMPOTENT_METHODS and failure_kind in _RETRYABLE_WHEN_IDEMPOTENT


def failure_kind_for_status(status: int) -> FailureKind | None:
    """The failure an upstream status means; None for a status that is not a failure (< 500)."""
    if status in (502, 503, 504):
        return f"status_{status}"  # type: ignore[return-value]
    return "other" if status >= 500 else None


def failure_kind_of(error: BaseException) -> FailureKind:
    """Classify an aiohttp client error. Errors that may have come after the request was
    written count as ``reset_after_send`` (the safe assumption: never retried for POST)."""
    if isinstance(error, aiohttp.ClientConnectorError):  # includes DNS and refused connections
        return "connect"
    if isinstance(error, aiohttp.ConnectionTimeoutError):  # the connect phase timed out
        return "connect"
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
        return "reset_after_send"
    return "other"


def backoff_delays(attempts: int, base: float, cap: float, rng: random.Random) -> list[float]:
    """Seconds to wait before each of ``attempts`` retries (full jitter, exponential ceiling)."""
    if attempts < 0:
        raise ValueError("attempts must be >= 0")
    if base <= 0 or cap < 0:
        raise ValueError("base must be > 0 and cap >= 0")
    return [backoff_delay(i, base, cap, rng) for i in range(attempts)]
