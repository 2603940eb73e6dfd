#!/usr/bin/env python3
"""The sidecar under steady load for minutes while faults are injected in turn: does it degrade
without losing money, records or memory, and recover after each fault?

What it runs, every server on 127.0.0.1 and free ports:

- ``redis-server`` with an append-only file fsynced on every write (``--appendonly yes
  --appendfsync always``), as a budget store that must survive a crash is run: killed with
  SIGKILL and started again it comes back with its counters;
- the stand-in model (``agentgov.demo.model``) in this process, so its knobs can be turned
  mid-run (30 % failures, hanging), with a 20 ms latency and an API key;
- the sidecar **as a user starts it**: ``agentgov sidecar`` with Redis, the audit log on
  (hash-chained, fsync per batch, a queue of ``--audit-queue-size`` events), metrics, JSON logs,
  and a bundle mounted the way the kubelet mounts a ConfigMap (``bundle.json`` -> ``..data/``
  -> a timestamped directory, swapped with an atomic rename). Two budgets: ``capped`` (carol
  only, Hard, failure policy **Closed**, a daily limit the load reaches about a third of the way
  through) and ``team`` (everyone, Hard, failure policy **Open**, never reached);
- this script as the agent: an open loop at ``--rate`` requests per second (each sent at its
  scheduled time, whatever the answers do), from alice, bob and carol (45/45/10 %), half of them
  one of 20 repeated prompts per user (cache hits after the first), half never asked before.

The run is 13 windows of ``--phase-seconds``: a baseline, then each fault followed by a recovery
window: Redis killed (and restarted at the end of the window), Redis paused (SIGSTOP: the socket
accepts, nothing answers), the upstream failing 30 % of calls, the upstream hanging, the bundle
replaced (a new valid one, then a broken one that must be refused while the last good one stays
in force, then a valid one again), and the audit disk full (``RLIMIT_FSIZE`` of the sidecar
process lowered to the log's size with ``prlimit``: writes fail with EFBIG, as on a full disk;
CPython ignores SIGXFSZ, so the process lives. A small tmpfs would give ENOSPC, but needs
CAP_SYS_ADMIN and leaves a mount behind if the run is killed; the limit needs neither).

It reports, per window: requests sent, answered 200, failed by HTTP status and error code,
latency; and checks the invariants (``soak.json`` ``invariants``; the script exits 1 when one
fails): every request answered and counted by the sidecar; carol's committed spend, read back
from Redis, never over her limit (and the limit reached); the audit chain verifies with
``agentgov audit verify``; audit records written equal the sidecar's count, records dropped equal
what the log's ``audit_integrity`` notes say, and model-call records match the requests answered
but for those drops; every valid bundle applied and the broken one refused; the second half of
every recovery window free of errors. Memory: the sidecar's RSS every second.

Results: ``benchmarks/results/soak.{json,md,png}``. See ``benchmarks/README.md``.

What it must never do: talk to anything beyond 127.0.0.1, leave a process it started running or a
limit lowered, or wait for a fixed time where a condition can be polled (the fault windows are the
schedule itself, not waits for convergence).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import pathlib
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import jwt

import sidecar_latency as sl
from agentgov.api import spendstore
from agentgov.api.agentdeployment import Audit, Cache
from agentgov.api.bundle import (
    AgentIdentity, BundleAuth, BundleBudget, BundleModelRoute, BundleSidecar, PolicyBundle, Price, SecretFile,
    bundle_hash, canonical_json,
)
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.demo.model import ModelConfig, StandInModel, serving_model
from agentgov.sidecar.budgets import cost_micros

NAME = "soak"
NAMESPACE, AGENT = "soak", "soak-agent"
ROUTE, MODEL = "soak-model", "gpt-4o-mini"
ISSUER, AUDIENCE = "https://soak.agentgov.local/", "soak-agent"
AUTH_KEY = SecretFile(secret="soak-auth", key="hmac")
UPSTREAM_KEY = SecretFile(secret="soak-upstream", key="api-key")
EXECUTION_HEADER = "X-Agentgov-Execution-Id"
# gpt-4o-mini's list price.
PRICE = Price(input_per_1k=0.00015, output_per_1k=0.0006)
USERS: tuple[tuple[str, float], ...] = (("alice", 0.45), ("bob", 0.45), ("carol", 0.10))
CAPPED_USER = "carol"
REPEATED_SHARE = 0.5
REPEATED_PROMPTS = 20
MAX_TOKENS = 32
UPSTREAM_LATENCY_MS = 20.0
FAILURE_RATE = 0.3
# The route's breaker: a hung upstream costs a call 2 s, five failures in a row open it for 1 s.
BREAKER = CircuitBreaker(failure_threshold=5, call_timeout_seconds=2, recovery_timeout_seconds=1,
                         half_open_successes=2)
CLIENT_TIMEOUT_SECONDS = 30.0
# Carol's daily limit is sized so that her unique prompts reach it at this share of the run.
LIMIT_AT_SHARE = 0.3
FAULTS: tuple[str, ...] = ("redis-kill", "redis-pause", "upstream-errors", "upstream-hang", "bundle-swap",
                           "audit-disk-full")
WINDOWS = 1 + 2 * len(FAULTS)
# Answers that are a policy working, not a failure: carol over her limit.
POLICY_CODES = frozenset({"budget_exceeded"})
SAMPLE_SECONDS = 0.5
# The L1 cache is full after this many distinct answers (a minute of a 75 req/s run): memory that
# grows after that is not the cache filling up.
L1_ENTRIES = 2000
SYSTEM_PROMPT = "You are a research assistant. Answer briefly and cite your sources."
MIB = 1024 * 1024


# --- the plan (pure) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """One window of the run: ``kind`` baseline, fault or recovery; times in seconds from the start."""

    name: str
    kind: str
    fault: str | None
    start: float
    end: float


def phase_plan(phase_seconds: float, faults: Sequence[str] = FAULTS) -> list[Window]:
    """Baseline, then each fault and its recovery, ``phase_seconds`` each."""
    if phase_seconds <= 0:
        raise ValueError("phase_seconds must be positive")
    windows = [Window("baseline", "baseline", None, 0.0, phase_seconds)]
    for fault in faults:
        start = windows[-1].end
        windows.append(Window(fault, "fault", fault, start, start + phase_seconds))
        windows.append(Window(f"{fault} recovery", "recovery", fault, start + phase_seconds, start + 2 * phase_seconds))
    return windows


def window_of(windows: Sequence[Window], at: float) -> Window:
    for window in windows:
        if window.start <= at < window.end:
            return window
    return windows[-1]


def capped_limit_usd(call_cost_usd: float, rate: float, duration_s: float) -> float:
    """Carol's daily limit: what her unique prompts cost over LIMIT_AT_SHARE of the run."""
    capped_share = dict(USERS)[CAPPED_USER]
    misses_per_second = rate * capped_share * (1 - REPEATED_SHARE)
    return round(max(call_cost_usd * 5, call_cost_usd * misses_per_second * duration_s * LIMIT_AT_SHARE), 6)


