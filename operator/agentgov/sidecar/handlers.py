"""The inbound request path: authenticate, authorize, audit, then proxy (or serve an admin call).

Thin: each step is a pure function from another module (``auth.verify``, ``authz.decide``,
``headers.request_headers_for_agent``, ``tokens.check_mint_request``); this module reads the
request, takes the policy snapshot in force *once* per request, calls them, writes the audit
events and raises the errors the middleware turns into JSON.

Audit events per proxied request: ``authentication`` (success or failure with the reason),
``authorization`` (allowed or denied with the rule), ``agent_execution`` started, then
``agent_execution`` success or failure with the status and duration. Minting a token writes
``token_issued`` durably *before* the token is returned (fail closed).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from agentgov.audit.record import AuditEvent, EventType, Result
from agentgov.sidecar.auth import Identity, bearer_token, unverified_kid, verify
from agentgov.sidecar.authz import AdminRoute, Decision, Route, TOKENS_PATH, classify, decide
from agentgov.sidecar.bundle_loader import PolicySnapshot
from agentgov.sidecar.context import AUDIT_SHIPPING, AppState, state
from agentgov.sidecar.errors import (
    AuditUnavailable, AuthError, AuthUnavailable, BadRequest, BodyTooLarge, Forbidden, MethodNotAllowed,
    MintingNotConfigured, NotFound, SidecarError,
)
from agentgov.sidecar.headers import EXECUTION_ID, REQUEST_ID, client_address, request_headers_for_agent
from agentgov.sidecar.logs import annotate
from agentgov.sidecar.metrics import CONTENT_TYPE
from agentgov.sidecar.proxy import ProxyResult, forward
from agentgov.sidecar.tokens import MintRequest, SigningKey, check_mint_request, mint
from agentgov.sidecar.tracing import AGENT_REQUEST, bind_execution, traced

MAX_ADMIN_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class RequestInfo:
    """What the audit log says about the request itself."""

    request_id: str
    method: str
    path: str
    client_ip: str | None
    user_agent: str | None
    started: float  # monotonic, for durations

    def event(self, event_type: EventType, result: Result, *, user: str | None = None,
              action: str | None = None, resource: str | None = None, execution_id: str | None = None,
              metadata: Mapping[str, object] | None = None) -> AuditEvent:
        return AuditEvent(
            event_type=event_type, result=result, action=action or self.method, resource=resource or self.path,
            timestamp=time.time(), user=user, metadata=metadata or {}, client_ip=self.client_ip,
            user_agent=self.user_agent, execution_id=execution_id, request_id=self.request_id,
        )


def request_info(request: web.Request, app: AppState) -> RequestInfo:
    """Taken once, when a handler starts (``started`` times the whole request)."""
    return RequestInfo(
        request_id="req_" + secrets.token_urlsafe(12),
        method=request.method,
        path=request.path,
        client_ip=client_address(request.remote, request.headers.getall("X-Forwarded-For", []),
                                 app.settings.trusted_proxies),
        user_agent=request.headers.get("User-Agent"),
        started=time.monotonic(),
    )


async def authenticate(request: web.Request, app: AppState, snapshot: PolicySnapshot, info: RequestInfo) -> Identity:
    """The caller's Identity, or AuthError (401) / AuthUnavailable (503); audited either way."""
    values = request.headers.getall("Authorization", [])
    policy = snapshot.auth_policy
    token = (AuthError("malformed", "several Authorization headers") if len(values) > 1
             else bearer_token(values[0] if values else None, policy.max_token_bytes))
    result: Identity | AuthError
    if isinstance(token, AuthError):
        result = token
    else:
        keys = snapshot.keys
        auth = snapshot.bundle.auth
        if auth.jwks_url:
            client = app.jwks.get(auth.jwks_url, auth.algorithms)
            remote = await client.keys(unverified_kid(token))
            if remote is None and not keys:
                app.audit.emit(info.event("authentication", "failure", metadata={
                    "reason": "keys_unavailable", "detail": client.last_error or "no JWKS fetched yet"}))
                raise AuthUnavailable()
            keys = keys + (remote or ())
        result = verify(token, keys, policy, time.time())
    if isinstance(result, AuthError):
        app.metrics.auth_failures.labels(reason=result.reason).inc()
        app.audit.emit(info.event("authentication", "failure",
                                  metadata={"reason": result.reason, "detail": result.detail}))
        raise result
    app.audit.emit(info.event("authentication", "success", user=result.user, metadata={
        "role": result.role, "scopes": sorted(result.scopes), "alg": result.alg, "kid": result.kid,
        "jti": result.token_id, "actor": result.actor,
    }))
    return result


