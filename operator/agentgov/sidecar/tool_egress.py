"""Tool egress: ``/tools/{name}/{path}`` on the egress port, forwarded to the tool's upstream.

The agent calls its tools through the sidecar, passing back the execution id it was given
(``X-Agentgov-Execution-Id``); the sidecar charges the call to that execution's caller:

1. **Who.** No execution id: ``400 execution_id_required``; an id this sidecar did not issue
   or that expired: ``403 unknown_execution``.
2. **May they** (:func:`plan_tool_call`, pure): a tool the bundle does not list has no upstream,
   so it is ``404 tool_not_found`` whatever ``defaultToolAction`` says; a listed tool needs
   its method, permission and scopes (``authz.decide``: ``403 tool_method_not_allowed``,
   ``permission_denied``, ``scope_required``, ...); a path that could leave the tool's base
   path (``.``/``..`` segments, also percent-encoded or with a ``;`` parameter, encoded
   slashes, backslashes, control characters, malformed percent-encoding) is
   ``400 bad_request``. One ``tool_access`` audit record says allowed or denied and why. A
   ``tool:write`` call is privileged: refused with ``503 audit_unavailable`` while the audit
   log cannot be written.
3. **How often.** The tool's ``rateLimit`` per caller (``ratelimit.RateLimiter``, per sidecar
   replica): ``429 rate_limited`` with ``Retry-After`` (audited as denied).
4. **Is the tool up.** The tool's breaker (``("tool", name)`` in the app's ``Breakers``). Open:
   the fallback. The call: streamed by ``proxy.forward`` to ``<upstream base>/<path>?<query>``
   with the tool's timeout; headers are the agent's minus hop-by-hop, ``Authorization``,
   ``Host``, forwarding and any ``X-Agentgov-*``, plus the caller's identity headers and the
   tool's own credential (``Authorization: Bearer <credentialsFile>``). Connection errors,
   timeouts, bad answers, 5xx and calls slower than the breaker's ``callTimeoutSeconds`` are
   failures; any other answer (a 4xx included) is a success.
5. **Fallback** (breaker open, or the call failed before anything was sent back):
   ``StaticResponse`` answers ``200`` with the configured JSON and ``X-Agentgov-Fallback:
   static``; ``Tool`` calls the named tool once instead (its own permission, scopes, method,
   rate limit and breaker apply; its fallback is never followed), marked ``X-Agentgov-Fallback:
   tool`` and ``X-Agentgov-Fallback-Tool``; ``Error`` (or no fallback) gives the error itself
   (``503 circuit_open`` with ``Retry-After`` while open, ``502``/``504`` for a failed call).
   A ``Tool`` fallback is only possible while the request body has not been sent (the body is
   streamed, not kept), so a failed call with a body falls back only to a static answer.
   With a ``StaticResponse`` or usable ``Tool`` fallback an upstream 5xx is replaced by the
   fallback; without one it is passed through unchanged.
6. A second ``tool_access`` record says how it ended: status, duration, bytes, which tool
   answered, the fallback used, the breaker's state.

Calls are not retried: the body is streamed to the tool as the agent sends it and not kept.
What this module must never do: pass the agent's own ``Authorization`` (or any header naming
an identity) to a tool, follow a chain of fallbacks, or send a request outside the tool's base
path. The pure parts (``plan_tool_call``, ``tool_target``, ``request_headers_for_tool``) are
table-tested; the handler is the I/O around them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from yarl import URL

from agentgov.api.bundle import BundleTool, PolicyBundle
from agentgov.audit.record import Result
from agentgov.sidecar.auth import Identity
from agentgov.sidecar.authz import TOOLS_PREFIX, Decision, ToolRoute, decide
from agentgov.sidecar.bundle_loader import PolicySnapshot
from agentgov.sidecar.breaker import Breakers
from agentgov.sidecar.context import AppState
from agentgov.sidecar.errors import (
    AuditUnavailable, BadRequest, BodyTooLarge, CircuitOpen, Forbidden, RateLimited,
    SidecarError, ToolNotFound, UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable,
)
from agentgov.sidecar.executions import Execution, execution_for
from agentgov.sidecar.handlers import RequestInfo, request_info
from agentgov.sidecar.headers import (
    ALWAYS_DROPPED, EXECUTION_ID, FORWARDING, HOP_BY_HOP, IDENTITY_PREFIX, REQUEST_ID, Headers,
    connection_tokens, identity_headers,
)
from agentgov.sidecar.keys import hmac_secret
from agentgov.sidecar.logs import annotate
from agentgov.sidecar.proxy import TOOL_ERRORS, ProxyResult, forward
from agentgov.sidecar.ratelimit import WINDOW_SECONDS, Limited, RateLimiter
from agentgov.sidecar.tracing import TOOL_CALL, record_tool_call, traced

FALLBACK: Final = "X-Agentgov-Fallback"
FALLBACK_TOOL: Final = "X-Agentgov-Fallback-Tool"
BREAKER_KIND: Final = "tool"
MAX_AUDITED_PATH: Final = 2048
MAX_AUDITED_NAME: Final = 128

# Characters a path segment may carry raw (RFC 3986 pchar, plus "%" for escapes already
# checked to be well-formed); anything else is percent-encoded on the way out.
_PCHAR_SAFE: Final = "-._~!$&'()*+,;=:@%"
_BAD_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# A credential must fit one header line: visible ASCII and spaces only.
_HEADER_SAFE: Final = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
# Failures of the upstream itself (as opposed to the caller's request or the sidecar's policy).
UPSTREAM_FAILURES: Final = (UpstreamUnavailable, UpstreamBadResponse, UpstreamTimeout)


# --- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A call the policy allows: which tool, where it goes, and the rule that allowed it."""

    tool: BundleTool
    target: URL
    decision: Decision


