"""Tool egress over real HTTP: the real sidecar (inbound and egress ports) in front of a real local
aiohttp server playing the tools, all on 127.0.0.1. Each test gets an execution id the real way (a
call through the inbound port to a stand-in agent), then calls ``/tools/{name}/...`` on the egress
port as the agent would: authorization and its audit, credentials and identity headers, rate
limits, timeouts, breakers and each kind of fallback, hostile paths, body limits."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agentgov.api.bundle import BundleTool, PolicyBundle, SecretFile
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.api.toolpolicy import CircuitBreaker, Fallback, RateLimit
from agentgov.sidecar.context import POLICY
from harness.waiting import async_wait_for
from sidecar_support import (
    HMAC_SECRET, Sidecar, bearer, claims, free_port, make_bundle, running_agent, running_sidecar, serving_on_free_port,
    sidecar_settings,
    sign, write_bundle, write_secret,
)

EXECUTION = 'X-Agentgov-Execution-Id'
TOOL_SECRET = 'tool-credential-7f3a9c'
TOOL_CREDENTIALS = SecretFile(secret='search-tool', key='token')
AGENT_TOKEN = 'agent-held-token-should-never-leave'


# --- the stand-in tool server ---------------------------------------------------------------


@dataclass
class Tools:
    """A real aiohttp server playing every tool: it records what it got and behaves as told per tool."""

    port: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    # tool name -> 'ok' | 'fail' (500) | 'hang' (until released) | 'close' (drop the connection) | 'not_found'
    modes: dict[str, str] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def base(self, name: str) -> str:
        return f'http://127.0.0.1:{self.port}/api/{name}'

    def of(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c['tool'] == name]


def tools_app(tools: Tools) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        parts = raw.split('/')
        name = parts[2] if len(parts) > 2 and parts[1] == 'api' else '?'
        body = await request.read()
        tools.calls.append({'tool': name, 'method': request.method, 'raw_path': raw,
                            'query': request.rel_url.raw_query_string, 'headers': list(request.headers.items()),
                            'body': body})
        mode = tools.modes.get(name, 'ok')
        if mode == 'fail':
            return web.json_response({'tool': name, 'error': 'exploded'}, status=500)
        if mode == 'not_found':
            return web.json_response({'tool': name, 'error': 'no such record'}, status=404)
        if mode == 'hang':
            await tools.release.wait()
        if mode == 'close':
            assert request.transport is not None
            request.transport.close()
        return web.json_response({'tool': name, 'path': raw, 'query': request.rel_url.raw_query_string,
                                  'bytes': len(body)}, headers={'X-Tool': name})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route('*', '/{tail:.*}', handle)
    return app


@asynccontextmanager
async def running_tools() -> AsyncIterator[Tools]:
    tools = Tools()
    async with serving_on_free_port(tools_app(tools), tools.release.set) as tools.port:
        yield tools


# --- the sidecar ---------------------------------------------------------------------------------


def a_tool(tools: Tools, name: str, **overrides: Any) -> BundleTool:
    values: dict[str, Any] = {'name': name, 'upstream': tools.base(name), 'permission': 'tool:read',
                              'timeout_seconds': 5, 'circuit_breaker': CircuitBreaker()}
    values.update(overrides)
    return BundleTool(**values)


@dataclass
class Egress:
    """A running sidecar: the inbound port (``sidecar``) and the egress port the agent calls."""

    sidecar: Sidecar
    url: str
    session: aiohttp.ClientSession

    async def execution(self, token: str) -> str:
        """An execution id issued the real way: a call through the inbound port to the agent."""
        status, body, headers = await self.sidecar.request('POST', '/v1/run', data=b'{}', headers=bearer(token))
        assert status == 200, body
        return headers[EXECUTION]

    async def call(self, method: str, path: str, execution: str | None, *, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any, Any]:
        sent = {**({EXECUTION: execution} if execution else {}), **(headers or {})}
        async with self.session.request(method, self.url + path, headers=sent, **kwargs) as response:
            try:
                body: Any = await response.json(content_type=None)
            except ValueError:
                body = await response.text()
            return response.status, body, response.headers

    def tool_records(self) -> list[dict[str, Any]]:
        return [r for r in self.sidecar.audit_lines if r['event_type'] == 'tool_access']


@asynccontextmanager
async def egress_for(tmp_path: Path, tools: Sequence[BundleTool], *, credential: str | None = TOOL_SECRET,
                     update: dict[str, Any] | None = None, **bundle_options: Any) -> AsyncIterator[Egress]:
    async with running_agent() as agent:
        bundle: PolicyBundle = make_bundle(agent_port=agent.port, tools=tools, **bundle_options)
        bundle = bundle.model_copy(update=update or {})
        settings = sidecar_settings(tmp_path)
        write_bundle(settings.bundle_path, bundle)
        assert bundle.auth.key_file is not None
        write_secret(settings.secrets_dir, bundle.auth.key_file, HMAC_SECRET)
        if credential is not None:
            write_secret(settings.secrets_dir, TOOL_CREDENTIALS, credential)
        async with running_sidecar(settings) as sidecar:
            yield Egress(sidecar, sidecar.egress_url, sidecar.session)


def token(user: str = 'alice', role: str | None = 'analyst', scopes: Sequence[str] = ()) -> str:
    return sign(claims(user=user, role=role, scopes=scopes))


ALICE = token()
# The shipped roles, and one that may run the agent and read tools but not write them.
ROLES = {**{k: list(v) for k, v in DEFAULT_ROLES.items()}, 'reader': ['agent:execute', 'tool:read']}


# --- allowed calls ------------------------------------------------------------------------------


async def test_an_allowed_call_reaches_the_tool_with_its_credential_and_the_callers_identity(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(
            tmp_path, [a_tool(tools, 'search', credentials_file=TOOL_CREDENTIALS)]) as egress:
        execution = await egress.execution(token('alice', 'analyst', ['reports']))
        status, body, headers = await egress.call(
            'POST', '/tools/search/v1/query?q=a%20b&limit=5', execution, data=b'{"text": "hello"}', headers={
                'Authorization': f'Bearer {AGENT_TOKEN}', 'Content-Type': 'application/json',
                'X-Agentgov-User': 'mallory', 'X-Agentgov-Role': 'admin', 'X-Forwarded-For': '6.6.6.6'})
    assert status == 200, body
    assert body == {'tool': 'search', 'path': '/api/search/v1/query', 'query': 'q=a%20b&limit=5', 'bytes': 17}
    assert headers['X-Tool'] == 'search' and headers[EXECUTION] == execution
    [call] = tools.calls
    seen = {k.lower(): v for k, v in call['headers']}
    assert [v for k, v in call['headers'] if k.lower() == 'authorization'] == [f'Bearer {TOOL_SECRET}']
    assert AGENT_TOKEN not in str(call['headers']) and ALICE not in str(call['headers'])
    assert (seen['x-agentgov-user'], seen['x-agentgov-role'], seen['x-agentgov-execution-id']) == (
        'alice', 'analyst', execution)
    assert seen['x-agentgov-scopes'] == 'reports'
    assert 'x-forwarded-for' not in seen
    assert call['method'] == 'POST' and call['body'] == b'{"text": "hello"}'
    records = egress.tool_records()
    assert [(r['result'], r['metadata']['tool']) for r in records] == [('allowed', 'search'), ('success', 'search')]
    allowed, done = records
    assert allowed['user'] == 'alice' and allowed['execution_id'] == execution
    assert allowed['metadata']['role'] == 'analyst' and allowed['metadata']['code'] == 'allowed'
    assert allowed['action'] == 'POST' and allowed['resource'] == '/tools/search/v1/query'
    assert done['metadata']['status'] == 200 and done['metadata']['duration_ms'] >= 0
    assert done['metadata']['breaker'] == 'closed' and done['metadata']['fallback'] is None
    assert TOOL_SECRET not in str(egress.sidecar.audit_lines)


async def test_a_tool_error_is_passed_through_and_does_not_count_against_the_breaker(tmp_path: Path) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search', circuit_breaker=breaker)]) as egress:
        tools.modes['search'] = 'not_found'
        execution = await egress.execution(ALICE)
        answers = [await egress.call('GET', '/tools/search/records/7', execution) for _ in range(3)]
    assert [(status, body) for status, body, _ in answers] == [(404, {'tool': 'search', 'error': 'no such record'})] * 3
    assert len(tools.calls) == 3


# --- refused calls ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('caller', 'method', 'path', 'status', 'code'),
    [
        (token('rita', 'reader'), 'POST', '/tools/crm/contacts', 403, 'permission_denied'),
        (token('alice', 'analyst'), 'GET', '/tools/ledger/balance', 403, 'scope_required'),
        (token('alice', 'analyst'), 'DELETE', '/tools/reports/1', 403, 'tool_method_not_allowed'),
        (token('alice', 'analyst'), 'GET', '/tools/mystery/x', 404, 'tool_not_found'),
        (token('root', 'admin'), 'GET', '/tools/mystery/x', 404, 'tool_not_found'),
    ],
    ids=['a role without the permission', 'a token without the scope', 'a method the tool does not allow',
         'a tool the policy does not list', 'an unlisted tool even for an admin'],
)
async def test_refused_calls_are_answered_and_audited_and_never_reach_a_tool(
        tmp_path: Path, caller: str, method: str, path: str, status: int, code: str) -> None:
    async with running_tools() as tools:
        listed = [a_tool(tools, 'crm', permission='tool:write'), a_tool(tools, 'ledger', scopes=['financial_data']),
                  a_tool(tools, 'reports', methods=['GET'])]
        async with egress_for(tmp_path, listed, roles=ROLES, update={'default_tool_action': 'Allow'}) as egress:
            execution = await egress.execution(caller)
            got, body, _ = await egress.call(method, path, execution)
    assert (got, body['error']['code']) == (status, code), body
    assert tools.calls == []
    [record] = egress.tool_records()
    assert (record['result'], record['metadata']['code'], record['execution_id']) == ('denied', code, execution)
    assert record['resource'] == path and record['action'] == method


@pytest.mark.parametrize(('headers', 'status', 'code'), [
    ({}, 400, 'execution_id_required'),
    ({EXECUTION: 'exe_made_up'}, 403, 'unknown_execution'),
    ({EXECUTION: 'x' * 5000}, 403, 'unknown_execution'),
], ids=['no execution id', 'an id this sidecar never issued', 'a huge id'])
async def test_a_call_must_belong_to_a_live_execution(tmp_path: Path, headers: dict[str, str], status: int,
                                                      code: str) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search')]) as egress:
        got, body, _ = await egress.call('GET', '/tools/search/q', None, headers=headers)
    assert (got, body['error']['code']) == (status, code)
    assert tools.calls == []
    [record] = egress.tool_records()
    assert (record['result'], record['metadata']['code'], record['user']) == ('denied', code, None)


# --- rate limits --------------------------------------------------------------------------------


async def test_a_caller_over_the_rate_limit_gets_429_with_retry_after_and_others_do_not(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(
            tmp_path, [a_tool(tools, 'search', rate_limit=RateLimit(requests_per_minute=3)), a_tool(tools, 'weather')]
    ) as egress:
        alice = await egress.execution(ALICE)
        bob = await egress.execution(token('bob'))
        answers = [await egress.call('GET', f'/tools/search/q{n}', alice) for n in range(5)]
        bobs = await egress.call('GET', '/tools/search/q', bob)
        other_tool = await egress.call('GET', '/tools/weather/today', alice)
    assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
    _, body, headers = answers[3]
    assert body['error']['code'] == 'rate_limited'
    assert body['error']['limit'] == 3 and body['error']['tool'] == 'search'
    assert 1 <= int(headers['Retry-After']) <= 60
    assert bobs[0] == 200 and other_tool[0] == 200
    assert len(tools.of('search')) == 4  # alice's three and bob's one
    denied = [r for r in egress.tool_records() if r['result'] == 'denied']
    assert [(r['user'], r['metadata']['code']) for r in denied] == [('alice', 'rate_limited')] * 2


# --- timeouts, failures, breakers and fallbacks -----------------------------------------------


async def test_a_tool_slower_than_its_timeout_is_a_504(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search', timeout_seconds=1)]) as egress:
        tools.modes['search'] = 'hang'
        execution = await egress.execution(ALICE)
        status, body, _ = await egress.call('GET', '/tools/search/slow', execution)
    assert (status, body['error']['code']) == (504, 'upstream_timeout')
    outcome = egress.tool_records()[-1]
    assert (outcome['result'], outcome['metadata']['error']) == ('failure', 'upstream_timeout')


async def test_a_tool_that_is_down_is_a_502_and_a_tool_5xx_without_fallback_passes_through(tmp_path: Path) -> None:
    async with running_tools() as tools:
        down = a_tool(tools, 'down', upstream=f'http://127.0.0.1:{free_port()}/api')
        async with egress_for(tmp_path, [down, a_tool(tools, 'search')]) as egress:
            tools.modes['search'] = 'fail'
            execution = await egress.execution(ALICE)
            refused = await egress.call('GET', '/tools/down/x', execution)
            failed = await egress.call('GET', '/tools/search/x', execution)
    assert (refused[0], refused[1]['error']['code']) == (502, 'upstream_unavailable')
    assert (failed[0], failed[1]) == (500, {'tool': 'search', 'error': 'exploded'})


BREAKER = CircuitBreaker(failure_threshold=2, recovery_timeout_seconds=1, half_open_successes=1)


async def open_the_breaker(egress: Egress, execution: str, tool: str) -> list[int]:
    """Fail the tool until its breaker is open; the statuses the agent saw."""
    return [(await egress.call('GET', f'/tools/{tool}/x', execution))[0] for _ in range(BREAKER.failure_threshold)]


async def test_an_open_breaker_without_fallback_fails_fast_with_circuit_open(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search', circuit_breaker=BREAKER)]) as egress:
        tools.modes['search'] = 'fail'
        execution = await egress.execution(ALICE)
        assert await open_the_breaker(egress, execution, 'search') == [500, 500]
        status, body, headers = await egress.call('GET', '/tools/search/x', execution)
        _, ready = await egress.sidecar.ready()
    assert (status, body['error']['code']) == (503, 'circuit_open')
    assert int(headers['Retry-After']) == 1
    assert len(tools.calls) == 2  # the third call never left the sidecar
    assert egress.tool_records()[-1]['metadata']['breaker'] == 'open'
    [reported] = [b for b in ready['breakers'] if (b['kind'], b['name']) == ('tool', 'search')]
    assert reported['state'] == 'open'


async def test_an_error_fallback_answers_circuit_open(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(
            tools, 'search', circuit_breaker=BREAKER, fallback=Fallback(type='Error'))]) as egress:
        tools.modes['search'] = 'fail'
        execution = await egress.execution(ALICE)
        await open_the_breaker(egress, execution, 'search')
        status, body, headers = await egress.call('GET', '/tools/search/x', execution)
    assert (status, body['error']['code']) == (503, 'circuit_open') and 'Retry-After' in headers
    assert len(tools.calls) == 2


async def test_a_static_fallback_answers_while_open_and_for_failed_calls(tmp_path: Path) -> None:
    fallback = Fallback(type='StaticResponse', response='{"results": [], "degraded": true}')
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(
            tools, 'search', circuit_breaker=BREAKER, fallback=fallback)]) as egress:
        tools.modes['search'] = 'fail'
        execution = await egress.execution(ALICE)
        answers = [await egress.call('GET', '/tools/search/x', execution) for _ in range(3)]
    assert [(status, body) for status, body, _ in answers] == [(200, {'results': [], 'degraded': True})] * 3
    assert all(headers['X-Agentgov-Fallback'] == 'static' for _, _, headers in answers)
    assert all(headers['Content-Type'].startswith('application/json') for _, _, headers in answers)
    assert len(tools.calls) == 2  # two 5xx replaced by the fallback, then the breaker opened
    outcomes = [r for r in egress.tool_records() if r['result'] in ('success', 'failure')]
    assert [(r['metadata']['fallback'], r['metadata']['breaker']) for r in outcomes] == [
        ('static', 'closed'), ('static', 'open'), ('static', 'open')]


async def test_a_tool_fallback_calls_the_other_tool_once(tmp_path: Path) -> None:
    async with running_tools() as tools:
        search = a_tool(tools, 'search', circuit_breaker=BREAKER, fallback=Fallback(type='Tool', tool='cache'))
        # The fallback tool has a fallback of its own: it is never followed.
        cache = a_tool(tools, 'cache', circuit_breaker=BREAKER, fallback=Fallback(type='Tool', tool='search'))
        async with egress_for(tmp_path, [search, cache]) as egress:
            tools.modes['search'] = 'fail'
            execution = await egress.execution(ALICE)
            answers = [await egress.call('GET', '/tools/search/find?q=x', execution) for _ in range(3)]
            tools.modes['cache'] = 'fail'
            both_failing = await egress.call('GET', '/tools/search/find?q=x', execution)
    for status, body, headers in answers:
        assert status == 200 and body['tool'] == 'cache' and body['path'] == '/api/cache/find'
        assert body['query'] == 'q=x'
        assert (headers['X-Agentgov-Fallback'], headers['X-Agentgov-Fallback-Tool']) == ('tool', 'cache')
    assert len(tools.of('search')) == 2 and len(tools.of('cache')) == 4
    assert both_failing[0] == 500 and both_failing[1] == {'tool': 'cache', 'error': 'exploded'}
    assert all({k.lower(): v for k, v in c['headers']}['x-agentgov-user'] == 'alice' for c in tools.of('cache'))


async def test_a_tool_fallback_the_caller_may_not_use_is_not_taken(tmp_path: Path) -> None:
    async with running_tools() as tools:
        search = a_tool(tools, 'search', circuit_breaker=BREAKER, fallback=Fallback(type='Tool', tool='vault'))
        vault = a_tool(tools, 'vault', scopes=['secrets'])
        async with egress_for(tmp_path, [search, vault]) as egress:
            tools.modes['search'] = 'fail'
            execution = await egress.execution(ALICE)
            await open_the_breaker(egress, execution, 'search')
            status, body, _ = await egress.call('GET', '/tools/search/x', execution)
    assert (status, body['error']['code']) == (503, 'circuit_open')
    assert tools.of('vault') == []
    assert egress.tool_records()[-1]['metadata']['error'] == 'fallback_scope_required'


async def test_a_failed_call_with_a_body_falls_back_only_to_a_static_answer(tmp_path: Path) -> None:
    async with running_tools() as tools:
        search = a_tool(tools, 'search', circuit_breaker=BREAKER, fallback=Fallback(type='Tool', tool='cache'))
        async with egress_for(tmp_path, [search, a_tool(tools, 'cache')]) as egress:
            tools.modes['search'] = 'fail'
            execution = await egress.execution(ALICE)
            sent = await egress.call('POST', '/tools/search/x', execution, data=b'{"q": 1}')
            await egress.call('POST', '/tools/search/x', execution, data=b'{"q": 1}')
            while_open = await egress.call('POST', '/tools/search/x', execution, data=b'{"q": 1}')
    # The body went to search: it cannot be sent again, so its 5xx stands.
    assert sent[0] == 500
    # While open nothing was sent: the fallback tool gets the whole request.
    assert while_open[0] == 200 and while_open[2]['X-Agentgov-Fallback-Tool'] == 'cache'
    assert tools.of('cache')[0]['body'] == b'{"q": 1}'


async def test_the_breaker_half_opens_after_the_recovery_timeout_and_recovers(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search', circuit_breaker=BREAKER)]) as egress:
        tools.modes['search'] = 'close'
        execution = await egress.execution(ALICE)
        assert await open_the_breaker(egress, execution, 'search') == [502, 502]
        assert (await egress.call('GET', '/tools/search/x', execution))[0] == 503
        tools.modes['search'] = 'ok'

        async def probe() -> int:
            return (await egress.call('GET', '/tools/search/x', execution))[0]

        await async_wait_for(probe, lambda status: status == 200, what='the half-open trial call', timeout=5)
        after = [await probe() for _ in range(3)]
        _, metrics, _ = await egress.sidecar.request('GET', '/metrics')
    assert after == [200, 200, 200]
    states = [r['metadata']['breaker'] for r in egress.tool_records() if r['result'] in ('success', 'failure')]
    assert 'open' in states and states[-1] == 'closed'
    transitions = [(r['metadata']['from'], r['metadata']['to']) for r in egress.sidecar.audit_lines
                   if r['event_type'] == 'breaker_transition' and r['resource'] == 'tool/search']
    assert transitions == [('closed', 'open'), ('open', 'half_open'), ('half_open', 'closed')]
    assert 'agentgov_breaker_state{kind="tool",name="search"} 0.0' in metrics


# --- hostile paths and bodies -------------------------------------------------------------------


async def raw_request(url: str, target: str, headers: str = '') -> tuple[int, bytes]:
    """Send a request line exactly as written (clients normalise paths; attackers do not)."""
    host, port = url.removeprefix('http://').split(':')
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f'GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n'.encode('latin-1'))
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b'\r\n\r\n')
    return int(head.split(b' ', 2)[1]), body


@pytest.mark.parametrize('tail', [
    '../cache/x', '..', '%2e%2e/cache/x', '%2E%2e%2fcache', '.%2E/cache', '..;/cache/x', 'a%2F..%2F..%2Fcache',
    'a%2fb', 'a%5c..%5ccache', 'a\\..\\cache', 'x%0d%0aX-Injected:%201', 'x%00', '%zz', 'a/./b', '%c0%ae%c0%ae/cache',
])
async def test_hostile_paths_never_leave_the_tools_base_path(tmp_path: Path, tail: str) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search'), a_tool(tools, 'cache')]) as egress:
        execution = await egress.execution(ALICE)
        status, body = await raw_request(egress.url, f'/tools/search/{tail}', f'{EXECUTION}: {execution}\r\n')
    assert tools.calls == []
    # Every one reaches the tool handler (a decoded newline too) and is refused and audited.
    assert status == 400, body
    assert b'bad_request' in body
    assert egress.tool_records()[-1]['metadata']['code'] == 'bad_request'


@pytest.mark.parametrize(('target', 'path', 'query'), [
    ('/tools/search/a%20b/c?x=../../cache&y=%2e%2e%2F', '/api/search/a%20b/c', 'x=../../cache&y=%2e%2e%2F'),
    ('/tools/search/...', '/api/search/...', ''),
    ('/tools/search/x?q=%0d%0aX-Injected:%201', '/api/search/x', 'q=%0d%0aX-Injected:%201'),
    ('/tools/search/', '/api/search/', ''),
])
async def test_odd_but_harmless_paths_and_queries_are_forwarded_under_the_base(
        tmp_path: Path, target: str, path: str, query: str) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search')]) as egress:
        execution = await egress.execution(ALICE)
        status, body = await raw_request(egress.url, target, f'{EXECUTION}: {execution}\r\n')
    assert status == 200, body
    [call] = tools.calls
    assert (call['raw_path'], call['query']) == (path, query)
    assert not any(k.lower() == 'x-injected' for k, _ in call['headers'])


@pytest.mark.parametrize('chunked', [False, True], ids=['a declared length over the limit', 'a chunked body crossing the limit'])
async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path, chunked: bool) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b'x' * 600

    breaker = CircuitBreaker(failure_threshold=1)
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search', circuit_breaker=breaker)],
                                                    max_body_bytes=1024) as egress:
        execution = await egress.execution(ALICE)
        status, reply, _ = await egress.call('POST', '/tools/search/upload', execution,
                                             data=body() if chunked else b'x' * 2400)
        at_limit = await egress.call('POST', '/tools/search/upload', execution, data=b'z' * 1024)
    assert (status, reply['error']['code']) == (413, 'body_too_large')
    assert '1024 bytes' in reply['error']['message']
    # The caller's mistake is not the tool's failure: the breaker (threshold 1) stayed closed.
    assert at_limit[0] == 200 and at_limit[1]['bytes'] == 1024
    assert all(len(c['body']) <= 1024 for c in tools.calls)
    if not chunked:
        assert len(tools.calls) == 1


async def test_a_missing_tool_credential_is_a_clear_error_not_an_anonymous_call(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(
            tmp_path, [a_tool(tools, 'search', credentials_file=TOOL_CREDENTIALS)], credential=None) as egress:
        execution = await egress.execution(ALICE)
        status, body, _ = await egress.call('GET', '/tools/search/x', execution)
    assert (status, body['error']['code']) == (502, 'upstream_unavailable')
    assert 'search-tool' in body['error']['message']
    assert tools.calls == []


async def test_the_tool_root_is_the_upstream_url_itself(tmp_path: Path) -> None:
    async with running_tools() as tools, egress_for(tmp_path, [a_tool(tools, 'search')]) as egress:
        execution = await egress.execution(ALICE)
        bare = await egress.call('GET', '/tools/search?q=1', execution)
        slash = await egress.call('GET', '/tools/search/?q=1', execution)
    assert bare[0] == slash[0] == 200
    assert [(c['raw_path'], c['query']) for c in tools.calls] == [('/api/search', 'q=1'), ('/api/search/', 'q=1')]


async def test_a_tools_breaker_survives_a_policy_reload(tmp_path: Path) -> None:
    async with running_tools() as tools:
        search = a_tool(tools, 'search', circuit_breaker=BREAKER)
        async with egress_for(tmp_path, [search]) as egress:
            tools.modes['search'] = 'fail'
            execution = await egress.execution(ALICE)
            await open_the_breaker(egress, execution, 'search')
            settings = egress.sidecar.settings
            # Another tool added, this one unchanged: its breaker keeps its state.
            reloaded = make_bundle(agent_port=egress.sidecar.app[POLICY].require().bundle.sidecar.agent_port,
                                   tools=[search, a_tool(tools, 'weather')])
            write_bundle(settings.bundle_path, reloaded)

            async def tools_in_force() -> list[str]:
                return [t.name for t in egress.sidecar.app[POLICY].require().bundle.tools]

            await async_wait_for(tools_in_force, lambda names: names == ['search', 'weather'], what='the reload')
            status, body, _ = await egress.call('GET', '/tools/search/x', execution)
            weather = await egress.call('GET', '/tools/weather/x', execution)
    assert (status, body['error']['code']) == (503, 'circuit_open')
    assert weather[0] == 200
