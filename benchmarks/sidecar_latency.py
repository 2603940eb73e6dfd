#!/usr/bin/env python3
"""The sidecar's added latency and throughput on the agent's model calls, against the same local
upstream called directly.

What it is for: measuring what the sidecar's egress port (the hop every model call of the agent
takes: execution lookup, body checks, cache, budget reservation and settlement in Redis, breaker,
upstream call, audit record, metrics) adds to a chat completion, on a cache miss and on a cache
hit, for an upstream that answers at once and one that takes 50 ms. Contenders, all called with
the same aiohttp client and the same request bodies:

- ``direct``: the stand-in model (``agentgov.demo.model``) called directly: the floor;
- ``miss``: through the sidecar, a deterministic request never asked before (looked up, then
  stored in the cache; budget reserved and settled in Redis; audited);
- ``hit``: through the sidecar, a request answered from the in-process cache (L1);
- ``hit-l2``: through a second sidecar (another replica: same bundle, same Redis), a request the
  first one answered: a Redis (L2) hit, with no upstream call;
- ``miss-memory``: as ``miss``, through a sidecar with the in-memory spend store and no Redis
  (what ``agentgov demo`` runs), to show what Redis costs.

Each contender runs one request at a time (the latency the hop adds, without queueing) and then
in a closed loop at ``--concurrency`` (throughput, and latency under load). Contenders are
interleaved and rotated within each round, and rounds repeated, so noise shows as spread.

Every server is its own process, as in a pod: ``redis-server``; the stand-in model per upstream
latency; the production sidecar started as a user starts it (``agentgov sidecar``, Redis
configured, audit and metrics on, a budget large enough that nothing is refused) and a second
replica of it; and the in-memory variant (this script re-run with ``--serve sidecar-memory``:
the CLI cannot give the sidecar an in-memory store). This script is the client (and a tiny
stand-in agent, only so that execution ids are issued the real way: one authenticated request
through each sidecar's inbound port).

Results: ``benchmarks/results/sidecar_latency.{json,md,png}``. See ``benchmarks/README.md``.

What it must never do: talk to anything beyond 127.0.0.1, leave a process it started running,
or sleep for a fixed time in place of waiting for a condition (every wait polls with a deadline).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import itertools
import json
import os
import pathlib
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import jwt
from aiohttp import web

from agentgov.api.agentdeployment import Audit, Cache
from agentgov.api.bundle import (
    AgentIdentity, BundleAuth, BundleBudget, BundleModelRoute, BundleSidecar, PolicyBundle, Price, SecretFile,
    canonical_json,
)
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.api.toolpolicy import CircuitBreaker

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NAME = "sidecar_latency"
MODEL = "gpt-4o-mini"
ISSUER = "https://bench.agentgov.local/"
AUDIENCE = "bench-agent"
USER = "bench-user"
AUTH_KEY = SecretFile(secret="bench-auth", key="hmac")
UPSTREAM_KEY = SecretFile(secret="bench-upstream", key="api-key")
UPSTREAM_KEY_ENV = "AGENTGOV_BENCH_UPSTREAM_KEY"
EXECUTION_HEADER = "X-Agentgov-Execution-Id"
CACHE_HEADER = "X-Agentgov-Cache"
# gpt-4o-mini's list price; the budget is so large that no call is ever refused.
PRICE = Price(input_per_1k=0.00015, output_per_1k=0.0006)
BUDGET_DAILY_USD = 1_000_000.0
MAX_TOKENS = 64
SYSTEM_PROMPT = "You are a research assistant. Answer briefly and cite your sources."
MIB = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    server: str  # "direct" (the upstream), or which sidecar: "A", "B" (A's replica), "M" (in-memory)
    cache: str | None  # the X-Agentgov-Cache every timed answer must carry; None: not checked
    prompts: str  # "unique", "repeat" (one prompt, asked before) or "prefilled" (unique, answered by A first)


CONTENDERS: tuple[Contender, ...] = (
    Contender("direct", "upstream called directly (floor)", "direct", None, "unique"),
    Contender("miss", "sidecar, cache miss", "A", "miss", "unique"),
    Contender("hit", "sidecar, cache hit (L1)", "A", "hit", "repeat"),
    Contender("hit-l2", "sidecar replica, cache hit (L2, Redis)", "B", "hit", "prefilled"),
    Contender("miss-memory", "sidecar, cache miss, in-memory store, no Redis", "M", "miss", "unique"),
)
SIDECARS: Mapping[str, str] = {"A": "redis", "B": "redis", "M": "memory"}


# --- waiting and processes -------------------------------------------------------------------

class PollTimeout(AssertionError):
    """A condition did not hold before the deadline; the message says what was seen last."""


async def poll(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, what: str,
               timeout: float = 60.0, interval: float = 0.05) -> T:
    """Await ``probe()`` until ``done(result)``; raise PollTimeout naming what was seen last."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = value = await probe()
            if done(value):
                return value
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise PollTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last saw {last!r}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    found: dict[str, int] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of a process (``"self"`` for this one)."""
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Process:
    """A child process this benchmark started; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: pathlib.Path
    port: int = 0
    egress_port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGOV_")}
    env.update(extra)
    return env


