"""``agentgov demo``: the whole request path on one machine, no cluster, no Redis.

It starts, on 127.0.0.1 and free ports: two stand-in OpenAI-compatible models (a cloud region
``eu-west-1`` and an on-premise region ``onprem-frankfurt``), a stand-in tool, the bundled
example agent, and the real sidecar in front of it with a policy bundle like the one the
operator compiles from ``examples/``. Spend is kept by the in-memory store — labelled as such:
it is not shared across replicas, which is why production uses Redis.

Then it sends traffic as three users with different roles and prints what happened, step by
step: a denied role, a missing token, allowed and denied tool calls, a cache hit with no
upstream call, a budget crossing its 80% and 90% alerts and then refusing, a breaker opening
on a failing region and recovering, a PII request kept on-premise, and finally the audit
log's hash chain verified. Every step states what it expects; the command exits 1 if any step
did not go as expected, so it doubles as a smoke test.

``--upstream URL`` sends model calls to a real OpenAI-compatible provider instead (its key from
the environment variable ``--api-key-env`` names, default ``OPENAI_API_KEY``, written only to
the sidecar's secrets directory); regions then both point at it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp
import jwt
from aiohttp import web

from agentgov.api.agentdeployment import Audit, Cache
from agentgov.api.bundle import (
    AgentIdentity, BundleAuth, BundleBudget, BundleModelRoute, BundleSidecar, BundleTool, PolicyBundle, Price,
    SecretFile, canonical_json,
)
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.api.regionpolicy import DEFAULT_RULES, Region
from agentgov.api.toolpolicy import CircuitBreaker, Fallback
from agentgov.demo.agent import AgentConfig, create_agent_app
from agentgov.demo.model import ModelConfig, StandInModel, serving_model
from agentgov.sidecar.app import create_app, serving
from agentgov.audit.chain import verify_chain
from agentgov.sidecar.settings import Settings
from agentgov.sidecar.spend import MemorySpendStore

ISSUER = "https://demo.agentgov.local/"
AUDIENCE = "research-assistant"
AUTH_KEY = SecretFile(secret="demo-auth", key="hmac")
UPSTREAM_KEY = SecretFile(secret="demo-upstream", key="api-key")
MODEL = "gpt-4o-mini"
# Demo prices (USD per 1K tokens), high enough that a handful of calls crosses the budget.
DEMO_PRICE = Price(input_per_1k=0.04, output_per_1k=0.04)
BOB_DAILY_USD = 0.03
# Every call of the demo asks for short answers: the budget reserves max_tokens at the output
# price before each call, so small answers let the spend approach the limit in small steps.
MAX_TOKENS = 16


@dataclass(frozen=True)
class DemoOptions:
    upstream: str | None = None
    upstream_model: str = MODEL
    api_key_env: str = "OPENAI_API_KEY"
    workdir: Path | None = None  # kept after the run when given (audit log, bundle)
    recovery_seconds: int = 2


@dataclass
class Report:
    """What the demo prints, and whether every expectation held."""

    out: TextIO
    failures: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        print(f"\n{title}", file=self.out)

    def line(self, text: str) -> None:
        print(f"  {text}", file=self.out)

    def check(self, ok: bool, text: str) -> None:
        print(f"  {'✔' if ok else '✘ UNEXPECTED:'} {text}", file=self.out)
        if not ok:
            self.failures.append(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serve(app: web.Application, port: int = 0) -> AsyncIterator[int]:
    """Serve an aiohttp app on 127.0.0.1 and ``port`` (0: a free one); yield the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        port = next(int(a[1]) for a in runner.addresses if isinstance(a, tuple))
        yield port
    finally:
        await runner.cleanup()


