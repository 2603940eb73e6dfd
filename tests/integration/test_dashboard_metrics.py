"""agentgov's Grafana dashboard (charts/agentgov/files/grafana-dashboard.json) against a live
sidecar: every metric a panel or a variable queries is one a running sidecar's /metrics
exports, with the labels the panel filters and groups by.

The sidecar runs for real (tests/sidecar_support.py) in front of the bundled example agent,
with a stand-in OpenAI-compatible model and a real redis-server as the budget store; one
caller's call goes through (and crosses the budget's 80% and 90% alerts), the next is refused
by the budget, so the families the dashboard draws have samples to show their labels.
"""
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentgov.api.bundle import BundleBudget, BundleModelRoute, Price
from agentgov.demo.agent import AgentConfig, create_agent_app
from agentgov.demo.model import serving_model
from agentgov.sidecar.metrics import Metrics
from harness.waiting import async_wait_for
from promql_names import TARGET_LABELS, Exported, exported, registry_labels, usage
from prometheus_client.metrics import MetricWrapperBase
from sidecar_support import Sidecar, bearer, claims, free_port, make_bundle, sidecar_for, sign

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / 'charts' / 'agentgov' / 'files' / 'grafana-dashboard.json'
# What the issue asks the dashboard to show, and a metric that shows it.
SHOWN = {
    'requests': 'agent_requests_total',
    'latency': 'agent_request_duration_seconds_bucket',
    'tokens': 'agent_tokens_total',
    'cost': 'agent_cost_dollars_total',
    'cache hit rate': 'agentgov_cache_hits_total',
    'breakers': 'agentgov_breaker_state',
    'budgets': 'agentgov_budget_spend_dollars',
}
# Families that must have samples after the traffic below (so their labels are checked live).
LIVE = ('agent_requests_total', 'agent_request_duration_seconds_bucket', 'agent_tokens_total',
        'agent_cost_dollars_total', 'agentgov_inbound_requests_total', 'agentgov_cache_misses_total',
        'agentgov_breaker_state', 'agentgov_budget_spend_dollars', 'agentgov_budget_remaining_dollars',
        'agentgov_budget_alerts_total', 'agentgov_budget_denials_total', 'agentgov_upstream_attempts_total')
LABEL_VALUES = re.compile(r'^label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$')


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding='utf-8'))  # type: ignore[no-any-return]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [(panel['title'], target['expr']) for panel in dashboard()['panels'] if panel['type'] != 'row'
            for target in panel['targets']]


@dataclass
class Live:
    metrics: Exported
    text: str


@pytest.fixture()
async def live(tmp_path: Path, redis_url: str) -> AsyncIterator[Live]:
    """/metrics of a sidecar that served one model call and refused the next on its budget."""
    async with serving_model() as model:
        agent_port = free_port()
        bundle = make_bundle(agent_port=agent_port).model_copy(update={
            'models': [BundleModelRoute(name='gpt-4o-mini', provider='OpenAICompatible', endpoint=model.url,
                                        upstream_model='gpt-4o-mini')],
            # $1 per 1K tokens and a $0.085 daily limit: the first call (80 tokens) crosses 80%
            # and 90%, and the next one's reservation no longer fits.
            'budgets': [BundleBudget(name='team', users=['*'], scope='Each', monthly_usd=2.55, daily_usd=0.085,
                                     alert_thresholds=[80, 90], enforcement='Hard', failure_policy='Closed',
                                     pricing={'gpt-4o-mini': Price(input_per_1k=1, output_per_1k=1)})],
        })
        async with sidecar_for(tmp_path, bundle, redis_url=redis_url) as sidecar:
            runner = web.AppRunner(create_agent_app(AgentConfig(openai_base_url=f'{sidecar.egress_url}/v1',
                                                                 tools_url=None)))
            await runner.setup()
            await web.TCPSite(runner, '127.0.0.1', agent_port).start()
            try:
                await drive(sidecar)
                text = await async_wait_for(lambda: scrape(sidecar), lambda t: all(
                    re.search(rf'^{name}[{{ ]', t, re.M) for name in LIVE), what='samples of every live family')
                yield Live(exported([text]), text)
            finally:
                await runner.cleanup()


