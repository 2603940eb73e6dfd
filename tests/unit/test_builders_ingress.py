"""The Service and the Ingress: callers reach the sidecar, never the agent; the Ingress
carries TLS, the cert-manager issuer and ingress-nginx limits matching the sidecar's."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import child, container, make_inputs

from agentgov.controller.builders import build_children
from agentgov.controller.builders.ingress import nginx_size


def _children(**changes: Any) -> list[dict[str, Any]]:
    return build_children(make_inputs(agent_changes=changes))


def test_the_service_targets_the_sidecar_port_never_the_agents() -> None:
    children = _children()
    service = child(children, "Service")["spec"]
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    sidecar = container(child(children, "Deployment"), "agentgov-sidecar")
    assert [p["name"] for p in sidecar["ports"]] == ["http"] and sidecar["ports"][0]["containerPort"] == 8080
    assert service["selector"] == child(children, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["type"] == "ClusterIP"


def test_the_example_ingress_routes_its_host_to_the_service_with_tls_and_limits() -> None:
    ingress = child(_children(), "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "cert-manager.io/cluster-issuer": "letsencrypt-prod",
        "nginx.ingress.kubernetes.io/limit-rpm": "100",
        "nginx.ingress.kubernetes.io/proxy-body-size": "10m",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "300",
    }
    assert ingress["spec"] == {
        "ingressClassName": "nginx",
        "tls": [{"hosts": ["research.agents.example.com"], "secretName": "research-assistant-tls"}],
        "rules": [
            {
                "host": "research.agents.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "research-assistant", "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ],
    }


@pytest.mark.parametrize(
    "changes, tls, issuer",
    [
        ({"spec.ingress.tls": {"secretName": "own-cert"}}, [{"hosts": ["research.agents.example.com"], "secretName": "own-cert"}], "letsencrypt-prod"),
        ({"spec.ingress.tls": ...}, [{"hosts": ["research.agents.example.com"], "secretName": "research-assistant-tls"}], "letsencrypt-prod"),
        ({"spec.ingress.clusterIssuer": ...}, [{"hosts": ["research.agents.example.com"], "secretName": "research-assistant-tls"}], None),
        ({"spec.ingress.clusterIssuer": ..., "spec.ingress.tls": ...}, None, None),
    ],
    ids=[
        "a TLS Secret named: used as it is",
        "an issuer and no TLS Secret: cert-manager fills <agent>-tls",
        "a TLS Secret and no issuer: no cert-manager annotation",
        "neither: plain HTTP",
    ],
)
def test_tls_and_the_cert_manager_issuer_follow_the_spec(changes: dict[str, Any], tls: Any, issuer: str | None) -> None:
    ingress = child(_children(**changes), "Ingress")
    assert ingress["spec"].get("tls") == tls
    assert ingress["metadata"]["annotations"].get("cert-manager.io/cluster-issuer") == issuer


def test_an_ingress_without_a_class_leaves_it_to_the_cluster_default() -> None:
    assert "ingressClassName" not in child(_children(**{"spec.ingress.className": ...}), "Ingress")["spec"]


def test_ingress_limits_follow_the_rate_limit_body_size_and_timeout_of_the_spec() -> None:
    ingress = child(
        _children(**{"spec.ingress.requestsPerMinute": 600, "spec.sidecar.maxBodyBytes": "512Ki", "spec.sidecar.upstreamTimeoutSeconds": 90}),
        "Ingress",
    )
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rpm"] == "600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "512k"
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "90"


@pytest.mark.parametrize(
    "size, text",
    [(10 * 1024 * 1024, "10m"), (1536 * 1024, "1536k"), (1000, "1000")],
    ids=["whole mebibytes", "whole kibibytes", "plain bytes"],
)
def test_body_sizes_are_written_in_nginx_units(size: int, text: str) -> None:
    assert nginx_size(size) == text
