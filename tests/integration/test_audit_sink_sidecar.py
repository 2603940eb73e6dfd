"""The sidecar ships its audit log to the sinks its bundle names (auditSinks): records of real
requests reach the Elasticsearch stand-in with the credentials read from the mounted Secret
file, a reload that adds a sink ships the log so far, and the metrics report it."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_support import make_bundle, metric_value, sidecar_for, write_bundle, write_secret

from agentgov.api.bundle import BundleAuditSinks, BundleElasticsearchSink, SecretFile
from harness.elasticsearch import ElasticsearchServer
from harness.waiting import async_wait_for

PASSWORD_FILE = SecretFile(secret='es-shipper', key='password')
PASSWORD = 'canary-sidecar-es-password-41d7'


@pytest.fixture()
async def es() -> AsyncIterator[ElasticsearchServer]:
    server = ElasticsearchServer()
    server.users = {'shipper': PASSWORD}
    async with server.serve():
        yield server


def sinks_for(server: ElasticsearchServer) -> BundleAuditSinks:
    return BundleAuditSinks(elasticsearch=BundleElasticsearchSink(
        url=server.url, index_prefix='research-audit', username='shipper', password_file=PASSWORD_FILE,
        flush_seconds=1))


async def stored(server: ElasticsearchServer, predicate: Any, what: str) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return list(server.documents('research-audit-*').values())

    return await async_wait_for(probe, predicate, what=what, timeout=15)


async def test_the_sidecar_ships_the_records_of_its_requests(tmp_path: Path, es: ElasticsearchServer) -> None:
    bundle = make_bundle().model_copy(update={'audit_sinks': sinks_for(es)})
    write_secret(tmp_path / 'secrets', PASSWORD_FILE, PASSWORD)
    async with sidecar_for(tmp_path, bundle) as sidecar:
        status, _, _ = await sidecar.request('GET', '/v1/research')
        assert status == 401
        docs = await stored(es, lambda docs: any(d['event_type'] == 'authentication' for d in docs),
                            'the authentication record in Elasticsearch')
        local = {r['hash']: r for r in sidecar.audit_lines}
        for doc in docs:
            record = {k: v for k, v in doc.items() if k != 'log_source'}
            assert local[record['hash']] == record, 'the stored document is the local record'
        assert {d['agent'] for d in docs} == {'research/research-assistant'}
        _, metrics, _ = await sidecar.request('GET', '/metrics')
        assert (metric_value(metrics, 'agentgov_audit_shipped_records_total', sink='elasticsearch') or 0) >= 1
        assert metric_value(metrics, 'agentgov_audit_ship_up', sink='elasticsearch') == 1
        status, ready = await sidecar.ready()
        sinks = ready['audit']['sinks']
        assert status == 200 and [s['sink'] for s in sinks] == ['elasticsearch']
        assert PASSWORD not in json.dumps(ready), 'readiness names the destination, never its credentials'
    assert es.templates['research-audit']['index_patterns'] == ['research-audit-*']


async def test_a_reload_that_adds_a_sink_ships_the_log_written_before(tmp_path: Path, es: ElasticsearchServer) -> None:
    bundle = make_bundle()
    write_secret(tmp_path / 'secrets', PASSWORD_FILE, PASSWORD)
    async with sidecar_for(tmp_path, bundle) as sidecar:
        for _ in range(3):
            await sidecar.request('GET', '/v1/research')
        async def written() -> int:
            return len(sidecar.audit_lines)

        await async_wait_for(written, lambda n: n >= 4, what='records written locally')
        write_bundle(sidecar.settings.bundle_path, bundle.model_copy(update={'audit_sinks': sinks_for(es)}))
        docs = await stored(es, lambda docs: len(docs) >= len(sidecar.audit_lines) - 1,
                            'the log written before the reload, shipped')
        seqs = sorted(d['seq'] for d in docs)
        assert seqs == list(range(len(seqs))), 'from the first record on, none missing'
    lines = [json.loads(line) for line in sidecar.settings.audit_log.read_text().splitlines()]
    assert sorted(d['seq'] for d in es.documents('research-audit-*').values()) == [r['seq'] for r in lines], \
        'shutdown shipped the rest'
