"""The operator's configuration, read once at startup from ``AGENTGOV_*`` environment variables.

``OperatorConfig.from_env(os.environ)`` is called by the startup handler; the result is
frozen and handed to every reconcile (and to the builders, inside their ``Inputs``). A bad
value fails fast with a ``ConfigError`` naming the variable and what was expected, so a typo
in a Helm value stops the operator at start rather than producing broken pods later.
Unset or empty variables take the defaults below.

| variable | default | meaning |
|---|---|---|
| AGENTGOV_IMAGE | ghcr.io/agentgov/agentgov:<version> | operator image, also run as the sidecar |
| AGENTGOV_IMAGE_PULL_POLICY | (Kubernetes' default) | pull policy of the sidecar container |
| AGENTGOV_REDIS_URL_SECRET | agentgov-redis:url | ``name:key`` of the Secret holding the budget store URL, in each agent namespace |
| AGENTGOV_REDIS_PORT | 6379 | budget store port, allowed by the NetworkPolicy |
| AGENTGOV_REDIS_SELECTOR | app.kubernetes.io/name=redis | labels of the Redis pods (``k=v,k2=v2``), for the NetworkPolicy |
| AGENTGOV_REDIS_NAMESPACE | (any namespace) | namespace of the Redis pods, for the NetworkPolicy |
| AGENTGOV_NAMESPACES | (all namespaces) | comma-separated namespaces to watch |
| AGENTGOV_SIDECAR_CPU_REQUEST / _MEMORY_REQUEST / _CPU_LIMIT / _MEMORY_LIMIT | 100m / 128Mi / 500m / 256Mi | sidecar resources unless the AgentDeployment sets them |
| AGENTGOV_AGENT_CPU_REQUEST / _MEMORY_REQUEST / _CPU_LIMIT / _MEMORY_LIMIT | 250m / 256Mi / 1 / 1Gi | agent container resources unless the AgentDeployment sets them |
| AGENTGOV_RESYNC_SECONDS | 60 | period of the resync reconcile (drift repair) |
| AGENTGOV_HANDLER_TIMEOUT_SECONDS | 60 | timeout of each API call a handler makes (handlers retry with backoff and give up after 10 minutes) |
| AGENTGOV_CLUSTER_DOMAIN | cluster.local | DNS suffix of Services |
| AGENTGOV_REDIS_URL | (none) | the budget store the operator reads AgentBudget spend from (``redis://``, ``rediss://`` or ``unix://``; the same Redis the sidecars write); unset: AgentBudget status says so and shows no spend |
| AGENTGOV_REDIS_TIMEOUT_SECONDS | 5 | bound on each read of the budget store |
| AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS | 60 | how often AgentBudget spend is re-read into status |
| AGENTGOV_OTLP_ENDPOINT | (none) | OpenTelemetry collector (``http(s)://host:port``, OTLP/HTTP): given to every sidecar as ``OTEL_EXPORTER_OTLP_ENDPOINT`` and opened in its NetworkPolicy; unset: no traces |
| AGENTGOV_PEERING_LIFETIME_SECONDS | 60 | with several replicas (``--peering``): how long a replica's peering entry counts as alive without a keep-alive; a replica that dies without stopping (SIGKILL, a lost node) is taken over by a standby after this long (from 10 to 3600) |
| AGENTGOV_WATCH_TIMEOUT_SECONDS | 300 | length of one watch request; a watch with no answer from the API server for twice this fails liveness |
| AGENTGOV_AUDIT_LOG | /var/log/agentgov/operator-audit.jsonl | the operator's audit log (JSON lines; the chart and manifests mount an emptyDir there). Left at the default, it is off where that directory does not exist (outside the image) |
| AGENTGOV_AUDIT_STDOUT, AGENTGOV_AUDIT_ES_*, AGENTGOV_AUDIT_S3_*, AGENTGOV_AUDIT_SOURCE | off | ship the operator's audit log to stdout, Elasticsearch/OpenSearch and S3 (``agentgov.audit.sinks.settings.ENV_VARIABLES``; docs/audit-sinks.md); the source defaults to the pod name (``HOSTNAME``) |
| AGENTGOV_AUDIT_RETENTION_DAYS | 365 | the ``retain_until`` of the operator's records |
| AGENTGOV_AUDIT_MAX_BYTES, _MAX_AGE_SECONDS, _DIGEST_KEY_FILE, _DIGEST_RECORDS, _DIGEST_SECONDS, _PRUNE_INTERVAL_SECONDS | see ``agentgov.audit.settings`` | rotation, signed digests and retention of the log (as for the sidecars) |
| AGENTGOV_SECRETS_TIMEOUT_SECONDS | 10 | bound on each read or rotation of a secret in Vault, AWS or Azure |
| AGENTGOV_VAULT_ADDR | (none: Vault off) | HashiCorp Vault's address (``https://vault.example:8200``); the other ``AGENTGOV_VAULT_*`` need it |
| AGENTGOV_VAULT_MOUNT / _NAMESPACE | secret / (none) | the KV v2 mount path; the Vault Enterprise/HCP namespace |
| AGENTGOV_VAULT_AUTH | kubernetes | ``kubernetes`` (the operator's service account token, ``AGENTGOV_VAULT_ROLE`` required) or ``token`` (``AGENTGOV_VAULT_TOKEN_FILE`` required) |
| AGENTGOV_VAULT_ROLE / _AUTH_MOUNT / _JWT_FILE | (none) / kubernetes / the pod's service account token | Kubernetes auth: the Vault role, where the method is mounted, the token file |
| AGENTGOV_VAULT_TOKEN_FILE / _CA_FILE | (none) | a file holding the Vault token (mounted from a Secret); a CA bundle for Vault's certificate |
| AGENTGOV_AWS_REGION | (none: AWS off) | the Secrets Manager region; the other ``AGENTGOV_AWS_*`` need it |
| AGENTGOV_AWS_ENDPOINT_URL / _CREDENTIALS_FILE | (none) | a VPC endpoint; a shared-credentials file mounted from a Secret (else the SDK's chain: IRSA, pod identity) |
| AGENTGOV_AZURE_CREDENTIAL | (none: Azure off) | ``workload`` (workload identity), ``client_secret`` or ``default``; the other ``AGENTGOV_AZURE_*`` need it |
| AGENTGOV_AZURE_VAULT_URL_TEMPLATE | https://{vault}.vault.azure.net | the vault URL for a vault name (sovereign clouds change the suffix) |
| AGENTGOV_AZURE_TENANT_ID / _CLIENT_ID / _CLIENT_SECRET_FILE | (none) | the app registration; ``client_secret`` needs all three (the secret as a file mounted from a Secret) |
| AGENTGOV_AZURE_AUTHORITY / _CA_FILE | (public cloud) / (none) | the Entra ID host; a CA bundle for the vault's certificate |

Provider credentials are only ever files mounted from a Secret or workload identity: no
variable holds a credential itself, and none is ever read from an AgentDeployment.

Pure: the environment is passed in, never read from ``os`` here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

from agentgov import __version__
from agentgov.api.base import DNSLabel, ObjectName, SecretKeyRef
from agentgov.api.bundle import AUDIT_LOG_DIR
from agentgov.api.quantity import parse_quantity
from agentgov.audit.errors import AuditConfigError
from agentgov.audit.settings import ENV_VARIABLES as AUDIT_LOG_VARIABLES
from agentgov.audit.settings import LogOptions, log_options_from_env
from agentgov.audit.sinks.settings import ENV_VARIABLES as SINK_VARIABLES
from agentgov.audit.sinks.settings import SinkConfigError, SinksSettings, sinks_from_env
from agentgov.secrets.base import ProviderKind
from agentgov.secrets.config import (
    DEFAULT_SERVICE_ACCOUNT_TOKEN,
    AwsSettings,
    AzureSettings,
    ProviderSettings,
    VaultSettings,
)

PREFIX: Final = "AGENTGOV_"
OPERATOR_AUDIT_LOG: Final = Path(AUDIT_LOG_DIR) / "operator-audit.jsonl"
DEFAULT_IMAGE: Final = f"ghcr.io/agentgov/agentgov:{__version__}"

# Names as the CRDs define them (agentgov.api.base), so the operator's config and the specs
# it reads accept the same names. A Secret's name and key are checked as a SecretKeyRef.
_DNS_LABEL: Final = TypeAdapter(DNSLabel)
_DNS_SUBDOMAIN: Final = TypeAdapter(ObjectName)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# An image reference: no whitespace, no scheme; the registry/name/tag/digest grammar is the
# runtime's to judge, but obvious mistakes (spaces, "https://", a trailing ":") are caught here.
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*[a-zA-Z0-9_]$|^[a-z0-9]$", re.IGNORECASE)


class ConfigError(ValueError):
    """A configuration variable with a value the operator cannot use."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        self.message = message
        super().__init__(f"{variable}: {message}")


