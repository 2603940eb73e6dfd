"""The children of an AgentDeployment, as a whole: valid for Kubernetes, labelled and owned,
named within limits, deterministic, and present exactly when the spec asks for them."""

from __future__ import annotations

import json
import pathlib
import random
import re
from typing import Any

import pytest
from builder_cases import AGENT, BUDGET, LABEL_VALUE, REGIONS, RFC1035, TOOLS, build_error, changed, child, kinds, make_inputs
from harness.builtin_schemas import validate_builtin

from agentgov.api.resources import parse_object
from agentgov.controller.builders import (
    CHILD_KINDS,
    Inputs,
    UnresolvedReferences,
    build_children,
    child_keys,
)
from agentgov.controller.config import OperatorConfig

NAME_63 = "research-" + "x" * 53 + "1"
LONG_DOTTED = ".".join(["research"] * 28)[:252] + "z"
HS256_AUTH = {
    "issuer": "https://login.example.com/",
    "audiences": ["agents"],
    "algorithms": ["HS256"],
    "keySecretRef": {"name": "jwt-hmac", "key": "key"},
}

# (id, make_inputs keyword arguments)
VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("the shipped examples", {}),
    ("autoscaling off with three replicas", {"agent_changes": {"spec.autoscaling.enabled": False, "spec.replicas": 3}}),
    ("zero replicas", {"agent_changes": {"spec.autoscaling.enabled": False, "spec.replicas": 0}}),
    ("ingress off", {"agent_changes": {"spec.ingress.enabled": False}}),
    ("network policy off", {"agent_changes": {"spec.networkPolicy.enabled": False}}),
    ("no tool policy", {"tool_policy": None, "agent_changes": {"spec.toolPolicyRef": ...}}),
    ("no region policy", {"region_policy": None, "agent_changes": {"spec.regionPolicyRef": ...}}),
    ("no budgets", {"budgets": [], "agent_changes": {"spec.budgetRefs": []}}),
    ("HS256 callers checked with a key Secret", {"agent_changes": {"spec.auth": HS256_AUTH}}),
    ("an ingress with an issuer and no TLS Secret", {"agent_changes": {"spec.ingress.tls": ...}}),
    (
        "an ingress with no class, issuer or TLS",
        {"agent_changes": {"spec.ingress.tls": ..., "spec.ingress.clusterIssuer": ..., "spec.ingress.className": ...}},
    ),
    ("a 63-character agent name", {"agent_changes": {"metadata.name": NAME_63}}),
    ("a 253-character agent name with dots", {"agent_changes": {"metadata.name": LONG_DOTTED}}),
    (
        "IP-literal upstreams and extra egress CIDRs",
        {
            "agent_changes": {
                "spec.models": [{"name": "llama", "endpoint": "http://10.0.3.7:8080/v1"}],
                "spec.networkPolicy.extraEgressCidrs": ["10.20.0.0/16", "2001:db8::/32"],
            }
        },
    ),
    (
        "env from a ConfigMap and a Secret, a command and arguments",
        {
            "agent_changes": {
                "spec.env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "agent-settings", "key": "mode"}}},
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "EMPTY"},
                ],
                "spec.command": ["python", "-m", "agent"],
                "spec.args": ["--verbose"],
                "spec.imagePullPolicy": "Always",
            }
        },
    ),
    ("pii data placed on premises only", {"agent_changes": {"spec.dataClasses": ["pii"]}}),
    ("placement turned off in the region policy", {"region_policy": changed(REGIONS, {"spec.placement.enabled": False})}),
    (
        "a budget with a signed webhook",
        {
            "budgets": [
                {**BUDGET, "spec": {**BUDGET["spec"], "webhook": {"url": "https://hooks.example.com/budget", "secretRef": {"name": "hook-key", "key": "hmac"}}}}
            ]
        },
    ),
    (
        "sidecar and agent resources set in the spec",
        {
            "agent_changes": {
                "spec.sidecar.resources": {"requests": {"cpu": "200m"}, "limits": {"memory": "512Mi"}},
                "spec.resources": {"requests": {"memory": "4Gi"}},
            }
        },
    ),
    ("an image pinned by digest", {"agent_changes": {"spec.image": "ghcr.io/example/agent@sha256:" + "ab" * 32}}),
    (
        "an operator with a pull policy, a Redis namespace and its own resources",
        {
            "config": OperatorConfig.from_env(
                {
                    "AGENTGOV_IMAGE_PULL_POLICY": "IfNotPresent",
                    "AGENTGOV_REDIS_NAMESPACE": "agentgov-system",
                    "AGENTGOV_REDIS_PORT": "6380",
                    "AGENTGOV_SIDECAR_MEMORY_LIMIT": "1Gi",
                }
            )
        },
    ),
]
IDS = [v[0] for v in VARIATIONS]


