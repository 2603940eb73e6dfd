"""The compose deployment's bundle and key, served by a real sidecar: what `docker compose up`
would run, minus Docker. keygen.py writes the key where the bundle names it; the sidecar loads
the bundle and is ready; the README's `agentgov token create` command makes a token the sidecar
accepts (an admin token mints a narrower one through the sidecar's token endpoint, which checks
issuer, audience, signature and role, and signs with the same key).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from agentgov.api.bundle import parse_bundle
from sidecar_support import bearer, running_sidecar, sidecar_settings

COMPOSE_DIR = Path(__file__).resolve().parents[2] / 'deploy' / 'compose'


def agentgov(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'agentgov.cli', *args], capture_output=True, text=True, timeout=60,
                          check=False)


async def test_a_sidecar_serves_the_compose_bundle_with_a_keygen_key(tmp_path: Path) -> None:
    settings = sidecar_settings(tmp_path)
    settings.bundle_path.parent.mkdir(parents=True)
    shutil.copy(COMPOSE_DIR / 'bundle' / 'bundle.json', settings.bundle_path)
    bundle = parse_bundle(settings.bundle_path.read_text(encoding='utf-8'))
    assert bundle.auth.key_file is not None
    key_path = Path(bundle.auth.key_file.path(str(settings.secrets_dir)))
    made = subprocess.run([sys.executable, str(COMPOSE_DIR / 'keygen.py'), str(key_path)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert made.returncode == 0, made.stderr

    admin = agentgov('token', 'create', '--user', 'ops', '--role', 'admin', '--ttl', '10m', '--key-file', str(key_path),
                     '--issuer', bundle.auth.issuer, '--audience', bundle.auth.audiences[0])
    assert admin.returncode == 0, admin.stderr
    async with running_sidecar(settings) as sidecar:
        status, body = await sidecar.ready()
        assert status == 200, body
        status, minted, _ = await sidecar.request('POST', '/agentgov/v1/tokens', headers=bearer(admin.stdout.strip()),
                                                  json={'user': 'alice', 'role': 'analyst', 'ttl': '5m'})
        assert status == 201, minted
        assert minted['user'] == 'alice' and minted['role'] == 'analyst'
        status, refused, _ = await sidecar.request('POST', '/agentgov/v1/tokens', headers=bearer(minted['token']),
                                                   json={'user': 'bob', 'role': 'analyst', 'ttl': '5m'})
        assert status == 403, refused
        status, anonymous, _ = await sidecar.request('GET', '/run')
        assert status == 401 and anonymous['error']['code'] == 'missing_token'