@dataclass(frozen=True)
class Outcome:
    """One request: when it was scheduled (s from the start), how long it took, what came back.
    ``status`` 0: no HTTP answer (``code`` says why: a client timeout or a connection error)."""

    at: float
    latency: float
    user: str
    status: int
    code: str | None
    cache: str | None
    cost_usd: float | None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def label(self) -> str:
        """``200``, ``429 budget_exceeded``, ``0 timeout``..."""
        return str(self.status) if self.ok else f"{self.status} {self.code or '-'}"

    @property
    def failed(self) -> bool:
        """Neither answered nor refused by a policy that worked as meant."""
        return not self.ok and self.code not in POLICY_CODES


def summarise_window(window: Window, outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Requests sent, answered, failed by status and code, latency: of one window."""
    mine = [o for o in outcomes if window.start <= o.at < window.end]
    by = Counter(o.label for o in mine if not o.ok)
    ok = [o for o in mine if o.ok]
    return {
        "window": window.name, "kind": window.kind, "fault": window.fault, "start_s": window.start,
        "end_s": window.end, "sent": len(mine), "ok": len(ok), "failed": sum(1 for o in mine if o.failed),
        "refused_by_policy": sum(1 for o in mine if not o.ok and not o.failed),
        "by_status_code": dict(sorted(by.items())),
        "cache_hits": sum(1 for o in ok if o.cache == "hit"),
        "latency_ms": sl.percentile_stats([o.latency for o in mine]) if mine else {},
    }


def per_second(outcomes: Sequence[Outcome], duration_s: float) -> list[dict[str, Any]]:
    """Per second of scheduled send time: sent, answered, failed, refused, p50/p99 latency."""
    seconds = max(1, int(duration_s + 0.999))
    buckets: list[list[Outcome]] = [[] for _ in range(seconds)]
    for o in outcomes:
        buckets[min(seconds - 1, max(0, int(o.at)))].append(o)
    series = []
    for second, mine in enumerate(buckets):
        latencies = sorted(o.latency * 1000 for o in mine)
        series.append({
            "t": second, "sent": len(mine), "ok": sum(o.ok for o in mine), "failed": sum(o.failed for o in mine),
            "refused": sum(1 for o in mine if not o.ok and not o.failed),
            "p50_ms": latencies[len(latencies) // 2] if latencies else None,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        })
    return series


def recovery_errors(windows: Sequence[Window], outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Failed requests scheduled in the second half of each recovery window: 0 once recovered."""
    found: dict[str, int] = {}
    for window in windows:
        if window.kind == "recovery":
            half = (window.start + window.end) / 2
            found[window.name] = sum(1 for o in outcomes if half <= o.at < window.end and o.failed)
    return found


def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


# --- processes ---------------------------------------------------------------------------------

class RedisProcess:
    """redis-server on a fixed port with an fsynced append-only file: killed and started again,
    it keeps what it acknowledged. Pause (SIGSTOP) and resume (SIGCONT) make it hang."""

    def __init__(self, workdir: pathlib.Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary, self.workdir, self.port = binary, workdir, sl.free_port()
        self.process: sl.Process | None = None
        self.paused = False
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir),
                "--loglevel", "warning"]
        self.process = sl.spawn("redis-server", argv, self.workdir / f"redis-{self.starts}.log", sl.child_env(),
                                self.workdir)
        self.paused = False

    def kill(self) -> None:
        if self.process is not None:
            if self.paused:
                self.process.popen.send_signal(signal.SIGCONT)
            self.process.popen.kill()
            self.process.popen.wait(timeout=10)
        self.paused = False

    def pause(self) -> None:
        assert self.process is not None
        self.process.popen.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.popen.send_signal(signal.SIGCONT)
        self.paused = False

    async def wait_up(self) -> None:
        async def up() -> bool:
            assert self.process is not None
            self.process.check_alive()
            return await sl.redis_ping(self.port)

        await sl.poll(up, bool, what="redis-server to answer PING", timeout=30)


def spawn_piped(name: str, argv: Sequence[str], log_path: pathlib.Path, env: Mapping[str, str],
                cwd: pathlib.Path) -> sl.Process:
    """A process whose output reaches its log through a pipe this script copies: a lowered
    RLIMIT_FSIZE of the process then limits its audit log, not its own log file."""
    popen = subprocess.Popen(list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)

    def copy() -> None:
        assert popen.stdout is not None
        with log_path.open("wb") as log:
            for line in popen.stdout:
                log.write(line)
                log.flush()

    threading.Thread(target=copy, name=f"{name}-log", daemon=True).start()
    return sl.Process(name, popen, log_path)


def set_file_size_limit(pid: int, size: int | None) -> None:
    """RLIMIT_FSIZE of ``pid``: ``size`` bytes per file (None: unlimited)."""
    limit = resource.RLIM_INFINITY if size is None else size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