def spawn(name: str, argv: Sequence[str], log_path: pathlib.Path, env: Mapping[str, str],
          cwd: pathlib.Path) -> Process:
    with log_path.open("wb") as log:
        popen = subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    return Process(name, popen, log_path)


def agentgov_command() -> list[str]:
    """The ``agentgov`` console script installed beside this interpreter (else on PATH)."""
    beside = pathlib.Path(sys.executable).parent / "agentgov"
    found = str(beside) if beside.exists() else shutil.which("agentgov")
    if not found:
        raise SystemExit("agentgov is not installed for this Python: pip install -e '.[test,bench]'")
    return [found]


async def redis_ping(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def redis_command_counts(port: int) -> dict[str, int]:
    """Calls per command since redis-server started (``INFO commandstats``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"INFO commandstats\r\n")
        await writer.drain()
        header = await asyncio.wait_for(reader.readline(), 5)
        if not header.startswith(b"$"):
            raise RuntimeError(f"redis-server answered INFO with {header[:80]!r}")
        text = (await asyncio.wait_for(reader.readexactly(int(header[1:]) + 2), 5)).decode()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    counts: dict[str, int] = {}
    for line in text.splitlines():
        name, _, stats = line.partition(":")
        if name.startswith("cmdstat_"):
            fields = dict(item.split("=", 1) for item in stats.split(",") if "=" in item)
            counts[name.removeprefix("cmdstat_")] = int(fields.get("calls", "0"))
    return counts


# --- what the servers are given --------------------------------------------------------------

def route_name(latency_ms: float) -> str:
    return f"bench-{latency_ms:g}ms"


def bench_bundle(agent_port: int, upstreams: Mapping[float, str]) -> PolicyBundle:
    """What the operator would compile for an agent with one model route per upstream latency,
    an AgentBudget over every user, the default cache, audit and roles; no RegionPolicy."""
    return PolicyBundle(
        agent=AgentIdentity(name="bench-agent", namespace="bench", generation=1),
        data_classes=["internal"],
        auth=BundleAuth(issuer=ISSUER, audiences=[AUDIENCE], algorithms=["HS256"], key_file=AUTH_KEY,
                        leeway_seconds=30),
        roles={name: list(perms) for name, perms in DEFAULT_ROLES.items()},
        models=[BundleModelRoute(name=route_name(latency), provider="OpenAICompatible", endpoint=url,
                                 upstream_model=MODEL, credentials_file=UPSTREAM_KEY,
                                 circuit_breaker=CircuitBreaker())
                for latency, url in upstreams.items()],
        budgets=[BundleBudget(name="bench-daily", users=["*"], scope="Each", daily_usd=BUDGET_DAILY_USD,
                              monthly_usd=BUDGET_DAILY_USD * 30, alert_thresholds=[80, 90], enforcement="Hard",
                              failure_policy="Closed", pricing={MODEL: PRICE})],
        cache=Cache(),
        audit=Audit(),
        sidecar=BundleSidecar(agent_port=agent_port, max_body_bytes=1024 * 1024, upstream_timeout_seconds=60),
    )


def write_secret(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def bench_token(key: bytes) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": USER, "role": "analyst", "iat": now, "nbf": now,
                       "exp": now + 24 * 3600}, key, algorithm="HS256")


def request_body(model: str, prompt: str) -> bytes:
    return json.dumps({"model": model, "temperature": 0, "max_tokens": MAX_TOKENS, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}).encode()


def prompt_text(tag: str, index: int) -> str:
    return (f"[{tag} #{index}] Summarise the three most cited papers on retrieval-augmented generation "
            "and say which evaluation benchmark each one used.")


# --- the environment: every server the benchmark needs -------------------------------------

@dataclass
class Environment:
    """The running servers and how to reach them."""

    workdir: pathlib.Path
    upstream_key: str
    upstreams: dict[float, Process] = field(default_factory=dict)
    sidecars: dict[str, Process] = field(default_factory=dict)
    executions: dict[str, str] = field(default_factory=dict)
    redis: Process | None = None

    @property
    def redis_port(self) -> int:
        assert self.redis is not None
        return self.redis.port

    def processes(self) -> list[Process]:
        return [p for p in (self.redis, *self.upstreams.values(), *self.sidecars.values()) if p is not None]

    def url(self, server: str, latency_ms: float) -> str:
        if server == "direct":
            return f"http://127.0.0.1:{self.upstreams[latency_ms].port}/v1/chat/completions"
        return f"http://127.0.0.1:{self.sidecars[server].egress_port}/v1/chat/completions"

    def headers(self, server: str) -> dict[str, str]:
        if server == "direct":  # the agent would hold the provider's key itself
            return {"Content-Type": "application/json", "Authorization": f"Bearer {self.upstream_key}"}
        return {"Content-Type": "application/json", EXECUTION_HEADER: self.executions[server]}

    def model(self, server: str, latency_ms: float) -> str:
        return MODEL if server == "direct" else route_name(latency_ms)

    def pids(self, server: str, latency_ms: float) -> dict[str, int]:
        """Whose CPU time a run of this contender is charged: the sidecar called (none for direct
        calls), the stand-in model, Redis and this client."""
        assert self.redis is not None
        pids = {"model": self.upstreams[latency_ms].pid, "redis": self.redis.pid, "client": os.getpid()}
        if server != "direct":
            pids = {"sidecar": self.sidecars[server].pid, **pids}
        return pids


@contextlib.asynccontextmanager
async def stand_in_agent() -> AsyncIterator[int]:
    """The agent behind the sidecars' inbound ports: answers 200 (the sidecar returns the
    execution id it issued to the caller)."""

    async def run(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", run)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def environment(latencies: Sequence[float], workdir: pathlib.Path, profile: pathlib.Path | None,
                      sidecars: Mapping[str, str] = SIDECARS, chunk_delay_ms: float = 0.0
                      ) -> AsyncIterator[Environment]:
    """Start Redis, one stand-in model per latency, the sidecars, and issue execution ids; stop all.
    ``sidecars``: which of ``SIDECARS`` to start; ``chunk_delay_ms``: the stand-ins' pause between
    stream chunks (``benchmarks/gateways.py`` uses both)."""
    env = Environment(workdir, "sk-bench-" + secrets.token_urlsafe(24))
    async with contextlib.AsyncExitStack() as stack:
        agent_port = await stack.enter_async_context(stand_in_agent())

        def stop_all() -> None:
            for process in reversed(env.processes()):
                process.stop()

        stack.callback(stop_all)
        auth_key = start_servers(env, latencies, agent_port, profile, sidecars, chunk_delay_ms)
        yield await _ready(env, auth_key)


def start_servers(env: Environment, latencies: Sequence[float], agent_port: int, profile: pathlib.Path | None,
                  sidecars: Mapping[str, str] = SIDECARS, chunk_delay_ms: float = 0.0) -> bytes:
    """Spawn redis-server, the stand-in models and the sidecars (on free ports, with the bundle
    and secrets written to the work directory); the HMAC key callers' tokens are signed with."""
    workdir = env.workdir
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    redis_port = free_port()
    env.redis = spawn("redis-server", [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(workdir),
                                       "--loglevel", "warning"], logs / "redis.log", child_env(), workdir)
    env.redis.port = redis_port
    for latency in latencies:
        port = free_port()
        env.upstreams[latency] = process = spawn(
            f"stand-in model ({latency:g} ms)",
            [sys.executable, __file__, "--serve", "upstream", "--port", str(port), "--latency-ms", str(latency),
             "--chunk-delay-ms", str(chunk_delay_ms)],
            logs / f"upstream-{latency:g}ms.log", child_env(**{UPSTREAM_KEY_ENV: env.upstream_key}), workdir)
        process.port = port

    secrets_dir = workdir / "secrets"
    # Printable, as a Secret usually holds it: the sidecar reads a key file that starts with "{"
    # as a JWKS, which 32 random bytes did about once in 200 runs (the run then never got ready).
    auth_key = secrets.token_hex(32).encode()
    write_secret(pathlib.Path(AUTH_KEY.path(str(secrets_dir))), auth_key)
    write_secret(pathlib.Path(UPSTREAM_KEY.path(str(secrets_dir))), env.upstream_key.encode())
    upstream_urls = {latency: f"http://127.0.0.1:{p.port}/v1" for latency, p in env.upstreams.items()}
    bundle_path = workdir / "bundle" / "bundle.json"
    bundle_path.parent.mkdir(parents=True, exist_ok=True)
    bundle_path.write_text(canonical_json(bench_bundle(agent_port, upstream_urls)))
    for name, variant in sidecars.items():
        port, egress_port = free_port(), free_port()
        extra = {"AGENTGOV_AUDIT_LOG": str(workdir / f"audit-{name}.jsonl"), "AGENTGOV_EGRESS_PORT": str(egress_port)}
        common = ["--bundle", str(bundle_path), "--secrets-dir", str(secrets_dir), "--host", "127.0.0.1",
                  "--port", str(port)]
        if variant == "redis":
            extra["AGENTGOV_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            argv = agentgov_command() + ["sidecar", *common]
            if profile is not None and name == "A":
                argv = [sys.executable, "-m", "cProfile", "-o", str(profile / "sidecar-A.prof"),
                        "-m", "agentgov.cli", "sidecar", *common]
        else:
            argv = [sys.executable, __file__, "--serve", "sidecar-memory", *common]
        env.sidecars[name] = process = spawn(f"sidecar {name} ({variant})", argv, logs / f"sidecar-{name}.log",
                                             child_env(**extra), workdir)
        process.port, process.egress_port = port, egress_port
    return auth_key


async def _ready(env: Environment, auth_key: bytes) -> Environment:
    """Wait until every server answers, then issue one execution id per sidecar the real way."""
    redis = env.redis
    assert redis is not None

    async def redis_up() -> bool:
        redis.check_alive()
        return await redis_ping(redis.port)

    await poll(redis_up, bool, what="redis-server to answer PING")
    token = bench_token(auth_key)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for process in env.upstreams.values():
            async def models(p: Process = process) -> int:
                p.check_alive()
                async with session.get(f"http://127.0.0.1:{p.port}/v1/models",
                                       headers={"Authorization": f"Bearer {env.upstream_key}"}) as response:
                    return response.status
            await poll(models, lambda status: status == 200, what=f"{process.name} to answer")
        for name, process in env.sidecars.items():
            async def ready(p: Process = process) -> dict[str, Any]:
                p.check_alive()
                async with session.get(f"http://127.0.0.1:{p.port}/ready") as response:
                    return {"status": response.status, **(await response.json(content_type=None))}

            wants_redis = SIDECARS[name] == "redis"
            await poll(ready, lambda r: r["status"] == 200 and (not wants_redis or r["redis"]["up"] is True),
                       what=f"{process.name} to be ready" + (" with Redis up" if wants_redis else ""), timeout=90)
            async with session.post(f"http://127.0.0.1:{process.port}/run", json={"task": "benchmark"},
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                if response.status != 200 or EXECUTION_HEADER not in response.headers:
                    raise RuntimeError(f"{process.name}: the inbound request answered {response.status}, "
                                       "no execution id")
                env.executions[name] = response.headers[EXECUTION_HEADER]
    return env


# --- measuring -------------------------------------------------------------------------------

@dataclass
class Phase:
    """One timed run of one contender: latencies in seconds, errors by kind, CPU by side."""

    latencies: list[float]
    errors: Counter[str]
    wall_s: float
    cpu_s: dict[str, float]


async def one_call(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], body: bytes,
                   expect_cache: str | None) -> tuple[float, str | None]:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            took = time.perf_counter() - started
            if response.status != 200:
                return took, f"http_{response.status}"
            seen = response.headers.get(CACHE_HEADER)
            if expect_cache is not None and seen != expect_cache:
                return took, f"cache_{seen}_not_{expect_cache}"
            return took, None
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return time.perf_counter() - started, type(e).__name__


async def drive(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str], bodies: Sequence[bytes],
                concurrency: int, expect_cache: str | None, pids: Mapping[str, int]) -> Phase:
    """Send every body, ``concurrency`` at a time (a closed loop: each worker sends its next request
    when its last one is answered)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    next_index = itertools.count()

    async def worker() -> None:
        while (index := next(next_index)) < len(bodies):
            took, error = await one_call(session, url, headers, bodies[index], expect_cache)
            latencies.append(took)
            if error is not None:
                errors[error] += 1

    before = {side: cpu_seconds(pid) for side, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = {side: cpu_seconds(pid) - before[side] for side, pid in pids.items()}
    return Phase(latencies, errors, wall, cpu)


def percentile_stats(latencies: Sequence[float]) -> dict[str, float]:
    """Milliseconds: p50, p90, p99, p99.9 (inclusive quantiles), min, mean, max."""
    ms = sorted(x * 1000 for x in latencies)
    if len(ms) < 2:
        value = ms[0] if ms else float("nan")
        return {k: value for k in ("p50", "p90", "p99", "p999", "min", "mean", "max")}
    cuts = statistics.quantiles(ms, n=1000, method="inclusive")
    return {"p50": cuts[499], "p90": cuts[899], "p99": cuts[989], "p999": cuts[998],
            "min": ms[0], "mean": statistics.fmean(ms), "max": ms[-1]}


async def metric_samples(session: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The sidecar's counters this benchmark reads: cache hits by level, misses, audit records."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    wanted = {"agentgov_cache_hits_total", "agentgov_cache_misses_total", "agentgov_audit_records_written_total",
              "agentgov_audit_records_dropped_total", "agentgov_budget_store_degraded_total",
              "agentgov_cache_redis_errors"}
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
                found[key] = found.get(key, 0.0) + float(sample.value)
    return found


@dataclass
class Plan:
    latencies: list[float]
    rounds: int
    requests: int
    sequential: int
    concurrency: int
    warmup: int
    contenders: tuple[Contender, ...] = CONTENDERS


def bodies_for(contender: Contender, model: str, tag: str, count: int) -> list[bytes]:
    if contender.prompts == "repeat":
        return [request_body(model, prompt_text(tag, 0))] * count
    return [request_body(model, prompt_text(tag, i)) for i in range(count)]


async def measure(env: Environment, plan: Plan, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every (upstream latency, round, contender): a one-at-a-time phase and a closed-loop phase."""
    runs: list[dict[str, Any]] = []
    nonce = secrets.token_hex(4)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for latency in plan.latencies:
            for round_ in range(1, plan.rounds + 1):
                shift = (round_ - 1) % len(plan.contenders)
                order = plan.contenders[shift:] + plan.contenders[:shift]
                for contender in order:
                    runs += await _measure_contender(session, env, plan, latency, round_, contender, nonce, progress)
    return runs


