"""The local audit log kept by the real writer (agentgov.audit.writer) on a real filesystem: rotation by
size and age with the chain running on across files, signed digests by count, by time, at close and
across restarts, retention pruning that removes only expired rotated files and leaves a chain that still
verifies (and is caught when its anchor is forged or lost), and the sidecar signing its log."""
from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from harness.waiting import async_wait_for

from agentgov.audit.chain import ChainReport, verify_log
from agentgov.audit.digest import VerifyKey, load_verify_key
from agentgov.audit.files import anchor_path_for, log_files, rotated_seq
from agentgov.audit.record import AuditEvent, AuditPolicy
from agentgov.audit.settings import LogOptions
from agentgov.audit.writer import AuditWriter
from sidecar_support import bearer, claims, make_bundle, running_agent, sidecar_for, sign

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def key(tmp_path: Path) -> tuple[Path, dict[str, VerifyKey]]:
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / 'digest.pem'
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    public = tmp_path / 'digest.pub'
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    verify = load_verify_key(public)
    return path, {verify.key_id: verify}


@asynccontextmanager
async def writer(path: Path, clock: Clock, policy: Callable[[], AuditPolicy] = AuditPolicy,
                 **options: object) -> AsyncIterator[AuditWriter]:
    settings = {'tick_seconds': 0.02, **options}
    log = AuditWriter(path, policy=policy, clock=clock, options=LogOptions(**settings),  # type: ignore[arg-type]
                      fsync='never')
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def emit(log: AuditWriter, count: int, clock: Clock, start: int = 0, batch: int = 5) -> None:
    """``count`` events, written ``batch`` at a time (rotation is decided before each batch)."""
    for n in range(start, start + count):
        log.emit(AuditEvent('agent_execution', 'success', 'POST', f'/v1/run/{n}', clock(), user='alice',
                            metadata={'note': 'x' * 200}))
        if (n - start) % batch == batch - 1:
            await log._queue.join()
    await log._queue.join()


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in log_files(path) for line in f.read_bytes().splitlines() if line.strip()]


def verified(path: Path, keys: dict[str, VerifyKey] | None = None) -> ChainReport:
    report = verify_log(path, keys=keys)
    assert report.ok, [str(p) for p in report.problems]
    return report


async def test_rotation_by_size_names_each_file_by_its_first_seq_and_the_chain_runs_on(tmp_path: Path) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    async with writer(path, clock, max_bytes=4096) as log:
        await emit(log, 40, clock)
    files = log_files(path)
    assert len(files) >= 4 and files[-1] == path
    for file in files[:-1]:
        first = json.loads(file.read_bytes().splitlines()[0])['seq']
        assert rotated_seq(path, file) == first
        assert file.stat().st_size >= 4096
    assert [r['seq'] for r in records(path)] == list(range(40))
    assert verified(path).files == len(files)


async def test_an_idle_log_rotates_by_age_at_the_next_tick(tmp_path: Path) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    async with writer(path, clock, max_age_seconds=3600) as log:
        await emit(log, 3, clock)
        clock.now += 3601
        await async_wait_for(lambda: _async(len(log_files(path))), lambda n: n == 2, what='the active file rotated')
        await emit(log, 2, clock, 3)
    assert [p.name for p in log_files(path)] == ['audit.jsonl.000000000000', 'audit.jsonl']
    assert [r['seq'] for r in records(path)] == [0, 1, 2, 3, 4]
    verified(path)


async def _async(value: object) -> object:
    """A value as an awaitable, for async_wait_for probes that only look at files."""
    return value


async def test_an_idle_log_is_signed_once_its_oldest_unsigned_record_is_old_enough(
        tmp_path: Path, key: tuple[Path, dict[str, VerifyKey]]) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    # Two records, then a minute of quiet: the maintenance tick signs them.
    async with writer(path, clock, digest_key_file=key[0], digest_every_records=1000, digest_every_seconds=60) as log:
        await emit(log, 2, clock)
        clock.now += 61
        await async_wait_for(lambda: _async([r['event_type'] for r in records(path)]),
                             lambda kinds: 'audit.digest' in kinds, what='a digest by time')
    report = verified(path, key[1])
    assert report.digests == 1 and report.signatures_checked == 1


