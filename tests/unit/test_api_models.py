"""The resource models: what they accept, what they refuse, and the defaults they ship."""

from __future__ import annotations

from typing import Any

import pytest
from manifest_cases import AGENT, BUDGET, INVALID, REGIONS, TOOLS, with_changes

from agentgov.api import defaults
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.regionpolicy import RegionPolicySpec
from agentgov.api.resources import ManifestError, parse_object
from agentgov.api.toolpolicy import ToolPolicySpec

@pytest.mark.parametrize("manifest, expected", [(m, e) for m, e, _ in INVALID], ids=[i for _, _, i in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(manifest: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_object(manifest, "test.yaml")
    assert expected in str(caught.value), caught.value.problems


@pytest.mark.parametrize("manifest", [AGENT, BUDGET, TOOLS, REGIONS], ids=["agent", "budget", "tool policy", "region policy"])
def test_minimal_manifest_is_accepted(manifest: dict[str, Any]) -> None:
    assert parse_object(manifest).metadata.name == manifest["metadata"]["name"]


def test_manifest_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ManifestError, match="expected a mapping, got list"):
        parse_object(["not", "an", "object"])  # type: ignore[arg-type]


def test_every_problem_is_reported_not_only_the_first() -> None:
    manifest = with_changes(with_changes(AGENT, "spec.port", 0), "spec.replicas", -3)
    with pytest.raises(ManifestError) as caught:
        parse_object(manifest)
    assert [p.split(":")[0] for p in caught.value.problems] == ["spec.port", "spec.replicas"]


def test_daily_limit_defaults_to_a_thirtieth_of_the_monthly_limit() -> None:
    spec = AgentBudgetSpec.model_validate({"subjects": {"teams": ["x"]}, "limits": {"monthlyUsd": 300}})
    assert spec.limits.daily_usd is None
    assert spec.limits.effective_daily_usd == pytest.approx(10.0)


def test_budget_ships_alerts_at_80_and_90_percent_and_hard_closed_enforcement() -> None:
    spec = AgentBudgetSpec.model_validate({"subjects": {"teams": ["x"]}, "limits": {"monthlyUsd": 1}})
    assert spec.alert_thresholds == [80, 90]
    assert (spec.enforcement, spec.failure_policy) == ("Hard", "Closed")


def test_budget_prices_override_shipped_ones_by_model_name() -> None:
    spec = AgentBudgetSpec.model_validate(
        {
            "subjects": {"teams": ["x"]},
            "limits": {"monthlyUsd": 1},
            "pricing": [
                {"name": "gpt-4o", "inputPer1K": 1, "outputPer1K": 2},
                {"name": "local-model", "inputPer1K": 0, "outputPer1K": 0},
            ],
        }
    )
    prices = spec.effective_pricing()
    assert prices["gpt-4o"] == (1, 2)
    assert prices["local-model"] == (0, 0)
    assert prices["gpt-4o-mini"] == defaults.DEFAULT_PRICING_PER_1K["gpt-4o-mini"]


def test_shipped_roles_follow_the_playbook() -> None:
    roles = ToolPolicySpec().effective_roles()
    assert set(roles) == {"admin", "developer", "analyst", "viewer"}
    assert set(roles["admin"]) == set(defaults.PERMISSIONS)
    assert "agent:execute" in roles["analyst"] and "tool:write" not in roles["analyst"]
    assert roles["viewer"] == ("tool:read",)


def test_a_role_given_in_the_policy_replaces_the_shipped_one() -> None:
    spec = ToolPolicySpec.model_validate({"roles": [{"name": "viewer", "permissions": ["agent:execute"]}]})
    assert spec.effective_roles()["viewer"] == ("agent:execute",)
    assert "admin" in spec.effective_roles()


def test_shipped_roles_can_be_switched_off() -> None:
    spec = ToolPolicySpec.model_validate(
        {"inheritDefaultRoles": False, "roles": [{"name": "bot", "permissions": ["agent:execute"]}]}
    )
    assert spec.effective_roles() == {"bot": ("agent:execute",)}


def test_breaker_defaults_need_three_half_open_successes() -> None:
    breaker = ToolPolicySpec().defaults.circuit_breaker
    assert (breaker.failure_threshold, breaker.half_open_successes) == (5, 3)
    assert (breaker.call_timeout_seconds, breaker.recovery_timeout_seconds) == (30, 60)


def test_shipped_residency_rules_keep_pii_on_premise_and_eu_users_in_eu() -> None:
    spec = RegionPolicySpec.model_validate(REGIONS["spec"])
    rules = {rule.name: rule for rule in spec.effective_rules()}
    onprem = rules["sensitive-on-premise"]
    assert set(onprem.match.data_classes) == {"sensitive", "pii"}
    assert onprem.route.on_premise is True and onprem.enforcement == "Required"
    eu = rules["eu-users-eu-regions"]
    assert eu.match.user_regions == ["eu-*"] and eu.route.regions == ["eu-*"]


def test_agent_defaults_are_autoscaling_3_to_10_at_70_and_80_percent() -> None:
    spec = parse_object(AGENT).spec
    assert spec.autoscaling.enabled is False
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (3, 10)
    assert (spec.autoscaling.target_cpu_utilization_percent, spec.autoscaling.target_memory_utilization_percent) == (70, 80)
    assert spec.ingress.requests_per_minute == 100
