"""Scoped tokens: mint a narrow JWT for automation (the playbook's ``create_scoped_token``).

Used by ``agentgov token create`` (with a key file) and by the admin endpoint
``POST /agentgov/v1/tokens`` (with the bundle's signing key). A minted token carries ``iss``,
``aud``, ``sub``, ``role``, ``scope`` (space-separated), ``iat``/``nbf``/``exp`` and a ``jti``;
when an admin mints it over HTTP, ``act.sub`` names that admin (RFC 8693 actor claim).

The endpoint only mints what is *narrower* than its caller: a role whose permissions the
caller's role already has, scopes the caller's token already holds, a TTL within the
sidecar's maximum. Pure except ``load_signing_key`` which only parses bytes it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, cast, get_args

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentgov.api.agentdeployment import JwtAlgorithm
from agentgov.api.defaults import Permission
from agentgov.sidecar.auth import MAX_SCOPES, SCOPE, Identity, is_claim_string
from agentgov.sidecar.authz import permissions_of
from agentgov.sidecar.errors import BadRequest, Forbidden, KeyMaterialError, SidecarError
from agentgov.sidecar.keys import (
    MIN_HMAC_BYTES, PrivateKey, VerificationKey, algorithm_of, hmac_secret, key_file_entries, parse_jwk, pem_blocks,
)

JWT_ALGORITHMS: Final[tuple[str, ...]] = get_args(JwtAlgorithm)
_DURATION: Final = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class SigningKey:
    """A key that signs tokens with exactly one algorithm."""

    alg: JwtAlgorithm
    key: bytes | PrivateKey = field(repr=False)
    kid: str | None = None

    def verification_key(self, source: str = "signingKey") -> VerificationKey:
        public = self.key if isinstance(self.key, bytes) else self.key.public_key()
        return VerificationKey(alg=self.alg, key=public, kid=self.kid, source=source)


def parse_ttl(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1h30m`` or plain seconds -> seconds; ValueError otherwise."""
    text = text.strip()
    if text.isdigit():
        seconds = int(text)
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h or 1h30m")
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < 1:
        raise ValueError("the TTL must be at least one second")
    return seconds


def load_signing_key(data: bytes, alg: str | None = None, kid: str | None = None) -> SigningKey:
    """A signing key from a key file: a private PEM, a private JWK (or JWKS), or a raw HMAC secret.

    ``alg``, when given, must be the key's own algorithm (an RSA key never signs HS256).
    """
    if alg is not None and alg not in JWT_ALGORITHMS:
        raise KeyMaterialError(f"algorithm {alg!r} is not one of {', '.join(JWT_ALGORITHMS)}")
    stripped = data.strip()
    if not stripped:
        raise KeyMaterialError("the key file is empty")
    key: bytes | PrivateKey
    if stripped.startswith(b"{"):
        key, own_alg, file_kid = _private_jwk(stripped)
        kid = kid or file_kid
    elif b"-----BEGIN" in stripped:
        blocks = [block for label, block in pem_blocks(stripped) if "PRIVATE" in label]
        if not blocks:
            raise KeyMaterialError("the key file holds no PEM private key")
        try:
            loaded = serialization.load_pem_private_key(blocks[0], password=None)
        except (ValueError, TypeError) as e:
            raise KeyMaterialError(f"the PEM private key cannot be read: {e}") from None
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyMaterialError(f"unsupported private key type {type(loaded).__name__}")
        key, own_alg = loaded, algorithm_of(loaded)
    else:
        key, own_alg = hmac_secret(data), "HS256"
        if len(key) < MIN_HMAC_BYTES:
            raise KeyMaterialError(f"HMAC key of {len(key)} bytes; at least {MIN_HMAC_BYTES} are required")
    if alg is not None and alg != own_alg:
        raise KeyMaterialError(f"the key file holds a {own_alg} key, not a {alg} key")
    return SigningKey(alg=own_alg, key=key, kid=kid)


