"""Policy snapshots (agentgov.sidecar.bundle_loader.build_snapshot) and process settings: what a bundle
and its secret files must be to be put in force, and the messages when they are not."""
from __future__ import annotations

import json

import pytest

from agentgov.api.bundle import BundleModelRoute, SecretFile, canonical_json
from agentgov.sidecar.bundle_loader import PolicySnapshot, build_snapshot
from agentgov.sidecar.errors import ConfigError
from agentgov.audit.redact import REDACTED
from agentgov.sidecar.settings import ENV_VARIABLES, Settings, settings_from_env
from sidecar_support import HMAC_SECRET, make_bundle, private_pem, public_pem, rsa_key

SIGNING = SecretFile(secret='agent-auth', key='signing-key')
MODEL_KEY = SecretFile(secret='openai', key='api-key')


def build(bundle_bytes: bytes, secrets: dict[str, bytes]) -> PolicySnapshot:
    return build_snapshot(bundle_bytes, lambda f: secrets.get(f'{f.secret}/{f.key}'), loaded_at=0.0)


def hs_bundle(**kwargs: object) -> bytes:
    return canonical_json(make_bundle(**kwargs)).encode()  # type: ignore[arg-type]


def test_an_hs256_bundle_verifies_and_signs_with_its_key_file() -> None:
    snapshot = build(hs_bundle(), {'agent-auth/jwt-key': HMAC_SECRET})
    assert [k.alg for k in snapshot.keys] == ['HS256']
    assert snapshot.signing_key is not None and snapshot.signing_key.key == HMAC_SECRET
    assert snapshot.agent == 'research/research-assistant'
    assert snapshot.hash.startswith('sha256:')


def test_a_signing_key_file_adds_its_public_half_to_the_verification_keys() -> None:
    bundle = hs_bundle(algorithms=['RS256'], signing_key_file=SIGNING)
    snapshot = build(bundle, {'agent-auth/jwt-key': public_pem(rsa_key('idp')),
                              'agent-auth/signing-key': private_pem(rsa_key('sidecar'))})
    assert [(k.alg, k.source) for k in snapshot.keys] == [('RS256', 'keyFile'), ('RS256', 'signingKey')]
    assert snapshot.signing_key is not None and snapshot.signing_key.alg == 'RS256'


@pytest.mark.parametrize('bundle, secrets, message', [
    (hs_bundle(), {'agent-auth/jwt-key': b'x' * 31},
     'auth.keyFile (agent-auth/jwt-key): the key file: HMAC key of 31 bytes; at least 32 are required'),
    (hs_bundle(), {}, "auth.keyFile: secret 'agent-auth' key 'jwt-key' is not mounted"),
    (hs_bundle(algorithms=['RS256'], signing_key_file=SIGNING),
     {'agent-auth/jwt-key': public_pem(rsa_key()), 'agent-auth/signing-key': HMAC_SECRET},
     'auth.signingKeyFile: a HS256 key, but auth.algorithms allows RS256'),
    (hs_bundle(key_file=None), {}, 'auth: a jwksUrl or a keyFile is required'),
    (b'{"schemaVersion": "agentgov.io/bundle/v2"}', {}, 'invalid bundle: schemaVersion'),
    (b'{not json', {}, 'invalid bundle:'),
], ids=['an HMAC key under 32 bytes', 'the key file is not mounted', 'a signing key of another algorithm family',
        'no way to verify tokens', 'an unknown schema version', 'broken JSON'])
