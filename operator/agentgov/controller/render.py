"""Offline rendering: what a set of agentgov objects means, without a cluster.

``agentgov render`` feeds parsed manifests through here: a summary of each object's effective
settings (defaults applied, shipped roles/prices/rules merged), the references between
objects, and — through the operator's own builders, so the output is exactly what the
operator would apply — every child object of every AgentDeployment. Pure: objects in, text
or dicts out.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.agentdeployment import AgentDeploymentSpec
from agentgov.api.crd import without_empty_lists
from agentgov.api.regionpolicy import RegionPolicySpec
from agentgov.api.resources import CustomResource
from agentgov.api.toolpolicy import ToolPolicySpec
from agentgov.controller import builders
from agentgov.controller.config import OperatorConfig
from agentgov.controller.reconcile import Lookups, resolve_inputs

AnyResource = CustomResource[Any, Any]


def _key(obj: AnyResource) -> tuple[str, str, str]:
    return (obj.kind, obj.metadata.namespace or "default", obj.metadata.name)


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def describe(obj: AnyResource) -> str:
    """One paragraph stating the object's effective settings."""
    spec = obj.spec
    lines: list[str]
    if isinstance(spec, AgentDeploymentSpec):
        scaling = (
            f"autoscaling {spec.autoscaling.min_replicas}-{spec.autoscaling.max_replicas} replicas "
            f"(CPU {spec.autoscaling.target_cpu_utilization_percent}%, "
            f"memory {spec.autoscaling.target_memory_utilization_percent}%)"
            if spec.autoscaling.enabled
            else f"{spec.replicas} replica(s)"
        )
        auth = spec.auth
        key_source = f"JWKS {auth.jwks_url}" if auth.jwks_url else f"key from Secret {auth.key_secret_ref.name}"  # type: ignore[union-attr]
        lines = [
            f"image {spec.image}, agent port {spec.port}, {scaling}",
            f"auth: {'/'.join(auth.algorithms)} tokens from {auth.issuer} for {', '.join(auth.audiences)} ({key_source})",
            f"models: {', '.join(m.name for m in spec.models) or 'none'}",
            f"budgets: {', '.join(spec.budget_refs) or 'none'}; tool policy: {spec.tool_policy_ref or 'none (no tools)'}; "
            f"region policy: {spec.region_policy_ref or 'none'}",
            f"data classes: {', '.join(spec.data_classes)}; cache: "
            + (f"on, TTL {spec.cache.ttl_seconds}s" if spec.cache.enabled else "off")
            + f"; audit: {'on' if spec.audit.enabled else 'OFF'}",
        ]
        if spec.ingress.enabled:
            tls = f", TLS from Secret {spec.ingress.tls.secret_name}" if spec.ingress.tls else ", no TLS"
            lines.append(f"ingress: {spec.ingress.host}{tls}, {spec.ingress.requests_per_minute} requests/minute")
    elif isinstance(spec, AgentBudgetSpec):
        limits = spec.limits
        daily = _usd(limits.effective_daily_usd) + ("" if limits.daily_usd is not None else " (monthly / 30)")
        subjects = [
            f"{label} {', '.join(names)}"
            for label, names in (("users", spec.subjects.users), ("agents", spec.subjects.agents), ("teams", spec.subjects.teams))
            if names
        ]
        lines = [
            f"applies to {'; '.join(subjects)} ({spec.scope.lower()})",
            f"monthly {_usd(limits.monthly_usd)}, daily {daily}; alerts at "
            + ", ".join(f"{t}%" for t in spec.alert_thresholds)
            + f"; {spec.enforcement} enforcement; store unreachable: fail {spec.failure_policy.lower()}",
            f"priced models: {len(spec.effective_pricing())} ({len(spec.pricing)} set here)",
        ]
    elif isinstance(spec, ToolPolicySpec):
        roles = spec.effective_roles()
        lines = [
            "roles: " + "; ".join(f"{name} = {', '.join(perms)}" for name, perms in roles.items()),
            "tools: "
            + (
                "; ".join(
                    f"{t.name} -> {t.upstream} (needs {t.permission}"
                    + (f" + scopes {', '.join(t.scopes)}" if t.scopes else "")
                    + ")"
                    for t in spec.tools
                )
                or "none"
            ),
            f"unlisted tools: {spec.default_action.lower()}",
        ]
    elif isinstance(spec, RegionPolicySpec):
        lines = [
            "regions: "
            + "; ".join(
                f"{r.name}{' (on-premise)' if r.on_premise else ''} holds {', '.join(r.data_classes)}, "
                f"SLO {r.latency_slo_ms} ms, capacity {r.capacity}"
                for r in spec.regions
            ),
            "rules: "
            + "; ".join(
                f"{rule.name}: {rule.enforcement.lower()} "
                + (f"on-premise" if rule.route.on_premise else ", ".join(rule.route.regions))
                + " for "
                + ", ".join([*rule.match.data_classes, *(f"users in {g}" for g in rule.match.user_regions)])
                for rule in spec.effective_rules()
            ),
        ]
    else:  # pragma: no cover - the registry has exactly four kinds
        lines = []
    namespace = obj.metadata.namespace or "default"
    header = f"{obj.kind} {namespace}/{obj.metadata.name}"
    return "\n".join([header, *(f"  {line}" for line in lines)])


