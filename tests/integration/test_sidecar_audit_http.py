"""The audit log of a running sidecar: seeded secrets never reach the audit file, the logs or an error
body; the chain verifies after real traffic and across restarts; tampering and truncation are
found; a failing audit sink turns readiness off, is counted, and privileged operations fail closed."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agentgov.api.agentdeployment import Audit
from agentgov.api.bundle import BundleModelRoute, SecretFile, canonical_json
from agentgov.cli import main
from agentgov.audit.chain import verify_chain
from agentgov.sidecar.context import AUDIT
from harness.waiting import async_wait_for
from sidecar_support import (
    HMAC_SECRET, KEY_FILE, Sidecar, bearer, claims, free_port, make_bundle, running_agent, running_sidecar, secret_fragments,
    seeded_secrets, sidecar_for, sidecar_settings, sign, write_bundle, write_secret,
)

SEEDED = seeded_secrets()
MODEL_KEY = SecretFile(secret='openai', key='api-key')


def leaks(text: str) -> list[str]:
    return [kind for kind, value in SEEDED.items() for fragment in secret_fragments(value) if fragment in text]


async def test_seeded_secrets_never_reach_the_audit_file_the_logs_or_error_bodies(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    write_secret(tmp_path / 'secrets', MODEL_KEY, SEEDED['mounted secret value'])
    async with running_agent() as agent:
        bundle = make_bundle(agent_port=agent.port).model_copy(update={'models': [BundleModelRoute(
            name='gpt-4o', provider='OpenAI', endpoint='https://api.openai.com/v1', upstream_model='gpt-4o',
            credentials_file=MODEL_KEY)]})
        bodies: list[str] = []
        async with sidecar_for(tmp_path, bundle) as sidecar:
            valid = sign(claims(user=SEEDED['vault token'], role='analyst'))
            requests: list[tuple[str, str, dict[str, str]]] = [
                # A valid caller whose request carries secrets in the query, the headers and the user agent.
                ('GET', f'/v1/run?api_key={SEEDED["openai key"]}&token={SEEDED["jwt"]}', {
                    **bearer(valid), 'X-Api-Key': SEEDED['aws access key id'],
                    'User-Agent': f'bot ({SEEDED["bearer"]}) {SEEDED["mounted secret value"]}'}),
                # Forged tokens made of secrets.
                ('GET', '/v1/run', bearer(SEEDED['jwt'])),
                ('GET', '/v1/run', {'Authorization': SEEDED['bearer']}),
                ('POST', f'/{SEEDED["openai key"]}', bearer(sign(claims(role='viewer')))),
                ('POST', '/agentgov/v1/tokens', bearer(sign(claims(role='admin', user=SEEDED['aws access key id'])))),
            ]
            for method, path, headers in requests:
                status, body, _ = await sidecar.request(method, path, headers=headers, data=SEEDED['pem private key'])
                bodies.append(json.dumps(body) if status >= 400 else '')
            # A bundle change that fails to load, with a secret pasted into a field.
            document = json.loads(canonical_json(bundle))
            document['auth']['leewaySeconds'] = SEEDED['openai key']
            sidecar.settings.bundle_path.write_text(json.dumps(document))
            _, ready = await async_wait_for(sidecar.ready, lambda r: r[1]['bundle']['state'] == 'stale',
                                            what='the bad bundle to be seen')
            bodies.append(json.dumps(ready))
            _, metrics, _ = await sidecar.request('GET', '/metrics')
            bodies.append(metrics)
    audit_text = sidecar.settings.audit_log.read_text()
    assert [r['event_type'] for r in sidecar.audit_lines].count('authentication') == 5
    assert leaks(audit_text) == []
    assert leaks(caplog.text) == []
    assert leaks('\n'.join(bodies)) == []
    assert '[REDACTED]' in audit_text
    assert any(r['event_type'] == 'policy_reload' and r['result'] == 'failure' for r in sidecar.audit_lines)


async def traffic(sidecar: Sidecar, n: int = 3) -> None:
    for i in range(n):
        await sidecar.request('GET', f'/v1/run/{i}', headers=bearer(sign(claims())))
    await sidecar.request('GET', '/v1/run', headers=bearer('forged'))


async def test_the_chain_of_a_real_log_verifies_and_tampering_with_it_is_found(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port)) as sidecar:
        await traffic(sidecar)
    log = sidecar.settings.audit_log
    report = verify_chain(log)
    assert report.ok and report.records == len(sidecar.audit_lines) >= 14
    assert main(['audit', 'verify', str(log)]) == 0
    lines = log.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[4])
    record['result'] = 'success' if record['result'] != 'success' else 'failure'
    lines[4] = json.dumps(record).encode() + b'\n'
    log.write_bytes(b''.join(lines))
    capsys.readouterr()
    assert main(['audit', 'verify', str(log)]) == 1
    assert f'line 5 (seq {record["seq"]}): edited' in capsys.readouterr().out


async def test_the_chain_continues_across_a_restart(tmp_path: Path) -> None:
    async with running_agent() as agent:
        bundle = make_bundle(agent_port=agent.port)
        async with sidecar_for(tmp_path, bundle) as first:
            await traffic(first)
        written = len(first.audit_lines)
        async with sidecar_for(tmp_path, bundle) as second:
            await traffic(second, 1)
    records = second.audit_lines
    assert [r['seq'] for r in records] == list(range(len(records))) and len(records) > written
    assert verify_chain(second.settings.audit_log).ok


async def test_records_removed_while_the_sidecar_was_down_are_recorded_when_it_restarts(tmp_path: Path) -> None:
    async with running_agent() as agent:
        bundle = make_bundle(agent_port=agent.port)
        async with sidecar_for(tmp_path, bundle) as first:
            await traffic(first)
        log = first.settings.audit_log
        assert [(p.kind, p.line) for p in verify_chain(log).problems] == []
        kept = log.read_bytes().splitlines(keepends=True)[:-3]
        log.write_bytes(b''.join(kept))
        assert [p.kind for p in verify_chain(log).problems] == ['truncated']
        async with sidecar_for(tmp_path, bundle) as second:
            pass
    integrity = [r for r in second.audit_lines if r['event_type'] == 'audit_integrity']
    assert integrity and integrity[0]['metadata']['head_seq'] == len(kept) + 2
    assert integrity[0]['seq'] == len(kept)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + ' ') or line.startswith(name + '{'):
            return float(line.rsplit(' ', 1)[1])
    raise AssertionError(f'{name} not in the metrics')


async def test_a_failing_audit_sink_turns_readiness_off_and_privileged_operations_fail_closed(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path, audit_queue_size=8)
    settings.audit_log.parent.mkdir(parents=True)
    os.symlink('/dev/full', settings.audit_log)  # every write: ENOSPC
    write_secret(settings.secrets_dir, KEY_FILE, HMAC_SECRET)
    admin = bearer(sign(claims(role='admin', user='root')))
    async with running_agent() as agent:
        write_bundle(settings.bundle_path, make_bundle(agent_port=agent.port))
        async with running_sidecar(settings) as sidecar:
            await async_wait_for(sidecar.ready, lambda r: r[0] == 503, what='readiness to report the sink')
            status, ready = await sidecar.ready()
            assert ready['audit']['healthy'] is False and 'No space left on device' in ready['audit']['error']
            # Executing the agent is not privileged: it keeps working (events queue, then are counted as dropped).
            for _ in range(6):
                assert (await sidecar.request('GET', '/v1/run', headers=bearer(sign(claims()))))[0] == 200
            refused, body, _ = await sidecar.request('POST', '/agentgov/v1/tokens', json={'user': 'ci', 'role': 'viewer'},
                                                     headers=admin)
            assert (refused, body['error']['code']) == (503, 'audit_unavailable')
            _, metrics, _ = await sidecar.request('GET', '/metrics')
            assert metric(metrics, 'agentgov_audit_sink_up') == 0
            assert metric(metrics, 'agentgov_audit_write_errors_total') >= 1
            assert metric(metrics, 'agentgov_audit_records_dropped_total') >= 1
            # The volume comes back: the writer reopens the log, readiness returns, minting works again.
            os.unlink(settings.audit_log)
            await async_wait_for(sidecar.ready, lambda r: r[0] == 200, what='readiness after recovery')
            minted, _, _ = await sidecar.request('POST', '/agentgov/v1/tokens', json={'user': 'ci', 'role': 'viewer'},
                                                 headers=admin)
            assert minted == 201
    records = sidecar.audit_lines
    dropped = [r for r in records if r['event_type'] == 'audit_integrity' and r['action'] == 'drop']
    assert dropped and dropped[0]['metadata']['dropped_events'] >= 1
    assert [r['event_type'] for r in records].count('token_issued') == 1
    assert verify_chain(settings.audit_log).ok


@pytest.mark.parametrize('policy', ['always', 'never'],
                         ids=['fsync always syncs every batch', 'fsync never leaves it to the OS'])
async def test_the_fsync_policy_decides_when_records_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                policy: str) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', counting_fsync)
    async with running_agent() as agent, sidecar_for(tmp_path, make_bundle(agent_port=agent.port),
                                                     audit_fsync=policy) as sidecar:
        for _ in range(3):
            await sidecar.request('GET', '/', headers=bearer(sign(claims())))
            await async_wait_for(lambda: _queue_empty(sidecar), what='the audit queue to drain')
    if policy == 'always':
        assert len(synced) >= 3  # at least one batch per request (log and head file)
    else:
        assert synced == []


async def _queue_empty(sidecar: Sidecar) -> bool:
    return sidecar.app[AUDIT].queue_depth == 0


async def test_audit_disabled_in_the_bundle_writes_nothing_and_does_not_block_minting(tmp_path: Path) -> None:
    async with sidecar_for(tmp_path, make_bundle(agent_port=free_port(), audit=Audit(enabled=False))) as sidecar:
        status, _, _ = await sidecar.request('POST', '/agentgov/v1/tokens', json={'user': 'ci', 'role': 'viewer'},
                                             headers=bearer(sign(claims(role='admin'))))
    assert status == 201
    assert sidecar.audit_lines == []
