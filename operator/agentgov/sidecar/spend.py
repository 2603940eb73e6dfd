"""The spend store and the budget guard: reserve before a model call, settle after it.

Two stores keep the same counters under the same keys (``agentgov.api.spendstore``) with the
same semantics, and the same contract tests run against both:

- :class:`RedisSpendStore`: the real one, shared by every replica of every sidecar. Each
  operation on one budget is one Lua script (atomic; the budget's keys share a hash tag, so it
  runs on one Redis Cluster node) and every call is bounded by a timeout.
- :class:`MemorySpendStore`: the same algorithm in this process. **Not shared across
  replicas**: it is the store of ``agentgov demo`` (no Redis there) and the guard's *local
  ledger* while Redis is unreachable; nothing else may use it as if it were shared.

Holds: a reservation is written into the budget's holds ZSET with a deadline, as a member that
names its periods, amount and subjects (``budgets.hold_member``). Every script first releases
the holds whose deadline has passed, so the reservations of a sidecar that crashed mid-call are
given back by whichever replica runs next (a hold of an earlier day is released in that day's
hash: a key the script names from the hold, with the same hash tag, so on the same Cluster
node). A settlement writes a ``settled`` marker (with a TTL) so that retrying it — after a
timeout that may have hidden a success — never counts twice; a reservation that timed out is
released again once the store answers, in case it was written after all.

The local ledger applies each budget's limits to what *this replica* counted while the store
was away: an outage weakens a limit to one limit per replica, it does not remove it.

:class:`BudgetGuard` is what the egress handler calls. It plans with the pure functions of
``budgets.py`` and applies each budget's failure policy when the store fails or times out:
``Closed`` refuses (``BudgetStoreUnavailable``, 503); ``Open`` allows and counts on the local
ledger, and says so (``hold.degraded``, ``health()``, counters the caller turns into metrics) —
never a silent fallback. A settlement the store could not take is kept in a bounded queue and
replayed when the store answers again; so is the spend counted locally while it was away.

Usage records (``agentgov usage``) are not on the request path: ``record_usage`` only queues
the record (bounded), and one writer task sends what has queued in one pipeline, summed per
hash field, so an answer never waits for its usage record and a busy sidecar writes many
records in one round trip. A batch the store does not take joins the replay queue; a record
that finds the queue full is dropped and counted (``GuardCounters``, ``health()``); at shutdown
``aclose`` writes what is queued within a deadline and logs what it could not. A write that
timed out is not replayed (Redis may still run it: a usage record has no settled marker, so a
replay could count it twice); it is counted as unconfirmed.

This module decides nothing about limits or prices itself; it writes no audit events and no
metrics (the caller does, from what it returns).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentgov.api import spendstore
from agentgov.api.bundle import PolicyBundle, Price
from agentgov.api.spendstore import PeriodKind, SubjectSpend
from agentgov.sidecar import budgets
from agentgov.sidecar.auth import Identity
from agentgov.sidecar.budgets import BudgetAlert, HoldLine, Refusal, StoreAlert
from agentgov.sidecar.errors import BudgetStoreUnavailable

log = logging.getLogger(__name__)

# How long a settled marker is kept: a settlement retried later than this could count twice.
SETTLED_MARKER_TTL_SECONDS: Final = 6 * 3600
# Expired holds released per script run (the rest on the next runs): bounded script time.
SWEEP_BATCH: Final = 64
DEFAULT_HOLD_SECONDS: Final = 900.0
DEFAULT_PENDING_LIMIT: Final = 10_000
# Usage records waiting for the writer (beyond this they are dropped, and counted), and how
# many one write sends at most.
DEFAULT_USAGE_QUEUE_LIMIT: Final = 10_000
USAGE_BATCH: Final = 512
# How long shutdown waits for queued usage records and settlements to reach the store.
DEFAULT_CLOSE_SECONDS: Final = 2.0
PERIODS: Final[tuple[PeriodKind, PeriodKind]] = ("day", "month")

T = TypeVar("T")


class SpendStoreUnavailable(Exception):
    """The store did not answer (connection refused or lost, timeout, script error).

    The message names the operation and the error class, never a URL or password.
    ``ambiguous``: the command may have run all the same (a timeout hides the outcome)."""

    def __init__(self, message: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass(frozen=True)
class UsageRecord:
    """One call's usage, for the per-user usage hash."""

    namespace: str
    agent: str
    user: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    cached: bool
    at: float  # epoch seconds: the UTC day it counts in

    @property
    def key(self) -> str:
        """The usage hash of the record's user and UTC day."""
        return _usage_key(self.user, dt.datetime.fromtimestamp(self.at, dt.timezone.utc).date())

    def increments(self) -> dict[str, int]:
        values = {"cost_micros": self.cost_micros, "input_tokens": self.input_tokens,
                  "output_tokens": self.output_tokens, "calls": 1, "cache_hits": int(self.cached)}
        fields = _usage_fields(self.namespace, self.agent, self.model)
        return {fields[metric]: value for metric, value in values.items()}


# Key parts are percent-encoded (``spendstore``); the same few agents, models and users come
# back on every call, so their encodings are remembered (bounded).
@functools.lru_cache(maxsize=1024)
def _usage_fields(namespace: str, agent: str, model: str) -> Mapping[str, str]:
    """Metric -> usage hash field, for one agent and model (shared: never modified)."""
    return {metric: spendstore.usage_field(namespace, agent, model, metric) for metric in spendstore.USAGE_METRICS}


