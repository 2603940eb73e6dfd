"""The production checklist, judged from manifests: what ``agentgov check -f FILE_OR_DIR`` reports.

The items of the enterprise deployment checklist that manifests alone can settle — TLS on the
ingress, budgets set, audit on, secrets from a manager, resource requests and limits,
autoscaling, a PodDisruptionBudget, a NetworkPolicy, probes — decided for

- each **AgentDeployment**, from its spec and from the children the operator's own builders
  render for it (``controller.render``: the Ingress, PodDisruptionBudget, NetworkPolicy,
  HorizontalPodAutoscaler and Deployment that will really be applied), with fixes phrased as
  spec fields;
- each **plain Kubernetes object** in the same files — Deployments and StatefulSets, Ingresses,
  Secrets — such as the output of ``agentgov render -o yaml`` or ``helm template``, judged
  against the PodDisruptionBudgets, NetworkPolicies and HorizontalPodAutoscalers beside them.

Every finding says what was found and, when it fails, how to fix it. Pure: parsed objects in,
findings and text out; no I/O, no clock, no environment. It never returns a secret's value:
findings name variables and Secrets, not what they hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from agentgov.api.agentbudget import AgentBudgetSpec
from agentgov.api.agentdeployment import AgentDeploymentSpec
from agentgov.api.manifests import Loaded
from agentgov.api.resources import CustomResource
from agentgov.controller import render
from agentgov.controller.builders.deployment import OPENAI_API_KEY_PLACEHOLDER
from agentgov.controller.builders.naming import APP_NAME
from agentgov.controller.config import OperatorConfig

ItemId = Literal["tls", "budgets", "audit", "secrets", "resources", "autoscaling", "pdb", "networkpolicy", "probes"]
AnyResource = CustomResource[Any, Any]
Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class Item:
    id: ItemId
    title: str


ITEMS: Final[tuple[Item, ...]] = (
    Item("tls", "TLS on ingress"),
    Item("budgets", "Budgets set"),
    Item("audit", "Audit log on"),
    Item("secrets", "Secrets from a manager"),
    Item("resources", "Resource requests and limits"),
    Item("autoscaling", "Autoscaling"),
    Item("pdb", "PodDisruptionBudget"),
    Item("networkpolicy", "NetworkPolicy"),
    Item("probes", "Liveness and readiness probes"),
)
TITLES: Final[dict[str, str]] = {item.id: item.title for item in ITEMS}
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet")
MIN_REPLICAS: Final = 2
RESOURCE_FIELDS: Final = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")
# Environment variable names that hold credentials, and values that are credentials whatever
# the name. Names that say the value is a path, a URL or a duration are not credentials.
_CREDENTIAL_NAME: Final = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.IGNORECASE)
_NOT_A_CREDENTIAL_NAME: Final = re.compile(r"_(FILE|PATH|DIR|URL|ENDPOINT|TTL|SECONDS|TIMEOUT|HEADER|NAME)$", re.IGNORECASE)
_CREDENTIAL_VALUE: Final = re.compile(
    r"^(sk-[A-Za-z0-9_-]{16,}|(AKIA|ASIA)[A-Z0-9]{16}|hvs\.[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
    r"|^[a-z][a-z0-9+.-]*://[^/:@\s]*:[^/@\s]+@")
_HARMLESS_VALUES: Final = frozenset({OPENAI_API_KEY_PLACEHOLDER, ""})
# How ``render.rendered_children`` words an agent whose references are not among the objects.
UNRENDERED: Final = "cannot render its children, "


@dataclass(frozen=True)
class Finding:
    """One checklist item for one object: passed or not, what was found, and the fix."""

    item: ItemId
    passed: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Review:
    """The findings for one object, in checklist order."""

    subject: str
    source: str
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.passed)


@dataclass(frozen=True)
class Report:
    reviews: tuple[Review, ...]
    # Files or objects that could not be read or validated (named with the file and field).
    errors: tuple[str, ...] = ()
    # Things the reader should know that are not checklist findings.
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> int:
        return sum(f.passed for r in self.reviews for f in r.findings)

    @property
    def failed(self) -> int:
        return sum(not f.passed for r in self.reviews for f in r.findings)

    @property
    def exit_code(self) -> int:
        """0 when every item passed; 1 on a failed item, an unreadable file, or nothing to check."""
        return 1 if self.failed or self.errors or not self.reviews else 0


# --- label selectors and the objects beside a workload ----------------------------------------


def _namespace(obj: Manifest) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default")


def _name(obj: Manifest) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def _label(obj: Manifest) -> str:
    return f"{obj.get('kind')} {_namespace(obj)}/{_name(obj)}"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``labels``; an empty
    selector selects everything, a missing one nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


@dataclass(frozen=True)
class _Beside:
    """The PodDisruptionBudgets, NetworkPolicies and HorizontalPodAutoscalers among the objects."""

    pdbs: tuple[Manifest, ...]
    policies: tuple[Manifest, ...]
    autoscalers: tuple[Manifest, ...]

    @classmethod
    def of(cls, objects: Iterable[Manifest]) -> _Beside:
        objects = list(objects)
        return cls(
            tuple(o for o in objects if o.get("kind") == "PodDisruptionBudget"),
            tuple(o for o in objects if o.get("kind") == "NetworkPolicy"),
            tuple(o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"),
        )

    def pdb_for(self, namespace: str, labels: Mapping[str, str]) -> Manifest | None:
        return next((p for p in self.pdbs if _namespace(p) == namespace
                     and selects((p.get("spec") or {}).get("selector"), labels)), None)

    def policy_for(self, namespace: str, labels: Mapping[str, str]) -> Manifest | None:
        """A NetworkPolicy that selects the pods and restricts their ingress."""
        for policy in self.policies:
            spec = policy.get("spec") or {}
            types = spec.get("policyTypes") or ["Ingress"]
            if _namespace(policy) == namespace and "Ingress" in types and selects(spec.get("podSelector"), labels):
                return policy
        return None

    def autoscaler_for(self, namespace: str, kind: str, name: str) -> Manifest | None:
        for hpa in self.autoscalers:
            target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if _namespace(hpa) == namespace and target.get("kind") == kind and target.get("name") == name:
                return hpa
        return None


# --- generic judgements, for rendered children and plain objects alike -------------------------


def _pod_spec(workload: Manifest) -> Mapping[str, Any]:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _pod_labels(workload: Manifest) -> dict[str, str]:
    return dict((((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def _containers(workload: Manifest) -> list[Mapping[str, Any]]:
    return list(_pod_spec(workload).get("containers") or [])


def missing_resources(container: Mapping[str, Any]) -> list[str]:
    """The requests and limits (cpu, memory) a container does not set."""
    resources = container.get("resources") or {}
    return [f for f in RESOURCE_FIELDS if not (resources.get(f.split(".")[0]) or {}).get(f.split(".")[1])]


def unprobed(containers: Iterable[Mapping[str, Any]]) -> list[str]:
    """Containers that serve a port but lack a liveness or a readiness probe (``name: probe``)."""
    found = []
    for container in containers:
        if not container.get("ports"):
            continue  # no traffic is routed to it; the kubelet still restarts it when it exits
        for probe in ("livenessProbe", "readinessProbe"):
            if not container.get(probe):
                found.append(f"{container.get('name')}: no {probe}")
    return found


def literal_credentials(env: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of environment variables whose literal value is (or looks like) a credential."""
    found = []
    for variable in env:
        name, value = str(variable.get("name") or ""), variable.get("value")
        if not isinstance(value, str) or value in _HARMLESS_VALUES or value.startswith("/"):
            continue
        if _CREDENTIAL_VALUE.search(value) or (_CREDENTIAL_NAME.search(name) and not _NOT_A_CREDENTIAL_NAME.search(name)):
            found.append(name)
    return found


