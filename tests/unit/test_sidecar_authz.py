"""Authorization (agentgov.sidecar.authz.decide): the role x permission x route matrix, scopes,
tool methods, default tool action, and how requests are classified into routes."""
from __future__ import annotations

import itertools

import pytest

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.authz import (
    AdminRoute, AgentRoute, Route, ToolRoute, classify, classify_tool, decide, permissions_of,
)
from agentgov.api.defaults import DEFAULT_ROLES
from sidecar_support import ISSUER, make_bundle, tool

ROLES = {**{k: list(v) for k, v in DEFAULT_ROLES.items()}, 'auditor': ['tool:all']}
BUNDLE = make_bundle(
    roles=ROLES,
    tools=[
        tool('search', 'tool:read'),
        tool('crm', 'tool:write'),
        tool('ledger', 'tool:read', scopes=['financial_data']),
        tool('reports', 'tool:read', methods=['GET']),
    ],
)

# Who may do what, written out from the playbook's role table (not derived from the code).
EXECUTORS = {'admin', 'developer', 'analyst'}
READERS = {'admin', 'developer', 'analyst', 'viewer', 'auditor'}
WRITERS = {'admin', 'developer', 'auditor'}

ROUTES: dict[str, Route] = {
    'execute the agent': AgentRoute('POST', '/v1/run'),
    'mint a token': AdminRoute('tokens:create'),
    'read tool search': ToolRoute('search', 'GET'),
    'write tool crm': ToolRoute('crm', 'POST'),
    'scoped tool ledger': ToolRoute('ledger', 'GET'),
    'GET-only tool reports with DELETE': ToolRoute('reports', 'DELETE'),
    'unlisted tool': ToolRoute('mystery', 'GET'),
}
ROLE_CASES = ['admin', 'developer', 'analyst', 'viewer', 'auditor', 'intern', None]
SCOPE_CASES = {'without scopes': frozenset(), 'with financial_data': frozenset({'financial_data'})}


def expected(route: str, role: str | None, scopes: frozenset[str]) -> str:
    """The decision code the playbook's table gives."""
    if route == 'unlisted tool':
        return 'tool_not_allowed'
    if route == 'GET-only tool reports with DELETE':
        return 'tool_method_not_allowed'
    if route == 'mint a token':
        return 'allowed' if role == 'admin' else 'role_required'
    if role is None:
        return 'role_required'
    if role not in ROLES:
        return 'unknown_role'
    allowed_roles = {'execute the agent': EXECUTORS, 'read tool search': READERS, 'write tool crm': WRITERS,
                     'scoped tool ledger': READERS}[route]
    if role not in allowed_roles:
        return 'permission_denied'
    if route == 'scoped tool ledger' and 'financial_data' not in scopes:
        return 'scope_required'
    return 'allowed'


MATRIX = list(itertools.product(ROUTES, ROLE_CASES, SCOPE_CASES))


@pytest.mark.parametrize('route, role, scopes', MATRIX,
                         ids=[f'{role or "no role"} {scope} -> {route}' for route, role, scope in MATRIX])
def test_role_permission_route_matrix(route: str, role: str | None, scopes: str) -> None:
    identity = Identity(user='u', role=role, scopes=SCOPE_CASES[scopes], issuer=ISSUER, expires_at=0)
    decision = decide(identity, ROUTES[route], BUNDLE)
    assert decision.code == expected(route, role, SCOPE_CASES[scopes]), decision.message
    assert decision.allowed is (decision.code == 'allowed')


def test_every_denial_names_the_rule_and_never_the_token() -> None:
    identity = Identity(user='u', role='viewer', scopes=frozenset(), issuer=ISSUER, expires_at=0)
    decision = decide(identity, ROUTES['execute the agent'], BUNDLE)
    assert decision.message == "role 'viewer' lacks permission agent:execute (executing the agent)"


def test_scopes_required_by_the_agent_are_needed_to_execute_it() -> None:
    bundle = make_bundle(required_scopes=['financial_data', 'research'])
    identity = Identity(user='u', role='analyst', scopes=frozenset({'research'}), issuer=ISSUER, expires_at=0)
    decision = decide(identity, AgentRoute('POST', '/'), bundle)
    assert (decision.code, decision.missing_scopes) == ('scope_required', ('financial_data',))


def test_an_unlisted_tool_is_allowed_when_the_default_action_is_allow() -> None:
    bundle = make_bundle().model_copy(update={'default_tool_action': 'Allow'})
    identity = Identity(user='u', role='viewer', scopes=frozenset(), issuer=ISSUER, expires_at=0)
    assert decide(identity, ToolRoute('mystery', 'GET'), bundle).allowed


@pytest.mark.parametrize('route, privileged', [
    (AdminRoute('tokens:create'), True), (ToolRoute('crm', 'POST'), True), (ToolRoute('search', 'GET'), False),
    (AgentRoute('GET', '/'), False),
], ids=['minting tokens is privileged', 'a write tool is privileged', 'a read tool is not', 'executing is not'])
def test_privileged_routes_are_marked_so_they_can_fail_closed(route: Route, privileged: bool) -> None:
    identity = Identity(user='u', role='admin', scopes=frozenset(), issuer=ISSUER, expires_at=0)
    assert decide(identity, route, BUNDLE).privileged is privileged


@pytest.mark.parametrize('role, permissions', [
    ('auditor', {'tool:all', 'tool:read', 'tool:write'}),
    ('viewer', {'tool:read'}),
    ('intern', set()),
    (None, set()),
], ids=['tool:all grants both tool permissions', 'a shipped role keeps its own', 'an unknown role grants nothing',
        'no role grants nothing'])
def test_permissions_of_a_role(role: str | None, permissions: set[str]) -> None:
    assert permissions_of(role, ROLES) == permissions  # type: ignore[arg-type]


@pytest.mark.parametrize('method, path, route', [
    ('POST', '/agentgov/v1/tokens', AdminRoute('tokens:create')),
    ('GET', '/agentgov/v1/tokens', None),
    ('GET', '/agentgov/anything', None),
    ('GET', '/v1/chat', AgentRoute('GET', '/v1/chat')),
    ('POST', '/', AgentRoute('POST', '/')),
    ('GET', '/agentgovx', AgentRoute('GET', '/agentgovx')),
], ids=['POST to the token endpoint mints', 'GET on the token endpoint is nothing', 'other sidecar paths are nothing',
        'an agent path', 'the root', 'a path that only starts like the prefix'])
def test_inbound_requests_are_classified(method: str, path: str, route: Route | None) -> None:
    assert classify(method, path) == route


@pytest.mark.parametrize('path, route', [
    ('/tools/search/q', ToolRoute('search', 'GET')), ('/tools/search', ToolRoute('search', 'GET')),
    ('/tools/', None), ('/v1/x', None),
], ids=['a tool path with a rest', 'the tool root', 'no tool name', 'not a tool path'])
def test_tool_paths_are_classified(path: str, route: ToolRoute | None) -> None:
    assert classify_tool('GET', path) == route
