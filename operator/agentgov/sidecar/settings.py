"""Process settings of the sidecar: what the pod gives it, as opposed to what the bundle decides.

The bundle (policy) can change while the sidecar runs; these cannot. They come from the
command line (``--bundle``, ``--secrets-dir``, ``--host``, ``--port``) and from
``AGENTGOV_*`` environment variables; a bad value fails fast with a message naming the
variable. ``Settings`` is a frozen value: tests build as many as they need.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast, get_args

from agentgov.api.bundle import AUDIT_LOG_FILE, BUNDLE_FILE_NAME, BUNDLE_MOUNT_DIR, SECRETS_MOUNT_DIR
from agentgov.audit.errors import AuditConfigError
from agentgov.audit.settings import LogOptions, log_options_from_env
from agentgov.audit.writer import FsyncPolicy
from agentgov.sidecar.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """Everything the sidecar process needs besides the bundle."""

    bundle_path: Path = Path(BUNDLE_MOUNT_DIR) / BUNDLE_FILE_NAME
    secrets_dir: Path = Path(SECRETS_MOUNT_DIR)
    host: str = "0.0.0.0"
    # None: bundle.sidecar.inboundPort (or 8080 when no bundle could be read at start).
    port: int | None = None
    # Where the agent listens; the port is bundle.sidecar.agentPort.
    agent_host: str = "127.0.0.1"
    audit_log: Path = Path(AUDIT_LOG_FILE)
    audit_fsync: FsyncPolicy = "always"
    audit_fsync_interval_seconds: float = 1.0
    audit_queue_size: int = 10_000
    # Rotation, signed digests and retention pruning of the log (AGENTGOV_AUDIT_MAX_BYTES, ...).
    audit_log_options: LogOptions = LogOptions()
    # How long a privileged operation waits for its audit record to be durable.
    audit_durable_timeout_seconds: float = 5.0
    # At shutdown, how long the audit sinks (bundle.auditSinks) may take to catch up.
    audit_ship_drain_seconds: float = 5.0
    # X-Forwarded-* headers are believed only from these peers (an ingress controller).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    jwks_timeout_seconds: float = 5.0
    jwks_cache_seconds: float = 300.0
    # At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
    jwks_min_refresh_seconds: float = 30.0
    jwks_max_bytes: int = 512 * 1024
    execution_ttl_seconds: float = 3600.0
    execution_max_entries: int = 100_000
    reload_interval_seconds: float = 2.0
    token_max_ttl_seconds: int = 86_400
    # Header limits of the HTTP parser. Large enough that an oversized token is answered by
    # the authenticator (the uniform 401) rather than by the parser (a bare 400).
    max_header_bytes: int = 2 * 1024 * 1024
    shutdown_timeout_seconds: float = 10.0
    # The budget store and L2 cache (redis:// or rediss://, may carry a password); None: no
    # Redis — budgets follow their failure policy and the cache is L1 only.
    redis_url: str | None = None
    # Every Redis command gives up after this long (then the degraded path applies).
    redis_timeout_seconds: float = 0.25
    # The egress port (models and tools for the agent) listens on loopback only: the agent
    # shares the pod's network namespace, nothing outside the pod may use it.
    egress_host: str = "127.0.0.1"
    # None: bundle.sidecar.egressPort (or 8081 when no bundle could be read at start); 0: free.
    egress_port: int | None = None


def parse_trusted_proxies(text: str) -> tuple[IPNetwork, ...]:
    """``10.0.0.0/8, 192.168.1.7`` -> networks; raises ValueError naming the bad entry."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _positive_number(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{text!r} is not a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return value


def _fsync(text: str) -> FsyncPolicy:
    policies = get_args(FsyncPolicy)
    if text not in policies:
        raise ValueError(f"{text!r} is not one of {', '.join(policies)}")
    return cast(FsyncPolicy, text)


def _redis_url(text: str) -> str:
    # Never echo the value: it may carry a password.
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("is not a redis://, rediss:// or unix:// URL")
    return text


# variable -> (Settings field, parser); documented in docs/sidecar.md.
_ENV_FIELDS: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "AGENTGOV_AUDIT_LOG": ("audit_log", Path),
    "AGENTGOV_AUDIT_FSYNC": ("audit_fsync", _fsync),
    "AGENTGOV_AUDIT_FSYNC_INTERVAL_SECONDS": ("audit_fsync_interval_seconds", _positive_number),
    "AGENTGOV_AUDIT_QUEUE_SIZE": ("audit_queue_size", _positive_int),
    "AGENTGOV_TRUSTED_PROXIES": ("trusted_proxies", parse_trusted_proxies),
    "AGENTGOV_JWKS_TIMEOUT_SECONDS": ("jwks_timeout_seconds", _positive_number),
    "AGENTGOV_JWKS_CACHE_SECONDS": ("jwks_cache_seconds", _positive_number),
    "AGENTGOV_JWKS_MIN_REFRESH_SECONDS": ("jwks_min_refresh_seconds", _positive_number),
    "AGENTGOV_EXECUTION_TTL_SECONDS": ("execution_ttl_seconds", _positive_number),
    "AGENTGOV_RELOAD_INTERVAL_SECONDS": ("reload_interval_seconds", _positive_number),
    "AGENTGOV_TOKEN_MAX_TTL_SECONDS": ("token_max_ttl_seconds", _positive_int),
    "AGENTGOV_REDIS_URL": ("redis_url", _redis_url),
    "AGENTGOV_REDIS_TIMEOUT_SECONDS": ("redis_timeout_seconds", _positive_number),
    "AGENTGOV_EGRESS_PORT": ("egress_port", _port),
}
ENV_VARIABLES: Final[tuple[str, ...]] = tuple(_ENV_FIELDS)


def settings_from_env(environ: Mapping[str, str], **given: object) -> Settings:
    """Settings from ``AGENTGOV_*`` variables, then ``given`` (command-line values) on top.

    Raises ConfigError naming the variable when a value cannot be used.
    """
    values: dict[str, object] = {}
    for variable, (name, parser) in _ENV_FIELDS.items():
        if variable not in environ:
            continue
        try:
            values[name] = parser(environ[variable].strip())
        except ValueError as e:
            raise ConfigError(f"{variable}: {e}") from None
    try:
        values["audit_log_options"] = log_options_from_env(environ)
    except AuditConfigError as e:
        raise ConfigError(str(e)) from None
    values.update({k: v for k, v in given.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
