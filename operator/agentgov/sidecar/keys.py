"""Verification keys: parse key files and JWKS documents into keys bound to one algorithm each.

Every key accepts exactly one algorithm, decided by what the key *is* (an RSA key verifies
RS256, a P-256 key ES256, an Ed25519 key EdDSA, a shared secret HS256), never by what a token
says. That is what makes algorithm confusion impossible: a token claiming HS256 is only ever
checked against shared secrets, so an RSA public key can never be used as an HMAC secret.

Formats of the bundle's ``auth.keyFile`` (the Secret key the operator mounts):

- a JWKS (``{"keys": [...]}``) or a single JWK: the way to rotate with ``kid``s; ``oct`` keys
  (shared secrets) are allowed here, never in a JWKS fetched from a URL;
- one or more PEM blocks (``PUBLIC KEY``, ``RSA PUBLIC KEY``, ``CERTIFICATE``): keys without a
  ``kid``, all tried (old and new during a rotation);
- anything else: the raw HMAC secret for HS256 (one trailing newline ignored).

Refused at load, with a message naming the key: HMAC secrets under 32 bytes, RSA keys under
2048 bits, curves other than P-256 for EC, private keys in a verification file, keys whose
algorithm the bundle does not allow. Pure: bytes and dicts in, keys out; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from agentgov.api.agentdeployment import JwtAlgorithm
from agentgov.sidecar.errors import KeyMaterialError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

MIN_HMAC_BYTES: Final = 32
MIN_RSA_BITS: Final = 2048
MAX_KEYS: Final = 64
MAX_KID_CHARS: Final = 256


@dataclass(frozen=True)
class VerificationKey:
    """A key and the one algorithm it verifies. ``kid`` is None for PEM and raw keys."""

    alg: JwtAlgorithm
    key: bytes | PublicKey = field(repr=False)
    kid: str | None = None
    source: str = "keyFile"


KeySet = tuple[VerificationKey, ...]


def hmac_secret(data: bytes) -> bytes:
    """A raw HMAC secret as stored in a Secret file: one trailing newline is not part of it."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def algorithm_of(key: PublicKey | PrivateKey) -> JwtAlgorithm:
    """The only algorithm a public (or private) key may be used with; KeyMaterialError otherwise."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyMaterialError(f"EC key on curve {key.curve.name}; ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise KeyMaterialError(f"unsupported key type {type(key).__name__}")


def _check_hmac(secret: bytes, what: str) -> bytes:
    if len(secret) < MIN_HMAC_BYTES:
        raise KeyMaterialError(
            f"{what}: HMAC key of {len(secret)} bytes; at least {MIN_HMAC_BYTES} are required"
        )
    return secret


def _check_allowed(alg: JwtAlgorithm, algorithms: Sequence[JwtAlgorithm], what: str) -> None:
    if alg not in algorithms:
        raise KeyMaterialError(f"{what} is a {alg} key but auth.algorithms allows {', '.join(algorithms)}")


def parse_jwk(jwk: Mapping[str, object], *, allow_shared: bool, source: str = "jwks") -> VerificationKey:
    """One JWK -> a verification key; KeyMaterialError naming what is wrong."""
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
        raise KeyMaterialError("kid must be a non-empty string of at most 256 characters")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise KeyMaterialError(f"key {kid!r} has use {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise KeyMaterialError(f"key {kid!r}: key_ops does not include 'verify'")
    data = dict(jwk)
    key: bytes | PublicKey
    try:
        if kty == "oct":
            if not allow_shared:
                raise KeyMaterialError(f"key {kid!r} is a shared (oct) key; a JWKS URL never serves those")
            key = _check_hmac(HMACAlgorithm.from_jwk(data), f"key {kid!r}")
            alg: JwtAlgorithm = "HS256"
        elif kty == "RSA":
            key = _public(RSAAlgorithm.from_jwk(data))
            alg = algorithm_of(key)
        elif kty == "EC":
            key = _public(ECAlgorithm.from_jwk(data))
            alg = algorithm_of(key)
        elif kty == "OKP":
            okp = OKPAlgorithm.from_jwk(data)
            if not isinstance(okp, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
                raise KeyMaterialError(f"key {kid!r}: only the Ed25519 curve is supported for EdDSA")
            key = _public(okp)
            alg = "EdDSA"
        else:
            raise KeyMaterialError(f"key {kid!r}: unsupported kty {kty!r}")
    except (InvalidKeyError, ValueError, TypeError) as e:
        raise KeyMaterialError(f"key {kid!r}: {e}") from None
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        raise KeyMaterialError(f"key {kid!r} declares alg {declared!r} but is a {alg} key")
    return VerificationKey(alg=alg, key=key, kid=kid, source=source)


def _public(key: object) -> PublicKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return key
    raise KeyMaterialError(f"unsupported key type {type(key).__name__}")


def parse_jwks(document: object, algorithms: Sequence[JwtAlgorithm], *, source: str = "jwks") -> tuple[KeySet, list[str]]:
    """A JWKS fetched from a URL -> (usable keys, one problem per skipped key).

    Keys that cannot be used (shared keys, other algorithms, bad material) are skipped, not
    fatal: an IdP publishing a key we do not need must not stop us using the others.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyMaterialError("a JWKS is a JSON object with a 'keys' list")
    keys: list[VerificationKey] = []
    problems: list[str] = []
    for index, jwk in enumerate(document["keys"][:MAX_KEYS]):
        if not isinstance(jwk, dict):
            problems.append(f"keys[{index}] is not an object")
            continue
        try:
            key = parse_jwk(jwk, allow_shared=False, source=source)
            _check_allowed(key.alg, algorithms, f"keys[{index}]")
        except KeyMaterialError as e:
            problems.append(f"keys[{index}]: {e}")
            continue
        keys.append(key)
    if len(document["keys"]) > MAX_KEYS:
        problems.append(f"only the first {MAX_KEYS} keys are used")
    return tuple(keys), problems


