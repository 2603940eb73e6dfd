"""The real kopf operator (``kopf run -m agentgov.controller.handlers``) against the API emulator.

One scenario per test, each driving the operator through the Kubernetes API only and checking
the kstatus invariants of every agentgov object after every step.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import kopf.testing
import pytest
import yaml
from harness.apiserver import ApiServer
from harness.builtin_schemas import validate_builtin
from harness.redis import free_port
from harness.waiting import wait_for

from agentgov.controller.status import status_violations

REPO = pathlib.Path(__file__).resolve().parents[2]
NS = "research"
AGD = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentdeployments"
TPOL = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/toolpolicies"
AGB = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentbudgets"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
AGENT = "research-assistant"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Api:
    """Synchronous JSON over HTTP to the emulator (the tests' own client, not the operator's)."""

    def __init__(self, server: ApiServer) -> None:
        self.base = str(server.url).rstrip("/")

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def get(self, path: str) -> dict[str, Any] | None:
        status, body = self.call("GET", path)
        return body if status == 200 else None

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call("POST", path, body)
        assert status in (200, 201), answer
        return answer  # type: ignore[no-any-return]

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call("PATCH", path, body, "application/merge-patch+json")
        assert status == 200, answer
        return answer  # type: ignore[no-any-return]

    def delete(self, path: str) -> int:
        return self.call("DELETE", path)[0]


def examples() -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return {d["kind"]: d for d in docs}


def secret(name: str, **data: str) -> dict[str, Any]:
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def agentgov_objects(api: Api) -> list[dict[str, Any]]:
    found = []
    for plural in ("agentdeployments", "agentbudgets", "toolpolicies", "regionpolicies"):
        listed = api.get(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/{plural}") or {"items": []}
        found += listed["items"]
    return found


def assert_kstatus(api: Api) -> None:
    """The status invariants, on every agentgov object that has a status yet."""
    for obj in agentgov_objects(api):
        if obj.get("status", {}).get("conditions"):
            assert status_violations(obj) == [], (obj["kind"], obj["metadata"]["name"], obj["status"])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c  # type: ignore[no-any-return]
    return {}


def children(api: Api) -> dict[str, dict[str, Any]]:
    """Every object owned by the AgentDeployment, by kind/name."""
    owned = {}
    for api_version, kind, path in (
        ("apps/v1", "Deployment", DEPLOYMENTS), ("v1", "Service", SERVICES), ("v1", "ConfigMap", CONFIGMAPS),
        ("v1", "ServiceAccount", f"/api/v1/namespaces/{NS}/serviceaccounts"),
        ("policy/v1", "PodDisruptionBudget", f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"),
        ("networking.k8s.io/v1", "Ingress", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"),
        ("networking.k8s.io/v1", "NetworkPolicy", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"),
    ):
        for item in (api.get(path) or {"items": []})["items"]:  # list items carry no kind, as on a real server
            if any(o.get("kind") == "AgentDeployment" for o in item["metadata"].get("ownerReferences", [])):
                owned[f"{kind}/{item['metadata']['name']}"] = {"apiVersion": api_version, "kind": kind, **item}
    return owned


OPERATOR = ["run", "-A", "--standalone", "-m", "agentgov.controller.handlers"]  # as `kopf run` would


def agentgov_registry() -> kopf.OperatorRegistry:
    """agentgov's handlers only. kopf's default registry holds every handler any module imported
    into this process registered (the harness's widget operator sets its own finalizer name at
    startup, for one), and a test of the agentgov operator must not run those."""
    from agentgov.controller import handlers

    source, registry = kopf.get_default_registry(), kopf.OperatorRegistry()
    for part in ("_activities", "_indexing", "_watching", "_spawning", "_changing", "_webhooks"):
        for handler in getattr(source, part).get_all_handlers():
            if getattr(handler.fn, "__module__", None) == handlers.__name__:
                getattr(registry, part).append(handler)
    return registry


def kopf_runner() -> kopf.testing.KopfRunner:
    return kopf.testing.KopfRunner(OPERATOR, timeout=60, registry=agentgov_registry())


def prepared(server: ApiServer, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Api:
    """A client for ``server`` with the examples' namespace, and operator settings in the env."""
    for name, value in {"AGENTGOV_RESYNC_SECONDS": "1", **settings}.items():
        monkeypatch.setenv(name, value)
    api = Api(server)
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return api


