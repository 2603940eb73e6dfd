"""The NetworkPolicy: callers reach only the sidecar's port; the pod reaches only DNS, the
budget store, and the ports of the upstreams its policies name (addresses only where the
URL gives one, since a NetworkPolicy cannot select host names)."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import TOOLS, build_error, changed, child, make_inputs

from agentgov.controller.builders import build_children
from agentgov.controller.config import OperatorConfig

ANY_ADDRESS = [
    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
    {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10"]}},
]
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def _policy(**kwargs: Any) -> dict[str, Any]:
    return child(build_children(make_inputs(**kwargs)), "NetworkPolicy")


def test_the_example_allows_callers_to_the_sidecar_and_egress_to_dns_redis_and_https() -> None:
    policy = _policy()
    spec = policy["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "agentgov-agent", "app.kubernetes.io/instance": "research-assistant"}
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert spec["egress"] == [
        DNS_RULE,
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}, "namespaceSelector": {}}],
            "ports": [{"protocol": "TCP", "port": 6379}],
        },
        {"to": ANY_ADDRESS, "ports": [{"protocol": "TCP", "port": 443}]},
    ]


def test_the_agent_port_and_the_sidecar_egress_port_are_closed_to_callers() -> None:
    ports = [p["port"] for rule in _policy()["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [8080]


@pytest.mark.parametrize(
    "models, expected_rules",
    [
        (
            [{"name": "a", "endpoint": "http://llm.example.com/v1"}, {"name": "b", "endpoint": "https://llm.example.com:8443/v1"}],
            [{"to": ANY_ADDRESS, "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]}],
        ),
        (
            [{"name": "a", "endpoint": "http://10.0.3.7:8080/v1"}, {"name": "b", "endpoint": "https://10.0.3.7/v1"}, {"name": "c", "endpoint": "https://[2001:db8::5]:9443/v1"}],
            [
                {"to": ANY_ADDRESS, "ports": [{"protocol": "TCP", "port": 443}]},
                {"to": [{"ipBlock": {"cidr": "10.0.3.7/32"}}], "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8080}]},
                {"to": [{"ipBlock": {"cidr": "2001:db8::5/128"}}], "ports": [{"protocol": "TCP", "port": 9443}]},
            ],
        ),
    ],
    ids=[
        "host names: their ports (scheme defaults and explicit) to any address",
        "IP literals: exactly that address and its ports",
    ],
)
def test_upstreams_open_only_the_ports_their_urls_name(models: list[dict[str, Any]], expected_rules: list[dict[str, Any]]) -> None:
    egress = _policy(agent_changes={"spec.models": models})["spec"]["egress"]
    # the tools, regions and JWKS of the examples all use https on 443 by name
    assert egress[2:] == expected_rules


def test_upstream_rules_follow_the_tool_policy() -> None:
    tools = changed(TOOLS, {"spec.tools.0.upstream": "http://search.internal.example.com:9200/api"})
    egress = _policy(tool_policy=tools)["spec"]["egress"]
    assert egress[2]["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 9200}]


def test_link_local_addresses_stay_closed_to_name_based_upstreams() -> None:
    rule = _policy()["spec"]["egress"][2]
    assert rule["to"][0]["ipBlock"]["except"] == ["169.254.0.0/16"]
    assert rule["to"][1]["ipBlock"]["except"] == ["fe80::/10"]


def test_extra_cidrs_add_destinations_on_any_port_in_canonical_form() -> None:
    egress = _policy(agent_changes={"spec.networkPolicy.extraEgressCidrs": ["10.20.1.1/16", "10.20.0.0/16", "2001:db8::/32"]})["spec"]["egress"]
    assert egress[-1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}]}


def test_an_extra_cidr_the_api_server_would_refuse_is_a_build_error_naming_it() -> None:
    error = build_error(make_inputs(agent_changes={"spec.networkPolicy.extraEgressCidrs": ["10.0.0.0/8", "999.1.1.1/40"]}))
    assert error.field == "spec.networkPolicy.extraEgressCidrs[1]"


@pytest.mark.parametrize(
    "environ, peer, port",
    [
        (
            {"AGENTGOV_REDIS_NAMESPACE": "agentgov-system"},
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agentgov-system"}},
            },
            6379,
        ),
        (
            {"AGENTGOV_REDIS_SELECTOR": "app=budget-store,role=master", "AGENTGOV_REDIS_PORT": "6380"},
            {"podSelector": {"matchLabels": {"app": "budget-store", "role": "master"}}, "namespaceSelector": {}},
            6380,
        ),
    ],
    ids=["Redis in the operator's namespace", "Redis with its own labels and port"],
)
def test_the_budget_store_rule_follows_the_operator_config(environ: dict[str, str], peer: dict[str, Any], port: int) -> None:
    rule = _policy(config=OperatorConfig.from_env(environ))["spec"]["egress"][1]
    assert rule == {"to": [peer], "ports": [{"protocol": "TCP", "port": port}]}


def test_an_agent_naming_no_upstream_by_name_gets_no_open_egress() -> None:
    auth = {"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"], "keySecretRef": {"name": "k", "key": "k"}}
    egress = _policy(
        tool_policy=None,
        region_policy=None,
        agent_changes={"spec.auth": auth, "spec.models": [], "spec.toolPolicyRef": ..., "spec.regionPolicyRef": ...},
    )["spec"]["egress"]
    assert len(egress) == 2 and egress[0] == DNS_RULE