@dataclass(frozen=True)
class Refusal:
    """A call the policy refuses: the error to answer and the code for the audit record."""

    error: SidecarError
    tool: BundleTool | None = None
    decision: Decision | None = None


def find_tool(bundle: PolicyBundle, name: str) -> BundleTool | None:
    return next((t for t in bundle.tools if t.name == name), None)


def split_tool_path(raw_path: str) -> tuple[str, str | None]:
    """``/tools/<name>/<rest>`` as sent (percent-encoded) -> (decoded name, rest as sent); the
    rest is None for ``/tools/<name>`` (the tool's base URL itself).

    The name comes from the raw path, not from the router's decoded match: ``a%2Fb`` is one
    (unknown) tool name, never the tool ``a``.
    """
    rest = raw_path[len(TOOLS_PREFIX):] if raw_path.startswith(TOOLS_PREFIX) else ""
    raw_name, slash, tail = rest.partition("/")
    return unquote(raw_name, errors="replace"), tail if slash else None


def _bad_segment(segment: str) -> str | None:
    """Why a raw path segment may not be forwarded, or None when it may."""
    if _BAD_PERCENT.search(segment):
        return "malformed percent-encoding"
    decoded = unquote(segment, errors="strict") if segment.isascii() else segment
    if "/" in decoded or "\\" in decoded:
        return "an encoded slash or a backslash"
    if _CONTROL.search(decoded):
        return "a control character"
    # `..;x` is `..` to servers that strip path parameters (Tomcat, Spring).
    if decoded.split(";", 1)[0] in (".", ".."):
        return "a dot segment"
    return None


def tool_target(upstream: str, raw_tail: str | None, raw_query: str) -> URL | str:
    """The URL a call goes to: the tool's base path, then the caller's segments, then the query.

    Returns a message instead when a segment could climb out of the base path or is malformed.
    Segments are forwarded as the caller encoded them (``%3B`` and ``;`` mean different things
    to a server), with anything a URL cannot carry raw percent-encoded.
    """
    base = URL(upstream)
    if raw_tail is None:
        return URL.build(scheme=base.scheme, authority=base.raw_authority, path=base.raw_path or "/",
                         query_string=raw_query, encoded=True)
    segments = raw_tail.split("/")
    for segment in segments:
        try:
            problem = _bad_segment(segment)
        except UnicodeDecodeError:
            problem = "percent-encoding that is not UTF-8"
        if problem is not None:
            return f"the tool path has {problem}; it must stay under the tool's base path"
    path = base.raw_path.rstrip("/") + "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in segments)
    return URL.build(scheme=base.scheme, authority=base.raw_authority, path=path, query_string=raw_query,
                     encoded=True)


def usable_upstream(upstream: str) -> bool:
    """An absolute http(s) URL with a host (the bundle carries it as a plain string)."""
    try:
        base = URL(upstream)
    except ValueError:
        return False
    return base.scheme in ("http", "https") and bool(base.raw_host)


