"""``benchmarks/gateways.py`` and its load generator (``benchmarks/loadgen.py``).

The generator is checked against small aiohttp servers started here: the open loop must charge a
server that falls behind for the queue it causes (latency from the scheduled send time), and a
wrong or missing answer must count as an error of its kind. The benchmark itself runs end to end
with tiny durations on what a fresh machine has (the stand-in model, Redis, the sidecar), saying
why it skipped nginx and LiteLLM; when they are installed (``make bench-gateways`` sets LiteLLM
up), a second run measures them too.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from harness.redis import redis_server_binary
from integration.test_sidecar_benchmark import processes_in

BENCHMARKS = Path(__file__).resolve().parents[2] / 'benchmarks'
SCRIPT = BENCHMARKS / 'gateways.py'
LITELLM_VENV = BENCHMARKS / '.venvs' / 'litellm'
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks are scripts beside each other, not a package

import loadgen  # noqa: E402

COMPLETION = {'id': 'x', 'object': 'chat.completion', 'choices': [{'index': 0, 'message': {'content': 'hi'}}],
              'usage': {'prompt_tokens': 1, 'completion_tokens': 1, 'total_tokens': 2}}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """``handler`` on a free 127.0.0.1 port until the block ends; the URL to post to."""
    app = web.Application()
    app.router.add_post('/v1/chat/completions', handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f'http://127.0.0.1:{port}/v1/chat/completions'
    finally:
        await runner.cleanup()


@pytest.fixture
async def one_at_a_time() -> AsyncIterator[str]:
    """A server that answers one request at a time, each in 20 ms: 50 requests a second at most."""
    lock = asyncio.Lock()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        async with lock:
            await asyncio.sleep(0.02)  # the service time being modelled
        return web.json_response(COMPLETION)

    async with serve(handler) as url:
        yield url


async def test_the_open_loop_charges_a_slow_server_for_the_queue_it_causes(one_at_a_time: str) -> None:
    target = loadgen.Target(one_at_a_time, {'Content-Type': 'application/json'})
    bodies = [b'{}'] * 30
    async with aiohttp.ClientSession() as session:
        closed = loadgen.summarise(await loadgen.closed_loop(session, target, bodies, 1, 10.0))
        opened = await loadgen.open_loop(session, target, bodies, 100.0)  # twice what it can serve
    summary = loadgen.summarise(opened)
    assert closed.errors == {} and summary.errors == {}
    # One at a time, the server looks fast: about its 20 ms service time.
    assert 15 <= closed.latency_ms['p50'] < 100, closed.latency_ms
    # Offered 100/s for 0.3 s, it answers 50/s: the last requests wait ~0.3 s behind the queue,
    # which only latency from the scheduled send time shows.
    assert summary.latency_ms['max'] > 200, summary.latency_ms
    assert summary.latency_ms['p99'] > 5 * closed.latency_ms['p50']
    assert summary.achieved_rps < 0.8 * 100  # what gateways.py calls saturated
    # The generator itself kept to its schedule: the lateness is the server's.
    assert summary.lag_ms['p99'] < 50, summary.lag_ms
    assert [round(s.scheduled, 2) for s in opened.samples[:3]] == [0.0, 0.01, 0.02]


@pytest.fixture
async def faulty() -> AsyncIterator[str]:
    """Answers by the body's first byte: 5 -> 500, j -> 200 with a non-completion, h -> hangs,
    s -> a stream cut short, anything else a good completion."""

    async def handler(request: web.Request) -> web.StreamResponse:
        kind = (await request.read())[:1]
        if kind == b'5':
            return web.json_response({'error': {'message': 'boom'}}, status=500)
        if kind == b'j':
            return web.json_response({'not': 'a completion'})
        if kind == b'h':
            await asyncio.sleep(30)  # hangs past the client's timeout; cancelled at cleanup
        if kind == b's':
            response = web.StreamResponse(headers={'Content-Type': 'text/event-stream'})
            await response.prepare(request)
            await response.write(b'data: {"choices": []}\n\n')
            await response.write_eof()
            return response
        return web.json_response(COMPLETION)

    async with serve(handler) as url:
        yield url


async def test_each_wrong_or_missing_answer_counts_as_an_error_of_its_kind(faulty: str) -> None:
    target = loadgen.Target(faulty, {})
    bodies = [b'5', b'j', b'h', b'ok', b'ok']
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        run = await loadgen.open_loop(session, target, bodies, 50.0)
        streamed = await loadgen.open_loop(session, loadgen.Target(faulty, {}, stream=True), [b's'], 10.0)
        checked = await loadgen.closed_loop(session, loadgen.Target(faulty, {}, check=lambda h: 'bad_no_header'),
                                            [b'ok'], 1, 5.0)
    summary = loadgen.summarise(run)
    assert summary.errors == {'http_500': 1, 'bad_completion': 1, 'timeout': 1}
    assert summary.error_rate == pytest.approx(3 / 5)
    hung = run.samples[2]
    assert hung.error == 'timeout' and hung.total >= 0.45  # counted at the time it failed, not dropped
    assert len(run.ok) == 2 and run.achieved_rps > 0
    assert streamed.errors == {'bad_stream_end': 1}
    assert checked.errors == {'bad_no_header': 1}


@pytest.mark.parametrize('argv, says', [
    (['--rates', 'fast'], "--rates: 'fast' is not a comma-separated list of numbers"),
    (['--rates', '0,50'], '--rates: every value must be > 0'),
    (['--latency-ms', '-5'], '--latency-ms: every value must be >= 0'),
    (['--contenders', 'direct,envoy'], '--contenders: unknown envoy'),
    (['--concurrency', '0'], '--concurrency must be at least 1'),
], ids=['a rate that is not a number', 'a zero rate', 'a negative latency', 'an unknown contender',
        'no concurrency'])
def test_bad_options_are_refused_with_a_message_naming_them(argv: list[str], says: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), *argv, '--out', str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
    assert 'Traceback' not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def run_quick(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    out = tmp_path / 'results'
    scratch = tmp_path / 'scratch'  # the benchmark's work directory lands here: its processes name it
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(out), *argv], capture_output=True,
                          text=True, timeout=280, env={**os.environ, 'TMPDIR': str(scratch)})
    return done, out, scratch


def assert_measured(runs: list[dict[str, object]], contender: str) -> None:
    """Real rows: every load point run, requests answered, no error, latencies above zero."""
    mine = [r for r in runs if r['contender'] == contender]
    assert {(r['stream'], r['load'], r['offered_rps'] or r['concurrency']) for r in mine} == {
        (False, 'open', 50), (False, 'open', 200), (False, 'closed', 8), (True, 'open', 50), (True, 'closed', 8)}
    for r in mine:
        assert 'skipped' not in r, r
        assert r['requests'] > 0 and r['answered'] == r['requests'] and r['error_count'] == 0, r
        ms = r['latency_ms']
        assert 0 < ms['min'] <= ms['p50'] <= ms['p90'] <= ms['p99'] <= ms['max'], r
        assert r['achieved_rps'] > 0
        if r['stream']:
            assert 0 < r['ttfb_ms']['p50'] <= ms['p50'] + 1e-6


@pytest.mark.timeout(300)
def test_the_quick_benchmark_measures_direct_and_agentgov_and_says_what_it_skipped(tmp_path: Path) -> None:
    redis_server_binary()  # skips (or fails under AGENTGOV_REQUIRE_REDIS=1) without redis-server
    # As on a fresh machine: no nginx, no LiteLLM venv, and no setting it up.
    done, out, scratch = run_quick(tmp_path, '--nginx', str(tmp_path / 'no-nginx'), '--litellm-venv',
                                   str(tmp_path / 'no-litellm'), '--no-setup')
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'all servers ready' in done.stdout and 'agentgov-hit' in done.stdout
    assert not processes_in(scratch), 'a server outlived the benchmark'

    results = json.loads((out / 'gateways.json').read_text())
    assert set(results['contenders']) == {'direct', 'agentgov-miss', 'agentgov-hit'}
    assert 'apt-get install nginx-light' in results['skipped_contenders']['nginx']
    assert 'setup_litellm.sh' in results['skipped_contenders']['litellm']
    for contender in ('direct', 'agentgov-miss', 'agentgov-hit'):
        assert_measured(results['runs'], contender)
    summary = {(r['contender'], r['stream'], r['load'], r['offered_rps'] or r['concurrency']): r
               for r in results['summary']}
    assert summary[('direct', False, 'open', 50)]['added_p50']['median'] == 0
    # A cache hit, streamed or not, never waits for the upstream's stream: faster than the miss.
    for stream in (False, True):
        hit, miss = summary[('agentgov-hit', stream, 'closed', 8)], summary[('agentgov-miss', stream, 'closed', 8)]
        assert hit['cpu_ms_per_request']['gateway'] > 0 and miss['cpu_ms_per_request']['gateway'] > 0
    assert summary[('agentgov-hit', True, 'closed', 8)]['p50']['median'] < \
        summary[('agentgov-miss', True, 'closed', 8)]['p50']['median']
    assert all(p['peak_rss_mib'] > 0 for p in results['processes'].values())
    assert results['versions']['agentgov']

    table = (out / 'gateways.md').read_text()
    assert '**Not run**: nginx: not found' in table and '| 50 rps | agentgov-miss |' in table
    assert 'cores' in table and 'load generator' in table
    assert str(tmp_path) not in table  # no machine paths in the results
    assert (out / 'gateways.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # --replot rewrites the table from the JSON alone
    (out / 'gateways.md').unlink()
    again = subprocess.run([sys.executable, str(SCRIPT), '--replot', '--out', str(out)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert (out / 'gateways.md').read_text() == table


@pytest.mark.timeout(300)
def test_nginx_and_litellm_are_measured_through_their_own_paths_when_installed(tmp_path: Path) -> None:
    redis_server_binary()
    if not (LITELLM_VENV / 'bin' / 'litellm').exists():
        pytest.skip('LiteLLM is not set up (make bench-gateways, or benchmarks/contenders/setup_litellm.sh)')
    done, out, scratch = run_quick(tmp_path, '--contenders', 'direct,nginx,litellm,litellm-hit', '--no-setup')
    assert done.returncode == 0, done.stdout + done.stderr  # 1 would mean a wrong answer (a hit that was not)
    assert not processes_in(scratch), 'a server outlived the benchmark'
    results = json.loads((out / 'gateways.json').read_text())
    if 'nginx' in results['skipped_contenders']:
        pytest.skip(results['skipped_contenders']['nginx'])
    assert results['versions']['litellm'] and results['versions']['nginx']
    runs = results['runs']
    for contender in ('nginx', 'litellm', 'litellm-hit'):
        mine = [r for r in runs if r['contender'] == contender and 'skipped' not in r]
        assert mine and all(r['requests'] > 0 and r['latency_ms']['p50'] > 0 for r in mine), contender
        # LiteLLM may be too slow for the quick rates on a busy machine (timeouts), never wrong.
        assert not any(kind.startswith('bad_') for r in mine for kind in r['errors']), mine
    assert results['processes']['LiteLLM proxy']['peak_rss_mib'] > 0
