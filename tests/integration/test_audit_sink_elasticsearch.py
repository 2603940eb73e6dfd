"""The Elasticsearch sink over real HTTP against the local stand-in (tests/harness/elasticsearch.py),
shipping a log written by the real AuditWriter: the copy is whole and verifies as a chain;
outages, throttling, oversized requests and mapping errors lose and duplicate nothing; a
restart resumes from the cursor; searching finds records; credentials never leak."""
from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agentgov.audit.chain import verify_copies
from agentgov.audit.files import log_files
from agentgov.audit.record import AuditEvent, AuditPolicy, build_record, canonical, record_hash
from agentgov.audit.settings import LogOptions
from agentgov.audit.sinks.cursor import cursor_path, dead_letter_path, read_cursor, write_cursor
from agentgov.audit.sinks.elasticsearch import (
    ElasticsearchSink, SearchFilters, export_to_directory, index_template, record_of, search,
)
from agentgov.audit.sinks.metrics import ShipperMetrics
from agentgov.audit.sinks.settings import ElasticsearchSinkSettings
from agentgov.audit.sinks.shipper import Shipper, Timing
from agentgov.audit.writer import AuditWriter
from harness.azure_keyvault import make_tls
from harness.elasticsearch import ElasticsearchServer
from harness.waiting import async_wait_for

POLICY = AuditPolicy(agent='research/research-assistant', retention_days=30)
FAST = Timing(poll_seconds=0.02, backoff_base_seconds=0.01, backoff_cap_seconds=0.1)
CANARY = 'canary-es-Pa55w0rd-9f2b'
SOURCE = 'research-assistant-7d9c5b-x2x4q'


@pytest.fixture()
async def es() -> AsyncIterator[ElasticsearchServer]:
    server = ElasticsearchServer()
    async with server.serve():
        yield server


@asynccontextmanager
async def audit_writer(path: Path) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(path, policy=lambda: POLICY, fsync='never', options=LogOptions(max_bytes=8192))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def write(writer: AuditWriter, count: int, *, users: tuple[str, ...] = ('alice',), per_batch: int = 10) -> None:
    """``count`` events (users in turn), written when this returns, ``per_batch`` at a time."""
    async def tip() -> int:
        return writer.tip.seq

    for start in range(0, count, per_batch):
        target = writer.tip.seq + min(per_batch, count - start)
        for i in range(start, min(count, start + per_batch)):
            writer.emit(AuditEvent('agent_execution', 'success', 'POST', f'/v1/run/{i}', time.time(),
                                   user=users[i % len(users)]))
        await async_wait_for(tip, lambda seq: seq >= target, what=f'the writer at seq {target}')


def local_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for file in log_files(path) for line in file.read_bytes().splitlines()]


def settings_for(server: ElasticsearchServer, **changes: Any) -> ElasticsearchSinkSettings:
    base = ElasticsearchSinkSettings(url=server.url, flush_seconds=0.05, max_records=25, timeout_seconds=1.0)
    return replace(base, **changes)


def shipper_for(log: Path, settings: ElasticsearchSinkSettings, registry: CollectorRegistry | None = None) -> Shipper:
    metrics = ShipperMetrics(registry if registry is not None else CollectorRegistry())
    return Shipper(log, ElasticsearchSink(settings, source=SOURCE), metrics=metrics, timing=FAST)


async def delivered(shipper: Shipper, seq: int, timeout: float = 15.0) -> None:
    async def probe() -> int:
        return shipper.cursor.seq

    await async_wait_for(probe, lambda got: got >= seq, what=f'delivery up to seq {seq}', timeout=timeout)


async def verified_copy(settings: ElasticsearchSinkSettings, directory: Path) -> list[int]:
    """Export the index to JSON lines, verify the chain over the copy; the seqs it holds."""
    files = await export_to_directory(settings, directory)
    assert list(files) == [SOURCE]
    report = verify_copies(directory / SOURCE)
    assert report.ok, [str(p) for p in report.problems]
    return [json.loads(line)['seq'] for line in files[SOURCE].read_bytes().splitlines()]


