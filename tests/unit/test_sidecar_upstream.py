"""The pure parts of the model upstream client and the egress request checks: the body sent
upstream, usage parsing, the incremental SSE assembler, replaying a cached answer as SSE, and
the request checks and routing helpers of the egress port."""
from __future__ import annotations

import json
from typing import Any

import pytest

from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.demo.model import complete, completion_chunks, completion_json, sse
from agentgov.sidecar.egress import (
    candidate_routes, check_body, find_route, parse_json_object, request_status, route_timeout_seconds, show_name,
)
from agentgov.sidecar.errors import BadRequest, ModelNotFound
from agentgov.sidecar.upstream import (
    StreamAssembler, Target, UpstreamFailure, completion_to_sse, request_headers, upstream_body, usage_of,
)
from sidecar_support import make_bundle, model_route, with_egress

HELLO = [{'role': 'user', 'content': 'hello there'}]


def stream_bytes(body: dict[str, Any], include_usage: bool = True) -> bytes:
    completion = complete(body, name='t', id='chatcmpl-1', created=1)
    return b''.join(sse(c) for c in completion_chunks(completion, include_usage=include_usage)) + sse('[DONE]')


@pytest.mark.parametrize('given, stream, expected_options', [
    ({}, True, {'include_usage': True}),
    ({'stream_options': {'include_usage': False}}, True, {'include_usage': True}),
    ({'stream_options': {'include_obfuscation': False}}, True, {'include_obfuscation': False, 'include_usage': True}),
    ({}, False, None),
], ids=['a stream gets include_usage', 'an agent that refused usage still gets it asked upstream',
        'other stream options are kept', 'a plain call is left alone'])
def test_the_upstream_body_names_the_upstream_model_and_asks_for_stream_usage(
        given: dict[str, Any], stream: bool, expected_options: dict[str, Any] | None) -> None:
    body = {'model': 'fast', 'messages': HELLO, **given}
    sent = upstream_body(body, 'gpt-4o-mini', stream=stream)
    assert sent['model'] == 'gpt-4o-mini' and sent['messages'] == HELLO
    assert sent.get('stream_options') == expected_options
    assert body['model'] == 'fast'  # the agent's body is not changed


def test_the_upstream_gets_only_the_sidecars_headers() -> None:
    assert request_headers('sk-key', stream=True) == {
        'Content-Type': 'application/json', 'Accept': 'text/event-stream', 'User-Agent': 'agentgov-sidecar',
        'Authorization': 'Bearer sk-key'}
    assert 'Authorization' not in request_headers(None, stream=False)


def test_a_target_never_shows_its_key() -> None:
    target = Target('fast', 'http://x/v1/', 'gpt-4o-mini', 'sk-secret-value', 5.0)
    assert 'sk-secret-value' not in repr(target)
    assert target.url('chat') == 'http://x/v1/chat/completions' and target.url('embeddings') == 'http://x/v1/embeddings'


@pytest.mark.parametrize('answer, expected', [
    ({'usage': {'prompt_tokens': 3, 'completion_tokens': 4}}, (3, 4)),
    ({'usage': {'prompt_tokens': 3, 'total_tokens': 3}}, (3, 0)),
    ({'usage': None}, None),
    ({'usage': {'prompt_tokens': -1, 'completion_tokens': 4}}, None),
    ({'usage': {'prompt_tokens': True, 'completion_tokens': 4}}, None),
    ({'usage': {'prompt_tokens': '3', 'completion_tokens': 4}}, None),
    ([], None),
], ids=['chat usage', 'embeddings usage', 'a chunk without usage', 'negative counts', 'booleans', 'strings',
        'not an object'])
def test_usage_is_believed_only_when_well_formed(answer: Any, expected: tuple[int, int] | None) -> None:
    usage = usage_of(answer)
    assert (None if usage is None else (usage.input_tokens, usage.output_tokens)) == expected


@pytest.mark.parametrize('split', [1, 7, 64, 10_000], ids=['byte by byte', 'odd pieces', 'small chunks', 'one piece'])
def test_the_assembler_rebuilds_the_answer_from_any_split_and_passes_events_through(split: int) -> None:
    body = {'model': 'm', 'messages': HELLO}
    data = stream_bytes(body)
    assembler = StreamAssembler(forward_usage_chunk=True)
    out = b''.join(assembler.feed(data[i:i + split]) for i in range(0, len(data), split)) + assembler.finish()
    assert out == data
    expected = completion_json(complete(body, name='t', id='chatcmpl-1', created=1))
    assembled = assembler.completion()
    assert assembled is not None
    assert assembled['choices'][0]['message']['content'] == expected['choices'][0]['message']['content']
    assert assembled['choices'][0]['finish_reason'] == 'stop'
    assert assembler.usage is not None and assembler.usage.output_tokens == expected['usage']['completion_tokens']


def test_the_usage_only_chunk_is_dropped_for_an_agent_that_did_not_ask_for_it() -> None:
    data = stream_bytes({'model': 'm', 'messages': HELLO})
    assembler = StreamAssembler(forward_usage_chunk=False)
    out = assembler.feed(data) + assembler.finish()
    events = [e for e in out.decode().split('\n\n') if e]
    assert len(events) == len([e for e in data.decode().split('\n\n') if e]) - 1
    assert all(json.loads(e[6:])['choices'] for e in events[:-1]) and events[-1] == 'data: [DONE]'
    assert assembler.usage is not None  # still read, for the budget


