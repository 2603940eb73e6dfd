"""The bundled example agent: the smallest agent that shows what the sidecar does for one.

It is what a user's agent looks like behind agentgov: it never sees a caller's token or an
upstream key, it talks only to the sidecar's egress port, and it hands back the execution id
the sidecar gave it so its model and tool calls are charged to the caller who asked.

``POST /run`` with ``{"prompt": str, "model"?: str, "maxTokens"?: int, "temperature"?: number,
"dataClass"?: str, "tool"?: str, "toolPath"?: str}``:

1. one chat completion through ``$OPENAI_BASE_URL`` (the sidecar), carrying
   ``X-Agentgov-Execution-Id`` (and ``X-Agentgov-Data-Class`` when given);
2. when ``tool`` is given, one ``GET $AGENTGOV_TOOLS_URL/<tool>/<toolPath>``;
3. answers ``{"answer", "model", "usage", "cache", "region", "costUsd", "tool"}``.

An error from the sidecar (budget exceeded, breaker open, region not allowed...) is returned
to the caller with the sidecar's status and JSON body unchanged, so the caller learns exactly
which policy refused. ``GET /healthz`` answers 200. Used by ``agentgov demo`` and the tests;
the container image for it is built from the same module.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

EXECUTION_ID = "X-Agentgov-Execution-Id"
DATA_CLASS = "X-Agentgov-Data-Class"
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class AgentConfig:
    openai_base_url: str
    tools_url: str | None
    default_model: str = "gpt-4o-mini"
    timeout_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AgentConfig:
        base = environ.get("OPENAI_BASE_URL")
        if not base:
            raise ValueError("OPENAI_BASE_URL is not set (the sidecar's egress URL, e.g. http://127.0.0.1:8081/v1)")
        return cls(openai_base_url=base.rstrip("/"), tools_url=(environ.get("AGENTGOV_TOOLS_URL") or "").rstrip("/") or None,
                   default_model=environ.get("AGENT_MODEL", cls.default_model))


SESSION = web.AppKey("example_agent_session", aiohttp.ClientSession)
CONFIG = web.AppKey("example_agent_config", AgentConfig)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _task(body: object) -> dict[str, object] | web.Response:
    """The caller's request, checked; or the 400 that says what is wrong."""
    if not isinstance(body, dict):
        return _error(400, "bad_request", "the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _error(400, "bad_request", "`prompt` must be a non-empty string")
    for name, kind in (("model", str), ("dataClass", str), ("tool", str), ("toolPath", str)):
        if name in body and not isinstance(body[name], kind):
            return _error(400, "bad_request", f"`{name}` must be a string")
    for name in ("maxTokens", "temperature"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return _error(400, "bad_request", f"`{name}` must be a number")
    return body


async def run_handler(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    session = request.app[SESSION]
    execution = request.headers.get(EXECUTION_ID)
    if not execution:
        return _error(400, "bad_request", f"no {EXECUTION_ID}: call this agent through its agentgov sidecar")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "body_too_large", f"requests are limited to {MAX_BODY_BYTES} bytes")
    try:
        task = _task(json.loads(raw or b"null"))
    except ValueError:
        return _error(400, "bad_request", "the body is not JSON")
    if isinstance(task, web.Response):
        return task

    headers = {EXECUTION_ID: execution}
    if isinstance(task.get("dataClass"), str):
        headers[DATA_CLASS] = str(task["dataClass"])
    completion: dict[str, object] = {
        "model": task.get("model") or config.default_model,
        "messages": [{"role": "system", "content": "You are a concise research assistant."},
                     {"role": "user", "content": task["prompt"]}],
        "max_tokens": task.get("maxTokens", 256),
    }
    if task.get("temperature") is not None:
        completion["temperature"] = task["temperature"]
    timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
    async with session.post(f"{config.openai_base_url}/chat/completions", json=completion, headers=headers,
                            timeout=timeout) as response:
        body = await response.read()
        if response.status != 200:
            return web.Response(body=body, status=response.status, content_type="application/json")
        answer = json.loads(body)
        result: dict[str, object] = {
            "answer": answer["choices"][0]["message"]["content"],
            "model": answer.get("model"),
            "usage": answer.get("usage"),
            "cache": response.headers.get("X-Agentgov-Cache"),
            "region": response.headers.get("X-Agentgov-Region"),
            "costUsd": response.headers.get("X-Agentgov-Cost-Usd"),
        }
    tool = task.get("tool")
    if isinstance(tool, str):
        if config.tools_url is None:
            return _error(500, "agent_misconfigured", "AGENTGOV_TOOLS_URL is not set")
        path = str(task.get("toolPath") or "")
        async with session.get(f"{config.tools_url}/{tool}/{path}", headers=headers, timeout=timeout) as response:
            tool_body = await response.read()
            if response.status >= 400:
                return web.Response(body=tool_body, status=response.status, content_type="application/json")
            try:
                result["tool"] = json.loads(tool_body)
            except ValueError:
                result["tool"] = tool_body.decode(errors="replace")
            result["toolFallback"] = response.headers.get("X-Agentgov-Fallback")
    return web.json_response(result)


async def health_handler(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_agent_app(config: AgentConfig) -> web.Application:
    app = web.Application()
    app[CONFIG] = config

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/run", run_handler)
    app.router.add_get("/healthz", health_handler)
    return app


def main(environ: Mapping[str, str] = os.environ) -> int:
    """``python -m agentgov.demo.agent`` (the example agent's image): serve on $HOST:$PORT,
    127.0.0.1:8000 by default (only the sidecar in the same pod should reach the agent)."""
    try:
        config = AgentConfig.from_env(environ)
        text = environ.get("PORT", "8000")
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"PORT {text!r} is not a port (1-65535)")
        port = int(text)
    except ValueError as bad:
        print(f"example agent: {bad}", file=sys.stderr)
        return 2
    web.run_app(create_agent_app(config), host=environ.get("HOST", "127.0.0.1"), port=port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
