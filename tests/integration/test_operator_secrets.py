"""Agent secrets from AWS Secrets Manager and Vault: the real operator (``agentgov operator`` as its
own process) against the API emulator, with real providers behind real SDKs — moto's server
through boto3, the local Vault server through hvac (Kubernetes auth with a service account
token file).

What is checked: a value is materialised into ``<agent>-secrets`` (owned by the agent, versions
in an annotation) and the agent becomes Ready; a changed value plus a refresh request updates
the Secret and rolls the pods (a new ``agentgov.io/secrets-hash``), an unchanged refresh writes
nothing; rotation (annotation and ``agentgov secrets rotate``) writes a new version at the
source and rolls the pods; a provider that stops answering keeps the last good value, says so
in ``SecretsSynced`` and leaves the children alone, then recovers; a missing secret and a
denied one stall the agent with distinct reasons; a canary value appears in the Secret's data
and nowhere else (the agent's spec and status, Events, the operator's log and its metrics).
The kstatus rules hold after every step. The operator only ever gets provider credentials as
files (a shared-credentials file, a service account token), never as values in its environment.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import pathlib
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import hvac
import pytest
from harness.apiserver import ApiServer
from harness.elasticsearch import ElasticsearchServer
from harness.moto import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoServer
from harness.redis import free_port
from harness.vault import VaultServer, running_vault
from harness.waiting import wait_for
from test_operator import (
    AGD,
    AGENT,
    DEPLOYMENTS,
    NS,
    SECRETS,
    Api,
    OperatorProcess,
    assert_kstatus,
    children,
    condition,
    events_of,
    examples,
    operator_process,
    prepared,
    roll_out,
    secret,
)

from agentgov.cli import main

MATERIALIZED = f"{SECRETS}/{AGENT}-secrets"
AWS_SECRET = "agents/research"
SEARCH = [{"name": "SEARCH_API_KEY", "aws": {"name": AWS_SECRET, "key": "search"}},
          {"name": "DATABASE_URL", "secretKeyRef": {"name": "research-db", "key": "url"}}]
SECRETS_HASH = "agentgov.io/secrets-hash"
TIMEOUT = 30


# --- setup ------------------------------------------------------------------------------------

def create_agent(api: Api, secrets_spec: list[dict[str, Any]]) -> None:
    """The example agent and what it references, with ``spec.secrets`` replaced."""
    objs = examples()
    for name, data in (("openai-api-key", {"api-key": "sk-test-0000"}), ("research-db", {"url": "postgres://db/r"}),
                       ("ticketing-token", {"token": "ticket-0000"}), ("agentgov-redis", {"url": "redis://r:6379/0"})):
        api.create(SECRETS, secret(name, **data))
    for kind, plural in (("RegionPolicy", "regionpolicies"), ("ToolPolicy", "toolpolicies"),
                         ("AgentBudget", "agentbudgets")):
        api.create(f"/apis/agentgov.io/v1alpha1/namespaces/{NS}/{plural}", objs[kind])
    agent = copy.deepcopy(objs["AgentDeployment"])
    agent["spec"]["secrets"] = secrets_spec
    api.create(AGD, agent)


def materialized(api: Api) -> dict[str, str]:
    found = api.get(MATERIALIZED)
    return {k: base64.b64decode(v).decode() for k, v in ((found or {}).get("data") or {}).items()}


def agent(api: Api) -> dict[str, Any]:
    found = api.get(f"{AGD}/{AGENT}")
    assert found is not None
    return found


def entry(obj: dict[str, Any], name: str = "SEARCH_API_KEY") -> dict[str, Any]:
    return next((e for e in obj.get("status", {}).get("secrets") or [] if e["name"] == name), {})


def secrets_hash(api: Api) -> str:
    deployment = api.get(f"{DEPLOYMENTS}/{AGENT}") or {}
    return str(deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}).get(SECRETS_HASH))


def request(api: Api, kind: str, value: str) -> None:
    api.patch(f"{AGD}/{AGENT}", {"metadata": {"annotations": {f"agentgov.io/{kind}-secrets": value}}})


def handled(api: Api, field: str, request_id: str, what: str) -> dict[str, Any]:
    found = wait_for(lambda: agent(api), lambda a: (a.get("status", {}).get(field) or {}).get("request") == request_id,
                     what=what, timeout=TIMEOUT)
    assert_kstatus(api)
    return found


def ready(api: Api) -> dict[str, Any]:
    wait_for(lambda: api.get(f"{DEPLOYMENTS}/{AGENT}"), what="the agent's Deployment", timeout=TIMEOUT)
    roll_out(api)
    found = wait_for(lambda: agent(api), lambda a: condition(a, "Ready").get("status") == "True", what="Ready",
                     timeout=TIMEOUT)
    assert_kstatus(api)
    return found


def owned_versions(api: Api) -> dict[str, str]:
    return {key: obj["metadata"]["resourceVersion"] for key, obj in children(api).items()}


@dataclass
class Aws:
    """Secrets Manager on the session's moto server, as the test (an admin) sees it."""

    client: Any
    server: MotoServer

    def put(self, name: str, data: dict[str, str]) -> str:
        try:
            return str(self.client.put_secret_value(SecretId=name, SecretString=json.dumps(data))["VersionId"])
        except self.client.exceptions.ResourceNotFoundException:
            return str(self.client.create_secret(Name=name, SecretString=json.dumps(data))["VersionId"])

    def current(self, name: str) -> tuple[dict[str, str], str]:
        answer = self.client.get_secret_value(SecretId=name)
        return json.loads(answer["SecretString"]), str(answer["VersionId"])