def test_an_unusable_bundle_is_refused_with_the_field_named(bundle: bytes, secrets: dict[str, bytes], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(bundle, secrets)
    assert message in str(refused.value)


def test_a_validation_error_never_echoes_the_values_it_refused() -> None:
    document = json.loads(hs_bundle())
    document['auth']['leewaySeconds'] = 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345'
    with pytest.raises(ConfigError) as refused:
        build(json.dumps(document).encode(), {'agent-auth/jwt-key': HMAC_SECRET})
    assert 'auth.leewaySeconds' in str(refused.value) and 'sk-proj' not in str(refused.value)


def test_missing_model_credentials_are_reported_not_fatal_and_mounted_ones_are_redacted() -> None:
    bundle = make_bundle().model_copy(update={'models': [
        BundleModelRoute(name='gpt-4o', provider='OpenAI', endpoint='https://api.openai.com/v1', upstream_model='gpt-4o',
                         credentials_file=MODEL_KEY),
        BundleModelRoute(name='local', provider='OpenAICompatible', endpoint='http://127.0.0.1:9', upstream_model='x',
                         credentials_file=SecretFile(secret='absent', key='key')),
    ]})
    value = b'correct-horse-battery-staple-4242\n'
    snapshot = build(canonical_json(bundle).encode(), {'agent-auth/jwt-key': HMAC_SECRET, 'openai/api-key': value})
    assert [r.purpose for r in snapshot.missing_secrets] == ['models[local].credentialsFile']
    assert snapshot.secret(MODEL_KEY) == value
    assert snapshot.redactor.text('key=correct-horse-battery-staple-4242!') == f'key={REDACTED}!'
    assert snapshot.redactor.text(HMAC_SECRET.decode()) == REDACTED


def test_the_fingerprint_changes_with_a_secret_even_when_the_bundle_does_not() -> None:
    first = build(hs_bundle(), {'agent-auth/jwt-key': HMAC_SECRET})
    again = build(hs_bundle(), {'agent-auth/jwt-key': HMAC_SECRET})
    rotated = build(hs_bundle(), {'agent-auth/jwt-key': HMAC_SECRET + b'-rotated'})
    assert first.fingerprint == again.fingerprint != rotated.fingerprint
    assert first.hash == rotated.hash


def test_the_agent_may_require_scopes_in_the_bundle_with_a_default_of_none() -> None:
    document = json.loads(hs_bundle())
    del document['auth']['requiredScopes']  # a bundle that does not say: the model's default
    snapshot = build(json.dumps(document).encode(), {'agent-auth/jwt-key': HMAC_SECRET})
    assert snapshot.bundle.auth.required_scopes == []
    assert json.loads(hs_bundle(required_scopes=['financial_data']))['auth']['requiredScopes'] == ['financial_data']


@pytest.mark.parametrize('environ, field, value', [
    ({'AGENTGOV_AUDIT_FSYNC': 'interval'}, 'audit_fsync', 'interval'),
    ({'AGENTGOV_AUDIT_QUEUE_SIZE': '50'}, 'audit_queue_size', 50),
    ({'AGENTGOV_JWKS_MIN_REFRESH_SECONDS': '2.5'}, 'jwks_min_refresh_seconds', 2.5),
    ({}, 'audit_fsync', 'always'),
], ids=['the fsync policy', 'the queue size', 'the JWKS refresh interval', 'defaults when unset'])
def test_settings_come_from_agentgov_variables(environ: dict[str, str], field: str, value: object) -> None:
    assert getattr(settings_from_env(environ), field) == value


def test_trusted_proxies_are_networks() -> None:
    settings = settings_from_env({'AGENTGOV_TRUSTED_PROXIES': '10.0.0.0/8, 192.168.1.7 ,'})
    assert [str(n) for n in settings.trusted_proxies] == ['10.0.0.0/8', '192.168.1.7/32']


@pytest.mark.parametrize('variable, value, message', [
    ('AGENTGOV_AUDIT_FSYNC', 'sometimes', "AGENTGOV_AUDIT_FSYNC: 'sometimes' is not one of always, interval, never"),
    ('AGENTGOV_AUDIT_QUEUE_SIZE', '0', 'AGENTGOV_AUDIT_QUEUE_SIZE:'),
    ('AGENTGOV_TRUSTED_PROXIES', '10.0.0.0/8, proxy.local', "AGENTGOV_TRUSTED_PROXIES: 'proxy.local' is not an IP"),
    ('AGENTGOV_JWKS_TIMEOUT_SECONDS', 'nan', 'AGENTGOV_JWKS_TIMEOUT_SECONDS:'),
], ids=['an unknown fsync policy', 'an empty queue', 'a proxy given by name', 'not a number'])
def test_a_bad_setting_fails_fast_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_env({variable: value})
    assert message in str(refused.value)


def test_command_line_values_override_the_environment_and_none_means_unset() -> None:
    settings = settings_from_env({'AGENTGOV_AUDIT_LOG': '/a.jsonl'}, port=9000, host=None)
    assert (settings.port, settings.host, str(settings.audit_log)) == (9000, Settings().host, '/a.jsonl')
    assert all(v.startswith('AGENTGOV_') for v in ENV_VARIABLES)
