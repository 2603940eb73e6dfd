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
| AGENTGOV_WATCH_TIMEOUT_SECONDS | 300 | length of one watch request; a watch with no answer from the API server for twice this fails liveness |

Pure: the environment is passed in, never read from ``os`` here.
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

from agentgov import __version__
from agentgov.api.base import DNSLabel, ObjectName, SecretKeyRef
from agentgov.api.quantity import parse_quantity

PREFIX: Final = "AGENTGOV_"
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
    otlp_endpoint: str | None = None

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
                              ("WATCH_TIMEOUT_SECONDS", "watch_timeout_seconds")):
            if (seconds := env.get(suffix)) is not None:
                values[field] = _seconds(env.name(suffix), seconds)
        return cls.model_validate(values)

    @staticmethod
    def unknown_variables(environ: Mapping[str, str]) -> list[str]:
        """``AGENTGOV_*`` variables this class does not read (likely typos), sorted, for a warning."""
        return sorted(name for name in environ if name.startswith(PREFIX) and name not in KNOWN_VARIABLES)


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
        "OTLP_ENDPOINT",
        *(_resource_variable(c, f) for c in ("SIDECAR", "AGENT") for f in _RESOURCE_FIELDS),
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
