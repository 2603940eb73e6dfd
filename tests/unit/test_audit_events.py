"""What the operator records (agentgov.controller.audit_events): who made a change (managedFields, the
last-applied annotation, else unknown), which fields changed (paths, never values), which watch
events of a policy are changes, secret syncs without values, and the compiler's data-class refusal."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgov.audit.record import AuditPolicy, build_record
from agentgov.controller import audit_events
from agentgov.controller.audit_events import (
    MAX_CHANGED_PATHS, Seen, change_author, changed_paths, compile_denial, denial_event, object_event,
    secret_access_event, summarize_paths, watched_change,
)
from agentgov.controller.config import OperatorConfig
from agentgov.controller.reconcile import Lookups

NOW = 1_772_366_400.0  # 2026-03-01T12:00:00Z
REPO = Path(__file__).resolve().parents[2]


def entry(manager: str, time: str, subresource: str | None = None) -> dict[str, Any]:
    found = {'manager': manager, 'operation': 'Update', 'time': time, 'fieldsType': 'FieldsV1', 'fieldsV1': {}}
    if subresource:
        found['subresource'] = subresource
    return found


AUTHORS: list[tuple[str, dict[str, Any], str, tuple[str, str]]] = [
    ('the only manager', {'managedFields': [entry('kubectl-client-side-apply', '2026-03-01T10:00:00Z')]},
     'updated', ('kubectl-client-side-apply', 'managedFields')),
    ('the latest manager for an update', {'managedFields': [entry('helm', '2026-03-01T10:00:00Z'),
                                                            entry('kubectl-edit', '2026-03-01T11:00:00Z')]},
     'updated', ('kubectl-edit', 'managedFields')),
    ('the earliest manager for a creation', {'managedFields': [entry('kubectl-edit', '2026-03-01T11:00:00Z'),
                                                               entry('argocd-controller', '2026-03-01T10:00:00Z')]},
     'created', ('argocd-controller', 'managedFields')),
    ('the later entry on a tie', {'managedFields': [entry('helm', '2026-03-01T10:00:00Z'),
                                                    entry('kustomize-controller', '2026-03-01T10:00:00Z')]},
     'updated', ('kustomize-controller', 'managedFields')),
    ('never the operator itself', {'managedFields': [entry('kubectl', '2026-03-01T10:00:00Z'),
                                                     entry('kopf', '2026-03-01T11:00:00Z'),
                                                     entry('agentgov-operator', '2026-03-01T12:00:00Z')]},
     'updated', ('kubectl', 'managedFields')),
    ('never a status write', {'managedFields': [entry('kubectl', '2026-03-01T10:00:00Z'),
                                                entry('someone', '2026-03-01T11:00:00Z', 'status')]},
     'updated', ('kubectl', 'managedFields')),
    ('the last-applied annotation means kubectl',
     {'annotations': {'kubectl.kubernetes.io/last-applied-configuration': '{}'}}, 'updated',
     ('kubectl', 'last-applied-annotation')),
    ('only the operator in managedFields falls back to the annotation',
     {'managedFields': [entry('kopf', '2026-03-01T11:00:00Z')],
      'annotations': {'kubectl.kubernetes.io/last-applied-configuration': '{}'}}, 'updated',
     ('kubectl', 'last-applied-annotation')),
    ('nothing known', {}, 'updated', ('unknown', 'unknown')),
    ('malformed entries are ignored', {'managedFields': [None, {'manager': 7}, {'time': 'x'}]}, 'updated',
     ('unknown', 'unknown')),
]


@pytest.mark.parametrize('name, metadata, action, expected', AUTHORS, ids=[a[0] for a in AUTHORS])
def test_the_author_of_a_change_comes_from_managed_fields_or_the_last_applied_annotation(
        name: str, metadata: dict[str, Any], action: str, expected: tuple[str, str]) -> None:
    assert change_author(metadata, action) == expected  # type: ignore[arg-type]


PATHS: list[tuple[str, Any, Any, list[str]]] = [
    ('nothing changed', {'spec': {'a': 1}}, {'spec': {'a': 1}}, []),
    ('a scalar', {'spec': {'replicas': 1}}, {'spec': {'replicas': 2}}, ['spec.replicas']),
    ('a field added and one removed', {'spec': {'a': 1}}, {'spec': {'b': 1}}, ['spec.a', 'spec.b']),
    ('an item of a list of the same length', {'spec': {'models': [{'endpoint': 'x'}, {'endpoint': 'y'}]}},
     {'spec': {'models': [{'endpoint': 'x'}, {'endpoint': 'z'}]}}, ['spec.models[1].endpoint']),
    ('a list that grew', {'spec': {'budgetRefs': ['a']}}, {'spec': {'budgetRefs': ['a', 'b']}}, ['spec.budgetRefs']),
    ('a label with dots and a slash', {'metadata': {'labels': {}}},
     {'metadata': {'labels': {'app.kubernetes.io/name': 'x'}}}, ["metadata.labels['app.kubernetes.io/name']"]),
    ('a mapping replaced by a scalar', {'spec': {'cache': {'enabled': True}}}, {'spec': {'cache': None}},
     ['spec.cache']),
]


@pytest.mark.parametrize('name, old, new, paths', PATHS, ids=[p[0] for p in PATHS])
def test_changed_paths_name_the_fields_that_differ(name: str, old: Any, new: Any, paths: list[str]) -> None:
    assert changed_paths(old, new) == paths


def test_changed_paths_are_capped_so_the_record_keeps_its_metadata() -> None:
    paths = [f'spec.env[{i}].value' for i in range(100)] + ['spec.' + 'x' * 500]
    summary = summarize_paths(paths)
    assert len(summary['changed']) == MAX_CHANGED_PATHS and summary['changed_more'] == 101 - MAX_CHANGED_PATHS  # type: ignore[arg-type]
    body = agent()
    event = object_event('AgentDeployment', 'updated', body, NOW,
                         old={**body, 'spec': {f'k{i}': 'v' * 50 for i in range(200)}})
    record = build_record(event, seq=0, prev_hash='sha256:' + '0' * 64, policy=AuditPolicy())
    assert 'truncated' not in record['metadata']  # type: ignore[operator]


def agent(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLES['AgentDeployment'])
    body['metadata'].update(uid='uid-1', generation=1, creationTimestamp='2026-03-01T11:59:00Z',
                            managedFields=[entry('kubectl-client-side-apply', '2026-03-01T11:59:00Z')])
    body['spec'].update(spec)
    return body


EXAMPLES = {d['kind']: d for p in sorted((REPO / 'examples').glob('*.yaml')) for d in yaml.safe_load_all(p.read_text())}


def test_an_agent_update_records_who_and_which_paths_but_no_values() -> None:
    before, after = agent(), agent(image='ghcr.io/example/research-agent:9.9.9-canary-value')
    after['metadata']['annotations'] = {'agentgov.io/last-handled-configuration': '{"spec": "ignored"}'}
    event = object_event('AgentDeployment', 'updated', after, NOW, old=before)
    assert (event.event_type, event.result, event.action, event.user) == (
        'agent.updated', 'success', 'update', 'kubectl-client-side-apply')
    assert event.agent == 'research/research-assistant'
    assert event.resource == 'AgentDeployment/research/research-assistant'
    assert event.metadata['changed'] == ['spec.image']
    assert 'canary-value' not in json.dumps(dict(event.metadata))


def test_a_deletion_names_no_author_and_says_where_to_find_it() -> None:
    event = object_event('ToolPolicy', 'deleted', EXAMPLES['ToolPolicy'], NOW)
    assert (event.event_type, event.user, event.agent) == ('toolpolicy.deleted', 'unknown', None)
    assert "API server's audit log" in str(event.metadata['note'])


def policy(generation: int, uid: str = 'uid-p', **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLES['RegionPolicy'])
    body['metadata'].update(uid=uid, generation=generation, creationTimestamp='2026-03-01T11:00:00Z')
    body['spec'].update(spec)
    return body


STARTED_BEFORE, STARTED_AFTER = 1_772_362_800.0 - 60, 1_772_362_800.0 + 60  # around 11:00:00
SEEN = Seen('uid-p', 1, {'spec': policy(1)['spec'], 'metadata': {'labels': {}, 'annotations': {}}})
WATCH: list[tuple[str, str | None, dict[str, Any], Seen | None, float, str | None]] = [
    ('ADDED is a creation', 'ADDED', policy(1), None, STARTED_AFTER, 'regionpolicy.created'),
    ('listed at start and older than the operator is the baseline', None, policy(1), None, STARTED_AFTER, None),
    ('listed at start but created since the operator started', None, policy(1), None, STARTED_BEFORE,
     'regionpolicy.created'),
    ('a status write changes nothing', 'MODIFIED', policy(1), SEEN, STARTED_AFTER, None),
    ('a new generation is an update', 'MODIFIED', policy(2, defaultRegion='onprem-frankfurt'), SEEN,
     STARTED_AFTER, 'regionpolicy.updated'),
    ('a changed generation at a relist is an update', None, policy(2, defaultRegion='onprem-frankfurt'), SEEN,
     STARTED_AFTER, 'regionpolicy.updated'),
    ('deleted and created again unseen is a creation', 'ADDED', policy(1, uid='uid-q'), SEEN, STARTED_AFTER,
     'regionpolicy.created'),
    ('DELETED is a deletion', 'DELETED', policy(1), SEEN, STARTED_AFTER, 'regionpolicy.deleted'),
]


@pytest.mark.parametrize('name, event_type, body, seen, started, recorded', WATCH, ids=[w[0] for w in WATCH])
def test_which_watch_events_of_a_policy_are_changes(name: str, event_type: str | None, body: dict[str, Any],
                                                    seen: Seen | None, started: float, recorded: str | None) -> None:
    event, remembered = watched_change('RegionPolicy', event_type, body, seen, NOW, started)
    assert (event.event_type if event else None) == recorded
    assert (remembered is None) == (event_type == 'DELETED')
    if recorded == 'regionpolicy.updated':
        assert event is not None and event.metadata['changed'] == ['spec.defaultRegion']


def test_a_secret_sync_is_recorded_without_its_value() -> None:
    event = secret_access_event('research/research-assistant', 'SEARCH_API_KEY', 'vault', 'rotate', 'ok', None,
                                '7', NOW)
    assert (event.event_type, event.result, event.action, event.agent) == (
        'secret.rotated', 'success', 'rotate', 'research/research-assistant')
    failed = secret_access_event('research/a', 'DB', 'aws', 'read', 'error', 'not_found', None, NOW)
    assert (failed.event_type, failed.result, failed.metadata['code']) == ('secret.synced', 'failure', 'not_found')
    record = build_record(event, seq=0, prev_hash='sha256:' + '0' * 64, policy=AuditPolicy())
    assert record['metadata'] == {'name': 'SEARCH_API_KEY', 'source': 'vault', 'code': None, 'version': '7'}


def lookups(region_policy: dict[str, Any]) -> Lookups:
    return Lookups(budgets={('research', 'research-team'): EXAMPLES['AgentBudget']},
                   tool_policies={('research', 'research-tools'): EXAMPLES['ToolPolicy']},
                   region_policies={('research', 'eu-onprem'): region_policy})


def test_a_region_policy_that_leaves_the_agents_data_nowhere_is_a_permission_denial() -> None:
    strict = policy(2, rules=[{'name': 'confidential-in-eu-west', 'match': {'dataClasses': ['confidential']},
                               'route': {'regions': ['eu-west-1']}, 'enforcement': 'Required'}])
    denial = compile_denial(agent(), lookups(strict), OperatorConfig())
    assert denial is not None and denial.field == 'spec.dataClasses'
    event = denial_event(agent(), denial, NOW)
    assert (event.event_type, event.result, event.user) == ('permission.denied', 'denied', 'kubectl-client-side-apply')
    assert event.metadata['region_policy'] == 'eu-onprem'
    assert compile_denial(agent(), lookups(policy(1)), OperatorConfig()) is None


def test_other_compile_refusals_are_not_permission_denials() -> None:
    bad_url = agent(models=[{'name': 'm', 'provider': 'OpenAI', 'endpoint': 'https://api.example.com:99999/v1',
                             'credentialsSecretRef': {'name': 'k', 'key': 'k'}}])
    assert compile_denial(bad_url, lookups(policy(1)), OperatorConfig()) is None
    assert compile_denial({'metadata': {'name': 'broken'}, 'spec': {}}, Lookups(), OperatorConfig()) is None


def test_the_default_log_is_off_where_its_directory_does_not_exist_and_a_chosen_path_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / 'var-log-agentgov' / 'operator-audit.jsonl'
    monkeypatch.setattr(audit_events, 'OPERATOR_AUDIT_LOG', absent)
    assert audit_events.OperatorAudit.from_config(OperatorConfig(audit_log=absent)).writer is None
    absent.parent.mkdir()
    assert audit_events.OperatorAudit.from_config(OperatorConfig(audit_log=absent)).writer is not None
    chosen = tmp_path / 'elsewhere' / 'audit.jsonl'
    writer = audit_events.OperatorAudit.from_config(OperatorConfig(audit_log=chosen)).writer
    assert writer is not None and writer.path == chosen
