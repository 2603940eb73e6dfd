"""``agentgov audit verify`` and ``agentgov audit search`` end to end through ``agentgov.cli.main``, on
logs written by the real writer: rotated files and sink copies (gzip, split, shuffled) verify against
the pinned key; tampering exits 1 naming the file, line and seq; usage and read errors exit 2 with one
line; search filters, orders and limits, and hostile input never crashes it."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import json
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from harness.elasticsearch import ElasticsearchServer
from harness.redis import free_port

from agentgov.audit.files import log_files
from agentgov.audit.record import AuditEvent, AuditPolicy, canonical, record_hash
from agentgov.audit.settings import LogOptions
from agentgov.audit.sinks import elasticsearch as es
from agentgov.audit.sinks.settings import ElasticsearchSinkSettings
from agentgov.audit.writer import AuditWriter
from agentgov.cli import main

Records = list[dict[str, object]]


def keypair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = directory / f'{name}.pem', directory / f'{name}.pub'
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


async def write_log(path: Path, key: Path, now: float) -> None:
    """60 records over the last 3 hours from 3 users; a denial every 10th; rotated at 4 KiB, signed every 8."""
    writer = AuditWriter(path, policy=lambda: AuditPolicy(agent='research/research-assistant'), fsync='never',
                         clock=lambda: now, options=LogOptions(max_bytes=4096, digest_key_file=key,
                                                               digest_every_records=8, tick_seconds=3600))
    await writer.start()
    for n in range(60):
        denied = n % 10 == 0
        writer.emit(AuditEvent('authorization', 'denied' if denied else 'allowed', 'POST', f'/v1/run/{n}',
                               now - 3 * 3600 + n * 180, user=('alice', 'bob', 'carol')[n % 3],
                               metadata={'code': 'permission_denied' if denied else None, 'pad': 'p' * 100}))
        if n % 6 == 5:
            await writer._queue.join()
    await writer.close()


@pytest.fixture()
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The log (rotated), its public key, and a key that is not pinned."""
    private, public = keypair(tmp_path, 'digest')
    _, other = keypair(tmp_path, 'other')
    path = tmp_path / 'log' / 'audit.jsonl'
    asyncio.run(write_log(path, private, time.time()))
    assert len(log_files(path)) >= 3
    return path, public, other


def all_records(path: Path) -> Records:
    return [json.loads(line) for f in log_files(path) for line in f.read_bytes().splitlines() if line.strip()]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- verify ---------------------------------------------------------------------------------------

