#!/usr/bin/env python3
"""agentgov's sidecar beside its peers: the same local model called directly, through nginx (a
bare reverse proxy), through the agentgov sidecar and through LiteLLM's proxy, under the same
open-loop and closed-loop load, in one run.

What it is for: answering "what does agentgov cost, against doing nothing, against a proxy that
does nothing, and against LiteLLM, the Python gateway users compare it with?" Contenders, each
started by this script, all in front of the same stand-in model (``agentgov.demo.model``: fixed
latency, realistic ``usage``; one process per upstream latency):

- ``direct``: the stand-in called with its key: the floor (and the generator's own ceiling);
- ``nginx``: Debian's nginx as a bare reverse proxy (``contenders/nginx.conf.tmpl``): the price
  of one more HTTP hop, the pass-through reference;
- ``agentgov-miss``: the sidecar (``agentgov sidecar``) with auth, budgets in Redis, audit and
  metrics on, every prompt new (cache looked up, missed, stored);
- ``agentgov-hit``: the same sidecar asked one prompt it has answered (the cache answers);
- ``litellm``: LiteLLM's proxy from PyPI in its own virtual environment, one worker, no database,
  configured as close to the sidecar as it allows (``contenders/litellm.yaml.tmpl`` says how and
  what it cannot match): master key, a router budget and its response cache in the same Redis,
  Prometheus metrics; every prompt new;
- ``litellm-hit``: LiteLLM asked one prompt it has answered (its cache answers).

Load (``loadgen.py``): an open loop at each ``--rates`` (requests sent at fixed times whatever the
answers do, latency measured from each request's scheduled time, so queueing is not hidden) and
a closed loop at ``--concurrency`` (the most each contender sustains), non-streaming and
streaming (SSE: time to first byte and to the end). Within a round every load point runs every
contender back to back, in an order rotated each time; rounds repeat, so drift shows as spread.
A contender that could not keep up with a rate in a round (under 80 % of it answered per second,
or over 5 % errors) is not offered the higher rates in that round (``--all-rates`` to offer them);
the floor always is.

Results: ``benchmarks/results/gateways.{json,md,png}``. See ``benchmarks/README.md``.

What it must never do: talk to anything beyond 127.0.0.1, leave a process it started running,
install anything but LiteLLM's venv under ``benchmarks/.venvs`` (nginx is the user's to install),
or sleep in place of waiting for a condition (every wait polls with a deadline).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import pathlib
import resource
import secrets
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

import loadgen
import sidecar_latency as sl

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
CONTENDER_FILES = HERE / "contenders"
NAME = "gateways"
DEFAULT_LITELLM_VENV = HERE / ".venvs" / "litellm"
LITELLM_SETUP = CONTENDER_FILES / "setup_litellm.sh"
LITELLM_KEY_ENV = "LITELLM_MASTER_KEY"
LITELLM_UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
# LiteLLM names the cache entry on an answer its cache gave, and on no other.
LITELLM_CACHE_HEADER = "x-litellm-cache-key"
# An answer is wrong (not just late or refused) when its error kind starts with this.
WRONG = "bad_"
SATURATED_SHARE = 0.8
SATURATED_ERRORS = 0.05
MIB = 1024 * 1024


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    server: str  # "direct", "nginx", "agentgov" or "litellm"
    prompts: str  # "unique" (never asked before) or "repeat" (one prompt, asked by the warm-up first)


CONTENDERS: tuple[Contender, ...] = (
    Contender("direct", "upstream called directly (floor)", "direct", "unique"),
    Contender("nginx", "nginx, bare reverse proxy", "nginx", "unique"),
    Contender("agentgov-miss", "agentgov sidecar, cache miss", "agentgov", "unique"),
    Contender("agentgov-hit", "agentgov sidecar, cache hit", "agentgov", "repeat"),
    Contender("litellm", "LiteLLM proxy, cache miss", "litellm", "unique"),
    Contender("litellm-hit", "LiteLLM proxy, cache hit", "litellm", "repeat"),
)
LABELS = {c.key: c.label for c in CONTENDERS}
# Whom each contender is compared with in the "× LiteLLM" columns: like with like.
COUNTERPART = {"direct": "litellm", "nginx": "litellm", "agentgov-miss": "litellm", "agentgov-hit": "litellm-hit",
               "litellm": "litellm", "litellm-hit": "litellm-hit"}


@dataclass(frozen=True)
class Load:
    """One load point: an open loop at ``value`` requests per second, or a closed loop with
    ``value`` requests in flight."""

    kind: str  # "open" or "closed"
    value: int

    @property
    def name(self) -> str:
        return f"{self.value} rps" if self.kind == "open" else f"closed, {self.value} in flight"


@dataclass(frozen=True)
class Plan:
    latencies: list[float]
    rates: list[int]
    stream_rates: list[int]
    concurrency: int
    duration_s: float
    min_requests: int
    rounds: int
    timeout_s: float
    warmup: int
    chunk_delay_ms: float
    all_rates: bool
    contenders: tuple[Contender, ...]

    def modes(self) -> list[bool]:
        """Non-streaming always; streaming when it has a rate (its closed loop comes with it)."""
        return [False, True] if self.stream_rates else [False]

    def loads(self, stream: bool) -> list[Load]:
        rates = self.stream_rates if stream else self.rates
        return [Load("open", r) for r in sorted(rates)] + [Load("closed", self.concurrency)]

    def count(self, load: Load) -> int:
        """Bodies to prepare: the open loop sends all of them; the closed loop stops at the duration."""
        if load.kind == "open":
            return max(round(load.value * self.duration_s), self.min_requests)
        # Beyond any contender's rate here (the floor reached 9,400/s on a quiet machine).
        return max(round(15000 * self.duration_s), self.min_requests)


# --- the servers -----------------------------------------------------------------------------

def rel(path: pathlib.Path) -> str:
    """A path as the repository names it; outside it, only its last part (results carry no
    machine paths)."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    return f".../{path.name}"


def public_argv(argv: Sequence[str]) -> list[str]:
    """The command line as the results show it: absolute paths made repository-relative."""
    return [rel(pathlib.Path(arg)) if arg.startswith("/") else arg for arg in argv]


