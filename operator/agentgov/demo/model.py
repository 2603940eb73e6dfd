"""A local OpenAI-compatible stand-in model: what the demo, the tests and the benchmarks call
instead of a provider.

It speaks the parts of the OpenAI HTTP API an agent uses, in OpenAI's own shapes, so the
official ``openai`` SDK (and the sidecar) cannot tell it from the real thing:

- ``POST /v1/chat/completions``: a JSON ``chat.completion``, or with ``"stream": true`` an SSE
  stream of ``chat.completion.chunk`` events ending with ``data: [DONE]``; with
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk with
  empty ``choices`` carries the usage, exactly as OpenAI does. A forced function call
  (``tool_choice: {"type": "function", ...}``) answers with a tool call.
- ``POST /v1/embeddings``: float vectors, or base64 float32 (the SDK's default encoding).
- ``GET /v1/models``: the configured models.

Answers are deterministic: the same messages give the same text (the last user message's words
echoed with a digest of the whole prompt), so cache tests can compare answers byte for byte.
``usage`` is realistic: prompt tokens are the words of the messages (plus 4 per message, as a
chat template adds), completion tokens the words of the answer, cut at ``max_tokens`` (then
``finish_reason`` is ``length``).

Knobs (:class:`ModelConfig`, changeable while serving through :attr:`StandInModel.config`):
fixed latency, a failure rate (seeded RNG; failures answer 500 or 503 with OpenAI's error body),
hang mode (no answer until released), a required API key (401 otherwise), the model list (404
``model_not_found`` for others). Per-path call counters and the requests received (headers and
bodies) let tests assert "zero upstream calls" and "the agent's Authorization never arrived".

What it must never do: call anything, read a key from the environment, or be reachable from
beyond 127.0.0.1 unless the caller binds it elsewhere on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Final

from aiohttp import web

DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
# Requests kept for inspection (the oldest are dropped first).
MAX_RECORDED: Final = 2_000


@dataclass(frozen=True)
class ModelConfig:
    """How the stand-in behaves. Replace it on a running server with ``StandInModel.configure``."""

    # Required as ``Authorization: Bearer <api_key>`` when set.
    api_key: str | None = None
    # Models served; empty: any model name is accepted.
    models: tuple[str, ...] = DEFAULT_MODELS
    # Shown in answers (``owned_by``, the answer text): which of several stand-ins answered.
    name: str = "standin"
    latency_ms: float = 0.0
    # Probability (0..1) that a completion or embedding call fails with one of ``failure_statuses``.
    failure_rate: float = 0.0
    failure_statuses: tuple[int, ...] = (500, 503)
    seed: int = 0
    # Every completion and embedding call waits until ``StandInModel.release_hangs()`` (or shutdown).
    hang: bool = False
    embedding_dimensions: int = 8
    # Pause between stream chunks (a slow, token-by-token model).
    chunk_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be within 0..1")
        if self.latency_ms < 0 or self.chunk_delay_ms < 0:
            raise ValueError("latency_ms and chunk_delay_ms must not be negative")
        if not 1 <= self.embedding_dimensions <= 4096:
            raise ValueError("embedding_dimensions must be within 1..4096")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it (header names lower-cased)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: object


@dataclass
class StandInModel:
    """The state of one stand-in server: its knobs, counters and what it received."""

    config: ModelConfig = field(default_factory=ModelConfig)
    calls: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    # While set to an Event, streams stop after their first content chunk until it is set.
    stream_gate: asyncio.Event | None = None
    port: int = 0
    host: str = "127.0.0.1"
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _unhang: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _ids: int = 0

    def __post_init__(self) -> None:
        self._rng.seed(self.config.seed)

    @property
    def url(self) -> str:
        """The base URL an OpenAI client is given (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def configure(self, **changes: object) -> None:
        """Change knobs while serving; a new ``seed`` restarts the failure sequence."""
        self.config = replace(self.config, **changes)  # type: ignore[arg-type]
        if "seed" in changes:
            self._rng.seed(self.config.seed)
        if self.config.hang:
            self._unhang.clear()

    def release_hangs(self) -> None:
        """Let every hanging call go (they answer 503) and stop hanging."""
        self.config = replace(self.config, hang=False)
        self._unhang.set()

    def model_calls(self) -> int:
        """Completion and embedding calls received (the ones that cost money)."""
        return self.calls["/v1/chat/completions"] + self.calls["/v1/embeddings"]

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self.config.name}-{self._ids}"

    def draw_failure(self) -> int | None:
        """The status of an injected failure for this call, or None (seeded, so reproducible)."""
        if self.config.failure_rate <= 0:
            return None
        if self._rng.random() < self.config.failure_rate:
            self.failures += 1
            return self._rng.choice(self.config.failure_statuses)
        return None


