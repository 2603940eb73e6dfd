"""What each audit sink is told: where it ships, how it batches, where its credentials are.

Two front-ends build the same frozen settings and run the same checks:

- ``sinks_from_bundle``: a sidecar's sinks, from the policy bundle (``auditSinks``, compiled by
  the operator from ``spec.audit.sinks``; credentials are files under the sidecar's secrets
  directory). An error names the spec field (``audit.sinks.s3.windowSeconds``).
- ``sinks_from_env``: the operator's own audit log, from ``AGENTGOV_AUDIT_*`` variables. An
  error names the variable.

Credentials are never values here, only the paths of files holding them (a Secret mounted in
the pod), read when a request needs them: rotating the Secret needs no restart, and no settings
object, repr or error can carry a password. A URL with credentials in it is refused.

Pure: no I/O, no clock, no environment reads (the environment is passed in).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from agentgov.api.bundle import SECRETS_MOUNT_DIR, BundleAuditSinks, SecretFile
from agentgov.secrets.config import AwsSettings

SinkKind = Literal["stdout", "elasticsearch", "s3"]
SINK_KINDS: Final[tuple[SinkKind, ...]] = get_args(SinkKind)
ObjectLockMode = Literal["GOVERNANCE", "COMPLIANCE", "Off"]
OBJECT_LOCK_MODES: Final[tuple[ObjectLockMode, ...]] = get_args(ObjectLockMode)

# Index names are at most 255 bytes; the day suffix "-YYYY.MM.DD" takes 11 of them.
MAX_INDEX_PREFIX: Final = 100
# S3 keys are at most 1024 bytes; the prefix leaves room for stream, source, date and seqs.
MAX_S3_PREFIX: Final = 256
MAX_URL: Final = 2048
MAX_NAME: Final = 253
MAX_WINDOW_SECONDS: Final = 86_400
MAX_S3_RECORDS: Final = 100_000
MAX_ES_RECORDS: Final = 10_000
DEFAULT_INDEX_PREFIX: Final = "agentgov-audit"
DEFAULT_S3_PREFIX: Final = "agentgov-audit"

_INDEX_PREFIX = re.compile(r"[a-z0-9][a-z0-9._-]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# S3's "safe characters" for keys, plus "/" between segments.
_S3_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
# A stream ("<namespace>/<agent>", "operator") or a source (a pod name) becomes part of S3 keys.
_PATH_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_USERNAME = re.compile(r"[^\s:]{1,256}")


class SinkConfigError(ValueError):
    """A sink setting that cannot work. ``str()`` names the setting (a spec field or an
    environment variable) and says why; it never echoes a value that could be a credential."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        self.message = message
        super().__init__(f"{setting}: {message}")


@dataclass(frozen=True)
class StdoutSinkSettings:
    """JSON lines on the process's standard output, for the cluster's log collector."""

    max_records: int = 500


@dataclass(frozen=True)
class ElasticsearchSinkSettings:
    """Elasticsearch or OpenSearch: ``_bulk`` ``create`` into ``<index_prefix>-YYYY.MM.DD``."""

    url: str
    index_prefix: str = DEFAULT_INDEX_PREFIX
    username: str | None = None  # basic auth, with password_file ...
    password_file: str | None = None
    api_key_file: str | None = None  # ... or an API key (the base64 "encoded" value) in a file
    ca_file: str | None = None  # PEM bundle for the cluster's TLS certificate; None: the system's
    flush_seconds: float = 5.0  # a record waits at most this long for others to share its request
    max_records: int = 500
    max_bytes: int = 5 * 1024 * 1024
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class S3SinkSettings:
    """S3 (or an S3-compatible store): one gzipped JSON lines object per time window."""

    bucket: str
    prefix: str = DEFAULT_S3_PREFIX
    # Region, endpoint, credentials file, timeout; static keys are for tests only.
    aws: AwsSettings = field(default_factory=AwsSettings)
    window_seconds: int = 300
    max_records: int = 10_000
    object_lock_mode: ObjectLockMode = "GOVERNANCE"


SinkSettings = StdoutSinkSettings | ElasticsearchSinkSettings | S3SinkSettings


