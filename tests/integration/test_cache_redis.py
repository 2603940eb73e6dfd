"""The response cache's L2 against a real redis-server (agentgov.sidecar.cache.ResponseCache):
two sidecar replicas sharing answers, TTL set with the write (SET EX), L2 -> L1 promotion bounded by the
Redis TTL, poisoned values ignored, tenant isolation; L2 writes queued off the caller's path (a
put never waits for Redis, the queue is bounded, shutdown writes it within a deadline); and Redis
faults — killed, hung (SIGSTOP), restarted — which only ever make the cache miss.

``put`` only queues the L2 write: tests that read L2 afterwards ``flush`` first (``shared``)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from agentgov.api.agentdeployment import Cache
from agentgov.sidecar.cache import (
    L2_MAGIC, L2_WRITE_BATCH, L2_WRITE_QUEUE, CacheKey, CachedAnswer, ResponseCache, cache_plan, encode_l2,
)
from harness.redis import RedisServer
from harness.waiting import async_wait_for

BODY = {'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'What is 2+2?'}], 'temperature': 0}
ANSWER = CachedAnswer(body=b'{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"4"}}]}',
                      model='gpt-4o-mini', input_tokens=12, output_tokens=1, cost_usd=0.002, created_at=1.75e9)
TIMEOUT = 0.25
# Long enough that a put or a hit that waited for a hung Redis could not go unnoticed.
PATIENT = 5.0


def plan_key(user: str = 'alice', policy: Cache = Cache()) -> CacheKey:
    key = cache_plan(BODY, policy, namespace='research', agent='research-assistant', user=user).key
    assert key is not None
    return key


async def shared(cache: ResponseCache, key: CacheKey, answer: CachedAnswer = ANSWER) -> None:
    """Store an answer and wait until its L2 write is done (``put`` only queues it)."""
    assert await cache.put(key, answer)
    assert await cache.flush(10.0) == 0, 'the L2 write is still queued'


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
    await shared(first, plan_key())
    hit = await second.get(plan_key())
    assert hit is not None and hit.level == 'l2' and hit.answer == ANSWER
    again = await second.get(plan_key())
    assert again is not None and again.level == 'l1', 'an L2 hit is promoted into L1'
    stats = second.stats()
    assert (stats.hits_l1, stats.hits_l2, stats.misses, stats.redis_errors) == (1, 1, 0, 0)
    assert stats.saved_usd == pytest.approx(2 * ANSWER.cost_usd)


async def test_entries_are_written_with_an_expiry_of_the_policy_ttl(redis_client: aioredis.Redis) -> None:
    cache = ResponseCache(Cache(ttl_seconds=120), redis_client)
    await shared(cache, plan_key())
    redis_key = plan_key().redis_key
    assert redis_key.startswith('agentgov:cache:{research/research-assistant}:')
    assert 118 <= await redis_client.ttl(redis_key) <= 120
    stored = await redis_client.get(redis_key)
    assert stored.startswith(L2_MAGIC) and stored.endswith(ANSWER.body)


async def test_a_promoted_entry_lives_in_l1_no_longer_than_in_redis(redis_client: aioredis.Redis) -> None:
    writer = ResponseCache(Cache(ttl_seconds=3600), redis_client)
    await shared(writer, plan_key())
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
    await shared(alice, plan_key('alice'))
    assert await bob.get(plan_key('bob')) is None
    across = Cache(share_across_users=True)
    await shared(alice, plan_key('alice', across))
    assert await bob.get(plan_key('bob', across)) is not None


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
    await shared(cache, plan_key())  # the next real answer overwrites the poison
    assert (await ResponseCache(Cache(), redis_client).get(plan_key())).answer == ANSWER  # type: ignore[union-attr]


async def test_a_key_of_another_type_is_a_miss_not_an_error(redis_client: aioredis.Redis) -> None:
    await redis_client.rpush(plan_key().redis_key, 'x')  # WRONGTYPE on GET
    cache = ResponseCache(Cache(), redis_client)
    assert await cache.get(plan_key()) is None
    assert cache.stats().redis_errors == 1


async def test_a_client_decoding_responses_still_round_trips(
        redis_url: str, client_factory: Callable[..., aioredis.Redis]) -> None:
    client = client_factory(redis_url, decode_responses=True)
    await shared(ResponseCache(Cache(), client), plan_key())
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
    await shared(cache, plan_key('alice'))
    private_redis.kill()
    for user in ('bob', 'carol', 'dave', 'erin'):
        result, elapsed = await timed_get(cache, plan_key(user))
        assert result is None
        assert elapsed < TIMEOUT + 0.5
        assert await cache.put(plan_key(user), ANSWER), 'L1 still stores while Redis is down'
        assert await cache.flush(10.0) == 0
    assert (await cache.get(plan_key('alice'))).level == 'l1'  # type: ignore[union-attr]
    stats = cache.stats()
    assert stats.misses == 4
    assert stats.redis_errors >= 3, 'failures are counted'
    assert stats.redis_errors + stats.redis_skipped == 8, 'every L2 call failed or was skipped'


async def test_a_hung_redis_costs_at_most_the_timeout_then_is_skipped(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    client = client_factory(private_redis.url)
    cache = ResponseCache(Cache(), client, redis_timeout=TIMEOUT)
    await shared(cache, plan_key('alice'))
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
        await shared(writer, plan_key('alice'))
        hit = await ResponseCache(Cache(), client).get(plan_key('alice'))
        return hit is not None and hit.level == 'l2'

    await async_wait_for(shared_through_redis, what='answers shared through the restarted Redis')
    assert 3598 <= await client.ttl(plan_key('alice').redis_key) <= 3600


# --- L2 writes off the caller's path -----------------------------------------------------------

async def test_a_put_does_not_wait_for_a_hung_redis_and_the_write_fails_in_the_background(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    cache = ResponseCache(Cache(), client_factory(private_redis.url), redis_timeout=PATIENT)
    await shared(cache, plan_key('alice'))  # connected and healthy first
    private_redis.pause()
    try:
        started = time.monotonic()
        assert await cache.put(plan_key('bob'), ANSWER)
        hit = await cache.get(plan_key('bob'))
        elapsed = time.monotonic() - started
        assert hit is not None and hit.level == 'l1'
        assert elapsed < 1.0, f'a put and an L1 hit waited {elapsed:.2f}s for a hung Redis'
        assert cache.stats().l2_queued == 1
        assert await cache.flush(PATIENT + 5) == 0  # the write times out in the background...
        assert cache.stats().redis_errors == 1  # ...and is counted
    finally:
        private_redis.resume()


async def test_answers_queued_together_are_all_shared_and_a_newer_answer_for_a_key_wins(
        redis_client: aioredis.Redis) -> None:
    writer, reader = ResponseCache(Cache(), redis_client), ResponseCache(Cache(), redis_client)
    users = [f'user-{i}' for i in range(L2_WRITE_BATCH * 2 + 5)]  # more than one batch
    newer = CachedAnswer(body=b'{"id":"chatcmpl-2"}', model='gpt-4o-mini', input_tokens=12, output_tokens=2,
                         cost_usd=0.003, created_at=1.76e9)
    for user in users:
        assert await writer.put(plan_key(user), ANSWER)
    assert await writer.put(plan_key(users[0]), newer)
    assert writer.stats().l2_queued == len(users), 'a key still queued is written once, with its newest answer'
    assert await writer.flush(10.0) == 0
    hits = [await reader.get(plan_key(user)) for user in users]
    assert all(hit is not None and hit.level == 'l2' for hit in hits)
    assert [hit.answer for hit in hits[:2] if hit is not None] == [newer, ANSWER]
    assert writer.stats().redis_errors == 0


async def test_a_full_write_queue_keeps_answers_in_l1_only_and_counts_them(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    cache = ResponseCache(Cache(), client_factory(private_redis.url), redis_timeout=TIMEOUT)
    extra = 7
    # put never suspends, so the writer has not taken anything from the queue yet.
    for i in range(L2_WRITE_QUEUE + extra):
        assert await cache.put(plan_key(f'user-{i}'), ANSWER)
    stats = cache.stats()
    assert (stats.l2_queued, stats.l2_write_dropped, stats.stores) == (L2_WRITE_QUEUE, extra, L2_WRITE_QUEUE + extra)
    assert (await cache.get(plan_key(f'user-{L2_WRITE_QUEUE + extra - 1}'))).level == 'l1'  # type: ignore[union-attr]
    assert await cache.flush(30.0) == 0
    reader = ResponseCache(Cache(), client_factory(private_redis.url))
    assert await reader.get(plan_key(f'user-{L2_WRITE_QUEUE + extra - 1}')) is None, 'a dropped write never reached L2'
    assert (await reader.get(plan_key('user-0'))).level == 'l2'  # type: ignore[union-attr]


async def test_closing_writes_what_is_queued_and_later_answers_stay_in_l1(redis_client: aioredis.Redis) -> None:
    cache = ResponseCache(Cache(), redis_client)
    await cache.put(plan_key('alice'), ANSWER)
    await cache.aclose()
    assert (await ResponseCache(Cache(), redis_client).get(plan_key('alice'))) is not None, 'written at shutdown'
    assert await cache.put(plan_key('bob'), ANSWER)
    stats = cache.stats()
    assert (stats.l2_queued, stats.l2_write_dropped) == (0, 1)
    assert await ResponseCache(Cache(), redis_client).get(plan_key('bob')) is None


async def test_closing_with_redis_hung_gives_up_at_the_deadline_and_counts_what_was_not_written(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    cache = ResponseCache(Cache(), client_factory(private_redis.url), redis_timeout=PATIENT)
    await shared(cache, plan_key('alice'))
    private_redis.pause()
    try:
        for user in ('bob', 'carol', 'dave'):
            await cache.put(plan_key(user), ANSWER)
        await asyncio.sleep(0)  # the writer takes the batch and waits on the hung Redis
        started = time.monotonic()
        await cache.aclose(timeout=0.2)
        elapsed = time.monotonic() - started
    finally:
        private_redis.resume()
    assert elapsed < 2.0, f'closing waited {elapsed:.2f}s, past its 0.2s deadline'
    stats = cache.stats()
    assert (stats.l2_queued, stats.l2_write_dropped) == (0, 3)


async def test_after_redis_restarts_one_failed_lookup_is_enough_to_renew_the_pooled_connections(
        private_redis: RedisServer, client_factory: Callable[..., aioredis.Redis]) -> None:
    cache = ResponseCache(Cache(), client_factory(private_redis.url), redis_timeout=PATIENT)
    await asyncio.gather(*(cache.get(plan_key(f'warm-{i}')) for i in range(8)))  # eight pooled connections
    private_redis.kill()
    private_redis.start()  # every pooled connection is now dead
    assert await cache.get(plan_key('first')) is None
    assert cache.stats().redis_errors == 1
    await asyncio.gather(*(cache.get(plan_key(f'after-{i}')) for i in range(8)))
    assert cache.stats().redis_errors == 1, 'stale pooled connections failed lookups after Redis was back'
