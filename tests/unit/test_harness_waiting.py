"""The poll-with-deadline helpers: they return the first result the predicate accepts, count the
listed exceptions as "not yet", and on timeout say what the probe last returned or raised."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness.waiting import WaitTimeout, async_wait_for, wait_for


def _probe(*outcomes: object) -> Callable[[], object]:
    """A probe returning (or raising, for exceptions) each outcome in turn, then the last forever."""
    remaining: Iterator[object] = iter(outcomes)
    last: list[object] = [None]

    def probe() -> object:
        last[0] = next(remaining, last[0])
        if isinstance(last[0], BaseException):
            raise last[0]
        return last[0]

    return probe


def _wait_sync(probe: Callable[[], object], predicate: Callable[[Any], bool] = bool, **kwargs: Any) -> object:
    return wait_for(probe, predicate, interval=0, **kwargs)


def _wait_async(probe: Callable[[], object], predicate: Callable[[Any], bool] = bool, **kwargs: Any) -> object:
    async def awaitable_probe() -> object:
        return probe()

    return asyncio.run(async_wait_for(awaitable_probe, predicate, interval=0, **kwargs))


WAITS = pytest.mark.parametrize("wait", [_wait_sync, _wait_async], ids=["wait_for", "async_wait_for"])


@WAITS
def test_the_first_result_the_predicate_accepts_is_returned(wait: Callable[..., object]) -> None:
    assert wait(_probe(1, 2, 3, 4), lambda value: value >= 3) == 3


@WAITS
def test_an_ignored_exception_counts_as_not_yet(wait: Callable[..., object]) -> None:
    assert wait(_probe(KeyError("not yet"), "ready"), ignore=(KeyError,)) == "ready"


@WAITS
def test_an_exception_not_ignored_ends_the_wait(wait: Callable[..., object]) -> None:
    with pytest.raises(KeyError):
        wait(_probe(KeyError("boom"), "ready"))


@pytest.mark.parametrize(
    "outcomes, seen",
    [((1, 2), "last saw 2"), ((1, KeyError("gone")), "last raised KeyError('gone')")],
    ids=["a value last", "an ignored exception last"],
)
@WAITS
def test_a_timeout_names_what_the_wait_was_for_and_the_last_observation(
    wait: Callable[..., object], outcomes: tuple[object, ...], seen: str
) -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait(_probe(*outcomes), lambda value: False, what="the answer", timeout=0.01, ignore=(KeyError,))
    assert str(caught.value) == f"timed out after 0.0s waiting for the answer; {seen}"
