"""``benchmarks/sidecar_latency.py --quick`` end to end: it starts redis-server, the stand-in model
and three sidecars as real processes, measures every contender through the path it claims (the
sidecars' own counters say L1 or L2), writes the table, the JSON and the plot, and leaves no
process behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.redis import redis_server_binary

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'sidecar_latency.py'
CONTENDERS = ['direct', 'miss', 'hit', 'hit-l2', 'miss-memory']


def processes_in(path: Path) -> list[str]:
    """Processes whose working directory (every server the benchmark starts runs in its work
    directory) or command line names ``path``."""
    found = []
    for proc in Path('/proc').glob('[0-9]*'):
        try:
            cwd = os.readlink(proc / 'cwd')
            cmdline = (proc / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue  # ended while we looked, or not ours to inspect
        if str(path) in cwd or str(path) in cmdline:
            found.append(f'{proc.name}: {cmdline}')
    return found


def test_the_quick_benchmark_measures_every_contender_and_writes_its_results(tmp_path: Path) -> None:
    redis_server_binary()  # skips (or fails under AGENTGOV_REQUIRE_REDIS=1) without redis-server
    out = tmp_path / 'results'
    scratch = tmp_path / 'scratch'  # the benchmark's work directory lands here: its processes name it
    scratch.mkdir()
    env = {**os.environ, 'TMPDIR': str(scratch)}
    done = subprocess.run([sys.executable, str(SCRIPT), '--quick', '--out', str(out)], capture_output=True,
                          text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'all servers ready' in done.stdout and 'hit-l2' in done.stdout  # progress while it runs
    assert not processes_in(scratch), 'a server outlived the benchmark'

    results = json.loads((out / 'sidecar_latency.json').read_text())
    assert results['client'] == 'aiohttp' and results['machine']['cores'] >= 1
    runs = results['runs']
    assert sorted({(r['contender'], r['phase']) for r in runs}) == sorted(
        (c, p) for c in CONTENDERS for p in ('c1', 'load'))
    for r in runs:
        ms = r['latency_ms']
        assert 0 <= ms['min'] <= ms['p50'] <= ms['p90'] <= ms['p99'] <= ms['max'], r
        assert r['throughput_rps'] > 0 and r['error_count'] == 0, r
        assert r['requests'] == (20 if r['phase'] == 'c1' else 40)
    counters = {(r['contender'], r['phase']): r['sidecar_counters'] for r in runs}
    for phase, n in (('c1', 20), ('load', 40)):
        assert counters[('hit', phase)].get('agentgov_cache_hits_total{level=l1}') == n
        assert counters[('hit-l2', phase)].get('agentgov_cache_hits_total{level=l2}') == n
        assert counters[('miss', phase)].get('agentgov_cache_misses_total') == n
        assert counters[('miss-memory', phase)].get('agentgov_cache_misses_total') == n
    assert counters[('direct', 'c1')] == {}
    summary = {(r['contender'], r['phase']): r for r in results['summary']}
    assert summary[('direct', 'c1')]['added_p50']['median'] == 0
    assert summary[('miss', 'load')]['cpu_ms_per_request']['sidecar'] >= 0
    assert all(p['peak_rss_mib'] > 0 for p in results['processes'].values())

    table = (out / 'sidecar_latency.md').read_text()
    assert '| sidecar, cache miss |' in table and 'added p99 ms' in table and 'cores' in table
    assert (out / 'sidecar_latency.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # --replot rewrites the table from the JSON alone
    (out / 'sidecar_latency.md').unlink()
    again = subprocess.run([sys.executable, str(SCRIPT), '--replot', '--out', str(out)], capture_output=True,
                           text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    assert (out / 'sidecar_latency.md').read_text() == table
