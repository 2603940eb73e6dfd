"""Built-in objects are checked against the strict Kubernetes schemas, naming what is wrong."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from harness import builtin_schemas
from harness.builtin_schemas import LATEST_VERSION, OLDEST_VERSION, validate_builtin

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "research-agent", "namespace": "agents", "labels": {"app.kubernetes.io/name": "research-agent"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "research-agent"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "research-agent"}},
            "spec": {
                "containers": [
                    {
                        "name": "agent",
                        "image": "ghcr.io/example/agent:1.0.0",
                        "ports": [{"containerPort": 8000, "name": "http"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    }
                ]
            },
        },
    },
}


def changed(path: list[Any], value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    """A copy of DEPLOYMENT with the value at ``path`` replaced (or deleted)."""
    result = copy.deepcopy(DEPLOYMENT)
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return result


def test_the_latest_version_is_the_newest_the_package_bundles() -> None:
    newest = kubernetes_validate.latest_version()
    assert newest.startswith(LATEST_VERSION + ".")
    assert builtin_schemas.bundled_versions()[-1] == LATEST_VERSION
    assert re.fullmatch(r"1\.\d+", LATEST_VERSION)


def test_each_bundled_version_is_listed_once_and_the_oldest_supported_is_bundled() -> None:
    versions = builtin_schemas.bundled_versions()
    assert len(versions) == len(set(versions))
    assert OLDEST_VERSION in versions


@pytest.mark.parametrize(
    "versions",
    [(OLDEST_VERSION, LATEST_VERSION), (OLDEST_VERSION,), (LATEST_VERSION,)],
    ids=["a correct Deployment passes the oldest and newest versions", "it passes the oldest version alone", "it passes the newest version alone"],
)
def test_a_correct_deployment_passes(versions: tuple[str, ...]) -> None:
    validate_builtin(DEPLOYMENT, versions)


INVALID_CASES = [
    (changed(["spec", "replicas"], "three"), "spec.replicas", "'three' is not of type 'integer'"),
    (changed(["spec", "template", "spec", "containers", 0, "imagePullPolicyy"], "Always"), "spec.template.spec.containers[0].imagePullPolicyy", "Additional properties are not allowed"),
    (changed(["spec", "bogus"], True), "spec.bogus", "Additional properties are not allowed"),
    (changed(["spec", "selector"], delete=True), "spec.selector", "'selector' is a required property"),
    (changed(["spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"], "8000"), "spec.template.spec.containers[0].ports[0].containerPort", "'8000' is not of type 'integer'"),
]


@pytest.mark.parametrize(
    ("obj", "field", "detail"),
    INVALID_CASES,
    ids=[
        "a string replica count is refused naming spec.replicas",
        "a misspelt container field is refused under strict validation",
        "an unknown spec field is refused under strict validation",
        "a missing selector is refused naming spec.selector",
        "a string port is refused naming the port",
    ],
)
def test_an_invalid_deployment_is_refused_naming_kind_name_version_and_field(obj: dict[str, Any], field: str, detail: str) -> None:
    with pytest.raises(AssertionError) as raised:
        validate_builtin(obj)
    message = str(raised.value)
    assert message.startswith(f'Deployment "research-agent" is invalid for Kubernetes {OLDEST_VERSION} at {field}: ')
    assert detail in message


def test_the_newest_version_is_checked_too() -> None:
    with pytest.raises(AssertionError, match=rf"for Kubernetes {re.escape(LATEST_VERSION)} at spec.replicas"):
        validate_builtin(changed(["spec", "replicas"], "three"), (LATEST_VERSION,))


def test_a_kind_without_a_bundled_schema_is_an_error_not_a_pass() -> None:
    budget = {"apiVersion": "agentgov.io/v1alpha1", "kind": "AgentBudget", "metadata": {"name": "team"}}
    with pytest.raises(AssertionError, match=r'AgentBudget "team" cannot be checked for Kubernetes 1\.30'):
        validate_builtin(budget)


def test_validation_does_not_mutate_the_object() -> None:
    before = copy.deepcopy(DEPLOYMENT)
    validate_builtin(DEPLOYMENT)
    assert DEPLOYMENT == before
