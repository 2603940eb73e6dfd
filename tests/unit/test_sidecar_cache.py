"""The response cache without Redis (agentgov.sidecar.cache): the request digest (stable, tenant-
isolating, sensitive to every answer-changing parameter), what may be cached, the L2 value
format and its rejection of foreign values, and the L1 LRU's bounds, TTL and reconfiguration
with a fake clock. Redis itself is exercised in tests/integration/test_cache_redis.py."""
from __future__ import annotations

import gc
import json
import math
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import assume, given, settings, strategies as st

from agentgov.api.agentdeployment import Cache
from agentgov.sidecar.cache import (
    L2_MAGIC, CacheKey, CachedAnswer, ResponseCache, cache_decision, cache_limits, cache_plan, decode_l2,
    encode_l2, entry_size, request_digest,
)
from agentgov.sidecar.errors import ConfigError

BODY: dict[str, Any] = {
    'model': 'gpt-4o-mini',
    'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 2+2?'}],
    'temperature': 0,
}
TENANT = {'namespace': 'research', 'agent': 'research-assistant', 'user': 'alice'}


def digest(body: dict[str, Any] = BODY, **tenant: Any) -> str:
    return request_digest(body, **{**TENANT, **tenant})


# --- the digest ----------------------------------------------------------------------------

def test_the_digest_format_is_pinned() -> None:
    """Replicas of different versions share L2: changing the digest is a format change
    (bump DIGEST_DOMAIN), never an accident."""
    assert digest() == 'ddcee1d52e8c87a0e2cfc809cd5dfb720bc8ba6e4eb0d2ccf39e15b009dc99d7'


def test_the_partition_separates_answers() -> None:
    """Data classes and the upstream model the route points at key the answer too."""
    plain = digest()
    internal = request_digest(BODY, **TENANT, partition=('gpt-4o-mini', 'internal'))
    pii = request_digest(BODY, **TENANT, partition=('gpt-4o-mini', 'pii'))
    moved = request_digest(BODY, **TENANT, partition=('gpt-4o', 'internal'))
    assert len({plain, internal, pii, moved}) == 4
    assert internal == request_digest(BODY, **TENANT, partition=('gpt-4o-mini', 'internal'))


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)


