"""The S3 sink through real boto3 against a real moto server (the ``aws_endpoint`` fixture),
shipping a log written by the real AuditWriter: objects keyed by their seq range whose copy
verifies as a chain, Object Lock retention set when the bucket has it (and said when it has
not), an unreachable endpoint holding records until it answers, and a restart — even one in
the middle of a batch — resuming without a lost or duplicated record."""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from agentgov.audit.chain import verify_copies
from agentgov.audit.files import log_files
from agentgov.audit.record import AuditEvent, AuditPolicy
from agentgov.audit.settings import LogOptions
from agentgov.audit.sinks.cursor import Inflight, cursor_path, read_cursor, write_cursor
from agentgov.audit.sinks.metrics import ShipperMetrics
from agentgov.audit.sinks.s3 import S3Sink, download_copies
from agentgov.audit.sinks.settings import S3SinkSettings
from agentgov.audit.sinks.shipper import Shipper, Timing
from agentgov.audit.writer import AuditWriter
from agentgov.secrets.config import AwsSettings
from harness.moto import ACCESS_KEY_ID, REGION, MotoServer
from harness.waiting import async_wait_for

RETENTION_DAYS = 30
POLICY = AuditPolicy(agent='research/research-assistant', retention_days=RETENTION_DAYS)
FAST = Timing(poll_seconds=0.02, backoff_base_seconds=0.01, backoff_cap_seconds=0.2)
STREAM = 'research/research-assistant'
SOURCE = 'research-assistant-7d9c5b-x2x4q'
CANARY_SECRET = 'canary-aws-secret-Zq81-never-shown'


@pytest.fixture()
def s3(aws_endpoint: str) -> Iterator[Any]:
    client = boto3.client('s3', endpoint_url=aws_endpoint, region_name=REGION)
    yield client
    client.close()


def make_bucket(s3: Any, name: str, *, locked: bool) -> str:
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={'LocationConstraint': REGION},
                     **({'ObjectLockEnabledForBucket': True} if locked else {}))
    return name


def settings_for(endpoint: str, bucket: str, **changes: Any) -> S3SinkSettings:
    aws = AwsSettings(region=REGION, endpoint_url=endpoint, timeout_seconds=1.0,
                      access_key_id=SecretStr(ACCESS_KEY_ID), secret_access_key=SecretStr(CANARY_SECRET))
    return replace(S3SinkSettings(bucket=bucket, aws=aws, window_seconds=3600, max_records=15), **changes)


def shipper_for(log: Path, settings: S3SinkSettings, registry: CollectorRegistry | None = None) -> Shipper:
    sink = S3Sink(settings, stream=STREAM, source=SOURCE)
    return Shipper(log, sink, metrics=ShipperMetrics(registry or CollectorRegistry()), timing=FAST)


@asynccontextmanager
async def audit_writer(path: Path) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(path, policy=lambda: POLICY, fsync='never', options=LogOptions(max_bytes=8192))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def write(writer: AuditWriter, count: int, per_batch: int = 10) -> None:
    async def tip() -> int:
        return writer.tip.seq

    for start in range(0, count, per_batch):
        target = writer.tip.seq + min(per_batch, count - start)
        for i in range(start, min(count, start + per_batch)):
            writer.emit(AuditEvent('tool_access', 'allowed', 'GET', f'/tools/search/{i}', time.time(), user='alice'))
        await async_wait_for(tip, lambda seq: seq >= target, what=f'the writer at seq {target}')


def local_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for file in log_files(path) for line in file.read_bytes().splitlines()]


async def delivered(shipper: Shipper, seq: int, timeout: float = 20.0) -> None:
    async def probe() -> int:
        return shipper.cursor.seq

    await async_wait_for(probe, lambda got: got >= seq, what=f'delivery up to seq {seq}', timeout=timeout)


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(item['Key'] for item in s3.list_objects_v2(Bucket=bucket).get('Contents', []))


def verified_copy(settings: S3SinkSettings, directory: Path) -> list[int]:
    """Download the stream's objects, verify the chain over them; the seqs they hold, in key order."""
    files = download_copies(settings, directory, stream=STREAM)
    report = verify_copies(directory / SOURCE)
    assert report.ok, [str(p) for p in report.problems]
    return [json.loads(line)['seq'] for file in files for line in gzip.decompress(file.read_bytes()).splitlines()]


async def ship_all(log: Path, settings: S3SinkSettings, registry: CollectorRegistry | None = None) -> Shipper:
    """Ship the whole log: full batches as they are due, the last, partial window when the
    shipper stops (it drains what waits)."""
    shipper = shipper_for(log, settings, registry)
    await shipper.start()
    await shipper.close(drain_seconds=20)
    assert shipper.cursor.seq == local_records(log)[-1]['seq']
    return shipper


async def test_batches_become_objects_keyed_by_their_seq_range_and_verify(tmp_path: Path, aws_endpoint: str,
                                                                         s3: Any) -> None:
    bucket = make_bucket(s3, 'audit-plain', locked=False)
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 40)
    settings = settings_for(aws_endpoint, bucket)
    shipper = await ship_all(log, settings)
    records = local_records(log)
    day = dt.datetime.now(dt.timezone.utc).strftime('%Y/%m/%d')
    expected = [f'agentgov-audit/{STREAM}/{SOURCE}/{day}/{first:012d}-{last:012d}-{records[first]["hash"][7:19]}.jsonl.gz'
                for first, last in ((0, 14), (15, 29), (30, len(records) - 1))]
    assert keys(s3, bucket) == expected
    assert verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]
    head = s3.head_object(Bucket=bucket, Key=expected[0])
    body = s3.get_object(Bucket=bucket, Key=expected[0])['Body'].read()
    assert head['ETag'].strip('"') == hashlib.md5(body).hexdigest(), 'sent with its Content-MD5'
    assert head['Metadata'] == {'first-seq': '0', 'last-seq': '14', 'records': '15', 'source': SOURCE}
    assert shipper.status()['objectLock'] == 'not enabled on the bucket: objects have no retention'


