"""The egress port: what the agent calls instead of a model provider and its tools.

A separate aiohttp application (``create_egress_app(main_app)``) on its own port
(``bundle.sidecar.egressPort``, loopback only), sharing the main app's resources through
``context.MAIN_APP``: separate because the inbound app's catch-all route (everything goes to
the agent) would shadow these. Routes: ``POST /v1/chat/completions`` (streamed or not),
``POST /v1/embeddings``, ``GET /v1/models`` (the bundle's routes, in OpenAI's list shape), and
``/tools/{tool}/{path}`` (``tool_egress``). Errors are the main app's JSON errors.

One model call, in order (each step a pure function from another module, or a resource of
the app; this module is the I/O between them):

1. **Who.** ``X-Agentgov-Execution-Id`` names the execution the call belongs to (400
   ``execution_id_required`` without it; 403 ``unknown_execution`` when this sidecar did not
   issue it or it expired); its caller is charged and audited. Nothing else the agent sends
   (an ``Authorization``, ``X-Agentgov-User``...) changes who that is or reaches an upstream.
2. **What.** The body: JSON, within ``bundle.sidecar.maxBodyBytes`` (413), the fields the
   sidecar relies on well-typed (400 naming the field). The model names a route (404
   ``model_not_found`` listing the routes).
3. **Where.** The request's data classes (``X-Agentgov-Data-Class``, else the agent's) and the
   caller's region give the allowed regions in order (``regions.plan_route``; 403
   ``region_not_allowed`` naming the data class).
4. **Cache.** A deterministic request (``cache.cache_plan``) is looked up under the tenant's key;
   a hit answers with no upstream call (a streaming request gets the answer as SSE).
5. **Budget, breaker, upstream.** For the route and then each of its ``fallbacks``, and within
   a route each allowed region in order (skipping regions at capacity or whose breaker is
   open): take the breaker's permit, reserve the worst-case cost (429 ``budget_exceeded`` /
   503 ``budget_store_unavailable``), call (retrying with jittered backoff only where
   ``retry.should_retry`` allows: a POST only when it was never sent), then settle the actual
   cost from ``usage`` (or release the reservation when nothing was charged). A route or
   region is only left for the next one when its breaker refuses or the request never left
   the sidecar; every refusal ends in 503 ``circuit_open`` with Retry-After. An upstream 4xx
   is passed to the agent unchanged (secret values redacted).
6. **Record.** The answer is stored in the cache; one ``model_call`` audit record (user, role,
   execution, model, route, region, data classes, tokens, cost, cache, status, duration;
   bodies only with ``audit.includeBodies``), ``budget_alert`` / ``budget_denial`` records,
   and the playbook's metrics. What other replicas and ``agentgov usage`` read later — the
   answer in L2 and the call's usage record — is queued for background writers rather than
   awaited (the settlement is not: the next call's budget check must see it). When the egress
   app stops, those queues are written within ``BACKGROUND_FLUSH_SECONDS``.

Response headers for the agent: ``X-Agentgov-Cache: hit|miss``, ``X-Agentgov-Route`` (the
route that answered), ``X-Agentgov-Region`` (when a region was chosen),
``X-Agentgov-Cost-Usd`` (settled cost; not on streams, whose cost is known only at the end:
it is in the audit record), ``X-Agentgov-Fallback: route`` when a fallback route answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

from agentgov.api.base import DataClass
from agentgov.api.bundle import BundleModelRoute, PolicyBundle
from agentgov.api.regionpolicy import Region
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.audit.record import AuditEvent, Result
from agentgov.sidecar.breaker import Breaker, BreakerKey, Permit
from agentgov.sidecar.budgets import BudgetAlert, priced_model
from agentgov.sidecar.bundle_loader import PolicySnapshot
from agentgov.sidecar.cache import CachedAnswer, CacheHit, CachePlan, cache_plan
from agentgov.sidecar.context import AGENT_SESSION, BREAKERS, MAIN_APP, AppState, state
from agentgov.sidecar.errors import (
    BadRequest, BodyTooLarge, BudgetExceeded, BudgetStoreUnavailable, CircuitOpen,
    ModelNotFound, SidecarError,
)
from agentgov.sidecar.executions import Execution, execution_for
from agentgov.sidecar.handlers import RequestInfo, request_info
from agentgov.sidecar.headers import EXECUTION_ID
from agentgov.sidecar.logs import annotate
from agentgov.sidecar.metrics import RequestStatus
from agentgov.sidecar.ratelimit import RateLimiter
from agentgov.sidecar.regions import (
    DATA_CLASS_HEADER, REGION_RETRIES, RoutePlan, pick_region, plan_route, region_timeout_seconds,
    request_data_classes,
)
from agentgov.sidecar.retry import backoff_delays, should_retry
from agentgov.sidecar.spend import Hold, Settlement
from agentgov.sidecar.tool_egress import TOOL_RESOURCES, ToolResources, tool_handler
from agentgov.sidecar.tracing import MODEL_CALL, record_model_call, traced
from agentgov.sidecar.upstream import (
    Kind, Reply, StreamAssembler, Target, UpstreamFailure, agent_wants_usage, call, completion_to_sse, open_stream,
)

log = logging.getLogger(__name__)

CACHE_HEADER: Final = "X-Agentgov-Cache"
ROUTE_HEADER: Final = "X-Agentgov-Route"
REGION_HEADER: Final = "X-Agentgov-Region"
COST_HEADER: Final = "X-Agentgov-Cost-Usd"
FALLBACK_HEADER: Final = "X-Agentgov-Fallback"
MAX_MODEL_NAME: Final = 256
# Retries of one route's endpoint (regions get REGION_RETRIES), only where should_retry allows.
ROUTE_RETRIES: Final = 2
RETRY_BASE_SECONDS: Final = 0.05
RETRY_CAP_SECONDS: Final = 1.0
# A region's breaker when the region names none (a region serves every route, so no route's
# settings decide it).
REGION_BREAKER: Final = CircuitBreaker()
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")
# At shutdown, how long the queued L2 writes and usage records may take to reach Redis.
BACKGROUND_FLUSH_SECONDS: Final = 5.0
# Requests that a policy refused (not failures of the sidecar or an upstream).
_DENIED_CODES: Final = frozenset({"budget_exceeded", "budget_store_unavailable", "unknown_execution",
                                  "data_class_not_allowed", "region_not_allowed", "rate_limited"})


# --- pure parts ----------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(data: bytes) -> dict[str, object]:
    """The body as a JSON object; BadRequest saying what is wrong (never echoing it)."""
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_body(kind: Kind, body: Mapping[str, object]) -> None:
    """The fields the sidecar itself relies on, well-typed; BadRequest naming the field. The
    rest is the upstream's to judge (its 4xx reaches the agent unchanged)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model must be a non-empty string")
    if len(model) > MAX_MODEL_NAME:
        raise BadRequest(f"model is longer than {MAX_MODEL_NAME} characters")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty array")
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise BadRequest(f"messages[{index}] must be an object")
            if not isinstance(message.get("role"), str):
                raise BadRequest(f"messages[{index}].role must be a string")
        if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
            raise BadRequest("stream must be a boolean")
        options = body.get("stream_options")
        if options is not None:
            if not isinstance(options, dict):
                raise BadRequest("stream_options must be an object")
            if "include_usage" in options and not isinstance(options["include_usage"], bool):
                raise BadRequest("stream_options.include_usage must be a boolean")
        for name in ("max_tokens", "max_completion_tokens", "n"):
            value = body.get(name)
            if value is not None and (not _is_int(value) or int(value) < 1):  # type: ignore[call-overload]
                raise BadRequest(f"{name} must be a positive integer")
        for name in ("temperature", "top_p"):
            value = body.get(name)
            if value is not None and not _is_number(value):
                raise BadRequest(f"{name} must be a number")
    else:
        given = body.get("input")
        if isinstance(given, str):
            return
        if not isinstance(given, list) or not given:
            raise BadRequest("input must be a string or a non-empty array")
        if body.get("stream") is not None:
            raise BadRequest("stream is not supported for embeddings")