async def test_restarts_keep_one_chain_of_digests(tmp_path: Path, key: tuple[Path, dict[str, VerifyKey]]) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    for run in range(3):
        async with writer(path, clock, digest_key_file=key[0], digest_every_records=3) as log:
            await emit(log, 4, clock, run * 4)
    statements = [r['metadata']['statement'] for r in records(path) if r['event_type'] == 'audit.digest']  # type: ignore[index]
    assert [s['previous_digest_seq'] for s in statements[1:]] == [r['seq'] for r in records(path)
                                                                   if r['event_type'] == 'audit.digest'][:-1]
    report = verified(path, key[1])
    assert report.signatures_checked == report.digests == len(statements) and report.unsigned_tail is None


async def test_turning_digests_on_for_an_existing_log_signs_it_from_its_first_record(
        tmp_path: Path, key: tuple[Path, dict[str, VerifyKey]]) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    async with writer(path, clock, max_bytes=4096) as log:
        await emit(log, 30, clock)
    async with writer(path, clock, max_bytes=4096, digest_key_file=key[0], digest_every_records=1000) as log:
        await emit(log, 1, clock, 30)
    digests = [r for r in records(path) if r['event_type'] == 'audit.digest']
    assert len(digests) == 1 and digests[0]['metadata']['statement']['first_seq'] == 0  # type: ignore[index]
    assert digests[0]['metadata']['statement']['last_seq'] == 30  # type: ignore[index]
    verified(path, key[1])


async def test_pruning_removes_only_expired_rotated_files_and_the_chain_still_verifies(
        tmp_path: Path, key: tuple[Path, dict[str, VerifyKey]]) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    retention = {'days': 1}
    async with writer(path, clock, lambda: AuditPolicy(retention_days=retention['days']), max_bytes=4096,
                      digest_key_file=key[0], digest_every_records=7, prune_interval_seconds=3600) as log:
        await emit(log, 30, clock)  # kept 1 day
        retention['days'] = 30
        await emit(log, 30, clock, 30)  # kept 30 days
        before = {p.name: records_in(p) for p in log_files(path)}
        clock.now += 3 * DAY
        await async_wait_for(lambda: _async(anchor_path_for(path).exists()), what='a prune')
    after = [p.name for p in log_files(path)]
    pruned = [name for name in before if name not in after]
    assert pruned and path.name in after
    for name in pruned:  # everything pruned had expired; the first file kept holds an unexpired record
        assert all(r['retain_until'] == '2026-01-02' for r in before[name])
    first_kept = next(name for name in before if name in after)
    assert any(r['retain_until'] == '2026-01-31' for r in before[first_kept])
    anchor = json.loads(anchor_path_for(path).read_text())
    assert anchor['seq'] == max(r['seq'] for name in pruned for r in before[name])  # type: ignore[type-var]
    noted = [r for r in records(path) if r['event_type'] == 'audit.pruned']
    assert len(noted) == 1 and noted[0]['metadata']['anchor'] == anchor  # type: ignore[index]
    report = verified(path, key[1])
    assert report.first_seq == anchor['seq'] + 1 and report.signatures_checked == report.digests


