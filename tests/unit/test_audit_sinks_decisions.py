"""The pure decisions of audit shipping: when a batch is due, how long to back off, what a bulk
answer means per record, where an S3 object goes and how long it is locked, what a cursor file
holds, and where to resume in a log after a restart."""
from __future__ import annotations

import datetime as dt
import gzip
import json
import random

import pytest

from agentgov.audit.sinks.batching import BatchPolicy, Cut, backoff_delay, cut, window_bounds
from agentgov.audit.sinks.cursor import Cursor, CursorError, Inflight, decode_cursor, encode_cursor
from agentgov.audit.sinks.elasticsearch import (
    MAPPINGS, SearchFilters, bulk_body, classify_bulk, document_id, index_name, index_template, record_of,
    search_body,
)
from agentgov.audit.sinks.logread import Landmark, LogLine, Resume, parse_line, resume_point
from agentgov.audit.sinks.s3 import classify_client_error, content_md5, object_body, object_key, retain_until
from agentgov.audit.sinks.shipper import dead_letter

T0 = dt.datetime(2026, 3, 14, 9, 0, tzinfo=dt.timezone.utc).timestamp()


def line(seq: int, at: float = T0, *, size: int = 100, retain: str = '2027-03-14', problem: str | None = None) -> LogLine:
    record = {'seq': seq, 'hash': f'sha256:{seq:064x}', 'timestamp': 'x', 'retain_until': retain}
    raw = json.dumps(record).encode().ljust(size - 1)
    if problem is not None:
        return LogLine(raw, 1, seq * size, problem=problem)
    return LogLine(raw, 1, seq * size, seq=seq, hash=record['hash'], timestamp=at, record=record)


# --- batching ----------------------------------------------------------------------------

LINGER = BatchPolicy(max_records=3, max_bytes=10_000, window_seconds=5)
WINDOWS = BatchPolicy(max_records=100, max_bytes=10_000, window_seconds=60, aligned=True, grace_seconds=2)


@pytest.mark.parametrize('lines, policy, now, draining, expected', [
    ([], LINGER, T0, False, Cut(0)),
    ([line(0), line(1)], LINGER, T0 + 1, False, Cut(0, T0 + 5)),
    ([line(0), line(1)], LINGER, T0 + 5, False, Cut(2)),
    ([line(0), line(1), line(2), line(3)], LINGER, T0, False, Cut(3)),
    ([line(0, size=6000), line(1, size=6000)], LINGER, T0, False, Cut(1)),
    ([line(0), line(1)], LINGER, T0, True, Cut(2)),
    ([line(0, T0 + 10), line(1, T0 + 50)], WINDOWS, T0 + 55, False, Cut(0, T0 + 62)),
    ([line(0, T0 + 10), line(1, T0 + 50)], WINDOWS, T0 + 62, False, Cut(2)),
    ([line(0, T0 + 10), line(1, T0 + 50), line(2, T0 + 61)], WINDOWS, T0 + 61, False, Cut(2)),
    ([line(0, T0 + 10), line(1, T0 - 3), line(2, T0 + 20)], WINDOWS, T0 + 21, False, Cut(0, T0 + 62)),
    ([line(0, problem='not a JSON record')], WINDOWS, T0, False, Cut(1)),
], ids=[
    'nothing read, nothing to send',
    'linger: young records wait for the flush time',
    'linger: the oldest record reached the flush time',
    'linger: a full batch goes at once',
    'linger: the byte limit closes a batch early',
    'draining sends what waits',
    'window: records wait until the window and its grace are over',
    'window: after the grace the window goes',
    'window: a record of the next window closes this one',
    'window: a late record stamped before the window joins it',
    'only unusable lines go at once (to the dead letters)',
])
def test_a_batch_is_cut_when_it_is_due(lines: list[LogLine], policy: BatchPolicy, now: float, draining: bool,
                                       expected: Cut) -> None:
    assert cut(lines, policy, now, draining=draining) == expected