def show_name(name: str) -> str:
    """A name the agent sent, fit to repeat in an error message."""
    return repr(name) if _SAFE_NAME.fullmatch(name) else "the requested model"


def find_route(bundle: PolicyBundle, model: str) -> BundleModelRoute:
    for route in bundle.models:
        if route.name == model:
            return route
    names = ", ".join(route.name for route in bundle.models) or "none"
    raise ModelNotFound(f"no model route for {show_name(model)} (this agent's routes: {names})",
                        details={"routes": [route.name for route in bundle.models]})


def candidate_routes(bundle: PolicyBundle, route: BundleModelRoute) -> list[BundleModelRoute]:
    """The route, then its fallbacks in order (unknown names and repeats skipped)."""
    by_name = {r.name: r for r in bundle.models}
    out = [route]
    for name in route.fallbacks:
        fallback = by_name.get(name)
        if fallback is not None and fallback not in out:
            out.append(fallback)
    return out


def route_timeout_seconds(bundle: PolicyBundle, route: BundleModelRoute) -> float:
    """A route's own endpoint: the breaker's call timeout, within the sidecar's upstream timeout."""
    return float(min(route.circuit_breaker.call_timeout_seconds, bundle.sidecar.upstream_timeout_seconds))


def wanted_breakers(bundle: PolicyBundle) -> dict[BreakerKey, CircuitBreaker]:
    """Every breaker the bundle calls for: models, regions and tools (kept across reloads)."""
    wanted: dict[BreakerKey, CircuitBreaker] = {("model", r.name): r.circuit_breaker for r in bundle.models}
    wanted.update({("region", r.name): region_breaker(r) for r in bundle.regions})
    wanted.update({("tool", t.name): t.circuit_breaker for t in bundle.tools})
    return wanted