async def test_a_log_written_by_the_audit_writer_arrives_whole_and_verifies(tmp_path: Path,
                                                                           es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es)
    shipper = shipper_for(log, settings)
    async with audit_writer(log) as writer:
        await shipper.start()
        await write(writer, 120)
        await delivered(shipper, writer.tip.seq - 1)
    await shipper.close()
    records = local_records(log)
    assert len(log_files(log)) > 2, 'the log rotated while it was shipped'
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]
    assert es.created == len(records) and es.conflicts == 0
    day = records[0]['timestamp'][:10].replace('-', '.')
    assert f'agentgov-audit-{day}' in es.indices
    assert es.templates['agentgov-audit'] == json.loads(json.dumps(index_template('agentgov-audit')))


@pytest.mark.parametrize('outage', ['down', '503', 'hang'],
                         ids=['connections refused', 'every request answered 503', 'requests never answered'])
async def test_records_wait_in_the_log_while_the_cluster_is_out_and_arrive_once_each(
        tmp_path: Path, es: ElasticsearchServer, outage: str) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es, timeout_seconds=0.3)
    registry = CollectorRegistry()
    shipper = shipper_for(log, settings, registry)
    async with audit_writer(log) as writer:
        await shipper.start()
        await write(writer, 10)
        await delivered(shipper, writer.tip.seq - 1)
        if outage == 'down':
            await es.down()
        else:
            es.set_mode(outage)
        await write(writer, 30)

        async def failures() -> float:
            return sum(registry.get_sample_value('agentgov_audit_ship_failures_total', {'sink': 'elasticsearch',
                                                                                        'reason': r}) or 0
                       for r in ('connect', 'timeout', 'server_error'))

        async def lag() -> float | None:
            return registry.get_sample_value('agentgov_audit_ship_lag_records', {'sink': 'elasticsearch'})

        await async_wait_for(failures, lambda n: n >= 2, what='failed deliveries during the outage')
        await async_wait_for(lag, lambda n: n == 30, what='the lag of the 30 records written during the outage')
        cursor = read_cursor(cursor_path(log, 'elasticsearch'))
        assert cursor is not None and cursor.seq == 9, 'the cursor stays at the last delivered record'
        assert shipper.status()['up'] is False and shipper.status()['lagRecords'] == 30
        assert (registry.get_sample_value('agentgov_audit_ship_lag_seconds', {'sink': 'elasticsearch'}) or 0) > 0
        if outage == 'down':
            await es.up()
        else:
            es.set_mode(None)
        await delivered(shipper, writer.tip.seq - 1)
    await shipper.close()
    records = local_records(log)
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]
    assert es.created == len(records)
    assert shipper.status()['up'] is True and shipper.lag_records == 0


async def test_a_cluster_down_when_shipping_starts_is_waited_for_with_the_lag_reported(
        tmp_path: Path, es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 7)
    await es.down()
    registry = CollectorRegistry()
    shipper = shipper_for(log, settings_for(es, timeout_seconds=0.3), registry)
    await shipper.start()

    async def lag() -> float | None:
        return registry.get_sample_value('agentgov_audit_ship_lag_records', {'sink': 'elasticsearch'})

    await async_wait_for(lag, lambda n: n == 7, what='the lag of a sink never reached')
    assert shipper.status()['up'] is False and 'cannot connect' in str(shipper.status()['lastError'])
    await es.up()
    await delivered(shipper, 6)
    await shipper.close()
    assert es.created == 7 and await lag() == 0


async def test_throttled_items_are_sent_again_and_stored_once(tmp_path: Path, es: ElasticsearchServer) -> None:
    throttled: set[int] = set()

    def every_third_once(doc: dict[str, Any]) -> int | None:
        if doc['seq'] % 3 == 0 and doc['seq'] not in throttled:
            throttled.add(doc['seq'])
            return 429
        return None

    es.item_status = every_third_once
    log = tmp_path / 'audit.jsonl'
    registry = CollectorRegistry()
    settings = settings_for(es)
    shipper = shipper_for(log, settings, registry)
    async with audit_writer(log) as writer:
        await write(writer, 40)
        await shipper.start()
        await delivered(shipper, writer.tip.seq - 1)
    await shipper.close()
    records = local_records(log)
    assert throttled == {r['seq'] for r in records if r['seq'] % 3 == 0}
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]
    assert registry.get_sample_value('agentgov_audit_ship_failures_total',
                                     {'sink': 'elasticsearch', 'reason': 'throttled'}) >= 1
    assert not dead_letter_path(log, 'elasticsearch').exists()


