"""Tracing's pure parts: when it is on and where spans go, the resource, the attributes a span gets
from a model or tool call (and what it must never get), error status, where an egress span hangs,
and the per-app Tracing (its own provider, never the global one; the execution map's bound; the
header injection)."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

from agentgov.sidecar.egress import Outcome
from agentgov.sidecar.metrics import user_hash
from agentgov.sidecar.tracing import (
    SERVICE_NAME, Tracing, TracingConfig, egress_parent, is_error, model_call_attributes, request_attributes,
    resource_attributes, shown_endpoint, start_tracing, tool_call_attributes, tracing_config, upstream_broke,
)

BASE = 'http://collector.observability:4318'


@pytest.mark.parametrize('environ, expected', [
    ({}, None),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': '  '}, None),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE}, TracingConfig(f'{BASE}/v1/traces')),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE + '/'}, TracingConfig(f'{BASE}/v1/traces')),
    ({'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT': 'https://otlp.example.com/custom/path'},
     TracingConfig('https://otlp.example.com/custom/path')),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT': 'http://traces:4318/t'},
     TracingConfig('http://traces:4318/t')),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_SDK_DISABLED': 'TRUE'}, None),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_SDK_DISABLED': 'false'}, TracingConfig(f'{BASE}/v1/traces')),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_TRACES_EXPORTER': 'none'}, None),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_EXPORTER_OTLP_PROTOCOL': 'http/protobuf'},
     TracingConfig(f'{BASE}/v1/traces')),
    ({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_EXPORTER_OTLP_PROTOCOL': 'grpc'},
     TracingConfig(f'{BASE}/v1/traces', 'grpc')),
], ids=[
    'nothing set is off', 'a blank endpoint is off', 'the general endpoint gets /v1/traces',
    'a trailing slash is not doubled', 'the traces endpoint is used as is', 'the traces endpoint wins',
    'the sdk disabled is off', 'the sdk not disabled is on', 'the exporter none is off',
    'http protobuf is what is spoken', 'grpc is noted as unsupported',
])
def test_when_tracing_is_on_and_where_spans_go(environ: dict[str, str], expected: TracingConfig | None) -> None:
    assert tracing_config(environ) == expected


@pytest.mark.parametrize('endpoint, shown', [
    ('https://user:pa55@otlp.example.com:4318/v1/traces?key=abc#x', 'https://otlp.example.com:4318/v1/traces'),
    ('http://collector:4318/v1/traces', 'http://collector:4318/v1/traces'),
], ids=['credentials and query are not logged', 'a plain endpoint is shown as is'])
def test_the_logged_endpoint_carries_no_credentials(endpoint: str, shown: str) -> None:
    assert shown_endpoint(endpoint) == shown


@pytest.mark.parametrize('environ, agent, expected', [
    ({}, 'research/assistant', {'service.name': SERVICE_NAME, 'agentgov.agent': 'research/assistant'}),
    ({}, None, {'service.name': SERVICE_NAME}),
    ({'OTEL_SERVICE_NAME': 'custom'}, 'a/b', {'agentgov.agent': 'a/b'}),
    ({'OTEL_RESOURCE_ATTRIBUTES': 'team=ml, service.name=from-attrs'}, 'a/b', {'agentgov.agent': 'a/b'}),
    ({'OTEL_RESOURCE_ATTRIBUTES': 'service.namespace=x'}, 'a/b', {'service.name': SERVICE_NAME, 'agentgov.agent': 'a/b'}),
], ids=['the default service name and the agent', 'no bundle yet: no agent', 'otel service name wins',
        'a service name in the resource attributes wins', 'another service attribute is not a name'])
def test_the_resource_names_the_service_and_the_agent(environ: dict[str, str], agent: str | None,
                                                      expected: dict[str, str]) -> None:
    assert resource_attributes(environ, agent) == expected


def test_a_model_call_maps_to_genai_and_agentgov_attributes() -> None:
    outcome = Outcome(status=200, route='fast', upstream_model='gpt-4o-mini', region='eu-west-1', cache='miss',
                      input_tokens=12, output_tokens=7, cost_usd=0.0000123456789, attempts=1, fallback='route')
    assert model_call_attributes('chat', 'fast', outcome) == {
        'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'fast', 'gen_ai.response.model': 'gpt-4o-mini',
        'gen_ai.usage.input_tokens': 12, 'gen_ai.usage.output_tokens': 7, 'agentgov.route': 'fast',
        'agentgov.region': 'eu-west-1', 'agentgov.cache': 'miss', 'agentgov.cost_usd': 0.000012,
        'agentgov.attempts': 1, 'agentgov.fallback': 'route'}


def test_a_refused_call_has_only_what_is_known_and_its_code() -> None:
    outcome = Outcome(status=429, code='budget_exceeded')
    assert model_call_attributes('embeddings', 'fast', outcome) == {
        'gen_ai.operation.name': 'embeddings', 'gen_ai.request.model': 'fast', 'agentgov.cache': 'miss',
        'agentgov.cost_usd': 0.0, 'agentgov.error_code': 'budget_exceeded'}


@pytest.mark.parametrize('model', [
    'What is the capital of France? my password is hunter2', 'x' * 129, 'model\nwith newline', '', None,
], ids=['a prompt sent as the model', 'an overlong name', 'a control character', 'empty', 'none'])
def test_a_model_name_unfit_to_repeat_is_left_off(model: str | None) -> None:
    attributes = model_call_attributes('chat', model, Outcome(status=404, code='model_not_found'))
    assert 'gen_ai.request.model' not in attributes
    assert all(model is None or model == '' or model not in str(v) for v in attributes.values())


def test_the_answer_and_request_bodies_are_never_attributes() -> None:
    secret = 'the answer text with sk-live-0123456789abcdef'
    outcome = Outcome(status=200, route='fast', answer={'choices': [{'message': {'content': secret}}]})
    assert secret not in repr(model_call_attributes('chat', 'fast', outcome))


@pytest.mark.parametrize('aborted, code, broke', [
    (None, None, False),
    ('the upstream ended the stream without [DONE]', 'upstream_bad_response', True),
    ('the agent disconnected', None, False),
    ('the agent disconnected', 'client_disconnected', False),
], ids=['a complete call', 'the upstream broke the stream', 'the agent went away mid-stream',
        'the agent went away before the answer'])
def test_only_an_upstream_breaking_the_answer_counts_as_its_failure(aborted: str | None, code: str | None,
                                                                    broke: bool) -> None:
    assert upstream_broke(Outcome(status=200, code=code, aborted=aborted)) is broke


@pytest.mark.parametrize('status, upstream_failed, error', [
    (200, False, False), (404, False, False), (429, False, False), (499, False, False),
    (500, False, True), (502, False, True), (504, False, True), (None, False, False), (200, True, True),
], ids=['ok', 'not found is the callers', 'budget exceeded is the callers', 'any 4xx is the callers',
        'internal error', 'bad gateway', 'gateway timeout', 'no status (the caller left)',
        'a 200 the upstream broke off'])
def test_span_status_is_error_for_5xx_and_broken_answers(status: int | None, upstream_failed: bool,
                                                         error: bool) -> None:
    assert is_error(status, upstream_failed) is error


def test_request_attributes_carry_ids_and_the_users_hash_never_the_user() -> None:
    attributes = request_attributes('POST', 200, None, execution_id='exe_1', request_id='req_1',
                                    user='alice@example.com')
    assert attributes == {'http.request.method': 'POST', 'http.response.status_code': 200,
                          'agentgov.execution_id': 'exe_1', 'agentgov.request_id': 'req_1',
                          'agentgov.user_hash': user_hash('alice@example.com')}
    assert 'alice' not in repr(attributes)
    assert request_attributes('GET', None, 'client_disconnected', execution_id=None, request_id=None, user=None) == {
        'http.request.method': 'GET', 'agentgov.error_code': 'client_disconnected'}


def test_tool_call_attributes_name_the_tool_the_answerer_and_the_fallback() -> None:
    assert tool_call_attributes('search', called='backup', fallback='tool:backup', breaker='open', error=None) == {
        'agentgov.tool': 'search', 'agentgov.tool.called': 'backup', 'agentgov.fallback': 'tool:backup',
        'agentgov.breaker': 'open'}


def context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


INBOUND = context(0xA, 0x1)
AGENT_SAME = context(0xA, 0x2)
AGENT_OTHER = context(0xB, 0x3)


@pytest.mark.parametrize('agent, execution, parent, link', [
    (None, None, None, None),
    (None, INBOUND, INBOUND, None),
    (AGENT_SAME, INBOUND, AGENT_SAME, None),
    (AGENT_OTHER, INBOUND, INBOUND, AGENT_OTHER),
    (AGENT_OTHER, None, AGENT_OTHER, None),
], ids=['nothing known: a root span', 'only the execution: its inbound span',
        'the agent continues the execution trace: its span', 'the agent sent another trace: linked only',
        'no execution span: the agents context'])
def test_where_an_egress_span_hangs(agent: SpanContext | None, execution: SpanContext | None,
                                    parent: SpanContext | None, link: SpanContext | None) -> None:
    assert egress_parent(agent, execution) == (parent, link)


def test_without_an_endpoint_there_is_no_tracer() -> None:
    assert start_tracing({}, agent='a/b', max_executions=10) is None
    assert start_tracing({'OTEL_EXPORTER_OTLP_ENDPOINT': BASE, 'OTEL_SDK_DISABLED': 'true'}, agent='a/b',
                         max_executions=10) is None


WITHOUT_OPENTELEMETRY = """
import logging, sys

class Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name == 'opentelemetry' or name.startswith('opentelemetry.'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
logging.basicConfig(level=logging.WARNING, format='%(name)s %(message)s')
from agentgov.sidecar.app import create_app
from agentgov.sidecar.settings import Settings
from agentgov.sidecar.tracing import start_tracing
create_app(Settings())
assert start_tracing({}, agent=None, max_executions=1) is None
assert start_tracing({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://collector:4318'}, agent=None, max_executions=1) is None
assert not [m for m in sys.modules if m.startswith('opentelemetry')]
print('untraced')
"""


def test_the_sidecar_imports_and_runs_untraced_without_opentelemetry_installed() -> None:
    done = subprocess.run([sys.executable, '-c', WITHOUT_OPENTELEMETRY], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'untraced'
    warnings = [line for line in done.stderr.splitlines() if line.startswith('agentgov.sidecar.tracing')]
    assert len(warnings) == 1 and "pip install 'agentgov[otel]'" in warnings[0], done.stderr


@pytest.fixture
async def tracing(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv('OTEL_EXPORTER_OTLP_TIMEOUT', '0.2')  # nothing listens: give up exporting quickly
    made = start_tracing({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:9'}, agent='research/assistant',
                         max_executions=3)
    assert made is not None
    yield made
    await made.shutdown()


async def test_each_app_has_its_own_provider_never_the_global_one(tracing: Tracing) -> None:
    global_provider = trace.get_tracer_provider()
    assert tracing.provider is not global_provider
    assert tracing.provider.resource.attributes['agentgov.agent'] == 'research/assistant'
    assert trace.get_tracer_provider() is global_provider
    other = start_tracing({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:9'}, agent=None, max_executions=3)
    assert other is not None and other.provider is not tracing.provider
    await other.shutdown()


async def test_the_execution_map_keeps_only_the_newest_executions(tracing: Tracing) -> None:
    for n in range(1, 6):
        tracing.remember(f'exe_{n}', context(n, n))
    assert len(tracing) == 3
    assert tracing.execution_span('exe_1') is None and tracing.execution_span('exe_2') is None
    assert tracing.execution_span('exe_5') == context(5, 5)


async def test_injection_replaces_any_trace_context_with_the_current_spans(tracing: Tracing) -> None:
    headers: CIMultiDict[str] = CIMultiDict([('TraceParent', '00-' + 'b' * 32 + '-' + 'c' * 16 + '-01'),
                                             ('tracestate', 'agent=1'), ('Accept', 'application/json')])
    with tracing.tracer.start_as_current_span('agentgov.model_call') as span:
        tracing.inject(headers)
        ids = span.get_span_context()
    assert headers.getall('traceparent') == [f'00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}']
    assert 'tracestate' not in headers and headers['Accept'] == 'application/json'


async def test_outside_a_span_injection_only_removes_what_the_agent_sent(tracing: Tracing) -> None:
    headers: CIMultiDict[str] = CIMultiDict([('traceparent', '00-' + 'b' * 32 + '-' + 'c' * 16 + '-01')])
    tracing.inject(headers)
    assert 'traceparent' not in headers
