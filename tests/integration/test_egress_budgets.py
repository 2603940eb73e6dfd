"""Budgets on the egress port, over real HTTP with a real redis-server: the ``openai`` SDK as the
agent's client, the real sidecar, the stand-in model. Refusals that name the budget, alerts
once per threshold, 64 concurrent calls that never overspend (read back from Redis), Redis
killed mid-load: the cache keeps answering, each budget follows its failure policy, and
everything recovers when Redis returns; and the usage records, written off the answer's path:
an L1 hit never waits for a hung Redis, and the records queued when the sidecar stops reach Redis."""
from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
import redis.asyncio as aioredis

from agentgov.api import spendstore
from agentgov.api.agentdeployment import Cache
from agentgov.api.bundle import BundleBudget, Price
from agentgov.demo.model import ModelConfig, StandInModel, serving_model
from agentgov.sidecar.metrics import user_hash
from harness.redis import RedisServer
from harness.waiting import async_wait_for
from sidecar_support import (
    audit_records, bearer, claims, egress_sidecar, execution_id, make_bundle, metric_value, model_route,
    openai_client, sign, with_egress,
)

ALICE = bearer(sign(claims(user='alice', role='analyst')))
BOB = bearer(sign(claims(user='bob', role='analyst')))
NAMESPACE = 'research'
# These tests are about what the budget decides, not about a slow Redis: a generous command
# timeout keeps a loaded test machine from turning a slow answer into "store unreachable".
PATIENT = 2.0
# One USD per 1,000 tokens each way: a call of ~20 tokens costs ~2 cents, easy to reason about.
PRICE = Price(input_per_1k=1.0, output_per_1k=1.0)


def budget(name: str, *, users: Sequence[str] = ('*',), daily: float = 1.0, enforcement: str = 'Hard',
           failure_policy: str = 'Closed', thresholds: Sequence[int] = (80, 90)) -> BundleBudget:
    return BundleBudget(name=name, users=list(users), scope='Each', monthly_usd=daily * 30, daily_usd=daily,
                        alert_thresholds=list(thresholds), enforcement=enforcement,  # type: ignore[arg-type]
                        failure_policy=failure_policy, pricing={'gpt-4o-mini': PRICE})  # type: ignore[arg-type]


def bundle_for(model: StandInModel, budgets: Sequence[BundleBudget], cache: Cache | None = None) -> Any:
    return with_egress(make_bundle(), [model_route('fast', model.url, upstream_model='gpt-4o-mini')],
                       cache=cache or Cache(), budgets=list(budgets))


def ask(n: int, words: int = 6) -> list[dict[str, str]]:
    return [{'role': 'user', 'content': ' '.join([f'question{n}'] + ['word'] * (words - 1))}]


async def call(client: Any, messages: list[dict[str, str]], **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    try:
        raw = await client.chat.completions.with_raw_response.create(model='fast', messages=messages,
                                                                     max_tokens=kwargs.pop('max_tokens', 20), **kwargs)
    except openai.APIStatusError as e:
        return e.status_code, e.body, dict(e.response.headers)
    return raw.http_response.status_code, raw.parse(), dict(raw.headers)


async def usage_of(url: str, user: str) -> dict[str, int]:
    """The user's usage figures of today for the sidecar's agent and the route's model."""
    client = aioredis.Redis.from_url(url)
    try:
        raw = await client.hgetall(spendstore.usage_key(user, dt.datetime.now(dt.timezone.utc)))
    finally:
        await client.aclose()
    figures = {}
    for name, value in raw.items():
        parsed = spendstore.parse_usage_field(name.decode())
        if parsed is not None and parsed[:3] == (NAMESPACE, 'research-assistant', 'gpt-4o-mini'):
            figures[parsed[3]] = int(value)
    return figures


async def day_spend(url: str, budget_name: str, user: str) -> spendstore.SubjectSpend:
    client = aioredis.Redis.from_url(url)
    try:
        key = spendstore.period_key(NAMESPACE, budget_name, 'day', dt.datetime.now(dt.timezone.utc))
        figures = spendstore.parse_period_hash(await client.hgetall(key))
    finally:
        await client.aclose()
    return figures.get(spendstore.subject('user', user), spendstore.SubjectSpend())


async def test_a_call_over_budget_is_a_429_that_names_the_budget(tmp_path: Path, redis_url: str) -> None:
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, [budget('team-daily', daily=0.05)]),
                           redis_url=redis_url, redis_timeout_seconds=PATIENT) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        answers = [await call(client, ask(i)) for i in range(4)]
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model='fast', messages=ask(9), max_tokens=20)
        denials = await audit_records(sidecar, 'budget_denial')
        spent = await day_spend(redis_url, 'team-daily', 'alice')
        metrics = (await sidecar.request('GET', '/metrics'))[1]
    statuses = [a[0] for a in answers]
    assert statuses[0] == 200 and 429 in statuses
    allowed = statuses.index(429)
    assert model.model_calls() == allowed
    body = refused.value.body
    assert body['code'] == 'budget_exceeded' and body['budget'] == 'team-daily'
    assert (body['period'], body['limitUsd'], body['subject']) == ('day', 0.05, 'user:alice')
    assert body['resetsAt'].endswith('T00:00:00Z') and "budget 'team-daily'" in body['message']
    assert int(refused.value.response.headers['Retry-After']) >= 1
    assert spent.spent_micros <= 50_000 and spent.reserved_micros == 0
    assert spent.spent_micros == round(sum(float(a[2]['x-agentgov-cost-usd']) for a in answers[:allowed]) * 1e6)
    assert denials[0]['user'] == 'alice' and denials[0]['resource'] == 'budget/team-daily'
    assert denials[0]['metadata']['code'] == 'budget_exceeded'
    assert metric_value(metrics, 'agentgov_budget_denials_total', budget='team-daily', code='budget_exceeded') >= 1  # type: ignore[operator]
    assert metric_value(metrics, 'agent_requests_total', agent_id='research/research-assistant',
                        user_id=user_hash('alice'), status='denied') >= 1  # type: ignore[operator]


