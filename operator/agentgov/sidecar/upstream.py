"""The model upstream client: one OpenAI-compatible call to a model route's endpoint (or the
chosen region's), with the route's credential, and the translation of its failures.

What it does:

- ``POST <endpoint>/chat/completions`` or ``<endpoint>/embeddings`` with the agent's JSON body,
  ``model`` rewritten to the route's ``upstreamModel``, and ``Authorization: Bearer <key>``
  from the route's mounted credential. Nothing of the agent's request headers is sent: the
  headers are built here from scratch, so an ``Authorization`` the agent sent can never reach
  an upstream, and the upstream's key never reaches the agent (it is not in any answer).
- Streams: ``stream_options.include_usage`` is turned on (so the final usage can be settled
  against the budget); the SSE events are passed on as they complete (``StreamAssembler``
  parses them incrementally), the usage-only chunk is dropped when the agent did not ask for
  it, and the full answer is assembled for the cache. ``completion_to_sse`` turns a cached
  answer back into a stream.
- Failures are mapped once, here (httpx's ``map_exceptions`` idea), into :class:`UpstreamFailure`
  carrying the retry classification (``retry.FailureKind``) and the error the agent gets if
  nothing else is tried: refused connection -> ``upstream_unavailable`` (502), a 5xx ->
  ``upstream_unavailable`` naming the status, a garbled answer -> ``upstream_bad_response``
  (502), no answer in time -> ``upstream_timeout`` (504). An upstream 4xx is not a failure of
  the upstream: it is returned as a :class:`Reply` for the agent to get unchanged.

What it never does: decide (which route, region, retry or fallback is the egress layer's),
read files (the key comes in the :class:`Target`), log or return a key. The pure parts
(``upstream_body``, ``usage_of``, ``StreamAssembler``, ``completion_to_sse``) are unit-tested.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import aiohttp

from agentgov.sidecar.errors import SidecarError, UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from agentgov.sidecar.retry import FailureKind, failure_kind_for_status, failure_kind_of

Kind = Literal["chat", "embeddings"]
PATHS: Final[dict[Kind, str]] = {"chat": "/chat/completions", "embeddings": "/embeddings"}
# Largest non-streamed answer read from an upstream (embeddings of big batches are the largest).
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
# Largest single SSE event held while it is incomplete.
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
READ_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: a route (and region), its endpoint, model name, key and timeout."""

    route: str
    endpoint: str
    upstream_model: str
    api_key: str | None = field(repr=False)
    timeout_seconds: float
    region: str | None = None

    def url(self, kind: Kind) -> str:
        return self.endpoint.rstrip("/") + PATHS[kind]


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, from the answer's ``usage``."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Reply:
    """A complete (non-streamed) answer: 2xx with its JSON, or a 4xx passed through as is."""

    status: int
    body: bytes
    content_type: str
    json: dict[str, object] | None = None
    usage: Usage | None = None


class UpstreamFailure(Exception):
    """One failed attempt: how it failed (for retries and breakers) and what the agent would get."""

    def __init__(self, kind: FailureKind, error: SidecarError, status: int | None = None) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error
        self.status = status


# --- pure parts --------------------------------------------------------------------------


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def usage_of(answer: object) -> Usage | None:
    """``usage`` of an OpenAI answer or chunk (prompt/completion tokens); None when absent."""
    if not isinstance(answer, Mapping):
        return None
    usage = answer.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _count(usage.get("completion_tokens", usage.get("output_tokens", 0)))
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion)


def upstream_body(body: Mapping[str, object], upstream_model: str, *, stream: bool) -> dict[str, object]:
    """The body sent upstream: the agent's, with the route's model name and, for streams,
    ``stream_options.include_usage`` switched on."""
    out = dict(body)
    out["model"] = upstream_model
    if stream:
        given = body.get("stream_options")
        options = dict(given) if isinstance(given, Mapping) else {}
        options["include_usage"] = True
        out["stream_options"] = options
    return out


