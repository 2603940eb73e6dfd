"""The sidecar's aiohttp applications: ``create_app(settings)`` (the inbound port, which owns
every resource), ``egress.create_egress_app`` over it (the egress port), ``serving`` to run
both, and ``run`` for the command line.

Resources are opened in the main app's ``cleanup_ctx``, in this order, and closed in reverse:

1. the policy store (first load of the bundle and secrets), then tracing when an OTLP
   endpoint is configured (``tracing``: its spans are flushed when the app stops),
2. audit shipping (a shipper per sink of ``bundle.auditSinks``, following reloads; closed
   after the writer, so what the writer flushes at shutdown is shipped in the drain), then the
   audit writer (then the bundle poller, so every reload is audited),
3. HTTP client sessions: one to the agent (no decompression, pooled), one for JWKS,
4. the execution store and its purge task,
5. Redis (when ``settings.redis_url`` is set) and its health check,
6. the egress resources: circuit breakers (transitions become metrics and audit records),
   the response cache (L1, and L2 on Redis), the budget guard (the Redis spend store, the one
   given to ``create_app``, or none: then every budget follows its failure policy, exactly as
   when Redis is unreachable), the pooled session for model upstreams, the alert webhooks.
   Breakers and cache follow bundle reloads.

One middleware per app turns every error into ``{"error": {"code", "message"}}`` (an
unexpected exception becomes a 500 ``internal_error`` with nothing more said; its traceback is
logged, redacted) and counts requests by route kind and status class.

Endpoints on the inbound port: ``/health`` (liveness), ``/ready`` (bundle in force and audit
log writable; upstreams, breakers, Redis and budgets reported), ``/metrics`` (Prometheus, this
app's own registry), ``POST /agentgov/v1/tokens`` (admin: mint a scoped token), and everything
else: the agent, behind authentication and authorization. The egress port: see ``egress``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from agentgov.api import spendstore
from agentgov.api.agentdeployment import Cache, JwtAlgorithm
from agentgov.api.bundle import EGRESS_PORT, INBOUND_PORT
from agentgov.sidecar import upstream
from agentgov.sidecar.alerts import AlertWebhooks
from agentgov.audit import errors as audit_errors
from agentgov.audit.record import AuditEvent
from agentgov.audit.writer import AuditWriter
from agentgov.audit.sinks.cursor import pending_from
from agentgov.audit.sinks.settings import SinkConfigError, SinksSettings, source_name, sinks_from_bundle
from agentgov.audit.sinks.shipper import AuditShipping
from agentgov.sidecar.breaker import Breakers, State
from agentgov.sidecar.budgets import BudgetAlert
from agentgov.sidecar.bundle_loader import PolicyStore, ReloadResult
from agentgov.sidecar.cache import ResponseCache
from agentgov.sidecar.egress import create_egress_app, emit_budget_alert, wanted_breakers
from agentgov.sidecar.context import (
    AGENT_SESSION, AUDIT, AUDIT_SHIPPING, BREAKERS, BUDGETS, CACHE, EGRESS, EXECUTIONS, JWKS, METRICS, MODEL_SESSION, POLICY, REDIS,
    SETTINGS, AppState, EgressState, RedisLink, main_app,
)
from agentgov.sidecar.errors import AuditUnavailable, ConfigError, InternalError, MethodNotAllowed, NotFound, SidecarError
from agentgov.sidecar.executions import ExecutionStore
from agentgov.sidecar.handlers import (
    agent_handler, health_handler, metrics_handler, mint_token_handler, ready_handler,
)
from agentgov.sidecar.authz import TOKENS_PATH
from agentgov.sidecar.logs import request_scope
from agentgov.sidecar.jwks import JwksClient, JwksClients
from agentgov.sidecar.metrics import Metrics
from agentgov.audit.redact import Redactor
from agentgov.sidecar.settings import Settings
from agentgov.sidecar.spend import BudgetGuard, RedisSpendStore, SpendStore, redis_client
from agentgov.sidecar.tracing import trace_configs, tracing_ctx

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[StreamResponse]]


def error_response(error: SidecarError) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if error.status == 401:
        # RFC 6750: the same challenge for every bad token.
        challenge = 'Bearer realm="agentgov"'
        if error.code == "invalid_token":
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    elif error.status == 503:
        response.headers["Retry-After"] = "5"
    return response


def error_middleware_for(default_route: str) -> Middleware:
    """The error middleware of one app (the main app, or an egress app over it: the metrics and
    redactor are the main app's either way); requests that match no named route are counted as
    ``default_route``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> StreamResponse:
        """JSON errors with stable codes, request counts and durations by route kind."""
        started = time.monotonic()
        route = request.match_info.route.name or default_route
        status = 500
        app = main_app(request.app)
        with request_scope():  # log lines of this request carry its ids
            try:
                response = await handler(request)
                status = response.status
                return response
            except SidecarError as e:
                status = e.status
                return error_response(e)
            except audit_errors.AuditUnavailable:  # the audit writer's own error, as the sidecar's 503
                status = AuditUnavailable.status
                return error_response(AuditUnavailable())
            except web.HTTPException as e:
                status = e.status
                mapped: SidecarError = NotFound() if e.status == 404 else (
                    MethodNotAllowed() if e.status == 405 else InternalError())
                return error_response(mapped)
            except Exception as e:
                text = "".join(traceback.format_exception(e))
                redactor = app[POLICY].redactor
                log.error("unhandled error on %s %s: %s", request.method, redactor.text(request.path), redactor.text(text))
                return error_response(InternalError())
            finally:
                metrics = app[METRICS]
                metrics.requests.labels(route=route, status=f"{status // 100}xx").inc()
                metrics.request_seconds.labels(route=route).observe(time.monotonic() - started)

    return middleware


error_middleware = error_middleware_for("agent")


class AccessLogger(AbstractAccessLogger):
    """Method, path without the query string (it may carry credentials), status, time. No headers."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        app = getattr(request, "app", None)
        app = main_app(app) if isinstance(app, web.Application) else None
        redactor = app[POLICY].redactor if app is not None and POLICY in app else Redactor()
        self.logger.info("%s %s %s %.1fms", request.method, redactor.text(request.path), response.status,
                         time * 1000)


# --- cleanup contexts -------------------------------------------------------------------


async def policy_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = PolicyStore(settings.bundle_path, settings.secrets_dir)
    metrics = app[METRICS]

    def record(result: ReloadResult) -> None:
        metrics.bundle_reloads.labels(result="failure" if result.error else "success").inc()
        metrics.bundle_valid.set(0 if store.error else 1)
        metrics.set_bundle(store.current.hash if store.current else None)

    store.subscribe(record)
    await store.reload()
    if store.current is None:
        log.error("no valid policy bundle at %s: not ready until one is written", settings.bundle_path)
    app[POLICY] = store
    yield


def _reload_events(store: PolicyStore, result: ReloadResult) -> list[AuditEvent]:
    now = time.time()
    path = str(store.bundle_path)
    if result.error:
        return [AuditEvent("policy_reload", "failure", "load", path, now, metadata={
            "error": result.error, "kept": store.current.hash if store.current else None})]
    snapshot = result.snapshot
    if snapshot is None:
        return [AuditEvent("policy_reload", "success", "load", path, now, metadata={"restored": True})]
    events = [AuditEvent("policy_reload", "success", "load", path, now,
                         metadata={"hash": snapshot.hash, "agent": snapshot.agent})]
    for read in snapshot.secret_reads:
        events.append(AuditEvent(
            "secret_access", "success" if read.found else "failure", "read",
            read.file.path("secrets"), now, metadata={"purpose": read.purpose},
        ))
    return events


async def audit_shipping_ctx(app: web.Application) -> AsyncIterator[None]:
    """Ship the audit log to the sinks the bundle names, and follow bundle reloads. A sink that
    is down never holds up the sidecar: its shipper falls behind and catches up."""
    settings, store = app[SETTINGS], app[POLICY]
    shipping = AuditShipping(settings.audit_log, app[METRICS].registry)
    app[AUDIT_SHIPPING] = shipping
    source = source_name(socket.gethostname())  # the pod name
    changes: set[asyncio.Task[None]] = set()

    def wanted(result: ReloadResult) -> SinksSettings | None:
        snapshot = result.snapshot
        assert snapshot is not None
        try:
            return sinks_from_bundle(snapshot.bundle.audit_sinks, stream=snapshot.agent, source=source,
                                     secrets_dir=settings.secrets_dir)
        except SinkConfigError as e:  # the sinks in force stay
            log.error("audit sinks not applied: %s", e)
            return None

    def follow(result: ReloadResult) -> None:
        if result.snapshot is None:
            return
        sinks = wanted(result)
        if sinks is not None:
            task = asyncio.create_task(shipping.apply(sinks), name="agentgov-audit-sinks")
            changes.add(task)
            task.add_done_callback(changes.discard)

    if store.current is not None:
        first = wanted(ReloadResult(store.current, None))
        if first is not None:
            await shipping.apply(first)
    store.subscribe(follow)
    yield
    for task in list(changes):
        with suppress(Exception):
            await task
    await shipping.close(settings.audit_ship_drain_seconds)


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[POLICY]
    writer = AuditWriter(
        settings.audit_log, policy=store.audit_policy, fsync=settings.audit_fsync,
        fsync_interval_seconds=settings.audit_fsync_interval_seconds, queue_size=settings.audit_queue_size,
        metrics=app[METRICS], options=settings.audit_log_options,
        # Pruning keeps what a sink has not delivered; each write wakes the shippers.
        retention_hold=lambda: pending_from(settings.audit_log), echo=lambda _lines: app[AUDIT_SHIPPING].notify(),
    )
    await writer.start()
    app[AUDIT] = writer

    def audit_reload(result: ReloadResult) -> None:
        for event in _reload_events(store, result):
            writer.emit(event)

    # The first load happened before the log was open: record it now, then every reload.
    audit_reload(ReloadResult(store.current, store.error if store.current is None else None))
    store.subscribe(audit_reload)
    watcher = asyncio.create_task(store.watch(settings.reload_interval_seconds), name="agentgov-bundle-watch")
    yield
    watcher.cancel()
    with suppress(asyncio.CancelledError):
        await watcher
    await writer.close()


async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # No decompression: bodies pass through byte for byte with their Content-Encoding.
    agent = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0),
                                  cookie_jar=aiohttp.DummyCookieJar(), trace_configs=trace_configs(app))
    jwks_session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    metrics = app[METRICS]

    def new_client(url: str, algorithms: Sequence[JwtAlgorithm]) -> JwksClient:
        return JwksClient(
            url, algorithms, jwks_session,
            timeout_seconds=settings.jwks_timeout_seconds, cache_seconds=settings.jwks_cache_seconds,
            min_refresh_seconds=settings.jwks_min_refresh_seconds, max_bytes=settings.jwks_max_bytes,
            metrics=metrics,
        )

    app[AGENT_SESSION] = agent
    app[JWKS] = JwksClients(new_client)
    snapshot = app[POLICY].current
    prefetch = None
    if snapshot is not None and snapshot.bundle.auth.jwks_url:
        # Warm the key cache so the first caller does not wait for the IdP.
        client = app[JWKS].get(snapshot.bundle.auth.jwks_url, snapshot.bundle.auth.algorithms)
        prefetch = asyncio.create_task(client.keys(), name="agentgov-jwks-prefetch")
    yield
    if prefetch is not None:
        prefetch.cancel()
        with suppress(asyncio.CancelledError):
            await prefetch
    await agent.close()
    await jwks_session.close()


async def executions_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = ExecutionStore(settings.execution_ttl_seconds, max_entries=settings.execution_max_entries)
    app[EXECUTIONS] = store

    async def purge() -> None:
        while True:
            await asyncio.sleep(min(60.0, settings.execution_ttl_seconds / 4))
            store.purge()
            app[METRICS].executions_tracked.set(len(store))

    task = asyncio.create_task(purge(), name="agentgov-executions-purge")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


REDIS_CHECK_SECONDS = 1.0
# Budget gauges are refreshed from the store at most this often (and only after spend changed).
BUDGET_GAUGE_SECONDS = 1.0


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client (budget store and L2 cache) and a health check of it, once a second."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    link = RedisLink(configured=settings.redis_url is not None)
    app[REDIS] = link
    metrics.redis_up.set(0)
    if settings.redis_url is None:
        yield
        return
    client = redis_client(settings.redis_url, settings.redis_timeout_seconds)
    link.client = client

    async def check() -> None:
        while True:
            try:
                async with asyncio.timeout(settings.redis_timeout_seconds * 4):
                    await client.ping()
            except Exception as e:  # any failure is "down"; never the URL (it may carry a password)
                if link.up or link.last_error is None:
                    log.warning("Redis is unreachable (%s)", type(e).__name__)
                link.up, link.last_error = False, type(e).__name__
            else:
                if not link.up and link.last_error is not None:
                    log.info("Redis is reachable again")
                link.up, link.last_error = True, None
            link.checked_at = time.monotonic()
            metrics.redis_up.set(1 if link.up else 0)
            await asyncio.sleep(REDIS_CHECK_SECONDS)

    task = asyncio.create_task(check(), name="agentgov-redis-health")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    await client.aclose()


def _transition_hook(app: web.Application) -> Callable[[str, str, State, State], None]:
    def transition(kind: str, name: str, old: State, new: State) -> None:
        metrics = app[METRICS]
        metrics.set_breaker(kind, name, new)
        metrics.breaker_transitions.labels(kind=kind, name=name, state=new).inc()
        log.warning("breaker %s/%s: %s -> %s", kind, name, old, new)
        if AUDIT in app:
            app[AUDIT].emit(AuditEvent("breaker_transition", "failure" if new == "open" else "success", new,
                                       f"{kind}/{name}", time.time(), metadata={"kind": kind, "name": name,
                                                                                "from": old, "to": new}))
    return transition


def egress_ctx_for(spend_store: SpendStore | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """The egress resources' cleanup context; ``spend_store`` overrides the Redis one (the demo's
    in-memory store)."""

    async def egress_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        store = app[POLICY]
        metrics = app[METRICS]
        snapshot = store.current
        breakers = Breakers(on_transition=_transition_hook(app))
        app[BREAKERS] = breakers
        client = app[REDIS].client
        cache_policy = snapshot.bundle.cache if snapshot else None
        cache = ResponseCache(cache_policy or Cache(), client, redis_timeout=settings.redis_timeout_seconds)
        app[CACHE] = cache
        shared: SpendStore | None = spend_store
        if shared is None and client is not None:
            shared = RedisSpendStore(client, timeout=settings.redis_timeout_seconds)
        egress = EgressState()
        app[EGRESS] = egress

        def later_alert(alert: BudgetAlert) -> None:
            emit_budget_alert(AppState(app), alert)

        guard = BudgetGuard(shared, on_alert=later_alert)
        app[BUDGETS] = guard
        session = upstream.new_session(trace_configs(app))
        app[MODEL_SESSION] = session
        webhooks = AlertWebhooks(app[AGENT_SESSION])

        def notify(alert: BudgetAlert) -> None:
            current = store.current
            if current is not None:
                webhooks.submit(current.bundle, alert, at=time.time(), read_secret=current.secret)

        egress.alert_notifier = notify

        def follow(result: ReloadResult) -> None:
            if result.snapshot is None:
                return
            bundle = result.snapshot.bundle
            wanted = wanted_breakers(bundle)
            for kind, name in breakers.configure(wanted):
                metrics.breaker_state.remove(kind, name)
            for (kind, name) in wanted:
                found = breakers.find(kind, name)
                if found is not None:
                    metrics.set_breaker(kind, name, found.state)
            try:
                cache.configure(bundle.cache)
            except ConfigError as e:  # an unusable size keeps the previous cache policy
                log.error("cache policy not applied: %s", e)

        follow(ReloadResult(snapshot, None))
        store.subscribe(follow)
        gauges = asyncio.create_task(_budget_gauges(app, guard, egress), name="agentgov-budget-gauges")
        yield
        gauges.cancel()
        with suppress(asyncio.CancelledError):
            await gauges
        for task in list(egress.background):
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 2.0)
        await webhooks.aclose()
        await guard.aclose()
        await session.close()

    return egress_ctx


async def _budget_gauges(app: web.Application, guard: BudgetGuard, egress: EgressState) -> None:
    """Spend and remaining of each budget's current day and month, read from the shared store
    after spend changed (at most once per BUDGET_GAUGE_SECONDS). For scope Each: the total
    spent by every subject, and the room left to the subject closest to its limit."""
    metrics = app[METRICS]
    while True:
        await egress.budgets_changed.wait()
        egress.budgets_changed.clear()
        snapshot = app[POLICY].current
        store = guard.store
        if snapshot is not None and store is not None:
            now = time.time()
            for budget in snapshot.bundle.budgets:
                for period, limit in (("day", budget.daily_usd), ("month", budget.monthly_usd)):
                    try:
                        async with asyncio.timeout(1.0):
                            figures = await store.period(snapshot.bundle.agent.namespace, budget.name,
                                                         period, now)  # type: ignore[arg-type]
                    except Exception:
                        continue
                    spent = [f.spent_micros for f in figures.values()]
                    metrics.budget_spend.labels(budget=budget.name, period=period).set(
                        spendstore.micros_to_usd(sum(spent)))
                    metrics.budget_remaining.labels(budget=budget.name, period=period).set(
                        max(0.0, limit - spendstore.micros_to_usd(max(spent, default=0))))
        await asyncio.sleep(BUDGET_GAUGE_SECONDS)


def create_app(settings: Settings, *, spend_store: SpendStore | None = None) -> web.Application:
    """A sidecar app for these settings; nothing is opened until the app starts. ``spend_store``
    replaces the Redis budget store (``agentgov demo`` passes an in-memory one)."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.extend([policy_ctx, tracing_ctx, audit_shipping_ctx, audit_ctx, clients_ctx, executions_ctx,
                            redis_ctx, egress_ctx_for(spend_store)])
    app.router.add_get("/health", health_handler, name="health")
    app.router.add_get("/ready", ready_handler, name="ready")
    app.router.add_get("/metrics", metrics_handler, name="metrics")
    app.router.add_post(TOKENS_PATH, mint_token_handler, name="admin")
    app.router.add_route("*", "/{tail:.*}", agent_handler, name="agent")
    return app


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner every server of this app uses (the command line and the tests alike)."""
    return web.AppRunner(
        app,
        handler_cancellation=True,  # a caller that goes away cancels the upstream call
        access_log_class=AccessLogger,
        max_line_size=settings.max_header_bytes,
        max_field_size=settings.max_header_bytes,
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )


@dataclass(frozen=True)
class Served:
    """A running sidecar: the main app and its port, the egress app and its port."""

    app: web.Application
    port: int
    egress_app: web.Application
    egress_port: int


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


@asynccontextmanager
async def serving(settings: Settings, app: web.Application | None = None) -> AsyncIterator[Served]:
    """Start the inbound app on ``settings.host`` and its port (``settings.port``, else the
    bundle's inbound port, else 8080) and the egress app on ``settings.egress_host`` and its
    port (``settings.egress_port``, else the bundle's egress port, else 8081); 0 picks a free
    one. Yield both apps and the bound ports; stop both (egress first)."""
    app = app if app is not None else create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        snapshot = app[POLICY].current
        port = settings.port
        if port is None:
            port = snapshot.bundle.sidecar.inbound_port if snapshot else INBOUND_PORT
        egress_port = settings.egress_port
        if egress_port is None:
            egress_port = snapshot.bundle.sidecar.egress_port if snapshot else EGRESS_PORT
        egress_app = create_egress_app(app)
        egress_runner = make_runner(egress_app, settings)
        await egress_runner.setup()
        try:
            await web.TCPSite(egress_runner, settings.egress_host, egress_port).start()
            await web.TCPSite(runner, settings.host, port).start()
            yield Served(app, _bound_port(runner, port), egress_app, _bound_port(egress_runner, egress_port))
        finally:
            await egress_runner.cleanup()
    finally:
        await runner.cleanup()


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serving(settings) as served:
        log.info("agentgov sidecar listening on %s:%d, egress on %s:%d (bundle %s)", settings.host, served.port,
                 settings.egress_host, served.egress_port, settings.bundle_path)
        await stop.wait()
        log.info("agentgov sidecar stopping")
