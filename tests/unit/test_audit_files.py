"""Where an audit log lives (agentgov.audit.files), how it is kept (agentgov.audit.settings) and what
retention may prune (agentgov.audit.retention): rotated names sort by time, only the log's own files
are listed, lines are read in bounded memory, settings name the variable at fault, and pruning takes
only a prefix of wholly expired files."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from agentgov.audit.chain import Anchor
from agentgov.audit.digest import DigestLink
from agentgov.audit.errors import AuditConfigError
from agentgov.audit.files import (
    CHUNK_BYTES, MAX_LINE_BYTES, Line, log_files, read_lines, reverse_lines, rotated_name, rotated_seq,
)
from agentgov.audit.retention import FileSummary, anchor_after, expired, plan_prune, pruned_event
from agentgov.audit.settings import LogOptions, log_options_from_env
from agentgov.controller.config import ConfigError as OperatorConfigError
from agentgov.controller.config import OperatorConfig
from agentgov.sidecar.errors import ConfigError as SidecarConfigError
from agentgov.sidecar.settings import settings_from_env

LOG = Path('/var/log/agentgov/audit.jsonl')


# --- names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('seq, name', [(0, 'audit.jsonl.000000000000'), (42, 'audit.jsonl.000000000042'),
                                       (123_456_789_012, 'audit.jsonl.123456789012')],
                         ids=['the first file', 'a small seq', 'twelve digits'])
def test_a_rotated_file_is_named_by_its_first_seq_zero_padded_to_twelve_digits(seq: int, name: str) -> None:
    assert rotated_name(LOG, seq).name == name
    assert rotated_seq(LOG, rotated_name(LOG, seq)) == seq


def test_rotated_names_sort_in_seq_order() -> None:
    seqs = [0, 9, 10, 99, 100, 1_000, 25_000, 999_999_999]
    assert sorted(rotated_name(LOG, s).name for s in seqs) == [rotated_name(LOG, s).name for s in sorted(seqs)]


def test_a_negative_first_seq_is_refused() -> None:
    with pytest.raises(ValueError, match='cannot be negative'):
        rotated_name(LOG, -1)


def test_log_files_lists_rotated_files_oldest_first_then_the_active_file_and_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / 'audit.jsonl'
    for name in ('audit.jsonl.000000000200', 'audit.jsonl', 'audit.jsonl.000000000000', 'audit.jsonl.000000000017',
                 'audit.jsonl.head', 'audit.jsonl.anchor', 'audit.jsonl.head.tmp', 'audit.jsonl.1',
                 'audit.jsonl.0000000000001', 'other.jsonl.000000000005', 'audit.jsonl.00000000000x'):
        (tmp_path / name).write_text('')
    (tmp_path / 'audit.jsonl.000000000300').mkdir()  # a directory is not a log file
    assert [p.name for p in log_files(log)] == [
        'audit.jsonl.000000000000', 'audit.jsonl.000000000017', 'audit.jsonl.000000000200', 'audit.jsonl']


def test_log_files_of_a_log_that_does_not_exist_is_empty(tmp_path: Path) -> None:
    assert log_files(tmp_path / 'nope' / 'audit.jsonl') == []
    (tmp_path / 'audit.jsonl.000000000000').write_text('')
    assert [p.name for p in log_files(tmp_path / 'audit.jsonl')] == ['audit.jsonl.000000000000']


# --- lines ----------------------------------------------------------------------------------------

def test_read_lines_numbers_lines_and_flags_a_last_line_without_a_newline() -> None:
    lines = list(read_lines(io.BytesIO(b'{"a":1}\n\n{"b":2}')))
    assert lines == [Line(1, b'{"a":1}', True), Line(2, b'', True), Line(3, b'{"b":2}', False)]


def test_an_oversized_line_is_reported_without_being_kept_and_reading_goes_on() -> None:
    data = b'first\n' + b'x' * (MAX_LINE_BYTES * 3) + b'\nlast\n'
    lines = list(read_lines(io.BytesIO(data)))
    assert [(line.number, line.raw, line.oversized) for line in lines] == [
        (1, b'first', False), (2, b'', True), (3, b'last', False)]


def test_reverse_lines_yields_the_last_line_first_across_chunk_boundaries(tmp_path: Path) -> None:
    long = b'y' * (CHUNK_BYTES + 123)
    path = tmp_path / 'log'
    path.write_bytes(b'one\n' + long + b'\nthree\nfour')
    assert list(reverse_lines(path)) == [b'four', b'three', long, b'one']
    path.write_bytes(b'one\ntwo\n')
    assert list(reverse_lines(path)) == [b'two', b'one']


def test_reverse_lines_skips_an_oversized_line(tmp_path: Path) -> None:
    path = tmp_path / 'log'
    path.write_bytes(b'one\n' + b'z' * (MAX_LINE_BYTES + CHUNK_BYTES * 2 + 7) + b'\nthree\n')
    assert list(reverse_lines(path)) == [b'three', b'one']


# --- settings -------------------------------------------------------------------------------------

def test_the_defaults_rotate_at_100_mib_or_a_day_and_sign_nothing_without_a_key() -> None:
    options = log_options_from_env({})
    assert (options.max_bytes, options.max_age_seconds, options.digest_key_file) == (100 * 2**20, 86400.0, None)


@pytest.mark.parametrize('variable, value, field, parsed', [
    ('AGENTGOV_AUDIT_MAX_BYTES', '100Mi', 'max_bytes', 100 * 2**20),
    ('AGENTGOV_AUDIT_MAX_BYTES', '1G', 'max_bytes', 10**9),
    ('AGENTGOV_AUDIT_MAX_BYTES', '65536', 'max_bytes', 65536),
    ('AGENTGOV_AUDIT_MAX_AGE_SECONDS', '3600', 'max_age_seconds', 3600.0),
    ('AGENTGOV_AUDIT_DIGEST_KEY_FILE', '/etc/agentgov/audit-key/tls.key', 'digest_key_file',
     Path('/etc/agentgov/audit-key/tls.key')),
    ('AGENTGOV_AUDIT_DIGEST_RECORDS', '250', 'digest_every_records', 250),
    ('AGENTGOV_AUDIT_DIGEST_SECONDS', '60', 'digest_every_seconds', 60.0),
    ('AGENTGOV_AUDIT_PRUNE_INTERVAL_SECONDS', '600', 'prune_interval_seconds', 600.0),
], ids=['a size in Mi', 'a size in G', 'a size in bytes', 'an age', 'a key file', 'records per digest',
        'seconds per digest', 'a prune interval'])
def test_each_variable_sets_its_option(variable: str, value: str, field: str, parsed: object) -> None:
    assert getattr(log_options_from_env({variable: value}), field) == parsed


@pytest.mark.parametrize('variable, value, problem', [
    ('AGENTGOV_AUDIT_MAX_BYTES', 'lots', 'not a size'),
    ('AGENTGOV_AUDIT_MAX_BYTES', '100Xi', 'not a size'),
    ('AGENTGOV_AUDIT_MAX_BYTES', '-5', 'not a size'),
    ('AGENTGOV_AUDIT_MAX_BYTES', '1024', 'below the smallest file size'),
    ('AGENTGOV_AUDIT_MAX_AGE_SECONDS', 'nan', 'not a positive number of seconds'),
    ('AGENTGOV_AUDIT_MAX_AGE_SECONDS', '0', 'not a positive number of seconds'),
    ('AGENTGOV_AUDIT_DIGEST_SECONDS', 'inf', 'not a positive number of seconds'),
    ('AGENTGOV_AUDIT_DIGEST_RECORDS', '0', 'not a whole number from 1 to 1000000'),
    ('AGENTGOV_AUDIT_DIGEST_RECORDS', '1e3', 'not a whole number from 1 to 1000000'),
    ('AGENTGOV_AUDIT_DIGEST_RECORDS', '9' * 400, 'not a whole number from 1 to 1000000'),
], ids=['a word for a size', 'an unknown unit', 'a negative size', 'a size too small', 'nan seconds',
        'zero seconds', 'infinite seconds', 'zero records', 'a float for records', 'a huge number'])
def test_a_bad_value_names_its_variable_and_echoes_at_most_a_short_excerpt(variable: str, value: str,
                                                                           problem: str) -> None:
    with pytest.raises(AuditConfigError) as raised:
        log_options_from_env({variable: value})
    assert raised.value.variable == variable and problem in str(raised.value)
    assert str(raised.value).startswith(f'{variable}: ') and len(str(raised.value)) < 200


def test_the_sidecar_and_the_operator_read_the_same_variables_and_name_the_bad_one() -> None:
    environ = {'AGENTGOV_AUDIT_MAX_BYTES': '10Mi', 'AGENTGOV_AUDIT_DIGEST_RECORDS': '50'}
    assert settings_from_env(environ).audit_log_options == OperatorConfig.from_env(environ).audit_log_options \
        == LogOptions(max_bytes=10 * 2**20, digest_every_records=50)
    with pytest.raises(SidecarConfigError, match='^AGENTGOV_AUDIT_DIGEST_SECONDS: '):
        settings_from_env({'AGENTGOV_AUDIT_DIGEST_SECONDS': 'soon'})
    with pytest.raises(OperatorConfigError) as raised:
        OperatorConfig.from_env({'AGENTGOV_AUDIT_DIGEST_SECONDS': 'soon'})
    assert raised.value.variable == 'AGENTGOV_AUDIT_DIGEST_SECONDS'
    assert OperatorConfig.unknown_variables({**environ, 'AGENTGOV_AUDIT_LOG': '/x', 'AGENTGOV_AUDIT_STDOUT': '1',
                                             'AGENTGOV_AUDIT_ES_URL': 'https://es:9200', 'AGENTGOV_AUDIT_S3_BUCKET': 'b',
                                             'AGENTGOV_AUDIT_RETENTION_DAYS': '30', 'AGENTGOV_AUDIT_BOGUS': '1'}) \
        == ['AGENTGOV_AUDIT_BOGUS']


@pytest.mark.parametrize('environ, problem', [
    ({'AGENTGOV_AUDIT_STDOUT': 'maybe'}, 'AGENTGOV_AUDIT_STDOUT: .*true or false'),
    ({'AGENTGOV_AUDIT_ES_INDEX_PREFIX': 'x'}, 'AGENTGOV_AUDIT_ES_INDEX_PREFIX: is set but AGENTGOV_AUDIT_ES_URL is not'),
    ({'AGENTGOV_AUDIT_RETENTION_DAYS': '0'}, 'AGENTGOV_AUDIT_RETENTION_DAYS: expected a number of days'),
    ({'AGENTGOV_AUDIT_LOG': '/var/log/agentgov/'}, 'AGENTGOV_AUDIT_LOG: expected a file path'),
], ids=['stdout not a boolean', 'an elasticsearch setting without its url', 'no retention', 'a directory for the log'])
def test_the_operators_own_audit_variables_are_checked(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(OperatorConfigError, match=problem):
        OperatorConfig.from_env(environ)


def test_the_operators_audit_log_defaults_to_the_images_log_directory() -> None:
    assert OperatorConfig.from_env({}).audit_log == Path('/var/log/agentgov/operator-audit.jsonl')
    config = OperatorConfig.from_env({'AGENTGOV_AUDIT_LOG': '/var/log/agentgov/operator-audit.jsonl',
                                      'AGENTGOV_AUDIT_STDOUT': 'true', 'AGENTGOV_AUDIT_RETENTION_DAYS': '90'})
    assert (config.audit_log, config.audit_retention_days) == (Path('/var/log/agentgov/operator-audit.jsonl'), 90)
    assert config.audit_sinks is not None and config.audit_sinks.stdout is not None
    assert config.audit_sinks.stream == 'operator' and OperatorConfig.from_env({}).audit_sinks is None


# --- retention decisions --------------------------------------------------------------------------

TODAY = dt.date(2026, 3, 1)


def summary(first: int, last: int, until: dt.date | None, *, unreadable: int = 0,
            digest: DigestLink | None = None) -> FileSummary:
    return FileSummary(Path(f'audit.jsonl.{first:012d}'), last - first + 1, first, last, f'sha256:{last:064x}',
                       until, digest, unreadable)


EXPIRED, TODAYS, FUTURE = dt.date(2026, 2, 27), TODAY, dt.date(2026, 3, 2)
PLANS: list[tuple[str, list[FileSummary], int | None, list[int]]] = [
    ('every rotated file expired', [summary(0, 9, EXPIRED), summary(10, 19, EXPIRED)], None, [0, 10]),
    ('stops at the first file with a record not yet expired',
     [summary(0, 9, EXPIRED), summary(10, 19, FUTURE), summary(20, 29, EXPIRED)], None, [0]),
    ('a record retained until today is kept today', [summary(0, 9, TODAYS)], None, []),
    ('a file with an unreadable line is kept as evidence', [summary(0, 9, EXPIRED, unreadable=1)], None, []),
    ('a file with a record without a retention date is kept', [summary(0, 9, None)], None, []),
    ('records a sink has not delivered are kept', [summary(0, 9, EXPIRED), summary(10, 19, EXPIRED)], 15, [0]),
    ('a sink that needs the oldest file holds everything', [summary(0, 9, EXPIRED)], 0, []),
    ('nothing rotated, nothing pruned', [], None, []),
]


@pytest.mark.parametrize('name, rotated, hold, pruned', PLANS, ids=[p[0] for p in PLANS])
def test_pruning_takes_only_a_prefix_of_wholly_expired_delivered_files(name: str, rotated: list[FileSummary],
                                                                       hold: int | None, pruned: list[int]) -> None:
    assert [s.first_seq for s in plan_prune(rotated, TODAY, hold)] == pruned


def test_the_anchor_is_the_last_pruned_record_and_the_last_pruned_digest() -> None:
    files = [summary(0, 9, EXPIRED, digest=DigestLink(4, 'sig-a')), summary(10, 19, EXPIRED)]
    assert anchor_after(files, None) == Anchor(19, f'sha256:{19:064x}', DigestLink(4, 'sig-a'))
    earlier = Anchor(-1, 'x', DigestLink(-5, 'older'))
    assert anchor_after([summary(20, 29, EXPIRED)], earlier).last_digest == DigestLink(-5, 'older')
    event = pruned_event(files, anchor_after(files, None), 1.0)
    assert event.event_type == 'audit.pruned' and event.metadata['records'] == 20
    assert event.metadata['anchor'] == {'seq': 19, 'hash': f'sha256:{19:064x}',
                                        'last_digest': {'seq': 4, 'signature': 'sig-a'}}
    assert not expired(summary(0, 9, EXPIRED, unreadable=2), TODAY)
