"""The streaming inbound proxy: one request to the agent on 127.0.0.1, bodies passed chunk by chunk.

Nothing is buffered whole: the request body flows to the agent as the caller sends it (counted
against ``max_body_bytes``: a declared length over the limit is refused before anything is
sent, a chunked body is cut off with 413 when it crosses it), and the response flows back as
the agent writes it (SSE and chunked responses arrive incrementally). Compressed bodies pass
through untouched.

Failures are translated once, here: connection refused -> 502 ``agent_unavailable``; the
agent closing or garbling the response before its headers -> 502 ``agent_bad_response``; no
response headers within the timeout -> 504 ``agent_timeout``. After the response has started
the status cannot change any more: a failure then closes the client connection without the
final chunk, so the caller sees a truncated body rather than a complete-looking one. When the
caller goes away (the server cancels the handler) the upstream request is closed, which the
agent sees as a disconnect.

The same forwarder serves tool calls on the egress port: ``errors=`` gives the error classes
for that kind of upstream (``upstream_unavailable``, ``upstream_bad_response``,
``upstream_timeout`` for a tool), and ``passes=`` lets a caller that has a fallback refuse a
status before anything is sent back (the response is discarded, ``result.status`` says which
status it was, and the ``bad_response`` error is raised).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from agentgov.sidecar.errors import (
    AgentBadResponse, AgentTimeout, AgentUnavailable, BodyTooLarge, SidecarError, UpstreamBadResponse,
    UpstreamTimeout, UpstreamUnavailable,
)
from agentgov.sidecar.headers import Headers, response_headers_for_client

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class UpstreamErrors:
    """What ``forward`` raises for one kind of upstream, and how it names it in messages."""

    name: str
    unavailable: Callable[[], SidecarError]
    bad_response: Callable[[], SidecarError]
    timeout: Callable[[str], SidecarError]


AGENT_ERRORS = UpstreamErrors("the agent", AgentUnavailable, AgentBadResponse, AgentTimeout)
TOOL_ERRORS = UpstreamErrors("the tool", UpstreamUnavailable, UpstreamBadResponse, UpstreamTimeout)


@dataclass
class ProxyResult:
    """What happened, for the audit record and metrics."""

    status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    # Set when the response had started and then failed (agent or caller went away).
    aborted: str | None = None
    # True when that failure was the upstream's (not the caller going away).
    upstream_failed: bool = False


class _Body:
    """The caller's body as an async iterator, counted and cut off at the limit."""

    def __init__(self, request: web.Request, limit: int, result: ProxyResult) -> None:
        self._request = request
        self._limit = limit
        self._result = result
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.content.iter_chunked(CHUNK_BYTES):
            self._result.bytes_in += len(chunk)
            if self._result.bytes_in > self._limit:
                self.too_large = True
                raise BodyTooLarge(f"the request body is over the limit of {self._limit} bytes")
            yield chunk


async def forward(
    request: web.Request,
    *,
    session: aiohttp.ClientSession,
    target: URL,
    headers: Headers,
    max_body_bytes: int,
    timeout_seconds: float,
    extra_response_headers: Sequence[tuple[str, str]] = (),
    result: ProxyResult | None = None,
    errors: UpstreamErrors = AGENT_ERRORS,
    passes: Callable[[int], bool] | None = None,
) -> web.StreamResponse:
    """Send ``request`` to ``target`` and stream the answer back; SidecarError before it starts."""
    result = result if result is not None else ProxyResult()
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise BodyTooLarge(f"the request body ({declared} bytes) is over the limit of {max_body_bytes} bytes")
    body = _Body(request, max_body_bytes, result) if request.body_exists else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds)
    try:
        async with asyncio.timeout(timeout_seconds):
            upstream = await session.request(
                request.method, target, headers=headers, data=body.chunks() if body else None,
                allow_redirects=False, timeout=timeout,
                # Forward the caller's headers only: the client library adds none of its own.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
    except BodyTooLarge:
        raise
    except TimeoutError:
        raise errors.timeout(f"{errors.name} did not answer within {timeout_seconds:g} seconds") from None
    except aiohttp.ClientConnectorError:
        raise errors.unavailable() from None
    except aiohttp.ClientError:
        if body is not None and body.too_large:
            raise BodyTooLarge(f"the request body is over the limit of {max_body_bytes} bytes") from None
        raise errors.bad_response() from None

    if passes is not None and not passes(upstream.status):
        result.status = upstream.status
        upstream.close()
        raise errors.bad_response()

    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in response_headers_for_client(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.raw_headers
        ):
            response.headers.add(name, value)
        for name, value in extra_response_headers:
            response.headers[name] = value
        result.status = upstream.status
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                try:
                    await response.write(chunk)
                except ConnectionError:
                    result.aborted = "the caller disconnected"
                    break
                result.bytes_out += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as e:
            # The agent failed mid-response: make the truncation visible to the caller.
            result.aborted = f"{errors.name} failed mid-response ({type(e).__name__})"
            result.upstream_failed = True
            if request.transport is not None:
                request.transport.close()
        if result.aborted is None:
            try:
                await response.write_eof()
            except ConnectionError:
                result.aborted = "the caller disconnected"
        if result.aborted is None:
            upstream.release()
        else:
            upstream.close()
        return response
    except BaseException:
        upstream.close()  # never reuse a connection whose response was not read to the end
        raise
