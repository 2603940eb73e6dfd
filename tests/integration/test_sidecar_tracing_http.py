"""OpenTelemetry traces of a real sidecar, over real OTLP/HTTP: a local receiver (an aiohttp server
accepting ``POST /v1/traces`` protobuf, decoded with the OTLP protos) stands in for the collector;
the official ``openai`` SDK is the agent's client, the stand-in model the upstream, the stand-in
agent the agent (and, in the tool test, the tool). Each sidecar has its own tracer provider,
configured by the standard ``OTEL_*`` variables set for the test only.

What is checked: the spans of an inbound request and of the model and tool calls it leads to
arrive in one trace with the attributes the docs promise; ``traceparent`` reaches the agent, the
model upstream and the tool; nothing secret (a prompt, the model key, the caller's token, the
raw user id) is in the exported bytes; a collector that is down, or OpenTelemetry not being
installed, costs no request.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentgov.api.bundle import BundleTool
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.demo.model import ModelConfig, StandInModel, serving_model
from agentgov.sidecar.headers import EXECUTION_ID
from agentgov.sidecar.metrics import user_hash
from agentgov.sidecar.tracing import TRACING
from harness.waiting import async_wait_for
from sidecar_support import (
    HMAC_SECRET, MODEL_KEY, bearer, claims, egress_sidecar, execution_id, free_port, make_bundle, model_route,
    openai_client, running_agent, sign, with_egress,
)

USER = 'canary-user-7f3a91'
TOKEN = sign(claims(user=USER, role='analyst'))
CALLER = bearer(TOKEN)
PROMPT = 'CANARY-PROMPT-5d21e0 what is the capital of France?'
MESSAGES = [{'role': 'user', 'content': PROMPT}]
CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
CALLER_SPAN = '00f067aa0ba902b7'
CALLER_TRACEPARENT = f'00-{CALLER_TRACE}-{CALLER_SPAN}-01'
OTHER_TRACE = '0af7651916cd43dd8448eb211c80319c'


# --- the local OTLP/HTTP receiver ----------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """One span as the collector received it, with its resource's attributes."""

    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {a.key: _value(a.value) for a in self.span.attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof('value')
    return getattr(value, kind) if kind else None


@dataclass
class Receiver:
    url: str = ''
    bodies: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)

    @property
    def exported(self) -> bytes:
        return b''.join(self.bodies)

    def spans(self) -> list[Exported]:
        out = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    out.extend(Exported(span, resource) for span in scope.spans)
        return out

    def named(self, name: str) -> list[Exported]:
        return [s for s in self.spans() if s.name == name]

    async def wait(self, **counts: int) -> dict[str, list[Exported]]:
        """The spans by name once there are at least ``counts`` of each (``model_call=2``)."""
        async def probe() -> dict[str, list[Exported]]:
            return {name: self.named(f'agentgov.{name}') for name in counts}

        return await async_wait_for(probe, lambda found: all(len(found[n]) >= c for n, c in counts.items()),
                                    what=f'spans {counts}')


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def traces(request: web.Request) -> web.Response:
        receiver.bodies.append(await request.read())
        receiver.content_types.append(request.headers.get('Content-Type', ''))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type='application/x-protobuf')

    app = web.Application()
    app.router.add_post('/v1/traces', traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, '127.0.0.1', 0).start()
    receiver.url = f'http://127.0.0.1:{runner.addresses[0][1]}'
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* variable of the machine's leaks into the test; the test sets its own."""
    import os

    for name in [n for n in os.environ if n.startswith('OTEL_')]:
        monkeypatch.delenv(name)
    yield monkeypatch


def traced_to(env: pytest.MonkeyPatch, receiver: Receiver, *, prompt_export: bool = True) -> None:
    env.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', receiver.url)
    if prompt_export:
        env.setenv('OTEL_BSP_SCHEDULE_DELAY', '50')  # else spans leave every 5 s (and at exit)


def bundle_for(model: StandInModel, *tools: BundleTool, endpoint: str | None = None) -> Any:
    bundle = make_bundle(tools=tools)
    return with_egress(bundle, [model_route('fast', endpoint or model.url, upstream_model='gpt-4o-mini')])


def received(echo: Any, name: str) -> str | None:
    """A header the stand-in agent says it received (names compared case-insensitively)."""
    return next((v for k, v in echo['headers'].items() if k.lower() == name), None)


