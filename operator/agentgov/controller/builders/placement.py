"""Where an agent's pods may run: the regions of its RegionPolicy allowed to hold its data.

A pod serves every request the agent gets, so it must sit in a region allowed to hold *all*
the agent's data classes, and satisfy every ``Required`` routing rule that matches any of them
(the shipped ``sensitive-on-premise`` rule: sensitive or PII data → on-premise regions only).
Rules matching on the caller's region (``userRegions``) are per request, not per pod, and do
not restrict placement. ``Preferred`` rules that match become a scheduling preference.
No region left is a ``BuildError`` on ``spec.dataClasses``: such an agent can never run.
Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from fnmatch import fnmatchcase
from typing import Final

from agentgov.api.agentdeployment import AgentDeploymentSpec
from agentgov.api.regionpolicy import Region, RegionPolicySpec, RoutingRule, RuleRoute
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest

PREFERRED_WEIGHT: Final = 50


def _rule_applies_to_pods(rule: RoutingRule, data_classes: AbstractSet[str]) -> bool:
    return not rule.match.user_regions and any(c in data_classes for c in rule.match.data_classes)


def _routes_to(route: RuleRoute, region: Region) -> bool:
    if route.on_premise is not None and region.on_premise != route.on_premise:
        return False
    return not route.regions or any(fnmatchcase(region.name, glob) for glob in route.regions)


def _policy_label(inputs: Inputs) -> str:
    policy = inputs.region_policy
    assert policy is not None
    return f"RegionPolicy {policy.metadata.namespace or inputs.namespace}/{policy.metadata.name}"


def allowed_regions(inputs: Inputs) -> list[Region]:
    """The regions the agent's pods may run in, in the policy's order; all of them when the
    agent has no RegionPolicy (empty list). Raises BuildError when none may hold its data."""
    if inputs.region_policy is None:
        return []
    spec: AgentDeploymentSpec = inputs.spec
    policy = inputs.region_policy.spec
    assert isinstance(policy, RegionPolicySpec)
    wanted = set(spec.data_classes)
    classes = ", ".join(spec.data_classes)
    holding = [region for region in policy.regions if wanted <= set(region.data_classes)]
    if not holding:
        raise BuildError(
            "spec.dataClasses",
            f"no region of {_policy_label(inputs)} may hold all of {classes}",
        )
    candidates = holding
    for rule in policy.effective_rules():
        if rule.enforcement != "Required" or not _rule_applies_to_pods(rule, wanted):
            continue
        remaining = [region for region in candidates if _routes_to(rule.route, region)]
        if not remaining:
            names = ", ".join(region.name for region in candidates)
            raise BuildError(
                "spec.dataClasses",
                f"the regions of {_policy_label(inputs)} that may hold {classes} ({names}) "
                f"are all excluded by its Required rule {rule.name!r}",
            )
        candidates = remaining
    return candidates


def _node_values(regions: list[Region]) -> list[str]:
    return list(dict.fromkeys(region.node_region for region in regions))


def node_affinity(inputs: Inputs) -> Manifest | None:
    """The pod's ``affinity`` pinning it to the allowed regions' nodes, or None when the agent
    has no RegionPolicy or the policy's placement is off."""
    if inputs.region_policy is None:
        return None
    policy = inputs.region_policy.spec
    assert isinstance(policy, RegionPolicySpec)
    regions = allowed_regions(inputs)
    if not policy.placement.enabled:
        return None
    key = policy.placement.topology_key
    required_values = _node_values(regions)
    affinity: Manifest = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "In", "values": required_values}]}]
        }
    }
    wanted = set(inputs.spec.data_classes)
    preferred = []
    for rule in policy.effective_rules():
        if rule.enforcement != "Preferred" or not _rule_applies_to_pods(rule, wanted):
            continue
        values = _node_values([region for region in regions if _routes_to(rule.route, region)])
        if values and values != required_values:
            preferred.append(
                {"weight": PREFERRED_WEIGHT, "preference": {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}}
            )
    if preferred:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": affinity}
