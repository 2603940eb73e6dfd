"""The generated CRDs, checked as the API server would check them.

The CRDs must be structural with compiling CEL rules, valid apiextensions/v1 objects for
Kubernetes 1.30 and the newest schemas, carry a description on every field, accept every
example with the same defaults the models apply, and refuse every invalid manifest at the
field (and, for cross-field rules, with the message) that ``agentgov render`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import schema
from harness.builtin_schemas import validate_builtin
from manifest_cases import INVALID

from agentgov.api.base import Model
from agentgov.api.crd import build_all
from agentgov.api.manifests import load_manifests
from agentgov.api.resources import KINDS, ManifestError, parse_object
from agentgov.controller.render import normalized

REPO = Path(__file__).resolve().parents[2]
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in build_all().values()}
COMMITTED_CRDS = sorted((REPO / "crds").glob("*.yaml"))
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml"))


def root_schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def server_admit(manifest: dict[str, Any]) -> tuple[dict[str, Any], list[schema.FieldError]]:
    """What the API server does with a custom object on create: prune, default, validate."""
    root = root_schema(manifest["kind"])
    obj = schema.apply_defaults(root, schema.prune(root, manifest))
    return obj, schema.validate(root, obj)


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}[*]")
    return found


@pytest.mark.parametrize("path", COMMITTED_CRDS, ids=[p.name for p in COMMITTED_CRDS])
def test_committed_crd_is_structural_and_its_rules_compile(path: Path) -> None:
    crd = yaml.safe_load(path.read_text())
    assert schema.check_crd(crd) == []


@pytest.mark.parametrize("path", COMMITTED_CRDS, ids=[p.name for p in COMMITTED_CRDS])
def test_committed_crd_is_a_valid_kubernetes_object(path: Path) -> None:
    validate_builtin(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_of_the_crd_has_a_description(kind: str) -> None:
    spec_and_status = root_schema(kind)["properties"]
    undocumented = [
        path
        for part in ("spec", "status")
        for path, node in walk(spec_and_status[part], part)
        if not node.get("description") and not path.endswith("[]")
    ]
    assert undocumented == []


def test_agentdeployment_has_status_and_scale_subresources_and_a_ready_column() -> None:
    version = CRDS["AgentDeployment"]["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Budget%", "Available", "Age"} <= set(columns)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_resource_is_in_the_agentgov_category_with_its_short_name(kind: str) -> None:
    names = CRDS[kind]["spec"]["names"]
    resource = next(r for r in KINDS if r.kind == kind)
    assert names["categories"] == ["agentgov"]
    assert names["shortNames"] == list(resource.short_names)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_admitted_with_the_defaults_the_models_apply(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        if not document["apiVersion"].startswith("agentgov.io/"):
            validate_builtin(document)
            continue
        admitted, errors = server_admit(document)
        assert errors == []
        assert admitted["spec"] == normalized(parse_object(document))["spec"]


def test_every_example_is_valid_for_the_models() -> None:
    loaded = load_manifests([REPO / "examples"])
    assert [item.error for item in loaded if item.error] == []
    assert len([item for item in loaded if item.obj]) == 4


CRD_CASES = [(m, e, i) for m, e, i in INVALID if not e.startswith(("apiVersion", "kind"))]
# Where the server's own list semantics answer before a rule does (x-kubernetes-list-type: set).
SERVER_SAYS = {"a repeated threshold": "Duplicate value: 80"}


@pytest.mark.parametrize("manifest, expected, case", CRD_CASES, ids=[i for _, _, i in CRD_CASES])
def test_invalid_manifest_is_refused_by_the_crd_at_the_field_render_names(
    manifest: dict[str, Any], expected: str, case: str
) -> None:
    field, _, message = expected.partition(": ")
    root = root_schema(manifest["kind"])
    unknown = schema.unknown_fields(root, manifest)
    if message == "Extra inputs are not permitted":
        # The server prunes unknown fields; kubectl's default fieldValidation=Strict refuses them.
        assert any(field in u for u in unknown), unknown
        return
    _, errors = server_admit(manifest)
    assert errors, "the CRD admitted an object the models refuse"
    assert any(e.field.startswith(field) or field.startswith(e.field) for e in errors), [e.message for e in errors]
    if message in RULE_MESSAGES:
        wanted = SERVER_SAYS.get(case, message)
        assert any(wanted in e.message for e in errors), [e.message for e in errors]


def all_models() -> set[type[Model]]:
    seen: set[type[Model]] = set()
    todo: list[type[Model]] = [k.spec_model for k in KINDS]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (candidate, *getattr(candidate, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, Model):
                        todo.append(inner)
    return seen


RULE_MESSAGES = {rule.message for model in all_models() for rule in model.cel_rules}


def test_every_cross_field_rule_has_a_refusal_case() -> None:
    covered = {expected.partition(": ")[2] for _, expected, _ in INVALID}
    assert RULE_MESSAGES - covered == set()