async def test_a_bucket_with_object_lock_gets_retention_until_the_records_retain_until(
        tmp_path: Path, aws_endpoint: str, s3: Any) -> None:
    bucket = make_bucket(s3, 'audit-locked', locked=True)
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 20)
    settings = settings_for(aws_endpoint, bucket, object_lock_mode='COMPLIANCE')
    shipper = await ship_all(log, settings)
    records = local_records(log)
    latest = max(dt.date.fromisoformat(r['retain_until']) for r in records)
    for key in keys(s3, bucket):
        # HeadObject carries the retention (moto 5.2's server answers GetObjectRetention with a 500).
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head['ObjectLockMode'] == 'COMPLIANCE'
        until = head['ObjectLockRetainUntilDate'].astimezone(dt.timezone.utc)
        assert until == dt.datetime.combine(latest + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    assert 'COMPLIANCE until' in str(shipper.status()['objectLock'])
    assert verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]


async def test_a_missing_object_lock_is_said_in_the_log(tmp_path: Path, aws_endpoint: str, s3: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    bucket = make_bucket(s3, 'audit-unlocked', locked=False)
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 3)
    await ship_all(log, settings_for(aws_endpoint, bucket, object_lock_mode='COMPLIANCE'))
    assert 'the bucket has no Object Lock; objects are written without retention' in caplog.text
    assert 'ObjectLockMode' not in s3.head_object(Bucket=bucket, Key=keys(s3, bucket)[0])


async def test_records_wait_while_s3_does_not_answer_and_arrive_once_it_does(
        tmp_path: Path, aws_endpoint: str, s3: Any, moto_server: MotoServer) -> None:
    bucket = make_bucket(s3, 'audit-outage', locked=False)
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(aws_endpoint, bucket, max_records=10)
    registry = CollectorRegistry()
    shipper = shipper_for(log, settings, registry)
    async with audit_writer(log) as writer:
        await write(writer, 10)
        await shipper.start()
        await delivered(shipper, 9)
        moto_server.pause()
        try:
            await write(writer, 25)

            async def failures() -> float:
                return sum(registry.get_sample_value('agentgov_audit_ship_failures_total',
                                                     {'sink': 's3', 'reason': r}) or 0 for r in ('timeout', 'connect'))

            await async_wait_for(failures, lambda n: n >= 1, what='a delivery failing while S3 is paused',
                                 timeout=20)
            async def lag() -> int:
                return shipper.lag_records

            await async_wait_for(lag, lambda n: n == 25, what='the lag of the 25 records written while paused')
            cursor = read_cursor(cursor_path(log, 's3'))
            assert cursor is not None and cursor.seq == 9 and cursor.inflight == Inflight(10, 19)
        finally:
            moto_server.resume()
        await delivered(shipper, 29)  # the full batches; the last, partial window goes at close
    await shipper.close(drain_seconds=20)
    assert shipper.cursor.seq == 34
    records = local_records(log)
    assert verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in records]
    assert len(keys(s3, bucket)) == 4


async def test_a_restart_in_the_middle_of_a_batch_rewrites_the_same_object(tmp_path: Path, aws_endpoint: str,
                                                                           s3: Any) -> None:
    bucket = make_bucket(s3, 'audit-restart', locked=False)
    log = tmp_path / 'audit.jsonl'
    settings = settings_for(aws_endpoint, bucket)
    async with audit_writer(log) as writer:
        await write(writer, 30)
    shipper = await ship_all(log, settings)
    objects = keys(s3, bucket)
    assert len(objects) == 2
    # As if the process died after the second PutObject, before the cursor moved past it.
    first_batch_end = 14
    crashed = replace(shipper.cursor, seq=first_batch_end, hash=local_records(log)[first_batch_end]['hash'],
                      inode=None, offset=0, inflight=Inflight(15, 29))
    write_cursor(cursor_path(log, 's3'), crashed)
    again = await ship_all(log, settings)
    assert keys(s3, bucket) == objects, 'the same key was written again, no second object'
    assert again.cursor.seq == 29 and again.cursor.inflight is None
    assert verified_copy(settings, tmp_path / 'copy') == [r['seq'] for r in local_records(log)]


async def test_a_missing_bucket_is_reported_by_name_without_credentials(
        tmp_path: Path, aws_endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 3)
    registry = CollectorRegistry()
    shipper = shipper_for(log, settings_for(aws_endpoint, 'no-such-bucket'), registry)
    await shipper.start()

    async def failed() -> object:
        return shipper.status()['lastError']

    error = await async_wait_for(failed, lambda e: e is not None, what='the missing bucket reported')
    await shipper.close()
    assert 's3://no-such-bucket' in str(error) and '404' in str(error)
    assert registry.get_sample_value('agentgov_audit_ship_failures_total', {'sink': 's3', 'reason': 'config'}) >= 1
    seen = [caplog.text, json.dumps(shipper.status()), generate_latest(registry).decode(), repr(shipper.sink)]
    assert not any(CANARY_SECRET in text for text in seen)
