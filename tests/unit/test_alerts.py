"""agentgov's Prometheus alerts (charts/agentgov/files/prometheus-rules.yaml): valid for
Prometheus (`promtool check rules`), each alert firing and staying quiet where it should
(`promtool test rules` on tests/promtool/*.yaml), each with its runbook, and every metric and
label they query one that the sidecar or the operator exports.

promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it the
promtool tests are skipped on a developer machine and fail under CI.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from agentgov.controller import metrics as operator_metrics
from agentgov.sidecar.metrics import Metrics
from promql_names import TARGET_LABELS, registry_labels, usage

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / 'charts' / 'agentgov' / 'files' / 'prometheus-rules.yaml'
PROMTOOL_TESTS = sorted((REPO / 'tests' / 'promtool').glob('*.yaml'))
RUNBOOKS = REPO / 'docs' / 'runbooks'
RUNBOOK_URL = 'https://github.com/agentgov/agentgov/blob/main/docs/runbooks/{}.md'
# What the packaging issue asks alerts for, by the alert that covers it.
REQUIRED = {
    'budget at 80%': 'AgentgovBudgetAt80Percent',
    'budget at 90%': 'AgentgovBudgetAt90Percent',
    'budget exceeded': 'AgentgovBudgetExceeded',
    'breaker open': 'AgentgovCircuitBreakerOpen',
    'error rate': 'AgentgovModelErrorRateHigh',
    'p99 latency over SLO': 'AgentgovModelLatencyP99High',
    'audit sink failing': 'AgentgovAuditSinkFailing',
    'operator watch stalled': 'AgentgovOperatorWatchStalled',
}


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding='utf-8'))  # type: ignore[no-any-return]


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()['groups'] for rule in group['rules']]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if 'alert' in rule]


def alert_names() -> list[str]:
    return [rule['alert'] for rule in alerts()]


@pytest.fixture(scope='module')
def promtool() -> str:
    found = shutil.which('promtool')
    if found is None:
        if os.environ.get('CI'):
            pytest.fail('promtool is not installed (apt-get install prometheus; .ci/run does)')
        pytest.skip('promtool is not installed (apt-get install prometheus)')
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


# --- shape ---------------------------------------------------------------------------------


def test_the_file_is_a_rule_file_of_groups_only() -> None:
    document = load_rules()
    assert list(document) == ['groups']
    assert [group['name'] for group in document['groups']] == ['agentgov-budgets', 'agentgov-sidecar', 'agentgov-operator']


def test_every_alert_the_issue_asks_for_is_defined() -> None:
    names = set(alert_names())
    assert {need: name for need, name in REQUIRED.items() if name not in names} == {}
    assert len(names) == len(alert_names()), 'an alert name is used twice'


@pytest.mark.parametrize('name', alert_names())
def test_each_alert_has_severity_summary_description_and_its_runbook(name: str) -> None:
    rule = next(rule for rule in alerts() if rule['alert'] == name)
    assert rule['labels']['severity'] in {'info', 'warning', 'critical'}
    assert rule['annotations']['summary'] and rule['annotations']['description']
    assert rule['annotations']['runbook_url'] == RUNBOOK_URL.format(name)
    runbook = (RUNBOOKS / f'{name}.md').read_text(encoding='utf-8')
    assert runbook.startswith(f'# {name}\n')
    assert [h for h in re.findall(r'^## (.+)$', runbook, re.M)] == ['Meaning', 'Impact', 'Diagnosis', 'Fix']
    assert '```sh' in runbook, 'the diagnosis gives commands to run'


def test_the_runbook_index_lists_every_alert_and_no_other() -> None:
    index = (RUNBOOKS / 'README.md').read_text(encoding='utf-8')
    listed = re.findall(r'^\| (Agentgov\w+) \|', index, re.M)
    assert listed == alert_names()
    pages = sorted(p.stem for p in RUNBOOKS.glob('Agentgov*.md'))
    assert pages == sorted(alert_names())


# --- promtool --------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(promtool: str) -> None:
    checked = run(promtool, 'check', 'rules', str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f'SUCCESS: {len(all_rules())} rules found' in checked.stdout


def test_promtool_refuses_a_rule_with_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    broken = load_rules()
    broken['groups'][0]['rules'][0]['expr'] = 'max by (budget (agentgov_budget_alerts_total)'
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump(broken), encoding='utf-8')
    checked = run(promtool, 'check', 'rules', str(path))
    assert checked.returncode != 0
    assert 'parse error' in checked.stdout + checked.stderr


@pytest.mark.parametrize('test_file', PROMTOOL_TESTS, ids=[p.name for p in PROMTOOL_TESTS])
def test_promtool_unit_tests_pass(promtool: str, test_file: Path) -> None:
    tested = run(promtool, 'test', 'rules', str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert 'SUCCESS' in tested.stdout


def test_a_wrong_expectation_fails_promtool_so_the_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    source = REPO / 'tests' / 'promtool' / 'sidecar.yaml'
    document = yaml.safe_load(source.read_text(encoding='utf-8'))
    document['rule_files'] = [str(RULES)]
    # The case where the audit sink fails: expect silence instead.
    for case in document['tests']:
        for check in case['alert_rule_test']:
            if check['alertname'] == 'AgentgovAuditSinkFailing' and check['exp_alerts']:
                check['exp_alerts'] = []
    path = tmp_path / 'mutated.yaml'
    path.write_text(yaml.safe_dump(document), encoding='utf-8')
    tested = run(promtool, 'test', 'rules', str(path))
    assert tested.returncode != 0
    assert 'AgentgovAuditSinkFailing' in tested.stdout + tested.stderr


def promtool_cases() -> dict[str, tuple[int, int]]:
    """alert -> (checks expecting it to fire, checks expecting silence) over tests/promtool."""
    counts: dict[str, list[int]] = {}
    for path in PROMTOOL_TESTS:
        document = yaml.safe_load(path.read_text(encoding='utf-8'))
        assert document['rule_files'] == ['../../charts/agentgov/files/prometheus-rules.yaml'], path.name
        for case in document['tests']:
            for check in case.get('alert_rule_test', []):
                fire, quiet = counts.setdefault(check['alertname'], [0, 0])
                counts[check['alertname']] = [fire + bool(check['exp_alerts']), quiet + (not check['exp_alerts'])]
    return {name: (fire, quiet) for name, (fire, quiet) in counts.items()}


@pytest.mark.parametrize('name', alert_names())
def test_each_alert_has_a_firing_and_a_quiet_promtool_case(name: str) -> None:
    fire, quiet = promtool_cases().get(name, (0, 0))
    assert fire >= 1, f'no promtool case where {name} fires'
    assert quiet >= 1, f'no promtool case where {name} stays quiet'


# --- only metrics that exist ------------------------------------------------------------------


def exported_by_agentgov() -> dict[str, frozenset[str]]:
    sidecar = [m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase)]
    operator = [m for m in vars(operator_metrics).values() if isinstance(m, MetricWrapperBase)]
    assert len(sidecar) > 30 and len(operator) >= 7, 'the registries were not found'
    return registry_labels(sidecar) | registry_labels(operator)


def recorded_labels() -> dict[str, frozenset[str]]:
    """Recording rule -> the labels it keeps (its by-list)."""
    return {rule['record']: frozenset(usage(rule['expr']).grouping) for rule in all_rules() if 'record' in rule}


@pytest.mark.parametrize('rule', all_rules(), ids=[r.get('alert') or r['record'] for r in all_rules()])
def test_rules_query_only_metrics_and_labels_agentgov_exports(rule: dict[str, Any]) -> None:
    known = exported_by_agentgov() | recorded_labels()
    used = usage(rule['expr'])
    assert used.metrics, 'no metric found in the expression'
    assert sorted(used.metrics - set(known)) == []
    available = set(TARGET_LABELS).union(*(known[name] for name in used.metrics))
    for metric, labels in used.matchers.items():
        assert sorted(labels - known[metric] - TARGET_LABELS) == [], f'{metric} has no such label'
    assert sorted(used.grouping - available) == []


def test_the_metric_check_notices_a_metric_that_does_not_exist() -> None:
    used = usage('sum by (budget) (rate(agentgov_budget_percent_used[5m])) > 80')
    assert used.metrics == {'agentgov_budget_percent_used'}
    assert 'agentgov_budget_percent_used' not in exported_by_agentgov()


@pytest.mark.parametrize(
    'expr, metrics, grouping',
    [
        ('max by (a, b) (x_total unless x_total offset 1d) or (increase(y_total{c="d"}[1d]) > 0)',
         {'x_total', 'y_total'}, {'a', 'b'}),
        ('histogram_quantile(0.99, sum by (le) (rate(h_bucket{ns=~"$namespace"}[$__rate_interval]))) > 20',
         {'h_bucket'}, {'le'}),
        ('a_total / on (job) group_left (pod) b', {'a_total', 'b'}, {'job', 'pod'}),
        ('sum(rate(c_total[5m])) > 1/60 and d == 0', {'c_total', 'd'}, set()),
        ('x{percent=~"9[0-9]|100"}', {'x'}, set()),
    ],
    ids=['aggregation, offset and a selector', 'a histogram quantile with Grafana variables',
         'vector matching', 'arithmetic and set operators', 'a regex matcher with brackets'],
)
def test_metric_names_are_read_from_expressions(expr: str, metrics: set[str], grouping: set[str]) -> None:
    used = usage(expr)
    assert used.metrics == metrics
    assert used.grouping == grouping


def test_an_unknown_function_is_refused_not_taken_for_a_metric() -> None:
    with pytest.raises(ValueError, match="unknown PromQL function 'predict_linear'"):
        usage('predict_linear(agentgov_cache_bytes[1h], 3600) > 1e9')