async def test_a_record_the_mapping_refuses_is_parked_and_the_rest_delivered(tmp_path: Path,
                                                                             es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 5)
    # A well-chained record the index template cannot take (retain_until is mapped as a date).
    last = local_records(log)[-1]
    odd = build_record(AuditEvent('policy_reload', 'success', 'load', 'bundle', time.time()),
                       seq=last['seq'] + 1, prev_hash=last['hash'], policy=POLICY)
    odd['retain_until'] = 'forever'
    odd['hash'] = record_hash(odd)
    with open(log, 'ab') as f:
        f.write(canonical(odd) + b'\n')
    async with audit_writer(log) as writer:
        await write(writer, 5)
    registry = CollectorRegistry()
    shipper = shipper_for(log, settings_for(es), registry)
    await shipper.start()
    await delivered(shipper, local_records(log)[-1]['seq'])
    await shipper.close()
    parked = [json.loads(line) for line in dead_letter_path(log, 'elasticsearch').read_bytes().splitlines()]
    assert [p['seq'] for p in parked] == [odd['seq']]
    assert parked[0]['record'] == odd and 'document_parsing_exception' in parked[0]['reason']
    stored = {doc['seq'] for doc in es.documents().values()}
    assert stored == {r['seq'] for r in local_records(log)} - {odd['seq']}
    assert registry.get_sample_value('agentgov_audit_ship_dead_letters_total', {'sink': 'elasticsearch'}) == 1


async def test_a_restarted_shipper_resumes_from_its_cursor(tmp_path: Path, es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es)
    async with audit_writer(log) as writer:
        await write(writer, 30)
        first = shipper_for(log, settings)
        await first.start()
        await delivered(first, writer.tip.seq - 1)
        await first.close()
        await write(writer, 20)
        second = shipper_for(log, settings)
        await second.start()
        await delivered(second, writer.tip.seq - 1)
        await second.close()
    records = local_records(log)
    assert es.bulk_actions == len(records), 'nothing was sent twice'
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]


async def test_a_crash_between_delivery_and_cursor_stores_nothing_twice(tmp_path: Path,
                                                                        es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es)
    async with audit_writer(log) as writer:
        await write(writer, 20)
        early = shipper_for(log, settings)
        await early.start()
        await delivered(early, writer.tip.seq - 1)
        await early.close()
        stale = early.cursor
        await write(writer, 20)
        shipper = shipper_for(log, settings)
        await shipper.start()
        await delivered(shipper, writer.tip.seq - 1)
        await shipper.close()
        write_cursor(cursor_path(log, 'elasticsearch'), stale)  # as if the last cursor write was lost
        again = shipper_for(log, settings)
        await again.start()
        await delivered(again, writer.tip.seq - 1)
        await again.close()
    records = local_records(log)
    assert es.conflicts == len(records) - (stale.seq + 1), 'the batch sent again was already there'
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]


async def test_a_request_too_large_for_the_cluster_is_split(tmp_path: Path, es: ElasticsearchServer) -> None:
    es.max_content_length = 4096
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es)
    async with audit_writer(log) as writer:
        await write(writer, 30)
    shipper = shipper_for(log, settings)
    await shipper.start()
    await delivered(shipper, local_records(log)[-1]['seq'])
    await shipper.close()
    assert await verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in local_records(log)]


async def test_shutdown_sends_records_still_waiting_for_their_batch(tmp_path: Path, es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es, flush_seconds=3600.0, max_records=500)
    shipper = shipper_for(log, settings)
    async with audit_writer(log) as writer:
        await write(writer, 12)
        await shipper.start()

        async def buffered() -> int:
            return shipper.lag_records

        await async_wait_for(buffered, lambda n: n == 12, what='records read and waiting for their batch')
        assert es.created == 0
    await shipper.close(drain_seconds=5)
    assert es.created == 12 and shipper.cursor.seq == 11


