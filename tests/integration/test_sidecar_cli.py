"""``agentgov sidecar`` as a real process: it serves the bundle it is given, writes its audit log where
AGENTGOV_AUDIT_LOG says, logs nothing secret, and stops cleanly on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from harness.waiting import wait_for
from sidecar_support import HMAC_SECRET, KEY_FILE, bearer, claims, free_port, make_bundle, sign, write_bundle, write_secret

AGENTGOV = Path(sys.executable).parent / 'agentgov'


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_sidecar_command_serves_audits_and_stops_on_sigterm(tmp_path: Path) -> None:
    bundle_path = tmp_path / 'bundle.json'
    write_bundle(bundle_path, make_bundle(agent_port=free_port()))
    write_secret(tmp_path / 'secrets', KEY_FILE, HMAC_SECRET)
    port = free_port()
    env = {**os.environ, 'AGENTGOV_AUDIT_LOG': str(tmp_path / 'audit.jsonl'), 'AGENTGOV_AUDIT_FSYNC': 'interval',
           'AGENTGOV_EGRESS_PORT': '0'}
    process = subprocess.Popen(
        [str(AGENTGOV), 'sidecar', '--bundle', str(bundle_path), '--secrets-dir', str(tmp_path / 'secrets'),
         '--host', '127.0.0.1', '--port', str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f'http://127.0.0.1:{port}'
        status, body = wait_for(lambda: get(base + '/ready'), lambda r: r[0] == 200, what='the sidecar to be ready',
                                ignore=(urllib.error.URLError, ConnectionError))
        assert body['bundle']['state'] == 'current'  # type: ignore[index]
        status, body = get(base + '/v1/run', bearer(sign(claims())))
        assert (status, body['error']['code']) == (502, 'agent_unavailable')  # type: ignore[index]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert 'agentgov sidecar listening on 127.0.0.1' in stderr and 'stopping' in stderr
    # Structured logs by default: every line is one JSON object.
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert all({'time', 'level', 'logger', 'message'} <= set(line) for line in lines)
    assert HMAC_SECRET.decode() not in stderr
    records = [json.loads(line) for line in (tmp_path / 'audit.jsonl').read_text().splitlines()]
    assert {'policy_reload', 'secret_access', 'authentication', 'agent_execution'} <= {r['event_type'] for r in records}


def test_a_bad_setting_stops_the_sidecar_command_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run([str(AGENTGOV), 'sidecar', '--bundle', str(tmp_path / 'b.json')],
                            env={**os.environ, 'AGENTGOV_AUDIT_FSYNC': 'sometimes'}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: AGENTGOV_AUDIT_FSYNC: 'sometimes' is not one of always, interval, never"


def test_an_unknown_log_format_stops_the_sidecar_command_naming_the_variable(tmp_path: Path) -> None:
    result = subprocess.run([str(AGENTGOV), 'sidecar', '--bundle', str(tmp_path / 'b.json')],
                            env={**os.environ, 'AGENTGOV_LOG_FORMAT': 'xml'}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: AGENTGOV_LOG_FORMAT: 'xml' is not one of json, text"
