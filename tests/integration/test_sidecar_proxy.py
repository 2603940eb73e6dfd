"""The inbound proxy over real HTTP: a real sidecar app in front of a real aiohttp server playing the
agent, both on 127.0.0.1. Identity headers, execution ids, streaming both ways, client disconnects,
body limits, the agent down, slow or failing mid-response."""
from __future__ import annotations

import asyncio
import gzip
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentgov.sidecar.context import EXECUTIONS
from harness.waiting import async_wait_for
from sidecar_support import (
    Agent, Sidecar, bearer, claims, free_port, make_bundle, running_agent, sidecar_for, sign,
)

ALICE = bearer(sign(claims(user='alice', role='analyst', scopes=['reports', 'financial_data'], team='research')))
ALICE_LINE = f'Authorization: {ALICE["Authorization"]}'


async def test_the_agent_gets_the_callers_identity_and_never_forged_copies(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        status, body, headers = await sidecar.request('POST', '/v1/run?q=a%20b&x=1', data=b'{"task": "summarise"}', headers={
            **ALICE, 'X-Agentgov-User': 'mallory', 'x-agentgov-role': 'admin', 'X-AGENTGOV-SCOPES': 'everything',
            'X-Agentgov-Execution-Id': 'exe_forged', 'X-Forwarded-For': '6.6.6.6', 'Content-Type': 'application/json',
        })
    assert status == 200, body
    seen = {k.lower(): v for k, v in agent.requests[0]['headers']}
    assert seen['x-agentgov-user'] == 'alice'
    assert seen['x-agentgov-role'] == 'analyst'
    assert seen['x-agentgov-scopes'] == 'financial_data reports'
    assert seen['x-agentgov-team'] == 'research'
    assert seen['x-agentgov-execution-id'].startswith('exe_') and seen['x-agentgov-execution-id'] != 'exe_forged'
    assert seen['x-forwarded-for'] == '127.0.0.1'
    assert 'authorization' not in seen
    assert [k for k, _ in agent.requests[0]['headers'] if k.lower() == 'x-agentgov-user'] == ['X-Agentgov-User']
    assert agent.requests[0]['path'] == '/v1/run?q=a%20b&x=1'
    assert agent.requests[0]['body'] == b'{"task": "summarise"}'
    assert headers['X-Agentgov-Execution-Id'] == seen['x-agentgov-execution-id']


async def test_the_execution_id_is_recorded_against_the_caller(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        status, _, headers = await sidecar.request('GET', '/whoami', headers=ALICE)
        execution = sidecar.app[EXECUTIONS].get(headers['X-Agentgov-Execution-Id'])
    assert status == 200
    assert execution is not None and execution.identity.user == 'alice' and execution.status == 200
    records = [r for r in sidecar.audit_lines if r['event_type'] == 'agent_execution']
    assert [(r['result'], r['execution_id']) for r in records] == [('started', execution.id), ('success', execution.id)]
    assert records[1]['metadata']['status'] == 200 and records[1]['metadata']['duration_ms'] >= 0


async def test_forwarding_headers_are_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    trusted = (ipaddress.ip_network('127.0.0.0/8'),)
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port),
                                                     trusted_proxies=trusted) as sidecar:
        await sidecar.request('GET', '/', headers={**ALICE, 'X-Forwarded-For': '203.0.113.5', 'X-Forwarded-Proto': 'https'})
    seen = {k.lower(): v for k, v in agent.requests[0]['headers']}
    assert seen['x-agentgov-client-ip'] == '203.0.113.5'
    assert seen['x-forwarded-for'] == '203.0.113.5, 127.0.0.1'
    assert seen['x-forwarded-proto'] == 'https'
    assert sidecar.audit_lines[-1]['client_ip'] == '203.0.113.5'


