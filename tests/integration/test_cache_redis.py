"""The response cache's L2 against a real redis-server (agentgov.sidecar.cache.ResponseCache):
two sidecar replicas sharing answers, TTL set with the write (SET EX), L2 -> L1 promotion bounded by the
Redis TTL, poisoned values ignored, tenant isolation; and Redis faults — killed, hung
(SIGSTOP), restarted — which only ever make the cache miss."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from agentgov.api.agentdeployment import Cache
from agentgov.sidecar.cache import (
    L2_MAGIC, CacheKey, CachedAnswer, ResponseCache, cache_plan, encode_l2,
)
from harness.redis import RedisServer
from harness.waiting import async_wait_for

BODY = {'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'What is 2+2?'}], 'temperature': 0}
ANSWER = CachedAnswer(body=b'{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"4"}}]}',
                      model='gpt-4o-mini', input_tokens=12, output_tokens=1, cost_usd=0.002, created_at=1.75e9)
TIMEOUT = 0.25


def plan_key(user: str = 'alice', policy: Cache = Cache()) -> CacheKey:
    key = cache_plan(BODY, policy, namespace='research', agent='research-assistant', user=user).key
    assert key is not None
    return key


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
async def client_factory() -> AsyncIterator[Callable[..., aioredis.Redis]]:
    clients: list[aioredis.Redis] = []

    def make(url: str, **options: object) -> aioredis.Redis:
        client = aioredis.from_url(url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture()
def redis_client(redis_url: str, client_factory: Callable[..., aioredis.Redis]) -> aioredis.Redis:
    return client_factory(redis_url)


# --- L2 on a healthy Redis ---------------------------------------------------------------------

async def test_an_answer_stored_by_one_replica_is_an_l2_hit_on_another_then_l1(redis_client: aioredis.Redis) -> None:
    first, second = ResponseCache(Cache(), redis_client), ResponseCache(Cache(), redis_client)
    assert await first.put(plan_key(), ANSWER)
    hit = await second.get(plan_key())
    assert hit is not None and hit.level == 'l2' and hit.answer == ANSWER
    again = await second.get(plan_key())
    assert again is not None and again.level == 'l1', 'an L2 hit is promoted into L1'
    stats = second.stats()
    assert (stats.hits_l1, stats.hits_l2, stats.misses, stats.redis_errors) == (1, 1, 0, 0)
    assert stats.saved_usd == pytest.approx(2 * ANSWER.cost_usd)


async def test_entries_are_written_with_an_expiry_of_the_policy_ttl(redis_client: aioredis.Redis) -> None:
    cache = ResponseCache(Cache(ttl_seconds=120), redis_client)
    await cache.put(plan_key(), ANSWER)
    redis_key = plan_key().redis_key
    assert redis_key.startswith('agentgov:cache:{research/research-assistant}:')
    assert 118 <= await redis_client.ttl(redis_key) <= 120
    stored = await redis_client.get(redis_key)
    assert stored.startswith(L2_MAGIC) and stored.endswith(ANSWER.body)


async def test_a_promoted_entry_lives_in_l1_no_longer_than_in_redis(redis_client: aioredis.Redis) -> None:
    writer = ResponseCache(Cache(ttl_seconds=3600), redis_client)
    await writer.put(plan_key(), ANSWER)
    await redis_client.expire(plan_key().redis_key, 5)  # as if written by a replica an hour ago
    clock = FakeClock()
    reader = ResponseCache(Cache(ttl_seconds=3600), redis_client, clock=clock)
    assert (await reader.get(plan_key())).level == 'l2'  # type: ignore[union-attr]
    clock.now += 4
    assert (await reader.get(plan_key())).level == 'l1'  # type: ignore[union-attr]
    clock.now += 1.5
    hit = await reader.get(plan_key())
    assert hit is not None and hit.level == 'l2', 'the L1 copy must expire with the Redis entry'


async def test_one_user_never_gets_another_users_answer(redis_client: aioredis.Redis) -> None:
    alice, bob = ResponseCache(Cache(), redis_client), ResponseCache(Cache(), redis_client)
    await alice.put(plan_key('alice'), ANSWER)
    assert await bob.get(plan_key('bob')) is None
    shared = Cache(share_across_users=True)
    await alice.put(plan_key('alice', shared), ANSWER)
    assert await bob.get(plan_key('bob', shared)) is not None


POISON = {
    'garbage bytes': b'\x00\xffnot a cache value',
    'a plain JSON answer (another writer)': b'{"choices":[{"message":{"content":"pwned"}}]}',
    'a valid value of another request': encode_l2('0' * 64, CachedAnswer(
        body=b'{"choices":[{"message":{"content":"5"}}]}', model='gpt-4o-mini', input_tokens=1, output_tokens=1,
        cost_usd=0.0, created_at=0.0)),
}


@pytest.mark.parametrize('value', list(POISON.values()), ids=list(POISON))
async def test_a_poisoned_redis_value_is_ignored_not_served(redis_client: aioredis.Redis, value: bytes) -> None:
    await redis_client.set(plan_key().redis_key, value)
    cache = ResponseCache(Cache(), redis_client)
    assert await cache.get(plan_key()) is None
    stats = cache.stats()
    assert (stats.misses, stats.rejected_values, stats.redis_errors, stats.entries) == (1, 1, 0, 0)
    await cache.put(plan_key(), ANSWER)  # the next real answer overwrites the poison
    assert (await ResponseCache(Cache(), redis_client).get(plan_key())).answer == ANSWER  # type: ignore[union-attr]


async def test_a_key_of_another_type_is_a_miss_not_an_error(redis_client: aioredis.Redis) -> None:
    await redis_client.rpush(plan_key().redis_key, 'x')  # WRONGTYPE on GET
    cache = ResponseCache(Cache(), redis_client)
    assert await cache.get(plan_key()) is None
    assert cache.stats().redis_errors == 1


async def test_a_client_decoding_responses_still_round_trips(
        redis_url: str, client_factory: Callable[..., aioredis.Redis]) -> None:
    client = client_factory(redis_url, decode_responses=True)
    await ResponseCache(Cache(), client).put(plan_key(), ANSWER)
    hit = await ResponseCache(Cache(), client).get(plan_key())
    assert hit is not None and hit.answer == ANSWER


# --- Redis faults ----------------------------------------------------------------------------

async def timed_get(cache: ResponseCache, key: CacheKey) -> tuple[object, float]:
    started = time.monotonic()
    result = await cache.get(key)
    return result, time.monotonic() - started


async def test_a_killed_redis_makes_misses_not_errors(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    cache = ResponseCache(Cache(), client_factory(private_redis.url), redis_timeout=TIMEOUT)
    await cache.put(plan_key('alice'), ANSWER)
    private_redis.kill()
    for user in ('bob', 'carol', 'dave', 'erin'):
        result, elapsed = await timed_get(cache, plan_key(user))
        assert result is None
        assert elapsed < TIMEOUT + 0.5
        assert await cache.put(plan_key(user), ANSWER), 'L1 still stores while Redis is down'
    assert (await cache.get(plan_key('alice'))).level == 'l1'  # type: ignore[union-attr]
    stats = cache.stats()
    assert stats.misses == 4
    assert stats.redis_errors >= 3, 'failures are counted'
    assert stats.redis_errors + stats.redis_skipped == 8, 'every L2 call failed or was skipped'


async def test_a_hung_redis_costs_at_most_the_timeout_then_is_skipped(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    client = client_factory(private_redis.url)
    cache = ResponseCache(Cache(), client, redis_timeout=TIMEOUT)
    await cache.put(plan_key('alice'), ANSWER)
    private_redis.pause()
    try:
        for user in ('bob', 'carol', 'dave'):
            result, elapsed = await timed_get(cache, plan_key(user))
            assert result is None
            assert elapsed < TIMEOUT + 0.5, f'a hung Redis held a lookup for {elapsed:.2f}s'
        assert cache.l2_breaker.state == 'open'
        result, elapsed = await timed_get(cache, plan_key('erin'))
        assert result is None and elapsed < 0.05, 'with the L2 breaker open Redis is not waited for'
        assert cache.stats().redis_skipped >= 1
    finally:
        private_redis.resume()
    other = ResponseCache(Cache(), client)

    async def from_l2() -> object:
        hit = await other.get(plan_key('alice'))
        return hit.level if hit is not None else None

    # The L2 breaker half-opens after a second and the next lookup reaches Redis again.
    await async_wait_for(from_l2, lambda level: level == 'l2', what='an L2 hit after Redis resumed')
    await async_wait_for(lambda: _l2_read_ok(cache, plan_key('zed')), what='the hung replica reading L2 again')


async def _l2_read_ok(cache: ResponseCache, key: CacheKey) -> bool:
    before = cache.stats()
    await cache.get(key)
    after = cache.stats()
    return after.redis_errors == before.redis_errors and after.redis_skipped == before.redis_skipped


async def test_the_cache_recovers_when_redis_restarts(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    client = client_factory(private_redis.url)
    writer = ResponseCache(Cache(), client, redis_timeout=TIMEOUT)
    private_redis.kill()
    for user in ('bob', 'carol', 'dave'):
        assert await writer.get(plan_key(user)) is None
    private_redis.start()  # same port, empty (nothing is persisted)

    async def shared_through_redis() -> bool:
        await writer.put(plan_key('alice'), ANSWER)
        hit = await ResponseCache(Cache(), client).get(plan_key('alice'))
        return hit is not None and hit.level == 'l2'

    await async_wait_for(shared_through_redis, what='answers shared through the restarted Redis')
    assert 3598 <= await client.ttl(plan_key('alice').redis_key) <= 3600
