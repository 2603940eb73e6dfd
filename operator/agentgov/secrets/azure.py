"""Azure Key Vault provider: read a secret (latest or one version), write a new version.

A locator's ``path`` is ``<vault name>/<secret name>`` (no key: a Key Vault secret is one value);
the vault URL is ``settings.vault_url_template`` with the vault name in it. Versions are Key
Vault's version ids; a rotation is ``set_secret``, which makes a new version the latest.

The operator authenticates to Entra ID with workload identity (``WorkloadIdentityCredential``:
tenant and client id from the settings or, as AKS's webhook sets them, ``AZURE_TENANT_ID``,
``AZURE_CLIENT_ID``; the projected token at ``AZURE_FEDERATED_TOKEN_FILE``), a client secret
(``ClientSecretCredential``; a ``client_secret_file`` is re-read before each call, so a rotated
mounted Secret takes effect without a restart) or ``DefaultAzureCredential``. An explicit
``authority`` turns MSAL's instance discovery off: that asks login.microsoftonline.com whether it
knows the host, which a sovereign or private cloud's authority need not pass.
(``DefaultAzureCredential`` hands ``authority`` to its environment credential only; its workload
identity credential reads ``AZURE_AUTHORITY_HOST``, which AKS's webhook sets.)

Why the synchronous SDK in worker threads, not ``azure.keyvault.secrets.aio``: the sync
credentials are the ones built on MSAL (token cache, the workload identity token file re-read),
the other providers run sync SDKs the same way, and each call is bounded anyway: connect and
read timeouts of ``timeout_seconds`` and at most two attempts (``retry_total=1``, azure-core
retries the first time without a backoff), for the vault and for Entra ID alike.

Decisions:
- a disabled secret (or version) is ``SecretNotFound`` ("is disabled"): its owner withdrew the
  value on purpose; retrying will not bring it back, and it is not the operator's settings
  (Misconfigured) or identity (PermissionDenied) that is wrong. A soft-deleted one likewise.
- a rotation writes a new version of an existing secret only: a name that does not exist is
  ``SecretNotFound`` (``set_secret`` would silently create it). A disabled latest version may
  be rotated: the new version is enabled.

Pure decisions: ``parse_locator``, ``vault_url``, ``classify_vault_error``,
``classify_entra_error``; ``AzureProvider`` is the thin I/O around them.

This module must never put a secret value, a client secret, an access token or a response body
into an exception, a log record or a ``repr``; SDK exceptions are translated once and raised
outside the handler that caught them (not even ``__context__`` keeps them). The Azure SDK is
imported only when a provider is built (``require_extra``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

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
from agentgov.secrets.config import AzureSettings
from agentgov.secrets.base import clipped_locator, shown

# Key Vault's naming rules: a vault name is 3-24 letters, digits and single hyphens, starting with
# a letter and not ending with a hyphen; a secret name is 1-127 letters, digits and hyphens. A
# version id is 32 hex digits; anything else alphanumeric is merely asked for and not found.
_VAULT_NAME: Final = re.compile(r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]")
_SECRET_NAME: Final = re.compile(r"[0-9a-zA-Z-]{1,127}")
_VERSION: Final = re.compile(r"[0-9a-zA-Z]{1,64}")
MAX_VALUE_BYTES: Final = 25 * 1024  # Key Vault's limit on a secret value
_AADSTS: Final = re.compile(r"\bAADSTS(\d{4,9})\b")
_MSAL_HTTP_ERROR: Final = re.compile(r"HTTP Error: (\d{3})")
_RETRIES: Final = 1  # azure-core counts retries: two attempts in all
_DISABLED: Final = "the secret is disabled (enable it, or rotate to a new version)"

T = TypeVar("T")


def parse_locator(locator: SecretLocator) -> tuple[str, str]:
    """``(vault, secret name)`` of a locator, or Misconfigured naming what is wrong with it."""
    where = clipped_locator(locator)  # as a message may show it: a hostile path is not echoed whole
    if locator.provider != "azure":
        raise SecretProviderMisconfigured(where, f"a {locator.provider} locator was given to the azure provider")
    if locator.key is not None:
        raise SecretProviderMisconfigured(where, "a Key Vault secret is one value: it has no keys")
    vault, slash, name = locator.path.partition("/")
    if not slash:
        raise SecretProviderMisconfigured(where, "expected <vault name>/<secret name>")
    if not _VAULT_NAME.fullmatch(vault):
        raise SecretProviderMisconfigured(
            where, f"{shown(vault)} is not a Key Vault name (3-24 letters, digits and single hyphens, starting with a letter)")
    if not _SECRET_NAME.fullmatch(name):
        raise SecretProviderMisconfigured(
            where, f"{shown(name)} is not a Key Vault secret name (1-127 letters, digits and hyphens)")
    return vault, name


def vault_url(template: str, vault: str) -> str:
    """The URL of a vault (its name already checked by ``parse_locator``: no URL syntax in it)."""
    return template.format(vault=vault).rstrip("/")


def classify_vault_error(status: int, code: str, inner: str) -> tuple[type[SecretError], str]:
    """The provider error a Key Vault error answer means: its HTTP status, its error ``code`` and
    its ``innererror.code``. The message names the codes, never Key Vault's message."""
    named = f"{code}/{inner}" if inner else code
    if status == 404:
        return SecretNotFound, "the secret does not exist"
    if status == 403 and (inner == "SecretDisabled" or "disabled" in code.lower()):
        return SecretNotFound, _DISABLED
    if status == 403 and inner in ("ForbiddenByFirewall", "ForbiddenByConnection"):
        return SecretPermissionDenied, f"the vault's network rules refuse the operator ({named})"
    if status == 403:
        return SecretPermissionDenied, f"the vault refused the operator's identity ({named})"
    if status == 401:
        return SecretPermissionDenied, f"the vault rejected the operator's Entra ID token ({named})"
    if status == 409 and inner == "ObjectIsDeletedButRecoverable":
        return SecretNotFound, "the secret is deleted (soft-delete): recover or purge it first"
    if status in (408, 409, 429) or status >= 500:
        return SecretProviderUnavailable, f"the vault is unavailable ({named}, HTTP {status})"
    return SecretProviderMisconfigured, f"the vault rejected the request ({named}, HTTP {status})"


