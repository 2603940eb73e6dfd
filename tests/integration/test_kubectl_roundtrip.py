"""The real ``kubectl`` (v1.32) against the API emulator, with the repository's ``crds/`` and ``examples/``.

kubectl runs as a subprocess with the ``kubeconfig`` fixture and its own discovery cache
directory, so nothing is read from or written to the developer's ``~/.kube``.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

from conftest import REPO_ROOT

KUBECTL = shutil.which('kubectl')
CRDS = REPO_ROOT / 'crds'
EXAMPLES = REPO_ROOT / 'examples'

pytestmark = pytest.mark.skipif(KUBECTL is None, reason='kubectl is not on PATH')
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f'{EXAMPLES} does not exist (yet)')


@pytest.fixture()
def kubectl(kubeconfig: pathlib.Path, tmp_path: pathlib.Path) -> Any:
    """Run kubectl against the emulator; returns the CompletedProcess (never raises on failure)."""
    cache = tmp_path / 'kube-cache'

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run([KUBECTL, f'--kubeconfig={kubeconfig}', f'--cache-dir={cache}', *args],
                              capture_output=True, text=True, timeout=60, check=False)
    return run


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _resource_versions(kubectl: Any) -> dict[str, str]:
    listed = kubectl('get', 'agentdeployments,agentbudgets,toolpolicies,regionpolicies', '-A', '-o', 'json')
    assert listed.returncode == 0, listed.stderr
    return {f"{item['kind']}/{item['metadata']['name']}": item['metadata']['resourceVersion']
            for item in json.loads(listed.stdout)['items']}


def test_kubectl_applies_the_repository_crds(kubectl: Any) -> None:
    result = kubectl('apply', '-f', str(CRDS))
    assert result.returncode == 0, result.stderr
    for path in CRDS.glob('*.yaml'):
        assert f'customresourcedefinition.apiextensions.k8s.io/{path.stem}' in result.stdout
    listed = kubectl('get', 'crd', '-o', 'name')
    assert sorted(_lines(listed.stdout)) == sorted(
        f'customresourcedefinition.apiextensions.k8s.io/{path.stem}' for path in CRDS.glob('*.yaml'))


def test_kubectl_waits_for_crds_to_be_established(kubectl: Any) -> None:
    kubectl('apply', '-f', str(CRDS))
    result = kubectl('wait', '--for=condition=Established', '--timeout=10s', 'crd/agentdeployments.agentgov.io')
    assert result.returncode == 0, result.stderr


@needs_examples
def test_kubectl_applies_the_examples(kubectl: Any) -> None:
    assert kubectl('apply', '-f', str(CRDS)).returncode == 0
    result = kubectl('apply', '-f', str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert all(line.endswith(' created') for line in _lines(result.stdout)), result.stdout


@needs_examples
def test_kubectl_get_shows_the_crd_printer_columns(kubectl: Any) -> None:
    kubectl('apply', '-f', str(CRDS))
    kubectl('apply', '-f', str(EXAMPLES))
    result = kubectl('get', 'agentdeployments', '-A')
    assert result.returncode == 0, result.stderr
    header, *rows = _lines(result.stdout)
    assert header.split() == ['NAMESPACE', 'NAME', 'READY', 'DESIRED', 'AVAILABLE', 'BUDGET%', 'AGE']
    assert rows and rows[0].split()[1] == 'research-assistant'
    wide = kubectl('get', 'agd', '-A', '-o', 'wide')
    assert _lines(wide.stdout)[0].split() == ['NAMESPACE', 'NAME', 'READY', 'DESIRED', 'AVAILABLE', 'BUDGET%',
                                              'IMAGE', 'REASON', 'AGE']
    assert 'ghcr.io/example/research-agent:1.4.2' in wide.stdout


@needs_examples
def test_second_kubectl_apply_of_the_same_files_is_a_no_op(kubectl: Any) -> None:
    kubectl('apply', '-f', str(CRDS))
    assert kubectl('apply', '-f', str(EXAMPLES)).returncode == 0
    before = _resource_versions(kubectl)
    again = kubectl('apply', '-f', str(EXAMPLES))
    assert again.returncode == 0, again.stderr
    assert _resource_versions(kubectl) == before  # nothing was written
    changed = [line for line in _lines(again.stdout) if not line.endswith(' unchanged')]
    assert not changed, (
        'kubectl sent a patch for these objects although nothing changed. That happens when the server '
        'defaults fields inside list items the file leaves out (a merge patch replaces whole lists): '
        f'{changed}')


@needs_examples
def test_kubectl_delete_removes_the_object(kubectl: Any) -> None:
    kubectl('apply', '-f', str(CRDS))
    kubectl('apply', '-f', str(EXAMPLES))
    result = kubectl('delete', '-f', str(EXAMPLES / 'research-agent.yaml'))
    assert result.returncode == 0, result.stderr
    assert 'agentdeployment.agentgov.io "research-assistant" deleted' in result.stdout
    gone = kubectl('get', 'agentdeployment', 'research-assistant', '-n', 'research')
    assert gone.returncode == 1
    assert 'NotFound' in gone.stderr and '"research-assistant" not found' in gone.stderr


def test_kubectl_refuses_an_invalid_object_naming_the_field(kubectl: Any, tmp_path: pathlib.Path) -> None:
    kubectl('apply', '-f', str(CRDS))
    bad = tmp_path / 'bad.yaml'
    bad.write_text(json.dumps({
        'apiVersion': 'agentgov.io/v1alpha1', 'kind': 'AgentDeployment',
        'metadata': {'name': 'bad', 'namespace': 'default'},
        'spec': {'image': 'ghcr.io/example/agent:1', 'port': 70000},
    }))
    result = kubectl('apply', '-f', str(bad))
    assert result.returncode == 1
    assert 'AgentDeployment "bad" is invalid' in result.stderr
    assert 'spec.port: Invalid value: 70000' in result.stderr


def test_kubectl_refuses_an_unknown_field_with_strict_validation(kubectl: Any, tmp_path: pathlib.Path) -> None:
    kubectl('apply', '-f', str(CRDS))
    bad = tmp_path / 'unknown.yaml'
    bad.write_text(json.dumps({
        'apiVersion': 'agentgov.io/v1alpha1', 'kind': 'AgentDeployment',
        'metadata': {'name': 'typo', 'namespace': 'default'},
        'spec': {'image': 'ghcr.io/example/agent:1', 'imagge': 'typo'},
    }))
    result = kubectl('apply', '-f', str(bad))
    assert result.returncode == 1
    assert 'strict decoding error: unknown field "spec.imagge"' in result.stderr


INVALID_EXAMPLES = {
    'budget-daily-over-monthly.yaml': [
        'The AgentBudget "inverted-limits" is invalid',
        'spec.limits.dailyUsd: Invalid value: the daily limit must not exceed the monthly limit',
    ],
    'agent-bad-replicas.yaml': [
        'The AgentDeployment "broken-agent" is invalid',
        'spec.port: Invalid value: 70000: spec.port in body should be less than or equal to 65535',
    ],
}


@needs_examples
@pytest.mark.parametrize('name', sorted(INVALID_EXAMPLES))
def test_kubectl_refuses_the_invalid_example_naming_the_field(kubectl: Any, name: str) -> None:
    assert sorted(p.name for p in (EXAMPLES / 'invalid').glob('*.yaml')) == sorted(INVALID_EXAMPLES)
    kubectl('apply', '-f', str(CRDS))
    kubectl('apply', '-f', str(EXAMPLES / '00-namespace.yaml'))
    result = kubectl('apply', '-f', str(EXAMPLES / 'invalid' / name))
    assert result.returncode == 1, f'{name} was accepted'
    for expected in INVALID_EXAMPLES[name]:
        assert expected in result.stderr, result.stderr
