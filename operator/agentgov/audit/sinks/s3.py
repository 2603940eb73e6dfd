"""The S3 sink: one gzipped JSON lines object per time window, object-locked when the bucket allows.

Each batch (a UTC-aligned window of ``windowSeconds``, or ``maxRecords``, never across
midnight) becomes one object::

    <prefix>/<stream>/<source>/YYYY/MM/DD/<first seq>-<last seq>-<first hash, 12 hex>.jsonl.gz

``stream`` is ``<namespace>/<agent>`` (or ``operator``), ``source`` the pod that wrote the log
(replicas write separate chains). The key is a function of the records alone, and the shipper
notes a batch's seqs in its cursor before sending it, so a retry after a crash writes the same
records under the same key: an overwrite (a new version on a versioned bucket), never a second
object. The body is the local log's lines byte for byte (gzip with a zero mtime, so the same
batch always has the same bytes and ETag), sent with ``Content-MD5``; S3 refuses a body that
does not match it.

Object Lock: at start the sink asks the bucket (``GetObjectLockConfiguration``). When it is
enabled and the mode is GOVERNANCE or COMPLIANCE, each object is written with that mode and a
retain-until date of the end of the newest ``retain_until`` day among its records (a date
already past sets none). When the bucket has no Object Lock the objects are written without
retention, and the sink says so in its log and status. The sink never deletes.

Credentials: ``AwsSettings`` — a shared-credentials file mounted from a Secret, static keys
(tests), or boto3's default chain (IRSA, EKS pod identity). boto3 runs in worker threads with
short timeouts; its errors are translated here, once, into ``SinkUnavailable`` naming the
bucket and the S3 error code — never a key, a signature or a response body.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from agentgov.audit.sinks.base import Delivery, SinkUnavailable
from agentgov.audit.sinks.batching import BatchPolicy
from agentgov.audit.sinks.logread import LogLine
from agentgov.audit.sinks.metrics import FailureReason
from agentgov.audit.sinks.settings import S3SinkSettings, SinkKind
from agentgov.secrets.aws import botocore_session
from agentgov.secrets.base import SecretProviderMisconfigured, require_extra
from agentgov.secrets.config import AwsSettings

log = logging.getLogger(__name__)

# An object holds at most this many bytes of records before gzip (the sidecar holds one batch).
MAX_OBJECT_BYTES: Final = 32 * 1024 * 1024
HASH_CHARS: Final = 12
SEQ_DIGITS: Final = 12
_ATTEMPTS: Final = 2

_AUTH_CODES: Final = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "403",
})
_THROTTLE_CODES: Final = frozenset({"SlowDown", "RequestLimitExceeded", "Throttling", "ThrottlingException",
                                    "TooManyRequests", "503"})
_CONFIG_CODES: Final = frozenset({"NoSuchBucket", "PermanentRedirect", "AuthorizationHeaderMalformed",
                                  "IllegalLocationConstraintException", "404"})


# --- pure parts -------------------------------------------------------------------------


def object_key(prefix: str, stream: str, source: str, first: LogLine, last: LogLine) -> str:
    """Where a batch from ``first`` to ``last`` is stored (the day of its first record)."""
    assert first.timestamp is not None and first.seq is not None and last.seq is not None and first.hash is not None
    day = dt.datetime.fromtimestamp(first.timestamp, dt.timezone.utc)
    digest = first.hash.split(":", 1)[-1][:HASH_CHARS]
    name = f"{first.seq:0{SEQ_DIGITS}d}-{last.seq:0{SEQ_DIGITS}d}-{digest}.jsonl.gz"
    parts = [prefix] if prefix else []
    return "/".join([*parts, stream, source, f"{day:%Y/%m/%d}", name])


def object_body(batch: Sequence[LogLine]) -> bytes:
    """The records' lines, gzipped with a fixed mtime: the same batch gives the same bytes."""
    return gzip.compress(b"".join(line.raw + b"\n" for line in batch), compresslevel=6, mtime=0)


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def retain_until(batch: Sequence[LogLine], now: float) -> dt.datetime | None:
    """The end (next midnight, UTC) of the latest ``retain_until`` day among the records; None
    when no record has one or that moment has passed (S3 refuses a retention in the past)."""
    days: list[dt.date] = []
    for line in batch:
        value = line.record.get("retain_until") if line.record is not None else None
        if isinstance(value, str):
            try:
                days.append(dt.date.fromisoformat(value[:10]))
            except ValueError:
                continue
    if not days:
        return None
    until = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    return until if until.timestamp() > now else None


