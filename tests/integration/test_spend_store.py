"""The spend store contract, run against the real Redis store and the in-process one alike, then the
guard's failure policies against a redis-server that is killed, paused and restarted, and its
usage records, written in the background (batched, bounded, replayed, flushed at shutdown).

Every figure asserted is read back from the store (for Redis: the hash itself, with HGETALL).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agentgov.api import spendstore
from agentgov.api.spendstore import SubjectSpend
from agentgov.sidecar import budgets
from agentgov.sidecar.budgets import BudgetAlert, HoldLine
from agentgov.sidecar.errors import BudgetExceeded, BudgetStoreUnavailable
from agentgov.sidecar.spend import (
    BudgetGuard, MemorySpendStore, RedisSpendStore, SpendStore, SpendStoreUnavailable, UsageRecord, redis_client,
)
from budget_support import NOON, TEST_MODEL, Clock, budget, bundle_with, chat, identity
from harness.redis import RedisServer
from harness.waiting import async_wait_for

NS = 'research'  # make_bundle's namespace
COST = 215_000  # chat(100): 15 prompt tokens x 1,000 + 100 output tokens x 2,000 micro-USD


@pytest.fixture(params=['redis', 'memory'])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SpendStore]:
    if request.param == 'memory':
        yield MemorySpendStore()
        return
    client = redis_client(request.getfixturevalue('redis_url'), 5.0)
    try:
        yield RedisSpendStore(client, timeout=5.0)
    finally:
        await client.aclose()


async def figures(store: SpendStore, name: str, kind: str = 'day', when: float = NOON) -> dict[str, SubjectSpend]:
    return await store.period(NS, name, kind, when)  # type: ignore[arg-type]


def day_key(name: str, kind: str = 'day') -> str:
    return spendstore.period_key(NS, name, kind, dt.datetime.fromtimestamp(NOON, dt.timezone.utc))  # type: ignore[arg-type]


def line(name: str = 'b', *, amount: int = COST, subjects: tuple[str, ...] = ('user:alice',), daily: int = 1_000_000,
         monthly: int = 10_000_000, enforce: bool = True, hold_id: str = 'h1', at: float = NOON,
         hold_seconds: float = 60, thresholds: tuple[int, ...] = (80, 90, 100)) -> HoldLine:
    return HoldLine(namespace=NS, budget=name, subjects=subjects, amount_micros=amount, day_limit_micros=daily,
                    month_limit_micros=monthly, thresholds=thresholds, enforce=enforce, failure_policy='Closed',
                    price=budgets.shipped_pricing()['gpt-4o'], unpriced=False, hold_id=hold_id, created_at=at,
                    deadline=at + hold_seconds)


# --- the store contract -----------------------------------------------------------------------

async def test_a_reservation_is_held_then_settled_to_the_actual_cost(store: SpendStore) -> None:
    hold = line()
    assert await store.reserve(hold, NOON) is None
    for kind in ('day', 'month'):
        assert (await figures(store, 'b', kind))['user:alice'] == SubjectSpend(0, COST)
    assert await store.settle(hold, 100_000, NOON + 1) == []
    for kind in ('day', 'month'):
        assert (await figures(store, 'b', kind))['user:alice'] == SubjectSpend(100_000, 0)


async def test_a_hard_budget_refuses_what_would_pass_the_daily_limit(store: SpendStore) -> None:
    for i in range(4):
        assert await store.reserve(line(hold_id=f'h{i}'), NOON) is None
    refusal = await store.reserve(line(hold_id='h5'), NOON)  # 5 x 215,000 > 1,000,000
    assert refusal == budgets.Refusal('user:alice', 'day', 0, 4 * COST)
    assert (await figures(store, 'b'))['user:alice'].reserved_micros == 4 * COST


async def test_the_monthly_limit_counts_spend_of_earlier_days(store: SpendStore) -> None:
    yesterday = NOON - 86_400
    first = line(daily=1_000_000, monthly=1_200_000, at=yesterday, hold_id='y')
    assert await store.reserve(first, yesterday) is None
    await store.settle(first, 1_000_000, yesterday)
    refusal = await store.reserve(line(daily=1_000_000, monthly=1_200_000, hold_id='t'), NOON)
    assert refusal == budgets.Refusal('user:alice', 'month', 1_000_000, 0)
    assert await figures(store, 'b') == {}  # today's hash untouched by the refusal


async def test_a_spent_budget_refuses_even_a_free_call(store: SpendStore) -> None:
    spend = line(amount=1_000_000, hold_id='all')
    assert await store.reserve(spend, NOON) is None
    await store.settle(spend, 1_000_000, NOON)
    assert await store.reserve(line(amount=0, hold_id='free'), NOON) == budgets.Refusal('user:alice', 'day',
                                                                                         1_000_000, 0)


async def test_a_soft_budget_never_refuses_and_counts_past_the_limit(store: SpendStore) -> None:
    alerts: list[budgets.StoreAlert] = []
    for i in range(6):
        hold = line(enforce=False, hold_id=f's{i}')
        assert await store.reserve(hold, NOON) is None
        alerts += await store.settle(hold, COST, NOON) or []
    assert (await figures(store, 'b'))['user:alice'].spent_micros == 6 * COST
    assert [(a.period, a.percent) for a in alerts] == [('day', 80), ('day', 90), ('day', 100)]


async def test_a_released_hold_gives_its_reservation_back(store: SpendStore) -> None:
    hold = line()
    await store.reserve(hold, NOON)
    assert await store.release(hold, NOON) is True
    assert await store.release(hold, NOON) is False
    assert await figures(store, 'b') == {}


async def test_an_expired_hold_is_released_by_the_next_operation(store: SpendStore) -> None:
    crashed = line(amount=900_000, hold_id='crashed', hold_seconds=30)
    assert await store.reserve(crashed, NOON) is None
    assert await store.reserve(line(hold_id='blocked'), NOON + 10) is not None  # 900,000 + 215,000 > limit
    assert await store.reserve(line(hold_id='later', at=NOON + 31), NOON + 31) is None
    assert (await figures(store, 'b'))['user:alice'].reserved_micros == COST


async def test_settling_an_expired_hold_commits_the_spend_without_negative_reservations(store: SpendStore) -> None:
    slow = line(hold_seconds=5)
    await store.reserve(slow, NOON)
    await store.release(line(hold_id='other'), NOON + 6)  # any operation sweeps the expired hold
    assert await store.settle(slow, 50_000, NOON + 7) == []
    assert (await figures(store, 'b'))['user:alice'] == SubjectSpend(50_000, 0)


async def test_a_retried_settlement_is_counted_once(store: SpendStore) -> None:
    hold = line()
    await store.reserve(hold, NOON)
    assert await store.settle(hold, COST, NOON) == []
    assert await store.settle(hold, COST, NOON + 1) is None
    assert (await figures(store, 'b'))['user:alice'].spent_micros == COST


async def test_thresholds_alert_once_per_period(store: SpendStore) -> None:
    seen = []
    for i, at in enumerate([NOON, NOON, NOON, NOON, NOON + 86_400, NOON + 86_400, NOON + 86_400, NOON + 86_400]):
        hold = line(amount=250_000, daily=1_000_000, monthly=2_000_000, enforce=False, hold_id=f'h{i}', at=at)
        await store.reserve(hold, at)
        seen.append([(a.period, a.percent) for a in await store.settle(hold, 250_000, at) or []])
    assert seen == [  # four calls of $0.25 a day against $1 a day and $2 a month
        [], [], [], [('day', 80), ('day', 90), ('day', 100)],
        [], [], [('month', 80)], [('day', 80), ('day', 90), ('day', 100), ('month', 90), ('month', 100)],
    ]
    assert (await figures(store, 'b', 'month'))['user:alice'].alerted == frozenset({80, 90, 100})


async def test_every_subject_of_a_budget_is_checked_and_charged(store: SpendStore) -> None:
    both = ('user:alice', 'team:research')
    team_heavy = line(amount=900_000, subjects=('team:research',), hold_id='t')
    await store.reserve(team_heavy, NOON)
    await store.settle(team_heavy, 900_000, NOON)
    assert await store.reserve(line(subjects=both, hold_id='b1'), NOON) == budgets.Refusal(
        'team:research', 'day', 900_000, 0)
    small = line(amount=50_000, subjects=both, hold_id='b2')
    assert await store.reserve(small, NOON) is None
    await store.settle(small, 50_000, NOON)
    got = await figures(store, 'b')
    assert (got['user:alice'].spent_micros, got['team:research'].spent_micros) == (50_000, 950_000)


async def test_usage_is_summed_per_user_day_agent_and_model(store: SpendStore) -> None:
    record = UsageRecord(NS, 'agent-a', 'alice', 'gpt-4o', 10, 20, 300, cached=False, at=NOON)
    await store.record_usage(record)
    await store.record_usage(UsageRecord(NS, 'agent-a', 'alice', 'gpt-4o', 1, 2, 0, cached=True, at=NOON))
    if isinstance(store, RedisSpendStore):
        raw = await store.client.hgetall(spendstore.usage_key('alice', dt.date(2025, 3, 14)))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        assert await store.client.ttl(spendstore.usage_key('alice', dt.date(2025, 3, 14))) > 300 * 86_400
    else:
        assert isinstance(store, MemorySpendStore)
        fields = store.usage('alice', dt.date(2025, 3, 14))
    prefix = 'research/agent-a|gpt-4o|'
    assert fields == {prefix + 'cost_micros': '300', prefix + 'input_tokens': '11', prefix + 'output_tokens': '22',
                      prefix + 'calls': '2', prefix + 'cache_hits': '1'}


# --- the guard over a healthy store: races and alerts ------------------------------------------

async def test_64_concurrent_calls_never_commit_more_than_the_limit(store: SpendStore) -> None:
    clock = Clock()
    guard = BudgetGuard(store, clock=clock)
    bundle = bundle_with(budget('race', daily=2.0, monthly=2.0))  # 2,000,000 µUSD: 9 calls of 215,000 fit

    async def call() -> bool:
        try:
            hold = await guard.reserve(bundle, identity(), TEST_MODEL, chat(100))
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)  # let the other calls interleave while this one is "upstream"
        settlement = await guard.settle(hold, 15, 100)
        assert settlement.cost_usd == 0.215
        return True

    results = await asyncio.gather(*(call() for _ in range(64)))
    assert results.count(True) == 9
    committed = (await figures(store, 'race'))['user:alice']
    assert committed == SubjectSpend(9 * COST, 0, frozenset({80, 90}))
    if isinstance(store, RedisSpendStore):  # the hash itself, as the operator reads it
        raw = await store.client.hgetall(day_key('race', 'month'))
        assert int(raw[b'spent:user:alice']) == 9 * COST <= 2_000_000
        assert b'reserved:user:alice' not in raw


async def test_alerts_fire_once_per_threshold_under_concurrent_settles(store: SpendStore) -> None:
    guard = BudgetGuard(store, clock=Clock())
    bundle = bundle_with(budget('soft', daily=5.0, monthly=50.0, thresholds=[50, 80, 90], enforcement='Soft'))
    holds = [await guard.reserve(bundle, identity(), TEST_MODEL, chat(100)) for _ in range(64)]  # 64 x 0.215
    settlements = await asyncio.gather(*(guard.settle(h, 15, 100) for h in holds))
    alerts = [a for s in settlements for a in s.alerts]
    # 64 x $0.215 = $13.76: every threshold of the $5 day once, none of the $50 month (27%).
    assert sorted((a.period, a.percent) for a in alerts) == [('day', 50), ('day', 80), ('day', 90), ('day', 100)]
    assert all(a.budget == 'soft' and a.subject == 'user:alice' and a.limit_usd in (5.0, 50.0) for a in alerts)


async def test_a_refused_call_leaves_no_reservation_on_other_budgets(store: SpendStore) -> None:
    guard = BudgetGuard(store, clock=Clock())
    roomy, tight = budget('roomy'), budget('tight', daily=0.1, monthly=1.0)
    with pytest.raises(BudgetExceeded) as refused:
        await guard.reserve(bundle_with(roomy, tight), identity(), TEST_MODEL, chat(100))
    assert refused.value.details['budget'] == 'tight'
    assert await figures(store, 'roomy') == {}


async def test_a_failed_upstream_call_releases_its_hold(store: SpendStore) -> None:
    guard = BudgetGuard(store, clock=Clock())
    hold = await guard.reserve(bundle_with(budget()), identity(), TEST_MODEL, chat(100))
    assert (await figures(store, 'team-budget'))['user:alice'].reserved_micros == COST
    await guard.release(hold)
    await guard.release(hold)
    assert await figures(store, 'team-budget') == {}
    assert (await guard.settle(hold, 15, 100)).alerts == ()  # a finished hold settles nothing


async def test_unbelievable_usage_charges_the_reservation(store: SpendStore) -> None:
    guard = BudgetGuard(store, clock=Clock())
    hold = await guard.reserve(bundle_with(budget()), identity(), TEST_MODEL, chat(100))
    settlement = await guard.settle(hold, '15', -3)
    assert settlement.estimated and settlement.cost_usd == 0.215
    assert (await figures(store, 'team-budget'))['user:alice'] == SubjectSpend(COST, 0)


async def test_an_unpriced_model_is_charged_at_the_ceiling_and_flagged(store: SpendStore) -> None:
    guard = BudgetGuard(store, clock=Clock())
    hold = await guard.reserve(bundle_with(budget()), identity(), 'home-grown-llm', chat(100))
    assert hold.unpriced and guard.health()['unpricedCalls'] == 1
    settlement = await guard.settle(hold, 15, 100)
    assert settlement.cost_usd == 0.215  # TEST_MODEL's $1/$2 per 1K are the highest prices the budget knows
    assert (await figures(store, 'team-budget'))['user:alice'].spent_micros == COST


# --- failure policies against a redis-server that fails ----------------------------------------

def guard_on(server: RedisServer, clock: Clock, **kwargs: object) -> tuple[BudgetGuard, aioredis.Redis]:
    client = redis_client(server.url, 0.25)
    return BudgetGuard(RedisSpendStore(client, timeout=0.25), clock=clock, probe_interval=0.05,
                       **kwargs), client  # type: ignore[arg-type]


async def test_redis_killed_mid_load_closed_refuses_and_open_allows_flagged(private_redis: RedisServer) -> None:
    clock = Clock()
    guard, client = guard_on(private_redis, clock)
    closed = bundle_with(budget('closed', failure_policy='Closed'))
    opened = bundle_with(budget('open', failure_policy='Open', daily=1.0))
    try:
        for _ in range(5):
            hold = await guard.reserve(closed, identity(), TEST_MODEL, chat(100))
            assert not hold.degraded
            await guard.settle(hold, 15, 100)
        private_redis.kill()
        with pytest.raises(BudgetStoreUnavailable) as refused:
            await guard.reserve(closed, identity(), TEST_MODEL, chat(100))
        assert refused.value.status == 503 and refused.value.details == {'budget': 'closed', 'failurePolicy': 'Closed'}
        holds = [await guard.reserve(opened, identity(), TEST_MODEL, chat(100)) for _ in range(4)]
        assert all(h.degraded for h in holds)
        # The local ledger still applies the limit to what this replica counted.
        with pytest.raises(BudgetExceeded):
            await guard.reserve(opened, identity(), TEST_MODEL, chat(100))
        settlements = [await guard.settle(h, 15, 100) for h in holds]
        assert all(s.degraded for s in settlements)
        assert [(a.percent, a.degraded) for s in settlements for a in s.alerts] == [(80, True)]
        health = guard.health()
        assert health['reachable'] is False and health['degradedBudgets'] == ['open']
        assert health['degradedCalls'] == 4 and health['pendingSettlements'] == 4
        assert 'ConnectionError' in str(health['lastError']) or 'no answer' in str(health['lastError'])
        assert guard.counters.refused_unavailable == 1
    finally:
        await client.aclose()


async def test_a_hung_redis_costs_a_call_its_timeout_not_a_hang(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    bundle = bundle_with(budget(failure_policy='Open'))
    try:
        await guard.reserve(bundle, identity(), TEST_MODEL, chat())  # connected and warm
        private_redis.pause()
        started = time.monotonic()
        hold = await guard.reserve(bundle, identity(), TEST_MODEL, chat())
        elapsed = time.monotonic() - started
        assert hold.degraded
        assert elapsed < 1.0, f'a reservation against a hung Redis took {elapsed:.2f}s (timeout 0.25s)'
        started = time.monotonic()
        settlement = await guard.settle(hold, 15, 100)
        assert time.monotonic() - started < 1.0 and settlement.degraded
        private_redis.resume()
        await async_wait_for(lambda: guard.reserve(bundle, identity(), TEST_MODEL, chat()),
                             lambda h: not h.degraded, what='reservations on Redis again')
    finally:
        if private_redis.paused:
            private_redis.resume()
        await client.aclose()


async def test_pending_settlements_are_replayed_when_redis_returns(private_redis: RedisServer) -> None:
    alerts: list[BudgetAlert] = []
    clock = Clock()
    guard, client = guard_on(private_redis, clock, on_alert=alerts.append)
    bundle = bundle_with(budget('b', daily=0.25, failure_policy='Closed'))
    try:
        hold = await guard.reserve(bundle, identity(), TEST_MODEL, chat(100))  # reserved on Redis
        private_redis.kill()
        settlement = await guard.settle(hold, 15, 100)  # Redis went away during the call
        assert settlement.pending == 1 and guard.pending == 1 and guard.health()['pendingSettlements'] == 1
        private_redis.start()  # empty: nothing was persisted
        await async_wait_for(guard.probe, what='the store to answer again')
        await async_wait_for(lambda: asyncio.sleep(0, guard.pending), lambda n: n == 0, what='the replay')
        raw = await client.hgetall(day_key('b'))
        assert int(raw[b'spent:user:alice']) == COST
        assert [(a.period, a.percent) for a in alerts] == [('day', 80)]  # $0.215 of $0.25 is 86%
    finally:
        await client.aclose()


async def test_spend_counted_locally_reaches_redis_after_recovery(private_redis: RedisServer) -> None:
    clock = Clock()
    guard, client = guard_on(private_redis, clock)
    bundle = bundle_with(budget('open', failure_policy='Open'))
    try:
        private_redis.kill()
        holds = [await guard.reserve(bundle, identity(), TEST_MODEL, chat(100)) for _ in range(3)]
        for hold in holds:
            await guard.settle(hold, 15, 100)
        assert guard.pending == 3
        private_redis.start()
        after = await async_wait_for(lambda: guard.reserve(bundle, identity(), TEST_MODEL, chat(100)),
                                     lambda h: not h.degraded, what='reservations on Redis again')
        await guard.release(after)
        await async_wait_for(lambda: asyncio.sleep(0, guard.pending), lambda n: n == 0, what='the replay')
        raw = await client.hgetall(day_key('open'))
        assert int(raw[b'spent:user:alice']) == 3 * COST
        assert guard.health()['degradedBudgets'] == [] and guard.health()['reachable'] is True
    finally:
        await client.aclose()


async def test_without_a_store_budgets_follow_their_failure_policy() -> None:
    guard = BudgetGuard(None, clock=Clock())
    with pytest.raises(BudgetStoreUnavailable):
        await guard.reserve(bundle_with(budget(failure_policy='Closed')), identity(), TEST_MODEL, chat())
    hold = await guard.reserve(bundle_with(budget(failure_policy='Open')), identity(), TEST_MODEL, chat())
    assert hold.degraded and (await guard.settle(hold, 15, 100)).degraded
    assert guard.pending == 0  # nothing to replay into
    assert guard.health()['store'] == 'none'


async def test_the_pending_queue_is_bounded_and_counts_what_it_drops(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock(), pending_limit=3)
    bundle = bundle_with(budget(failure_policy='Open'))
    try:
        private_redis.kill()
        for _ in range(5):
            await guard.settle(await guard.reserve(bundle, identity(), TEST_MODEL, chat()), 15, 100)
        assert guard.pending == 3 and guard.health()['droppedSettlements'] == 2
    finally:
        await client.aclose()


async def test_a_store_error_never_leaks_the_password(private_redis: RedisServer) -> None:
    client = redis_client(f'redis://:hunter2-secret@127.0.0.1:{private_redis.port}/0', 0.25)
    private_redis.kill()
    try:
        with pytest.raises(SpendStoreUnavailable) as failed:
            await RedisSpendStore(client, timeout=0.25).ping()
        assert 'hunter2' not in str(failed.value)
    finally:
        await client.aclose()


async def test_a_reservation_that_timed_out_is_taken_back_when_redis_answers(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    bundle = bundle_with(budget('b', failure_policy='Closed'))
    try:
        await guard.release(await guard.reserve(bundle, identity(), TEST_MODEL, chat()))  # warm connection
        private_redis.pause()
        with pytest.raises(BudgetStoreUnavailable):
            await guard.reserve(bundle, identity(), TEST_MODEL, chat())  # may still run once Redis wakes up
        assert guard.pending == 1
        private_redis.resume()
        await async_wait_for(guard.probe, what='the store to answer again')
        await async_wait_for(lambda: asyncio.sleep(0, guard.pending), lambda n: n == 0, what='the replay')
        assert await client.zcard(spendstore.holds_key(NS, 'b')) == 0
        assert b'reserved:user:alice' not in await client.hgetall(day_key('b'))
    finally:
        if private_redis.paused:
            private_redis.resume()
        await client.aclose()


# --- usage records: queued by the caller, written in the background ----------------------------

USAGE_DAY = dt.date(2025, 3, 14)  # NOON's day


async def usage_calls(client: aioredis.Redis, user: str = 'alice') -> int:
    raw = await client.hgetall(spendstore.usage_key(user, USAGE_DAY))
    field = spendstore.usage_field(NS, 'research-assistant', TEST_MODEL, 'calls').encode()
    return int(raw.get(field, 0))


def record(guard: BudgetGuard, user: str = 'alice') -> None:
    guard.record_usage(bundle_with(budget()), user, TEST_MODEL, 15, 100, cost_usd=0.215)


async def test_usage_records_queued_together_are_written_summed_per_field(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    try:
        await client.config_resetstat()
        for _ in range(50):
            record(guard)
        record(guard, 'bob')
        assert guard.usage_queued == 51
        assert await guard.flush_usage(5.0) == 0
        assert (await usage_calls(client), await usage_calls(client, 'bob')) == (50, 1)
        stats = await client.info('commandstats')
        # Five fields per user hash, whatever the number of records: 2 users -> 10 HINCRBY.
        assert (stats['cmdstat_hincrby']['calls'], stats['cmdstat_expire']['calls']) == (10, 2)
        assert guard.counters.usage_written == 51 and guard.counters.usage_failed == 0
    finally:
        await client.aclose()


async def test_usage_recorded_while_redis_is_down_is_replayed_when_it_returns(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    try:
        private_redis.kill()
        for _ in range(3):
            record(guard)  # never waits: the writer meets the dead Redis, not the caller
        assert await guard.flush_usage(5.0) == 0
        assert guard.counters.usage_failed == 3 and guard.pending == 3
        assert guard.health()['usageFailed'] == 3
        private_redis.start()  # empty: nothing was persisted
        await async_wait_for(guard.probe, what='the store to answer again')
        await async_wait_for(lambda: asyncio.sleep(0, guard.pending), lambda n: n == 0, what='the replay')
        assert await usage_calls(client) == 3
    finally:
        await client.aclose()


async def test_usage_that_timed_out_on_a_hung_redis_is_not_replayed_so_never_counted_twice(
        private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    try:
        await guard.probe()  # connected and warm
        private_redis.pause()
        for _ in range(3):
            record(guard)
        assert await guard.flush_usage(5.0) == 0
        assert guard.counters.usage_unconfirmed == 3 and guard.pending == 0
        assert guard.health()['usageUnconfirmed'] == 3
        private_redis.resume()
        # The hung server had read the write before it stopped: it runs it once it wakes up.
        await async_wait_for(lambda: usage_calls(client), lambda n: n == 3, what='the write the server had read')
        await async_wait_for(guard.probe, what='the store to answer again')
        assert await guard.flush_pending() == 0 and await usage_calls(client) == 3
    finally:
        if private_redis.paused:
            private_redis.resume()
        await client.aclose()


async def test_a_full_usage_queue_drops_new_records_and_counts_them(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock(), usage_queue_limit=5)
    try:
        for _ in range(8):  # record_usage never suspends: the writer has taken nothing yet
            record(guard)
        assert guard.usage_queued == 5 and guard.health()['usageDropped'] == 3
        assert await guard.flush_usage(5.0) == 0
        assert await usage_calls(client) == 5
    finally:
        await client.aclose()


async def test_closing_writes_the_queued_usage_records(private_redis: RedisServer) -> None:
    guard, client = guard_on(private_redis, Clock())
    try:
        for _ in range(4):
            record(guard)
        await guard.aclose()
        assert await usage_calls(client) == 4
        assert guard.usage_queued == 0 and guard.counters.usage_dropped == 0
    finally:
        await client.aclose()


async def test_closing_with_redis_hung_gives_up_at_the_deadline_and_counts_the_records(
        private_redis: RedisServer) -> None:
    client = redis_client(private_redis.url, 5.0)
    guard = BudgetGuard(RedisSpendStore(client, timeout=5.0), clock=Clock())
    try:
        await guard.probe()
        private_redis.pause()
        for _ in range(3):
            record(guard)
        await asyncio.sleep(0)  # the writer takes the batch and waits on the hung Redis
        started = time.monotonic()
        await guard.aclose(timeout=0.2)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f'closing waited {elapsed:.2f}s, past its 0.2s deadline'
        assert guard.usage_queued == 0 and guard.counters.usage_dropped == 3
    finally:
        if private_redis.paused:
            private_redis.resume()
        await client.aclose()


async def test_without_a_store_usage_records_are_counted_as_dropped() -> None:
    guard = BudgetGuard(None, clock=Clock())
    record(guard)
    assert guard.usage_queued == 0 and guard.health()['usageDropped'] == 1


async def test_after_redis_restarts_one_failed_call_is_enough_to_renew_the_pooled_connections(
        private_redis: RedisServer) -> None:
    client = redis_client(private_redis.url, 2.0)
    store = RedisSpendStore(client, timeout=2.0)
    try:
        await asyncio.gather(*(store.ping() for _ in range(8)))  # eight pooled connections
        private_redis.kill()
        private_redis.start()  # every pooled connection is now dead
        with pytest.raises(SpendStoreUnavailable):
            await store.ping()
        results = await asyncio.gather(*(store.ping() for _ in range(8)), return_exceptions=True)
        assert [r for r in results if r is not None] == [], 'stale pooled connections failed calls after Redis was back'
    finally:
        await client.aclose()


async def test_more_concurrent_commands_than_pooled_connections_wait_for_one_instead_of_failing(redis_url: str) -> None:
    # redis-py's default asyncio pool refuses the command past its size at once
    # (MaxConnectionsError); the sidecar's client queues it for up to its timeout.
    from agentgov.sidecar.spend import redis_client

    client = redis_client(redis_url, timeout_seconds=5.0, max_connections=4)
    try:
        # BLPOP on an empty list holds its connection for 50 ms each.
        results = await asyncio.gather(*(client.blpop(["agentgov:test:empty"], timeout=0.05) for _ in range(40)))
        assert results == [None] * 40
        assert len(client.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]
        assert len(client.connection_pool._available_connections) <= 4  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_a_command_waiting_past_the_timeout_for_a_pooled_connection_is_a_connection_error(redis_url: str) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from agentgov.sidecar.spend import redis_client

    client = redis_client(redis_url, timeout_seconds=0.2, max_connections=1)
    try:
        held = await client.connection_pool.get_connection()  # the only connection, taken
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        await client.connection_pool.release(held)
        assert await client.ping() is True
    finally:
        await client.aclose()