def credentials_file(path: pathlib.Path, keys: tuple[str, str]) -> pathlib.Path:
    path.write_text(f"[default]\naws_access_key_id = {keys[0]}\naws_secret_access_key = {keys[1]}\n")
    return path


@pytest.fixture()
def aws(aws_endpoint: str, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """The test's own client has the keys; the environment (and so the operator) has none."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    client = boto3.client("secretsmanager", endpoint_url=aws_endpoint, region_name=REGION,
                          aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)
    return Aws(client, moto_server)


def aws_settings(endpoint: str, keys_file: pathlib.Path) -> dict[str, str]:
    return {"AGENTGOV_AWS_REGION": REGION, "AGENTGOV_AWS_ENDPOINT_URL": endpoint,
            "AGENTGOV_AWS_CREDENTIALS_FILE": str(keys_file), "AGENTGOV_SECRETS_TIMEOUT_SECONDS": "1"}


@pytest.fixture()
def aws_operator(kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
                 aws: Aws, aws_endpoint: str, tmp_path: pathlib.Path) -> Iterator[tuple[Api, OperatorProcess]]:
    """The operator with AWS configured and a resync period longer than any test: what happens,
    happens because a request, a due read or a child's event asked for it."""
    keys = credentials_file(tmp_path / "aws-credentials", (ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_RESYNC_SECONDS="300", **aws_settings(aws_endpoint, keys))
    with operator_process(tmp_path / "operator.log") as process:
        yield api, process
        assert process.running(), process.output()[-3000:]


# --- AWS ----------------------------------------------------------------------------------------

def test_an_aws_secret_is_materialised_and_a_changed_value_rolls_the_pods_on_refresh(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess], apiserver_in_thread: ApiServer,
) -> None:
    api, _ = aws_operator
    first_version = aws.put(AWS_SECRET, {"search": "search-key-1", "other": "kept"})
    create_agent(api, SEARCH)
    found = ready(api)
    assert materialized(api) == {"SEARCH_API_KEY": "search-key-1"}
    secret_obj = api.get(MATERIALIZED) or {}
    assert secret_obj["type"] == "Opaque"
    assert [(r["kind"], r["name"], r["controller"]) for r in secret_obj["metadata"]["ownerReferences"]] == [
        ("AgentDeployment", AGENT, True)]
    assert json.loads(secret_obj["metadata"]["annotations"]["agentgov.io/secret-versions"]) == {
        "SEARCH_API_KEY": first_version}
    assert entry(found) == {"name": "SEARCH_API_KEY", "source": f"aws:{AWS_SECRET}#search", "version": first_version,
                            "syncedAt": entry(found)["syncedAt"]}
    assert condition(found, "SecretsSynced")["status"] == "True"
    env = {e["name"]: e for e in (api.get(f"{DEPLOYMENTS}/{AGENT}") or {})["spec"]["template"]["spec"]["containers"][1]["env"]}
    assert env["SEARCH_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": f"{AGENT}-secrets", "key": "SEARCH_API_KEY"}}
    before_hash = secrets_hash(api)

    # An unchanged refresh: recorded, but neither the Secret nor the pod template is written.
    secret_version = secret_obj["metadata"]["resourceVersion"]
    request(api, "refresh", "same-1")
    refreshed = handled(api, "secretsRefresh", "same-1", "the unchanged refresh recorded")
    assert refreshed["status"]["secretsRefresh"]["result"] == "Succeeded"
    assert refreshed["status"]["secretsRefresh"]["refreshed"] == ["SEARCH_API_KEY"]
    assert (api.get(MATERIALIZED) or {})["metadata"]["resourceVersion"] == secret_version
    assert secrets_hash(api) == before_hash

    # A changed value at the source, and a refresh: the Secret follows and the pods roll.
    new_version = aws.put(AWS_SECRET, {"search": "search-key-2", "other": "kept"})
    request(api, "refresh", "changed-1")
    refreshed = handled(api, "secretsRefresh", "changed-1", "the refresh recorded")
    assert entry(refreshed)["version"] == new_version
    assert materialized(api) == {"SEARCH_API_KEY": "search-key-2"}
    after_hash = wait_for(lambda: secrets_hash(api), lambda h: h != before_hash, what="a new secrets hash",
                          timeout=TIMEOUT)
    assert after_hash.startswith("sha256:")
    reasons = [e["reason"] for e in events_of(api, AGENT)]
    assert "SecretsRefreshed" in reasons
    ready(api)


