"""The four custom resources: their whole-object models and their Kubernetes identities.

``KINDS`` is the registry the CRD generator, the CLI and the operator all read; adding a
resource means adding it here. ``parse_object`` turns a manifest dict into the typed object
and reports errors with the field path as the API server would name it. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentgov.api.agentbudget import AgentBudgetSpec, AgentBudgetStatus
from agentgov.api.agentdeployment import AgentDeploymentSpec, AgentDeploymentStatus
from agentgov.api.base import API_VERSION, GROUP, VERSION, Model, ResourceStatus
from agentgov.api.regionpolicy import RegionPolicySpec, RegionPolicyStatus
from agentgov.api.toolpolicy import ToolPolicySpec, ToolPolicyStatus


class ObjectMeta(BaseModel):
    """The parts of metadata agentgov reads; the rest is kept but not interpreted."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


SpecT = TypeVar("SpecT", bound=Model)
StatusT = TypeVar("StatusT", bound=ResourceStatus)


class CustomResource(BaseModel, Generic[SpecT, StatusT]):
    """A whole custom object: apiVersion, kind, metadata, spec and status."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["agentgov.io/v1alpha1"] = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_schema(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class ResourceKind:
    """A custom resource's identity in the API and the models behind it."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[Model]
    status_model: type[ResourceStatus]
    printer_columns: tuple[PrinterColumn, ...]
    scale: bool = False

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def api_version(self) -> str:
        return API_VERSION


READY = PrinterColumn(
    "Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Whether the resource is in force."
)
REASON = PrinterColumn(
    "Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', "Why it is (not) ready.", priority=1
)
AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation.")

KINDS: tuple[ResourceKind, ...] = (
    ResourceKind(
        kind="AgentDeployment",
        plural="agentdeployments",
        singular="agentdeployment",
        short_names=("agd",),
        description="A governed AI agent: the agent's container plus the agentgov policy sidecar.",
        spec_model=AgentDeploymentSpec,
        status_model=AgentDeploymentStatus,
        printer_columns=(
            READY,
            PrinterColumn("Desired", "integer", ".spec.replicas", "Requested pods (autoscaling off)."),
            PrinterColumn("Available", "integer", ".status.readyReplicas", "Pods ready to serve."),
            PrinterColumn("Budget%", "integer", ".status.budgetPercentUsed", "Highest percent used of its budgets."),
            PrinterColumn("Image", "string", ".spec.image", "Agent image.", priority=1),
            REASON,
            AGE,
        ),
        scale=True,
    ),
    ResourceKind(
        kind="AgentBudget",
        plural="agentbudgets",
        singular="agentbudget",
        short_names=("agb",),
        description="USD spending limits for users, agents and teams, with alerts and enforcement.",
        spec_model=AgentBudgetSpec,
        status_model=AgentBudgetStatus,
        printer_columns=(
            READY,
            PrinterColumn("Monthly", "number", ".spec.limits.monthlyUsd", "Monthly limit in USD."),
            PrinterColumn("Spent", "number", ".status.spentThisMonthUsd", "Spend this month in USD."),
            PrinterColumn("Used%", "integer", ".status.percentUsed", "Percent of the limit used."),
            PrinterColumn("Enforcement", "string", ".spec.enforcement", "Hard or Soft."),
            REASON,
            AGE,
        ),
    ),
    ResourceKind(
        kind="ToolPolicy",
        plural="toolpolicies",
        singular="toolpolicy",
        short_names=("tpol",),
        description="Roles, permissions and the tools agents may call, with their guards.",
        spec_model=ToolPolicySpec,
        status_model=ToolPolicyStatus,
        printer_columns=(
            READY,
            PrinterColumn("Tools", "integer", ".status.tools", "Tools in force."),
            PrinterColumn("Roles", "integer", ".status.roles", "Roles in force."),
            PrinterColumn("Default", "string", ".spec.defaultAction", "Action for unlisted tools."),
            REASON,
            AGE,
        ),
    ),
    ResourceKind(
        kind="RegionPolicy",
        plural="regionpolicies",
        singular="regionpolicy",
        short_names=("rpol",),
        description="Data-residency regions and routing rules, and pod placement by region.",
        spec_model=RegionPolicySpec,
        status_model=RegionPolicyStatus,
        printer_columns=(
            READY,
            PrinterColumn("Regions", "integer", ".status.regions", "Regions defined."),
            PrinterColumn("OnPrem", "integer", ".status.onPremiseRegions", "On-premise regions."),
            REASON,
            AGE,
        ),
    ),
)

KINDS_BY_NAME: Mapping[str, ResourceKind] = {k.kind: k for k in KINDS}


class ManifestError(ValueError):
    """A manifest that is not a valid agentgov object; the message names the field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "[")):
            path += f".{part}" if path else part
    return path


def describe_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: ``spec.autoscaling.minReplicas: <what is wrong>``."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        path = _field_path(tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        # A rule violation may name a sub-field of the object it belongs to ("dailyUsd: ...").
        head, sep, tail = message.partition(": ")
        if sep and head and " " not in head and not head[0].isupper():
            path = f"{path}.{head}" if path else head
            message = tail
        full = ".".join(p for p in (prefix, path) if p)
        problems.append(f"{full}: {message}" if full else message)
    return problems


def parse_object(manifest: Mapping[str, Any], source: str = "<manifest>") -> CustomResource[Any, Any]:
    """Validate a manifest of one of the four kinds; raise ManifestError naming each bad field."""
    if not isinstance(manifest, Mapping):
        raise ManifestError(source, [f"expected a mapping, got {type(manifest).__name__}"])
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if api_version != API_VERSION:
        raise ManifestError(source, [f"apiVersion: expected {API_VERSION!r}, got {api_version!r}"])
    if not isinstance(kind, str) or kind not in KINDS_BY_NAME:
        known = ", ".join(KINDS_BY_NAME)
        raise ManifestError(source, [f"kind: expected one of {known}, got {kind!r}"])
    resource = KINDS_BY_NAME[kind]
    model = CustomResource[resource.spec_model, resource.status_model]  # type: ignore[name-defined]  # runtime generic
    try:
        return model.model_validate(manifest)
    except ValidationError as error:
        name = manifest.get("metadata", {}).get("name", "?") if isinstance(manifest.get("metadata"), Mapping) else "?"
        raise ManifestError(f"{source}: {kind}/{name}", describe_validation_error(error)) from None


__all__ = ["GROUP", "VERSION", "KINDS", "KINDS_BY_NAME", "parse_object", "ManifestError", "ResourceKind"]