def uncovered_hosts(ingress: Manifest) -> tuple[list[str], list[str]]:
    """(hosts served without TLS, TLS Secret names) of an Ingress."""
    spec = ingress.get("spec") or {}
    tls = spec.get("tls") or []
    covered = {host for entry in tls for host in entry.get("hosts") or []}
    secrets = sorted({str(entry["secretName"]) for entry in tls if entry.get("secretName")})
    hosts = [str(rule.get("host") or "*") for rule in spec.get("rules") or []] or ["*"]
    if not tls:
        return hosts, secrets
    return [h for h in hosts if h not in covered and not (h == "*" and tls)], secrets


def _replicas(workload: Manifest, autoscaler: Manifest | None) -> int:
    if autoscaler is not None:
        return int((autoscaler.get("spec") or {}).get("minReplicas") or 1)
    replicas = (workload.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


# --- AgentDeployments ---------------------------------------------------------------------------


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _agent_review(source: str, obj: AnyResource, children: Sequence[Manifest], budgets: Mapping[str, AgentBudgetSpec],
                  unrendered: str | None) -> Review:
    spec: AgentDeploymentSpec = obj.spec
    namespace = obj.metadata.namespace or "default"
    beside = _Beside.of(children)
    deployment = next((c for c in children if c.get("kind") == "Deployment"), None)
    ingress = next((c for c in children if c.get("kind") == "Ingress"), None)
    from_spec = f" (from the spec: its children could not be rendered, {unrendered})" if unrendered else ""
    findings: list[Finding] = []

    # TLS on ingress
    if not spec.ingress.enabled:
        findings.append(Finding("tls", True, "no Ingress: reached only inside the cluster, through its Service"))
    else:
        host = spec.ingress.host or "*"
        bare = uncovered_hosts(ingress)[0] if ingress is not None else ([] if spec.ingress.tls else [host])
        if spec.ingress.tls and not bare:
            issuer = f", issued by {spec.ingress.cluster_issuer}" if spec.ingress.cluster_issuer else ""
            findings.append(Finding("tls", True, f"{host}: TLS from Secret {spec.ingress.tls.secret_name}{issuer}{from_spec}"))
        else:
            findings.append(Finding("tls", False, f"{', '.join(bare)} served over plain HTTP{from_spec}",
                                    "set spec.ingress.tls.secretName (and spec.ingress.clusterIssuer for cert-manager "
                                    "to issue the certificate)"))

    # Budgets set
    if spec.budget_refs:
        described = []
        for name in spec.budget_refs:
            limit = budgets.get(name)
            described.append(
                f"AgentBudget {name}: {_usd(limit.limits.monthly_usd)}/month, {_usd(limit.limits.effective_daily_usd)}/day, "
                f"{limit.enforcement}" if limit else f"AgentBudget {name} (not among the checked files)")
        findings.append(Finding("budgets", True, "; ".join(described)))
    elif not spec.models:
        findings.append(Finding("budgets", True, "no model routes: nothing it calls is paid per token"))
    else:
        findings.append(Finding("budgets", False, f"{len(spec.models)} model route(s) and no budget: spend is unlimited",
                                "add spec.budgetRefs naming an AgentBudget with daily and monthly limits"))

    # Audit log on
    if spec.audit.enabled:
        bodies = "; records request and response bodies (may hold personal data)" if spec.audit.include_bodies else ""
        findings.append(Finding("audit", True, f"hash-chained audit log, kept {spec.audit.retention_days} days{bodies}"))
    else:
        findings.append(Finding("audit", False, "audit log off: no record of who called the agent and what it spent",
                                "set spec.audit.enabled: true"))

    # Secrets from a manager
    literal = literal_credentials({"name": e.name, "value": e.value} for e in spec.env)
    managed = [s.name for s in spec.secrets if s.vault or s.aws or s.azure]
    from_kubernetes = [s.name for s in spec.secrets if s.secret_key_ref] + [
        e.name for e in spec.env if e.value_from and e.value_from.secret_key_ref]
    if literal:
        findings.append(Finding("secrets", False, f"credentials written in the manifest: {', '.join(literal)}",
                                "move them to spec.secrets (vault, aws or azure) or a Secret, and rotate the "
                                "exposed values"))
    else:
        parts = [f"from a secret manager: {', '.join(managed)}" if managed else "",
                 f"from Kubernetes Secrets: {', '.join(from_kubernetes)}" if from_kubernetes else ""]
        findings.append(Finding("secrets", True, "; ".join(p for p in parts if p) or "no credentials in the manifest"))

    # Resource requests and limits (the agent's; the sidecar's come from the operator's settings)
    requests = spec.resources.requests if spec.resources else None
    limits = spec.resources.limits if spec.resources else None
    given = {"requests.cpu": requests and requests.cpu, "requests.memory": requests and requests.memory,
             "limits.cpu": limits and limits.cpu, "limits.memory": limits and limits.memory}
    unset = [name for name, value in given.items() if not value]
    if unset:
        findings.append(Finding("resources", False, f"agent container: {', '.join(unset)} not set (the operator's "
                                "defaults apply, sized for no particular agent)",
                                "set spec.resources.requests and spec.resources.limits (cpu and memory)"))
    else:
        findings.append(Finding("resources", True, f"agent container: requests {given['requests.cpu']} CPU, "
                                f"{given['requests.memory']}; limits {given['limits.cpu']} CPU, {given['limits.memory']}"))

    # Autoscaling
    scaling = spec.autoscaling
    if scaling.enabled:
        findings.append(Finding("autoscaling", True, f"HorizontalPodAutoscaler, {scaling.min_replicas}-{scaling.max_replicas} "
                                f"replicas at {scaling.target_cpu_utilization_percent}% CPU"))
    else:
        findings.append(Finding("autoscaling", False, f"fixed at {spec.replicas} replica(s)",
                                "set spec.autoscaling.enabled: true (minReplicas 2 or more)"))

    # PodDisruptionBudget
    replicas = scaling.min_replicas if scaling.enabled else spec.replicas
    labels = _pod_labels(deployment) if deployment is not None else {}
    pdb = beside.pdb_for(namespace, labels) if deployment is not None else None
    if deployment is not None and pdb is None:
        findings.append(Finding("pdb", False, "no PodDisruptionBudget selects its pods", "report this: the operator always "
                                "creates one"))
    elif replicas < MIN_REPLICAS:
        findings.append(Finding("pdb", False, f"{replicas} replica(s): a node drain or failure takes the agent down",
                                "run 2 or more replicas (spec.autoscaling.minReplicas, or spec.replicas)"))
    else:
        which = f"PodDisruptionBudget {_name(pdb)} (maxUnavailable {(pdb.get('spec') or {}).get('maxUnavailable')})" if pdb \
            else f"the operator's PodDisruptionBudget{from_spec}"
        findings.append(Finding("pdb", True, f"{which}, {replicas} or more replicas"))

    # NetworkPolicy
    policy = beside.policy_for(namespace, labels) if deployment is not None else None
    if not spec.network_policy.enabled:
        findings.append(Finding("networkpolicy", False, "network isolation off: any pod may call the agent, and it may "
                                "call anything", "set spec.networkPolicy.enabled: true"))
    elif deployment is not None and policy is None:
        findings.append(Finding("networkpolicy", False, "no NetworkPolicy selects its pods", "report this: the operator "
                                "creates one when spec.networkPolicy.enabled"))
    else:
        what = f"NetworkPolicy {_name(policy)}: ingress to the sidecar only, egress to what its policies name" if policy \
            else f"the operator's NetworkPolicy{from_spec}"
        findings.append(Finding("networkpolicy", True, what))

    # Liveness and readiness probes
    if deployment is None:
        findings.append(Finding("probes", True, f"the operator gives the sidecar liveness (/health) and readiness "
                                f"(/ready) probes{from_spec}"))
    else:
        missing = unprobed(_containers(deployment))
        if missing:
            findings.append(Finding("probes", False, "; ".join(missing), "report this: the operator probes the sidecar"))
        else:
            serving = [str(c.get("name")) for c in _containers(deployment) if c.get("ports")]
            findings.append(Finding("probes", True, f"{', '.join(serving)}: liveness and readiness probes (the agent "
                                    "is reached only through the sidecar)"))
    return Review(f"AgentDeployment {namespace}/{obj.metadata.name}", source, tuple(findings))


# --- plain Kubernetes objects ------------------------------------------------------------------


def _workload_review(source: str, workload: Manifest, beside: _Beside) -> Review:
    namespace, name, kind = _namespace(workload), _name(workload), str(workload.get("kind"))
    containers = _containers(workload) + list(_pod_spec(workload).get("initContainers") or [])
    labels = _pod_labels(workload)
    findings: list[Finding] = []

    literal = sorted({n for c in containers for n in literal_credentials(c.get("env") or [])})
    findings.append(
        Finding("secrets", False, f"credentials written in the manifest: {', '.join(literal)}",
                "take them from a Secret (env valueFrom.secretKeyRef) filled by a secret manager, and rotate them")
        if literal else Finding("secrets", True, "no credentials written in the manifest"))

    lacking = [f"{c.get('name')}: {', '.join(m)}" for c in containers if (m := missing_resources(c))]
    findings.append(
        Finding("resources", False, f"not set: {'; '.join(lacking)}",
                "set resources.requests and resources.limits (cpu and memory) on every container")
        if lacking else Finding("resources", True, f"requests and limits on all {len(containers)} container(s)"))

    autoscaler = beside.autoscaler_for(namespace, kind, name)
    if (labels.get("app.kubernetes.io/name") == APP_NAME) or autoscaler is not None:
        findings.append(
            Finding("autoscaling", True, f"HorizontalPodAutoscaler {_name(autoscaler)}") if autoscaler is not None
            else Finding("autoscaling", False, "an agent workload without a HorizontalPodAutoscaler",
                         "set spec.autoscaling.enabled: true on its AgentDeployment"))

    replicas = _replicas(workload, autoscaler)
    pdb = beside.pdb_for(namespace, labels)
    if pdb is None:
        findings.append(Finding("pdb", False, "no PodDisruptionBudget among the files selects its pods",
                                f"add a PodDisruptionBudget (maxUnavailable: 1) in {namespace} selecting "
                                + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))))
    elif replicas < MIN_REPLICAS:
        findings.append(Finding("pdb", False, f"PodDisruptionBudget {_name(pdb)}, but {replicas} replica(s): a node "
                                "drain or failure takes it down", "run 2 or more replicas (spec.replicas, or the "
                                "autoscaler's minReplicas)"))
    else:
        findings.append(Finding("pdb", True, f"PodDisruptionBudget {_name(pdb)}, {replicas} or more replicas"))

    policy = beside.policy_for(namespace, labels)
    findings.append(
        Finding("networkpolicy", True, f"NetworkPolicy {_name(policy)}") if policy is not None
        else Finding("networkpolicy", False, "no NetworkPolicy among the files restricts ingress to its pods",
                     f"add a NetworkPolicy in {namespace} whose podSelector matches its pods (policyTypes: Ingress, "
                     "Egress)"))

    missing = unprobed(_containers(workload))
    serving = [str(c.get("name")) for c in _containers(workload) if c.get("ports")]
    findings.append(
        Finding("probes", False, "; ".join(missing), "add livenessProbe and readinessProbe to every container that "
                "serves a port")
        if missing else Finding("probes", True, f"{', '.join(serving)}: liveness and readiness probes" if serving
                                else "no container serves a port"))
    return Review(_label(workload), source, tuple(sorted(findings, key=lambda f: [i.id for i in ITEMS].index(f.item))))