def traceparent_parts(value: str | None) -> tuple[str, str]:
    assert value is not None
    version, trace, span, flags = value.split('-')
    assert version == '00' and int(flags, 16) & 1, value  # sampled (bit 2: a random trace id)
    return trace, span


# --- tests --------------------------------------------------------------------------------


async def test_an_agent_request_and_its_model_calls_are_one_trace_flushed_when_the_sidecar_stops(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as receiver, serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        traced_to(otel_env, receiver, prompt_export=False)  # spans leave at exit: the flush is tested
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, agent):
            status, body, _ = await sidecar.request('POST', '/v1/run', json={'task': 'x'},
                                                    headers={**CALLER, 'traceparent': CALLER_TRACEPARENT})
            assert status == 200
            execution = body['headers']['X-Agentgov-Execution-Id']
            client = openai_client(sidecar, execution)
            first = await client.chat.completions.with_raw_response.create(
                model='fast', messages=MESSAGES, max_tokens=50, temperature=0)
            completion = first.parse()
            again = await client.chat.completions.with_raw_response.create(
                model='fast', messages=MESSAGES, max_tokens=50, temperature=0)
            assert again.headers['X-Agentgov-Cache'] == 'hit'
            to_agent = received(body, 'traceparent')
            to_model = model.requests[-1].headers['traceparent']
        spans = {name: receiver.named(f'agentgov.{name}') for name in ('agent_request', 'model_call')}

    [inbound] = spans['agent_request']
    miss, hit = sorted(spans['model_call'], key=lambda s: s.span.start_time_unix_nano)
    # One trace, continuing the caller's: caller -> agent request -> model calls (via the execution id).
    assert (inbound.trace_id, inbound.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    assert inbound.span.kind == Span.SPAN_KIND_SERVER
    assert (miss.trace_id, miss.parent_id) == (CALLER_TRACE, inbound.span_id)
    assert (hit.trace_id, hit.parent_id) == (CALLER_TRACE, inbound.span_id)
    # The agent and the model upstream got the traceparent of the span they were called under.
    assert traceparent_parts(to_agent) == (CALLER_TRACE, inbound.span_id)
    assert traceparent_parts(to_model) == (CALLER_TRACE, miss.span_id)

    assert inbound.attributes == {
        'http.request.method': 'POST', 'http.response.status_code': 200, 'agentgov.execution_id': execution,
        'agentgov.request_id': body['headers']['X-Agentgov-Request-Id'], 'agentgov.user_hash': user_hash(USER)}
    assert completion.usage is not None
    expected_miss = {
        'http.request.method': 'POST', 'http.response.status_code': 200, 'agentgov.execution_id': execution,
        'agentgov.user_hash': user_hash(USER), 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'fast',
        'gen_ai.response.model': 'gpt-4o-mini', 'gen_ai.usage.input_tokens': completion.usage.prompt_tokens,
        'gen_ai.usage.output_tokens': completion.usage.completion_tokens, 'agentgov.route': 'fast',
        'agentgov.cache': 'miss', 'agentgov.cost_usd': pytest.approx(float(first.headers['X-Agentgov-Cost-Usd'])),
        'agentgov.attempts': 1}
    assert {k: v for k, v in miss.attributes.items() if k != 'agentgov.request_id'} == expected_miss
    assert miss.attributes['agentgov.request_id'].startswith('req_')
    assert hit.attributes['agentgov.cache'] == 'hit' and hit.attributes['agentgov.cost_usd'] == 0.0
    assert 'agentgov.route' in hit.attributes and 'agentgov.attempts' not in hit.attributes
    for span in (inbound, miss, hit):
        assert span.span.status.code == Status.STATUS_CODE_UNSET
        assert span.resource['service.name'] == 'agentgov-sidecar'
        assert span.resource['agentgov.agent'] == 'research/research-assistant'
    assert receiver.content_types and set(receiver.content_types) == {'application/x-protobuf'}
    # Nothing secret left the pod with the spans.
    exported = receiver.exported
    answer = completion.choices[0].message.content
    assert answer
    for canary in (PROMPT, 'CANARY-PROMPT', answer, MODEL_KEY, TOKEN, USER, HMAC_SECRET.decode(),
                   'agent-side-unused-key'):
        assert canary.encode() not in exported, canary


async def test_a_streamed_call_carries_its_final_usage_and_the_service_name_can_be_set(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as receiver, serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        traced_to(otel_env, receiver)
        otel_env.setenv('OTEL_SERVICE_NAME', 'research-sidecar')
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, CALLER))
            stream = await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=50, stream=True,
                                                          stream_options={'include_usage': True})
            usage = [chunk.usage async for chunk in stream if chunk.usage is not None]
            found = await receiver.wait(model_call=1)
    [span] = found['model_call']
    assert len(usage) == 1
    assert span.attributes['gen_ai.usage.input_tokens'] == usage[0].prompt_tokens
    assert span.attributes['gen_ai.usage.output_tokens'] == usage[0].completion_tokens
    assert span.resource['service.name'] == 'research-sidecar'
    assert PROMPT.encode() not in receiver.exported


