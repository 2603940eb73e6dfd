"""AWS Secrets Manager provider: read a secret (whole, or one key of its JSON), write a new version.

A locator's ``path`` is the secret's name or ARN; its ``key`` is a member of the JSON object the
secret string holds, or None for the whole string. Versions are Secrets Manager ``VersionId``s;
a rotation puts a new version and Secrets Manager moves ``AWSCURRENT`` to it (the old one
becomes ``AWSPREVIOUS``).

boto3 is synchronous: every call runs in a worker thread, with connect and read timeouts of
``timeout_seconds`` and at most two attempts (botocore's standard retry mode), so a call gives
up after about ``2 x timeout_seconds`` plus one backoff of at most a second (unless a throttled
answer asks for longer with ``x-amz-retry-after``).

Decisions are pure functions (``select_value``, ``merge_key``, ``classify_client_error``,
``classify_sdk_error``); ``AwsProvider`` is the thin I/O around them.

botocore logs, at DEBUG, each call's parameters (a new SecretString) and each response's raw
body (the value): building a provider attaches a filter to the ``botocore.endpoint`` and
``botocore.parsers`` loggers that drops their DEBUG records, whatever level the process logs at.

This module must never put a secret value, an access key or an AWS response body into an
exception, a log record or a ``repr``; SDK exceptions are translated once and raised outside
the handler that caught them, so not even ``__context__`` keeps the SDK's exception (``raise ...
from None`` only hides it from tracebacks).
boto3 is imported only when a provider is built (``require_extra``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

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
from agentgov.secrets.config import AwsSettings
from agentgov.secrets.base import clipped_locator, key_list, shown

# Secrets Manager's limits: a SecretId (name or ARN) is 1-2048 characters, a SecretString at
# most 65536 bytes, a VersionId 32-64 characters.
MAX_SECRET_ID_CHARS: Final = 2048
MAX_KEY_CHARS: Final = 253  # AgentDeployment's spec.secrets[].aws.key allows no longer
MAX_SECRET_STRING_BYTES: Final = 65536
VERSION_ID_CHARS: Final = (32, 64)

_ATTEMPTS: Final = 2

# Error codes by meaning. Secrets Manager (JSON protocol) answers AccessDeniedException,
# UnrecognizedClientException and InvalidSignatureException; STS (IRSA's AssumeRoleWithWebIdentity)
# and the other Query-protocol services answer AccessDenied, InvalidClientTokenId, SignatureDoesNotMatch.
# An error body botocore cannot parse leaves the HTTP status as the code: see classify_client_error.
_DENIED: Final[Mapping[str, str]] = {
    "AccessDeniedException": "AWS denied the operator's identity access to the secret",
    "AccessDenied": "AWS denied the operator's identity access to the secret",
    "UnrecognizedClientException": "AWS does not recognise the access key id (unknown or deleted key)",
    "InvalidClientTokenId": "AWS does not recognise the access key id (unknown or deleted key)",
    "InvalidSignatureException": "AWS rejected the request signature (wrong secret access key)",
    "SignatureDoesNotMatch": "AWS rejected the request signature (wrong secret access key)",
    "IncompleteSignature": "AWS rejected the request signature (incomplete)",
    "MissingAuthenticationToken": "the request carried no AWS credentials",
    "ExpiredTokenException": "the AWS session token has expired",
    "ExpiredToken": "the AWS session token has expired",
    "InvalidIdentityToken": "STS rejected the web identity token (IRSA / pod identity)",
    "IDPRejectedClaim": "STS rejected the web identity token (IRSA / pod identity)",
    "RequestExpired": "AWS rejected the request as expired (is the clock skewed?)",
    "DecryptionFailure": "KMS refused to decrypt the secret (check the operator's kms:Decrypt grant)",
    "EncryptionFailure": "KMS refused to encrypt the new version (check the operator's kms:GenerateDataKey grant)",
    "KMSAccessDeniedException": "KMS refused the operator's identity",
}
_UNAVAILABLE: Final = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalServiceError", "InternalFailure", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
})

# botocore's own DEBUG records of a call carry the request parameters (a new SecretString) and
# the raw response body (the value): these loggers never pass DEBUG records on.
_SDK_LOGGERS_WITH_BODIES: Final = ("botocore.endpoint", "botocore.parsers")


class _DropDebugRecords(logging.Filter):
    """Drops DEBUG records of the logger it is attached to (see ``_SDK_LOGGERS_WITH_BODIES``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _silence_sdk_bodies() -> None:
    for name in _SDK_LOGGERS_WITH_BODIES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDebugRecords) for f in logger.filters):
            logger.addFilter(_DropDebugRecords())


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object ``text`` holds, or None when it holds anything else (or no JSON at all)."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting
        return None
    return parsed if isinstance(parsed, dict) else None


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # it holds the bytes: dropped here, never raised or chained
        return None