def test_a_window_never_spans_midnight() -> None:
    late = dt.datetime(2026, 3, 14, 23, 59, 30, tzinfo=dt.timezone.utc).timestamp()
    start, end = window_bounds(late, 3600)
    assert dt.datetime.fromtimestamp(start, dt.timezone.utc).hour == 23
    assert dt.datetime.fromtimestamp(end, dt.timezone.utc) == dt.datetime(2026, 3, 15, tzinfo=dt.timezone.utc)
    after_midnight = line(1, end + 1)
    assert cut([line(0, late), after_midnight], BatchPolicy(100, 10_000, 3600, aligned=True), late) == Cut(1)


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    ceilings = [min(10.0, 0.5 * 2 ** i) for i in range(10)]  # 0.5, 1, 2, 4, 8, then the cap
    for attempt, ceiling in enumerate(ceilings):
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8, 'jitter spreads over the whole range'
    assert backoff_delay(10_000, 0.5, 10.0, rng) <= 10.0
    with pytest.raises(ValueError):
        backoff_delay(-1, 0.5, 10.0, rng)


# --- Elasticsearch -------------------------------------------------------------------------


def test_a_record_goes_to_the_index_of_its_utc_day_with_its_hash_as_id() -> None:
    just_before_midnight = dt.datetime(2026, 3, 14, 23, 59, 59, 999_000, tzinfo=dt.timezone.utc).timestamp()
    assert index_name('agentgov-audit', just_before_midnight) == 'agentgov-audit-2026.03.14'
    assert index_name('agentgov-audit', just_before_midnight + 0.001) == 'agentgov-audit-2026.03.15'
    body = bulk_body([line(0), line(1)], 'agentgov-audit', 'pod-a').decode()
    rows = [json.loads(row) for row in body.splitlines()]
    assert body.endswith('\n') and len(rows) == 4
    assert rows[0] == {'create': {'_index': 'agentgov-audit-2026.03.14', '_id': document_id('pod-a', line(0).hash or '')}}
    assert rows[1]['log_source'] == 'pod-a' and record_of(rows[1]) == line(0).record


def bulk_answer(*statuses: int) -> dict[str, object]:
    items = []
    for status in statuses:
        item: dict[str, object] = {'_index': 'i', '_id': 'x', 'status': status}
        if status >= 300:
            item['error'] = {'type': {409: 'version_conflict_engine_exception', 400: 'document_parsing_exception',
                                      429: 'es_rejected_execution_exception'}.get(status, 'exception'),
                             'reason': 'because'}
        items.append({'create': item})
    return {'took': 1, 'errors': any(s >= 300 for s in statuses), 'items': items}


@pytest.mark.parametrize('statuses, rejected, retried, reason', [
    ((201, 201), [], [], None),
    ((201, 409), [], [], None),
    ((201, 400, 201), [1], [], None),
    ((429, 201, 429), [], [0, 2], 'throttled'),
    ((503, 201), [], [0], 'server_error'),
    ((413, 403), [0], [1], 'auth'),
], ids=['created', 'a conflict is a record already delivered', 'a mapping error is refused for good',
        'throttled items are retried', 'a 5xx item is retried', 'too large is refused, forbidden retried'])
def test_each_bulk_item_is_delivered_refused_or_retried(statuses: tuple[int, ...], rejected: list[int],
                                                        retried: list[int], reason: str | None) -> None:
    batch = [line(i) for i in range(len(statuses))]
    delivery = classify_bulk(batch, bulk_answer(*statuses))
    assert [batch.index(r.line) for r in delivery.rejected] == rejected
    assert [batch.index(r) for r in delivery.retry] == retried
    assert delivery.retry_reason == reason
    for refusal in delivery.rejected:
        assert 'elasticsearch refused it' in refusal.reason


@pytest.mark.parametrize('answer', [
    None, {'errors': False}, {'items': []}, {'items': [{'create': {'status': 'ok'}}]}, {'items': [{'index': {}}]},
], ids=['no body', 'no items', 'fewer items than sent', 'a status that is not a number', 'another action'])
def test_an_answer_that_is_not_a_bulk_response_is_an_error(answer: object) -> None:
    with pytest.raises(ValueError):
        classify_bulk([line(0)], answer)