def region_breaker(region: Region) -> CircuitBreaker:
    return region.circuit_breaker or REGION_BREAKER


def models_list(bundle: PolicyBundle) -> dict[str, object]:
    """``GET /v1/models``: the routes the agent may ask for, in OpenAI's list shape."""
    return {"object": "list", "data": [
        {"id": route.name, "object": "model", "created": 0, "owned_by": route.provider} for route in bundle.models]}


def request_status(status: int, code: str | None) -> RequestStatus:
    """The playbook's ``status`` label: success, denied (a policy refused) or error."""
    if status < 400:
        return "success"
    if code in _DENIED_CODES:
        return "denied"
    return "error"


def usd(amount: float) -> str:
    return f"{amount:.6f}"


# --- the request path ----------------------------------------------------------------------


def execution_of(request: web.Request, app: AppState) -> Execution:
    found = execution_for(request.headers.getall(EXECUTION_ID, []), app.executions)
    if isinstance(found, SidecarError):
        raise found
    return found


async def read_body(request: web.Request, limit: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"the request body ({declared} bytes) is over the limit of {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise BodyTooLarge(f"the request body is over the limit of {limit} bytes")
    return bytes(data)


@dataclass
class Outcome:
    """What the model_call record and the metrics say about one call."""

    status: int = 500
    code: str | None = None
    route: str | None = None
    upstream_model: str | None = None
    region: str | None = None
    cache: str = "miss"
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    cost_estimated: bool = False
    attempts: int = 0
    fallback: str | None = None
    degraded_budgets: list[str] = field(default_factory=list)
    aborted: str | None = None
    answer: object = None


class ModelCall:
    """One chat completion or embeddings request from the agent (see the module docstring)."""

    def __init__(self, request: web.Request, kind: Kind) -> None:
        self.request = request
        self.kind = kind
        self.app = state(request)
        self.info: RequestInfo = request_info(request, self.app)
        self.outcome = Outcome()
        self.snapshot: PolicySnapshot | None = None
        self.execution: Execution | None = None
        self.body: dict[str, object] = {}
        self.stream = False
        self.data_classes: tuple[DataClass, ...] = ()
        self.requested_model: str | None = None

    @property
    def bundle(self) -> PolicyBundle:
        assert self.snapshot is not None
        return self.snapshot.bundle

    @property
    def agent_id(self) -> str:
        return self.snapshot.agent if self.snapshot else "unknown"

    async def run(self) -> web.StreamResponse:
        app = self.app
        app.metrics.agent_active.inc()
        try:
            response = await self._run()
            self.outcome.status = response.status
            return response
        except SidecarError as e:
            self.outcome.status, self.outcome.code = e.status, e.code
            raise
        except asyncio.CancelledError:
            self.outcome.aborted = "the agent disconnected"
            self.outcome.code = "client_disconnected"
            raise
        except Exception:
            self.outcome.code = "internal_error"
            raise
        finally:
            app.metrics.agent_active.dec()
            self._record()

    async def _run(self) -> web.StreamResponse:
        app = self.app
        self.snapshot = app.policy.require()
        bundle = self.bundle
        self.execution = execution_of(self.request, app)
        annotate(execution_id=self.execution.id, request_id=self.info.request_id)
        identity = self.execution.identity
        self.body = parse_json_object(await read_body(self.request, bundle.sidecar.max_body_bytes))
        check_body(self.kind, self.body)
        self.requested_model = str(self.body["model"])
        self.stream = self.kind == "chat" and self.body.get("stream") is True
        route = find_route(bundle, self.requested_model)
        header = self.request.headers.getall(DATA_CLASS_HEADER, [])
        if len(header) > 1:
            raise BadRequest(f"send one {DATA_CLASS_HEADER} header (comma-separated classes)")
        self.data_classes = request_data_classes(header[0] if header else None, bundle)
        plan = plan_route(bundle, self.data_classes, identity.region)

        planned = cache_plan(self.body, bundle.cache, namespace=bundle.agent.namespace, agent=bundle.agent.name,
                             user=identity.user, partition=(route.upstream_model, *self.data_classes))
        if planned.key is not None:
            hit = await app.cache.get(planned.key)
            self._count_cache(hit)
            if hit is not None:
                return await self._from_cache(hit, route)
        else:
            app.metrics.cache_skipped.labels(reason=planned.reason).inc()
        return await self._from_upstream(route, plan, planned)

    # -- cache ----------------------------------------------------------------------------

    def _count_cache(self, hit: CacheHit | None) -> None:
        metrics = self.app.metrics
        if hit is None:
            metrics.cache_misses.inc()
        else:
            metrics.cache_hits.labels(level=hit.level).inc()
            metrics.cache_saved.inc(hit.answer.cost_usd)
        stats = self.app.cache.stats()
        metrics.agent_cache_hit_rate.set(stats.hit_rate)
        metrics.cache_entries.set(stats.entries)
        metrics.cache_bytes.set(stats.bytes)
        metrics.cache_redis_errors.set(stats.redis_errors)

    async def _from_cache(self, hit: CacheHit, route: BundleModelRoute) -> web.StreamResponse:
        answer = hit.answer
        outcome = self.outcome
        outcome.cache, outcome.route, outcome.upstream_model = "hit", route.name, route.upstream_model
        outcome.input_tokens, outcome.output_tokens = answer.input_tokens, answer.output_tokens
        headers = {CACHE_HEADER: "hit", ROUTE_HEADER: route.name, COST_HEADER: usd(0.0)}
        assert self.execution is not None
        # Queued, not awaited: a hit answers without waiting for Redis.
        self.app.budgets.record_usage(self.bundle, self.execution.identity.user,
                                      priced_model(self.bundle, route.name, route.upstream_model),
                                      answer.input_tokens, answer.output_tokens, cost_usd=0.0, cached=True)
        if self.stream:
            try:
                completion = json.loads(answer.body)
            except ValueError:
                completion = {}
            data = completion_to_sse(completion if isinstance(completion, dict) else {},
                                     include_usage=agent_wants_usage(self.body))
            response = web.Response(body=data, headers={**headers, "Content-Type": "text/event-stream",
                                                        "Cache-Control": "no-cache"})
            return response
        return web.Response(body=answer.body, headers={**headers, "Content-Type": "application/json"})

    async def _store(self, planned: CachePlan, route: BundleModelRoute, body: bytes, settlement: Settlement) -> None:
        if planned.key is None or self.outcome.input_tokens is None:
            return
        try:
            answer = CachedAnswer(body=body, model=route.upstream_model, input_tokens=self.outcome.input_tokens,
                                  output_tokens=self.outcome.output_tokens or 0, cost_usd=settlement.cost_usd,
                                  created_at=time.time())
        except ValueError:
            return
        await self.app.cache.put(planned.key, answer)

    # -- upstream ---------------------------------------------------------------------------

    def _targets(self, route: BundleModelRoute, plan: RoutePlan,
                 tried: set[str]) -> tuple[Target, Breaker, Region | None] | None:
        """The next place to try for ``route``: its own endpoint (no regions), or the first
        allowed region not yet tried, below capacity and not refused by its breaker."""
        app = self.app
        assert self.snapshot is not None
        secret = self.snapshot.secret(route.credentials_file) if route.credentials_file else None
        key = secret.decode("utf-8", "replace").strip() if secret is not None else None
        if not plan.regions:
            if route.name in tried:
                return None
            tried.add(route.name)
            breaker = app.breakers.get("model", route.name, route.circuit_breaker)
            return (Target(route.name, route.endpoint, route.upstream_model, key,
                           route_timeout_seconds(self.bundle, route)), breaker, None)
        region = pick_region(plan, app.egress.in_flight, tried | app.breakers.unavailable("region"))
        if region is None:
            return None
        tried.add(region.name)
        breaker = app.breakers.get("region", region.name, region_breaker(region))
        return (Target(route.name, str(region.endpoint), route.upstream_model, key, region_timeout_seconds(region),
                       region.name), breaker, region)

    async def _from_upstream(self, route: BundleModelRoute, plan: RoutePlan, planned: CachePlan) -> web.StreamResponse:
        retry_after: float | None = None
        failure: UpstreamFailure | None = None
        for position, candidate in enumerate(candidate_routes(self.bundle, route)):
            tried: set[str] = set()
            while True:
                found = self._targets(candidate, plan, tried)
                if found is None:
                    break
                target, breaker, region = found
                permit = breaker.try_acquire()
                if permit is None:
                    wait = breaker.retry_after()
                    retry_after = wait if retry_after is None else min(retry_after, wait)
                    continue
                answered = await self._through(candidate, target, breaker, permit, region, planned)
                if isinstance(answered, UpstreamFailure):
                    failure = answered
                    if not should_retry("POST", failure.kind):
                        raise failure.error  # it may have reached the upstream: never sent twice
                    continue
                if position > 0:
                    self.outcome.fallback = "route"
                    answered.headers[FALLBACK_HEADER] = "route"
                    self.app.metrics.fallbacks.labels(kind="route").inc()
                return answered
        if failure is not None:
            raise failure.error
        names = ", ".join(r.name for r in candidate_routes(self.bundle, route))
        where = f" in regions {', '.join(plan.names)}" if plan.regions else ""
        raise CircuitOpen(f"model route(s) {names}{where}: every upstream is failing or at capacity; calls are paused",
                          retry_after=retry_after if retry_after else 1.0,
                          details={"routes": [r.name for r in candidate_routes(self.bundle, route)]})

    async def _through(self, route: BundleModelRoute, target: Target, breaker: Breaker, permit: Permit,
                       region: Region | None, planned: CachePlan) -> web.StreamResponse | UpstreamFailure:
        """Reserve, call (with retries where allowed), settle: the answer, or the last failure."""
        app = self.app
        assert self.execution is not None
        try:
            hold = await app.budgets.reserve(self.bundle, self.execution.identity,
                                             priced_model(self.bundle, route.name, route.upstream_model), self.body)
        except (BudgetExceeded, BudgetStoreUnavailable) as e:
            permit.release()
            self._budget_denied(e)
            raise
        except BaseException:
            permit.release()
            raise
        self.outcome.degraded_budgets = sorted(hold.local)
        for budget in hold.local:
            app.metrics.budget_store_degraded.labels(budget=budget).inc()
        retries = REGION_RETRIES if region is not None else ROUTE_RETRIES
        delays = backoff_delays(retries, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, random.Random())
        load = app.egress.in_flight
        current: Permit | None = permit
        try:
            for attempt in range(retries + 1):
                if current is None:
                    current = breaker.try_acquire()
                    if current is None:
                        break
                self.outcome.attempts += 1
                self.outcome.route, self.outcome.upstream_model = route.name, route.upstream_model
                self.outcome.region = target.region
                if region is not None:
                    load[region.name] += 1
                try:
                    response = await self._attempt(target, current, hold, planned, route)
                except UpstreamFailure as failure:
                    current.failure()
                    current = None
                    app.metrics.upstream_attempts.labels(route=route.name, region=target.region or "",
                                                         result=failure.kind).inc()
                    if attempt < retries and should_retry("POST", failure.kind):
                        await asyncio.sleep(delays[attempt])
                        continue
                    await app.budgets.release(hold)
                    return failure
                finally:
                    if region is not None:
                        load[region.name] -= 1
                        if load[region.name] <= 0:
                            del load[region.name]
                app.metrics.upstream_attempts.labels(route=route.name, region=target.region or "",
                                                     result="answered").inc()
                return response
            await app.budgets.release(hold)
            return UpstreamFailure("connect", CircuitOpen(
                f"model route {route.name!r}: the breaker opened during retries",
                retry_after=max(1.0, breaker.retry_after())))
        except BaseException:
            if current is not None:
                current.release()
            if not hold.finished:
                await self._settle_abandoned(hold)
            raise

    async def _settle_abandoned(self, hold: Hold) -> None:
        """The agent went away mid-call: the upstream may still bill, so charge the reservation
        (in a task of its own, so the handler's cancellation cannot cut it short)."""
        task = asyncio.get_running_loop().create_task(self.app.budgets.settle(hold, None, None))
        self.app.egress.background.add(task)
        task.add_done_callback(self.app.egress.background.discard)

    async def _attempt(self, target: Target, permit: Permit, hold: Hold, planned: CachePlan,
                       route: BundleModelRoute) -> web.StreamResponse:
        app = self.app
        if not self.stream:
            reply = await call(app.model_session, target, self.kind, self.body)
            permit.success()
            return await self._reply(reply, hold, planned, route, target)
        opened = await open_stream(app.model_session, target, self.body)
        if isinstance(opened, Reply):
            permit.success()
            return await self._reply(opened, hold, planned, route, target)
        return await self._pump(opened, permit, hold, planned, route, target)

    def _headers(self, target: Target) -> dict[str, str]:
        headers = {CACHE_HEADER: "miss", ROUTE_HEADER: target.route}
        if target.region:
            headers[REGION_HEADER] = target.region
        return headers

    async def _reply(self, reply: Reply, hold: Hold, planned: CachePlan, route: BundleModelRoute,
                     target: Target) -> web.StreamResponse:
        headers = self._headers(target)
        if reply.status >= 400 or reply.json is None:
            # The upstream refused the request (nothing charged): its answer, unchanged but for
            # any secret value in it.
            await self.app.budgets.release(hold)
            self.outcome.code = f"upstream_{reply.status}"
            assert self.snapshot is not None
            text = self.snapshot.redactor.text(reply.body.decode("utf-8", "replace"))
            return web.Response(status=reply.status, body=text.encode(), headers={
                **headers, "Content-Type": reply.content_type or "application/json"})
        usage = reply.usage
        settlement = await self._settle(hold, usage.input_tokens if usage else None,
                                        usage.output_tokens if usage else None, route)
        self.outcome.answer = reply.json
        await self._store(planned, route, reply.body, settlement)
        headers[COST_HEADER] = usd(settlement.cost_usd)
        return web.Response(status=reply.status, body=reply.body, headers={**headers,
                                                                           "Content-Type": "application/json"})

    async def _pump(self, upstream: aiohttp.ClientResponse, permit: Permit, hold: Hold, planned: CachePlan,
                    route: BundleModelRoute, target: Target) -> web.StreamResponse:
        """Pass the upstream's SSE events to the agent as they complete; settle and cache at the end."""
        assembler = StreamAssembler(forward_usage_chunk=agent_wants_usage(self.body))
        response = web.StreamResponse(status=upstream.status, headers={
            **self._headers(target), "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
            "Cache-Control": "no-cache"})
        failed: str | None = None
        agent_gone = False
        try:
            await response.prepare(self.request)
            async for data in upstream.content.iter_any():
                out = assembler.feed(data)
                if out:
                    await _write(response, out)
            rest = assembler.finish()
            if rest:
                await _write(response, rest)
        except _AgentGone:
            agent_gone = True
        except UpstreamFailure as e:
            failed = e.error.message
        except (aiohttp.ClientError, TimeoutError) as e:
            failed = f"the upstream failed mid-stream ({type(e).__name__})"
        finally:
            if failed or agent_gone or not assembler.done:
                upstream.close()
            else:
                upstream.release()
        if failed is None and not agent_gone and not assembler.done:
            failed = "the upstream ended the stream without [DONE]"
        if failed is not None:
            permit.failure()
            self.outcome.aborted = failed
            self.outcome.code = "upstream_bad_response"
            if self.request.transport is not None:
                self.request.transport.close()  # the agent must see a truncated stream
        elif agent_gone:
            permit.release()
            self.outcome.aborted = "the agent disconnected"
        else:
            permit.success()
        usage = assembler.usage
        settlement = await self._settle(hold, usage.input_tokens if usage else None,
                                        usage.output_tokens if usage else None, route)
        completion = assembler.completion() if failed is None and not agent_gone else None
        if completion is not None:
            self.outcome.answer = completion
            await self._store(planned, route, json.dumps(completion, separators=(",", ":")).encode(), settlement)
        if failed is None and not agent_gone:
            try:
                await _write(response, None)
            except _AgentGone:
                self.outcome.aborted = "the agent disconnected"
        return response

    async def _settle(self, hold: Hold, input_tokens: int | None, output_tokens: int | None,
                      route: BundleModelRoute) -> Settlement:
        app = self.app
        assert self.execution is not None
        settlement = await app.budgets.settle(hold, input_tokens, output_tokens)
        outcome = self.outcome
        outcome.input_tokens, outcome.output_tokens = input_tokens, output_tokens
        outcome.cost_usd, outcome.cost_estimated = settlement.cost_usd, settlement.estimated
        user = self.execution.identity.user
        app.budgets.record_usage(self.bundle, user, priced_model(self.bundle, route.name, route.upstream_model),
                                 input_tokens, output_tokens, cost_usd=settlement.cost_usd)
        for alert in settlement.alerts:
            emit_budget_alert(app, alert, user=user, execution_id=self.execution.id, request_id=self.info.request_id)
        if hold.lines:
            app.egress.budgets_changed.set()
        return settlement

    def _budget_denied(self, error: SidecarError) -> None:
        app = self.app
        assert self.execution is not None
        budget = str(error.details.get("budget", ""))
        app.metrics.budget_denials.labels(budget=budget, code=error.code).inc()
        app.audit.emit(self.info.event(
            "budget_denial", "denied", user=self.execution.identity.user, action="reserve",
            resource=f"budget/{budget}", execution_id=self.execution.id,
            metadata={"code": error.code, "model": self.requested_model, "role": self.execution.identity.role,
                      **{k: v for k, v in error.details.items() if k != "budget"}, "budget": budget}))

    # -- the record ---------------------------------------------------------------------------

    def _record(self) -> None:
        app = self.app
        outcome = self.outcome
        duration = time.monotonic() - self.info.started
        identity = self.execution.identity if self.execution else None
        agent_id = self.agent_id
        code = outcome.code
        status_label: RequestStatus = "error" if outcome.aborted else request_status(outcome.status, code)
        metrics = app.metrics
        metrics.agent_requests.labels(agent_id=agent_id, user_id=metrics.user_label(identity.user) if identity else "none",
                                      status=status_label).inc()
        if outcome.route is not None:
            metrics.agent_request_seconds.labels(agent_id=agent_id, model=outcome.route).observe(duration)
            if outcome.cache != "hit":
                metrics.agent_tokens.labels(agent_id=agent_id, model=outcome.route, type="input").inc(
                    outcome.input_tokens or 0)
                metrics.agent_tokens.labels(agent_id=agent_id, model=outcome.route, type="output").inc(
                    outcome.output_tokens or 0)
                metrics.agent_cost.labels(agent_id=agent_id, model=outcome.route).inc(outcome.cost_usd)
        if status_label == "error" or outcome.aborted:
            metrics.agent_errors_by_type.labels(agent_id=agent_id, error_type=code or "aborted").inc()
        result: Result = ("success" if status_label == "success" and not outcome.aborted
                          else "denied" if status_label == "denied" else "failure")
        metadata: dict[str, object] = {
            "role": identity.role if identity else None,
            "kind": self.kind,
            "model": self.requested_model if self.requested_model and _SAFE_NAME.fullmatch(self.requested_model)
            else None,
            "route": outcome.route, "upstream_model": outcome.upstream_model, "region": outcome.region,
            "data_classes": list(self.data_classes), "stream": self.stream,
            "input_tokens": outcome.input_tokens, "output_tokens": outcome.output_tokens,
            "cost_usd": round(outcome.cost_usd, 6), "cost_estimated": outcome.cost_estimated,
            "cache": outcome.cache, "status": outcome.status, "code": code, "attempts": outcome.attempts,
            "fallback": outcome.fallback, "duration_ms": round(duration * 1000, 1),
        }
        if outcome.degraded_budgets:
            metadata["degraded_budgets"] = outcome.degraded_budgets
        if outcome.aborted:
            metadata["aborted"] = outcome.aborted
        if self.snapshot is not None and self.snapshot.bundle.audit.include_bodies:
            metadata["request"] = self.body
            metadata["response"] = outcome.answer
        app.audit.emit(self.info.event(
            "model_call", result, user=identity.user if identity else None, action=self.kind,
            resource=f"model/{outcome.route or 'unknown'}", execution_id=self.execution.id if self.execution else None,
            metadata=metadata))
        record_model_call(self.request, self.kind, self.requested_model, outcome)


class _AgentGone(Exception):
    """Writing to the agent failed: it closed the connection."""


async def _write(response: web.StreamResponse, data: bytes | None) -> None:
    """Write to the agent (``None``: the end of the body); _AgentGone when it went away."""
    try:
        if data is None:
            await response.write_eof()
        else:
            await response.write(data)
    except ConnectionError:
        raise _AgentGone() from None


def emit_budget_alert(app: AppState, alert: BudgetAlert, *, user: str | None = None,
                      execution_id: str | None = None, request_id: str | None = None) -> None:
    """Metric, ``budget_alert`` audit record and webhook for a threshold a settlement crossed."""
    app.metrics.budget_alerts.labels(budget=alert.budget, period=alert.period, percent=str(alert.percent)).inc()
    app.audit.emit(AuditEvent(
        "budget_alert", "success", action=f"threshold_{alert.percent}", resource=f"budget/{alert.budget}",
        timestamp=time.time(), user=user, execution_id=execution_id, request_id=request_id,
        metadata={"budget": alert.budget, "subject": alert.subject, "period": alert.period,
                  "percent": alert.percent, "spent_usd": alert.spent_usd, "limit_usd": alert.limit_usd,
                  "degraded": alert.degraded}))
    notify = app.egress.alert_notifier
    if notify is not None:
        notify(alert)


@traced(MODEL_CALL)
async def chat_handler(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    return await ModelCall(request, "chat").run()


@traced(MODEL_CALL)
async def embeddings_handler(request: web.Request) -> web.StreamResponse:
    """``POST /v1/embeddings``."""
    return await ModelCall(request, "embeddings").run()


async def models_handler(request: web.Request) -> web.Response:
    """``GET /v1/models``: the routes of the bundle in force."""
    return web.json_response(models_list(state(request).policy.require().bundle))


async def model_handler(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``."""
    bundle = state(request).policy.require().bundle
    route = find_route(bundle, request.match_info["model"])
    return web.json_response({"id": route.name, "object": "model", "created": 0, "owned_by": route.provider})


async def flush_background(egress_app: web.Application) -> None:
    """After the egress app's last request: write what the requests queued for Redis (L2 answers,
    usage records), within BACKGROUND_FLUSH_SECONDS; what is left is counted and logged by the
    cache and the guard. Runs before the main app closes Redis."""
    app = AppState(egress_app[MAIN_APP])
    deadline = time.monotonic() + BACKGROUND_FLUSH_SECONDS
    await app.cache.aclose(BACKGROUND_FLUSH_SECONDS)
    await app.budgets.flush_usage(max(0.0, deadline - time.monotonic()))


def create_egress_app(main: web.Application) -> web.Application:
    """The egress app over ``main``'s resources; start it once ``main``'s cleanup_ctx has run."""
    from agentgov.sidecar.app import error_middleware_for

    app = web.Application(middlewares=[error_middleware_for("egress")])
    app.on_cleanup.append(flush_background)
    app[MAIN_APP] = main
    app[TOOL_RESOURCES] = ToolResources(app=AppState(main), breakers=main[BREAKERS], limiter=RateLimiter(),
                                        session=main[AGENT_SESSION])
    app.router.add_post("/v1/chat/completions", chat_handler, name="egress_chat")
    app.router.add_post("/v1/embeddings", embeddings_handler, name="egress_embeddings")
    app.router.add_get("/v1/models", models_handler, name="egress_models")
    app.router.add_get("/v1/models/{model}", model_handler, name="egress_models_one")
    app.router.add_route("*", "/tools/{tool}", tool_handler, name="egress_tools_root")
    app.router.add_route("*", r"/tools/{tool}/{path:[\s\S]*}", tool_handler, name="egress_tools")
    return app