class BundleMount:
    """A directory laid out as the kubelet lays out a ConfigMap volume: ``bundle.json`` ->
    ``..data/bundle.json``, ``..data`` -> a timestamped directory. ``publish`` writes a new
    directory and swaps ``..data`` to it with one atomic rename, as a ConfigMap update does."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions = 0

    @property
    def path(self) -> pathlib.Path:
        return self.root / "bundle.json"

    def publish(self, data: bytes) -> None:
        self.versions += 1
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        target = self.root / f"{stamp}_{self.versions}"
        target.mkdir()
        (target / "bundle.json").write_bytes(data)
        data_link, temporary = self.root / "..data", self.root / "..data_tmp"
        previous = os.readlink(data_link) if data_link.is_symlink() else None
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target.name)
        os.replace(temporary, data_link)
        if not self.path.is_symlink():
            self.path.symlink_to("..data/bundle.json")
        if previous is not None:
            shutil.rmtree(self.root / previous, ignore_errors=True)


def soak_bundle(agent_port: int, upstream_url: str, capped_usd: float, generation: int) -> PolicyBundle:
    """What the operator would compile for the soak's agent: one model route, two budgets."""
    return PolicyBundle(
        agent=AgentIdentity(name=AGENT, namespace=NAMESPACE, generation=generation),
        data_classes=["internal"],
        auth=BundleAuth(issuer=ISSUER, audiences=[AUDIENCE], algorithms=["HS256"], key_file=AUTH_KEY,
                        leeway_seconds=30),
        roles={name: list(perms) for name, perms in DEFAULT_ROLES.items()},
        models=[BundleModelRoute(name=ROUTE, provider="OpenAICompatible", endpoint=upstream_url, upstream_model=MODEL,
                                 credentials_file=UPSTREAM_KEY, circuit_breaker=BREAKER)],
        budgets=[
            BundleBudget(name="capped", users=[CAPPED_USER], scope="Each", daily_usd=capped_usd,
                         monthly_usd=capped_usd * 30, alert_thresholds=[80, 90], enforcement="Hard",
                         failure_policy="Closed", pricing={MODEL: PRICE}),
            BundleBudget(name="team", users=["*"], scope="Each", daily_usd=1_000_000.0, monthly_usd=30_000_000.0,
                         alert_thresholds=[80, 90], enforcement="Hard", failure_policy="Open",
                         pricing={MODEL: PRICE}),
        ],
        cache=Cache(max_entries=L1_ENTRIES),
        audit=Audit(),
        sidecar=BundleSidecar(agent_port=agent_port, max_body_bytes=1024 * 1024, upstream_timeout_seconds=60),
    )


def token(key: bytes, user: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": user, "role": "analyst", "iat": now, "nbf": now,
                       "exp": now + 24 * 3600}, key, algorithm="HS256")


def messages(user: str, kind: str, index: int) -> list[dict[str, str]]:
    """Every prompt has the same number of words, so every call costs the same."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"[{user}-{kind}-{index}] Summarise the three most cited papers on "
                                        "retrieval-augmented generation and their benchmarks."}]


def request_body(user: str, kind: str, index: int) -> bytes:
    return json.dumps({"model": ROUTE, "temperature": 0, "max_tokens": MAX_TOKENS,
                       "messages": messages(user, kind, index)}).encode()


# --- the run -----------------------------------------------------------------------------------

@dataclass
class Soak:
    """Everything one run started and saw."""

    workdir: pathlib.Path
    rate: float
    phase_seconds: float
    audit_queue_size: int
    progress: Callable[[str], None]
    redis: RedisProcess | None = None
    model: StandInModel | None = None
    sidecar: sl.Process | None = None
    mount: BundleMount | None = None
    agent_port: int = 0
    capped_usd: float = 0.0
    call_cost_usd: float = 0.0
    executions: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    bundles: dict[str, str] = field(default_factory=dict)  # version -> expected hash
    started: float = 0.0

    @property
    def audit_path(self) -> pathlib.Path:
        return self.workdir / "audit.jsonl"

    def note(self, what: str, **detail: Any) -> None:
        at = round(time.monotonic() - self.started, 3) if self.started else 0.0
        self.events.append({"t": at, "event": what, **detail})
        self.progress(f"[{at:7.1f}s] {what}" + (f" {detail}" if detail else ""))

    def egress_url(self) -> str:
        assert self.sidecar is not None
        return f"http://127.0.0.1:{self.sidecar.egress_port}/v1/chat/completions"

    def inbound(self, path: str) -> str:
        assert self.sidecar is not None
        return f"http://127.0.0.1:{self.sidecar.port}{path}"

    def publish_bundle(self, version: str, generation: int | None = None, broken: bool = False) -> None:
        assert self.mount is not None and self.model is not None
        if broken:
            good = canonical_json(soak_bundle(self.agent_port, self.model.url, self.capped_usd, 1))
            self.mount.publish(good[: len(good) // 2].encode())  # cut short: not JSON
            return
        bundle = soak_bundle(self.agent_port, self.model.url, self.capped_usd, generation or 1)
        self.bundles[version] = bundle_hash(bundle)
        self.mount.publish(canonical_json(bundle).encode())


async def call_cost(model: StandInModel, key: str) -> float:
    """What one soak call costs: its usage as the stand-in reports it, at the budget's price."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{model.url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                json={"model": MODEL, "temperature": 0, "max_tokens": MAX_TOKENS,
                                      "messages": messages("probe", "unique", 0)}) as response:
            usage = (await response.json())["usage"]
    return spendstore.micros_to_usd(cost_micros(PRICE, usage["prompt_tokens"], usage["completion_tokens"]))


