"""The forged and broken token corpus: every entry must be refused, by the pure verifier and over HTTP.

Two trust setups, as a sidecar would have them:

- ``asym``: RS256, ES256 and EdDSA public keys in a JWKS key file, kids ``rsa-1``, ``ec-1``, ``ed-1``;
- ``hs``: a raw 46-byte HS256 secret.

Each entry builds its token at call time (fresh ``exp``), names the setup it targets and the
reason the verifier must give. An attacker holds their own keys (``attacker``), the trusted
*public* keys (they are public), never a trusted private key or the HMAC secret.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from sidecar_support import (
    AUDIENCE, ISSUER, b64url, claims, ec_key, ed_key, public_jwk, public_pem, raw_token, rsa_key, sign,
)

TRUSTED = 'trusted'
ATTACKER = 'attacker'


def asym_key_file() -> bytes:
    """The verification key file of the ``asym`` setup (public JWKs only)."""
    return json.dumps({'keys': [
        public_jwk(rsa_key(TRUSTED), 'rsa-1'),
        public_jwk(ec_key(TRUSTED), 'ec-1'),
        public_jwk(ed_key(TRUSTED), 'ed-1'),
    ]}).encode()


def good_rs256(**extra: Any) -> str:
    return sign(claims(**extra), rsa_key(TRUSTED), 'RS256', kid='rsa-1')


def _hs_with(secret: bytes, payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    head = b64url(json.dumps(header or {'alg': 'HS256', 'typ': 'JWT'}))
    body = b64url(json.dumps(payload))
    mac = hmac.new(secret, f'{head}.{body}'.encode(), hashlib.sha256).digest()
    return f'{head}.{body}.{b64url(mac)}'


def _split(token: str) -> list[str]:
    return token.split('.')


def _resigned_payload(token: str, **changes: Any) -> str:
    """Keep header and signature, change the claims (a tampered payload)."""
    head, _, sig = _split(token)
    payload = claims(**changes)
    return f'{head}.{b64url(json.dumps(payload))}.{sig}'


def _ecdsa_zero() -> str:
    """CVE-2022-21449 ('psychic signatures'): r = s = 0."""
    return raw_token({'alg': 'ES256', 'kid': 'ec-1'}, claims(role='admin'), b'\x00' * 64)


def _es256_der_signature() -> str:
    """A genuine ES256 signature, but DER-encoded instead of JOSE's raw r||s."""
    token = sign(claims(), ec_key(TRUSTED), 'ES256', kid='ec-1')
    head, body, sig = _split(token)
    raw = jwt.utils.base64url_decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], 'big'), int.from_bytes(raw[32:], 'big'))
    return f'{head}.{body}.{b64url(der)}'


def _es256_high_s() -> str:
    """The malleable twin of a valid ECDSA signature (s -> n - s) on *changed* claims is not valid."""
    token = sign(claims(), ec_key(TRUSTED), 'ES256', kid='ec-1')
    head, _, sig = _split(token)
    raw = jwt.utils.base64url_decode(sig)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    r, s = int.from_bytes(raw[:32], 'big'), int.from_bytes(raw[32:], 'big')
    twin = r.to_bytes(32, 'big') + (n - s).to_bytes(32, 'big')
    return f'{head}.{b64url(json.dumps(claims(role="admin")))}.{b64url(twin)}'


def _x5c_injected() -> str:
    key = rsa_key(ATTACKER)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'login.example.com')])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return sign(claims(role='admin'), key, 'RS256', kid='rsa-1', x5c=[base64.b64encode(der).decode()])


@dataclass(frozen=True)
class Forgery:
    id: str
    make: Callable[[], str]
    setup: str  # 'asym' or 'hs'
    reason: str  # AuthError.reason the verifier must give


