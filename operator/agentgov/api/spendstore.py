"""The spend store's layout: the Redis keys the sidecars write and the operator reads.

This is a contract between the two halves, like the policy bundle: sidecars reserve and settle
spend under these keys (atomically, with Lua scripts), and the operator reads them into
AgentBudget status. Both import this module; neither spells a key by hand. No I/O here.

Keys (every variable part percent-encoded, so a user id can never forge a separator or a
Redis Cluster hash tag; the ``{...}`` hash tag keeps one budget's keys in one slot, so a
script may touch its day and month counters together)::

    agentgov:budget:{<ns>/<budget>}:day:<YYYY-MM-DD>   HASH  per-subject spend of that UTC day
    agentgov:budget:{<ns>/<budget>}:month:<YYYY-MM>    HASH  per-subject spend of that UTC month
    agentgov:budget:{<ns>/<budget>}:holds              ZSET  open reservations (score: deadline, ms)
    agentgov:budget:{<ns>/<budget>}:settled:<hold>     STRING marks a hold settled (EX), so a retried
                                                              settlement is never counted twice
    agentgov:usage:<user>:<YYYY-MM-DD>                 HASH  per-user usage of a UTC day
    agentgov:cache:{<ns>/<agent>}:<sha256>             STRING a cached model answer (SETEX)

Fields of a budget period hash, amounts in micro-USD (integers: Redis scripts add integers
exactly, floats would drift)::

    spent:<subject>             committed spend
    reserved:<subject>          spend reserved by calls in flight
    alerted:<subject>:<pct>     present once the <pct>% threshold alerted in this period

Subjects: ``user:<id>``, ``agent:<name>``, ``team:<name>`` (scope Each), or ``shared`` (scope
Shared: every subject draws from one pool). Fields of a usage hash:
``<ns>/<agent>|<model>|<metric>`` with metric one of ``USAGE_METRICS``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, unquote

PREFIX: Final = "agentgov"
MICROS_PER_USD: Final = 1_000_000
# How long period hashes outlive their period (the operator and `agentgov usage` read them late).
DAY_KEY_TTL_SECONDS: Final = 3 * 86_400
MONTH_KEY_TTL_SECONDS: Final = 62 * 86_400
USAGE_KEY_TTL_SECONDS: Final = 400 * 86_400
USAGE_METRICS: Final = ("cost_micros", "input_tokens", "output_tokens", "calls", "cache_hits")

SubjectKind = Literal["user", "agent", "team", "shared"]
PeriodKind = Literal["day", "month"]


def _part(value: str) -> str:
    """One variable part of a key or field: nothing but unreserved characters survive as is."""
    return quote(value, safe="-._~@")


def subject(kind: SubjectKind, name: str | None = None) -> str:
    """``user:alice``; ``shared`` for a pooled budget."""
    if kind == "shared":
        return "shared"
    if not name:
        raise ValueError(f"a {kind} subject needs a name")
    return f"{kind}:{_part(name)}"


def parse_subject(text: str) -> tuple[SubjectKind, str | None]:
    """Inverse of :func:`subject`; raises ValueError for anything else."""
    if text == "shared":
        return "shared", None
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("user", "agent", "team") or not name:
        raise ValueError(f"not a spend subject: {text!r}")
    return kind, unquote(name)  # type: ignore[return-value]


def budget_tag(namespace: str, budget: str) -> str:
    return "{" + _part(namespace) + "/" + _part(budget) + "}"


def day_label(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")


def month_label(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m")


def period_key(namespace: str, budget: str, kind: PeriodKind, now: dt.datetime) -> str:
    label = day_label(now) if kind == "day" else month_label(now)
    return f"{PREFIX}:budget:{budget_tag(namespace, budget)}:{kind}:{label}"


def holds_key(namespace: str, budget: str) -> str:
    return f"{PREFIX}:budget:{budget_tag(namespace, budget)}:holds"


def settled_key(namespace: str, budget: str, hold_id: str) -> str:
    return f"{PREFIX}:budget:{budget_tag(namespace, budget)}:settled:{_part(hold_id)}"


def usage_key(user: str, day: dt.date | dt.datetime) -> str:
    label = day_label(day) if isinstance(day, dt.datetime) else day.isoformat()
    return f"{PREFIX}:usage:{_part(user)}:{label}"


def usage_field(namespace: str, agent: str, model: str, metric: str) -> str:
    if metric not in USAGE_METRICS:
        raise ValueError(f"unknown usage metric {metric!r}")
    return f"{_part(namespace)}/{_part(agent)}|{_part(model)}|{metric}"


def parse_usage_field(field: str) -> tuple[str, str, str, str] | None:
    """``(namespace, agent, model, metric)``, or None for a field this version does not know."""
    parts = field.split("|")
    if len(parts) != 3 or parts[2] not in USAGE_METRICS:
        return None
    namespace, sep, agent = parts[0].partition("/")
    if not sep:
        return None
    return unquote(namespace), unquote(agent), unquote(parts[1]), parts[2]


def cache_key(namespace: str, agent: str, digest: str) -> str:
    return f"{PREFIX}:cache:{{{_part(namespace)}/{_part(agent)}}}:{digest}"


def spent_field(subject_: str) -> str:
    return f"spent:{subject_}"


def reserved_field(subject_: str) -> str:
    return f"reserved:{subject_}"


def alerted_field(subject_: str, percent: int) -> str:
    return f"alerted:{subject_}:{percent}"


def period_end(kind: PeriodKind, now: dt.datetime) -> dt.datetime:
    """When the period containing ``now`` resets (UTC midnight; the first of the next month)."""
    now = now.astimezone(dt.timezone.utc)
    day = dt.datetime(now.year, now.month, now.day, tzinfo=dt.timezone.utc)
    if kind == "day":
        return day + dt.timedelta(days=1)
    return dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=dt.timezone.utc)


def usd_to_micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def micros_to_usd(micros: int) -> float:
    return micros / MICROS_PER_USD


@dataclass(frozen=True)
class SubjectSpend:
    """One subject's figures in one period hash."""

    spent_micros: int = 0
    reserved_micros: int = 0
    alerted: frozenset[int] = frozenset()


def parse_period_hash(fields: Mapping[str, str] | Mapping[bytes, bytes]) -> dict[str, SubjectSpend]:
    """``HGETALL`` of a period key -> subject -> figures. Unknown or garbled fields are ignored
    (a newer sidecar may write more), never fatal: the operator reads what it understands."""
    spent: dict[str, int] = {}
    reserved: dict[str, int] = {}
    alerted: dict[str, set[int]] = {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        kind, _, rest = name.partition(":")
        try:
            if kind == "spent":
                spent[rest] = int(value)
            elif kind == "reserved":
                reserved[rest] = int(value)
            elif kind == "alerted":
                who, _, pct = rest.rpartition(":")
                alerted.setdefault(who, set()).add(int(pct))
        except ValueError:
            continue
    subjects = set(spent) | set(reserved) | set(alerted)
    return {
        s: SubjectSpend(spent.get(s, 0), max(0, reserved.get(s, 0)), frozenset(alerted.get(s, ())))
        for s in subjects
    }