async def start(soak: Soak, stack: contextlib.AsyncExitStack, duration_s: float) -> None:
    workdir = soak.workdir
    soak.redis = redis = RedisProcess(workdir / "redis")
    redis.workdir.mkdir(parents=True, exist_ok=True)
    redis.start()
    stack.callback(redis.kill)
    upstream_key = "sk-soak-" + secrets.token_urlsafe(24)
    soak.model = await stack.enter_async_context(
        serving_model(ModelConfig(api_key=upstream_key, latency_ms=UPSTREAM_LATENCY_MS, models=(MODEL,))))
    soak.agent_port = await stack.enter_async_context(sl.stand_in_agent())
    soak.call_cost_usd = await call_cost(soak.model, upstream_key)
    soak.capped_usd = capped_limit_usd(soak.call_cost_usd, soak.rate, duration_s)

    secrets_dir = workdir / "secrets"
    # Printable: a raw key file starting with "{" would be read as a JWKS, and a trailing
    # newline is not part of the secret (agentgov.sidecar.keys), as random bytes may have.
    auth_key = secrets.token_urlsafe(32).encode()
    sl.write_secret(pathlib.Path(AUTH_KEY.path(str(secrets_dir))), auth_key)
    sl.write_secret(pathlib.Path(UPSTREAM_KEY.path(str(secrets_dir))), upstream_key.encode())
    soak.mount = BundleMount(workdir / "bundle")
    soak.publish_bundle("v1", generation=1)
    await redis.wait_up()

    port, egress_port = sl.free_port(), sl.free_port()
    env = sl.child_env(
        AGENTGOV_REDIS_URL=redis.url, AGENTGOV_AUDIT_LOG=str(soak.audit_path), AGENTGOV_EGRESS_PORT=str(egress_port),
        AGENTGOV_AUDIT_QUEUE_SIZE=str(soak.audit_queue_size), AGENTGOV_RELOAD_INTERVAL_SECONDS="0.5")
    argv = sl.agentgov_command() + ["sidecar", "--bundle", str(soak.mount.path), "--secrets-dir", str(secrets_dir),
                                    "--host", "127.0.0.1", "--port", str(port)]
    soak.sidecar = sidecar = spawn_piped("sidecar", argv, workdir / "sidecar.log", env, workdir)
    sidecar.port, sidecar.egress_port = port, egress_port

    def stop_sidecar() -> None:
        if sidecar.popen.poll() is None:
            set_file_size_limit(sidecar.pid, None)  # never leave the limit lowered
        sidecar.stop()

    stack.callback(stop_sidecar)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async def ready() -> dict[str, Any]:
            sidecar.check_alive()
            async with session.get(soak.inbound("/ready")) as response:
                return {"status": response.status, **(await response.json(content_type=None))}

        await sl.poll(ready, lambda r: r["status"] == 200 and r["redis"]["up"] is True,
                      what="the sidecar to be ready with Redis up", timeout=90)
        for user, _ in USERS:
            async with session.post(soak.inbound("/run"), json={"task": "soak"},
                                    headers={"Authorization": f"Bearer {token(auth_key, user)}"}) as response:
                await response.read()
                if response.status != 200 or EXECUTION_HEADER not in response.headers:
                    raise RuntimeError(f"the inbound request of {user} answered {response.status}, no execution id")
                soak.executions[user] = response.headers[EXECUTION_HEADER]