def _transport_error(error: BaseException, peer: str) -> tuple[type[SecretError], str]:
    """A transport failure (azure-core's ServiceRequestError / ServiceResponseError): a TLS
    failure is the settings' (a CA bundle that does not sign the peer's certificate), anything
    else is the network's."""
    inner = getattr(error, "inner_exception", None) or error.__cause__
    if isinstance(inner, ssl.SSLError) or "SSLError" in type(inner).__name__:
        return SecretProviderMisconfigured, f"TLS with {peer} failed ({type(inner).__name__}): check ca_file"
    return SecretProviderUnavailable, f"could not reach {peer} ({type(error).__name__})"


def classify_entra_error(core: Any, identity: Any, error: BaseException) -> tuple[type[SecretError], str]:
    """The provider error a credential's failure to get a token means. ``core`` is
    ``azure.core.exceptions``, ``identity`` is ``azure.identity``. Only an ``AADSTS`` code is taken
    from Entra ID's text (a number: what to look up); never the text itself."""
    name = type(error).__name__
    if isinstance(error, identity.CredentialUnavailableError):
        return SecretProviderMisconfigured, (
            f"the Azure credential cannot be used here ({name}); for workload identity the pod needs "
            "AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID")
    if isinstance(error, (core.ServiceRequestError, core.ServiceResponseError)):
        return _transport_error(error, "Entra ID")
    if isinstance(error, OSError):
        return SecretProviderMisconfigured, f"cannot read the workload identity token file ({name})"
    if isinstance(error, core.ClientAuthenticationError):
        # azure-identity wraps a failure to reach the token endpoint in ClientAuthenticationError
        # ("Authentication failed: ..."), the transport's exception as its cause.
        cause = error.__cause__ or getattr(error, "inner_exception", None)
        if isinstance(cause, (core.ServiceRequestError, core.ServiceResponseError)):
            return _transport_error(cause, "Entra ID")
        status = getattr(error, "status_code", None)
        # MSAL reports a 5xx or 429 from the token endpoint as MsalServiceError("HTTP Error: 503"),
        # azure-identity keeps it as the cause (its own status_code stays None).
        said = _MSAL_HTTP_ERROR.fullmatch(str(cause)) if cause is not None else None
        status = int(said.group(1)) if said else status
        if isinstance(status, int) and (status >= 500 or status == 429):
            return SecretProviderUnavailable, f"Entra ID is unavailable (HTTP {status})"
        found = _AADSTS.search(str(getattr(error, "message", "")) or "")
        return SecretPermissionDenied, "could not authenticate to Entra ID" + (f" (AADSTS{found.group(1)})" if found else "")
    if isinstance(error, ValueError):
        # MSAL's answer to an authority whose tenant discovery fails, azure-identity's to bad ids.
        return SecretProviderMisconfigured, f"Entra ID refused the credential's settings ({name}): check tenant_id, client_id and authority"
    return SecretProviderUnavailable, f"could not get a token from Entra ID ({name})"