def classify_client_error(code: str, status: int) -> FailureReason:
    if code in _AUTH_CODES or status == 403:
        return "auth"
    if code in _THROTTLE_CODES or status in (429, 503):
        return "throttled"
    if code in _CONFIG_CODES:
        return "config"
    if status >= 500:
        return "server_error"
    return "rejected"


# --- the client ---------------------------------------------------------------------------


def _botocore_session(settings: AwsSettings) -> Any:
    """The AWS secret provider's session rules (static keys, the credentials file's [default]
    profile, or the default chain), its refusals as this sink's configuration errors."""
    try:
        return botocore_session(settings)
    except SecretProviderMisconfigured as error:
        raise SinkUnavailable("config", error.message) from None


def s3_client(settings: AwsSettings) -> Any:
    """A boto3 S3 client for these settings; SinkUnavailable("config") when it cannot be built."""
    try:
        boto3 = require_extra("boto3", "aws")
        botocore_config = require_extra("botocore.config", "aws")
        exceptions = require_extra("botocore.exceptions", "aws")
    except SecretProviderMisconfigured as e:
        raise SinkUnavailable("config", f"the S3 sink needs boto3: {e.message}") from None
    try:
        session = boto3.Session(botocore_session=_botocore_session(settings), region_name=settings.region)
        return session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            config=botocore_config.Config(
                connect_timeout=settings.timeout_seconds,
                read_timeout=settings.timeout_seconds,
                retries={"mode": "standard", "total_max_attempts": _ATTEMPTS},
                # Custom endpoints (MinIO, moto, VPC endpoints by IP) rarely serve virtual hosts.
                s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
                user_agent_extra="agentgov-audit",
            ),
        )
    except exceptions.NoRegionError:
        raise SinkUnavailable("config", "no AWS region: set audit.sinks.s3.region (or AWS_REGION)") from None
    except (exceptions.BotoCoreError, ValueError) as error:
        raise SinkUnavailable("config", f"cannot build an S3 client ({type(error).__name__}); "
                                        "check the region and the endpoint") from None


def translate(error: BaseException, where: str) -> SinkUnavailable:
    """One boto3/botocore failure as SinkUnavailable (code and status only, never the body)."""
    exceptions = require_extra("botocore.exceptions", "aws")
    if isinstance(error, exceptions.ClientError):
        response = getattr(error, "response", {}) or {}
        code = str(response.get("Error", {}).get("Code", "Unknown"))[:64]
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = classify_client_error(code, status)
        hint = {"auth": "; check the credentials and the bucket policy",
                "config": "; check the bucket name, region and endpoint"}.get(reason, "")
        return SinkUnavailable(reason, f"{where}: S3 answered {code} ({status}){hint}")
    if isinstance(error, (exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError)):
        return SinkUnavailable("timeout", f"{where}: no answer in time ({type(error).__name__})")
    if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
        return SinkUnavailable("auth", f"{where}: no AWS credentials (give a credentials file or a pod identity)")
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectionClosedError)):
        return SinkUnavailable("connect", f"{where}: cannot connect ({type(error).__name__})")
    return SinkUnavailable("connect", f"{where}: the request failed ({type(error).__name__})")


