"""Authorization over real HTTP: the role x scope x route matrix of the inbound port (every denied
combination is a 403 with its code, nothing reaches the agent), and the admin token endpoint."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from agentgov.api.bundle import SecretFile
from agentgov.api.defaults import DEFAULT_ROLES
from sidecar_support import (
    bearer, claims, make_bundle, private_pem, public_pem, rsa_key, running_agent, sidecar_for, sign, write_secret,
)

ROLES = {**{k: list(v) for k, v in DEFAULT_ROLES.items()}, 'auditor': ['tool:all']}
ROLE_CASES = ['admin', 'developer', 'analyst', 'viewer', 'auditor', 'intern', None]
SCOPE_CASES = {'with scope research': ['research'], 'without scopes': []}
ROUTES = {'execute the agent': ('POST', '/v1/run', b'{}'),
          'mint a token': ('POST', '/agentgov/v1/tokens', b'{"user": "ci", "role": "viewer", "scopes": []}')}
MATRIX = list(itertools.product(ROUTES, ROLE_CASES, SCOPE_CASES))


def expected_status(route: str, role: str | None, scopes: list[str]) -> tuple[int, str | None]:
    if route == 'mint a token':
        return (201, None) if role == 'admin' else (403, 'role_required')
    if role is None:
        return 403, 'role_required'
    if role == 'intern':
        return 403, 'unknown_role'
    if role not in {'admin', 'developer', 'analyst'}:
        return 403, 'permission_denied'
    if 'research' not in scopes:
        return 403, 'scope_required'
    return 200, None


@pytest.mark.parametrize('route, role, scopes', MATRIX,
                         ids=[f'{role or "no role"} {scopes} -> {route}' for route, role, scopes in MATRIX])
async def test_role_scope_route_matrix_over_http(tmp_path: Path, route: str, role: str | None, scopes: str) -> None:
    method, path, body = ROUTES[route]
    token = sign(claims(role=role, scopes=SCOPE_CASES[scopes]))
    async with running_agent() as agent, sidecar_for(
            tmp_path, make_bundle(agent_port=agent.port, roles=ROLES, required_scopes=['research'])) as sidecar:
        status, reply, _ = await sidecar.request(method, path, data=body, headers=bearer(token))
    want_status, want_code = expected_status(route, role, SCOPE_CASES[scopes])
    assert status == want_status, reply
    if want_code:
        assert reply['error']['code'] == want_code
        assert token not in str(reply)
        assert agent.requests == []
        denial = [r for r in sidecar.audit_lines if r['event_type'] == 'authorization'][-1]
        assert (denial['result'], denial['metadata']['code']) == ('denied', want_code)


async def mint(sidecar: Any, body: dict[str, Any], caller: str) -> tuple[int, Any]:
    status, reply, headers = await sidecar.request('POST', '/agentgov/v1/tokens', json=body, headers=bearer(caller))
    if status == 201:
        assert headers['Cache-Control'] == 'no-store'
    return status, reply


async def test_an_admin_mints_a_scoped_token_that_works_and_is_audited_first(tmp_path: Path) -> None:
    admin = sign(claims(user='root', role='admin', scopes=['financial_data']))
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        status, reply = await mint(sidecar, {'user': 'ci-bot', 'role': 'analyst', 'scopes': ['financial_data'],
                                             'ttl': '15m'}, admin)
        assert status == 201, reply
        assert (reply['user'], reply['role'], reply['scopes'], reply['expiresIn']) == ('ci-bot', 'analyst',
                                                                                       ['financial_data'], 900)
        used, _, _ = await sidecar.request('GET', '/v1/run', headers=bearer(reply['token']))
    assert used == 200
    seen = {k.lower(): v for k, v in agent.requests[0]['headers']}
    assert (seen['x-agentgov-user'], seen['x-agentgov-scopes']) == ('ci-bot', 'financial_data')
    issued = [r for r in sidecar.audit_lines if r['event_type'] == 'token_issued']
    assert len(issued) == 1 and issued[0]['user'] == 'root'
    assert issued[0]['metadata']['minted_user'] == 'ci-bot' and issued[0]['metadata']['jti'] == reply['tokenId']
    assert reply['token'] not in (tmp_path / 'audit' / 'audit.jsonl').read_text()
    actor = [r for r in sidecar.audit_lines if r['event_type'] == 'authentication'][-1]['metadata']['actor']
    assert actor == 'root'


@pytest.mark.parametrize('body, code', [
    ({'user': 'ci', 'role': 'viewer', 'scopes': ['payroll']}, 'mint_not_narrower'),
    ({'user': 'ci', 'role': 'viewer', 'ttl': '30d'}, 'bad_request'),
    ({'user': 'ci', 'role': 'nobody'}, 'bad_request'),
], ids=['a scope the admin does not hold', 'a ttl over the maximum', 'a role the agent does not define'])
async def test_a_mint_request_wider_than_allowed_is_refused(tmp_path: Path, body: dict[str, Any], code: str) -> None:
    admin = sign(claims(user='root', role='admin'))
    async with sidecar_for(tmp_path, make_bundle()) as sidecar:
        status, reply = await mint(sidecar, body, admin)
    assert status in (400, 403) and reply['error']['code'] == code


async def test_a_mint_body_that_is_not_json_is_a_400(tmp_path: Path) -> None:
    admin = sign(claims(user='root', role='admin'))
    async with sidecar_for(tmp_path, make_bundle()) as sidecar:
        status, reply, _ = await sidecar.request('POST', '/agentgov/v1/tokens', data=b'{oops', headers=bearer(admin))
    assert (status, reply['error']['code']) == (400, 'bad_request')


async def test_minting_needs_a_signing_key_with_asymmetric_verification(tmp_path: Path) -> None:
    admin_key = rsa_key('idp')
    admin = sign(claims(user='root', role='admin'), admin_key, 'RS256')
    bundle = make_bundle(algorithms=['RS256'])
    async with sidecar_for(tmp_path, bundle, public_pem(admin_key)) as sidecar:
        status, reply = await mint(sidecar, {'user': 'ci', 'role': 'viewer'}, admin)
    assert (status, reply['error']['code']) == (501, 'token_minting_not_configured')


async def test_a_signing_key_file_lets_an_rs256_sidecar_mint_tokens_it_accepts(tmp_path: Path) -> None:
    signing = SecretFile(secret='agent-auth', key='signing-key')
    write_secret(tmp_path / 'secrets', signing, private_pem(rsa_key('sidecar')))
    admin = sign(claims(user='root', role='admin'), rsa_key('idp'), 'RS256')
    async with running_agent() as agent, sidecar_for(
            tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256'], signing_key_file=signing),
            public_pem(rsa_key('idp'))) as sidecar:
        status, reply = await mint(sidecar, {'user': 'ci', 'role': 'analyst'}, admin)
        assert status == 201, reply
        used, _, _ = await sidecar.request('GET', '/', headers=bearer(reply['token']))
    assert used == 200


@pytest.mark.parametrize('method, path, status, code', [
    ('GET', '/agentgov/v1/tokens', 405, 'method_not_allowed'),
    ('GET', '/agentgov/v2/other', 404, 'not_found'),
], ids=['GET on the token endpoint', 'another path under the sidecar prefix'])
async def test_the_sidecar_prefix_is_never_proxied(tmp_path: Path, method: str, path: str, status: int, code: str) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        got, reply, _ = await sidecar.request(method, path, headers=bearer(sign(claims(role='admin'))))
    assert (got, reply['error']['code']) == (status, code)
    assert agent.requests == []