class _TokenFailure(Exception):
    """A credential's failure, already translated: carried through the SDK's pipeline to the
    provider's boundary in place of the credential's own exception (and its text)."""

    def __init__(self, kind: type[SecretError], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _GuardedCredential:
    """An azure-identity credential whose failures become ``_TokenFailure``. The vault's
    challenge policy calls it; so a failure to get a token is told apart from the vault's own
    401 (both are ``ClientAuthenticationError`` in the SDK)."""

    def __init__(self, inner: Any, core: Any, identity: Any) -> None:
        self._inner, self._core, self._identity = inner, core, identity

    def _guard(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - anything from the credential is a token failure
            kind, message = classify_entra_error(self._core, self._identity, error)
        raise _TokenFailure(kind, message)  # outside the handler: the credential's exception is not kept

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._guard(lambda: self._inner.get_token(*scopes, **kwargs))

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        return self._guard(lambda: self._inner.get_token_info(*scopes, options=options))

    def close(self) -> None:
        self._inner.close()


class AzureProvider:
    """Key Vault through one credential and one ``SecretClient`` per vault (calls run in worker threads)."""

    kind: ProviderKind = "azure"

    def __init__(self, settings: AzureSettings) -> None:
        self._identity = require_extra("azure.identity", "azure")
        self._secrets = require_extra("azure.keyvault.secrets", "azure")
        self._core = require_extra("azure.core.exceptions", "azure")
        self._settings = settings
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._retired: list[Any] = []  # credentials and clients replaced after a client secret changed
        self._secret_digest: str | None = None
        self._check_settings()
        self._credential = self._build_credential(self._client_secret())

    def __repr__(self) -> str:
        s = self._settings
        return f"AzureProvider(credential={s.credential!r}, vault_url_template={s.vault_url_template!r})"

    # --- settings and credentials ------------------------------------------------------------

    def _misconfigured(self, message: str) -> SecretProviderMisconfigured:
        return SecretProviderMisconfigured(None, message, provider="azure")

    def _check_settings(self) -> None:
        s = self._settings
        if "{vault}" not in s.vault_url_template or not s.vault_url_template.startswith("https://"):
            raise self._misconfigured("vault_url_template must be an https URL with a {vault} placeholder")
        if s.credential == "client_secret":
            if not s.tenant_id or not s.client_id:
                raise self._misconfigured("credential client_secret needs tenant_id and client_id")
            if (s.client_secret is None) == (s.client_secret_file is None):
                raise self._misconfigured("credential client_secret needs exactly one of client_secret and client_secret_file")
        if s.ca_file is not None and not os.path.isfile(s.ca_file):
            raise self._misconfigured(f"the CA file {s.ca_file} does not exist")

    def _transport_options(self) -> dict[str, Any]:
        """What every pipeline gets, the vault's and Entra ID's: timeouts, retries, the CA bundle."""
        s = self._settings
        options: dict[str, Any] = {
            "connection_timeout": s.timeout_seconds,
            "read_timeout": s.timeout_seconds,
            "retry_total": _RETRIES,
        }
        if s.ca_file is not None:
            options["connection_verify"] = s.ca_file
        return options

    def _client_secret(self) -> str | None:
        """The client secret, from the settings or (re-)read from its file; None for other credentials."""
        s = self._settings
        if s.credential != "client_secret":
            return None
        if s.client_secret is not None:
            return s.client_secret.get_secret_value()
        assert s.client_secret_file is not None
        unreadable: str | None = None
        try:
            with open(s.client_secret_file, encoding="utf-8") as file:
                secret = file.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            unreadable = type(error).__name__
        if unreadable is not None:
            raise self._misconfigured(f"cannot read the client secret file {s.client_secret_file} ({unreadable})")
        if not secret:
            raise self._misconfigured(f"the client secret file {s.client_secret_file} is empty")
        return secret

    def _build_credential(self, client_secret: str | None) -> _GuardedCredential:
        s = self._settings
        identity = self._identity
        options = self._transport_options()
        if s.authority is not None:
            options |= {"authority": s.authority, "disable_instance_discovery": True}
        self._secret_digest = hashlib.sha256(client_secret.encode()).hexdigest() if client_secret is not None else None
        invalid: str | None = None
        try:
            if s.credential == "client_secret":
                inner = identity.ClientSecretCredential(s.tenant_id, s.client_id, client_secret, **options)
            elif s.credential == "workload":
                inner = identity.WorkloadIdentityCredential(tenant_id=s.tenant_id, client_id=s.client_id, **options)
            else:
                ids = {"managed_identity_client_id": s.client_id, "workload_identity_client_id": s.client_id,
                       "workload_identity_tenant_id": s.tenant_id}
                inner = identity.DefaultAzureCredential(**options, **{k: v for k, v in ids.items() if v is not None})
        except ValueError as error:  # azure-identity's answer to missing or malformed ids
            invalid = type(error).__name__
        if invalid is not None:
            raise self._misconfigured(
                f"the {s.credential} credential cannot be built ({invalid}): it needs a tenant id and a client id "
                "(settings or AZURE_TENANT_ID / AZURE_CLIENT_ID) and, for workload identity, AZURE_FEDERATED_TOKEN_FILE")
        return _GuardedCredential(inner, self._core, identity)

    def _client(self, vault: str) -> Any:
        """The vault's client, built on the current credential (rebuilt when the secret file changed)."""
        secret = self._client_secret() if self._settings.client_secret_file is not None else None
        with self._lock:
            if secret is not None and hashlib.sha256(secret.encode()).hexdigest() != self._secret_digest:
                self._retired += [self._credential, *self._clients.values()]
                self._clients.clear()
                self._credential = self._build_credential(secret)
            client = self._clients.get(vault)
            if client is None:
                client = self._secrets.SecretClient(
                    vault_url(self._settings.vault_url_template, vault), self._credential, **self._transport_options())
                self._clients[vault] = client
            return client

    # --- the protocol ---------------------------------------------------------------------

    async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue:
        vault, name = parse_locator(locator)
        if version is not None and not _VERSION.fullmatch(version):
            raise SecretNotFound(locator, f"no version {shown(version)}: Key Vault version ids are letters and digits")
        return await asyncio.to_thread(self._get_sync, locator, vault, name, version)

    async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue:
        vault, name = parse_locator(locator)
        if not isinstance(new_value, str):
            raise SecretProviderMisconfigured(locator, f"a new value must be text, not {type(new_value).__name__}")
        size = len(new_value.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise SecretProviderMisconfigured(locator, f"the new value is {size} bytes; Key Vault holds at most {MAX_VALUE_BYTES}")
        return await asyncio.to_thread(self._rotate_sync, locator, vault, name, new_value)

    async def close(self) -> None:
        with self._lock:
            closing = [*self._clients.values(), self._credential, *self._retired]
            self._clients.clear()
            self._retired.clear()
        for item in closing:
            await asyncio.to_thread(item.close)

    # --- the I/O, in worker threads ---------------------------------------------------------

    def _get_sync(self, locator: SecretLocator, vault: str, name: str, version: str | None) -> SecretValue:
        client = self._client(vault)
        missing = (lambda: self._why_not_found(locator, client, name, version)) if version is not None else None
        secret = self._call(locator, lambda: client.get_secret(name, version), missing)
        return self._value(locator, secret)

    def _rotate_sync(self, locator: SecretLocator, vault: str, name: str, new_value: str) -> SecretValue:
        client = self._client(vault)
        absent = False
        try:
            self._call(locator, lambda: client.get_secret(name))
        except SecretNotFound as error:
            absent = error.message != _DISABLED  # a disabled latest version may be rotated; a missing secret not
        if absent:
            raise SecretNotFound(
                locator, "the secret does not exist; a rotation writes a new version of an existing secret (create it first)")
        written = self._call(locator, lambda: client.set_secret(name, new_value))
        return SecretValue(new_value, self._value(locator, written).version)

    @staticmethod
    def _value(locator: SecretLocator, secret: Any) -> SecretValue:
        value = getattr(secret, "value", None)
        version = getattr(getattr(secret, "properties", None), "version", None)
        if not isinstance(value, str) or not isinstance(version, str):
            raise SecretProviderUnavailable(locator, "the vault answered without a value or a version")
        return SecretValue(value, version)

    def _call(self, locator: SecretLocator, call: Callable[[], T], missing: Callable[[], SecretError] | None = None) -> T:
        """One SDK call, its failure translated to a SecretError raised outside the handler."""
        core = self._core
        status = 0
        try:
            return call()
        except _TokenFailure as failure:
            kind, message = failure.kind, failure.message
        except core.HttpResponseError as error:
            status = int(getattr(error, "status_code", None) or 0)
            details = getattr(error, "error", None)
            code = str(getattr(details, "code", None) or type(error).__name__)
            inner_error = getattr(details, "innererror", None)
            inner = str(inner_error.get("code", "")) if isinstance(inner_error, dict) else ""
            kind, message = classify_vault_error(status, code, inner)
        except (core.ServiceRequestError, core.ServiceResponseError) as error:
            kind, message = _transport_error(error, "the vault")
        except core.AzureError as error:
            kind, message = SecretProviderUnavailable, f"the Azure SDK failed ({type(error).__name__})"
        except ValueError:
            # The vault's challenge names another resource than the vault URL's domain, or is malformed.
            kind, message = SecretProviderMisconfigured, (
                "the vault's authentication challenge does not match the vault URL (check vault_url_template)")
        if status == 404 and missing is not None:
            raise missing()
        raise kind(locator, message)

    def _why_not_found(self, locator: SecretLocator, client: Any, name: str, version: str) -> SecretError:
        """A version asked for and not found: is it the version, or the whole secret, that is missing?"""
        try:
            self._call(locator, lambda: client.get_secret(name))
        except SecretNotFound as error:
            if error.message != _DISABLED:
                return SecretNotFound(locator, "the secret does not exist")
        except SecretError:
            return SecretNotFound(locator, f"the secret or its version {shown(version)} does not exist")
        return SecretNotFound(locator, f"the secret has no version {shown(version)}")