def _tool_app() -> web.Application:
    """A stand-in search tool: echoes what it was asked and who asked (from the sidecar's headers)."""

    async def search(request: web.Request) -> web.Response:
        return web.json_response({"results": [f"result for {request.query.get('q', '')!r}"],
                                  "askedBy": request.headers.get("X-Agentgov-User")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", search)
    return app


def demo_bundle(*, agent_port: int, cloud_url: str, onprem_url: str, tool_url: str, real_upstream: bool,
                upstream_model: str, recovery_seconds: int) -> PolicyBundle:
    """The bundle the demo's sidecar enforces (what the operator would compile for a similar
    AgentDeployment, AgentBudget, ToolPolicy and RegionPolicy)."""
    return PolicyBundle(
        agent=AgentIdentity(name="research-assistant", namespace="demo", generation=1),
        data_classes=["public", "internal", "pii"],
        auth=BundleAuth(issuer=ISSUER, audiences=[AUDIENCE], algorithms=["HS256"], key_file=AUTH_KEY,
                        leeway_seconds=30),
        roles={name: list(perms) for name, perms in DEFAULT_ROLES.items()},
        tools=[
            BundleTool(name="search", upstream=f"{tool_url}/search", permission="tool:read", timeout_seconds=5,
                       circuit_breaker=CircuitBreaker()),
            BundleTool(name="crm", upstream=f"{tool_url}/crm", permission="tool:write", timeout_seconds=5,
                       circuit_breaker=CircuitBreaker(),
                       fallback=Fallback(type="Error")),
        ],
        models=[BundleModelRoute(name=MODEL, provider="OpenAICompatible", endpoint=cloud_url,
                                 upstream_model=upstream_model,
                                 credentials_file=UPSTREAM_KEY if real_upstream else None,
                                 circuit_breaker=CircuitBreaker(failure_threshold=3,
                                                                recovery_timeout_seconds=recovery_seconds))],
        budgets=[BundleBudget(
            name="bob-daily", users=["bob"], scope="Each", monthly_usd=BOB_DAILY_USD * 30, daily_usd=BOB_DAILY_USD,
            alert_thresholds=[80, 90], enforcement="Hard", failure_policy="Closed",
            pricing={MODEL: DEMO_PRICE},
        )],
        regions=[
            Region(name="eu-west-1", endpoint=cloud_url, latency_slo_ms=2000,
                   data_classes=["public", "internal"],
                   circuit_breaker=CircuitBreaker(failure_threshold=3, recovery_timeout_seconds=recovery_seconds,
                                                  half_open_successes=1)),
            Region(name="onprem-frankfurt", endpoint=onprem_url, on_premise=True, latency_slo_ms=2000,
                   data_classes=["public", "internal", "confidential", "sensitive", "pii"]),
        ],
        routing_rules=list(DEFAULT_RULES),
        default_region="eu-west-1",
        cache=Cache(),
        audit=Audit(),
        sidecar=BundleSidecar(agent_port=agent_port, max_body_bytes=1024 * 1024, upstream_timeout_seconds=60),
    )


def demo_token(key: bytes, user: str, role: str, *, region: str | None = None) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "role": role, "iat": now,
                                 "nbf": now, "exp": now + 3600, "jti": f"demo-{user}"}
    if region:
        claims["region"] = region
    return jwt.encode(claims, key, algorithm="HS256")


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)


@dataclass
class Call:
    status: int
    body: Mapping[str, object]
    headers: Mapping[str, str]

    @property
    def code(self) -> str:
        error = self.body.get("error")
        return str(error.get("code")) if isinstance(error, dict) else ""

    @property
    def message(self) -> str:
        error = self.body.get("error")
        return str(error.get("message")) if isinstance(error, dict) else ""


