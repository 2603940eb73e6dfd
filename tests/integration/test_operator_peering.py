"""Two ``agentgov operator --peering`` replicas against one API emulator: one works, one stands by.

Issue 3: several operator replicas can run without double work. Each replica is a process of
its own started as the Helm chart starts it with ``replicas: 2`` (``--peering agentgov``, the
chart's kopf peering CRDs and ClusterKopfPeering), with credentials of its own (a kubeconfig
whose token names the replica) and its own peering identity (``POD_ID``), so every request the
emulator saw is attributed to the replica that sent it. The test checks that the replicas
settle with exactly one serving, that the agent converges (Ready) through that one alone, that
nothing it owns churns, and that once the serving replica stops the other takes over and
reconciles a change.

Two ways to go: SIGTERM, as Kubernetes stops a pod (kopf removes the replica's entry on the way
out and the standby resumes at once), and SIGKILL, as a lost node or an OOM kill ends it (its
entry stays until it expires after ``AGENTGOV_PEERING_LIFETIME_SECONDS``, kopf's
``settings.peering.lifetime``, default 60 s; the test sets 10 s).
"""
from __future__ import annotations

import pathlib
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import kmock
import pytest
import yaml
from harness.apiserver import ApiServer
from harness.redis import free_port
from harness.waiting import WaitTimeout, wait_for
from test_operator import AGB, AGD, AGENT, DEPLOYMENTS, NS, WRITES, Api, children, condition, create_examples, \
    prepared, roll_out
from test_operator_liveness import probe
from test_operator_rbac import install_peering, operator_with_peering, render_chart

PEERING = "/apis/kopf.dev/v1/clusterkopfpeerings/agentgov"
REPLICAS = ("replica-a", "replica-b")
# What every replica sends whether it serves or stands by: kopf's keep-alives and observation
# of the peering object, and its discovery of the cluster's resources (API groups, CRDs).
BOOKKEEPING_GROUPS = frozenset({"kopf.dev", "apiextensions.k8s.io"})
# Each watch request ends after 1 s and is sent again; a watch not answered for 2 s is stalled
# and fails liveness. A standby sends no watch requests (paused) and must stay alive.
WATCH_TIMEOUT_SECONDS = 1.0
STALLED_AFTER = 2 * WATCH_TIMEOUT_SECONDS


def replica_kubeconfig(kubeconfig: pathlib.Path, replica: str) -> pathlib.Path:
    """The test's kubeconfig with a bearer token that names ``replica``."""
    config = yaml.safe_load(kubeconfig.read_text(encoding="utf-8"))
    config["users"][0]["user"]["token"] = replica
    path = kubeconfig.with_name(f"kubeconfig-{replica}")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def sender(request: kmock.Request) -> str:
    """The replica that sent ``request`` (the token of its kubeconfig); '' for the test's own."""
    authorization = str(request.headers.get("Authorization", ""))
    return authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else ""


def is_bookkeeping(request: kmock.Request) -> bool:
    return request.resource is None or request.resource.group in BOOKKEEPING_GROUPS


def describe(request: kmock.Request) -> str:
    return f"{request.method} {request.url.path_qs}"


def peers(api: Api) -> dict[str, dict[str, Any]]:
    """The live entries of the peering object: identity -> {priority, lifetime, lastseen}."""
    return dict((api.get(PEERING) or {}).get("status") or {})


def paused(log: str) -> bool:
    """Whether the replica's last word on peering is a pause. A --peering replica starts paused
    and says nothing until it resumes, so a log without either line is a paused replica."""
    resumed = log.rfind("Resuming operations")
    return max(log.rfind("Pausing operations"), log.rfind("Pausing all operators")) > resumed or resumed < 0


class Replica:
    """One operator replica: its process, its log, its name (token and peering identity), the
    port of its liveness endpoint."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: pathlib.Path, port: int) -> None:
        self.name, self.process, self.log, self.port = name, process, log, port

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def first(requests: Sequence[kmock.Request], replica: str, method: str, path: str) -> int | None:
    """Where in ``requests`` ``replica`` first sent ``method path`` (not a watch)."""
    return next((i for i, r in enumerate(requests) if sender(r) == replica and r.method == method
                 and str(r.url.path) == path and r.params.get("watch") not in ("true", "1")), None)


def settled(api: Api, server: ApiServer, replicas: Sequence[Replica]) -> tuple[Replica, Replica] | None:
    """(serving, standing by) once both replicas are peers and only the higher priority serves.

    The lower one is settled once its log's last word is a pause; a log with no such word is
    also settled if its first read of the peering already held the other's entry (read after
    the other's first keep-alive), so it cannot be about to resume on an older read."""
    entries = peers(api)
    if set(entries) != {r.name for r in replicas}:
        return None
    high, low = sorted(replicas, key=lambda r: entries[r.name]["priority"], reverse=True)
    if paused(high.output()) or not paused(low.output()):
        return None
    if "Pausing" not in low.output():
        requests = list(server)
        touched = first(requests, high.name, "PATCH", PEERING)
        listed = first(requests, low.name, "GET", PEERING.rsplit("/", 1)[0])
        if touched is None or listed is None or listed < touched:
            return None
    return high, low


