"""AgentBudget status from the spend store: the pure decision of figures, conditions and Events.

The hashes are built with the spend store's own key functions, as the sidecars write them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agentgov.api import spendstore
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.controller.budgetstatus import (
    BudgetEvent,
    budget_status,
    store_not_configured,
    store_unreachable,
)
from agentgov.controller.status import status_violations

NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.timezone.utc)
TOMORROW = NOW + dt.timedelta(days=1)
NEXT_MONTH = dt.datetime(2026, 4, 1, 0, 0, 1, tzinfo=dt.timezone.utc)
ALICE, BOB = spendstore.subject("user", "alice"), spendstore.subject("user", "bob")
KSTATUS = {"observedGeneration": 3, "conditions": [
    {"type": "Ready", "status": "True", "reason": "Valid", "message": "valid", "lastTransitionTime": "2026-03-01T00:00:00Z",
     "observedGeneration": 3}]}


def spec(monthly: float = 300.0, daily: float | None = 10.0, thresholds: tuple[int, ...] = (80, 90),
         scope: str = "Each", enforcement: str = "Hard") -> AgentBudgetSpec:
    limits: dict[str, Any] = {"monthlyUsd": monthly}
    if daily is not None:
        limits["dailyUsd"] = daily
    return AgentBudgetSpec.model_validate({"subjects": {"users": ["*"]}, "scope": scope, "limits": limits,
                                           "alertThresholds": list(thresholds), "enforcement": enforcement})


def spent(**usd_by_subject: float) -> dict[str, str]:
    """A period hash as HINCRBY leaves it: ``spent:<subject>`` in micro-USD."""
    return {spendstore.spent_field(_subject(name)): str(spendstore.usd_to_micros(v)) for name, v in usd_by_subject.items()}


def _subject(name: str) -> str:
    return "shared" if name == "shared" else spendstore.subject("user", name)


def run(s: AgentBudgetSpec, day: dict[Any, Any], month: dict[Any, Any], previous: dict[str, Any] | None = None,
        now: dt.datetime = NOW) -> tuple[dict[str, Any], list[BudgetEvent]]:
    status, events = budget_status(s, day, month, previous if previous is not None else KSTATUS, now, 3,
                                   store="redis.agentgov:6379")
    assert status_violations({"metadata": {"generation": 3}, "status": status}) == [], status
    return status, events


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def reasons(events: list[BudgetEvent]) -> list[str]:
    return [f"{e.reason}:{e.message.split(':')[0]}" for e in events]


def test_no_spend_shows_zero_and_the_whole_limits_remaining() -> None:
    status, events = run(spec(), {}, {})
    assert status["spentTodayUsd"] == 0 and status["spentThisMonthUsd"] == 0
    assert status["remainingTodayUsd"] == 10.0 and status["remainingThisMonthUsd"] == 300.0
    assert status["percentUsed"] == 0 and status["subjects"] == 0 and "topSubject" not in status
    assert condition(status, "Warning")["status"] == "False" and condition(status, "Exceeded")["status"] == "False"
    assert condition(status, "SpendStoreAvailable") == {**condition(status, "SpendStoreAvailable"), "status": "True",
                                                        "message": "spend is read from redis.agentgov:6379"}
    assert events == []
    assert status["alerts"] == {"day": "2026-03-14", "daily": [], "month": "2026-03", "monthly": []}


@pytest.mark.parametrize(
    "daily_spend, percent, warning, exceeded, events",
    [
        (7.99, 79, "False", "False", []),
        (7.999999, 79, "False", "False", []),
        (8.0, 80, "True", "False", ["BudgetThresholdReached:user"]),
        (9.0, 90, "True", "False", ["BudgetThresholdReached:user"] * 2),
        (10.0, 100, "True", "True", ["BudgetThresholdReached:user"] * 2 + ["BudgetExceeded:user"]),
        (15.0, 150, "True", "True", ["BudgetThresholdReached:user"] * 2 + ["BudgetExceeded:user"]),
    ],
    ids=[
        "79% of the daily limit is below the 80% threshold",
        "a micro-dollar short of 80% is still 79%",
        "80% crosses the first threshold and announces it",
        "90% from nothing announces both thresholds",
        "100% is Exceeded and announced as such",
        "over the limit: Exceeded, nothing remaining",
    ],
)
def test_thresholds_of_the_daily_limit(daily_spend: float, percent: int, warning: str, exceeded: str,
                                       events: list[str]) -> None:
    status, posted = run(spec(), spent(alice=daily_spend), spent(alice=daily_spend))
    assert status["percentUsed"] == percent == status["percentUsedToday"]
    assert condition(status, "Warning")["status"] == warning
    assert condition(status, "Exceeded")["status"] == exceeded
    assert reasons(posted) == events
    assert status["remainingTodayUsd"] == max(0.0, round(10.0 - daily_spend, 6))
    assert all(e.type == "Warning" for e in posted)


def test_the_warning_names_the_highest_threshold_reached_and_the_events_each_one() -> None:
    status, events = run(spec(), spent(alice=9.5), spent(alice=9.5))
    assert condition(status, "Warning")["reason"] == "ThresholdReached"
    assert condition(status, "Warning")["message"] == (
        "90% alert threshold reached: user:alice has spent $9.50 of the $10.00 daily limit")
    assert [e.message for e in events] == [
        "user:alice reached 80% of the daily limit: $9.50 of $10.00 spent on 2026-03-14",
        "user:alice reached 90% of the daily limit: $9.50 of $10.00 spent on 2026-03-14",
    ]
    assert status["alerts"]["daily"] == [80, 90] and status["alerts"]["monthly"] == []


def test_exceeding_under_hard_enforcement_says_calls_are_refused_until_the_reset() -> None:
    status, events = run(spec(), spent(alice=12.0), spent(alice=12.0))
    assert condition(status, "Exceeded")["reason"] == "DailyLimitReached"
    assert condition(status, "Exceeded")["message"] == (
        "user:alice has spent $12.00 of the $10.00 daily limit; calls are refused until 2026-03-15T00:00:00Z")
    assert events[-1].reason == "BudgetExceeded"
    assert status["alerts"]["daily"] == [80, 90, 100]


def test_exceeding_under_soft_enforcement_says_calls_are_still_allowed() -> None:
    status, _ = run(spec(enforcement="Soft"), spent(alice=12.0), spent(alice=12.0))
    assert "calls are still allowed (enforcement Soft)" in condition(status, "Exceeded")["message"]


def test_a_threshold_of_100_is_announced_once_as_exceeded() -> None:
    _, events = run(spec(thresholds=(50, 100)), spent(alice=10.0), spent(alice=10.0))
    assert [e.reason for e in events] == ["BudgetThresholdReached", "BudgetExceeded"]


@pytest.mark.parametrize(
    "day, month, percent, warning_message, event_messages",
    [
        (5.0, 255.0, 85, "80% alert threshold reached: user:alice has spent $255.00 of the $300.00 monthly limit",
         ["user:alice reached 80% of the monthly limit: $255.00 of $300.00 spent in 2026-03"]),
        (9.2, 250.0, 92, "90% alert threshold reached: user:alice has spent $9.20 of the $10.00 daily limit",
         ["user:alice reached 80% of the daily limit: $9.20 of $10.00 spent on 2026-03-14",
          "user:alice reached 90% of the daily limit: $9.20 of $10.00 spent on 2026-03-14",
          "user:alice reached 80% of the monthly limit: $250.00 of $300.00 spent in 2026-03"]),
    ],
    ids=["the monthly limit is the closer one", "the daily limit is the closer one, both crossed 80%"],
)
def test_percent_used_is_the_higher_of_daily_and_monthly(day: float, month: float, percent: int,
                                                         warning_message: str, event_messages: list[str]) -> None:
    status, events = run(spec(), spent(alice=day), spent(alice=month))
    assert status["percentUsed"] == percent
    assert condition(status, "Warning")["message"] == warning_message
    assert [e.message for e in events] == event_messages


def test_exceeding_the_monthly_limit_is_named_even_when_the_day_is_fine() -> None:
    status, _ = run(spec(), spent(alice=1.0), spent(alice=300.0))
    assert condition(status, "Exceeded")["reason"] == "MonthlyLimitReached"
    assert condition(status, "Exceeded")["message"].endswith("calls are refused until 2026-04-01T00:00:00Z")
    assert status["remainingThisMonthUsd"] == 0


def test_thresholds_already_announced_are_not_announced_again() -> None:
    first, events = run(spec(), spent(alice=8.5), spent(alice=8.5))
    assert len(events) == 1
    later = NOW + dt.timedelta(minutes=5)
    again, repeated = run(spec(), spent(alice=8.5), spent(alice=8.5), first, later)
    assert repeated == [] and again == first, "the same spend read later changes nothing: no write, no Event"
    higher, more = run(spec(), spent(alice=9.1), spent(alice=9.1), first, later)
    assert [e.message for e in more] == ["user:alice reached 90% of the daily limit: $9.10 of $10.00 spent on 2026-03-14"]
    assert higher["lastUpdated"] == "2026-03-14T15:14:26Z"


def test_announcements_survive_a_restart_because_they_live_in_status() -> None:
    """A new operator process has only the stored status: it must not announce 80% again."""
    stored, _ = run(spec(), spent(alice=8.5), spent(alice=8.5))
    restarted = {k: v for k, v in stored.items()}  # what a fresh GET returns
    _, events = run(spec(), spent(alice=8.6), spent(alice=8.6), restarted, NOW + dt.timedelta(hours=1))
    assert events == []


def test_a_new_day_resets_daily_announcements_but_not_monthly_ones() -> None:
    yesterday, _ = run(spec(), spent(alice=9.5), spent(alice=250.0))
    assert yesterday["alerts"] == {"day": "2026-03-14", "daily": [80, 90], "month": "2026-03", "monthly": [80]}
    today, events = run(spec(), {}, spent(alice=250.0), yesterday, TOMORROW)
    assert events == [] and today["spentTodayUsd"] == 0 and today["percentUsedToday"] == 0
    assert today["alerts"] == {"day": "2026-03-15", "daily": [], "month": "2026-03", "monthly": [80]}
    assert condition(today, "Warning")["message"].endswith("monthly limit"), "the month is still at 83%"
    again, events = run(spec(), spent(alice=8.0), spent(alice=258.0), today, TOMORROW)
    assert [e.message.split(" spent ")[1] for e in events] == ["on 2026-03-15"]
    assert again["alerts"]["daily"] == [80] and again["alerts"]["monthly"] == [80]


def test_a_new_month_resets_both() -> None:
    march, _ = run(spec(), spent(alice=9.5), spent(alice=295.0))
    april, events = run(spec(), {}, {}, march, NEXT_MONTH)
    assert events == [] and april["alerts"] == {"day": "2026-04-01", "daily": [], "month": "2026-04", "monthly": []}
    assert april["percentUsed"] == 0 and condition(april, "Warning")["status"] == "False"
    assert "topSubject" not in april


def test_scope_each_reports_the_subject_closest_to_a_limit() -> None:
    day = {**spent(alice=2.0, bob=6.0), **spent(shared=9.9)}
    month = {**spent(alice=280.0, bob=60.0), **spent(shared=299.0)}
    status, events = run(spec(), day, month)
    assert status["topSubject"] == "user:alice", "93% of the month beats bob's 60% of the day"
    assert (status["spentTodayUsd"], status["spentThisMonthUsd"], status["percentUsed"]) == (2.0, 280.0, 93)
    assert status["subjects"] == 2, "the shared pool is not a subject of an Each budget"
    assert [e.message.split(" reached")[0] for e in events] == ["user:alice", "user:alice"]


def test_scope_shared_reads_the_pool_only() -> None:
    day = {**spent(alice=9.0), **spent(shared=3.0)}
    month = {**spent(alice=290.0), **spent(shared=30.0)}
    status, events = run(spec(scope="Shared"), day, month)
    assert status["topSubject"] == "shared" and status["subjects"] == 1
    assert (status["spentTodayUsd"], status["spentThisMonthUsd"], status["percentUsed"]) == (3.0, 30.0, 30)
    assert events == []


def test_ties_go_to_the_first_subject_by_name() -> None:
    status, _ = run(spec(), spent(bob=5.0, alice=5.0), spent(bob=5.0, alice=5.0))
    assert status["topSubject"] == "user:alice"


def test_garbled_hash_fields_are_ignored() -> None:
    day = {
        spendstore.spent_field(ALICE): "twelve",
        "spent:bogus-subject": "5000000",
        "nonsense": "1",
        f"alerted:{ALICE}:eighty": "1",
        spendstore.spent_field(BOB): "3000000",
        spendstore.reserved_field(BOB): "-5",
        spendstore.spent_field(spendstore.subject("team", "x")): "-7000000",
    }
    status, _ = run(spec(), day, {})
    assert status["topSubject"] == "user:bob" and status["spentTodayUsd"] == 3.0
    assert status["subjects"] == 2, "bob, and the team whose negative spend counts as nothing spent"


def test_bytes_from_redis_are_read_like_text() -> None:
    raw = {k.encode(): v.encode() for k, v in spent(alice=8.0).items()}
    status, events = run(spec(), raw, raw)
    assert status["percentUsed"] == 80 and len(events) == 1


def test_subject_names_are_shown_decoded() -> None:
    odd = spendstore.subject("user", "ann:o'neil/ops")
    status, events = run(spec(), {spendstore.spent_field(odd): "9000000"}, {})
    assert status["topSubject"] == "user:ann:o'neil/ops"
    assert events[0].message.startswith("user:ann:o'neil/ops reached 80%")


def test_a_subject_with_only_alert_marks_has_spent_nothing() -> None:
    status, _ = run(spec(), {spendstore.alerted_field(ALICE, 80): "1"}, {})
    assert status["subjects"] == 0 and "topSubject" not in status


def test_the_default_daily_limit_is_a_thirtieth_of_the_monthly_one() -> None:
    status, _ = run(spec(monthly=300.0, daily=None), spent(alice=8.0), spent(alice=8.0))
    assert status["remainingTodayUsd"] == 2.0 and status["percentUsedToday"] == 80


def test_kstatus_fields_are_left_as_they_were() -> None:
    status, _ = run(spec(), spent(alice=10.0), spent(alice=10.0))
    assert status["observedGeneration"] == 3
    assert condition(status, "Ready") == KSTATUS["conditions"][0], "an exceeded budget is still Ready"


def test_last_updated_moves_only_with_the_figures() -> None:
    first, _ = run(spec(), spent(alice=1.0), spent(alice=1.0))
    same, _ = run(spec(), spent(alice=1.0), spent(alice=1.0), first, NOW + dt.timedelta(hours=2))
    moved, _ = run(spec(), spent(alice=1.5), spent(alice=1.5), first, NOW + dt.timedelta(hours=2))
    assert first["lastUpdated"] == same["lastUpdated"] == "2026-03-14T15:09:26Z"
    assert moved["lastUpdated"] == "2026-03-14T17:09:26Z"


def test_an_unreachable_store_keeps_the_figures_and_says_where_it_is() -> None:
    read, _ = run(spec(), spent(alice=8.5), spent(alice=8.5))
    down = store_unreachable(read, "redis.agentgov:6379", "ConnectionError", NOW + dt.timedelta(minutes=1), 3)
    assert {k: v for k, v in down.items() if k != "conditions"} == {k: v for k, v in read.items() if k != "conditions"}
    assert condition(down, "SpendStoreAvailable") == {
        "type": "SpendStoreAvailable", "status": "False", "reason": "Unreachable",
        "message": "spend store redis.agentgov:6379 is unreachable (ConnectionError); figures are as last read at "
                   "2026-03-14T15:09:26Z; retrying",
        "lastTransitionTime": "2026-03-14T15:10:26Z", "observedGeneration": 3}
    assert condition(down, "Warning") == condition(read, "Warning")
    again = store_unreachable(down, "redis.agentgov:6379", "ConnectionError", NOW + dt.timedelta(minutes=2), 3)
    assert again == down, "the same failure writes nothing new"
    assert status_violations({"metadata": {"generation": 3}, "status": down}) == []
    back, events = run(spec(), spent(alice=8.5), spent(alice=8.5), down, NOW + dt.timedelta(minutes=3))
    assert events == [] and condition(back, "SpendStoreAvailable")["status"] == "True"


def test_an_unreachable_store_before_any_read_says_so() -> None:
    down = store_unreachable(KSTATUS, "10.0.0.7:6380", "TimeoutError", NOW, 3)
    assert "no figures read yet" in condition(down, "SpendStoreAvailable")["message"]
    assert status_violations({"metadata": {"generation": 3}, "status": down}) == []


def test_no_store_configured_says_so_and_shows_no_figures() -> None:
    read, _ = run(spec(), spent(alice=8.5), spent(alice=8.5))
    status = store_not_configured(read, NOW, 3)
    assert not any(k in status for k in ("percentUsed", "spentTodayUsd", "topSubject", "alerts", "lastUpdated"))
    assert [c["type"] for c in status["conditions"]] == ["Ready", "SpendStoreAvailable"]
    assert condition(status, "SpendStoreAvailable")["reason"] == "NotConfigured"
    assert "AGENTGOV_REDIS_URL" in condition(status, "SpendStoreAvailable")["message"]
    assert store_not_configured(status, NOW + dt.timedelta(hours=1), 3) == status
    assert status_violations({"metadata": {"generation": 3}, "status": status}) == []
