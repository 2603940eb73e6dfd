"""Every request the running operator sends is one its Helm chart's RBAC grants.

The other half of tests/unit/test_rbac.py (which derives the roles from the code and compares
them with the chart's): here ``agentgov operator`` runs as a Deployment of the chart would run it
(with kopf peering, so the peering calls are seen too) against the API emulator, is driven
through an agent's life (children created, rolled out, Ingress turned off and deleted, budget
status written, a Secret deleted so that the agent stalls with a Warning Event), and each request it sent is checked against the ClusterRole
and Roles the chart renders for the same mode. The emulator does not enforce RBAC, so this is
where a call the roles forgot would show.
"""
from __future__ import annotations

import contextlib
import copy
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import helm_python as helm
import kmock
import pytest
import yaml
from harness.apiserver import ApiServer
from harness.redis import free_port
from harness.waiting import wait_for
from test_operator import AGD, AGENT, NS, Api, condition, create_examples, events_of, prepared, roll_out

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentgov"
OPERATOR_ROLE = "agentgov-operator"
Permission = tuple[str, str, str]


def render_chart(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(copy.deepcopy(dict(values)), name="agentgov", namespace="agentgov-system", is_install=True)
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def granted(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def permission(request: kmock.Request) -> Permission | None:
    """The RBAC (group, resource[/subresource], verb) a request needs; None for discovery."""
    if request.resource is None:
        return None
    method = request.method.upper()
    if method == "GET":
        verb = "watch" if request.params.get("watch") in ("true", "1") else "get" if request.name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if request.name else "deletecollection")
    resource = str(request.resource.plural) + (f"/{request.subresource}" if request.subresource else "")
    return request.resource.group or "", resource, verb


def install_peering(api: Api, chart: Iterable[Mapping[str, Any]]) -> None:
    """Create kopf's peering CRDs and the peering objects ``chart`` (rendered) holds."""
    chart = list(chart)
    for crd in (o for o in chart if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "kopf.dev"):
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", dict(crd))
    for peering in (o for o in chart if o["kind"] in ("ClusterKopfPeering", "KopfPeering")):
        scope = f"/namespaces/{peering['metadata']['namespace']}" if peering["kind"] == "KopfPeering" else ""
        plural = "kopfpeerings" if peering["kind"] == "KopfPeering" else "clusterkopfpeerings"
        api.create(f"/apis/kopf.dev/v1{scope}/{plural}", dict(peering))


@contextlib.contextmanager
def operator_with_peering(log: pathlib.Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``agentgov operator`` as the chart runs it with replicas > 1 (no --standalone), with
    ``env`` on top of this process's environment; its liveness endpoint gets a free port unless
    ``args`` give one."""
    if "--liveness" not in args:
        args = ("--liveness", f"http://127.0.0.1:{free_port()}/healthz", *args)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentgov.cli", "operator", "--peering", "agentgov", "--metrics-port", "0", *args],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "listed namespaces"])
def test_every_request_the_operator_sends_is_granted_by_the_charts_roles(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path, namespaced: bool,
) -> None:
    values: dict[str, Any] = {"replicas": 2, **({"watchNamespaces": [NS]} if namespaced else {})}
    chart = render_chart(values)
    [cluster_role] = [o for o in chart if o["kind"] == "ClusterRole" and o["metadata"]["name"] == OPERATOR_ROLE]
    cluster_wide = granted(cluster_role["rules"])
    roles = {o["metadata"]["namespace"]: granted(o["rules"]) for o in chart if o["kind"] == "Role"}

    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS="0.5")
    install_peering(api, chart)
    create_examples(api, with_secrets=True)
    seen = len(list(apiserver_in_thread))

    args = ("-n", NS) if namespaced else ()
    log = tmp_path / "operator.log"
    with operator_with_peering(log, *args) as process:
        # An agent's life: children created, rolled out, Ready; Ingress turned off and deleted.
        wait_for(lambda: api.get(f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/{AGENT}"),
                 what="the agent's Ingress", timeout=60)
        roll_out(api)
        wait_for(lambda: api.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Ready").get("status") == "True",
                 what="Ready", timeout=60)
        api.patch(f"{AGD}/{AGENT}", {"spec": {"ingress": {"enabled": False}}})
        wait_for(lambda: api.get(f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/{AGENT}"),
                 lambda ingress: ingress is None, what="the Ingress deleted", timeout=60)
        # The budget's status written by its timer (no store configured: said so).
        wait_for(lambda: api.get(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentbudgets/research-team"),
                 lambda b: condition(b, "SpendStoreAvailable").get("reason") == "NotConfigured",
                 what="the budget's status", timeout=60)
        # A Secret the agent needs goes away: it stalls, and a Warning Event names it.
        assert api.delete(f"/api/v1/namespaces/{NS}/secrets/research-db") == 200
        wait_for(lambda: events_of(api, AGENT), what="an Event about the agent", timeout=60)
        assert process.poll() is None, log.read_text(errors="replace")

    operator_requests = [r for r in list(apiserver_in_thread)[seen:]
                         if not str(r.headers.get("User-Agent", "")).startswith("Python-urllib")]
    observed: dict[Permission, set[str | None]] = {}
    for request in operator_requests:
        needed = permission(request)
        if needed is not None:
            observed.setdefault(needed, set()).add(request.namespace)
    refused = sorted(
        f"{verb} {group or 'core'}/{resource} in {namespace or 'the cluster'}"
        for (group, resource, verb), namespaces in observed.items() for namespace in namespaces
        if (group, resource, verb) not in cluster_wide | (roles.get(namespace, set()) if namespace else set())
    )
    assert refused == [], f"requests the chart's roles would refuse:\n{chr(10).join(refused)}\n{log.read_text(errors='replace')[-3000:]}"
    # The run went through the paths that need each kind of permission.
    peerings = "kopfpeerings" if namespaced else "clusterkopfpeerings"
    assert {("", "events", "create"), ("networking.k8s.io", "ingresses", "delete"), ("apps", "deployments", "watch"),
            ("agentgov.io", "agentdeployments/status", "patch"), ("agentgov.io", "agentbudgets/status", "patch"),
            ("agentgov.io", "toolpolicies/status", "patch"), ("agentgov.io", "agentdeployments", "patch"),
            ("", "secrets", "get"), ("kopf.dev", peerings, "patch"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "watch")} <= set(observed)