class SecretKey(BaseModel):
    """A key of a Secret (in the namespace of each agent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    key: str


class ResourceDefaults(BaseModel):
    """Requests and limits given to a container whose AgentDeployment sets none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


_ResourceField = Literal["cpu_request", "memory_request", "cpu_limit", "memory_limit"]
_RESOURCE_FIELDS: Final[tuple[_ResourceField, ...]] = ("cpu_request", "memory_request", "cpu_limit", "memory_limit")

SIDECAR_RESOURCES: Final = ResourceDefaults(cpu_request="100m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi")
AGENT_RESOURCES: Final = ResourceDefaults(cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="1Gi")


class OperatorConfig(BaseModel):
    """Everything the operator is told by its environment. Frozen; build with ``from_env``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = DEFAULT_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    redis_url_secret: SecretKey = SecretKey(name="agentgov-redis", key="url")
    redis_port: int = Field(6379, ge=1, le=65535)
    # Label selector of the Redis pods as sorted (key, value) pairs: hashable and immutable.
    redis_selector: tuple[tuple[str, str], ...] = (("app.kubernetes.io/name", "redis"),)
    redis_namespace: str | None = None
    namespaces: tuple[str, ...] = ()
    sidecar_resources: ResourceDefaults = SIDECAR_RESOURCES
    agent_resources: ResourceDefaults = AGENT_RESOURCES
    resync_seconds: float = Field(60.0, gt=0)
    handler_timeout_seconds: float = Field(60.0, gt=0)
    cluster_domain: str = "cluster.local"
    # May carry a password: a SecretStr never shows it in a repr or a log line.
    redis_url: SecretStr | None = None
    redis_timeout_seconds: float = Field(5.0, gt=0)
    budget_status_interval_seconds: float = Field(60.0, gt=0)
    watch_timeout_seconds: float = Field(300.0, gt=0)
    # kopf's settings.peering.lifetime: a dead replica's entry expires, and a standby takes over, after it.
    peering_lifetime_seconds: int = Field(60, ge=10, le=3600)
    otlp_endpoint: str | None = None
    # The operator's own audit log (agent, policy, budget and secret changes).
    audit_log: Path = OPERATOR_AUDIT_LOG
    # Where the log is shipped (stdout, Elasticsearch, S3); None: nowhere beyond the local file.
    audit_sinks: SinksSettings | None = None
    audit_retention_days: int = Field(365, ge=1, le=3650)
    audit_log_options: LogOptions = LogOptions()
    # Vault, AWS and Azure: each None (off) unless its first variable is set.
    secret_providers: ProviderSettings = ProviderSettings()
    secrets_timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _selector_not_empty(self) -> OperatorConfig:
        if not self.redis_selector:
            raise ValueError("redis_selector must name at least one label")
        return self

    @property
    def redis_selector_labels(self) -> dict[str, str]:
        return dict(self.redis_selector)

    @property
    def watches_all_namespaces(self) -> bool:
        return not self.namespaces

    @property
    def spend_store_address(self) -> str | None:
        """Where the budget store is, for messages: ``host:port`` (or the socket path), never
        the credentials the URL may carry."""
        return None if self.redis_url is None else redis_address(self.redis_url.get_secret_value())

    @property
    def stalled_watch_seconds(self) -> float:
        """A watch the API server has not answered for this long is stalled (liveness fails)."""
        return 2 * self.watch_timeout_seconds

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorConfig:
        """Read the ``AGENTGOV_*`` variables; raise ConfigError naming the first bad one."""
        env = _Env(environ)
        values: dict[str, object] = {}
        if (image := env.get("IMAGE")) is not None:
            if not _IMAGE.fullmatch(image) or "://" in image:
                raise ConfigError(env.name("IMAGE"), f"{image!r} is not an image reference (e.g. ghcr.io/agentgov/agentgov:0.1.0)")
            values["image"] = image
        if (policy := env.get("IMAGE_PULL_POLICY")) is not None:
            if policy not in ("Always", "IfNotPresent", "Never"):
                raise ConfigError(env.name("IMAGE_PULL_POLICY"), f"expected Always, IfNotPresent or Never, got {policy!r}")
            values["image_pull_policy"] = policy
        if (secret := env.get("REDIS_URL_SECRET")) is not None:
            values["redis_url_secret"] = _secret_key(env.name("REDIS_URL_SECRET"), secret)
        if (port := env.get("REDIS_PORT")) is not None:
            values["redis_port"] = _port(env.name("REDIS_PORT"), port)
        if (selector := env.get("REDIS_SELECTOR")) is not None:
            values["redis_selector"] = _label_selector(env.name("REDIS_SELECTOR"), selector)
        if (namespace := env.get("REDIS_NAMESPACE")) is not None:
            values["redis_namespace"] = _namespace(env.name("REDIS_NAMESPACE"), namespace)
        if (namespaces := env.get("NAMESPACES")) is not None:
            values["namespaces"] = _namespaces(env.name("NAMESPACES"), namespaces)
        values["sidecar_resources"] = _resources(env, "SIDECAR", SIDECAR_RESOURCES)
        values["agent_resources"] = _resources(env, "AGENT", AGENT_RESOURCES)
        if (resync := env.get("RESYNC_SECONDS")) is not None:
            values["resync_seconds"] = _seconds(env.name("RESYNC_SECONDS"), resync)
        if (timeout := env.get("HANDLER_TIMEOUT_SECONDS")) is not None:
            values["handler_timeout_seconds"] = _seconds(env.name("HANDLER_TIMEOUT_SECONDS"), timeout)
        if (domain := env.get("CLUSTER_DOMAIN")) is not None:
            domain = domain.rstrip(".")
            if not _is(_DNS_SUBDOMAIN, domain):
                raise ConfigError(env.name("CLUSTER_DOMAIN"), f"{domain!r} is not a DNS domain (e.g. cluster.local)")
            values["cluster_domain"] = domain
        if (otlp := env.get("OTLP_ENDPOINT")) is not None:
            values["otlp_endpoint"] = _otlp_endpoint(env.name("OTLP_ENDPOINT"), otlp)
        if (redis_url := env.get("REDIS_URL")) is not None:
            values["redis_url"] = SecretStr(_redis_url(env.name("REDIS_URL"), redis_url))
        for suffix, field in (("REDIS_TIMEOUT_SECONDS", "redis_timeout_seconds"),
                              ("BUDGET_STATUS_INTERVAL_SECONDS", "budget_status_interval_seconds"),
                              ("WATCH_TIMEOUT_SECONDS", "watch_timeout_seconds"),
                              ("SECRETS_TIMEOUT_SECONDS", "secrets_timeout_seconds")):
            if (seconds := env.get(suffix)) is not None:
                values[field] = _seconds(env.name(suffix), seconds)
        if (lifetime := env.get("PEERING_LIFETIME_SECONDS")) is not None:
            if not lifetime.isdigit() or not 10 <= int(lifetime) <= 3600:
                raise ConfigError(env.name("PEERING_LIFETIME_SECONDS"),
                                  f"expected a whole number of seconds from 10 to 3600, got {lifetime[:20]!r}")
            values["peering_lifetime_seconds"] = int(lifetime)
        secrets_timeout = values.get("secrets_timeout_seconds", 10.0)
        assert isinstance(secrets_timeout, float)
        values["secret_providers"] = _secret_providers(env, secrets_timeout)
        values.update(_audit_settings(env, environ))
        return cls.model_validate(values)

    @staticmethod
    def unknown_variables(environ: Mapping[str, str]) -> list[str]:
        """``AGENTGOV_*`` variables this class does not read (likely typos), sorted, for a warning."""
        return sorted(name for name in environ if name.startswith(PREFIX) and name not in KNOWN_VARIABLES)


# Each secret provider's variables (after AGENTGOV_); the first one switches the provider on,
# and the others are refused without it (a half-configured provider is a mistake, said at start).
PROVIDER_VARIABLES: Final[Mapping[ProviderKind, tuple[str, ...]]] = {
    "vault": ("VAULT_ADDR", "VAULT_MOUNT", "VAULT_NAMESPACE", "VAULT_AUTH", "VAULT_ROLE", "VAULT_AUTH_MOUNT",
              "VAULT_TOKEN_FILE", "VAULT_JWT_FILE", "VAULT_CA_FILE"),
    "aws": ("AWS_REGION", "AWS_ENDPOINT_URL", "AWS_CREDENTIALS_FILE"),
    "azure": ("AZURE_CREDENTIAL", "AZURE_VAULT_URL_TEMPLATE", "AZURE_TENANT_ID", "AZURE_CLIENT_ID",
              "AZURE_CLIENT_SECRET_FILE", "AZURE_AUTHORITY", "AZURE_CA_FILE"),
}


def provider_switch(kind: ProviderKind) -> str | None:
    """The variable that turns a secret provider on (None: Kubernetes, always on)."""
    suffixes = PROVIDER_VARIABLES.get(kind)
    return PREFIX + suffixes[0] if suffixes else None


def _resource_variable(container: str, field: str) -> str:
    return f"{container}_{field.upper()}"


KNOWN_VARIABLES: Final = frozenset(
    PREFIX + suffix
    for suffix in (
        "IMAGE",
        "IMAGE_PULL_POLICY",
        "REDIS_URL_SECRET",
        "REDIS_PORT",
        "REDIS_SELECTOR",
        "REDIS_NAMESPACE",
        "NAMESPACES",
        "RESYNC_SECONDS",
        "HANDLER_TIMEOUT_SECONDS",
        "CLUSTER_DOMAIN",
        "REDIS_URL",
        "REDIS_TIMEOUT_SECONDS",
        "BUDGET_STATUS_INTERVAL_SECONDS",
        "WATCH_TIMEOUT_SECONDS",
        "PEERING_LIFETIME_SECONDS",
        "OTLP_ENDPOINT",
        "AUDIT_LOG",
        *(variable.removeprefix(PREFIX) for variable in SINK_VARIABLES),
        "AUDIT_RETENTION_DAYS",
        *(variable.removeprefix(PREFIX) for variable in AUDIT_LOG_VARIABLES),
        "SECRETS_TIMEOUT_SECONDS",
        *(_resource_variable(c, f) for c in ("SIDECAR", "AGENT") for f in _RESOURCE_FIELDS),
        *(suffix for suffixes in PROVIDER_VARIABLES.values() for suffix in suffixes),
    )
)


class _Env:
    """The AGENTGOV_* view of an environment: stripped values, empty meaning unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    @staticmethod
    def name(suffix: str) -> str:
        return PREFIX + suffix

    def get(self, suffix: str) -> str | None:
        value = self._environ.get(PREFIX + suffix)
        if value is None or not value.strip():
            return None
        return value.strip()


