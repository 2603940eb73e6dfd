"""Kubernetes Secrets as a secret provider: one key of a Secret, read and rotated through the API.

What it is for: ``spec.secrets[].secretKeyRef`` sources and ``agentgov secrets rotate`` on them.
The API client is given, not built: anything with the ``SecretsApi`` shape (the operator passes
its ``controller.kube.KubeApi``), so this module needs no SDK and never imports the controller.

The version of a value is the Secret's ``metadata.resourceVersion``. Kubernetes keeps only the
current one, so asking for another is ``SecretNotFound`` saying so. A rotation replaces one key
with a merge patch that carries the resourceVersion it read (the API server's precondition), so a
concurrent writer is never overwritten: on a conflict it re-reads once, then gives up as
``SecretProviderUnavailable``. A rotation replaces an existing key; it never adds one (a typo in a
key must not quietly create a second credential).

A locator that can name no Secret (a path that is not ``<namespace>/<name>``, names that are not
DNS-1123, a key outside ``[-._a-zA-Z0-9]``) is ``SecretNotFound`` before any request is sent.

What it must never do: put a value (or its base64) in an error, a log line or a repr; show more
of a Secret than its key names; write anything but the one key it rotates.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from agentgov.secrets.base import (
    ProviderKind,
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
    SecretValue,
    clipped_locator,
    key_list,
    shown,
)

_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")
# The API server refuses a Secret whose data adds up to more than this (MaxSecretSize).
MAX_SECRET_BYTES: Final = 1024 * 1024


class SecretsApi(Protocol):
    """What this provider needs of a Kubernetes API client. Errors it raises carry ``.status``
    (the HTTP status, or None for network errors and timeouts), as ``controller.kube``'s do."""

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``; None when it does not exist (404)."""
        ...

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch; the object as stored afterwards."""
        ...


# ---- how a provider names user input in its messages (the Vault provider uses these too) ----


class KubernetesProvider:
    """Keys of Kubernetes Secrets, through an API client the caller owns (and closes)."""

    kind: ProviderKind = "kubernetes"

    def __init__(self, api: SecretsApi) -> None:
        self._api = api

    async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue:
        namespace, name, key = _parse(locator)
        secret = await self._read(locator, namespace, name)
        current = _resource_version(secret)
        if version is not None and version != current:
            raise SecretNotFound(
                locator,
                f"version {shown(version)} is not the current one ({current}); Kubernetes keeps only the current version",
            )
        data = _data(secret)
        if key not in data:
            raise SecretNotFound(locator, f"key {key!r} not in Secret {namespace}/{name} ({key_list(data)})")
        return SecretValue(_decode(locator, data[key], key, f"{namespace}/{name}"), current)

    async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue:
        namespace, name, key = _parse(locator)
        encoded = new_value.encode("utf-8")
        if len(encoded) > MAX_SECRET_BYTES:
            raise SecretProviderMisconfigured(
                locator, f"the new value is {len(encoded)} bytes; a Kubernetes Secret holds at most 1 MiB"
            )
        path = _secret_path(namespace, name)
        for attempt in (1, 2):
            secret = await self._read(locator, namespace, name)
            data = _data(secret)
            if key not in data:
                raise SecretNotFound(
                    locator,
                    f"key {key!r} not in Secret {namespace}/{name} ({key_list(data)}); "
                    "a rotation replaces an existing key, it never adds one",
                )
            # The resourceVersion is a precondition: a write by anyone else since our read is a 409.
            patch = {
                "metadata": {"resourceVersion": _resource_version(secret)},
                "data": {key: base64.b64encode(encoded).decode("ascii")},
            }
            try:
                stored = await self._api.merge_patch(path, patch)
            except Exception as error:
                if _status(error) == 409 and attempt == 1:
                    continue
                if _status(error) == 409:
                    raise SecretProviderUnavailable(
                        locator,
                        f"Secret {namespace}/{name} changed during the rotation twice (resourceVersion conflict); "
                        "try again",
                    ) from None
                raise _translate(locator, error, f"write Secret {namespace}/{name}") from None
            return SecretValue(new_value, _resource_version(stored))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        """Nothing to close: the API client belongs to the caller."""

    async def _read(self, locator: SecretLocator, namespace: str, name: str) -> dict[str, Any]:
        try:
            secret = await self._api.get(_secret_path(namespace, name))
        except Exception as error:
            raise _translate(locator, error, f"read Secret {namespace}/{name}") from None
        if secret is None:
            raise SecretNotFound(locator, f"Secret {namespace}/{name} does not exist")
        return secret


def _parse(locator: SecretLocator) -> tuple[str, str, str]:
    """(namespace, name, key) of a locator, or SecretNotFound naming what no Secret can have."""
    shown_locator = clipped_locator(locator)
    if locator.provider != "kubernetes":
        raise SecretProviderMisconfigured(shown_locator, "the Kubernetes provider was given another provider's locator")
    parts = locator.path.split("/")
    if len(parts) != 2:
        raise SecretNotFound(shown_locator, "the path must be <namespace>/<secret name>")
    namespace, name = parts
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise SecretNotFound(shown_locator, f"namespace {shown(namespace)} is not a DNS-1123 label")
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise SecretNotFound(shown_locator, f"Secret name {shown(name)} is not a DNS-1123 subdomain")
    key = locator.key
    if key is None or len(key) > 253 or not _SECRET_KEY.fullmatch(key):
        what = "no key" if key is None else f"key {shown(key)}"
        raise SecretNotFound(shown_locator, f"{what}: a Secret's keys are 1-253 characters of [-._a-zA-Z0-9]")
    return namespace, name, key


def _secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def _resource_version(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return str(version) if version is not None else ""


def _data(secret: Mapping[str, Any]) -> dict[str, Any]:
    data = secret.get("data")
    return data if isinstance(data, dict) else {}


def _decode(locator: SecretLocator, raw: object, key: str, where: str) -> str:
    try:
        if not isinstance(raw, str):
            raise ValueError
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise SecretProviderMisconfigured(
            locator, f"key {key!r} of Secret {where} is not UTF-8 text; only text values can be injected"
        ) from None


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def _translate(locator: SecretLocator, error: Exception, action: str) -> SecretError:
    """One of the four errors for an API client's failure: by HTTP status, never its text."""
    if isinstance(error, SecretError):
        return error
    if not hasattr(error, "status") and not isinstance(error, (OSError, TimeoutError)):
        raise error  # not an API failure: a bug, let it surface as one
    status = _status(error)
    detail = f"HTTP {status}" if status is not None else type(error).__name__
    if status in (401, 403):
        return SecretPermissionDenied(locator, f"the API server refused to {action} ({detail})")
    if status == 404:
        return SecretNotFound(locator, f"{action.split(' ', 1)[1]} does not exist")
    if status is None or status >= 500 or status in (408, 409, 429):
        return SecretProviderUnavailable(locator, f"could not {action} ({detail})")
    return SecretProviderMisconfigured(locator, f"the API server refused to {action} ({detail})")
