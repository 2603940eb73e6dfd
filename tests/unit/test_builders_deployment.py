"""The agent's pod: the sidecar with its bundle and secrets, the agent pointed at the sidecar,
probes, resources, the restricted security profile, spreading, and the hashes that roll it."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import BUDGET, build_error, child, container, make_inputs

from agentgov.api.bundle import SECRETS_MOUNT_DIR, bundle_hash
from agentgov.controller.builders import Inputs, build_children, compile_bundle, referenced_secrets
from agentgov.controller.config import OperatorConfig

HS256_AUTH = {"issuer": "i", "audiences": ["a"], "algorithms": ["HS256"], "keySecretRef": {"name": "jwt-hmac", "key": "hmac"}}


def _deployment(inputs: Inputs | None = None, **kwargs: Any) -> dict[str, Any]:
    return child(build_children(inputs or make_inputs(**kwargs)), "Deployment")


def _pod(**kwargs: Any) -> dict[str, Any]:
    pod: dict[str, Any] = _deployment(**kwargs)["spec"]["template"]["spec"]
    return pod


def _env(container_manifest: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container_manifest["env"]}


def test_the_sidecar_runs_the_operator_image_with_the_bundle() -> None:
    config = OperatorConfig.from_env({"AGENTGOV_IMAGE": "registry.local/agentgov:dev", "AGENTGOV_IMAGE_PULL_POLICY": "Always"})
    sidecar = container(_deployment(config=config), "agentgov-sidecar")
    assert sidecar["image"] == "registry.local/agentgov:dev" and sidecar["imagePullPolicy"] == "Always"
    assert sidecar["command"] == ["agentgov", "sidecar", "--bundle", "/etc/agentgov/bundle/bundle.json"]
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_the_sidecar_reads_the_budget_store_url_from_the_configured_secret() -> None:
    config = OperatorConfig.from_env({"AGENTGOV_REDIS_URL_SECRET": "budget-store:redis-url"})
    env = _env(container(_deployment(config=config), "agentgov-sidecar"))
    assert env["AGENTGOV_REDIS_URL"] == {"secretKeyRef": {"name": "budget-store", "key": "redis-url"}}


@pytest.mark.parametrize(
    "probe, expected",
    [
        ("livenessProbe", {"httpGet": {"path": "/health", "port": "http"}, "initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}),
        ("readinessProbe", {"httpGet": {"path": "/ready", "port": "http"}, "initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3}),
    ],
    ids=["liveness: /health after 30 s, every 10 s", "readiness: /ready after 5 s, every 5 s"],
)
def test_the_sidecar_is_probed_on_its_inbound_port(probe: str, expected: dict[str, Any]) -> None:
    assert container(_deployment(), "agentgov-sidecar")[probe] == expected


def test_the_agent_has_no_probes_and_no_ports_of_its_own() -> None:
    agent = container(_deployment(), "agent")
    assert not {"livenessProbe", "readinessProbe", "ports"} & set(agent)


def test_the_agent_is_pointed_at_the_sidecar_and_gets_its_env_and_secrets() -> None:
    agent = container(_deployment(), "agent")
    assert agent["image"] == "ghcr.io/example/research-agent:1.4.2"
    assert [var["name"] for var in agent["env"]] == [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "AGENTGOV_TOOLS_URL",
        "LOG_LEVEL",
        "SEARCH_API_KEY",
        "DATABASE_URL",
    ]
    env = _env(agent)
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8081/v1"
    assert env["AGENTGOV_TOOLS_URL"] == "http://127.0.0.1:8081/tools"
    assert env["LOG_LEVEL"] == "info"
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "research-db", "key": "url"}}
    # Vault, AWS and Azure values come from the Secret the secrets sync materialises.
    assert env["SEARCH_API_KEY"] == {"secretKeyRef": {"name": "research-assistant-secrets", "key": "SEARCH_API_KEY"}}


def test_a_secret_not_exposed_to_the_agent_is_only_in_the_materialised_secret() -> None:
    secrets = [{"name": "SEARCH_API_KEY", "vault": {"path": "agents/research", "key": "search-api-key"}},
               {"name": "ES_PASSWORD", "vault": {"path": "agents/audit", "key": "es"}, "exposeToAgent": False}]
    inputs = make_inputs(agent_changes={"spec.secrets": secrets})
    deployment = _deployment(inputs)
    assert "ES_PASSWORD" not in _env(container(deployment, "agent")) and "SEARCH_API_KEY" in _env(container(deployment, "agent"))
    assert "research-assistant-secrets" in referenced_secrets(inputs, compile_bundle(inputs))


def test_the_agent_gets_no_model_credentials_only_a_placeholder_key() -> None:
    agent = container(_deployment(), "agent")
    assert _env(agent)["OPENAI_API_KEY"] == "agentgov-sidecar-holds-the-key"
    assert "openai-api-key" not in str(agent)


def test_an_api_key_set_in_the_spec_replaces_the_placeholder() -> None:
    env_list = [{"name": "OPENAI_API_KEY", "value": "local-key"}]
    agent = container(_deployment(agent_changes={"spec.env": env_list}), "agent")
    assert [v for v in agent["env"] if v["name"] == "OPENAI_API_KEY"] == [{"name": "OPENAI_API_KEY", "value": "local-key"}]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"spec.env": [{"name": "LOG_LEVEL", "value": "x"}, {"name": "OPENAI_BASE_URL", "value": "https://api.openai.com/v1"}]}, "spec.env[1].name"),
        ({"spec.env": [{"name": "AGENTGOV_TOOLS_URL", "value": "http://x"}]}, "spec.env[0].name"),
        ({"spec.secrets": [{"name": "OPENAI_BASE_URL", "secretKeyRef": {"name": "s", "key": "k"}}]}, "spec.secrets[0].name"),
        ({"spec.secrets": [{"name": "LOG_LEVEL", "secretKeyRef": {"name": "s", "key": "k"}}]}, "spec.secrets[0].name"),
    ],
    ids=[
        "the spec's env overriding the model base URL",
        "the spec's env overriding the tools URL",
        "a secret named like the model base URL",
        "a secret named like a variable of spec.env",
    ],
)
def test_agent_variables_that_would_bypass_or_shadow_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    assert build_error(make_inputs(agent_changes=changes)).field == field


def test_the_agent_image_command_and_arguments_are_the_specs() -> None:
    agent = container(
        _deployment(agent_changes={"spec.command": ["python", "-m", "agent"], "spec.args": ["--port", "8000"], "spec.imagePullPolicy": "Never"}),
        "agent",
    )
    assert (agent["command"], agent["args"], agent["imagePullPolicy"]) == (["python", "-m", "agent"], ["--port", "8000"], "Never")
    plain = container(_deployment(), "agent")
    assert not {"command", "args", "imagePullPolicy"} & set(plain)


def test_the_sidecar_mounts_the_bundle_and_each_named_secret_with_only_its_keys() -> None:
    budget = {**BUDGET, "spec": {**BUDGET["spec"], "webhook": {"url": "https://hooks.example.com/", "secretRef": {"name": "hook-key", "key": "hmac"}}}}
    inputs = make_inputs(budgets=[budget], agent_changes={"spec.auth": HS256_AUTH})
    pod = _deployment(inputs)["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "agentgov-sidecar")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted_files = set()
    for mount in sidecar["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "secret" in volume:
            assert mount["readOnly"] is True
            assert volume["secret"]["defaultMode"] == 0o440
            mounted_files |= {f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]}
            assert mount["mountPath"] == f"{SECRETS_MOUNT_DIR}/{volume['secret']['secretName']}"
    bundle = compile_bundle(inputs)
    wanted = {bundle.auth.key_file.path(), bundle.budgets[0].webhook_key_file.path()}  # type: ignore[union-attr]
    wanted |= {m.credentials_file.path() for m in bundle.models if m.credentials_file}
    wanted |= {t.credentials_file.path() for t in bundle.tools if t.credentials_file}
    assert mounted_files == wanted
    bundle_mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "bundle")
    assert bundle_mount == {"name": "bundle", "mountPath": "/etc/agentgov/bundle", "readOnly": True}
    assert volumes["bundle"]["configMap"]["name"] == "research-assistant-bundle"


def test_the_agent_mounts_only_its_own_tmp() -> None:
    pod = _pod()
    agent = next(c for c in pod["containers"] if c["name"] == "agent")
    assert agent["volumeMounts"] == [{"name": "agent-tmp", "mountPath": "/tmp"}]
    sidecar_tmp = next(m for c in pod["containers"] if c["name"] == "agentgov-sidecar" for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert sidecar_tmp["name"] == "sidecar-tmp"


@pytest.mark.parametrize("name", ["agent", "agentgov-sidecar"], ids=["the agent", "the sidecar"])
def test_each_container_meets_the_restricted_pod_security_standard(name: str) -> None:
    pod = _pod()
    context = container({"spec": {"template": {"spec": pod}}}, name)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any("hostPath" in v for v in pod["volumes"])


@pytest.mark.parametrize(
    "given, defaults, expected",
    [
        (None, {}, {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}),
        (
            {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            {},
            {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        ),
        ({"requests": {"memory": "4Gi"}}, {}, {"requests": {"cpu": "250m", "memory": "4Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}}),
        ({"limits": {"cpu": "100m"}}, {}, {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "100m", "memory": "1Gi"}}),
        (None, {"AGENTGOV_AGENT_CPU_LIMIT": "2"}, {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}),
    ],
    ids=[
        "nothing given: the operator's defaults",
        "everything given: the spec's",
        "a request above the default limit raises the limit to it",
        "a limit below the default request lowers the request to it",
        "the operator's configured defaults",
    ],
)
def test_agent_resources_are_the_specs_with_defaults_filling_the_gaps(
    given: dict[str, Any] | None, defaults: dict[str, str], expected: dict[str, Any]
) -> None:
    changes = {"spec.resources": given} if given else {"spec.resources": ...}
    agent = container(_deployment(config=OperatorConfig.from_env(defaults), agent_changes=changes), "agent")
    assert agent["resources"] == expected


def test_resources_are_written_as_the_api_server_stores_them() -> None:
    given = {"requests": {"cpu": "0.5", "memory": "0.5Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}
    agent = container(_deployment(agent_changes={"spec.resources": given}), "agent")
    assert agent["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def test_an_empty_env_value_is_written_as_no_value() -> None:
    """The API server drops an empty value (omitempty); writing one would look like drift forever."""
    env = [{"name": "EMPTY", "value": ""}, {"name": "UNSET"}]
    agent = container(_deployment(agent_changes={"spec.env": env}), "agent")
    assert [v for v in agent["env"] if v["name"] in ("EMPTY", "UNSET")] == [{"name": "EMPTY"}, {"name": "UNSET"}]


def test_sidecar_resources_default_from_the_operator_and_yield_to_the_spec() -> None:
    sidecar = container(_deployment(), "agentgov-sidecar")
    assert sidecar["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
    given = {"requests": {"cpu": "1"}, "limits": {"memory": "64Mi"}}
    sidecar = container(_deployment(agent_changes={"spec.sidecar.resources": given}), "agentgov-sidecar")
    assert sidecar["resources"] == {"requests": {"cpu": "1", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"spec.resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}, "spec.resources.requests.cpu"),
        ({"spec.sidecar.resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}, "spec.sidecar.resources.requests.memory"),
        ({"spec.resources": {"requests": {"cpu": "1e0.5"}}}, "spec.resources.requests.cpu"),
        ({"spec.resources": {"limits": {"memory": "-1Gi"}}}, "spec.resources.limits.memory"),
    ],
    ids=[
        "an agent CPU request above its limit",
        "a sidecar memory request above its limit",
        "a CPU request with a fractional exponent",
        "a negative memory limit",
    ],
)
def test_resources_that_can_never_be_scheduled_are_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    assert build_error(make_inputs(agent_changes=changes)).field == field


def test_pods_spread_across_zones_and_nodes_without_blocking_single_zone_clusters() -> None:
    pod = _pod()
    selector = _deployment()["spec"]["selector"]["matchLabels"]
    assert pod["topologySpreadConstraints"] == [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def test_the_selector_matches_the_template_and_holds_only_stable_labels() -> None:
    deployment = _deployment()
    selector = deployment["spec"]["selector"]["matchLabels"]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
    upgraded = _deployment(agent_changes={"spec.image": "ghcr.io/example/research-agent:2.0.0"})
    assert upgraded["spec"]["selector"] == deployment["spec"]["selector"]
    assert upgraded["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "2.0.0"


def test_a_rollout_never_takes_a_serving_pod_away_first() -> None:
    assert _deployment()["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}


# --- the hashes that roll the pods ---------------------------------------------------------------

def _secrets_hash(versions: dict[str, str], **kwargs: Any) -> str:
    annotations = _deployment(secret_versions=versions, **kwargs)["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["agentgov.io/secrets-hash"])


def test_the_referenced_secrets_are_every_secret_the_pod_reads() -> None:
    env = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    inputs = make_inputs(agent_changes={"spec.auth": HS256_AUTH, "spec.env": env})
    assert referenced_secrets(inputs, compile_bundle(inputs)) == [
        "agentgov-redis",
        "db",
        "jwt-hmac",
        "openai-api-key",
        "research-assistant-secrets",
        "research-db",
        "ticketing-token",
    ]


@pytest.mark.parametrize(
    "secret",
    ["openai-api-key", "ticketing-token", "research-db", "agentgov-redis", "research-assistant-secrets"],
    ids=[
        "a model credential mounted in the sidecar",
        "a tool credential mounted in the sidecar",
        "a Secret injected into the agent's env",
        "the budget store's Secret",
        "the materialised external secrets",
    ],
)
def test_a_new_version_of_a_referenced_secret_changes_the_secrets_hash(secret: str) -> None:
    before = {name: "1" for name in ("openai-api-key", "ticketing-token", "research-db", "agentgov-redis", "research-assistant-secrets")}
    assert _secrets_hash(before) != _secrets_hash({**before, secret: "2"})


def test_an_unreferenced_secret_does_not_change_the_secrets_hash() -> None:
    assert _secrets_hash({"openai-api-key": "1"}) == _secrets_hash({"openai-api-key": "1", "unrelated": "9"})


def test_the_pod_template_carries_the_bundle_hash_and_names_the_agent_as_default_container() -> None:
    inputs = make_inputs()
    annotations = _deployment(inputs)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["agentgov.io/bundle-hash"] == bundle_hash(compile_bundle(inputs))
    assert annotations["kubectl.kubernetes.io/default-container"] == "agent"


def test_service_links_are_not_injected_into_the_agents_environment() -> None:
    assert _pod()["enableServiceLinks"] is False
