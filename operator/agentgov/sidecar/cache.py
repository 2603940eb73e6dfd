"""The response cache of model calls: what may be cached, under which key, and the two levels.

Pure part:

- ``request_digest(body, namespace=, agent=, user=)`` — sha256 of a canonical JSON of the
  request (every key except those that cannot change the answer: ``stream``,
  ``stream_options``, ``user``) and of the tenant (namespace, agent and, unless the policy
  shares answers across users, the user). The tenant and the body are encoded together as one
  JSON array behind a domain separator, so no choice of names can make two tenants' keys
  collide (``agent="a", user="b:c"`` is not ``agent="a:b", user="c"``).
- ``cache_decision(body, policy)`` — by default only deterministic requests are cached:
  ``temperature`` explicitly 0 (the OpenAI default is 1, so a request without it is not
  deterministic) and at most one choice (``n`` absent or 1). ``policy.nonDeterministic``
  caches any request; a disabled policy caches none.
- ``cache_plan(...)`` — both of the above plus the share-across-users rule, in one call.

I/O part: :class:`ResponseCache`, an in-process L1 (LRU, bounded by entries and bytes, TTL)
in front of an optional Redis L2 shared by every replica of the agent, written with
``SET key value EX ttl`` (SETEX's current form; redis-py deprecates ``setex``). ``get`` looks in L1, then L2, and promotes an L2 hit into L1 for the rest of its Redis TTL. ``put`` stores
in L1 at once and queues the L2 write: one writer task sends what has queued in one pipeline,
so an answer never waits for Redis and a busy sidecar shares many answers per round trip.
Another replica sees an answer a round trip after it was stored; ``flush`` waits for the queue,
``aclose`` writes it within a deadline at shutdown. The queue is bounded: an answer that finds
it full is kept in L1 only, and counted (``l2_write_dropped``). Redis is
never allowed to fail a request: every command runs under a timeout (0.25 s by default), and
errors and timeouts are counted and read as a miss (or a skipped write). After repeated
failures an internal breaker skips Redis for a second at a time, so a hung Redis costs
one timeout per second, not one per request. An L2 value is versioned and carries the digest
it was stored under; anything else found in Redis — garbage, another format, a value stored
under another key — is ignored and counted, never served.

What this module must never do: serve one tenant's answer to another, raise a Redis error to
its caller, or grow beyond its bounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import heapq
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentgov.api.agentdeployment import Cache
from agentgov.api.quantity import quantity_bytes
from agentgov.api.spendstore import cache_key
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.sidecar.breaker import Breaker
from agentgov.sidecar.errors import ConfigError
from agentgov.sidecar.spend import drop_idle_connections

log = logging.getLogger(__name__)

DIGEST_DOMAIN: Final = "agentgov.io/cache/v2"
# Keys of a chat/embeddings body that cannot change the answer (how it is delivered, or who
# the provider should attribute abuse to).
IGNORED_KEYS: Final = frozenset({"stream", "stream_options", "user"})
L2_MAGIC: Final = b"agentgov-cache/1\n"
DEFAULT_REDIS_TIMEOUT_SECONDS: Final = 0.25
# Accounting of an L1 entry beyond its body and key: the entry object, the answer, the LRU
# and expiry bookkeeping (measured with tracemalloc, rounded up; see tests).
ENTRY_OVERHEAD_BYTES: Final = 640
# L2 writes waiting for the writer (beyond this, answers stay in L1 only), and how many one
# round trip sends at most.
L2_WRITE_QUEUE: Final = 1024
L2_WRITE_BATCH: Final = 64
DEFAULT_CLOSE_SECONDS: Final = 2.0
# After this many consecutive Redis failures, skip L2 for a second before trying again.
L2_BREAKER: Final = CircuitBreaker(failure_threshold=3, call_timeout_seconds=1, recovery_timeout_seconds=1,
                                   half_open_successes=1)
_DIGEST_RE: Final = re.compile(r"[0-9a-f]{64}")
_MAX_MODEL_NAME: Final = 256

Reason = Literal["disabled", "deterministic", "policy_allows_non_deterministic", "temperature_unset",
                 "temperature_not_zero", "multiple_choices", "not_canonical"]
Level = Literal["l1", "l2"]


# --- keys and decisions (pure) --------------------------------------------------------------

def _canonical_number(value: object) -> object:
    """``0.0`` and ``0`` ask the same thing; keep booleans as they are."""
    if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def request_digest(body: Mapping[str, object], *, namespace: str, agent: str, user: str | None,
                   partition: Sequence[str] = ()) -> str:
    """Hex sha256 of the tenant and the request parameters that can change the answer.

    ``user`` is None when answers are shared across the agent's users. ``partition`` separates
    answers further by what the sidecar decided about the request: its data classes (an answer
    made for ``internal`` data never serves a ``pii`` request, nor the reverse) and the
    upstream model the route points at (a reload that re-points a route starts afresh). Key
    order in ``body`` does not matter. Raises ValueError for a body that is not plain JSON (NaN, non-string keys,
    nesting deeper than the JSON encoder allows): such a request is not cacheable.
    """
    params = {key: _canonical_number(value) for key, value in body.items() if key not in IGNORED_KEYS}
    try:
        text = json.dumps([DIGEST_DOMAIN, namespace, agent, user, list(partition), params], sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"the request body has no canonical JSON form: {type(e).__name__}") from None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def cache_decision(body: Mapping[str, object], policy: Cache) -> tuple[bool, Reason]:
    """Whether a request may be answered from (and stored in) the cache, and why."""
    if not policy.enabled:
        return False, "disabled"
    if policy.non_deterministic:
        return True, "policy_allows_non_deterministic"
    if "n" in body and _number(body["n"]) != 1:
        return False, "multiple_choices"
    if body.get("temperature") is None:
        return False, "temperature_unset"
    if _number(body["temperature"]) != 0:
        return False, "temperature_not_zero"
    return True, "deterministic"


@dataclass(frozen=True)
class CacheKey:
    """Where one answer lives: the tenant's agent and the request digest."""

    namespace: str
    agent: str
    digest: str

    @property
    def redis_key(self) -> str:
        return cache_key(self.namespace, self.agent, self.digest)


