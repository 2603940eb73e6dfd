"""Signed digests: a signature every N records or T minutes over the records written since the last one.

A digest is itself a record of the log (``event_type: audit.digest``), written right after the
records it covers, so it is chained like any record and travels with them to every sink: an
Elasticsearch or S3 copy can be verified exactly as the local file is. Its ``metadata`` is::

    {"statement": {...}, "signature": "<base64>"}

and the signature is over ``canonical(statement)`` (sorted-key compact JSON, UTF-8)::

    version              1
    algorithm            "ed25519" or "rsa-pss-sha256" (PSS, MGF1-SHA256, 32-byte salt)
    key_id               "sha256:" + the first 32 hex digits of sha256(the public key, DER SubjectPublicKeyInfo)
    first_seq, last_seq  the covered range: every record after the previous digest, up to this one
    count                last_seq - first_seq + 1
    records_hash         "sha256:" + sha256 over the covered records' ``hash`` values, each
                         followed by "\\n", in seq order (the concatenation, not a Merkle tree)
    last_hash            the ``hash`` of record ``last_seq``
    previous_digest_seq  the seq of the previous digest record (null for the first)
    previous_signature   that digest's signature (null for the first): digests form their own chain
    signed_at            when the digest was made (the records' timestamp format)

Whoever holds the log but not the private key can change records and recompute the hash
chain, but cannot sign a digest that a pinned public key accepts. ``chain.py`` checks them.

Pure apart from ``load_*`` (which read a key file): no clock, no randomness beyond what RSA-PSS
needs. Never logs or returns key material; errors name the file and the problem only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from agentgov.audit.errors import AuditConfigError
from agentgov.audit.record import DIGEST_EVENT, AuditEvent, canonical

DigestAlgorithm = Literal["ed25519", "rsa-pss-sha256"]
STATEMENT_VERSION: Final = 1
MIN_RSA_BITS: Final = 2048
MAX_KEY_FILE_BYTES: Final = 64 * 1024
_PSS_SALT_BYTES: Final = 32
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def key_id(public: PublicKey) -> str:
    """The id a digest names its key by: a fingerprint of the public key (never secret)."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:32]


