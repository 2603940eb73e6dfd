"""The kustomize manifests (manifests/base, manifests/overlays/production), built by the real
``kubectl kustomize`` and checked as the chart is: every object valid for Kubernetes (strict
schemas, 1.30 and the newest), the CRDs those of crds/, the base the same objects as the chart's
default install, the operator's arguments and settings accepted by the operator, pods within the
restricted Pod Security Standard; and production adds what it promises (replicas with kopf
peering, a PDB, a NetworkPolicy, larger resources).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from harness import schema as crd_schema
from harness.builtin_schemas import validate_builtin

from agentgov.cli import build_parser
from agentgov.controller import liveness
from agentgov.controller.config import DEFAULT_IMAGE, OperatorConfig

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CHART = REPO / "charts" / "agentgov"
KUBECTL = shutil.which("kubectl")
OVERLAYS = ["base", "overlays/production"]

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH (CI installs it: .ci/ensure-kubectl)")


def build(overlay: str) -> list[dict[str, Any]]:
    assert KUBECTL
    result = subprocess.run([KUBECTL, "kustomize", str(MANIFESTS / overlay)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def chart_defaults() -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render({}, name="agentgov", namespace="agentgov-system", is_install=True)
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = one(objects, "Deployment", "agentgov")["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def plain_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The variables set by value (a secretKeyRef that is optional and absent sets nothing)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(request.param)


def test_each_overlay_builds_and_every_object_is_valid_for_kubernetes(built: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = built
    crds = {c["spec"]["names"]["kind"]: c for c in objects if c["kind"] == "CustomResourceDefinition"}
    for obj in objects:
        if obj["kind"] in ("ClusterKopfPeering", "KopfPeering"):
            schema = crds[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            assert crd_schema.validate(schema, obj) == []
            continue
        validate_builtin(obj)
        if obj["kind"] == "CustomResourceDefinition":
            assert crd_schema.check_crd(obj) == [], obj["metadata"]["name"]


def test_every_object_is_labelled_and_namespaced_objects_live_in_agentgov_system(built: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = built
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "agentgov", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", obj["metadata"]["name"]
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == "agentgov-system", obj["metadata"]["name"]
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "agentgov", "namespace": "agentgov-system"}]


def test_the_crds_are_those_of_the_crds_folder(built: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = built
    ours = {c["metadata"]["name"]: c for c in objects if c["kind"] == "CustomResourceDefinition"}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert (MANIFESTS / "base" / "crds" / path.name).read_bytes() == path.read_bytes(), path.name
        built_crd = ours.pop(crd["metadata"]["name"])
        assert built_crd["spec"] == crd["spec"]
        assert crd["metadata"]["labels"].items() <= built_crd["metadata"]["labels"].items()
    # What is left is kopf's peering CRDs, the same as the chart ships.
    chart_kopf = {c["metadata"]["name"]: c["spec"] for c in chart_defaults()
                  if c["kind"] == "CustomResourceDefinition" and c["spec"]["group"] == "kopf.dev"}
    assert {name: c["spec"] for name, c in ours.items()} == chart_kopf


def test_the_base_is_the_charts_default_install_without_helm() -> None:
    objects = build("base")
    chart = chart_defaults()
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] != "Namespace") == sorted(
        (o["kind"], o["metadata"]["name"]) for o in chart)
    ours, theirs = operator_container(objects), operator_container(chart)
    for field in ("args", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts", "image"):
        assert ours[field] == theirs[field], field
    deployment, chart_deployment = one(objects, "Deployment"), one(chart, "Deployment")
    assert deployment["spec"]["selector"] == chart_deployment["spec"]["selector"]
    assert deployment["spec"]["strategy"] == chart_deployment["spec"]["strategy"]
    pod, chart_pod = deployment["spec"]["template"]["spec"], chart_deployment["spec"]["template"]["spec"]
    for field in ("securityContext", "volumes", "serviceAccountName", "automountServiceAccountToken"):
        assert pod[field] == chart_pod[field], field
    # The same operator settings, written out or left at the operator's defaults.
    assert OperatorConfig.from_env(plain_env(ours)) == OperatorConfig.from_env(plain_env(theirs))
    for kind, name in (("ClusterRole", "agentgov-view"), ("ClusterRole", "agentgov-edit")):
        assert one(objects, kind, name)["rules"] == one(chart, kind, name)["rules"]
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_operator_accepts_its_arguments_and_settings(built: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objects = built
    container = operator_container(objects)
    args = build_parser().parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness.parse_endpoint(args.liveness)[1:] == (ports["health"], "/healthz")
    assert args.metrics_port == ports["http-metrics"]
    env = plain_env(container)
    assert OperatorConfig.unknown_variables(env) == []
    config = OperatorConfig.from_env(env)
    assert config.image == container["image"] == DEFAULT_IMAGE
    redis_url = next(e for e in container["env"] if e["name"] == "AGENTGOV_REDIS_URL")
    assert redis_url["valueFrom"]["secretKeyRef"] == {"name": "agentgov-redis", "key": "url", "optional": True}


def test_an_overlay_that_sets_the_image_and_repeats_the_replacement_gives_it_to_the_sidecars(tmp_path: Path) -> None:
    """The recipe docs/install.md gives: the operator runs its own image as every sidecar."""
    base = yaml.safe_load((MANIFESTS / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "base", tmp_path)],
        "images": [{"name": "ghcr.io/agentgov/agentgov", "newName": "registry.corp.example/agentgov", "newTag": "9.9.9"}],
        "replacements": base["replacements"],
    }), encoding="utf-8")
    assert KUBECTL
    result = subprocess.run([KUBECTL, "kustomize", str(tmp_path)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    container = operator_container([d for d in yaml.safe_load_all(result.stdout) if d])
    assert container["image"] == "registry.corp.example/agentgov:9.9.9"
    assert plain_env(container)["AGENTGOV_IMAGE"] == container["image"]


def test_pods_meet_the_restricted_pod_security_standard(built: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = built
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
    assert all(set(v) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"} for v in pod["volumes"])


def test_production_runs_two_peering_replicas_with_a_pdb_and_a_network_policy() -> None:
    base, production = build("base"), build("overlays/production")
    deployment = one(production, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = build_parser().parse_args(operator_container(production)["args"])
    assert not args.standalone and args.peering == one(production, "ClusterKopfPeering")["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = one(production, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == selector
    policy = one(production, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    named_ports = {p["name"] for p in operator_container(production)["ports"]}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == named_ports
    assert sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]) == [53, 53, 443, 6379, 6443]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    more, less = operator_container(production)["resources"], operator_container(base)["resources"]
    assert more != less and more["limits"]["memory"] == "512Mi"
    assert copy.deepcopy(one(production, "ClusterKopfPeering")["metadata"]["annotations"]) == {
        "argocd.argoproj.io/sync-options": "SkipDryRunOnMissingResource=true"}
