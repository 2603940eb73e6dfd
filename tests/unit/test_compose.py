"""The compose deployment (deploy/compose/): one host, the same image and bundle format as a pod.

Docker is not available where the tests run, so compose itself is not started here; what the
files promise is checked: the services and how they connect, the bundle the sidecar mounts
(a valid PolicyBundle, exactly what the operator compiles from policy.yaml), the key keygen.py
writes where the bundle expects it, Prometheus scraping the sidecar with agentgov's rules.
"""
from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from agentgov.api.bundle import BUNDLE_FILE_NAME, BUNDLE_MOUNT_DIR, SECRETS_MOUNT_DIR, parse_bundle
from agentgov.api.manifests import load_manifests
from agentgov.controller import render
from agentgov.controller.config import OperatorConfig

COMPOSE_DIR = Path(__file__).resolve().parents[2] / 'deploy' / 'compose'
REPO = COMPOSE_DIR.parents[1]


def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / 'compose.yaml').read_text(encoding='utf-8'))  # type: ignore[no-any-return]


def services() -> dict[str, Any]:
    return compose()['services']  # type: ignore[no-any-return]


def bundle_text() -> str:
    return (COMPOSE_DIR / 'bundle' / BUNDLE_FILE_NAME).read_text(encoding='utf-8')


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (or volume name) of a service's volumes."""
    found = {}
    for volume in service.get('volumes', []):
        source, target, *_ = volume.split(':')
        found[target] = source
    return found


def test_the_playbook_services_are_all_there() -> None:
    assert set(services()) == {'keygen', 'sidecar', 'agent', 'model', 'redis', 'prometheus', 'grafana'}
    assert services()['grafana']['profiles'] == ['dashboards']


def test_agentgov_services_share_one_image_built_from_the_repository_dockerfile() -> None:
    ours = [services()[name] for name in ('keygen', 'sidecar', 'model')]
    assert len({s['image'] for s in ours}) == 1
    assert all(s['build'] == {'context': '../..', 'dockerfile': 'Dockerfile'} for s in ours)
    assert services()['agent']['build'] == {'context': '../..', 'dockerfile': 'examples/agent/Dockerfile'}
    assert (COMPOSE_DIR / '../../Dockerfile').resolve().is_file()


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in services().items():
        image = service['image'].split(':-')[-1].rstrip('}')
        repository, _, tag = image.rpartition(':')
        assert repository and tag and tag != 'latest', f'{name}: {image}'


def test_the_sidecar_runs_the_mounted_bundle_with_secrets_read_only() -> None:
    sidecar = services()['sidecar']
    assert sidecar['command'][:3] == ['sidecar', '--bundle', f'{BUNDLE_MOUNT_DIR}/{BUNDLE_FILE_NAME}']
    volumes = mounts(sidecar)
    assert volumes[BUNDLE_MOUNT_DIR] == './bundle' and (COMPOSE_DIR / 'bundle' / BUNDLE_FILE_NAME).is_file()
    assert volumes[SECRETS_MOUNT_DIR] == 'secrets'
    assert f'secrets:{SECRETS_MOUNT_DIR}:ro' in sidecar['volumes']
    assert sidecar['read_only'] is True and sidecar['cap_drop'] == ['ALL']
    assert sidecar['ports'] == ['127.0.0.1:8080:8080'], 'published on loopback only'
    assert sidecar['environment']['AGENTGOV_REDIS_URL'] == 'redis://redis:6379/0'


def test_the_bundle_is_a_policy_bundle() -> None:
    bundle = parse_bundle(bundle_text())
    assert bundle.agent.name == 'example-agent' and bundle.budgets and bundle.models


def test_the_bundle_is_what_the_operator_compiles_from_policy_yaml() -> None:
    loaded = load_manifests([COMPOSE_DIR / 'policy.yaml'])
    assert [item.error for item in loaded if item.error] == []
    children, problems = render.rendered_children([item.obj for item in loaded if item.obj is not None], OperatorConfig())
    assert problems == []
    (config_map,) = [c for c in children if c['kind'] == 'ConfigMap']
    assert parse_bundle(config_map['data'][BUNDLE_FILE_NAME]) == parse_bundle(bundle_text()), \
        'deploy/compose/bundle/bundle.json is stale: run `make compose-bundle`'