def logs(replicas: Sequence[Replica]) -> str:
    return "\n".join(f"--- {r.name} ---\n{r.output()[-4000:]}" for r in replicas)


def test_two_replicas_one_reconciles_the_other_stands_by_and_takes_over_when_it_stops(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_WATCH_TIMEOUT_SECONDS=str(WATCH_TIMEOUT_SECONDS))
    install_peering(api, render_chart({"replicas": 2}))

    def requests(since: int) -> list[kmock.Request]:
        """The emulator's request log from entry ``since`` on."""
        return list(apiserver_in_thread)[since:]

    port_a, port_b = free_port(), free_port()
    with (operator_with_peering(tmp_path / "replica-a.log", "--liveness", f"http://127.0.0.1:{port_a}/healthz",
                                POD_ID="replica-a", KUBECONFIG=str(replica_kubeconfig(kubeconfig, "replica-a"))) as process_a,
          operator_with_peering(tmp_path / "replica-b.log", "--liveness", f"http://127.0.0.1:{port_b}/healthz",
                                POD_ID="replica-b", KUBECONFIG=str(replica_kubeconfig(kubeconfig, "replica-b"))) as process_b):
        replicas = [Replica("replica-a", process_a, tmp_path / "replica-a.log", port_a),
                    Replica("replica-b", process_b, tmp_path / "replica-b.log", port_b)]
        started = time.monotonic()
        try:
            serving, standby = wait_for(lambda: settled(api, apiserver_in_thread, replicas),
                                        what="one replica serving, one paused", timeout=60)
        except WaitTimeout as timeout:
            pytest.fail(f"{timeout}\npeers: {peers(api)}\n{logs(replicas)}")
        settled_at = time.monotonic()
        priorities = {name: entry["priority"] for name, entry in peers(api).items()}
        assert priorities[serving.name] > priorities[standby.name], priorities

        # The agent converges, through the serving replica alone.
        seen = len(list(apiserver_in_thread))
        create_examples(api, with_secrets=True)
        wait_for(lambda: children(api), lambda c: f"Deployment/{AGENT}" in c and f"Ingress/{AGENT}" in c,
                 what="the agent's children", timeout=60)
        roll_out(api)
        agent = wait_for(lambda: api.get(f"{AGD}/{AGENT}"), lambda a: condition(a, "Ready").get("status") == "True",
                         what="the agent Ready", timeout=60)
        assert agent["status"]["observedGeneration"] == agent["metadata"]["generation"]
        wait_for(lambda: api.get(f"{AGB}/research-team"),
                 lambda b: bool(condition(b, "SpendStoreAvailable")) and bool(b["metadata"].get("finalizers")),
                 what="the budget's first status and finalizer", timeout=60)
        converged = time.monotonic()
        work = [r for r in requests(seen) if sender(r) in REPLICAS and not is_bookkeeping(r)]
        assert {sender(r) for r in work} == {serving.name}, [f"{sender(r)}: {describe(r)}" for r in work]
        assert any(r.method == "POST" and str(r.url.path) == DEPLOYMENTS for r in work)
        # Its log says it handled the agent's creation (a policy's event may have reconciled the
        # agent first: the creation handler's own line can come later); the standby's never names it.
        # (two creation handlers: the reconcile and the audit record)
        wait_for(serving.output, lambda out: f"[{NS}/{AGENT}] Creation is processed: 2 succeeded; 0 failed" in out,
                 what="the serving replica's log of the agent's creation", timeout=30)
        assert AGENT not in standby.output(), logs(replicas)

        # Nothing churns: two more resyncs of the agent write nothing anywhere (but the peering).
        owned = {key: child["metadata"]["resourceVersion"] for key, child in children(api).items()}
        seen = len(list(apiserver_in_thread))
        wait_for(lambda: [r for r in requests(seen) if sender(r) == serving.name and r.method == "GET"
                          and str(r.url.path) == f"{DEPLOYMENTS}/{AGENT}"],
                 lambda reads: len(reads) >= 2, what="two resyncs", timeout=30)
        writes = [f"{sender(r)}: {describe(r)}" for r in requests(seen) if r.method in WRITES and not is_bookkeeping(r)]
        assert writes == []
        assert {key: child["metadata"]["resourceVersion"] for key, child in children(api).items()} == owned
        assert [r for r in requests(seen) if sender(r) == standby.name and not is_bookkeeping(r)] == []

        # Standing by is alive: paused watches are never stalled, so Kubernetes leaves the pod be.
        status, body = wait_for(lambda: probe(standby.port),
                                lambda a: a[0] != 200 or time.monotonic() - settled_at > 2 * STALLED_AFTER,
                                what=f"the standby's liveness for {2 * STALLED_AFTER:.0f}s", timeout=30)
        assert status == 200 and body["status"] == "ok", body
        assert "agentdeployments.v1alpha1.agentgov.io@None" in body["watches"], "its (paused) watches are judged"
        assert probe(serving.port)[0] == 200

        # The serving replica stops as Kubernetes stops a pod; the standby takes over.
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(timeout=30) == 0, serving.output()
        stopped = time.monotonic()
        assert set(peers(api)) == {standby.name}, "a stopped replica removes its peering entry"
        seen = len(list(apiserver_in_thread))
        api.patch(f"{AGD}/{AGENT}", {"spec": {"autoscaling": {"enabled": False}, "replicas": 2}})
        wait_for(lambda: api.get(f"{DEPLOYMENTS}/{AGENT}"), lambda d: d["spec"].get("replicas") == 2,
                 what="the Deployment scaled to 2 by the standby", timeout=60)
        took_over = time.monotonic()
        assert not paused(standby.output()), logs(replicas)
        wait_for(lambda: children(api), lambda c: not any(k.startswith("HorizontalPodAutoscaler/") for k in c),
                 what="the HPA removed", timeout=30)
        roll_out(api)
        agent = wait_for(lambda: api.get(f"{AGD}/{AGENT}"),
                         lambda a: condition(a, "Ready").get("status") == "True"
                         and a["status"].get("observedGeneration") == a["metadata"]["generation"],
                         what="the agent Ready at its new generation", timeout=60)
        assert agent["status"]["readyReplicas"] == 2
        work = [r for r in requests(seen) if sender(r) in REPLICAS and not is_bookkeeping(r)]
        assert {sender(r) for r in work} == {standby.name}
        assert any(r.method in WRITES and str(r.url.path) == f"{DEPLOYMENTS}/{AGENT}" for r in work)
        assert standby.process.poll() is None, standby.output()
        status, body = wait_for(lambda: probe(standby.port), lambda a: a[0] == 200, what="the new server alive")
        assert any(name.startswith("agentdeployments.") for name in body["watches"]), body
        print(f"settled and converged in {converged - started:.1f}s; "
              f"take-over and scale {took_over - stopped:.1f}s after the stop")