def _is(kind: TypeAdapter[str], text: str) -> bool:
    try:
        kind.validate_python(text)
    except ValidationError:
        return False
    return True


def _secret_key(variable: str, text: str) -> SecretKey:
    name, sep, key = text.partition(":")
    if not sep or not name or not key:
        raise ConfigError(variable, f"expected SECRET_NAME:KEY (e.g. agentgov-redis:url), got {text!r}")
    try:
        SecretKeyRef(name=name, key=key)
    except ValidationError as error:
        if any(problem["loc"] == ("name",) for problem in error.errors()):
            raise ConfigError(variable, f"{name!r} is not a Secret name (lowercase letters, digits, '-' and '.')") from None
        raise ConfigError(variable, f"{key!r} is not a Secret key (letters, digits, '-', '_' and '.')") from None
    return SecretKey(name=name, key=key)


def _port(variable: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(variable, f"expected a port number 1-65535, got {text!r}")
    return int(text)


def _label_selector(variable: str, text: str) -> tuple[tuple[str, str], ...]:
    """``k=v,k2=v2`` (equality only: a NetworkPolicy matchLabels)."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ConfigError(variable, f"expected key=value[,key=value...], got {item.strip()!r}")
        prefix, slash, label = key.rpartition("/")
        if (
            len(label) > 63
            or not _LABEL_NAME.fullmatch(label)
            or (slash and not _is(_DNS_SUBDOMAIN, prefix))
        ):
            raise ConfigError(variable, f"{key!r} is not a label key")
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(variable, f"{value!r} is not a label value (63 characters at most: letters, digits, '-', '_', '.')")
        if key in pairs and pairs[key] != value:
            raise ConfigError(variable, f"label {key!r} is given twice with different values")
        pairs[key] = value
    return tuple(sorted(pairs.items()))


def _namespace(variable: str, text: str) -> str:
    if not _is(_DNS_LABEL, text):
        raise ConfigError(variable, f"{text!r} is not a namespace name")
    return text


def _namespaces(variable: str, text: str) -> tuple[str, ...]:
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise ConfigError(variable, f"empty namespace in {text!r} (expected e.g. research,support)")
    for name in names:
        _namespace(variable, name)
    return tuple(dict.fromkeys(names))


def redis_address(url: str) -> str:
    """``host:port`` of a Redis URL (``unix:PATH`` for a socket): what messages may name."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


def _otlp_endpoint(variable: str, text: str) -> str:
    """An OTLP/HTTP collector base URL without credentials (it is written into pod specs)."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise ConfigError(variable, "not a URL with a valid port (expected http(s)://HOST:PORT)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(variable, "expected an http:// or https:// URL (e.g. http://otel-collector.observability:4318)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(variable, "must not carry credentials, a query or a fragment (it is visible in pod specs)")
    return text.rstrip("/")


def _redis_url(variable: str, text: str) -> str:
    """A Redis URL the client can use. Messages never echo the value: it may carry a password."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(variable, "not a URL with a valid port (expected redis://[:PASSWORD@]HOST:PORT/DB)") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(variable, "expected a redis://, rediss:// or unix:// URL (e.g. redis://redis:6379/0)")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(variable, "a unix:// URL needs a socket path (e.g. unix:///run/redis.sock)")
        return text
    if not parts.hostname:
        raise ConfigError(variable, "the URL names no host (expected redis://[:PASSWORD@]HOST:PORT/DB)")
    if port == 0:
        raise ConfigError(variable, "expected a port number 1-65535")
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        raise ConfigError(variable, "the database must be a number (e.g. redis://redis:6379/0)")
    return text


def _seconds(variable: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(variable, f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(variable, f"expected a positive number of seconds, got {text!r}")
    return value


def _audit_settings(env: _Env, environ: Mapping[str, str]) -> dict[str, object]:
    """The operator's audit log settings (``AGENTGOV_AUDIT_*``)."""
    values: dict[str, object] = {}
    if (path := env.get("AUDIT_LOG")) is not None:
        if "\x00" in path or path.endswith("/"):
            raise ConfigError(env.name("AUDIT_LOG"), "expected a file path (e.g. /var/log/agentgov/operator-audit.jsonl)")
        values["audit_log"] = Path(path)
    try:
        sinks = sinks_from_env(environ, default_source=environ.get("HOSTNAME") or "operator")
    except SinkConfigError as error:
        raise ConfigError(error.setting, error.message) from None
    if sinks.configured():
        values["audit_sinks"] = sinks
    if (days := env.get("AUDIT_RETENTION_DAYS")) is not None:
        if not days.isdigit() or not 1 <= int(days) <= 3650:
            raise ConfigError(env.name("AUDIT_RETENTION_DAYS"), f"expected a number of days from 1 to 3650, got {days[:20]!r}")
        values["audit_retention_days"] = int(days)
    try:
        values["audit_log_options"] = log_options_from_env(environ)
    except AuditConfigError as error:
        raise ConfigError(error.variable or env.name("AUDIT_*"), error.problem) from None
    return values


def _resources(env: _Env, container: str, defaults: ResourceDefaults) -> ResourceDefaults:
    values = defaults.model_dump()
    for field in _RESOURCE_FIELDS:
        suffix = _resource_variable(container, field)
        text = env.get(suffix)
        if text is None:
            continue
        try:
            amount = parse_quantity(text)
        except ValueError as error:
            raise ConfigError(env.name(suffix), str(error)) from None
        if amount <= 0:
            raise ConfigError(env.name(suffix), f"expected a positive quantity, got {text!r}")
        values[field] = text
    for resource in ("cpu", "memory"):
        request, limit = values[f"{resource}_request"], values[f"{resource}_limit"]
        if parse_quantity(request) > parse_quantity(limit):
            limit_variable = env.name(_resource_variable(container, f"{resource}_limit"))
            raise ConfigError(
                env.name(_resource_variable(container, f"{resource}_request")),
                f"request {request} exceeds the limit {limit} ({limit_variable})",
            )
    return ResourceDefaults.model_validate(values)


# --- secret providers ------------------------------------------------------------------------

_PATH_SEGMENTS = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_VAULT_ROLE = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
_AZURE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_AZURE_VAULT_URL_TEMPLATE: Final = AzureSettings().vault_url_template
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?$")


def _secret_providers(env: _Env, timeout: float) -> ProviderSettings:
    """Vault, AWS and Azure settings: each provider is on when its first variable is set."""
    on: dict[ProviderKind, bool] = {}
    for kind, suffixes in PROVIDER_VARIABLES.items():
        switch = suffixes[0]
        on[kind] = env.get(switch) is not None
        for suffix in suffixes[1:]:
            if not on[kind] and env.get(suffix) is not None:
                raise ConfigError(env.name(suffix), f"is set but {env.name(switch)} is not: set it to use {kind}, "
                                  "or unset this one")
    return ProviderSettings(
        vault=_vault(env, timeout) if on["vault"] else None,
        aws=_aws(env, timeout) if on["aws"] else None,
        azure=_azure(env, timeout) if on["azure"] else None,
    )


def _file(env: _Env, suffix: str) -> str | None:
    """A path to a file mounted from a Secret (absolute: the operator's working directory is no
    place for credentials). Never opened here: this module does no I/O."""
    text = env.get(suffix)
    if text is None:
        return None
    if not text.startswith("/") or "\x00" in text or "\n" in text:
        raise ConfigError(env.name(suffix), f"expected an absolute path to a file mounted from a Secret, got {text[:200]!r}")
    return text


def _url(variable: str, text: str, example: str) -> str:
    """An http(s) URL naming a host, without credentials, a query or a fragment (it is logged)."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        raise ConfigError(variable, f"not a URL with a valid port (expected e.g. {example})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(variable, f"expected an http:// or https:// URL (e.g. {example})")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(variable, "must not carry credentials, a query or a fragment")
    return text.rstrip("/")


def _choice(env: _Env, suffix: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(suffix)
    if value is None:
        return default
    if value not in choices:
        raise ConfigError(env.name(suffix), f"expected {' or '.join(choices)}, got {value[:100]!r}")
    return value


def _matching(env: _Env, suffix: str, pattern: re.Pattern[str], what: str) -> str | None:
    value = env.get(suffix)
    if value is not None and not pattern.fullmatch(value):
        raise ConfigError(env.name(suffix), f"{value[:100]!r} is not {what}")
    return value


def _vault(env: _Env, timeout: float) -> VaultSettings:
    address = _url(env.name("VAULT_ADDR"), env.get("VAULT_ADDR") or "", "https://vault.example:8200")
    mount = env.get("VAULT_MOUNT")
    if mount is not None:
        mount = mount.strip("/")
        if not _PATH_SEGMENTS.fullmatch(mount):
            raise ConfigError(env.name("VAULT_MOUNT"), f"{mount[:100]!r} is not a mount path (e.g. secret or kv/agents)")
    namespace = _matching(env, "VAULT_NAMESPACE", _PATH_SEGMENTS, "a Vault namespace (e.g. admin/research)")
    auth = _choice(env, "VAULT_AUTH", ("kubernetes", "token"), "kubernetes")
    role = _matching(env, "VAULT_ROLE", _VAULT_ROLE, "a Vault role name")
    auth_mount = env.get("VAULT_AUTH_MOUNT")
    if auth_mount is not None:
        auth_mount = auth_mount.strip("/")
        if not _PATH_SEGMENTS.fullmatch(auth_mount):
            raise ConfigError(env.name("VAULT_AUTH_MOUNT"), f"{auth_mount[:100]!r} is not a mount path (e.g. kubernetes)")
    token_file, jwt_file = _file(env, "VAULT_TOKEN_FILE"), _file(env, "VAULT_JWT_FILE")
    if auth == "kubernetes" and role is None:
        raise ConfigError(env.name("VAULT_ROLE"), "required with AGENTGOV_VAULT_AUTH=kubernetes: the Vault role bound "
                          "to the operator's service account")
    if auth == "token" and token_file is None:
        raise ConfigError(env.name("VAULT_TOKEN_FILE"), "required with AGENTGOV_VAULT_AUTH=token: a file holding the "
                          "token, mounted from a Secret")
    return VaultSettings(
        address=address, mount=mount or "secret", namespace=namespace,
        auth="token" if auth == "token" else "kubernetes", token_file=token_file, role=role,
        auth_mount=auth_mount or "kubernetes", jwt_file=jwt_file or DEFAULT_SERVICE_ACCOUNT_TOKEN,
        ca_file=_file(env, "VAULT_CA_FILE"), timeout_seconds=timeout,
    )


def _aws(env: _Env, timeout: float) -> AwsSettings:
    region = _matching(env, "AWS_REGION", _AWS_REGION, "an AWS region (e.g. eu-central-1)")
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint is not None:
        endpoint = _url(env.name("AWS_ENDPOINT_URL"), endpoint, "https://secretsmanager.eu-central-1.amazonaws.com")
    return AwsSettings(region=region, endpoint_url=endpoint, credentials_file=_file(env, "AWS_CREDENTIALS_FILE"),
                       timeout_seconds=timeout)


def _azure(env: _Env, timeout: float) -> AzureSettings:
    credential = _choice(env, "AZURE_CREDENTIAL", ("workload", "client_secret", "default"), "workload")
    template = env.get("AZURE_VAULT_URL_TEMPLATE")
    if template is not None:
        variable = env.name("AZURE_VAULT_URL_TEMPLATE")
        if template.count("{vault}") != 1 or template.replace("{vault}", "").count("{") or "}" in template.replace("{vault}", ""):
            raise ConfigError(variable, "expected one {vault} placeholder and no other braces "
                              "(e.g. https://{vault}.vault.azure.cn)")
        _url(variable, template.replace("{vault}", "vault-name"), "https://{vault}.vault.azure.net")
        template = template.rstrip("/")
    tenant = _matching(env, "AZURE_TENANT_ID", _AZURE_ID, "a tenant id (a GUID or a domain)")
    client = _matching(env, "AZURE_CLIENT_ID", _AZURE_ID, "a client id (a GUID)")
    secret_file = _file(env, "AZURE_CLIENT_SECRET_FILE")
    authority = env.get("AZURE_AUTHORITY")
    if authority is not None:
        variable = env.name("AZURE_AUTHORITY")
        if "://" in authority:
            authority = _url(variable, authority, "https://login.microsoftonline.us")
        elif not _HOST.fullmatch(authority):
            raise ConfigError(variable, f"{authority[:100]!r} is not a host name (e.g. login.microsoftonline.us)")
    if credential == "client_secret":
        for suffix, value in (("AZURE_TENANT_ID", tenant), ("AZURE_CLIENT_ID", client),
                              ("AZURE_CLIENT_SECRET_FILE", secret_file)):
            if value is None:
                raise ConfigError(env.name(suffix), "required with AGENTGOV_AZURE_CREDENTIAL=client_secret")
    kind: Literal["workload", "client_secret", "default"] = (
        "client_secret" if credential == "client_secret" else "default" if credential == "default" else "workload")
    return AzureSettings(vault_url_template=template or DEFAULT_AZURE_VAULT_URL_TEMPLATE, credential=kind,
                         tenant_id=tenant, client_id=client, client_secret_file=secret_file, authority=authority,
                         ca_file=_file(env, "AZURE_CA_FILE"), timeout_seconds=timeout)
