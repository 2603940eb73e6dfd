"""The contract of the secret providers: locators, values, errors and the protocol.

Nothing here does I/O. A ``SecretValue`` never shows its value in ``repr`` or ``str``; a
``SecretError`` never holds a value at all, only the provider and the locator.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
import secrets as _random
from dataclasses import dataclass, field
from types import ModuleType
from typing import ClassVar, Literal, Protocol, runtime_checkable

ProviderKind = Literal["kubernetes", "vault", "aws", "azure"]
ErrorCode = Literal["not_found", "permission_denied", "provider_unavailable", "provider_misconfigured"]

# The pip extra that brings each provider's SDK (Kubernetes needs none).
EXTRAS: dict[ProviderKind, str] = {"vault": "vault", "aws": "aws", "azure": "azure"}


@dataclass(frozen=True)
class SecretLocator:
    """Where one value lives. Never holds the value.

    - kubernetes: ``path`` = ``<namespace>/<secret name>``, ``key`` = the data key (required)
    - vault: ``path`` = the secret's path under the KV v2 mount (``agents/research``), ``key``
      = the key within it (required); the mount comes from the provider's settings
    - aws: ``path`` = secret name or ARN, ``key`` = JSON key within the secret string, or None
      for the whole string
    - azure: ``path`` = ``<vault name>/<secret name>``, ``key`` = None
    """

    provider: ProviderKind
    path: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.path}" + (f"#{self.key}" if self.key is not None else "")


@dataclass(frozen=True)
class SecretValue:
    """A value and the provider's id of the version it came from (Vault's version number, AWS's
    VersionId, Azure's version, a Kubernetes Secret's resourceVersion)."""

    value: str = field(repr=False)
    version: str

    def __str__(self) -> str:
        return f"SecretValue(version={self.version!r}, value=<redacted>)"


def shown(text: str, limit: int = 64) -> str:
    """A name given by a user, as it may appear in a message: quoted, control characters escaped,
    at most ``limit`` characters of it (hostile or oversized input must not flood a log line)."""
    clipped = text[:limit]
    quoted = repr(clipped)
    return quoted + (f"... ({len(text)} characters)" if len(text) > limit else "")


def key_list(keys: Iterable[str], limit: int = 20) -> str:
    """Key names for a "not found" message: sorted, bounded; never values."""
    names = sorted(keys)
    if not names:
        return "it has no keys"
    listed = ", ".join(name if len(name) <= 64 and name.isprintable() else shown(name) for name in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"keys: {listed}{more}"


def clipped_locator(locator: SecretLocator, limit: int = 64) -> SecretLocator:
    """The locator as an error may name it: parts that are oversized or not printable are
    shortened and escaped (``SecretError`` prints its locator verbatim)."""

    def clip(part: str | None) -> str | None:
        if part is None or (len(part) <= limit and part.isprintable()):
            return part
        return shown(part, limit)

    return SecretLocator(locator.provider, clip(locator.path) or "", clip(locator.key))


class SecretError(Exception):
    """A provider could not give or write a value. ``str()`` names the provider, the locator and
    what went wrong; never a value, never a token, never an SDK's response body."""

    code: ClassVar[ErrorCode]

    def __init__(self, locator: SecretLocator | None, message: str, *, provider: ProviderKind | None = None) -> None:
        self.locator = locator
        self.provider: ProviderKind | None = locator.provider if locator is not None else provider
        self.message = message
        where = str(clipped_locator(locator)) if locator is not None else (provider or "secrets")
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable (errors cross process pools and test workers): rebuilt from its fields.
        return (_rebuild_error, (type(self), self.locator, self.message, self.provider))


def _rebuild_error(
    cls: type[SecretError], locator: SecretLocator | None, message: str, provider: ProviderKind | None
) -> SecretError:
    return cls(locator, message, provider=provider)


class SecretNotFound(SecretError):
    """The path, the version or the key does not exist (the message says which)."""

    code = "not_found"


class SecretPermissionDenied(SecretError):
    """The provider refused the operator's identity for this path."""

    code = "permission_denied"


class SecretProviderUnavailable(SecretError):
    """Network error, timeout, throttling or 5xx: the value may be there; try again later."""

    code = "provider_unavailable"


class SecretProviderMisconfigured(SecretError):
    """The provider cannot be used as configured (missing extra, bad address, bad auth settings)."""

    code = "provider_misconfigured"


@runtime_checkable
class SecretProvider(Protocol):
    """One backend. Implementations are async (sync SDKs run in a worker thread) and safe to
    share between concurrent calls."""

    kind: ProviderKind

    async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue:
        """The value at ``locator`` (the latest version, or ``version``)."""
        ...

    async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue:
        """Write ``new_value`` at ``locator`` as a new version (other keys of the same secret kept)
        and return it with its version id."""
        ...

    async def close(self) -> None: ...


def require_extra(module: str, provider: ProviderKind) -> ModuleType:
    """Import an SDK module a provider needs, or fail naming the pip extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(provider, provider)
        raise SecretProviderMisconfigured(
            None,
            f"the {provider} provider needs {module!r}: pip install 'agentgov[{extra}]'",
            provider=provider,
        ) from None


def generate_value(nbytes: int = 32) -> str:
    """A new random value for a rotation that is not given one (URL-safe, ``nbytes`` of entropy)."""
    return _random.token_urlsafe(nbytes)