def _algorithm(key: PrivateKey | PublicKey) -> DigestAlgorithm:
    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) else "rsa-pss-sha256"


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs digests (Ed25519, or RSA of at least 2048 bits)."""

    key: PrivateKey
    key_id: str
    algorithm: DigestAlgorithm

    def __repr__(self) -> str:  # never the key
        return f"SigningKey({self.algorithm}, {self.key_id})"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), _PSS_SALT_BYTES), hashes.SHA256())

    def public(self) -> VerifyKey:
        return VerifyKey(self.key.public_key(), self.key_id, self.algorithm)


@dataclass(frozen=True)
class VerifyKey:
    """A pinned public key digests are checked against."""

    key: PublicKey
    key_id: str
    algorithm: DigestAlgorithm

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, data)
            else:
                self.key.verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA256()), _PSS_SALT_BYTES),
                                hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise AuditConfigError(f"{what} {path}: {error.strerror or type(error).__name__}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise AuditConfigError(f"{what} {path}: larger than {MAX_KEY_FILE_BYTES // 1024} KiB; not a key file")
    return data


def _checked(key: object, where: str) -> PrivateKey | PublicKey:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise AuditConfigError(f"{where}: an RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return key
    raise AuditConfigError(f"{where}: a {type(key).__name__.lstrip('_')} key; digests are signed with Ed25519 or RSA")


def signing_key_from_pem(data: bytes, where: str = "the digest key") -> SigningKey:
    """A signing key from PEM (PKCS#8 or traditional, unencrypted); AuditConfigError otherwise."""
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuditConfigError(f"{where}: not an unencrypted PEM private key (Ed25519 or RSA)") from None
    key = cast(PrivateKey, _checked(loaded, where))
    return SigningKey(key, key_id(key.public_key()), _algorithm(key))


def verify_key_from_pem(data: bytes, where: str = "the public key") -> VerifyKey:
    """A public key from PEM; a private key file is accepted too (its public half is used)."""
    try:
        loaded: object = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise AuditConfigError(f"{where}: not a PEM public key (Ed25519 or RSA)") from None
    key = cast(PublicKey, _checked(loaded, where))
    return VerifyKey(key, key_id(key), _algorithm(key))


def load_signing_key(path: Path) -> SigningKey:
    return signing_key_from_pem(_read_key_file(path, "digest key file"), f"digest key file {path}")


def load_verify_key(path: Path) -> VerifyKey:
    return verify_key_from_pem(_read_key_file(path, "public key file"), f"public key file {path}")


# --- building ------------------------------------------------------------------------------


def records_hash(hashes_in_order: Iterable[str]) -> str:
    """``sha256:`` over each covered record's hash followed by a newline, in seq order."""
    h = RangeHash()
    for value in hashes_in_order:
        h.add(value)
    return h.value()


class RangeHash:
    """``records_hash`` computed incrementally, one record hash at a time (O(1) memory)."""

    __slots__ = ("_h", "count", "last_hash")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0
        self.last_hash: str | None = None

    def add(self, record_hash: str) -> None:
        self._h.update(record_hash.encode("ascii", "replace") + b"\n")
        self.count += 1
        self.last_hash = record_hash

    def value(self) -> str:
        return "sha256:" + self._h.hexdigest()

    def copy(self) -> RangeHash:
        twin = RangeHash()
        twin._h, twin.count, twin.last_hash = self._h.copy(), self.count, self.last_hash
        return twin


@dataclass(frozen=True)
class DigestLink:
    """Where the previous digest is: its seq and signature (what the next digest names)."""

    seq: int
    signature: str


def statement(*, first_seq: int, last_seq: int, covered: RangeHash, previous: DigestLink | None,
              key: SigningKey | VerifyKey, signed_at: str) -> dict[str, object]:
    """The signed part of a digest over records ``first_seq``..``last_seq``. Pure."""
    if covered.count != last_seq - first_seq + 1 or covered.last_hash is None:
        raise ValueError(f"the range seq {first_seq}-{last_seq} does not hold {covered.count} record(s)")
    return {
        "version": STATEMENT_VERSION,
        "algorithm": key.algorithm,
        "key_id": key.key_id,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "count": covered.count,
        "records_hash": covered.value(),
        "last_hash": covered.last_hash,
        "previous_digest_seq": previous.seq if previous else None,
        "previous_signature": previous.signature if previous else None,
        "signed_at": signed_at,
    }


def signed_bytes(stmt: Mapping[str, object]) -> bytes:
    """What is signed: the statement in the records' canonical form (any JSON tool can redo it)."""
    return canonical(stmt)


def sign(stmt: Mapping[str, object], key: SigningKey) -> str:
    return base64.b64encode(key.sign(signed_bytes(stmt))).decode("ascii")


def digest_event(stmt: Mapping[str, object], signature: str, timestamp: float) -> AuditEvent:
    """The event a digest is written as (built without redaction: it holds hashes and a signature)."""
    return AuditEvent(DIGEST_EVENT, "success", "sign", "audit-log", timestamp,
                      metadata={"statement": dict(stmt), "signature": signature})


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestClaim:
    """A digest as found in a record: its statement (what was signed) and signature."""

    statement: Mapping[str, object]
    signature: str
    first_seq: int
    last_seq: int
    count: int
    records_hash: str
    key_id: str
    algorithm: str
    previous_digest_seq: int | None
    previous_signature: str | None

    def signature_valid(self, key: VerifyKey) -> bool:
        try:
            raw = base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        return key.algorithm == self.algorithm and key.verify(signed_bytes(self.statement), raw)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_claim(record: Mapping[str, object]) -> DigestClaim | str:
    """The digest a record carries, or a message saying why it is not a well-formed one."""
    metadata = record.get("metadata")
    if not isinstance(metadata, Mapping):
        return "a digest record without metadata"
    stmt, signature = metadata.get("statement"), metadata.get("signature")
    if not isinstance(stmt, Mapping) or not isinstance(signature, str):
        return "a digest record without a statement and signature"
    first, last, count = _int(stmt.get("first_seq")), _int(stmt.get("last_seq")), _int(stmt.get("count"))
    previous_seq = stmt.get("previous_digest_seq")
    previous_signature = stmt.get("previous_signature")
    fields_ok = (
        first is not None and last is not None and count is not None
        and isinstance(stmt.get("records_hash"), str) and isinstance(stmt.get("key_id"), str)
        and isinstance(stmt.get("algorithm"), str)
        and (previous_seq is None or _int(previous_seq) is not None)
        and (previous_signature is None or isinstance(previous_signature, str))
    )
    if not fields_ok or first is None or last is None or count is None:
        return "a digest statement with missing or mistyped fields"
    return DigestClaim(
        statement=stmt, signature=signature, first_seq=first, last_seq=last, count=count,
        records_hash=str(stmt["records_hash"]), key_id=str(stmt["key_id"]), algorithm=str(stmt["algorithm"]),
        previous_digest_seq=_int(previous_seq), previous_signature=previous_signature if isinstance(previous_signature, str) else None,
    )
