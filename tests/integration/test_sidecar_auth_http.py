"""Authentication over real HTTP: every forged or broken token of the corpus gets the same 401 and
never a 5xx; keys from a JWKS URL served locally, refreshed on an unknown kid, rate-limited, kept
through an IdP outage."""
from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from harness.waiting import async_wait_for
from sidecar_support import (
    KEY_FILE, Sidecar, bearer, claims, ec_key, ed_key, free_port, make_bundle, public_jwk, rsa_key, running_agent,
    sidecar_for, sign, write_secret,
)
from sidecar_token_corpus import CORPUS, TRUSTED, Forgery, asym_key_file

INVALID = {'error': {'code': 'invalid_token', 'message': 'a valid bearer token is required'}}
ASYM = ['RS256', 'ES256', 'EdDSA']


@asynccontextmanager
async def corpus_sidecar(tmp_path: Path, setup: str, agent_port: int) -> AsyncIterator[Sidecar]:
    if setup == 'asym':
        async with sidecar_for(tmp_path, make_bundle(agent_port=agent_port, algorithms=ASYM), asym_key_file()) as s:
            yield s
    else:
        async with sidecar_for(tmp_path, make_bundle(agent_port=agent_port)) as s:
            yield s


@pytest.mark.parametrize('forgery', CORPUS, ids=[f.id for f in CORPUS])
async def test_a_forged_or_broken_token_gets_the_same_401(tmp_path: Path, forgery: Forgery) -> None:
    token = forgery.make()
    async with running_agent() as agent, corpus_sidecar(tmp_path, forgery.setup, agent.port) as sidecar:
        status, body, headers = await sidecar.request('POST', '/v1/run', headers=bearer(token), data=b'{}')
    assert status == 401, body
    assert body == INVALID
    assert headers['WWW-Authenticate'] == 'Bearer realm="agentgov", error="invalid_token"'
    assert agent.requests == []
    failure = [r for r in sidecar.audit_lines if r['event_type'] == 'authentication'][-1]
    assert failure['result'] == 'failure' and failure['metadata']['reason'] == forgery.reason


async def test_the_corpus_sidecar_accepts_a_genuine_token_of_each_algorithm(tmp_path: Path) -> None:
    tokens = [sign(claims(), rsa_key(TRUSTED), 'RS256', kid='rsa-1'), sign(claims(), ec_key(TRUSTED), 'ES256', kid='ec-1'),
              sign(claims(), ed_key(TRUSTED), 'EdDSA', kid='ed-1')]
    async with running_agent() as agent, corpus_sidecar(tmp_path, 'asym', agent.port) as sidecar:
        statuses = [(await sidecar.request('GET', '/', headers=bearer(t)))[0] for t in tokens]
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize('headers', [
    {}, {'Authorization': 'Basic YWxpY2U6cHc='}, {'Authorization': 'Bearer '},
], ids=['no Authorization header', 'another scheme', 'an empty bearer token'])
async def test_a_request_without_a_token_gets_401_missing_token(tmp_path: Path, headers: dict[str, str]) -> None:
    async with sidecar_for(tmp_path, make_bundle(agent_port=free_port())) as sidecar:
        status, body, response_headers = await sidecar.request('GET', '/v1/run', headers=headers)
    assert status == 401 and body['error']['code'] == 'missing_token'
    assert response_headers['WWW-Authenticate'] == 'Bearer realm="agentgov"'


async def test_two_authorization_headers_are_refused(tmp_path: Path) -> None:
    good = sign(claims())
    async with sidecar_for(tmp_path, make_bundle(agent_port=free_port())) as sidecar:
        status, body, _ = await sidecar.request('GET', '/', headers=CIMultiDict(
            [('Authorization', f'Bearer {good}'), ('Authorization', 'Bearer other')]))
    assert (status, body) == (401, INVALID)


# --- JWKS ------------------------------------------------------------------------------


@dataclass
class Jwks:
    """A local IdP JWKS endpoint: its keys can change and it can be made to fail."""

    keys: list[dict[str, Any]]
    failing: bool = False
    fetches: int = 0
    url: str = ''
    requested_kids: list[str] = field(default_factory=list)