async def test_a_new_cluster_gets_the_whole_local_log(tmp_path: Path, es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 10)
    old = ElasticsearchServer()
    async with old.serve():
        shipper = shipper_for(log, settings_for(old))
        await shipper.start()
        await delivered(shipper, 9)
        await shipper.close()
    moved = shipper_for(log, settings_for(es))
    await moved.start()
    await delivered(moved, 9)
    await moved.close()
    assert es.created == 10


async def test_search_finds_records_by_user_type_and_time(tmp_path: Path, es: ElasticsearchServer) -> None:
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(es)
    started = time.time()
    async with audit_writer(log) as writer:
        await write(writer, 30, users=('alice', 'bob', 'carol'))
    shipper = shipper_for(log, settings)
    await shipper.start()
    await delivered(shipper, local_records(log)[-1]['seq'])
    await shipper.close()
    since = dt.datetime.fromtimestamp(started - 1, dt.timezone.utc)
    found = await search(settings, SearchFilters(user='bob', event_type='agent_execution', since=since, limit=5))
    bobs = [r for r in local_records(log) if r['user'] == 'bob']
    assert [record_of(r) for r in found] == bobs[-5:], 'the newest five, oldest first'
    assert {r['log_source'] for r in found} == {SOURCE}
    later = dt.datetime.fromtimestamp(time.time() + 60, dt.timezone.utc)
    assert await search(settings, SearchFilters(since=later)) == []


@pytest.mark.parametrize('auth', ['basic', 'api_key'])
async def test_credentials_are_sent_but_never_logged_reported_or_stored(
        tmp_path: Path, es: ElasticsearchServer, caplog: pytest.LogCaptureFixture, auth: str) -> None:
    caplog.set_level(logging.DEBUG)
    secret_file = tmp_path / 'secrets' / 'credential'
    secret_file.parent.mkdir()
    if auth == 'basic':
        es.users = {'shipper': CANARY}
        settings = settings_for(es, username='shipper', password_file=str(secret_file))
    else:
        es.api_keys = {CANARY}
        settings = settings_for(es, api_key_file=str(secret_file))
    secret_file.write_text('wrong-' + CANARY[::-1] + '\n')
    log = tmp_path / 'audit.jsonl'
    registry = CollectorRegistry()
    async with audit_writer(log) as writer:
        await write(writer, 5)
    shipper = shipper_for(log, settings, registry)
    await shipper.start()

    async def failed() -> object:
        return shipper.status()['lastError']

    refused = await async_wait_for(failed, lambda e: e is not None, what='the cluster refusing the credential')
    assert 'answered 401' in str(refused) and 'check the credentials' in str(refused)
    secret_file.write_text(CANARY + '\n')  # the Secret is fixed: read again on the next request
    await delivered(shipper, 4)
    await shipper.close()
    assert es.created == 5
    seen = [caplog.text, json.dumps(shipper.status()), generate_latest(registry).decode(),
            cursor_path(log, 'elasticsearch').read_text()]
    assert not any(CANARY in text or CANARY[::-1] in text for text in seen)


async def test_a_cluster_behind_tls_is_trusted_through_the_ca_file_only(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / 'tls', ['es.logging.svc'])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server = ElasticsearchServer(ssl_context=context)
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 5)
    async with server.serve():
        untrusted = shipper_for(log, settings_for(server))
        await untrusted.start()

        async def refused() -> object:
            return untrusted.status()['lastError']

        error = await async_wait_for(refused, lambda e: e is not None, what='the unknown CA refused')
        await untrusted.close(drain_seconds=0.1)
        assert 'certificate' in str(error).lower() and server.created == 0
        trusted = shipper_for(log, settings_for(server, ca_file=str(tls.ca_file)))
        await trusted.start()
        await delivered(trusted, 4)
        await trusted.close()
    assert server.created == 5