def plan_tool_call(identity: Identity, method: str, raw_path: str, raw_query: str,
                   bundle: PolicyBundle) -> ToolCall | Refusal:
    """Whether ``identity`` may make this call under ``bundle``, and where it would go. Pure."""
    name, raw_tail = split_tool_path(raw_path)
    tool = find_tool(bundle, name)
    if tool is None:
        # Unlisted tools have no upstream: nothing to forward to, whatever defaultToolAction says.
        return Refusal(ToolNotFound("no tool of that name in this agent's policy"))
    decision = decide(identity, ToolRoute(tool=tool.name, method=method), bundle)
    if not decision.allowed:
        return Refusal(Forbidden(decision.code, decision.message), tool, decision)
    if not usable_upstream(tool.upstream):
        return Refusal(UpstreamUnavailable(f"tool {tool.name!r} has no usable upstream URL in the policy"),
                       tool, decision)
    target = tool_target(tool.upstream, raw_tail, raw_query)
    if isinstance(target, str):
        return Refusal(BadRequest(target), tool, decision)
    return ToolCall(tool, target, decision)


def credential_header(value: bytes | None) -> str | None:
    """``Bearer <secret>`` from a mounted secret file (one trailing newline dropped); None when
    the secret is missing or cannot be carried in a header line."""
    if value is None:
        return None
    secret = hmac_secret(value)
    try:
        text = secret.decode("ascii")
    except UnicodeDecodeError:
        return None
    return f"Bearer {text}" if _HEADER_SAFE.fullmatch(text) else None


def request_headers_for_tool(incoming: Iterable[tuple[str, str]], *, identity: Identity, execution_id: str,
                             request_id: str, credential: str | None) -> Headers:
    """The agent's headers minus hop-by-hop, credentials, forwarding and identity headers; then
    the caller's identity and the tool's own credential. The agent's Authorization never passes."""
    headers = list(incoming)
    listed = connection_tokens(headers)
    kept: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if (lowered in HOP_BY_HOP or lowered in listed or lowered in ALWAYS_DROPPED or lowered in FORWARDING
                or lowered.startswith(IDENTITY_PREFIX)):
            continue
        kept.append((name, value))
    kept.extend(identity_headers(identity, execution_id=execution_id, request_id=request_id, client_ip=None))
    if credential is not None:
        kept.append(("Authorization", credential))
    return kept


# --- the handler --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResources:
    """What the tool handler uses: the main app's state, breakers and agent session (no
    decompression, no cookies: bodies pass byte for byte), and the egress app's rate limiter."""

    app: AppState
    breakers: Breakers
    limiter: RateLimiter
    session: aiohttp.ClientSession
    clock: Callable[[], float] = time.monotonic


# On the egress app (``egress.create_egress_app`` sets it).
TOOL_RESOURCES = web.AppKey("agentgov_tool_resources", ToolResources)


@dataclass
class _Outcome:
    """What the outcome record says."""

    called: str | None = None
    fallback: str | None = None
    breaker: str | None = None
    error: str | None = None
    slow: bool = False


