"""``agentgov secrets rotate|refresh|status`` through ``agentgov.cli.main``, with the official
Kubernetes client reading the test's kubeconfig, against the API emulator — and, where the
command waits for an answer, the real operator with AWS Secrets Manager on moto's server.

What is checked: usage errors exit 2 with a message naming the problem (no such agent, no
Vault/AWS/Azure secrets, an unknown ``--secret``, no credentials at all); ``--no-wait`` sets
the request annotation and returns; an operator that never answers, or an API that refuses,
exit 1 saying so; a refresh that works exits 0 and one that fails exits 1 naming the secret and
the reason; ``status`` prints the table (or JSON) and never a value.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import kubernetes
import pytest
from harness.apiserver import ApiServer
from harness.moto import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from harness.waiting import wait_for
from test_operator import AGENT, NS, Api, operator_process, prepared
from test_operator_secrets import (
    AWS_SECRET,
    SEARCH,
    TIMEOUT,
    Aws,
    agent,
    aws,  # noqa: F401 - the fixture
    aws_settings,
    create_agent,
    credentials_file,
    ready,
)

from agentgov.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["secrets", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def emulator(kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The emulator with the examples' namespace, and no operator."""
    return prepared(apiserver_in_thread, monkeypatch)


# --- usage errors and requests, no operator ---------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (("rotate", "nope", "-n", NS), f"error: AgentDeployment {NS}/nope not found"),
    (("refresh", "nope", "-n", NS), f"error: AgentDeployment {NS}/nope not found"),
    (("status", "nope", "-n", NS), f"error: AgentDeployment {NS}/nope not found"),
    (("rotate", AGENT), f"error: AgentDeployment default/{AGENT} not found"),
], ids=["rotating a missing agent", "refreshing a missing agent", "the status of a missing agent",
        "without -n the kubeconfig context's namespace is used"])
def test_a_missing_agent_is_a_usage_error_naming_it(emulator: Api, capsys: pytest.CaptureFixture[str],
                                                    args: tuple[str, ...], message: str) -> None:
    create_agent(emulator, SEARCH)
    code, out, err = run(capsys, *args)
    assert (code, out, err.strip()) == (2, "", message)


