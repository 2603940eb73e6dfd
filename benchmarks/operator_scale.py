#!/usr/bin/env python3
"""How the operator scales with the number of AgentDeployments, against the API emulator.

What it is for: measuring, for N agents (copies of ``examples/research-agent.yaml``), how long
the real operator process (``agentgov operator``, started as a user starts it) takes to

1. *apply*: give all N their 8 children and a status with ``observedGeneration == generation``;
2. *ready*: turn all N ``Ready=True`` once their Deployments report rolled out (the benchmark
   plays the Deployment controller by patching each Deployment's ``/status``);
3. *fan out*: put a new policy bundle hash on every Deployment's pod template after one change
   to the shared ToolPolicy;

and how much memory it holds while doing so (peak and current RSS from ``/proc/<pid>/status``).
CPU seconds of the operator process, of the emulator's thread and of this script's own polling
are recorded per phase, so a slow phase can be blamed on the side that was busy.

Results: ``benchmarks/results/operator_scale.{json,md,png}`` (raw runs + machine; a table of
medians; a log-log plot of the three times against N). See ``benchmarks/README.md``.

What it must never do: talk to anything but the emulator it starts on 127.0.0.1, leave the
operator process or the emulator running, or sleep for a fixed time in place of waiting for a
condition (every wait polls with a deadline and reports what it last saw).
"""
from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import copy
import datetime
import http.client
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.apiserver import ApiServer  # noqa: E402  (needs tests/ on sys.path)

RESULTS = REPO / "benchmarks" / "results"
NS = "research"
GROUP_PATH = f"/apis/agentgov.io/v1alpha1/namespaces/{NS}"
AGD = f"{GROUP_PATH}/agentdeployments"
TPOL = f"{GROUP_PATH}/toolpolicies"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
MANAGED = "app.kubernetes.io/managed-by=agentgov-operator"
BUNDLE_HASH = "agentgov.io/bundle-hash"
USER_AGENT = "agentgov-benchmark"
PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# The 8 children every copy of the example agent gets (autoscaling and ingress are on).
CHILD_LISTS: Mapping[str, str] = {
    "Deployment": DEPLOYMENTS,
    "Service": f"/api/v1/namespaces/{NS}/services",
    "ServiceAccount": f"/api/v1/namespaces/{NS}/serviceaccounts",
    "ConfigMap": f"/api/v1/namespaces/{NS}/configmaps",
    "HorizontalPodAutoscaler": f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers",
    "PodDisruptionBudget": f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets",
    "Ingress": f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses",
    "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies",
}
SHARED_SECRETS: Mapping[str, Mapping[str, str]] = {
    "openai-api-key": {"api-key": "sk-benchmark"},
    "research-db": {"url": "postgres://bench@db/research"},
    "ticketing-token": {"token": "bench-ticket-token"},
    "agentgov-redis": {"url": "redis://bench-redis:6379/0"},
}
MIB = 1024 * 1024
IDLE_WINDOW_S = 10.0
QUIET_FOR_S = 2.0  # no request for this long: the operator has nothing left to do
# Large enough that no watch of the operator is ever answered 410 Gone during a run: the real
# server's watch cache is per resource and sized by the apiserver; the emulator's window is one
# global deque of 10,000 events by default, which 1,000 agents outrun in seconds, and the relist
# that follows would be an artefact of the emulator, not something the operator did.
EVENT_WINDOW = 10_000_000
T = TypeVar("T")


# --- talking to the emulator ---------------------------------------------------------------

