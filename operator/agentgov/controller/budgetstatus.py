"""AgentBudget status from the spend store: figures, `Warning`/`Exceeded` conditions, alert Events.

``budget_status`` turns what the sidecars wrote into Redis (the ``HGETALL`` of a budget's day and
month hashes, layout in ``agentgov.api.spendstore``) into the AgentBudget's new status and the
Events to post. It decides; ``handlers.budget_status_once`` reads Redis, patches the status when
it changed and posts the Events. ``store_unreachable`` and ``store_not_configured`` are the
statuses for a spend store that cannot be read.

Choices made here (documented in the CRD's field descriptions and docs/operator.md):

- Scope Shared reads the ``shared`` subject only. Scope Each reports the subject closest to a
  limit (the highest percent used, daily or monthly; ties go to the first name), and counts the
  subjects that spent or reserved anything.
- Percents are rounded down: 79.99% is 79% and has not crossed an 80% threshold. Thresholds are
  compared exactly, in integer micro-USD.
- Each threshold is announced (one Warning Event) once per period: per UTC day for the daily
  limit, per UTC month for the monthly one. What was announced is kept in ``status.alerts``, so
  an operator restart never announces twice. Reaching 100% is announced as ``BudgetExceeded``
  (and recorded as 100). A budget-level summary: the sidecars alert per subject on their own.
- ``Warning`` is True while spend is at or over the lowest threshold, naming the highest one
  crossed; ``Exceeded`` is True at 100% of the daily or monthly limit. Neither touches
  ``Ready``: an exceeded budget is a budget in force, reconciled fine.
- ``lastUpdated`` moves only when a figure moves, so an unchanged store means no write.

Pure: no I/O, no clock (``now`` is passed in), no randomness; garbled hash fields are ignored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from agentgov.api import spendstore
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.controller.status import remove_condition, set_condition

WARNING = "Warning"
EXCEEDED = "Exceeded"
SPEND_STORE = "SpendStoreAvailable"
EXCEEDED_MARK = 100  # recorded among the announced thresholds once BudgetExceeded was posted

# Status fields that are figures: a change in any of them moves lastUpdated.
FIGURES = (
    "spentTodayUsd", "spentThisMonthUsd", "remainingTodayUsd", "remainingThisMonthUsd",
    "percentUsed", "percentUsedToday", "percentUsedThisMonth", "topSubject", "subjects",
)

RawHash = Mapping[str, str] | Mapping[bytes, bytes]
Period = Literal["day", "month"]


@dataclass(frozen=True)
class BudgetEvent:
    """A Kubernetes Event to post on the AgentBudget."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class _Spend:
    """One subject's committed spend, in micro-USD."""

    subject: str
    day: int
    month: int


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def usd(micros: int) -> str:
    """``$12.34`` (cents, what a person reads; status fields keep the micro-USD precision)."""
    return f"${micros / spendstore.MICROS_PER_USD:,.2f}"


def display_subject(raw: str) -> str | None:
    """``user:alice`` for the store's (percent-encoded) subject; None for a garbled one."""
    try:
        kind, name = spendstore.parse_subject(raw)
    except ValueError:
        return None
    return kind if name is None else f"{kind}:{name}"


def _subjects(spec: AgentBudgetSpec, day: RawHash, month: RawHash) -> list[_Spend]:
    days, months = spendstore.parse_period_hash(day), spendstore.parse_period_hash(month)
    found: list[_Spend] = []
    for raw in sorted(set(days) | set(months)):
        name = display_subject(raw)
        if name is None or (name == "shared") != (spec.scope == "Shared"):
            continue
        day_spend, month_spend = days.get(raw), months.get(raw)
        if not any((day_spend and (day_spend.spent_micros or day_spend.reserved_micros),
                    month_spend and (month_spend.spent_micros or month_spend.reserved_micros))):
            continue  # only alert marks: nothing spent
        found.append(_Spend(
            name,
            max(0, day_spend.spent_micros) if day_spend else 0,
            max(0, month_spend.spent_micros) if month_spend else 0,
        ))
    return found


def _percent(spent: int, limit: int) -> int:
    return spent * 100 // limit


def _crossed(spent: int, limit: int, thresholds: Iterable[int]) -> set[int]:
    """Thresholds reached, exactly (``spent/limit >= t/100``), plus 100 once the limit is reached."""
    reached = {t for t in thresholds if spent * 100 >= t * limit}
    if spent >= limit:
        reached.add(EXCEEDED_MARK)
    return reached