@functools.lru_cache(maxsize=4096)
def _usage_key(user: str, day: dt.date) -> str:
    return spendstore.usage_key(user, day)


def usage_increments(records: Sequence[UsageRecord]) -> dict[str, dict[str, int]]:
    """The records' figures summed per usage hash and field: what one write adds."""
    totals: dict[str, dict[str, int]] = {}
    for record in records:
        fields = totals.setdefault(record.key, {})
        for name, value in record.increments().items():
            fields[name] = fields.get(name, 0) + value
    return totals


class SpendStore(Protocol):
    """Budget counters shared (or not: ``shared``) between sidecars. Every method raises
    :class:`SpendStoreUnavailable` when the store cannot be used."""

    kind: str
    shared: bool

    async def reserve(self, line: HoldLine, now: float) -> Refusal | None:
        """Hold ``line.amount_micros`` for every subject in the day and month of the line, or
        (Hard budgets) refuse when ``spent + reserved + amount`` would exceed either limit."""

    async def settle(self, line: HoldLine, actual_micros: int, now: float) -> list[StoreAlert] | None:
        """Release the hold (if still open) and commit the actual spend; the thresholds reached
        for the first time in the period. None when this hold was already settled."""

    async def release(self, line: HoldLine, now: float) -> bool:
        """Give the hold back (the call failed); False when it was no longer open."""

    async def record_usage(self, *records: UsageRecord) -> None:
        """Add the records' figures to their users' usage hashes (for Redis: one round trip)."""

    async def period(self, namespace: str, budget: str, kind: PeriodKind, when: float) -> dict[str, SubjectSpend]:
        """Every subject's figures in one period hash (for status, health and tests)."""

    async def ping(self) -> None: ...


# --- Redis ------------------------------------------------------------------------------------

_LUA_COMMON: Final = """
local function unreserve(key, subject, amount)
  local field = 'reserved:' .. subject
  if redis.call('HEXISTS', key, field) == 1 then
    if redis.call('HINCRBY', key, field, -amount) <= 0 then redis.call('HDEL', key, field) end
  end
end
local function release_member(member, day_prefix, month_prefix)
  local id, day, month, amount, subjects = string.match(member, '^(%S+) (%S+) (%S+) (%d+) (%S*)$')
  if not id then return end
  amount = tonumber(amount)
  for subject in string.gmatch(subjects, '[^,]+') do
    unreserve(day_prefix .. day, subject, amount)
    unreserve(month_prefix .. month, subject, amount)
  end
end
-- Release the holds whose deadline passed: their sidecar crashed or lost the store mid-call.
local function sweep(holds, now, day_prefix, month_prefix)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, SWEEP_BATCH)
  for _, member in ipairs(expired) do
    release_member(member, day_prefix, month_prefix)
    redis.call('ZREM', holds, member)
  end
end
local day, month, holds = KEYS[1], KEYS[2], KEYS[3]
local day_prefix = string.match(day, '^(.*:)')
local month_prefix = string.match(month, '^(.*:)')
local periods = {day, month}
""".replace("SWEEP_BATCH", str(SWEEP_BATCH))

# KEYS: day, month, holds. ARGV: member, deadline_ms, now_ms, amount, day_limit, month_limit,
# enforce (1|0), day_ttl, month_ttl, subject...
# -> {0} | {subject_index, period (1 day, 2 month), spent, reserved}
RESERVE_LUA: Final = _LUA_COMMON + """
local member, deadline, now = ARGV[1], ARGV[2], ARGV[3]
local amount = tonumber(ARGV[4])
local limits = {tonumber(ARGV[5]), tonumber(ARGV[6])}
local first = 10
sweep(holds, now, day_prefix, month_prefix)
if ARGV[7] == '1' then
  for i = first, #ARGV do
    for p = 1, 2 do
      local spent = tonumber(redis.call('HGET', periods[p], 'spent:' .. ARGV[i]) or '0')
      local reserved = tonumber(redis.call('HGET', periods[p], 'reserved:' .. ARGV[i]) or '0')
      if reserved < 0 then reserved = 0 end
      if spent >= limits[p] or spent + reserved + amount > limits[p] then
        return {i - first + 1, p, spent, reserved}
      end
    end
  end
end
for i = first, #ARGV do
  redis.call('HINCRBY', day, 'reserved:' .. ARGV[i], amount)
  redis.call('HINCRBY', month, 'reserved:' .. ARGV[i], amount)
end
redis.call('ZADD', holds, deadline, member)
redis.call('EXPIRE', day, ARGV[8])
redis.call('EXPIRE', month, ARGV[9])
redis.call('EXPIRE', holds, ARGV[8])
return {0}
"""