class Api:
    """Synchronous JSON over one keep-alive HTTP connection (the benchmark's client, not the operator's)."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json", accept: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()  # a kept-alive connection the server closed: open a new one, once
                if attempt == 2:
                    raise
        return response.status, json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body}")
        return body

    def items(self, path: str, label_selector: str | None = None, *, metadata_only: bool = False) -> list[dict[str, Any]]:
        query = "?" + urllib.parse.urlencode({"labelSelector": label_selector}) if label_selector else ""
        accept = PARTIAL_METADATA if metadata_only else "application/json"
        status, body = self.call("GET", path + query, accept=accept)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body}")
        return list(body["items"])

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        status, answer = self.call("POST", path, body)
        if status not in (200, 201):
            raise RuntimeError(f"POST {path}: HTTP {status}: {answer}")
        return answer

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        status, answer = self.call("PATCH", path, body, "application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {path}: HTTP {status}: {answer}")
        return answer


class PollTimeout(AssertionError):
    """A condition did not hold before the deadline; the message says what was seen last."""


def poll(probe: Callable[[], T], done: Callable[[T], bool], *, what: str, timeout: float,
         min_interval: float = 0.05) -> tuple[T, float, int]:
    """Call ``probe`` until ``done(result)``; return (result, when it held, how many probes).

    The pause between probes is at least ``min_interval`` and twice what the last probe took,
    so the observer never takes more than about a third of the emulator's time (a list of
    1,000 agents is not free to serve, and the emulator shares this process's GIL). The time returned is the start of the probe
    that saw the condition: the condition held no later than that.
    """
    deadline = time.monotonic() + timeout
    probes = 0
    while True:
        started = time.monotonic()
        value = probe()
        probes += 1
        if done(value):
            return value, started, probes
        took = time.monotonic() - started
        if time.monotonic() >= deadline:
            raise PollTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last saw {value!r}")
        time.sleep(max(min_interval, 2 * took))


# --- objects -----------------------------------------------------------------------------

def examples() -> dict[str, dict[str, Any]]:
    docs = [d for p in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return {d["kind"]: d for d in docs}


def secret(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def agent_name(index: int) -> str:
    return f"agent-{index:05d}"


def agent_copy(template: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The example agent under another name, with its own host and TLS Secret name; every
    other field (Vault secret entry included: each copy gets its own ``<name>-secrets``) as is."""
    agent = copy.deepcopy(dict(template))
    agent["metadata"] = {"name": name, "namespace": NS, "labels": dict(template["metadata"].get("labels") or {})}
    ingress = agent["spec"].get("ingress") or {}
    if ingress.get("host"):
        ingress["host"] = f"{name}.agents.example.com"
    if (ingress.get("tls") or {}).get("secretName"):
        ingress["tls"]["secretName"] = f"{name}-tls"
    return agent


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return {}