def test_tool_calls_are_assembled_from_their_fragments() -> None:
    body = {'model': 'm', 'messages': HELLO, 'tool_choice': {'type': 'function', 'function': {'name': 'lookup'}}}
    assembler = StreamAssembler(forward_usage_chunk=True)
    assembler.feed(stream_bytes(body))
    assembled = assembler.completion()
    assert assembled is not None
    call = assembled['choices'][0]['message']['tool_calls'][0]
    assert call['function']['name'] == 'lookup' and json.loads(call['function']['arguments']) == {
        'query': 'hello there'}
    assert assembled['choices'][0]['finish_reason'] == 'tool_calls'


@pytest.mark.parametrize('data', [
    b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\n',
    b'data: {"error": {"message": "overloaded"}}\n\ndata: [DONE]\n\n',
    b'data: not json\n\ndata: [DONE]\n\n',
], ids=['a stream cut before [DONE]', 'an error event', 'a garbled event'])
def test_a_stream_that_did_not_end_cleanly_is_never_cached(data: bytes) -> None:
    assembler = StreamAssembler(forward_usage_chunk=True)
    assert assembler.feed(data) == data
    assert assembler.completion() is None


def test_crlf_separated_events_and_comments_pass_through() -> None:
    data = (b': keep-alive\r\n\r\ndata: {"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", '
            b'"content": "a"}, "finish_reason": "stop"}]}\r\n\r\ndata: [DONE]\r\n\r\n')
    assembler = StreamAssembler(forward_usage_chunk=True)
    assert assembler.feed(data) == data
    assert assembler.completion() == {'object': 'chat.completion', 'id': 'x', 'choices': [
        {'index': 0, 'message': {'role': 'assistant', 'content': 'a'}, 'logprobs': None, 'finish_reason': 'stop'}]}


def test_an_endless_event_is_refused() -> None:
    assembler = StreamAssembler(forward_usage_chunk=True)
    with pytest.raises(UpstreamFailure) as failure:
        assembler.feed(b'data: ' + b'x' * (5 * 1024 * 1024))
    assert failure.value.error.code == 'upstream_bad_response'


@pytest.mark.parametrize('include_usage', [True, False], ids=['with usage', 'without usage'])
def test_a_cached_answer_replays_as_the_stream_openai_would_send(include_usage: bool) -> None:
    body = {'model': 'm', 'messages': HELLO}
    answer = completion_json(complete(body, name='t', id='chatcmpl-1', created=1))
    replay = completion_to_sse(answer, include_usage=include_usage)
    assembler = StreamAssembler(forward_usage_chunk=True)
    assembler.feed(replay)
    rebuilt = assembler.completion()
    assert rebuilt is not None and assembler.done
    assert rebuilt['choices'][0]['message']['content'] == answer['choices'][0]['message']['content']
    assert (assembler.usage is not None) is include_usage


@pytest.mark.parametrize('data, message', [
    (b'{', 'the body is not valid JSON'),
    (b'\xff\xfe', 'the body is not valid JSON'),
    (b'{"t": Infinity}', 'the body is not valid JSON'),
    (b'[1]', 'the body must be a JSON object'),
    (b'[' * 50_000 + b']' * 50_000, 'the body is nested too deeply'),
], ids=['cut short', 'not UTF-8', 'Infinity', 'an array', 'nested too deeply'])
def test_a_body_that_is_not_a_json_object_is_refused_without_echoing_it(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_json_object(data)
    assert refused.value.message == message


@pytest.mark.parametrize('body, message', [
    ({'model': 'e', 'input': []}, 'input must be a string or a non-empty array'),
    ({'model': 'e', 'input': 5}, 'input must be a string or a non-empty array'),
    ({'model': 'e' * 300, 'input': 'x'}, 'model is longer than 256 characters'),
    ({'model': 'e', 'input': ['x'], 'stream': True}, 'stream is not supported for embeddings'),
], ids=['empty input', 'numeric input', 'a huge model name', 'a streamed embedding'])
def test_embeddings_bodies_are_checked(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_body('embeddings', body)
    assert refused.value.message == message


def test_routes_fallbacks_and_timeouts() -> None:
    bundle = with_egress(make_bundle(upstream_timeout_seconds=20), [
        model_route('a', 'http://a/v1', fallbacks=['b', 'missing', 'a', 'b'], breaker=CircuitBreaker(call_timeout_seconds=60)),
        model_route('b', 'http://b/v1'),
    ])
    assert [r.name for r in candidate_routes(bundle, find_route(bundle, 'a'))] == ['a', 'b']
    assert route_timeout_seconds(bundle, find_route(bundle, 'a')) == 20
    assert route_timeout_seconds(bundle, find_route(bundle, 'b')) == 20
    with pytest.raises(ModelNotFound) as missing:
        find_route(bundle, 'sk-proj-secret\nvalue')
    assert missing.value.message == "no model route for the requested model (this agent's routes: a, b)"
    assert show_name('gpt-4o') == "'gpt-4o'"


@pytest.mark.parametrize('status, code, label', [
    (200, None, 'success'), (429, 'budget_exceeded', 'denied'), (403, 'region_not_allowed', 'denied'),
    (503, 'budget_store_unavailable', 'denied'), (503, 'circuit_open', 'error'), (400, 'upstream_400', 'error'),
], ids=['an answer', 'a budget refusal', 'a residency refusal', 'a closed budget store', 'an open breaker',
        'an upstream 400'])
def test_the_playbook_status_label_separates_policy_refusals_from_errors(status: int, code: str | None,
                                                                          label: str) -> None:
    assert request_status(status, code) == label
