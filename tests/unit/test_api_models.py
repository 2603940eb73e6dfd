"""The resource models: what they accept, what they refuse, and the defaults they ship."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentgov.api import defaults
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.regionpolicy import RegionPolicySpec
from agentgov.api.resources import ManifestError, parse_object
from agentgov.api.toolpolicy import ToolPolicySpec

AGENT: dict[str, Any] = {
    "apiVersion": "agentgov.io/v1alpha1",
    "kind": "AgentDeployment",
    "metadata": {"name": "a", "namespace": "ns"},
    "spec": {
        "image": "example/agent:1",
        "auth": {
            "issuer": "https://login.example.com/",
            "audiences": ["agents"],
            "jwksUrl": "https://login.example.com/jwks.json",
        },
    },
}
BUDGET: dict[str, Any] = {
    "apiVersion": "agentgov.io/v1alpha1",
    "kind": "AgentBudget",
    "metadata": {"name": "b"},
    "spec": {"subjects": {"users": ["alice"]}, "limits": {"monthlyUsd": 300}},
}
TOOLS: dict[str, Any] = {
    "apiVersion": "agentgov.io/v1alpha1",
    "kind": "ToolPolicy",
    "metadata": {"name": "t"},
    "spec": {"tools": [{"name": "search", "upstream": "https://search.example.com"}]},
}
REGIONS: dict[str, Any] = {
    "apiVersion": "agentgov.io/v1alpha1",
    "kind": "RegionPolicy",
    "metadata": {"name": "r"},
    "spec": {"regions": [{"name": "eu-west-1", "endpoint": "https://eu.example.com/v1"}]},
}


def with_changes(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with the dotted ``path`` set (``...`` deletes it)."""
    obj = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