async def _measure_contender(session: aiohttp.ClientSession, env: Environment, plan: Plan, latency: float,
                             round_: int, contender: Contender, nonce: str, progress: Callable[[str], None]
                             ) -> list[dict[str, Any]]:
    server = contender.server
    url, headers, model = env.url(server, latency), env.headers(server), env.model(server, latency)
    pids = env.pids(server, latency)
    phases = (("c1", 1, plan.sequential), ("load", plan.concurrency, plan.requests))
    runs: list[dict[str, Any]] = []
    line = [f"{latency:>4g} ms upstream, round {round_}/{plan.rounds}, {contender.key:<12}"]
    for phase, concurrency, count in phases:
        tag = f"{nonce} {latency:g} {round_} {contender.key} {phase}"
        # The repeated prompt is asked (a miss, then cached) by the warm-up first.
        warm_tag = tag if contender.prompts == "repeat" else tag + " warm"
        warm = bodies_for(contender, model, warm_tag, plan.warmup)
        timed = bodies_for(contender, model, tag, count)
        if contender.prompts == "prefilled":  # another replica (A) answers them first: L2 holds them
            a_url, a_headers = env.url("A", latency), env.headers("A")
            a_model = env.model("A", latency)
            prefill = [request_body(a_model, prompt_text(warm_tag, i)) for i in range(plan.warmup)]
            prefill += [request_body(a_model, prompt_text(tag, i)) for i in range(count)]
            done = await drive(session, a_url, a_headers, prefill, plan.concurrency, "miss", {})
            if done.errors:
                raise RuntimeError(f"prefilling the L2 cache through sidecar A failed: {dict(done.errors)}")
        # Warm-up: connections opened, the repeat prompt cached (its first call is a miss).
        await drive(session, url, headers, warm[:1], 1, None, {})
        await drive(session, url, headers, warm[1:], min(concurrency, max(1, len(warm) - 1)), None, {})
        before = await metric_samples(session, env.sidecars[server].port) if server != "direct" else {}
        redis_before = await redis_command_counts(env.redis_port)
        result = await drive(session, url, headers, timed, concurrency, contender.cache, pids)
        redis_after = await redis_command_counts(env.redis_port)
        after = await metric_samples(session, env.sidecars[server].port) if server != "direct" else {}
        commands = {k: v - redis_before.get(k, 0) for k, v in redis_after.items()
                    if v != redis_before.get(k, 0) and k != "info"}
        stats = percentile_stats(result.latencies)
        n = len(result.latencies)
        counted = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
        if contender.cache == "hit":  # every timed answer came from the level this contender measures
            level = "l2" if contender.prompts == "prefilled" else "l1"
            short = n - int(counted.get(f"agentgov_cache_hits_total{{level={level}}}", 0))
            if short > 0:
                result.errors[f"not_{level}_hits"] += short
        runs.append({
            "upstream_latency_ms": latency, "round": round_, "contender": contender.key, "phase": phase,
            "concurrency": concurrency, "requests": n, "wall_s": round(result.wall_s, 4),
            "throughput_rps": round(n / result.wall_s, 2) if result.wall_s > 0 else None,
            "latency_ms": {k: round(v, 4) for k, v in stats.items()},
            "errors": dict(result.errors), "error_count": sum(result.errors.values()),
            "cpu_ms_per_request": {side: round(seconds * 1000 / max(n, 1), 4)
                                   for side, seconds in result.cpu_s.items()},
            "sidecar_counters": counted,
            # Includes the sidecars' background work during the phase (a health PING a second each,
            # budget gauges): a few commands, against hundreds from the requests.
            "redis_commands": commands,
            "redis_commands_per_request": round(sum(commands.values()) / max(n, 1), 2),
        })
        if phase == "c1":
            line.append(f"c=1 p50 {stats['p50']:7.2f} ms p99 {stats['p99']:7.2f} ms")
        else:
            line.append(f"c={concurrency} {n / result.wall_s:7.0f} req/s p50 {stats['p50']:7.2f} ms "
                        f"p99 {stats['p99']:7.2f} ms")
        if result.errors:
            line.append(f"ERRORS {dict(result.errors)}")
    progress(" | ".join(line))
    return runs