async def send(session: aiohttp.ClientSession, soak: Soak, at: float, due: float, user: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json", EXECUTION_HEADER: soak.executions[user]}
    code: str | None = None
    cache = cost = None
    try:
        async with session.post(soak.egress_url(), data=body, headers=headers) as response:
            data = await response.read()
            status = response.status
            cache = response.headers.get("X-Agentgov-Cache")
            if status == 200:
                cost = float(response.headers.get("X-Agentgov-Cost-Usd", "nan"))
            else:
                try:
                    error = json.loads(data).get("error", {})
                    code = error.get("code") if isinstance(error, dict) else None
                except (ValueError, AttributeError):
                    code = "not_json"
    except asyncio.TimeoutError:
        status, code = 0, "client_timeout"
    except aiohttp.ClientError as e:
        status, code = 0, type(e).__name__
    soak.outcomes.append(Outcome(at, time.perf_counter() - due, user, status, code, cache, cost))


async def load(soak: Soak, duration_s: float, seed: int) -> None:
    """The open loop: request i at start + i / rate, each in its own task."""
    rng = random.Random(seed)
    names, weights = [u for u, _ in USERS], [w for _, w in USERS]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
    tasks: set[asyncio.Task[None]] = set()
    unique = Counter[str]()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        origin = time.perf_counter()
        total = int(duration_s * soak.rate)
        for index in range(total):
            due = origin + index / soak.rate
            ahead = due - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)  # the schedule itself: this request's send time
            user = rng.choices(names, weights)[0]
            if rng.random() < REPEATED_SHARE:
                body = request_body(user, "repeat", rng.randrange(REPEATED_PROMPTS))
            else:
                unique[user] += 1
                body = request_body(user, "unique", unique[user])
            task = asyncio.create_task(send(session, soak, index / soak.rate, due, user, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT_SECONDS + 10)


async def sample(soak: Soak, stop: asyncio.Event) -> None:
    """Every SAMPLE_SECONDS: the sidecar's RSS and what its /ready says (bundle, audit, Redis, budgets)."""
    assert soak.sidecar is not None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not stop.is_set():
            entry: dict[str, Any] = {"t": round(time.monotonic() - soak.started, 2)}
            with contextlib.suppress(OSError):
                entry["rss_mib"] = round(sl.proc_memory(soak.sidecar.pid)["VmRSS"] / MIB, 1)
            try:
                async with session.get(soak.inbound("/ready")) as response:
                    ready = await response.json(content_type=None)
                entry.update(ready=response.status, bundle_hash=ready["bundle"]["hash"],
                             bundle_state=ready["bundle"]["state"], audit_healthy=ready["audit"]["healthy"],
                             audit_queue=ready["audit"]["queueDepth"], redis_up=ready["redis"]["up"],
                             pending=ready["budgets"]["pendingSettlements"],
                             usage_queued=ready["budgets"].get("usageQueued"))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
                entry["ready_error"] = type(e).__name__
            soak.samples.append(entry)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


async def inject(soak: Soak, windows: Sequence[Window]) -> None:
    """Start and stop each fault on the plan's schedule."""
    assert soak.redis is not None and soak.model is not None and soak.sidecar is not None
    redis, model, sidecar = soak.redis, soak.model, soak.sidecar

    async def at(when: float) -> None:
        delay = soak.started + when - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule itself

    for window in windows:
        if window.kind != "fault":
            continue
        await at(window.start)
        fault, middle = window.fault, (window.start + window.end) / 2
        if fault == "redis-kill":
            redis.kill()
            soak.note("redis killed")
        elif fault == "redis-pause":
            redis.pause()
            soak.note("redis paused")
        elif fault == "upstream-errors":
            model.configure(failure_rate=FAILURE_RATE, seed=7)
            soak.note("upstream failing", rate=FAILURE_RATE)
        elif fault == "upstream-hang":
            model.configure(hang=True)
            soak.note("upstream hanging")
        elif fault == "bundle-swap":
            soak.publish_bundle("v2", generation=2)
            soak.note("bundle v2 published", hash=soak.bundles["v2"])
            await at(middle)
            soak.publish_bundle("broken", broken=True)
            soak.note("broken bundle published")
        elif fault == "audit-disk-full":
            size = soak.audit_path.stat().st_size
            set_file_size_limit(sidecar.pid, size)
            soak.note("audit file size limited", bytes=size)
        await at(window.end)
        if fault == "redis-kill":
            redis.start()
            await redis.wait_up()
            soak.note("redis restarted")
        elif fault == "redis-pause":
            redis.resume()
            soak.note("redis resumed")
        elif fault == "upstream-errors":
            model.configure(failure_rate=0.0)
            soak.note("upstream healthy")
        elif fault == "upstream-hang":
            model.release_hangs()
            soak.note("upstream released")
        elif fault == "bundle-swap":
            soak.publish_bundle("v3", generation=3)
            soak.note("bundle v3 published", hash=soak.bundles["v3"])
        elif fault == "audit-disk-full":
            set_file_size_limit(sidecar.pid, None)
            soak.note("audit file size unlimited")


async def scrape(soak: Soak) -> dict[str, float]:
    """The sidecar's counters the invariants compare (summed over labels where noted)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(soak.inbound("/metrics")) as response:
            text = await response.text()
    found: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        found[key] = found.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "agent_requests_total":
                add(f"agent_requests_total{{status={s.labels['status']}}}", s.value)
                add("agent_requests_total", s.value)
            elif s.name in ("agentgov_audit_records_written_total", "agentgov_audit_records_dropped_total",
                            "agentgov_audit_write_errors_total", "agentgov_cache_redis_errors",
                            "agentgov_budget_store_degraded_total", "agentgov_bundle_reloads_total",
                            "agentgov_cache_entries", "agentgov_cache_bytes"):
                add(s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())), s.value)
    return found


async def settle_down(soak: Soak) -> dict[str, Any]:
    """After the load: wait until the sidecar has replayed what it owed Redis and written its audit queue."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async def ready() -> dict[str, Any]:
            async with session.get(soak.inbound("/ready")) as response:
                return dict(await response.json(content_type=None))

        def quiet(r: Mapping[str, Any]) -> bool:
            budgets = r["budgets"]
            return (r["audit"]["healthy"] and r["audit"]["queueDepth"] == 0 and r["redis"]["up"]
                    and budgets["pendingSettlements"] == 0 and not budgets.get("usageQueued"))

        return await sl.poll(ready, quiet, what="the sidecar to owe Redis and the audit log nothing", timeout=60,
                             interval=0.2)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_spend(soak: Soak) -> dict[str, dict[str, int]]:
    """The day hashes of both budgets, as the operator reads them."""
    import redis.asyncio as aioredis

    assert soak.redis is not None
    client = aioredis.Redis.from_url(soak.redis.url)
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        out: dict[str, dict[str, int]] = {}
        for budget in ("capped", "team"):
            raw = await client.hgetall(spendstore.period_key(NAMESPACE, budget, "day", now))
            figures = spendstore.parse_period_hash({_text(k): _text(v) for k, v in raw.items()})
            out[budget] = {subject: f.spent_micros for subject, f in figures.items()}
            out[budget + ":reserved"] = {subject: f.reserved_micros for subject, f in figures.items()}
        return out
    finally:
        await client.aclose()


def audit_files(path: pathlib.Path) -> list[pathlib.Path]:
    """The active log and any rotated siblings (``audit.jsonl.*``, not the head)."""
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if not p.name.endswith((".head", ".tmp")))
    return [*rotated, path]


def audit_counts(path: pathlib.Path) -> dict[str, Any]:
    lines = 0
    by_type: Counter[str] = Counter()
    dropped_noted = 0
    for file in audit_files(path):
        if not file.is_file():
            continue
        for raw in file.read_bytes().splitlines():
            if not raw.strip():
                continue
            lines += 1
            try:
                record = json.loads(raw)
            except ValueError:
                by_type["(unparsable)"] += 1
                continue
            by_type[str(record.get("event_type"))] += 1
            if record.get("event_type") == "audit_integrity":
                dropped_noted += int((record.get("metadata") or {}).get("dropped_events", 0))
    return {"records": lines, "by_type": dict(sorted(by_type.items())), "dropped_noted": dropped_noted}


async def metrics_and_log(soak: Soak, timeout: float = 10.0) -> tuple[dict[str, float], dict[str, Any]]:
    """The sidecar's counters and the audit log's counts, once they describe the same moment: an
    empty audit queue can still have its last batch on the way to the file (written there before
    the counter moves), so read both until they agree, or until ``timeout`` (then the last pair,
    for the invariants to judge)."""
    deadline = time.monotonic() + timeout
    while True:
        after = await scrape(soak)
        live = audit_counts(soak.audit_path)
        if live["records"] == after.get("agentgov_audit_records_written_total") or time.monotonic() >= deadline:
            return after, live
        await asyncio.sleep(0.2)  # polling with a deadline: the writer finishes its batch meanwhile


def verify_audit(path: pathlib.Path) -> dict[str, Any]:
    done = subprocess.run([*sl.agentgov_command(), "audit", "verify", str(path)], capture_output=True, text=True,
                          timeout=300, env=sl.child_env())
    output = (done.stdout + done.stderr).strip().replace(str(path), path.name)  # no machine paths in results
    return {"exit_code": done.returncode, "output": output[-2000:]}