def parse_key_file(data: bytes, algorithms: Sequence[JwtAlgorithm], *, source: str = "keyFile") -> KeySet:
    """The bundle's ``auth.keyFile`` content -> keys. Every key must be usable: errors are fatal."""
    stripped = data.strip()
    if not stripped:
        raise KeyMaterialError("the key file is empty")
    if stripped.startswith(b"{"):
        return _parse_json_keys(stripped, algorithms, source)
    if b"-----BEGIN" in stripped:
        return _parse_pem_keys(stripped, algorithms, source)
    _check_allowed("HS256", algorithms, "the key file (a raw secret)")
    return (VerificationKey(alg="HS256", key=_check_hmac(hmac_secret(data), "the key file"), source=source),)


def key_file_entries(data: bytes) -> object:
    """The JWKs of a JSON key file: the ``keys`` of a JWKS, or the file's one JWK in a list.

    Not necessarily a list (``{"keys": 1}``): the caller says what it needs.
    """
    try:
        document = json.loads(data)
    except ValueError as e:
        raise KeyMaterialError(f"the key file is not valid JSON: {e}") from None
    return document.get("keys") if isinstance(document, dict) and "keys" in document else [document]


def _parse_json_keys(data: bytes, algorithms: Sequence[JwtAlgorithm], source: str) -> KeySet:
    entries = key_file_entries(data)
    if not isinstance(entries, list) or not entries:
        raise KeyMaterialError("a JWKS key file needs a non-empty 'keys' list")
    if len(entries) > MAX_KEYS:
        raise KeyMaterialError(f"the key file holds {len(entries)} keys; at most {MAX_KEYS} are allowed")
    keys = []
    for index, jwk in enumerate(entries):
        if not isinstance(jwk, dict):
            raise KeyMaterialError(f"keys[{index}] is not an object")
        if "d" in jwk:
            raise KeyMaterialError(f"keys[{index}] is a private key; the verification file holds public keys")
        key = parse_jwk(jwk, allow_shared=True, source=source)
        _check_allowed(key.alg, algorithms, f"keys[{index}]")
        keys.append(key)
    kids = [k.kid for k in keys if k.kid is not None]
    if len(kids) != len(set(kids)):
        raise KeyMaterialError("two keys of the key file share a kid")
    return tuple(keys)


_PEM_BEGIN: Final = b"-----BEGIN "


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Split PEM text into (label, block) pairs."""
    blocks: list[tuple[str, bytes]] = []
    rest = data
    while (start := rest.find(_PEM_BEGIN)) != -1:
        label_end = rest.find(b"-----", start + len(_PEM_BEGIN))
        if label_end == -1:
            raise KeyMaterialError("a PEM block has no closing dashes after its label")
        label = rest[start + len(_PEM_BEGIN):label_end].decode("ascii", "replace")
        end_marker = b"-----END " + label.encode() + b"-----"
        end = rest.find(end_marker, label_end)
        if end == -1:
            raise KeyMaterialError(f"the PEM block {label!r} is not terminated")
        blocks.append((label, rest[start:end + len(end_marker)]))
        rest = rest[end + len(end_marker):]
    return blocks


def _parse_pem_keys(data: bytes, algorithms: Sequence[JwtAlgorithm], source: str) -> KeySet:
    keys = []
    blocks = pem_blocks(data)
    if len(blocks) > MAX_KEYS:
        raise KeyMaterialError(f"the key file holds {len(blocks)} keys; at most {MAX_KEYS} are allowed")
    for index, (label, block) in enumerate(blocks):
        what = f"PEM block {index + 1} ({label})"
        if "PRIVATE" in label:
            raise KeyMaterialError(f"{what} is a private key; the verification file holds public keys")
        try:
            if label == "CERTIFICATE":
                loaded: object = x509.load_pem_x509_certificate(block).public_key()
            elif label in ("PUBLIC KEY", "RSA PUBLIC KEY"):
                loaded = serialization.load_pem_public_key(block)
            else:
                raise KeyMaterialError(f"{what}: not a public key or certificate")
        except ValueError as e:
            raise KeyMaterialError(f"{what}: {e}") from None
        try:
            key = _public(loaded)
            alg = algorithm_of(key)
        except KeyMaterialError as e:
            raise KeyMaterialError(f"{what}: {e}") from None
        _check_allowed(alg, algorithms, what)
        keys.append(VerificationKey(alg=alg, key=key, source=source))
    return tuple(keys)


def candidate_keys(keys: KeySet, alg: str, kid: str | None) -> KeySet:
    """The keys a token with this ``alg`` and ``kid`` may be checked against.

    Only keys of the token's algorithm; with a ``kid``, the key of that kid, or when none has
    it, the keys without a kid (PEM and raw keys, tried in turn during a rotation).
    """
    same_alg = tuple(k for k in keys if k.alg == alg)
    if kid is None:
        return same_alg
    named = tuple(k for k in same_alg if k.kid == kid)
    return named or tuple(k for k in same_alg if k.kid is None)


def knows_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys)
