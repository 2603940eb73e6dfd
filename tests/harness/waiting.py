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
from typing import TypeVar

T = TypeVar('T')

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.05


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline; the message names the last observation."""


def _describe(what: str, timeout: float, last: object, error: BaseException | None) -> str:
    seen = f'last raised {error!r}' if error is not None else f'last saw {last!r}'
    return f'timed out after {timeout:.1f}s waiting for {what}; {seen}'


def wait_for(probe: Callable[[], T], predicate: Callable[[T], bool] = bool, *, what: str = 'the condition',
             timeout: float = DEFAULT_TIMEOUT, interval: float = DEFAULT_INTERVAL,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``probe`` until ``predicate(result)`` holds; return that result.

    Exceptions listed in ``ignore`` count as "not yet" (and are reported if the wait times out).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = probe()
        except ignore as e:
            error = e
        else:
            error = None
            last = value
            if predicate(value):
                return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(what, timeout, last, error))
        time.sleep(interval)


async def async_wait_for(probe: Callable[[], Awaitable[T]], predicate: Callable[[T], bool] = bool, *,
                         what: str = 'the condition', timeout: float = DEFAULT_TIMEOUT,
                         interval: float = DEFAULT_INTERVAL,
                         ignore: tuple[type[BaseException], ...] = ()) -> T:
    """The asyncio twin of :func:`wait_for`: awaits ``probe()`` between non-blocking pauses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = await probe()
        except ignore as e:
            error = e
        else:
            error = None
            last = value
            if predicate(value):
                return value
        if loop.time() >= deadline:
            raise WaitTimeout(_describe(what, timeout, last, error))
        await asyncio.sleep(interval)
