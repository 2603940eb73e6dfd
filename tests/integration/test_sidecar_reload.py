"""Hot reload of the bundle and its secrets in a running sidecar: an atomic swap mid-traffic fails no
request and applies the new policy; a malformed bundle or a short HMAC key keeps the last good
snapshot and readiness says so; no bundle at start means not ready until one arrives."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentgov.api.bundle import PolicyBundle, canonical_json
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.sidecar.settings import Settings
from harness.waiting import async_wait_for
from sidecar_support import (
    HMAC_SECRET, KEY_FILE, Sidecar, bearer, claims, free_port, kubelet_write, make_bundle, running_agent,
    running_sidecar, sidecar_settings, sign, write_secret,
)

ANALYST = bearer(sign(claims(role='analyst')))
VIEWER = bearer(sign(claims(role='viewer')))


async def status_of(sidecar: Sidecar, headers: dict[str, str]) -> int:
    return (await sidecar.request('GET', '/v1/run', headers=headers))[0]


def publish(settings: Settings, bundle: PolicyBundle) -> None:
    """The operator updating the ConfigMap: kubelet swaps the mounted folder atomically."""
    kubelet_write(settings.bundle_path.parent, {settings.bundle_path.name: canonical_json(bundle)})


async def test_an_atomic_bundle_swap_under_load_fails_no_request_and_applies_the_new_policy(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    write_secret(settings.secrets_dir, KEY_FILE, HMAC_SECRET)
    async with running_agent() as agent:
        old = make_bundle(agent_port=agent.port)
        roles = {k: list(v) for k, v in DEFAULT_ROLES.items()} | {'viewer': ['tool:read', 'agent:execute']}
        new = make_bundle(agent_port=agent.port, roles=roles)
        publish(settings, old)
        async with running_sidecar(settings) as sidecar:
            assert await status_of(sidecar, VIEWER) == 403
            statuses: list[int] = []
            stop = asyncio.Event()

            async def caller() -> None:
                while not stop.is_set():
                    statuses.append(await status_of(sidecar, ANALYST))

            workers = [asyncio.create_task(caller()) for _ in range(4)]
            await async_wait_for(lambda: _count(statuses), lambda n: n >= 20, what='traffic before the swap')
            publish(settings, new)
            await async_wait_for(lambda: status_of(sidecar, VIEWER), lambda s: s == 200, what='the new policy')
            seen = len(statuses)
            await async_wait_for(lambda: _count(statuses), lambda n: n >= seen + 20, what='traffic after the swap')
            stop.set()
            await asyncio.gather(*workers)
            _, body = await sidecar.ready()
    assert set(statuses) == {200}, f'{len([s for s in statuses if s != 200])} of {len(statuses)} requests failed'
    assert body['bundle']['state'] == 'current'
    reloads = [r for r in sidecar.audit_lines if r['event_type'] == 'policy_reload']
    assert [r['result'] for r in reloads] == ['success', 'success']
    assert reloads[0]['metadata']['hash'] != reloads[1]['metadata']['hash'] == body['bundle']['hash']


async def _count(items: list[int]) -> int:
    return len(items)


async def test_a_malformed_bundle_keeps_the_last_good_one_and_readiness_reports_it(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    write_secret(settings.secrets_dir, KEY_FILE, HMAC_SECRET)
    async with running_agent() as agent:
        good = make_bundle(agent_port=agent.port)
        publish(settings, good)
        async with running_sidecar(settings) as sidecar:
            _, before = await sidecar.ready()
            kubelet_write(settings.bundle_path.parent, {settings.bundle_path.name: '{"schemaVersion": "agentgov.io/bundle/v1", "agent": '})
            status, body = await async_wait_for(sidecar.ready, lambda r: r[1]['bundle']['state'] == 'stale',
                                                what='readiness to report the bad bundle')
            assert status == 200 and body['ready'] is True
            assert body['bundle']['hash'] == before['bundle']['hash']
            assert 'invalid bundle' in body['bundle']['error']
            assert await status_of(sidecar, ANALYST) == 200
            _, metrics, _ = await sidecar.request('GET', '/metrics')
            assert 'agentgov_bundle_valid 0.0' in metrics
            assert f'agentgov_bundle_info{{hash="{before["bundle"]["hash"]}"}} 1.0' in metrics
            publish(settings, good)
            await async_wait_for(sidecar.ready, lambda r: r[1]['bundle']['state'] == 'current',
                                 what='the fixed bundle to be current again')


async def test_without_a_bundle_the_sidecar_is_not_ready_until_one_is_written(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    write_secret(settings.secrets_dir, KEY_FILE, HMAC_SECRET)
    async with running_agent() as agent, running_sidecar(settings) as sidecar:
        status, body = await sidecar.ready()
        assert (status, body['bundle']['state']) == (503, 'missing')
        assert 'cannot read the bundle' in body['bundle']['error']
        refused, reply, _ = await sidecar.request('GET', '/v1/run', headers=ANALYST)
        assert (refused, reply['error']['code']) == (503, 'policy_unavailable')
        publish(settings, make_bundle(agent_port=agent.port))
        await async_wait_for(sidecar.ready, lambda r: r[0] == 200, what='readiness once the bundle exists')
        assert await status_of(sidecar, ANALYST) == 200


async def test_an_hmac_key_under_32_bytes_is_refused_at_load(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    write_secret(settings.secrets_dir, KEY_FILE, b'too-short-key')
    publish(settings, make_bundle(agent_port=free_port()))
    async with running_sidecar(settings) as sidecar:
        status, body = await sidecar.ready()
    assert status == 503 and body['bundle']['state'] == 'missing'
    assert 'HMAC key of 13 bytes; at least 32 are required' in body['bundle']['error']
    assert 'too-short-key' not in json.dumps(body)


@pytest.mark.filterwarnings('ignore::jwt.warnings.InsecureKeyLengthWarning')  # the short key is the point
async def test_a_short_hmac_key_rotated_in_keeps_the_previous_key_in_force(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    write_secret(settings.secrets_dir, KEY_FILE, HMAC_SECRET)
    async with running_agent() as agent:
        publish(settings, make_bundle(agent_port=agent.port))
        async with running_sidecar(settings) as sidecar:
            write_secret(settings.secrets_dir, KEY_FILE, b'short')
            await async_wait_for(sidecar.ready, lambda r: r[1]['bundle']['state'] == 'stale',
                                 what='the short key to be refused')
            assert await status_of(sidecar, ANALYST) == 200
            assert await status_of(sidecar, bearer(sign(claims(), b'short'))) == 401