def test_a_value_is_re_read_when_its_refresh_interval_passes_without_a_request(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess],
) -> None:
    api, _ = aws_operator
    aws.put(AWS_SECRET, {"search": "search-key-1"})
    create_agent(api, [{**SEARCH[0], "refreshInterval": "10s"}, SEARCH[1]])
    ready(api)
    synced_at = entry(agent(api))["syncedAt"]
    before_hash = secrets_hash(api)
    version = aws.put(AWS_SECRET, {"search": "search-key-2"})
    found = wait_for(lambda: agent(api), lambda a: entry(a).get("version") == version,
                     what="the new version read at the interval", timeout=TIMEOUT)
    assert entry(found)["syncedAt"] > synced_at and "secretsRefresh" not in found["status"]
    assert materialized(api) == {"SEARCH_API_KEY": "search-key-2"}
    wait_for(lambda: secrets_hash(api), lambda h: h != before_hash, what="the pods rolled", timeout=TIMEOUT)
    assert_kstatus(api)


def test_a_rotation_through_the_cli_writes_a_new_version_at_the_source_and_rolls_the_pods(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess], capsys: pytest.CaptureFixture[str],
) -> None:
    api, _ = aws_operator
    original = aws.put(AWS_SECRET, {"search": "search-key-1", "other": "kept"})
    create_agent(api, SEARCH)
    ready(api)
    before_hash = secrets_hash(api)
    capsys.readouterr()

    assert main(["secrets", "rotate", AGENT, "-n", NS, "--timeout", str(TIMEOUT)]) == 0
    out = capsys.readouterr().out
    data, version = aws.current(AWS_SECRET)
    assert version != original and data["other"] == "kept" and data["search"] != "search-key-1"
    assert len(data["search"]) >= 40, "a fresh random value (32 bytes, URL-safe)"
    assert f"SEARCH_API_KEY  aws:{AWS_SECRET}#search  version {original} -> {version}" in out
    assert data["search"] not in out
    found = agent(api)
    rotation = found["status"]["secretsRotation"]
    assert rotation["result"] == "Succeeded" and rotation["rotated"] == ["SEARCH_API_KEY"]
    assert rotation["request"].startswith("cli-") and rotation["request"] in out
    assert entry(found)["lastRotatedAt"] == rotation["at"]
    assert materialized(api) == {"SEARCH_API_KEY": data["search"]}
    wait_for(lambda: secrets_hash(api), lambda h: h != before_hash, what="the pods rolled", timeout=TIMEOUT)
    assert_kstatus(api)

    # The same request id again does nothing: no second version at the source.
    annotations = found["metadata"]["annotations"]
    request(api, "rotate", annotations["agentgov.io/rotate-secrets"])
    request(api, "refresh", "after-rotation")
    handled(api, "secretsRefresh", "after-rotation", "a later request handled")
    assert aws.current(AWS_SECRET)[1] == version