def render_nginx(template: str, workdir: pathlib.Path, port: int, upstreams: Mapping[float, int]) -> str:
    """nginx.conf for one listener with a location per upstream latency (``/bench-50ms/``...)."""
    blocks, locations = [], []
    for latency, upstream_port in upstreams.items():
        name = sl.route_name(latency).replace("-", "_").replace(".", "_")
        blocks.append(f"    upstream {name} {{\n        server 127.0.0.1:{upstream_port};\n"
                      "        keepalive 512;\n    }")
        locations.append(
            f"        location /{sl.route_name(latency)}/ {{\n"
            f"            proxy_pass http://{name}/;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_buffering off;\n"
            "            proxy_read_timeout 60s;\n"
            "        }")
    return string.Template(template).substitute(workdir=str(workdir), port=port, upstreams="\n".join(blocks),
                                                locations="\n".join(locations))


def litellm_model_list(upstreams: Mapping[float, str]) -> list[dict[str, Any]]:
    """One LiteLLM model route per stand-in: the sidecar's route names and budget. Prices come
    from LiteLLM's bundled map, whose gpt-4o-mini list price is the sidecar's (set per route, they
    would make LiteLLM re-register the model on every request: about 5 % of its CPU)."""
    return [{
        "model_name": sl.route_name(latency),
        "litellm_params": {
            "model": f"openai/{sl.MODEL}", "api_base": url, "api_key": f"os.environ/{LITELLM_UPSTREAM_KEY_ENV}",
            "timeout": 60, "max_budget": sl.BUDGET_DAILY_USD, "budget_duration": "1d",
        },
    } for latency, url in upstreams.items()]


def render_litellm(template: str, redis_port: int, upstreams: Mapping[float, str]) -> str:
    return string.Template(template).substitute(model_list=json.dumps(litellm_model_list(upstreams)),
                                                redis_port=redis_port)


def nginx_binary(given: str | None) -> str | None:
    if given:
        return given if pathlib.Path(given).exists() else None
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if pathlib.Path(p).exists()), None)


def litellm_ready(venv: pathlib.Path, setup: bool, progress: Callable[[str], None]) -> str | None:
    """None when LiteLLM's proxy is installed in ``venv`` (set up here when allowed); else why not."""
    if setup and not (venv / "bin" / "litellm").exists():
        progress(f"setting up LiteLLM's venv in {rel(venv)} ({rel(LITELLM_SETUP)})")
        done = subprocess.run(["bash", str(LITELLM_SETUP), str(venv)], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"its setup failed ({rel(LITELLM_SETUP)}): {done.stderr.strip()[-300:]}"
    if not (venv / "bin" / "litellm").exists():
        return (f"no LiteLLM proxy in {rel(venv)}: run `make bench-gateways` or `{rel(LITELLM_SETUP)}` "
                "(or leave out --no-setup)")
    return None


@dataclass
class Servers:
    """Everything running: the sidecar benchmark's environment (Redis, stand-ins, sidecar A) and
    the peers."""

    env: sl.Environment
    litellm_key: str
    nginx: sl.Process | None = None
    litellm: sl.Process | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)

    def gateway(self, server: str) -> sl.Process | None:
        return {"direct": None, "nginx": self.nginx, "agentgov": self.env.sidecars.get("A"),
                "litellm": self.litellm}[server]

    def processes(self) -> list[sl.Process]:
        return [*self.env.processes(), *(p for p in (self.nginx, self.litellm) if p is not None)]

    def target(self, contender: Contender, latency: float, stream: bool) -> loadgen.Target:
        server = contender.server
        if server == "direct":
            return loadgen.Target(self.env.url("direct", latency), self.env.headers("direct"), stream)
        if server == "nginx":
            assert self.nginx is not None
            return loadgen.Target(f"http://127.0.0.1:{self.nginx.port}/{sl.route_name(latency)}/v1/chat/completions",
                                  self.env.headers("direct"), stream)
        want = "hit" if contender.prompts == "repeat" else "miss"
        if server == "agentgov":
            return loadgen.Target(self.env.url("A", latency), self.env.headers("A"), stream, agentgov_check(want))
        assert self.litellm is not None
        return loadgen.Target(f"http://127.0.0.1:{self.litellm.port}/v1/chat/completions",
                              {"Content-Type": "application/json", "Authorization": f"Bearer {self.litellm_key}"},
                              stream, litellm_check(want))

    def model(self, contender: Contender, latency: float) -> str:
        return sl.MODEL if contender.server in ("direct", "nginx") else sl.route_name(latency)

    def pids(self, contender: Contender, latency: float) -> dict[str, int | str]:
        """Whose CPU time a run is charged: the gateway (none for direct calls), the stand-in,
        redis-server and this client."""
        assert self.env.redis is not None
        pids: dict[str, int | str] = {"upstream": self.env.upstreams[latency].pid, "redis": self.env.redis.pid,
                                      "client": "self"}
        gateway = self.gateway(contender.server)
        if gateway is not None:
            pids = {"gateway": gateway.pid, **pids}
        return pids


def agentgov_check(want: str) -> loadgen.HeaderCheck:
    def check(headers: Mapping[str, str]) -> str | None:
        seen = headers.get(sl.CACHE_HEADER)
        return None if seen == want else f"{WRONG}cache_{seen}_not_{want}"
    return check


def litellm_check(want: str) -> loadgen.HeaderCheck:
    def check(headers: Mapping[str, str]) -> str | None:
        seen = "hit" if LITELLM_CACHE_HEADER in headers else "miss"
        return None if seen == want else f"{WRONG}cache_{seen}_not_{want}"
    return check


@contextlib.asynccontextmanager
async def servers(plan: Plan, workdir: pathlib.Path, nginx: str | None, litellm_venv: pathlib.Path | None,
                  progress: Callable[[str], None]) -> AsyncIterator[Servers]:
    """Start Redis, the stand-ins, the sidecar, nginx and LiteLLM (those wanted and available),
    wait until each answers a real call, and stop them all at the end."""
    keys = {c.server for c in plan.contenders}
    sidecars = {"A": "redis"} if "agentgov" in keys else {}
    async with sl.environment(plan.latencies, workdir, None, sidecars, plan.chunk_delay_ms) as env:
        running = Servers(env, "sk-litellm-" + secrets.token_urlsafe(24))
        async with contextlib.AsyncExitStack() as stack:

            def stop_peers() -> None:
                for process in (running.litellm, running.nginx):
                    if process is not None:
                        process.stop()

            stack.callback(stop_peers)
            logs = workdir / "logs"
            if nginx is not None and "nginx" in keys:
                running.nginx = start_nginx(nginx, workdir, {lat: p.port for lat, p in env.upstreams.items()})
            if litellm_venv is not None and "litellm" in keys:
                urls = {lat: f"http://127.0.0.1:{p.port}/v1" for lat, p in env.upstreams.items()}
                config = workdir / "litellm.yaml"
                config.write_text(render_litellm((CONTENDER_FILES / "litellm.yaml.tmpl").read_text(),
                                                 env.redis_port, urls))
                port = sl.free_port()
                running.litellm = sl.spawn(
                    "LiteLLM proxy", [str(litellm_venv / "bin" / "litellm"), "--config", str(config), "--host",
                                      "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                    logs / "litellm.log", sl.child_env(**{
                        # Its bundled price map, not one fetched from the internet at start-up; its
                        # own log at ERROR, as its production checklist advises (uvicorn's access log stays).
                        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                        LITELLM_KEY_ENV: running.litellm_key,
                        LITELLM_UPSTREAM_KEY_ENV: env.upstream_key}), workdir)
                running.litellm.port = port
            await wait_ready(running, plan, progress)
            yield running