def test_verify_checks_every_rotated_file_and_signature_and_exits_0(signed: tuple[Path, Path, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    code, out, err = run(capsys, 'audit', 'verify', str(path), '--public-key', str(public))
    files = len(log_files(path))
    records = len(all_records(path))
    digests = sum(r['event_type'] == 'audit.digest' for r in all_records(path))
    assert (code, err) == (0, '')
    assert f'{path}: {records} record(s) in {files} files, chain intact, last seq {records - 1}' in out
    assert f'{path}: {digests} digest(s), {digests} signature(s) verified with the pinned key(s)' in out


def test_verify_without_a_key_says_the_signatures_were_not_checked(signed: tuple[Path, Path, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, 'audit', 'verify', str(signed[0]))
    assert code == 0 and 'signatures not checked (give --public-key)' in out


def test_an_edit_in_a_rotated_file_exits_1_naming_that_file_line_and_seq(signed: tuple[Path, Path, Path],
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    rotated = log_files(path)[1]
    lines = rotated.read_bytes().splitlines()
    record = json.loads(lines[2])
    record['user'] = 'mallory'
    lines[2] = canonical(record)
    rotated.write_bytes(b'\n'.join(lines) + b'\n')
    code, out, err = run(capsys, 'audit', 'verify', str(path), '--public-key', str(public))
    assert code == 1
    assert f'{rotated}: line 3 (seq {record["seq"]}): edited: the record does not match its hash' in out
    assert err.startswith(f'{path}: 1 problem(s) in ')


def test_a_range_re_signed_with_a_key_that_is_not_pinned_exits_1(signed: tuple[Path, Path, Path],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, public, other = signed
    code, out, _ = run(capsys, 'audit', 'verify', str(path), '--public-key', str(other))
    assert code == 1 and 'unknown_key' in out and 'which is not a pinned key' in out
    code, out, _ = run(capsys, 'audit', 'verify', str(path), '--public-key', str(other), '--public-key', str(public))
    assert code == 0


def export_copy(records: Records, directory: Path, pieces: int, seed: int) -> None:
    """Records as a sink holds them: split into gzip JSON lines objects, each shuffled inside."""
    directory.mkdir(parents=True)
    rng = random.Random(seed)
    size = -(-len(records) // pieces)
    for index in range(pieces):
        chunk = records[index * size:(index + 1) * size]
        rng.shuffle(chunk)
        with gzip.open(directory / f'{index:03d}.jsonl.gz', 'wb') as f:
            f.write(b''.join(canonical(r) + b'\n' for r in chunk))


def test_a_sink_copy_in_any_order_verifies_like_the_local_log(signed: tuple[Path, Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    records = all_records(path)
    export_copy(records, tmp_path / 's3', pieces=5, seed=1)
    code, out, _ = run(capsys, 'audit', 'verify', '--copy', str(tmp_path / 's3'), '--public-key', str(public))
    assert code == 0, out
    assert f'{tmp_path / "s3"}: {len(records)} record(s) in 5 files, chain intact' in out


def test_a_copy_missing_a_digest_names_the_range_it_covered(signed: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    records = all_records(path)
    digest = [r for r in records if r['event_type'] == 'audit.digest'][1]
    export_copy([r for r in records if r is not digest], tmp_path / 's3', pieces=3, seed=2)
    code, out, _ = run(capsys, 'audit', 'verify', '--copy', str(tmp_path / 's3'), '--public-key', str(public))
    statement = digest['metadata']['statement']  # type: ignore[index]
    assert code == 1
    assert (f'deleted_digest: the digest at seq {digest["seq"]} (covering seq {statement["first_seq"]}-'
            f'{statement["last_seq"]}) is missing') in out


def test_a_copy_with_two_versions_of_a_record_is_a_conflict(signed: tuple[Path, Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    records = all_records(path)
    forged = dict(records[5], user='mallory')
    forged['hash'] = record_hash(forged)
    export_copy([*records, records[7], forged], tmp_path / 's3', pieces=2, seed=3)
    code, out, _ = run(capsys, 'audit', 'verify', '--copy', str(tmp_path / 's3'), '--public-key', str(public))
    assert code == 1 and 'seq 5 appears twice with different content' in out and 'seq 7 ' not in out


def test_a_copy_that_starts_late_verifies_from_the_seq_it_is_told(signed: tuple[Path, Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, public, _ = signed
    records = all_records(path)
    export_copy(records[20:], tmp_path / 's3', pieces=2, seed=4)
    code, out, _ = run(capsys, 'audit', 'verify', '--copy', str(tmp_path / 's3'), '--public-key', str(public))
    assert code == 1 and 'deleted: 20 records before it missing (seq 0-19)' in out
    code, out, _ = run(capsys, 'audit', 'verify', '--copy', str(tmp_path / 's3'), '--public-key', str(public),
                       '--start-seq', '20', '--start-hash', str(records[20]['prev_hash']))
    assert code == 0, out


USAGE: list[tuple[str, list[str], str]] = [
    ('no log and no copy', ['audit', 'verify'], 'give the audit log (PATH) and/or --copy DIR'),
    ('a log that does not exist', ['audit', 'verify', 'NOPE/audit.jsonl'], 'No such file or directory'),
    ('a copy directory that does not exist', ['audit', 'verify', '--copy', 'NOPE'], '--copy NOPE: Not a directory'),
    ('a public key that is not one', ['audit', 'verify', 'LOG', '--public-key', 'GARBAGE'], 'not a PEM public key'),
    ('a start seq without its hash', ['audit', 'verify', '--copy', 'DIR', '--start-seq', '3'], 'go together'),
]


@pytest.mark.parametrize('name, argv, message', USAGE, ids=[u[0] for u in USAGE])
def test_usage_and_read_errors_exit_2_with_one_line(signed: tuple[Path, Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], name: str, argv: list[str],
                                                   message: str) -> None:
    (tmp_path / 'garbage.pem').write_bytes(b'-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n')
    (tmp_path / 'dir').mkdir()
    replaced = [a.replace('NOPE', str(tmp_path / 'nope')).replace('GARBAGE', str(tmp_path / 'garbage.pem'))
                .replace('LOG', str(signed[0])).replace('DIR', str(tmp_path / 'dir')) for a in argv]
    code, out, err = run(capsys, *replaced)
    assert code == 2 and out == ''
    assert err.count('\n') == 1 and err.startswith('error: ') and message.replace('NOPE', str(tmp_path / 'nope')) in err
    assert 'Traceback' not in err


def test_hostile_lines_are_reported_not_crashed_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'audit.jsonl'
    path.write_bytes(b'\xff\xfe\x00garbage\n' + b'[' * 100_000 + b'\n' + b'{"seq": 1e309}\n' + b'x' * (3 * 2**20) + b'\n')
    code, out, _ = run(capsys, 'audit', 'verify', str(path))
    assert code == 1
    assert [line.split(': ')[2] for line in out.splitlines()] == ['malformed'] * 4
    code, out, err = run(capsys, 'audit', 'search', str(path), '-o', 'jsonl')
    assert code == 0 and out == '' and 'were not audit records and were skipped' in err


# --- search ---------------------------------------------------------------------------------------

def test_search_finds_denials_of_one_user_in_the_last_hour_newest_first(signed: tuple[Path, Path, Path],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = signed[0]
    code, out, _ = run(capsys, 'audit', 'search', str(path), '--type', 'permission.denied', '--since', '24h',
                       '-o', 'jsonl')
    found = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r['resource'] for r in found] == [f'/v1/run/{n}' for n in (50, 40, 30, 20, 10, 0)]
    code, out, _ = run(capsys, 'audit', 'search', str(path), '--type', 'permission.denied', '--user', 'bob',
                       '--since', '61m', '-o', 'jsonl')
    assert [json.loads(line)['resource'] for line in out.splitlines()] == ['/v1/run/40']


def test_search_prints_a_table_oldest_first_up_to_the_limit(signed: tuple[Path, Path, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, 'audit', 'search', str(signed[0]), '--user', 'carol', '--order', 'oldest',
                       '--limit', '3')
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ['TIME', 'SEQ', 'TYPE', 'RESULT', 'USER', 'AGENT', 'ACTION', 'RESOURCE']
    assert [line.split()[-1] for line in lines[1:]] == ['/v1/run/2', '/v1/run/5', '/v1/run/8']


@pytest.mark.parametrize('argv, message', [
    (['--since', 'yesterday'], "--since: 'yesterday' is not a time"),
    (['--until', '2026-02-30'], "--until: '2026-02-30' is not a time"),
    (['--since', '1h', '--until', '2h'], '--since is after --until'),
    (['--limit', '0'], '--limit: give a positive number'),
], ids=['a word for --since', 'an impossible --until', 'an empty window', 'a zero limit'])
def test_a_bad_search_option_exits_2_with_one_line(signed: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
                                                   argv: list[str], message: str) -> None:
    code, out, err = run(capsys, 'audit', 'search', str(signed[0]), *argv)
    assert (code, out) == (2, '')
    assert err.startswith(f'error: {message}') and err.count('\n') == 1


def test_search_of_a_missing_log_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, 'audit', 'search', str(tmp_path / 'audit.jsonl'))
    assert code == 2 and err.startswith('error: ') and 'No such file' in err


def test_an_unknown_result_is_refused_by_the_parser(signed: tuple[Path, Path, Path]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(['audit', 'search', str(signed[0]), '--result', 'maybe'])
    assert raised.value.code == 2


# --- search over the Elasticsearch sink ----------------------------------------------------------

@contextlib.contextmanager
def elasticsearch_in_thread() -> Iterator[ElasticsearchServer]:
    """The stand-in cluster on a loop of its own, so the command can run its own (asyncio.run)."""
    server, loop, ready = ElasticsearchServer(), asyncio.new_event_loop(), threading.Event()
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with server.serve():
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), 'the stand-in cluster did not start'
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


def index(server: ElasticsearchServer, records: Records, source: str) -> None:
    """Records as the sink stores them: the template, then ``_bulk`` ``create`` per record."""
    prefix = ElasticsearchSinkSettings(url=server.url).index_prefix

    def call(method: str, path: str, body: bytes, content_type: str) -> None:
        request = urllib.request.Request(server.url + path, data=body, method=method,
                                         headers={'Content-Type': content_type})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            answer = json.loads(response.read())
            assert not answer.get('errors'), answer

    call('PUT', f'/_index_template/{prefix}', json.dumps(es.index_template(prefix)).encode(), 'application/json')
    lines = []
    for record in records:
        when = dt.datetime.fromisoformat(str(record['timestamp'])).timestamp()
        lines.append(json.dumps({'create': {'_index': es.index_name(prefix, when),
                                            '_id': es.document_id(source, str(record['hash']))}}).encode())
        lines.append(json.dumps(es.document(record, source)).encode())
    call('POST', '/_bulk', b'\n'.join(lines) + b'\n', 'application/x-ndjson')


def test_search_over_elasticsearch_applies_the_same_filters_and_aliases(signed: tuple[Path, Path, Path],
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with elasticsearch_in_thread() as server:
        index(server, all_records(signed[0]), 'research-assistant-7d9f-abcde')
        code, out, err = run(capsys, 'audit', 'search', '--elasticsearch', server.url, '--type', 'permission.denied',
                             '--since', '24h', '-o', 'jsonl')
        found = [json.loads(line) for line in out.splitlines()]
        assert (code, err) == (0, '')
        assert [r['resource'] for r in found] == [f'/v1/run/{n}' for n in (50, 40, 30, 20, 10, 0)]
        assert {r['log_source'] for r in found} == {'research-assistant-7d9f-abcde'}
        # The cluster picks the newest matches for --limit; --order orders what is printed.
        code, out, _ = run(capsys, 'audit', 'search', '--elasticsearch', server.url, '--user', 'carol',
                           '--order', 'oldest', '--limit', '2', '-o', 'jsonl')
        assert [json.loads(line)['resource'] for line in out.splitlines()] == ['/v1/run/56', '/v1/run/59']


def test_search_over_an_unreachable_cluster_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f'http://127.0.0.1:{free_port()}'
    code, out, err = run(capsys, 'audit', 'search', '--elasticsearch', url, '--user', 'alice')
    assert (code, out) == (2, '') and err.startswith('error: elasticsearch: ') and err.count('\n') == 1


@pytest.mark.parametrize('argv, message', [
    (['FILE', '--elasticsearch', 'http://127.0.0.1:9'], 'one of them'),
    (['--elasticsearch', 'ftp://es.example'], '--elasticsearch: '),
    (['--elasticsearch', 'http://127.0.0.1:9', '--es-username', 'u'], '--es-password-file: '),
    (['--elasticsearch', 'http://127.0.0.1:9', '--es-index-prefix', 'Bad Prefix'], '--es-index-prefix: '),
], ids=['a file and a cluster', 'not an http url', 'a user without a password file', 'a bad index prefix'])
def test_bad_elasticsearch_options_exit_2_naming_the_option(signed: tuple[Path, Path, Path],
                                                            capsys: pytest.CaptureFixture[str], argv: list[str],
                                                            message: str) -> None:
    code, out, err = run(capsys, 'audit', 'search', *[str(signed[0]) if a == 'FILE' else a for a in argv])
    assert (code, out) == (2, '') and err.startswith('error: ') and message in err and err.count('\n') == 1
