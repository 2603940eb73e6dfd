"""The operator's audit log, written by the real kopf operator against the API emulator: agent and
policy changes become ``agent.*`` / ``toolpolicy.*`` / ``regionpolicy.*`` records naming the field
manager from ``managedFields``; a RegionPolicy that leaves an agent's data nowhere to go becomes a
``permission.denied`` record; the log is signed and verifies, and ``agentgov audit search`` finds
the records (``--type permission.denied`` included)."""
from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from harness import apiserver
from harness.apiserver import ApiServer
from harness.waiting import wait_for
from test_operator import AGD, NS, SECRETS, TPOL, Api, condition, examples, kopf_runner, prepared, secret

from agentgov.audit.chain import verify_log
from agentgov.audit.digest import load_verify_key
from agentgov.cli import main

AGENT = "audited-agent"
RPOL = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/regionpolicies"
AGB = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/agentbudgets"


def digest_keys(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = directory / "digest.pem", directory / "digest.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def managed(manager: str, time: str, operation: str = "Update") -> dict[str, Any]:
    """A managedFields entry as the API server writes it for a client's request."""
    return {"manager": manager, "operation": operation, "apiVersion": "agentgov.io/v1alpha1", "time": time,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}


def agent_body() -> dict[str, Any]:
    """The example agent without provider secrets (their sync is not what this test is about)."""
    body = copy.deepcopy(examples()["AgentDeployment"])
    body["metadata"]["name"] = AGENT
    body["spec"].pop("secrets", None)
    body["spec"]["ingress"] = {"enabled": False}
    return body


def records(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of_type(path: pathlib.Path, *types: str) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["event_type"] in types]


@pytest.fixture()
def audited(kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
            tmp_path: pathlib.Path) -> tuple[Api, pathlib.Path, pathlib.Path]:
    private, public = digest_keys(tmp_path)
    log = tmp_path / "audit" / "operator-audit.jsonl"
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_AUDIT_LOG=str(log),
                   AGENTGOV_AUDIT_DIGEST_KEY_FILE=str(private), AGENTGOV_AUDIT_DIGEST_RECORDS="3")
    api.create(SECRETS, secret("openai-api-key", **{"api-key": "sk-canary-0000000000000000"}))
    api.create(SECRETS, secret("agentgov-redis", url="redis://canary-redis:6379/0"))
    return api, log, public