async def test_an_agent_that_propagates_its_own_context_is_the_parent_another_trace_is_only_linked(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as receiver, serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        traced_to(otel_env, receiver)
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
            status, body, _ = await sidecar.request('POST', '/v1/run', json={}, headers={**CALLER,
                                                                                        'traceparent': CALLER_TRACEPARENT})
            execution = body['headers']['X-Agentgov-Execution-Id']
            agent_span = 'a1b2c3d4e5f60718'
            same = openai_client(sidecar, execution, traceparent=f'00-{CALLER_TRACE}-{agent_span}-01')
            await same.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            other = openai_client(sidecar, execution, traceparent=f'00-{OTHER_TRACE}-{agent_span}-01')
            await other.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            garbled = openai_client(sidecar, execution, traceparent='00-' + 'z' * 32 + '-' + '0' * 16 + '-01')
            await garbled.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            found = await receiver.wait(agent_request=1, model_call=3)
    [inbound] = found['agent_request']
    within, elsewhere, ignored = sorted(found['model_call'], key=lambda s: s.span.start_time_unix_nano)
    # A traceparent that is not one is ignored: the execution's span is the parent.
    assert (ignored.trace_id, ignored.parent_id) == (CALLER_TRACE, inbound.span_id) and not ignored.span.links
    assert (within.trace_id, within.parent_id) == (CALLER_TRACE, agent_span)
    assert not within.span.links
    assert (elsewhere.trace_id, elsewhere.parent_id) == (CALLER_TRACE, inbound.span_id)
    [link] = elsewhere.span.links
    assert (link.trace_id.hex(), link.span_id.hex()) == (OTHER_TRACE, agent_span)


async def test_a_model_call_without_an_execution_span_or_context_starts_its_own_trace(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    """An execution id this sidecar never issued and no traceparent: nothing to join, so a root
    span; its 403 is the caller's error, not the server's."""
    async with otlp_receiver() as receiver, serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        traced_to(otel_env, receiver)
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
            client = openai_client(sidecar, 'exe_not-issued-here')
            with pytest.raises(Exception) as raised:
                await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            found = await receiver.wait(model_call=1)
    assert getattr(raised.value, 'status_code', None) == 403
    [span] = found['model_call']
    assert span.parent_id == ''
    assert span.attributes['agentgov.error_code'] == 'unknown_execution'
    assert span.attributes['http.response.status_code'] == 403
    assert 'agentgov.execution_id' not in span.attributes and 'agentgov.user_hash' not in span.attributes
    assert span.span.status.code == Status.STATUS_CODE_UNSET  # a 4xx is the caller's error


async def test_a_failing_upstream_makes_the_model_call_span_an_error_with_its_code(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as receiver, serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        traced_to(otel_env, receiver)
        down = f'http://127.0.0.1:{free_port()}/v1'
        async with egress_sidecar(tmp_path, bundle_for(model, endpoint=down)) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, CALLER))
            with pytest.raises(Exception) as raised:
                await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            found = await receiver.wait(model_call=1)
    assert getattr(raised.value, 'status_code', None) == 502
    [span] = found['model_call']
    assert span.span.status.code == Status.STATUS_CODE_ERROR
    assert span.span.status.message == 'upstream_unavailable'
    assert span.attributes['agentgov.error_code'] == 'upstream_unavailable'
    assert span.attributes['http.response.status_code'] == 502
    assert span.attributes['agentgov.attempts'] == 3  # connection refused: retried twice


async def test_a_tool_call_is_a_span_of_the_execution_and_the_tool_gets_its_traceparent(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with otlp_receiver() as receiver, serving_model() as model, running_agent() as tool_server:
        traced_to(otel_env, receiver)
        search = BundleTool(name='search', upstream=f'http://127.0.0.1:{tool_server.port}/search',
                            permission='tool:read', timeout_seconds=5, circuit_breaker=CircuitBreaker())
        async with egress_sidecar(tmp_path, bundle_for(model, search)) as (sidecar, _):
            status, body, _ = await sidecar.request('POST', '/v1/run', json={}, headers=CALLER)
            execution = body['headers']['X-Agentgov-Execution-Id']
            # The agent's own traceparent (another trace) is replaced by the sidecar's.
            status, _, _ = await sidecar.egress('GET', '/tools/search/q?term=x', headers={
                EXECUTION_ID: execution, 'traceparent': f'00-{OTHER_TRACE}-a1b2c3d4e5f60718-01'})
            assert status == 200
            status, _, _ = await sidecar.egress('GET', '/tools/nonexistent/x', headers={EXECUTION_ID: execution})
            assert status == 404
            found = await receiver.wait(agent_request=1, tool_call=2)
    [inbound] = found['agent_request']
    called, unknown = sorted(found['tool_call'], key=lambda s: s.span.start_time_unix_nano)
    assert (called.trace_id, called.parent_id) == (inbound.trace_id, inbound.span_id)
    assert {k: v for k, v in called.attributes.items() if k != 'agentgov.request_id'} == {
        'http.request.method': 'GET', 'http.response.status_code': 200, 'agentgov.execution_id': execution,
        'agentgov.user_hash': user_hash(USER), 'agentgov.tool': 'search', 'agentgov.tool.called': 'search',
        'agentgov.breaker': 'closed'}
    sent = dict((k.lower(), v) for k, v in tool_server.requests[-1]['headers'])
    assert traceparent_parts(sent['traceparent']) == (inbound.trace_id, called.span_id)
    assert unknown.attributes['agentgov.error_code'] == 'tool_not_found'
    assert unknown.attributes['http.response.status_code'] == 404
    assert 'agentgov.tool' not in unknown.attributes  # a name the agent made up is not repeated


async def test_requests_succeed_while_the_collector_is_down_and_the_sidecar_still_stops(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    otel_env.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', f'http://127.0.0.1:{free_port()}')
    otel_env.setenv('OTEL_BSP_SCHEDULE_DELAY', '20')
    otel_env.setenv('OTEL_EXPORTER_OTLP_TIMEOUT', '1')
    async with serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
            assert TRACING in sidecar.app
            client = openai_client(sidecar, await execution_id(sidecar, CALLER))
            for _ in range(5):
                completion = await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
                assert completion.choices[0].message.content
            assert 'traceparent' in model.requests[-1].headers
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
    assert stopped_in < 5, f'the sidecar took {stopped_in:.1f}s to stop with the collector down'


async def test_an_endpoint_without_opentelemetry_installed_warns_once_and_serves_untraced(
        tmp_path: Path, otel_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    otel_env.setenv('OTEL_EXPORTER_OTLP_ENDPOINT', f'http://127.0.0.1:{free_port()}')
    # The exporter package missing: its import fails the way it does when it is not installed.
    otel_env.setitem(sys.modules, 'opentelemetry.exporter.otlp.proto.http.trace_exporter', None)
    caplog.set_level(logging.WARNING, logger='agentgov.sidecar.tracing')
    async with serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, agent):
            assert TRACING not in sidecar.app
            client = openai_client(sidecar, await execution_id(sidecar, CALLER))
            await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            assert 'traceparent' not in model.requests[-1].headers
    warnings = [r.getMessage() for r in caplog.records if r.name == 'agentgov.sidecar.tracing']
    assert len(warnings) == 1
    assert 'OTEL_EXPORTER_OTLP_ENDPOINT' in warnings[0] and "pip install 'agentgov[otel]'" in warnings[0]


async def test_without_an_endpoint_nothing_is_traced_and_the_callers_traceparent_passes_through(
        tmp_path: Path, otel_env: pytest.MonkeyPatch) -> None:
    async with serving_model(ModelConfig(api_key=MODEL_KEY)) as model:
        async with egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
            assert TRACING not in sidecar.app
            status, body, _ = await sidecar.request('POST', '/v1/run', json={}, headers={
                **CALLER, 'traceparent': CALLER_TRACEPARENT})
            assert received(body, 'traceparent') == CALLER_TRACEPARENT  # the proxy is transparent
            client = openai_client(sidecar, body['headers']['X-Agentgov-Execution-Id'])
            await client.chat.completions.create(model='fast', messages=MESSAGES, max_tokens=5)
            assert 'traceparent' not in model.requests[-1].headers