async def test_each_alert_threshold_is_raised_once_per_period(tmp_path: Path, redis_url: str) -> None:
    soft = budget('soft-daily', daily=0.1, enforcement='Soft')
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, [soft]), redis_url=redis_url,
                           redis_timeout_seconds=PATIENT) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        answers = [await call(client, ask(i)) for i in range(8)]
        alerts = await audit_records(sidecar, 'budget_alert', 3)
        metrics = await async_wait_for(
            lambda: sidecar.request('GET', '/metrics'),
            lambda r: (metric_value(r[1], 'agentgov_budget_spend_dollars', budget='soft-daily', period='day') or 0) > 0.1,
            what='the budget spend gauge')
    assert all(a[0] == 200 for a in answers)  # Soft: over the limit, yet allowed
    assert sorted(a['metadata']['percent'] for a in alerts) == [80, 90, 100]
    assert all(a['metadata']['budget'] == 'soft-daily' and a['user'] == 'alice' for a in alerts)
    for percent in ('80', '90', '100'):
        assert metric_value(metrics[1], 'agentgov_budget_alerts_total', budget='soft-daily', period='day',
                            percent=percent) == 1
    assert metric_value(metrics[1], 'agentgov_budget_remaining_dollars', budget='soft-daily', period='day') == 0


async def test_64_concurrent_calls_never_commit_more_than_the_limit(tmp_path: Path, redis_url: str) -> None:
    limit = 0.25
    async with serving_model(ModelConfig(latency_ms=30)) as model, \
            egress_sidecar(tmp_path, bundle_for(model, [budget('race', daily=limit)]),
                           redis_url=redis_url, redis_timeout_seconds=PATIENT) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        answers = await asyncio.gather(*(call(client, ask(i)) for i in range(64)))
        spent = await day_spend(redis_url, 'race', 'alice')
    statuses = [a[0] for a in answers]
    assert set(statuses) == {200, 429}, statuses
    assert model.model_calls() == statuses.count(200)
    assert spent.reserved_micros == 0
    assert 0 < spent.spent_micros <= limit * 1_000_000
    assert spent.spent_micros == round(sum(float(a[2]['x-agentgov-cost-usd']) for a in answers if a[0] == 200) * 1e6)