def reversed_keys(value: Any) -> Any:
    """The same JSON value with every object's keys inserted in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(max_size=10), json_values, max_size=8))
def test_key_order_never_matters(body: dict[str, Any]) -> None:
    assert digest(body) == digest(reversed_keys(body))


tenant_names = st.text(alphabet=st.sampled_from('ab:/{}|%"\\ \x00é'), max_size=6)


@settings(max_examples=500, deadline=None)
@given(a=st.tuples(tenant_names, tenant_names, st.one_of(st.none(), tenant_names)),
       b=st.tuples(tenant_names, tenant_names, st.one_of(st.none(), tenant_names)))
def test_different_tenants_never_share_a_digest(a: tuple[str, str, str | None], b: tuple[str, str, str | None]) -> None:
    assume(a != b)
    first = request_digest(BODY, namespace=a[0], agent=a[1], user=a[2])
    second = request_digest(BODY, namespace=b[0], agent=b[1], user=b[2])
    assert first != second


@pytest.mark.parametrize(('one', 'other'), [
    ({'agent': 'a', 'user': 'b:c'}, {'agent': 'a:b', 'user': 'c'}),
    ({'namespace': 'x/y', 'agent': 'z'}, {'namespace': 'x', 'agent': 'y/z'}),
    ({'user': None}, {'user': ''}),
    ({'user': None}, {'user': 'None'}),
    ({'user': None}, {'user': 'null'}),
], ids=['separator in user vs agent', 'separator in namespace vs agent', 'shared vs empty user',
        'shared vs a user named None', 'shared vs a user named null'])
def test_crafted_names_cannot_collide(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert digest(**one) != digest(**other)


def test_a_tenant_name_cannot_smuggle_in_a_body() -> None:
    """The body is encoded after the tenant; a name carrying JSON cannot stand in for it."""
    forged = request_digest({}, namespace='research', agent='research-assistant',
                            user='alice",{"model":"gpt-4o-mini"}')
    assert forged != digest({'model': 'gpt-4o-mini'})


CHANGES = {
    'model': 'gpt-4o',
    'messages': [{'role': 'user', 'content': 'What is 2+3?'}],
    'tools': [{'type': 'function', 'function': {'name': 'add', 'parameters': {'type': 'object'}}}],
    'tool_choice': 'required',
    'parallel_tool_calls': False,
    'functions': [{'name': 'add'}],
    'temperature': 0.7,
    'top_p': 0.5,
    'max_tokens': 16,
    'max_completion_tokens': 16,
    'response_format': {'type': 'json_object'},
    'seed': 42,
    'n': 2,
    'stop': ['\n'],
    'presence_penalty': 0.5,
    'frequency_penalty': 0.5,
    'logit_bias': {'50256': -100},
    'logprobs': True,
    'top_logprobs': 3,
    'reasoning_effort': 'high',
    'modalities': ['text', 'audio'],
    'input': 'embed me',
    'dimensions': 256,
    'encoding_format': 'base64',
    'a_parameter_from_the_future': 1,
}


@pytest.mark.parametrize(('key', 'value'), list(CHANGES.items()), ids=[f'{k} changes the digest' for k in CHANGES])
def test_every_answer_changing_parameter_changes_the_digest(key: str, value: Any) -> None:
    assert digest({**BODY, key: value}) != digest()


def test_a_nested_change_changes_the_digest() -> None:
    changed = json.loads(json.dumps(BODY))
    changed['messages'][0]['content'] = 'Be verbose.'
    assert digest(changed) != digest()


@pytest.mark.parametrize(('key', 'value'), [('stream', True), ('stream_options', {'include_usage': True}),
                                            ('user', 'end-user-42')],
                         ids=['stream', 'stream_options', 'user (the provider attribution field)'])
def test_delivery_fields_do_not_change_the_digest(key: str, value: Any) -> None:
    assert digest({**BODY, key: value}) == digest()


def test_integral_floats_ask_the_same_as_integers_but_booleans_stay_booleans() -> None:
    assert digest({**BODY, 'temperature': 0.0}) == digest({**BODY, 'temperature': 0})
    assert digest({**BODY, 'seed': 1.0}) == digest({**BODY, 'seed': 1})
    assert digest({**BODY, 'logprobs': True}) != digest({**BODY, 'logprobs': 1})


@pytest.mark.parametrize('bad', [{'presence_penalty': math.nan}, {'top_p': math.inf}, {'stop': {1: 'x', 'a': 'y'}},
                                 {'messages': object()}],
                         ids=['NaN', 'infinity', 'mixed key types', 'not JSON at all'])
def test_a_body_without_canonical_json_is_refused_with_a_value_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match='canonical JSON'):
        digest({**BODY, **bad})
    assert cache_plan({**BODY, **bad}, Cache(), namespace='n', agent='a', user='u').reason == 'not_canonical'


def test_a_deeply_nested_body_is_refused_not_crashed() -> None:
    nested: Any = 'x'
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValueError):
        digest({**BODY, 'messages': nested})


# --- what may be cached ---------------------------------------------------------------------

DECISIONS = {
    'temperature 0 is deterministic': ({'temperature': 0}, Cache(), (True, 'deterministic')),
    'temperature 0.0 too': ({'temperature': 0.0}, Cache(), (True, 'deterministic')),
    'no temperature means 1 (the OpenAI default)': ({}, Cache(), (False, 'temperature_unset')),
    'temperature null is unset': ({'temperature': None}, Cache(), (False, 'temperature_unset')),
    'temperature 0.7 is not cached': ({'temperature': 0.7}, Cache(), (False, 'temperature_not_zero')),
    'temperature false is not a number': ({'temperature': False}, Cache(), (False, 'temperature_not_zero')),
    'temperature "0" is not a number': ({'temperature': '0'}, Cache(), (False, 'temperature_not_zero')),
    'n=2 asks for different samples': ({'temperature': 0, 'n': 2}, Cache(), (False, 'multiple_choices')),
    'n=1 is one answer': ({'temperature': 0, 'n': 1}, Cache(), (True, 'deterministic')),
    'the policy may cache any temperature': ({'temperature': 1.2, 'n': 3}, Cache(non_deterministic=True),
                                             (True, 'policy_allows_non_deterministic')),
    'a disabled policy caches nothing': ({'temperature': 0}, Cache(enabled=False), (False, 'disabled')),
    'disabled wins over non-deterministic': ({'temperature': 0}, Cache(enabled=False, non_deterministic=True),
                                             (False, 'disabled')),
}


@pytest.mark.parametrize(('params', 'policy', 'expected'), list(DECISIONS.values()), ids=list(DECISIONS))
def test_cache_decision(params: dict[str, Any], policy: Cache, expected: tuple[bool, str]) -> None:
    body = {'model': 'gpt-4o-mini', 'messages': BODY['messages'], **params}
    assert cache_decision(body, policy) == expected


def test_cache_plan_keys_by_user_unless_the_policy_shares() -> None:
    private = [cache_plan(BODY, Cache(), namespace='research', agent='bot', user=u) for u in ('alice', 'bob')]
    shared = [cache_plan(BODY, Cache(share_across_users=True), namespace='research', agent='bot', user=u)
              for u in ('alice', 'bob')]
    assert private[0].key is not None and private[1].key is not None
    assert private[0].key != private[1].key
    assert shared[0].key == shared[1].key
    assert shared[0].key is not None and shared[0].key != private[0].key
    assert shared[0].key.digest == request_digest(BODY, namespace='research', agent='bot', user=None)
    assert cache_plan({**BODY, 'temperature': 1}, Cache(), namespace='r', agent='b', user='a').key is None


def test_cache_key_is_the_spend_store_layout() -> None:
    key = CacheKey('research', 'bot', 'ab' * 32)
    assert key.redis_key == 'agentgov:cache:{research/bot}:' + 'ab' * 32


# --- the L2 value format --------------------------------------------------------------------

ANSWER = CachedAnswer(body=b'{"id":"chatcmpl-1","choices":[{"message":{"content":"4"}}]}', model='gpt-4o-mini',
                      input_tokens=21, output_tokens=1, cost_usd=0.0000045, created_at=1_750_000_000.5)
DIGEST = 'a' * 64


def test_l2_values_round_trip() -> None:
    raw = encode_l2(DIGEST, ANSWER)
    assert raw.startswith(L2_MAGIC)
    assert raw.endswith(ANSWER.body), 'the body is stored as is, not re-encoded'
    assert decode_l2(DIGEST, raw, 1 << 20) == ANSWER


def header_with(**changes: Any) -> bytes:
    header = json.loads(encode_l2(DIGEST, ANSWER)[len(L2_MAGIC):].partition(b'\n')[0])
    header.update(changes)
    return L2_MAGIC + json.dumps(header).encode() + b'\n' + ANSWER.body


FOREIGN = {
    'stored under another digest': encode_l2('b' * 64, ANSWER),
    'no magic': b'{"choices":[]}',
    'a future format': b'agentgov-cache/2\n{}\n{}',
    'empty': b'',
    'magic only': L2_MAGIC,
    'truncated body': encode_l2(DIGEST, ANSWER)[:-3],
    'body longer than stated': encode_l2(DIGEST, ANSWER) + b'xx',
    'header not JSON': L2_MAGIC + b'{nope\n' + ANSWER.body,
    'header a list': L2_MAGIC + b'[1]\n' + ANSWER.body,
    'oversized header': L2_MAGIC + b'{' + b' ' * 5000 + b'}\n',
    'negative tokens': header_with(inputTokens=-1),
    'boolean tokens': header_with(outputTokens=True),
    'NaN cost': header_with(costUsd='NaN'),
    'negative cost': header_with(costUsd=-1),
    'missing model': header_with(model=''),
    'non-string model': header_with(model=7),
    'infinite time': L2_MAGIC + header_with()[len(L2_MAGIC):].replace(b'1750000000.5', b'1e999'),
    'invalid UTF-8 in the header': L2_MAGIC + b'{"digest":"\xff"}\n',
}


@pytest.mark.parametrize('raw', list(FOREIGN.values()), ids=list(FOREIGN))
def test_foreign_or_garbled_l2_values_are_refused(raw: bytes) -> None:
    assert decode_l2(DIGEST, raw, 1 << 20) is None


def test_an_l2_body_larger_than_the_cache_is_refused() -> None:
    assert decode_l2(DIGEST, encode_l2(DIGEST, ANSWER), len(ANSWER.body) - 1) is None


@pytest.mark.parametrize('changes', [{'model': ''}, {'input_tokens': -1}, {'cost_usd': math.nan},
                                     {'cost_usd': -0.01}, {'created_at': math.inf}, {'body': 'text'}],
                         ids=['empty model', 'negative tokens', 'NaN cost', 'negative cost', 'infinite time',
                              'str body'])
def test_a_cached_answer_refuses_nonsense(changes: dict[str, Any]) -> None:
    fields = {'body': b'{}', 'model': 'm', 'input_tokens': 1, 'output_tokens': 1, 'cost_usd': 0.1, 'created_at': 1.0}
    with pytest.raises(ValueError):
        CachedAnswer(**{**fields, **changes})


# --- L1 ---------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(i: int) -> CacheKey:
    return CacheKey('research', 'bot', f'{i:064x}')


def answer(size: int = 100, cost: float = 0.01) -> CachedAnswer:
    return CachedAnswer(body=b'x' * size, model='m', input_tokens=10, output_tokens=5, cost_usd=cost, created_at=0.0)


async def test_a_put_answer_is_an_l1_hit_and_counts_the_dollars_saved() -> None:
    cache = ResponseCache(Cache())
    assert await cache.get(key(1)) is None
    assert await cache.put(key(1), answer(cost=0.25))
    for _ in range(3):
        hit = await cache.get(key(1))
        assert hit is not None and hit.level == 'l1' and hit.answer == answer(cost=0.25)
    stats = cache.stats()
    assert (stats.hits_l1, stats.hits_l2, stats.misses, stats.entries) == (3, 0, 1, 1)
    assert stats.saved_usd == pytest.approx(0.75)
    assert stats.hit_rate == pytest.approx(0.75)
    assert stats.bytes == entry_size(key(1).redis_key, answer())


async def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = ResponseCache(Cache(ttl_seconds=60), clock=clock)
    await cache.put(key(1), answer())
    clock.now += 59.9
    assert await cache.get(key(1)) is not None
    clock.now += 0.1
    assert await cache.get(key(1)) is None
    assert cache.stats().entries == 0 and cache.stats().bytes == 0


async def test_the_least_recently_used_entry_goes_first_when_entries_are_full() -> None:
    cache = ResponseCache(Cache(max_entries=3))
    for i in range(3):
        await cache.put(key(i), answer())
    await cache.get(key(0))  # 0 is now the most recent; 1 is the least
    await cache.put(key(3), answer())
    assert [await cache.get(key(i)) is not None for i in range(4)] == [True, False, True, True]
    assert cache.stats().evictions == 1


async def test_bytes_are_bounded_too() -> None:
    one = entry_size(key(0).redis_key, answer(1000))
    cache = ResponseCache(Cache(max_bytes=str(one * 3)))
    for i in range(10):
        await cache.put(key(i), answer(1000))
        assert cache.stats().bytes <= one * 3
    assert cache.stats().entries == 3
    assert [await cache.get(key(i)) is not None for i in range(10)] == [False] * 7 + [True] * 3


async def test_an_answer_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = ResponseCache(Cache(max_bytes='1Ki'))
    await cache.put(key(0), answer(10))
    assert not await cache.put(key(1), answer(2000))
    assert cache.stats().too_large == 1
    assert await cache.get(key(0)) is not None, 'a huge answer must not flush the cache'


async def test_replacing_an_entry_does_not_leak_bytes() -> None:
    cache = ResponseCache(Cache())
    for size in (100, 5000, 10):
        await cache.put(key(0), answer(size))
    assert cache.stats().bytes == entry_size(key(0).redis_key, answer(10))
    assert cache.stats().entries == 1


async def test_reconfiguring_with_the_same_policy_keeps_everything() -> None:
    cache = ResponseCache(Cache(max_entries=10))
    await cache.put(key(0), answer())
    cache.configure(Cache(max_entries=10))
    assert await cache.get(key(0)) is not None


async def test_reconfiguring_to_smaller_bounds_evicts_least_recent_first() -> None:
    cache = ResponseCache(Cache(max_entries=10))
    for i in range(5):
        await cache.put(key(i), answer())
    cache.configure(Cache(max_entries=2))
    assert cache.limits.max_entries == 2
    assert [await cache.get(key(i)) is not None for i in range(5)] == [False, False, False, True, True]


async def test_a_shorter_ttl_shortens_entries_already_cached() -> None:
    clock = FakeClock()
    cache = ResponseCache(Cache(ttl_seconds=3600), clock=clock)
    await cache.put(key(0), answer())
    cache.configure(Cache(ttl_seconds=10))
    clock.now += 10
    assert await cache.get(key(0)) is None


async def test_disabling_the_cache_empties_it_and_stops_storing() -> None:
    cache = ResponseCache(Cache())
    await cache.put(key(0), answer())
    cache.configure(Cache(enabled=False))
    assert cache.stats().entries == 0
    assert not await cache.put(key(0), answer())
    assert await cache.get(key(0)) is None
    assert cache.stats().misses == 0, 'a disabled cache is not consulted, so it does not miss'


def test_an_unusable_max_bytes_is_a_config_error_naming_the_field() -> None:
    cache = ResponseCache(Cache())
    bad = Cache.model_construct(**{**Cache().model_dump(), 'max_bytes': '1e3.5'})
    with pytest.raises(ConfigError, match='cache.maxBytes'):
        cache.configure(bad)
    assert cache.policy == Cache(), 'a refused policy changes nothing'
    with pytest.raises(ConfigError, match='negative'):
        cache_limits(Cache(max_bytes='-1Mi'))


async def test_many_expired_replacements_keep_the_expiry_heap_small() -> None:
    clock = FakeClock()
    cache = ResponseCache(Cache(ttl_seconds=5), clock=clock)
    for round_ in range(200):
        for i in range(10):
            await cache.put(key(i), answer())
        clock.now += 1
    assert len(cache._l1.expiry) <= 2 * 10 + 64  # noqa: SLF001 - the bookkeeping bound itself


async def test_charged_bytes_cover_the_memory_an_entry_really_takes() -> None:
    """maxBytes is a promise about memory: each entry is charged at least what tracemalloc sees
    it allocate (key, entry, answer, body, LRU and heap bookkeeping)."""
    cache = ResponseCache(Cache(max_entries=100_000, max_bytes='1Gi'))
    count = 5000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(count):
            body = b'{"id":"%d"}' % i + b'x' * 100
            await cache.put(CacheKey('research', 'research-assistant', f'{i:064x}'),
                            CachedAnswer(body=body, model=f'gpt-4o-mini-{i % 7}', input_tokens=i, output_tokens=i,
                                         cost_usd=i / 1e6, created_at=time.time()))
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    allocated = sum(stat.size_diff for stat in after.compare_to(before, 'filename'))
    assert allocated <= cache.stats().bytes, f'{allocated / count:.0f} B/entry allocated, ' \
                                             f'{cache.stats().bytes / count:.0f} B/entry charged'