@dataclass(frozen=True)
class CachePlan:
    """``cache_plan``'s answer: ``key`` is set exactly when the request is cacheable."""

    cacheable: bool
    reason: Reason
    key: CacheKey | None = None


def cache_plan(body: Mapping[str, object], policy: Cache, *, namespace: str, agent: str, user: str,
               partition: Sequence[str] = ()) -> CachePlan:
    """Decide and key a request in one step (the user is left out when the policy shares)."""
    cacheable, reason = cache_decision(body, policy)
    if not cacheable:
        return CachePlan(False, reason)
    tenant_user = None if policy.share_across_users else user
    try:
        digest = request_digest(body, namespace=namespace, agent=agent, user=tenant_user, partition=partition)
    except ValueError:
        return CachePlan(False, "not_canonical")
    return CachePlan(True, reason, CacheKey(namespace, agent, digest))


# --- values ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A complete non-streaming response and what it cost when it was made."""

    body: bytes  # the response JSON, as the upstream sent it (usage included)
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float  # counted as "saved" on every hit
    created_at: float  # wall-clock seconds (epoch) when the upstream answered

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes):
            raise ValueError("a cached answer's body is bytes")
        if not self.model or len(self.model) > _MAX_MODEL_NAME:
            raise ValueError(f"a cached answer needs a model name of 1 to {_MAX_MODEL_NAME} characters")
        if _count(self.input_tokens) is None or _count(self.output_tokens) is None:
            raise ValueError("token counts are integers >= 0")
        if not (math.isfinite(self.cost_usd) and self.cost_usd >= 0 and math.isfinite(self.created_at)):
            raise ValueError("cost_usd is a finite amount >= 0 and created_at a finite time")


@dataclass(frozen=True)
class CacheHit:
    answer: CachedAnswer
    level: Level


