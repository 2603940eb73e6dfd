"""The audit hash chain (agentgov.audit.record, agentgov.audit.chain): records link to their predecessor, and
``verify_lines``/``verify_chain``/``agentgov audit verify`` find and locate each kind of tampering."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agentgov.cli import main
from agentgov.audit.chain import ChainHead, verify_chain, verify_lines
from agentgov.audit.redact import Redactor
from agentgov.audit.record import GENESIS_HASH, AuditEvent, AuditPolicy, build_record, canonical, record_hash

POLICY = AuditPolicy(agent='research/research-assistant')


def chain(n: int = 6) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for seq in range(n):
        event = AuditEvent('agent_execution', 'success', 'POST', f'/v1/run/{seq}', 1_800_000_000.0 + seq, user='alice')
        record = build_record(event, seq=seq, prev_hash=prev, policy=POLICY)
        lines.append(canonical(record))
        prev = str(record['hash'])
    return lines


def head_of(lines: list[bytes]) -> ChainHead:
    last = json.loads(lines[-1])
    return ChainHead(last['seq'], last['hash'])


def edit(lines: list[bytes], index: int, *, rehash: bool, **changes: object) -> list[bytes]:
    record = json.loads(lines[index])
    record.update(changes)
    if rehash:
        record['hash'] = record_hash(record)
    return [*lines[:index], canonical(record), *lines[index + 1:]]


Tamper = Callable[[list[bytes]], tuple[list[bytes], bool]]  # -> (lines, file ends with a newline)

CASES: list[tuple[str, Tamper, bool, list[tuple[str, int, int | None]]]] = [
    ('an edited record', lambda ls: (edit(ls, 2, rehash=False, user='mallory'), True), False,
     [('edited', 3, 2)]),
    ('an edited record whose hash was recomputed', lambda ls: (edit(ls, 2, rehash=True, user='mallory'), True), False,
     [('edited', 3, 2)]),
    ('the last record edited and rehashed, caught by the head',
     lambda ls: (edit(ls, 5, rehash=True, result='failure'), True), True, [('edited', 6, 5)]),
    ('a deleted record', lambda ls: ([*ls[:2], *ls[3:]], True), False, [('deleted', 3, 3)]),
    ('two deleted records', lambda ls: ([*ls[:1], *ls[3:]], True), False, [('deleted', 2, 3)]),
    ('the first record deleted', lambda ls: (ls[1:], True), False, [('deleted', 1, 1)]),
    ('the last records removed, caught by the head', lambda ls: (ls[:4], True), True, [('truncated', 4, 3)]),
    ('two records swapped', lambda ls: ([*ls[:2], ls[3], ls[2], *ls[4:]], True), False, [('reordered', 4, 2)]),
    ('the first record moved to the end', lambda ls: ([*ls[1:], ls[0]], True), False, [('reordered', 6, 0)]),
    ('a duplicated record', lambda ls: ([*ls[:3], ls[2], *ls[3:]], True), False, [('duplicated', 4, 2)]),
    ('the last record cut short', lambda ls: ([*ls[:5], ls[5][:40]], False), False, [('truncated', 6, None)]),
    ('a garbage line inserted', lambda ls: ([*ls[:2], b'{"seq": "x"}', *ls[2:]], True), False,
     [('malformed', 3, None)]),
]


@pytest.mark.parametrize('name, tamper, with_head, problems', CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_tampering_is_detected_and_located(name: str, tamper: Tamper, with_head: bool,
                                                        problems: list[tuple[str, int, int | None]]) -> None:
    original = chain()
    lines, complete = tamper(original)
    report = verify_lines(lines, complete=complete, head=head_of(original) if with_head else None)
    assert [(p.kind, p.line, p.seq) for p in report.problems] == problems, [str(p) for p in report.problems]
    assert not report.ok


def test_an_intact_chain_verifies_with_and_without_its_head() -> None:
    lines = chain()
    for head in (None, head_of(lines)):
        report = verify_lines(lines, head=head)
        assert report.ok and report.records == 6 and report.last_seq == 5


def test_an_empty_log_is_an_intact_chain() -> None:
    assert verify_lines([]).ok


def test_problems_read_as_sentences() -> None:
    lines = chain()
    report = verify_lines([*lines[:2], *lines[4:]])
    assert [str(p) for p in report.problems] == ['line 3 (seq 4): deleted: 2 records missing before it (seq 2-3, after line 2)']


def test_each_record_links_to_the_previous_hash_and_starts_from_genesis() -> None:
    records = [json.loads(line) for line in chain(3)]
    assert records[0]['prev_hash'] == GENESIS_HASH
    assert [r['prev_hash'] for r in records[1:]] == [r['hash'] for r in records[:-1]]
    assert all(record_hash(r) == r['hash'] for r in records)


@pytest.mark.parametrize('days, date', [(365, '2028-01-15'), (30, '2027-02-14')],
                         ids=['the default year of retention', 'a 30-day retention'])
def test_records_carry_their_retention_date(days: int, date: str) -> None:
    event = AuditEvent('authentication', 'success', 'GET', '/', 1_800_000_000.0)  # 2027-01-15
    record = build_record(event, seq=0, prev_hash=GENESIS_HASH, policy=AuditPolicy(retention_days=days))
    assert record['retain_until'] == date
    assert record['timestamp'] == '2027-01-15T08:00:00.000Z'


def test_a_record_has_the_playbook_fields() -> None:
    event = AuditEvent('authorization', 'denied', 'POST', '/v1/run', 1_800_000_000.0, user='bob',
                       metadata={'code': 'permission_denied'}, client_ip='10.0.0.7', user_agent='curl/8')
    record = build_record(event, seq=0, prev_hash=GENESIS_HASH, policy=POLICY)
    assert {'timestamp', 'event_type', 'user', 'agent', 'resource', 'action', 'result', 'metadata', 'client_ip',
            'user_agent'} <= set(record)
    assert record['agent'] == 'research/research-assistant'


def write_log(path: Path, lines: list[bytes], head: ChainHead | None = None) -> None:
    path.write_bytes(b''.join(line + b'\n' for line in lines))
    if head is not None:
        path.with_name(path.name + '.head').write_text(json.dumps({'seq': head.seq, 'hash': head.hash}))


def test_verify_chain_reads_the_head_file_next_to_the_log(tmp_path: Path) -> None:
    lines = chain()
    write_log(tmp_path / 'audit.jsonl', lines[:3], head_of(lines))
    report = verify_chain(tmp_path / 'audit.jsonl')
    assert [(p.kind, p.line) for p in report.problems] == [('truncated', 3)]


def test_audit_verify_command_reports_ok_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path / 'audit.jsonl', chain())
    assert main(['audit', 'verify', str(tmp_path / 'audit.jsonl')]) == 0
    assert capsys.readouterr().out.strip().endswith('6 record(s), chain intact, last seq 5')


def test_audit_verify_command_names_each_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = chain()
    write_log(tmp_path / 'audit.jsonl', [*lines[:2], lines[3], lines[2], *lines[4:]])
    assert main(['audit', 'verify', str(tmp_path / 'audit.jsonl')]) == 1
    out, err = capsys.readouterr()
    assert 'line 4 (seq 2): reordered: seq 2 comes after seq 3 (line 3)' in out
    assert '1 problem(s) in 6 record(s)' in err


def test_audit_verify_command_on_a_missing_file_is_a_one_line_error_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['audit', 'verify', str(tmp_path / 'nope.jsonl')]) == 2
    assert capsys.readouterr().err.startswith('error: ')


# --- byte compatibility: a log written by the sidecar before the audit package existed ----------

BEFORE_MOVE = Path(__file__).parent / 'data' / 'audit_log_before_move.jsonl'
BEFORE_MOVE_POLICY = AuditPolicy(agent='research/research-assistant', retention_days=30,
                                 redactor=Redactor(['mounted-secret-value-123']))
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BEFORE_MOVE_EVENTS = [
    AuditEvent('authentication', 'success', 'GET', '/v1/run', T0 + 1, user='alice',
               metadata={'role': 'analyst', 'scopes': ['agent:execute'], 'alg': 'RS256', 'kid': 'k1'},
               client_ip='10.0.0.7', user_agent='curl/8.5', execution_id='exe_1', request_id='req_1'),
    AuditEvent('authorization', 'denied', 'POST', '/v1/run', T0 + 2, user='bob',
               metadata={'code': 'permission_denied', 'rule': 'role viewer lacks agent:execute',
                         'api_key': 'sk-abcdefghijklmnopqrstuvwx'}),
    AuditEvent('secret_access', 'success', 'read', 'secrets/openai/api-key', T0 + 3,
               metadata={'purpose': 'model route gpt-4o'}),
    AuditEvent('model_call', 'success', 'chat.completions', 'gpt-4o', T0 + 4, user='alice',
               metadata={'input_tokens': 12, 'output_tokens': 34, 'cost_usd': 0.00123,
                         'note': 'héllo ✓ mounted-secret-value-123'}),
    AuditEvent('policy_reload', 'failure', 'load', '/etc/agentgov/bundle.json', T0 + 5,
               metadata={'error': 'auth.leewaySeconds: not a number', 'kept': None}),
    AuditEvent('token_issued', 'success', 'mint', '/agentgov/v1/tokens', T0 + 6, user='admin',
               metadata={'minted_user': 'carol', 'ttl_seconds': 3600}),
]


def test_a_log_written_before_the_move_verifies_with_its_head() -> None:
    report = verify_chain(BEFORE_MOVE)
    assert report.ok, [str(p) for p in report.problems]
    assert (report.records, report.last_seq) == (6, 5)


def test_the_same_events_give_byte_identical_records_to_those_written_before_the_move() -> None:
    lines, prev = [], GENESIS_HASH
    for seq, event in enumerate(BEFORE_MOVE_EVENTS):
        record = build_record(event, seq=seq, prev_hash=prev, policy=BEFORE_MOVE_POLICY)
        lines.append(canonical(record))
        prev = str(record['hash'])
    assert lines == BEFORE_MOVE.read_bytes().splitlines()
