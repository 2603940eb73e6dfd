"""Manifests shared by the model tests and the CRD tests: minimal valid objects of each kind
and a table of invalid ones, each with the problem the refusal must name."""

from __future__ import annotations

import copy
from typing import Any

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
    (with_changes(AGENT, "spec.models", [{"name": "m", "endpoint": "https://x", "fallbacks": ["gone"]}]),
     "spec.models: a model's fallbacks must name other model routes of this agent", "a fallback to a missing route"),
    (with_changes(AGENT, "spec.models", [{"name": "m", "endpoint": "https://x", "fallbacks": ["m"]}]),
     "spec.models: a model's fallbacks must name other model routes of this agent", "a route falling back to itself"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K", "vault": {"path": "p", "key": "k"}, "aws": {"name": "n"}}]),
     "spec.secrets[0]: exactly one of secretKeyRef, vault, aws or azure is required", "a secret with two sources"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K"}]),
     "spec.secrets[0]: exactly one of secretKeyRef, vault, aws or azure is required", "a secret with no source"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K", "secretKeyRef": {"name": "s", "key": "k"}, "exposeToAgent": False}]),
     "spec.secrets[0]: only vault, aws and azure sources may set exposeToAgent to false (a secretKeyRef is used where it is)",
     "a Secret reference kept from the agent"),
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
    (with_changes(AGENT, "spec.env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     "spec.env[0]: value and valueFrom are mutually exclusive", "an env var with a value and a source"),
    (with_changes(AGENT, "spec.env", [{"name": "A", "valueFrom": {}}]),
     "spec.env[0].valueFrom: exactly one of secretKeyRef or configMapKeyRef is required", "an env var source naming nothing"),
    (with_changes(AGENT, "spec.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
     "spec.env: environment variable names must be unique", "an env var set twice"),
    (with_changes(AGENT, "spec.secrets", [{"name": "K", "secretKeyRef": {"name": "s", "key": "k"}}] * 2),
     "spec.secrets: secret names must be unique", "a secret injected twice"),
    (with_changes(with_changes(with_changes(AGENT, "spec.auth.keySecretRef", {"name": "k", "key": "k"}),
                               "spec.auth.jwksUrl", ...), "spec.auth.algorithms", ["HS256", "RS256"]),
     "spec.auth.algorithms: HS256 cannot be combined with asymmetric algorithms", "HS256 combined with RS256"),
    (with_changes(AGENT, "spec.auth.algorithms", ["HS256"]),
     "spec.auth.keySecretRef: HS256 needs keySecretRef (a JWKS URL never serves shared keys)", "HS256 with a JWKS URL"),
    (with_changes(TOOLS, "spec.tools.0.fallback", {"type": "Tool"}),
     "spec.tools[0].fallback: a Tool fallback needs `tool`", "a tool fallback that names no tool"),
    (with_changes(TOOLS, "spec.roles", [{"name": "r", "permissions": []}, {"name": "r", "permissions": []}]),
     "spec.roles: role names must be unique", "a role defined twice"),
    (with_changes(REGIONS, "spec.regions", [{"name": "eu", "endpoint": "https://a"}, {"name": "eu", "endpoint": "https://b"}]),
     "spec.regions: region names must be unique", "a region defined twice"),
    (with_changes(REGIONS, "spec.rules", [{"name": "x", "match": {"dataClasses": ["pii"]}, "route": {"onPremise": True}}] * 2),
     "spec.rules: rule names must be unique", "a routing rule defined twice"),
    (with_changes(REGIONS, "spec.rules", [{"name": "x", "match": {"dataClasses": ["pii"]}, "route": {}}]),
     "spec.rules[0].route: a route must name regions or set onPremise", "a rule that routes nowhere"),
    (with_changes(AGENT, "apiVersion", "agentgov.io/v1"), "apiVersion: expected 'agentgov.io/v1alpha1'", "a wrong API version"),
    (with_changes(AGENT, "kind", "AgentDeploy"), "kind: expected one of", "an unknown kind"),
]