def _ingress_review(source: str, ingress: Manifest) -> Review:
    bare, secrets = uncovered_hosts(ingress)
    finding = (Finding("tls", False, f"{', '.join(bare)} served over plain HTTP",
                       "add spec.tls with a secretName covering every host (cert-manager can issue it)")
               if bare else Finding("tls", True, f"TLS from Secret {', '.join(secrets)}"))
    return Review(_label(ingress), source, (finding,))


def _secret_review(source: str, secret: Manifest) -> Review | None:
    keys = sorted({*(secret.get("data") or {}), *(secret.get("stringData") or {})})
    if not keys:
        return None
    return Review(_label(secret), source, (Finding(
        "secrets", False, f"values of {', '.join(keys)} written in the files",
        "keep secret values out of Git: a secret manager (spec.secrets with vault, aws or azure; External Secrets), "
        "or encrypt them (Sealed Secrets, SOPS); rotate the exposed values"),))


def _expanded(source: str, document: Manifest) -> list[tuple[str, Manifest]]:
    """A ``v1 List`` (kubectl get -o yaml) gives its items."""
    if document.get("kind") == "List" and isinstance(document.get("items"), list):
        return [(f"{source}[{i}]", item) for i, item in enumerate(document["items"]) if isinstance(item, Mapping)]
    return [(source, document)]