def bundle_checks(soak: Soak, windows: Sequence[Window]) -> dict[str, Any]:
    """What /ready said about the bundle in the swap window and after it."""
    swap = next(w for w in windows if w.fault == "bundle-swap" and w.kind == "fault")
    middle = (swap.start + swap.end) / 2
    seen = [s for s in soak.samples if "bundle_hash" in s]
    in_first_half = [s for s in seen if swap.start <= s["t"] < middle]
    in_second_half = [s for s in seen if middle <= s["t"] < swap.end]
    after = [s for s in seen if s["t"] >= swap.end]
    return {
        "v2_applied": any(s["bundle_hash"] == soak.bundles["v2"] for s in in_first_half + in_second_half),
        "broken_refused": any(s["bundle_state"] == "stale" and s["bundle_hash"] == soak.bundles["v2"]
                              for s in in_second_half),
        "never_served_broken": all(s["bundle_hash"] in soak.bundles.values() for s in seen),
        "v3_applied": bool(after) and after[-1]["bundle_hash"] == soak.bundles["v3"]
        and after[-1]["bundle_state"] == "current",
    }


async def run(soak: Soak, windows: Sequence[Window], seed: int) -> dict[str, Any]:
    duration = windows[-1].end
    async with contextlib.AsyncExitStack() as stack:
        soak.progress(f"starting redis-server, the stand-in model and the sidecar in {soak.workdir}")
        await start(soak, stack, duration)
        assert soak.sidecar is not None
        before = await scrape(soak)
        soak.started = time.monotonic()
        soak.note("load started", rate=soak.rate, seconds=duration, capped_usd=soak.capped_usd)
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample(soak, stop_sampling))
        memory_start = sl.proc_memory(soak.sidecar.pid)
        injector = asyncio.create_task(inject(soak, windows))
        await load(soak, duration, seed)
        await injector
        soak.note("load done", sent=len(soak.outcomes))
        quiet = await settle_down(soak)
        stop_sampling.set()
        await sampler
        after, audit_live = await metrics_and_log(soak)
        memory_end = sl.proc_memory(soak.sidecar.pid)
        spend = await read_spend(soak)
        sidecar = soak.sidecar
        sidecar.stop()
        exit_code = sidecar.popen.returncode
        audit_final = audit_counts(soak.audit_path)
        verified = verify_audit(soak.audit_path)
        return {"before": before, "after": after, "quiet": quiet, "spend": spend, "memory_start": memory_start,
                "memory_end": memory_end, "audit_live": audit_live, "audit_final": audit_final,
                "verify": verified, "sidecar_exit_code": exit_code,
                "bundle": bundle_checks(soak, windows)}


def invariants(soak: Soak, windows: Sequence[Window], seen: Mapping[str, Any]) -> list[dict[str, Any]]:
    outcomes = soak.outcomes
    before, after = seen["before"], seen["after"]
    sent = len(outcomes)
    no_answer = sum(1 for o in outcomes if o.status == 0)
    counted = after.get("agent_requests_total", 0) - before.get("agent_requests_total", 0)
    capped_limit = spendstore.usd_to_micros(soak.capped_usd)
    carol = spendstore.subject("user", CAPPED_USER)
    carol_spent = seen["spend"]["capped"].get(carol, 0)
    carol_reserved = seen["spend"]["capped:reserved"].get(carol, 0)
    refusals = sum(1 for o in outcomes if o.code == "budget_exceeded")
    written = after.get("agentgov_audit_records_written_total", 0)
    dropped = after.get("agentgov_audit_records_dropped_total", 0)
    live = seen["audit_live"]
    model_calls = live["by_type"].get("model_call", 0)
    model_calls_counted = after.get("agent_requests_total", 0)  # since the sidecar started
    bundle = seen["bundle"]
    recovery = recovery_errors(windows, outcomes)
    return [
        check("every request answered and counted by the sidecar",
              no_answer == 0 and counted == sent,
              f"{sent} sent, {no_answer} without an HTTP answer, {int(counted)} counted in agent_requests_total"),
        check("no overspend: carol's committed spend (read from Redis) within her limit, nothing left reserved",
              carol_spent <= capped_limit and carol_reserved == 0,
              f"spent {carol_spent} µUSD of {capped_limit} µUSD, {carol_reserved} reserved"),
        check("the limit was reached (the budget was tested)", refusals > 0,
              f"{refusals} calls refused 429 budget_exceeded"),
        check("the audit chain verifies (agentgov audit verify)", seen["verify"]["exit_code"] == 0,
              seen["verify"]["output"][-300:]),
        check("audit records in the log = the sidecar's written count", live["records"] == written,
              f"{live['records']} in the log, agentgov_audit_records_written_total {int(written)}"),
        check("audit records dropped = the drops the log itself notes", dropped == live["dropped_noted"],
              f"agentgov_audit_records_dropped_total {int(dropped)}, audit_integrity notes {live['dropped_noted']}"),
        check("one model_call record per request, but for the dropped ones",
              model_calls <= model_calls_counted <= model_calls + dropped
              and (dropped > 0 or model_calls == model_calls_counted),
              f"{model_calls} model_call records, {int(model_calls_counted)} model calls counted, "
              f"{int(dropped)} records dropped"),
        check("every valid bundle applied, the broken one refused while the last good one stayed",
              all(bundle.values()), json.dumps(bundle)),
        check("recovered: no failure in the second half of any recovery window", not any(recovery.values()),
              json.dumps(recovery)),
        check("the sidecar stopped cleanly", seen["sidecar_exit_code"] == 0, f"exit code {seen['sidecar_exit_code']}"),
    ]


def shown_command(argv: Sequence[str]) -> str:
    """The command line as run, folders given to it shown as ``DIR`` (no machine paths in results)."""
    shown: list[str] = []
    for arg in argv:
        if shown and shown[-1] in ("--out", "--keep-logs"):
            arg = "DIR"
        elif arg.startswith(("--out=", "--keep-logs=")):
            arg = arg.split("=", 1)[0] + "=DIR"
        shown.append(arg)
    return " ".join(["python benchmarks/soak.py", *shown])