# KEYS: day, month, holds, settled marker. ARGV: member, now_ms, reserved amount, actual,
# day_limit, month_limit, day_ttl, month_ttl, marker_ttl, n, threshold * n, subject...
# -> {-1} when already settled | {subject_index, period, percent, spent} * alerts
SETTLE_LUA: Final = _LUA_COMMON + """
local marker, member, now = KEYS[4], ARGV[1], ARGV[2]
local amount, actual = tonumber(ARGV[3]), tonumber(ARGV[4])
local limits = {tonumber(ARGV[5]), tonumber(ARGV[6])}
local n = tonumber(ARGV[10])
local first = 11 + n
sweep(holds, now, day_prefix, month_prefix)
if redis.call('EXISTS', marker) == 1 then return {-1} end
local live = redis.call('ZREM', holds, member)
local alerts = {}
for i = first, #ARGV do
  for p = 1, 2 do
    if live == 1 then unreserve(periods[p], ARGV[i], amount) end
    local spent = redis.call('HINCRBY', periods[p], 'spent:' .. ARGV[i], actual)
    for t = 1, n do
      local pct = tonumber(ARGV[10 + t])
      if spent * 100 >= limits[p] * pct
          and redis.call('HSETNX', periods[p], 'alerted:' .. ARGV[i] .. ':' .. pct, now) == 1 then
        table.insert(alerts, i - first + 1)
        table.insert(alerts, p)
        table.insert(alerts, pct)
        table.insert(alerts, spent)
      end
    end
  end
end
redis.call('SET', marker, '1', 'EX', ARGV[9])
redis.call('EXPIRE', day, ARGV[7])
redis.call('EXPIRE', month, ARGV[8])
return alerts
"""

# KEYS: day, month, holds. ARGV: member, now_ms -> 1 released | 0 no longer open
RELEASE_LUA: Final = _LUA_COMMON + """
sweep(holds, ARGV[2], day_prefix, month_prefix)
if redis.call('ZREM', holds, ARGV[1]) == 1 then
  release_member(ARGV[1], day_prefix, month_prefix)
  return 1
end
return 0
"""


# Connections to Redis per sidecar. More calls in flight than this wait for a free connection
# (at most the timeout) rather than fail: redis-py's default asyncio pool refuses the 101st
# concurrent command at once (MaxConnectionsError), which a Closed budget turned into 503s
# under load (benchmarks/gateways.py found it above ~100 calls in flight).
MAX_REDIS_CONNECTIONS: Final = 64