def test_an_unavailable_provider_keeps_the_last_good_value_and_the_children_and_recovers(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess],
) -> None:
    api, process = aws_operator
    aws.put(AWS_SECRET, {"search": "search-key-1"})
    create_agent(api, SEARCH)
    ready(api)
    before = owned_versions(api)
    secret_version = (api.get(MATERIALIZED) or {})["metadata"]["resourceVersion"]

    aws.server.pause()
    try:
        request(api, "refresh", "while-down")
        found = handled(api, "secretsRefresh", "while-down", "the refresh recorded while AWS is down")
        synced = condition(found, "SecretsSynced")
        assert (synced["status"], synced["reason"]) == ("False", "ProviderUnavailable")
        assert f"aws:{AWS_SECRET}#search" in synced["message"]
        assert "last good value kept for SEARCH_API_KEY" in synced["message"]
        assert found["status"]["secretsRefresh"]["result"] == "Failed"
        assert entry(found)["reason"] == "ProviderUnavailable" and entry(found)["failures"] >= 1
        assert condition(found, "Ready")["status"] == "True", "the agent runs on the last good value"
        assert materialized(api) == {"SEARCH_API_KEY": "search-key-1"}
        assert (api.get(MATERIALIZED) or {})["metadata"]["resourceVersion"] == secret_version
        assert owned_versions(api) == before, "a failed sync touches no child"
        assert "SecretsProviderUnavailable" in [e["reason"] for e in events_of(api, AGENT)]
    finally:
        aws.server.resume()

    # Retried with backoff, not in a hot loop; back to Synced once AWS answers.
    recovered = wait_for(lambda: agent(api), lambda a: condition(a, "SecretsSynced").get("status") == "True",
                         what="SecretsSynced again", timeout=60)
    assert "reason" not in entry(recovered)
    assert owned_versions(api) == before
    reads = [line for line in process.output().splitlines() if "secret_access" in line]
    assert 2 <= len(reads) <= 12, reads


def test_a_missing_aws_secret_stalls_the_agent_naming_it_and_creates_no_children(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess],
) -> None:
    api, _ = aws_operator
    create_agent(api, SEARCH)
    found = wait_for(lambda: agent(api), lambda a: condition(a, "Stalled").get("status") == "True",
                     what="Stalled on the missing secret", timeout=TIMEOUT)
    stalled = condition(found, "Stalled")
    assert stalled["reason"] == "SecretNotFound"
    assert stalled["message"].startswith(f"spec.secrets[0] SEARCH_API_KEY: aws:{AWS_SECRET}#search: ")
    assert condition(found, "SecretsSynced")["reason"] == "NotFound"
    assert children(api) == {} and api.get(MATERIALIZED) is None
    assert_kstatus(api)
    warning = wait_for(lambda: [e for e in events_of(api, AGENT) if e["reason"] == "SecretNotFound"],
                       what="a Warning Event naming it", timeout=TIMEOUT)
    assert warning[0]["type"] == "Warning"

    # Created at the source: the agent recovers on its own (the retry after the backoff).
    aws.put(AWS_SECRET, {"search": "found-later"})
    wait_for(lambda: materialized(api), lambda d: d == {"SEARCH_API_KEY": "found-later"},
             what="the value materialised once it exists", timeout=60)
    ready(api)


def test_permission_denied_stalls_the_agent_with_its_own_reason(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    server = MotoServer(tmp_path / "moto-iam")
    server.start()
    try:
        setup = {"endpoint_url": server.url, "region_name": REGION, "aws_access_key_id": ACCESS_KEY_ID,
                 "aws_secret_access_key": SECRET_ACCESS_KEY}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="nobody")
        created = iam.create_access_key(UserName="nobody")["AccessKey"]
        boto3.client("secretsmanager", **setup).create_secret(Name=AWS_SECRET, SecretString='{"search": "x"}')
        server.enforce_iam()
        keys = credentials_file(tmp_path / "aws-credentials", (created["AccessKeyId"], created["SecretAccessKey"]))
        api = prepared(apiserver_in_thread, monkeypatch, **aws_settings(server.url, keys))
        with operator_process(tmp_path / "operator.log") as process:
            create_agent(api, SEARCH)
            found = wait_for(lambda: agent(api), lambda a: condition(a, "Stalled").get("status") == "True",
                             what="Stalled on the refusal", timeout=TIMEOUT)
            assert condition(found, "Stalled")["reason"] == "SecretPermissionDenied"
            assert f"aws:{AWS_SECRET}#search" in condition(found, "Stalled")["message"]
            assert entry(found)["reason"] == "PermissionDenied"
            assert children(api) == {}
            assert_kstatus(api)
            assert created["SecretAccessKey"] not in process.output() + json.dumps(found)
            assert process.running(), process.output()[-3000:]
    finally:
        server.stop()


