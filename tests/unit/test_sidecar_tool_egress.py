"""Tool egress, the pure parts: which calls the policy allows and where they go (``plan_tool_call``,
``tool_target``), which headers reach a tool (``request_headers_for_tool``), the tool credential."""
from __future__ import annotations

import time

import pytest

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.errors import BadRequest, Forbidden, ToolNotFound
from agentgov.sidecar.tool_egress import (
    Refusal, ToolCall, credential_header, plan_tool_call, request_headers_for_tool, split_tool_path, tool_target,
)
from sidecar_support import ISSUER, make_bundle, tool

BASE = 'http://127.0.0.1:9/api/search'


def who(role: str | None = 'analyst', scopes: tuple[str, ...] = (), user: str = 'alice') -> Identity:
    return Identity(user=user, role=role, scopes=frozenset(scopes), issuer=ISSUER, expires_at=time.time() + 60)


BUNDLE = make_bundle(tools=[
    tool('search', 'tool:read'),
    tool('crm', 'tool:write'),
    tool('ledger', 'tool:read', scopes=['financial_data']),
    tool('reports', 'tool:read', methods=['GET']),
])


@pytest.mark.parametrize(
    ('identity', 'method', 'path', 'expected'),
    [
        (who(), 'GET', '/tools/search/q', 'allowed'),
        (who('viewer'), 'POST', '/tools/search/q', 'allowed'),
        (who('viewer'), 'POST', '/tools/crm/contacts', 'permission_denied'),
        (who('developer'), 'POST', '/tools/crm/contacts', 'allowed'),
        (who(), 'GET', '/tools/ledger/balance', 'scope_required'),
        (who(scopes=('financial_data',)), 'GET', '/tools/ledger/balance', 'allowed'),
        (who(), 'DELETE', '/tools/reports/1', 'tool_method_not_allowed'),
        (who(None), 'GET', '/tools/search/q', 'role_required'),
        (who('intruder'), 'GET', '/tools/search/q', 'unknown_role'),
        (who(), 'GET', '/tools/mystery/q', 'tool_not_found'),
        (who('admin'), 'GET', '/tools/mystery/q', 'tool_not_found'),
        (who(), 'GET', '/tools/sea%72ch/q', 'allowed'),
        (who(), 'GET', '/tools/search%2Fx/q', 'tool_not_found'),
        (who(), 'GET', '/tools/../search/q', 'tool_not_found'),
        (who(), 'GET', '/tools/search/../crm', 'bad_request'),
        (who('viewer'), 'GET', '/tools/crm/../../x', 'permission_denied'),
    ],
    ids=[
        'a reader calls a read tool',
        'any method of a tool without a method list',
        'a viewer may not call a write tool',
        'a developer calls a write tool',
        'a scoped tool needs the scope',
        'a scoped tool with the scope',
        'a method the tool does not allow',
        'a token without a role',
        'a role the policy does not know',
        'an unlisted tool is not found',
        'an unlisted tool is not found even for an admin',
        'an encoded letter in the name names the same tool',
        'an encoded slash makes another (unknown) name',
        'a dot segment as the name is unknown',
        'a dot segment after the name is refused',
        'authorization is decided before the path is looked at',
    ],
)
def test_the_plan_for_a_call(identity: Identity, method: str, path: str, expected: str) -> None:
    planned = plan_tool_call(identity, method, path, '', BUNDLE)
    if expected == 'allowed':
        assert isinstance(planned, ToolCall), planned
        assert planned.decision.allowed
    else:
        assert isinstance(planned, Refusal)
        assert planned.error.code == expected


def test_an_unlisted_tool_is_not_found_under_default_allow_too() -> None:
    bundle = BUNDLE.model_copy(update={'default_tool_action': 'Allow'})
    planned = plan_tool_call(who(), 'GET', '/tools/mystery/q', '', bundle)
    assert isinstance(planned, Refusal) and isinstance(planned.error, ToolNotFound)
    assert 'mystery' not in planned.error.message  # caller text is never echoed


