"""What every builder is given, and how a builder says no.

``Inputs`` is everything the children of one AgentDeployment depend on: the object itself,
the budgets and policies it references (as the handler found them), the operator's config
and the versions of the Secrets it references. Builders read nothing else. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.agentdeployment import AgentDeploymentSpec
from agentgov.api.regionpolicy import RegionPolicySpec
from agentgov.api.resources import CustomResource
from agentgov.api.toolpolicy import ToolPolicySpec
from agentgov.controller.config import OperatorConfig

AnyResource = CustomResource[Any, Any]
Manifest = dict[str, Any]


class BuildError(ValueError):
    """A spec that can never work as written (maps to ``Stalled``); names the field at fault.

    ``field`` is the path in ``obj`` (the AgentDeployment unless said otherwise), e.g.
    ``spec.dataClasses`` or, with ``obj="ToolPolicy research/research-tools"``,
    ``spec.tools[1].upstream``.
    """

    def __init__(self, field: str, message: str, obj: str | None = None) -> None:
        self.field = field
        self.message = message
        self.obj = obj
        where = f"{obj}: {field}" if obj else field
        super().__init__(f"{where}: {message}")


class UnresolvedReferences(Exception):
    """Budgets or policies the AgentDeployment names that were not given (maps to waiting, not
    ``Stalled``: they may yet be created). Raised by ``compile_bundle``/``build_children`` so a
    bundle is never compiled without a budget or policy it was meant to enforce."""

    def __init__(self, references: list[str]) -> None:
        self.references = references
        super().__init__("not found: " + ", ".join(references))


@dataclass(frozen=True)
class Inputs:
    """Everything the children of one AgentDeployment are built from."""

    agent: AnyResource  # an AgentDeployment; metadata has name, namespace, uid, generation
    budgets: Mapping[str, AnyResource]  # AgentBudgets found, by name (may lack some refs)
    tool_policy: AnyResource | None
    region_policy: AnyResource | None
    config: OperatorConfig
    # Secret name -> resourceVersion (or a hash of its data) of the Secrets the agent
    # references, as read by the handler; a change rolls the pods.
    secret_versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _expect(self.agent, "AgentDeployment", AgentDeploymentSpec, "agent")
        for name, budget in self.budgets.items():
            _expect(budget, "AgentBudget", AgentBudgetSpec, f"budgets[{name!r}]")
        if self.tool_policy is not None:
            _expect(self.tool_policy, "ToolPolicy", ToolPolicySpec, "tool_policy")
        if self.region_policy is not None:
            _expect(self.region_policy, "RegionPolicy", RegionPolicySpec, "region_policy")

    @property
    def spec(self) -> AgentDeploymentSpec:
        spec = self.agent.spec
        assert isinstance(spec, AgentDeploymentSpec)
        return spec

    @property
    def name(self) -> str:
        return str(self.agent.metadata.name)

    @property
    def namespace(self) -> str:
        return self.agent.metadata.namespace or "default"


def _expect(obj: object, kind: str, spec_type: type, what: str) -> None:
    if not isinstance(obj, CustomResource) or obj.kind != kind or not isinstance(obj.spec, spec_type):
        raise TypeError(f"Inputs.{what} must be a parsed {kind}, got {type(obj).__name__}")
