"""Optional OpenTelemetry traces of the sidecar, exported over OTLP/HTTP when an endpoint is set.

On when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
(``/v1/traces`` appended) is set, ``OTEL_SDK_DISABLED`` is not ``true``, ``OTEL_TRACES_EXPORTER``
is not ``none`` and the ``otel`` extra is installed (``pip install 'agentgov[otel]'``; without
it: one warning, and the sidecar runs untraced). The other standard variables apply as the SDK
reads them: ``OTEL_SERVICE_NAME`` (default ``agentgov-sidecar``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``/``_TIMEOUT``/``_COMPRESSION``/``_CERTIFICATE``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``.

What it records: one SERVER span per inbound agent request (``agentgov.agent_request``), per
model call (``agentgov.model_call``) and per tool call (``agentgov.tool_call``), each with the
request and execution ids, the HTTP status, the error code and, for model calls, the route,
region, cache, tokens and cost (OpenTelemetry GenAI names where they exist:
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``...). A 5xx,
or a stream the upstream broke, is status ERROR.

How traces join: the inbound span continues the caller's W3C ``traceparent``; the agent, each
model upstream and each tool get the ``traceparent`` of the sidecar span they were called
under (injected by an ``aiohttp.TraceConfig`` on the client sessions; replacing any the agent
sent). An egress span's parent is the agent's own ``traceparent`` when it is in the trace of
the execution it names, else the inbound span of that execution (remembered per execution id,
bounded like the execution store), with the agent's context as a link when it names another
trace.

What it never does: import OpenTelemetry while tracing is off (the hot path then checks one
app key per request), touch the global tracer provider or propagator (each app owns its
provider, shut down and flushed with the app, so several apps in one process never share
spans), put message contents, prompts, tokens, keys or a raw user id on a span (the user is
the metrics' sha256 hash; a model name the agent sent only when it is fit to repeat, the
audit log's rule), propagate baggage (only W3C trace context crosses the sidecar), or fail a
request (a collector that is down loses spans, never calls).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.web_response import StreamResponse
from multidict import CIMultiDict
from yarl import URL

from agentgov.sidecar.context import EXECUTIONS, POLICY, SETTINGS, main_app
from agentgov.sidecar.errors import SidecarError
from agentgov.sidecar.headers import EXECUTION_ID
from agentgov.sidecar.logs import context as log_context
from agentgov.sidecar.metrics import user_hash

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanContext

log = logging.getLogger(__name__)

SpanName = Literal["agentgov.agent_request", "agentgov.model_call", "agentgov.tool_call"]
AGENT_REQUEST: Final[SpanName] = "agentgov.agent_request"
MODEL_CALL: Final[SpanName] = "agentgov.model_call"
TOOL_CALL: Final[SpanName] = "agentgov.tool_call"

SERVICE_NAME: Final = "agentgov-sidecar"
INSTALL_HINT: Final = "pip install 'agentgov[otel]'"
TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH: Final = "/v1/traces"
# W3C trace context only: these two headers are replaced on every outbound call while tracing.
TRACE_HEADERS: Final = ("traceparent", "tracestate")
# A name the agent sent is put on a span only when it matches this (the audit log's rule).
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")

Attribute = str | bool | int | float
Attributes = dict[str, Attribute]


# --- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TracingConfig:
    """Tracing is on: where spans go (the OTLP/HTTP traces URL), and a protocol other than
    ``http/protobuf`` that was asked for (only HTTP is spoken; warned about)."""

    endpoint: str
    unsupported_protocol: str | None = None


def _flag(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip().lower()


def tracing_config(environ: Mapping[str, str]) -> TracingConfig | None:
    """Whether these variables turn tracing on, and where to; None: off. The endpoint follows
    the OTLP exporter specification: the traces endpoint as is, the general one plus
    ``/v1/traces``."""
    if _flag(environ, "OTEL_SDK_DISABLED") == "true" or _flag(environ, "OTEL_TRACES_EXPORTER") == "none":
        return None
    endpoint = environ.get(TRACES_ENDPOINT, "").strip()
    if not endpoint:
        base = environ.get(ENDPOINT, "").strip()
        if not base:
            return None
        endpoint = base.rstrip("/") + TRACES_PATH
    protocol = _flag(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _flag(environ, "OTEL_EXPORTER_OTLP_PROTOCOL")
    return TracingConfig(endpoint, protocol if protocol and protocol != "http/protobuf" else None)


def shown_endpoint(endpoint: str) -> str:
    """The endpoint fit for a log line: no user, password, query or fragment."""
    try:
        url = URL(endpoint)
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "an unparsable URL"


def resource_attributes(environ: Mapping[str, str], agent: str | None) -> dict[str, str]:
    """What the sidecar adds to the SDK's resource (which reads ``OTEL_RESOURCE_ATTRIBUTES``
    and ``OTEL_SERVICE_NAME`` itself): the default service name unless one is given, and the
    agent (``namespace/name``) the bundle names."""
    out: dict[str, str] = {}
    given = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    named = any(part.split("=", 1)[0].strip() == "service.name" for part in given.split(","))
    if not environ.get("OTEL_SERVICE_NAME", "").strip() and not named:
        out["service.name"] = SERVICE_NAME
    if agent:
        out["agentgov.agent"] = agent
    return out


class ModelOutcome(Protocol):
    """What ``egress.Outcome`` says about a model call (the fields a span carries)."""

    status: int
    code: str | None
    route: str | None
    upstream_model: str | None
    region: str | None
    cache: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float
    cost_estimated: bool
    attempts: int
    fallback: str | None
    aborted: str | None


def _present(attributes: Mapping[str, Attribute | None]) -> Attributes:
    return {k: v for k, v in attributes.items() if v is not None}


def model_call_attributes(kind: str, requested_model: str | None, outcome: ModelOutcome) -> Attributes:
    """A model call's span attributes: GenAI names for the model and tokens, ``agentgov.*``
    for the rest. Never the messages, the answer or the route's key."""
    requested = requested_model if requested_model and _SAFE_NAME.fullmatch(requested_model) else None
    return _present({
        "gen_ai.operation.name": kind,
        "gen_ai.request.model": requested,
        "gen_ai.response.model": outcome.upstream_model,
        "gen_ai.usage.input_tokens": outcome.input_tokens,
        "gen_ai.usage.output_tokens": outcome.output_tokens,
        "agentgov.route": outcome.route,
        "agentgov.region": outcome.region,
        "agentgov.cache": outcome.cache,
        "agentgov.cost_usd": round(outcome.cost_usd, 6),
        "agentgov.cost_estimated": outcome.cost_estimated or None,
        "agentgov.attempts": outcome.attempts or None,
        "agentgov.fallback": outcome.fallback,
        "agentgov.error_code": outcome.code,
    })


