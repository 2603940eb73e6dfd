"""``agentgov usage`` as a real process against a real redis-server, reading what the guard recorded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgov.sidecar.spend import BudgetGuard, RedisSpendStore, redis_client
from budget_support import TEST_MODEL, budget, bundle_with, chat, identity
from harness.redis import RedisServer, free_port

AGENTGOV = Path(sys.executable).parent / 'agentgov'
DAY = 86_400


def agentgov(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != 'AGENTGOV_REDIS_URL'}
    return subprocess.run([str(AGENTGOV), 'usage', *args], env={**environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


async def record_calls(url: str) -> None:
    """What the egress does per call: reserve, settle, record usage; and a cache hit; and an old call.
    Usage records are written in the background: closing the guard writes what is queued."""
    client = redis_client(url, 2.0)
    now = time.time()
    clock = lambda: now  # noqa: E731
    guard = BudgetGuard(RedisSpendStore(client, timeout=2.0), clock=clock)
    bundle = bundle_with(budget())
    try:
        for _ in range(3):
            hold = await guard.reserve(bundle, identity(), TEST_MODEL, chat(100))
            settlement = await guard.settle(hold, 15, 100)
            guard.record_usage(bundle, 'alice', TEST_MODEL, 15, 100, cost_usd=settlement.cost_usd)
        guard.record_usage(bundle, 'alice', TEST_MODEL, 15, 100, cached=True)
        guard.record_usage(bundle, 'alice', 'gpt-4o', 1000, 1000)  # priced with shipped prices
        guard.record_usage(bundle, 'bob', 'gpt-4o', 1000, 1000)
        now -= 40 * DAY
        guard.record_usage(bundle, 'alice', 'gpt-4o', 1000, 1000)
        await guard.aclose()
        assert guard.counters.usage_written == 7
    finally:
        await client.aclose()


async def test_the_report_totals_what_the_sidecar_recorded(redis_url: str) -> None:
    await record_calls(redis_url)
    result = agentgov('--user', 'alice', '--days', '30', '--redis-url', redis_url, '-o', 'json')
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # 3 x $0.215 settled + a cache hit ($0) + gpt-4o 1K/1K at shipped $0.0025/$0.01; bob's and the old call excluded
    assert report['total'] == {'costUsd': 0.6575, 'inputTokens': 1060, 'outputTokens': 1400, 'calls': 5,
                               'averageCostPerCallUsd': 0.1315, 'cacheHits': 1, 'cacheHitRate': 0.2}
    assert report['byModel'][TEST_MODEL]['calls'] == 4 and report['byModel']['gpt-4o']['costUsd'] == 0.0125
    assert list(report['byAgent']) == ['research/research-assistant']
    assert report['days'] == 30
    longer = json.loads(agentgov('--user', 'alice', '--days', '60', '--redis-url', redis_url, '-o', 'json').stdout)
    assert longer['total']['calls'] == 6


async def test_the_table_is_the_default_and_the_url_may_come_from_the_environment(redis_url: str) -> None:
    await record_calls(redis_url)
    result = agentgov('--user', 'alice', env={'AGENTGOV_REDIS_URL': redis_url})
    assert result.returncode == 0, result.stderr
    assert 'total cost          $0.6575' in result.stdout and 'average per call    $0.131500' in result.stdout
    assert 'MODEL' in result.stdout and 'research/research-assistant' in result.stdout


def test_an_unknown_user_gets_an_empty_report(redis_url: str) -> None:
    result = agentgov('--user', 'nobody', '--redis-url', redis_url)
    assert result.returncode == 0 and 'No recorded calls in this period.' in result.stdout


@pytest.mark.parametrize('args,message', [
    (['--user', 'alice', '--days', '0'], 'error: --days must be between 1 and 400'),
    (['--user', 'alice', '--days', '401'], 'error: --days must be between 1 and 400'),
    (['--user', 'alice', '--days', '-3'], 'error: --days must be between 1 and 400'),
    (['--user', 'alice', '--days', 'ten'], "argument --days: invalid int value: 'ten'"),
    (['--user', ' '], 'error: --user must name a user id'),
    (['--user', 'alice'], 'error: no Redis to read: pass --redis-url or set AGENTGOV_REDIS_URL'),
    (['--user', 'alice', '--redis-url', 'http://:pw-secret@host/'], 'error: the Redis URL is not a redis://'),
    (['--user', 'alice', '-o', 'yaml'], "argument -o/--output: invalid choice: 'yaml'"),
], ids=['zero days', 'more days than usage is kept', 'negative days', 'days that are not a number', 'a blank user',
        'no Redis URL at all', 'a URL of another scheme is not echoed', 'an unknown output format'])
def test_bad_arguments_get_one_clear_line_and_exit_2(args: list[str], message: str) -> None:
    result = agentgov(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert 'Traceback' not in result.stderr and 'pw-secret' not in result.stderr


def test_a_bad_timeout_setting_is_named() -> None:
    result = agentgov('--user', 'alice', '--redis-url', 'redis://127.0.0.1:1',
                      env={'AGENTGOV_REDIS_TIMEOUT_SECONDS': 'soon'})
    assert result.returncode == 2
    assert result.stderr == 'error: AGENTGOV_REDIS_TIMEOUT_SECONDS is not a positive number of seconds\n'


def test_an_unreachable_redis_is_named_by_host_and_port_never_by_password() -> None:
    port = free_port()
    result = agentgov('--user', 'alice', '--redis-url', f'redis://:hunter2-secret@127.0.0.1:{port}/0')
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: cannot read usage from Redis at 127.0.0.1:{port}: ConnectionError')
    assert 'hunter2' not in result.stderr + result.stdout and 'Traceback' not in result.stderr


def test_a_hung_redis_times_out_with_a_clear_line(private_redis: RedisServer) -> None:
    private_redis.pause()
    try:
        started = time.monotonic()
        result = agentgov('--user', 'alice', '--redis-url', private_redis.url,
                          env={'AGENTGOV_REDIS_TIMEOUT_SECONDS': '0.5'})
        assert time.monotonic() - started < 20
    finally:
        private_redis.resume()
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: cannot read usage from Redis at 127.0.0.1:{private_redis.port}: ')
    assert 'Timeout' in result.stderr or 'no answer' in result.stderr
    assert 'Traceback' not in result.stderr


async def test_a_wrong_password_is_reported_without_echoing_it(private_redis: RedisServer) -> None:
    client = redis_client(private_redis.url, 2.0)
    await client.config_set('requirepass', 'right-pass-456')
    await client.aclose()
    port = private_redis.port
    result = agentgov('--user', 'alice', '--redis-url', f'redis://:wrong-pass-123@127.0.0.1:{port}/0')
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f'error: cannot read usage from Redis at 127.0.0.1:{port}: AuthenticationError')
    assert 'wrong-pass-123' not in result.stderr and 'right-pass-456' not in result.stderr
    right = agentgov('--user', 'alice', '--redis-url', f'redis://:right-pass-456@127.0.0.1:{port}/0')
    assert right.returncode == 0 and 'right-pass-456' not in right.stdout + right.stderr