def test_the_agent_shares_the_sidecars_network_and_reaches_its_egress_port() -> None:
    bundle = parse_bundle(bundle_text())
    agent = services()['agent']
    assert agent['network_mode'] == 'service:sidecar'
    assert agent['environment']['OPENAI_BASE_URL'] == f'http://127.0.0.1:{bundle.sidecar.egress_port}/v1'
    assert agent['environment']['AGENTGOV_TOOLS_URL'] == f'http://127.0.0.1:{bundle.sidecar.egress_port}/tools'
    assert int(agent['environment']['PORT']) == bundle.sidecar.agent_port


def test_the_model_route_points_at_the_stand_in_model_service() -> None:
    (route,) = parse_bundle(bundle_text()).models
    address = urlsplit(route.endpoint)
    assert address.hostname in services()
    assert f"port={address.port}" in services()[address.hostname]['entrypoint'][-1]


def test_keygen_writes_the_key_file_the_bundle_names() -> None:
    key_file = parse_bundle(bundle_text()).auth.key_file
    assert key_file is not None
    assert services()['keygen']['entrypoint'][-1] == key_file.path(SECRETS_MOUNT_DIR)
    assert mounts(services()['keygen'])[SECRETS_MOUNT_DIR] == 'secrets'


def run_keygen(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(COMPOSE_DIR / 'keygen.py'), str(path)], capture_output=True, text=True,
                          timeout=30, check=False)


def test_keygen_makes_a_private_key_once_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / 'secrets' / 'agent-auth' / 'jwt-key'
    first = run_keygen(path)
    assert first.returncode == 0 and 'wrote a new token key' in first.stdout
    key = path.read_bytes()
    assert len(key) >= 32 and b'\n' not in key
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert key.decode() not in first.stdout + first.stderr, 'the key is never printed'
    again = run_keygen(path)
    assert again.returncode == 0 and 'kept' in again.stdout and path.read_bytes() == key


def test_keygen_without_a_path_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(COMPOSE_DIR / 'keygen.py')], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and 'usage' in result.stderr


def test_prometheus_scrapes_the_sidecar_and_loads_agentgovs_rules() -> None:
    bundle = parse_bundle(bundle_text())
    config = yaml.safe_load((COMPOSE_DIR / 'prometheus' / 'prometheus.yml').read_text(encoding='utf-8'))
    (job,) = [j for j in config['scrape_configs'] if j['job_name'] == 'agentgov-sidecar']
    assert job['static_configs'][0]['targets'] == [f'sidecar:{bundle.sidecar.inbound_port}']
    assert job['metrics_path'] == '/metrics'
    volumes = mounts(services()['prometheus'])
    rules_in_container = config['rule_files'][0]
    assert (COMPOSE_DIR / volumes[rules_in_container]).resolve() == REPO / 'charts/agentgov/files/prometheus-rules.yaml'


@pytest.mark.parametrize('service', ['sidecar', 'prometheus', 'grafana', 'keygen'])
def test_every_host_path_mounted_exists(service: str) -> None:
    for source in mounts(services()[service]).values():
        if source.startswith('.'):
            assert (COMPOSE_DIR / source).exists(), source


def test_the_readme_token_command_matches_the_bundle() -> None:
    bundle = parse_bundle(bundle_text())
    readme = (COMPOSE_DIR / 'README.md').read_text(encoding='utf-8')
    assert f'--issuer {bundle.auth.issuer}' in readme
    assert f'--audience {bundle.auth.audiences[0]}' in readme
    assert bundle.auth.key_file is not None and f'--key-file {bundle.auth.key_file.path(SECRETS_MOUNT_DIR)}' in readme