class _Call:
    """One tool request after it was allowed: the call, the fallback, the audit of the outcome."""

    def __init__(self, request: web.Request, res: ToolResources, snapshot: PolicySnapshot, identity: Identity,
                 execution: Execution, info: RequestInfo) -> None:
        self.request = request
        self.res = res
        self.app = res.app
        self.snapshot = snapshot
        self.identity = identity
        self.execution = execution
        self.info = info
        self.result = ProxyResult()
        self.outcome = _Outcome()

    def audit(self, result: Result, tool: str | None, **metadata: object) -> None:
        self.app.audit.emit(self.info.event(
            "tool_access", result, user=self.identity.user, execution_id=self.execution.id,
            metadata={"tool": tool, "role": self.identity.role, **metadata}))

    async def run(self, call: ToolCall) -> web.StreamResponse:
        tool = call.tool
        try:
            return await self._attempt(tool, call.target, fallback_allowed=True)
        finally:
            self._audit_outcome(tool)

    def _audit_outcome(self, tool: BundleTool) -> None:
        result, outcome = self.result, self.outcome
        ok = (result.status is not None and result.status < 500 and result.aborted is None
              and outcome.error is None)
        self.audit("success" if ok else "failure", tool.name, status=result.status,
                   duration_ms=round((time.monotonic() - self.info.started) * 1000, 1),
                   bytes_in=result.bytes_in, bytes_out=result.bytes_out, called=outcome.called,
                   fallback=outcome.fallback, breaker=outcome.breaker, slow=outcome.slow or None,
                   error=outcome.error or result.aborted)
        record_tool_call(self.request, tool.name, called=outcome.called, fallback=outcome.fallback,
                         breaker=outcome.breaker, error=outcome.error)

    async def _attempt(self, tool: BundleTool, target: URL, *, fallback_allowed: bool,
                       marks: Sequence[tuple[str, str]] = ()) -> web.StreamResponse:
        breaker = self.res.breakers.get(BREAKER_KIND, tool.name, tool.circuit_breaker)
        permit = breaker.try_acquire()
        primary = fallback_allowed  # the outcome record reports the breaker of the tool asked for
        if primary:
            self.outcome.breaker = breaker.state
        if permit is None:
            error = CircuitOpen(f"tool {tool.name!r} is failing; calls are paused", retry_after=breaker.retry_after())
            return await self._fall_back(tool, error, fallback_allowed)
        credential = None
        if tool.credentials_file is not None:
            credential = credential_header(self.snapshot.secret(tool.credentials_file))
            if credential is None:
                permit.release()
                self.outcome.error = "tool_credentials_missing"
                raise UpstreamUnavailable(
                    f"tool {tool.name!r}: its credential (secret {tool.credentials_file.secret!r}, key "
                    f"{tool.credentials_file.key!r}) is not mounted or is not a single-line token")
        headers = request_headers_for_tool(
            self.request.headers.items(), identity=self.identity, execution_id=self.execution.id,
            request_id=self.info.request_id, credential=credential)
        replaceable = fallback_allowed and self._replaces_5xx(tool)
        self.outcome.called = tool.name
        started = time.monotonic()
        try:
            response = await forward(
                self.request, session=self.res.session, target=target, headers=headers,
                max_body_bytes=self.snapshot.bundle.sidecar.max_body_bytes, timeout_seconds=tool.timeout_seconds,
                extra_response_headers=[*self._response_headers(), *marks], result=self.result, errors=TOOL_ERRORS,
                passes=(lambda status: status < 500) if replaceable else None,
            )
        except UPSTREAM_FAILURES as e:
            permit.failure()
            if primary:
                self.outcome.breaker = breaker.state
            if fallback_allowed and self._fallback_usable(tool):
                return await self._fall_back(tool, e, fallback_allowed)
            self.outcome.error = e.code
            raise
        except BodyTooLarge as e:
            permit.release()
            self.outcome.error = e.code
            raise
        except BaseException:
            permit.release()  # the caller went away, or a bug: no verdict on the tool
            self.outcome.error = self.outcome.error or "cancelled"
            raise
        failed = (self.result.status is not None and self.result.status >= 500) or self.result.upstream_failed
        self.outcome.slow = time.monotonic() - started > breaker.call_timeout
        if failed or self.outcome.slow:
            permit.failure()
        elif self.result.aborted is None:
            permit.success()
        else:
            permit.release()  # the caller went away mid-answer: says nothing about the tool
        if primary:
            self.outcome.breaker = breaker.state
        return response

    def _fallback_usable(self, tool: BundleTool) -> bool:
        """Whether the tool's fallback can still answer this request."""
        fallback = tool.fallback
        if fallback is None or fallback.type == "Error":
            return False
        if fallback.type == "StaticResponse":
            return fallback.response is not None
        # A Tool fallback resends the request: only while none of the body has been read.
        return not self.request.body_exists or self.result.bytes_in == 0

    def _replaces_5xx(self, tool: BundleTool) -> bool:
        """Whether a 5xx from the tool can still be replaced by its fallback once it arrives
        (by then the body, if any, has been sent: a Tool fallback could not resend it)."""
        fallback = tool.fallback
        if fallback is None:
            return False
        if fallback.type == "StaticResponse":
            return fallback.response is not None
        return fallback.type == "Tool" and not self.request.body_exists

    def _response_headers(self) -> list[tuple[str, str]]:
        return [(EXECUTION_ID, self.execution.id), (REQUEST_ID, self.info.request_id)]

    async def _fall_back(self, tool: BundleTool, error: SidecarError, allowed: bool) -> web.StreamResponse:
        fallback = tool.fallback
        if not allowed or fallback is None or fallback.type == "Error" or not self._fallback_usable(tool):
            self.outcome.error = error.code
            raise error
        if fallback.type == "StaticResponse":
            assert fallback.response is not None
            self.outcome.fallback = "static"
            self.result.status = 200
            body = fallback.response.encode()
            self.result.bytes_out = len(body)
            return web.Response(body=body, status=200, content_type="application/json",
                                headers={FALLBACK: "static", **dict(self._response_headers())})
        other = find_tool(self.snapshot.bundle, fallback.tool or "")
        if other is None or other.name == tool.name:
            self.outcome.error = error.code
            raise error
        self.outcome.fallback = f"tool:{other.name}"
        # The fallback tool's own guards apply, as if the agent had called it.
        _, raw_tail = split_tool_path(self.request.rel_url.raw_path)
        planned = plan_tool_call(self.identity, self.request.method,
                                 TOOLS_PREFIX + other.name + ("" if raw_tail is None else "/" + raw_tail),
                                 self.request.rel_url.raw_query_string, self.snapshot.bundle)
        if isinstance(planned, Refusal):
            self.outcome.error = f"fallback_{planned.error.code}"
            raise error
        limited = _rate_limit(self.res, other, self.identity)
        if limited is not None:
            self.outcome.error = limited.code
            raise limited
        self.result = ProxyResult()
        return await self._attempt(other, planned.target, fallback_allowed=False,
                                   marks=[(FALLBACK, "tool"), (FALLBACK_TOOL, other.name)])