def test_the_index_template_maps_ids_as_keywords_and_times_as_dates() -> None:
    template = index_template('research-audit')
    assert template['index_patterns'] == ['research-audit-*']
    properties = template['template']['mappings']['properties']
    assert {properties[f]['type'] for f in ('event_type', 'user', 'agent', 'hash', 'log_source', 'request_id')} == {'keyword'}
    assert properties['timestamp']['type'] == properties['retain_until']['type'] == 'date'
    assert properties['seq']['type'] == 'long'
    assert properties['metadata'] == {'type': 'object', 'dynamic': False}
    assert MAPPINGS['dynamic'] is False


def test_a_search_filters_exactly_and_by_time_newest_first() -> None:
    since = dt.datetime(2026, 3, 13, 9, 0, tzinfo=dt.timezone.utc)
    body = search_body(SearchFilters(user='alice', event_type='permission.denied', since=since, limit=20))
    assert body['size'] == 20
    assert body['query'] == {'bool': {'filter': [
        {'term': {'user': 'alice'}}, {'term': {'event_type': 'permission.denied'}},
        {'range': {'timestamp': {'gte': '2026-03-13T09:00:00.000Z'}}}]}}
    assert body['sort'][0] == {'timestamp': {'order': 'desc'}}
    with pytest.raises(ValueError):
        search_body(SearchFilters(limit=10_001))


# --- S3 -------------------------------------------------------------------------------------


def test_an_object_key_names_stream_source_day_and_seq_range() -> None:
    first, last = line(7), line(41)
    key = object_key('agentgov-audit', 'research/research-assistant', 'pod-a', first, last)
    assert key == ('agentgov-audit/research/research-assistant/pod-a/2026/03/14/'
                   f'000000000007-000000000041-{first.hash.split(":")[1][:12]}.jsonl.gz')  # type: ignore[union-attr]
    assert object_key('', 'operator', 'op-0', first, last).startswith('operator/op-0/2026/03/14/')


def test_the_same_batch_always_gives_the_same_object_bytes() -> None:
    batch = [line(0), line(1)]
    body = object_body(batch)
    assert body == object_body(list(batch)), 'a retry overwrites with identical content'
    assert gzip.decompress(body) == b''.join(item.raw + b'\n' for item in batch)
    assert len(content_md5(body)) == 24


def test_objects_are_locked_until_the_end_of_their_latest_retention_day() -> None:
    batch = [line(0, retain='2027-01-05'), line(1, retain='2027-02-01'), line(2, retain='not a date')]
    assert retain_until(batch, T0) == dt.datetime(2027, 2, 2, tzinfo=dt.timezone.utc)
    assert retain_until([line(0, retain='2020-01-01')], T0) is None, 'S3 refuses a retention in the past'


@pytest.mark.parametrize('code, status, reason', [
    ('AccessDenied', 403, 'auth'), ('InvalidAccessKeyId', 403, 'auth'), ('SlowDown', 503, 'throttled'),
    ('NoSuchBucket', 404, 'config'), ('InternalError', 500, 'server_error'), ('BadDigest', 400, 'rejected'),
], ids=lambda v: str(v))
def test_s3_errors_are_classified(code: str, status: int, reason: str) -> None:
    assert classify_client_error(code, status) == reason


# --- cursors, dead letters, lines -------------------------------------------------------------


def test_a_cursor_survives_its_file_format() -> None:
    cursor = Cursor('s3://audit/x', seq=41, hash='sha256:ab', inode=99, offset=12_345, origin_seq=0,
                    origin_hash='sha256:00', inflight=Inflight(42, 80), delivered=42)
    assert decode_cursor(encode_cursor(cursor)) == cursor


@pytest.mark.parametrize('payload, says', [
    (b'{', 'not JSON'), (b'[]', 'not a JSON object'), (b'{"version": 2}', 'unknown version'),
    (b'{"version": 1, "seq": 1, "offset": 0, "delivered": 0}', 'destination'),
    (b'{"version": 1, "destination": "d", "seq": "1", "offset": 0, "delivered": 0}', 'seq is not an integer'),
    (b'{"version": 1, "destination": "d", "seq": 1, "offset": -5, "delivered": 0}', 'negative'),
    (b'{"version": 1, "destination": "d", "seq": 1, "offset": 0, "delivered": 0, '
     b'"inflight": {"first_seq": 9, "last_seq": 3}}', 'after last_seq'),
], ids=['truncated', 'an array', 'a newer version', 'no destination', 'a string seq', 'a negative offset',
        'an inverted batch'])