def test_an_agent_without_vault_aws_or_azure_secrets_is_a_usage_error(emulator: Api,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    create_agent(emulator, [{"name": "DATABASE_URL", "secretKeyRef": {"name": "research-db", "key": "url"}}])
    code, _, err = run(capsys, "rotate", AGENT, "-n", NS)
    assert code == 2 and f"AgentDeployment {NS}/{AGENT} has no Vault, AWS or Azure secrets" in err
    assert "agentgov.io/rotate-secrets" not in json.dumps(agent(emulator)["metadata"]), "nothing was requested"
    assert run(capsys, "status", AGENT, "-n", NS)[0] == 2


def test_an_unknown_secret_name_is_a_usage_error_listing_the_known_ones(emulator: Api,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    create_agent(emulator, SEARCH)
    code, _, err = run(capsys, "rotate", AGENT, "-n", NS, "--secret", "SEARCH_API_KEY", "--secret", "DATABASE_URL")
    assert code == 2
    assert err.strip() == (f"error: AgentDeployment {NS}/{AGENT} has no Vault, AWS or Azure secret named DATABASE_URL "
                           "(it has: SEARCH_API_KEY)")


def test_no_wait_sets_the_request_annotation_and_returns(emulator: Api, capsys: pytest.CaptureFixture[str]) -> None:
    create_agent(emulator, SEARCH)
    code, out, _ = run(capsys, "rotate", AGENT, "-n", NS, "--secret", "SEARCH_API_KEY", "--no-wait")
    assert code == 0 and out.startswith("requested rotation cli-")
    request_id = out.split()[2]
    assert agent(emulator)["metadata"]["annotations"]["agentgov.io/rotate-secrets"] == f"{request_id}:SEARCH_API_KEY"
    code, out, _ = run(capsys, "refresh", AGENT, "-n", NS, "--no-wait")
    refresh_id = out.split()[2]
    assert code == 0 and refresh_id != request_id
    assert agent(emulator)["metadata"]["annotations"]["agentgov.io/refresh-secrets"] == refresh_id


def test_an_operator_that_never_answers_is_a_failure_saying_so(emulator: Api, capsys: pytest.CaptureFixture[str]) -> None:
    create_agent(emulator, SEARCH)
    code, out, err = run(capsys, "refresh", AGENT, "-n", NS, "--timeout", "0.5")
    assert code == 1 and out == ""
    assert "has not handled request cli-" in err and f"watching namespace {NS}" in err


def test_an_api_that_refuses_the_request_is_a_failure_naming_the_status(
    emulator: Api, apiserver_in_thread: ApiServer, capsys: pytest.CaptureFixture[str],
) -> None:
    create_agent(emulator, SEARCH)
    apiserver_in_thread.inject_fault("PATCH", rf"/agentdeployments/{AGENT}$", status=500, times=1)
    code, _, err = run(capsys, "rotate", AGENT, "-n", NS, "--no-wait")
    assert code == 1 and err.startswith(f"error: annotating AgentDeployment {NS}/{AGENT}: HTTP 500: ")


def test_no_kubeconfig_and_no_cluster_is_a_failure_saying_so(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = run(capsys, "status", AGENT, "-n", NS)
    assert code == 1 and "no Kubernetes credentials" in err


def test_status_before_the_operator_reported_says_so(emulator: Api, capsys: pytest.CaptureFixture[str]) -> None:
    create_agent(emulator, SEARCH)
    code, out, _ = run(capsys, "status", AGENT, "-n", NS)
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "SOURCE", "VERSION", "SYNCED", "ROTATED", "STATE"]
    assert "SecretsSynced: not reported yet" in out


def test_the_help_shows_examples() -> None:
    with pytest.raises(SystemExit) as done:
        main(["secrets", "rotate", "--help"])
    assert done.value.code == 0


# --- with the operator ---------------------------------------------------------------------------

def test_refresh_and_status_against_the_operator_and_a_failed_rotation_exits_1_naming_why(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch, aws: Aws,
    aws_endpoint: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
) -> None:
    keys = credentials_file(tmp_path / "aws-credentials", (ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    api = prepared(apiserver_in_thread, monkeypatch, **aws_settings(aws_endpoint, keys))
    version = aws.put(AWS_SECRET, {"search": "cli-canary-value"})
    with operator_process(tmp_path / "operator.log") as process:
        create_agent(api, SEARCH)
        ready(api)

        code, out, _ = run(capsys, "refresh", AGENT, "-n", NS, "--timeout", str(TIMEOUT))
        assert code == 0 and out.splitlines()[0].endswith(f"of {NS}/{AGENT}: done")
        assert out.splitlines()[1].split() == ["SEARCH_API_KEY", f"aws:{AWS_SECRET}#search", "version", version]

        code, out, _ = run(capsys, "status", AGENT, "-n", NS)
        rows = [line.split() for line in out.splitlines()]
        assert code == 0 and rows[1][:2] == ["SEARCH_API_KEY", f"aws:{AWS_SECRET}#search"] and rows[1][-1] == "Synced"
        assert "SecretsSynced=True (Synced)" in out and "last refresh: cli-" in out
        code, out, _ = run(capsys, "status", AGENT, "-n", NS, "-o", "json")
        shown: dict[str, Any] = json.loads(out)
        assert shown["agent"] == f"{NS}/{AGENT}" and shown["secrets"][0]["version"] == version
        assert shown["condition"]["status"] == "True" and shown["refresh"]["result"] == "Succeeded"

        aws.client.delete_secret(SecretId=AWS_SECRET, ForceDeleteWithoutRecovery=True)
        code, out, err = run(capsys, "rotate", AGENT, "-n", NS, "--timeout", str(TIMEOUT))
        assert code == 1 and out == ""
        assert ": Failed: rotation cli-" in err and "failed for SEARCH_API_KEY" in err
        assert f"SEARCH_API_KEY  aws:{AWS_SECRET}#search  failed: NotFound: " in err
        wait_for(lambda: agent(api), lambda a: a["status"]["secretsRotation"]["result"] == "Failed",
                 what="the failed rotation recorded")
        assert "cli-canary-value" not in out + err + process.output()
        assert process.running(), process.output()[-3000:]
