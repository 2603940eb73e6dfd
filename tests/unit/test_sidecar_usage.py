"""Usage reports (sidecar/usage.py): aggregation of the per-user day hashes, the table and JSON forms."""
from __future__ import annotations

import datetime as dt

import pytest

from agentgov.api import spendstore
from agentgov.sidecar import usage
from agentgov.sidecar.usage import aggregate, day_range, redis_location, report_json, report_table

D1, D2 = dt.date(2025, 3, 13), dt.date(2025, 3, 14)


def fields(namespace: str, agent: str, model: str, cost: int, tokens_in: int, tokens_out: int, calls: int,
           hits: int) -> dict[str, str]:
    values = {'cost_micros': cost, 'input_tokens': tokens_in, 'output_tokens': tokens_out, 'calls': calls,
              'cache_hits': hits}
    return {spendstore.usage_field(namespace, agent, model, k): str(v) for k, v in values.items()}


def test_days_are_summed_into_totals_and_per_model_agent_and_day_breakdowns() -> None:
    hashes = {
        D1: {**fields('research', 'bot', 'gpt-4o', 2_000_000, 1000, 500, 4, 1),
             **fields('research', 'bot', 'gpt-4o-mini', 100_000, 2000, 100, 2, 0)},
        D2: fields('sales', 'bot', 'gpt-4o', 1_000_000, 10, 20, 2, 2),
    }
    report = aggregate('alice', hashes, D1, D2)
    assert (report.total.cost_usd, report.total.calls, report.total.cache_hits) == (3.1, 8, 3)
    assert (report.total.input_tokens, report.total.output_tokens) == (3010, 620)
    assert report.total.average_cost_usd == pytest.approx(3.1 / 8)
    assert report.by_model['gpt-4o'].calls == 6 and report.by_model['gpt-4o-mini'].cost_micros == 100_000
    assert set(report.by_agent) == {'research/bot', 'sales/bot'}
    assert report.by_day[D2].cost_micros == 1_000_000
    body = report_json(report)
    assert body['total'] == {'costUsd': 3.1, 'inputTokens': 3010, 'outputTokens': 620, 'calls': 8,
                             'averageCostPerCallUsd': 0.3875, 'cacheHits': 3, 'cacheHitRate': 0.375}
    assert (body['from'], body['to'], body['days']) == ('2025-03-13', '2025-03-14', 2)


def test_bytes_from_redis_are_read_like_text() -> None:
    raw = {k.encode(): v.encode() for k, v in fields('ns', 'a', 'm', 5, 1, 1, 1, 0).items()}
    assert aggregate('u', {D1: raw}, D1, D1).total.cost_micros == 5


@pytest.mark.parametrize('name,value', [
    ('garbage', '5'),
    ('ns/a|m|unknown_metric', '5'),
    ('no-slash|m|calls', '5'),
    ('ns/a|m|calls', 'not-a-number'),
    ('ns/a|m|calls', '-7'),
    ('ns/a|m|calls|extra', '5'),
], ids=['a field of another format', 'an unknown metric', 'a field without namespace', 'a value that is not a number',
        'a negative value', 'too many parts'])
def test_fields_this_version_does_not_understand_are_skipped(name: str, value: str) -> None:
    report = aggregate('u', {D1: {name: value, **fields('ns', 'a', 'm', 5, 0, 0, 1, 0)}}, D1, D1)
    assert (report.total.calls, report.total.cost_micros) == (1, 5)


def test_a_user_without_usage_gets_zeros_not_a_division_by_zero() -> None:
    report = aggregate('nobody', {}, D1, D2)
    assert report.total.average_cost_usd == 0.0 and report.total.cache_hit_rate == 0.0
    assert 'No recorded calls in this period.' in report_table(report)


def test_the_table_shows_totals_and_the_breakdowns_most_expensive_first() -> None:
    hashes = {D1: {**fields('research', 'bot', 'gpt-4o', 2_000_000, 1000, 500, 4, 1),
                   **fields('research', 'bot', 'gpt-4o-mini', 100_000, 2000, 100, 2, 0)}}
    table = report_table(aggregate('alice', hashes, D1, D1))
    assert 'Usage of alice from 2025-03-13 to 2025-03-13 (1 day, UTC)' in table
    assert 'total cost          $2.1000' in table and 'cache hits          1 (16.7% of calls)' in table
    lines = table.splitlines()
    model_header = next(i for i, line in enumerate(lines) if line.startswith('MODEL'))
    assert lines[model_header + 1].startswith('gpt-4o ') and lines[model_header + 2].startswith('gpt-4o-mini')
    assert any(line.startswith('AGENT') for line in lines) and any('research/bot' in line for line in lines)


def test_day_range_ends_today_oldest_first() -> None:
    assert day_range(D2, 3) == [dt.date(2025, 3, 12), D1, D2]


@pytest.mark.parametrize('url,expected', [
    ('redis://:secret@redis.example:6380/0', 'redis.example:6380'),
    ('redis://user:secret@10.0.0.1/2', '10.0.0.1:6379'),
    ('rediss://redis', 'redis:6379'),
    ('unix:///run/redis.sock', '/run/redis.sock'),
    ('redis://host:notaport/0', 'host:6379'),
], ids=['host and port without the password', 'the default port', 'tls', 'a unix socket', 'a garbled port'])
def test_redis_location_never_includes_credentials(url: str, expected: str) -> None:
    assert redis_location(url) == expected
    assert 'secret' not in redis_location(url)


def test_the_longest_report_is_what_usage_keys_keep() -> None:
    assert usage.MAX_DAYS == 400