def test_refusals_carry_the_error_class_for_their_status() -> None:
    assert isinstance(plan_tool_call(who('viewer'), 'POST', '/tools/crm/x', '', BUNDLE).error, Forbidden)  # type: ignore[union-attr]
    assert isinstance(plan_tool_call(who(), 'GET', '/tools/search/%2e%2e', '', BUNDLE).error, BadRequest)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ('tail', 'query', 'expected'),
    [
        ('q', 'text=hello', 'http://127.0.0.1:9/api/search/q?text=hello'),
        ('', '', 'http://127.0.0.1:9/api/search/'),
        ('a/b/c', '', 'http://127.0.0.1:9/api/search/a/b/c'),
        ('a%20b/c%3Bd;e', '', 'http://127.0.0.1:9/api/search/a%20b/c%3Bd;e'),
        ('x', 'q=%0d%0a&r=../..&s=%2F', 'http://127.0.0.1:9/api/search/x?q=%0d%0a&r=../..&s=%2F'),
        ('a//b', '', 'http://127.0.0.1:9/api/search/a//b'),
        ('...', '', 'http://127.0.0.1:9/api/search/...'),
        ('..a', '', 'http://127.0.0.1:9/api/search/..a'),
        ('a b', '', 'http://127.0.0.1:9/api/search/a%20b'),
        ('%C3%A9t%C3%A9', '', 'http://127.0.0.1:9/api/search/%C3%A9t%C3%A9'),
    ],
    ids=['a path and a query', 'the base itself', 'nested segments', 'encodings kept as sent',
         'a hostile query is passed as sent (it cannot change the path)', 'an empty segment',
         'three dots are a name', 'a name starting with dots', 'a raw space is encoded', 'encoded UTF-8'],
)
def test_targets_stay_under_the_base_path(tail: str, query: str, expected: str) -> None:
    target = tool_target(BASE, tail, query)
    assert not isinstance(target, str), target
    assert str(target) == expected
    assert target.raw_path.startswith('/api/search/')


@pytest.mark.parametrize(
    ('tail', 'problem'),
    [
        ('..', 'dot segment'), ('.', 'dot segment'), ('a/../../x', 'dot segment'), ('%2e%2e/x', 'dot segment'),
        ('%2E%2e', 'dot segment'), ('.%2e', 'dot segment'), ('..;jsessionid=1/x', 'dot segment'),
        ('%2e%2e%3bx', 'dot segment'), ('a%2Fb', 'slash'), ('a%2f..%2fb', 'slash'), ('a%5Cb', 'backslash'),
        ('a\\..\\b', 'backslash'), ('a%0d%0aHost:%20evil', 'control character'), ('a%00b', 'control character'),
        ('a%7fb', 'control character'), ('%zz', 'malformed'), ('a%2', 'malformed'), ('%ff%fe', 'UTF-8'),
    ],
)
def test_segments_that_could_escape_are_refused(tail: str, problem: str) -> None:
    target = tool_target(BASE, tail, '')
    assert isinstance(target, str)
    assert problem in target


@pytest.mark.parametrize(
    ('base', 'expected'),
    [
        ('http://tools.internal', 'http://tools.internal/x'),
        ('http://tools.internal/', 'http://tools.internal/x'),
        ('https://tools.internal:8443/v1/', 'https://tools.internal:8443/v1/x'),
        ('http://tools.internal/v1?key=dropped', 'http://tools.internal/v1/x'),
        ('http://[::1]:8080/v1', 'http://[::1]:8080/v1/x'),
    ],
    ids=['no path', 'a slash', 'a port and a trailing slash', 'the base query is not kept', 'IPv6'],
)
def test_the_base_url_forms(base: str, expected: str) -> None:
    assert str(tool_target(base, 'x', '')) == expected


@pytest.mark.parametrize(('base', 'expected'), [
    ('http://tools.internal/v1', 'http://tools.internal/v1?q=1'),
    ('http://tools.internal/v1/', 'http://tools.internal/v1/?q=1'),
    ('http://tools.internal', 'http://tools.internal/?q=1'),
], ids=['a path', 'a trailing slash', 'no path'])
def test_the_tool_root_is_the_base_url_itself(base: str, expected: str) -> None:
    assert str(tool_target(base, None, 'q=1')) == expected