def test_an_unusable_cursor_file_says_why(payload: bytes, says: str) -> None:
    with pytest.raises(CursorError) as caught:
        decode_cursor(payload)
    assert says in str(caught.value)


def test_a_dead_letter_keeps_the_record_and_the_reason() -> None:
    entry = json.loads(dead_letter(line(3), 'elasticsearch refused it (400 document_parsing_exception)', 'elasticsearch', T0))
    assert entry['record'] == line(3).record and entry['seq'] == 3 and entry['sink'] == 'elasticsearch'
    garbage = json.loads(dead_letter(LogLine(b'\xff{not json', 1, 10, problem='not a JSON record'), 'x', 's3', T0))
    assert garbage['line'] == '\ufffd{not json' and garbage['seq'] is None


@pytest.mark.parametrize('raw, problem', [
    (b'{"seq": 1, "hash": "sha256:1", "timestamp": "2026-03-14T09:00:00.000Z"}', None),
    (b'not json', 'not a JSON record'),
    (b'[1, 2]', 'not a JSON object'),
    (b'{"seq": true, "hash": "h", "timestamp": "2026-03-14T09:00:00Z"}', 'seq or hash is missing'),
    (b'{"seq": 1, "hash": "h", "timestamp": "yesterday"}', 'timestamp is missing or not ISO 8601'),
], ids=['a record', 'not JSON', 'an array', 'a boolean seq', 'a timestamp that is not ISO 8601'])
def test_a_line_is_a_record_or_says_why_not(raw: bytes, problem: str | None) -> None:
    parsed = parse_line(raw, 1, len(raw) + 1)
    assert parsed.problem == problem
    if problem is None:
        assert parsed.timestamp == T0


# --- where to resume ---------------------------------------------------------------------------


def marks(*seqs: int, tag: str = '') -> list[Landmark]:
    return [Landmark(1, i * 10, i * 10 + 10, seq, f'h{tag}{seq}') for i, seq in enumerate(seqs)]


def cursor_at(seq: int, tag: str = '', origin: int = 0) -> Cursor:
    return Cursor('d', seq=seq, hash=f'h{tag}{seq}', origin_seq=origin, origin_hash=f'h{tag}{origin}')


@pytest.mark.parametrize('log, cursor, kind, offset, says', [
    (marks(0, 1, 2, 3), cursor_at(1), 'after', 20, None),
    (marks(0, 1, 2, 3), Cursor('d'), 'beginning', 0, None),
    (marks(4, 5, 6), cursor_at(1), 'gap', 0, 'seq 2-3'),
    (marks(2, 3), cursor_at(1), 'gap', 0, None),
    (marks(0, 1, 2, tag='new'), cursor_at(1), 'beginning', 0, 'a new log'),
    (marks(0, 1), cursor_at(5), 'end', 20, 'removed from its end'),
    (marks(0, 1, tag='new'), cursor_at(5), 'beginning', 0, 'a new log'),
    ([], cursor_at(5), 'beginning', 0, None),
], ids=['after the record delivered last', 'a cursor that delivered nothing starts at the beginning',
        'pruned records are a gap', 'records pruned up to the cursor are no gap',
        'the same seq with another hash is a new log', 'a log cut short resumes at its end',
        'a shorter log without the first delivered record is a new log', 'an empty log starts at the beginning'])
def test_a_restart_resumes_where_the_log_says(log: list[Landmark], cursor: Cursor, kind: str, offset: int,
                                              says: str | None) -> None:
    resume = resume_point(log, cursor)
    assert (resume.kind, resume.offset) == (kind, offset)
    if says is None:
        assert resume.message is None
    else:
        assert resume.message is not None and says in resume.message
    assert isinstance(resume, Resume)
