"""Breakers, retries, fallbacks and region routing of the egress port, over real HTTP: the
official ``openai`` SDK, the real sidecar, stand-in models playing flapping, hanging, dead and
healthy upstreams and regions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from agentgov.api.agentdeployment import Cache
from agentgov.api.regionpolicy import DEFAULT_RULES, Region
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.demo.model import ModelConfig, serving_model
from harness.waiting import async_wait_for
from sidecar_support import (
    audit_records, bearer, claims, egress_sidecar, execution_id, free_port, make_bundle, metric_value, model_route,
    openai_client, sign, with_egress,
)

ALICE = bearer(sign(claims(user='alice', role='analyst')))
HELLO = [{'role': 'user', 'content': 'Summarise the quarterly report'}]
QUICK = CircuitBreaker(failure_threshold=3, call_timeout_seconds=2, recovery_timeout_seconds=1, half_open_successes=2)


async def call(client: Any, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
    """One completion: (status, error body or completion, headers)."""
    try:
        raw = await client.chat.completions.with_raw_response.create(model=kwargs.pop('model', 'fast'),
                                                                     messages=HELLO, max_tokens=20, **kwargs)
    except openai.APIStatusError as e:
        return e.status_code, e.body, dict(e.response.headers)
    return raw.http_response.status_code, raw.parse(), dict(raw.headers)


async def test_a_flapping_upstream_opens_the_breaker_fails_fast_then_half_opens_and_recovers(tmp_path: Path) -> None:
    # The playbook's flapping upstream: 30% of calls fail (seeded, so the run is reproducible).
    async with serving_model(ModelConfig(failure_rate=0.3, seed=11)) as model:
        bundle = with_egress(make_bundle(), [model_route('fast', model.url, upstream_model='gpt-4o-mini',
                                                         breaker=QUICK)], cache=Cache())
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE))
            seen: list[tuple[int, str | None]] = []
            for _ in range(300):
                status, body, headers = await call(client)
                seen.append((status, body.get('code') if isinstance(body, dict) else None))
                if status == 503:
                    break
            assert seen[-1] == (503, 'circuit_open'), seen
            assert headers['retry-after'] == '1'
            # Open: calls fail fast, the upstream sees none of them.
            calls = model.model_calls()
            for _ in range(5):
                assert (await call(client))[1]['code'] == 'circuit_open'
            assert model.model_calls() == calls
            metrics = (await sidecar.request('GET', '/metrics'))[1]
            _, ready = await sidecar.ready()
            assert metric_value(metrics, 'agentgov_breaker_state', kind='model', name='fast') == 2
            assert [b['state'] for b in ready['breakers'] if b['name'] == 'fast'] == ['open']
            assert ready['upstreams'][0]['breaker'] == 'open' and ready['ready'] is True  # reported, not required

            # The upstream heals; after the recovery timeout trial calls close the breaker again.
            model.configure(failure_rate=0.0)
            await async_wait_for(lambda: call(client), lambda r: r[0] == 200, what='a call through the half-open breaker',
                                 timeout=10, interval=0.2)
            assert (await call(client))[0] == 200
            metrics = (await sidecar.request('GET', '/metrics'))[1]
            records = await audit_records(sidecar, 'breaker_transition', 3)
    failures = [s for s in seen if s[0] != 200 and s != (503, 'circuit_open')]
    assert failures and all(s == (502, 'upstream_unavailable') for s in failures)
    assert [(r['metadata']['from'], r['metadata']['to']) for r in records][:3] == [
        ('closed', 'open'), ('open', 'half_open'), ('half_open', 'closed')]
    assert records[0]['resource'] == 'model/fast' and records[0]['result'] == 'failure'
    assert metric_value(metrics, 'agentgov_breaker_state', kind='model', name='fast') == 0
    assert metric_value(metrics, 'agentgov_breaker_transitions_total', kind='model', name='fast', state='open') == 1


async def test_an_open_breaker_sends_calls_to_the_fallback_route(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(failure_rate=1.0, name='primary')) as primary, \
            serving_model(ModelConfig(name='backup')) as backup:
        bundle = with_egress(make_bundle(), [
            model_route('fast', primary.url, upstream_model='gpt-4o-mini',
                        breaker=CircuitBreaker(failure_threshold=1, recovery_timeout_seconds=60), fallbacks=['steady']),
            model_route('steady', backup.url, upstream_model='gpt-4o'),
        ], cache=Cache())
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE))
            first = await call(client)
            second = await call(client)
            records = await audit_records(sidecar, 'model_call', 2)
    # The first failure may have reached the upstream: it is not sent anywhere else (no double billing).
    assert first[0] == 502 and first[1]['code'] == 'upstream_unavailable'
    status, completion, headers = second
    assert status == 200 and completion.choices[0].message.content.startswith('[backup/gpt-4o#')
    assert (headers['x-agentgov-route'], headers['x-agentgov-fallback']) == ('steady', 'route')
    assert (primary.model_calls(), backup.model_calls()) == (1, 1)
    assert (records[1]['metadata']['route'], records[1]['metadata']['fallback']) == ('steady', 'route')


async def test_a_route_that_refuses_connections_is_retried_then_its_fallback_answers(tmp_path: Path) -> None:
    dead = f'http://127.0.0.1:{free_port()}/v1'
    async with serving_model(ModelConfig(name='backup')) as backup:
        bundle = with_egress(make_bundle(), [
            model_route('fast', dead, upstream_model='gpt-4o-mini', fallbacks=['steady']),
            model_route('steady', backup.url, upstream_model='gpt-4o'),
        ], cache=Cache())
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE))
            status, completion, headers = await call(client)
            metrics = (await sidecar.request('GET', '/metrics'))[1]
            record = (await audit_records(sidecar, 'model_call'))[-1]
    assert status == 200 and headers['x-agentgov-route'] == 'steady'
    assert metric_value(metrics, 'agentgov_upstream_attempts_total', route='fast', region='', result='connect') == 3
    assert record['metadata']['attempts'] == 4 and record['metadata']['fallback'] == 'route'


async def test_a_hanging_upstream_times_out_with_a_clear_code(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(hang=True)) as model:
        bundle = with_egress(make_bundle(), [model_route(
            'fast', model.url, upstream_model='gpt-4o-mini', breaker=CircuitBreaker(call_timeout_seconds=1))],
            cache=Cache())
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE))
            status, body, _ = await call(client)
            streamed = await call(client, stream=True)
    assert (status, body['code']) == (504, 'upstream_timeout')
    assert 'within 1 seconds' in body['message']
    assert (streamed[0], streamed[1]['code']) == (504, 'upstream_timeout')
    assert model.model_calls() == 2  # a POST that may have been received is never sent again


# --- regions -----------------------------------------------------------------------------------


def region(name: str, endpoint: str, *, on_premise: bool = False, latency_slo_ms: int = 500,
           data_classes: tuple[str, ...] = ('public', 'internal')) -> Region:
    return Region(name=name, endpoint=endpoint, on_premise=on_premise, latency_slo_ms=latency_slo_ms,
                  data_classes=list(data_classes))  # type: ignore[arg-type]


async def test_a_pii_request_goes_to_the_on_premise_region_and_the_audit_record_names_it(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(name='cloud')) as cloud, serving_model(ModelConfig(name='onprem')) as onprem:
        bundle = with_egress(
            make_bundle(), [model_route('fast', 'http://127.0.0.1:9/unused', upstream_model='gpt-4o-mini')],
            cache=Cache(), data_classes=['internal', 'pii'], routing_rules=list(DEFAULT_RULES), regions=[
                region('eu-west-1', cloud.url, latency_slo_ms=100),
                region('onprem-fra', onprem.url, on_premise=True, latency_slo_ms=400,
                       data_classes=('public', 'internal', 'confidential', 'sensitive', 'pii')),
            ])
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            execution = await execution_id(sidecar, ALICE)
            internal = await call(openai_client(sidecar, execution, **{'X-Agentgov-Data-Class': 'internal'}))
            personal = await call(openai_client(sidecar, execution, **{'X-Agentgov-Data-Class': 'internal,pii'}))
            records = await audit_records(sidecar, 'model_call', 2)
    assert internal[2]['x-agentgov-region'] == 'eu-west-1' and personal[2]['x-agentgov-region'] == 'onprem-fra'
    assert personal[1].choices[0].message.content.startswith('[onprem/')
    assert (cloud.model_calls(), onprem.model_calls()) == (1, 1)
    assert [(r['metadata']['region'], r['metadata']['data_classes']) for r in records] == [
        ('eu-west-1', ['internal']), ('onprem-fra', ['internal', 'pii'])]


async def test_no_allowed_region_is_a_403_naming_the_data_class(tmp_path: Path) -> None:
    async with serving_model() as cloud:
        bundle = with_egress(
            make_bundle(), [model_route('fast', 'http://127.0.0.1:9/unused', upstream_model='gpt-4o-mini')],
            cache=Cache(), data_classes=['internal', 'pii'], routing_rules=list(DEFAULT_RULES),
            regions=[region('eu-west-1', cloud.url)])
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            client = openai_client(sidecar, await execution_id(sidecar, ALICE), **{'X-Agentgov-Data-Class': 'pii'})
            status, body, _ = await call(client)
            record = (await audit_records(sidecar, 'model_call'))[-1]
    assert (status, body['code']) == (403, 'region_not_allowed')
    assert 'data class pii' in body['message'] and 'sensitive-on-premise' in body['message']
    assert cloud.model_calls() == 0
    assert (record['result'], record['metadata']['code']) == ('denied', 'region_not_allowed')


@pytest.mark.parametrize('caller_region, expected', [(None, 'us-east-1'), ('eu-central-1', 'eu-west-1')],
                         ids=['a caller without a region gets the fastest region', 'an eu caller prefers eu regions'])
async def test_callers_in_eu_prefer_eu_regions(tmp_path: Path, caller_region: str | None, expected: str) -> None:
    async with serving_model(ModelConfig(name='us')) as us, serving_model(ModelConfig(name='eu')) as eu:
        bundle = with_egress(
            make_bundle(), [model_route('fast', 'http://127.0.0.1:9/unused', upstream_model='gpt-4o-mini')],
            cache=Cache(), routing_rules=list(DEFAULT_RULES),
            regions=[region('us-east-1', us.url, latency_slo_ms=50), region('eu-west-1', eu.url, latency_slo_ms=200)])
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            token = bearer(sign(claims(user='erika', role='analyst', region=caller_region)))
            status, _, headers = await call(openai_client(sidecar, await execution_id(sidecar, token)))
    assert status == 200 and headers['x-agentgov-region'] == expected


async def test_a_region_that_refuses_connections_fails_over_to_the_next_allowed_region(tmp_path: Path) -> None:
    async with serving_model(ModelConfig(name='second')) as second:
        bundle = with_egress(
            make_bundle(), [model_route('fast', 'http://127.0.0.1:9/unused', upstream_model='gpt-4o-mini')],
            cache=Cache(), routing_rules=list(DEFAULT_RULES), regions=[
                region('eu-west-1', f'http://127.0.0.1:{free_port()}/v1', latency_slo_ms=100),
                region('eu-north-1', second.url, latency_slo_ms=300)])
        async with egress_sidecar(tmp_path, bundle) as (sidecar, _):
            status, _, headers = await call(openai_client(sidecar, await execution_id(sidecar, ALICE)))
            record = (await audit_records(sidecar, 'model_call'))[-1]
    assert status == 200 and headers['x-agentgov-region'] == 'eu-north-1'
    # eu-west-1 was tried and retried (REGION_RETRIES=3: four attempts), then eu-north-1 answered.
    assert record['metadata']['region'] == 'eu-north-1' and record['metadata']['attempts'] == 5