def upstream_broke(outcome: ModelOutcome) -> bool:
    """A call cut short by the upstream (its status was already sent, so only this says so)."""
    return outcome.aborted is not None and outcome.code not in (None, "client_disconnected")


def tool_call_attributes(tool: str, *, called: str | None, fallback: str | None, breaker: str | None,
                         error: str | None) -> Attributes:
    """A tool call's span attributes: the tool asked for (a bundle name), the one that answered,
    the fallback used, the breaker's state."""
    return _present({"agentgov.tool": tool, "agentgov.tool.called": called, "agentgov.fallback": fallback,
                     "agentgov.breaker": breaker, "agentgov.error_code": error})


def request_attributes(method: str, status: int | None, code: str | None, *, execution_id: str | None,
                       request_id: str | None, user: str | None) -> Attributes:
    """What every span carries: method, status, error code, the ids the audit log and the log
    lines carry, and the user as the metrics' hash (never the id itself)."""
    return _present({
        "http.request.method": method,
        "http.response.status_code": status,
        "agentgov.error_code": code,
        "agentgov.execution_id": execution_id,
        "agentgov.request_id": request_id,
        "agentgov.user_hash": user_hash(user) if user is not None else None,
    })


def is_error(status: int | None, upstream_failed: bool) -> bool:
    """Span status ERROR: a 5xx answer (or none: the handler failed), or an answer the upstream
    broke off. A 4xx is the caller's error, not the server's (OpenTelemetry HTTP conventions)."""
    return upstream_failed or (status is not None and status >= 500)


