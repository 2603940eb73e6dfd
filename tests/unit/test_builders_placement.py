"""Pod placement by RegionPolicy: pods run only in regions allowed to hold all the agent's
data, Required rules (sensitive and PII on premises) narrow it further, and an agent whose
data may live nowhere is refused naming spec.dataClasses."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import REGIONS, changed, child, make_inputs

from agentgov.controller.builders import BuildError, build_children, compile_bundle

US_CLOUD_PII = {"name": "us-east-1", "endpoint": "https://us.llm.example.com/v1", "dataClasses": ["public", "internal", "pii"]}


def _affinity(**kwargs: Any) -> dict[str, Any] | None:
    pod = child(build_children(make_inputs(**kwargs)), "Deployment")["spec"]["template"]["spec"]
    affinity: dict[str, Any] | None = pod.get("affinity")
    return affinity


def _required_values(**kwargs: Any) -> list[str]:
    affinity = _affinity(**kwargs)
    assert affinity is not None
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert expression["operator"] == "In"
    return list(expression["values"])


@pytest.mark.parametrize(
    "data_classes, region_policy, values",
    [
        (["internal", "confidential"], REGIONS, ["dc1", "eu-central-1"]),
        (["public"], REGIONS, ["dc1", "eu-central-1", "eu-west-1"]),
        (["internal"], REGIONS, ["dc1", "eu-central-1", "eu-west-1"]),
        (["confidential"], changed(REGIONS, {"spec.rules": []}), ["dc1", "eu-central-1"]),
        (["pii"], REGIONS, ["dc1"]),
        (["internal", "sensitive"], REGIONS, ["dc1"]),
        (["pii"], changed(REGIONS, {"spec.regions": [*REGIONS["spec"]["regions"], US_CLOUD_PII]}), ["dc1"]),
        (
            ["pii"],
            changed(REGIONS, {"spec.regions": [*REGIONS["spec"]["regions"], US_CLOUD_PII], "spec.inheritDefaultRules": False}),
            ["dc1", "us-east-1"],
        ),
    ],
    ids=[
        "internal and confidential data: the regions holding both (the example)",
        "public data: every region",
        "internal data: every region (the EU-user rule is per request, not per pod)",
        "confidential data without the policy's own rule: every region holding it",
        "PII: on premises only",
        "sensitive with internal data: on premises only",
        "PII with a cloud region allowed to hold it: still on premises only (the shipped rule)",
        "PII with the shipped rules turned off: the cloud region too",
    ],
)
def test_pods_are_pinned_to_the_node_regions_allowed_to_hold_their_data(
    data_classes: list[str], region_policy: dict[str, Any], values: list[str]
) -> None:
    assert _required_values(region_policy=region_policy, agent_changes={"spec.dataClasses": data_classes}) == values


def test_the_node_label_is_the_policys_topology_key() -> None:
    policy = changed(REGIONS, {"spec.placement.topologyKey": "example.com/datacenter"})
    affinity = _affinity(region_policy=policy)
    assert affinity is not None
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["key"] == "example.com/datacenter"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"region_policy": None, "agent_changes": {"spec.regionPolicyRef": ...}},
        {"region_policy": changed(REGIONS, {"spec.placement.enabled": False})},
    ],
    ids=["no region policy", "the policy's placement turned off"],
)
def test_pods_are_not_pinned_without_placement(kwargs: dict[str, Any]) -> None:
    assert _affinity(**kwargs) is None


def test_a_matching_preferred_rule_becomes_a_scheduling_preference() -> None:
    rule = {
        "name": "internal-prefers-cloud",
        "match": {"dataClasses": ["internal"]},
        "route": {"onPremise": False},
        "enforcement": "Preferred",
    }
    policy = changed(REGIONS, {"spec.rules": [rule]})
    affinity = _affinity(region_policy=policy, agent_changes={"spec.dataClasses": ["internal"]})
    assert affinity is not None
    assert affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 50,
            "preference": {
                "matchExpressions": [{"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-central-1", "eu-west-1"]}]
            },
        }
    ]


@pytest.mark.parametrize(
    "data_classes, region_policy, message",
    [
        (
            ["pii"],
            changed(REGIONS, {"spec.regions": [r for r in REGIONS["spec"]["regions"] if not r["onPremise"]], "spec.defaultRegion": ...}),
            "no region of RegionPolicy research/eu-onprem may hold all of pii",
        ),
        (
            ["pii"],
            changed(REGIONS, {"spec.regions": [US_CLOUD_PII], "spec.defaultRegion": ...}),
            "(us-east-1) are all excluded by its Required rule 'sensitive-on-premise'",
        ),
        (
            ["confidential"],
            changed(
                REGIONS,
                {"spec.rules.0.route": {"regions": ["eu-west-1"]}},
            ),
            "are all excluded by its Required rule 'confidential-in-frankfurt'",
        ),
    ],
    ids=[
        "PII and no region that may hold it",
        "PII and only a cloud region that may hold it",
        "confidential data routed by a Required rule to a region that may not hold it",
    ],
)
def test_data_no_region_may_hold_is_a_build_error_naming_spec_data_classes(
    data_classes: list[str], region_policy: dict[str, Any], message: str
) -> None:
    inputs = make_inputs(region_policy=region_policy, agent_changes={"spec.dataClasses": data_classes})
    for build in (compile_bundle, build_children):
        with pytest.raises(BuildError) as caught:
            build(inputs)
        assert caught.value.field == "spec.dataClasses"
        assert message in caught.value.message


def test_data_no_region_may_hold_is_refused_even_with_placement_off() -> None:
    policy = changed(REGIONS, {"spec.regions": [US_CLOUD_PII], "spec.defaultRegion": ..., "spec.placement.enabled": False})
    with pytest.raises(BuildError, match="spec.dataClasses"):
        build_children(make_inputs(region_policy=policy, agent_changes={"spec.dataClasses": ["pii"]}))
