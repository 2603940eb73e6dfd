"""The operator's liveness endpoint: 200 while every watch stream lives, 503 naming the one that
died or stalled. ``agentgov operator`` runs as its own process against the API emulator; faults
are injected into the emulator's answers to the operator's watch requests.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from harness.apiserver import ApiServer
from harness.redis import free_port
from harness.waiting import wait_for
from test_operator import assert_kstatus, create_examples, operator_process, prepared

BUDGETS_WATCH = "agentbudgets.v1alpha1.agentgov.io@None"
POLICIES_WATCH = "toolpolicies.v1alpha1.agentgov.io@None"
EXPECTED = {"agentdeployments.v1alpha1.agentgov.io@None", BUDGETS_WATCH, POLICIES_WATCH,
            "regionpolicies.v1alpha1.agentgov.io@None", "deployments.v1.apps@None"}
# Each watch request ends after 2 s and is sent again; no answer for 4 s is a stall.
FAST = {"AGENTGOV_WATCH_TIMEOUT_SECONDS": "2"}


def probe(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def metric(port: int, name: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return "\n".join(line for line in response.read().decode().splitlines() if line.startswith(name))


def healthy(answer: tuple[int, dict[str, Any]]) -> bool:
    status, body = answer
    return status == 200 and EXPECTED <= set(body.get("watches", {}))


def test_liveness_fails_naming_a_watch_that_died_and_metrics_count_it(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, **FAST)
    port, metrics_port = free_port(), free_port()
    with operator_process(tmp_path / "operator.log", "--liveness", f"http://127.0.0.1:{port}/healthz",
                          "--metrics-port", str(metrics_port), stop_timeout=3) as operator:
        status, body = wait_for(lambda: probe(port), healthy, what="every watch running", timeout=30,
                                ignore=(OSError,))
        assert body["status"] == "ok" and all(w["state"] == "ok" for w in body["watches"].values()), body
        create_examples(api, with_secrets=True)
        assert_kstatus(api)

        # The budgets' watch is answered 404 once (as when an API group vanishes): kopf does not
        # retry that and its watcher ends. kopf 1.45 then starts stopping the operator, and the
        # stop hangs (other watchers wait forever to re-authenticate): the process stays up,
        # watching nothing. Only a restart helps, and the probe is what asks for one.
        fault = apiserver_in_thread.inject_fault("GET", r"^/apis/agentgov\.io/v1alpha1/agentbudgets$", status=404)
        status, body = wait_for(lambda: probe(port), lambda a: a[0] == 503, what="liveness failing", timeout=20)
        assert fault.hits == 1
        assert body["status"] == "failing" and BUDGETS_WATCH in body["failing"]
        assert body["watches"][BUDGETS_WATCH]["state"] == "dead"
        assert body["watches"][BUDGETS_WATCH]["error"].startswith("APINotFoundError: ('injected fault: 404'")
        others = {w: body["watches"][w] for w in EXPECTED - {BUDGETS_WATCH}}
        assert all(w["state"] == "ok" or w == {**w, "state": "dead", "error": "cancelled"} for w in others.values()), others
        wait_for(lambda: metric(metrics_port, 'agentgov_operator_watches{state="dead"}'),
                 lambda line: bool(line) and float(line.split()[-1]) >= 1, what="the dead watch counted")
        status, body = probe(port)
        assert status == 503 and operator.running(), "a dead watch stays dead: only a restart helps"

    with operator_process(tmp_path / "operator.log", "--liveness", f"http://127.0.0.1:{port}/healthz") as operator:
        wait_for(lambda: probe(port), healthy, what="a restarted operator healthy again", timeout=30, ignore=(OSError,))


def test_liveness_fails_while_a_watch_is_not_answered_and_recovers_when_it_is(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path,
) -> None:
    prepared(apiserver_in_thread, monkeypatch, **FAST)
    port = free_port()
    with operator_process(tmp_path / "operator.log", "--liveness", f"http://127.0.0.1:{port}/healthz") as operator:
        wait_for(lambda: probe(port), healthy, what="every watch running", timeout=30, ignore=(OSError,))
        # The next ToolPolicy watch request hangs for 10 s before the server answers.
        fault = apiserver_in_thread.inject_fault("GET", r"^/apis/agentgov\.io/v1alpha1/toolpolicies$", delay=10.0)
        status, body = wait_for(lambda: probe(port), lambda a: a[0] == 503, what="liveness failing", timeout=10)
        assert fault.hits == 1
        assert body["failing"] == [POLICIES_WATCH] and body["watches"][POLICIES_WATCH]["state"] == "stalled"
        assert body["watches"][POLICIES_WATCH]["error"].startswith("no answer from the API server for ")
        assert body["watches"][POLICIES_WATCH]["error"].endswith("(limit 4s)")
        wait_for(lambda: probe(port), healthy, what="healthy once the server answers again", timeout=15)
        assert operator.running(), operator.output()


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["--liveness", "ftp://0.0.0.0:8080/healthz"], {}, "liveness endpoint 'ftp://0.0.0.0:8080/healthz': expected http://HOST:PORT/PATH"),
        (["--liveness", "http://0.0.0.0:99999/healthz"], {}, "liveness endpoint 'http://0.0.0.0:99999/healthz': the port is not a number 1-65535"),
        ([], {"AGENTGOV_REDIS_URL": "http://user:canary-secret@redis:6379"}, "AGENTGOV_REDIS_URL: expected a redis://"),
        ([], {"AGENTGOV_WATCH_TIMEOUT_SECONDS": "soon"}, "AGENTGOV_WATCH_TIMEOUT_SECONDS: expected a number of seconds"),
        (["--liveness", "http://192.0.2.1:8080/healthz"], {"KUBECONFIG": "/nonexistent"},
         "cannot serve liveness at http://192.0.2.1:8080/healthz: "),
    ],
    ids=["a liveness URL that is not http", "a liveness port out of range", "a spend store URL that is not Redis",
         "a watch timeout that is not a number",
         "a liveness address that is not this host's"],
)
def test_bad_settings_stop_the_operator_with_a_message_before_it_starts(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = subprocess.run([sys.executable, "-m", "agentgov.cli", "operator", "--standalone", "--metrics-port", "0", *args],
                            env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"agentgov operator: {expected}"), result.stderr
    assert "Traceback" not in result.stderr and "canary-secret" not in result.stderr