def authorize(app: AppState, snapshot: PolicySnapshot, identity: Identity, route: Route, info: RequestInfo) -> Decision:
    decision = decide(identity, route, snapshot.bundle)
    app.audit.emit(info.event("authorization", "allowed" if decision.allowed else "denied", user=identity.user,
                              metadata={"code": decision.code, "rule": decision.message,
                                        "permission": decision.permission, "role": identity.role,
                                        "missing_scopes": list(decision.missing_scopes)}))
    if not decision.allowed:
        app.metrics.authz_denials.labels(code=decision.code).inc()
        raise Forbidden(decision.code, decision.message)
    if decision.privileged and not app.audit.healthy:
        raise AuditUnavailable()
    return decision


@traced(AGENT_REQUEST)
async def agent_handler(request: web.Request) -> web.StreamResponse:
    """Everything outside the sidecar's own endpoints: forwarded to the agent."""
    app = state(request)
    info = request_info(request, app)
    snapshot = app.policy.require()
    route = classify(request.method, request.path)
    if route is None:
        raise MethodNotAllowed() if request.path == TOKENS_PATH else NotFound()
    identity = await authenticate(request, app, snapshot, info)
    authorize(app, snapshot, identity, route, info)

    sidecar = snapshot.bundle.sidecar
    execution = app.executions.issue(identity, request_id=info.request_id)
    annotate(request_id=info.request_id, execution_id=execution.id)
    bind_execution(request, execution.id)
    app.metrics.executions_tracked.set(len(app.executions))
    app.audit.emit(info.event("agent_execution", "started", user=identity.user, execution_id=execution.id,
                              metadata={"role": identity.role}))
    headers = request_headers_for_agent(
        request.headers.items(), peer=request.remote, trusted=app.settings.trusted_proxies, identity=identity,
        execution_id=execution.id, request_id=info.request_id, scheme=request.scheme,
    )
    # The path and query exactly as sent (an absolute-form target keeps only its path: the agent
    # is always 127.0.0.1, whatever host the request names).
    target = URL.build(scheme="http", host=app.settings.agent_host, port=sidecar.agent_port,
                       path=request.rel_url.raw_path, query_string=request.rel_url.raw_query_string, encoded=True)
    result = ProxyResult()
    outcome: Result = "failure"
    detail: dict[str, object] = {}
    app.metrics.executions_active.inc()
    try:
        response = await forward(
            request, session=app.agent_session, target=target, headers=headers,
            max_body_bytes=sidecar.max_body_bytes, timeout_seconds=sidecar.upstream_timeout_seconds,
            extra_response_headers=[(EXECUTION_ID, execution.id), (REQUEST_ID, info.request_id)], result=result,
        )
        if result.aborted:
            detail["error"] = result.aborted
        elif result.status is not None and result.status < 500:
            outcome = "success"
        return response
    except SidecarError as e:
        detail["error"] = e.code
        if not isinstance(e, BodyTooLarge):
            app.metrics.agent_errors.labels(code=e.code).inc()
        raise
    except asyncio.CancelledError:  # the server cancels the handler when the caller goes away
        detail["error"] = "the caller disconnected"
        raise
    except Exception:
        detail["error"] = "internal_error"
        raise
    finally:
        app.metrics.executions_active.dec()
        app.executions.finish(execution.id, result.status)
        app.audit.emit(info.event("agent_execution", outcome, user=identity.user, execution_id=execution.id, metadata={
            "status": result.status, "duration_ms": round((time.monotonic() - info.started) * 1000, 1),
            "bytes_in": result.bytes_in, "bytes_out": result.bytes_out, **detail,
        }))


async def mint_token_handler(request: web.Request) -> web.Response:
    """``POST /agentgov/v1/tokens``: an admin mints a narrower token for automation."""
    app = state(request)
    info = request_info(request, app)
    snapshot = app.policy.require()
    identity = await authenticate(request, app, snapshot, info)
    authorize(app, snapshot, identity, AdminRoute("tokens:create"), info)
    signing = snapshot.signing_key
    if signing is None:
        raise MintingNotConfigured()
    checked = check_mint_request(await _json_body(request), identity, snapshot.bundle.roles,
                                 app.settings.token_max_ttl_seconds)
    if isinstance(checked, SidecarError):
        app.audit.emit(info.event("token_issued", "denied", user=identity.user, action="mint",
                                  metadata={"code": checked.code, "rule": checked.message}))
        raise checked
    return await _issue(app, snapshot, identity, checked, signing, info)


