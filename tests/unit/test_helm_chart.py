"""The Helm chart (charts/agentgov), linted and rendered with Helm's own Go SDK (helm-python-sdk,
no helm binary), for the default values and the value sets a platform team uses.

Every rendered object is checked against Kubernetes' strict schemas (1.30 and the newest
bundled), ServiceMonitor/PodMonitor/PrometheusRule against the Prometheus Operator's schemas,
kopf's peering objects against the CRD the chart ships; bad values must fail at install with
the field named; the CRDs must be those of crds/; and what the chart hands the operator (its
arguments, its AGENTGOV_* variables) must be accepted by the operator's own parsers.

Gap: the Prometheus Operator schemas come from the cloudcoil-models-prometheus-operator
package (pydantic models generated from the operator's CRDs, v0.80), made strict here
(unknown fields are errors); no pip package ships the CRD YAML itself.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from harness import schema as crd_schema
from harness.builtin_schemas import validate_builtin

import agentgov
from agentgov.cli import build_parser
from agentgov.controller import liveness
from agentgov.controller.config import DEFAULT_IMAGE, OperatorConfig

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentgov"
RELEASE, NAMESPACE = "agentgov", "agentgov-system"
SAMPLE_REDIS_URL = "redis://:s3cret@redis.data.svc:6379/0"
APP_LABELS = ("name", "instance", "version", "component", "part-of", "managed-by")
PROMETHEUS_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
KOPF_KINDS = ("ClusterKopfPeering", "KopfPeering")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "the default values": {},
    "CRDs managed elsewhere": {"crds": {"enabled": False}},
    "listed namespaces": {"watchNamespaces": ["research", "support"]},
    "monitoring on": {
        "prometheus": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                       "podMonitor": {"enabled": True}, "rules": {"enabled": True}},
        "grafana": {"dashboard": {"enabled": True}},
    },
    "the bundled Redis": {"redis": {"bundled": {"enabled": True}, "agentNamespaces": ["research"]}},
    "three replicas": {"replicas": 3},
    "three replicas in listed namespaces, locked down": {
        "replicas": 3, "watchNamespaces": ["research"], "networkPolicy": {"enabled": True},
        "prometheus": {"podMonitor": {"enabled": True}},
    },
    "an external Redis": {"redis": {"url": {"existingSecret": "budget-store"}, "namespace": "data",
                                    "podSelector": {"app": "redis", "tier": "budget"}}},
    "a pinned digest and a mirror": {"image": {"repository": "registry.corp.example/mirror/agentgov",
                                               "digest": "sha256:" + "ab" * 32}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (as `helm install` would apply it)."""
    out = chart.render(copy.deepcopy(dict(values)), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def notes(chart: helm.Chart, values: Mapping[str, Any]) -> str:
    out = chart.render(copy.deepcopy(dict(values)), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", "agentgov")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def environment(container: Mapping[str, Any], secret_values: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's variables as the pod would see them; a secretKeyRef reads ``secret_values``
    (by Secret name), or a sample Redis URL."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (secret_values or {}).get(ref["name"], SAMPLE_REDIS_URL)
    return env


# --- Prometheus Operator schemas ---------------------------------------------------------

def _strict(node: Any) -> Any:
    """The schema with unknown fields refused wherever properties are listed (kubectl --validate=strict)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def prometheus_operator_validator(kind: str) -> jsonschema.Draft202012Validator:
    from cloudcoil.models.prometheus_operator import v1

    schema = _strict(getattr(v1, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def validate_prometheus_operator(obj: Mapping[str, Any]) -> None:
    errors = sorted(prometheus_operator_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, (
        f'{obj["kind"]} "{obj["metadata"]["name"]}" is invalid at '
        f'{".".join(str(p) for p in errors[0].path) or "<root>"}: {errors[0].message}'
    )


def kopf_peering_crds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in of_kind(objects, "CustomResourceDefinition")
            if c["spec"]["group"] == "kopf.dev"}


def validate_object(obj: Mapping[str, Any], kopf_crds: Mapping[str, Mapping[str, Any]]) -> None:
    if obj["kind"] in PROMETHEUS_KINDS:
        validate_prometheus_operator(obj)
    elif obj["kind"] in KOPF_KINDS:
        crd = kopf_crds[obj["kind"]]
        errors = crd_schema.validate(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], dict(obj))
        assert not errors, errors
    else:
        validate_builtin(obj)
        if obj["kind"] == "CustomResourceDefinition":
            assert crd_schema.check_crd(obj) == [], obj["metadata"]["name"]


# --- the Pod Security Standard "restricted" ------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """What in a pod spec the restricted Pod Security Standard refuses (the checks of
    k8s.io/pod-security-admission's restricted level)."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    for volume in pod.get("volumes") or []:
        if not set(volume) - {"name"} <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}")
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runs as uid 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
    return found


def test_restricted_check_finds_what_the_standard_refuses() -> None:
    pod = {"securityContext": {}, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    assert restricted_violations(pod) == [
        "volume h", "c: privileged", "c: allowPrivilegeEscalation is not false", "c: capabilities.drop lacks ALL",
        "c: runAsNonRoot is not true", "c: seccompProfile is None"]


# --- lint and render -------------------------------------------------------------------------

@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_chart_lints_without_warnings(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, copy.deepcopy(values), strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is information (Helm's "icon is recommended"); 2 is a warning, 3 an error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_valid_for_kubernetes(chart: helm.Chart, values: dict[str, Any]) -> None:
    objects = render(chart, values)
    kopf_crds = kopf_peering_crds(render(chart, {}))
    for obj in objects:
        validate_object(obj, kopf_crds)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_object_and_pod_carries_the_app_kubernetes_io_labels(chart: helm.Chart, values: dict[str, Any]) -> None:
    for obj in render(chart, values):
        labelled = [obj["metadata"]]
        if obj["kind"] == "Deployment":
            labelled.append(obj["spec"]["template"]["metadata"])
        for metadata in labelled:
            labels = metadata.get("labels") or {}
            missing = [k for k in APP_LABELS if f"app.kubernetes.io/{k}" not in labels]
            assert not missing, f'{obj["kind"]} {obj["metadata"]["name"]} lacks app.kubernetes.io/{missing}'
            assert labels["app.kubernetes.io/part-of"] == "agentgov"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_pod_meets_the_restricted_pod_security_standard(chart: helm.Chart, values: dict[str, Any]) -> None:
    deployments = of_kind(render(chart, values), "Deployment")
    assert deployments
    for deployment in deployments:
        assert restricted_violations(deployment["spec"]["template"]["spec"]) == [], deployment["metadata"]["name"]


def test_the_default_install_is_the_operator_its_rbac_crds_and_metrics_service(chart: helm.Chart) -> None:
    objects = render(chart, {})
    kinds = sorted(f'{o["kind"]}/{o["metadata"]["name"]}' for o in objects)
    assert kinds == sorted([
        "ClusterRole/agentgov-edit", "ClusterRole/agentgov-operator", "ClusterRole/agentgov-view",
        "ClusterRoleBinding/agentgov-operator",
        "CustomResourceDefinition/agentbudgets.agentgov.io", "CustomResourceDefinition/agentdeployments.agentgov.io",
        "CustomResourceDefinition/clusterkopfpeerings.kopf.dev", "CustomResourceDefinition/kopfpeerings.kopf.dev",
        "CustomResourceDefinition/regionpolicies.agentgov.io", "CustomResourceDefinition/toolpolicies.agentgov.io",
        "Deployment/agentgov", "Service/agentgov-metrics", "ServiceAccount/agentgov",
    ])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects, "PodDisruptionBudget")


# --- CRDs ------------------------------------------------------------------------------------

def generated_crds() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((REPO / "crds").glob("*.yaml"))}


def load_sync_crds() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_crds", REPO / "charts" / "sync_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_crd_templates_are_generated_from_crds_and_up_to_date() -> None:
    sync = load_sync_crds()
    assert sync.problems(sync.wanted_files()) == []


def test_the_rendered_crds_are_the_crds_folder_with_helm_labels_and_the_keep_annotation(chart: helm.Chart) -> None:
    rendered = {c["metadata"]["name"]: c for c in of_kind(render(chart, {}), "CustomResourceDefinition")}
    for name, crd in generated_crds().items():
        ours = rendered[crd["metadata"]["name"]]
        assert ours["spec"] == crd["spec"], name
        assert {k: v for k, v in ours.items() if k != "metadata"} == {k: v for k, v in crd.items() if k != "metadata"}
        assert crd["metadata"]["labels"].items() <= ours["metadata"]["labels"].items()
        assert ours["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_can_be_left_to_someone_else_or_dropped_on_uninstall(chart: helm.Chart) -> None:
    assert of_kind(render(chart, {"crds": {"enabled": False}}), "CustomResourceDefinition") == []
    not_kept = of_kind(render(chart, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert len(not_kept) == 6 and all("annotations" not in c["metadata"] for c in not_kept)
    without_kopf = of_kind(render(chart, {"crds": {"kopfPeering": False}}), "CustomResourceDefinition")
    assert sorted(c["spec"]["group"] for c in without_kopf) == ["agentgov.io"] * 4


def test_a_sync_of_a_crd_that_holds_template_braces_is_refused() -> None:
    sync = load_sync_crds()
    source = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x.y\nspec:\n  group: '{{ .x }}'\n"
    with pytest.raises(sync.SourceError, match="Helm would read as a template"):
        sync.chart_template(source, "x.yaml")


# --- what the operator is given ---------------------------------------------------------------

@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_operators_arguments_parse_and_name_the_container_ports(chart: helm.Chart, values: dict[str, Any]) -> None:
    objects = render(chart, values)
    container = operator_container(objects)
    args = build_parser().parse_args(container["args"])
    replicas = one(objects, "Deployment", "agentgov")["spec"]["replicas"]
    assert args.standalone == (replicas <= 1)
    assert args.peering == (None if replicas <= 1 else "agentgov")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness.parse_endpoint(args.liveness)[1:] == (ports["health"], "/healthz")
    assert args.metrics_port == ports["http-metrics"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_operator_accepts_every_setting_the_chart_gives_it(chart: helm.Chart, values: dict[str, Any]) -> None:
    objects = render(chart, values)
    secrets = {s["metadata"]["name"]: s["stringData"]["url"] for s in of_kind(objects, "Secret")
               if s["metadata"]["namespace"] == NAMESPACE}
    env = environment(operator_container(objects), secrets)
    assert OperatorConfig.unknown_variables(env) == []
    OperatorConfig.from_env(env)  # raises ConfigError naming the variable


def test_the_charts_defaults_are_the_operators_defaults(chart: helm.Chart) -> None:
    env = environment(operator_container(render(chart, {})))
    assert "AGENTGOV_REDIS_URL" not in env
    configured = OperatorConfig.from_env(env)
    assert configured.model_dump(exclude={"image_pull_policy"}) == OperatorConfig.from_env({}).model_dump(exclude={"image_pull_policy"})
    assert env["AGENTGOV_IMAGE"] == DEFAULT_IMAGE == operator_container(render(chart, {}))["image"]


def test_the_chart_version_follows_the_package() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == agentgov.__version__


def test_a_pinned_digest_is_used_for_the_operator_and_its_sidecars(chart: helm.Chart) -> None:
    values = VALUE_SETS["a pinned digest and a mirror"]
    container = operator_container(render(chart, values))
    expected = "registry.corp.example/mirror/agentgov@sha256:" + "ab" * 32
    assert container["image"] == expected
    assert environment(container)["AGENTGOV_IMAGE"] == expected


# --- namespaces, replicas, Redis, monitoring ---------------------------------------------------

def test_listed_namespaces_get_a_role_each_and_only_cluster_reads_in_the_cluster_role(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["listed namespaces"])
    assert environment(operator_container(objects))["AGENTGOV_NAMESPACES"] == "research,support"
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objects, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objects, "RoleBinding")}
    assert sorted(roles) == sorted(bindings) == ["research", "support"]
    for binding in bindings.values():
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agentgov", "namespace": NAMESPACE}]
        assert binding["roleRef"]["name"] == roles[binding["metadata"]["namespace"]]["metadata"]["name"]
    cluster = one(objects, "ClusterRole", "agentgov-operator")
    assert sorted(r for rule in cluster["rules"] for r in rule["resources"]) == ["customresourcedefinitions", "namespaces"]


def test_several_replicas_run_kopf_peering_with_a_pdb_and_the_peering_object(chart: helm.Chart) -> None:
    objects = render(chart, {"replicas": 3})
    deployment = one(objects, "Deployment", "agentgov")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": deployment["spec"]["selector"]}
    peering = one(objects, "ClusterKopfPeering", "agentgov")
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    rules = one(objects, "ClusterRole", "agentgov-operator")["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch", "patch"]} in rules
    assert "Several replicas" in notes(chart, {"replicas": 3})


def test_several_replicas_in_listed_namespaces_peer_in_each_namespace(chart: helm.Chart) -> None:
    objects = render(chart, {"replicas": 2, "watchNamespaces": ["research", "support"]})
    assert sorted(p["metadata"]["namespace"] for p in of_kind(objects, "KopfPeering")) == ["research", "support"]
    assert of_kind(objects, "ClusterKopfPeering") == []


def test_the_bundled_redis_is_wired_to_the_operator_and_the_agent_namespaces(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["the bundled Redis"])
    redis = one(objects, "Deployment", "agentgov-redis")
    service = one(objects, "Service", "agentgov-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    url = "redis://agentgov-redis.agentgov-system.svc.cluster.local:6379/0"
    secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s["stringData"] for s in of_kind(objects, "Secret")}
    assert secrets == {(NAMESPACE, "agentgov-redis"): {"url": url}, ("research", "agentgov-redis"): {"url": url}}
    config = OperatorConfig.from_env(environment(operator_container(objects), {"agentgov-redis": url}))
    assert config.spend_store_address == "agentgov-redis.agentgov-system.svc.cluster.local:6379"
    assert config.redis_namespace == NAMESPACE
    # The agents' NetworkPolicies (built from these settings) must select the bundled pods.
    assert config.redis_selector_labels.items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    policy = one(objects, "NetworkPolicy", "agentgov-redis")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()


def test_an_external_redis_is_read_from_the_named_secret(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["an external Redis"])
    env = {e["name"]: e for e in operator_container(objects)["env"]}
    assert env["AGENTGOV_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "budget-store", "key": "url"}}
    config = OperatorConfig.from_env(environment(operator_container(objects)))
    assert config.redis_selector_labels == {"app": "redis", "tier": "budget"}
    assert config.redis_namespace == "data"
    assert of_kind(objects, "Secret") == []


def test_monitoring_renders_monitors_rules_and_the_dashboard(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["monitoring on"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "agentgov-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pods = one(objects, "PodMonitor")
    assert pods["spec"]["namespaceSelector"] == {"any": True}
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "http"  # the sidecar's port (builders.service.PORT_NAME)
    rule = one(objects, "PrometheusRule")
    rules_file = CHART / "files" / "prometheus-rules.yaml"
    if rules_file.is_file():
        source = yaml.safe_load(rules_file.read_text(encoding="utf-8"))
        assert rule["spec"]["groups"] == source.get("groups", (source.get("spec") or {}).get("groups"))
        assert rule["spec"]["groups"], "files/prometheus-rules.yaml holds no rule group"
    else:
        assert rule["spec"] == {"groups": []}
    dashboard_file = CHART / "files" / "grafana-dashboard.json"
    dashboards = of_kind(objects, "ConfigMap")
    if dashboard_file.is_file():
        [dashboard] = dashboards
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(dashboard["data"]["agentgov.json"]) == json.loads(dashboard_file.read_text(encoding="utf-8"))
    else:
        assert dashboards == []


def test_the_operator_network_policy_admits_scrapes_and_probes_and_lets_out_only_dns_api_and_redis(chart: helm.Chart) -> None:
    objects = render(chart, {"networkPolicy": {"enabled": True}})
    policy = one(objects, "NetworkPolicy")
    container = operator_container(objects)
    named = {p["name"] for p in container["ports"]}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == named
    assert sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]) == [53, 53, 443, 6379, 6443]
    assert policy["spec"]["podSelector"]["matchLabels"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]


def test_notes_say_what_to_do_next(chart: helm.Chart) -> None:
    text = notes(chart, {})
    assert "kubectl apply -f examples/" in text
    assert "kubectl get agentgov -A" in text
    assert "rollout status deployment/agentgov" in text
    assert "NotConfigured" in text  # no budget store given: say what that means
    bundled = notes(chart, VALUE_SETS["the bundled Redis"])
    assert "done by the chart for: research" in bundled and "NotConfigured" not in bundled


# --- bad values ----------------------------------------------------------------------------------

BAD_VALUES = [
    ({"replicas": "three"}, "'/replicas': got string, want integer"),
    ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    ({"redis": {"bundled": {"enable": True}}}, "at '/redis/bundled': additional properties 'enable' not allowed"),
    ({"resources": {"requests": {"cpu": "-100m"}}}, "'/resources/requests/cpu'"),
    ({"resources": {"limits": {"memory": -1}}}, "'/resources/limits/memory'"),
    ({"config": {"sidecarResources": {"limits": {"cpu": "-1"}}}}, "'/config/sidecarResources/limits/cpu'"),
    ({"config": {"resyncSeconds": 0}}, "'/config/resyncSeconds'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "'/image/pullPolicy'"),
    ({"image": {"digest": "sha256:short"}}, "'/image/digest'"),
    ({"watchNamespaces": ["Research_Team"]}, "'/watchNamespaces/0'"),
    ({"metrics": {"port": 70000}}, "'/metrics/port'"),
    ({"prometheus": {"serviceMonitor": {"interval": "30 seconds"}}}, "'/prometheus/serviceMonitor/interval'"),
    ({"redis": {"podSelector": {"app": 5}}}, "'/redis/podSelector/app'"),
]


@pytest.mark.parametrize("values, named", BAD_VALUES, ids=[n for _, n in BAD_VALUES])
def test_a_bad_value_fails_the_install_naming_the_field(chart: helm.Chart, values: dict[str, Any], named: str) -> None:
    with pytest.raises(helm.HelmValuesError) as failure:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert named in str(failure.value)
    report = helm.lint(CHART, values, namespace=NAMESPACE)
    assert any(named in error for error in report["errors"])


CONFLICTS = [
    ({"health": {"port": 9090}}, "health.port and metrics.port must differ (both are 9090)"),
    ({"redis": {"bundled": {"enabled": True}, "url": {"existingSecret": "x"}}},
     "redis.bundled.enabled and redis.url.existingSecret exclude each other"),
    ({"prometheus": {"serviceMonitor": {"enabled": True}}, "metrics": {"service": {"enabled": False}}},
     "prometheus.serviceMonitor.enabled needs metrics.service.enabled"),
]


@pytest.mark.parametrize("values, message", CONFLICTS, ids=[m for _, m in CONFLICTS])
def test_values_that_contradict_each_other_fail_naming_both(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as failure:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert message in str(failure.value)


def test_a_value_type_the_kubernetes_schema_refuses_is_caught_by_the_validation_here(chart: helm.Chart) -> None:
    """The strict schemas are what the other tests lean on: a template mistake must fail them."""
    deployment = one(render(chart, {}), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(AssertionError, match="containerPort"):
        validate_builtin(deployment)
    monitor = one(render(chart, VALUE_SETS["monitoring on"]), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"
    with pytest.raises(AssertionError, match="endpoints.0"):
        validate_prometheus_operator(monitor)


# --- values.yaml is documented field by field ------------------------------------------------------

def documented_keys(text: str) -> dict[str, bool]:
    """Each mapping key of values.yaml (dotted path) and whether a comment sits right above it."""
    keys: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9_]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            keys[".".join(name for _, name in stack)] = previous.lstrip().startswith("#")
        if line.strip():
            previous = line
    return keys


def schema_leaves(node: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if "properties" in child:
            yield from schema_leaves(child, path + ".")
        else:
            yield path


def test_every_value_is_in_values_yaml_with_a_comment_and_in_the_schema() -> None:
    keys = documented_keys((CHART / "values.yaml").read_text(encoding="utf-8"))
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    leaves = list(schema_leaves(schema))
    assert len(leaves) > 60
    assert [leaf for leaf in leaves if leaf not in keys] == [], "in the schema, not in values.yaml"
    assert [leaf for leaf in leaves if not keys[leaf]] == [], "in values.yaml without a comment"