class Client:
    """Calls the agent through the sidecar's inbound port, as a user's application would."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def run(self, token: str | None, **task: object) -> Call:
        task.setdefault("maxTokens", MAX_TOKENS)
        task.setdefault("dataClass", "internal")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.post(f"{self.base}/run", json=task, headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {"raw": (await response.text())[:200]}
            return Call(response.status, body if isinstance(body, dict) else {"body": body}, dict(response.headers))


def _describe(call: Call) -> str:
    if call.status == 200:
        parts = [f"200 model={call.body.get('model')}"]
        for name in ("region", "cache"):
            if call.body.get(name):
                parts.append(f"{name}={call.body[name]}")
        if call.body.get("costUsd"):
            parts.append(f"cost=${float(str(call.body['costUsd'])):.4f}")
        return " ".join(parts)
    return f"{call.status} {call.code}: {call.message}"


async def run_demo(options: DemoOptions, out: TextIO) -> int:
    report = Report(out)
    real = options.upstream is not None
    api_key = os.environ.get(options.api_key_env, "") if real else ""
    if real and not api_key:
        print(f"agentgov demo: --upstream needs an API key in ${options.api_key_env}", file=out)
        return 2
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="agentgov-demo-"))
    try:
        return await _run(options, report, workdir, real, api_key, out)
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run(options: DemoOptions, report: Report, workdir: Path, real: bool, api_key: str, out: TextIO) -> int:
    async with AsyncExitStack() as stack:
        secrets_dir = workdir / "secrets"
        auth_key = os.urandom(32)
        _write(Path(AUTH_KEY.path(str(secrets_dir))), auth_key)
        if real:
            _write(Path(UPSTREAM_KEY.path(str(secrets_dir))), api_key)

        cloud: StandInModel | None = None
        stand_ins: list[StandInModel] = []
        if real:
            cloud_url = onprem_url = str(options.upstream).rstrip("/")
        else:
            cloud = await stack.enter_async_context(serving_model(ModelConfig(name="cloud-eu-west-1")))
            onprem = await stack.enter_async_context(serving_model(ModelConfig(name="onprem-frankfurt")))
            cloud_url, onprem_url = cloud.url, onprem.url
            stand_ins = [cloud, onprem]
        tool_port = await stack.enter_async_context(_serve(_tool_app()))
        tool_url = f"http://127.0.0.1:{tool_port}"

        # The bundle names the agent's port and the agent needs the sidecar's egress port: pick
        # the agent's port, start the sidecar, then the agent on that port.
        bundle_path = workdir / "bundle.json"
        settings = Settings(bundle_path=bundle_path, secrets_dir=secrets_dir, host="127.0.0.1", port=0,
                            egress_port=0, audit_log=workdir / "audit.jsonl", audit_fsync="never")
        agent_app_port = _free_port()
        bundle = demo_bundle(agent_port=agent_app_port, cloud_url=cloud_url, onprem_url=onprem_url,
                             tool_url=tool_url, real_upstream=real, upstream_model=options.upstream_model,
                             recovery_seconds=options.recovery_seconds)
        _write(bundle_path, canonical_json(bundle))
        store = MemorySpendStore()
        served = await stack.enter_async_context(serving(settings, create_app(settings, spend_store=store)))
        egress = f"http://127.0.0.1:{served.egress_port}"
        agent_config = AgentConfig(openai_base_url=f"{egress}/v1", tools_url=f"{egress}/tools", default_model=MODEL)
        await stack.enter_async_context(_serve(create_agent_app(agent_config), agent_app_port))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        client = Client(session, f"http://127.0.0.1:{served.port}")

        print("agentgov demo — everything runs on this machine: no cluster, no Redis.", file=out)
        print("  spend store: IN-MEMORY (demo only; not shared across replicas — production uses Redis)", file=out)
        print(f"  models:      {'real upstream ' + cloud_url if real else 'two local OpenAI-compatible stand-ins'}"
              f" (regions eu-west-1 and onprem-frankfurt)", file=out)
        print(f"  sidecar:     inbound http://127.0.0.1:{served.port}  egress {egress} (agent only)", file=out)
        print(f"  audit log:   {settings.audit_log}", file=out)

        alice = demo_token(auth_key, "alice", "admin", region="us-east-1")
        bob = demo_token(auth_key, "bob", "analyst", region="eu-central-1")
        carol = demo_token(auth_key, "carol", "viewer")

        report.section("1. Who may run the agent (JWT + roles)")
        call = await client.run(None, prompt="hello")
        report.check(call.status == 401 and call.code == "missing_token", f"anonymous         → {_describe(call)}")
        call = await client.run(carol, prompt="hello")
        report.check(call.status == 403, f"carol (viewer)    → {_describe(call)}")
        call = await client.run(alice, prompt="Summarise the quarterly report")
        report.check(call.status == 200, f"alice (admin)     → {_describe(call)}")

        report.section("2. Tools: the role must hold the tool's permission")
        call = await client.run(bob, prompt="find papers", tool="search", toolPath="?q=agents", temperature=0)
        report.check(call.status == 200 and isinstance(call.body.get("tool"), dict),
                     f"bob (analyst) search (tool:read)  → {call.status} {json.dumps(call.body.get('tool'))}"
                     if call.status == 200 else f"bob (analyst) search → {_describe(call)}")
        call = await client.run(bob, prompt="update the account", tool="crm", toolPath="accounts/42", temperature=0)
        report.check(call.status == 403, f"bob (analyst) crm (tool:write)    → {_describe(call)}")

        report.section("3. Cache: a deterministic request asked twice reaches the model once")
        before = sum(m.model_calls() for m in stand_ins)
        first = await client.run(alice, prompt="What is a circuit breaker?", temperature=0)
        second = await client.run(alice, prompt="What is a circuit breaker?", temperature=0)
        upstream_calls = (sum(m.model_calls() for m in stand_ins) - before) if stand_ins else None
        report.check(first.body.get("cache") == "miss", f"first  → {_describe(first)}")
        report.check(second.body.get("cache") == "hit" and (upstream_calls in (None, 1)),
                     f"second → {_describe(second)}; upstream calls for both: {upstream_calls}")
        report.check(second.body.get("answer") == first.body.get("answer"), "the same answer, byte for byte")

        report.section(f"4. Budget: bob may spend ${BOB_DAILY_USD:.2f} a day (Hard; alerts at 80% and 90%)")
        alerts_before = _audit_count(settings.audit_log, "budget_alert")
        refused: Call | None = None
        lines: list[str] = []
        for n in range(1, 60):
            call = await client.run(bob, prompt=f"Draft note number {n} about agent governance")
            lines.append(f"bob call {n:2d} → {_describe(call)}")
            if call.status != 200:
                refused = call
                break
        for text in (lines if len(lines) <= 6 else [*lines[:2], f"... {len(lines) - 5} more like these ...",
                                                     *lines[-3:]]):
            report.line(text)
        report.check(refused is not None and refused.status == 429 and refused.code == "budget_exceeded",
                     "then refused with 429 budget_exceeded, naming the budget, its limit and reset time")
        if refused is not None:
            error = refused.body.get("error")
            detail = {k: v for k, v in error.items() if k not in ("code", "message")} if isinstance(error, dict) else {}
            report.line(f"details: {json.dumps(detail)}")
        alerts = await _wait_for_audit(settings.audit_log, "budget_alert", alerts_before + 2)
        alerts = alerts[alerts_before:]
        percents = sorted({int(str(meta.get("percent", 0))) for e in alerts
                           if isinstance(meta := e.get("metadata"), dict)})
        report.check({80, 90} <= set(percents), f"budget_alert audit events at {percents}% (once each)")

        report.section("5. Data residency: PII stays on-premise; EU callers prefer EU regions")
        call = await client.run(alice, prompt="Customer Jane Doe, born 1980-01-01", dataClass="pii")
        report.check(call.status == 200 and call.body.get("region") == "onprem-frankfurt",
                     f"alice, dataClass=pii      → {_describe(call)}")
        call = await client.run(alice, prompt="Public press release", dataClass="public")
        report.check(call.status == 200 and call.body.get("region") == "eu-west-1",
                     f"alice, dataClass=public   → {_describe(call)} (the default region)")

        if cloud is not None:
            report.section("6. Circuit breaker: the cloud region fails; once its breaker opens, traffic moves; "
                           "then it recovers")
            report.line("(a model POST that reached a failing upstream is not retried elsewhere: it might be "
                        "paid twice; until the breaker opens, the agent sees 502)")
            cloud.configure(failure_rate=1.0)
            regions_seen = []
            for n in range(1, 7):
                call = await client.run(alice, prompt=f"Status report {n}", dataClass="internal")
                regions_seen.append(call.body.get("region") if call.status == 200 else call.code)
                report.line(f"alice call {n} (cloud failing) → {_describe(call)}")
            report.check("onprem-frankfurt" in regions_seen,
                         "with eu-west-1's breaker open, internal data went to the next allowed region")
            breakers = await _ready_breakers(session, served.port)
            report.line(f"/ready breakers: {breakers}")
            cloud.configure(failure_rate=0.0)
            await asyncio.sleep(options.recovery_seconds + 0.5)
            call = await client.run(alice, prompt="Status report after recovery", dataClass="internal")
            report.check(call.status == 200 and call.body.get("region") == "eu-west-1",
                         f"after {options.recovery_seconds}s recovery → {_describe(call)} (half-open trial succeeded)")

    report.section("7. Audit: every decision above is in a hash-chained log")
    # The sidecar has stopped: every record is on disk.
    chain = verify_chain(settings.audit_log)
    report.check(chain.ok, f"{chain.records} records; chain verifies (agentgov audit verify {settings.audit_log})"
                 if chain.ok else f"chain problems: {chain.problems[:3]}")
    if options.workdir is None:
        report.line("(pass --workdir DIR to keep the audit log, bundle and secrets for a look afterwards)")
    print("", file=out)
    if report.failures:
        print(f"{len(report.failures)} step(s) did not go as expected.", file=out)
        return 1
    print("Every step went as expected.", file=out)
    return 0


def _audit_events(path: Path, event_type: str) -> list[dict[str, object]]:
    """The records of one event type in the demo's audit log, oldest first."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else ():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event_type") == event_type:
            events.append(record)
    return events


def _audit_count(path: Path, event_type: str) -> int:
    return len(_audit_events(path, event_type))


async def _ready_breakers(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/ready") as response:
        body = await response.json(content_type=None)
    breakers = body.get("breakers") if isinstance(body, dict) else None
    if not isinstance(breakers, list):
        return "(not reported)"
    return ", ".join(f"{b.get('kind')}/{b.get('name')}={b.get('state')}" for b in breakers if isinstance(b, dict))


async def _wait_for_audit(path: Path, event_type: str, at_least: int, timeout: float = 3.0) -> list[dict[str, object]]:
    """Records are written by a background writer: give it a moment to catch up."""
    deadline = time.monotonic() + timeout
    while True:
        events = _audit_events(path, event_type)
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.05)