async def drive(sidecar: Sidecar) -> None:
    token = bearer(sign(claims('alice', 'analyst')))
    # Deterministic (temperature 0), so the cache is looked up: a miss, then a different prompt.
    task = {'prompt': ' '.join(['a'] * 60), 'maxTokens': 6, 'temperature': 0}
    status, body, _ = await sidecar.request('POST', '/run', json=task, headers=token)
    assert status == 200, body
    status, body, _ = await sidecar.request('POST', '/run', json={**task, 'prompt': ' '.join(['b'] * 60)},
                                            headers=token)
    assert status == 429 and body['error']['code'] == 'budget_exceeded', body


async def scrape(sidecar: Sidecar) -> str:
    status, text, headers = await sidecar.request('GET', '/metrics')
    assert status == 200 and headers['Content-Type'].startswith('text/plain')
    return str(text)


def labels_of(name: str, live: Live) -> frozenset[str]:
    """The labels of a sample name: as seen live, else as the sidecar's registry declares them."""
    if name in live.metrics.labels:
        return live.metrics.labels[name]
    declared = registry_labels(m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase))
    return declared[name]


# --- the file itself -------------------------------------------------------------------------


def test_the_dashboard_is_valid_grafana_json_with_unique_panel_ids() -> None:
    board = dashboard()
    assert board['uid'] == 'agentgov-sidecar' and board['title'] == 'agentgov'
    ids = [panel['id'] for panel in board['panels']]
    assert len(ids) == len(set(ids))
    assert {v['name'] for v in board['templating']['list']} == {'datasource', 'namespace', 'agent'}
    for panel in board['panels']:
        if panel['type'] != 'row':
            assert panel['datasource'] == {'type': 'prometheus', 'uid': '${datasource}'}, panel['title']
            assert panel['targets'], panel['title']


def test_panels_do_not_overlap_on_the_grid() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()['panels']:
        grid = panel['gridPos']
        assert grid['x'] + grid['w'] <= 24, panel['title']
        for x in range(grid['x'], grid['x'] + grid['w']):
            for y in range(grid['y'], grid['y'] + grid['h']):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel['title']


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    queried = set().union(*(usage(expr).metrics for _, expr in panel_queries()))
    assert {what: metric for what, metric in SHOWN.items() if metric not in queried} == {}


# --- against the live sidecar -------------------------------------------------------------------


async def test_every_family_the_traffic_touches_has_samples(live: Live) -> None:
    missing = [name for name in LIVE if name not in live.metrics.labels]
    assert missing == []
    assert 'agentgov_budget_alerts_total{budget="team",percent="80",period="day"} 1.0' in live.text


async def test_every_panel_queries_only_metrics_the_sidecar_exports(live: Live) -> None:
    problems = []
    for title, expr in panel_queries():
        used = usage(expr)
        for name in sorted(used.metrics - live.metrics.names):
            problems.append(f'{title}: {name} is not exported')
        known = used.metrics & live.metrics.names
        for name, labels in used.matchers.items():
            if name in known:
                problems.extend(f'{title}: {name} has no label {label}'
                                for label in sorted(labels - labels_of(name, live) - TARGET_LABELS))
        available = set(TARGET_LABELS).union(*(labels_of(name, live) for name in known))
        problems.extend(f'{title}: nothing it queries has a label {label}' for label in sorted(used.grouping - available))
    assert problems == []


async def test_every_variable_queries_a_metric_and_label_the_sidecar_exports(live: Live) -> None:
    for variable in dashboard()['templating']['list']:
        if variable['type'] != 'query':
            continue
        match = LABEL_VALUES.match(variable['query']['query'])
        assert match, variable['query']['query']
        name, selector, label = match.groups()
        assert name in live.metrics.names
        assert label in labels_of(name, live) | TARGET_LABELS
        if selector:
            assert usage(name + selector).matchers[name] <= labels_of(name, live) | TARGET_LABELS


async def test_the_check_catches_a_panel_querying_a_metric_that_is_not_exported(live: Live) -> None:
    used = usage('sum by (model) (rate(agent_cost_usd_total{agent_id=~"$agent"}[5m]))')
    assert used.metrics - live.metrics.names == {'agent_cost_usd_total'}
    assert 'tier' not in labels_of('agent_cost_dollars_total', live)
