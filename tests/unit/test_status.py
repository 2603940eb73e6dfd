"""kstatus conditions: setting them, and the invariant checker the integration tests rely on."""

from __future__ import annotations

from typing import Any

import pytest

from agentgov.controller.status import Outcome, kstatus_conditions, set_condition, status_violations

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_transition_time_is_kept_while_the_status_does_not_flip() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "1 of 3 ready", 1, T0)
    second = set_condition(first, "Ready", "False", "Progressing", "2 of 3 ready", 1, T1)
    assert second[0]["lastTransitionTime"] == T0 and second[0]["message"] == "2 of 3 ready"


def test_transition_time_moves_when_the_status_flips() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "waiting", 1, T0)
    flipped = set_condition(first, "Ready", "True", "Available", "ready", 1, T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_other_condition_types_are_left_alone() -> None:
    conditions = [{"type": "Warning", "status": "True", "reason": "Threshold80", "message": "m", "lastTransitionTime": T0}]
    result = kstatus_conditions(conditions, Outcome("Ready", "Available", "ok"), 1, T1)
    assert [c["type"] for c in result] == ["Warning", "Ready"]


@pytest.mark.parametrize(
    "sequence, expected_types",
    [
        (["Reconciling", "Stalled"], {"Ready", "Stalled"}),
        (["Stalled", "Reconciling"], {"Ready", "Reconciling"}),
        (["Stalled", "Ready"], {"Ready"}),
        (["Reconciling", "Ready"], {"Ready"}),
    ],
    ids=[
        "stalling after reconciling drops Reconciling",
        "reconciling after stalling drops Stalled",
        "becoming ready drops Stalled",
        "becoming ready drops Reconciling",
    ],
)
def test_reconciling_and_stalled_are_never_both_present(sequence: list[str], expected_types: set[str]) -> None:
    conditions: list[dict[str, Any]] = []
    for phase in sequence:
        conditions = kstatus_conditions(conditions, Outcome(phase, "Because", "message"), 1, T0)  # type: ignore[arg-type]
        assert status_violations({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": conditions}}) == []
    assert {c["type"] for c in conditions} == expected_types


def ready(status: str = "True", **extra: Any) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": "Available", "message": "m", "lastTransitionTime": T0, **extra}


VIOLATIONS = [
    ({"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "conditions": [ready()]}},
     "Ready is True but observedGeneration 1 < generation 2", "ready while the latest generation is unobserved"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": []}},
     "no Ready condition", "no Ready condition"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [
        ready("False"), {**ready(), "type": "Reconciling"}, {**ready(), "type": "Stalled"}]}},
     "Reconciling and Stalled are both True", "reconciling and stalled at once"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [
        ready(), {**ready(), "type": "Stalled"}]}},
     "Ready is True while Reconciling or Stalled", "ready while stalled"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [
        ready("False"), {**ready("False"), "type": "Stalled"}]}},
     "Stalled is present while not True", "a Stalled=False condition left behind"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [ready(reason="not camel")]}},
     "not CamelCase", "a reason that is not CamelCase"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [ready(message="")]}},
     "has no message", "a condition without a message"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 3, "conditions": [ready()]}},
     "observedGeneration 3 > generation 1", "an observed generation from the future"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [ready(), ready()]}},
     "condition Ready appears twice", "a duplicated condition"),
]


@pytest.mark.parametrize("obj, expected", [(o, e) for o, e, _ in VIOLATIONS], ids=[i for _, _, i in VIOLATIONS])
def test_checker_names_each_broken_invariant(obj: dict[str, Any], expected: str) -> None:
    assert any(expected in problem for problem in status_violations(obj)), status_violations(obj)


def test_checker_accepts_a_ready_object_at_its_generation() -> None:
    assert status_violations({"metadata": {"generation": 4}, "status": {"observedGeneration": 4, "conditions": [ready()]}}) == []


def budget(percent: int, exceeded: str, warning: str = "True", **figures: Any) -> dict[str, Any]:
    conditions = [ready(), {**ready(warning), "type": "Warning", "reason": "ThresholdReached"},
                  {**ready(exceeded), "type": "Exceeded", "reason": "WithinLimits"}]
    return {"metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "conditions": conditions, "percentUsed": percent, **figures}}


BUDGET_VIOLATIONS = [
    (budget(100, "False"), "percentUsed 100 disagrees with Exceeded=False", "a budget at 100% that is not Exceeded"),
    (budget(99, "True"), "percentUsed 99 disagrees with Exceeded=True", "a budget Exceeded below 100%"),
    (budget(120, "True", warning="False"), "Exceeded is True while Warning is False", "exceeded without a warning"),
    (budget(10, "False", remainingTodayUsd=-1.0), "remainingTodayUsd is negative", "a negative remaining amount"),
    ({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": [
        ready(), {**ready("False"), "type": "Exceeded"}]}},
     "without the spend figures", "an Exceeded condition without figures"),
]


@pytest.mark.parametrize("obj, expected", [(o, e) for o, e, _ in BUDGET_VIOLATIONS], ids=[i for _, _, i in BUDGET_VIOLATIONS])
def test_checker_holds_budget_figures_and_conditions_to_agree(obj: dict[str, Any], expected: str) -> None:
    assert any(expected in problem for problem in status_violations(obj)), status_violations(obj)


@pytest.mark.parametrize("percent, exceeded", [(0, "False"), (99, "False"), (100, "True"), (250, "True")],
                         ids=["nothing spent", "just under the limit", "at the limit", "far over the limit"])
def test_checker_accepts_an_exceeded_budget_that_is_ready(percent: int, exceeded: str) -> None:
    """Exceeded is about spend, Ready about the resource: a budget may be both (reconciled fine)."""
    assert status_violations(budget(percent, exceeded, warning="True" if percent >= 80 else "False")) == []


# --- AgentDeployment status.budgetPercentUsed: the highest of its budgets' ------------------

@pytest.mark.parametrize(
    "budgets, expected",
    [
        ({}, None),
        ({("research", "team"): {"status": {}}}, None),
        ({("research", "team"): {"status": {"percentUsed": 42}}}, 42),
        ({("research", "team"): {"status": {"percentUsed": 42}}, ("research", "user"): {"status": {"percentUsed": 97}}}, 97),
        ({("research", "team"): {"status": {"percentUsed": 130}}, ("other", "user"): {"status": {"percentUsed": 99}}}, 130),
        ({("research", "team"): {"status": {"percentUsed": "lots"}}, ("research", "user"): {"status": {"percentUsed": True}}}, None),
    ],
    ids=["no budgets", "no figure yet", "one budget", "the highest of two", "another namespace ignored", "garbled figures ignored"],
)
def test_budget_percent_used_is_the_highest_of_the_agents_budgets(budgets: dict[Any, Any], expected: int | None) -> None:
    from agentgov.controller.reconcile import budget_percent_used

    assert budget_percent_used("research", ["team", "user"], budgets) == expected