@pytest.mark.parametrize("kwargs", [v[1] for v in VARIATIONS], ids=IDS)
def test_every_child_validates_against_the_kubernetes_schemas(kwargs: dict[str, Any]) -> None:
    for manifest in build_children(make_inputs(**kwargs)):
        validate_builtin(manifest)


@pytest.mark.parametrize("kwargs", [v[1] for v in VARIATIONS], ids=IDS)
def test_every_child_carries_the_shared_labels_and_an_owner_reference(kwargs: dict[str, Any]) -> None:
    inputs = make_inputs(**kwargs)
    for manifest in build_children(inputs):
        meta = manifest["metadata"]
        assert meta["namespace"] == "research"
        labels = meta["labels"]
        assert set(labels) == {
            f"app.kubernetes.io/{key}" for key in ("name", "instance", "version", "component", "part-of", "managed-by")
        }, manifest["kind"]
        assert labels["app.kubernetes.io/name"] == "agentgov-agent"
        assert labels["app.kubernetes.io/part-of"] == "agentgov"
        assert labels["app.kubernetes.io/managed-by"] == "agentgov-operator"
        assert all(len(v) <= 63 and LABEL_VALUE.fullmatch(v) for v in labels.values()), labels
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "agentgov.io/v1alpha1",
                "kind": "AgentDeployment",
                "name": inputs.name,
                "uid": inputs.agent.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