# --- summarising and reporting ---------------------------------------------------------------

def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max over rounds."""
    return {"median": float(statistics.median(values)), "min": float(min(values)), "max": float(max(values))}


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (upstream latency, phase, contender): medians over rounds with their spread;
    added latency is taken per round against that round's direct run, then summarised."""
    rows: list[dict[str, Any]] = []
    keys = [c.key for c in CONTENDERS]
    by = {(r["upstream_latency_ms"], r["phase"], r["contender"], r["round"]): r for r in runs}
    for latency in sorted({r["upstream_latency_ms"] for r in runs}):
        for phase in ("c1", "load"):
            for key in keys:
                same = sorted((r for r in runs if (r["upstream_latency_ms"], r["phase"], r["contender"])
                               == (latency, phase, key)), key=lambda r: r["round"])
                if not same:
                    continue
                row: dict[str, Any] = {
                    "upstream_latency_ms": latency, "phase": phase, "contender": key,
                    "concurrency": same[0]["concurrency"], "rounds": len(same),
                    "requests": sum(r["requests"] for r in same),
                    "errors": sum(r["error_count"] for r in same),
                    "throughput_rps": spread([r["throughput_rps"] for r in same]),
                }
                for p in ("p50", "p90", "p99"):
                    row[p] = spread([r["latency_ms"][p] for r in same])
                for p in ("p50", "p99"):
                    added = [r["latency_ms"][p] - by[(latency, phase, "direct", r["round"])]["latency_ms"][p]
                             for r in same if (latency, phase, "direct", r["round"]) in by]
                    row[f"added_{p}"] = spread(added) if added else None
                direct = [by[(latency, phase, "direct", r["round"])]["throughput_rps"] for r in same
                          if (latency, phase, "direct", r["round"]) in by]
                if direct:
                    row["throughput_vs_direct"] = float(statistics.median(
                        r["throughput_rps"] / d for r, d in zip(same, direct)))
                row["redis_commands_per_request"] = float(statistics.median(
                    r.get("redis_commands_per_request", 0.0) for r in same))
                row["cpu_ms_per_request"] = {side: float(statistics.median(r["cpu_ms_per_request"][side]
                                                                           for r in same))
                                             for side in same[0]["cpu_ms_per_request"]}
                rows.append(row)
    return rows