def _announced(previous: Mapping[str, Any], label_key: str, list_key: str, label: str) -> set[int]:
    alerts = previous.get("alerts") or {}
    if not isinstance(alerts, Mapping) or alerts.get(label_key) != label:
        return set()  # a new period (or never announced): nothing announced yet
    return {t for t in alerts.get(list_key) or [] if isinstance(t, int)}


def budget_status(
    spec: AgentBudgetSpec,
    day_hash: RawHash,
    month_hash: RawHash,
    previous_status: Mapping[str, Any],
    now: dt.datetime,
    generation: int | None,
    *,
    store: str = "the spend store",
) -> tuple[dict[str, Any], list[BudgetEvent]]:
    """The AgentBudget's status after reading ``day_hash`` and ``month_hash`` (the ``HGETALL`` of
    today's and this month's keys) at ``now``, and the Events to post once it is written.

    ``previous_status`` is the status as stored; kstatus fields (``Ready``, ``Reconciling``,
    ``Stalled``, ``observedGeneration``) are kept as they are. ``store`` names the store
    (``host:port``) in the ``SpendStoreAvailable`` message.
    """
    day_limit = max(1, spendstore.usd_to_micros(spec.limits.effective_daily_usd))
    month_limit = max(1, spendstore.usd_to_micros(spec.limits.monthly_usd))
    day_label, month_label = spendstore.day_label(now), spendstore.month_label(now)
    spends = _subjects(spec, day_hash, month_hash)

    def used(s: _Spend) -> Fraction:
        return max(Fraction(s.day, day_limit), Fraction(s.month, month_limit))

    top = min(spends, key=lambda s: (-used(s), s.subject)) if spends else None
    day_top = min(spends, key=lambda s: (-s.day, s.subject)) if spends else None
    month_top = min(spends, key=lambda s: (-s.month, s.subject)) if spends else None
    top_day, top_month = (top.day, top.month) if top else (0, 0)

    figures: dict[str, Any] = {
        "spentTodayUsd": spendstore.micros_to_usd(top_day),
        "spentThisMonthUsd": spendstore.micros_to_usd(top_month),
        "remainingTodayUsd": spendstore.micros_to_usd(max(0, day_limit - top_day)),
        "remainingThisMonthUsd": spendstore.micros_to_usd(max(0, month_limit - top_month)),
        "percentUsedToday": _percent(top_day, day_limit),
        "percentUsedThisMonth": _percent(top_month, month_limit),
        "subjects": len(spends),
    }
    figures["percentUsed"] = max(figures["percentUsedToday"], figures["percentUsedThisMonth"])
    if top is not None:
        figures["topSubject"] = top.subject

    status = {k: v for k, v in previous_status.items() if k != "topSubject"}
    changed = any(previous_status.get(k) != figures.get(k) for k in FIGURES)
    status.update(figures)
    status["lastUpdated"] = rfc3339(now) if changed or "lastUpdated" not in previous_status else previous_status["lastUpdated"]

    # Announcements: each threshold once per period, remembered in status.alerts.
    thresholds = sorted(set(spec.alert_thresholds))
    events: list[BudgetEvent] = []
    alerts: dict[str, Any] = {}
    periods: tuple[tuple[Period, _Spend | None, int, str, str, str], ...] = (
        ("day", day_top, day_limit, day_label, "day", "daily"),
        ("month", month_top, month_limit, month_label, "month", "monthly"),
    )
    for period, spender, limit, label, label_key, list_key in periods:
        spent = getattr(spender, period) if spender else 0
        crossed = _crossed(spent, limit, thresholds)
        done = _announced(previous_status, label_key, list_key, label)
        if spender is not None:
            events += _announcements(spec, period, spender.subject, spent, limit, label, sorted(crossed - done), now)
        alerts[label_key], alerts[list_key] = label, sorted(done | crossed)
    status["alerts"] = alerts

    now_text = rfc3339(now)
    conditions = list(previous_status.get("conditions") or [])
    conditions = _warning(conditions, spec, thresholds, top, day_limit, month_limit, generation, now_text)
    conditions = _exceeded(conditions, spec, top, day_limit, month_limit, now, generation, now_text)
    conditions = set_condition(conditions, SPEND_STORE, "True", "Read", f"spend is read from {store}", generation, now_text)
    status["conditions"] = conditions
    return status, events


def _period_words(period: Period) -> str:
    return "daily" if period == "day" else "monthly"


