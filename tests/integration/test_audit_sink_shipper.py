"""The audit shipper over a log written by the real AuditWriter, through the stdout sink (the
one with no server): every record out once and byte for byte across rotations, unusable lines
parked rather than dropped, a restart resuming from the cursor, configuration followed, and
retention pruning holding what a sink has not delivered."""
from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agentgov.audit.files import log_files, rotated_files
from agentgov.audit.record import AuditEvent, AuditPolicy
from agentgov.audit.settings import LogOptions
from agentgov.audit.sinks.cursor import Cursor, cursor_path, dead_letter_path, pending_from, write_cursor
from agentgov.audit.sinks.metrics import ShipperMetrics
from agentgov.audit.sinks.settings import StdoutSinkSettings, SinksSettings
from agentgov.audit.sinks.shipper import AuditShipping, Shipper, Timing
from agentgov.audit.sinks.stdout import StdoutSink
from agentgov.audit.writer import AuditWriter
from harness.waiting import async_wait_for

POLICY = AuditPolicy(agent='research/research-assistant', retention_days=30)
FAST = Timing(poll_seconds=0.02, backoff_base_seconds=0.01, backoff_cap_seconds=0.1)
SMALL_FILES = LogOptions(max_bytes=4096, tick_seconds=0.05)


@asynccontextmanager
async def audit_writer(path: Path, options: LogOptions = SMALL_FILES, **kwargs: object) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(path, policy=lambda: POLICY, fsync='never', options=options, **kwargs)  # type: ignore[arg-type]
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def write(writer: AuditWriter, count: int, *, at: float | None = None, per_batch: int = 8) -> None:
    """``count`` events, written (not only queued) when this returns, ``per_batch`` at a time
    (the writer rotates between batches)."""
    async def tip() -> int:
        return writer.tip.seq

    for start in range(0, count, per_batch):
        target = writer.tip.seq + min(per_batch, count - start)
        for i in range(start, min(count, start + per_batch)):
            writer.emit(AuditEvent('agent_execution', 'success', 'POST', f'/v1/run/{i}', at or time.time(),
                                   user='alice'))
        await async_wait_for(tip, lambda seq: seq >= target, what=f'the writer at seq {target}')


def local_lines(path: Path) -> list[bytes]:
    return [line for file in log_files(path) for line in file.read_bytes().splitlines()]


def last_seq(path: Path) -> int:
    seqs = [json.loads(line).get('seq') for line in local_lines(path)]
    return max(seq for seq in seqs if isinstance(seq, int))


async def delivered(shipper: Shipper, seq: int) -> Cursor:
    async def probe() -> Cursor:
        return shipper.cursor

    return await async_wait_for(probe, lambda cursor: cursor.seq >= seq, what=f'{shipper.name} delivered to seq {seq}')


def stdout_shipper(log: Path, stream: io.BytesIO, registry: CollectorRegistry | None = None) -> Shipper:
    metrics = ShipperMetrics(registry or CollectorRegistry())
    return Shipper(log, StdoutSink(StdoutSinkSettings(), stream=stream), metrics=metrics, timing=FAST)


async def test_every_record_reaches_stdout_byte_for_byte_across_rotations(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    stream = io.BytesIO()
    shipper = stdout_shipper(log, stream)
    async with audit_writer(log) as writer:
        await shipper.start()
        await write(writer, 40)
        await delivered(shipper, last_seq(log))
        await write(writer, 40)  # shipping while the writer writes and rotates
        await delivered(shipper, last_seq(log))
    await shipper.close()
    assert len(rotated_files(log)) >= 3, 'the log rotated while it was shipped'
    assert stream.getvalue().splitlines() == local_lines(log)


async def test_unusable_lines_are_parked_and_shipping_goes_on(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log, LogOptions()) as writer:
        await write(writer, 5)
    with open(log, 'ab') as f:
        f.write(b'{"this is": "not a record"}\n')
    async with audit_writer(log, LogOptions()) as writer:
        await write(writer, 5)
    stream, registry = io.BytesIO(), CollectorRegistry()
    shipper = stdout_shipper(log, stream, registry)
    await shipper.start()
    await delivered(shipper, last_seq(log))
    await shipper.close()
    shipped = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r['seq'] for r in shipped] == list(range(last_seq(log) + 1))
    parked = [json.loads(line) for line in dead_letter_path(log, 'stdout').read_bytes().splitlines()]
    assert len(parked) == 1
    assert parked[0]['line'] == '{"this is": "not a record"}' and 'seq or hash is missing' in parked[0]['reason']
    assert registry.get_sample_value('agentgov_audit_ship_dead_letters_total', {'sink': 'stdout'}) == 1


