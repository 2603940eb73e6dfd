"""The tool rate limiter: the fixed-window decision as a table over a fake clock, the store's
memory bound, and keys a caller could craft."""
from __future__ import annotations

import pytest

from agentgov.sidecar.ratelimit import (
    Allowed, Limited, RateLimiter, RateWindow, caller_key, decide, window_index,
)


@pytest.mark.parametrize(
    ('window', 'limit', 'now', 'expected_window', 'expected'),
    [
        (None, 3, 0.0, RateWindow(0, 1), Allowed(remaining=2, reset_after=60.0)),
        (RateWindow(0, 1), 3, 10.0, RateWindow(0, 2), Allowed(remaining=1, reset_after=50.0)),
        (RateWindow(0, 2), 3, 59.5, RateWindow(0, 3), Allowed(remaining=0, reset_after=0.5)),
        (RateWindow(0, 3), 3, 45.0, RateWindow(0, 3), Limited(limit=3, retry_after=15.0)),
        (RateWindow(0, 3), 3, 60.0, RateWindow(1, 1), Allowed(remaining=2, reset_after=60.0)),
        (RateWindow(0, 3), 3, 600.25, RateWindow(10, 1), Allowed(remaining=2, reset_after=59.75)),
        (RateWindow(5, 3), 3, 30.0, RateWindow(5, 3), Limited(limit=3, retry_after=330.0)),
        (RateWindow(0, 7), 3, 1.0, RateWindow(0, 7), Limited(limit=3, retry_after=59.0)),
        (RateWindow(0, 2), 10, 1.0, RateWindow(0, 3), Allowed(remaining=7, reset_after=59.0)),
        (None, 1, 119.0, RateWindow(1, 1), Allowed(remaining=0, reset_after=1.0)),
    ],
    ids=[
        'the first call opens a window',
        'a call inside the window is counted',
        'the last allowed call leaves none',
        'a call over the limit is refused until the window ends',
        'the next window starts afresh',
        'a window long gone is replaced',
        'a clock that went back does not reset the limit',
        'a limit lowered by a reload refuses at once',
        'a limit raised by a reload allows more',
        'a limit of one allows one call per window',
    ],
)
def test_the_window_decides(window: RateWindow | None, limit: int, now: float,
                            expected_window: RateWindow, expected: object) -> None:
    assert decide(window, limit, now) == (expected_window, expected)


def test_a_limit_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decide(None, 0, 0.0)


def test_windows_are_aligned_to_the_clock() -> None:
    assert [window_index(t) for t in (0.0, 59.999, 60.0, 121.0)] == [0, 0, 1, 2]
    assert window_index(10.0, window_seconds=5.0) == 2


def test_the_limiter_counts_each_caller_and_tool_apart() -> None:
    limiter = RateLimiter()
    answers = [limiter.check('search', 'alice', 2, 1.0) for _ in range(3)]
    assert [type(a) for a in answers] == [Allowed, Allowed, Limited]
    assert isinstance(limiter.check('search', 'bob', 2, 1.0), Allowed)
    assert isinstance(limiter.check('weather', 'alice', 2, 1.0), Allowed)
    refused = limiter.check('search', 'alice', 2, 31.0)
    assert refused == Limited(limit=2, retry_after=29.0)
    assert isinstance(limiter.check('search', 'alice', 2, 60.0), Allowed)


def test_refused_calls_are_not_counted() -> None:
    limiter = RateLimiter()
    for _ in range(2):
        limiter.check('search', 'alice', 2, 0.0)
    for _ in range(50):
        assert isinstance(limiter.check('search', 'alice', 2, 1.0), Limited)
    # A higher limit after a reload: only the two allowed calls were counted.
    assert limiter.check('search', 'alice', 3, 2.0) == Allowed(remaining=0, reset_after=58.0)


def test_the_store_holds_at_most_max_callers_and_drops_the_least_recent() -> None:
    limiter = RateLimiter(max_callers=3)
    for user in ('a', 'b', 'c'):
        limiter.check('search', user, 1, 0.0)
    limiter.check('search', 'a', 1, 0.0)  # a: refused, but now the most recent
    limiter.check('search', 'd', 1, 0.0)  # evicts b, the least recently seen
    assert len(limiter) == 3
    assert isinstance(limiter.check('search', 'a', 1, 0.0), Limited)
    assert isinstance(limiter.check('search', 'c', 1, 0.0), Limited)
    assert isinstance(limiter.check('search', 'b', 1, 0.0), Allowed)  # forgotten: a fresh window
    for n in range(10_000):
        limiter.check('search', f'user-{n}', 1, 0.0)
    assert len(limiter) == 3


@pytest.mark.parametrize(
    ('first', 'second'),
    [
        (('a:b', 'c'), ('a', 'b:c')),
        (('a', 'bc'), ('ab', 'c')),
        (('search', 'alice\x00'), ('search', 'alice')),
        (('search', 'ALICE'), ('search', 'alice')),
        (('search', 'al\u0131ce'), ('search', 'alice')),
    ],
    ids=['a separator in a name', 'a shifted boundary', 'a trailing NUL', 'case', 'a look-alike letter'],
)
def test_crafted_names_never_share_a_window(first: tuple[str, str], second: tuple[str, str]) -> None:
    assert caller_key(*first) != caller_key(*second)
    limiter = RateLimiter()
    assert isinstance(limiter.check(*first, 1, 0.0), Allowed)
    assert isinstance(limiter.check(*second, 1, 0.0), Allowed)


@pytest.mark.parametrize('user', ['x' * 1_000_000, '\ud800lone surrogate', '', '\r\nX-Injected: 1', '🙂' * 100],
                         ids=['a megabyte name', 'a lone surrogate', 'an empty name', 'CRLF', 'emoji'])
def test_any_name_gets_a_fixed_size_key(user: str) -> None:
    assert len(caller_key('search', user)) == 16
    limiter = RateLimiter()
    assert isinstance(limiter.check('search', user, 1, 0.0), Allowed)
    assert isinstance(limiter.check('search', user, 1, 0.0), Limited)


def test_bad_store_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(max_callers=0)
    with pytest.raises(ValueError):
        RateLimiter(window_seconds=0)