def select_value(locator: SecretLocator, secret_string: str | None, secret_binary: bytes | None) -> str:
    """The value a locator names within one version of a secret.

    No key: the whole string (a binary secret decoded as UTF-8). A key: the member of the JSON
    object the string holds; a string member as is, any other JSON value as its JSON text.
    """
    key = locator.key
    if secret_string is None:
        if secret_binary is None:
            raise SecretNotFound(locator, "the secret version holds neither a string nor binary data")
        if key is not None:
            raise SecretProviderMisconfigured(locator, f"the secret is binary, not a JSON object; key {shown(key)} can't be read")
        text = _utf8(secret_binary)
        if text is None:
            raise SecretProviderMisconfigured(locator, "the secret is binary and not UTF-8 text")
        return text
    if key is None:
        return secret_string
    document = _json_object(secret_string)
    if document is None:
        raise SecretProviderMisconfigured(locator, f"the secret string is not a JSON object; key {shown(key)} can't be read")
    if key not in document:
        raise SecretNotFound(locator, f"the secret has no key {shown(key)}; {key_list(document)}")
    member = document[key]
    return member if isinstance(member, str) else json.dumps(member)


def merge_key(locator: SecretLocator, current: str | None, new_value: str) -> str:
    """The secret string after a rotation: ``new_value`` itself (no key), or the current JSON
    object with the key set to it and every other member kept. ``current`` None: no current
    version yet, so the object starts empty."""
    if locator.key is None:
        return new_value
    document: dict[str, Any] = {}
    if current is not None:
        parsed = _json_object(current)
        if parsed is None:
            raise SecretProviderMisconfigured(
                locator, f"the secret string is not a JSON object; key {shown(locator.key)} can't be written")
        document = parsed
    document[locator.key] = new_value
    return json.dumps(document)


def check_locator(locator: SecretLocator) -> None:
    """Refuse, before any call, a locator this provider cannot serve."""
    where = clipped_locator(locator)  # as a message may show it: a hostile path is not echoed whole
    if locator.provider != "aws":
        raise SecretProviderMisconfigured(where, f"a {locator.provider} locator was given to the aws provider")
    if not locator.path or len(locator.path) > MAX_SECRET_ID_CHARS:
        raise SecretProviderMisconfigured(
            where, f"a secret name or ARN is 1-{MAX_SECRET_ID_CHARS} characters, not {len(locator.path)}")
    if locator.key is not None and not locator.key:
        raise SecretProviderMisconfigured(where, "the key is empty (omit it to read the whole secret string)")
    if locator.key is not None and len(locator.key) > MAX_KEY_CHARS:
        raise SecretProviderMisconfigured(where, f"a key is at most {MAX_KEY_CHARS} characters, not {len(locator.key)}")


def check_version(locator: SecretLocator, version: str) -> None:
    """A version id Secrets Manager could hold (32-64 characters); anything else does not exist."""
    low, high = VERSION_ID_CHARS
    if not low <= len(version) <= high:
        raise SecretNotFound(locator, f"no version {shown(version)}: AWS version ids are {low}-{high} characters")


def check_new_value(locator: SecretLocator, secret_string: str) -> None:
    size = len(secret_string.encode("utf-8"))
    if size > MAX_SECRET_STRING_BYTES:
        raise SecretProviderMisconfigured(
            locator, f"the new secret string is {size} bytes; Secrets Manager holds at most {MAX_SECRET_STRING_BYTES}")


def classify_client_error(code: str, status: int) -> tuple[type[SecretError], str]:
    """The provider error an AWS error code (and its HTTP status) means, with a message that
    names the code but never repeats AWS's message."""
    if code == "ResourceNotFoundException":
        return SecretNotFound, "the secret does not exist"
    if code in _DENIED:
        return SecretPermissionDenied, f"{_DENIED[code]} ({code})"
    if code == "InvalidRequestException":
        # The usual cause for reads and writes: the secret is scheduled for deletion.
        return SecretNotFound, "AWS refused the request (InvalidRequestException): the secret is likely scheduled for deletion"
    if code in _UNAVAILABLE or status >= 500:
        return SecretProviderUnavailable, f"Secrets Manager is unavailable ({code}, HTTP {status})"
    if status in (401, 403):
        return SecretPermissionDenied, f"AWS refused the operator's identity ({code}, HTTP {status})"
    if status == 404:
        return SecretNotFound, f"the secret does not exist ({code})"
    return SecretProviderMisconfigured, f"AWS rejected the request ({code}, HTTP {status})"