def dangling_references(objects: Sequence[AnyResource]) -> list[str]:
    """References from AgentDeployments to budgets/policies that are not among the objects."""
    present = {_key(o) for o in objects}
    problems = []
    for obj in objects:
        if not isinstance(obj.spec, AgentDeploymentSpec):
            continue
        namespace = obj.metadata.namespace or "default"
        wanted = [("AgentBudget", name, "budgetRefs") for name in obj.spec.budget_refs]
        if obj.spec.tool_policy_ref:
            wanted.append(("ToolPolicy", obj.spec.tool_policy_ref, "toolPolicyRef"))
        if obj.spec.region_policy_ref:
            wanted.append(("RegionPolicy", obj.spec.region_policy_ref, "regionPolicyRef"))
        for kind, name, field in wanted:
            if (kind, namespace, name) not in present:
                problems.append(
                    f"AgentDeployment {namespace}/{obj.metadata.name}: spec.{field} names {kind} "
                    f"{namespace}/{name}, which is not among the rendered objects"
                )
    return problems


def summary_line(objects: Sequence[AnyResource]) -> str:
    counts = Counter(o.kind for o in objects)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return f"{len(objects)} object(s) valid" + (f" ({kinds})" if kinds else "")


def normalized(obj: AnyResource) -> dict[str, Any]:
    """The object as the API server would store it: defaults applied, unset fields absent."""
    return without_empty_lists(obj.model_dump(mode="json", by_alias=True, exclude_none=True))  # type: ignore[no-any-return]


# --- the children the operator would create ---------------------------------------------------

OFFLINE_UID_NAMESPACE = uuid.UUID("7b0c2f4e-6a56-4f0e-9a4c-61676e74676f")


def offline_uid(namespace: str, name: str) -> str:
    """A stand-in uid for ownerReferences when rendering without a cluster (the API server
    assigns the real one); deterministic, so renders diff cleanly in GitOps reviews."""
    return str(uuid.uuid5(OFFLINE_UID_NAMESPACE, f"{namespace}/{name}"))


def rendered_children(
    objects: Sequence[AnyResource], config: OperatorConfig
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every child the operator would create for the AgentDeployments among ``objects``, with
    the budgets and policies among them, and one problem line per agent that cannot be built."""
    by_kind: dict[str, dict[tuple[str, str], Mapping[str, Any]]] = {"AgentBudget": {}, "ToolPolicy": {}, "RegionPolicy": {}}
    for obj in objects:
        if obj.kind in by_kind:
            by_kind[obj.kind][(obj.metadata.namespace or "default", obj.metadata.name)] = normalized(obj)
    lookups = Lookups(by_kind["AgentBudget"], by_kind["ToolPolicy"], by_kind["RegionPolicy"])
    children: list[dict[str, Any]] = []
    problems: list[str] = []
    for obj in objects:
        if obj.kind != "AgentDeployment":
            continue
        namespace = obj.metadata.namespace or "default"
        if not obj.metadata.uid:
            meta = obj.metadata.model_copy(update={"uid": offline_uid(namespace, obj.metadata.name), "namespace": namespace})
            obj = obj.model_copy(update={"metadata": meta})
        inputs = resolve_inputs(obj, lookups, config, {})
        label = f"AgentDeployment {namespace}/{obj.metadata.name}"
        missing = builders.missing_references(inputs)
        if missing:
            problems.append(f"{label}: cannot render its children, not found: {', '.join(missing)}")
            continue
        try:
            children.extend(builders.build_children(inputs))
        except builders.BuildError as error:
            problems.append(f"{label}: {error}")
    return children, problems


def children_of(obj: AnyResource, children: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendered children whose controller is ``obj``."""
    if obj.kind != "AgentDeployment":
        return []
    namespace = obj.metadata.namespace or "default"
    return [
        child
        for child in children
        if child["metadata"].get("namespace") == namespace
        and any(o.get("controller") and o.get("name") == obj.metadata.name for o in child["metadata"].get("ownerReferences", []))
    ]