class OperatorProcess:
    """``agentgov operator`` as a process of its own (fresh imports, its own settings), as a
    Deployment runs it; its output goes to ``log``."""

    def __init__(self, process: subprocess.Popen[bytes], log: pathlib.Path) -> None:
        self.process, self.log = process, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def operator_process(log: pathlib.Path, *args: str, stop_timeout: float = 20, **env: str) -> Iterator[OperatorProcess]:
    """Run ``agentgov operator --standalone ARGS`` with ``env`` on top of this process's environment
    (the kubeconfig fixture's KUBECONFIG included); stopped with SIGTERM (SIGKILL after ``stop_timeout``).
    Its liveness endpoint gets a free port unless ``args`` give one."""
    if "--liveness" not in args:
        args = ("--liveness", f"http://127.0.0.1:{free_port()}/healthz", *args)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentgov.cli", "operator", "--standalone", "--metrics-port", "0", *args],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield OperatorProcess(process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def events_of(api: Api, name: str) -> list[dict[str, Any]]:
    """The Kubernetes Events about the object ``name`` in the test namespace, oldest first."""
    listed = api.get(f"/api/v1/namespaces/{NS}/events") or {"items": []}
    return [e for e in listed["items"] if e.get("involvedObject", {}).get("name") == name]


@pytest.fixture()
def operator(kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    api = prepared(apiserver_in_thread, monkeypatch)
    with kopf_runner() as runner:
        yield api
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def create_examples(api: Api, *, with_secrets: bool) -> None:
    objs = examples()
    if with_secrets:
        api.create(SECRETS, secret("openai-api-key", **{"api-key": "sk-canary-0000000000000000"}))
        api.create(SECRETS, secret("research-db", url="postgres://canary@db/research"))
        api.create(SECRETS, secret("ticketing-token", token="canary-ticket-token"))
        api.create(SECRETS, secret("agentgov-redis", url="redis://canary-redis:6379/0"))
        # Materialised from Vault by the secrets sync (issue 6); created by hand until then.
        api.create(SECRETS, secret("research-assistant-secrets", SEARCH_API_KEY="canary-search-key"))
    for kind, plural in (("RegionPolicy", "regionpolicies"), ("ToolPolicy", "toolpolicies"),
                         ("AgentBudget", "agentbudgets"), ("AgentDeployment", "agentdeployments")):
        api.create(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/{plural}", objs[kind])


def roll_out(api: Api) -> None:
    """Play the Deployment controller: report the current template as fully rolled out."""
    deployment = wait_for(lambda: api.get(f"{DEPLOYMENTS}/{AGENT}"), what="the agent's Deployment")
    replicas = deployment["spec"].get("replicas", 3)
    api.call("PATCH", f"{DEPLOYMENTS}/{AGENT}/status", {"status": {
        "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
        "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}},
        "application/merge-patch+json")


def test_an_agent_with_a_missing_secret_is_stalled_naming_it_and_gets_no_children(operator: Api) -> None:
    create_examples(operator, with_secrets=False)
    agent = wait_for(lambda: operator.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Stalled").get("status") == "True",
                     what="Stalled on the missing Secrets")
    assert condition(agent, "Stalled")["reason"] == "MissingReference"
    assert "Secret research/openai-api-key" in condition(agent, "Stalled")["message"]
    assert condition(agent, "Ready")["status"] == "False"
    assert children(operator) == {}
    assert_kstatus(operator)


def test_an_agent_becomes_ready_with_valid_children_and_a_second_reconcile_writes_nothing(
    operator: Api, apiserver_in_thread: ApiServer
) -> None:
    create_examples(operator, with_secrets=True)
    expected = {"Deployment", "Service", "ServiceAccount", "ConfigMap", "HorizontalPodAutoscaler",
                "PodDisruptionBudget", "Ingress", "NetworkPolicy"}
    # Children are created one after the other: wait for all of them, not just the first few.
    owned = wait_for(lambda: children(operator), lambda c: expected <= {key.split("/")[0] for key in c},
                     what="the children")
    assert_kstatus(operator)
    for child in owned.values():
        validate_builtin({k: v for k, v in child.items() if k != "status"})
    assert "replicas" not in owned[f"Deployment/{AGENT}"]["spec"], "the HPA owns replicas when autoscaling"
    bundle = next(c for k, c in owned.items() if k.startswith("ConfigMap/"))["data"]["bundle.json"]
    assert "canary" not in json.dumps(owned) and "canary" not in bundle

    roll_out(operator)
    agent = wait_for(lambda: operator.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Ready").get("status") == "True",
                     what="Ready")
    assert agent["status"]["observedGeneration"] == agent["metadata"]["generation"]
    assert agent["status"]["readyReplicas"] == 3
    assert agent["status"]["policyBundleHash"].startswith("sha256:")
    assert_kstatus(operator)

    # Idempotence: two more resyncs of this agent (seen as reads of its Deployment) write nothing
    # (once the budget's own first writes, its finalizer and status, are done).
    wait_for(lambda: operator.get(f"{AGB}/research-team"),
             lambda b: bool(condition(b, "SpendStoreAvailable")) and bool(b["metadata"].get("finalizers")),
             what="the budget's first status and finalizer")
    seen = len(list(apiserver_in_thread))
    version = apiserver_in_thread.resource_version
    wait_for(lambda: [r for r in list(apiserver_in_thread)[seen:] if r.method == "GET"
                      and str(r.url.path).endswith(f"/deployments/{AGENT}")],
             lambda reads: len(reads) >= 2, what="two resyncs", timeout=15)
    writes = [f"{r.method} {r.url.path}" for r in list(apiserver_in_thread)[seen:] if r.method in WRITES]
    assert writes == [] and apiserver_in_thread.resource_version == version


def test_a_reconcile_that_writes_children_posts_a_normal_reconciled_event_naming_them(operator: Api) -> None:
    # settings.posting.level is WARNING; kopf.info() would post nothing at that level.
    create_examples(operator, with_secrets=True)
    events = wait_for(lambda: [e for e in events_of(operator, AGENT) if e.get("reason") == "Reconciled"],
                      what="a Reconciled event")
    assert events[0]["type"] == "Normal"
    assert f"Deployment/{AGENT} created" in events[0]["message"]
    assert "canary" not in json.dumps(events)


def test_a_child_deleted_or_edited_by_hand_is_restored(operator: Api) -> None:
    create_examples(operator, with_secrets=True)
    owned = wait_for(lambda: children(operator), lambda c: f"Service/{AGENT}" in c, what="the Service")
    original_ports = owned[f"Service/{AGENT}"]["spec"]["ports"]
    assert operator.delete(f"{SERVICES}/{AGENT}") == 200
    restored = wait_for(lambda: operator.get(f"{SERVICES}/{AGENT}"), what="the Service restored")
    assert restored["spec"]["ports"] == original_ports
    configmap = next(k for k in owned if k.startswith("ConfigMap/")).split("/")[1]
    operator.patch(f"{CONFIGMAPS}/{configmap}", {"data": {"bundle.json": "{}"}})
    wait_for(lambda: operator.get(f"{CONFIGMAPS}/{configmap}"), lambda c: c["data"]["bundle.json"] != "{}",
             what="the bundle restored")
    assert_kstatus(operator)


def test_a_tool_policy_change_rolls_a_new_bundle_to_its_agents(operator: Api) -> None:
    create_examples(operator, with_secrets=True)
    deployment = wait_for(lambda: operator.get(f"{DEPLOYMENTS}/{AGENT}"), what="the Deployment")
    before = deployment["spec"]["template"]["metadata"]["annotations"]["agentgov.io/bundle-hash"]
    policy = operator.get(f"{TPOL}/research-tools")
    tools = copy.deepcopy(policy["spec"]["tools"]) + [{"name": "calculator", "upstream": "https://calc.example.com"}]
    operator.patch(f"{TPOL}/research-tools", {"spec": {"tools": tools}})
    after = wait_for(
        lambda: operator.get(f"{DEPLOYMENTS}/{AGENT}")["spec"]["template"]["metadata"]["annotations"]["agentgov.io/bundle-hash"],
        lambda h: h != before, what="a new bundle hash on the pod template")
    agent = wait_for(lambda: operator.get(f"{AGD}/{AGENT}"),
                     lambda a: a.get("status", {}).get("policyBundleHash") == after, what="status showing the new hash")
    assert agent["status"]["policyBundleHash"] == after
    tpol = wait_for(lambda: operator.get(f"{TPOL}/research-tools"), lambda p: p.get("status", {}).get("tools") == 4,
                    what="the policy's status counting 4 tools")
    assert condition(tpol, "Ready")["status"] == "True"
    assert_kstatus(operator)


def test_a_reference_to_a_missing_budget_stalls_the_agent_and_leaves_its_pods_alone(operator: Api) -> None:
    create_examples(operator, with_secrets=True)
    wait_for(lambda: children(operator), lambda c: f"Deployment/{AGENT}" in c, what="the Deployment")
    before = {k: v["metadata"]["resourceVersion"] for k, v in children(operator).items()}
    operator.patch(f"{AGD}/{AGENT}", {"spec": {"budgetRefs": ["research-team", "no-such-budget"]}})
    agent = wait_for(lambda: operator.get(f"{AGD}/{AGENT}"),
                     lambda a: condition(a, "Stalled").get("reason") == "MissingReference", what="Stalled")
    assert "AgentBudget research/no-such-budget" in condition(agent, "Stalled")["message"]
    assert {k: v["metadata"]["resourceVersion"] for k, v in children(operator).items()} == before
    assert_kstatus(operator)


def test_data_that_no_region_may_hold_stalls_the_agent_naming_the_field(operator: Api) -> None:
    objs = examples()
    region = copy.deepcopy(objs["RegionPolicy"])
    for r in region["spec"]["regions"]:
        r["dataClasses"] = ["public", "internal"]
    region["spec"]["rules"] = []
    objs["RegionPolicy"] = region
    operator.create(SECRETS, secret("openai-api-key", **{"api-key": "x"}))
    operator.create(SECRETS, secret("research-db", url="x"))
    operator.create(SECRETS, secret("ticketing-token", token="x"))
    operator.create(SECRETS, secret("agentgov-redis", url="x"))
    operator.create(SECRETS, secret("research-assistant-secrets", SEARCH_API_KEY="x"))
    for kind, plural in (("RegionPolicy", "regionpolicies"), ("ToolPolicy", "toolpolicies"),
                         ("AgentBudget", "agentbudgets"), ("AgentDeployment", "agentdeployments")):
        operator.create(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/{plural}", objs[kind])
    agent = wait_for(lambda: operator.get(f"{AGD}/{AGENT}"),
                     lambda a: condition(a, "Stalled").get("reason") == "InvalidSpec", what="Stalled")
    assert "spec.dataClasses" in condition(agent, "Stalled")["message"]
    assert children(operator) == {}
    assert_kstatus(operator)


def test_deleting_the_agent_removes_its_children(operator: Api) -> None:
    create_examples(operator, with_secrets=True)
    wait_for(lambda: children(operator), lambda c: f"Deployment/{AGENT}" in c, what="the Deployment")
    agent = operator.get(f"{AGD}/{AGENT}")
    # kopf's daemons need a finalizer to stop cleanly; it is the only one, and no cleanup work hangs on it.
    assert agent["metadata"]["finalizers"] == ["agentgov.io/finalizer"]
    assert operator.delete(f"{AGD}/{AGENT}") == 200
    wait_for(lambda: operator.get(f"{AGD}/{AGENT}"), lambda a: a is None, what="the agent gone")
    wait_for(lambda: children(operator), lambda c: c == {}, what="the children collected")


def test_with_the_operator_gone_for_good_removing_the_finalizer_completes_deletion(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The procedure docs/operator.md gives for an uninstalled operator."""
    api = prepared(apiserver_in_thread, monkeypatch)
    with kopf_runner():
        create_examples(api, with_secrets=True)
        wait_for(lambda: children(api), lambda c: f"Deployment/{AGENT}" in c, what="the Deployment")
    assert api.delete(f"{AGD}/{AGENT}") == 200
    stuck = api.get(f"{AGD}/{AGENT}")
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp"), "held by the finalizer"
    api.patch(f"{AGD}/{AGENT}", {"metadata": {"finalizers": None}})
    wait_for(lambda: api.get(f"{AGD}/{AGENT}"), lambda a: a is None, what="the agent gone")
    wait_for(lambda: children(api), lambda c: c == {}, what="the children collected")


@pytest.mark.parametrize(
    "method, path, status, delay",
    [
        ("POST", r"/deployments$", 500, 0.0),
        ("PATCH", r"/agentdeployments/[^/]+/status$", 409, 0.0),
        ("POST", r"/services$", 429, 0.0),
        ("GET", r"/deployments/research-assistant$", None, 3.0),
    ],
    ids=[
        "a server error creating the Deployment is retried",
        "a conflict writing status is retried",
        "throttling creating the Service is retried",
        "a read slower than the operator's timeout is retried",
    ],
)
def test_api_faults_are_retried_until_the_agent_converges(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    method: str, path: str, status: int | None, delay: float,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_HANDLER_TIMEOUT_SECONDS="1")
    fault = apiserver_in_thread.inject_fault(method, path, status=status, delay=delay, times=2)
    with kopf_runner():
        create_examples(api, with_secrets=True)
        wait_for(lambda: children(api), lambda c: {f"Deployment/{AGENT}", f"Service/{AGENT}"} <= set(c),
                 what="the children despite the faults", timeout=30)
        roll_out(api)
        wait_for(lambda: api.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Ready").get("status") == "True",
                 what="Ready despite the faults", timeout=30)
        assert fault.hits == 2
        assert_kstatus(api)
    assert len([k for k in children(api) if k.startswith("Deployment/")]) == 1


def test_an_operator_restarted_mid_reconcile_finishes_the_job(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch)
    # The first reconcile stalls creating the Service, after the Deployment exists.
    stall = apiserver_in_thread.inject_fault("POST", r"/services$", delay=30.0, times=1)
    with kopf_runner():
        create_examples(api, with_secrets=True)
        wait_for(lambda: stall.hits, lambda hits: hits == 1, what="the reconcile stalled on the Service")
        assert f"Deployment/{AGENT}" in children(api) and f"Service/{AGENT}" not in children(api)
    with kopf_runner():
        owned = wait_for(lambda: children(api), lambda c: f"Service/{AGENT}" in c and f"Ingress/{AGENT}" in c,
                         what="the remaining children after the restart", timeout=20)
        roll_out(api)
        wait_for(lambda: api.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Ready").get("status") == "True",
                 what="Ready after the restart", timeout=20)
        assert_kstatus(api)
    assert sorted(k.split("/")[0] for k in owned) == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
         "PodDisruptionBudget", "Service", "ServiceAccount"])