def test_a_killed_replica_is_taken_over_once_its_peering_entry_expires(
    kubeconfig: pathlib.Path, apiserver_in_thread: ApiServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
) -> None:
    lifetime = 10
    api = prepared(apiserver_in_thread, monkeypatch, AGENTGOV_WATCH_TIMEOUT_SECONDS=str(WATCH_TIMEOUT_SECONDS),
                   AGENTGOV_PEERING_LIFETIME_SECONDS=str(lifetime))
    install_peering(api, render_chart({"replicas": 2}))
    with (operator_with_peering(tmp_path / "replica-a.log", POD_ID="replica-a",
                                KUBECONFIG=str(replica_kubeconfig(kubeconfig, "replica-a"))) as process_a,
          operator_with_peering(tmp_path / "replica-b.log", POD_ID="replica-b",
                                KUBECONFIG=str(replica_kubeconfig(kubeconfig, "replica-b"))) as process_b):
        replicas = [Replica("replica-a", process_a, tmp_path / "replica-a.log", 0),
                    Replica("replica-b", process_b, tmp_path / "replica-b.log", 0)]
        try:
            serving, standby = wait_for(lambda: settled(api, apiserver_in_thread, replicas),
                                        what="one replica serving, one paused", timeout=60)
        except WaitTimeout as timeout:
            pytest.fail(f"{timeout}\npeers: {peers(api)}\n{logs(replicas)}")
        assert {entry["lifetime"] for entry in peers(api).values()} == {lifetime}
        create_examples(api, with_secrets=True)
        wait_for(lambda: api.get(f"{DEPLOYMENTS}/{AGENT}"), what="the agent's Deployment", timeout=60)

        serving.process.kill()
        serving.process.wait(timeout=10)
        killed = time.monotonic()
        assert serving.name in peers(api), "a killed replica cannot remove its peering entry"
        seen = len(list(apiserver_in_thread))
        api.patch(f"{AGD}/{AGENT}", {"spec": {"autoscaling": {"enabled": False}, "replicas": 2}})
        wait_for(lambda: api.get(f"{DEPLOYMENTS}/{AGENT}"), lambda d: d["spec"].get("replicas") == 2,
                 what="the Deployment scaled to 2 by the standby", timeout=lifetime + 30)
        took_over = time.monotonic() - killed
        work = [r for r in list(apiserver_in_thread)[seen:] if sender(r) in REPLICAS and not is_bookkeeping(r)]
        assert {sender(r) for r in work} == {standby.name}, logs(replicas)
        assert took_over < lifetime + 20, f"take-over {took_over:.1f}s after the kill"
        print(f"take-over {took_over:.1f}s after SIGKILL with a {lifetime}s peering lifetime")