# --- measuring processes -----------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    found = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread from its ``stat`` file."""
    text = pathlib.Path(stat_path).read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU seconds used by the operator process, the emulator's thread and everything else in
    this process (the observer: polling, JSON decoding, the rollout patches)."""

    def __init__(self, operator_pid: int, emulator_tid: int) -> None:
        self.operator = f"/proc/{operator_pid}/stat"
        self.emulator = f"/proc/self/task/{emulator_tid}/stat"

    def read(self) -> dict[str, float]:
        emulator = cpu_seconds(self.emulator)
        return {"operator": cpu_seconds(self.operator), "emulator": emulator,
                "observer": cpu_seconds("/proc/self/stat") - emulator}

    @staticmethod
    def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 3) for k in before}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agentgov_command() -> list[str]:
    """The ``agentgov`` console script installed beside this interpreter (else on PATH)."""
    beside = pathlib.Path(sys.executable).parent / "agentgov"
    found = str(beside) if beside.exists() else shutil.which("agentgov")
    if not found:
        raise SystemExit("agentgov is not installed for this Python: pip install -e '.[test,bench]'")
    return [found]


@contextlib.contextmanager
def operator_process(server_url: str, workdir: pathlib.Path, log_path: pathlib.Path,
                     command: str) -> Iterator[subprocess.Popen[bytes]]:
    """The operator as a user runs it, against the emulator; always stopped (SIGTERM, then SIGKILL)."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server_url.rstrip("/")}}],
        "users": [{"name": "bench", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "bench"}}],
        "current-context": "emulator",
    }))
    liveness_port = free_port()
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    if command == "agentgov":
        argv = agentgov_command() + ["operator", "--standalone", "--metrics-port", "0", "--liveness", liveness]
    else:  # the fallback: kopf's own runner with the same handlers
        argv = [str(pathlib.Path(sys.executable).parent / "kopf"), "run", "-A", "--standalone",
                "--liveness", liveness, "-m", "agentgov.controller.handlers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGOV_")}
    env.update(KUBECONFIG=str(kubeconfig), AGENTGOV_RESYNC_SECONDS="3600")
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            poll(lambda: _alive(liveness, process), bool, what=f"the operator's liveness endpoint {liveness}",
                 timeout=60, min_interval=0.1)
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _alive(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the operator exited with code {process.returncode} during startup")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


# --- what the emulator saw ---------------------------------------------------------------

def request_counts(server: ApiServer, start: int, end: int | None = None) -> dict[str, int]:
    """Requests since index ``start`` of the emulator's log, by client, method and resource."""
    counts: collections.Counter[str] = collections.Counter()
    for request in list(server)[start:end]:
        agent = str(request.headers.get("User-Agent") or request.headers.get("user-agent") or "")
        client = ("benchmark" if agent.startswith(USER_AGENT) else
                  "operator" if agent.startswith("agentgov-operator") else
                  "kopf" if "kopf" in agent.lower() else "other")
        method = getattr(request.method, "value", str(request.method)).upper()
        if request.params.get("watch") in ("true", "1"):
            method = "WATCH"
        resource = request.resource.plural if request.resource is not None else "-"
        if request.subresource:
            resource += "/" + request.subresource
        counts[f"{client} {method} {resource}"] += 1
    return dict(sorted(counts.items()))


def writes_per_agent(counts: Mapping[str, int], n: int) -> dict[str, float]:
    """Operator and kopf writes (POST/PATCH/PUT/DELETE) per agent, by resource."""
    per: dict[str, float] = {}
    for key, count in counts.items():
        client, method, resource = key.split(" ", 2)
        if client in ("operator", "kopf") and method in ("POST", "PATCH", "PUT", "DELETE"):
            per[f"{client} {method} {resource}"] = round(count / n, 2)
    return per


def log_summary(path: pathlib.Path) -> dict[str, Any]:
    """Counts of warning/error lines in the operator's output and the distinct messages."""
    lines = path.read_text(errors="replace").splitlines()
    flagged = [line for line in lines if any(word in line for word in ("ERROR", "Error", "WARNING", "Warning",
                                                                       "Traceback", "CRITICAL"))]
    distinct = collections.Counter(_shape(line) for line in flagged)
    return {"lines": len(lines), "flagged_lines": len(flagged),
            "distinct_flagged": [{"count": c, "line": s} for s, c in distinct.most_common(15)]}


def _shape(line: str) -> str:
    """A log line with its agent name and timestamps blurred, so repeats group together."""
    line = re.sub(r"agent-\d{5}", "agent-NNNNN", line)
    line = re.sub(r"\d{4}-\d\d-\d\d[ T][\d:.,]+", "<time>", line)
    return line[:300]


# --- one run -----------------------------------------------------------------------------

def run_once(n: int, command: str, workdir: pathlib.Path, timeout: float) -> dict[str, Any]:
    objs = examples()
    run: dict[str, Any] = {"n": n, "command": command}
    server = ApiServer(crd_dirs=[REPO / "crds"], event_window=EVENT_WINDOW)
    with server.run_in_thread("127.0.0.1", 0):
        emulator_thread = next(t for t in threading.enumerate() if t.name == "apiserver")
        assert emulator_thread.native_id is not None
        api = Api(str(server.url))
        log_path = workdir / f"operator-{n}.log"
        try:
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            for name, data in SHARED_SECRETS.items():
                api.create(SECRETS, secret(name, data))
            names = [agent_name(i) for i in range(1, n + 1)]
            for name in names:  # what the Vault sync would materialise for each agent
                api.create(SECRETS, secret(f"{name}-secrets", {"SEARCH_API_KEY": "bench-search-key"}))

            started = time.monotonic()
            with operator_process(str(server.url), workdir, log_path, command) as process:
                run["operator_start_s"] = round(time.monotonic() - started, 3)
                clock = CpuClock(process.pid, emulator_thread.native_id)
                for kind, plural in (("RegionPolicy", "regionpolicies"), ("ToolPolicy", "toolpolicies"),
                                     ("AgentBudget", "agentbudgets")):
                    api.create(f"{GROUP_PATH}/{plural}", objs[kind])
                    poll(lambda: api.get(f"{GROUP_PATH}/{plural}/{objs[kind]['metadata']['name']}"),
                         lambda o: condition(o, "Ready").get("status") == "True",
                         what=f"the operator to mark the {kind} Ready", timeout=60)
                baseline = proc_status(process.pid)
                run["rss_baseline_mib"] = round(baseline["VmRSS"] / MIB, 1)
                run["phases"] = phases = {}

                # 1. apply: N AgentDeployments -> 8 children each and an observed generation.
                phase = Phase.start(server, clock)
                for name in names:
                    api.create(AGD, agent_copy(objs["AgentDeployment"], name))
                created = time.monotonic()
                seen, t_applied, probes = poll(lambda: applied_probe(api, n), lambda s: s["complete"],
                                               what=f"{n} agents applied", timeout=timeout)
                run["rss_applied_mib"] = round(proc_status(process.pid)["VmRSS"] / MIB, 1)
                phases["apply"] = phase.finish(t_applied, probes, n, timeout)
                phases["apply"]["create_requests_s"] = round(created - phase.started, 3)
                phases["apply"]["outcomes"] = seen["outcomes"]

                # 2. ready: play the Deployment controller, then wait for Ready=True everywhere.
                phase = Phase.start(server, clock)
                for deployment in api.items(DEPLOYMENTS, MANAGED):
                    replicas = deployment["spec"].get("replicas", 3)
                    api.merge_patch(f"{DEPLOYMENTS}/{deployment['metadata']['name']}/status", {"status": {
                        "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
                        "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}})
                patched = time.monotonic()
                _, t_ready, probes = poll(lambda: ready_probe(api), lambda s: s.get("True", 0) == n,
                                          what=f"{n} agents Ready", timeout=timeout)
                phases["ready"] = phase.finish(t_ready, probes, n, timeout)
                phases["ready"]["status_patches_s"] = round(patched - phase.started, 3)

                # 3. fan-out: one ToolPolicy change -> a new bundle hash on every pod template.
                deployments = api.items(DEPLOYMENTS, MANAGED)
                before = {d["metadata"]["name"]: bundle_hash_of(d) for d in deployments}
                generations = {d["metadata"]["name"]: d["metadata"]["generation"] for d in deployments}
                policy = api.get(f"{TPOL}/research-tools")
                tools = policy["spec"]["tools"] + [{"name": "calculator", "upstream": "https://calc.example.com"}]
                phase = Phase.start(server, clock)
                api.merge_patch(f"{TPOL}/research-tools", {"spec": {"tools": tools}})
                _, t_fanout, probes = poll(lambda: fanout_probe(api, before, generations), lambda s: s["changed"] == n,
                                           what=f"a new bundle hash on {n} Deployments", timeout=timeout)
                phases["fanout"] = phase.finish(t_fanout, probes, n, timeout)

                # 4. idle: with every reconcile finished, what the operator costs per second with
                # nothing to do (its per-agent timers tick once a second; the resync is 1 h away).
                mark = len(list(server))
                cpu = clock.read()
                idle_started = time.monotonic()
                time.sleep(IDLE_WINDOW_S)  # measuring a rate over a window, not waiting for anything
                idle_s = time.monotonic() - idle_started
                spent = CpuClock.spent(cpu, clock.read())
                run["idle"] = {"seconds": round(idle_s, 2), "operator_cpu_fraction": round(spent["operator"] / idle_s, 3),
                               "requests": request_counts(server, mark)}

                final = proc_status(process.pid)
                run["rss_end_mib"] = round(final["VmRSS"] / MIB, 1)
                run["rss_peak_mib"] = round(final["VmHWM"] / MIB, 1)
                run["rss_growth_per_1000_mib"] = round((final["VmRSS"] - baseline["VmRSS"]) / MIB / n * 1000, 1)
                run["reconciles_per_s"] = round(n / phases["apply"]["seconds"], 1)
                run["emulator_objects"] = len(server._store)
                run["emulator_requests"] = len(list(server))
            run["operator_exit_code"] = process.returncode
        finally:
            api.close()
    run["operator_log"] = log_summary(log_path)
    return run


class Phase:
    """One measured phase: from its first request until the condition held, then until the
    operator stopped sending requests (its trailing reconciles belong to this phase, so the
    next one starts from rest and its counts are its own)."""

    def __init__(self, server: ApiServer, clock: CpuClock) -> None:
        self.server, self.clock = server, clock
        self.mark = len(list(server))
        self.cpu = clock.read()
        self.started = time.monotonic()

    @classmethod
    def start(cls, server: ApiServer, clock: CpuClock) -> Phase:
        return cls(server, clock)

    def finish(self, t_done: float, probes: int, n: int, timeout: float) -> dict[str, Any]:
        cpu_done = self.clock.read()
        t_last = settle(self.server, timeout)
        counts = request_counts(self.server, self.mark)
        # Every full reconcile reads the agent's ServiceAccount exactly once (apply_child), so
        # those reads count reconciles.
        reconciles = counts.get("operator GET serviceaccounts", 0)
        return {"seconds": round(t_done - self.started, 3), "probes": probes,
                "settled_s": round(max(t_last, t_done) - self.started, 3),
                "reconciles_per_agent": round(reconciles / n, 2),
                "cpu_s": CpuClock.spent(self.cpu, cpu_done),
                "cpu_until_settled_s": CpuClock.spent(self.cpu, self.clock.read()),
                "requests": counts, "writes_per_agent": writes_per_agent(counts, n)}


def settle(server: ApiServer, timeout: float) -> float:
    """Wait until the emulator has had no request for ``QUIET_FOR_S`` seconds (this script sends
    none meanwhile: it reads the request log in-process); return when the last one came."""
    state = {"count": len(list(server)), "since": time.monotonic()}

    def probe() -> float:
        count = len(list(server))
        if count != state["count"]:
            state.update(count=count, since=time.monotonic())
        return time.monotonic() - state["since"]

    poll(probe, lambda quiet: quiet >= QUIET_FOR_S, what="the operator to go quiet", timeout=timeout,
         min_interval=0.1)
    return state["since"]


def applied_probe(api: Api, n: int) -> dict[str, Any]:
    """How many agents have a status for their current generation, and (only once all have,
    to keep the probe cheap) how many have all 8 children."""
    agents = api.items(AGD)
    outcomes: collections.Counter[str] = collections.Counter()
    applied = 0
    for agent in agents:
        status = agent.get("status") or {}
        if status.get("observedGeneration") == agent["metadata"].get("generation"):
            applied += 1
            stalled = condition(agent, "Stalled").get("status") == "True"
            outcomes["Stalled" if stalled else condition(agent, "Ready").get("status") == "True" and "Ready"
                     or "Reconciling"] += 1
    seen: dict[str, Any] = {"agents": len(agents), "applied": applied, "outcomes": dict(outcomes),
                            "with_8_children": None, "complete": False}
    if applied == n and len(agents) == n:
        kinds: dict[str, set[str]] = collections.defaultdict(set)
        for kind, path in CHILD_LISTS.items():
            for child in api.items(path, MANAGED):
                for owner in child["metadata"].get("ownerReferences") or []:
                    if owner.get("kind") == "AgentDeployment":
                        kinds[owner["name"]].add(kind)
        seen["with_8_children"] = sum(len(k) == len(CHILD_LISTS) for k in kinds.values())
        seen["complete"] = seen["with_8_children"] == n and outcomes.get("Stalled", 0) == 0
    return seen


def ready_probe(api: Api) -> dict[str, int]:
    return dict(collections.Counter(condition(a, "Ready").get("status", "none") for a in api.items(AGD)))


def bundle_hash_of(deployment: Mapping[str, Any]) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(BUNDLE_HASH)
    return str(value) if value is not None else None


def fanout_probe(api: Api, before: Mapping[str, str | None], generations: Mapping[str, int]) -> dict[str, int]:
    """How many Deployments carry a new bundle hash. A new pod template bumps a Deployment's
    generation, so metadata alone (cheap to serve and decode) says when to read the templates;
    polling full Deployments would compete with the emulator for this process's GIL."""
    moved = sum(1 for m in api.items(DEPLOYMENTS, MANAGED, metadata_only=True)
                if m["metadata"].get("generation", 0) > generations.get(m["metadata"]["name"], 0))
    if moved < len(generations):
        return {"generation_moved": moved, "changed": 0}
    deployments = api.items(DEPLOYMENTS, MANAGED)
    changed = sum(1 for d in deployments if bundle_hash_of(d) not in (None, before.get(d["metadata"]["name"])))
    return {"generation_moved": moved, "changed": changed}


# --- reporting -----------------------------------------------------------------------------

def machine_info() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    memory = next((int(line.split()[1]) * 1024 for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    versions = {}
    for package in ("kopf", "kmock", "aiohttp", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {"cpu_model": model, "cores": os.cpu_count(), "memory_gib": round(memory / 1024**3, 1),
            "python": platform.python_version(), "platform": platform.platform(), **versions}


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per N: medians over the repeats."""
    rows = []
    for n in sorted({r["n"] for r in runs}):
        same = [r for r in runs if r["n"] == n]

        def median(*path: str) -> float:
            """The median over the repeats of the number at ``path`` (keys into each run)."""
            values = []
            for run in same:
                value: Any = run
                for key in path:
                    value = value[key]
                values.append(float(value))
            return float(statistics.median(values))

        sides, phases = ("operator", "emulator", "observer"), ("apply", "ready", "fanout")
        rows.append({
            "n": n, "repeats": len(same),
            "apply_s": median("phases", "apply", "seconds"),
            "ready_s": median("phases", "ready", "seconds"),
            "fanout_s": median("phases", "fanout", "seconds"),
            "reconciles_per_s": median("reconciles_per_s"),
            "rss_peak_mib": median("rss_peak_mib"),
            "rss_growth_per_1000_mib": median("rss_growth_per_1000_mib"),
            "apply_cpu": {side: median("phases", "apply", "cpu_s", side) for side in sides},
            "fanout_cpu": {side: median("phases", "fanout", "cpu_s", side) for side in sides},
            "reconciles_per_agent": {phase: median("phases", phase, "reconciles_per_agent") for phase in phases},
            "fanout_settled_s": median("phases", "fanout", "settled_s"),
            "idle_operator_cpu_fraction": median("idle", "operator_cpu_fraction"),
        })
    return rows


def rss_slope_per_1000(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """Least-squares slope of the operator's RSS at the end of a run against N, per 1,000 agents:
    steadier than one run's growth over its own baseline, which small N drowns in noise."""
    points = [(r["n"], r["rss_end_mib"]) for r in runs]
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = statistics.fmean(n for n, _ in points)
    mean_rss = statistics.fmean(rss for _, rss in points)
    slope = (sum((n - mean_n) * (rss - mean_rss) for n, rss in points)
             / sum((n - mean_n) ** 2 for n, _ in points))
    return round(float(slope) * 1000, 1)


def write_markdown(path: pathlib.Path, rows: Sequence[Mapping[str, Any]], machine: Mapping[str, Any],
                   total_s: float, command: str, when: str, rss_slope: float | None) -> None:
    repeats = sorted({r["repeats"] for r in rows})
    lines = [
        "# Operator scale: results",
        "",
        f"Run {when} with `python benchmarks/operator_scale.py --sizes {','.join(str(r['n']) for r in rows)}"
        f" --repeat {repeats[-1]}` (whole run: {total_s:.0f} s). Operator started as `"
        + ("agentgov operator --standalone" if command == "agentgov" else "kopf run -A --standalone")
        + "` against the in-process API emulator. "
        + ("Medians over the repeats." if repeats[-1] > 1 else "One run per size."),
        "",
        "| N | applied s | ready s | fan-out s | reconciles/s | peak RSS MiB | RSS growth MiB / 1,000 agents |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['apply_s']:.2f} | {r['ready_s']:.2f} | {r['fanout_s']:.2f} | "
                     f"{r['reconciles_per_s']:.1f} | {r['rss_peak_mib']:.0f} | {r['rss_growth_per_1000_mib']:.0f} |")
    if rss_slope is not None:
        lines += ["", f"RSS growth across sizes (least-squares slope of end-of-run RSS against N): "
                      f"**{rss_slope:.0f} MiB per 1,000 agents**. The per-run column divides one run's growth "
                      "over its own baseline by N, which is noise at small N."]
    lines += [
        "",
        "CPU seconds spent while applying and during the fan-out (operator process / emulator thread / "
        "this script's polling): who was busy.",
        "",
        "| N | apply: operator | apply: emulator | apply: observer | fan-out: operator | fan-out: emulator |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a, f = r["apply_cpu"], r["fanout_cpu"]
        lines.append(f"| {r['n']:,} | {a['operator']:.1f} | {a['emulator']:.1f} | {a['observer']:.1f} | "
                     f"{f['operator']:.1f} | {f['emulator']:.1f} |")
    lines += [
        "",
        "Full reconciles per agent in each phase, trailing ones included (counted as the operator's "
        "reads of the agent's ServiceAccount, one per reconcile; one would do); when the operator "
        "stopped sending requests after the ToolPolicy change; and its CPU use when idle (share of "
        f"one core over {IDLE_WINDOW_S:.0f} s with nothing changing).",
        "",
        "| N | reconciles/agent: apply | ready | fan-out | fan-out settled s | idle CPU |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = r["reconciles_per_agent"]
        lines.append(f"| {r['n']:,} | {per['apply']:.2f} | {per['ready']:.2f} | {per['fanout']:.2f} | "
                     f"{r['fanout_settled_s']:.1f} | {r['idle_operator_cpu_fraction'] * 100:.0f}% |")
    lines += [
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"Python {machine['python']}, kopf {machine.get('kopf', '?')}, kmock {machine.get('kmock', '?')}; "
        f"load average (1/5/15 min) {machine['loadavg_at_start']} at the start, {machine['loadavg_at_end']} at the end.",
        "Raw numbers (per phase: request counts by client, writes per agent, CPU split, probes): "
        "`operator_scale.json`. What the figures mean: `benchmarks/README.md`.",
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(path: pathlib.Path, runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> None:
    """Left: the three times against N. Right: who spent the CPU while applying, since the
    times are only the operator's when the operator is the busy side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (times, cpu) = plt.subplots(1, 2, figsize=(12, 5))
    sizes = [r["n"] for r in rows]
    for key, phase, label, marker in (("apply_s", "apply", "applied (8 children + status)", "o"),
                                      ("ready_s", "ready", "ready (after Deployments roll out)", "s"),
                                      ("fanout_s", "fanout", "fan-out (ToolPolicy change)", "^")):
        line, = times.plot(sizes, [r[key] for r in rows], marker=marker, label=label)
        times.scatter([r["n"] for r in runs], [r["phases"][phase]["seconds"] for r in runs], s=8, alpha=0.35,
                      color=line.get_color())
    if len(sizes) > 1:  # where linear scaling from the smallest size would put the applied time
        base = rows[0]["apply_s"] / sizes[0]
        times.plot(sizes, [base * n for n in sizes], linestyle=":", color="grey", label="linear in N (from smallest)")
    times.set_ylabel("seconds (median; dots: single runs)")
    times.set_title("time until the condition holds, against the API emulator")
    for side, marker in (("operator", "o"), ("emulator", "s"), ("observer", "^")):
        cpu.plot(sizes, [max(r["apply_cpu"][side], 0.01) for r in rows], marker=marker, label=f"{side} CPU s")
    cpu.plot(sizes, [r["apply_s"] for r in rows], linestyle="--", color="black", label="applied, wall s")
    cpu.set_ylabel("seconds during the apply phase")
    cpu.set_title("who was busy while applying (2 cores)")
    for ax in (times, cpu):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("AgentDeployments (N)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out: pathlib.Path, results: Mapping[str, Any]) -> None:
    runs = results["runs"]
    write_markdown(out / "operator_scale.md", results["summary"], results["machine"], results["total_s"],
                   runs[0]["command"], results["when"], results["rss_slope_per_1000_mib"])
    write_plot(out / "operator_scale.png", runs, results["summary"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the table shows medians (default: 1)")
    parser.add_argument("--timeout", type=float, default=600, help="deadline of each wait, seconds (default: 600)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default: benchmarks/results)")
    parser.add_argument("--command", choices=("agentgov", "kopf"), default="agentgov",
                        help="how to start the operator: `agentgov operator` (default) or `kopf run` (fallback)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the operator's output of each run here")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: rewrite the table and the plot from the results JSON in --out")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.replot:
        write_reports(out, json.loads((out / "operator_scale.json").read_text()))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    machine["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for n in sizes:
        for repeat in range(1, args.repeat + 1):
            with tempfile.TemporaryDirectory(prefix="agentgov-bench-") as tmp:
                run_started = time.monotonic()
                run = run_once(n, args.command, pathlib.Path(tmp), args.timeout)
                run["repeat"] = repeat
                run["wall_s"] = round(time.monotonic() - run_started, 1)
                if args.keep_logs:
                    keep = pathlib.Path(args.keep_logs)
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copy(pathlib.Path(tmp) / f"operator-{n}.log", keep / f"operator-{n}-{repeat}.log")
            runs.append(run)
            ph = run["phases"]
            print(f"N={n:>5} #{repeat}: applied {ph['apply']['seconds']:.2f}s, ready {ph['ready']['seconds']:.2f}s, "
                  f"fan-out {ph['fanout']['seconds']:.2f}s, {run['reconciles_per_s']:.1f} reconciles/s, "
                  f"peak RSS {run['rss_peak_mib']:.0f} MiB (run {run['wall_s']:.0f}s)", flush=True)
    total = time.monotonic() - started
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    rows = summarise(runs)
    slope = rss_slope_per_1000(runs)
    results = {"when": when, "machine": machine, "argv": sys.argv[1:] if argv is None else list(argv),
               "total_s": round(total, 1), "rss_slope_per_1000_mib": slope, "summary": rows, "runs": runs}
    (out / "operator_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    write_reports(out, results)
    print(f"total {total:.0f}s; wrote {out / 'operator_scale.md'}, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