# --- the whole check -----------------------------------------------------------------------------


def check(resources: Sequence[tuple[str, AnyResource]], documents: Sequence[tuple[str, Manifest]],
          config: OperatorConfig, errors: Sequence[str] = ()) -> Report:
    """Review every AgentDeployment among ``resources`` and every Deployment, StatefulSet, Ingress
    and Secret among ``documents`` (each with the file it came from)."""
    objects = [obj for _, obj in resources]
    children, problems = render.rendered_children(objects, config)
    plain = [pair for source, document in documents for pair in _expanded(source, document)]
    beside = _Beside.of([*children, *(d for _, d in plain)])
    budgets = {(o.metadata.namespace or "default", o.metadata.name): o.spec for o in objects if o.kind == "AgentBudget"}
    rendered = {(c.get("kind"), _namespace(c), _name(c)) for c in children}
    reviews: list[Review] = []
    refused: list[str] = []
    for source, obj in resources:
        if obj.kind != "AgentDeployment":
            continue
        namespace = obj.metadata.namespace or "default"
        label = f"AgentDeployment {namespace}/{obj.metadata.name}: "
        unrendered = None
        for problem in (p for p in problems if p.startswith(label)):
            if problem.startswith(label + UNRENDERED):
                # Its budgets or policies are not among the files: judged from its spec alone.
                unrendered = problem.removeprefix(label + UNRENDERED)
            else:  # the operator would refuse it (Stalled, InvalidSpec)
                refused.append(f"{source}: {problem} (the operator would mark it Stalled)")
        own = render.children_of(obj, children)
        mine = {name: spec for (ns, name), spec in budgets.items() if ns == namespace}
        reviews.append(_agent_review(source, obj, own, mine, unrendered))
    for source, document in plain:
        kind = document.get("kind")
        if (kind, _namespace(document), _name(document)) in rendered:
            continue  # the AgentDeployment it belongs to is reviewed, with this very object
        if kind in WORKLOAD_KINDS:
            reviews.append(_workload_review(source, document, beside))
        elif kind == "Ingress":
            reviews.append(_ingress_review(source, document))
        elif kind == "Secret" and (review := _secret_review(source, document)) is not None:
            reviews.append(review)
    return Report(tuple(reviews), (*errors, *refused))


