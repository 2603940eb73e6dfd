"""``benchmarks/soak.py`` end to end, short: redis-server, the stand-in model and the sidecar as
real processes under an open-loop load while every fault is injected in turn (2.5 s windows). The
report's invariants must hold — every request answered and counted, no overspend read back from
Redis, the audit chain verifying and its counts matching the sidecar's, the bundle swaps applied
or refused, recovery after each fault — each fault must have been felt, and nothing may be left
running."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.redis import redis_server_binary
from test_sidecar_benchmark import processes_in

SCRIPT = Path(__file__).resolve().parents[2] / 'benchmarks' / 'soak.py'
PHASE_SECONDS, RATE = 2.5, 30
FAULTS = ['redis-kill', 'redis-pause', 'upstream-errors', 'upstream-hang', 'bundle-swap', 'audit-disk-full']


@pytest.mark.timeout(400)
def test_a_short_soak_keeps_every_invariant_feels_every_fault_and_leaves_nothing_running(tmp_path: Path) -> None:
    redis_server_binary()  # skips (or fails under AGENTGOV_REQUIRE_REDIS=1) without redis-server
    out = tmp_path / 'results'
    scratch = tmp_path / 'scratch'  # the soak's work directory lands here: its processes name it
    scratch.mkdir()
    env = {**os.environ, 'TMPDIR': str(scratch)}
    done = subprocess.run([sys.executable, str(SCRIPT), '--phase-seconds', str(PHASE_SECONDS), '--rate', str(RATE),
                           '--out', str(out)], capture_output=True, text=True, timeout=360, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert not processes_in(scratch), 'a process outlived the soak'

    results = json.loads((out / 'soak.json').read_text())
    failed = [i for i in results['invariants'] if not i['ok']]
    assert not failed, failed
    windows = {w['window']: w for w in results['windows']}
    assert list(windows) == ['baseline'] + [name for f in FAULTS for name in (f, f'{f} recovery')]
    totals = results['totals']
    assert totals['sent'] == sum(w['sent'] for w in windows.values()) == int(RATE * PHASE_SECONDS * len(windows))
    assert totals['sent'] == totals['ok'] + totals['failed'] + totals['refused_by_policy']

    # Each fault was felt, and answered with the code the design promises.
    codes = {name: w['by_status_code'] for name, w in windows.items()}
    assert codes['baseline'] == {}
    assert '503 budget_store_unavailable' in codes['redis-kill']  # carol's budget is Closed
    assert '503 budget_store_unavailable' in codes['redis-pause']
    assert '502 upstream_unavailable' in codes['upstream-errors']
    assert {'504 upstream_timeout', '503 circuit_open'} & set(codes['upstream-hang'])
    assert windows['redis-kill']['ok'] > 0 and windows['upstream-hang']['cache_hits'] > 0  # degraded, not down
    by_user = totals['by_user']
    assert '503 budget_store_unavailable' in by_user['carol']  # Closed: refused while Redis was away
    assert not {'503 budget_store_unavailable', '429 budget_exceeded'} & (set(by_user['alice']) | set(by_user['bob']))
    disk_full = [s for s in results['samples'] if s['t'] >= windows['audit-disk-full']['start_s']
                 and s['t'] < windows['audit-disk-full']['end_s'] and 'audit_healthy' in s]
    assert any(s['audit_healthy'] is False for s in disk_full), 'the audit log never failed to grow'
    assert results['metrics_after'].get('agentgov_audit_write_errors_total', 0) > 0
    assert results['metrics_after'].get('agentgov_bundle_reloads_total{result=failure}', 0) >= 1
    assert results['memory']['peak_mib'] > 0 and results['per_second']

    table = (out / 'soak.md').read_text()
    assert '| redis-kill |' in table and '| audit-disk-full recovery |' in table and '**NO**' not in table
    assert (out / 'soak.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    (out / 'soak.md').unlink()
    again = subprocess.run([sys.executable, str(SCRIPT), '--replot', '--out', str(out)], capture_output=True,
                           text=True, timeout=60, env=env)
    assert again.returncode == 0, again.stderr
    assert (out / 'soak.md').read_text() == table