def results_of(soak: Soak, windows: Sequence[Window], seen: Mapping[str, Any], args: argparse.Namespace,
               load_before: Sequence[float], wall_s: float) -> dict[str, Any]:
    duration = windows[-1].end
    rss = [s["rss_mib"] for s in soak.samples if "rss_mib" in s]
    memory = {
        "start_mib": round(seen["memory_start"]["VmRSS"] / MIB, 1),
        "end_mib": round(seen["memory_end"]["VmRSS"] / MIB, 1),
        "peak_mib": round(seen["memory_end"]["VmHWM"] / MIB, 1),
        "max_sampled_mib": max(rss, default=None),
    }
    memory["growth_mib"] = round(memory["end_mib"] - memory["start_mib"], 1)
    outcomes = soak.outcomes
    totals = Counter(o.label for o in outcomes)
    return {
        "name": NAME,
        "command": shown_command(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "machine": {**sl.machine_info(), "load_average_start": list(load_before),
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "plan": {"rate": soak.rate, "phase_seconds": soak.phase_seconds, "duration_s": duration,
                 "windows": [asdict(w) for w in windows], "users": dict(USERS), "repeated_share": REPEATED_SHARE,
                 "upstream_latency_ms": UPSTREAM_LATENCY_MS, "failure_rate": FAILURE_RATE,
                 "audit_queue_size": soak.audit_queue_size, "l1_entries": L1_ENTRIES, "breaker": BREAKER.model_dump(by_alias=True),
                 "call_cost_usd": soak.call_cost_usd, "capped_limit_usd": soak.capped_usd, "seed": args.seed,
                 "budgets": {"capped": "carol, Hard, failure policy Closed",
                             "team": "everyone, Hard, failure policy Open, 1,000,000 USD a day"}},
        "totals": {"sent": len(outcomes), "ok": totals.get("200", 0),
                   "failed": sum(1 for o in outcomes if o.failed),
                   "refused_by_policy": sum(1 for o in outcomes if not o.ok and not o.failed),
                   "by_status_code": dict(sorted(totals.items())),
                   "by_user": {user: dict(sorted(Counter(o.label for o in outcomes if o.user == user).items()))
                               for user, _ in USERS}},
        "windows": [summarise_window(w, outcomes) for w in windows],
        "per_second": per_second(outcomes, duration),
        "samples": soak.samples,
        "events": soak.events,
        "memory": memory,
        "spend": seen["spend"],
        "metrics_before": seen["before"],
        "metrics_after": seen["after"],
        "audit": {"live": seen["audit_live"], "after_stop": seen["audit_final"], "verify": seen["verify"]},
        "bundle": {"hashes": soak.bundles, **seen["bundle"]},
        "recovery_failures": recovery_errors(windows, outcomes),
        "invariants": invariants(soak, windows, seen),
    }


# --- reports -----------------------------------------------------------------------------------

def write_markdown(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    plan, totals, memory = results["plan"], results["totals"], results["memory"]
    lines = [
        "# Soak under faults: results", "",
        f"Run {results['date']} with `{results['command']}` ({results['wall_s']} s in all): "
        f"{plan['rate']:g} requests/s for {plan['duration_s']:.0f} s, {len(plan['windows'])} windows of "
        f"{plan['phase_seconds']:.1f} s. Users alice/bob/carol at 45/45/10 %, half of the prompts repeated. "
        f"Budgets: `capped` ({plan['budgets']['capped']}, {plan['capped_limit_usd']} USD a day, "
        f"{plan['call_cost_usd']:.6f} USD a call) and `team` ({plan['budgets']['team']}). "
        f"Audit queue {plan['audit_queue_size']} events.", "",
        "## Invariants", "",
        "| invariant | holds | detail |", "|---|:---:|---|",
    ]
    for inv in results["invariants"]:
        detail = str(inv["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {inv['name']} | {'yes' if inv['ok'] else '**NO**'} | {detail} |")
    lines += [
        "", "## Per window", "",
        "Requests by the window they were sent in. Failed: anything but 200 and the budget's 429s (so carol's "
        "`503 budget_store_unavailable` while Redis is away counts: her Closed budget refusing, as designed); "
        "`0 client_timeout`: no answer within the client's timeout.", "",
        "| window | sent | 200 | cache hits | failed | 429 budget | failures by status and code | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for w in results["windows"]:
        failures = ", ".join(f"{k}: {v}" for k, v in w["by_status_code"].items() if k != "429 budget_exceeded") or "–"
        ms = w["latency_ms"]
        lines.append(f"| {w['window']} | {w['sent']} | {w['ok']} | {w['cache_hits']} | {w['failed']} | "
                     f"{w['refused_by_policy']} | {failures} | {ms.get('p50', 0):.1f} | {ms.get('p99', 0):.1f} |")
    lines.append(f"| **all** | {totals['sent']} | {totals['ok']} | | {totals['failed']} | "
                 f"{totals['refused_by_policy']} | | | |")
    lines += ["", "By user (alice and bob: the Open `team` budget only; carol: also the Closed `capped` one): "
              + "; ".join(f"{user}: " + ", ".join(f"{label} × {n:,}" for label, n in counts.items())
                          for user, counts in totals.get("by_user", {}).items()) + "."]
    audit = results["audit"]["live"]
    spend, after = results["spend"], results["metrics_after"]
    carol = spend["capped"].get(spendstore.subject("user", CAPPED_USER), 0)
    lines += [
        "", "## Money, records, memory", "",
        f"- Carol's committed spend in Redis: {carol:,} µUSD of a {spendstore.usd_to_micros(plan['capped_limit_usd']):,} "
        f"µUSD limit; the team budget: {sum(spend['team'].values()):,} µUSD committed over "
        f"{len(spend['team'])} users.",
        f"- Audit log: {audit['records']:,} records ({', '.join(f'{k} {v:,}' for k, v in audit['by_type'].items())}); "
        f"{audit['dropped_noted']:,} dropped and noted while the file could not grow.",
        f"- Sidecar RSS: {memory['start_mib']} MiB at the start of the load, {memory['end_mib']} MiB at the end "
        f"(growth {memory['growth_mib']:+} MiB), peak {memory['peak_mib']} MiB; the L1 cache (at most "
        f"{plan.get('l1_entries', '?')} entries) held {int(after.get('agentgov_cache_entries', 0)):,} answers, "
        f"{after.get('agentgov_cache_bytes', 0) / MIB:.1f} MiB charged, at the end.",
        "", "## Fault timeline", "",
    ]
    lines += [f"- {e['t']:.1f} s: {e['event']}" + (f" ({', '.join(f'{k}={v}' for k, v in e.items() if k not in ('t', 'event'))})"
                                                  if len(e) > 2 else "") for e in results["events"]]
    machine = results["machine"]
    lines += ["", f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python "
                  f"{machine['python']}, aiohttp {machine.get('aiohttp')}, redis-server {machine.get('redis-server')}; load "
                  f"average {machine['load_average_start']} at the start, {machine['load_average_end']} at the end.",
              "Raw figures (per second, /ready samples, metrics): `soak.json`. What is measured: `benchmarks/README.md`."]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    """Throughput and failures per second, latency, RSS; fault windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = results["per_second"]
    t = [s["t"] for s in series]
    fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["sent"] for s in series], label="sent", color="grey", linewidth=1)
    ax.plot(t, [s["ok"] for s in series], label="200", color="tab:green")
    ax.plot(t, [s["failed"] for s in series], label="failed", color="tab:red")
    ax.plot(t, [s["refused"] for s in series], label="429 budget", color="tab:orange", linewidth=1)
    ax.set_ylabel("requests per second (by send time)")
    ax.legend(loc="upper right", fontsize="small", ncol=4)
    ax = axes[1]
    ax.plot(t, [s["p50_ms"] for s in series], label="p50", color="tab:blue")
    ax.plot(t, [s["p99_ms"] for s in series], label="p99", color="tab:purple")
    ax.set_yscale("log")
    ax.set_ylabel("latency ms")
    ax.legend(loc="upper right", fontsize="small")
    ax = axes[2]
    rss = [(s["t"], s["rss_mib"]) for s in results["samples"] if "rss_mib" in s]
    ax.plot([x for x, _ in rss], [y for _, y in rss], color="tab:brown")
    ax.set_ylabel("sidecar RSS MiB")
    ax.set_xlabel("seconds since the load started")
    for window in results["plan"]["windows"]:
        if window["kind"] != "fault":
            continue
        for ax in axes:
            ax.axvspan(window["start"], window["end"], color="tab:red", alpha=0.12)
        axes[0].text((window["start"] + window["end"]) / 2, 1.01, window["fault"], transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize="small")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"agentgov sidecar soak: {results['plan']['rate']:g} req/s, faults shaded", y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(out: pathlib.Path, results: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(out / f"{NAME}.md", results)
    write_plot(out / f"{NAME}.png", results)


# --- main --------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=5.0,
                        help=f"length of the load (default 5); split into {WINDOWS} windows")
    parser.add_argument("--phase-seconds", type=float,
                        help=f"length of each window (overrides --minutes: the load lasts {WINDOWS} windows)")
    parser.add_argument("--rate", type=float, default=75.0, help="requests per second, open loop (default 75)")
    parser.add_argument("--audit-queue-size", type=int, default=1000,
                        help="the sidecar's AGENTGOV_AUDIT_QUEUE_SIZE (default 1000: a full disk for a window "
                             "overflows it, so drops and their accounting are exercised)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the users and prompts drawn (default 1)")
    parser.add_argument("--out", default=str(sl.RESULTS), help="results folder (default: benchmarks/results)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the sidecar's log, Redis's and the audit log here")
    parser.add_argument("--replot", action="store_true", help="run nothing: rewrite the table and plot from the JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or (args.phase_seconds is not None and args.phase_seconds <= 0) or args.minutes <= 0:
        parser.error("--rate, --minutes and --phase-seconds must be positive")
    if args.audit_queue_size < 1:
        parser.error("--audit-queue-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    if args.replot:
        write_reports(out, json.loads((out / f"{NAME}.json").read_text()))
        return 0
    phase = args.phase_seconds if args.phase_seconds is not None else args.minutes * 60 / WINDOWS
    windows = phase_plan(phase)
    load_before = [round(x, 2) for x in os.getloadavg()]
    began = time.monotonic()

    def progress(text: str) -> None:
        print(text, flush=True)

    with tempfile.TemporaryDirectory(prefix="agentgov-soak-") as tmp:
        soak = Soak(pathlib.Path(tmp), args.rate, phase, args.audit_queue_size, progress)
        try:
            seen = asyncio.run(run(soak, windows, args.seed))
        finally:
            if args.keep_logs:
                keep = pathlib.Path(args.keep_logs)
                keep.mkdir(parents=True, exist_ok=True)
                for log in [soak.workdir / "sidecar.log", *soak.workdir.glob("redis/*.log"),
                            *audit_files(soak.audit_path)]:
                    if log.is_file():
                        shutil.copy(log, keep / log.name)
        results = results_of(soak, windows, seen, args, load_before, time.monotonic() - began)
    write_reports(out, results)
    failed = [inv for inv in results["invariants"] if not inv["ok"]]
    totals = results["totals"]
    print(f"sent {totals['sent']}, 200 {totals['ok']}, failed {totals['failed']}, refused by budget "
          f"{totals['refused_by_policy']}; RSS {results['memory']['start_mib']} -> {results['memory']['end_mib']} MiB "
          f"(peak {results['memory']['peak_mib']}); wrote {out / NAME}.md, .json and .png")
    for inv in results["invariants"]:
        print(f"  {'ok  ' if inv['ok'] else 'FAIL'} {inv['name']}: {inv['detail']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
