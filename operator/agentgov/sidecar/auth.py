"""JWT verification: ``verify(token, keys, policy, now) -> Identity | AuthError``. Pure.

The compact JWS is parsed here, strictly, rather than by a library that tolerates more than we
need: base64url without padding, JSON objects without duplicate members, a header naming one
of the policy's algorithms. The signature is checked with PyJWT's algorithm objects against
the keys bound to that algorithm (``keys.candidate_keys``). What the token may *not* decide:

- the algorithm's family (keys carry their own: no ``alg: none``, no HS/RS confusion);
- where keys come from: ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are ignored;
- extensions: any ``crit`` header is refused (we implement none), as are JWE (``enc``) and
  compressed (``zip``) tokens.

Then the claims, against ``now`` and the policy: ``exp`` required, ``nbf`` and ``iat``
honoured, each with the policy's leeway; ``iss`` equal to the issuer (never a prefix or
substring), ``aud`` one of the audiences; ``sub`` required. Tokens over 8 KB are refused
before any decoding. This module reads no clock and does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeGuard

from jwt.algorithms import Algorithm, get_default_algorithms

from agentgov.api.bundle import BundleAuth
from agentgov.sidecar.errors import AuthError, MissingToken
from agentgov.sidecar.keys import KeySet, candidate_keys

MAX_TOKEN_BYTES: Final = 8192
MAX_CLAIM_CHARS: Final = 256
MAX_SCOPES: Final = 64
ACCEPTED_TYPES: Final = frozenset({"jwt", "at+jwt", "application/at+jwt", "application/jwt"})
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")
# Visible ASCII and spaces inside values, nothing that could end a header line.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# One scope name: visible ASCII, no spaces (the separator of the ``scope`` claim).
SCOPE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_ALGORITHMS: Final = get_default_algorithms()


@dataclass(frozen=True)
class AuthPolicy:
    """What a token must satisfy; built from the bundle's ``auth``."""

    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway_seconds: int = 30
    max_token_bytes: int = MAX_TOKEN_BYTES

    @classmethod
    def from_bundle(cls, auth: BundleAuth) -> AuthPolicy:
        return cls(
            issuer=auth.issuer,
            audiences=frozenset(auth.audiences),
            algorithms=frozenset(auth.algorithms),
            leeway_seconds=auth.leeway_seconds,
        )


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, as the token describes it."""

    user: str
    role: str | None
    scopes: frozenset[str]
    issuer: str
    expires_at: float
    team: str | None = None
    # The caller's location (claim `region`, e.g. eu-west-1): residency rules match it.
    region: str | None = None
    token_id: str | None = None
    kid: str | None = None
    alg: str | None = None
    # `act.sub` of a minted token: the admin who minted it (RFC 8693 actor claim).
    actor: str | None = None


@dataclass(frozen=True)
class Jws:
    """A compact JWS split and decoded, signature not yet checked."""

    header: Mapping[str, object]
    claims: Mapping[str, object]
    signing_input: bytes
    signature: bytes


def bearer_token(authorization: str | None, max_bytes: int = MAX_TOKEN_BYTES) -> str | AuthError:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750), or why there is none."""
    if authorization is None or not authorization.strip():
        return MissingToken()
    if len(authorization) > max_bytes + len("Bearer "):
        return AuthError("too_large", f"authorization header of {len(authorization)} characters")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return MissingToken()
    token = token.strip()
    if not token:
        return MissingToken()
    if len(token) > max_bytes:
        return AuthError("too_large", f"token of {len(token)} characters")
    return token


def _b64decode(segment: str, what: str) -> bytes:
    if len(segment) % 4 == 1 or not _B64URL.fullmatch(segment):
        raise AuthError("malformed", f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("malformed", f"{what} is not base64url") from None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key[:32]!r}")
        result[key] = value
    return result


def _json_object(data: bytes, what: str) -> Mapping[str, object]:
    try:
        value = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise AuthError("malformed", f"{what} is not a JSON object")
    return value


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# The private helpers below raise AuthError; the public functions return it (``X | AuthError``).


def parse_jws(token: str, max_bytes: int = MAX_TOKEN_BYTES) -> Jws | AuthError:
    """Split and decode a compact JWS; every malformation is an AuthError("malformed")."""
    try:
        return _parse_jws(token, max_bytes)
    except AuthError as e:
        return e


def _parse_jws(token: str, max_bytes: int) -> Jws:
    if len(token) > max_bytes:
        raise AuthError("too_large", f"token of {len(token)} characters")
    if not token.isascii():
        raise AuthError("malformed", "token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed", f"{len(parts)} segments, a JWS has 3")
    header_b64, claims_b64, signature_b64 = parts
    header_bytes = _b64decode(header_b64, "header")
    claims_bytes = _b64decode(claims_b64, "payload")
    signature = _b64decode(signature_b64, "signature")
    return Jws(_json_object(header_bytes, "header"), _json_object(claims_bytes, "payload"),
               f"{header_b64}.{claims_b64}".encode("ascii"), signature)


