"""The sidecar's aiohttp application: ``create_app(settings)``, and ``run`` for the command line.

Resources are opened in ``cleanup_ctx``, in this order, and closed in reverse:

1. the policy store (first load of the bundle and secrets),
2. the audit writer (then the bundle poller, so every reload is audited),
3. HTTP client sessions: one to the agent (no decompression, pooled), one for JWKS,
4. the execution store and its purge task.

One middleware turns every error into ``{"error": {"code", "message"}}`` (an unexpected
exception becomes a 500 ``internal_error`` with nothing more said; its traceback is logged,
redacted) and counts requests by route kind and status class.

Endpoints on the inbound port: ``/health`` (liveness), ``/ready`` (bundle in force and audit
log writable), ``/metrics`` (Prometheus, this app's own registry), ``POST /agentgov/v1/tokens``
(admin: mint a scoped token), and everything else: the agent, behind authentication and
authorization. The egress port (models and tools for the agent) is issue 5's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from agentgov.api.agentdeployment import JwtAlgorithm
from agentgov.api.bundle import INBOUND_PORT
from agentgov.sidecar.audit import AuditEvent, AuditWriter
from agentgov.sidecar.bundle_loader import PolicyStore, ReloadResult
from agentgov.sidecar.context import AGENT_SESSION, AUDIT, EXECUTIONS, JWKS, METRICS, POLICY, SETTINGS
from agentgov.sidecar.errors import InternalError, MethodNotAllowed, NotFound, SidecarError
from agentgov.sidecar.executions import ExecutionStore
from agentgov.sidecar.handlers import (
    agent_handler, health_handler, metrics_handler, mint_token_handler, ready_handler,
)
from agentgov.sidecar.authz import TOKENS_PATH
from agentgov.sidecar.jwks import JwksClient, JwksClients
from agentgov.sidecar.metrics import Metrics
from agentgov.sidecar.redact import Redactor
from agentgov.sidecar.settings import Settings

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> StreamResponse:
    """JSON errors with stable codes, request counts and durations by route kind."""
    started = time.monotonic()
    route = request.match_info.route.name or "agent"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except SidecarError as e:
        status = e.status
        return error_response(e)
    except web.HTTPException as e:
        status = e.status
        mapped: SidecarError = NotFound() if e.status == 404 else (
            MethodNotAllowed() if e.status == 405 else InternalError())
        return error_response(mapped)
    except Exception as e:
        text = "".join(traceback.format_exception(e))
        redactor = request.app[POLICY].redactor
        log.error("unhandled error on %s %s: %s", request.method, redactor.text(request.path), redactor.text(text))
        return error_response(InternalError())
    finally:
        metrics = request.app[METRICS]
        metrics.requests.labels(route=route, status=f"{status // 100}xx").inc()
        metrics.request_seconds.labels(route=route).observe(time.monotonic() - started)


class AccessLogger(AbstractAccessLogger):
    """Method, path without the query string (it may carry credentials), status, time. No headers."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        app = getattr(request, "app", None)
        redactor = app[POLICY].redactor if isinstance(app, web.Application) and POLICY in app else Redactor()
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


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[POLICY]
    writer = AuditWriter(
        settings.audit_log, policy=store.audit_policy, fsync=settings.audit_fsync,
        fsync_interval_seconds=settings.audit_fsync_interval_seconds, queue_size=settings.audit_queue_size,
        metrics=app[METRICS],
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
                                  cookie_jar=aiohttp.DummyCookieJar())
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


def create_app(settings: Settings) -> web.Application:
    """A sidecar app for these settings; nothing is opened until the app starts."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.extend([policy_ctx, audit_ctx, clients_ctx, executions_ctx])
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


@asynccontextmanager
async def serving(settings: Settings, app: web.Application | None = None) -> AsyncIterator[tuple[web.Application, int]]:
    """Start the app on ``settings.host`` and the port (``settings.port``, else the bundle's
    inbound port, else 8080; 0 picks a free one); yield the app and the bound port; stop it."""
    app = app if app is not None else create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        port = settings.port
        if port is None:
            snapshot = app[POLICY].current
            port = snapshot.bundle.sidecar.inbound_port if snapshot else INBOUND_PORT
        site = web.TCPSite(runner, settings.host, port)
        await site.start()
        bound = port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                bound = int(address[1])
                break
        yield app, bound
    finally:
        await runner.cleanup()


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with serving(settings) as (_, port):
        log.info("agentgov sidecar listening on %s:%d (bundle %s)", settings.host, port, settings.bundle_path)
        await stop.wait()
        log.info("agentgov sidecar stopping")
