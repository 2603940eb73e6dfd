"""GitOps support: the Argo CD health checks (deploy/argocd/health/*.lua) evaluated in Lua 5.1
(the dialect of Argo CD's gopher-lua, through lupa) on statuses the operator's own status
functions produce; the argocd-cm snippets in docs/gitops.md and deploy/argocd/argocd-cm.yaml
being those files verbatim; and the Flux example naming real paths and resources.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from agentgov.api import spendstore
from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.manifests import load_manifests
from agentgov.controller.budgetstatus import budget_status, store_unreachable
from agentgov.controller.status import Outcome, status_violations, updated_status

REPO = Path(__file__).resolve().parents[2]
HEALTH = REPO / 'deploy' / 'argocd' / 'health'
KINDS = ('AgentDeployment', 'AgentBudget', 'ToolPolicy', 'RegionPolicy')
NOW = '2026-03-14T15:09:26Z'
KEY = 'resource.customizations.health.agentgov.io_{}'


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run the kind's health script as Argo CD does: ``obj`` global, the script's return value."""
    lua = LuaRuntime(unpack_returned_tuples=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((HEALTH / f'{kind}.lua').read_text(encoding='utf-8'))
    return {'status': result['status'], 'message': result['message']}


def resource(kind: str, status: dict[str, Any] | None, generation: int = 3, *, as_written: bool = True) -> dict[str, Any]:
    """An object with ``status``; ``as_written``: a status the operator writes (checked against its
    rules). Other statuses are states a health check meets anyway: a spec edited since the last
    reconcile, a status from another writer."""
    obj: dict[str, Any] = {'apiVersion': 'agentgov.io/v1alpha1', 'kind': kind,
                           'metadata': {'name': 'x', 'namespace': 'research', 'generation': generation}, 'spec': {}}
    if status is not None:
        obj['status'] = status
        if as_written:
            assert status_violations(obj) == [], 'samples follow the operator status rules'
    return obj


def operator_status(phase: str, reason: str, message: str, generation: int = 3,
                    previous: dict[str, Any] | None = None) -> dict[str, Any]:
    return updated_status(previous or {}, Outcome(phase, reason, message), generation, NOW, {})  # type: ignore[arg-type]


AVAILABLE = operator_status('Ready', 'Available', '3 pods ready; policy bundle in force')
ROLLING = operator_status('Reconciling', 'Progressing', '1 of 3 pods ready with the current template',
                          previous=AVAILABLE)
MISSING = operator_status('Stalled', 'MissingReference', 'not found: Secret research/openai-api-key',
                          previous=ROLLING)
INVALID = operator_status('Stalled', 'InvalidSpec', 'spec.dataClasses: no region may hold pii')
VALID = operator_status('Ready', 'Valid', 'ToolPolicy is valid and in force for the agents that reference it')


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize(
    'obj, expected, message',
    [
        (lambda k: resource(k, None), 'Progressing', 'Waiting for the agentgov operator to report status'),
        (lambda k: resource(k, {'observedGeneration': 3}, as_written=False), 'Progressing',
         'Waiting for the agentgov operator to report status'),
        (lambda k: resource(k, AVAILABLE, generation=4, as_written=False), 'Progressing',
         'Waiting for the agentgov operator to observe generation 4'),
        (lambda k: resource(k, ROLLING), 'Progressing', 'Progressing: 1 of 3 pods ready with the current template'),
        (lambda k: resource(k, MISSING), 'Degraded', 'MissingReference: not found: Secret research/openai-api-key'),
        (lambda k: resource(k, INVALID), 'Degraded', 'InvalidSpec: spec.dataClasses: no region may hold pii'),
        (lambda k: resource(k, AVAILABLE), 'Healthy', 'Available: 3 pods ready; policy bundle in force'),
        (lambda k: resource(k, {**VALID, 'conditions': list(reversed(VALID['conditions'] + [
            {'type': 'Other', 'status': 'True', 'reason': 'Unrelated', 'message': ''}]))}, as_written=False),
         'Healthy', 'Valid: ToolPolicy is valid and in force for the agents that reference it'),
    ],
    ids=['no status yet is progressing', 'a status without conditions is progressing',
         'an older observed generation is progressing', 'reconciling is progressing with the reason',
         'a missing reference is degraded naming it', 'an invalid spec is degraded naming the field',
         'ready for the current generation is healthy', 'conditions are found in any order'],
)
def test_health_follows_kstatus(kind: str, obj: Any, expected: str, message: str) -> None:
    assert health(kind, obj(kind)) == {'status': expected, 'message': message}


@pytest.mark.parametrize('kind', KINDS)
def test_ready_false_alone_is_progressing_not_healthy(kind: str) -> None:
    status = {'observedGeneration': 3, 'conditions': [
        {'type': 'Ready', 'status': 'False', 'reason': 'Pending', 'message': 'waiting'}]}
    assert health(kind, resource(kind, status, as_written=False)) == {'status': 'Progressing', 'message': 'Pending: waiting'}


@pytest.mark.parametrize('kind', KINDS)
def test_a_stalled_condition_that_is_false_does_not_degrade(kind: str) -> None:
    status = {'observedGeneration': 3, 'conditions': [
        *AVAILABLE['conditions'], {'type': 'Stalled', 'status': 'False', 'reason': 'Fine', 'message': ''}]}
    obj = {**resource(kind, None), 'status': status}
    assert health(kind, obj)['status'] == 'Healthy'


# --- AgentBudget: spending conditions never change health -------------------------------------

BUDGET = AgentBudgetSpec.model_validate({'subjects': {'users': ['*']}, 'limits': {'monthlyUsd': 300, 'dailyUsd': 10},
                                         'alertThresholds': [80, 90], 'enforcement': 'Hard'})
VALID_BUDGET = operator_status('Ready', 'Valid', 'AgentBudget is valid and in force for the agents that reference it')
AT = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.timezone.utc)