def unverified_kid(token: str) -> str | None:
    """The header's ``kid`` if the token parses, for deciding whether to refresh a JWKS."""
    parsed = parse_jws(token)
    if isinstance(parsed, AuthError):
        return None
    kid = parsed.header.get("kid")
    return kid if isinstance(kid, str) and 0 < len(kid) <= MAX_CLAIM_CHARS else None


def _check_header(header: Mapping[str, object], policy: AuthPolicy) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms or alg not in _ALGORITHMS:
        raise AuthError("algorithm", f"algorithm {str(alg)[:16]!r} is not accepted")
    if "crit" in header:
        raise AuthError("critical_header", "the token has critical header extensions")
    if "enc" in header or "zip" in header:
        raise AuthError("malformed", "encrypted or compressed tokens are not accepted")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise AuthError("malformed", "the token type is not a JWT")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_CLAIM_CHARS):
        raise AuthError("malformed", "kid is not a short string")
    return alg, kid


def _number(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("claims", f"{name} is not a NumericDate")
    return float(value)


def is_claim_string(value: object) -> TypeGuard[str]:
    """A non-empty printable string of at most MAX_CLAIM_CHARS: what ``sub``, ``role``, ``team``
    and ``jti`` must be (and what the admin endpoint accepts for a minted user or team)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_CHARS and not _CONTROL.search(value)


def _short_string(claims: Mapping[str, object], name: str, *, required: bool = False) -> str | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError("claims", f"{name} is missing")
        return None
    if not is_claim_string(value):
        raise AuthError("claims", f"{name} is not a short printable string")
    return value


def _scopes(claims: Mapping[str, object]) -> frozenset[str]:
    """Scopes from ``scope`` (RFC 8693, space-separated) and ``scopes``/``scp`` (lists)."""
    found: list[str] = []
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError("claims", "scope is not a string")
        found.extend(scope.split())
    for name in ("scopes", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found.extend(value.split())
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            found.extend(str(v) for v in value)
        else:
            raise AuthError("claims", f"{name} is not a list of strings")
    if len(found) > MAX_SCOPES or not all(SCOPE.fullmatch(s) for s in found):
        raise AuthError("claims", "scopes are too many or not printable tokens")
    return frozenset(found)


def _audience_ok(aud: object, audiences: frozenset[str]) -> bool:
    if isinstance(aud, str):
        return aud in audiences
    if isinstance(aud, list) and 0 < len(aud) <= 32 and all(isinstance(a, str) for a in aud):
        return any(a in audiences for a in aud)
    return False


def verify(token: str, keys: KeySet, policy: AuthPolicy, now: float) -> Identity | AuthError:
    """Verify a compact JWS and its claims; the Identity it proves, or why it proves none."""
    try:
        parsed = _parse_jws(token, policy.max_token_bytes)
        alg, kid = _check_header(parsed.header, policy)
        candidates = candidate_keys(keys, alg, kid)
        if not candidates:
            raise AuthError("unknown_key", f"no {alg} key" + (" with that kid" if kid else ""))
        algorithm = _ALGORITHMS[alg]
        if not any(_signature_ok(algorithm, parsed, key.key) for key in candidates):
            raise AuthError("signature", "the signature does not verify")
        return _check_claims(parsed.claims, policy, now, kid=kid, alg=alg)
    except AuthError as e:
        return e


def _signature_ok(algorithm: Algorithm, parsed: Jws, key: object) -> bool:
    try:
        return bool(algorithm.verify(parsed.signing_input, key, parsed.signature))
    except (ValueError, TypeError, OverflowError):
        # Wrong-length signatures and the like: a failed verification, never a crash.
        return False


def _check_claims(claims: Mapping[str, object], policy: AuthPolicy, now: float, *, kid: str | None,
                  alg: str) -> Identity:
    leeway = policy.leeway_seconds
    exp = _number(claims, "exp")
    if exp is None:
        raise AuthError("claims", "exp is missing")
    if now >= exp + leeway:
        raise AuthError("expired", "the token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise AuthError("not_yet_valid", "the token is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise AuthError("issued_in_future", "the token was issued in the future (iat)")
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss != policy.issuer:
        raise AuthError("issuer", "the issuer is not the expected one")
    if not _audience_ok(claims.get("aud"), policy.audiences):
        raise AuthError("audience", "no accepted audience")
    user = _short_string(claims, "sub", required=True)
    role = _short_string(claims, "role")
    team = _short_string(claims, "team")
    region = _short_string(claims, "region")
    jti = _short_string(claims, "jti")
    scopes = _scopes(claims)
    actor = _actor(claims.get("act"))
    assert user is not None
    return Identity(
        user=user, role=role, scopes=scopes, issuer=iss, expires_at=exp, team=team, region=region,
        token_id=jti, kid=kid, alg=alg, actor=actor,
    )


def _actor(act: object) -> str | None:
    if act is None:
        return None
    if not isinstance(act, dict):
        raise AuthError("claims", "act is not an object")
    return _short_string(act, "sub", required=True)