class S3Sink:
    kind: SinkKind = "s3"
    fixed_batches = True

    def __init__(self, settings: S3SinkSettings, *, stream: str, source: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.stream = stream
        self.source = source
        where = f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
        self.destination = where + (f" at {settings.aws.endpoint_url}" if settings.aws.endpoint_url else "")
        self._where = where
        self.batching = BatchPolicy(max_records=settings.max_records, max_bytes=MAX_OBJECT_BYTES,
                                    window_seconds=settings.window_seconds, aligned=True)
        self._clock = clock
        self._client: Any = None
        self.object_lock: bool | None = None  # None: not known yet
        self.last_key: str | None = None

    # -- blocking parts --

    def _open_sync(self) -> None:
        client = s3_client(self.settings.aws)
        exceptions = require_extra("botocore.exceptions", "aws")
        bucket = self.settings.bucket
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as error:  # noqa: BLE001 - translated
            raise translate(error, f"s3://{bucket}") from None
        try:
            answer = client.get_object_lock_configuration(Bucket=bucket)
            enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code != "ObjectLockConfigurationNotFoundError":
                log.warning("audit shipping to %s: cannot tell whether the bucket has Object Lock (%s); "
                            "writing objects without retention", self._where, code or type(error).__name__)
            enabled = False
        except Exception as error:  # noqa: BLE001 - translated
            raise translate(error, f"s3://{bucket}") from None
        if not enabled and self.settings.object_lock_mode != "Off" and self.object_lock is not False:
            log.warning("audit shipping to %s: the bucket has no Object Lock; objects are written without "
                        "retention (create the bucket with Object Lock for %s retention)", self._where,
                        self.settings.object_lock_mode)
        self.object_lock = enabled
        self._client = client

    def _put_sync(self, key: str, body: bytes, lock: dt.datetime | None, batch_info: Mapping[str, str]) -> None:
        if self._client is None:
            self._open_sync()
        params: dict[str, Any] = {
            "Bucket": self.settings.bucket, "Key": key, "Body": body, "ContentMD5": content_md5(body),
            "ContentType": "application/x-ndjson", "ContentEncoding": "gzip", "Metadata": dict(batch_info),
        }
        if lock is not None:
            params["ObjectLockMode"] = self.settings.object_lock_mode
            params["ObjectLockRetainUntilDate"] = lock
        try:
            self._client.put_object(**params)
        except Exception as error:  # noqa: BLE001 - translated
            failure = translate(error, f"{self._where} ({key.rsplit('/', 1)[-1]})")
            if failure.reason in ("auth", "config"):
                self._client = None  # rebuild it (a rotated credentials file) on the next try
            raise failure from None

    # -- the sink --

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)

    async def deliver(self, batch: Sequence[LogLine]) -> Delivery:
        key = object_key(self.settings.prefix, self.stream, self.source, batch[0], batch[-1])
        body = object_body(batch)
        lock = None
        if self.object_lock and self.settings.object_lock_mode != "Off":
            lock = retain_until(batch, self._clock())
        info = {"first-seq": str(batch[0].seq), "last-seq": str(batch[-1].seq), "records": str(len(batch)),
                "source": self.source}
        await asyncio.to_thread(self._put_sync, key, body, lock, info)
        self.last_key = key
        return Delivery.all_delivered()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def details(self) -> Mapping[str, object]:
        if self.object_lock is None:
            lock = "unknown"
        elif not self.object_lock:
            lock = "not enabled on the bucket: objects have no retention"
        elif self.settings.object_lock_mode == "Off":
            lock = "off: the bucket's default retention only"
        else:
            lock = f"{self.settings.object_lock_mode} until each object's latest retain_until"
        return {"objectLock": lock, "lastObject": self.last_key}


# --- reading back -------------------------------------------------------------------------


def download_copies(settings: S3SinkSettings, directory: Path, *, stream: str, source: str | None = None) -> list[Path]:
    """Download every object of a stream (or of one source of it) into ``directory``, keeping
    the key's layout below the stream (``<source>/YYYY/MM/DD/...jsonl.gz``), for
    ``agentgov audit verify`` over the copy. Blocking; SinkUnavailable on failure."""
    client = s3_client(settings.aws)
    stream_prefix = "/".join([*([settings.prefix] if settings.prefix else []), stream]) + "/"
    prefix = stream_prefix + (f"{source}/" if source else "")
    written: list[Path] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=settings.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                relative = Path(key[len(stream_prefix):])
                if relative.is_absolute() or ".." in relative.parts:
                    continue  # not a key this sink wrote
                target = directory / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(client.get_object(Bucket=settings.bucket, Key=key)["Body"].read())
                written.append(target)
    except SinkUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - translated
        raise translate(error, f"s3://{settings.bucket}/{prefix}") from None
    finally:
        client.close()
    return sorted(written)
