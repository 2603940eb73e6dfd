"""Compiling the policy bundle: everything resolved for the sidecar, references only for
secrets, missing references named, and a hash that moves exactly when the policies do."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import AGENT, BUDGET, REGIONS, TOOLS, build_error, changed, child, make_inputs

from agentgov.api import defaults as shipped
from agentgov.api.bundle import SecretFile, bundle_hash, canonical_json, parse_bundle
from agentgov.controller.builders import BuildError, UnresolvedReferences, build_children, compile_bundle, missing_references
from agentgov.controller.builders.bundle import mounted_secrets, upstream_urls


def test_the_example_bundle_resolves_roles_tools_budgets_and_regions() -> None:
    bundle = compile_bundle(make_inputs())
    assert (bundle.agent.name, bundle.agent.namespace) == ("research-assistant", "research")
    assert bundle.data_classes == ["internal", "confidential"]
    assert set(bundle.roles) == {*shipped.DEFAULT_ROLES, "auditor"}
    assert bundle.roles["auditor"] == ["tool:read"]
    assert bundle.default_tool_action == "Deny"
    assert [t.name for t in bundle.tools] == ["web-search", "financial-reports", "ticket-writer"]
    assert [b.name for b in bundle.budgets] == ["research-team"]
    assert [r.name for r in bundle.regions] == ["onprem-frankfurt", "eu-central-1", "eu-west-1"]
    assert [r.name for r in bundle.routing_rules] == ["sensitive-on-premise", "eu-users-eu-regions", "confidential-in-frankfurt"]
    assert bundle.default_region == "eu-west-1"
    assert bundle.auth.jwks_url == "https://login.example.com/.well-known/jwks.json"
    assert bundle.auth.key_file is None
    assert bundle.sidecar.max_body_bytes == 10 * 1024 * 1024
    assert bundle.sidecar.agent_port == 8000 and bundle.sidecar.upstream_timeout_seconds == 300


@pytest.mark.parametrize(
    "tool, timeout, breaker_failures, rate_limit",
    [
        ("web-search", 10, 5, 60),
        ("financial-reports", 30, 3, None),
        ("ticket-writer", 30, 5, None),
    ],
    ids=[
        "a tool's own timeout and rate limit win over the defaults",
        "a tool's own breaker wins, the default timeout fills the gap",
        "a tool setting nothing gets every default",
    ],
)
def test_each_tool_gets_the_policy_defaults_it_does_not_set(
    tool: str, timeout: int, breaker_failures: int, rate_limit: int | None
) -> None:
    compiled = next(t for t in compile_bundle(make_inputs()).tools if t.name == tool)
    assert compiled.timeout_seconds == timeout
    assert compiled.circuit_breaker.failure_threshold == breaker_failures
    assert (compiled.rate_limit.requests_per_minute if compiled.rate_limit else None) == rate_limit


def test_a_default_rate_limit_applies_to_tools_without_one() -> None:
    tools = changed(TOOLS, {"spec.defaults.rateLimit": {"requestsPerMinute": 30}})
    limits = {t.name: t.rate_limit.requests_per_minute for t in compile_bundle(make_inputs(tool_policy=tools)).tools if t.rate_limit}
    assert limits == {"web-search": 60, "financial-reports": 30, "ticket-writer": 30}


def test_a_budget_gets_its_derived_daily_limit_and_merged_prices() -> None:
    (budget,) = compile_bundle(make_inputs()).budgets
    assert budget.monthly_usd == 500 and budget.daily_usd == pytest.approx(500 / 30)
    assert (budget.enforcement, budget.failure_policy, budget.scope) == ("Hard", "Closed", "Each")
    assert budget.alert_thresholds == [80, 90]
    assert budget.users == ["*"] and budget.agents == ["research-assistant"]
    assert budget.pricing["internal-llama-70b"].input_per_1k == 0.0004
    assert budget.pricing["gpt-4o-mini"].output_per_1k == shipped.DEFAULT_PRICING_PER_1K["gpt-4o-mini"][1]
    assert set(budget.pricing) == {*shipped.DEFAULT_PRICING_PER_1K, "internal-llama-70b"}


@pytest.mark.parametrize(
    "route, upstream_model",
    [
        ({"name": "gpt-4o", "endpoint": "https://api.openai.com/v1"}, "gpt-4o"),
        ({"name": "fast", "endpoint": "https://api.openai.com/v1", "upstreamModel": "gpt-4o-mini"}, "gpt-4o-mini"),
    ],
    ids=["the upstream model defaults to the route name", "an upstream model given is sent upstream"],
)
def test_model_routes_name_the_model_sent_upstream(route: dict[str, Any], upstream_model: str) -> None:
    (compiled,) = compile_bundle(make_inputs(agent_changes={"spec.models": [route]})).models
    assert compiled.upstream_model == upstream_model and compiled.provider == "OpenAICompatible"


@pytest.mark.parametrize(
    "tool_policy, agent_changes, roles, tools, action",
    [
        (None, {"spec.toolPolicyRef": ...}, set(shipped.DEFAULT_ROLES), [], "Deny"),
        (changed(TOOLS, {"spec.inheritDefaultRoles": False}), {}, {"auditor"}, ["web-search", "financial-reports", "ticket-writer"], "Deny"),
        (changed(TOOLS, {"spec.defaultAction": "Allow", "spec.tools": []}), {}, {*shipped.DEFAULT_ROLES, "auditor"}, [], "Allow"),
        (
            changed(TOOLS, {"spec.roles": [{"name": "viewer", "permissions": ["agent:execute"]}]}),
            {},
            set(shipped.DEFAULT_ROLES),
            ["web-search", "financial-reports", "ticket-writer"],
            "Deny",
        ),
    ],
    ids=[
        "no tool policy: the shipped roles, no tools, unlisted tools denied",
        "shipped roles not inherited: only the policy's",
        "a policy allowing unlisted tools",
        "a policy role replaces the shipped one of the same name",
    ],
)
def test_roles_and_tools_come_from_the_tool_policy_or_the_shipped_defaults(
    tool_policy: dict[str, Any] | None, agent_changes: dict[str, Any], roles: set[str], tools: list[str], action: str
) -> None:
    bundle = compile_bundle(make_inputs(tool_policy=tool_policy, agent_changes=agent_changes))
    assert set(bundle.roles) == roles
    assert [t.name for t in bundle.tools] == tools
    assert bundle.default_tool_action == action


def test_a_replaced_shipped_role_has_the_policys_permissions() -> None:
    tools = changed(TOOLS, {"spec.roles": [{"name": "viewer", "permissions": ["agent:execute"]}]})
    assert compile_bundle(make_inputs(tool_policy=tools)).roles["viewer"] == ["agent:execute"]


def test_no_region_policy_means_no_regions_or_rules() -> None:
    bundle = compile_bundle(make_inputs(region_policy=None, agent_changes={"spec.regionPolicyRef": ...}))
    assert (bundle.regions, bundle.routing_rules, bundle.default_region) == ([], [], None)


def test_the_bundle_names_secrets_only_as_references() -> None:
    auth = {"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"], "keySecretRef": {"name": "jwt", "key": "hmac"}}
    budget = changed(BUDGET, {"spec.webhook": {"url": "https://hooks.example.com/b", "secretRef": {"name": "hook", "key": "sig"}}})
    bundle = compile_bundle(make_inputs(budgets=[budget], agent_changes={"spec.auth": auth}))
    assert bundle.auth.key_file == SecretFile(secret="jwt", key="hmac")
    assert bundle.budgets[0].webhook_key_file == SecretFile(secret="hook", key="sig")
    assert mounted_secrets(bundle) == {
        "hook": ["sig"],
        "jwt": ["hmac"],
        "openai-api-key": ["api-key"],
        "ticketing-token": ["token"],
    }


def test_the_bundle_round_trips_through_its_canonical_json() -> None:
    bundle = compile_bundle(make_inputs())
    assert parse_bundle(canonical_json(bundle)) == bundle


def test_upstream_urls_are_every_address_the_sidecar_may_call() -> None:
    budget = changed(BUDGET, {"spec.webhook": {"url": "https://hooks.example.com/b"}})
    urls = upstream_urls(compile_bundle(make_inputs(budgets=[budget])))
    assert urls == [
        "https://api.openai.com/v1",
        "https://api.openai.com/v1",
        "https://search.internal.example.com/api",
        "https://finance.internal.example.com/reports",
        "https://tickets.internal.example.com/api",
        "https://llm.dc1.example.com/v1",
        "https://eu-central.llm.example.com/v1",
        "https://eu-west.llm.example.com/v1",
        "https://login.example.com/.well-known/jwks.json",
        "https://hooks.example.com/b",
    ]


# --- missing references -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "budgets, tool_policy, region_policy, agent_changes, expected",
    [
        ([BUDGET], TOOLS, REGIONS, {}, []),
        ([], TOOLS, REGIONS, {"spec.budgetRefs": ["zeta", "research-team", "alpha"]}, ["AgentBudget research/zeta", "AgentBudget research/research-team", "AgentBudget research/alpha"]),
        ([BUDGET], None, None, {}, ["ToolPolicy research/research-tools", "RegionPolicy research/eu-onprem"]),
        ([changed(BUDGET, {"metadata.namespace": "other"})], TOOLS, REGIONS, {}, ["AgentBudget research/research-team"]),
        ([BUDGET], changed(TOOLS, {"metadata.name": "other-tools"}), REGIONS, {}, ["ToolPolicy research/research-tools"]),
        ([], None, None, {"spec.budgetRefs": [], "spec.toolPolicyRef": ..., "spec.regionPolicyRef": ...}, []),
    ],
    ids=[
        "everything referenced is there",
        "missing budgets are listed in budgetRefs order",
        "missing policies come after budgets, tool policy first",
        "a budget of the same name in another namespace does not count",
        "a tool policy of another name does not count",
        "an agent referencing nothing misses nothing",
    ],
)
def test_missing_references_are_listed_in_spec_order(
    budgets: list[dict[str, Any]],
    tool_policy: dict[str, Any] | None,
    region_policy: dict[str, Any] | None,
    agent_changes: dict[str, Any],
    expected: list[str],
) -> None:
    inputs = make_inputs(budgets=budgets, tool_policy=tool_policy, region_policy=region_policy, agent_changes=agent_changes)
    assert missing_references(inputs) == expected
    if expected:
        with pytest.raises(UnresolvedReferences) as caught:
            compile_bundle(inputs)
        assert caught.value.references == expected
        assert str(caught.value) == "not found: " + ", ".join(expected)


# --- specs that can never work ----------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, field, obj",
    [
        ({"agent_changes": {"spec.models": [{"name": "m", "endpoint": "https://llm.example.com:99999/v1"}]}}, "spec.models[0].endpoint", None),
        ({"agent_changes": {"spec.auth.jwksUrl": "https://login.example.com:0/jwks"}}, "spec.auth.jwksUrl", None),
        ({"tool_policy": changed(TOOLS, {"spec.tools.1.upstream": "https://finance.example.com:70000/"})}, "spec.tools[1].upstream", "ToolPolicy research/research-tools"),
        ({"region_policy": changed(REGIONS, {"spec.regions.2.endpoint": "https://eu-west.example.com:123456/v1"})}, "spec.regions[2].endpoint", "RegionPolicy research/eu-onprem"),
        ({"budgets": [changed(BUDGET, {"spec.webhook": {"url": "https://hooks.example.com:99999/"}})]}, "spec.webhook.url", "AgentBudget research/research-team"),
        ({"agent_changes": {"spec.sidecar.maxBodyBytes": "0"}}, "spec.sidecar.maxBodyBytes", None),
        ({"agent_changes": {"spec.sidecar.maxBodyBytes": "-1Mi"}}, "spec.sidecar.maxBodyBytes", None),
        ({"agent_changes": {"spec.sidecar.maxBodyBytes": "1e1.5"}}, "spec.sidecar.maxBodyBytes", None),
        ({"agent_changes": {"spec.cache.maxBytes": "-64Mi"}}, "spec.cache.maxBytes", None),
    ],
    ids=[
        "a model endpoint with a port above 65535",
        "a JWKS URL with port zero",
        "a tool upstream with an impossible port, named in its ToolPolicy",
        "a region endpoint with an impossible port, named in its RegionPolicy",
        "a budget webhook with an impossible port, named in its AgentBudget",
        "a zero body limit",
        "a negative body limit",
        "a body limit with a fractional exponent",
        "a negative cache size",
    ],
)
def test_a_spec_that_can_never_work_is_a_build_error_naming_the_field(kwargs: dict[str, Any], field: str, obj: str | None) -> None:
    with pytest.raises(BuildError) as caught:
        compile_bundle(make_inputs(**kwargs))
    assert (caught.value.field, caught.value.obj) == (field, obj)
    assert str(caught.value).startswith(f"{obj}: {field}: " if obj else f"{field}: ")


# --- the hash ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs",
    [
        {"budgets": [changed(BUDGET, {"spec.limits.monthlyUsd": 600})]},
        {"budgets": [changed(BUDGET, {"spec.pricing.0.inputPer1K": 0.003})]},
        {"tool_policy": changed(TOOLS, {"spec.tools.0.timeoutSeconds": 11})},
        {"tool_policy": changed(TOOLS, {"spec.roles.0.permissions": ["tool:read", "tool:write"]})},
        {"region_policy": changed(REGIONS, {"spec.defaultRegion": "eu-central-1"})},
        {"agent_changes": {"spec.auth.audiences": ["agents.example.com", "other"]}},
        {"agent_changes": {"spec.cache.ttlSeconds": 60}},
    ],
    ids=[
        "a referenced budget's limit changes",
        "a referenced budget's price changes",
        "a tool's timeout changes",
        "a role's permissions change",
        "the region policy's default region changes",
        "the accepted audiences change",
        "the cache TTL changes",
    ],
)
def test_the_bundle_hash_changes_with_the_policies_and_rolls_the_pods(kwargs: dict[str, Any]) -> None:
    before, after = make_inputs(), make_inputs(**kwargs)
    assert bundle_hash(compile_bundle(before)) != bundle_hash(compile_bundle(after))
    old = child(build_children(before), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    new = child(build_children(after), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert old["agentgov.io/bundle-hash"] != new["agentgov.io/bundle-hash"]
    assert new["agentgov.io/bundle-hash"] == bundle_hash(compile_bundle(after))


@pytest.mark.parametrize(
    "agent_changes",
    [
        {"metadata.generation": 7},
        {"spec.autoscaling.maxReplicas": 20},
        {"spec.autoscaling.enabled": False, "spec.replicas": 5},
        {"spec.ingress.requestsPerMinute": 500},
        {"spec.image": "ghcr.io/example/research-agent:1.5.0"},
        {"metadata.labels": {"team": "other"}},
    ],
    ids=[
        "a new generation alone",
        "the autoscaler's bounds",
        "the replica count",
        "the ingress rate limit",
        "the agent image",
        "the agent's own labels",
    ],
)
def test_the_bundle_hash_ignores_what_the_sidecar_does_not_enforce(agent_changes: dict[str, Any]) -> None:
    assert bundle_hash(compile_bundle(make_inputs())) == bundle_hash(compile_bundle(make_inputs(agent_changes=agent_changes)))


def test_the_configmap_carries_the_canonical_bundle_and_its_hash() -> None:
    inputs = make_inputs()
    bundle = compile_bundle(inputs)
    configmap = child(build_children(inputs), "ConfigMap")
    assert configmap["metadata"]["name"] == "research-assistant-bundle"
    assert configmap["data"] == {"bundle.json": canonical_json(bundle)}
    assert configmap["metadata"]["annotations"] == {"agentgov.io/bundle-hash": bundle_hash(bundle)}


def test_unreferenced_budgets_among_the_inputs_are_not_compiled() -> None:
    stray = changed(BUDGET, {"metadata.name": "someone-else"})
    bundle = compile_bundle(make_inputs(budgets=[BUDGET, stray]))
    assert [b.name for b in bundle.budgets] == ["research-team"]
    assert AGENT["spec"]["budgetRefs"] == ["research-team"]


def test_a_bundle_too_large_for_a_configmap_is_a_build_error_naming_its_biggest_source() -> None:
    fallback = {"type": "StaticResponse", "response": "x" * 65_000}
    tools = [{"name": f"tool-{i}", "upstream": "https://t.example.com", "fallback": fallback} for i in range(20)]
    inputs = make_inputs(tool_policy=changed(TOOLS, {"spec.tools": tools}))
    compile_bundle(inputs)  # the bundle itself is fine; the ConfigMap cannot hold it
    error = build_error(inputs)
    assert error.field == "spec.toolPolicyRef"
    assert "over the 1048576 a ConfigMap holds" in error.message