async def test_redis_killed_mid_load_fails_no_cached_call_budgets_follow_their_policy_and_all_recovers(
        tmp_path: Path, private_redis: RedisServer) -> None:
    budgets = [budget('alice-open', users=['alice'], failure_policy='Open', daily=100.0),
               budget('bob-closed', users=['bob'], failure_policy='Closed', daily=100.0)]
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, budgets), redis_url=private_redis.url) as (sidecar, _):
        alice = openai_client(sidecar, await execution_id(sidecar, ALICE))
        bob = openai_client(sidecar, await execution_id(sidecar, BOB))
        cached = [ask(i) for i in range(8)]
        for messages in cached:  # warm the cache (L1 and L2) for both users
            assert (await call(alice, messages, temperature=0))[0] == 200
            assert (await call(bob, messages, temperature=0))[0] == 200
        bob_cached_calls = model.model_calls()

        killed = asyncio.Event()
        results: list[tuple[str, int]] = []

        async def load(worker: int) -> None:
            for round_ in range(30):
                if round_ == 10 and worker == 0:
                    private_redis.kill()
                    killed.set()
                messages = cached[(worker + round_) % len(cached)]
                results.append(('cached', (await call(alice, messages, temperature=0))[0]))
                results.append(('bob-cached', (await call(bob, messages, temperature=0))[0]))
                # A new question for alice: an upstream call whose budget (Open) is counted locally.
                results.append(('fresh', (await call(alice, ask(1000 + worker * 100 + round_), temperature=0))[0]))

        await asyncio.gather(*(load(w) for w in range(4)))
        assert killed.is_set()
        # Redis is down: bob's budget is Closed, so his uncached call is refused with a clear code.
        status, body, _ = await call(bob, ask(5000))
        _, ready_down = await sidecar.ready()
        metrics_down = (await sidecar.request('GET', '/metrics'))[1]

        private_redis.start()
        recovered = await async_wait_for(lambda: call(bob, ask(6000)), lambda r: r[0] == 200,
                                         what="bob's call once Redis is back", timeout=15, interval=0.2)
        _, ready_up = await async_wait_for(sidecar.ready, lambda r: r[1]['redis']['up'], what='redis up in /ready')
        alice_spend = await async_wait_for(lambda: day_spend(private_redis.url, 'alice-open', 'alice'),
                                           lambda s: s.spent_micros > 0, what="alice's local spend replayed")
    assert results and all(code == 200 for _, code in results), [r for r in results if r[1] != 200]
    assert model.model_calls() >= bob_cached_calls  # (fresh questions reached the upstream; cached ones did not)
    assert (status, body['code']) == (503, 'budget_store_unavailable')
    assert body['budget'] == 'bob-closed' and body['failurePolicy'] == 'Closed'
    assert ready_down['redis']['up'] is False and ready_down['ready'] is True
    assert ready_down['budgets']['degradedCalls'] > 0
    assert metric_value(metrics_down, 'agentgov_redis_up') == 0
    assert (metric_value(metrics_down, 'agentgov_budget_store_degraded_total', budget='alice-open') or 0) > 0
    assert recovered[0] == 200 and ready_up['redis'] == {'configured': True, 'up': True, 'error': None}
    assert alice_spend.spent_micros > 0


async def test_an_l1_hit_answers_while_redis_hangs_and_its_usage_is_written_once_redis_wakes(
        tmp_path: Path, private_redis: RedisServer) -> None:
    hung_for = 5.0  # the Redis timeout: a hit that waited for Redis would take at least this long
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, [budget('open', failure_policy='Open', daily=100.0)]),
                           redis_url=private_redis.url, redis_timeout_seconds=hung_for) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        assert (await call(client, ask(1), temperature=0))[2]['x-agentgov-cache'] == 'miss'
        await async_wait_for(lambda: usage_of(private_redis.url, 'alice'), lambda u: u.get('calls') == 1,
                             what="the miss's usage record")
        private_redis.pause()
        try:
            started = time.monotonic()
            status, _, headers = await call(client, ask(1), temperature=0)
            elapsed = time.monotonic() - started
        finally:
            private_redis.resume()
        usage = await async_wait_for(lambda: usage_of(private_redis.url, 'alice'), lambda u: u.get('calls') == 2,
                                     what="the hit's usage record", timeout=15)
    assert (status, headers['x-agentgov-cache']) == (200, 'hit')
    assert elapsed < hung_for / 2, f'an L1 hit waited {elapsed:.2f}s while Redis hung'
    assert usage['cache_hits'] == 1 and model.model_calls() == 1


async def test_usage_records_queued_when_the_sidecar_stops_reach_redis(tmp_path: Path, redis_url: str) -> None:
    calls = 12
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, [budget('roomy', daily=100.0)]), redis_url=redis_url,
                           redis_timeout_seconds=PATIENT) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, BOB))
        answers = await asyncio.gather(*(call(client, ask(i), temperature=0) for i in range(calls)))
    # Read only after the sidecar stopped: whatever was still queued was written at shutdown.
    usage = await usage_of(redis_url, 'bob')
    spent = await day_spend(redis_url, 'roomy', 'bob')
    assert all(a[0] == 200 for a in answers)
    assert usage['calls'] == calls and usage['cache_hits'] == 0
    assert usage['cost_micros'] == spent.spent_micros == round(
        sum(float(a[2]['x-agentgov-cost-usd']) for a in answers) * 1e6)