def classify_sdk_error(exceptions: Any, error: BaseException) -> tuple[type[SecretError], str]:
    """The provider error a botocore exception (not a ClientError) means. ``exceptions`` is
    ``botocore.exceptions``; messages name the exception class, never its text."""
    name = type(error).__name__
    if isinstance(error, exceptions.SSLError):
        return SecretProviderMisconfigured, "TLS with the Secrets Manager endpoint failed (check the endpoint and its certificate)"
    if isinstance(error, (exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError)):
        return SecretProviderUnavailable, f"Secrets Manager did not answer in time ({name}, {_ATTEMPTS} attempts)"
    if isinstance(error, (exceptions.ConnectionError, exceptions.HTTPClientError)):
        return SecretProviderUnavailable, f"could not reach Secrets Manager ({name})"
    if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
        return SecretProviderMisconfigured, (
            f"no usable AWS credentials ({name}): set static keys or a credentials file, "
            "or give the operator a workload identity (IRSA / pod identity)")
    if isinstance(error, exceptions.CredentialRetrievalError):
        return SecretProviderUnavailable, f"could not obtain AWS credentials from the default chain ({name})"
    if isinstance(error, (exceptions.ParamValidationError, exceptions.NoRegionError, exceptions.ProfileNotFound,
                          exceptions.InvalidConfigError, exceptions.UnknownCredentialError)):
        return SecretProviderMisconfigured, f"the AWS SDK refused the request or its configuration ({name})"
    return SecretProviderUnavailable, f"the AWS SDK failed ({name})"


def botocore_session(settings: AwsSettings) -> Any:
    """A botocore session whose credentials are the static keys, the credentials file, or
    (neither given) the default chain: environment, IRSA web identity, pod identity, IMDS. The one
    way every AWS client of agentgov (this provider, the S3 audit sink) gets its credentials;
    SecretProviderMisconfigured when the settings cannot work."""
    session_module = require_extra("botocore.session", "aws")
    session = session_module.Session()
    keys = (settings.access_key_id, settings.secret_access_key)
    if (keys[0] is None) != (keys[1] is None):
        raise SecretProviderMisconfigured(
            None, "static AWS keys need both access_key_id and secret_access_key", provider="aws")
    if keys[0] is not None and keys[1] is not None:
        if settings.credentials_file is not None:
            raise SecretProviderMisconfigured(
                None, "give either static AWS keys or a credentials file, not both", provider="aws")
        session.set_credentials(keys[0].get_secret_value(), keys[1].get_secret_value())
    elif settings.credentials_file is not None:
        session.set_credentials(*_keys_from_file(settings.credentials_file))
    return session


def _keys_from_file(path: str) -> tuple[str, str, str | None]:
    """The [default] profile of a shared-credentials file, read by botocore's own parser."""
    credentials = require_extra("botocore.credentials", "aws")
    if not os.path.isfile(path):
        raise SecretProviderMisconfigured(None, f"the AWS credentials file {path} does not exist", provider="aws")
    unreadable: str | None = None
    try:
        loaded = credentials.SharedCredentialProvider(creds_filename=path, profile_name="default").load()
    except Exception as error:  # noqa: BLE001 - botocore's parse errors quote the file: kept out of ours
        unreadable = type(error).__name__
    if unreadable is not None:
        raise SecretProviderMisconfigured(
            None, f"the AWS credentials file {path} cannot be read ({unreadable})", provider="aws")
    if loaded is None:
        raise SecretProviderMisconfigured(
            None, f"the AWS credentials file {path} has no aws_access_key_id and aws_secret_access_key "
                  "in its [default] profile", provider="aws")
    frozen = loaded.get_frozen_credentials()
    return str(frozen.access_key), str(frozen.secret_key), frozen.token


