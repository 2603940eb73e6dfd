"""RegionPolicy (``rpol``): where data may be processed and where agent pods may run.

Regions carry an endpoint, a latency SLO, a capacity and the data classes they may hold.
Routing rules say which regions a request should (Preferred) or must (Required) go to,
matched by the request's data classes or the caller's region. The shipped rules, applied
unless ``inheritDefaultRules`` is false: sensitive and PII data must stay on-premises, and
users in ``eu-*`` prefer EU regions. Pods are placed on nodes of the allowed regions through
``topology.kubernetes.io/region``. No I/O here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.api.base import (
    DataClass,
    DNSLabel,
    HttpUrl,
    Model,
    ResourceStatus,
    Rule,
    NAMED_LIST,
    unique_names_rule,
)

# A region name or a glob over names, e.g. "eu-*".
RegionPattern = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9*]([-a-z0-9*]*[a-z0-9*])?$")]


class Region(Model):
    """A place where models run and data may be processed."""

    name: DNSLabel = Field(description="Region name, e.g. eu-west-1 or onprem-frankfurt.")
    endpoint: HttpUrl = Field(description="Base URL of the OpenAI-compatible endpoint serving this region.")
    on_premise: bool = Field(False, description="True for the organisation's own data centres.")
    latency_slo_ms: int = Field(500, ge=1, le=600_000, description="Latency objective for calls to this region, in ms.")
    capacity: int = Field(100, ge=1, le=1_000_000, description="Maximum concurrent agent executions routed here.")
    data_classes: list[DataClass] = Field(
        default_factory=lambda: list[DataClass](["public", "internal"]),
        min_length=1,
        max_length=5,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Data classes this region may process: public, internal, confidential, sensitive, pii.",
    )
    kubernetes_region: str | None = Field(
        None,
        max_length=63,
        description="Value of the nodes' topology.kubernetes.io/region label; defaults to the region name.",
    )
    # No server-side default inside a list item (client-side `kubectl apply` would re-send the
    # list every time); the shipped breaker settings apply when absent.
    circuit_breaker: CircuitBreaker | None = Field(
        None, description="When to stop sending calls to this region and when to try it again; the shipped settings when absent."
    )

    @property
    def node_region(self) -> str:
        return self.kubernetes_region or self.name


class RuleMatch(Model):
    """When a routing rule applies. Both lists given: both must match."""

    data_classes: list[DataClass] = Field(
        default_factory=list,
        max_length=5,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Applies when the request carries any of these data classes.",
    )
    user_regions: list[RegionPattern] = Field(
        default_factory=list,
        max_length=32,
        description="Applies when the caller's region (token claim `region`) matches any glob, e.g. eu-*.",
    )

    cel_rules = (
        Rule(
            cel="(has(self.dataClasses) && size(self.dataClasses) > 0) || (has(self.userRegions) && size(self.userRegions) > 0)",
            message="a rule must match on dataClasses or userRegions",
            check=lambda m: bool(m.data_classes or m.user_regions),
        ),
    )


class RuleRoute(Model):
    """Where a matching request goes."""

    on_premise: bool | None = Field(None, description="Only on-premise (true) or only cloud (false) regions.")
    regions: list[RegionPattern] = Field(
        default_factory=list, max_length=32, description="Region names or globs, e.g. eu-*."
    )

    cel_rules = (
        Rule(
            cel="has(self.onPremise) || (has(self.regions) && size(self.regions) > 0)",
            message="a route must name regions or set onPremise",
            check=lambda m: m.on_premise is not None or bool(m.regions),
        ),
    )


class RoutingRule(Model):
    """A data-residency rule."""

    name: DNSLabel = Field(description="Rule name, shown in audit records and errors.")
    match: RuleMatch = Field(description="When the rule applies.")
    route: RuleRoute = Field(description="Where matching requests go.")
    enforcement: Literal["Required", "Preferred"] = Field(
        "Preferred",
        description="Required: refuse the request if no allowed region is available. Preferred: fall back to others.",
    )


DEFAULT_RULES: tuple[RoutingRule, ...] = (
    RoutingRule(
        name="sensitive-on-premise",
        match=RuleMatch(data_classes=["sensitive", "pii"]),
        route=RuleRoute(on_premise=True),
        enforcement="Required",
    ),
    RoutingRule(
        name="eu-users-eu-regions",
        match=RuleMatch(user_regions=["eu-*"]),
        route=RuleRoute(regions=["eu-*"]),
        enforcement="Preferred",
    ),
)


class Placement(Model):
    """How agent pods are pinned to regions."""

    enabled: bool = Field(True, description="Add node affinity so pods run only in regions allowed for their data.")
    topology_key: str = Field(
        "topology.kubernetes.io/region", max_length=316, description="Node label holding the region."
    )


class RegionPolicySpec(Model):
    """Desired state of a RegionPolicy."""

    regions: list[Region] = Field(min_length=1, max_length=64, json_schema_extra=NAMED_LIST, description="Regions available to agents.")
    inherit_default_rules: bool = Field(
        True, description="Apply the shipped rules (sensitive/PII on-premise; eu-* users to EU regions)."
    )
    rules: list[RoutingRule] = Field(
        default_factory=list, max_length=64, json_schema_extra=NAMED_LIST, description="Routing rules, added to or replacing by name the shipped ones."
    )
    default_region: DNSLabel | None = Field(
        None, description="Region used when no rule applies; the lowest-latency allowed region when absent."
    )
    placement: Placement = Field(default_factory=Placement, description="Pod placement by region.")

    cel_rules = (
        unique_names_rule("regions", "regions", "region"),
        unique_names_rule("rules", "rules", "rule"),
        Rule(
            cel="!has(self.defaultRegion) || self.regions.exists(r, r.name == self.defaultRegion)",
            message="defaultRegion must name one of the regions",
            check=lambda m: m.default_region is None or any(r.name == m.default_region for r in m.regions),
            field_path=".defaultRegion",
        ),
    )

    def effective_rules(self) -> tuple[RoutingRule, ...]:
        """Shipped rules (unless disabled) overlaid by this policy's, by name, shipped first."""
        by_name = {rule.name: rule for rule in DEFAULT_RULES} if self.inherit_default_rules else {}
        by_name.update({rule.name: rule for rule in self.rules})
        return tuple(by_name.values())


class RegionPolicyStatus(ResourceStatus):
    """What the operator compiled from the policy."""

    regions: int | None = Field(None, ge=0, description="Number of regions.")
    on_premise_regions: int | None = Field(None, ge=0, description="Number of on-premise regions.")
