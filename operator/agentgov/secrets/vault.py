"""HashiCorp Vault (KV version 2) as a secret provider, through ``hvac``.

What it is for: ``spec.secrets[].vault`` sources (a key of a KV v2 secret at
``settings.mount``) and ``agentgov secrets rotate`` on them. hvac is synchronous: every call runs
in a worker thread, on one ``hvac.Client`` per provider (its HTTP session reused).

Authentication, done lazily on the first call:
- ``token``: ``settings.token``, or the contents of ``settings.token_file`` read again at every
  login, so a token file rotated by whoever mounts it is picked up.
- ``kubernetes``: a login with ``settings.role`` and the service account token in
  ``settings.jwt_file`` (read again at every login: kubelet rotates projected tokens).
Where the token's lease is known (the login's ``lease_duration``; for ``token`` auth, the ttl
from ``auth/token/lookup-self``) the provider logs in again once ``RENEW_FRACTION`` of it has
passed. A call refused with 403 by a token that can be replaced (Kubernetes auth, or a token
file) logs in again and is retried once: the token may have expired or been revoked early; a
second 403 is ``SecretPermissionDenied``. Logins are serialised by a lock, and a thread that
finds a newer login than the one its call was refused under uses it instead of logging in again.

Reads use ``read_secret_version`` (the latest version or ``version``); a value that is not a
string is given as its JSON text (``42``, ``true``, ``{"a":1}``), as Vault's own CLI prints it
with ``-format=json``. A rotation reads the latest version N and writes the whole secret with
the one key replaced under check-and-set ``cas=N``, so a concurrent writer is never overwritten:
on a mismatch it re-reads and retries once, then fails ``SecretProviderUnavailable`` naming the
conflict. A rotation replaces an existing key; it never adds one.

A locator no Vault secret can have (an empty, ``.`` or ``..`` path segment, which the HTTP stack
would resolve into another path; control characters; a path over 1024 or a key over 253
characters, the CRD's limits) is ``SecretNotFound`` before any request is sent.

hvac and requests errors are translated here, once, without chaining (``from None``): their
texts carry request URLs and response bodies. Settings that can never work (no role, both or
neither of token and token_file, a CA file that does not exist) fail at construction with
``SecretProviderMisconfigured``.

What it must never do: put a token, a JWT, a value or a response body in an error, a log line or
a repr; follow a path outside the mount; write without check-and-set; read ``VAULT_TOKEN`` or
``~/.vault-token`` (hvac does when given no token).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from agentgov.secrets.base import (
    ProviderKind,
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
    SecretValue,
    require_extra,
)
from agentgov.secrets.config import VaultSettings
from agentgov.secrets.base import clipped_locator, key_list, shown

log = logging.getLogger(__name__)

MAX_PATH: Final = 1024  # the CRD's limits for spec.secrets[].vault.path and .key
MAX_KEY: Final = 253
# Log in again once this share of a token's lease has passed (Vault Agent renews at about 2/3;
# a little later is fine here because a refused call logs in again anyway).
RENEW_FRACTION: Final = 0.8
_VERSION: Final = re.compile(r"[1-9][0-9]{0,18}")
# A Vault token or JWT goes into an HTTP header or a JSON body: visible ASCII only.
_CREDENTIAL: Final = re.compile(r"[\x21-\x7e]+")

T = TypeVar("T")


class VaultProvider:
    """Keys of Vault KV v2 secrets. Safe to share between concurrent calls."""

    kind: ProviderKind = "vault"

    def __init__(self, settings: VaultSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        _check_settings(settings)
        hvac = require_extra("hvac", "vault")
        self._errors: Any = require_extra("hvac.exceptions", "vault")
        self._requests: Any = require_extra("requests.exceptions", "vault")  # hvac's transport
        self._settings = settings
        self._clock = clock
        self._where = _server_name(settings.address)
        # token="" rather than None: with None, hvac falls back to VAULT_TOKEN / ~/.vault-token.
        self._client: Any = hvac.Client(
            url=settings.address,
            token="",
            namespace=settings.namespace or None,
            verify=settings.ca_file or True,
            timeout=settings.timeout_seconds,
        )
        self._login_lock = threading.Lock()
        self._logins = 0  # how many logins this provider made; a call remembers the one it used
        self._renew_at: float | None = None  # clock time to log in again; None: no known lease

    def __repr__(self) -> str:
        return f"VaultProvider(address={self._where!r}, mount={self._settings.mount!r}, auth={self._settings.auth!r})"

    # ---- the protocol ------------------------------------------------------------------------

    async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue:
        path, key = _parse(locator)
        number = _version_number(locator, version)
        return await asyncio.to_thread(self._guarded, locator, lambda: self._get(locator, path, key, number))

    async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue:
        path, key = _parse(locator)
        return await asyncio.to_thread(self._guarded, locator, lambda: self._rotate(locator, path, key, new_value))

    async def close(self) -> None:
        self._client.adapter.close()

    # ---- reads and writes (worker thread) ------------------------------------------------------

    def _get(self, locator: SecretLocator, path: str, key: str, number: int | None) -> SecretValue:
        data, version = self._read(locator, path, number)
        if key not in data:
            raise SecretNotFound(locator, f"key {key!r} not in vault:{path} ({key_list(data)})")
        return SecretValue(_text(data[key]), str(version))

    def _rotate(self, locator: SecretLocator, path: str, key: str, new_value: str) -> SecretValue:
        kv = self._client.secrets.kv.v2
        for attempt in (1, 2):
            data, current = self._read(locator, path, None)
            if key not in data:
                raise SecretNotFound(
                    locator,
                    f"key {key!r} not in vault:{path} ({key_list(data)}); a rotation replaces an existing key, "
                    "it never adds one",
                )
            replaced = {**data, key: new_value}
            try:
                written = self._authorized(
                    locator,
                    lambda: kv.create_or_update_secret(
                        path=path, secret=replaced, cas=current, mount_point=self._settings.mount
                    )
                )
            except self._errors.InvalidRequest as error:
                if not _is_cas_mismatch(error):
                    raise
                if attempt == 1:
                    log.info("vault: %s changed while rotating (check-and-set); reading it again", locator)
                    continue
                raise SecretProviderUnavailable(
                    locator,
                    f"vault:{path} changed during the rotation twice (check-and-set version {current} "
                    "no longer current); try again",
                ) from None
            answer = written.get("data") if isinstance(written, dict) else None
            version = answer.get("version") if isinstance(answer, dict) else None
            if not isinstance(version, int):
                raise SecretProviderMisconfigured(locator, "Vault's answer to the write is not KV version 2's")
            return SecretValue(new_value, str(version))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _read(self, locator: SecretLocator, path: str, number: int | None) -> tuple[dict[str, Any], int]:
        """The data and version number of ``path`` (the latest version, or ``number``)."""
        kv = self._client.secrets.kv.v2
        try:
            response = self._authorized(
                locator,
                lambda: kv.read_secret_version(
                    path=path, version=number, raise_on_deleted_version=True, mount_point=self._settings.mount
                )
            )
        except self._errors.InvalidPath as error:
            if _no_route(error):
                raise SecretProviderMisconfigured(
                    locator, f"no secrets engine is mounted at {self._settings.mount!r} (HTTP 404: no handler for route)"
                ) from None
            raise SecretNotFound(locator, _missing(path, number, error.json)) from None
        body = response.get("data") if isinstance(response, dict) else None
        data = body.get("data") if isinstance(body, dict) else None
        metadata = body.get("metadata") if isinstance(body, dict) else None
        version = metadata.get("version") if isinstance(metadata, dict) else None
        if not isinstance(data, dict) or not isinstance(version, int):
            raise SecretProviderMisconfigured(
                locator, f"the answer is not KV version 2's; is {self._settings.mount!r} a KV v2 mount?"
            )
        return data, version

    # ---- authentication (worker thread) --------------------------------------------------------

    def _authorized(self, locator: SecretLocator, call: Callable[[], T]) -> T:
        """``call()`` with a current token; once more after a new login when it is refused (403)
        and the token can be replaced."""
        used = self._ensure_login(locator)
        try:
            return call()
        except self._errors.Forbidden:
            if not self._replaceable():
                raise
        log.info("vault: the token was refused (403); logging in again and retrying once")
        self._login(locator, refused=used)
        return call()

    def _replaceable(self) -> bool:
        return self._settings.auth == "kubernetes" or self._settings.token_file is not None

    def _ensure_login(self, locator: SecretLocator) -> int:
        """Log in if never done or the lease is nearly over; the login in force."""
        with self._login_lock:
            due = self._renew_at is not None and self._clock() >= self._renew_at
            if self._logins and not due:
                return self._logins
            return self._login_locked(locator)

    def _login(self, locator: SecretLocator, refused: int) -> None:
        """Log in again because login ``refused`` was refused, unless another thread already did."""
        with self._login_lock:
            if self._logins == refused:
                self._login_locked(locator)

    def _login_locked(self, locator: SecretLocator) -> int:
        settings = self._settings
        if settings.auth == "kubernetes":
            lease = self._kubernetes_login(locator)
        else:
            token = (
                settings.token.get_secret_value()
                if settings.token is not None
                else _read_credential(locator, settings.token_file or "", "token_file")
            )
            if not _CREDENTIAL.fullmatch(token):
                raise SecretProviderMisconfigured(locator, "the Vault token holds characters a token cannot have")
            self._client.token = token
            lease = self._token_ttl()
        self._logins += 1
        self._renew_at = self._clock() + lease * RENEW_FRACTION if isinstance(lease, int) and lease > 0 else None
        log.debug("vault: logged in (%s auth); lease %s s", settings.auth, lease if lease else "unknown")
        return self._logins

    def _kubernetes_login(self, locator: SecretLocator) -> int | None:
        """Log in with the service account token; the new token's lease in seconds."""
        settings, errors = self._settings, self._errors
        jwt = _read_credential(locator, settings.jwt_file, "jwt_file")
        if not _CREDENTIAL.fullmatch(jwt):
            raise SecretProviderMisconfigured(locator, f"jwt_file {shown(settings.jwt_file, 256)} does not hold a JWT")
        method = f"Vault's kubernetes auth at auth/{settings.auth_mount}"
        try:
            answer = self._client.auth.kubernetes.login(
                settings.role, jwt, use_token=True, mount_point=settings.auth_mount
            )
        except errors.Forbidden:
            raise SecretPermissionDenied(
                locator, f"{method} refused the service account token for role {settings.role!r}"
            ) from None
        except errors.InvalidRequest:
            raise SecretProviderMisconfigured(
                locator, f"{method} refused the login for role {settings.role!r} (HTTP 400: no such role?)"
            ) from None
        except errors.InvalidPath:
            raise SecretProviderMisconfigured(locator, f"{method}: no auth method is mounted there (HTTP 404)") from None
        except (KeyError, TypeError):  # hvac reads auth.client_token from the answer
            raise SecretProviderUnavailable(locator, f"{method} answered the login without a token") from None
        auth = answer.get("auth") if isinstance(answer, dict) else None
        lease = auth.get("lease_duration") if isinstance(auth, dict) else None
        return lease if isinstance(lease, int) else None

    def _token_ttl(self) -> int | None:
        """The given token's remaining ttl in seconds (0: never expires); None when the token may
        not look itself up (no default policy) or is refused (the call itself will tell)."""
        try:
            answer = self._client.auth.token.lookup_self()
        except self._errors.Forbidden:
            return None
        data = answer.get("data") if isinstance(answer, dict) else None
        ttl = data.get("ttl") if isinstance(data, dict) else None
        return ttl if isinstance(ttl, int) else None

    # ---- errors ----------------------------------------------------------------------------------

    def _guarded(self, locator: SecretLocator, call: Callable[[], T]) -> T:
        """Run ``call`` with every hvac and requests error translated to a ``SecretError``."""
        try:
            return call()
        except SecretError:
            raise
        except Exception as error:
            raise self._translate(locator, error) from None

    def _translate(self, locator: SecretLocator, error: Exception) -> SecretError:
        errors, transport, name = self._errors, self._requests, type(error).__name__
        if isinstance(error, errors.InvalidPath):
            return SecretNotFound(locator, f"Vault has no such path (HTTP 404) under {self._settings.mount!r}")
        if isinstance(error, (errors.Forbidden, errors.Unauthorized)):
            return SecretPermissionDenied(locator, "Vault denied the operator's token (permission denied)")
        if isinstance(error, errors.InvalidRequest):
            return SecretProviderMisconfigured(locator, "Vault refused the request as invalid (HTTP 400)")
        if isinstance(error, errors.VaultDown):
            return SecretProviderUnavailable(locator, f"Vault at {self._where} is sealed or in standby (HTTP 503)")
        if isinstance(error, transport.SSLError):
            return SecretProviderMisconfigured(
                locator, f"TLS with Vault at {self._where} failed ({name}); check its certificate and ca_file"
            )
        if isinstance(error, transport.Timeout):
            return SecretProviderUnavailable(
                locator, f"Vault at {self._where} did not answer within {self._settings.timeout_seconds:g} s"
            )
        if isinstance(error, transport.ConnectionError):
            return SecretProviderUnavailable(locator, f"cannot connect to Vault at {self._where} ({name})")
        if isinstance(error, (errors.VaultError, transport.RequestException, OSError)):
            return SecretProviderUnavailable(locator, f"Vault at {self._where} failed ({name})")
        raise error  # not a Vault or network failure: a bug, let it surface as one


