"""Scoped tokens (agentgov.sidecar.tokens and ``agentgov token create``): TTLs, signing keys of each
kind, tokens the sidecar's verifier accepts, and the rule that an admin only mints narrower tokens."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.cli import main
from agentgov.sidecar.auth import AuthPolicy, Identity, verify
from agentgov.sidecar.errors import BadRequest, Forbidden, KeyMaterialError
from agentgov.sidecar.tokens import MintRequest, check_mint_request, load_signing_key, mint, parse_ttl
from sidecar_support import AUDIENCE, HMAC_SECRET, ISSUER, ec_key, ed_key, oct_jwk, private_pem, rsa_key

POLICY = AuthPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}),
                    algorithms=frozenset({'HS256', 'RS256', 'ES256', 'EdDSA'}))


@pytest.mark.parametrize('text, seconds', [
    ('90s', 90), ('15m', 900), ('1h', 3600), ('2d', 172800), ('1h30m', 5400), ('3600', 3600),
], ids=['seconds', 'minutes', 'an hour', 'days', 'hours and minutes', 'plain seconds'])
def test_ttls_are_durations(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize('text', ['', '1x', 'h', '-5m', '0', '1h 30m', '1.5h'],
                         ids=['empty', 'an unknown unit', 'a unit alone', 'negative', 'zero', 'with a space', 'fractional'])
def test_bad_ttls_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


@pytest.mark.parametrize('data, alg', [
    (HMAC_SECRET, 'HS256'),
    (private_pem(rsa_key()), 'RS256'),
    (private_pem(ec_key()), 'ES256'),
    (private_pem(ed_key()), 'EdDSA'),
    (json.dumps(oct_jwk(HMAC_SECRET, 'k1')).encode(), 'HS256'),
], ids=['a raw HMAC secret signs HS256', 'an RSA private key signs RS256', 'a P-256 key signs ES256',
        'an Ed25519 key signs EdDSA', 'a shared JWK signs HS256 with its kid'])
def test_a_minted_token_is_accepted_by_the_verifier(data: bytes, alg: str) -> None:
    key = load_signing_key(data)
    assert key.alg == alg
    token = mint(user='ci-bot', role='analyst', scopes=['financial_data'], ttl_seconds=600, key=key, issuer=ISSUER,
                 audience=AUDIENCE, now=time.time(), token_id='tok_1', actor='root')
    identity = verify(token, (key.verification_key(),), POLICY, time.time())
    assert isinstance(identity, Identity), identity
    assert (identity.user, identity.role, identity.scopes, identity.token_id, identity.actor) == (
        'ci-bot', 'analyst', frozenset({'financial_data'}), 'tok_1', 'root')


def test_a_minted_token_expires_after_its_ttl() -> None:
    key = load_signing_key(HMAC_SECRET)
    token = mint(user='u', role='viewer', scopes=[], ttl_seconds=60, key=key, issuer=ISSUER, audience=AUDIENCE,
                 now=1_800_000_000, token_id='t')
    policy = AuthPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}), algorithms=frozenset({'HS256'}), leeway_seconds=0)
    assert isinstance(verify(token, (key.verification_key(),), policy, 1_800_000_059), Identity)
    assert not isinstance(verify(token, (key.verification_key(),), policy, 1_800_000_060), Identity)


@pytest.mark.parametrize('data, alg, message', [
    (b'short', None, 'HMAC key of 5 bytes'),
    (private_pem(rsa_key()), 'HS256', 'holds a RS256 key, not a HS256 key'),
    (HMAC_SECRET, 'RS256', 'holds a HS256 key, not a RS256 key'),
    (private_pem(ec_key()), 'HS512', "algorithm 'HS512' is not one of"),
    (b'-----BEGIN PUBLIC KEY-----\nAA\n-----END PUBLIC KEY-----', None, 'no PEM private key'),
], ids=['a short HMAC secret', 'an RSA key asked to sign HS256 (confusion)', 'a secret asked to sign RS256',
        'an algorithm agentgov does not accept', 'a public key only'])
def test_an_unusable_signing_key_is_refused(data: bytes, alg: str | None, message: str) -> None:
    with pytest.raises(KeyMaterialError) as refused:
        load_signing_key(data, alg)
    assert message in str(refused.value)


ADMIN = Identity(user='root', role='admin', scopes=frozenset({'financial_data', 'reports'}), issuer=ISSUER, expires_at=0)
DEVELOPER = Identity(user='dev', role='developer', scopes=frozenset(), issuer=ISSUER, expires_at=0)
ROLES = {k: list(v) for k, v in DEFAULT_ROLES.items()}


@pytest.mark.parametrize('body, caller, outcome', [
    ({'user': 'ci', 'role': 'analyst', 'scopes': ['financial_data'], 'ttl': '1h'}, ADMIN,
     MintRequest('ci', 'analyst', ('financial_data',), 3600)),
    ({'user': 'ci', 'role': 'viewer'}, ADMIN, MintRequest('ci', 'viewer', (), 3600)),
    ({'user': 'ci', 'role': 'viewer', 'ttl': 120, 'team': 'research'}, ADMIN, MintRequest('ci', 'viewer', (), 120, 'research')),
    ({'user': 'ci', 'role': 'admin'}, DEVELOPER, ('mint_not_narrower', 'grants agent:delete, tool:all')),
    ({'user': 'ci', 'role': 'viewer', 'scopes': ['payroll']}, ADMIN, ('mint_not_narrower', 'payroll')),
    ({'user': 'ci', 'role': 'ghost'}, ADMIN, ('bad_request', 'role must be one of')),
    ({'user': '', 'role': 'viewer'}, ADMIN, ('bad_request', 'user must be')),
    ({'user': 'ci', 'role': 'viewer', 'ttl': '30d'}, ADMIN, ('bad_request', 'ttl must be between')),
    ({'user': 'ci', 'role': 'viewer', 'ttl': 'soon'}, ADMIN, ('bad_request', 'ttl:')),
    ({'user': 'ci', 'role': 'viewer', 'scopes': ['has space']}, ADMIN, ('bad_request', 'scopes must be')),
    ({'user': 'ci', 'role': 'viewer', 'exp': 1}, ADMIN, ('bad_request', 'unknown field(s): exp')),
    (['not', 'an', 'object'], ADMIN, ('bad_request', 'must be a JSON object')),
], ids=['an admin mints an analyst token with a scope it holds', 'the ttl defaults to an hour',
        'a ttl in seconds and a team', 'a developer cannot mint an admin token',
        'an admin cannot grant a scope it does not hold', 'an unknown role', 'an empty user', 'a ttl over the maximum',
        'a ttl that is not a duration', 'a scope with a space', 'claims cannot be smuggled in', 'a body that is a list'])
def test_mint_requests_are_checked_and_must_be_narrower_than_the_caller(body: Any, caller: Identity, outcome: Any) -> None:
    result = check_mint_request(body, caller, ROLES, max_ttl_seconds=86400)  # type: ignore[arg-type]
    if isinstance(outcome, MintRequest):
        assert result == outcome
    else:
        assert isinstance(result, BadRequest | Forbidden)
        assert result.code == outcome[0] and outcome[1] in result.message


def test_token_create_command_prints_a_token_the_sidecar_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / 'ec.pem'
    key_file.write_bytes(private_pem(ec_key()))
    code = main(['token', 'create', '--user', 'ci-bot', '--role', 'analyst', '--scope', 'financial_data', '--scope',
                 'reports', '--ttl', '15m', '--key-file', str(key_file), '--issuer', ISSUER, '--audience', AUDIENCE,
                 '--alg', 'ES256', '--kid', '2025-01'])
    out, err = capsys.readouterr()
    assert code == 0, err
    identity = verify(out.strip(), (load_signing_key(key_file.read_bytes(), kid='2025-01').verification_key(),),
                      POLICY, time.time())
    assert isinstance(identity, Identity)
    assert (identity.user, identity.scopes, identity.kid) == ('ci-bot', frozenset({'financial_data', 'reports'}), '2025-01')
    assert 900 - 5 <= identity.expires_at - time.time() <= 900


@pytest.mark.parametrize('argv, message', [
    (['--ttl', 'forever'], '--ttl:'),
    (['--key-file', '/nonexistent/key'], '--key-file /nonexistent/key:'),
    (['--alg', 'RS256'], 'holds a HS256 key, not a RS256 key'),
], ids=['a bad ttl', 'a missing key file', 'an algorithm the key cannot sign'])
def test_token_create_command_errors_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / 'hmac.key'
    key_file.write_bytes(HMAC_SECRET)
    base = {'--user': 'u', '--role': 'viewer', '--key-file': str(key_file), '--issuer': ISSUER, '--audience': AUDIENCE}
    given = dict(zip(argv[::2], argv[1::2]))
    args = [part for flag, value in {**base, **given}.items() for part in (flag, value)]
    assert main(['token', 'create', *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and HMAC_SECRET.decode() not in err