def redis_client(url: str, timeout_seconds: float, max_connections: int = MAX_REDIS_CONNECTIONS) -> aioredis.Redis:
    """A client whose every command gives up after ``timeout_seconds`` (waiting for a pooled
    connection included) and never retries by itself (the callers' failure policies decide
    what a failure means)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_seconds,
        socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


async def drop_idle_connections(client: aioredis.Redis, error: BaseException) -> None:
    """After a connection error, close the pool's idle connections: when Redis restarted, every
    one of them is dead, and each would fail the next command given it (redis-py notices a
    closed connection only by using it), so concurrent calls would keep failing, one per
    pooled connection, after Redis is back. The next commands connect afresh."""
    if isinstance(error, (RedisConnectionError, ConnectionError)):
        try:
            await client.connection_pool.disconnect(inuse_connections=False)
        except (RedisError, OSError):
            pass


def _ms(epoch: float) -> int:
    return int(epoch * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _period(index: int) -> PeriodKind:
    return "day" if index == 1 else "month"


class RedisSpendStore:
    """The shared store: one Lua script per operation on one budget, each bounded by ``timeout``."""

    kind = "redis"
    shared = True

    def __init__(self, client: aioredis.Redis, *, timeout: float = 0.25) -> None:
        self.client = client
        self.timeout = timeout
        self._reserve = client.register_script(RESERVE_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._release = client.register_script(RELEASE_LUA)

    async def _bounded(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except (TimeoutError, RedisTimeoutError):
            raise SpendStoreUnavailable(f"{what}: no answer within {self.timeout:g}s", ambiguous=True) from None
        except (RedisError, OSError) as e:
            await drop_idle_connections(self.client, e)
            raise SpendStoreUnavailable(f"{what}: {type(e).__name__}") from None

    @staticmethod
    def _keys(line: HoldLine) -> list[str]:
        return [line.period_key("day"), line.period_key("month"), spendstore.holds_key(line.namespace, line.budget)]

    async def reserve(self, line: HoldLine, now: float) -> Refusal | None:
        args: list[str | int] = [
            budgets.hold_member(line), _ms(line.deadline), _ms(now), line.amount_micros, line.day_limit_micros,
            line.month_limit_micros, int(line.enforce), spendstore.DAY_KEY_TTL_SECONDS,
            spendstore.MONTH_KEY_TTL_SECONDS, *line.subjects,
        ]
        reply = await self._bounded("reserve", lambda: self._reserve(self._keys(line), args))
        result = [int(x) for x in reply]
        if result[0] == 0:
            return None
        return Refusal(line.subjects[result[0] - 1], _period(result[1]), result[2], result[3])

    async def settle(self, line: HoldLine, actual_micros: int, now: float) -> list[StoreAlert] | None:
        keys = [*self._keys(line), spendstore.settled_key(line.namespace, line.budget, line.hold_id)]
        args: list[str | int] = [
            budgets.hold_member(line), _ms(now), line.amount_micros, actual_micros, line.day_limit_micros,
            line.month_limit_micros, spendstore.DAY_KEY_TTL_SECONDS, spendstore.MONTH_KEY_TTL_SECONDS,
            SETTLED_MARKER_TTL_SECONDS, len(line.thresholds), *line.thresholds, *line.subjects,
        ]
        reply = await self._bounded("settle", lambda: self._settle(keys, args))
        result = [int(x) for x in reply]
        if result[:1] == [-1]:
            return None
        return [StoreAlert(line.subjects[result[i] - 1], _period(result[i + 1]), result[i + 2], result[i + 3])
                for i in range(0, len(result), 4)]

    async def release(self, line: HoldLine, now: float) -> bool:
        reply = await self._bounded("release", lambda: self._release(self._keys(line), [budgets.hold_member(line),
                                                                                         _ms(now)]))
        return int(reply) == 1

    async def record_usage(self, *records: UsageRecord) -> None:
        totals = usage_increments(records)
        if not totals:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, fields in totals.items():
                    for name, value in fields.items():
                        pipe.hincrby(key, name, value)
                    pipe.expire(key, spendstore.USAGE_KEY_TTL_SECONDS)
                await pipe.execute()

        await self._bounded("record usage", write)

    async def period(self, namespace: str, budget: str, kind: PeriodKind, when: float) -> dict[str, SubjectSpend]:
        key = spendstore.period_key(namespace, budget, kind, dt.datetime.fromtimestamp(when, dt.timezone.utc))
        fields = await self._bounded("read period", lambda: self.client.hgetall(key))
        return spendstore.parse_period_hash({_text(k): _text(v) for k, v in fields.items()})

    async def ping(self) -> None:
        await self._bounded("ping", self.client.ping)


# --- memory -----------------------------------------------------------------------------------


class _Keyspace:
    """Hashes, sorted sets and strings with TTLs, as Redis keeps them (only what the scripts use)."""

    PURGE_EVERY: Final = 1024

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, int]] = {}
        self.zsets: dict[str, dict[str, float]] = {}
        self.strings: dict[str, str] = {}
        self.expires: dict[str, float] = {}
        self._ops = 0

    def touch(self, now: float) -> None:
        """Drop expired keys: lazily for the keys used, fully every PURGE_EVERY operations."""
        self._ops += 1
        if self._ops % self.PURGE_EVERY == 0:
            for key in [k for k, at in self.expires.items() if at <= now]:
                self._drop(key)

    def _drop(self, key: str) -> None:
        self.hashes.pop(key, None)
        self.zsets.pop(key, None)
        self.strings.pop(key, None)
        self.expires.pop(key, None)

    def live(self, key: str, now: float) -> None:
        at = self.expires.get(key)
        if at is not None and at <= now:
            self._drop(key)

    def hash(self, key: str, now: float) -> dict[str, int]:
        self.live(key, now)
        return self.hashes.setdefault(key, {})

    def hincrby(self, key: str, name: str, by: int, now: float) -> int:
        fields = self.hash(key, now)
        fields[name] = fields.get(name, 0) + by
        return fields[name]

    def expire(self, key: str, seconds: float, now: float) -> None:
        if key in self.hashes or key in self.zsets or key in self.strings:
            self.expires[key] = now + seconds


class MemorySpendStore:
    """The Redis store's algorithm in this process. NOT shared across replicas: for ``agentgov
    demo`` and for the guard's local ledger while Redis is unreachable. Operations do not await,
    so each is atomic on the event loop, as a script is in Redis."""

    kind = "memory"
    shared = False

    def __init__(self) -> None:
        self._keys = _Keyspace()

    def _sweep(self, line: HoldLine, now: float) -> None:
        holds_key = spendstore.holds_key(line.namespace, line.budget)
        self._keys.live(holds_key, now)
        holds = self._keys.zsets.get(holds_key, {})
        expired = sorted((deadline, m) for m, deadline in holds.items() if deadline <= _ms(now))[:SWEEP_BATCH]
        for _, member in expired:
            self._release_member(line, member, now)
            del holds[member]

    def _release_member(self, line: HoldLine, member: str, now: float) -> None:
        parsed = budgets.parse_hold_member(member)
        if parsed is None:
            return
        for key in (self._prefix(line, "day") + parsed.day, self._prefix(line, "month") + parsed.month):
            for subject in parsed.subjects:
                self._unreserve(key, subject, parsed.amount_micros, now)

    @staticmethod
    def _prefix(line: HoldLine, kind: PeriodKind) -> str:
        return line.period_key(kind).rpartition(":")[0] + ":"

    def _unreserve(self, key: str, subject: str, amount: int, now: float) -> None:
        fields = self._keys.hash(key, now)
        name = spendstore.reserved_field(subject)
        if name in fields:
            fields[name] -= amount
            if fields[name] <= 0:
                del fields[name]

    async def reserve(self, line: HoldLine, now: float) -> Refusal | None:
        self._keys.touch(now)
        self._sweep(line, now)
        keys = {kind: line.period_key(kind) for kind in PERIODS}
        if line.enforce:
            for subject in line.subjects:
                for kind in PERIODS:
                    fields = self._keys.hash(keys[kind], now)
                    spent = fields.get(spendstore.spent_field(subject), 0)
                    reserved = max(0, fields.get(spendstore.reserved_field(subject), 0))
                    limit = line.limit_micros(kind)
                    if spent >= limit or spent + reserved + line.amount_micros > limit:
                        return Refusal(subject, kind, spent, reserved)
        for subject in line.subjects:
            for kind in PERIODS:
                self._keys.hincrby(keys[kind], spendstore.reserved_field(subject), line.amount_micros, now)
        holds_key = spendstore.holds_key(line.namespace, line.budget)
        self._keys.zsets.setdefault(holds_key, {})[budgets.hold_member(line)] = _ms(line.deadline)
        self._expire_periods(keys, now)
        self._keys.expire(holds_key, spendstore.DAY_KEY_TTL_SECONDS, now)
        return None

    def _expire_periods(self, keys: Mapping[PeriodKind, str], now: float) -> None:
        self._keys.expire(keys["day"], spendstore.DAY_KEY_TTL_SECONDS, now)
        self._keys.expire(keys["month"], spendstore.MONTH_KEY_TTL_SECONDS, now)

    async def settle(self, line: HoldLine, actual_micros: int, now: float) -> list[StoreAlert] | None:
        self._keys.touch(now)
        self._sweep(line, now)
        marker = spendstore.settled_key(line.namespace, line.budget, line.hold_id)
        self._keys.live(marker, now)
        if marker in self._keys.strings:
            return None
        holds = self._keys.zsets.get(spendstore.holds_key(line.namespace, line.budget), {})
        live = holds.pop(budgets.hold_member(line), None) is not None
        keys = {kind: line.period_key(kind) for kind in PERIODS}
        alerts: list[StoreAlert] = []
        for subject in line.subjects:
            for kind in PERIODS:
                if live:
                    self._unreserve(keys[kind], subject, line.amount_micros, now)
                spent = self._keys.hincrby(keys[kind], spendstore.spent_field(subject), actual_micros, now)
                fields = self._keys.hash(keys[kind], now)
                done = [p for p in line.thresholds if spendstore.alerted_field(subject, p) in fields]
                for percent in budgets.thresholds_to_alert(spent, line.limit_micros(kind), line.thresholds, done):
                    fields[spendstore.alerted_field(subject, percent)] = _ms(now)
                    alerts.append(StoreAlert(subject, kind, percent, spent))
        self._keys.strings[marker] = "1"
        self._keys.expire(marker, SETTLED_MARKER_TTL_SECONDS, now)
        self._expire_periods(keys, now)
        return alerts

    async def release(self, line: HoldLine, now: float) -> bool:
        self._keys.touch(now)
        self._sweep(line, now)
        member = budgets.hold_member(line)
        holds = self._keys.zsets.get(spendstore.holds_key(line.namespace, line.budget), {})
        if holds.pop(member, None) is None:
            return False
        self._release_member(line, member, now)
        return True

    async def record_usage(self, *records: UsageRecord) -> None:
        for record in records:
            self._keys.touch(record.at)
            key = record.key
            for name, value in record.increments().items():
                self._keys.hincrby(key, name, value, record.at)
            self._keys.expire(key, spendstore.USAGE_KEY_TTL_SECONDS, record.at)

    async def period(self, namespace: str, budget: str, kind: PeriodKind, when: float) -> dict[str, SubjectSpend]:
        key = spendstore.period_key(namespace, budget, kind, dt.datetime.fromtimestamp(when, dt.timezone.utc))
        fields = dict(self._keys.hashes.get(key, {}))
        return spendstore.parse_period_hash({k: str(v) for k, v in fields.items()})

    def usage(self, user: str, day: dt.date) -> dict[str, str]:
        """A usage hash as ``HGETALL`` returns it (for the demo's report)."""
        return {k: str(v) for k, v in self._keys.hashes.get(spendstore.usage_key(user, day), {}).items()}

    async def ping(self) -> None:
        return None


# --- the guard --------------------------------------------------------------------------------


@dataclass
class Hold:
    """The reservations of one call, returned by :meth:`BudgetGuard.reserve`."""

    id: str
    model: str
    lines: tuple[HoldLine, ...]
    prompt_tokens: int
    output_tokens: int
    # Budgets reserved on this replica's local ledger (the store was unreachable, policy Open).
    local: frozenset[str] = frozenset()
    usage_price: Price | None = None
    finished: bool = False

    @property
    def degraded(self) -> bool:
        return bool(self.local)

    @property
    def unpriced(self) -> bool:
        return any(line.unpriced for line in self.lines)

    @property
    def reserved_usd(self) -> float:
        return spendstore.micros_to_usd(max((line.amount_micros for line in self.lines), default=0))

    @property
    def budgets(self) -> tuple[str, ...]:
        return tuple(line.budget for line in self.lines)


@dataclass(frozen=True)
class Settlement:
    """What a settled call cost and which alerts it raised."""

    cost_usd: float
    alerts: tuple[BudgetAlert, ...] = ()
    # The response had no believable usage: the reservation (worst case) was charged.
    estimated: bool = False
    # Budget lines the store could not take now: queued, replayed when it answers again.
    pending: int = 0
    degraded: bool = False


@dataclass(frozen=True)
class _PendingSettle:
    line: HoldLine
    actual_micros: int
    at: float


@dataclass(frozen=True)
class _PendingUsage:
    record: UsageRecord


@dataclass(frozen=True)
class _PendingRelease:
    """A reservation that timed out may still have been written: take it back when the store
    answers (releasing is idempotent), rather than leave it until its deadline."""

    line: HoldLine


_Pending = _PendingSettle | _PendingUsage | _PendingRelease


@dataclass
class GuardCounters:
    """Running totals the caller exports as metrics."""

    degraded_calls: int = 0  # reservations counted on the local ledger (policy Open)
    refused_unavailable: int = 0  # calls refused because the store was unreachable (Closed)
    store_errors: int = 0
    unpriced_calls: int = 0
    pending_flushed: int = 0
    pending_dropped: int = 0
    usage_written: int = 0  # usage records the store took
    usage_failed: int = 0  # usage records whose write failed: queued for replay (not lost)
    usage_unconfirmed: int = 0  # usage records whose write timed out: maybe written, never replayed
    usage_dropped: int = 0  # usage records lost: no store configured, queue full, or not written at shutdown
    degraded_by_budget: dict[str, int] = field(default_factory=dict)


class BudgetGuard:
    """Reserve, settle, release and record usage for the egress handler.

    ``store`` is the shared store (None: no Redis configured, so every budget follows its
    failure policy). ``clock`` gives epoch seconds: it decides periods and hold deadlines.
    ``probe_interval`` keeps a failing store from costing every call its timeout: after a
    failure the store is skipped (as unreachable) for that long, then tried again.
    ``on_alert`` receives alerts raised later than the call that caused them (a replayed
    settlement); alerts of a call are in its :class:`Settlement`. ``usage_queue_limit``
    bounds the usage records waiting for the background writer.
    """

    def __init__(self, store: SpendStore | None, *, clock: Callable[[], float] = time.time,
                 local: MemorySpendStore | None = None, default_output_tokens: int = budgets.DEFAULT_OUTPUT_TOKENS,
                 hold_seconds: float = DEFAULT_HOLD_SECONDS, pending_limit: int = DEFAULT_PENDING_LIMIT,
                 probe_interval: float = 1.0, on_alert: Callable[[BudgetAlert], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 usage_queue_limit: int = DEFAULT_USAGE_QUEUE_LIMIT) -> None:
        self.store = store
        self.local = local or MemorySpendStore()
        self.clock = clock
        self.monotonic = monotonic
        self.default_output_tokens = default_output_tokens
        self.hold_seconds = hold_seconds
        self.probe_interval = probe_interval
        self.on_alert = on_alert
        self.counters = GuardCounters()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_limit = pending_limit
        self._down_until = 0.0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._reachable: bool | None = None
        self._degraded_budgets: set[str] = set()
        self._flush_task: asyncio.Task[int] | None = None
        self._flush_lock = asyncio.Lock()
        self._usage: collections.deque[UsageRecord] = collections.deque()
        self._usage_limit = usage_queue_limit
        self._usage_writing = 0  # records in the batch being written
        self._usage_task: asyncio.Task[None] | None = None
        self._usage_overflow_logged = False

    # -- store access with the failure bookkeeping ---------------------------------------------

    def _store_usable(self) -> SpendStore | None:
        if self.store is None or self.monotonic() < self._down_until:
            return None
        return self.store

    def _failed(self, error: SpendStoreUnavailable) -> None:
        self.counters.store_errors += 1
        if self._reachable is not False:
            log.warning("budget store unreachable (%s); budgets follow their failure policy", error)
        self._reachable = False
        self._last_error = str(error)
        self._last_error_at = self.clock()
        self._down_until = self.monotonic() + self.probe_interval

    def _succeeded(self) -> None:
        if self._reachable is False:
            log.warning("budget store reachable again; %d pending settlement(s) to replay", len(self._pending))
        self._reachable = True
        self._down_until = 0.0
        if self._degraded_budgets:
            self._degraded_budgets.clear()
        if self._pending and (self._flush_task is None or self._flush_task.done()):
            self._flush_task = asyncio.get_running_loop().create_task(self.flush_pending())

    async def _with_store(self, call: Callable[[SpendStore], Awaitable[T]]) -> T:
        """Run ``call`` on the shared store; SpendStoreUnavailable when there is none or it fails."""
        store = self._store_usable()
        if store is None:
            raise SpendStoreUnavailable("no budget store configured" if self.store is None
                                        else self._last_error or "store unreachable")
        try:
            result = await call(store)
        except SpendStoreUnavailable as e:
            self._failed(e)
            raise
        self._succeeded()
        return result

    def _enqueue(self, item: _Pending) -> None:
        if self.store is None:
            return  # nothing to replay into
        if len(self._pending) >= self._pending_limit:
            dropped = self._pending.popleft()
            self.counters.pending_dropped += 1
            log.error("pending budget settlements over %d: dropped the oldest (%s)", self._pending_limit,
                      type(dropped).__name__.removeprefix("_Pending").lower())
        self._pending.append(item)

    # -- the call's life -----------------------------------------------------------------------

    async def reserve(self, bundle: PolicyBundle, identity: Identity, model: str, body: Mapping[str, object], *,
                      hold_seconds: float | None = None) -> Hold:
        """Reserve the call's worst-case cost on every budget governing it.

        Raises BudgetExceeded (429) when a Hard budget has no room, BudgetStoreUnavailable (503)
        when the store cannot be reached and a budget's failure policy is Closed. Either way no
        reservation of this call is left behind."""
        now = self.clock()
        plan = budgets.plan_reservation(
            bundle, identity, model, body, hold_id=uuid.uuid4().hex, now=now,
            hold_seconds=self.hold_seconds if hold_seconds is None else hold_seconds,
            default_output_tokens=self.default_output_tokens,
        )
        hold = Hold(id=plan.lines[0].hold_id if plan.lines else uuid.uuid4().hex, model=model, lines=(),
                    prompt_tokens=plan.prompt_tokens, output_tokens=plan.output_tokens,
                    usage_price=budgets.usage_price(bundle, model))
        placed: list[HoldLine] = []
        local: set[str] = set()
        try:
            for line in plan.lines:
                refusal = await self._reserve_line(line, now, local)
                if refusal is not None:
                    raise budgets.budget_exceeded(line, refusal, now)
                placed.append(line)
        except BaseException:
            # Refused, store unavailable, or the caller went away: leave no reservation behind.
            hold.lines, hold.local = tuple(placed), frozenset(local)
            await self.release(hold)
            raise
        hold.lines, hold.local = tuple(placed), frozenset(local)
        if hold.unpriced:
            self.counters.unpriced_calls += 1
        return hold

    async def _reserve_line(self, line: HoldLine, now: float, local: set[str]) -> Refusal | None:
        try:
            return await self._with_store(lambda store: store.reserve(line, now))
        except SpendStoreUnavailable as e:
            if e.ambiguous:
                self._enqueue(_PendingRelease(line))
            if line.failure_policy == "Closed":
                self.counters.refused_unavailable += 1
                raise BudgetStoreUnavailable(details={"budget": line.budget, "failurePolicy": "Closed"}) from None
            if line.budget not in self._degraded_budgets:
                log.warning("budget %r: store unreachable (%s); failure policy Open, counting on this replica's "
                            "local ledger", line.budget, e)
            self._degraded_budgets.add(line.budget)
            refusal = await self.local.reserve(line, now)
            if refusal is None:
                local.add(line.budget)
                self.counters.degraded_calls += 1
                self.counters.degraded_by_budget[line.budget] = self.counters.degraded_by_budget.get(line.budget, 0) + 1
            return refusal

    async def settle(self, hold: Hold, input_tokens: object, output_tokens: object) -> Settlement:
        """Commit the call's actual cost (from the response's ``usage``; None or unbelievable
        figures charge the reservation) and release the rest. Never raises for the store: a
        budget line it cannot take now is queued and replayed later."""
        prompt, completion = budgets.usage_tokens(input_tokens), budgets.usage_tokens(output_tokens)
        estimated = prompt is None or completion is None
        if hold.finished:
            return Settlement(cost_usd=0.0, estimated=estimated)
        hold.finished = True
        now = self.clock()
        alerts: list[BudgetAlert] = []
        pending = 0
        costs: list[int] = []
        for line in hold.lines:
            actual = (line.amount_micros if prompt is None or completion is None
                      else budgets.cost_micros(line.price, prompt, completion))
            costs.append(actual)
            if line.budget in hold.local:
                found = await self.local.settle(line, actual, now) or []
                alerts.extend(budgets.budget_alert(line, a, degraded=True) for a in found)
                # The shared store must learn this spend too, once it answers.
                self._enqueue(_PendingSettle(line, actual, now))
                continue
            try:
                settled: list[StoreAlert] | None = await self._with_store(
                    lambda store: store.settle(line, actual, now))
            except SpendStoreUnavailable:
                self._enqueue(_PendingSettle(line, actual, now))
                pending += 1
                continue
            alerts.extend(budgets.budget_alert(line, a) for a in settled or [])
        if costs:
            cost = costs[0]
        elif hold.usage_price is not None and prompt is not None and completion is not None:
            cost = budgets.cost_micros(hold.usage_price, prompt, completion)
        else:
            cost = 0
        return Settlement(cost_usd=spendstore.micros_to_usd(cost), alerts=tuple(alerts), estimated=estimated,
                          pending=pending, degraded=hold.degraded)

    async def release(self, hold: Hold) -> None:
        """Give the reservations back (the call failed before it cost anything). Never raises: a
        hold the store cannot release now expires at its deadline and is released then."""
        if hold.finished:
            return
        hold.finished = True
        now = self.clock()
        for line in hold.lines:
            if line.budget in hold.local:
                await self.local.release(line, now)
                continue
            try:
                await self._with_store(lambda store: store.release(line, now))
            except SpendStoreUnavailable:
                log.debug("budget %r: hold %s left to expire at its deadline", line.budget, line.hold_id)

    def record_usage(self, bundle: PolicyBundle | None, user: str, model: str, input_tokens: object,
                     output_tokens: object, *, cost_usd: float | None = None, cached: bool = False,
                     namespace: str | None = None, agent: str | None = None) -> None:
        """Count one call in the caller's usage report (``agentgov usage``), governed or not.

        ``cost_usd`` None: priced with the first budget naming the model, else the shipped
        price (unknown models count zero dollars, their tokens still count). Never raises and
        never waits: the record is queued for the background writer (see the module docstring);
        ``flush_usage`` waits for it."""
        prompt = budgets.usage_tokens(input_tokens) or 0
        completion = budgets.usage_tokens(output_tokens) or 0
        if cost_usd is None:
            price = budgets.usage_price(bundle, model)
            cost = budgets.cost_micros(price, prompt, completion) if price is not None and not cached else 0
        else:
            cost = max(0, spendstore.usd_to_micros(cost_usd))
        record = UsageRecord(
            namespace=namespace or (bundle.agent.namespace if bundle else "-"),
            agent=agent or (bundle.agent.name if bundle else "-"),
            user=user, model=model, input_tokens=prompt, output_tokens=completion, cost_micros=cost,
            cached=cached, at=self.clock(),
        )
        if self.store is None:
            self.counters.usage_dropped += 1
            return
        if len(self._usage) >= self._usage_limit:
            self.counters.usage_dropped += 1
            if not self._usage_overflow_logged:
                self._usage_overflow_logged = True
                log.error("usage records queued over %d: dropping new ones until the writer catches up",
                          self._usage_limit)
            return
        self._usage.append(record)
        if self._usage_task is None or self._usage_task.done():
            self._usage_task = asyncio.get_running_loop().create_task(self._write_usage(),
                                                                      name="agentgov-usage-writer")

    async def _write_usage(self) -> None:
        """Write queued usage records, a batch per round trip, until none is left. A batch the
        store does not take goes to the replay queue."""
        while self._usage:
            batch = [self._usage.popleft() for _ in range(min(USAGE_BATCH, len(self._usage)))]
            self._usage_writing = len(batch)
            # Not through _with_store: a failed background write must not mark the store down,
            # or calls would skip it (and Closed budgets refuse them) for probe_interval. The
            # calls' own reservations and settlements decide whether the store is down.
            store = self._store_usable()
            try:
                if store is None:
                    raise SpendStoreUnavailable(self._last_error or "store unreachable")
                await store.record_usage(*batch)
            except SpendStoreUnavailable as e:
                if e.ambiguous:
                    self._usage_unconfirmed(batch)
                else:
                    self.counters.usage_failed += len(batch)
                    for record in batch:
                        self._enqueue(_PendingUsage(record))
            else:
                self.counters.usage_written += len(batch)
            finally:
                self._usage_writing = 0
        self._usage_overflow_logged = False

    def _usage_unconfirmed(self, records: Sequence[UsageRecord]) -> None:
        """A write that timed out: Redis may still run it (a hung server runs what it had read
        once it wakes up), so replaying it could count the calls twice. Not replayed: counted."""
        self.counters.usage_unconfirmed += len(records)
        log.warning("%d usage record(s) timed out and may not have been written; not replayed, so that "
                    "none is counted twice", len(records))

    @property
    def usage_queued(self) -> int:
        """Usage records not yet handed to the store (queued or being written)."""
        return len(self._usage) + self._usage_writing

    async def flush_usage(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for the queued usage records to be written (or, when
        the store fails, moved to the replay queue); how many are still queued."""
        task = self._usage_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                pass
        return self.usage_queued

    # -- replay and health ---------------------------------------------------------------------

    async def flush_pending(self) -> int:
        """Replay queued settlements and usage records in order; stops at the first failure.
        Returns how many were replayed. Alerts they raise go to ``on_alert``."""
        async with self._flush_lock:
            return await self._flush()

    async def _flush(self) -> int:
        flushed = 0
        while self._pending and self.store is not None:
            item = self._pending[0]
            try:
                if isinstance(item, _PendingSettle):
                    line, actual, at = item.line, item.actual_micros, item.at
                    found = await self.store.settle(line, actual, at) or []
                    for alert in found:
                        if self.on_alert is not None:
                            self.on_alert(budgets.budget_alert(line, alert))
                elif isinstance(item, _PendingRelease):
                    await self.store.release(item.line, self.clock())
                else:
                    await self.store.record_usage(item.record)
            except SpendStoreUnavailable as e:
                self._failed(e)
                if e.ambiguous and isinstance(item, _PendingUsage):
                    # It may have been written: replaying it again could count it twice.
                    self._usage_unconfirmed([item.record])
                    if self._pending and self._pending[0] is item:
                        self._pending.popleft()
                break
            if self._pending and self._pending[0] is item:  # not dropped meanwhile by a full queue
                self._pending.popleft()
            flushed += 1
            self.counters.pending_flushed += 1
        return flushed

    async def probe(self) -> bool:
        """Ping the store now (for /ready); a success also replays what is pending."""
        try:
            await self._with_store(lambda store: store.ping())
        except SpendStoreUnavailable:
            return False
        return True

    def health(self) -> dict[str, object]:
        """For /ready: which store, whether it answered last time, what is degraded or pending."""
        return {
            "store": self.store.kind if self.store is not None else "none",
            "shared": bool(self.store is not None and self.store.shared),
            "reachable": self._reachable,
            "lastError": self._last_error,
            "lastErrorAt": (budgets.rfc3339(dt.datetime.fromtimestamp(self._last_error_at, dt.timezone.utc))
                            if self._last_error_at is not None else None),
            "degradedBudgets": sorted(self._degraded_budgets),
            "pendingSettlements": len(self._pending),
            "droppedSettlements": self.counters.pending_dropped,
            "degradedCalls": self.counters.degraded_calls,
            "unpricedCalls": self.counters.unpriced_calls,
            "usageQueued": self.usage_queued,
            "usageFailed": self.counters.usage_failed,
            "usageUnconfirmed": self.counters.usage_unconfirmed,
            "usageDropped": self.counters.usage_dropped,
        }

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def aclose(self, timeout: float = DEFAULT_CLOSE_SECONDS) -> None:
        """Write the queued usage records and replay what is pending, within ``timeout`` seconds;
        then stop. What is left is lost with the process: counted and logged."""
        deadline = time.monotonic() + timeout
        # Counted before the writer is stopped: a batch cut off mid-write may or may not have
        # reached the store, and is reported as lost.
        lost = await self.flush_usage(timeout)
        if self._usage_task is not None and not self._usage_task.done():
            self._usage_task.cancel()
            try:
                await self._usage_task
            except asyncio.CancelledError:
                pass
        if lost:
            self.counters.usage_dropped += lost
            self._usage.clear()
            log.error("stopping with %d usage record(s) not written to the store", lost)
        if self._pending and self._store_usable() is not None:
            try:
                await asyncio.wait_for(self.flush_pending(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
            try:
                await self._flush_task
            except asyncio.CancelledError:
                pass
        if self._pending:
            log.error("stopping with %d budget settlement(s) and usage record(s) not replayed to the store",
                      len(self._pending))