def spent(usd: float) -> dict[str, str]:
    return {spendstore.spent_field(spendstore.subject('user', 'alice')): str(spendstore.usd_to_micros(usd))}


def budget(usd: float) -> dict[str, Any]:
    status, _ = budget_status(BUDGET, spent(usd), spent(usd), VALID_BUDGET, AT, 3, store='redis.agentgov:6379')
    return resource('AgentBudget', status)


def test_an_exceeded_budget_stays_healthy_and_says_so() -> None:
    result = health('AgentBudget', budget(10.0))
    assert result['status'] == 'Healthy'
    assert result['message'].startswith('Exceeded: user:alice')


def test_a_budget_past_a_threshold_stays_healthy_with_a_warning() -> None:
    result = health('AgentBudget', budget(8.5))
    assert result['status'] == 'Healthy'
    assert result['message'] == ('Warning: 80% alert threshold reached: user:alice has spent $8.50 of the $10.00 '
                                 'daily limit')


def test_a_budget_below_its_thresholds_is_healthy_with_the_ready_message() -> None:
    assert health('AgentBudget', budget(1.0)) == {
        'status': 'Healthy', 'message': 'Valid: AgentBudget is valid and in force for the agents that reference it'}


def test_an_unreachable_spend_store_is_mentioned_not_degraded() -> None:
    status = store_unreachable(budget(1.0)['status'], 'redis.agentgov:6379', 'ConnectionError', AT, 3)
    result = health('AgentBudget', resource('AgentBudget', status))
    assert result['status'] == 'Healthy'
    assert '(spend figures not current: Unreachable: spend store redis.agentgov:6379 is unreachable' in result['message']


def test_a_stalled_budget_is_degraded_even_when_exceeded() -> None:
    obj = budget(10.0)
    obj['status'] = updated_status(obj['status'], Outcome('Stalled', 'InvalidSpec', 'spec.limits: bad'), 3, NOW, {})
    assert health('AgentBudget', obj) == {'status': 'Degraded', 'message': 'InvalidSpec: spec.limits: bad'}


