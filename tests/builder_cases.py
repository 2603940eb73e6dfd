"""Inputs for the builder tests: the shipped examples (loaded as the CLI loads them), and a
way to vary any of them by dotted path before parsing."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from manifest_cases import with_changes

from agentgov.api.manifests import load_manifests
from agentgov.api.resources import parse_object
from agentgov.controller.builders import BuildError, Inputs, build_children
from agentgov.controller.config import OperatorConfig

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
AGENT_UID = "3f1c2a9e-7d4b-4c2e-9a51-0b6f8e2d4c11"
# What Kubernetes accepts, written out here rather than taken from the builders they check.
RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _example_manifests() -> dict[str, dict[str, Any]]:
    loaded = [item.obj for item in load_manifests([EXAMPLES_DIR]) if item.obj is not None]
    return {obj.kind: obj.model_dump(mode="json", by_alias=True, exclude_none=True) for obj in loaded}


_EXAMPLES = _example_manifests()
AGENT: dict[str, Any] = with_changes(with_changes(_EXAMPLES["AgentDeployment"], "metadata.uid", AGENT_UID), "metadata.generation", 1)
BUDGET: dict[str, Any] = _EXAMPLES["AgentBudget"]
TOOLS: dict[str, Any] = _EXAMPLES["ToolPolicy"]
REGIONS: dict[str, Any] = _EXAMPLES["RegionPolicy"]


def changed(manifest: dict[str, Any], changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``manifest`` with each dotted path set (``...`` deletes it)."""
    result = copy.deepcopy(manifest)
    for path, value in (changes or {}).items():
        result = with_changes(result, path, value)
    return result


def make_inputs(
    agent: dict[str, Any] | None = None,
    *,
    budgets: list[dict[str, Any]] | None = None,
    tool_policy: dict[str, Any] | None = TOOLS,
    region_policy: dict[str, Any] | None = REGIONS,
    config: OperatorConfig | None = None,
    secret_versions: dict[str, str] | None = None,
    agent_changes: dict[str, Any] | None = None,
) -> Inputs:
    """Inputs from manifests (the examples unless given); ``None`` for a policy means absent."""
    agent_manifest = changed(agent if agent is not None else AGENT, agent_changes)
    parsed_budgets = [parse_object(b) for b in (budgets if budgets is not None else [BUDGET])]
    return Inputs(
        agent=parse_object(agent_manifest),
        budgets={b.metadata.name: b for b in parsed_budgets},
        tool_policy=parse_object(tool_policy) if tool_policy is not None else None,
        region_policy=parse_object(region_policy) if region_policy is not None else None,
        config=config or OperatorConfig(),
        secret_versions=secret_versions or {},
    )


def build_error(inputs: Inputs) -> BuildError:
    """The BuildError building the children of ``inputs`` raises (the test fails if none)."""
    with pytest.raises(BuildError) as caught:
        build_children(inputs)
    return caught.value


def child(children: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = [c for c in children if c["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got {[c['kind'] for c in children]}"
    return matches[0]


def kinds(children: list[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)