def _rate_limit(res: ToolResources, tool: BundleTool, identity: Identity) -> RateLimited | None:
    if tool.rate_limit is None:
        return None
    limit = tool.rate_limit.requests_per_minute
    answer = res.limiter.check(tool.name, identity.user, limit, res.clock())
    if isinstance(answer, Limited):
        return RateLimited(
            f"tool {tool.name!r} allows {limit} calls per minute per caller", retry_after=answer.retry_after,
            details={"tool": tool.name, "limit": limit, "windowSeconds": int(WINDOW_SECONDS)})
    return None


@traced(TOOL_CALL)
async def tool_handler(request: web.Request) -> web.StreamResponse:
    """``/tools/{tool}/{path}`` (any method) on the egress port: the whole tool path for one
    request (see the module docstring). Resources: the egress app's ``TOOL_RESOURCES``."""
    res = request.app[TOOL_RESOURCES]
    app = res.app
    raw_path = request.rel_url.raw_path
    # The path as sent (encodings visible), cut short: the parser admits very long request lines.
    shown = raw_path if len(raw_path) <= MAX_AUDITED_PATH else raw_path[:MAX_AUDITED_PATH] + "...(truncated)"
    info = replace(request_info(request, app), path=shown)
    snapshot = app.policy.require()
    name, _ = split_tool_path(raw_path)
    name = name[:MAX_AUDITED_NAME]
    execution = execution_for(request.headers.getall(EXECUTION_ID, []), app.executions)
    if isinstance(execution, SidecarError):
        app.audit.emit(info.event("tool_access", "denied", metadata={"tool": name, "code": execution.code}))
        raise execution
    identity = execution.identity
    annotate(execution_id=execution.id, request_id=info.request_id)

    def denied(code: str, tool: str | None, **metadata: object) -> None:
        app.audit.emit(info.event("tool_access", "denied", user=identity.user, execution_id=execution.id,
                                  metadata={"tool": tool, "role": identity.role, "code": code, **metadata}))

    planned = plan_tool_call(identity, request.method, request.rel_url.raw_path, request.rel_url.raw_query_string,
                             snapshot.bundle)
    if isinstance(planned, Refusal):
        decision = planned.decision
        denied(planned.error.code, planned.tool.name if planned.tool else name,
               rule=decision.message if decision else planned.error.message,
               permission=decision.permission if decision else None,
               missing_scopes=list(decision.missing_scopes) if decision else [])
        raise planned.error
    tool, decision = planned.tool, planned.decision
    if decision.privileged and not app.audit.healthy:
        raise AuditUnavailable()
    limited = _rate_limit(res, tool, identity)
    if limited is not None:
        denied(limited.code, tool.name, rule=limited.message)
        raise limited
    app.audit.emit(info.event("tool_access", "allowed", user=identity.user, execution_id=execution.id, metadata={
        "tool": tool.name, "role": identity.role, "code": decision.code, "rule": decision.message,
        "permission": decision.permission}))
    return await _Call(request, res, snapshot, identity, execution, info).run(planned)