def egress_parent(agent: SpanContext | None,
                  execution: SpanContext | None) -> tuple[SpanContext | None, SpanContext | None]:
    """(parent, link) of an egress span: the agent's own context when it continues the trace of
    the execution it names (or no execution span is known); else the execution's inbound span,
    linked to the agent's context when the agent sent one from another trace."""
    if agent is not None:
        if execution is None or execution.trace_id == agent.trace_id:
            return agent, None
        return execution, agent
    return execution, None


# --- one app's tracer ---------------------------------------------------------------------


class Tracing:
    """One app's tracer provider (batching, OTLP/HTTP), its W3C propagator, and the inbound
    span of each recent execution (oldest forgotten first, beyond ``max_executions``)."""

    def __init__(self, provider: TracerProvider, *, max_executions: int) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("agentgov.sidecar")
        self.propagator = TraceContextTextMapPropagator()
        self._executions: OrderedDict[str, SpanContext] = OrderedDict()
        self._max_executions = max(1, max_executions)

    def remember(self, execution_id: str, span: SpanContext) -> None:
        self._executions[execution_id] = span
        self._executions.move_to_end(execution_id)
        while len(self._executions) > self._max_executions:
            self._executions.popitem(last=False)

    def execution_span(self, execution_id: str) -> SpanContext | None:
        return self._executions.get(execution_id)

    def __len__(self) -> int:
        return len(self._executions)

    def inject(self, headers: CIMultiDict[str]) -> None:
        """The current span's ``traceparent`` (and ``tracestate``) in place of any in ``headers``."""
        for name in TRACE_HEADERS:
            headers.popall(name, None)
        self.propagator.inject(headers)

    def trace_config(self) -> aiohttp.TraceConfig:
        """For client sessions: every request they send carries the current span's context."""
        config = aiohttp.TraceConfig()

        async def on_request_start(session: aiohttp.ClientSession, context: object,
                                   params: aiohttp.TraceRequestStartParams) -> None:
            self.inject(params.headers)

        config.on_request_start.append(on_request_start)
        return config

    def parent(self, name: SpanName, request: web.Request) -> tuple[Context, list[Link] | None]:
        """Where a span of ``request`` hangs (see the module docstring)."""
        from opentelemetry import trace
        from opentelemetry.context import Context

        extracted = self.propagator.extract(request.headers)
        if name == AGENT_REQUEST:
            return extracted, None
        sent = trace.get_current_span(extracted).get_span_context()
        named = request.headers.getall(EXECUTION_ID, [])
        execution = self.execution_span(named[0].strip()) if len(named) == 1 else None
        parent, link = egress_parent(sent if sent.is_valid else None, execution)
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent), Context()) if parent else Context()
        return context, [trace.Link(link)] if link is not None else None

    async def shutdown(self) -> None:
        """Flush the spans still queued and stop the export thread (bounded by the exporter's
        timeout; off the event loop)."""
        await asyncio.to_thread(self.provider.shutdown)


