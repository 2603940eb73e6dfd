"""Opt-in: the CRDs and examples on a real kind cluster (``kind create cluster --config
kind-config.yaml``, then ``AGENTGOV_KIND_KUBECONFIG=<its kubeconfig> make test``).

The same round trip as ``test_kubectl_roundtrip.py`` runs against the emulator on every run;
this one checks that what the emulator accepts and refuses, a real API server does too.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

needs_kubectl = pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl is not on PATH')


def kubectl(kubeconfig: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(['kubectl', f'--kubeconfig={kubeconfig}', '--context=kind-agentgov', *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.k8s
@needs_kubectl
def test_real_cluster_accepts_the_crds_and_examples(kind_kubeconfig: pathlib.Path) -> None:
    applied = kubectl(kind_kubeconfig, 'apply', '-f', str(REPO_ROOT / 'crds'))
    assert applied.returncode == 0, applied.stderr
    established = kubectl(kind_kubeconfig, 'wait', '--for=condition=Established', '--timeout=60s',
                          *(f'crd/{p.stem}' for p in (REPO_ROOT / 'crds').glob('*.yaml')))
    assert established.returncode == 0, established.stderr
    examples = kubectl(kind_kubeconfig, 'apply', '-f', str(REPO_ROOT / 'examples'))
    assert examples.returncode == 0, examples.stderr
    again = kubectl(kind_kubeconfig, 'apply', '-f', str(REPO_ROOT / 'examples'))
    assert all(line.endswith('unchanged') for line in again.stdout.splitlines() if line), again.stdout


@pytest.mark.k8s
@needs_kubectl
def test_real_cluster_refuses_the_invalid_budget_naming_the_field(kind_kubeconfig: pathlib.Path) -> None:
    kubectl(kind_kubeconfig, 'apply', '-f', str(REPO_ROOT / 'crds'))
    kubectl(kind_kubeconfig, 'apply', '-f', str(REPO_ROOT / 'examples' / '00-namespace.yaml'))
    refused = kubectl(kind_kubeconfig, 'apply', '-f',
                      str(REPO_ROOT / 'examples' / 'invalid' / 'budget-daily-over-monthly.yaml'))
    assert refused.returncode == 1
    assert 'spec.limits.dailyUsd' in refused.stderr
    assert 'the daily limit must not exceed the monthly limit' in refused.stderr


@pytest.mark.parametrize(
    'content, expected',
    [
        ('current-context: kind-agentgov\n', None),
        ('current-context: prod-eu-1\n', "points at context 'prod-eu-1'"),
        ('clusters: []\n', 'points at context None'),
        ('- not a mapping\n', 'points at context None'),
    ],
    ids=['the kind context is accepted', 'a production context stops the run',
         'a kubeconfig without a context stops the run', 'a malformed kubeconfig stops the run'],
)
def test_only_the_kind_context_is_accepted(tmp_path: pathlib.Path, content: str, expected: str | None) -> None:
    from conftest import checked_kind_kubeconfig

    path = tmp_path / 'kubeconfig'
    path.write_text(content)
    if expected is None:
        assert checked_kind_kubeconfig(path) == path
    else:
        with pytest.raises(pytest.UsageError, match=expected):
            checked_kind_kubeconfig(path)
