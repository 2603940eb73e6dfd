"""Key files and JWKS documents (agentgov.sidecar.keys): what is accepted, what is refused at load
and with which message, and that every key is bound to exactly one algorithm."""
from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentgov.sidecar.errors import KeyMaterialError
from agentgov.sidecar.keys import MIN_HMAC_BYTES, parse_jwks, parse_key_file
from sidecar_support import HMAC_SECRET, ec_key, ed_key, oct_jwk, private_pem, public_jwk, public_pem, rsa_key

ALL_ASYM = ['RS256', 'ES256', 'EdDSA']


@pytest.mark.parametrize('data, algorithms, expected', [
    (HMAC_SECRET, ['HS256'], [('HS256', None)]),
    (HMAC_SECRET + b'\n', ['HS256'], [('HS256', None)]),
    (b'x' * MIN_HMAC_BYTES, ['HS256'], [('HS256', None)]),
    (public_pem(rsa_key()) + public_pem(ec_key()) + public_pem(ed_key()), ALL_ASYM,
     [('RS256', None), ('ES256', None), ('EdDSA', None)]),
    (json.dumps({'keys': [public_jwk(rsa_key(), 'r'), public_jwk(ec_key(), 'e')]}).encode(), ALL_ASYM,
     [('RS256', 'r'), ('ES256', 'e')]),
    (json.dumps(public_jwk(ed_key(), 'only')).encode(), ['EdDSA'], [('EdDSA', 'only')]),
    (json.dumps({'keys': [oct_jwk(b'a' * 32, 'new'), oct_jwk(b'b' * 32, 'old')]}).encode(), ['HS256'],
     [('HS256', 'new'), ('HS256', 'old')]),
], ids=['a raw HMAC secret', 'a raw secret with a trailing newline', 'a raw secret of exactly 32 bytes',
        'three PEM public keys, one per algorithm family', 'a JWKS of RSA and EC keys', 'a single JWK',
        'a JWKS of shared keys for a rotation'])
def test_a_usable_key_file_gives_one_algorithm_per_key(data: bytes, algorithms: list[str],
                                                       expected: list[tuple[str, str | None]]) -> None:
    keys = parse_key_file(data, algorithms)  # type: ignore[arg-type]
    assert [(k.alg, k.kid) for k in keys] == expected


def test_a_trailing_newline_is_not_part_of_the_hmac_secret() -> None:
    (key,) = parse_key_file(HMAC_SECRET + b'\n', ['HS256'])
    assert key.key == HMAC_SECRET


@pytest.mark.parametrize('data, algorithms, message', [
    (b'x' * 31, ['HS256'], 'HMAC key of 31 bytes; at least 32 are required'),
    (b'   \n', ['HS256'], 'the key file is empty'),
    (json.dumps({'keys': [oct_jwk(b'short', 'k')]}).encode(), ['HS256'], 'HMAC key of 5 bytes'),
    (HMAC_SECRET, ['RS256'], 'a raw secret) is a HS256 key but auth.algorithms allows RS256'),
    (public_pem(rsa_key()), ['ES256'], 'is a RS256 key but auth.algorithms allows ES256'),
    (private_pem(rsa_key()), ['RS256'], 'is a private key; the verification file holds public keys'),
    (json.dumps({'keys': [{**public_jwk(ec_key(), 'e'), 'd': 'AAAA'}]}).encode(), ['ES256'], 'is a private key'),
    (json.dumps({'keys': [public_jwk(rsa_key(), 'r', alg='HS256')]}).encode(), ['RS256'],
     "declares alg 'HS256' but is a RS256 key"),
    (json.dumps({'keys': [public_jwk(rsa_key(), 'r', use='enc')]}).encode(), ['RS256'], "use 'enc'"),
    (json.dumps({'keys': [public_jwk(rsa_key(), 'same'), public_jwk(rsa_key('b'), 'same')]}).encode(), ['RS256'],
     'share a kid'),
    (b'{"keys": [', ['RS256'], 'not valid JSON'),
    (b'-----BEGIN PUBLIC KEY-----\nAAAA', ['RS256'], 'not terminated'),
], ids=['an HMAC secret under 32 bytes', 'an empty file', 'a shared JWK under 32 bytes',
        'a raw secret when only RS256 is allowed', 'an RSA key when only ES256 is allowed',
        'a PEM private key', 'a private JWK', 'a JWK whose alg contradicts its type', 'a JWK meant for encryption',
        'two keys with the same kid', 'broken JSON', 'an unterminated PEM block'])
def test_an_unusable_key_file_is_refused_at_load_with_a_clear_message(data: bytes, algorithms: list[str],
                                                                      message: str) -> None:
    with pytest.raises(KeyMaterialError, match=None) as refused:
        parse_key_file(data, algorithms)  # type: ignore[arg-type]
    assert message in str(refused.value)


@pytest.mark.parametrize('key, message', [
    (rsa.generate_private_key(public_exponent=65537, key_size=1024), 'RSA key of 1024 bits'),
    (ec.generate_private_key(ec.SECP384R1()), 'curve secp384r1; ES256 needs P-256'),
], ids=['an RSA key under 2048 bits', 'an EC key on another curve than P-256'])
def test_weak_or_mismatched_public_keys_are_refused(key: Any, message: str) -> None:
    with pytest.raises(KeyMaterialError) as refused:
        parse_key_file(public_pem(key), ALL_ASYM)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_a_jwks_from_a_url_skips_shared_and_unusable_keys_but_keeps_the_others() -> None:
    document = {'keys': [
        oct_jwk(b'a' * 40, 'shared'),
        public_jwk(rsa_key(), 'rsa'),
        public_jwk(ec_key(), 'ec', use='enc'),
        'not a key',
        public_jwk(ed_key(), 'ed'),
    ]}
    keys, problems = parse_jwks(document, ['RS256', 'ES256'])
    assert [k.kid for k in keys] == ['rsa']
    assert len(problems) == 4
    assert any('shared (oct) key' in p for p in problems)
    assert any('EdDSA key but auth.algorithms allows' in p for p in problems)


def test_a_document_without_a_keys_list_is_not_a_jwks() -> None:
    with pytest.raises(KeyMaterialError):
        parse_jwks({'kty': 'RSA'}, ['RS256'])


def test_a_key_repr_never_shows_the_secret() -> None:
    (key,) = parse_key_file(HMAC_SECRET, ['HS256'])
    assert HMAC_SECRET.decode() not in repr(key)