INVALID = [
    (with_changes(AGENT, "spec.image", ...), "spec.image: Field required", "an agent without an image"),
    (with_changes(AGENT, "spec.port", 70000), "spec.port: Input should be less than or equal to 65535", "a port above 65535"),
    (with_changes(AGENT, "spec.replicas", -1), "spec.replicas: Input should be greater than or equal to 0", "negative replicas"),
    (with_changes(AGENT, "spec.imagePullPolicy", "Sometimes"), "spec.imagePullPolicy: Input should be", "an unknown pull policy"),
    (with_changes(AGENT, "spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
     "spec.autoscaling.minReplicas: minReplicas must not exceed maxReplicas", "min replicas above max"),
    (with_changes(AGENT, "spec.auth.keySecretRef", {"name": "k", "key": "k"}),
     "spec.auth: exactly one of jwksUrl or keySecretRef is required", "both a JWKS URL and a key secret"),
    (with_changes(with_changes(AGENT, "spec.auth.algorithms", ["HS256", "RS256"]), "spec.auth.jwksUrl", ...),
     "spec.auth: exactly one of jwksUrl or keySecretRef", "HS256 mixed with RS256 and no key"),
    (with_changes(AGENT, "spec.auth.algorithms", ["none"]), "spec.auth.algorithms[0]: Input should be", "the none algorithm"),
    (with_changes(AGENT, "spec.ingress", {"enabled": True}), "spec.ingress.host: an enabled ingress needs a host",
     "an enabled ingress without a host"),
    (with_changes(AGENT, "spec.models", [{"name": "m", "endpoint": "https://x"}, {"name": "m", "endpoint": "https://y"}]),
     "spec.models: model route names must be unique", "two model routes with one name"),
    (with_changes(AGENT, "spec.models", [{"name": "m", "endpoint": "ftp://x"}]),
     "spec.models[0].endpoint: String should match pattern", "a model endpoint that is not http(s)"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K", "vault": {"path": "p", "key": "k"}, "aws": {"name": "n"}}]),
     "spec.secrets[0]: exactly one of secretKeyRef, vault, aws or azure is required", "a secret with two sources"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K"}]),
     "spec.secrets[0]: exactly one of secretKeyRef, vault, aws or azure is required", "a secret with no source"),
    (with_changes(AGENT, "spec.budgetRefs", ["Not_A_Name"]), "spec.budgetRefs[0]: String should match pattern",
     "a budget reference that is not a DNS label"),
    (with_changes(AGENT, "spec.unknownField", 1), "spec.unknownField: Extra inputs are not permitted", "an unknown spec field"),
    (with_changes(AGENT, "spec.resources", {"limits": {"cpu": "lots"}}), "spec.resources.limits.cpu: String should match pattern",
     "a CPU limit that is not a quantity"),
    (with_changes(BUDGET, "spec.limits.dailyUsd", 500), "spec.limits.dailyUsd: the daily limit must not exceed the monthly limit",
     "a daily limit above the monthly one"),
    (with_changes(BUDGET, "spec.limits.monthlyUsd", 0), "spec.limits.monthlyUsd: Input should be greater than 0", "a zero monthly limit"),
    (with_changes(BUDGET, "spec.alertThresholds", [90, 80]), "spec.alertThresholds: alert thresholds must be in ascending order",
     "descending thresholds"),
    (with_changes(BUDGET, "spec.alertThresholds", [80, 80]), "spec.alertThresholds: alert thresholds must be in ascending order",
     "a repeated threshold"),
    (with_changes(BUDGET, "spec.alertThresholds", [50, 101]), "spec.alertThresholds[1]: Input should be less than or equal to 100",
     "a threshold above 100"),
    (with_changes(BUDGET, "spec.alertThresholds", [0]), "spec.alertThresholds[0]: Input should be greater than or equal to 1",
     "a threshold of 0"),
    (with_changes(BUDGET, "spec.subjects", {}), "spec.subjects: a budget must name at least one user, agent or team",
     "a budget for nobody"),
    (with_changes(BUDGET, "spec.enforcement", "hard"), "spec.enforcement: Input should be 'Hard' or 'Soft'", "lower-case enforcement"),
    (with_changes(BUDGET, "spec.pricing", [{"name": "m", "inputPer1K": 1, "outputPer1K": 1}] * 2),
     "spec.pricing: model price names must be unique", "a model priced twice"),
    (with_changes(BUDGET, "spec.pricing", [{"name": "m", "inputPer1K": -1, "outputPer1K": 1}]),
     "spec.pricing[0].inputPer1K: Input should be greater than or equal to 0", "a negative price"),
    (with_changes(TOOLS, "spec.tools", [{"name": "a", "upstream": "https://a"}, {"name": "a", "upstream": "https://b"}]),
     "spec.tools: tool names must be unique", "two tools with one name"),
    (with_changes(TOOLS, "spec.roles", [{"name": "r", "permissions": ["tool:execute"]}]),
     "spec.roles[0].permissions[0]: Input should be", "an unknown permission"),
    (with_changes(TOOLS, "spec.tools.0.circuitBreaker", {"failureThreshold": 0}),
     "spec.tools[0].circuitBreaker.failureThreshold: Input should be greater than or equal to 1", "a breaker that opens on zero failures"),
    (with_changes(TOOLS, "spec.tools.0.fallback", {"type": "StaticResponse"}),
     "spec.tools[0].fallback: a StaticResponse fallback needs `response`", "a static fallback with no response"),
    (with_changes(TOOLS, "spec.tools.0.fallback", {"type": "Tool", "tool": "missing"}),
     "spec.tools: a fallback tool must be another tool of this policy", "a fallback to a tool that does not exist"),
    (with_changes(REGIONS, "spec.regions", []), "spec.regions: List should have at least 1 item", "a policy with no regions"),
    (with_changes(REGIONS, "spec.defaultRegion", "us-east-1"), "spec.defaultRegion: defaultRegion must name one of the regions",
     "a default region that is not defined"),
    (with_changes(REGIONS, "spec.regions.0.dataClasses", ["secret"]), "spec.regions[0].dataClasses[0]: Input should be",
     "an unknown data class"),
    (with_changes(REGIONS, "spec.rules", [{"name": "x", "match": {}, "route": {"onPremise": True}}]),
     "spec.rules[0].match: a rule must match on dataClasses or userRegions", "a rule that matches nothing"),
    (with_changes(REGIONS, "spec.regions.0.latencySloMs", 0), "spec.regions[0].latencySloMs: Input should be greater than or equal to 1",
     "a zero latency SLO"),
    (with_changes(AGENT, "apiVersion", "agentgov.io/v1"), "apiVersion: expected 'agentgov.io/v1alpha1'", "a wrong API version"),
    (with_changes(AGENT, "kind", "AgentDeploy"), "kind: expected one of", "an unknown kind"),
]


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
