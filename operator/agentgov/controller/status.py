"""kstatus conditions: computing them, and checking that a status obeys the conventions.

Flux, Argo CD and ``kstatus`` read ``observedGeneration`` and the ``Ready``, ``Reconciling``
and ``Stalled`` conditions. The rules kept here: ``Ready`` is always present; ``Reconciling``
and ``Stalled`` are present only while True and never both; ``Ready`` is False whenever either
is, or when ``observedGeneration`` lags ``generation``; every condition has a CamelCase
reason and a message; ``lastTransitionTime`` changes only when the status flips.
Other condition types (an AgentBudget's ``Warning``, ``Exceeded``, ``SpendStoreAvailable``) sit
beside them and never decide ``Ready``; the checker also holds a budget's figures and its
``Exceeded`` condition to agree. Pure: the clock is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Condition = dict[str, Any]
Phase = Literal["Ready", "Reconciling", "Stalled"]
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """The list with ``type_`` set; ``lastTransitionTime`` kept unless the status flips."""
    existing = next((c for c in conditions if c.get("type") == type_), None)
    kept = existing is not None and existing.get("status") == status
    condition: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": existing.get("lastTransitionTime", now) if existing is not None and kept else now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if existing is None:
        return [*(dict(c) for c in conditions), condition]
    return [condition if c is existing else dict(c) for c in conditions]


def remove_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> list[Condition]:
    return [dict(c) for c in conditions if c.get("type") != type_]


@dataclass(frozen=True)
class Outcome:
    """What a reconcile concluded, before it becomes conditions."""

    phase: Phase
    reason: str
    message: str


def kstatus_conditions(
    current: Sequence[Mapping[str, Any]], outcome: Outcome, generation: int | None, now: str
) -> list[Condition]:
    """Ready / Reconciling / Stalled for an outcome, other condition types left as they are."""
    conditions = [dict(c) for c in current]
    if outcome.phase == "Ready":
        conditions = remove_condition(remove_condition(conditions, "Reconciling"), "Stalled")
        return set_condition(conditions, "Ready", "True", outcome.reason, outcome.message, generation, now)
    other = "Stalled" if outcome.phase == "Reconciling" else "Reconciling"
    conditions = remove_condition(conditions, other)
    conditions = set_condition(conditions, outcome.phase, "True", outcome.reason, outcome.message, generation, now)
    return set_condition(conditions, "Ready", "False", outcome.reason, outcome.message, generation, now)


def updated_status(
    current: Mapping[str, Any], outcome: Outcome, generation: int | None, now: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """``current`` with ``fields`` set, kstatus conditions for ``outcome`` and ``observedGeneration``."""
    status = {k: v for k, v in current.items() if k not in ("conditions", "observedGeneration")}
    status.update(fields)
    status["conditions"] = kstatus_conditions(current.get("conditions") or [], outcome, generation, now)
    status["observedGeneration"] = generation
    return status


def status_violations(obj: Mapping[str, Any]) -> list[str]:
    """Every way ``obj``'s status breaks the kstatus conventions (empty when it obeys them)."""
    problems: list[str] = []
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    conditions = status.get("conditions") or []
    by_type: dict[str, Mapping[str, Any]] = {}
    for condition in conditions:
        kind = condition.get("type")
        if kind in by_type:
            problems.append(f"condition {kind} appears twice")
        by_type[str(kind)] = condition
        if condition.get("status") not in ("True", "False", "Unknown"):
            problems.append(f"condition {kind} has status {condition.get('status')!r}")
        if not _REASON.match(str(condition.get("reason", ""))):
            problems.append(f"condition {kind} has reason {condition.get('reason')!r}, not CamelCase")
        if not condition.get("message"):
            problems.append(f"condition {kind} has no message")
        if not condition.get("lastTransitionTime"):
            problems.append(f"condition {kind} has no lastTransitionTime")
    if "Ready" not in by_type:
        problems.append("no Ready condition")
    for kind in ("Reconciling", "Stalled"):
        if kind in by_type and by_type[kind].get("status") != "True":
            problems.append(f"{kind} is present while not True")
    reconciling = by_type.get("Reconciling", {}).get("status") == "True"
    stalled = by_type.get("Stalled", {}).get("status") == "True"
    ready = by_type.get("Ready", {}).get("status") == "True"
    if reconciling and stalled:
        problems.append("Reconciling and Stalled are both True")
    if ready and (reconciling or stalled):
        problems.append("Ready is True while Reconciling or Stalled")
    observed = status.get("observedGeneration")
    if ready and generation is not None and (observed is None or observed < generation):
        problems.append(f"Ready is True but observedGeneration {observed} < generation {generation}")
    if observed is not None and generation is not None and observed > generation:
        problems.append(f"observedGeneration {observed} > generation {generation}")
    return problems + _budget_violations(status, by_type)


def _budget_violations(status: Mapping[str, Any], by_type: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """An AgentBudget's spend figures against its Warning/Exceeded conditions."""
    problems: list[str] = []
    exceeded = by_type.get("Exceeded", {}).get("status")
    warning = by_type.get("Warning", {}).get("status")
    if exceeded == "True" and warning != "True":
        problems.append(f"Exceeded is True while Warning is {warning}")
    percent = status.get("percentUsed")
    if isinstance(percent, int) and exceeded is not None and (percent >= 100) != (exceeded == "True"):
        problems.append(f"percentUsed {percent} disagrees with Exceeded={exceeded}")
    for field in ("spentTodayUsd", "spentThisMonthUsd", "remainingTodayUsd", "remainingThisMonthUsd"):
        value = status.get(field)
        if isinstance(value, (int, float)) and value < 0:
            problems.append(f"{field} is negative ({value})")
    if (exceeded is not None or warning is not None) and "percentUsed" not in status:
        problems.append("Warning/Exceeded conditions without the spend figures they judge")
    return problems