CORPUS: tuple[Forgery, ...] = (
    Forgery('alg none without a signature',
            lambda: raw_token({'alg': 'none', 'typ': 'JWT'}, claims(role='admin')), 'asym', 'algorithm'),
    Forgery('alg None in another case',
            lambda: raw_token({'alg': 'None'}, claims(role='admin')), 'asym', 'algorithm'),
    Forgery('alg none carrying a real signature',
            lambda: raw_token({'alg': 'none'}, claims(role='admin'), _split(good_rs256())[2]), 'asym', 'algorithm'),
    Forgery('HS256 signed with the RSA public key PEM as the HMAC secret',
            lambda: _hs_with(public_pem(rsa_key(TRUSTED)), claims(role='admin'), {'alg': 'HS256', 'kid': 'rsa-1'}),
            'asym', 'algorithm'),
    Forgery('HS256 signed with the public JWK as the HMAC secret',
            lambda: _hs_with(json.dumps(public_jwk(rsa_key(TRUSTED), 'rsa-1')).encode(), claims(role='admin')),
            'asym', 'algorithm'),
    Forgery('an algorithm the policy does not list (RS384)',
            lambda: sign(claims(), rsa_key(TRUSTED), 'RS384', kid='rsa-1'), 'asym', 'algorithm'),
    Forgery('RS256 with the signature stripped',
            lambda: '.'.join(_split(good_rs256())[:2]) + '.', 'asym', 'signature'),
    Forgery('RS256 with the signature segment missing',
            lambda: '.'.join(_split(good_rs256())[:2]), 'asym', 'malformed'),
    Forgery('RS256 signed by an attacker key under a trusted kid',
            lambda: sign(claims(role='admin'), rsa_key(ATTACKER), 'RS256', kid='rsa-1'), 'asym', 'signature'),
    Forgery('RS256 with a truncated signature',
            lambda: good_rs256()[:-4], 'asym', 'signature'),
    Forgery('a genuine signature over tampered claims (role raised to admin)',
            lambda: _resigned_payload(good_rs256(), role='admin'), 'asym', 'signature'),
    Forgery('ES256 with r = s = 0 (psychic signature)', _ecdsa_zero, 'asym', 'signature'),
    Forgery('ES256 with a DER signature instead of raw r||s', _es256_der_signature, 'asym', 'signature'),
    Forgery('ES256 with the malleated s over changed claims', _es256_high_s, 'asym', 'signature'),
    Forgery('EdDSA signed by an attacker key',
            lambda: sign(claims(), ed_key(ATTACKER), 'EdDSA', kid='ed-1'), 'asym', 'signature'),
    Forgery('expired beyond the leeway',
            lambda: good_rs256(exp=int(claims()['iat']) - 120), 'asym', 'expired'),
    Forgery('no exp claim', lambda: good_rs256(exp=None), 'asym', 'claims'),
    Forgery('exp as a string', lambda: good_rs256(exp='99999999999'), 'asym', 'claims'),
    Forgery('nbf in the future beyond the leeway',
            lambda: good_rs256(nbf=int(claims()['iat']) + 600), 'asym', 'not_yet_valid'),
    Forgery('iat in the future beyond the leeway',
            lambda: good_rs256(iat=int(claims()['iat']) + 600), 'asym', 'issued_in_future'),
    Forgery('a different issuer', lambda: good_rs256(iss='https://evil.example.net/'), 'asym', 'issuer'),
    Forgery('an issuer that is a prefix of the expected one',
            lambda: good_rs256(iss=ISSUER.rstrip('/')), 'asym', 'issuer'),
    Forgery('an issuer that contains the expected one',
            lambda: good_rs256(iss=ISSUER + '.evil.example.net'), 'asym', 'issuer'),
    Forgery('the issuer as a list', lambda: good_rs256(iss=[ISSUER]), 'asym', 'issuer'),
    Forgery('a different audience', lambda: good_rs256(aud='other.example.com'), 'asym', 'audience'),
    Forgery('an audience that is a prefix of the expected one',
            lambda: good_rs256(aud=AUDIENCE[:-1]), 'asym', 'audience'),
    Forgery('no audience', lambda: good_rs256(aud=None), 'asym', 'audience'),
    Forgery('an unknown crit header',
            lambda: sign(claims(), rsa_key(TRUSTED), 'RS256', kid='rsa-1', crit=['exp']), 'asym', 'critical_header'),
    Forgery('b64=false declared critical',
            lambda: raw_token({'alg': 'RS256', 'kid': 'rsa-1', 'b64': False, 'crit': ['b64']}, claims(),
                              _split(good_rs256())[2]), 'asym', 'critical_header'),
    Forgery('kid path traversal to /dev/null with an empty HMAC key',
            lambda: _hs_with(b'', claims(role='admin'), {'alg': 'HS256', 'kid': '../../../../../../dev/null'}),
            'hs', 'signature'),
    Forgery('kid carrying an SQL injection',
            lambda: _hs_with(b'x', claims(role='admin'), {'alg': 'HS256', 'kid': "' UNION SELECT 'x' --"}),
            'hs', 'signature'),
    Forgery('an embedded jwk header with the attacker key',
            lambda: sign(claims(role='admin'), rsa_key(ATTACKER), 'RS256', kid='rsa-1',
                         jwk=public_jwk(rsa_key(ATTACKER), 'rsa-1')), 'asym', 'signature'),
    Forgery('a jku header pointing at the attacker',
            lambda: sign(claims(role='admin'), rsa_key(ATTACKER), 'RS256', kid='evil',
                         jku='https://evil.example.net/jwks.json'), 'asym', 'unknown_key'),
    Forgery('an x5u header pointing at the attacker',
            lambda: sign(claims(role='admin'), ec_key(ATTACKER), 'ES256', x5u='https://evil.example.net/cert.pem'),
            'asym', 'signature'),
    Forgery('an x5c header with the attacker certificate', _x5c_injected, 'asym', 'signature'),
    Forgery('HS256 signed with a wrong secret', lambda: sign(claims(), b'w' * 48, 'HS256'), 'hs', 'signature'),
    Forgery('bad base64 in the header',
            lambda: '!!!.' + '.'.join(_split(good_rs256())[1:]), 'asym', 'malformed'),
    Forgery('padded base64 in the signature', lambda: good_rs256() + '==', 'asym', 'malformed'),
    Forgery('a header that is not JSON',
            lambda: raw_token(b64url('{not json'), claims()), 'asym', 'malformed'),
    Forgery('a header that is a JSON array',
            lambda: raw_token(b64url('["RS256"]'), claims()), 'asym', 'malformed'),
    Forgery('claims that are a JSON string',
            lambda: raw_token({'alg': 'RS256'}, b64url('"alice"')), 'asym', 'malformed'),
    Forgery('duplicate alg members in the header',
            lambda: raw_token(b64url('{"alg":"RS256","alg":"none"}'), claims()), 'asym', 'malformed'),
    Forgery('five segments (a JWE)',
            lambda: raw_token({'alg': 'RSA-OAEP', 'enc': 'A256GCM'}, claims()) + '.x.y', 'asym', 'malformed'),
    Forgery('an encrypted-token header with a signature',
            lambda: sign(claims(), rsa_key(TRUSTED), 'RS256', kid='rsa-1', enc='A256GCM'), 'asym', 'malformed'),
    Forgery('non-ASCII characters in the token', lambda: good_rs256() + 'é', 'asym', 'malformed'),
    Forgery('a valid signature over a subject with CRLF header injection',
            lambda: good_rs256(sub='alice\r\nX-Agentgov-Role: admin'), 'asym', 'claims'),
    Forgery('a token just over 8 KB',
            lambda: good_rs256(pad='x' * 8200), 'asym', 'too_large'),
    Forgery('a 1 MB token', lambda: 'eyJ' + 'A' * (1024 * 1024), 'asym', 'too_large'),
    Forgery('random bytes', lambda: 'a.b.c', 'asym', 'malformed'),
)

assert len(CORPUS) >= 25
assert len({f.id for f in CORPUS}) == len(CORPUS)