# ---- pure helpers --------------------------------------------------------------------------------


def _check_settings(settings: VaultSettings) -> None:
    """SecretProviderMisconfigured naming the first setting that can never work."""

    def bad(message: str) -> SecretProviderMisconfigured:
        return SecretProviderMisconfigured(None, message, provider="vault")

    try:
        parts = urlsplit(settings.address)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        usable = False
    if not usable:
        raise bad(f"address {shown(_server_name(settings.address))} is not an http(s) URL")
    for name, value in (("mount", settings.mount), ("auth_mount", settings.auth_mount)):
        problem = _path_problem(value, MAX_PATH)
        if problem:
            raise bad(f"{name} {shown(value)} is not a Vault path: {problem}")
    if settings.namespace:
        problem = _path_problem(settings.namespace.strip("/"), MAX_PATH)
        if problem:
            raise bad(f"namespace {shown(settings.namespace)} is not a Vault namespace: {problem}")
    if settings.auth == "token" and (settings.token is None) == (settings.token_file is None):
        raise bad("auth=token needs exactly one of token and token_file")
    if settings.auth == "kubernetes" and not settings.role:
        raise bad("auth=kubernetes needs the Vault role bound to the operator's service account (role)")
    if not (math.isfinite(settings.timeout_seconds) and settings.timeout_seconds > 0):
        raise bad(f"timeout_seconds must be a positive number of seconds, not {settings.timeout_seconds!r}")
    if settings.ca_file and not os.path.isfile(settings.ca_file):
        raise bad(f"ca_file {shown(settings.ca_file, 256)} does not exist")


