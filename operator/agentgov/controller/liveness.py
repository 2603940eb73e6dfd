"""Liveness of the operator's watch streams: an HTTP endpoint that fails when one died or stalled.

kopf runs one watch stream per watched resource (and namespace), each in a task named
``watcher for <resource>@<namespace>``. When such a task ends (an API error kopf does not
retry, such as a 404, or a 5xx that outlasted its retries), the stream is gone for good: kopf
never restarts a watcher (kopf issue #1276). Older kopf carried on without it (kopf issue
#787); kopf 1.45 starts stopping the whole operator instead, and that stop can hang (seen in
the integration tests: the other watchers wait forever to re-authenticate once the
credentials are dropped), leaving a process that is up and watches nothing. Either way only a
restart helps, and Kubernetes restarts what fails its liveness probe. The probe here fails
(HTTP 503, JSON naming the watch) when:

- **dead**: a watcher task seen running has ended; its error is named;
- **stalled**: the operator keeps asking the API server for a resource (list or watch requests
  sent) and no 2xx answer came for ``stalled_after`` seconds. Each watch request ends after
  ``settings.watching.server_timeout`` and is sent again, so a healthy stream is answered at
  least that often; ``stalled_after`` is twice it (``AGENTGOV_WATCH_TIMEOUT_SECONDS`` × 2). A
  paused stream (peering: another replica is active) sends nothing and is never stalled.

Answers are seen through an aiohttp ``TraceConfig`` on the HTTP session kopf uses for its
watches: ``kopf_session`` builds the same session kopf would build from the login's
credentials, plus that trace (kopf's documented custom-session login). Watcher tasks are found
by name in the event loop; they are only looked at, never touched.

``assess`` decides (pure: the time is passed in); ``WatchVitals`` gathers what it needs;
``create_app``/``serve`` expose it over HTTP. No module-level state: one ``WatchVitals`` per
operator, kept in kopf's memo.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import kopf
from aiohttp import web

from agentgov.controller import metrics

WATCHER_TASK_PREFIX = "watcher for "
ERROR_TEXT_LIMIT = 300
State = Literal["ok", "dead", "stalled"]


@dataclass(frozen=True)
class WatchState:
    """What is known of one watch stream (times on the monotonic clock)."""

    name: str  # as kopf names it: "agentbudgets.v1alpha1.agentgov.io@None" (None: cluster-wide)
    running: bool
    error: str | None  # why an ended watcher ended
    seen_since: float  # when its task was first seen
    last_request: float | None  # the last list/watch request sent for it
    last_answer: float | None  # the last 2xx answer to one


@dataclass(frozen=True)
class Verdict:
    alive: bool
    body: dict[str, Any]


def assess(watches: Sequence[WatchState], now: float, stalled_after: float) -> Verdict:
    """Alive unless a watch is dead or stalled; the body names every watch and its state."""
    report: dict[str, dict[str, Any]] = {}
    failing: list[str] = []
    for watch in sorted(watches, key=lambda w: w.name):
        entry: dict[str, Any] = {}
        state: State = "ok"
        if not watch.running:
            state, entry["error"] = "dead", watch.error or "ended"
        else:
            heard = max(t for t in (watch.seen_since, watch.last_answer) if t is not None)
            asking = watch.last_request is not None and (watch.last_answer is None or watch.last_request > watch.last_answer)
            if asking and now - heard > stalled_after:
                state = "stalled"
                entry["error"] = f"no answer from the API server for {now - heard:.0f}s (limit {stalled_after:g}s)"
        if watch.last_answer is not None:
            entry["lastAnswerSecondsAgo"] = round(now - watch.last_answer, 1)
        report[watch.name] = {"state": state, **entry}
        if state != "ok":
            failing.append(watch.name)
    body: dict[str, Any] = {"status": "failing" if failing else "ok", "watches": report}
    if failing:
        body["failing"] = failing
    return Verdict(not failing, body)


def watch_name(url: str | urllib.parse.SplitResult) -> str | None:
    """The kopf name of the watch a list/watch URL belongs to; None for any other URL."""
    path = (urllib.parse.urlsplit(url) if isinstance(url, str) else url).path
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) == 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) != 1:
        return None  # a named object or a subresource: not a collection
    return f"{rest[0]}.{version}.{group}".strip(".") + f"@{namespace}"


class WatchVitals:
    """Signs of life of kopf's watch streams: its watcher tasks and the API server's answers."""

    def __init__(self, stalled_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stalled_after = stalled_after
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._seen_since: dict[str, float] = {}
        self._requests: dict[str, float] = {}
        self._answers: dict[str, float] = {}
        self._monitor: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._clock()

    # --- what the HTTP session reports -------------------------------------------------------

    def note_request(self, method: str, url: str) -> None:
        name = watch_name(url) if method.upper() == "GET" else None
        if name is not None:
            self._requests[name] = self._clock()

    def note_answer(self, method: str, url: str, status: int) -> None:
        name = watch_name(url) if method.upper() == "GET" and 200 <= status < 300 else None
        if name is not None:
            self._answers[name] = self._clock()

    def trace_config(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_start(_: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
            self.note_request(params.method, str(params.url))

        async def on_end(_: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
            self.note_answer(params.method, str(params.url), params.response.status)

        trace.on_request_start.append(on_start)
        trace.on_request_end.append(on_end)
        return trace

    # --- kopf's watcher tasks ------------------------------------------------------------------

    def scan(self) -> None:
        """Remember every running watcher task (a new one replaces an ended one of the same name)."""
        for task in asyncio.all_tasks():
            name = task.get_name()
            if not name.startswith(WATCHER_TASK_PREFIX) or task.done():
                continue
            key = name[len(WATCHER_TASK_PREFIX):]
            known = self._tasks.get(key)
            if known is None or (known is not task and known.done()):
                self._tasks[key] = task
                self._seen_since[key] = self._clock()

    def states(self) -> list[WatchState]:
        states = []
        for name, task in self._tasks.items():
            states.append(WatchState(
                name=name,
                running=not task.done(),
                error=_ending(task) if task.done() else None,
                seen_since=self._seen_since[name],
                last_request=self._requests.get(name),
                last_answer=self._answers.get(name),
            ))
        return states

    def verdict(self) -> Verdict:
        """Scan, judge, and publish the count of watches by state as a metric."""
        self.scan()
        verdict = assess(self.states(), self._clock(), self.stalled_after)
        counts = {state: 0 for state in ("ok", "dead", "stalled")}
        for watch in verdict.body["watches"].values():
            counts[watch["state"]] += 1
        for state, count in counts.items():
            metrics.WATCHES.labels(state=state).set(count)
        return verdict

    def start(self, interval: float = 1.0) -> None:
        """Scan for watcher tasks every ``interval`` seconds, so one that dies young is still seen."""
        if self._monitor is None:
            self._monitor = asyncio.create_task(self._scan_forever(interval), name="agentgov watch vitals")

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    async def _scan_forever(self, interval: float) -> None:
        while True:
            self.verdict()
            await asyncio.sleep(interval)


def _ending(task: asyncio.Task[Any]) -> str:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    if error is None:
        return "ended"
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


def kopf_session(info: kopf.ConnectionInfo, trace_configs: Sequence[aiohttp.TraceConfig]) -> kopf.AiohttpSession:
    """The HTTP session kopf builds from ``info`` (same TLS, headers, proxy), with ``trace_configs``."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=list(trace_configs),
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


# --- the HTTP endpoint ---------------------------------------------------------------------

VITALS = web.AppKey("vitals", WatchVitals)


async def _health(request: web.Request) -> web.Response:
    verdict = request.app[VITALS].verdict()
    return web.json_response(verdict.body, status=200 if verdict.alive else 503)


def create_app(vitals: WatchVitals, path: str = "/healthz") -> web.Application:
    app = web.Application()
    app[VITALS] = vitals
    app.router.add_get(path or "/", _health)
    return app


def parse_endpoint(endpoint: str) -> tuple[str, int, str]:
    """``http://HOST:PORT/PATH`` -> (host, port, path); ValueError naming what is wrong."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme != "http":
        raise ValueError(f"liveness endpoint {endpoint!r}: expected http://HOST:PORT/PATH")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"liveness endpoint {endpoint!r}: the port is not a number 1-65535") from None
    return parts.hostname or "0.0.0.0", port, parts.path or "/"


@contextlib.asynccontextmanager
async def serve(endpoint: str, vitals: WatchVitals) -> AsyncIterator[web.AppRunner]:
    """Serve the liveness endpoint at ``endpoint`` until the block exits."""
    host, port, path = parse_endpoint(endpoint)
    runner = web.AppRunner(create_app(vitals, path), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()