def machine_info() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    memory = next((int(line.split()[1]) * 1024 for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    versions: dict[str, str] = {}
    for package in ("aiohttp", "redis", "prometheus-client", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    redis_binary = shutil.which("redis-server")
    if redis_binary:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([redis_binary, "--version"], capture_output=True, text=True, timeout=10).stdout
            versions["redis-server"] = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out)
    return {"cpu_model": model, "cores": os.cpu_count(), "memory_gib": round(memory / 1024**3, 1),
            "python": platform.python_version(), "platform": platform.platform(), **versions}


LABELS = {c.key: c.label for c in CONTENDERS}


def _ms(s: Mapping[str, float] | None, digits: int = 2, signed: bool = False) -> str:
    if s is None:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len({round(s["min"], digits), round(s["max"], digits)}) == 1:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])} … {fmt.format(s['max'])})"


def write_markdown(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    rows, machine, plan = results["summary"], results["machine"], results["plan"]
    rounds = plan["rounds"]
    lines = [
        "# Sidecar latency and throughput: results",
        "",
        f"Run {results['when']} with `{' '.join(['python benchmarks/sidecar_latency.py', *results['argv']])}` "
        f"(whole run: {results['total_s']:.0f} s). Non-streaming chat completions (temperature 0, "
        f"max_tokens {MAX_TOKENS}, answers of about 30 tokens), sent with aiohttp from one client process. "
        f"Each figure is the median over {rounds} round(s), contenders interleaved"
        + (", with the range over rounds in parentheses." if rounds > 1 else "."),
        "Added = the contender's percentile minus the direct call's in the same round.",
        "",
    ]
    for latency in sorted({r["upstream_latency_ms"] for r in rows}):
        mine = [r for r in rows if r["upstream_latency_ms"] == latency]
        c1 = [r for r in mine if r["phase"] == "c1"]
        load = [r for r in mine if r["phase"] == "load"]
        lines += [
            f"## Upstream answering in {latency:g} ms",
            "",
            f"One request at a time ({plan['sequential']} requests per contender per round): the latency the hop adds.",
            "",
            "| contender | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms "
            "| Redis commands/req (Lua included) | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in c1:
            lines.append(f"| {LABELS[r['contender']]} | {_ms(r['p50'])} | {_ms(r['p90'])} | {_ms(r['p99'])} | "
                         f"{_ms(r['added_p50'], signed=True)} | {_ms(r['added_p99'], signed=True)} | "
                         f"{r.get('redis_commands_per_request', 0):.1f} | {r['errors']} |")
        if load:
            lines += [
                "",
                f"Closed loop, {load[0]['concurrency']} requests in flight ({plan['requests']} requests per contender "
                "per round): throughput, and latency with queueing. CPU ms per request, by process: the sidecar "
                "called / the stand-in model / redis-server / this client.",
                "",
                "| contender | req/s | × direct | p50 ms | p99 ms | added p50 ms | added p99 ms | "
                "CPU ms/req sidecar / model / redis / client | errors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in load:
                cpu = r["cpu_ms_per_request"]
                cpu_text = " / ".join(f"{cpu[side]:.2f}" if side in cpu else "–"
                                      for side in ("sidecar", "model", "redis", "client"))
                lines.append(
                    f"| {LABELS[r['contender']]} | {_ms(r['throughput_rps'], 0)} | "
                    f"{r.get('throughput_vs_direct', float('nan')):.2f} | {_ms(r['p50'])} | {_ms(r['p99'])} | "
                    f"{_ms(r['added_p50'], signed=True)} | {_ms(r['added_p99'], signed=True)} | {cpu_text} | "
                    f"{r['errors']} |")
        lines.append("")
    processes = results["processes"]
    lines += [
        "## Processes",
        "",
        "| process | peak RSS MiB | CPU s (whole run) |",
        "|---|---:|---:|",
    ]
    for name, info in processes.items():
        lines.append(f"| {name} | {info['peak_rss_mib']:.0f} | {info.get('cpu_s', float('nan')):.1f} |")
    counters = results.get("sidecar_counters") or {}
    if counters:
        lines += ["", "Sidecar counters at the end of the run (from `/metrics`): "
                  + "; ".join(f"{name}: " + ", ".join(f"`{k}` {v:g}" for k, v in sorted(c.items()))
                              for name, c in counters.items())]
    lines += [
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python "
        f"{machine['python']}, aiohttp {machine.get('aiohttp', '?')}, redis-server {machine.get('redis-server', '?')}; "
        f"load average (1/5/15 min) {machine['loadavg_at_start']} at the start, {machine['loadavg_at_end']} at the end "
        "(anything above ~0 means other work shared the cores: read the ranges as noise).",
        f"Raw numbers per round (all percentiles, CPU, sidecar counters): `{NAME}.json`. "
        "What is measured and what the figures mean: `benchmarks/README.md`.",
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    """Top row: percentiles one request at a time, per upstream latency, and throughput. Bottom
    row: percentiles at the load phase's concurrency, and the added p50/p99 one at a time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    rows, runs = results["summary"], results["runs"]
    latencies = sorted({r["upstream_latency_ms"] for r in rows})
    keys = [c.key for c in CONTENDERS if any(r["contender"] == c.key for r in rows)]
    cols = len(latencies) + 1
    fig, axes = plt.subplots(2, cols, figsize=(5.2 * cols, 9), squeeze=False)
    percentiles = ("p50", "p90", "p99")
    width = 0.8 / len(percentiles)
    for row_index, phase in enumerate(("c1", "load")):
        for col, latency in enumerate(latencies):
            ax = axes[row_index][col]
            mine = {r["contender"]: r for r in rows if r["upstream_latency_ms"] == latency and r["phase"] == phase}
            for i, p in enumerate(percentiles):
                xs = [k + (i - 1) * width for k in range(len(keys))]
                ax.bar(xs, [mine[k][p]["median"] if k in mine else 0 for k in keys], width, label=p)
                for x, k in zip(xs, keys):
                    dots = [r["latency_ms"][p] for r in runs if r["contender"] == k and r["phase"] == phase
                            and r["upstream_latency_ms"] == latency]
                    ax.scatter([x] * len(dots), dots, s=8, color="black", alpha=0.5, zorder=3)
            concurrency = next(iter(mine.values()))["concurrency"] if mine else 1
            ax.set_title(f"upstream {latency:g} ms, {concurrency} in flight", fontsize="medium")
            ax.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="minor", labelsize="x-small")
            ax.set_ylabel("latency ms (bars: median of rounds; dots: rounds)")
            ax.set_xticks(range(len(keys)), keys, rotation=20)
            ax.grid(True, axis="y", which="both", alpha=0.3)
            ax.legend(fontsize="small")
    ax = axes[0][-1]
    width = 0.8 / max(1, len(latencies))
    for i, latency in enumerate(latencies):
        mine = {r["contender"]: r for r in rows if r["upstream_latency_ms"] == latency and r["phase"] == "load"}
        xs = [k + (i - (len(latencies) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, [mine[k]["throughput_rps"]["median"] if k in mine else 0 for k in keys], width,
               label=f"upstream {latency:g} ms")
        for x, k in zip(xs, keys):
            dots = [r["throughput_rps"] for r in runs if r["contender"] == k and r["phase"] == "load"
                    and r["upstream_latency_ms"] == latency]
            ax.scatter([x] * len(dots), dots, s=8, color="black", alpha=0.5, zorder=3)
    ax.set_title(f"throughput, closed loop ({results['plan']['concurrency']} in flight)", fontsize="medium")
    ax.set_ylabel("requests/s")
    ax.set_xticks(range(len(keys)), keys, rotation=20)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    ax = axes[1][-1]
    sidecar_keys = [k for k in keys if k != "direct"]
    width = 0.8 / max(1, 2 * len(latencies))
    for i, (latency, p) in enumerate(itertools.product(latencies, ("p50", "p99"))):
        mine = {r["contender"]: r for r in rows if r["upstream_latency_ms"] == latency and r["phase"] == "c1"}
        xs = [k + (i - (2 * len(latencies) - 1) / 2) * width for k in range(len(sidecar_keys))]
        ax.bar(xs, [(mine[k][f"added_{p}"] or {}).get("median", 0) if k in mine else 0 for k in sidecar_keys],
               width, label=f"{p}, upstream {latency:g} ms")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1.0)  # a hit saves the upstream's whole latency: -50 beside +3
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:+g}" if value else "0"))
    ax.set_title("added latency, one at a time (< 0: a hit saved the upstream)", fontsize="medium")
    ax.set_ylabel("ms over the direct call (median of rounds; symlog)")
    ax.set_xticks(range(len(sidecar_keys)), sidecar_keys, rotation=20)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle("agentgov sidecar egress: added latency and throughput against the local stand-in model")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(out: pathlib.Path, results: Mapping[str, Any]) -> None:
    write_markdown(out / f"{NAME}.md", results)
    write_plot(out / f"{NAME}.png", results)


# --- the child processes' entry points (--serve) --------------------------------------------

async def _until_terminated() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_upstream(port: int, latency_ms: float, chunk_delay_ms: float = 0.0) -> None:
    from agentgov.demo.model import ModelConfig, serving_model

    config = ModelConfig(latency_ms=latency_ms, api_key=os.environ[UPSTREAM_KEY_ENV], name="bench",
                         chunk_delay_ms=chunk_delay_ms)
    async with serving_model(config, port=port):
        await _until_terminated()


async def serve_memory_sidecar(bundle: str, secrets_dir: str, host: str, port: int) -> None:
    """What ``agentgov sidecar`` runs, with ``agentgov demo``'s in-memory spend store instead of Redis."""
    from agentgov.sidecar.app import create_app, serving
    from agentgov.sidecar.commands import configure_logging
    from agentgov.sidecar.settings import settings_from_env
    from agentgov.sidecar.spend import MemorySpendStore

    settings = settings_from_env(os.environ, bundle_path=pathlib.Path(bundle),
                                 secrets_dir=pathlib.Path(secrets_dir), host=host, port=port)
    configure_logging(os.environ.get("AGENTGOV_LOG_LEVEL", "INFO").upper())
    async with serving(settings, create_app(settings, spend_store=MemorySpendStore())):
        await _until_terminated()


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, help="requests per contender per round in the closed loop "
                        "(default 1000; --quick: 40)")
    parser.add_argument("--sequential", type=int, help="requests per contender per round one at a time "
                        "(default 300; --quick: 20)")
    parser.add_argument("--concurrency", type=int,
                        help="requests in flight in the closed loop (default 16; --quick: 4)")
    parser.add_argument("--latency-ms", help="comma-separated upstream latencies (default 0,50; --quick: 0)")
    parser.add_argument("--rounds", type=int, help="rounds; contenders interleaved in each (default 3; --quick: 1)")
    parser.add_argument("--contenders", default=",".join(c.key for c in CONTENDERS),
                        help="comma-separated subset to run (default: all: %(default)s); the added latency needs "
                             "direct")
    parser.add_argument("--quick", action="store_true", help="a few requests, to see that everything works")
    parser.add_argument("--out", default=str(RESULTS), help="results folder (default: benchmarks/results)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs and audit logs here")
    parser.add_argument("--profile", metavar="DIR",
                        help="run sidecar A under cProfile and write DIR/sidecar-A.prof (slows it: figures of such "
                             "a run are not comparable)")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: rewrite the table and the plot from the results JSON in --out")
    parser.add_argument("--serve", choices=("upstream", "sidecar-memory"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--secrets-dir", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"requests": 40 if quick else 1000, "sequential": 20 if quick else 300,
                "concurrency": 4 if quick else 16, "latency_ms": "0" if quick else "0,50", "rounds": 1 if quick else 3}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("requests", "sequential", "concurrency", "rounds"):
        if getattr(args, name) < (2 if name in ("requests", "sequential") else 1):
            parser.error(f"--{name} must be at least {2 if name in ('requests', 'sequential') else 1}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve == "upstream":
        asyncio.run(serve_upstream(args.port, float(args.latency_ms), args.chunk_delay_ms))
        return 0
    if args.serve == "sidecar-memory":
        asyncio.run(serve_memory_sidecar(args.bundle, args.secrets_dir, args.host, args.port))
        return 0
    out = pathlib.Path(args.out)
    if args.replot:
        write_reports(out, json.loads((out / f"{NAME}.json").read_text()))
        return 0
    try:
        latencies = [float(x) for x in args.latency_ms.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--latency-ms: {args.latency_ms!r} is not a comma-separated list of numbers") from None
    if not latencies or any(x < 0 for x in latencies):
        raise SystemExit("--latency-ms: give one or more latencies >= 0")
    wanted = [k.strip() for k in args.contenders.split(",") if k.strip()]
    unknown = sorted(set(wanted) - {c.key for c in CONTENDERS})
    if unknown or not wanted:
        raise SystemExit(f"--contenders: {', '.join(unknown) or 'none given'}; choose from "
                         + ", ".join(c.key for c in CONTENDERS))
    plan = Plan(latencies, args.rounds, args.requests, args.sequential, args.concurrency,
                warmup=max(2 * args.concurrency, 10), contenders=tuple(c for c in CONTENDERS if c.key in wanted))
    out.mkdir(parents=True, exist_ok=True)
    profile = pathlib.Path(args.profile).resolve() if args.profile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    machine["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="agentgov-sidecar-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        runs, processes, counters = asyncio.run(_run(plan, workdir, profile, progress))
        if args.keep_logs:
            keep = pathlib.Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in [*(workdir / "logs").glob("*.log"), *workdir.glob("audit-*.jsonl")]:
                shutil.copy(log, keep / log.name)
    total = time.monotonic() - started
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    processes["benchmark client (this process)"] = {
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_s": round(cpu_seconds("self"), 1)}
    results = {
        "when": when, "machine": machine, "argv": sys.argv[1:] if argv is None else list(argv),
        "total_s": round(total, 1), "client": "aiohttp", "profiled": profile is not None,
        "plan": {"latencies_ms": latencies, "rounds": plan.rounds, "requests": plan.requests,
                 "sequential": plan.sequential, "concurrency": plan.concurrency, "warmup": plan.warmup},
        "contenders": {c.key: c.label for c in plan.contenders},
        "summary": summarise(runs), "processes": processes, "sidecar_counters": counters, "runs": runs,
    }
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_reports(out, results)
    errors = sum(r["error_count"] for r in runs)
    print(f"total {total:.0f}s, {errors} error(s); wrote {out / (NAME + '.md')}, .json and .png", flush=True)
    return 1 if errors else 0


async def _run(plan: Plan, workdir: pathlib.Path, profile: pathlib.Path | None, progress: Callable[[str], None]
               ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    progress(f"starting redis-server, {len(plan.latencies)} stand-in model(s) and 3 sidecars")
    async with environment(plan.latencies, workdir, profile) as env:
        progress("all servers ready; measuring (c=1: one request at a time; "
                 f"c={plan.concurrency}: closed loop)")
        runs = await measure(env, plan, progress)
        counters: dict[str, dict[str, float]] = {}
        async with aiohttp.ClientSession() as session:
            for name, process in env.sidecars.items():
                counters[f"sidecar {name}"] = await metric_samples(session, process.port)
        processes: dict[str, dict[str, float]] = {}
        for process in env.processes():
            processes[process.name] = {"peak_rss_mib": round(proc_memory(process.pid)["VmHWM"] / MIB, 1),
                                       "cpu_s": round(cpu_seconds(process.pid), 1)}
    return runs, processes, counters


if __name__ == "__main__":
    sys.exit(main())
