"""Load the policy bundle and the secret files it names; reload them atomically when they change.

A :class:`PolicySnapshot` is everything one request needs, built once and never changed: the
bundle, the verification keys, the signing key, the secret values (issue 5 reads model and
tool credentials from it), a redactor that knows those values. A request takes the snapshot
in force when it starts and uses it to the end, so a reload never half-applies to a request.

:class:`PolicyStore` polls the files (ConfigMap and Secret volumes change by an atomic symlink
swap; a poll needs no inotify and sees both). When the bundle or a secret changes it builds a
new snapshot; only a snapshot that built completely replaces the one in force. A missing or
malformed bundle, or an unusable key, keeps the last good snapshot in force and is reported
(``error``; /ready and the metrics say so); with no good snapshot at all the sidecar is not
ready and refuses requests with ``policy_unavailable``.

``build_snapshot`` is pure (the file reads are a callable it is given); the store does the I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final

import pydantic

from agentgov.api.bundle import PolicyBundle, SecretFile, bundle_hash, parse_bundle
from agentgov.api.resources import describe_validation_error
from agentgov.audit.record import AuditPolicy
from agentgov.sidecar.auth import AuthPolicy
from agentgov.sidecar.errors import ConfigError, PolicyUnavailable
from agentgov.sidecar.keys import KeySet, hmac_secret, parse_key_file
from agentgov.audit.redact import Redactor
from agentgov.sidecar.tokens import SigningKey, load_signing_key

log = logging.getLogger(__name__)

MAX_BUNDLE_BYTES: Final = 4 * 1024 * 1024
MAX_SECRET_BYTES: Final = 1024 * 1024

ReadSecret = Callable[[SecretFile], bytes | None]


@dataclass(frozen=True)
class SecretRead:
    """One secret file a snapshot needed: which, what for, whether it was there."""

    file: SecretFile
    purpose: str
    found: bool


@dataclass(frozen=True)
class PolicySnapshot:
    """One consistent view of policy and secrets; immutable."""

    bundle: PolicyBundle
    hash: str
    fingerprint: str
    auth_policy: AuthPolicy
    keys: KeySet
    signing_key: SigningKey | None
    secrets: Mapping[SecretFile, bytes] = field(repr=False)
    secret_reads: tuple[SecretRead, ...]
    redactor: Redactor
    loaded_at: float

    @property
    def agent(self) -> str:
        return f"{self.bundle.agent.namespace}/{self.bundle.agent.name}"

    @property
    def missing_secrets(self) -> tuple[SecretRead, ...]:
        return tuple(read for read in self.secret_reads if not read.found)

    def secret(self, file: SecretFile) -> bytes | None:
        """The value of a secret the bundle names (None when it was not mounted)."""
        return self.secrets.get(file)

    @cached_property
    def audit_policy(self) -> AuditPolicy:
        """Built once per snapshot: the writer asks for it on every event."""
        audit = self.bundle.audit
        return AuditPolicy(enabled=audit.enabled, retention_days=audit.retention_days, agent=self.agent,
                           redactor=self.redactor)


def named_secrets(bundle: PolicyBundle) -> list[tuple[SecretFile, str, bool]]:
    """Every secret file the bundle names: (file, purpose, required to serve at all)."""
    named: list[tuple[SecretFile, str, bool]] = []
    if bundle.auth.key_file:
        named.append((bundle.auth.key_file, "auth.keyFile", True))
    if bundle.auth.signing_key_file:
        named.append((bundle.auth.signing_key_file, "auth.signingKeyFile", True))
    for tool in bundle.tools:
        if tool.credentials_file:
            named.append((tool.credentials_file, f"tools[{tool.name}].credentialsFile", False))
    for model in bundle.models:
        if model.credentials_file:
            named.append((model.credentials_file, f"models[{model.name}].credentialsFile", False))
    for budget in bundle.budgets:
        if budget.webhook_key_file:
            named.append((budget.webhook_key_file, f"budgets[{budget.name}].webhookKeyFile", False))
    return named


def build_snapshot(bundle_bytes: bytes, read_secret: ReadSecret, *, loaded_at: float) -> PolicySnapshot:
    """Parse a bundle and resolve its secrets; ConfigError naming the field or file at fault."""
    if len(bundle_bytes) > MAX_BUNDLE_BYTES:
        raise ConfigError(f"the bundle is {len(bundle_bytes)} bytes; at most {MAX_BUNDLE_BYTES} are read")
    try:
        bundle = parse_bundle(bundle_bytes)
    except pydantic.ValidationError as e:
        # The fields at fault, never their values (a value could be a pasted secret).
        raise ConfigError(f"invalid bundle: {'; '.join(describe_validation_error(e)[:10])}") from None
    except ValueError as e:
        raise ConfigError(f"invalid bundle: {str(e)[:200]}") from None
    auth = bundle.auth
    if not auth.jwks_url and not auth.key_file:
        raise ConfigError("auth: a jwksUrl or a keyFile is required")
    if "HS256" in auth.algorithms and len(auth.algorithms) > 1:
        raise ConfigError("auth.algorithms: HS256 cannot be combined with asymmetric algorithms")

    digest = hashlib.sha256(bundle_bytes)
    secrets: dict[SecretFile, bytes] = {}
    reads: list[SecretRead] = []
    for file, purpose, required in named_secrets(bundle):
        value = read_secret(file)
        reads.append(SecretRead(file, purpose, value is not None))
        digest.update(f"\0{file.secret}/{file.key}\0".encode() + (value if value is not None else b"\xff<missing>"))
        if value is None:
            if required:
                raise ConfigError(f"{purpose}: secret {file.secret!r} key {file.key!r} is not mounted")
            continue
        secrets[file] = value

    keys: KeySet = ()
    if auth.key_file:
        try:
            keys = parse_key_file(secrets[auth.key_file], auth.algorithms)
        except ConfigError as e:
            raise ConfigError(f"auth.keyFile ({auth.key_file.secret}/{auth.key_file.key}): {e}") from None
    signing: SigningKey | None = None
    if auth.signing_key_file:
        try:
            signing = load_signing_key(secrets[auth.signing_key_file])
        except ConfigError as e:
            raise ConfigError(f"auth.signingKeyFile: {e}") from None
        if signing.alg not in auth.algorithms:
            raise ConfigError(f"auth.signingKeyFile: a {signing.alg} key, but auth.algorithms allows "
                              f"{', '.join(auth.algorithms)}")
        keys = (*keys, signing.verification_key())
    elif auth.key_file and auth.algorithms == ["HS256"] and keys:
        shared = keys[0]
        assert isinstance(shared.key, bytes)
        signing = SigningKey(alg="HS256", key=shared.key, kid=shared.kid)

    known = [v.decode("utf-8", "ignore") for v in secrets.values()]
    known += [hmac_secret(v).decode("utf-8", "ignore") for v in secrets.values()]
    return PolicySnapshot(
        bundle=bundle,
        hash=bundle_hash(bundle),
        fingerprint="sha256:" + digest.hexdigest(),
        auth_policy=AuthPolicy.from_bundle(auth),
        keys=keys,
        signing_key=signing,
        secrets=secrets,
        secret_reads=tuple(reads),
        redactor=Redactor(known),
        loaded_at=loaded_at,
    )


@dataclass(frozen=True)
class ReloadResult:
    """What one look at the files found."""

    snapshot: PolicySnapshot | None  # the new snapshot in force, when it changed
    error: str | None  # why the files on disk are not in force, when they are not


def read_secret_file(secrets_dir: Path) -> ReadSecret:
    def read(file: SecretFile) -> bytes | None:
        path = Path(file.path(str(secrets_dir)))
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SECRET_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise ConfigError(f"{path}: {e.strerror or e}") from None
        if len(data) > MAX_SECRET_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_SECRET_BYTES} bytes")
        return data
    return read


class PolicyStore:
    """The snapshot in force, and the poller that replaces it when the files change."""

    def __init__(self, bundle_path: Path, secrets_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.bundle_path = bundle_path
        self.secrets_dir = secrets_dir
        self._clock = clock
        self._read_secret = read_secret_file(secrets_dir)
        self.current: PolicySnapshot | None = None
        self.error: str | None = "not loaded yet"
        self._failed_fingerprint: str | None = None
        self._listeners: list[Callable[[ReloadResult], None]] = []

    def require(self) -> PolicySnapshot:
        snapshot = self.current
        if snapshot is None:
            raise PolicyUnavailable()
        return snapshot

    @property
    def redactor(self) -> Redactor:
        """The snapshot's redactor (it knows the mounted secrets), or the patterns alone."""
        snapshot = self.current
        return snapshot.redactor if snapshot else Redactor()

    def audit_policy(self) -> AuditPolicy:
        """What the audit writer applies to the next event: the snapshot's, or the defaults."""
        snapshot = self.current
        return snapshot.audit_policy if snapshot else AuditPolicy()

    def subscribe(self, listener: Callable[[ReloadResult], None]) -> None:
        """Called on the event loop after each reload that changed something."""
        self._listeners.append(listener)

    def load(self) -> ReloadResult | None:
        """Read the files; build and install a new snapshot if they changed. None when nothing did.

        Blocking (file reads): call it from a thread when on the event loop (``reload``).
        """
        try:
            with open(self.bundle_path, "rb") as f:
                bundle_bytes = f.read(MAX_BUNDLE_BYTES + 1)
        except OSError as e:
            return self._fail(f"cannot read the bundle {self.bundle_path}: {e.strerror or e}", fingerprint="missing")
        quick = hashlib.sha256(bundle_bytes).hexdigest()
        try:
            snapshot = build_snapshot(bundle_bytes, self._read_secret, loaded_at=self._clock())
        except ConfigError as e:
            return self._fail(f"{self.bundle_path}: {e}", fingerprint=quick + str(e))
        if self.current is not None and snapshot.fingerprint == self.current.fingerprint:
            if self.error is None:
                return None
            self.error = None  # the files went back to what is in force
            self._failed_fingerprint = None
            return ReloadResult(None, None)
        self.current, self.error, self._failed_fingerprint = snapshot, None, None
        return ReloadResult(snapshot, None)

    def _fail(self, message: str, fingerprint: str) -> ReloadResult | None:
        if fingerprint == self._failed_fingerprint:
            return None
        self._failed_fingerprint = fingerprint
        self.error = message
        return ReloadResult(None, message)

    async def reload(self) -> ReloadResult | None:
        result = await asyncio.to_thread(self.load)
        if result is not None:
            if result.error:
                kept = f"; keeping bundle {self.current.hash}" if self.current else "; no bundle in force"
                log.error("policy bundle not loaded: %s%s", result.error, kept)
            elif result.snapshot:
                log.info("policy bundle %s in force for %s", result.snapshot.hash, result.snapshot.agent)
            for listener in self._listeners:
                listener(result)
        return result

    async def watch(self, interval: float) -> None:
        """Poll forever (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except Exception:  # a bug must not stop the poller: keep the last good policy
                log.exception("policy reload failed unexpectedly")