def check_loaded(loaded: Sequence[Loaded], config: OperatorConfig) -> Report:
    """``check`` over what ``agentgov.api.manifests.load_manifests`` read (its errors included)."""
    return check([(item.source, item.obj) for item in loaded if item.obj is not None],
                 [(item.source, item.document) for item in loaded if item.document is not None],
                 config, [item.error for item in loaded if item.error])


# --- output ----------------------------------------------------------------------------------------


def format_text(report: Report) -> str:
    """The report for a terminal: one block per object, a line per item, the fix under a failure."""
    lines: list[str] = []
    width = max(len(item.title) for item in ITEMS)
    for review in report.reviews:
        lines.append(f"{review.subject}  ({review.source})")
        for finding in review.findings:
            lines.append(f"  {'PASS' if finding.passed else 'FAIL'}  {TITLES[finding.item]:<{width}}  {finding.detail}")
            if not finding.passed and finding.fix:
                lines.append(f"        {'':<{width}}  fix: {finding.fix}")
        lines.append("")
    for note in report.notes:
        lines.append(f"note: {note}")
    if not report.reviews:
        lines.append("nothing to check: no AgentDeployment, Deployment, StatefulSet, Ingress or Secret found")
    else:
        failing = sum(bool(r.failed) for r in report.reviews)
        lines.append(f"{len(report.reviews)} object(s) checked, {failing} with failures: "
                     f"{report.passed} item(s) passed, {report.failed} failed")
    return "\n".join(lines)


def as_json(report: Report) -> str:
    """The report as JSON, for CI: objects, findings, errors, counts."""
    payload: dict[str, Any] = {
        "passed": report.passed,
        "failed": report.failed,
        "objects": [
            {"subject": r.subject, "source": r.source, "findings": [
                {"item": f.item, "title": TITLES[f.item], "passed": f.passed, "detail": f.detail,
                 **({"fix": f.fix} if not f.passed and f.fix else {})} for f in r.findings]}
            for r in report.reviews],
        "errors": list(report.errors),
        "notes": list(report.notes),
    }
    return json.dumps(payload, indent=2)


__all__ = ["ITEMS", "Finding", "Review", "Report", "check", "check_loaded", "format_text", "as_json",
           "selects", "missing_resources", "unprobed", "literal_credentials", "uncovered_hosts"]