@asynccontextmanager
async def jwks_server(keys: list[dict[str, Any]]) -> AsyncIterator[Jwks]:
    state = Jwks(keys)

    async def serve(request: web.Request) -> web.Response:
        state.fetches += 1
        if state.failing:
            return web.Response(status=503, text='IdP down')
        return web.json_response({'keys': state.keys})

    app = web.Application()
    app.router.add_get('/.well-known/jwks.json', serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    state.url = f'http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json'
    try:
        yield state
    finally:
        await runner.cleanup()


def idp_token(name: str = 'idp-1', kid: str | None = None, **extra: Any) -> str:
    return sign(claims(**extra), rsa_key(name), 'RS256', kid=kid or name)


async def test_tokens_are_verified_with_keys_from_the_jwks_url(tmp_path: Path) -> None:
    async with jwks_server([public_jwk(rsa_key('idp-1'), 'idp-1')]) as idp, running_agent() as agent, \
            sidecar_for(tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256'], jwks_url=idp.url)) as sidecar:
        status, _, _ = await sidecar.request('GET', '/', headers=bearer(idp_token()))
        forged, _, _ = await sidecar.request('GET', '/', headers=bearer(idp_token('attacker', kid='idp-1')))
    assert (status, forged) == (200, 401)


async def test_a_key_rotated_in_at_the_idp_is_picked_up_on_its_first_token(tmp_path: Path) -> None:
    async with jwks_server([public_jwk(rsa_key('idp-1'), 'idp-1')]) as idp, running_agent() as agent, \
            sidecar_for(tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256'], jwks_url=idp.url)) as sidecar:
        assert (await sidecar.request('GET', '/', headers=bearer(idp_token())))[0] == 200
        idp.keys.append(public_jwk(rsa_key('idp-2'), 'idp-2'))  # the IdP publishes its next key

        async def new_key_status() -> int:
            return (await sidecar.request('GET', '/', headers=bearer(idp_token('idp-2'))))[0]

        # The first unknown kid refreshes the cache (at most once per min refresh interval).
        await async_wait_for(new_key_status, lambda s: s == 200, what='a token of the new key to be accepted')
        # The old key stays valid while the IdP still publishes it.
        assert (await sidecar.request('GET', '/', headers=bearer(idp_token('idp-1'))))[0] == 200


async def test_unknown_kids_refresh_the_jwks_at_most_once_per_interval(tmp_path: Path) -> None:
    async with jwks_server([public_jwk(rsa_key('idp-1'), 'idp-1')]) as idp, running_agent() as agent, \
            sidecar_for(tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256'], jwks_url=idp.url),
                        jwks_min_refresh_seconds=3600) as sidecar:
        assert (await sidecar.request('GET', '/', headers=bearer(idp_token())))[0] == 200
        before = idp.fetches
        for _ in range(25):
            token = idp_token('attacker', kid=str(uuid.uuid4()))
            assert (await sidecar.request('GET', '/', headers=bearer(token)))[0] == 401
    assert before == 1 and idp.fetches == 1


async def test_an_idp_outage_keeps_the_cached_keys_and_readiness_says_so(tmp_path: Path) -> None:
    async with jwks_server([public_jwk(rsa_key('idp-1'), 'idp-1')]) as idp, running_agent() as agent, \
            sidecar_for(tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256'], jwks_url=idp.url),
                        jwks_cache_seconds=0.01, jwks_min_refresh_seconds=0.01) as sidecar:
        assert (await sidecar.request('GET', '/', headers=bearer(idp_token())))[0] == 200
        idp.failing = True
        fetched = idp.fetches
        await async_wait_for(lambda: _status(sidecar, idp_token()), lambda s: s == 200 and idp.fetches > fetched,
                             what='a request served from cached keys after a failed refresh')
        _, ready, _ = await sidecar.request('GET', '/ready')
    assert ready['ready'] is True
    assert ready['jwks'][0]['keys'] == 1 and 'HTTP 503' in ready['jwks'][0]['error']


async def _status(sidecar: Sidecar, token: str) -> int:
    return (await sidecar.request('GET', '/', headers=bearer(token)))[0]


async def test_no_reachable_jwks_and_no_cached_keys_is_a_503_not_a_401(tmp_path: Path) -> None:
    url = f'http://127.0.0.1:{free_port()}/jwks.json'
    async with sidecar_for(tmp_path, make_bundle(agent_port=free_port(), algorithms=['RS256'], jwks_url=url)) as sidecar:
        status, body, headers = await sidecar.request('GET', '/', headers=bearer(idp_token()))
    assert status == 503 and body['error']['code'] == 'auth_unavailable'
    assert headers['Retry-After'] == '5'


async def test_a_static_key_file_rotation_applies_on_reload(tmp_path: Path) -> None:
    keys = {'keys': [public_jwk(rsa_key('old'), 'old')]}
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port, algorithms=['RS256']),
                                                     json.dumps(keys)) as sidecar:
        assert await _status(sidecar, idp_token('new')) == 401
        write_secret(sidecar.settings.secrets_dir, KEY_FILE,
                     json.dumps({'keys': [public_jwk(rsa_key('new'), 'new'), public_jwk(rsa_key('old'), 'old')]}))
        await async_wait_for(lambda: _status(sidecar, idp_token('new')), lambda s: s == 200,
                             what='the new key to be accepted after the Secret changed')
        assert await _status(sidecar, idp_token('old')) == 200
        write_secret(sidecar.settings.secrets_dir, KEY_FILE, json.dumps({'keys': [public_jwk(rsa_key('new'), 'new')]}))
        await async_wait_for(lambda: _status(sidecar, idp_token('old')), lambda s: s == 401,
                             what='the retired key to be refused')