async def test_a_restarted_shipper_writes_nothing_twice(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    first, second = io.BytesIO(), io.BytesIO()
    async with audit_writer(log) as writer:
        await write(writer, 20)
        shipper = stdout_shipper(log, first)
        await shipper.start()
        await delivered(shipper, last_seq(log))
        await shipper.close()
        before = last_seq(log)
        await write(writer, 15)
        again = stdout_shipper(log, second)
        await again.start()
        await delivered(again, last_seq(log))
        await again.close()
    assert [json.loads(line)['seq'] for line in second.getvalue().splitlines()] == list(range(before + 1, last_seq(log) + 1))
    assert first.getvalue() + second.getvalue() == b''.join(line + b'\n' for line in local_lines(log))


async def test_an_unusable_cursor_is_set_aside_and_the_log_shipped_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    async with audit_writer(log) as writer:
        await write(writer, 8)
    cursor_path(log, 'stdout').write_bytes(b'{"version": 1, "seq": "garbage"')
    stream = io.BytesIO()
    shipper = stdout_shipper(log, stream)
    await shipper.start()
    await delivered(shipper, last_seq(log))
    await shipper.close()
    assert stream.getvalue().splitlines() == local_lines(log)
    assert (tmp_path / 'audit.jsonl.stdout.cursor.unusable').exists()


async def test_shipping_follows_the_configured_sinks(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    log = tmp_path / 'audit.jsonl'
    registry = CollectorRegistry()
    shipping = AuditShipping(log, registry, timing=FAST)
    async with audit_writer(log, echo=lambda _lines: shipping.notify()) as writer:
        await shipping.apply(SinksSettings(stream='research/research-assistant', source='pod-a',
                                           stdout=StdoutSinkSettings()))
        await write(writer, 5)
        await delivered(shipping.shippers['stdout'], last_seq(log))
        assert [s['sink'] for s in shipping.status()] == ['stdout']
        await shipping.apply(SinksSettings(stream='research/research-assistant', source='pod-a'))
        assert shipping.shippers == {} and shipping.status() == []
        assert registry.get_sample_value('agentgov_audit_ship_up', {'sink': 'stdout'}) is None
        await write(writer, 3)  # no sink now: nothing more on stdout
    await shipping.close()
    out = capfdbinary.readouterr().out
    assert [json.loads(line)['seq'] for line in out.splitlines()] == list(range(5))


async def test_retention_pruning_keeps_what_a_sink_has_not_delivered(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    long_ago = time.time() - 90 * 86400  # every record is past its 30-day retention
    # Held from seq 0 while writing: the writer's own first prune (at its first tick) must not
    # remove the expired files this test is about before the sink's cursor exists.
    async with audit_writer(log, retention_hold=lambda: 0) as writer:
        await write(writer, 60, at=long_ago)
    assert len(rotated_files(log)) >= 4
    write_cursor(cursor_path(log, 'elasticsearch'), Cursor('es', seq=20, hash='sha256:x'))
    assert pending_from(log) == 21
    options = LogOptions(max_bytes=4096, tick_seconds=0.05, prune_interval_seconds=0.05)
    async with audit_writer(log, options, retention_hold=lambda: pending_from(log)) as writer:
        async def pruned() -> list[Path]:
            return rotated_files(log)

        await async_wait_for(pruned, lambda files: len(files) < 4, what='expired files pruned')
    kept = [json.loads(line)['seq'] for line in local_lines(log) if json.loads(line)['event_type'] != 'audit.pruned']
    assert min(kept) <= 21, 'records the sink still needs are kept'
    assert min(kept) > 0, 'what every sink has delivered may go'