def test_an_invalid_rotation_request_is_warned_about_once_and_rotates_nothing(
    aws: Aws, aws_operator: tuple[Api, OperatorProcess],
) -> None:
    api, _ = aws_operator
    version = aws.put(AWS_SECRET, {"search": "search-key-1"})
    create_agent(api, SEARCH)
    ready(api)
    hostile = "x" * 3000 + "\n$(rm -rf /)"
    request(api, "rotate", hostile)
    found = wait_for(lambda: agent(api), lambda a: (a["status"].get("secretsRotation") or {}).get("result") == "Invalid",
                     what="the request refused", timeout=TIMEOUT)
    record = found["status"]["secretsRotation"]
    assert record["request"].startswith("sha256:")
    assert record["message"].startswith("agentgov.io/rotate-secrets: longer than 2048 characters")
    assert "rm -rf" not in json.dumps(found["status"])
    request(api, "refresh", "later")
    handled(api, "secretsRefresh", "later", "a later request")
    warnings = [e for e in events_of(api, AGENT) if e["reason"] == "InvalidSecretsRequest"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and "x" * 100 not in warnings[0]["message"]
    assert aws.current(AWS_SECRET)[1] == version, "nothing rotated"


def test_a_canary_value_is_in_the_secrets_data_and_nowhere_else(
    aws: Aws, kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    aws_endpoint: str, tmp_path: pathlib.Path,
) -> None:
    canary = "canary-4e7f1a-do-not-leak"
    keys = credentials_file(tmp_path / "aws-credentials", (ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    api = prepared(apiserver_in_thread, monkeypatch, **aws_settings(aws_endpoint, keys))
    metrics_port = free_port()
    aws.put(AWS_SECRET, {"search": canary})
    with operator_process(tmp_path / "operator.log", "--metrics-port", str(metrics_port)) as process:
        create_agent(api, SEARCH + [{"name": "MISSING_KEY", "aws": {"name": AWS_SECRET, "key": "nope"}}])
        wait_for(lambda: agent(api), lambda a: condition(a, "Stalled").get("reason") == "SecretNotFound",
                 what="a failing entry beside the canary", timeout=TIMEOUT)
        assert materialized(api)["SEARCH_API_KEY"] == canary
        api.patch(f"{AGD}/{AGENT}", {"spec": {"secrets": SEARCH}})
        ready(api)
        request(api, "rotate", "canary-rotation")
        handled(api, "secretsRotation", "canary-rotation", "the rotation")
        rotated = aws.current(AWS_SECRET)[0]["search"]
        wait_for(lambda: materialized(api), lambda d: d.get("SEARCH_API_KEY") == rotated, what="the rotated value",
                 timeout=TIMEOUT)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        log = process.output()
        assert "secret_access" in log, "reads are logged (without values)"

    everywhere = {
        "the AgentDeployment": json.dumps(agent(api)),
        "Events": json.dumps(events_of(api, AGENT) + (api.get(f"/api/v1/namespaces/{NS}/events") or {}).get("items", [])),
        "the operator's log": log,
        "the operator's metrics": metrics,
        "the other children": json.dumps(children(api)),
        "the Secret's metadata": json.dumps((api.get(MATERIALIZED) or {})["metadata"]),
    }
    for value in (canary, rotated):
        encoded = base64.b64encode(value.encode()).decode()
        for where, text in everywhere.items():
            assert value not in text and encoded not in text, f"a secret value leaked into {where}"
    data = (api.get(MATERIALIZED) or {})["data"]
    assert base64.b64decode(data["SEARCH_API_KEY"]).decode() == rotated


# --- Vault ----------------------------------------------------------------------------------------

VAULT_ROLE, OPERATOR_SA, OPERATOR_NS = "agentgov-operator", "agentgov", "agentgov-system"


@pytest.fixture()
def vault() -> Iterator[VaultServer]:
    with running_vault() as server:
        server.add_policy("agent-secrets", {"secret/data/agents/*": ["read", "update", "create"]})
        server.add_kubernetes_role(VAULT_ROLE, service_account_names=[OPERATOR_SA],
                                   service_account_namespaces=[OPERATOR_NS], policies=["agent-secrets"], ttl=3600)
        server.write("agents/research", {"search-api-key": "vault-search-1", "other": "kept"})
        yield server


def test_a_vault_secret_is_read_over_kubernetes_auth_materialised_and_rotated(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    vault: VaultServer, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    jwt = tmp_path / "token"
    jwt.write_text(vault.issue_service_account_jwt(OPERATOR_SA, OPERATOR_NS))
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_VAULT_ADDR=vault.url, AGENTGOV_VAULT_ROLE=VAULT_ROLE,
                   AGENTGOV_VAULT_JWT_FILE=str(jwt), AGENTGOV_SECRETS_TIMEOUT_SECONDS="2")
    admin = hvac.Client(url=vault.url, token=vault.root_token)
    with operator_process(tmp_path / "operator.log") as process:
        create_agent(api, examples()["AgentDeployment"]["spec"]["secrets"])  # the example's own vault entry
        found = ready(api)
        assert materialized(api) == {"SEARCH_API_KEY": "vault-search-1"}
        assert entry(found)["source"] == "vault:agents/research#search-api-key" and entry(found)["version"] == "1"
        assert vault.logins(VAULT_ROLE) >= 1
        before_hash = secrets_hash(api)
        capsys.readouterr()

        assert main(["secrets", "rotate", AGENT, "-n", NS, "--secret", "SEARCH_API_KEY", "--timeout", str(TIMEOUT)]) == 0
        assert "SEARCH_API_KEY  vault:agents/research#search-api-key  version 1 -> 2" in capsys.readouterr().out
        stored = admin.secrets.kv.v2.read_secret_version(path="agents/research", mount_point="secret",
                                                          raise_on_deleted_version=True)["data"]
        assert stored["metadata"]["version"] == 2 and stored["data"]["other"] == "kept"
        assert stored["data"]["search-api-key"] != "vault-search-1"
        assert materialized(api) == {"SEARCH_API_KEY": stored["data"]["search-api-key"]}
        wait_for(lambda: secrets_hash(api), lambda h: h != before_hash, what="the pods rolled", timeout=TIMEOUT)
        assert_kstatus(api)
        assert main(["secrets", "status", AGENT, "-n", NS]) == 0
        table = capsys.readouterr().out
        assert "SEARCH_API_KEY" in table and "vault:agents/research#search-api-key" in table and "Synced" in table
        log = process.output()
        for material in vault.secret_material() | {jwt.read_text()}:
            assert material not in log and material not in table
        assert process.running(), log[-3000:]


# --- Azure ----------------------------------------------------------------------------------------

AZURE_APP, AZURE_APP_SECRET = "3f2a6a1e-0000-4000-8000-0000000000d4", "canary-azure-client-secret-2b9e41"


@pytest.fixture()
def keyvault(tmp_path: pathlib.Path) -> Iterator[Any]:
    """The local Key Vault and Entra ID (HTTPS behind its own CONNECT proxy): vault 'research-kv'
    where the operator's app may get and set."""
    from harness.azure_keyvault import AzureKeyVaultServer

    server = AzureKeyVaultServer(tmp_path / "azure")
    server.start()
    try:
        server.create_vault("research-kv")
        server.add_app(AZURE_APP, secret=AZURE_APP_SECRET)
        server.grant("research-kv", AZURE_APP, "get", "set")
        yield server
    finally:
        server.stop()


def test_an_azure_secret_is_read_with_a_client_secret_file_materialised_and_rotated(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    keyvault: Any, tmp_path: pathlib.Path,
) -> None:
    from harness.azure_keyvault import AUTHORITY, TENANT, VAULT_URL_TEMPLATE

    first = keyvault.set_secret("research-kv", "maps-key", "azure-maps-1")
    client_secret = tmp_path / "client-secret"
    client_secret.write_text(AZURE_APP_SECRET)
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_AUTHORITY_HOST", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    # The SDK's HTTPS goes through the harness's proxy; the emulator (127.0.0.1) never does.
    api = prepared(apiserver_in_thread, monkeypatch, **keyvault.env(), NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost", AGENTGOV_RESYNC_SECONDS="300",
                   AGENTGOV_AZURE_CREDENTIAL="client_secret", AGENTGOV_AZURE_TENANT_ID=TENANT,
                   AGENTGOV_AZURE_CLIENT_ID=AZURE_APP, AGENTGOV_AZURE_CLIENT_SECRET_FILE=str(client_secret),
                   AGENTGOV_AZURE_VAULT_URL_TEMPLATE=VAULT_URL_TEMPLATE, AGENTGOV_AZURE_AUTHORITY=AUTHORITY,
                   AGENTGOV_AZURE_CA_FILE=keyvault.ca_file, AGENTGOV_SECRETS_TIMEOUT_SECONDS="5")
    with operator_process(tmp_path / "operator.log") as process:
        create_agent(api, [{"name": "MAPS_KEY", "azure": {"vault": "research-kv", "name": "maps-key"}}])
        found = ready(api)
        assert materialized(api) == {"MAPS_KEY": "azure-maps-1"}
        assert entry(found, "MAPS_KEY") == {"name": "MAPS_KEY", "source": "azure:research-kv/maps-key",
                                            "version": first, "syncedAt": entry(found, "MAPS_KEY")["syncedAt"]}
        before_hash = secrets_hash(api)

        request(api, "rotate", "azure-1")
        rotated = handled(api, "secretsRotation", "azure-1", "the rotation recorded")
        assert rotated["status"]["secretsRotation"]["result"] == "Succeeded"
        versions = keyvault.versions("research-kv", "maps-key")
        assert len(versions) == 2 and entry(rotated, "MAPS_KEY")["version"] == versions[-1][0] != first
        assert materialized(api) == {"MAPS_KEY": versions[-1][1]} and versions[-1][1] != "azure-maps-1"
        wait_for(lambda: secrets_hash(api), lambda h: h != before_hash, what="the pods rolled", timeout=TIMEOUT)
        log = process.output()
        assert AZURE_APP_SECRET not in log and materialized(api)["MAPS_KEY"] not in log
        assert process.running(), log[-3000:]


# --- the operator's audit log: secret reads recorded and shipped --------------------------------

@contextlib.contextmanager
def elasticsearch_in_thread() -> Iterator[ElasticsearchServer]:
    """The stand-in Elasticsearch served from a thread of its own (the operator is a process;
    the test polls the server's documents from its own thread)."""
    server, started = ElasticsearchServer(), threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with server.serve():
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the stand-in Elasticsearch did not start"
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def audit_records(path: pathlib.Path, event_type: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
            if r["event_type"] == event_type]


def test_secret_reads_are_audit_records_and_the_operators_log_is_shipped_to_elasticsearch(
    aws: Aws, aws_endpoint: str, kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer,
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
) -> None:
    keys = credentials_file(tmp_path / "aws-credentials", (ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    log = tmp_path / "audit" / "operator-audit.jsonl"
    canary = "canary-audited-search-key-5e1f"
    version = aws.put(AWS_SECRET, {"search": canary})
    with elasticsearch_in_thread() as es:
        api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_AUDIT_LOG=str(log), AGENTGOV_AUDIT_ES_URL=es.url,
                       AGENTGOV_AUDIT_ES_FLUSH_SECONDS="0.2", **aws_settings(aws_endpoint, keys))
        with operator_process(tmp_path / "operator.log") as process:
            create_agent(api, SEARCH)
            ready(api)
            synced = wait_for(lambda: audit_records(log, "secret.synced"), what="a secret.synced record")
            assert synced[0]["result"] == "success" and synced[0]["agent"] == f"{NS}/{AGENT}"
            assert synced[0]["metadata"]["version"] == version
            assert synced[0]["metadata"]["source"] == f"aws:{AWS_SECRET}#search"
            shipped = wait_for(lambda: [d for d in es.documents("agentgov-audit-*").values()
                                        if d.get("event_type") in ("secret.synced", "agent.created")],
                               lambda docs: len(docs) >= 2, what="the records in Elasticsearch", timeout=TIMEOUT)
            assert {d["seq"] for d in shipped} >= {synced[0]["seq"]}
            assert process.running(), process.output()[-3000:]
        output = process.output()
    assert canary not in log.read_text() and canary not in json.dumps(es.documents()) and canary not in output