async def _issue(app: AppState, snapshot: PolicySnapshot, caller: Identity, wanted: MintRequest,
                 signing: SigningKey, info: RequestInfo) -> web.Response:
    now = time.time()
    token_id = "tok_" + secrets.token_urlsafe(16)
    auth = snapshot.bundle.auth
    token = mint(user=wanted.user, role=wanted.role, scopes=wanted.scopes, ttl_seconds=wanted.ttl_seconds,
                 key=signing, issuer=auth.issuer, audience=auth.audiences[0], now=now, token_id=token_id,
                 team=wanted.team, actor=caller.user)
    # Durable before the token leaves: no audit record, no token.
    await app.audit.emit_durable(info.event("token_issued", "success", user=caller.user, action="mint", metadata={
        "minted_user": wanted.user, "minted_role": wanted.role, "minted_scopes": list(wanted.scopes),
        "ttl_seconds": wanted.ttl_seconds, "jti": token_id,
    }), timeout=app.settings.audit_durable_timeout_seconds)
    app.metrics.tokens_minted.inc()
    expires = int(now) + wanted.ttl_seconds
    return web.json_response(
        {"token": token, "tokenType": "Bearer", "tokenId": token_id, "user": wanted.user, "role": wanted.role,
         "scopes": list(wanted.scopes), "expiresAt": expires, "expiresIn": wanted.ttl_seconds},
        status=201, headers={"Cache-Control": "no-store"},
    )


async def _json_body(request: web.Request) -> object:
    if request.content_length is not None and request.content_length > MAX_ADMIN_BODY_BYTES:
        raise BodyTooLarge(f"admin requests are limited to {MAX_ADMIN_BODY_BYTES} bytes")
    data = await request.content.read(MAX_ADMIN_BODY_BYTES + 1)
    if len(data) > MAX_ADMIN_BODY_BYTES:
        raise BodyTooLarge(f"admin requests are limited to {MAX_ADMIN_BODY_BYTES} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not JSON") from None


async def health_handler(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Nothing else is checked (a restart would not help)."""
    return web.json_response({"status": "ok"})


def upstreams_report(app: AppState, snapshot: PolicySnapshot) -> list[dict[str, object]]:
    """Each model route: its endpoint, whether its credential is mounted (``none`` when it needs
    none), its breaker state. Never the credential."""
    out: list[dict[str, object]] = []
    for route in snapshot.bundle.models:
        file = route.credentials_file
        credentials = "none" if file is None else ("mounted" if snapshot.secret(file) else "missing")
        breaker = app.breakers.find("model", route.name)
        out.append({"route": route.name, "endpoint": snapshot.redactor.text(route.endpoint),
                    "credentials": credentials, "breaker": breaker.state if breaker else "closed"})
    return out


async def ready_handler(request: web.Request) -> web.Response:
    """Readiness: a valid bundle is in force, the audit log is writable and every model route
    has its credential mounted. Breakers, Redis and the budget store are reported, not
    required (they degrade: fallbacks, cache misses, failure policies)."""
    app = state(request)
    snapshot = app.policy.current
    error = app.policy.error
    redact = snapshot.redactor if snapshot else None
    bundle: dict[str, object] = {
        "state": "missing" if snapshot is None else ("stale" if error else "current"),
        "hash": snapshot.hash if snapshot else None,
        "agent": snapshot.agent if snapshot else None,
        "error": redact.text(error) if (error and redact) else error,
    }
    if snapshot is not None:
        missing = [f"{r.purpose}: {r.file.secret}/{r.file.key}" for r in snapshot.missing_secrets]
        if missing:
            bundle["missingSecrets"] = missing
    audit: dict[str, object] = {"healthy": app.audit.healthy, "error": app.audit.last_error,
                                "queueDepth": app.audit.queue_depth, "path": str(app.audit.path)}
    shipping = request.app.get(AUDIT_SHIPPING)
    if shipping is not None:
        # Reported, never required: a sink that is down falls behind and catches up.
        audit["sinks"] = shipping.status()
    jwks = [{"url": c.url, "keys": len(c.cached) if c.cached is not None else None, "error": c.last_error}
            for c in app.jwks.all()]
    upstreams = upstreams_report(app, snapshot) if snapshot is not None else []
    configured = all(u["credentials"] != "missing" for u in upstreams)
    ready = snapshot is not None and app.audit.healthy and configured
    return web.json_response({
        "ready": ready, "bundle": bundle, "audit": audit, "jwks": jwks, "upstreams": upstreams,
        "upstreamsConfigured": configured, "breakers": app.breakers.snapshot(), "redis": app.redis.report(),
        "budgets": app.budgets.health(),
    }, status=200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    app = state(request)
    app.metrics.audit_queue_depth.set(app.audit.queue_depth)
    app.metrics.executions_tracked.set(len(app.executions))
    response = web.Response(body=app.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response

