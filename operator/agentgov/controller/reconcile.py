"""One reconcile of one AgentDeployment: load, decide (builders), apply, report status.

Level-triggered and idempotent: the same inputs give the same children, a child already as
desired is not written, and a status that did not change is not patched — so a second
reconcile writes nothing. Children are compared as a *subset* of the live object (only what
we set), so fields the API server defaults never look like drift. A spec the builders refuse,
a missing referenced policy or Secret: the AgentDeployment gets ``Stalled`` naming it, and the
children already running are left exactly as they were.

The agent's Vault, AWS and Azure secrets are synced into ``<agent>-secrets`` first
(``secretsync``), before the Secrets' versions are read into the pod template: a changed value
rolls the pods in the same reconcile. A secret the agent cannot run without stalls it (or keeps
it ``Reconciling`` while its provider is unavailable) with the children left as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentgov.api.bundle import bundle_hash
from agentgov.api.resources import CustomResource, ManifestError, parse_object
from agentgov.controller import builders, secretsync
from agentgov.controller.builders import secret as secret_builder
from agentgov.controller.config import OperatorConfig
from agentgov.controller.kube import KubeApi, object_path
from agentgov.controller.status import Outcome, updated_status

AnyResource = CustomResource[Any, Any]
Change = Literal["created", "updated", "unchanged", "deleted"]

# Optional children: deleted when the spec no longer asks for them (ingress off, ...).
OPTIONAL_KINDS: tuple[tuple[str, str], ...] = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
)


def is_subset(desired: Any, live: Any) -> bool:
    """Whether everything in ``desired`` is in ``live`` (dicts by key, lists item by item)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            is_subset(d, item) for d, item in zip(desired, live)
        )
    return bool(desired == live)


@dataclass(frozen=True)
class Lookups:
    """Snapshots of the shared policies (from kopf indexes): (namespace, name) -> object body."""

    budgets: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    tool_policies: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    region_policies: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class Result:
    """What one reconcile did, for status, Events and metrics."""

    outcome: Outcome
    changes: dict[str, Change] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    status_written: bool = False
    # The child Deployment as this reconcile last read it: its events that show nothing newer
    # need no reconcile (they are this reconcile's own writes).
    deployment: Mapping[str, Any] | None = None
    # What the secrets sync did (None: not run): Events, audit records, when it is due again.
    secrets: secretsync.SyncResult | None = None


def _parse(body: Mapping[str, Any] | None) -> AnyResource | None:
    if body is None:
        return None
    try:
        return parse_object(body)
    except ManifestError:
        return None  # an invalid policy counts as missing; its own status says why


def resolve_inputs(agent: AnyResource, lookups: Lookups, config: OperatorConfig, secret_versions: Mapping[str, str]) -> builders.Inputs:
    namespace = agent.metadata.namespace or "default"
    spec = agent.spec
    budgets = {}
    for name in spec.budget_refs:
        parsed = _parse(lookups.budgets.get((namespace, name)))
        if parsed is not None:
            budgets[name] = parsed
    tool_policy = _parse(lookups.tool_policies.get((namespace, spec.tool_policy_ref))) if spec.tool_policy_ref else None
    region_policy = (
        _parse(lookups.region_policies.get((namespace, spec.region_policy_ref))) if spec.region_policy_ref else None
    )
    return builders.Inputs(
        agent=agent,
        budgets=budgets,
        tool_policy=tool_policy,
        region_policy=region_policy,
        config=config,
        secret_versions=dict(secret_versions),
    )


async def apply_child(api: KubeApi, desired: Mapping[str, Any]) -> tuple[Change, dict[str, Any] | None]:
    """Create or patch one child so it holds ``desired``; write nothing when it already does.
    Returns what changed and the object as the server now holds it (None only if it vanished)."""
    meta = desired["metadata"]
    path = object_path(desired["apiVersion"], desired["kind"], meta.get("namespace"), meta["name"])
    live = await api.get(path)
    if live is None:
        created = await api.create(object_path(desired["apiVersion"], desired["kind"], meta.get("namespace")), desired)
        if created is not None:
            return "created", created
        live = await api.get(path)  # created meanwhile by another replica: compare with it
        if live is None:
            return "created", None
    if is_subset(desired, live):
        return "unchanged", live
    return "updated", await api.merge_patch(path, desired)


