"""Searching audit records (agentgov.audit.search): each filter, the dotted type aliases that also find
the sidecar's records, time expressions, and a streaming scan of rotated files newest or oldest first."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from agentgov.audit.files import rotated_name
from agentgov.audit.search import (
    Query, SearchStats, jsonl_row, matches, parse_query, parse_time, search_log, table_header, table_row,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def rec(event_type: str = 'authorization', result: str = 'allowed', user: str | None = 'alice',
        agent: str | None = 'research/research-assistant', at: str = '2026-03-01T11:00:00.000Z',
        seq: int = 0) -> dict[str, object]:
    return {'seq': seq, 'event_type': event_type, 'result': result, 'user': user, 'agent': agent, 'timestamp': at,
            'action': 'POST', 'resource': '/v1/run'}


FILTERS: list[tuple[str, Query, dict[str, object], bool]] = [
    ('no filter matches anything', Query(), rec(), True),
    ('a user matches exactly', Query(users=('alice',)), rec(), True),
    ('another user does not', Query(users=('bob',)), rec(), False),
    ('a user glob', Query(users=('kubectl-*',)), rec(user='kubectl-client-side-apply'), True),
    ('a record without a user never matches a user filter', Query(users=('*',)), rec(user=None), False),
    ('either of two users', Query(users=('bob', 'alice')), rec(), True),
    ('a type matches exactly', Query(types=('agent.created',)), rec('agent.created', 'success'), True),
    ('a type glob', Query(types=('agent.*',)), rec('agent.deleted', 'success'), True),
    ('a type glob does not cross subjects', Query(types=('agent.*',)), rec('agent_execution', 'started'), False),
    ('permission.denied finds the operator denial', Query(types=('permission.denied',)),
     rec('permission.denied', 'denied'), True),
    ('permission.denied finds a sidecar authorization denial', Query(types=('permission.denied',)),
     rec('authorization', 'denied'), True),
    ('permission.denied finds a refused tool call', Query(types=('permission.denied',)),
     rec('tool_access', 'denied'), True),
    ('permission.denied does not find an allowed authorization', Query(types=('permission.denied',)),
     rec('authorization', 'allowed'), False),
    ('permission.denied does not find a budget denial', Query(types=('permission.denied',)),
     rec('budget_denial', 'denied'), False),
    ('budget.denied finds the sidecar budget denial', Query(types=('budget.denied',)),
     rec('budget_denial', 'denied'), True),
    ('authentication.failed finds a failed authentication', Query(types=('authentication.failed',)),
     rec('authentication', 'failure'), True),
    ('secret.accessed finds sidecar reads and operator rotations', Query(types=('secret.accessed',)),
     rec('secret.rotated', 'success'), True),
    ('an agent glob', Query(agents=('research/*',)), rec(), True),
    ('an agent of another namespace', Query(agents=('support/*',)), rec(), False),
    ('a result', Query(results=('denied',)), rec(result='denied'), True),
    ('another result', Query(results=('denied',)), rec(), False),
    ('since an hour before', Query(since=NOW - dt.timedelta(hours=2)), rec(), True),
    ('since after the record', Query(since=NOW - dt.timedelta(minutes=30)), rec(), False),
    ('until before the record', Query(until=NOW - dt.timedelta(hours=2)), rec(), False),
    ('a time window around it', Query(since=NOW - dt.timedelta(hours=2), until=NOW), rec(), True),
    ('a record without a readable time never matches a time filter', Query(since=NOW - dt.timedelta(days=1)),
     rec(at='yesterday-ish'), False),
    ('every filter at once', Query(users=('alice',), types=('permission.denied',), agents=('research/*',),
                                   results=('denied',), since=NOW - dt.timedelta(days=1)),
     rec('authorization', 'denied'), True),
]


@pytest.mark.parametrize('name, query, record, expected', FILTERS, ids=[f[0] for f in FILTERS])
def test_each_filter_decides_whether_a_record_matches(name: str, query: Query, record: dict[str, object],
                                                      expected: bool) -> None:
    assert matches(record, query) is expected


@pytest.mark.parametrize('text, expected', [
    ('24h', NOW - dt.timedelta(hours=24)),
    ('30m', NOW - dt.timedelta(minutes=30)),
    ('90s', NOW - dt.timedelta(seconds=90)),
    ('7d', NOW - dt.timedelta(days=7)),
    ('2w', NOW - dt.timedelta(weeks=2)),
    ('now', NOW),
    ('2026-01-31', dt.datetime(2026, 1, 31, tzinfo=dt.timezone.utc)),
    ('2026-01-31T08:00:00Z', dt.datetime(2026, 1, 31, 8, tzinfo=dt.timezone.utc)),
    ('2026-01-31T08:00:00+02:00', dt.datetime(2026, 1, 31, 6, tzinfo=dt.timezone.utc)),
], ids=['hours', 'minutes', 'seconds', 'days', 'weeks', 'now', 'a date is UTC midnight', 'a UTC time',
        'a time with an offset'])
def test_a_time_is_a_duration_before_now_or_an_iso_date(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize('text', ['yesterday', '24', '-1h', '1y', '24 h', '', '999999999w', '2026-13-01'],
                         ids=['a word', 'no unit', 'negative', 'an unknown unit', 'a space', 'empty',
                              'before year 1', 'an impossible date'])
def test_a_bad_time_is_refused_with_the_forms_it_accepts(text: str) -> None:
    with pytest.raises(ValueError, match='is not a time|further back'):
        parse_time(text, NOW)


def test_the_query_names_the_option_at_fault() -> None:
    with pytest.raises(ValueError, match='^--since: '):
        parse_query(since='soon', now=NOW)
    with pytest.raises(ValueError, match='^--until: '):
        parse_query(until='later', now=NOW)
    with pytest.raises(ValueError, match='--since is after --until'):
        parse_query(since='1h', until='2h', now=NOW)
    with pytest.raises(ValueError, match='--user: give 1 to 256 characters'):
        parse_query(users=['x' * 300], now=NOW)


def write(path: Path, records: list[dict[str, object]], tail: bytes = b'') -> None:
    path.write_bytes(b''.join(json.dumps(r).encode() + b'\n' for r in records) + tail)


@pytest.fixture()
def rotated_log(tmp_path: Path) -> Path:
    """Three files, an hour per file: seq 0-9 from 08:00, 10-19 from 09:00 (one unreadable line), 20-29 from 10:00."""
    log = tmp_path / 'audit.jsonl'
    for first, hour, path in ((0, 8, rotated_name(log, 0)), (10, 9, rotated_name(log, 10)), (20, 10, log)):
        records = [rec('authorization', 'denied' if seq % 5 == 0 else 'allowed', seq=seq,
                       at=f'2026-03-01T{hour:02d}:{(seq - first) * 5:02d}:00.000Z') for seq in range(first, first + 10)]
        write(path, records, b'not json\n' if first == 10 else b'')
    return log


def test_search_streams_rotated_files_newest_first_by_default(rotated_log: Path) -> None:
    stats = SearchStats()
    seqs = [r['seq'] for r in search_log(rotated_log, Query(), stats=stats)]
    assert seqs == list(range(29, -1, -1))
    assert (stats.scanned, stats.unreadable, stats.files_read) == (31, 1, 3)


def test_search_oldest_first_with_a_limit_stops_early(rotated_log: Path) -> None:
    stats = SearchStats()
    found = search_log(rotated_log, Query(results=('denied',)), newest_first=False, limit=3, stats=stats)
    assert [r['seq'] for r in found] == [0, 5, 10]
    assert stats.files_read == 2


def test_search_reads_only_the_files_that_can_hold_the_time_window(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    for first, day in ((0, 1), (10, 5), (20, 9)):
        path = log if first == 20 else rotated_name(log, first)
        write(path, [rec(seq=seq, at=f'2026-03-{day:02d}T00:00:{seq - first:02d}.000Z') for seq in range(first, first + 10)])
    stats = SearchStats()
    found = list(search_log(log, Query(since=dt.datetime(2026, 3, 6, tzinfo=dt.timezone.utc)), stats=stats))
    assert [r['seq'] for r in found] == list(range(29, 19, -1))
    # The scan stops at the first record of the middle file: the oldest is never opened.
    assert (stats.files_read, stats.scanned) == (2, 11)
    stats = SearchStats()
    until = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    assert len(list(search_log(log, Query(until=until), newest_first=False, stats=stats))) == 10
    assert stats.files_skipped == 2


def test_a_missing_log_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(search_log(tmp_path / 'audit.jsonl', Query()))


def test_table_cells_are_cut_to_width_and_never_carry_control_characters() -> None:
    row = table_row(rec(user='eve\x1b[31m\nline', agent='a' * 80))
    assert '\x1b' not in row and '\n' not in row and 'eve?[31m?line' in row
    assert ('a' * 31 + '…') in row
    assert table_header().split() == ['TIME', 'SEQ', 'TYPE', 'RESULT', 'USER', 'AGENT', 'ACTION', 'RESOURCE']
    assert jsonl_row({'user': 'eve\x1b', 'seq': 1}) == '{"seq":1,"user":"eve\\u001b"}'