def records_in(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def test_records_a_sink_still_needs_are_not_pruned(tmp_path: Path) -> None:
    path, clock = tmp_path / 'audit.jsonl', Clock()
    log = AuditWriter(path, policy=lambda: AuditPolicy(retention_days=1), clock=clock, fsync='never',
                      options=LogOptions(max_bytes=4096, tick_seconds=0.02), retention_hold=lambda: 0)
    await log.start()
    try:
        await emit(log, 40, clock)
        clock.now += 3 * DAY
        rotated = len(log_files(path)) - 1
        await emit(log, 1, clock, 40)  # a tick or two pass meanwhile
        await async_wait_for(lambda: _async(log._last_prune), lambda t: t == clock.now, what='a prune attempt')
    finally:
        await log.close()
    assert not anchor_path_for(path).exists() and len(log_files(path)) >= rotated
    verified(path)


@pytest.fixture()
async def pruned_log(tmp_path: Path, key: tuple[Path, dict[str, VerifyKey]]) -> tuple[Path, dict[str, VerifyKey], Path]:
    """A signed log whose first rotated files were pruned; a copy of them kept aside."""
    path, clock = tmp_path / 'log' / 'audit.jsonl', Clock()
    aside = tmp_path / 'aside'
    async with writer(path, clock, lambda: AuditPolicy(retention_days=1), max_bytes=4096, digest_key_file=key[0],
                      digest_every_records=5) as log:
        await emit(log, 40, clock)
        shutil.copytree(path.parent, aside)
        clock.now += 3 * DAY
        await async_wait_for(lambda: _async(anchor_path_for(path).exists()), what='a prune')
    return path, key[1], aside


def test_an_interrupted_prune_still_verifies_and_says_what_it_skipped(
        pruned_log: tuple[Path, dict[str, VerifyKey], Path]) -> None:
    path, keys, aside = pruned_log
    for file in aside.glob('audit.jsonl.0*'):
        if not (path.parent / file.name).exists():
            shutil.copy(file, path.parent / file.name)  # as if the process died before deleting them
    report = verified(path, keys)
    assert report.notes and 'not checked: their pruning was recorded but had not finished' in report.notes[0]


def test_a_forged_anchor_is_reported(pruned_log: tuple[Path, dict[str, VerifyKey], Path]) -> None:
    path, keys, _ = pruned_log
    anchor = json.loads(anchor_path_for(path).read_text())
    anchor['hash'] = 'sha256:' + 'f' * 64
    anchor_path_for(path).write_text(json.dumps(anchor))
    kinds = {p.kind for p in verify_log(path, keys=keys).problems}
    assert kinds == {'unanchored', 'edited'}


def test_a_lost_anchor_shows_the_pruned_records_as_deleted(pruned_log: tuple[Path, dict[str, VerifyKey], Path]) -> None:
    path, keys, _ = pruned_log
    anchor = json.loads(anchor_path_for(path).read_text())
    anchor_path_for(path).unlink()
    problems = verify_log(path, keys=keys).problems
    assert (problems[0].kind, problems[0].seq) == ('deleted', anchor['seq'] + 1)
    assert f'(seq 0-{anchor["seq"]})' in problems[0].message


async def test_echo_gets_exactly_the_lines_written(tmp_path: Path) -> None:
    path, clock, echoed = tmp_path / 'audit.jsonl', Clock(), bytearray()
    log = AuditWriter(path, policy=AuditPolicy, clock=clock, echo=echoed.extend)
    await log.start()
    await emit(log, 5, clock)
    await log.close()
    assert bytes(echoed) == path.read_bytes()


async def test_the_sidecar_signs_its_log_with_the_digest_key(tmp_path: Path,
                                                             key: tuple[Path, dict[str, VerifyKey]]) -> None:
    options = LogOptions(digest_key_file=key[0], digest_every_records=4)
    async with running_agent() as agent:
        async with sidecar_for(tmp_path, make_bundle(agent_port=agent.port), audit_log_options=options) as sidecar:
            for _ in range(5):
                status, _, _ = await sidecar.request('GET', '/v1/run', headers=bearer(sign(claims(role='analyst'))))
                assert status == 200
            path = sidecar.settings.audit_log
    report = verified(path, key[1])
    assert report.digests >= 2 and report.signatures_checked == report.digests and report.unsigned_tail is None


async def test_a_privileged_record_not_durable_in_time_is_a_503_from_the_writers_own_error(tmp_path: Path) -> None:
    # The writer raises agentgov.audit's AuditUnavailable; the sidecar's error boundary answers it.
    async with running_agent() as agent:
        async with sidecar_for(tmp_path, make_bundle(agent_port=agent.port),
                               audit_durable_timeout_seconds=1e-6) as sidecar:
            status, body, _ = await sidecar.request('POST', '/agentgov/v1/tokens', json={'user': 'ci', 'role': 'viewer'},
                                                    headers=bearer(sign(claims(role='admin', user='root'))))
    assert (status, body['error']['code']) == (503, 'audit_unavailable')