@pytest.mark.parametrize("kwargs", [v[1] for v in VARIATIONS], ids=IDS)
def test_child_keys_name_exactly_the_children_built_in_the_same_order(kwargs: dict[str, Any]) -> None:
    inputs = make_inputs(**kwargs)
    built = [(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in build_children(inputs)]
    assert child_keys(inputs) == built


@pytest.mark.parametrize("kwargs", [v[1] for v in VARIATIONS], ids=IDS)
def test_the_same_inputs_give_byte_identical_children(kwargs: dict[str, Any]) -> None:
    first, second = build_children(make_inputs(**kwargs)), build_children(make_inputs(**kwargs))
    assert json.dumps(first) == json.dumps(second)


@pytest.mark.parametrize(
    "name",
    [NAME_63, LONG_DOTTED, "7" + "-x" * 40],
    ids=["a 63-character agent name", "a 253-character agent name with dots", "a long name starting with a digit"],
)
def test_child_names_volume_names_and_label_values_stay_within_63_characters(name: str) -> None:
    children = build_children(make_inputs(agent_changes={"metadata.name": name, "spec.dataClasses": ["internal"]}))
    for manifest in children:
        assert len(manifest["metadata"]["name"]) <= 63 and RFC1035.fullmatch(manifest["metadata"]["name"])
    pod = child(children, "Deployment")["spec"]["template"]["spec"]
    assert all(len(v["name"]) <= 63 and RFC1035.fullmatch(v["name"]) for v in pod["volumes"])
    for manifest in children:
        assert all(len(v) <= 63 and LABEL_VALUE.fullmatch(v) for v in manifest["metadata"]["labels"].values())
    instance = child(children, "Deployment")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert (instance == name) is (len(name) <= 63)


def test_children_come_in_apply_order() -> None:
    assert kinds(build_children(make_inputs())) == [
        "ServiceAccount",
        "ConfigMap",
        "NetworkPolicy",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
    ]
    assert [kind for _, kind in CHILD_KINDS] == kinds(build_children(make_inputs()))


@pytest.mark.parametrize(
    "autoscaling, replicas_in_deployment, hpa_present",
    [(True, False, True), (False, True, False)],
    ids=["autoscaling on: no replicas written, an HPA built", "autoscaling off: replicas written, no HPA"],
)
def test_replicas_are_written_only_while_autoscaling_is_off(
    autoscaling: bool, replicas_in_deployment: bool, hpa_present: bool
) -> None:
    children = build_children(make_inputs(agent_changes={"spec.autoscaling.enabled": autoscaling, "spec.replicas": 4}))
    spec = child(children, "Deployment")["spec"]
    assert ("replicas" in spec) is replicas_in_deployment
    if replicas_in_deployment:
        assert spec["replicas"] == 4
    assert ("HorizontalPodAutoscaler" in kinds(children)) is hpa_present


def test_the_autoscaler_targets_the_deployment_with_cpu_and_memory_utilization() -> None:
    hpa = child(build_children(make_inputs()), "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "research-assistant"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 80},
    }


@pytest.mark.parametrize(
    "changes, absent",
    [
        ({"spec.ingress.enabled": False}, "Ingress"),
        ({"spec.networkPolicy.enabled": False}, "NetworkPolicy"),
        ({"spec.autoscaling.enabled": False}, "HorizontalPodAutoscaler"),
    ],
    ids=["ingress off: no Ingress", "network policy off: no NetworkPolicy", "autoscaling off: no HPA"],
)
def test_an_optional_child_turned_off_is_not_built_but_stays_known_for_deletion(changes: dict[str, Any], absent: str) -> None:
    inputs = make_inputs(agent_changes=changes)
    assert absent not in kinds(build_children(inputs))
    assert absent not in [kind for _, kind, _ in child_keys(inputs)]
    assert absent in [kind for _, kind, _ in child_keys(inputs, all_optional=True)]


def test_child_keys_with_all_optional_list_every_kind_the_builders_make() -> None:
    inputs = make_inputs(
        agent_changes={"spec.ingress.enabled": False, "spec.networkPolicy.enabled": False, "spec.autoscaling.enabled": False}
    )
    assert [(v, k) for v, k, _ in child_keys(inputs, all_optional=True)] == list(CHILD_KINDS)


def test_the_disruption_budget_allows_one_pod_down_at_any_scale() -> None:
    for replicas in (1, 5):
        pdb = child(build_children(make_inputs(agent_changes={"spec.autoscaling.enabled": False, "spec.replicas": replicas})), "PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["selector"]["matchLabels"] == child(build_children(make_inputs()), "Deployment")["spec"]["selector"]["matchLabels"]


def test_the_service_account_mounts_no_api_token() -> None:
    children = build_children(make_inputs())
    assert child(children, "ServiceAccount")["automountServiceAccountToken"] is False
    pod = child(children, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == child(children, "ServiceAccount")["metadata"]["name"]


def test_the_order_in_which_mappings_were_filled_does_not_change_the_children() -> None:
    second_budget = {**BUDGET, "metadata": {**BUDGET["metadata"], "name": "research-extra"}}
    agent_changes = {"spec.budgetRefs": ["research-team", "research-extra"], "spec.auth": HS256_AUTH}
    versions = {"jwt-hmac": "11", "openai-api-key": "12", "ticketing-token": "13", "research-db": "14", "agentgov-redis": "15"}
    reference = json.dumps(build_children(make_inputs(budgets=[BUDGET, second_budget], agent_changes=agent_changes, secret_versions=versions)))
    rng = random.Random(7)
    for _ in range(5):
        shuffled_versions = dict(rng.sample(sorted(versions.items()), len(versions)))
        budgets = rng.sample([BUDGET, second_budget], 2)
        built = build_children(make_inputs(budgets=budgets, agent_changes=agent_changes, secret_versions=shuffled_versions))
        assert json.dumps(built) == reference


def test_children_share_no_objects_so_a_caller_may_mutate_them() -> None:
    inputs = make_inputs()
    children = build_children(inputs)
    deployment = child(children, "Deployment")
    deployment["spec"]["selector"]["matchLabels"]["mutated"] = "yes"
    child(children, "NetworkPolicy")["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["mutated"] = "yes"
    assert "mutated" not in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    assert "mutated" not in child(children, "Service")["spec"]["selector"]
    assert json.dumps(build_children(inputs)) == json.dumps(build_children(make_inputs()))


def test_an_agent_without_a_uid_is_refused_naming_metadata_uid() -> None:
    agent = {**AGENT, "metadata": {k: v for k, v in AGENT["metadata"].items() if k != "uid"}}
    assert build_error(make_inputs(agent)).field == "metadata.uid"


def test_missing_references_stop_the_build_and_are_named() -> None:
    inputs = make_inputs(budgets=[], tool_policy=None)
    with pytest.raises(UnresolvedReferences) as caught:
        build_children(inputs)
    assert caught.value.references == ["AgentBudget research/research-team", "ToolPolicy research/research-tools"]


def test_no_secret_material_leaves_its_secret() -> None:
    """Builders never see Secret data; what they emit may only *reference* Secrets."""
    inputs = make_inputs(agent_changes={"spec.auth": HS256_AUTH})
    children = build_children(inputs)
    assert "Secret" not in kinds(children)
    configmap = child(children, "ConfigMap")
    assert list(configmap["data"]) == ["bundle.json"] and "binaryData" not in configmap
    bundle = json.loads(configmap["data"]["bundle.json"])
    references = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            if key.endswith("File"):
                assert set(node) == {"secret", "key"}, (key, node)
                references.append(node)
                return
            for k, v in node.items():
                assert not re.search(r"(password|token|apiKey|secretValue)$", k), k
                walk(v, k)
        elif isinstance(node, list):
            for item in node:
                walk(item, key)

    walk(bundle)
    assert {r["secret"] for r in references} == {"jwt-hmac", "openai-api-key", "ticketing-token"}
    pod = child(children, "Deployment")["spec"]["template"]["spec"]
    secret_names = {s.name for s in inputs.spec.secrets}
    for container in pod["containers"]:
        for var in container["env"]:
            if var["name"] in secret_names or var["name"] == "AGENTGOV_REDIS_URL":
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], var


def test_a_policy_of_the_wrong_kind_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="tool_policy must be a parsed ToolPolicy"):
        Inputs(agent=parse_object(AGENT), budgets={}, tool_policy=parse_object(BUDGET), region_policy=None, config=OperatorConfig())
    with pytest.raises(TypeError, match="agent must be a parsed AgentDeployment"):
        Inputs(agent=parse_object(TOOLS), budgets={}, tool_policy=None, region_policy=None, config=OperatorConfig())


def test_the_sidecar_gets_a_writable_volume_at_the_audit_log_directory() -> None:
    """The sidecar's root filesystem is read-only; without this its audit sink fails and /ready with it."""
    from agentgov.api.bundle import AUDIT_LOG_DIR, AUDIT_LOG_FILE
    from agentgov.api.manifests import load_manifests
    from agentgov.controller.config import OperatorConfig
    from agentgov.controller.render import rendered_children

    repo = pathlib.Path(__file__).resolve().parents[2]
    objects = [item.obj for item in load_manifests([repo / "examples"]) if item.obj is not None]
    children, problems = rendered_children(objects, OperatorConfig.from_env({}))
    assert problems == []
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "agentgov-sidecar")
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == AUDIT_LOG_DIR)
    assert not mount.get("readOnly")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert AUDIT_LOG_FILE.startswith(AUDIT_LOG_DIR + "/")