async def test_hop_by_hop_headers_do_not_reach_the_agent(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        await sidecar.request('GET', '/', headers={**ALICE, 'Connection': 'keep-alive, X-Hop', 'X-Hop': 'secret-hop',
                                                   'TE': 'trailers', 'Keep-Alive': 'timeout=5', 'X-Kept': 'yes'})
    seen = {k.lower(): v for k, v in agent.requests[0]['headers']}
    assert not {'x-hop', 'te', 'keep-alive'} & set(seen)
    assert seen['x-kept'] == 'yes'


async def test_a_streamed_response_passes_through_before_the_agent_finishes(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        async with sidecar.session.get(sidecar.url + '/stream', headers=ALICE) as response:
            assert response.status == 200
            assert response.headers['Content-Type'] == 'text/event-stream'
            first = await asyncio.wait_for(response.content.readuntil(b'\n\n'), 10)
            # The agent is still holding the rest: the first event was not buffered behind it.
            assert first == b'data: first\n\n' and not agent.release.is_set()
            agent.release.set()
            rest = await response.content.read()
    assert rest == b'data: second\n\n'


async def test_a_request_body_streams_to_the_agent_while_the_caller_is_still_sending(tmp_path: Path) -> None:
    received_first = asyncio.Event()

    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        async def body() -> AsyncIterator[bytes]:
            yield b'a' * 1000
            # Only continue once the agent has seen bytes: a buffering proxy would deadlock here.
            await async_wait_for(lambda: _agent_saw_bytes(agent), what='the agent to receive the first chunk')
            received_first.set()
            yield b'b' * 1000

        status, body_out, _ = await sidecar.request('POST', '/upload', data=body(), headers=ALICE)
    assert status == 200 and body_out == {'bytes': 2000}
    assert received_first.is_set()


async def _agent_saw_bytes(agent: Agent) -> bool:
    return agent.upload_bytes > 0


async def test_a_caller_going_away_cancels_the_call_to_the_agent(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        call = asyncio.create_task(sidecar.request('POST', '/hang', headers=ALICE))
        await async_wait_for(lambda: _is_set(agent.started), what='the agent to start working')
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        await async_wait_for(lambda: _is_set(agent.cancelled), what='the agent call to be cancelled')
        await async_wait_for(lambda: _last_execution(sidecar), what='the execution to be audited as failed')
    record = _finished(sidecar)[-1]
    assert record['result'] == 'failure' and record['metadata']['error'] == 'the caller disconnected'


async def test_a_caller_going_away_mid_stream_cancels_the_call_to_the_agent(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        async with aiohttp.ClientSession() as own:
            response = await own.get(sidecar.url + '/stream', headers=ALICE)
            assert await response.content.readuntil(b'\n\n') == b'data: first\n\n'
            response.close()
        await async_wait_for(lambda: _is_set(agent.cancelled), what='the agent stream to be cancelled')


async def _is_set(event: asyncio.Event) -> bool:
    return event.is_set()


def _finished(sidecar: Sidecar) -> list[dict[str, Any]]:
    return [r for r in sidecar.audit_lines if r['event_type'] == 'agent_execution' and r['result'] != 'started']


async def _last_execution(sidecar: Sidecar) -> bool:
    return bool(_finished(sidecar))


@pytest.mark.parametrize('chunked', [False, True], ids=['a declared length over the limit', 'a chunked body crossing the limit'])
async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path, chunked: bool) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b'x' * 600

    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port, max_body_bytes=1024)) as sidecar:
        status, reply, _ = await sidecar.request('POST', '/upload', data=body() if chunked else b'x' * 2400, headers=ALICE)
    assert status == 413
    assert reply['error']['code'] == 'body_too_large'
    assert '1024 bytes' in reply['error']['message']
    if not chunked:
        assert agent.upload_bytes == 0


async def test_a_body_at_the_limit_is_accepted(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port, max_body_bytes=1024)) as sidecar:
        status, reply, _ = await sidecar.request('POST', '/upload', data=b'x' * 1024, headers=ALICE)
    assert (status, reply) == (200, {'bytes': 1024})


async def test_the_agent_being_down_is_a_502_with_a_clear_code(tmp_path: Path) -> None:
    async with sidecar_for(tmp_path, make_bundle(agent_port=free_port())) as sidecar:
        status, reply, _ = await sidecar.request('GET', '/v1/run', headers=ALICE)
    assert status == 502
    assert reply == {'error': {'code': 'agent_unavailable', 'message': 'the agent is not accepting connections'}}
    assert _finished(sidecar)[-1]['metadata']['error'] == 'agent_unavailable'


async def test_an_agent_slower_than_the_timeout_is_a_504(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port, upstream_timeout_seconds=1)) as sidecar:
        status, reply, _ = await sidecar.request('GET', '/hang', headers=ALICE)
        await async_wait_for(lambda: _is_set(agent.cancelled), what='the timed-out agent call to be abandoned')
    assert status == 504 and reply['error']['code'] == 'agent_timeout'


async def test_an_agent_failing_mid_response_leaves_a_visibly_truncated_body(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        async with sidecar.session.get(sidecar.url + '/broken', headers=ALICE) as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        await async_wait_for(lambda: _last_execution(sidecar), what='the execution to be audited')
    assert 'mid-response' in str(_finished(sidecar)[-1]['metadata']['error'])


async def test_a_compressed_response_passes_through_byte_for_byte(tmp_path: Path) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        async with aiohttp.ClientSession(auto_decompress=False) as raw:
            async with raw.get(sidecar.url + '/gzip', headers=ALICE) as response:
                data = await response.read()
                encoding = response.headers['Content-Encoding']
    assert encoding == 'gzip' and gzip.decompress(data) == b'hello compressed world'


@pytest.mark.parametrize('target, path', [
    ('http://evil.example/steal?x=1', '/steal?x=1'),
    ('/a%2Fb/../c?q=%20', '/a%2Fb/../c?q=%20'),
], ids=['an absolute-form target still goes to the local agent', 'the path is forwarded exactly as sent'])
async def test_the_request_target_only_chooses_the_path_on_the_agent(tmp_path: Path, target: str, path: str) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        port = int(sidecar.url.rsplit(':', 1)[1])
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        writer.write(f'GET {target} HTTP/1.1\r\nHost: agents.example.com\r\n{ALICE_LINE}\r\nConnection: close\r\n\r\n'.encode())
        await writer.drain()
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
    assert reply.startswith(b'HTTP/1.1 200'), reply[:200]
    assert agent.requests[0]['path'] == path