async def delete_unwanted(api: KubeApi, namespace: str, wanted: set[tuple[str, str, str]], names: Mapping[str, str]) -> dict[str, Change]:
    """Delete optional children the spec no longer asks for (names: kind -> child name)."""
    changes: dict[str, Change] = {}
    for api_version, kind in OPTIONAL_KINDS:
        name = names.get(kind)
        if name is None or (api_version, kind, name) in wanted:
            continue
        if await api.delete(object_path(api_version, kind, namespace, name)):
            changes[f"{kind}/{name}"] = "deleted"
    return changes


def deployment_progress(deployment: Mapping[str, Any] | None, desired_replicas: int | None) -> tuple[Outcome, dict[str, Any]]:
    """Ready when the Deployment has rolled out its current template; else still Reconciling."""
    if deployment is None:
        return Outcome("Reconciling", "Progressing", "Deployment is being created"), {}
    status = deployment.get("status") or {}
    spec_replicas = (deployment.get("spec") or {}).get("replicas", desired_replicas)
    generation = (deployment.get("metadata") or {}).get("generation")
    ready = status.get("readyReplicas", 0) or 0
    updated = status.get("updatedReplicas", 0) or 0
    extra = {"replicas": status.get("replicas", 0) or 0, "readyReplicas": ready}
    wanted = spec_replicas if spec_replicas is not None else 1
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return Outcome("Reconciling", "Progressing", "Deployment has not yet observed its latest spec"), extra
    if updated < wanted or ready < wanted:
        return (
            Outcome("Reconciling", "Progressing", f"{ready} of {wanted} pods ready with the current template"),
            extra,
        )
    return Outcome("Ready", "Available", f"{ready} pods ready; policy bundle in force"), extra


async def reconcile_agent(
    api: KubeApi,
    body: Mapping[str, Any],
    lookups: Lookups,
    config: OperatorConfig,
    now: Callable[[], str],
    secrets: secretsync.SecretsContext | None = None,
) -> Result:
    """Reconcile one AgentDeployment (``body`` as read from the API) and patch its status.
    With ``secrets``, its Vault, AWS and Azure secrets are synced first."""
    meta = body.get("metadata") or {}
    namespace, name, generation = meta.get("namespace") or "default", meta.get("name"), meta.get("generation")
    current_status: Mapping[str, Any] = body.get("status") or {}
    stamp = now()
    result = await _decide_and_apply(api, body, lookups, config, secrets, stamp)
    status = updated_status(current_status, result.outcome, generation, stamp, result.status)
    if result.secrets is not None:
        status = secretsync.with_secrets_status(status, result.secrets, generation, stamp)
    result.status = status
    if status != dict(current_status):
        removed = {key: None for key in current_status if key not in status}  # a merge patch drops them so
        await api.merge_patch(
            object_path("agentgov.io/v1alpha1", "AgentDeployment", namespace, name) + "/status",
            {"status": {**removed, **status}},
        )
        result.status_written = True
    return result


async def _decide_and_apply(
    api: KubeApi, body: Mapping[str, Any], lookups: Lookups, config: OperatorConfig,
    secrets: secretsync.SecretsContext | None = None, stamp: str | None = None,
) -> Result:
    try:
        agent = parse_object(body)
    except ManifestError as error:
        return Result(Outcome("Stalled", "InvalidSpec", "; ".join(error.problems)))
    inputs = resolve_inputs(agent, lookups, config, {})
    synced: secretsync.SyncResult | None = None
    if secrets is not None:
        try:
            synced = await secretsync.sync_secrets(api, secrets, inputs, body, secretsync.parse_now(stamp))
        except builders.BuildError as error:
            return Result(Outcome("Stalled", "InvalidSpec", str(error)))
    result = await _apply_children(api, agent, inputs, lookups, synced)
    result.secrets = synced
    return result


