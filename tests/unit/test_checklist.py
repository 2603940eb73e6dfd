"""`agentgov check`: the production checklist judged from manifests (controller/checklist.py).

Table tests per item for AgentDeployments (spec and rendered children) and for plain objects;
the repository's own manifests pass or fail as they should; bad files are named precisely;
the command line prints the fix and exits 1 on a failure.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentgov.api.manifests import load_manifests, parse_documents
from agentgov.api.resources import parse_object
from agentgov.cli import main
from agentgov.controller import checklist
from agentgov.controller.checklist import Report, check, check_loaded
from agentgov.controller.config import OperatorConfig

REPO = Path(__file__).resolve().parents[2]
CONFIG = OperatorConfig()

BUDGET = {'apiVersion': 'agentgov.io/v1alpha1', 'kind': 'AgentBudget',
          'metadata': {'name': 'team', 'namespace': 'research'},
          'spec': {'subjects': {'users': ['*']}, 'limits': {'monthlyUsd': 300, 'dailyUsd': 10}}}
AGENT: dict[str, Any] = {
    'apiVersion': 'agentgov.io/v1alpha1', 'kind': 'AgentDeployment',
    'metadata': {'name': 'assistant', 'namespace': 'research'},
    'spec': {
        'image': 'ghcr.io/example/agent:1.0',
        'resources': {'requests': {'cpu': '250m', 'memory': '512Mi'}, 'limits': {'cpu': '1', 'memory': '1Gi'}},
        'autoscaling': {'enabled': True, 'minReplicas': 3, 'maxReplicas': 10},
        'ingress': {'enabled': True, 'host': 'assistant.example.com', 'tls': {'secretName': 'assistant-tls'}},
        'auth': {'issuer': 'https://login.example.com/', 'audiences': ['agents'],
                 'jwksUrl': 'https://login.example.com/jwks.json'},
        'models': [{'name': 'gpt-4o', 'endpoint': 'https://api.openai.com/v1',
                    'credentialsSecretRef': {'name': 'openai', 'key': 'api-key'}}],
        'budgetRefs': ['team'],
        'secrets': [{'name': 'SEARCH_API_KEY', 'vault': {'path': 'agents/research', 'key': 'search'}}],
    },
}


def agent(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(AGENT)
    for key, value in spec.items():
        if value is None:
            obj['spec'].pop(key, None)
        else:
            obj['spec'][key] = value
    return obj


def review_of(*manifests: dict[str, Any], documents: tuple[dict[str, Any], ...] = ()) -> Report:
    return check([(f'doc{i}', parse_object(m)) for i, m in enumerate(manifests)],
                 [(f'plain{i}', d) for i, d in enumerate(documents)], CONFIG)


def finding(report: Report, item: str, subject: str | None = None) -> checklist.Finding:
    reviews = [r for r in report.reviews if subject is None or r.subject == subject]
    return next(f for r in reviews for f in r.findings if f.item == item)


# --- AgentDeployments: one table per item ------------------------------------------------------


@pytest.mark.parametrize(
    'spec, item, passed, words',
    [
        ({}, 'tls', True, 'assistant.example.com: TLS from Secret assistant-tls'),
        ({'ingress': {'enabled': True, 'host': 'assistant.example.com'}}, 'tls', False, 'served over plain HTTP'),
        ({'ingress': {'enabled': False}}, 'tls', True, 'no Ingress'),
        ({}, 'budgets', True, 'AgentBudget team: $300.00/month, $10.00/day, Hard'),
        ({'budgetRefs': None}, 'budgets', False, 'spend is unlimited'),
        ({'budgetRefs': None, 'models': None}, 'budgets', True, 'no model routes'),
        ({'budgetRefs': ['elsewhere']}, 'budgets', True, 'AgentBudget elsewhere (not among the checked files)'),
        ({}, 'audit', True, 'kept 365 days'),
        ({'audit': {'enabled': False}}, 'audit', False, 'audit log off'),
        ({'audit': {'enabled': True, 'includeBodies': True}}, 'audit', True, 'may hold personal data'),
        ({}, 'secrets', True, 'from a secret manager: SEARCH_API_KEY'),
        ({'env': [{'name': 'DB_PASSWORD', 'value': 'hunter2-hunter2'}]}, 'secrets', False,
         'credentials written in the manifest: DB_PASSWORD'),
        ({'env': [{'name': 'UPSTREAM', 'value': 'sk-proj-AbCdEfGhIjKlMnOpQrStUv'}]}, 'secrets', False, 'UPSTREAM'),
        ({'env': [{'name': 'DATABASE', 'value': 'postgres://app:s3cret@db:5432/app'}]}, 'secrets', False, 'DATABASE'),
        ({'env': [{'name': 'TOKEN_TTL_SECONDS', 'value': '3600'}, {'name': 'API_KEY_FILE', 'value': '/run/key'},
                  {'name': 'LOG_LEVEL', 'value': 'info'}]}, 'secrets', True, 'from a secret manager'),
        ({'secrets': [{'name': 'DB_URL', 'secretKeyRef': {'name': 'db', 'key': 'url'}}]}, 'secrets', True,
         'from Kubernetes Secrets: DB_URL'),
        ({}, 'resources', True, 'requests 250m CPU, 512Mi; limits 1 CPU, 1Gi'),
        ({'resources': None}, 'resources', False, 'requests.cpu, requests.memory, limits.cpu, limits.memory not set'),
        ({'resources': {'requests': {'cpu': '1', 'memory': '1Gi'}}}, 'resources', False, 'limits.cpu, limits.memory not set'),
        ({}, 'autoscaling', True, '3-10 replicas at 70% CPU'),
        ({'autoscaling': None, 'replicas': 4}, 'autoscaling', False, 'fixed at 4 replica(s)'),
        ({}, 'pdb', True, 'PodDisruptionBudget assistant (maxUnavailable 1), 3 or more replicas'),
        ({'autoscaling': None, 'replicas': 1}, 'pdb', False, '1 replica(s): a node drain or failure'),
        ({'autoscaling': {'enabled': True, 'minReplicas': 1, 'maxReplicas': 3}}, 'pdb', False, '1 replica(s)'),
        ({}, 'networkpolicy', True, 'NetworkPolicy assistant: ingress to the sidecar only'),
        ({'networkPolicy': {'enabled': False}}, 'networkpolicy', False, 'network isolation off'),
        ({}, 'probes', True, 'agentgov-sidecar: liveness and readiness probes'),
    ],
    ids=lambda v: v if isinstance(v, str) and ' ' in v else None,
)
def test_agent_items(spec: dict[str, Any], item: str, passed: bool, words: str) -> None:
    found = finding(review_of(agent(**spec), BUDGET), item)
    assert (found.passed, words in found.detail) == (passed, True), found
    assert bool(found.fix) == (not passed)


def test_every_item_is_judged_once_per_agent_in_checklist_order() -> None:
    report = review_of(agent(), BUDGET)
    assert [f.item for f in report.reviews[0].findings] == [i.id for i in checklist.ITEMS]
    assert report.exit_code == 0 and report.failed == 0 and report.passed == len(checklist.ITEMS)


def test_a_failure_names_the_spec_field_to_fix() -> None:
    found = finding(review_of(agent(audit={'enabled': False}, autoscaling=None), BUDGET), 'autoscaling')
    assert found.fix == 'set spec.autoscaling.enabled: true (minReplicas 2 or more)'


def test_a_credential_is_named_never_shown() -> None:
    report = review_of(agent(env=[{'name': 'DB_PASSWORD', 'value': 'hunter2-hunter2'}]), BUDGET)
    assert 'hunter2' not in checklist.format_text(report) + checklist.as_json(report)


def test_without_its_budgets_among_the_files_the_agent_is_judged_from_its_spec() -> None:
    report = review_of(agent())
    assert report.exit_code == 0
    assert 'not found: AgentBudget research/team' in finding(report, 'pdb').detail
    assert finding(report, 'probes').passed


def test_an_agent_the_operator_would_refuse_is_an_error() -> None:
    region = {'apiVersion': 'agentgov.io/v1alpha1', 'kind': 'RegionPolicy', 'metadata': {'name': 'eu', 'namespace': 'research'},
              'spec': {'regions': [{'name': 'eu-west-1', 'endpoint': 'https://eu.example.com/v1', 'onPremise': False,
                                    'dataClasses': ['public', 'internal']}]}}
    report = review_of(agent(dataClasses=['pii'], regionPolicyRef='eu'), BUDGET, region)
    assert report.exit_code == 1
    assert len(report.errors) == 1 and report.errors[0].startswith('doc0: AgentDeployment research/assistant: ')
    assert report.errors[0].endswith('(the operator would mark it Stalled)')


# --- plain objects -------------------------------------------------------------------------------

LABELS = {'app.kubernetes.io/name': 'web'}


def deployment(replicas: int = 3, **container: Any) -> dict[str, Any]:
    base = {'name': 'web', 'image': 'web:1', 'ports': [{'containerPort': 8080}],
            'resources': {'requests': {'cpu': '100m', 'memory': '64Mi'}, 'limits': {'cpu': '1', 'memory': '128Mi'}},
            'livenessProbe': {'httpGet': {'path': '/', 'port': 8080}},
            'readinessProbe': {'httpGet': {'path': '/', 'port': 8080}}}
    base.update(container)
    return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web', 'namespace': 'shop'},
            'spec': {'replicas': replicas, 'selector': {'matchLabels': LABELS},
                     'template': {'metadata': {'labels': {**LABELS, 'tier': 'front'}},
                                  'spec': {'containers': [{k: v for k, v in base.items() if v is not None}]}}}}


PDB = {'apiVersion': 'policy/v1', 'kind': 'PodDisruptionBudget', 'metadata': {'name': 'web', 'namespace': 'shop'},
       'spec': {'maxUnavailable': 1, 'selector': {'matchLabels': LABELS}}}
POLICY = {'apiVersion': 'networking.k8s.io/v1', 'kind': 'NetworkPolicy', 'metadata': {'name': 'web', 'namespace': 'shop'},
          'spec': {'podSelector': {'matchExpressions': [{'key': 'tier', 'operator': 'In', 'values': ['front']}]},
                   'policyTypes': ['Ingress', 'Egress']}}
EGRESS_ONLY = {**POLICY, 'spec': {'podSelector': {}, 'policyTypes': ['Egress']}}
OTHER_NAMESPACE = {**PDB, 'metadata': {'name': 'web', 'namespace': 'other'}}


def plain(*documents: dict[str, Any]) -> Report:
    return check([], [(f'plain{i}', d) for i, d in enumerate(documents)], CONFIG)


@pytest.mark.parametrize(
    'documents, item, passed, words',
    [
        ((deployment(), PDB, POLICY), 'resources', True, 'requests and limits on all 1 container(s)'),
        ((deployment(resources={'requests': {'cpu': '1'}}), PDB, POLICY), 'resources', False,
         'web: requests.memory, limits.cpu, limits.memory'),
        ((deployment(), PDB, POLICY), 'probes', True, 'web: liveness and readiness probes'),
        ((deployment(readinessProbe=None), PDB, POLICY), 'probes', False, 'web: no readinessProbe'),
        ((deployment(ports=None, livenessProbe=None, readinessProbe=None), PDB, POLICY), 'probes', True,
         'no container serves a port'),
        ((deployment(), PDB, POLICY), 'pdb', True, 'PodDisruptionBudget web, 3 or more replicas'),
        ((deployment(), POLICY), 'pdb', False, 'no PodDisruptionBudget among the files'),
        ((deployment(), OTHER_NAMESPACE, POLICY), 'pdb', False, 'no PodDisruptionBudget among the files'),
        ((deployment(replicas=1), PDB, POLICY), 'pdb', False, 'but 1 replica(s)'),
        ((deployment(), PDB, POLICY), 'networkpolicy', True, 'NetworkPolicy web'),
        ((deployment(), PDB), 'networkpolicy', False, 'no NetworkPolicy among the files'),
        ((deployment(), PDB, EGRESS_ONLY), 'networkpolicy', False, 'restricts ingress'),
        ((deployment(env=[{'name': 'AWS_ACCESS_KEY_ID', 'value': 'AKIAIOSFODNN7EXAMPLE'}]), PDB, POLICY), 'secrets',
         False, 'AWS_ACCESS_KEY_ID'),
        ((deployment(env=[{'name': 'API_TOKEN', 'valueFrom': {'secretKeyRef': {'name': 't', 'key': 'v'}}}]), PDB, POLICY),
         'secrets', True, 'no credentials written'),
    ],
    ids=lambda v: v if isinstance(v, str) and ' ' in v else None,
)
def test_workload_items(documents: tuple[dict[str, Any], ...], item: str, passed: bool, words: str) -> None:
    found = finding(plain(*documents), item, 'Deployment shop/web')
    assert (found.passed, words in found.detail) == (passed, True), found


def test_a_plain_workload_is_not_asked_to_autoscale_unless_it_is_an_agent() -> None:
    report = plain(deployment(), PDB, POLICY)
    assert 'autoscaling' not in [f.item for f in report.reviews[0].findings]
    assert report.exit_code == 0


def test_an_autoscaler_sets_the_replica_count_a_pdb_needs() -> None:
    hpa = {'apiVersion': 'autoscaling/v2', 'kind': 'HorizontalPodAutoscaler', 'metadata': {'name': 'web', 'namespace': 'shop'},
           'spec': {'scaleTargetRef': {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': 'web'},
                    'minReplicas': 2, 'maxReplicas': 5}}
    report = plain(deployment(replicas=1), PDB, POLICY, hpa)
    assert finding(report, 'pdb').passed and finding(report, 'autoscaling').passed


@pytest.mark.parametrize(
    'spec, passed, words',
    [
        ({'tls': [{'hosts': ['a.example.com'], 'secretName': 'a-tls'}], 'rules': [{'host': 'a.example.com'}]}, True,
         'TLS from Secret a-tls'),
        ({'rules': [{'host': 'a.example.com'}]}, False, 'a.example.com served over plain HTTP'),
        ({'tls': [{'hosts': ['a.example.com'], 'secretName': 'a-tls'}],
          'rules': [{'host': 'a.example.com'}, {'host': 'b.example.com'}]}, False, 'b.example.com served over plain HTTP'),
    ],
    ids=['every host covered', 'no tls at all', 'one host left out'],
)
def test_ingress_tls(spec: dict[str, Any], passed: bool, words: str) -> None:
    ingress = {'apiVersion': 'networking.k8s.io/v1', 'kind': 'Ingress', 'metadata': {'name': 'web', 'namespace': 'shop'},
               'spec': spec}
    found = finding(plain(ingress), 'tls')
    assert (found.passed, words in found.detail) == (passed, True)


def test_a_secret_with_values_in_the_files_fails_naming_its_keys_not_values() -> None:
    secret = {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'db', 'namespace': 'shop'},
              'stringData': {'password': 'hunter2-hunter2'}, 'data': {'user': 'YWRtaW4='}}
    report = plain(secret)
    found = finding(report, 'secrets', 'Secret shop/db')
    assert not found.passed and found.detail == 'values of password, user written in the files'
    assert 'hunter2' not in checklist.format_text(report)


def test_a_kubectl_list_is_reviewed_item_by_item() -> None:
    report = plain({'apiVersion': 'v1', 'kind': 'List', 'items': [deployment(), PDB, POLICY]})
    assert [r.subject for r in report.reviews] == ['Deployment shop/web'] and report.exit_code == 0
    assert report.reviews[0].source == 'plain0[0]'


@pytest.mark.parametrize(
    'selector, selected',
    [({}, True), (None, False), ({'matchLabels': {'a': '1'}}, True), ({'matchLabels': {'a': '2'}}, False),
     ({'matchExpressions': [{'key': 'a', 'operator': 'NotIn', 'values': ['1']}]}, False),
     ({'matchExpressions': [{'key': 'b', 'operator': 'DoesNotExist'}]}, True),
     ({'matchExpressions': [{'key': 'a', 'operator': 'Exists'}]}, True),
     ({'matchExpressions': [{'key': 'a', 'operator': 'Gt', 'values': ['0']}]}, False)],
    ids=['empty selects all', 'missing selects none', 'matching label', 'other value', 'NotIn', 'DoesNotExist',
         'Exists', 'unknown operator selects none'],
)
def test_label_selectors(selector: dict[str, Any] | None, selected: bool) -> None:
    assert checklist.selects(selector, {'a': '1'}) is selected


# --- the repository's own manifests ---------------------------------------------------------------


def test_the_examples_pass_every_item() -> None:
    report = check_loaded(load_manifests([REPO / 'examples']), CONFIG)
    assert report.errors == () and report.failed == 0
    assert [r.subject for r in report.reviews] == ['AgentDeployment research/research-assistant']


def test_what_render_writes_for_the_examples_passes_too(tmp_path: Path) -> None:
    from agentgov.controller import render

    objects = [item.obj for item in load_manifests([REPO / 'examples']) if item.obj is not None]
    children, problems = render.rendered_children(objects, CONFIG)
    assert problems == []
    rendered = tmp_path / 'rendered.yaml'
    rendered.write_text(yaml.safe_dump_all(children), encoding='utf-8')
    report = check_loaded(load_manifests([rendered]), CONFIG)
    assert sorted(r.subject for r in report.reviews) == ['Deployment research/research-assistant',
                                                          'Ingress research/research-assistant']
    assert report.failed == 0 and report.exit_code == 0


def test_the_compose_policy_fails_where_a_single_host_cannot_comply() -> None:
    report = check_loaded(load_manifests([REPO / 'deploy' / 'compose' / 'policy.yaml']), CONFIG)
    assert sorted(f.item for r in report.reviews for f in r.failed) == ['autoscaling', 'pdb', 'resources']


def test_the_invalid_examples_are_errors_naming_file_and_field() -> None:
    report = check_loaded(load_manifests([REPO / 'examples' / 'invalid']), CONFIG)
    assert report.exit_code == 1 and report.reviews == ()
    assert any('examples/invalid/agent-bad-replicas.yaml: AgentDeployment/broken-agent: spec.port:' in e
               for e in report.errors)


def test_an_agent_and_its_rendered_children_in_one_folder_are_reviewed_once(tmp_path: Path) -> None:
    from agentgov.controller import render

    objects = [parse_object(agent()), parse_object(BUDGET)]
    children, _ = render.rendered_children(objects, CONFIG)
    (tmp_path / 'agent.yaml').write_text(yaml.safe_dump_all([agent(), BUDGET]), encoding='utf-8')
    (tmp_path / 'rendered.yaml').write_text(yaml.safe_dump_all(children), encoding='utf-8')
    report = check_loaded(load_manifests([tmp_path]), CONFIG)
    assert [r.subject for r in report.reviews] == ['AgentDeployment research/assistant']


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'text, error',
    [
        ('kind: [unclosed\n', 'bad.yaml: not valid YAML at line 2, column 1'),
        ('- just\n- a list\n', 'bad.yaml: expected a mapping, got list'),
        ('apiVersion: agentgov.io/v1alpha1\nkind: AgentDeployment\nmetadata: {name: x}\nspec: {image: i}\n',
         'bad.yaml: AgentDeployment/x: spec.auth: Field required'),
    ],
    ids=['broken YAML names the line', 'a document that is not an object', 'a missing field is named'],
)
def test_bad_files_are_named_precisely(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text, encoding='utf-8')
    report = check_loaded(load_manifests([path]), CONFIG)
    assert report.exit_code == 1
    assert any(e.startswith(str(tmp_path / error.split(':')[0])) and error.split(': ', 1)[1] in e for e in report.errors), \
        report.errors


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    report = check_loaded(load_manifests([tmp_path / 'nowhere.yaml']), CONFIG)
    assert report.errors == (f'{tmp_path / "nowhere.yaml"}: no such file or directory',) and report.exit_code == 1


def test_nothing_to_check_is_not_a_pass(tmp_path: Path) -> None:
    report = check_loaded(parse_documents('apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n', 'ns.yaml'), CONFIG)
    assert report.reviews == () and report.exit_code == 1
    assert 'nothing to check' in checklist.format_text(report)


# --- the command -------------------------------------------------------------------------------------


def test_the_command_prints_pass_fail_and_the_fix_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / 'agent.yaml').write_text(yaml.safe_dump_all([agent(audit={'enabled': False}), BUDGET]), encoding='utf-8')
    assert main(['check', '-f', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert '  FAIL  Audit log on' in out and 'fix: set spec.audit.enabled: true' in out
    assert '  PASS  TLS on ingress' in out
    assert out.rstrip().endswith('1 object(s) checked, 1 with failures: 8 item(s) passed, 1 failed')


def test_the_command_passes_the_examples_and_speaks_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['check', str(REPO / 'examples'), '-o', 'json']) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload['failed'] == 0 and payload['passed'] == len(checklist.ITEMS)
    assert payload['objects'][0]['findings'][0] == {
        'item': 'tls', 'title': 'TLS on ingress', 'passed': True,
        'detail': 'research.agents.example.com: TLS from Secret research-assistant-tls, issued by letsencrypt-prod'}


def test_the_command_without_paths_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['check']) == 2
    assert 'name at least one file or folder' in capsys.readouterr().err


def test_the_installed_command_reads_invalid_files_without_a_traceback() -> None:
    result = subprocess.run([sys.executable, '-m', 'agentgov.cli', 'check', '-f', str(REPO / 'examples' / 'invalid')],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'error: ' in result.stderr and 'spec.limits.dailyUsd' in result.stderr
