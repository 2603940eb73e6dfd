"""The operator's configuration: AGENTGOV_* variables in, a frozen OperatorConfig out, and a
ConfigError naming the variable for every value the operator could not use."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from agentgov import __version__
from agentgov.controller.config import ConfigError, OperatorConfig, ResourceDefaults, SecretKey


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    config = OperatorConfig.from_env({})
    assert config.image == f"ghcr.io/agentgov/agentgov:{__version__}"
    assert config.image_pull_policy is None
    assert config.redis_url_secret == SecretKey(name="agentgov-redis", key="url")
    assert config.redis_port == 6379
    assert config.redis_selector_labels == {"app.kubernetes.io/name": "redis"}
    assert config.redis_namespace is None
    assert config.namespaces == () and config.watches_all_namespaces
    assert config.sidecar_resources == ResourceDefaults(
        cpu_request="100m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi"
    )
    assert config.agent_resources.cpu_limit == "1"
    assert config.resync_seconds == 60
    assert config.handler_timeout_seconds == 60
    assert config.cluster_domain == "cluster.local"
    assert config.redis_url is None and config.spend_store_address is None
    assert config.redis_timeout_seconds == 5
    assert config.budget_status_interval_seconds == 60
    assert config.watch_timeout_seconds == 300 and config.stalled_watch_seconds == 600
    assert config == OperatorConfig()


@pytest.mark.parametrize(
    "variable, value, attribute, expected",
    [
        ("AGENTGOV_IMAGE", "registry.local:5000/agentgov:dev", "image", "registry.local:5000/agentgov:dev"),
        ("AGENTGOV_IMAGE", "ghcr.io/agentgov/agentgov@sha256:" + "a" * 64, "image", "ghcr.io/agentgov/agentgov@sha256:" + "a" * 64),
        ("AGENTGOV_IMAGE_PULL_POLICY", "IfNotPresent", "image_pull_policy", "IfNotPresent"),
        ("AGENTGOV_REDIS_URL_SECRET", "budget-store:redis-url", "redis_url_secret", SecretKey(name="budget-store", key="redis-url")),
        ("AGENTGOV_REDIS_PORT", "6380", "redis_port", 6380),
        ("AGENTGOV_REDIS_SELECTOR", "app=redis, tier = cache", "redis_selector", (("app", "redis"), ("tier", "cache"))),
        ("AGENTGOV_REDIS_SELECTOR", "app.kubernetes.io/name=redis", "redis_selector", (("app.kubernetes.io/name", "redis"),)),
        ("AGENTGOV_REDIS_NAMESPACE", "agentgov-system", "redis_namespace", "agentgov-system"),
        ("AGENTGOV_NAMESPACES", "research, support,research", "namespaces", ("research", "support")),
        ("AGENTGOV_RESYNC_SECONDS", "30", "resync_seconds", 30.0),
        ("AGENTGOV_RESYNC_SECONDS", "2.5", "resync_seconds", 2.5),
        ("AGENTGOV_HANDLER_TIMEOUT_SECONDS", "120", "handler_timeout_seconds", 120.0),
        ("AGENTGOV_CLUSTER_DOMAIN", "corp.internal.", "cluster_domain", "corp.internal"),
        ("AGENTGOV_REDIS_TIMEOUT_SECONDS", "0.5", "redis_timeout_seconds", 0.5),
        ("AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS", "15", "budget_status_interval_seconds", 15.0),
        ("AGENTGOV_WATCH_TIMEOUT_SECONDS", "120", "stalled_watch_seconds", 240.0),
        ("AGENTGOV_PEERING_LIFETIME_SECONDS", "15", "peering_lifetime_seconds", 15),
    ],
    ids=[
        "an image from a registry with a port",
        "an image pinned by digest",
        "a pull policy",
        "the Redis URL Secret as name:key",
        "a Redis port",
        "a Redis selector with two labels and spaces",
        "a Redis selector with a prefixed key",
        "a Redis namespace",
        "namespaces to watch, trimmed and deduplicated",
        "a whole resync period",
        "a fractional resync period",
        "a handler timeout",
        "a cluster domain with a trailing dot",
        "a spend store read timeout",
        "a budget status interval",
        "a watch timeout, and a stall at twice it",
        "a peering lifetime",
    ],
)
def test_a_variable_sets_its_setting(variable: str, value: str, attribute: str, expected: Any) -> None:
    assert getattr(OperatorConfig.from_env({variable: value}), attribute) == expected


@pytest.mark.parametrize(
    "environ, attribute, expected",
    [
        ({"AGENTGOV_SIDECAR_CPU_REQUEST": "50m"}, "sidecar_resources", ResourceDefaults(cpu_request="50m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi")),
        ({"AGENTGOV_AGENT_MEMORY_LIMIT": "2Gi", "AGENTGOV_AGENT_MEMORY_REQUEST": "1Gi"}, "agent_resources", ResourceDefaults(cpu_request="250m", memory_request="1Gi", cpu_limit="1", memory_limit="2Gi")),
    ],
    ids=["one sidecar resource overridden, the others kept", "agent memory request and limit raised together"],
)
def test_resource_variables_override_one_default_each(environ: dict[str, str], attribute: str, expected: Any) -> None:
    assert getattr(OperatorConfig.from_env(environ), attribute) == expected


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("AGENTGOV_IMAGE", "ghcr.io/agentgov/agentgov:", "not an image reference"),
        ("AGENTGOV_IMAGE", "ghcr.io/agent gov", "not an image reference"),
        ("AGENTGOV_IMAGE", "https://ghcr.io/agentgov/agentgov:1", "not an image reference"),
        ("AGENTGOV_IMAGE_PULL_POLICY", "always", "expected Always, IfNotPresent or Never"),
        ("AGENTGOV_OTLP_ENDPOINT", "otel-collector:4318", "expected an http:// or https:// URL"),
        ("AGENTGOV_OTLP_ENDPOINT", "http://user:secret@otel:4318", "must not carry credentials"),
        ("AGENTGOV_OTLP_ENDPOINT", "http://otel:99999", "not a URL with a valid port"),
        ("AGENTGOV_REDIS_URL_SECRET", "agentgov-redis", "expected SECRET_NAME:KEY"),
        ("AGENTGOV_REDIS_URL_SECRET", "agentgov-redis:", "expected SECRET_NAME:KEY"),
        ("AGENTGOV_REDIS_URL_SECRET", "Agentgov_Redis:url", "is not a Secret name"),
        ("AGENTGOV_REDIS_URL_SECRET", "agentgov-redis:u/rl", "is not a Secret key"),
        ("AGENTGOV_REDIS_PORT", "0", "expected a port number 1-65535"),
        ("AGENTGOV_REDIS_PORT", "65536", "expected a port number 1-65535"),
        ("AGENTGOV_REDIS_PORT", "six", "expected a port number 1-65535"),
        ("AGENTGOV_REDIS_SELECTOR", "redis", "expected key=value"),
        ("AGENTGOV_REDIS_SELECTOR", "app=redis,", "expected key=value"),
        ("AGENTGOV_REDIS_SELECTOR", "-app=redis", "is not a label key"),
        ("AGENTGOV_REDIS_SELECTOR", "app=red is", "is not a label value"),
        ("AGENTGOV_REDIS_SELECTOR", "app=a,app=b", "given twice"),
        ("AGENTGOV_REDIS_NAMESPACE", "Agentgov", "not a namespace name"),
        ("AGENTGOV_NAMESPACES", "research,,support", "empty namespace"),
        ("AGENTGOV_NAMESPACES", "research,Support", "'Support' is not a namespace name"),
        ("AGENTGOV_SIDECAR_CPU_REQUEST", "lots", "is not a quantity"),
        ("AGENTGOV_SIDECAR_MEMORY_LIMIT", "-1Gi", "expected a positive quantity"),
        ("AGENTGOV_SIDECAR_CPU_REQUEST", "2", "request 2 exceeds the limit 500m (AGENTGOV_SIDECAR_CPU_LIMIT)"),
        ("AGENTGOV_AGENT_MEMORY_LIMIT", "128Mi", "request 256Mi exceeds the limit 128Mi"),
        ("AGENTGOV_RESYNC_SECONDS", "1m", "expected a number of seconds"),
        ("AGENTGOV_RESYNC_SECONDS", "0", "expected a positive number of seconds"),
        ("AGENTGOV_HANDLER_TIMEOUT_SECONDS", "nan", "expected a positive number of seconds"),
        ("AGENTGOV_HANDLER_TIMEOUT_SECONDS", "inf", "expected a positive number of seconds"),
        ("AGENTGOV_CLUSTER_DOMAIN", "cluster_local", "is not a DNS domain"),
        ("AGENTGOV_REDIS_URL", "http://redis:6379", "expected a redis://, rediss:// or unix:// URL"),
        ("AGENTGOV_REDIS_URL", "redis://", "the URL names no host"),
        ("AGENTGOV_REDIS_URL", "redis://redis:notaport/0", "not a URL with a valid port"),
        ("AGENTGOV_REDIS_URL", "redis://redis:6379/zero", "the database must be a number"),
        ("AGENTGOV_REDIS_URL", "unix://", "a unix:// URL needs a socket path"),
        ("AGENTGOV_REDIS_TIMEOUT_SECONDS", "-1", "expected a positive number of seconds"),
        ("AGENTGOV_BUDGET_STATUS_INTERVAL_SECONDS", "1m", "expected a number of seconds"),
        ("AGENTGOV_WATCH_TIMEOUT_SECONDS", "0", "expected a positive number of seconds"),
        ("AGENTGOV_PEERING_LIFETIME_SECONDS", "5", "from 10 to 3600"),
        ("AGENTGOV_PEERING_LIFETIME_SECONDS", "1m", "a whole number of seconds"),
    ],
    ids=[
        "an image ending in a colon",
        "an image with a space",
        "an image written as a URL",
        "a pull policy in the wrong case",
        "an OTLP endpoint with no scheme",
        "an OTLP endpoint carrying credentials",
        "an OTLP endpoint with a bad port",
        "a Redis Secret without a key",
        "a Redis Secret with an empty key",
        "a Redis Secret name with capitals and an underscore",
        "a Redis Secret key with a slash",
        "Redis port zero",
        "a Redis port above 65535",
        "a Redis port that is a word",
        "a Redis selector without '='",
        "a Redis selector with a trailing comma",
        "a Redis selector key starting with a dash",
        "a Redis selector value with a space",
        "a Redis selector giving one key two values",
        "a Redis namespace with a capital",
        "an empty namespace in the watch list",
        "a watched namespace with a capital",
        "a sidecar CPU request that is not a quantity",
        "a negative sidecar memory limit",
        "a sidecar CPU request above the default limit",
        "an agent memory limit below the default request",
        "a resync period with a unit",
        "a zero resync period",
        "a handler timeout that is not a number",
        "an infinite handler timeout",
        "a cluster domain with an underscore",
        "a spend store URL that is not Redis",
        "a spend store URL without a host",
        "a spend store URL with a port that is a word",
        "a spend store URL with a database that is a word",
        "a unix socket URL without a path",
        "a negative spend store timeout",
        "a budget status interval with a unit",
        "a zero watch timeout",
        "a peering lifetime under 10 s",
        "a peering lifetime with a unit",
    ],
)
def test_a_malformed_value_is_refused_naming_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env({variable: value})
    assert caught.value.variable == (
        "AGENTGOV_AGENT_MEMORY_REQUEST" if variable == "AGENTGOV_AGENT_MEMORY_LIMIT" else variable
    )
    assert str(caught.value).startswith(caught.value.variable + ": ")
    assert expected in str(caught.value)


@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
def test_an_empty_variable_means_the_default(value: str) -> None:
    environ = {name: value for name in ("AGENTGOV_IMAGE", "AGENTGOV_REDIS_PORT", "AGENTGOV_NAMESPACES", "AGENTGOV_SIDECAR_CPU_LIMIT")}
    assert OperatorConfig.from_env(environ) == OperatorConfig()


def test_variables_of_other_programs_are_ignored() -> None:
    assert OperatorConfig.from_env({"IMAGE": "x y", "REDIS_PORT": "nope", "PATH": "/bin"}) == OperatorConfig()


def test_unknown_agentgov_variables_are_reported_for_a_warning() -> None:
    environ = {"AGENTGOV_IMAGE": "x:1", "AGENTGOV_RESYNC_SECOND": "5", "AGENTGOV_REDIS_PROT": "1", "HOME": "/root"}
    assert OperatorConfig.unknown_variables(environ) == ["AGENTGOV_REDIS_PROT", "AGENTGOV_RESYNC_SECOND"]


def test_config_is_frozen() -> None:
    config = OperatorConfig.from_env({})
    with pytest.raises(pydantic.ValidationError):
        config.redis_port = 1  # type: ignore[misc]


def test_config_error_is_a_value_error_with_the_variable_and_message() -> None:
    error = ConfigError("AGENTGOV_REDIS_PORT", "expected a port")
    assert isinstance(error, ValueError)
    assert (error.variable, error.message, str(error)) == ("AGENTGOV_REDIS_PORT", "expected a port", "AGENTGOV_REDIS_PORT: expected a port")


@pytest.mark.parametrize(
    "url, address",
    [
        ("redis://:s3cret-canary@redis.agentgov:6380/0", "redis.agentgov:6380"),
        ("rediss://user:s3cret-canary@10.0.0.7/2", "10.0.0.7:6379"),
        ("unix:///run/redis/redis.sock", "unix:/run/redis/redis.sock"),
    ],
    ids=["a password and a port", "TLS, a user and the default port", "a unix socket"],
)
def test_the_spend_store_is_named_by_address_and_its_password_never_shows(url: str, address: str) -> None:
    config = OperatorConfig.from_env({"AGENTGOV_REDIS_URL": url})
    assert config.redis_url is not None and config.redis_url.get_secret_value() == url
    assert config.spend_store_address == address
    assert "s3cret-canary" not in repr(config) and "s3cret-canary" not in str(config)


def test_a_refused_spend_store_url_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        OperatorConfig.from_env({"AGENTGOV_REDIS_URL": "https://user:s3cret-canary@redis:6379"})
    assert "s3cret-canary" not in str(caught.value)


def test_the_otlp_endpoint_reaches_every_sidecar_and_its_network_policy() -> None:
    from builder_cases import make_inputs

    from agentgov.controller.builders import build_children

    config = OperatorConfig.from_env({"AGENTGOV_OTLP_ENDPOINT": "http://otel-collector.observability:4318/"})
    assert config.otlp_endpoint == "http://otel-collector.observability:4318"
    children = {c["kind"]: c for c in build_children(make_inputs(config=config))}
    sidecar = next(c for c in children["Deployment"]["spec"]["template"]["spec"]["containers"] if c["name"] == "agentgov-sidecar")
    assert {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"} in sidecar["env"]
    ports = [p["port"] for rule in children["NetworkPolicy"]["spec"]["egress"] for p in rule.get("ports", [])]
    assert 4318 in ports
    without = {c["kind"]: c for c in build_children(make_inputs())}
    plain = next(c for c in without["Deployment"]["spec"]["template"]["spec"]["containers"] if c["name"] == "agentgov-sidecar")
    assert all(e["name"] != "OTEL_EXPORTER_OTLP_ENDPOINT" for e in plain["env"])
