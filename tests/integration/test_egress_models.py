"""The egress port for models, over real HTTP: the official ``openai`` SDK as the agent's client,
the real sidecar (both ports), and the stand-in OpenAI-compatible model as the upstream, all on
127.0.0.1. Execution ids are issued the real way (a request through the inbound port to the
stand-in agent). Completions streamed and not, embeddings, the model list, the cache and its
tenant isolation, upstream errors passed through, hostile input, and where keys may and may not
go."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from agentgov.api.agentdeployment import Audit, Cache
from agentgov.demo.model import ModelConfig, StandInModel, serving_model
from harness.waiting import async_wait_for
from sidecar_support import (
    MODEL_KEY, MODEL_KEY_FILE, audit_records, bearer, claims, egress_sidecar, execution_id, make_bundle, model_route, openai_client,
    metric_value, raw_http, sign, with_egress, write_bundle, write_secret,
)
from agentgov.sidecar.context import POLICY
from agentgov.sidecar.metrics import user_hash

ALICE = bearer(sign(claims(user='alice', role='analyst', team='research')))
BOB = bearer(sign(claims(user='bob', role='analyst')))
HELLO = [{'role': 'user', 'content': 'What is the capital of France?'}]


def bundle_for(model: StandInModel, *, cache: Cache | None = None, audit: Audit | None = None,
               **fields: Any) -> Any:
    return with_egress(make_bundle(audit=audit), [model_route('fast', model.url, upstream_model='gpt-4o-mini')],
                       cache=cache or Cache(), **fields)


def model_calls(sidecar: Any) -> list[dict[str, Any]]:
    return [r for r in sidecar.audit_lines if r['event_type'] == 'model_call']


async def test_a_completion_goes_to_the_routes_upstream_with_the_routes_key_and_model_name(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(api_key=MODEL_KEY)) as model, \
            egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, agent):
        execution = await execution_id(sidecar, ALICE)
        client = openai_client(sidecar, execution)
        raw = await client.chat.completions.with_raw_response.create(model='fast', messages=HELLO, max_tokens=50)
        completion = raw.parse()
        await audit_records(sidecar, 'model_call')
    assert completion.choices[0].message.content.startswith('[standin/gpt-4o-mini#')
    assert completion.choices[0].message.content.endswith('What is the capital of France?')
    assert completion.usage is not None and completion.usage.prompt_tokens == 10
    assert completion.usage.completion_tokens == len(completion.choices[0].message.content.split())
    assert raw.headers['X-Agentgov-Cache'] == 'miss'
    assert raw.headers['X-Agentgov-Route'] == 'fast'
    sent = model.requests[-1]
    assert sent.headers['authorization'] == f'Bearer {MODEL_KEY}'
    assert sent.body['model'] == 'gpt-4o-mini' and sent.body['messages'] == HELLO
    assert not [h for h in sent.headers if h.startswith('x-agentgov')]
    record = model_calls(sidecar)[-1]
    assert (record['user'], record['execution_id'], record['result']) == ('alice', execution, 'success')
    meta = record['metadata']
    assert (meta['route'], meta['upstream_model'], meta['cache'], meta['status']) == ('fast', 'gpt-4o-mini', 'miss', 200)
    assert (meta['input_tokens'], meta['output_tokens']) == (10, completion.usage.completion_tokens)
    # Priced at the shipped gpt-4o-mini price (no budget governs the agent, so nothing is held).
    expected = (10 * 0.00015 + completion.usage.completion_tokens * 0.0006) / 1000
    assert float(raw.headers['X-Agentgov-Cost-Usd']) == meta['cost_usd'] == pytest.approx(expected, abs=1e-6)
    assert meta['role'] == 'analyst' and meta['data_classes'] == ['internal']
    assert 'request' not in meta and 'capital' not in json.dumps(record)  # no message contents by default


async def test_message_contents_are_audited_only_when_the_bundle_says_so(tmp_path: Path) -> None:
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, audit=Audit(include_bodies=True))) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        await client.chat.completions.create(model='fast', messages=HELLO, max_tokens=50)
        await audit_records(sidecar, 'model_call')
    meta = model_calls(sidecar)[-1]['metadata']
    assert meta['request']['messages'] == HELLO
    assert meta['response']['choices'][0]['message']['content'].endswith('capital of France?')


async def test_a_stream_reaches_the_agent_chunk_by_chunk_and_ends_with_the_usage(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(api_key=MODEL_KEY)) as model, \
            egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        model.stream_gate = asyncio.Event()
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        stream = await client.chat.completions.create(model='fast', messages=HELLO, stream=True,
                                                      stream_options={'include_usage': True})
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                # The upstream is holding the rest back: these two came through before it finished.
                assert not model.stream_gate.is_set()
                model.stream_gate.set()
        await audit_records(sidecar, 'model_call')
    text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
    assert text.startswith('[standin/gpt-4o-mini#') and text.endswith('capital of France?')
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text.split())
    meta = model_calls(sidecar)[-1]['metadata']
    assert meta['stream'] is True and meta['output_tokens'] == len(text.split()) and meta['input_tokens'] == 10


async def test_the_usage_chunk_is_requested_upstream_but_not_sent_to_an_agent_that_did_not_ask(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        execution = await execution_id(sidecar, ALICE)
        async with aiohttp.ClientSession() as session:
            async with session.post(f'{sidecar.egress_url}/v1/chat/completions', json={
                    'model': 'fast', 'messages': HELLO, 'stream': True}, headers={
                    'X-Agentgov-Execution-Id': execution}) as response:
                assert response.status == 200 and response.headers['Content-Type'].startswith('text/event-stream')
                raw = (await response.read()).decode()
        await audit_records(sidecar, 'model_call')
    events = [line[len('data: '):] for line in raw.split('\n') if line.startswith('data: ')]
    assert events[-1] == '[DONE]'
    parsed = [json.loads(e) for e in events[:-1]]
    assert all(chunk['choices'] for chunk in parsed)  # no usage-only chunk
    assert model.requests[-1].body['stream_options'] == {'include_usage': True}
    assert model_calls(sidecar)[-1]['metadata']['output_tokens'] > 0  # yet the usage was settled


async def test_embeddings_and_the_model_list_work_through_the_sdk(tmp_path: Path) -> None:
    async with serving_model() as model:
        bundle = with_egress(make_bundle(), [model_route('fast', model.url, upstream_model='gpt-4o-mini'),
                                             model_route('embed', model.url, upstream_model='text-embedding-3-small')],
                             cache=Cache())
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE))
            embedded = await client.embeddings.create(model='embed', input=['one two', 'three'])
            listed = [m async for m in client.models.list()]
            one = await client.models.retrieve('embed')
    assert [d.index for d in embedded.data] == [0, 1] and len(embedded.data[0].embedding) == 8
    assert embedded.usage.prompt_tokens == 3
    assert model.requests[-1].body['model'] == 'text-embedding-3-small'
    assert [(m.id, m.owned_by) for m in listed] == [('fast', 'openai'), ('embed', 'openai')]
    assert one.id == 'embed'
    assert model.calls['/v1/models'] == 0  # the list is the bundle's, not the upstream's


async def test_a_repeated_deterministic_request_is_answered_from_the_cache_without_an_upstream_call(
        tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        first = await client.chat.completions.with_raw_response.create(
            model='fast', messages=HELLO, temperature=0, max_tokens=50)
        calls = model.model_calls()
        second = await client.chat.completions.with_raw_response.create(
            model='fast', messages=HELLO, temperature=0, max_tokens=50)
        streamed = await client.chat.completions.create(model='fast', messages=HELLO, temperature=0, max_tokens=50,
                                                        stream=True, stream_options={'include_usage': True})
        chunks = [c async for c in streamed]
        hotter = await client.chat.completions.with_raw_response.create(
            model='fast', messages=HELLO, temperature=0.7, max_tokens=50)
        await audit_records(sidecar, 'model_call', 4)
        metrics = (await sidecar.request('GET', '/metrics'))[1]
    assert calls == 1 and model.model_calls() == 2  # the hits made no call; temperature 0.7 did
    assert (first.headers['X-Agentgov-Cache'], second.headers['X-Agentgov-Cache']) == ('miss', 'hit')
    assert hotter.headers['X-Agentgov-Cache'] == 'miss'
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().usage.completion_tokens == first.parse().usage.completion_tokens
    text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
    assert text == first.parse().choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == first.parse().usage.prompt_tokens
    assert [r['metadata']['cache'] for r in model_calls(sidecar)] == ['miss', 'hit', 'hit', 'miss']
    assert 'agentgov_cache_hits_total{level="l1"} 2.0' in metrics
    assert 'agent_cache_hit_rate 0.6666666666666666' in metrics


@pytest.mark.parametrize('shared, upstream_calls', [(False, 2), (True, 1)],
                         ids=['users get their own answers', 'a policy that shares lets users share'])
async def test_two_users_share_cached_answers_only_when_the_policy_says_so(
        tmp_path: Path, shared: bool, upstream_calls: int) -> None:
    async with serving_model() as model, \
            egress_sidecar(tmp_path, bundle_for(model, cache=Cache(share_across_users=shared))) as (sidecar, _):
        for caller in (ALICE, BOB):
            client = openai_client(sidecar, await execution_id(sidecar, caller))
            raw = await client.chat.completions.with_raw_response.create(
                model='fast', messages=HELLO, temperature=0, max_tokens=50)
        assert raw.headers['X-Agentgov-Cache'] == ('hit' if shared else 'miss')
    assert model.model_calls() == upstream_calls


async def test_an_upstream_4xx_reaches_the_agent_unchanged_and_costs_nothing(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model='fast', messages=[{'role': 'user', 'content': 5}])
        await audit_records(sidecar, 'model_call')
    assert caught.value.status_code == 400
    assert caught.value.body == {'message': 'content must be a string or a list of content parts',
                                 'type': 'invalid_request_error', 'param': 'messages', 'code': None}
    meta = model_calls(sidecar)[-1]['metadata']
    assert (meta['status'], meta['code'], meta['cost_usd']) == (400, 'upstream_400', 0)


@pytest.mark.parametrize('body, field', [
    ({'messages': HELLO}, 'model must be a non-empty string'),
    ({'model': 5, 'messages': HELLO}, 'model must be a non-empty string'),
    ({'model': 'fast', 'messages': 'hello'}, 'messages must be a non-empty array'),
    ({'model': 'fast', 'messages': []}, 'messages must be a non-empty array'),
    ({'model': 'fast', 'messages': ['hi']}, 'messages[0] must be an object'),
    ({'model': 'fast', 'messages': [{'content': 'hi'}]}, 'messages[0].role must be a string'),
    ({'model': 'fast', 'messages': HELLO, 'stream': 'yes'}, 'stream must be a boolean'),
    ({'model': 'fast', 'messages': HELLO, 'stream_options': []}, 'stream_options must be an object'),
    ({'model': 'fast', 'messages': HELLO, 'max_tokens': -1}, 'max_tokens must be a positive integer'),
    ({'model': 'fast', 'messages': HELLO, 'max_tokens': True}, 'max_tokens must be a positive integer'),
    ({'model': 'fast', 'messages': HELLO, 'n': 1.5}, 'n must be a positive integer'),
    ({'model': 'fast', 'messages': HELLO, 'temperature': '0'}, 'temperature must be a number'),
    (['not', 'an', 'object'], 'the body must be a JSON object'),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_a_malformed_body_is_refused_naming_the_field(tmp_path: Path, body: Any, field: str) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        execution = await execution_id(sidecar, ALICE)
        status, answer, _ = await sidecar.egress('POST', '/v1/chat/completions', json=body, headers={
            'X-Agentgov-Execution-Id': execution})
    assert (status, answer['error']['code'], answer['error']['message']) == (400, 'bad_request', field)
    assert model.model_calls() == 0


async def test_hostile_requests_get_precise_errors_and_never_reach_the_upstream(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        execution = await execution_id(sidecar, ALICE)
        egress = sidecar.egress_url
        ok = {'X-Agentgov-Execution-Id': execution}

        async def post(data: Any, headers: dict[str, str], **kwargs: Any) -> tuple[int, Any]:
            status, body, _ = await sidecar.egress('POST', '/v1/chat/completions', data=data, headers=headers,
                                                   **kwargs)
            return status, body

        valid = json.dumps({'model': 'fast', 'messages': HELLO})
        cases = {
            'no execution id': await post(valid, {}),
            'a forged execution id': await post(valid, {'X-Agentgov-Execution-Id': 'exe_forged' + 'A' * 20}),
            'a huge forged execution id': await post(valid, {'X-Agentgov-Execution-Id': 'exe_' + 'x' * 5000}),
            'two execution ids': await post(valid, {'X-Agentgov-Execution-Id': f'{execution}, {execution}'}),
            'not JSON': await post(b'{"model": "fast", "messages": [', ok),
            'NaN': await post(b'{"model": "fast", "messages": [{"role": "user"}], "temperature": NaN}', ok),
            'deep nesting': await post(b'[' * 100_000 + b']' * 100_000, ok),
            'a huge body': await post(b'{"model": "fast", "pad": "' + b'x' * (2 * 1024 * 1024) + b'"}', ok),
            'an unknown model': await post(json.dumps({'model': 'gpt-9', 'messages': HELLO}), ok),
            'a model name with a secret-looking value': await post(
                json.dumps({'model': 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWx\r\nX-Evil: 1', 'messages': HELLO}), ok),
            'an unknown data class': await post(valid, {**ok, 'X-Agentgov-Data-Class': 'secret'}),
            'a non-ASCII data class': await post(valid, {**ok, 'X-Agentgov-Data-Class': 'pübli'}),
            'an undeclared data class': await post(valid, {**ok, 'X-Agentgov-Data-Class': 'pii'}),
        }
        # The same execution id sent twice as two header lines.
        async with aiohttp.ClientSession() as session:
            async with session.post(f'{egress}/v1/chat/completions', data=valid, headers=[
                    ('X-Agentgov-Execution-Id', execution), ('X-Agentgov-Execution-Id', execution)]) as response:
                cases['two execution id headers'] = (response.status, await response.json())
        # Identity headers the agent sends change nothing: the execution's caller is charged.
        status, _ = await post(valid, {**ok, 'X-Agentgov-User': 'mallory', 'X-Agentgov-Role': 'admin',
                                       'Authorization': 'Bearer agent-side-token', 'Content-Type': 'application/json'})
        await audit_records(sidecar, 'model_call', 15)
    got = {name: (status, body['error']['code']) for name, (status, body) in cases.items()}
    assert got == {
        'no execution id': (400, 'execution_id_required'),
        'a forged execution id': (403, 'unknown_execution'),
        'a huge forged execution id': (403, 'unknown_execution'),
        'two execution ids': (403, 'unknown_execution'),
        'not JSON': (400, 'bad_request'),
        'NaN': (400, 'bad_request'),
        'deep nesting': (400, 'bad_request'),
        'a huge body': (413, 'body_too_large'),
        'an unknown model': (404, 'model_not_found'),
        'a model name with a secret-looking value': (404, 'model_not_found'),
        'an unknown data class': (400, 'bad_request'),
        'a non-ASCII data class': (400, 'bad_request'),
        'an undeclared data class': (403, 'data_class_not_allowed'),
        'two execution id headers': (400, 'bad_request'),
    }
    assert "no model route for 'gpt-9' (this agent's routes: fast)" == cases['an unknown model'][1]['error']['message']
    assert 'sk-proj' not in json.dumps(cases) and 'Evil' not in json.dumps(cases)
    assert status == 200 and model.model_calls() == 1
    sent = model.requests[-1].headers
    assert sent['authorization'] == f'Bearer {MODEL_KEY}' and 'x-agentgov-user' not in sent
    success = [r for r in model_calls(sidecar) if r['result'] == 'success'][-1]
    assert success['user'] == 'alice' and success['metadata']['role'] == 'analyst'
    assert 'sk-proj' not in json.dumps(sidecar.audit_lines)


async def test_the_upstream_key_never_reaches_the_agent_the_audit_log_or_the_metrics(tmp_path: Path) -> None:
    canary = 'sk-canary-7f3e9d2c1b0a99887766554433221100'
    async with serving_model(ModelConfig(api_key=canary)) as model, \
            egress_sidecar(tmp_path, bundle_for(model), model_key=canary) as (sidecar, _):
        agent_token = 'Bearer agent-supplied-credential-4242'
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        seen: list[str] = []
        ok = await client.chat.completions.with_raw_response.create(model='fast', messages=HELLO, max_tokens=20,
                                                                    extra_headers={'Authorization': agent_token})
        seen.append(json.dumps(dict(ok.headers)) + ok.text)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model='fast', messages=[{'role': 'user', 'content': 5}])
        seen.append(json.dumps(refused.value.body) + json.dumps(dict(refused.value.response.headers)))
        stream = await client.chat.completions.create(model='fast', messages=HELLO, stream=True)
        seen.append(''.join([c.model_dump_json() async for c in stream]))
        for path in ('/metrics', '/ready'):
            seen.append(str((await sidecar.request('GET', path))[1]))
        await audit_records(sidecar, 'model_call', 3)
        log_text = sidecar.settings.audit_log.read_text()
    assert all(r.headers['authorization'] == f'Bearer {canary}' for r in model.requests)
    assert not any('agent-supplied-credential' in json.dumps(dict(r.headers)) for r in model.requests)
    for text in seen + [log_text]:
        assert canary not in text and canary[3:] not in text


async def test_ready_waits_for_the_model_credentials_and_reports_breakers_redis_and_budgets(tmp_path: Path) -> None:
    async with serving_model() as model:
        bundle = with_egress(make_bundle(), [model_route('fast', model.url),
                                             model_route('unkeyed', model.url, key_file=None)], cache=Cache())
        async with egress_sidecar(tmp_path, bundle, model_key=None) as (sidecar, _):
            before_status, before = await sidecar.ready()
            write_secret(sidecar.settings.secrets_dir, MODEL_KEY_FILE, MODEL_KEY)
            status, ready = await async_wait_for(sidecar.ready, lambda r: r[0] == 200, what='ready')
    assert before_status == 503 and before['upstreamsConfigured'] is False
    assert before['upstreams'][0] == {'route': 'fast', 'endpoint': model.url, 'credentials': 'missing',
                                      'breaker': 'closed'}
    assert ready['upstreams'] == [
        {'route': 'fast', 'endpoint': model.url, 'credentials': 'mounted', 'breaker': 'closed'},
        {'route': 'unkeyed', 'endpoint': model.url, 'credentials': 'none', 'breaker': 'closed'},
    ]
    assert {(b['kind'], b['name'], b['state']) for b in ready['breakers']} == {
        ('model', 'fast', 'closed'), ('model', 'unkeyed', 'closed')}
    assert ready['redis'] == {'configured': False, 'up': False, 'error': None}
    assert ready['budgets']['store'] == 'none'


async def test_the_playbook_metrics_are_exported_with_hashed_user_ids(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        completion = await client.chat.completions.create(model='fast', messages=HELLO, max_tokens=50)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model='nope', messages=HELLO)
        text = (await sidecar.request('GET', '/metrics'))[1]
    agent = 'research/research-assistant'
    alice = user_hash('alice')
    assert metric_value(text, 'agent_requests_total', agent_id=agent, user_id=alice, status='success') == 1
    assert metric_value(text, 'agent_requests_total', agent_id=agent, user_id=alice, status='error') == 1
    assert metric_value(text, 'agent_tokens_total', agent_id=agent, model='fast', type='input') == 10
    assert metric_value(text, 'agent_tokens_total', agent_id=agent, model='fast',
                        type='output') == completion.usage.completion_tokens
    assert metric_value(text, 'agent_request_duration_seconds_count', agent_id=agent, model='fast') == 1
    assert metric_value(text, 'agent_errors_total', agent_id=agent, error_type='model_not_found') == 1
    assert metric_value(text, 'agent_cost_dollars_total', agent_id=agent, model='fast') > 0  # type: ignore[operator]
    assert metric_value(text, 'agent_active_count') == 0
    assert 'alice' not in text


async def test_header_injection_attempts_are_refused_by_the_parser_or_named_precisely(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        execution = await execution_id(sidecar, ALICE)
        port = int(sidecar.egress_url.rsplit(':', 1)[1])
        body = json.dumps({'model': 'fast', 'messages': HELLO}).encode()

        def request(*headers: bytes) -> bytes:
            return (b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                    b'Content-Type: application/json\r\nContent-Length: ' + str(len(body)).encode() + b'\r\n'
                    + b''.join(h + b'\r\n' for h in headers) + b'\r\n' + body)

        exe = b'X-Agentgov-Execution-Id: ' + execution.encode()
        outcomes = {
            'a NUL in a header value': await raw_http(port, request(exe, b'X-Agentgov-Data-Class: pii\x00internal')),
            'a bare LF splitting a header': await raw_http(port, request(exe + b'\nX-Agentgov-User: mallory')),
            'an obs-folded data class': await raw_http(port, request(exe, b'X-Agentgov-Data-Class: internal', b' pii')),
            'a DEL in the data class': await raw_http(port, request(exe, b'X-Agentgov-Data-Class: intern\x7fal')),
        }
    statuses = {name: status for name, (status, _) in outcomes.items()}
    assert all(status == 400 for status in statuses.values()), statuses
    assert model.model_calls() == 0


async def test_a_route_added_by_a_bundle_reload_is_served_without_a_restart(tmp_path: Path) -> None:
    async with serving_model() as model, egress_sidecar(tmp_path, bundle_for(model)) as (sidecar, _):
        client = openai_client(sidecar, await execution_id(sidecar, ALICE))
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model='smart', messages=HELLO)
        current = sidecar.app[POLICY].require().bundle
        write_bundle(sidecar.settings.bundle_path, with_egress(current, [
            *current.models, model_route('smart', model.url, upstream_model='gpt-4o')]))
        await async_wait_for(lambda: sidecar.egress('GET', '/v1/models'),
                             lambda r: [m['id'] for m in r[1]['data']] == ['fast', 'smart'], what='the new route')
        completion = await client.chat.completions.create(model='smart', messages=HELLO)
        _, ready = await sidecar.ready()
    assert completion.choices[0].message.content.startswith('[standin/gpt-4o#')
    assert {b['name'] for b in ready['breakers']} == {'fast', 'smart'}