def encode_l2(digest: str, answer: CachedAnswer) -> bytes:
    """The Redis value: a magic line, a JSON header line, then the body bytes as they are."""
    header = {"digest": digest, "model": answer.model, "inputTokens": answer.input_tokens,
              "outputTokens": answer.output_tokens, "costUsd": answer.cost_usd,
              "createdAt": answer.created_at, "bodyBytes": len(answer.body)}
    return L2_MAGIC + json.dumps(header, separators=(",", ":"), allow_nan=False).encode() + b"\n" + answer.body


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def decode_l2(digest: str, raw: bytes, max_body_bytes: int) -> CachedAnswer | None:
    """The answer in an L2 value, or None unless it is exactly what ``encode_l2(digest, ...)``
    writes: right magic, a well-formed header, the same digest, a body of the stated length."""
    if not raw.startswith(L2_MAGIC):
        return None
    header_line, newline, body = raw[len(L2_MAGIC):].partition(b"\n")
    if not newline or len(header_line) > 4096:
        return None
    try:
        header = json.loads(header_line)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("digest") != digest:
        return None
    model, cost, created = header.get("model"), header.get("costUsd"), header.get("createdAt")
    input_tokens, output_tokens = _count(header.get("inputTokens")), _count(header.get("outputTokens"))
    if (not isinstance(model, str) or not model or len(model) > _MAX_MODEL_NAME
            or input_tokens is None or output_tokens is None
            or _number(cost) is None or not math.isfinite(float(cost)) or float(cost) < 0  # type: ignore[arg-type]
            or _number(created) is None or not math.isfinite(float(created))  # type: ignore[arg-type]
            or header.get("bodyBytes") != len(body) or len(body) > max_body_bytes):
        return None
    return CachedAnswer(body=body, model=model, input_tokens=input_tokens, output_tokens=output_tokens,
                        cost_usd=float(cost), created_at=float(created))  # type: ignore[arg-type]


# --- bounds ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheLimits:
    enabled: bool
    ttl_seconds: int
    max_entries: int
    max_bytes: int


def cache_limits(policy: Cache) -> CacheLimits:
    """The policy's bounds as numbers; ConfigError naming the field when ``maxBytes`` is not a
    usable size."""
    try:
        max_bytes = quantity_bytes(policy.max_bytes)
    except ValueError as e:
        raise ConfigError(f"cache.maxBytes: {e}") from None
    return CacheLimits(policy.enabled, policy.ttl_seconds, policy.max_entries, max_bytes)


def entry_size(key: str, answer: CachedAnswer) -> int:
    """Bytes an L1 entry is charged: body, key, model name and fixed bookkeeping."""
    return len(answer.body) + len(key) + len(answer.model) + ENTRY_OVERHEAD_BYTES


# --- the cache -------------------------------------------------------------------------------

@dataclass
class CacheStats:
    """Counters since start (``entries`` and ``bytes`` are L1's current size)."""

    hits_l1: int = 0
    hits_l2: int = 0
    misses: int = 0
    redis_errors: int = 0  # errors and timeouts of Redis commands (each one a miss or a skipped write)
    redis_skipped: int = 0  # L2 lookups and writes skipped while the L2 breaker was open
    rejected_values: int = 0  # L2 values ignored as garbage, foreign or stored under another key
    too_large: int = 0  # answers not cached because they alone exceed maxBytes
    l2_write_dropped: int = 0  # answers kept in L1 only: the L2 write queue was full, or the cache closed
    evictions: int = 0  # L1 entries dropped to stay within bounds (expiry not included)
    stores: int = 0
    saved_usd: float = 0.0
    entries: int = 0
    bytes: int = 0
    l2_queued: int = 0  # L2 writes waiting (or being written) now

    @property
    def hits(self) -> int:
        return self.hits_l1 + self.hits_l2

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(slots=True)
class _Entry:
    answer: CachedAnswer
    expires_at: float
    size: int
    seq: int


