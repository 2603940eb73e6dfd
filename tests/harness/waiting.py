"""
Poll-with-deadline helpers for tests that wait for something to converge.

What it is for: replacing ``sleep`` in tests. A probe is called until a predicate holds or the
deadline passes; on timeout the error says what the probe returned last (or what it raised),
so a failing test shows the state it was stuck in.

What it must never do: sleep for a fixed time to "let things settle", swallow the last
observation, or retry forever (every wait has a deadline).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar('T')

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.05


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline; the message names the last observation."""


class _Progress(Generic[T]):
    """What one wait has seen so far, and its deadline: the part of ``wait_for`` and
    ``async_wait_for`` that does not depend on how the probe is called or how to pause."""

    def __init__(self, predicate: Callable[[T], bool], what: str, timeout: float, now: float) -> None:
        self.predicate, self.what, self.timeout, self.deadline = predicate, what, timeout, now + timeout
        self.last: object = None
        self.error: BaseException | None = None

    def holds(self, value: T) -> bool:
        """Record what the probe returned; whether it is what the wait is for."""
        self.last, self.error = value, None
        return self.predicate(value)

    def check_deadline(self, now: float) -> None:
        """Raise WaitTimeout, naming the last observation, once the deadline has passed."""
        if now >= self.deadline:
            seen = f'last raised {self.error!r}' if self.error is not None else f'last saw {self.last!r}'
            raise WaitTimeout(f'timed out after {self.timeout:.1f}s waiting for {self.what}; {seen}')


def wait_for(probe: Callable[[], T], predicate: Callable[[T], bool] = bool, *, what: str = 'the condition',
             timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``probe`` until ``predicate(result)`` holds; return that result.

    Exceptions listed in ``ignore`` count as "not yet" (and are reported if the wait times out).
    """
    progress = _Progress(predicate, what, timeout, time.monotonic())
    while True:
        try:
            value = probe()
        except ignore as e:
            progress.error = e
        else:
            if progress.holds(value):
                return value
        progress.check_deadline(time.monotonic())
        time.sleep(interval)


async def async_wait_for(probe: Callable[[], Awaitable[T]], predicate: Callable[[T], bool] = bool, *,
                         what: str = 'the condition', timeout: float = DEFAULT_TIMEOUT,
                         interval: float = DEFAULT_INTERVAL,
                         ignore: tuple[type[BaseException], ...] = ()) -> T:
    """The asyncio twin of :func:`wait_for`: awaits ``probe()`` between non-blocking pauses."""
    loop = asyncio.get_running_loop()
    progress = _Progress(predicate, what, timeout, loop.time())
    while True:
        try:
            value = await probe()
        except ignore as e:
            progress.error = e
        else:
            if progress.holds(value):
                return value
        progress.check_deadline(loop.time())
        await asyncio.sleep(interval)