def _private_jwk(data: bytes) -> tuple[bytes | PrivateKey, JwtAlgorithm, str | None]:
    entries = key_file_entries(data)
    if not isinstance(entries, list):
        raise KeyMaterialError("'keys' is not a list")
    for jwk in entries:
        if not isinstance(jwk, dict) or not ("d" in jwk or jwk.get("kty") == "oct"):
            continue
        public = parse_jwk(jwk, allow_shared=True, source="signingKey")
        kid = public.kid
        if public.alg == "HS256":
            assert isinstance(public.key, bytes)
            return public.key, "HS256", kid
        algorithm = jwt.get_algorithm_by_name(public.alg)
        try:
            private = algorithm.from_jwk(jwk)
        except (jwt.InvalidKeyError, ValueError) as e:
            raise KeyMaterialError(f"key {kid!r}: {e}") from None
        return cast(PrivateKey, private), public.alg, kid
    raise KeyMaterialError("the key file holds no private or shared key")


def mint(*, user: str, role: str, scopes: Sequence[str], ttl_seconds: int, key: SigningKey, issuer: str,
         audience: str, now: float, token_id: str, team: str | None = None, actor: str | None = None) -> str:
    """Sign a scoped token. ``now`` and ``token_id`` are given so the result is reproducible."""
    issued = int(now)
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "role": role,
        "scope": " ".join(sorted(set(scopes))),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": token_id,
    }
    if team:
        claims["team"] = team
    if actor:
        claims["act"] = {"sub": actor}
    headers: dict[str, object] = {"typ": "JWT"}
    if key.kid:
        headers["kid"] = key.kid
    return jwt.encode(claims, key.key, algorithm=key.alg, headers=headers)


@dataclass(frozen=True)
class MintRequest:
    """What an admin asked for, checked."""

    user: str
    role: str
    scopes: tuple[str, ...]
    ttl_seconds: int
    team: str | None = None


def check_mint_request(body: object, caller: Identity, roles: Mapping[str, Sequence[Permission]],
                       max_ttl_seconds: int) -> MintRequest | SidecarError:
    """Validate ``{"user", "role", "scopes", "ttl", "team"}`` and that it is narrower than the caller."""
    if not isinstance(body, dict):
        return BadRequest("the body must be a JSON object with user, role, scopes and ttl")
    unknown = sorted(set(body) - {"user", "role", "scopes", "ttl", "team"})
    if unknown:
        return BadRequest(f"unknown field(s): {', '.join(str(u)[:32] for u in unknown[:5])}")
    user, role, team = body.get("user"), body.get("role"), body.get("team")
    if not is_claim_string(user):
        return BadRequest("user must be a non-empty printable string of at most 256 characters")
    if not isinstance(role, str) or role not in roles:
        return BadRequest(f"role must be one of this agent's roles: {', '.join(sorted(roles))}")
    if team is not None and not is_claim_string(team):
        return BadRequest("team must be a printable string of at most 256 characters")
    scopes = body.get("scopes", [])
    if not isinstance(scopes, list) or len(scopes) > MAX_SCOPES or not all(
            isinstance(s, str) and SCOPE.fullmatch(s) for s in scopes):
        return BadRequest(f"scopes must be a list of at most {MAX_SCOPES} scope names (printable, no spaces)")
    ttl = body.get("ttl", "1h")
    try:
        ttl_seconds = ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else parse_ttl(str(ttl))
    except ValueError as e:
        return BadRequest(f"ttl: {e}")
    if not 1 <= ttl_seconds <= max_ttl_seconds:
        return BadRequest(f"ttl must be between 1 second and {max_ttl_seconds} seconds")
    wider = permissions_of(role, roles) - permissions_of(caller.role, roles)
    if wider:
        return Forbidden("mint_not_narrower",
                         f"role {role!r} grants {', '.join(sorted(wider))}, which your role does not")
    extra = sorted(set(scopes) - caller.scopes)
    if extra:
        return Forbidden("mint_not_narrower", f"scope(s) {', '.join(extra)} are not held by your token")
    return MintRequest(user=user, role=role, scopes=tuple(sorted(set(scopes))), ttl_seconds=ttl_seconds, team=team)