@pytest.mark.parametrize('upstream', ['not a url', '/relative/path', 'ftp://files.internal/x', 'http://'],
                         ids=['text', 'a relative path', 'another scheme', 'no host'])
def test_a_tool_without_a_usable_upstream_is_a_clear_502(upstream: str) -> None:
    bundle = make_bundle(tools=[tool('search').model_copy(update={'upstream': upstream})])
    planned = plan_tool_call(who(), 'GET', '/tools/search/x', '', bundle)
    assert isinstance(planned, Refusal)
    assert (planned.error.status, planned.error.code) == (502, 'upstream_unavailable')


def test_split_takes_the_name_from_the_raw_path() -> None:
    assert split_tool_path('/tools/search/a/b') == ('search', 'a/b')
    assert split_tool_path('/tools/a%2Fb/c') == ('a/b', 'c')
    assert split_tool_path('/tools/search') == ('search', None)
    assert split_tool_path('/tools/search/') == ('search', '')
    assert split_tool_path('/elsewhere') == ('', None)


def test_a_tool_gets_the_callers_identity_and_its_own_credential_only() -> None:
    incoming = [
        ('Authorization', 'Bearer agent-token'), ('authorization', 'Basic second'), ('Host', '127.0.0.1:8081'),
        ('Content-Type', 'application/json'), ('X-Agentgov-User', 'mallory'), ('x-agentgov-role', 'admin'),
        ('X-Agentgov-Execution-Id', 'exe_1'), ('X-Forwarded-For', '6.6.6.6'), ('Forwarded', 'for=6.6.6.6'),
        ('X-Real-IP', '6.6.6.6'), ('Connection', 'close, X-Hop'), ('X-Hop', '1'), ('TE', 'trailers'),
        ('Proxy-Authorization', 'Basic x'), ('Expect', '100-continue'), ('X-Custom', 'kept'),
    ]
    identity = who('analyst', ('reports',))
    headers = request_headers_for_tool(incoming, identity=identity, execution_id='exe_real', request_id='req_1',
                                       credential='Bearer tool-secret')
    names = [name.lower() for name, _ in headers]
    as_dict = {name.lower(): value for name, value in headers}
    assert names.count('authorization') == 1 and as_dict['authorization'] == 'Bearer tool-secret'
    assert as_dict['x-agentgov-user'] == 'alice' and as_dict['x-agentgov-role'] == 'analyst'
    assert as_dict['x-agentgov-execution-id'] == 'exe_real' and as_dict['x-agentgov-request-id'] == 'req_1'
    assert names.count('x-agentgov-user') == 1
    assert not {'host', 'x-forwarded-for', 'forwarded', 'x-real-ip', 'connection', 'x-hop', 'te',
                'proxy-authorization', 'expect', 'x-agentgov-client-ip'} & set(names)
    assert as_dict['content-type'] == 'application/json' and as_dict['x-custom'] == 'kept'


def test_without_a_credential_no_authorization_reaches_the_tool() -> None:
    headers = request_headers_for_tool([('Authorization', 'Bearer agent-token')], identity=who(),
                                       execution_id='exe_1', request_id='req_1', credential=None)
    assert 'authorization' not in {name.lower() for name, _ in headers}


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        (b'tool-secret', 'Bearer tool-secret'), (b'tool-secret\n', 'Bearer tool-secret'),
        (b'tool-secret\r\n', 'Bearer tool-secret'), (None, None), (b'', None), (b'two\nlines', None),
        (b'a\r\nX-Injected: 1', None), (b'caf\xc3\xa9', None), (b' leading-space', None), (b'nul\x00', None),
    ],
    ids=['plain', 'a trailing newline', 'a trailing CRLF', 'not mounted', 'empty', 'two lines',
         'a header injection', 'not ASCII', 'a leading space', 'a NUL'],
)
def test_the_credential_must_fit_one_header_line(value: bytes | None, expected: str | None) -> None:
    assert credential_header(value) == expected