STATE = web.AppKey("standin_model", StandInModel)


# --- pure parts --------------------------------------------------------------------------


class InvalidRequest(Exception):
    """A request OpenAI would refuse with 400 ``invalid_request_error``; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def words(text: str) -> list[str]:
    return text.split()


def message_text(content: object) -> str:
    """A message's text: a string, or the ``text`` of its content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    raise InvalidRequest("content must be a string or a list of content parts", "messages")


def check_messages(messages: object) -> list[dict[str, object]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{index}] must be an object with a role", f"messages[{index}]")
        message_text(message.get("content"))
    return messages


def prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    return sum(len(words(message_text(m.get("content")))) + 4 for m in messages)


def max_tokens_of(body: Mapping[str, object]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"{name} must be a positive integer", name)
        return value
    return None


def answer_words(model: str, messages: Sequence[Mapping[str, object]], name: str) -> list[str]:
    """The deterministic answer: a digest of the prompt and the last user message echoed."""
    canonical = json.dumps([[m.get("role"), message_text(m.get("content"))] for m in messages], sort_keys=True)
    digest = hashlib.sha256(f"{model}\0{canonical}".encode()).hexdigest()[:8]
    last_user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    echoed = words(last_user)[:24] or ["nothing"]
    return [f"[{name}/{model}#{digest}]", "You", "said:", *echoed]


def forced_function(body: Mapping[str, object]) -> str | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


@dataclass(frozen=True)
class Completion:
    """What the model decided to answer, before it is shaped as JSON or SSE."""

    id: str
    model: str
    created: int
    content: str | None
    tool_call: tuple[str, str, str] | None  # (id, function name, arguments JSON)
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }


def complete(body: Mapping[str, object], *, name: str, id: str, created: int) -> Completion:
    """Decide the answer to a chat completion request. Pure; InvalidRequest for bad input."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", "model")
    messages = check_messages(body.get("messages"))
    limit = max_tokens_of(body)
    prompt = prompt_tokens(messages)
    answer = answer_words(model, messages, name)
    function = forced_function(body)
    if function is not None:
        arguments = json.dumps({"query": " ".join(answer[3:])})
        tokens = len(words(arguments))
        return Completion(id, model, created, None, (f"call_{id[-12:]}", function, arguments), "tool_calls",
                          prompt, tokens)
    finish = "stop"
    if limit is not None and len(answer) > limit:
        answer, finish = answer[:limit], "length"
    return Completion(id, model, created, " ".join(answer), None, finish, prompt, len(answer))


def completion_json(c: Completion) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": c.content, "refusal": None}
    if c.tool_call is not None:
        call_id, function, arguments = c.tool_call
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": function, "arguments": arguments}}]
    return {
        "id": c.id, "object": "chat.completion", "created": c.created, "model": c.model,
        "system_fingerprint": "fp_standin",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": c.finish_reason}],
        "usage": c.usage(),
    }


def completion_chunks(c: Completion, *, include_usage: bool) -> list[dict[str, object]]:
    """The stream OpenAI sends for ``c``: a role chunk, content chunks (one per word), a finish
    chunk, and, when asked, a usage chunk with no choices."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model,
            "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    chunks = [chunk({"role": "assistant", "content": "" if c.content is not None else None, "refusal": None})]
    if c.content is not None:
        pieces = c.content.split(" ")
        chunks += [chunk({"content": piece if i == 0 else " " + piece}) for i, piece in enumerate(pieces)]
    if c.tool_call is not None:
        call_id, function, arguments = c.tool_call
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                             "function": {"name": function, "arguments": ""}}]}))
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
    chunks.append(chunk({}, c.finish_reason))
    if include_usage:
        chunks.append({"id": c.id, "object": "chat.completion.chunk", "created": c.created, "model": c.model,
                       "system_fingerprint": "fp_standin", "choices": [], "usage": c.usage()})
    return chunks


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}\0{text}".encode()).digest()
        counter += 1
    values = [(int.from_bytes(raw[i * 4:i * 4 + 4], "big") / 0xFFFFFFFF) * 2 - 1 for i in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


def embed(body: Mapping[str, object], dimensions: int) -> dict[str, object]:
    """The embeddings response for ``body``. Pure; InvalidRequest for bad input."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", "model")
    given = body.get("input")
    if isinstance(given, str):
        inputs: list[str] = [given]
    elif isinstance(given, list) and given and all(isinstance(x, str) for x in given):
        inputs = [str(x) for x in given]
    elif isinstance(given, list) and given and all(isinstance(x, int) and not isinstance(x, bool) for x in given):
        inputs = [" ".join(str(x) for x in given)]
    else:
        raise InvalidRequest("input must be a string, an array of strings or an array of tokens", "input")
    wanted = body.get("dimensions", dimensions)
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= 4096:
        raise InvalidRequest("dimensions must be an integer within 1..4096", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be float or base64", "encoding_format")
    data: list[dict[str, object]] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, wanted)
        value: object = (base64.b64encode(struct.pack(f"<{wanted}f", *vector)).decode()
                         if encoding == "base64" else vector)
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(max(1, len(words(text))) for text in inputs)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def openai_error(status: int, message: str, type_: str, code: str | None = None,
                 param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": type_, "param": param, "code": code}},
                             status=status)


# --- the server --------------------------------------------------------------------------


def sse(event: Mapping[str, object] | str) -> bytes:
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _admit(request: web.Request, model_state: StandInModel, *, costly: bool) -> object | web.Response:
    """Count and record the call, check the key, apply latency/hang/failure; the JSON body."""
    config = model_state.config
    model_state.calls[request.path] += 1
    body: object = None
    if request.method == "POST":
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            return openai_error(413, "request body too large", "invalid_request_error")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
    model_state.requests.append(RecordedRequest(
        request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body))
    del model_state.requests[:-MAX_RECORDED]
    if config.api_key is not None and request.headers.get("Authorization") != f"Bearer {config.api_key}":
        return openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    if costly:
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        if config.hang:
            await model_state._unhang.wait()
            return openai_error(503, "The server is shutting down.", "server_error")
        failure = model_state.draw_failure()
        if failure is not None:
            return openai_error(failure, "The server had an error while processing your request.", "server_error")
    if request.method == "POST" and not isinstance(body, dict):
        return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    return body


def _known_model(model_state: StandInModel, body: Mapping[str, object]) -> web.Response | None:
    model = body.get("model")
    models = model_state.config.models
    if isinstance(model, str) and models and model not in models:
        return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                            "invalid_request_error", "model_not_found")
    return None


async def _admit_costly(request: web.Request, model_state: StandInModel) -> dict[str, object] | web.Response:
    """A completion or embedding request admitted (key, latency, failures, JSON) for a known model."""
    body = await _admit(request, model_state, costly=True)
    if isinstance(body, web.Response):
        return body
    assert isinstance(body, dict)
    return _known_model(model_state, body) or body


async def chat_completions(request: web.Request) -> web.StreamResponse:
    model_state = request.app[STATE]
    body = await _admit_costly(request, model_state)
    if isinstance(body, web.Response):
        return body
    try:
        completion = complete(body, name=model_state.config.name, id=model_state.next_id("chatcmpl"),
                              created=int(time.time()))
    except InvalidRequest as e:
        return openai_error(400, e.message, "invalid_request_error", None, e.param)
    if body.get("stream") is not True:
        return web.json_response(completion_json(completion))
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    delay = model_state.config.chunk_delay_ms / 1000
    for index, chunk in enumerate(completion_chunks(completion, include_usage=include_usage)):
        await response.write(sse(chunk))
        if index == 1 and model_state.stream_gate is not None:
            await model_state.stream_gate.wait()
        elif delay:
            await asyncio.sleep(delay)
    await response.write(sse("[DONE]"))
    await response.write_eof()
    return response


async def embeddings(request: web.Request) -> web.Response:
    model_state = request.app[STATE]
    body = await _admit_costly(request, model_state)
    if isinstance(body, web.Response):
        return body
    try:
        return web.json_response(embed(body, model_state.config.embedding_dimensions))
    except InvalidRequest as e:
        return openai_error(400, e.message, "invalid_request_error", None, e.param)


async def list_models(request: web.Request) -> web.Response:
    model_state = request.app[STATE]
    refused = await _admit(request, model_state, costly=False)
    if isinstance(refused, web.Response):
        return refused
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 1700000000, "owned_by": model_state.config.name}
        for name in model_state.config.models
    ]})


def create_model_app(config: ModelConfig | None = None, *, state: StandInModel | None = None) -> web.Application:
    """The stand-in's aiohttp app; its state is ``app[STATE]`` (or ``state`` when given)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = state if state is not None else StandInModel(config or ModelConfig())
    app.on_shutdown.append(_unhang_now)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    return app


async def _unhang_now(app: web.Application) -> None:
    app[STATE]._unhang.set()


@asynccontextmanager
async def serving_model(config: ModelConfig | None = None, *, host: str = "127.0.0.1",
                        port: int = 0) -> AsyncIterator[StandInModel]:
    """Serve a stand-in on ``host``:``port`` (0: a free port) until the block ends."""
    model_state = StandInModel(config or ModelConfig(), host=host)
    runner = web.AppRunner(create_model_app(state=model_state), handler_cancellation=True, access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                model_state.port = int(address[1])
                break
        yield model_state
    finally:
        model_state._unhang.set()
        if model_state.stream_gate is not None:
            model_state.stream_gate.set()
        await runner.cleanup()