@dataclass
class _L1:
    """LRU by recency (OrderedDict order) with an expiry heap; synchronous, so atomic in asyncio."""

    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    expiry: list[tuple[float, int, str]] = field(default_factory=list)
    bytes: int = 0
    seq: int = 0

    def drop(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size

    def expire(self, now: float) -> None:
        while self.expiry and self.expiry[0][0] <= now:
            _, seq, key = heapq.heappop(self.expiry)
            entry = self.entries.get(key)
            if entry is not None and entry.seq == seq:
                self.drop(key)
        if len(self.expiry) > 2 * len(self.entries) + 64:  # replaced entries leave stale records
            self.expiry = [(e.expires_at, e.seq, k) for k, e in self.entries.items()]
            heapq.heapify(self.expiry)


class ResponseCache:
    """L1 (in-process) + L2 (Redis) response cache. One per sidecar; owned by one event loop."""

    def __init__(self, policy: Cache, redis: aioredis.Redis | None = None, *,
                 redis_timeout: float = DEFAULT_REDIS_TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 l2_breaker: Breaker | None = None) -> None:
        self._redis = redis
        self._timeout = redis_timeout
        self._clock = clock
        self._breaker = l2_breaker or Breaker("l2", L2_BREAKER, clock, kind="cache")
        self._l1 = _L1()
        self._stats = CacheStats()
        self._policy = policy
        self._limits = cache_limits(policy)
        # Redis key -> (value, TTL seconds): a newer answer for a key replaces one still queued.
        self._l2_queue: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._l2_writing = 0
        self._l2_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def policy(self) -> Cache:
        return self._policy

    @property
    def limits(self) -> CacheLimits:
        return self._limits

    @property
    def l2_breaker(self) -> Breaker:
        return self._breaker

    @property
    def has_l2(self) -> bool:
        return self._redis is not None

    def configure(self, policy: Cache) -> None:
        """Apply a (re)loaded policy: a no-op when unchanged; shrinks L1 to new bounds, shortens
        entries to a shorter TTL, empties L1 when the cache is disabled. Raises ConfigError (and
        changes nothing) when the policy's sizes are unusable."""
        if policy == self._policy:
            return
        limits = cache_limits(policy)
        old_ttl = self._limits.ttl_seconds
        self._policy, self._limits = policy, limits
        if not limits.enabled:
            self.clear()
            self._l2_queue.clear()
            return
        if limits.ttl_seconds < old_ttl:
            deadline = self._clock() + limits.ttl_seconds
            for entry in self._l1.entries.values():
                entry.expires_at = min(entry.expires_at, deadline)
            self._l1.expiry = [(e.expires_at, e.seq, k) for k, e in self._l1.entries.items()]
            heapq.heapify(self._l1.expiry)
        self._shrink()

    def clear(self) -> None:
        """Empty L1 (L2 entries expire on their own)."""
        self._l1 = _L1()

    def stats(self) -> CacheStats:
        """A copy of the counters, with L1's current size."""
        self._l1.expire(self._clock())
        return dataclasses.replace(self._stats, entries=len(self._l1.entries), bytes=self._l1.bytes,
                                   l2_queued=len(self._l2_queue) + self._l2_writing)

    # -- get / put --------------------------------------------------------------------------

    async def get(self, key: CacheKey) -> CacheHit | None:
        """The cached answer for ``key`` (L1, then L2), or None. Never raises for Redis trouble.
        Each hit adds the answer's original cost to ``saved_usd``."""
        if not self._limits.enabled:
            return None
        now = self._clock()
        self._l1.expire(now)
        slot = key.redis_key
        entry = self._l1.entries.get(slot)
        if entry is not None:
            self._l1.entries.move_to_end(slot)
            return self._hit(entry.answer, "l1")
        found = await self._get_l2(key)
        if found is None:
            self._stats.misses += 1
            return None
        answer, ttl_ms = found
        if ttl_ms != -2:  # -2: it expired between GET and PTTL; serve it, keep it out of L1
            ttl = self._limits.ttl_seconds if ttl_ms < 0 else min(ttl_ms / 1000, self._limits.ttl_seconds)
            self._put_l1(slot, answer, self._clock() + ttl)
        return self._hit(answer, "l2")

    async def put(self, key: CacheKey, answer: CachedAnswer) -> bool:
        """Store an answer in L1 and queue its L2 write, for the policy's TTL; never waits for
        Redis. False when it was not stored at all (cache disabled, or the answer alone exceeds
        maxBytes). A failed L2 write is counted in ``redis_errors`` and does not fail the put."""
        if not self._limits.enabled:
            return False
        slot = key.redis_key
        if entry_size(slot, answer) > self._limits.max_bytes:
            self._stats.too_large += 1
            return False
        self._put_l1(slot, answer, self._clock() + self._limits.ttl_seconds)
        self._stats.stores += 1
        self._queue_l2(key, answer)
        return True

    def _hit(self, answer: CachedAnswer, level: Level) -> CacheHit:
        if level == "l1":
            self._stats.hits_l1 += 1
        else:
            self._stats.hits_l2 += 1
        self._stats.saved_usd += answer.cost_usd
        return CacheHit(answer, level)

    def _put_l1(self, slot: str, answer: CachedAnswer, expires_at: float) -> None:
        l1 = self._l1
        l1.expire(self._clock())
        size = entry_size(slot, answer)
        if size > self._limits.max_bytes:
            return
        l1.drop(slot)
        l1.seq += 1
        l1.entries[slot] = _Entry(answer, expires_at, size, l1.seq)
        l1.bytes += size
        heapq.heappush(l1.expiry, (expires_at, l1.seq, slot))
        self._shrink()

    def _shrink(self) -> None:
        l1 = self._l1
        while l1.entries and (len(l1.entries) > self._limits.max_entries or l1.bytes > self._limits.max_bytes):
            oldest = next(iter(l1.entries))
            l1.drop(oldest)
            self._stats.evictions += 1

    # -- L2 ---------------------------------------------------------------------------------

    async def _get_l2(self, key: CacheKey) -> tuple[CachedAnswer, int] | None:
        if self._redis is None:
            return None
        permit = self._breaker.try_acquire()
        if permit is None:
            self._stats.redis_skipped += 1
            return None
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(key.redis_key)
                pipe.pttl(key.redis_key)
                raw, ttl_ms = await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            permit.failure()
            self._redis_failed("GET", e)
            await drop_idle_connections(self._redis, e)
            return None
        except BaseException:
            permit.release()
            raise
        permit.success()
        if raw is None:
            return None
        if isinstance(raw, str):  # a client created with decode_responses=True
            raw = raw.encode("utf-8", "surrogateescape")
        answer = decode_l2(key.digest, raw, self._limits.max_bytes) if isinstance(raw, bytes) else None
        if answer is None:
            self._stats.rejected_values += 1
            log.warning("ignored an unusable L2 cache value for agent %s/%s", key.namespace, key.agent)
            return None
        return answer, ttl_ms if isinstance(ttl_ms, int) else -1

    def _queue_l2(self, key: CacheKey, answer: CachedAnswer) -> None:
        if self._redis is None:
            return
        slot = key.redis_key
        if self._closed or (slot not in self._l2_queue and len(self._l2_queue) >= L2_WRITE_QUEUE):
            self._stats.l2_write_dropped += 1
            return
        self._l2_queue[slot] = (encode_l2(key.digest, answer), self._limits.ttl_seconds)
        self._l2_queue.move_to_end(slot)
        if self._l2_task is None or self._l2_task.done():
            self._l2_task = asyncio.get_running_loop().create_task(self._write_l2(), name="agentgov-cache-l2-writer")

    async def _write_l2(self) -> None:
        """Write queued answers, a batch per round trip, until none is left."""
        assert self._redis is not None
        while self._l2_queue:
            batch = [self._l2_queue.popitem(last=False) for _ in range(min(L2_WRITE_BATCH, len(self._l2_queue)))]
            permit = self._breaker.try_acquire()
            if permit is None:
                self._stats.redis_skipped += len(batch)
                continue
            self._l2_writing = len(batch)
            try:
                async with asyncio.timeout(self._timeout):
                    pipe = self._redis.pipeline(transaction=False)
                    for slot, (value, ttl) in batch:
                        pipe.set(slot, value, ex=ttl)
                    await pipe.execute()
            except (RedisError, OSError, asyncio.TimeoutError) as e:
                permit.failure()
                self._redis_failed("SET", e, len(batch))
                await drop_idle_connections(self._redis, e)
                continue
            except BaseException:
                permit.release()
                raise
            finally:
                self._l2_writing = 0
            permit.success()

    async def flush(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for the queued L2 writes; how many are still queued."""
        task = self._l2_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                pass
        return len(self._l2_queue) + self._l2_writing

    async def aclose(self, timeout: float = DEFAULT_CLOSE_SECONDS) -> None:
        """Write the queued L2 writes within ``timeout`` seconds, then stop the writer; later
        answers are kept in L1 only. What was not written is counted and logged."""
        self._closed = True
        left = await self.flush(timeout)
        if self._l2_task is not None and not self._l2_task.done():
            self._l2_task.cancel()
            try:
                await self._l2_task
            except asyncio.CancelledError:
                pass
        if left:
            self._l2_queue.clear()
            self._stats.l2_write_dropped += left
            log.warning("cache: %d answer(s) not written to L2 at shutdown", left)

    def _redis_failed(self, command: str, error: BaseException, commands: int = 1) -> None:
        self._stats.redis_errors += commands
        # The error type only: a Redis error message may carry the URL (and its password).
        log.warning("cache L2 %s failed (%s); treated as a miss", command, type(error).__name__)