def test_the_scripts_are_lua_5_1_that_argo_cd_can_run() -> None:
    for kind in KINDS:
        text = (HEALTH / f'{kind}.lua').read_text(encoding='utf-8')
        assert f'agentgov.io/{kind}' in text.splitlines()[0]
        # gopher-lua is Lua 5.1: no goto, no integer division, no bitwise operators.
        assert not re.search(r'\bgoto\b|//|~(?!=)|[&|]|<<|>>', re.sub(r'--.*', '', text)), kind
    assert sorted(p.stem for p in HEALTH.glob('*.lua')) == sorted(KINDS)


# --- the argocd-cm snippets are the files ------------------------------------------------------


def snippet_from_docs() -> dict[str, str]:
    doc = (REPO / 'docs' / 'gitops.md').read_text(encoding='utf-8')
    blocks = [b for b in re.findall(r'```yaml\n(.*?)```', doc, re.S) if 'resource.customizations.health' in b]
    assert len(blocks) == 1
    return yaml.safe_load(blocks[0])['data']  # type: ignore[no-any-return]


@pytest.mark.parametrize('source', ['docs/gitops.md', 'deploy/argocd/argocd-cm.yaml'])
def test_the_argocd_cm_snippet_is_the_lua_files_verbatim(source: str) -> None:
    if source.endswith('.md'):
        data = snippet_from_docs()
    else:
        config_map = yaml.safe_load((REPO / source).read_text(encoding='utf-8'))
        assert (config_map['kind'], config_map['metadata']['name']) == ('ConfigMap', 'argocd-cm')
        data = config_map['data']
    assert set(data) == {KEY.format(kind) for kind in KINDS}
    for kind in KINDS:
        assert data[KEY.format(kind)] == (HEALTH / f'{kind}.lua').read_text(encoding='utf-8'), kind


def test_the_docs_state_the_budget_health_decision() -> None:
    doc = (REPO / 'docs' / 'gitops.md').read_text(encoding='utf-8')
    assert '**AgentBudget `Exceeded` stays Healthy.**' in doc


# --- Flux -----------------------------------------------------------------------------------------


def flux_documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((REPO / 'deploy' / 'flux' / 'kustomization.yaml').read_text(encoding='utf-8'))
    documents = []
    for name in kustomization['resources']:
        documents += [d for d in yaml.safe_load_all((REPO / 'deploy' / 'flux' / name).read_text(encoding='utf-8')) if d]
    return documents


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {d['metadata']['name']: d for d in flux_documents() if d['kind'] == kind}


def test_flux_applies_the_agents_after_the_operator_with_health_checks_on_every_kind() -> None:
    kustomizations = by_name('Kustomization')
    agents, operator = kustomizations['agentgov-agents'], kustomizations['agentgov-operator']
    assert agents['spec']['dependsOn'] == [{'name': 'agentgov-operator'}]
    assert operator['spec']['wait'] is True
    checks = agents['spec']['healthChecks']
    assert sorted(c['kind'] for c in checks) == sorted(KINDS)
    assert {c['apiVersion'] for c in checks} == {'agentgov.io/v1alpha1'}


def test_flux_health_checks_name_resources_the_examples_define() -> None:
    examples = {(o.obj.kind, o.obj.metadata.namespace, o.obj.metadata.name)
                for o in load_manifests([REPO / 'examples']) if o.obj is not None}
    checks = by_name('Kustomization')['agentgov-agents']['spec']['healthChecks']
    assert {(c['kind'], c['namespace'], c['name']) for c in checks} <= examples


def test_flux_paths_exist_and_sources_are_defined() -> None:
    sources = by_name('GitRepository')
    for kustomization in by_name('Kustomization').values():
        spec = kustomization['spec']
        assert spec['sourceRef']['name'] in sources
        assert (REPO / spec['path']).is_dir(), spec['path']


def test_the_examples_source_keeps_the_invalid_examples_out() -> None:
    ignore = by_name('GitRepository')['agentgov-examples']['spec']['ignore'].split()
    assert ignore == ['/*', '!/examples/', '/examples/*/']
    assert (REPO / 'examples' / 'invalid').is_dir()
