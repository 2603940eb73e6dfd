"""Per-caller rate limits of tool calls: a fixed one-minute window per (tool, user).

The ToolPolicy's ``rateLimit.requestsPerMinute`` is a *fixed-window* limit (``api.toolpolicy.
RateLimit``): the clock is cut into windows of ``window_seconds`` (60) and each caller may make
``limit`` calls to a tool in each window. The ``limit + 1``-th call in a window is refused with
the time left until the window ends (the ``Retry-After`` of the 429). Refused calls do not
count. Fixed windows are simple and cheap, at the price that a caller can make up to twice the
limit across a window boundary (the last seconds of one window and the first of the next).

The decision is pure (:func:`decide`: a window and a time in, the new window and an answer
out; no clock, no I/O). :class:`RateLimiter` is the store around it: in-process, one entry per
(tool, user) that called recently, bounded in number (the least recently used go first). Keys
are hashed to a fixed size, so neither a long user name nor a crafted one can grow an entry
or collide two callers by concatenation.

Scope: **per sidecar replica**. Each pod's sidecar counts its own agent's calls; an agent
running N replicas lets a user make up to N x the limit per minute in total. (Tool calls come
from the agent in the same pod, so a caller's executions usually stay on one replica.) A
caller evicted from a full store starts a fresh window: the bound trades exactness under
memory pressure for a process that cannot be grown without limit.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

WINDOW_SECONDS: Final = 60.0
DEFAULT_MAX_CALLERS: Final = 100_000


@dataclass(frozen=True)
class RateWindow:
    """One caller's current window: its index (``floor(now / window_seconds)``) and calls counted."""

    index: int
    count: int


@dataclass(frozen=True)
class Allowed:
    """The call may go ahead; ``remaining`` calls are left in the window, which ends in ``reset_after`` s."""

    remaining: int
    reset_after: float


@dataclass(frozen=True)
class Limited:
    """The limit is reached; retry in ``retry_after`` seconds (when the window ends)."""

    limit: int
    retry_after: float


RateDecision = Allowed | Limited


def window_index(now: float, window_seconds: float = WINDOW_SECONDS) -> int:
    return math.floor(now / window_seconds)


def decide(window: RateWindow | None, limit: int, now: float,
           window_seconds: float = WINDOW_SECONDS) -> tuple[RateWindow, RateDecision]:
    """The caller's window after this call and the answer. Pure.

    A call in a later window than ``window`` starts a new one. A clock that went backwards
    (an earlier window) keeps counting in the window already held, so it never resets a limit.
    """
    if limit < 1:
        raise ValueError("a rate limit allows at least one call per window")
    current = window_index(now, window_seconds)
    if window is None or current > window.index:
        window = RateWindow(current, 0)
    reset_after = max(0.0, (window.index + 1) * window_seconds - now)
    if window.count >= limit:
        return window, Limited(limit=limit, retry_after=reset_after)
    counted = RateWindow(window.index, window.count + 1)
    return counted, Allowed(remaining=limit - counted.count, reset_after=reset_after)


def caller_key(tool: str, user: str) -> bytes:
    """A fixed-size key for (tool, user); the length prefix makes ("a:b", "c") and ("a", "b:c") differ."""
    tool_bytes = tool.encode("utf-8", "surrogatepass")
    data = len(tool_bytes).to_bytes(8, "big") + tool_bytes + user.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


class RateLimiter:
    """Fixed windows per (tool, user), in this process, at most ``max_callers`` of them."""

    def __init__(self, *, max_callers: int = DEFAULT_MAX_CALLERS, window_seconds: float = WINDOW_SECONDS) -> None:
        if max_callers < 1 or not window_seconds > 0:
            raise ValueError("max_callers and window_seconds must be positive")
        self._max = max_callers
        self._window_seconds = window_seconds
        self._windows: OrderedDict[bytes, RateWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, tool: str, user: str, limit_per_minute: int, now: float) -> RateDecision:
        """Count one call of ``user`` to ``tool`` at ``now`` (seconds, any monotonic clock), or refuse it."""
        key = caller_key(tool, user)
        window, decision = decide(self._windows.get(key), limit_per_minute, now, self._window_seconds)
        self._windows[key] = window
        self._windows.move_to_end(key)
        while len(self._windows) > self._max:
            self._windows.popitem(last=False)
        return decision