def _announcements(spec: AgentBudgetSpec, period: Period, subject: str, spent: int, limit: int,
                   label: str, new: list[int], now: dt.datetime) -> list[BudgetEvent]:
    events = []
    where = f"on {label}" if period == "day" else f"in {label}"
    for threshold in new:
        if threshold == EXCEEDED_MARK:
            events.append(BudgetEvent("Warning", "BudgetExceeded",
                                      f"{subject} reached the {_period_words(period)} limit: {usd(spent)} of "
                                      f"{usd(limit)} spent {where}; {_consequence(spec, period, now)}"))
        else:
            events.append(BudgetEvent("Warning", "BudgetThresholdReached",
                                      f"{subject} reached {threshold}% of the {_period_words(period)} limit: "
                                      f"{usd(spent)} of {usd(limit)} spent {where}"))
    return events


def _consequence(spec: AgentBudgetSpec, period: Period, now: dt.datetime) -> str:
    reset = rfc3339(spendstore.period_end(period, now))
    if spec.enforcement == "Hard":
        return f"calls are refused until {reset}"
    return f"calls are still allowed (enforcement Soft); the limit resets at {reset}"


def _warning(conditions: list[dict[str, Any]], spec: AgentBudgetSpec, thresholds: list[int], top: _Spend | None,
             day_limit: int, month_limit: int, generation: int | None, now: str) -> list[dict[str, Any]]:
    """True, naming the highest threshold ``top`` (the subject closest to a limit) has reached."""
    candidates: list[tuple[int, bool, Period, int, int]] = []
    periods: tuple[tuple[Period, int, int], ...] = (
        ("day", top.day if top else 0, day_limit), ("month", top.month if top else 0, month_limit))
    for period, spent, limit in periods:
        reached = [t for t in thresholds if spent * 100 >= t * limit]
        if reached:
            candidates.append((max(reached), period == "day", period, spent, limit))
    if top is None or not candidates:
        used = max(_percent(top.day, day_limit), _percent(top.month, month_limit)) if top else 0
        return set_condition(conditions, WARNING, "False", "BelowThresholds",
                             f"{used}% used, below the first alert threshold ({thresholds[0]}%)", generation, now)
    threshold, _, period, spent, limit = max(candidates)  # ties: the daily limit, reached first
    return set_condition(conditions, WARNING, "True", "ThresholdReached",
                         f"{threshold}% alert threshold reached: {top.subject} has spent {usd(spent)} of the "
                         f"{usd(limit)} {_period_words(period)} limit", generation, now)


def _exceeded(conditions: list[dict[str, Any]], spec: AgentBudgetSpec, top: _Spend | None, day_limit: int,
              month_limit: int, now_dt: dt.datetime, generation: int | None, now: str) -> list[dict[str, Any]]:
    periods: tuple[tuple[Period, int, int], ...] = (
        ("month", top.month if top else 0, month_limit), ("day", top.day if top else 0, day_limit))
    over = [(period, spent, limit) for period, spent, limit in periods if spent >= limit]
    if not over or top is None:
        return set_condition(conditions, EXCEEDED, "False", "WithinLimits",
                             "spend is within the daily and monthly limits", generation, now)
    period, spent, limit = over[0]  # the monthly limit first: it lasts longer
    reason = "MonthlyLimitReached" if period == "month" else "DailyLimitReached"
    return set_condition(conditions, EXCEEDED, "True", reason,
                         f"{top.subject} has spent {usd(spent)} of the {usd(limit)} {_period_words(period)} "
                         f"limit; {_consequence(spec, period, now_dt)}", generation, now)


def store_unreachable(previous_status: Mapping[str, Any], store: str, error: str, now: dt.datetime,
                      generation: int | None) -> dict[str, Any]:
    """The status when the spend store could not be read: figures and conditions as last read,
    ``SpendStoreAvailable=False`` naming ``store`` (``host:port``, never credentials) and the
    kind of ``error``. The same failure gives the same status: no write per failed tick."""
    since = previous_status.get("lastUpdated")
    kept = f"figures are as last read at {since}" if since else "no figures read yet"
    status = dict(previous_status)
    status["conditions"] = set_condition(
        list(previous_status.get("conditions") or []), SPEND_STORE, "False", "Unreachable",
        f"spend store {store} is unreachable ({error}); {kept}; retrying", generation, rfc3339(now))
    return status


def store_not_configured(previous_status: Mapping[str, Any], now: dt.datetime, generation: int | None) -> dict[str, Any]:
    """The status when the operator has no spend store to read (``AGENTGOV_REDIS_URL`` unset)."""
    status = {k: v for k, v in previous_status.items() if k not in FIGURES and k not in ("alerts", "lastUpdated")}
    conditions = remove_condition(remove_condition(list(previous_status.get("conditions") or []), WARNING), EXCEEDED)
    status["conditions"] = set_condition(
        conditions, SPEND_STORE, "False", "NotConfigured",
        "the operator has no spend store to read (AGENTGOV_REDIS_URL is unset): spend is not shown",
        generation, rfc3339(now))
    return status
