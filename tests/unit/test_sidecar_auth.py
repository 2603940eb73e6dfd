"""JWT verification (agentgov.sidecar.auth): the forged-token corpus, valid tokens of every
algorithm, claim rules at their edges, key rotation by kid, and the Authorization header."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agentgov.sidecar.auth import AuthPolicy, Identity, bearer_token, unverified_kid, verify
from agentgov.sidecar.errors import AuthError, MissingToken
from agentgov.sidecar.keys import KeySet, VerificationKey, candidate_keys, parse_key_file
from sidecar_support import AUDIENCE, HMAC_SECRET, ISSUER, claims, ec_key, ed_key, oct_jwk, public_pem, rsa_key, sign
from sidecar_token_corpus import CORPUS, TRUSTED, Forgery, asym_key_file

ASYM = AuthPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}), algorithms=frozenset({'RS256', 'ES256', 'EdDSA'}))
HS = AuthPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}), algorithms=frozenset({'HS256'}))
SETUPS: dict[str, tuple[KeySet, AuthPolicy]] = {
    'asym': (parse_key_file(asym_key_file(), ['RS256', 'ES256', 'EdDSA']), ASYM),
    'hs': (parse_key_file(HMAC_SECRET, ['HS256']), HS),
}


def check(token: str, setup: str = 'asym', now: float | None = None) -> Identity | AuthError:
    keys, policy = SETUPS[setup]
    return verify(token, keys, policy, time.time() if now is None else now)


@pytest.mark.parametrize('forgery', CORPUS, ids=[f.id for f in CORPUS])
def test_a_forged_or_broken_token_is_refused_for_the_right_reason(forgery: Forgery) -> None:
    result = check(forgery.make(), forgery.setup)
    assert isinstance(result, AuthError), result
    assert result.reason == forgery.reason, result.detail
    # Every refusal looks the same to the caller.
    assert result.body() == {'error': {'code': 'invalid_token', 'message': 'a valid bearer token is required'}}


@pytest.mark.parametrize('alg, key, kid', [
    ('RS256', rsa_key(TRUSTED), 'rsa-1'),
    ('ES256', ec_key(TRUSTED), 'ec-1'),
    ('EdDSA', ed_key(TRUSTED), 'ed-1'),
    ('RS256', rsa_key(TRUSTED), None),
], ids=['RS256 with its kid', 'ES256 with its kid', 'EdDSA with its kid', 'RS256 without a kid tries the RS256 keys'])
def test_a_token_signed_by_a_trusted_key_proves_its_identity(alg: str, key: Any, kid: str | None) -> None:
    headers = {'kid': kid} if kid else {}
    result = check(sign(claims(user='bob', role='developer', scopes=['financial_data', 'reports'], team='research',
                               jti='t-1'), key, alg, **headers))
    assert isinstance(result, Identity), result
    assert (result.user, result.role, result.scopes, result.team, result.token_id, result.alg) == (
        'bob', 'developer', frozenset({'financial_data', 'reports'}), 'research', 't-1', alg)


def test_an_hs256_token_signed_with_the_shared_secret_is_accepted() -> None:
    result = check(sign(claims()), 'hs')
    assert isinstance(result, Identity) and result.user == 'alice'


@pytest.mark.parametrize('offset, accepted', [
    (-29, True), (-31, False),
], ids=['expired 29s ago is within a 30s leeway', 'expired 31s ago is not'])
def test_exp_is_honoured_with_the_leeway(offset: int, accepted: bool) -> None:
    now = 1_800_000_000
    token = sign(claims(exp=now + offset, iat=now - 100), rsa_key(TRUSTED), 'RS256', kid='rsa-1')
    assert isinstance(check(token, now=now), Identity) is accepted


@pytest.mark.parametrize('claim, offset, accepted', [
    ('nbf', 29, True), ('nbf', 31, False), ('iat', 29, True), ('iat', 31, False),
], ids=['nbf 29s ahead is within the leeway', 'nbf 31s ahead is not', 'iat 29s ahead is within the leeway',
        'iat 31s ahead is not'])
def test_nbf_and_iat_are_honoured_with_the_leeway(claim: str, offset: int, accepted: bool) -> None:
    now = 1_800_000_000
    times = {'exp': now + 600, 'iat': now, claim: now + offset}
    token = sign(claims(**times), rsa_key(TRUSTED), 'RS256', kid='rsa-1')
    assert isinstance(check(token, now=now), Identity) is accepted


@pytest.mark.parametrize('aud, accepted', [
    (AUDIENCE, True), ([AUDIENCE, 'other'], True), (['other', AUDIENCE], True), (['other'], False), ([], False),
    (f'{AUDIENCE} other', False),
], ids=['a string equal to an accepted audience', 'a list holding it first', 'a list holding it second',
        'a list without it', 'an empty list', 'a string that merely contains it'])
def test_the_audience_must_be_one_of_the_accepted_ones(aud: Any, accepted: bool) -> None:
    result = check(sign(claims(aud=aud), rsa_key(TRUSTED), 'RS256', kid='rsa-1'))
    assert isinstance(result, Identity) is accepted


@pytest.mark.parametrize('payload, scopes', [
    ({'scope': 'a b  c'}, {'a', 'b', 'c'}),
    ({'scopes': ['a', 'b']}, {'a', 'b'}),
    ({'scp': ['x'], 'scope': 'y'}, {'x', 'y'}),
    ({}, set()),
], ids=['space-separated scope', 'a scopes list', 'scp and scope together', 'no scopes'])
def test_scopes_are_read_from_scope_scopes_and_scp(payload: dict[str, Any], scopes: set[str]) -> None:
    result = check(sign(claims(**payload), rsa_key(TRUSTED), 'RS256', kid='rsa-1'))
    assert isinstance(result, Identity) and result.scopes == scopes


def test_a_token_without_a_role_is_authenticated_with_no_role() -> None:
    result = check(sign(claims(role=None), rsa_key(TRUSTED), 'RS256', kid='rsa-1'))
    assert isinstance(result, Identity) and result.role is None


def test_old_and_new_keys_are_both_accepted_during_a_rotation_by_kid() -> None:
    old, new = b'o' * 40, b'n' * 40
    keys = parse_key_file(json.dumps({'keys': [oct_jwk(new, '2025-02'), oct_jwk(old, '2025-01')]}).encode(), ['HS256'])
    for secret, kid in ((old, '2025-01'), (new, '2025-02')):
        assert isinstance(verify(sign(claims(), secret, kid=kid), keys, HS, time.time()), Identity)
    # A kid names its key: the old secret under the new kid does not verify.
    wrong = verify(sign(claims(), old, kid='2025-02'), keys, HS, time.time())
    assert isinstance(wrong, AuthError) and wrong.reason == 'signature'
    # After the rotation ends, the old kid is unknown.
    rotated = parse_key_file(json.dumps({'keys': [oct_jwk(new, '2025-02')]}).encode(), ['HS256'])
    gone = verify(sign(claims(), old, kid='2025-01'), rotated, HS, time.time())
    assert isinstance(gone, AuthError) and gone.reason == 'unknown_key'


def test_pem_keys_without_kids_are_all_tried_during_a_rotation() -> None:
    keys = parse_key_file(public_pem(rsa_key('new')) + public_pem(rsa_key(TRUSTED)), ['RS256'])
    for key in (rsa_key('new'), rsa_key(TRUSTED)):
        assert isinstance(verify(sign(claims(), key, 'RS256', kid='anything'), keys, ASYM, time.time()), Identity)


@pytest.mark.parametrize('alg, kid, expected', [
    ('RS256', 'a', ['a']),
    ('RS256', 'zzz', [None]),
    ('RS256', None, ['a', 'b', None]),
    ('ES256', 'a', []),
    ('HS256', None, []),
], ids=['a known kid selects its key', 'an unknown kid falls back to keys without a kid',
        'no kid tries every key of the algorithm', 'a kid of another algorithm selects nothing',
        'an algorithm without keys selects nothing'])
def test_candidate_keys_match_algorithm_first_then_kid(alg: str, kid: str | None, expected: list[str | None]) -> None:
    public = rsa_key(TRUSTED).public_key()
    keys = (VerificationKey('RS256', public, 'a'), VerificationKey('RS256', public, 'b'),
            VerificationKey('RS256', public, None))
    assert [k.kid for k in candidate_keys(keys, alg, kid)] == expected


@pytest.mark.parametrize('header, expected', [
    (None, MissingToken),
    ('', MissingToken),
    ('Basic dXNlcjpwYXNz', MissingToken),
    ('Bearer', MissingToken),
    ('Bearer    ', MissingToken),
    ('Bearer abc.def.ghi', 'abc.def.ghi'),
    ('bearer abc.def.ghi', 'abc.def.ghi'),
    ('  Bearer   abc.def.ghi  ', 'abc.def.ghi'),
    ('Bearer ' + 'a' * 9000, 'too_large'),
], ids=['no header', 'an empty header', 'another scheme', 'the scheme alone', 'the scheme and spaces',
        'a bearer token', 'the scheme in lower case', 'surrounding spaces', 'a token over 8 KB'])
def test_the_bearer_token_is_taken_from_the_authorization_header(header: str | None, expected: Any) -> None:
    result = bearer_token(header)
    if expected is MissingToken:
        assert isinstance(result, MissingToken) and result.code == 'missing_token'
    elif isinstance(result, AuthError):
        assert result.reason == expected
    else:
        assert result == expected


@pytest.mark.parametrize('token, kid', [
    (sign(claims(), HMAC_SECRET, kid='k1'), 'k1'),
    (sign(claims(), HMAC_SECRET), None),
    ('garbage', None),
], ids=['a parsable token gives its kid', 'a token without a kid gives none', 'garbage gives none'])
def test_the_unverified_kid_is_only_a_lookup_hint(token: str, kid: str | None) -> None:
    assert unverified_kid(token) == kid