def start_tracing(environ: Mapping[str, str], *, agent: str | None, max_executions: int) -> Tracing | None:
    """A Tracing when ``environ`` configures an endpoint and OpenTelemetry is installed; else
    None (with one warning when it is configured but cannot be used)."""
    config = tracing_config(environ)
    if config is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("%s is set but OpenTelemetry is not installed: no traces are exported (install it with %s)",
                    TRACES_ENDPOINT if environ.get(TRACES_ENDPOINT, "").strip() else ENDPOINT, INSTALL_HINT)
        return None
    if config.unsupported_protocol is not None:
        log.warning("OTLP protocol %r is not supported: traces are sent as http/protobuf to %s",
                    config.unsupported_protocol[:32], shown_endpoint(config.endpoint))
    try:
        provider = TracerProvider(resource=Resource.create(resource_attributes(environ, agent)),
                                  shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    except Exception as e:  # a setting the SDK refuses: untraced, never down
        log.warning("OpenTelemetry tracing could not start (%s): no traces are exported", type(e).__name__)
        return None
    log.info("OpenTelemetry traces are exported to %s", shown_endpoint(config.endpoint))
    return Tracing(provider, max_executions=max_executions)


# On the main app, only while tracing is on.
TRACING = web.AppKey("agentgov_tracing", Tracing)


async def tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's Tracing (when configured), shut down and flushed when the app stops. Runs after
    the policy store (the agent's name) and before the client sessions (their trace configs)."""
    snapshot = app[POLICY].current
    tracing = start_tracing(os.environ, agent=snapshot.agent if snapshot else None,
                            max_executions=app[SETTINGS].execution_max_entries)
    if tracing is None:
        yield
        return
    app[TRACING] = tracing
    try:
        yield
    finally:
        await tracing.shutdown()


def trace_configs(app: web.Application) -> list[aiohttp.TraceConfig]:
    """For the app's client sessions: inject the current span's context while tracing, else none."""
    tracing = app.get(TRACING)
    return [tracing.trace_config()] if tracing is not None else []


# --- the request path ---------------------------------------------------------------------


@dataclass
class _Record:
    """The span of one request and what its handler adds before it ends."""

    tracing: Tracing
    span: Span
    attributes: Attributes = field(default_factory=dict)
    upstream_failed: bool = False


RECORD = web.RequestKey("agentgov_trace", _Record)

R = TypeVar("R", bound=StreamResponse)
Handler = Callable[[web.Request], Awaitable[R]]


def traced(name: SpanName) -> Callable[[Handler[R]], Handler[R]]:
    """A handler in a span named ``name`` while tracing is on (unchanged otherwise)."""

    def decorate(handler: Handler[R]) -> Handler[R]:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> R:
            tracing = main_app(request.app).get(TRACING)
            if tracing is None:
                return await handler(request)
            return await _in_span(tracing, name, handler, request)

        return wrapper

    return decorate


async def _in_span(tracing: Tracing, name: SpanName, handler: Handler[R], request: web.Request) -> R:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    parent, links = tracing.parent(name, request)
    span = tracing.tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, links=links)
    record = request[RECORD] = _Record(tracing, span)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    status: int | None = None
    code: str | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except SidecarError as e:
        status, code = e.status, e.code
        raise
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        code = "client_disconnected"
        raise
    except Exception:
        status, code = 500, "internal_error"
        raise
    finally:
        try:
            _finish(record, request, status, code)
        except Exception as e:  # a span that cannot be annotated must not fail the request
            log.warning("span %s not annotated (%s)", name, type(e).__name__)
        finally:
            otel_context.detach(token)
            span.end()


def _finish(record: _Record, request: web.Request, status: int | None, code: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    ids = log_context()
    execution_id = ids.get("execution_id")
    execution = main_app(request.app)[EXECUTIONS].get(execution_id) if execution_id else None
    attributes = request_attributes(request.method, status, code, execution_id=execution_id,
                                    request_id=ids.get("request_id"),
                                    user=execution.identity.user if execution else None)
    attributes.update(record.attributes)
    record.span.set_attributes(attributes)
    if is_error(status, record.upstream_failed):
        error = attributes.get("agentgov.error_code")
        record.span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else None))


def bind_execution(request: web.Request, execution_id: str) -> None:
    """The inbound request's span becomes the parent of the execution's model and tool calls."""
    record = request.get(RECORD)
    if record is not None:
        record.tracing.remember(execution_id, record.span.get_span_context())


def record_model_call(request: web.Request, kind: str, requested_model: str | None, outcome: ModelOutcome) -> None:
    """Put a model call's outcome on its span (nothing while tracing is off)."""
    record = request.get(RECORD)
    if record is not None:
        record.attributes.update(model_call_attributes(kind, requested_model, outcome))
        record.upstream_failed = upstream_broke(outcome)


def record_tool_call(request: web.Request, tool: str, *, called: str | None, fallback: str | None,
                     breaker: str | None, error: str | None) -> None:
    """Put a tool call's outcome on its span (nothing while tracing is off)."""
    record = request.get(RECORD)
    if record is not None:
        record.attributes.update(tool_call_attributes(tool, called=called, fallback=fallback, breaker=breaker,
                                                      error=error))