def _server_name(address: str) -> str:
    """scheme://host:port of an address: never a userinfo part, a path or a query."""
    try:
        parts = urlsplit(address)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid address>"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _path_problem(path: str, limit: int) -> str | None:
    """Why ``path`` cannot be sent as a Vault path, or None."""
    if not path or len(path) > limit:
        return f"it must be 1-{limit} characters"
    if not path.isprintable():
        return "it has control or non-printable characters"
    segments = path.split("/")
    if any(segment == "" for segment in segments):
        return "it has an empty segment (a leading, trailing or double '/')"
    if any(segment in (".", "..") for segment in segments):
        return "'.' and '..' segments are not allowed"
    return None


def _parse(locator: SecretLocator) -> tuple[str, str]:
    """(path, key) of a Vault locator, or SecretNotFound naming what no Vault secret can have."""
    shown_locator = clipped_locator(locator)
    if locator.provider != "vault":
        raise SecretProviderMisconfigured(shown_locator, "the Vault provider was given another provider's locator")
    problem = _path_problem(locator.path, MAX_PATH)
    if problem:
        raise SecretNotFound(shown_locator, f"invalid path {shown(locator.path)}: {problem}")
    key = locator.key
    if key is None:
        raise SecretNotFound(shown_locator, "a Vault locator needs the key within the secret")
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise SecretNotFound(shown_locator, f"invalid key {shown(key)}: 1-{MAX_KEY} printable characters")
    return locator.path, key