async def _apply_children(
    api: KubeApi, agent: AnyResource, inputs: builders.Inputs, lookups: Lookups,
    synced: secretsync.SyncResult | None,
) -> Result:
    namespace = agent.metadata.namespace or "default"
    missing = builders.missing_references(inputs)
    if missing:
        return Result(Outcome("Stalled", "MissingReference", "not found: " + ", ".join(missing)))
    try:
        bundle = builders.compile_bundle(inputs)
    except builders.BuildError as error:
        return Result(Outcome("Stalled", "InvalidSpec", str(error)))

    versions: dict[str, str] = {}
    if synced is not None and synced.secret_version is not None:
        versions[secret_builder.name(inputs)] = synced.secret_version  # as the sync just read or wrote it
    absent = []
    for secret in builders.referenced_secrets(inputs, bundle):
        if secret in versions:
            continue
        live = await api.get(object_path("v1", "Secret", namespace, secret))
        if live is None:
            absent.append(f"Secret {namespace}/{secret}")
        else:
            versions[secret] = str((live.get("metadata") or {}).get("resourceVersion", ""))
    materialized = f"Secret {namespace}/{secret_builder.name(inputs)}"
    if synced is not None and synced.managed and materialized in absent:
        absent.remove(materialized)  # the sync's own outcome says why it is not there (below)
    if absent:
        return Result(Outcome("Stalled", "MissingReference", "not found: " + ", ".join(absent)))
    if synced is not None and synced.decision.outcome is not None:
        return Result(synced.decision.outcome)  # a secret it cannot run without: children left as they are
    if synced is not None and synced.managed and secret_builder.name(inputs) not in versions:
        return Result(Outcome("Reconciling", "WaitingForSecrets", f"{materialized} is not written yet"))

    # The bundle does not depend on the Secrets' versions; the pod template does (they roll it).
    inputs = dataclasses.replace(inputs, secret_versions=versions)
    try:
        children = builders.build_children_from(inputs, bundle)
    except builders.BuildError as error:
        return Result(Outcome("Stalled", "InvalidSpec", str(error)))

    changes: dict[str, Change] = {}
    deployment: dict[str, Any] | None = None
    desired_replicas: int | None = None
    for child in children:
        change, live = await apply_child(api, child)
        changes[f"{child['kind']}/{child['metadata']['name']}"] = change
        if child["kind"] == "Deployment":
            deployment, desired_replicas = live, child["spec"].get("replicas")
    wanted = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in children}
    names = {kind: child_name for _, kind, child_name in builders.child_keys(inputs, all_optional=True)}
    changes.update(await delete_unwanted(api, namespace, wanted, names))

    outcome, extra = deployment_progress(deployment, desired_replicas)
    extra["policyBundleHash"] = bundle_hash(bundle)
    extra["selector"] = builders.selector_string(agent.metadata.name)
    percent = budget_percent_used(namespace, agent.spec.budget_refs, lookups.budgets)
    if percent is not None:
        extra["budgetPercentUsed"] = percent
    return Result(outcome, changes, extra, deployment=deployment)


def budget_percent_used(namespace: str, refs: Sequence[str],
                        budgets: Mapping[tuple[str, str], Mapping[str, Any]]) -> int | None:
    """The highest ``status.percentUsed`` among the agent's budgets (as the operator last wrote
    them from the spend store); None when none has a figure yet. Refreshed at each reconcile,
    so at the resync period at the latest."""
    figures = []
    for ref in refs:
        value = ((budgets.get((namespace, ref)) or {}).get("status") or {}).get("percentUsed")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            figures.append(value)
    return max(figures) if figures else None


def deployment_state(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """What about a child Deployment matters to its owner's reconcile: spec generation and status."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    return (meta.get("uid"), meta.get("generation"), tuple(sorted((k, str(v)) for k, v in status.items())))