def test_agent_changes_are_recorded_with_their_field_manager_and_the_signed_log_verifies(
        audited: tuple[Api, pathlib.Path, pathlib.Path], capsys: pytest.CaptureFixture[str]) -> None:
    api, log, public = audited
    objs = examples()
    with kopf_runner() as runner:
        for plural, kind in (("regionpolicies", "RegionPolicy"), ("toolpolicies", "ToolPolicy"),
                             ("agentbudgets", "AgentBudget")):
            api.create(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/{plural}", objs[kind])
        body = agent_body()
        body["metadata"]["managedFields"] = [managed("kubectl-client-side-apply", "2026-01-10T08:00:00Z")]
        api.create(AGD, body)
        created = wait_for(lambda: of_type(log, "agent.created"), what="an agent.created record")
        assert created[0]["user"] == "kubectl-client-side-apply"
        assert created[0]["agent"] == f"{NS}/{AGENT}"
        assert created[0]["metadata"]["user_source"] == "managedFields"

        # An edit: the API server would append the editor's entry; the emulator keeps what it is sent.
        live = api.get(f"{AGD}/{AGENT}")
        assert live is not None
        api.patch(f"{AGD}/{AGENT}", {"metadata": {"managedFields": [
            *live["metadata"].get("managedFields", []), managed("kubectl-edit", "2026-01-10T09:00:00Z")]},
            "spec": {"autoscaling": {"maxReplicas": 12}, "cache": {"ttlSeconds": 600}}})
        updated = wait_for(lambda: of_type(log, "agent.updated"), what="an agent.updated record")
        assert updated[0]["user"] == "kubectl-edit"
        assert updated[0]["metadata"]["changed"] == ["spec.autoscaling.maxReplicas", "spec.cache.ttlSeconds"]

        # A policy edit that leaves the agent's confidential data no region: refused when compiling.
        api.patch(f"{RPOL}/eu-onprem", {"spec": {"rules": [{
            "name": "confidential-in-eu-west", "match": {"dataClasses": ["confidential"]},
            "route": {"regions": ["eu-west-1"]}, "enforcement": "Required"}]}})
        denied = wait_for(lambda: of_type(log, "permission.denied"), what="a permission.denied record")
        assert denied[0]["agent"] == f"{NS}/{AGENT}" and denied[0]["result"] == "denied"
        assert denied[0]["metadata"]["field"] == "spec.dataClasses"
        assert "Required rule 'confidential-in-eu-west'" in denied[0]["metadata"]["rule"]
        assert condition(api.get(f"{AGD}/{AGENT}"), "Stalled").get("status") == "True"
        policy = wait_for(lambda: of_type(log, "regionpolicy.updated"), what="a regionpolicy.updated record")
        assert policy[0]["metadata"]["changed"] == ["spec.rules[0].name", "spec.rules[0].route.regions"]

        assert api.delete(f"{AGD}/{AGENT}") == 200
        deleted = wait_for(lambda: of_type(log, "agent.deleted"), what="an agent.deleted record")
        assert deleted[0]["user"] == "unknown"
    assert runner.exception is None, runner.output

    kinds = [r["event_type"] for r in records(log)]
    for kind in ("toolpolicy.created", "regionpolicy.created", "budget.created"):
        assert kinds.count(kind) == 1, kinds
    assert kinds.count("agent.created") == 1 and kinds.count("agent.updated") == 1, kinds
    assert kinds[-1] == "audit.digest"  # the writer signs what is left when the operator stops
    key = load_verify_key(public)
    report = verify_log(log, keys={key.key_id: key})
    assert report.ok, [str(p) for p in report.problems]
    assert report.digests >= 3 and report.signatures_checked == report.digests and report.unsigned_tail is None

    assert main(["audit", "verify", str(log), "--public-key", str(public)]) == 0
    capsys.readouterr()
    assert main(["audit", "search", str(log), "--type", "permission.denied", "-o", "jsonl"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in found] == [denied[0]["seq"]]
    assert main(["audit", "search", str(log), "--type", "agent.*", "--order", "oldest", "-o", "jsonl"]) == 0
    assert [json.loads(line)["event_type"] for line in capsys.readouterr().out.splitlines()] == [
        "agent.created", "agent.updated", "agent.deleted"]


def test_without_managed_fields_the_last_applied_annotation_means_kubectl(
        audited: tuple[Api, pathlib.Path, pathlib.Path]) -> None:
    api, log, _ = audited
    body = agent_body()
    body["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    with kopf_runner() as runner:
        api.create(TPOL, examples()["ToolPolicy"])
        api.create(AGD, body)
        created = wait_for(lambda: of_type(log, "agent.created"), what="an agent.created record")
        tool = wait_for(lambda: of_type(log, "toolpolicy.created"), what="a toolpolicy.created record")
    assert runner.exception is None, runner.output
    assert (created[0]["user"], created[0]["metadata"]["user_source"]) == ("kubectl", "last-applied-annotation")
    assert (tool[0]["user"], tool[0]["metadata"]["user_source"]) == ("unknown", "unknown")


def test_objects_that_exist_when_the_operator_starts_are_not_recorded_as_created(
        audited: tuple[Api, pathlib.Path, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    api, log, _ = audited
    with monkeypatch.context() as yesterday:  # created well before the operator starts
        yesterday.setattr(apiserver, "now_rfc3339", lambda: "2026-01-09T08:00:00Z")
        api.create(TPOL, examples()["ToolPolicy"])
    with kopf_runner() as runner:
        api.create(AGB, examples()["AgentBudget"])
        wait_for(lambda: of_type(log, "budget.created"), what="a budget.created record")
        api.patch(f"{TPOL}/research-tools", {"spec": {"defaultAction": "Deny", "roles": [
            {"name": "auditor", "permissions": ["tool:read", "tool:write"]}]}})
        wait_for(lambda: of_type(log, "toolpolicy.updated"), what="a toolpolicy.updated record")
    assert runner.exception is None, runner.output
    kinds = [r["event_type"] for r in records(log)]
    assert "toolpolicy.created" not in kinds
    updated = of_type(log, "toolpolicy.updated")
    assert len(updated) == 1 and updated[0]["metadata"]["changed"] == ["spec.roles[0].permissions"]


def test_an_agent_changed_while_the_operator_was_down_is_recorded_at_its_next_start(
        audited: tuple[Api, pathlib.Path, pathlib.Path]) -> None:
    api, log, public = audited
    with kopf_runner() as runner:
        api.create(AGD, agent_body())
        wait_for(lambda: of_type(log, "agent.created"), what="an agent.created record")
        wait_for(lambda: api.get(f"{AGD}/{AGENT}"),
                 lambda a: "agentgov.io/last-handled-configuration" in (a["metadata"].get("annotations") or {}),
                 what="kopf's diff base on the agent")
    assert runner.exception is None, runner.output
    api.patch(f"{AGD}/{AGENT}", {"spec": {"cache": {"ttlSeconds": 60}}})
    with kopf_runner() as runner:
        updated = wait_for(lambda: of_type(log, "agent.updated"), what="an agent.updated record after the restart")
    assert runner.exception is None, runner.output
    assert updated[0]["metadata"]["changed"] == ["spec.cache.ttlSeconds"]
    assert [r["event_type"] for r in records(log)].count("agent.created") == 1
    key = load_verify_key(public)
    assert verify_log(log, keys={key.key_id: key}).ok