def start_nginx(binary: str, workdir: pathlib.Path, upstreams: Mapping[float, int]) -> sl.Process:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = sl.free_port()
    config = workdir / "nginx.conf"
    config.write_text(render_nginx((CONTENDER_FILES / "nginx.conf.tmpl").read_text(), workdir, port, upstreams))
    process = sl.spawn("nginx", [binary, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "logs" /
                                                                                         "nginx-error.log")],
                       workdir / "logs" / "nginx.log", sl.child_env(), workdir)
    process.port = port
    return process


async def wait_ready(running: Servers, plan: Plan, progress: Callable[[str], None]) -> None:
    """Each peer (nginx, LiteLLM) answers a real chat completion before anything is timed."""
    latency = plan.latencies[0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for server in ("nginx", "litellm"):
            process = running.gateway(server)
            contender = next((c for c in plan.contenders if c.server == server), None)
            if process is None or contender is None:
                continue
            target = running.target(contender, latency, False)
            body = sl.request_body(running.model(contender, latency), "are you there?")

            async def answer(p: sl.Process = process, t: loadgen.Target = target, b: bytes = body
                             ) -> tuple[int, dict[str, str]]:
                p.check_alive()
                async with session.post(t.url, data=b, headers=t.headers) as response:
                    await response.read()
                    return response.status, dict(response.headers)

            status, headers = await sl.poll(answer, lambda r: r[0] == 200, what=f"{process.name} to answer a call",
                                            timeout=180, interval=0.25)
            if server == "litellm":
                running.versions["litellm"] = headers.get("x-litellm-version", "?")
            progress(f"{process.name} answers (status {status})")


# --- measuring -------------------------------------------------------------------------------

def request_body(model: str, prompt: str, stream: bool) -> bytes:
    """The sidecar benchmark's body; streaming ones ask for usage in the last chunk, as agents do."""
    body = sl.request_body(model, prompt)
    if not stream:
        return body
    parsed = json.loads(body)
    parsed.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(parsed).encode()


def cpu_now(pids: Mapping[str, int | str]) -> dict[str, float]:
    return {side: sl.cpu_seconds(pid) for side, pid in pids.items()}


async def settle(pids: Mapping[str, int | str], timeout: float = 30.0) -> float:
    """Wait until the servers of the last run are idle (a server may still be working off requests
    the client gave up on); seconds waited, or -1 if they were still busy at the deadline."""
    servers_only = {side: pid for side, pid in pids.items() if side != "client"}
    started = time.monotonic()

    async def busiest() -> float:
        before = cpu_now(servers_only)
        await asyncio.sleep(0.1)  # the measuring window
        return max((sl.cpu_seconds(pid) - before[side] for side, pid in servers_only.items()), default=0.0) / 0.1

    try:
        await sl.poll(busiest, lambda share: share < 0.2, what="the servers to go idle", timeout=timeout, interval=0)
    except sl.PollTimeout:
        return -1.0
    return time.monotonic() - started


def bodies_for(contender: Contender, model: str, tag: str, count: int, stream: bool, repeat_tag: str
               ) -> list[bytes]:
    if contender.prompts == "repeat":
        return [request_body(model, sl.prompt_text(repeat_tag, 0), stream)] * count
    return [request_body(model, sl.prompt_text(tag, i), stream) for i in range(count)]


async def run_cell(session: aiohttp.ClientSession, running: Servers, plan: Plan, contender: Contender,
                   latency: float, stream: bool, load: Load, round_: int, nonce: str) -> dict[str, Any]:
    """Warm up (untimed), run one load point against one contender, and describe the run."""
    gateway = running.gateway(contender.server)
    for process in (gateway, running.env.upstreams[latency], running.env.redis):
        if process is not None:
            process.check_alive()
    target = running.target(contender, latency, stream)
    model = running.model(contender, latency)
    mode = "stream" if stream else "json"
    tag = f"{nonce} r{round_} {latency:g}ms {mode} {load.name} {contender.key}"
    repeat_tag = f"{nonce} {latency:g}ms {mode} {contender.key} repeat"  # one prompt per contender, latency, mode
    bodies = bodies_for(contender, model, tag, plan.count(load), stream, repeat_tag)
    warm = bodies_for(contender, model, tag + " warm", plan.warmup, stream, repeat_tag)
    # Warm-up: connections opened, the repeated prompt asked (so cached); not checked for hits.
    warmed = await loadgen.closed_loop(session, dataclasses.replace(target, check=None), warm,
                                       min(8, len(warm)), plan.timeout_s)
    pids = running.pids(contender, latency)
    before = cpu_now(pids)
    if load.kind == "open":
        run = await loadgen.open_loop(session, target, bodies, load.value)
    else:
        run = await loadgen.closed_loop(session, target, bodies, load.value, plan.duration_s)
    spent = {side: seconds - before[side] for side, seconds in cpu_now(pids).items()}
    settled = await settle(pids)
    s = loadgen.summarise(run)
    ok = len(run.ok)
    saturated = load.kind == "open" and (s.achieved_rps < SATURATED_SHARE * load.value
                                         or s.error_rate > SATURATED_ERRORS)
    record: dict[str, Any] = {
        "round": round_, "upstream_latency_ms": latency, "stream": stream, "load": load.kind,
        "offered_rps": load.value if load.kind == "open" else None,
        "concurrency": load.value if load.kind == "closed" else None, "contender": contender.key,
        "requests": s.requests, "answered": ok, "errors": s.errors, "error_count": sum(s.errors.values()),
        "error_rate": round(s.error_rate, 5), "achieved_rps": round(s.achieved_rps, 2), "wall_s": round(run.wall_s, 3),
        "latency_ms": _rounded(s.latency_ms), "ttfb_ms": _rounded(s.ttfb_ms) if stream else None,
        "lag_ms": _rounded(s.lag_ms),
        "cpu_ms_per_request": {side: round(seconds * 1000 / max(ok, 1), 4) for side, seconds in spent.items()},
        "client_cpu_share": round(spent["client"] / run.wall_s, 3) if run.wall_s > 0 else None,
        "warmup_errors": dict(warmed.errors), "settle_s": round(settled, 2), "saturated": saturated,
    }
    return record


def _rounded(stats: Mapping[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in stats.items()}


def skipped_record(round_: int, latency: float, stream: bool, load: Load, contender: Contender,
                   saturated_at: int) -> dict[str, Any]:
    return {"round": round_, "upstream_latency_ms": latency, "stream": stream, "load": load.kind,
            "offered_rps": load.value, "concurrency": None, "contender": contender.key,
            "skipped": f"saturated at {saturated_at} rps"}


async def measure(running: Servers, plan: Plan, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every round: every upstream latency, mode and load point, every contender back to back."""
    runs: list[dict[str, Any]] = []
    nonce = secrets.token_hex(4)
    connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=plan.timeout_s)) as session:
        step = 0
        for round_ in range(1, plan.rounds + 1):
            for latency in plan.latencies:
                for stream in plan.modes():
                    saturated: dict[str, int] = {}
                    for load in plan.loads(stream):
                        shift = step % len(plan.contenders)
                        step += 1
                        order = plan.contenders[shift:] + plan.contenders[:shift]
                        line = [f"round {round_}/{plan.rounds} {latency:>3g} ms {'stream' if stream else 'json  '} "
                                f"{load.name:<22}"]
                        for contender in order:
                            # The floor always runs: every other row of the round is measured against it.
                            if (load.kind == "open" and contender.key in saturated and not plan.all_rates
                                    and contender.key != "direct"):
                                runs.append(skipped_record(round_, latency, stream, load, contender,
                                                           saturated[contender.key]))
                                line.append(f"{contender.key} skipped")
                                continue
                            record = await run_cell(session, running, plan, contender, latency, stream, load,
                                                    round_, nonce)
                            runs.append(record)
                            if record["saturated"]:
                                saturated.setdefault(contender.key, load.value)
                            line.append(_progress_text(record))
                        progress(" | ".join(line))
    return runs


def _progress_text(r: Mapping[str, Any]) -> str:
    text = f"{r['contender']} p50 {r['latency_ms']['p50']:.1f} p99 {r['latency_ms']['p99']:.1f} ms"
    if r["load"] == "closed" or r["saturated"]:
        text += f" {r['achieved_rps']:.0f}/s"
    if r["error_count"]:
        text += f" ERR {r['error_count']}"
    return text


# --- summarising -----------------------------------------------------------------------------

def cell_key(r: Mapping[str, Any]) -> tuple[bool, float, str, int]:
    return (r["stream"], r["upstream_latency_ms"], r["load"], r["offered_rps"] or r["concurrency"])


def _ratios(mine: Sequence[Mapping[str, Any]], by: Mapping[tuple[Any, ...], Mapping[str, Any]], other: str,
            value: Callable[[Mapping[str, Any]], float | None]) -> dict[str, float] | None:
    """Median (and range) over rounds of ``value(mine) / value(other's run in the same round)``."""
    found = []
    for r in mine:
        theirs = by.get((*cell_key(r), other, r["round"]))
        if theirs is None or "skipped" in theirs:
            continue
        a, b = value(r), value(theirs)
        if a is not None and b is not None and b > 0:
            found.append(a / b)
    return sl.spread(found) if found else None


def _differences(mine: Sequence[Mapping[str, Any]], by: Mapping[tuple[Any, ...], Mapping[str, Any]], other: str,
                 value: Callable[[Mapping[str, Any]], float]) -> dict[str, float] | None:
    found = [value(r) - value(by[(*cell_key(r), other, r["round"])]) for r in mine
             if (*cell_key(r), other, r["round"]) in by and "skipped" not in by[(*cell_key(r), other, r["round"])]]
    return sl.spread(found) if found else None


def _latency(p: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda r: float(r["latency_ms"][p])


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, upstream latency, load point, contender): medians over the rounds it
    ran, with their range; added latency and ratios taken per round, then summarised."""
    rows: list[dict[str, Any]] = []
    measured = [r for r in runs if "skipped" not in r]
    by = {(*cell_key(r), r["contender"], r["round"]): r for r in runs}
    cells = sorted({cell_key(r) for r in runs}, key=lambda k: (k[0], k[1], k[2] == "closed", k[3]))
    for cell in cells:
        for contender in CONTENDERS:
            mine = sorted((r for r in measured if cell_key(r) == cell and r["contender"] == contender.key),
                          key=lambda r: r["round"])
            skipped = [r for r in runs if cell_key(r) == cell and r["contender"] == contender.key and "skipped" in r]
            if not mine and not skipped:
                continue
            stream, latency, kind, value = cell
            row: dict[str, Any] = {"stream": stream, "upstream_latency_ms": latency, "load": kind,
                                   "offered_rps": value if kind == "open" else None,
                                   "concurrency": value if kind == "closed" else None,
                                   "contender": contender.key, "rounds": len(mine), "rounds_skipped": len(skipped)}
            if mine:
                requests = sum(r["requests"] for r in mine)
                errors: dict[str, int] = {}
                for r in mine:
                    for kind_, n in r["errors"].items():
                        errors[kind_] = errors.get(kind_, 0) + n
                row.update(requests=requests, errors=errors,
                           error_rate=sum(errors.values()) / requests if requests else 0.0,
                           achieved_rps=sl.spread([r["achieved_rps"] for r in mine]))
                for p in ("p50", "p90", "p99"):
                    row[p] = sl.spread([r["latency_ms"][p] for r in mine])
                    row[f"added_{p}"] = _differences(mine, by, "direct", _latency(p))
                if stream:
                    for p in ("p50", "p99"):
                        row[f"ttfb_{p}"] = sl.spread([r["ttfb_ms"][p] for r in mine])
                for p in ("p50", "p99"):
                    row[f"{p}_vs_floor"] = _ratios(mine, by, "direct", _latency(p))
                    row[f"{p}_vs_litellm"] = _ratios(mine, by, COUNTERPART[contender.key], _latency(p))
                row["rps_vs_floor"] = _ratios(mine, by, "direct", lambda r: r["achieved_rps"])
                row["rps_vs_litellm"] = _ratios(mine, by, COUNTERPART[contender.key], lambda r: r["achieved_rps"])
                row["cpu_ms_per_request"] = {side: float(statistics.median(r["cpu_ms_per_request"][side] for r in mine))
                                             for side in mine[0]["cpu_ms_per_request"]}
                row["cpu_vs_litellm"] = _ratios(mine, by, COUNTERPART[contender.key],
                                                lambda r: r["cpu_ms_per_request"].get("gateway"))
                row["lag_p99_ms"] = float(statistics.median(r["lag_ms"]["p99"] for r in mine))
                row["client_cpu_share"] = float(statistics.median(r["client_cpu_share"] or 0.0 for r in mine))
            if skipped:
                row["skipped"] = ", ".join(sorted({r["skipped"] for r in skipped}))
            rows.append(row)
    return rows


def versions(nginx: str | None, running_versions: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found["agentgov"] = importlib.metadata.version("agentgov")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        if commit:
            changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "operator"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
            # Before/after comparisons need to know the sidecar measured was not the commit's.
            found["agentgov_commit"] = commit + (" with uncommitted changes in operator/" if changed else "")
    if nginx:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
            found["nginx"] = out.rsplit("/", 1)[-1]
    found.update(running_versions)
    return found


# --- reporting -------------------------------------------------------------------------------

def _num(s: Mapping[str, float] | None, digits: int = 1, signed: bool = False, suffix: str = "") -> str:
    """A median with its range over rounds, when the rounds differ at this precision."""
    if s is None:
        return "–"
    fmt = f"{{:{'+' if signed else ''},.{digits}f}}"
    text = fmt.format(s["median"]) + suffix
    if len({round(s["min"], digits), round(s["max"], digits)}) > 1:
        text += f" ({fmt.format(s['min'])} … {fmt.format(s['max'])})"
    return text


def _find(rows: Sequence[Mapping[str, Any]], stream: bool, latency: float, kind: str, value: int, key: str
          ) -> Mapping[str, Any] | None:
    return next((r for r in rows if (r["stream"], r["upstream_latency_ms"], r["load"], r["contender"]) ==
                 (stream, latency, kind, key) and (r["offered_rps"] or r["concurrency"]) == value), None)


def write_markdown(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    rows, plan, machine = results["summary"], results["plan"], results["machine"]
    v = results["versions"]
    present = [c for c in CONTENDERS if any(r["contender"] == c.key for r in rows)]
    lines = [
        "# agentgov beside nginx and LiteLLM: results",
        "",
        f"Run {results['when']} with `{' '.join(['python benchmarks/gateways.py', *results['argv']])}` "
        f"(whole run: {results['total_s'] / 60:.1f} min). agentgov {v.get('agentgov', '?')} "
        f"(commit {v.get('agentgov_commit', '?')}), LiteLLM {v.get('litellm', 'not run')}, "
        f"nginx {v.get('nginx', 'not run')}, redis-server {machine.get('redis-server', '?')}, "
        f"Python {machine['python']}, aiohttp {machine.get('aiohttp', '?')}.",
        "",
        f"Chat completions ({sl.MAX_TOKENS} max tokens, answers of about 30 tokens; streams of about 30 chunks, "
        f"the stand-in pausing {plan['chunk_delay_ms']:g} ms between chunks) against the stand-in model answering "
        f"in {', '.join(f'{x:g}' for x in plan['latencies_ms'])} ms. Open loop: requests sent at a constant rate "
        "whatever the answers do, latency counted from each request's scheduled send time (queueing included); "
        f"{plan['duration_s']:g} s (at least {plan['min_requests']} requests) per contender per load point. "
        f"Closed loop: {plan['concurrency']} requests in flight for {plan['duration_s']:g} s. "
        f"Each figure is the median over {plan['rounds']} round(s), contenders interleaved and rotated, with "
        "the range over rounds in parentheses where the rounds differ. Added = the contender's percentile minus "
        "the direct call's in the same round and load point. × floor and × LiteLLM are ratios of the same "
        "percentile (or throughput, or gateway CPU per request) taken per round: agentgov's miss and nginx "
        "against LiteLLM's miss, agentgov's hit against LiteLLM's hit. Latency counts failed requests at the "
        "time they failed (a timeout at its timeout).",
        "",
        f"**Caveat**: one machine with {machine['cores']} cores ({machine['cpu_model']}) runs everything: the load "
        "generator (one Python process), the stand-in models, redis-server and the contender; other work shared "
        f"the cores too (load average {machine['loadavg_at_start']} at the start, {machine['loadavg_at_end']} at "
        "the end). Read the ranges as noise, and the generator's limits below before the highest rates.",
        "",
    ]
    for note in results.get("skipped_contenders", {}).values():
        lines += [f"**Not run**: {note}", ""]
    lines += _headline(rows, plan)
    for stream in (False, True):
        for latency in plan["latencies_ms"]:
            mine = [r for r in rows if r["stream"] == stream and r["upstream_latency_ms"] == latency]
            if not mine:
                continue
            lines += _detail_table(mine, stream, latency, present)
    lines += _processes(results)
    lines += _generator(rows, results)
    lines += [
        "## Configuration",
        "",
        "- **agentgov**: `agentgov sidecar` (one process, one event loop) with the bundle of "
        "`benchmarks/sidecar_latency.py`: HS256 JWT auth on the inbound port (the execution id timed calls carry "
        "was issued by one authenticated call), a budget over every user reserved and settled in Redis per call, "
        "the hash-chained audit log (fsync per batch), Prometheus metrics, INFO access log to a file, cache L1 "
        "(memory) + L2 (the same Redis).",
        "- **LiteLLM**: `litellm --config ... --num_workers 1` (uvicorn, one process, as agentgov) with "
        "`benchmarks/contenders/litellm.yaml.tmpl`: master key auth, a route per stand-in "
        "(`openai/gpt-4o-mini` with `api_base`, the same prices), a daily router budget per route "
        "(`max_budget`, `budget_duration`; spend counted in memory, synced to the same Redis), its response "
        "cache in the same Redis, its Prometheus callback, uvicorn's access log to a file. No database. "
        "Not matched: per-user budgets reserved before the call (virtual keys, end-user and team budgets need "
        "the database; its router budget is checked against spend synced from Redis about once a second), JWT "
        "auth (not without the database and the enterprise edition), an audit record per request "
        "(no such log in the open-source proxy): work agentgov does here and LiteLLM does not.",
        "- **nginx**: `benchmarks/contenders/nginx.conf.tmpl`, one process (no master), keep-alive to the "
        "stand-in, `proxy_buffering off` (streams pass through), buffered access log. The caller sends the "
        "provider key itself.",
        "",
        f"Raw numbers per round: `{NAME}.json`. How to reproduce, and what each contender is: "
        "`benchmarks/README.md`.",
        "",
    ]
    path.write_text("\n".join(lines))


def _median(s: Mapping[str, float] | None, digits: int = 1, signed: bool = False) -> str:
    if s is None:
        return "–"
    return f"{{:{'+' if signed else ''},.{digits}f}}".format(s["median"])


def _ratio(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 (0.0015, not 0.00)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _skipped_text(row: Mapping[str, Any]) -> str:
    rates = row.get("skipped", "")
    return f"not offered in {row['rounds_skipped']} round(s): {rates}" if rates else "not run"


def _headline(rows: Sequence[Mapping[str, Any]], plan: Mapping[str, Any]) -> list[str]:
    """agentgov's miss and hit beside LiteLLM's, medians only (the tables below give the ranges)."""
    peer = "litellm" if any(r["contender"] == "litellm" for r in rows) else None
    if peer is None:
        return []
    lines = ["## agentgov against LiteLLM", "",
             "Medians over the rounds (ranges in the tables below). Open loop: added p50 / added p99 in ms over "
             "the direct call, and agentgov's p50 as a multiple of LiteLLM's (× LiteLLM; below 1: faster). "
             "Closed loop: requests per second, and agentgov's as a multiple of LiteLLM's. \"—\": not offered "
             "(the contender saturated at a lower rate in every round).", "",
             "| mode | upstream | load | agentgov-miss | litellm | × LiteLLM | agentgov-hit | litellm-hit | × LiteLLM |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for stream in (False, True):
        rates = plan["stream_rates"] if stream else plan["rates"]
        if stream and not rates:
            continue
        for latency in plan["latencies_ms"]:
            for kind, value in [("open", r) for r in sorted(rates)] + [("closed", plan["concurrency"])]:
                cells = []
                for ours, theirs in (("agentgov-miss", "litellm"), ("agentgov-hit", "litellm-hit")):
                    for key in (ours, theirs):
                        row = _find(rows, stream, latency, kind, value, key)
                        if row is None or not row.get("rounds"):
                            cells.append("—")
                        elif kind == "closed":
                            cells.append(_median(row["achieved_rps"], 0) + "/s")
                        else:
                            cells.append(f"{_median(row['added_p50'], 1, True)} / {_median(row['added_p99'], 1, True)}")
                    row = _find(rows, stream, latency, kind, value, ours)
                    ratio = None if row is None or not row.get("rounds") else (
                        row["rps_vs_litellm"] if kind == "closed" else row["p50_vs_litellm"])
                    cells.append("—" if ratio is None else f"{_ratio(ratio['median'])}×")
                load = f"{value} rps" if kind == "open" else f"closed ({value})"
                mode = "stream" if stream else "json"
                lines.append(f"| {mode} | {latency:g} ms | {load} | " + " | ".join(cells) + " |")
    return lines + [""]


def _detail_table(mine: Sequence[Mapping[str, Any]], stream: bool, latency: float,
                  present: Sequence[Contender]) -> list[str]:
    title = f"## {'Streaming' if stream else 'Non-streaming'}, upstream answering in {latency:g} ms"
    ttfb = " TTFB p50 | TTFB p99 |" if stream else ""
    lines = [title, "",
             "Latency in ms. Gateway CPU: ms of the gateway process's CPU per answered request.", "",
             f"| load | contender | p50 | p90 | p99 |{ttfb} added p50 | added p90 | added p99 | p50 × floor | "
             "p50 / p99 × LiteLLM | errors | req/s | gateway CPU ms/req |",
             "|---|---|" + "---:|" * (11 + (2 if stream else 0))]
    loads = sorted({(r["load"], r["offered_rps"] or r["concurrency"]) for r in mine},
                   key=lambda k: (k[0] == "closed", k[1]))
    for kind, value in loads:
        load = f"{value} rps" if kind == "open" else f"closed ({value})"
        for contender in present:
            r = _find(mine, stream, latency, kind, value, contender.key)
            if r is None:
                continue
            if not r.get("rounds"):
                lines.append(f"| {load} | {contender.key} | {_skipped_text(r)} |" + " |" * (
                    10 + (2 if stream else 0)))
                continue
            stream_cells = f" {_num(r['ttfb_p50'])} | {_num(r['ttfb_p99'])} |" if stream else ""
            vs = r["p50_vs_litellm"], r["p99_vs_litellm"]
            vs_text = ("–" if vs[0] is None or vs[1] is None or COUNTERPART[contender.key] == contender.key
                       else f"{_ratio(vs[0]['median'])} / {_ratio(vs[1]['median'])}")
            errors = f"{100 * r['error_rate']:.1f} %" if r["error_rate"] else "0"
            if r.get("rounds_skipped"):
                errors += f" ({r['rounds_skipped']} round(s) skipped: saturated)"
            gateway = r["cpu_ms_per_request"].get("gateway")
            lines.append(
                f"| {load} | {contender.key} | {_num(r['p50'])} | {_num(r['p90'])} | {_num(r['p99'])} |{stream_cells} "
                f"{_num(r['added_p50'], 1, True)} | {_num(r['added_p90'], 1, True)} | {_num(r['added_p99'], 1, True)} | "
                f"{_num(r['p50_vs_floor'], 2, suffix='×')} | {vs_text} | {errors} | {_num(r['achieved_rps'], 0)} | "
                f"{'–' if gateway is None else f'{gateway:.2f}'} |")
    return lines + [""]


def _processes(results: Mapping[str, Any]) -> list[str]:
    lines = ["## Processes", "", "Peak RSS (`VmHWM`) at the end of the run, and CPU over the whole run.", "",
             "| process | peak RSS MiB | CPU s |", "|---|---:|---:|"]
    for name, info in results["processes"].items():
        lines.append(f"| {name} | {info['peak_rss_mib']:.0f} | {info['cpu_s']:.1f} |")
    return lines + [""]


def _generator(rows: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> list[str]:
    """What the load generator could do: the direct closed loop is its ceiling (with the stand-in)."""
    lines = ["## The load generator's limits", ""]
    for stream in (False, True):
        for latency in results["plan"]["latencies_ms"]:
            closed = _find(rows, stream, latency, "closed", results["plan"]["concurrency"], "direct")
            if closed and closed.get("rounds"):
                lines.append(f"- {'Streaming' if stream else 'Non-streaming'}, {latency:g} ms: the direct closed loop "
                             f"reached {_num(closed['achieved_rps'], 0)} req/s with the client process at "
                             f"{100 * closed['client_cpu_share']:.0f} % of a core.")
    opens = [r for r in rows if r["contender"] == "direct" and r["load"] == "open" and r.get("rounds")]
    if opens:
        worst = max(opens, key=lambda r: r["lag_p99_ms"])
        lines.append(f"- Open loop, direct: the generator sent 99 % of requests within {worst['lag_p99_ms']:.1f} ms of "
                     f"their scheduled time at worst ({worst['offered_rps']} rps, "
                     f"{'streaming' if worst['stream'] else 'non-streaming'}, {worst['upstream_latency_ms']:g} ms), "
                     f"using {100 * worst['client_cpu_share']:.0f} % of a core. Its lateness is counted in every "
                     "contender's latency (from the scheduled time), the floor's included, so \"added\" cancels it "
                     "as far as it is the same for all.")
    return lines + [""]


def write_plot(path: pathlib.Path, results: Mapping[str, Any]) -> None:
    """Per mode (rows) and upstream latency (columns): added p50 (solid) and p99 (dashed) per
    contender against the offered rate; last column: closed-loop throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows, plan = results["summary"], results["plan"]
    modes = [m for m in (False, True) if any(r["stream"] == m for r in rows)]
    latencies = plan["latencies_ms"]
    keys = [c.key for c in CONTENDERS if c.key != "direct" and any(r["contender"] == c.key for r in rows)]
    colours = {k: f"C{i}" for i, k in enumerate(keys)}
    cols = len(latencies) + 1
    fig, axes = plt.subplots(len(modes), cols, figsize=(5.4 * cols, 4.6 * len(modes)), squeeze=False)
    for i, stream in enumerate(modes):
        for j, latency in enumerate(latencies):
            ax = axes[i][j]
            for key in keys:
                mine = sorted((r for r in rows if r["stream"] == stream and r["upstream_latency_ms"] == latency
                               and r["load"] == "open" and r["contender"] == key and r.get("rounds")
                               and r.get("added_p50")), key=lambda r: r["offered_rps"])
                xs = [r["offered_rps"] for r in mine]
                ax.plot(xs, [r["added_p50"]["median"] for r in mine], "-o", color=colours[key], label=f"{key} p50",
                        markersize=4)
                ax.plot(xs, [r["added_p99"]["median"] for r in mine], "--", color=colours[key], label=f"{key} p99",
                        alpha=0.7)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(sorted(plan["stream_rates"] if stream else plan["rates"]))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:+g}" if value else "0"))
            ax.set_title(f"{'streaming' if stream else 'non-streaming'}, upstream {latency:g} ms", fontsize="medium")
            ax.set_xlabel("offered requests/s (open loop)")
            ax.set_ylabel("added latency ms over direct (symlog)")
            ax.grid(True, which="both", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize="x-small", ncol=2)
        ax = axes[i][-1]
        every = ["direct", *keys]
        width = 0.8 / max(1, len(latencies))
        for j, latency in enumerate(latencies):
            values = []
            for key in every:
                r = _find(rows, stream, latency, "closed", plan["concurrency"], key)
                values.append(r["achieved_rps"]["median"] if r and r.get("rounds") else 0)
            xs = [k + (j - (len(latencies) - 1) / 2) * width for k in range(len(every))]
            ax.bar(xs, values, width, label=f"upstream {latency:g} ms")
            for x, value in zip(xs, values):
                if value:
                    ax.annotate(f"{value:,.0f}", (x, value), ha="center", va="bottom", fontsize="x-small")
        ax.set_yscale("log")  # the floor and a cache hit answer in thousands a second, LiteLLM in tens
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xticks(range(len(every)), every, rotation=25, fontsize="small")
        ax.set_title(f"closed loop, {plan['concurrency']} in flight ({'streaming' if stream else 'non-streaming'})",
                     fontsize="medium")
        ax.set_ylabel("requests/s (median of rounds; log)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Gateways in front of the same local model: added latency (open loop) and throughput "
                 "(closed loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_reports(out: pathlib.Path, results: Mapping[str, Any]) -> None:
    write_markdown(out / f"{NAME}.md", results)
    write_plot(out / f"{NAME}.png", results)


# --- main ------------------------------------------------------------------------------------

def _numbers(text: str, option: str, cast: Callable[[str], Any]) -> list[Any]:
    try:
        values = [cast(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{option}: {text!r} is not a comma-separated list of numbers") from None
    if any(x < 0 or (option != "--latency-ms" and x == 0) for x in values):
        raise SystemExit(f"{option}: every value must be {'>= 0' if option == '--latency-ms' else '> 0'}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", help="open-loop rates, requests/s, non-streaming (default 50,200,500,1000; "
                        "--quick: 50,200)")
    parser.add_argument("--stream-rates", help="open-loop rates for streaming requests; empty: no streaming "
                        "(default 50,200; --quick: 50)")
    parser.add_argument("--concurrency", type=int, help="requests in flight in the closed loop (default 64; "
                        "--quick: 8)")
    parser.add_argument("--duration", type=float, help="seconds per contender per load point (default 2; "
                        "--quick: 0.5)")
    parser.add_argument("--min-requests", type=int, help="fewest requests an open-loop run sends (default 100; "
                        "--quick: 20)")
    parser.add_argument("--latency-ms", help="comma-separated upstream latencies (default 0,50; --quick: 0)")
    parser.add_argument("--rounds", type=int, help="rounds; contenders interleaved in each (default 3; --quick: 1)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a request counts as failed "
                        "(default %(default)s; a saturated contender's queue would otherwise grow for the whole run)")
    parser.add_argument("--chunk-delay-ms", type=float, default=2.0,
                        help="the stand-in's pause between stream chunks (default %(default)s)")
    parser.add_argument("--contenders", default=",".join(c.key for c in CONTENDERS),
                        help="comma-separated subset (default: all: %(default)s); direct is always run")
    parser.add_argument("--all-rates", action="store_true",
                        help="offer every rate even to a contender that saturated at a lower one")
    parser.add_argument("--nginx", help="the nginx binary (default: nginx on PATH, or /usr/sbin/nginx)")
    parser.add_argument("--litellm-venv", default=str(DEFAULT_LITELLM_VENV),
                        help="LiteLLM's virtual environment (default: benchmarks/.venvs/litellm)")
    parser.add_argument("--no-setup", action="store_true",
                        help="do not create LiteLLM's venv when it is missing (then LiteLLM is not run)")
    parser.add_argument("--quick", action="store_true", help="tiny runs, to see that everything works")
    parser.add_argument("--out", default=str(sl.RESULTS), help="results folder (default: benchmarks/results)")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the servers' logs and configurations here")
    parser.add_argument("--replot", action="store_true",
                        help="run nothing: rewrite the table and the plot from the results JSON in --out")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"rates": "50,200" if quick else "50,200,500,1000", "stream_rates": "50" if quick else "50,200",
                "concurrency": 8 if quick else 64, "duration": 0.5 if quick else 2.0,
                "min_requests": 20 if quick else 100, "latency_ms": "0" if quick else "0,50",
                "rounds": 1 if quick else 3}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("concurrency", "rounds", "min_requests"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.timeout <= 0 or args.chunk_delay_ms < 0:
        parser.error("--duration and --timeout must be positive, --chunk-delay-ms not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    if args.replot:
        write_reports(out, json.loads((out / f"{NAME}.json").read_text()))
        return 0
    wanted = {k.strip() for k in args.contenders.split(",") if k.strip()} | {"direct"}
    unknown = sorted(wanted - set(LABELS))
    if unknown:
        raise SystemExit(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(LABELS)}")
    latencies = _numbers(args.latency_ms, "--latency-ms", float)
    rates, stream_rates = _numbers(args.rates, "--rates", int), _numbers(args.stream_rates, "--stream-rates", int)
    if not latencies or not rates:
        raise SystemExit("--latency-ms and --rates need at least one value each")
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    skipped: dict[str, str] = {}
    nginx = nginx_binary(args.nginx)
    if "nginx" in wanted and nginx is None:
        skipped["nginx"] = ("nginx: not found (Debian: `apt-get install nginx-light`, or give --nginx); "
                            "the nginx contender was not run.")
    litellm_venv: pathlib.Path | None = pathlib.Path(args.litellm_venv).resolve()
    if wanted & {"litellm", "litellm-hit"}:
        assert litellm_venv is not None
        why = litellm_ready(litellm_venv, not args.no_setup, progress)
        if why is not None:
            skipped["litellm"] = f"LiteLLM: {why}; the litellm contenders were not run."
            litellm_venv = None
    for note in skipped.values():
        progress(f"NOTE {note}")
    available = {"nginx": nginx is not None, "litellm": litellm_venv is not None}
    contenders = tuple(c for c in CONTENDERS if c.key in wanted and available.get(c.server, True))
    plan = Plan(latencies=latencies, rates=rates, stream_rates=stream_rates, concurrency=args.concurrency,
                duration_s=args.duration, min_requests=args.min_requests, rounds=args.rounds, timeout_s=args.timeout,
                warmup=max(10, min(args.concurrency, 32)), chunk_delay_ms=args.chunk_delay_ms,
                all_rates=args.all_rates, contenders=contenders)
    out.mkdir(parents=True, exist_ok=True)
    machine = sl.machine_info()
    machine["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="agentgov-gateways-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        runs, processes, running_versions = asyncio.run(_run(plan, workdir, nginx, litellm_venv, progress))
        if args.keep_logs:
            keep = pathlib.Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in [*(workdir / "logs").glob("*.log"), workdir / "nginx.conf", workdir / "litellm.yaml"]:
                if log.exists():
                    shutil.copy(log, keep / log.name)
    total = time.monotonic() - started
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    processes["load generator (this process)"] = {
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_s": round(sl.cpu_seconds("self"), 1)}
    results = {
        "when": when, "machine": machine, "versions": versions(nginx if "nginx" in wanted else None,
                                                               running_versions),
        "argv": public_argv(sys.argv[1:] if argv is None else argv), "total_s": round(total, 1),
        "plan": {"latencies_ms": plan.latencies, "rates": plan.rates, "stream_rates": plan.stream_rates,
                 "concurrency": plan.concurrency, "duration_s": plan.duration_s, "min_requests": plan.min_requests,
                 "rounds": plan.rounds, "timeout_s": plan.timeout_s, "warmup": plan.warmup,
                 "chunk_delay_ms": plan.chunk_delay_ms, "all_rates": plan.all_rates},
        "contenders": {c.key: c.label for c in plan.contenders}, "skipped_contenders": skipped,
        "summary": summarise(runs), "processes": processes, "runs": runs,
    }
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_reports(out, results)
    wrong = {r["contender"]: {k: n for k, n in r["errors"].items() if k.startswith(WRONG)} for r in runs
             if "errors" in r and any(k.startswith(WRONG) for k in r["errors"])}
    failed = sum(r.get("error_count", 0) for r in runs)
    print(f"total {total / 60:.1f} min, {failed} failed request(s) (timeouts and refusals under load included); "
          f"wrote {out / (NAME + '.md')}, .json and .png", flush=True)
    if wrong:
        print(f"WRONG ANSWERS (a contender did not do what it claims): {wrong}", flush=True)
    return 1 if wrong else 0


async def _run(plan: Plan, workdir: pathlib.Path, nginx: str | None, litellm_venv: pathlib.Path | None,
               progress: Callable[[str], None]
               ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], dict[str, str]]:
    progress(f"starting redis-server, {len(plan.latencies)} stand-in model(s) and "
             + ", ".join(sorted({c.server for c in plan.contenders} - {"direct"})))
    async with servers(plan, workdir, nginx, litellm_venv, progress) as running:
        progress("all servers ready; measuring")
        runs = await measure(running, plan, progress)
        processes = {p.name: {"peak_rss_mib": round(sl.proc_memory(p.pid)["VmHWM"] / MIB, 1),
                              "cpu_s": round(sl.cpu_seconds(p.pid), 1)} for p in running.processes()}
        return runs, processes, dict(running.versions)


if __name__ == "__main__":
    sys.exit(main())
