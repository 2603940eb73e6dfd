"""Circuit breakers (agentgov.sidecar.breaker) with a fake clock: the transition table, half-open
trial slots, stale and leaked permits, the registry across reloads; and the retry rule and
full-jitter backoff (agentgov.sidecar.retry)."""
from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.sidecar.breaker import Breaker, Breakers, Permit, State
from agentgov.sidecar.retry import (
    IDEMPOTENT_METHODS, FailureKind, backoff_delays, failure_kind_for_status, failure_kind_of, should_retry,
)

SETTINGS = CircuitBreaker(failure_threshold=3, call_timeout_seconds=10, recovery_timeout_seconds=30,
                          half_open_successes=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


Transition = tuple[str, str, State, State]


def make(clock: FakeClock, settings: CircuitBreaker = SETTINGS) -> tuple[Breaker, list[Transition]]:
    seen: list[Transition] = []
    breaker = Breaker('gpt-4o', settings, clock, kind='model', on_transition=lambda *t: seen.append(t))
    return breaker, seen


def call(breaker: Breaker, ok: bool) -> bool:
    """One call through the breaker; False when it was refused."""
    permit = breaker.try_acquire()
    if permit is None:
        return False
    if ok:
        permit.success()
    else:
        permit.failure()
    return True


def open_it(breaker: Breaker) -> None:
    for _ in range(breaker.settings.failure_threshold):
        assert call(breaker, ok=False)
    assert breaker.state == 'open'


# --- the transition table ------------------------------------------------------------------

def test_a_new_breaker_is_closed_and_allows_calls(clock: FakeClock) -> None:
    breaker, seen = make(clock)
    assert breaker.state == 'closed'
    assert breaker.retry_after() == 0
    assert call(breaker, ok=True)
    assert seen == []


def test_failures_below_the_threshold_keep_it_closed(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    for _ in range(SETTINGS.failure_threshold - 1):
        call(breaker, ok=False)
    assert breaker.state == 'closed'
    assert breaker.failures == SETTINGS.failure_threshold - 1


def test_a_success_resets_the_consecutive_failure_count(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    for _ in range(5):  # two failures, a success, two failures...: never three in a row
        call(breaker, ok=False)
        call(breaker, ok=False)
        call(breaker, ok=True)
    assert breaker.state == 'closed'
    assert breaker.failures == 0


def test_threshold_consecutive_failures_open_it_and_calls_fail_fast(clock: FakeClock) -> None:
    breaker, seen = make(clock)
    open_it(breaker)
    assert seen == [('model', 'gpt-4o', 'closed', 'open')]
    assert breaker.try_acquire() is None
    assert breaker.rejected == 1
    assert breaker.retry_after() == pytest.approx(30)
    clock.advance(12)
    assert breaker.retry_after() == pytest.approx(18)


def test_it_stays_open_until_the_recovery_timeout_then_half_opens(clock: FakeClock) -> None:
    breaker, seen = make(clock)
    open_it(breaker)
    clock.advance(29.9)
    assert breaker.state == 'open'
    assert breaker.try_acquire() is None
    clock.advance(0.1)
    assert breaker.state == 'half_open'
    assert breaker.retry_after() == 0
    assert seen[-1] == ('model', 'gpt-4o', 'open', 'half_open')


def test_half_open_closes_after_the_required_successes(clock: FakeClock) -> None:
    breaker, seen = make(clock)
    open_it(breaker)
    clock.advance(30)
    assert call(breaker, ok=True)
    assert breaker.state == 'half_open'
    assert call(breaker, ok=True)
    assert breaker.state == 'closed'
    assert [t[2:] for t in seen] == [('closed', 'open'), ('open', 'half_open'), ('half_open', 'closed')]


def test_a_failure_in_half_open_reopens_for_a_full_recovery_timeout(clock: FakeClock) -> None:
    breaker, seen = make(clock)
    open_it(breaker)
    clock.advance(30)
    assert call(breaker, ok=True)
    assert call(breaker, ok=False)
    assert breaker.state == 'open'
    assert breaker.retry_after() == pytest.approx(30)
    assert seen[-1][2:] == ('half_open', 'open')


def test_after_closing_again_it_needs_the_full_threshold_to_reopen(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    open_it(breaker)
    clock.advance(30)
    call(breaker, ok=True)
    call(breaker, ok=True)
    call(breaker, ok=False)
    call(breaker, ok=False)
    assert breaker.state == 'closed'


# --- half-open trial slots -------------------------------------------------------------------

def test_half_open_allows_only_as_many_concurrent_trials_as_successes_needed(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    open_it(breaker)
    clock.advance(30)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None and first.trial and second is not None
    assert breaker.try_acquire() is None, 'a third concurrent trial must fail fast'
    assert breaker.retry_after() == 1.0
    first.release()  # a trial that ends without a verdict gives its slot back
    third = breaker.try_acquire()
    assert third is not None
    second.success()
    third.success()
    assert breaker.state == 'closed'


def test_a_leaked_trial_is_reclaimed_as_a_failure_after_the_call_timeout(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    open_it(breaker)
    clock.advance(30)
    leaked = [breaker.try_acquire(), breaker.try_acquire()]
    assert all(leaked)
    clock.advance(SETTINGS.call_timeout_seconds)
    assert breaker.state == 'open', 'trials that never settle must not wedge the breaker in half-open'
    clock.advance(30)
    assert breaker.try_acquire() is not None


def test_a_permit_from_before_a_transition_has_no_say(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    slow = breaker.try_acquire()  # started while closed
    assert slow is not None
    open_it(breaker)
    clock.advance(30)
    assert breaker.state == 'half_open'
    slow.success()
    slow.success()
    assert breaker.state == 'half_open', 'a call started while closed must not close a half-open breaker'
    late_failure = breaker.try_acquire()
    assert late_failure is not None
    open_it_again = breaker.try_acquire()
    assert open_it_again is not None
    late_failure.success()
    open_it_again.success()
    assert breaker.state == 'closed'


def test_settling_a_permit_twice_counts_once(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    permit = breaker.try_acquire()
    assert permit is not None
    for _ in range(SETTINGS.failure_threshold):
        permit.failure()
    assert breaker.state == 'closed'
    assert breaker.failures == 1
    assert permit.verdict == 'failure'


# --- the permit as a context manager ----------------------------------------------------------

def test_leaving_the_block_normally_is_a_success(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    call(breaker, ok=False)
    with breaker.try_acquire() or pytest.fail('refused'):
        pass
    assert breaker.failures == 0


def test_an_exception_leaving_the_block_is_a_failure(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    for _ in range(SETTINGS.failure_threshold):
        with pytest.raises(ConnectionError):
            with breaker.try_acquire() or pytest.fail('refused'):
                raise ConnectionError('refused')
    assert breaker.state == 'open'


def test_an_explicit_verdict_inside_the_block_wins(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    with breaker.try_acquire() or pytest.fail('refused') as permit:
        permit.failure()  # e.g. the upstream answered 503
    assert breaker.failures == 1


async def test_a_cancelled_call_returns_its_trial_slot_without_a_verdict(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    open_it(breaker)
    clock.advance(30)
    started = asyncio.Event()

    async def trial() -> None:
        permit = breaker.try_acquire()
        assert permit is not None
        with permit:
            started.set()
            await asyncio.Event().wait()  # an upstream that never answers

    task = asyncio.create_task(trial())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == 'half_open'
    permits = [breaker.try_acquire(), breaker.try_acquire()]
    assert all(permits), 'the cancelled trial must have returned its slot'


def test_a_failing_transition_hook_does_not_break_calls(clock: FakeClock) -> None:
    def explode(*_: object) -> None:
        raise RuntimeError('metrics backend down')

    breaker = Breaker('search', SETTINGS, clock, kind='tool', on_transition=explode)
    open_it(breaker)
    assert breaker.try_acquire() is None


def test_permit_repr_names_the_breaker(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    permit = breaker.try_acquire()
    assert isinstance(permit, Permit)
    assert 'model/gpt-4o' in repr(permit)


# --- the registry ----------------------------------------------------------------------------

def test_registry_keeps_state_when_settings_are_unchanged(clock: FakeClock) -> None:
    breakers = Breakers(clock)
    first = breakers.get('region', 'eu-west-1', SETTINGS)
    open_it(first)
    again = breakers.get('region', 'eu-west-1', CircuitBreaker(**SETTINGS.model_dump()))
    assert again is first
    assert again.state == 'open'


def test_registry_rebuilds_a_breaker_whose_settings_changed_and_reports_the_reset(clock: FakeClock) -> None:
    seen: list[Transition] = []
    breakers = Breakers(clock, on_transition=lambda *t: seen.append(t))
    first = breakers.get('model', 'gpt-4o', SETTINGS)
    open_it(first)
    changed = SETTINGS.model_copy(update={'failure_threshold': 10})
    rebuilt = breakers.get('model', 'gpt-4o', changed)
    assert rebuilt is not first
    assert rebuilt.state == 'closed'
    assert rebuilt.settings.failure_threshold == 10
    assert seen == [('model', 'gpt-4o', 'closed', 'open'), ('model', 'gpt-4o', 'open', 'closed')]


def test_same_name_of_different_kinds_are_different_breakers(clock: FakeClock) -> None:
    breakers = Breakers(clock)
    model = breakers.get('model', 'search', SETTINGS)
    tool = breakers.get('tool', 'search', SETTINGS)
    open_it(tool)
    assert model.state == 'closed'
    assert breakers.unavailable('tool') == {'search'}
    assert breakers.unavailable('model') == set()


def test_configure_drops_breakers_no_longer_in_the_bundle_but_not_the_caches(clock: FakeClock) -> None:
    breakers = Breakers(clock)
    l2 = breakers.get('cache', 'l2', SETTINGS)
    breakers.configure({('model', 'a'): SETTINGS, ('model', 'b'): SETTINGS, ('tool', 'c'): SETTINGS})
    kept = breakers.find('model', 'a')
    dropped = breakers.configure({('model', 'a'): SETTINGS})
    assert dropped == [('model', 'b'), ('tool', 'c')]
    assert breakers.find('model', 'a') is kept
    assert breakers.find('model', 'b') is None
    assert breakers.find('cache', 'l2') is l2
    assert len(breakers) == 2


def test_snapshot_lists_every_breaker_for_ready(clock: FakeClock) -> None:
    breakers = Breakers(clock)
    open_it(breakers.get('region', 'eu-west-1', SETTINGS))
    breakers.get('model', 'gpt-4o', SETTINGS)
    clock.advance(10)
    assert breakers.snapshot() == [
        {'kind': 'model', 'name': 'gpt-4o', 'state': 'closed', 'failures': 0, 'retryAfter': 0.0},
        {'kind': 'region', 'name': 'eu-west-1', 'state': 'open', 'failures': 0, 'retryAfter': 20.0},
    ]


def test_unavailable_excludes_a_half_open_breaker_with_free_trial_slots(clock: FakeClock) -> None:
    breakers = Breakers(clock)
    open_it(breakers.get('region', 'eu-west-1', SETTINGS))
    assert breakers.unavailable('region') == {'eu-west-1'}
    clock.advance(30)
    assert breakers.unavailable('region') == set()


VALID_TRANSITIONS = {('closed', 'open'), ('open', 'half_open'), ('half_open', 'open'), ('half_open', 'closed')}


def test_flapping_upstream_with_30_percent_failures_follows_the_state_machine(clock: FakeClock) -> None:
    """The playbook's flapping upstream (30% of calls fail), one call every 100 ms: every
    opening follows exactly five consecutive failures, nothing passes while open, every open
    period lasts the recovery timeout, and the breaker keeps recovering."""
    rng = random.Random(7)
    settings = CircuitBreaker(failure_threshold=5, recovery_timeout_seconds=30, half_open_successes=3)
    breaker, seen = make(clock, settings)
    run_of_failures, opened_at = 0, None
    for _ in range(20_000):
        clock.advance(0.1)
        before = breaker.state
        ok = rng.random() >= 0.3
        if not call(breaker, ok=ok):
            assert before == 'open', f'refused while {before}'
            assert opened_at is not None and clock.now - opened_at < settings.recovery_timeout_seconds
            continue
        if before == 'closed':
            run_of_failures = 0 if ok else run_of_failures + 1
            assert (breaker.state == 'open') == (run_of_failures == settings.failure_threshold)
        if breaker.state == 'open':
            opened_at, run_of_failures = clock.now, 0
    assert all(t[2:] in VALID_TRANSITIONS for t in seen)
    assert sum(1 for t in seen if t[2:] == ('half_open', 'closed')) >= 5, 'it must keep recovering'
    assert sum(1 for t in seen if t[2:] == ('closed', 'open')) >= 5


# --- retry rule and backoff ------------------------------------------------------------------

RETRY_TABLE: list[tuple[str, FailureKind, bool]] = [
    ('POST', 'connect', True),
    ('GET', 'connect', True),
    ('POST', 'timeout', False),
    ('POST', 'status_502', False),
    ('POST', 'status_503', False),
    ('POST', 'status_504', False),
    ('POST', 'reset_after_send', False),
    ('PATCH', 'status_503', False),
    ('GET', 'timeout', True),
    ('get', 'status_502', True),
    ('HEAD', 'status_503', True),
    ('OPTIONS', 'status_504', True),
    ('PUT', 'reset_after_send', True),
    ('DELETE', 'timeout', True),
    ('GET', 'other', False),
    ('POST', 'other', False),
]


@pytest.mark.parametrize(('method', 'kind', 'retry'), RETRY_TABLE,
                         ids=[f'{m} after {k} is {"retried" if r else "not retried"}' for m, k, r in RETRY_TABLE])
def test_should_retry_only_what_cannot_be_done_twice(method: str, kind: FailureKind, retry: bool) -> None:
    assert should_retry(method, kind) is retry


def test_idempotent_methods_are_the_rfc_9110_ones_tools_use() -> None:
    assert IDEMPOTENT_METHODS == {'GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'}


@pytest.mark.parametrize(('status', 'kind'), [(200, None), (400, None), (429, None), (500, 'other'),
                                              (502, 'status_502'), (503, 'status_503'), (504, 'status_504')])
def test_failure_kind_for_status(status: int, kind: FailureKind | None) -> None:
    assert failure_kind_for_status(status) == kind


def test_failure_kind_of_aiohttp_errors() -> None:
    class Key:
        ssl = None
        host, port = '127.0.0.1', 9

    refused = aiohttp.ClientConnectorError(Key(), ConnectionRefusedError(111, 'refused'))  # type: ignore[arg-type]
    assert failure_kind_of(refused) == 'connect'
    assert failure_kind_of(aiohttp.ConnectionTimeoutError()) == 'connect'
    assert failure_kind_of(asyncio.TimeoutError()) == 'timeout'
    assert failure_kind_of(aiohttp.SocketTimeoutError()) == 'timeout'
    assert failure_kind_of(aiohttp.ServerDisconnectedError()) == 'reset_after_send'
    assert failure_kind_of(aiohttp.ClientOSError(104, 'reset')) == 'reset_after_send'
    assert failure_kind_of(ValueError('bad json')) == 'other'


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(1)
    samples = [backoff_delays(6, 0.1, 2.0, rng) for _ in range(2000)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    for i, ceiling in enumerate(ceilings):
        column = [s[i] for s in samples]
        assert all(0 <= d <= ceiling for d in column)
        mean = sum(column) / len(column)
        assert mean == pytest.approx(ceiling / 2, rel=0.1), 'uniform over [0, ceiling]'
        assert max(column) > 0.9 * ceiling and min(column) < 0.1 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng_and_bounded_for_many_attempts() -> None:
    assert backoff_delays(3, 0.5, 4.0, random.Random(3)) == backoff_delays(3, 0.5, 4.0, random.Random(3))
    assert backoff_delays(0, 0.5, 4.0, random.Random(3)) == []
    assert max(backoff_delays(2000, 0.5, 4.0, random.Random(3))) <= 4.0


@pytest.mark.parametrize(('attempts', 'base', 'cap'), [(-1, 0.1, 1.0), (3, 0.0, 1.0), (3, 0.1, -1.0)])
def test_backoff_refuses_nonsense_arguments(attempts: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        backoff_delays(attempts, base, cap, random.Random(0))