@dataclass(frozen=True)
class SinksSettings:
    """Every sink of one audit log, and the names its remote copies are filed under."""

    # The log's name in remote copies: "<namespace>/<agent>" for a sidecar, "operator".
    stream: str
    # Which writer of that stream: the pod name (replicas of one agent write separate chains).
    source: str
    stdout: StdoutSinkSettings | None = None
    elasticsearch: ElasticsearchSinkSettings | None = None
    s3: S3SinkSettings | None = None

    def configured(self) -> dict[SinkKind, SinkSettings]:
        found: dict[SinkKind, SinkSettings | None] = {
            "stdout": self.stdout, "elasticsearch": self.elasticsearch, "s3": self.s3,
        }
        return {kind: value for kind, value in found.items() if value is not None}


# --- checks, shared by both front-ends ----------------------------------------------------

Namer = Callable[[str], str]  # a settings field ("window_seconds") -> how the user spells it


def _shown(text: str, limit: int = 64) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_url(url: str, setting: str) -> str:
    """An http(s) URL with a host, no credentials, no query or fragment; SinkConfigError otherwise."""
    if len(url) > MAX_URL:
        raise SinkConfigError(setting, f"longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SinkConfigError(setting, "is not a valid URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError(setting, "must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        # Never echo it: the part before "@" is a credential.
        raise SinkConfigError(setting, "must not carry credentials; give them as files (username/password or API key)")
    if parts.query or parts.fragment:
        raise SinkConfigError(setting, "must not have a query string or fragment")
    if port == 0:
        raise SinkConfigError(setting, "the port must be a number from 1 to 65535")
    if any(ch.isspace() for ch in url):
        raise SinkConfigError(setting, "must not contain spaces")
    return url


def _check_range(value: float, low: float, high: float, setting: str, unit: str = "") -> None:
    if not (low <= value <= high):
        raise SinkConfigError(setting, f"must be between {low:g} and {high:g}{unit}, not {value:g}")


def check_stream_name(value: str, setting: str, *, parts: bool = True) -> str:
    """A stream (``<namespace>/<agent>``: '/'-separated parts) or a source (one part) that
    becomes part of S3 keys and export paths."""
    ok = bool(value) and len(value) <= MAX_NAME and _PATH_NAME.fullmatch(value) is not None
    if ok and not parts and "/" in value:
        ok = False
    if ok and any(part in (".", "..") for part in value.split("/")):
        ok = False
    if not ok:
        between = ", with '/' between parts" if parts else ""
        raise SinkConfigError(setting, f"{_shown(value)} must be 1-{MAX_NAME} letters, digits, '.', '_', '-'{between}")
    return value


def source_name(hostname: str) -> str:
    """A usable source name from a host name (a pod name already is one)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", hostname).strip(".")[:MAX_NAME]
    return cleaned or "unknown"


def check_stdout(settings: StdoutSinkSettings, name: Namer) -> StdoutSinkSettings:
    _check_range(settings.max_records, 1, MAX_ES_RECORDS, name("max_records"))
    return settings


def check_elasticsearch(settings: ElasticsearchSinkSettings, name: Namer) -> ElasticsearchSinkSettings:
    check_url(settings.url, name("url"))
    prefix = settings.index_prefix
    if not prefix or len(prefix) > MAX_INDEX_PREFIX:
        raise SinkConfigError(name("index_prefix"), f"must be 1-{MAX_INDEX_PREFIX} characters")
    if not _INDEX_PREFIX.fullmatch(prefix):
        raise SinkConfigError(
            name("index_prefix"),
            f"{_shown(prefix)} is not an index name prefix: lowercase letters, digits, '.', '_', '-', "
            "starting with a letter or digit")
    if settings.username is not None and not _USERNAME.fullmatch(settings.username):
        raise SinkConfigError(name("username"), "must be 1-256 characters without spaces or ':'")
    if (settings.username is None) != (settings.password_file is None):
        raise SinkConfigError(name("password_file") if settings.username else name("username"),
                              "basic authentication needs both a username and a password file")
    if settings.password_file is not None and settings.api_key_file is not None:
        raise SinkConfigError(name("api_key_file"), "give either a password file or an API key file, not both")
    for attr in ("password_file", "api_key_file", "ca_file"):
        path = getattr(settings, attr)
        if path is not None and (not path or len(path) > 4096 or "\x00" in path):
            raise SinkConfigError(name(attr), "is not a usable file path")
    _check_range(settings.flush_seconds, 0, 3600, name("flush_seconds"), " seconds")
    _check_range(settings.max_records, 1, MAX_ES_RECORDS, name("max_records"))
    _check_range(settings.max_bytes, 1024, 100 * 1024 * 1024, name("max_bytes"), " bytes")
    if not (0 < settings.timeout_seconds <= 300):
        raise SinkConfigError(name("timeout_seconds"), "must be more than 0 and at most 300 seconds")
    return settings


def check_s3(settings: S3SinkSettings, name: Namer) -> S3SinkSettings:
    bucket = settings.bucket
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IP_LIKE.fullmatch(bucket):
        raise SinkConfigError(
            name("bucket"), f"{_shown(bucket)} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    prefix = settings.prefix
    if len(prefix) > MAX_S3_PREFIX:
        raise SinkConfigError(name("prefix"), f"longer than {MAX_S3_PREFIX} characters")
    if prefix and (not _S3_PREFIX.fullmatch(prefix) or any(part in (".", "..") for part in prefix.split("/"))):
        raise SinkConfigError(
            name("prefix"),
            f"{_shown(prefix)} must be key segments of letters, digits and !_.*'()- joined by '/' "
            "(no leading, trailing or double '/', no '.' or '..' segments)")
    aws = settings.aws
    if aws.region is not None and not _REGION.fullmatch(aws.region):
        raise SinkConfigError(name("region"), f"{_shown(aws.region)} is not an AWS region name")
    if aws.endpoint_url is not None:
        check_url(aws.endpoint_url, name("endpoint"))
    if aws.credentials_file is not None and (not aws.credentials_file or "\x00" in aws.credentials_file):
        raise SinkConfigError(name("credentials_file"), "is not a usable file path")
    if not (0 < aws.timeout_seconds <= 300):
        raise SinkConfigError(name("timeout_seconds"), "must be more than 0 and at most 300 seconds")
    _check_range(settings.window_seconds, 1, MAX_WINDOW_SECONDS, name("window_seconds"), " seconds")
    _check_range(settings.max_records, 1, MAX_S3_RECORDS, name("max_records"))
    if settings.object_lock_mode not in OBJECT_LOCK_MODES:
        raise SinkConfigError(name("object_lock_mode"), f"must be one of {', '.join(OBJECT_LOCK_MODES)}")
    return settings


def check_sinks(settings: SinksSettings, name: Callable[[SinkKind | None, str], str]) -> SinksSettings:
    """Every check on every configured sink; ``name(kind, field)`` spells a setting for errors."""
    check_stream_name(settings.stream, name(None, "stream"))
    check_stream_name(settings.source, name(None, "source"), parts=False)
    if settings.stdout is not None:
        check_stdout(settings.stdout, lambda f: name("stdout", f))
    if settings.elasticsearch is not None:
        check_elasticsearch(settings.elasticsearch, lambda f: name("elasticsearch", f))
    if settings.s3 is not None:
        check_s3(settings.s3, lambda f: name("s3", f))
    return settings


# --- from the policy bundle (a sidecar) ---------------------------------------------------

# Settings fields whose AgentDeployment field is not their camelCase (credentials are Secret refs).
_BUNDLE_FIELDS: Final[dict[str, str]] = {
    "username": "basicAuth.username", "password_file": "basicAuth.passwordSecretRef",
    "api_key_file": "apiKeySecretRef", "ca_file": "caSecretRef", "credentials_file": "credentialsSecretRef",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def bundle_setting(kind: SinkKind | None, name: str) -> str:
    """How a sidecar's setting is spelled in the AgentDeployment: ``audit.sinks.s3.windowSeconds``."""
    if kind is None:
        return f"audit.sinks ({name})"
    return f"audit.sinks.{kind}.{_BUNDLE_FIELDS.get(name, _camel(name))}"


def _file(file: SecretFile | None, secrets_dir: Path) -> str | None:
    return None if file is None else file.path(str(secrets_dir))


def sinks_from_bundle(sinks: BundleAuditSinks | None, *, stream: str, source: str,
                      secrets_dir: Path = Path(SECRETS_MOUNT_DIR)) -> SinksSettings:
    """A sidecar's sinks from its bundle (none when ``sinks`` is None); SinkConfigError names the field."""
    settings = SinksSettings(stream=stream, source=source)
    if sinks is None:
        return check_sinks(settings, bundle_setting)
    es, s3 = sinks.elasticsearch, sinks.s3
    settings = replace(
        settings,
        stdout=StdoutSinkSettings() if sinks.stdout else None,
        elasticsearch=None if es is None else ElasticsearchSinkSettings(
            url=es.url, index_prefix=es.index_prefix, username=es.username,
            password_file=_file(es.password_file, secrets_dir), api_key_file=_file(es.api_key_file, secrets_dir),
            ca_file=_file(es.ca_file, secrets_dir), flush_seconds=float(es.flush_seconds),
        ),
        s3=None if s3 is None else S3SinkSettings(
            bucket=s3.bucket, prefix=s3.prefix,
            aws=AwsSettings(region=s3.region, endpoint_url=s3.endpoint,
                            credentials_file=_file(s3.credentials_file, secrets_dir)),
            window_seconds=s3.window_seconds, max_records=s3.max_records, object_lock_mode=s3.object_lock_mode,
        ),
    )
    return check_sinks(settings, bundle_setting)


# --- from the environment (the operator) --------------------------------------------------

ENV_PREFIX: Final = "AGENTGOV_AUDIT_"
# variable -> (sink, settings field); the sink is on when its first variable here is set.
ENV_VARIABLES: Final[dict[str, tuple[SinkKind | None, str]]] = {
    "AGENTGOV_AUDIT_SOURCE": (None, "source"),
    "AGENTGOV_AUDIT_STDOUT": ("stdout", "enabled"),
    "AGENTGOV_AUDIT_ES_URL": ("elasticsearch", "url"),
    "AGENTGOV_AUDIT_ES_INDEX_PREFIX": ("elasticsearch", "index_prefix"),
    "AGENTGOV_AUDIT_ES_USERNAME": ("elasticsearch", "username"),
    "AGENTGOV_AUDIT_ES_PASSWORD_FILE": ("elasticsearch", "password_file"),
    "AGENTGOV_AUDIT_ES_API_KEY_FILE": ("elasticsearch", "api_key_file"),
    "AGENTGOV_AUDIT_ES_CA_FILE": ("elasticsearch", "ca_file"),
    "AGENTGOV_AUDIT_ES_FLUSH_SECONDS": ("elasticsearch", "flush_seconds"),
    "AGENTGOV_AUDIT_ES_TIMEOUT_SECONDS": ("elasticsearch", "timeout_seconds"),
    "AGENTGOV_AUDIT_S3_BUCKET": ("s3", "bucket"),
    "AGENTGOV_AUDIT_S3_PREFIX": ("s3", "prefix"),
    "AGENTGOV_AUDIT_S3_REGION": ("s3", "region"),
    "AGENTGOV_AUDIT_S3_ENDPOINT": ("s3", "endpoint"),
    "AGENTGOV_AUDIT_S3_CREDENTIALS_FILE": ("s3", "credentials_file"),
    "AGENTGOV_AUDIT_S3_TIMEOUT_SECONDS": ("s3", "timeout_seconds"),
    "AGENTGOV_AUDIT_S3_WINDOW_SECONDS": ("s3", "window_seconds"),
    "AGENTGOV_AUDIT_S3_MAX_RECORDS": ("s3", "max_records"),
    "AGENTGOV_AUDIT_S3_OBJECT_LOCK_MODE": ("s3", "object_lock_mode"),
}
_ENV_NAMES: Final[dict[tuple[SinkKind | None, str], str]] = {v: k for k, v in ENV_VARIABLES.items()}
_SWITCH: Final[dict[SinkKind, str]] = {
    "stdout": "AGENTGOV_AUDIT_STDOUT", "elasticsearch": "AGENTGOV_AUDIT_ES_URL", "s3": "AGENTGOV_AUDIT_S3_BUCKET",
}


def env_setting(kind: SinkKind | None, name: str) -> str:
    """The variable that sets a field of the operator's sinks."""
    return _ENV_NAMES.get((kind, name), f"{ENV_PREFIX}{name.upper()}")


def _number(text: str, variable: str, *, integer: bool) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SinkConfigError(variable, f"{_shown(text)} is not {kind}") from None
    if value != value:  # NaN
        raise SinkConfigError(variable, "is not a number")
    return value


def _flag(text: str, variable: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SinkConfigError(variable, f"{_shown(text)} is not true or false")


def sinks_from_env(environ: Mapping[str, str], *, stream: str = "operator", default_source: str) -> SinksSettings:
    """The operator's sinks from ``AGENTGOV_AUDIT_*`` (see ``ENV_VARIABLES``); ``default_source``
    (the pod name) unless ``AGENTGOV_AUDIT_SOURCE`` says otherwise. SinkConfigError names the variable."""
    given = {k: v.strip() for k, v in environ.items() if k in ENV_VARIABLES}
    for variable in given:
        kind, _ = ENV_VARIABLES[variable]
        if kind in ("elasticsearch", "s3") and _SWITCH[kind] not in given:
            raise SinkConfigError(variable, f"is set but {_SWITCH[kind]} is not (it turns the {kind} sink on)")

    def text(kind: SinkKind, name: str) -> str | None:
        value = given.get(_ENV_NAMES[(kind, name)])
        return value if value else None

    def number(kind: SinkKind, name: str, default: float, *, integer: bool = False) -> float:
        value = text(kind, name)
        return default if value is None else _number(value, _ENV_NAMES[(kind, name)], integer=integer)

    stdout = None
    if "AGENTGOV_AUDIT_STDOUT" in given and _flag(given["AGENTGOV_AUDIT_STDOUT"], "AGENTGOV_AUDIT_STDOUT"):
        stdout = StdoutSinkSettings()

    es = None
    url = text("elasticsearch", "url")
    if "AGENTGOV_AUDIT_ES_URL" in given and url is None:
        raise SinkConfigError("AGENTGOV_AUDIT_ES_URL", "is empty")
    if url is not None:
        es_defaults = ElasticsearchSinkSettings(url=url)
        es = ElasticsearchSinkSettings(
            url=url,
            index_prefix=text("elasticsearch", "index_prefix") or DEFAULT_INDEX_PREFIX,
            username=text("elasticsearch", "username"),
            password_file=text("elasticsearch", "password_file"),
            api_key_file=text("elasticsearch", "api_key_file"),
            ca_file=text("elasticsearch", "ca_file"),
            flush_seconds=number("elasticsearch", "flush_seconds", es_defaults.flush_seconds),
            timeout_seconds=number("elasticsearch", "timeout_seconds", es_defaults.timeout_seconds),
        )

    s3 = None
    bucket = text("s3", "bucket")
    if "AGENTGOV_AUDIT_S3_BUCKET" in given and bucket is None:
        raise SinkConfigError("AGENTGOV_AUDIT_S3_BUCKET", "is empty")
    if bucket is not None:
        s3_defaults = S3SinkSettings(bucket=bucket)
        mode = text("s3", "object_lock_mode") or s3_defaults.object_lock_mode
        if mode not in OBJECT_LOCK_MODES:
            raise SinkConfigError("AGENTGOV_AUDIT_S3_OBJECT_LOCK_MODE", f"must be one of {', '.join(OBJECT_LOCK_MODES)}")
        s3 = S3SinkSettings(
            bucket=bucket,
            prefix=given.get("AGENTGOV_AUDIT_S3_PREFIX", DEFAULT_S3_PREFIX),
            aws=AwsSettings(
                region=text("s3", "region"), endpoint_url=text("s3", "endpoint"),
                credentials_file=text("s3", "credentials_file"),
                timeout_seconds=number("s3", "timeout_seconds", AwsSettings().timeout_seconds),
            ),
            window_seconds=int(number("s3", "window_seconds", s3_defaults.window_seconds, integer=True)),
            max_records=int(number("s3", "max_records", s3_defaults.max_records, integer=True)),
            object_lock_mode=mode,  # checked just above
        )

    source = given.get("AGENTGOV_AUDIT_SOURCE") or default_source
    return check_sinks(SinksSettings(stream=stream, source=source, stdout=stdout, elasticsearch=es, s3=s3), env_setting)