class AwsProvider:
    """Secrets Manager through one boto3 client (thread-safe; calls run in worker threads)."""

    kind: ProviderKind = "aws"

    def __init__(self, settings: AwsSettings) -> None:
        boto3 = require_extra("boto3", "aws")
        self._exceptions = require_extra("botocore.exceptions", "aws")
        botocore_config = require_extra("botocore.config", "aws")
        self._settings = settings
        _silence_sdk_bodies()
        failure: str | None = None
        try:
            session = boto3.Session(botocore_session=botocore_session(settings), region_name=settings.region)
            self._client = session.client(
                "secretsmanager",
                endpoint_url=settings.endpoint_url,
                config=botocore_config.Config(
                    connect_timeout=settings.timeout_seconds,
                    read_timeout=settings.timeout_seconds,
                    retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
                    user_agent_extra="agentgov",
                ),
            )
        except self._exceptions.NoRegionError:
            failure = "no AWS region: set the provider's region or AWS_REGION"
        except (self._exceptions.BotoCoreError, ValueError) as error:  # ValueError: a malformed endpoint URL
            failure = f"cannot build a Secrets Manager client ({type(error).__name__}); check region and endpoint_url"
        if failure is not None:  # raised outside the handler: the SDK's exception is not kept as context
            raise SecretProviderMisconfigured(None, failure, provider="aws")

    def __repr__(self) -> str:
        return f"AwsProvider(region={self._settings.region!r}, endpoint_url={self._settings.endpoint_url!r})"

    # --- the protocol ---------------------------------------------------------------------

    async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue:
        check_locator(locator)
        if version is not None:
            check_version(locator, version)
        return await asyncio.to_thread(self._get_sync, locator, version)

    async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue:
        check_locator(locator)
        if not isinstance(new_value, str):
            raise SecretProviderMisconfigured(locator, f"a new value must be text, not {type(new_value).__name__}")
        return await asyncio.to_thread(self._rotate_sync, locator, new_value)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    # --- the I/O, in worker threads ---------------------------------------------------------

    def _get_sync(self, locator: SecretLocator, version: str | None) -> SecretValue:
        params = {"SecretId": locator.path} | ({"VersionId": version} if version is not None else {})
        response = self._call("get_secret_value", locator, params, missing=lambda: self._why_not_found(locator, version))
        version_id = response.get("VersionId")
        if not isinstance(version_id, str):
            raise SecretProviderUnavailable(locator, "Secrets Manager answered without a VersionId")
        string = response.get("SecretString")
        binary = response.get("SecretBinary")
        return SecretValue(
            select_value(locator, string if isinstance(string, str) else None, binary if isinstance(binary, bytes) else None),
            version_id,
        )

    def _rotate_sync(self, locator: SecretLocator, new_value: str) -> SecretValue:
        current: str | None = None
        if locator.key is not None:
            try:
                response = self._call("get_secret_value", locator, {"SecretId": locator.path})
            except SecretNotFound:
                # No current version (or no secret: PutSecretValue below says so).
                response = {}
            if "SecretBinary" in response and "SecretString" not in response:
                raise SecretProviderMisconfigured(
                    locator, f"the secret is binary, not a JSON object; key {shown(locator.key)} can't be written")
            string = response.get("SecretString")
            current = string if isinstance(string, str) else None
        secret_string = merge_key(locator, current, new_value)
        check_new_value(locator, secret_string)
        # One token per rotation: botocore resends it when it retries a timed-out call, so
        # Secrets Manager makes at most one version of it. (Read-modify-write of a key is not
        # atomic: Secrets Manager has no compare-and-set; a concurrent writer of another key
        # between the read and the put loses its change.)
        put = self._call("put_secret_value", locator, {
            "SecretId": locator.path, "SecretString": secret_string, "ClientRequestToken": str(uuid.uuid4())})
        version_id = put.get("VersionId")
        if not isinstance(version_id, str):
            raise SecretProviderUnavailable(locator, "Secrets Manager answered without a VersionId")
        return SecretValue(new_value, version_id)

    def _call(self, operation: str, locator: SecretLocator, params: dict[str, str],
              missing: Callable[[], SecretError] | None = None) -> dict[str, Any]:
        """One API call, its failure translated to a SecretError (never chained). ``missing``
        builds the error for a ResourceNotFoundException when the caller can say more."""
        exceptions = self._exceptions
        code = ""
        try:
            response = getattr(self._client, operation)(**params)
        except exceptions.ClientError as error:
            details = getattr(error, "response", None) or {}
            code = str(details.get("Error", {}).get("Code", "Unknown"))
            status = int(details.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            kind, message = classify_client_error(code, status)
        except exceptions.BotoCoreError as error:
            kind, message = classify_sdk_error(exceptions, error)
        else:
            if not isinstance(response, dict):
                raise SecretProviderUnavailable(locator, f"Secrets Manager answered {operation} with no object")
            return response
        # Raised outside the except blocks: nothing of the SDK's exception is chained or kept.
        if code == "ResourceNotFoundException" and missing is not None:
            raise missing()
        raise kind(locator, message)

    def _why_not_found(self, locator: SecretLocator, version: str | None) -> SecretError:
        """A NotFound that says what is missing: the secret, the version asked for, or the
        current version of a secret created without a value. DescribeSecret tells them apart
        (without it, e.g. not granted, the message names both)."""
        try:
            self._call("describe_secret", locator, {"SecretId": locator.path})
        except SecretNotFound:
            return SecretNotFound(locator, "the secret does not exist")
        except SecretError:
            if version is not None:
                return SecretNotFound(locator, f"the secret or its version {shown(version)} does not exist")
            return SecretNotFound(locator, "the secret does not exist or has no current (AWSCURRENT) version")
        if version is not None:
            return SecretNotFound(locator, f"the secret has no version {shown(version)}")
        return SecretNotFound(locator, "the secret has no current (AWSCURRENT) version: it was created without a value")