def agent_wants_usage(body: Mapping[str, object]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def request_headers(api_key: str | None, *, stream: bool) -> dict[str, str]:
    """Every header an upstream gets: nothing of the agent's."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
               "User-Agent": "agentgov-sidecar"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _find_event_end(buffer: bytearray) -> tuple[int, int] | None:
    """(end of the event, length of its separator) of the first complete SSE event."""
    best: tuple[int, int] | None = None
    for separator in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        at = buffer.find(separator)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, len(separator))
    return best


def _event_data(raw: bytes) -> str | None:
    """The ``data`` of one SSE event (its data lines joined), or None when it has none."""
    lines = raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
    return "\n".join(data) if data else None


@dataclass
class _Choice:
    role: str | None = None
    content: list[str] = field(default_factory=list)
    has_content: bool = False
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, object]] = field(default_factory=dict)
    finish_reason: object = None


class StreamAssembler:
    """Parses an upstream SSE stream as it arrives: which bytes the agent gets now, the usage,
    and the whole answer as one ``chat.completion`` (for the cache)."""

    def __init__(self, *, forward_usage_chunk: bool) -> None:
        self._forward_usage = forward_usage_chunk
        self._buffer = bytearray()
        self._choices: dict[int, _Choice] = {}
        self._meta: dict[str, object] = {}
        self.usage: Usage | None = None
        self.done = False
        self.errored = False
        self.events = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes received; returns the complete events to pass on now (possibly none)."""
        self._buffer += data
        out = bytearray()
        while True:
            found = _find_event_end(self._buffer)
            if found is None:
                break
            end, length = found
            raw = bytes(self._buffer[:end + length])
            del self._buffer[:end + length]
            if self._take(raw[:end]):
                out += raw
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise UpstreamFailure("other", UpstreamBadResponse("the upstream sent an SSE event over 4 MiB"))
        return bytes(out)

    def finish(self) -> bytes:
        """The end of the upstream body: whatever incomplete event is left, passed on as is."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if rest.strip():
            self._take(rest)
        return rest

    def _take(self, raw: bytes) -> bool:
        """Record one event; whether the agent gets it."""
        data = _event_data(raw)
        if data is None:
            return True  # comments, retry:, event: lines without data
        self.events += 1
        if data.strip() == "[DONE]":
            self.done = True
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            self.errored = True
            return True
        if not isinstance(chunk, dict):
            return True
        if "error" in chunk:
            self.errored = True
            return True
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        for name in ("id", "created", "model", "system_fingerprint"):
            if name in chunk and name not in self._meta:
                self._meta[name] = chunk[name]
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._merge(choice)
        usage_only = usage is not None and choices == []
        return self._forward_usage or not usage_only

    def _merge(self, choice: Mapping[str, object]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            return
        into = self._choices.setdefault(index, _Choice())
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            if isinstance(delta.get("role"), str):
                into.role = str(delta["role"])
            if isinstance(delta.get("content"), str):
                into.content.append(str(delta["content"]))
                into.has_content = True
            if isinstance(delta.get("refusal"), str):
                into.refusal.append(str(delta["refusal"]))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, Mapping):
                        self._merge_call(into, call)
        if choice.get("finish_reason") is not None:
            into.finish_reason = choice["finish_reason"]

    @staticmethod
    def _merge_call(into: _Choice, call: Mapping[str, object]) -> None:
        index = call.get("index", 0)
        if not isinstance(index, int):
            return
        held = into.tool_calls.setdefault(index, {"id": None, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
        if isinstance(call.get("id"), str):
            held["id"] = call["id"]
        if isinstance(call.get("type"), str):
            held["type"] = call["type"]
        function = call.get("function")
        target = held["function"]
        if isinstance(function, Mapping) and isinstance(target, dict):
            if isinstance(function.get("name"), str):
                target["name"] = str(target["name"]) + str(function["name"])
            if isinstance(function.get("arguments"), str):
                target["arguments"] = str(target["arguments"]) + str(function["arguments"])

    def completion(self) -> dict[str, object] | None:
        """The whole answer as a ``chat.completion``; None unless the stream ended cleanly."""
        if not self.done or self.errored or not self._choices:
            return None
        choices: list[dict[str, object]] = []
        for index in sorted(self._choices):
            held = self._choices[index]
            if held.finish_reason is None:
                return None
            message: dict[str, object] = {"role": held.role or "assistant",
                                          "content": "".join(held.content) if held.has_content else None}
            if held.refusal:
                message["refusal"] = "".join(held.refusal)
            if held.tool_calls:
                message["tool_calls"] = [held.tool_calls[i] for i in sorted(held.tool_calls)]
            choices.append({"index": index, "message": message, "logprobs": None,
                            "finish_reason": held.finish_reason})
        out: dict[str, object] = {"object": "chat.completion", **self._meta, "choices": choices}
        if self.usage is not None:
            out["usage"] = {"prompt_tokens": self.usage.input_tokens, "completion_tokens": self.usage.output_tokens,
                            "total_tokens": self.usage.input_tokens + self.usage.output_tokens}
        return out


def _sse(event: Mapping[str, object] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def completion_to_sse(completion: Mapping[str, object], *, include_usage: bool) -> bytes:
    """A ``chat.completion`` as the stream OpenAI would have sent for it (a cache hit answered
    to a streaming request): per choice a role chunk, a content chunk, tool call chunks and a
    finish chunk; then the usage chunk when asked; then ``[DONE]``."""
    meta = {"id": completion.get("id", "chatcmpl-cached"), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    if "system_fingerprint" in completion:
        meta["system_fingerprint"] = completion["system_fingerprint"]

    def chunk(index: object, delta: Mapping[str, object], finish: object = None) -> dict[str, object]:
        out: dict[str, object] = {**meta, "choices": [{"index": index, "delta": dict(delta), "logprobs": None,
                                                        "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    out = bytearray()
    choices = completion.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, Mapping):
            continue
        index = choice.get("index", 0)
        message = choice.get("message")
        message = message if isinstance(message, Mapping) else {}
        out += _sse(chunk(index, {"role": message.get("role", "assistant"), "content": ""}))
        if isinstance(message.get("content"), str) and message["content"]:
            out += _sse(chunk(index, {"content": message["content"]}))
        if isinstance(message.get("refusal"), str) and message["refusal"]:
            out += _sse(chunk(index, {"refusal": message["refusal"]}))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, Mapping):
                    out += _sse(chunk(index, {"tool_calls": [{"index": position, **call}]}))
        out += _sse(chunk(index, {}, choice.get("finish_reason", "stop")))
    if include_usage and isinstance(completion.get("usage"), Mapping):
        out += _sse({**meta, "choices": [], "usage": completion["usage"]})
    out += _sse("[DONE]")
    return bytes(out)


# --- I/O ---------------------------------------------------------------------------------


def _failure(error: BaseException, target: Target) -> UpstreamFailure:
    """Translate a client-side exception, once."""
    kind = failure_kind_of(error)
    if kind == "connect":
        return UpstreamFailure(kind, UpstreamUnavailable(
            f"model route {target.route!r}: the upstream is not accepting connections"))
    if kind == "timeout":
        return UpstreamFailure(kind, UpstreamTimeout(
            f"model route {target.route!r}: the upstream did not answer within {target.timeout_seconds:g} seconds"))
    return UpstreamFailure(kind, UpstreamBadResponse(
        f"model route {target.route!r}: the upstream closed the connection or sent an invalid response"))


def _status_failure(status: int, target: Target) -> UpstreamFailure:
    kind = failure_kind_for_status(status) or "other"
    return UpstreamFailure(kind, UpstreamUnavailable(
        f"model route {target.route!r}: the upstream answered HTTP {status}"), status)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(READ_BYTES):
        data += chunk
        if len(data) > limit:
            raise UpstreamFailure("other", UpstreamBadResponse(f"the upstream answer is over {limit} bytes"))
    return bytes(data)


def _reply(status: int, data: bytes, content_type: str, target: Target) -> Reply:
    if status >= 400:
        return Reply(status, data, content_type)
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamFailure("other", UpstreamBadResponse(
            f"model route {target.route!r}: the upstream answer is not a JSON object"), status)
    return Reply(status, data, "application/json", parsed, usage_of(parsed))


async def call(session: aiohttp.ClientSession, target: Target, kind: Kind, body: Mapping[str, object]) -> Reply:
    """One non-streamed call: a 2xx Reply with its JSON and usage, a 4xx Reply to pass on, or
    UpstreamFailure."""
    payload = json.dumps(upstream_body(body, target.upstream_model, stream=False)).encode()
    timeout = aiohttp.ClientTimeout(total=target.timeout_seconds)
    try:
        async with session.post(target.url(kind), data=payload, headers=request_headers(target.api_key, stream=False),
                                timeout=timeout, allow_redirects=False) as response:
            if response.status >= 500:
                raise _status_failure(response.status, target)
            data = await _read_limited(response, MAX_ANSWER_BYTES)
            return _reply(response.status, data, response.headers.get("Content-Type", "application/json"), target)
    except UpstreamFailure:
        raise
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _failure(e, target) from None


async def open_stream(session: aiohttp.ClientSession, target: Target,
                      body: Mapping[str, object]) -> aiohttp.ClientResponse | Reply:
    """Start a streamed chat completion: the open upstream response once its headers arrived
    (the caller reads and closes it), a Reply when the upstream answered without a stream
    (a 4xx, or JSON), or UpstreamFailure. The timeout bounds the wait for headers and every
    silence between chunks, not the whole stream."""
    payload = json.dumps(upstream_body(body, target.upstream_model, stream=True)).encode()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=target.timeout_seconds,
                                    sock_read=target.timeout_seconds)
    try:
        response = await session.post(target.url("chat"), data=payload,
                                      headers=request_headers(target.api_key, stream=True),
                                      timeout=timeout, allow_redirects=False)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _failure(e, target) from None
    try:
        if response.status >= 500:
            raise _status_failure(response.status, target)
        content_type = response.headers.get("Content-Type", "")
        if response.status >= 300 or not content_type.startswith("text/event-stream"):
            data = await _read_limited(response, MAX_ANSWER_BYTES)
            reply = _reply(response.status, data, content_type or "application/json", target)
            response.release()
            return reply
    except UpstreamFailure:
        response.close()
        raise
    except (aiohttp.ClientError, TimeoutError) as e:
        response.close()
        raise _failure(e, target) from None
    return response


def new_session(trace_configs: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
    """The pooled session every model upstream call uses (opened in the app's cleanup_ctx);
    ``trace_configs``: the tracing module's, which add ``traceparent`` while tracing is on."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                                 cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True,
                                 trace_configs=trace_configs)