def _version_number(locator: SecretLocator, version: str | None) -> int | None:
    if version is None:
        return None
    if not _VERSION.fullmatch(version):
        raise SecretNotFound(
            clipped_locator(locator), f"version {shown(version)} is not a Vault version number (a positive integer)"
        )
    return int(version)


def _missing(path: str, number: int | None, body: object) -> str:
    """What a 404 from a KV v2 read means: a deleted or destroyed version (Vault answers those
    with the version's metadata), no such version, or no secret at the path."""
    data = body.get("data") if isinstance(body, dict) else None
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if isinstance(metadata, dict):
        which = f"version {metadata.get('version', number)}"
        if number is None:
            which = f"the latest version ({metadata.get('version')})"
        if metadata.get("destroyed") is True:
            return f"{which} of vault:{path} was destroyed"
        deleted = metadata.get("deletion_time")
        if isinstance(deleted, str) and deleted:
            return f"{which} of vault:{path} was deleted at {deleted[:40]}"
    if number is not None:
        return f"vault:{path} has no version {number} (or no secret at all)"
    return f"no secret at vault:{path}"


def _error_says(error: Any, phrase: str) -> bool:
    """Whether one of the ``errors`` of a Vault answer contains ``phrase`` (read to classify the
    answer, never repeated: the texts may echo a path or a body)."""
    errors = getattr(error, "errors", None)
    return isinstance(errors, list) and any(isinstance(e, str) and phrase in e for e in errors)


def _is_cas_mismatch(error: Any) -> bool:
    return _error_says(error, "check-and-set")


def _no_route(error: Any) -> bool:
    """A 404 for a path no mount serves (a missing secret is a 404 with no errors at all)."""
    return _error_says(error, "no handler for route")


def _text(value: object) -> str:
    """A KV value as the text injected into the agent: strings as they are, anything else as
    its JSON (keys sorted, as Vault's Go encoder writes them)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _read_credential(locator: SecretLocator, path: str, setting: str) -> str:
    """The stripped contents of a mounted credential file; Misconfigured naming the file (never
    its contents) when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(64 * 1024).strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SecretProviderMisconfigured(
            locator, f"cannot read {setting} {shown(path, 256)} ({type(error).__name__})"
        ) from None
    if not text:
        raise SecretProviderMisconfigured(locator, f"{setting} {shown(path, 256)} is empty")
    return text
