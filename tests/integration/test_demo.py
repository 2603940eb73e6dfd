"""The README's main job: ``agentgov demo`` runs end to end on this machine and every step goes as expected.

The demo checks its own expectations (exit 1 otherwise); these tests run it for real — the
stand-in models, tool, example agent and sidecar on 127.0.0.1 — and also check the printed
story and the artefacts it leaves in ``--workdir``.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from agentgov.demo.scenario import DemoOptions, run_demo
from agentgov.audit.chain import verify_chain


async def test_demo_runs_every_step_as_expected(tmp_path: Path) -> None:
    out = io.StringIO()
    code = await run_demo(DemoOptions(workdir=tmp_path, recovery_seconds=1), out)
    text = out.getvalue()
    assert code == 0, text
    assert 'UNEXPECTED' not in text
    assert 'IN-MEMORY (demo only' in text, 'the in-memory store must be labelled'
    for expected in ('missing_token', 'permission_denied', 'lacks permission tool:write', 'cache=hit', 'budget_exceeded',
                     'region=onprem-frankfurt', 'Every step went as expected.'):
        assert expected in text, f'{expected!r} missing from the demo output:\n{text}'

    # What it leaves behind is real: a verifiable audit chain with the decisions it printed.
    report = verify_chain(tmp_path / 'audit.jsonl')
    assert report.ok and report.records > 50
    types = {json.loads(line)['event_type'] for line in (tmp_path / 'audit.jsonl').read_text().splitlines()}
    assert {'authentication', 'authorization', 'model_call', 'tool_access', 'budget_denial', 'budget_alert'} <= types
    # The upstream key never exists in the local mode, and the auth key is only in the secrets dir.
    bundle = (tmp_path / 'bundle.json').read_text()
    assert 'demo-auth' in bundle and (tmp_path / 'secrets' / 'demo-auth' / 'hmac').stat().st_mode & 0o077 == 0


async def test_demo_with_an_upstream_but_no_key_says_which_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv('AGENTGOV_DEMO_TEST_KEY', raising=False)
    out = io.StringIO()
    code = await run_demo(DemoOptions(upstream='http://127.0.0.1:9/v1', api_key_env='AGENTGOV_DEMO_TEST_KEY',
                                      workdir=tmp_path), out)
    assert code == 2
    assert '$AGENTGOV_DEMO_TEST_KEY' in out.getvalue()


def test_demo_help_teaches_the_options() -> None:
    result = subprocess.run([sys.executable, '-m', 'agentgov.cli', 'demo', '--help'], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ('--upstream', '--model', '--api-key-env', '--workdir'):
        assert option in result.stdout


def test_make_demo_runs_the_demo() -> None:
    makefile = (Path(__file__).resolve().parents[2] / 'Makefile').read_text()
    assert '$(BIN)/agentgov demo' in makefile
