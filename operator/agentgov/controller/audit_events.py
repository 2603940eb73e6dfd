"""The operator's side of the audit trail: what changed in the cluster, by whom, as audit records.

Records have the sidecar's schema (``agentgov.audit.record``) and go to the operator's own log
(``AGENTGOV_AUDIT_LOG``, written by the same ``AuditWriter``: rotation, digests, retention),
and to stdout with ``AGENTGOV_AUDIT_STDOUT``. Left at its default (the image's
``/var/log/agentgov``, an emptyDir in the pod), the log is off where that directory does not
exist (a workstation). What is recorded:

- ``agent.created`` / ``agent.updated`` (from kopf's create and update causes, so a change
  made while the operator was down is still recorded once, at its next start) and
  ``agent.deleted`` (the watch's DELETED event);
- ``toolpolicy.*``, ``regionpolicy.*``, ``budget.*`` ``created``/``updated``/``deleted``
  (from watch events: an object listed at start is the baseline, not a change; a spec change
  is one whose ``generation`` moved);
- ``secret.synced`` / ``secret.rotated`` (``secret_access_event``, from the secrets sync);
- ``permission.denied``: the bundle compiler refusing an agent's data classes because its
  RegionPolicy lets no region hold them (``compile_denial``).

``user`` is the Kubernetes field manager of the change when ``managedFields`` tells it (e.g.
``kubectl-client-side-apply``, ``kubectl`` for server-side apply, ``helm``,
``argocd-controller``), else ``kubectl`` when the last-applied annotation is present, else
``unknown``; ``metadata.user_source`` says which. A field manager names a client, not a
person: the API server's audit log is where the authenticated user of each request is kept.
``metadata.changed`` lists the paths of the fields that changed (never their values).

Decisions are pure functions; ``OperatorAudit`` is the thin I/O around the writer. Never
records a value of a spec field, a Secret's data or a credential.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import Counter, Gauge

from agentgov.api.resources import ManifestError, parse_object
from agentgov.audit.record import AuditEvent, AuditPolicy, EventType, Result
from agentgov.audit.sinks.cursor import pending_from
from agentgov.audit.sinks.settings import SinksSettings
from agentgov.audit.sinks.shipper import AuditShipping
from agentgov.audit.writer import AuditWriter
from agentgov.controller import builders
from agentgov.controller.config import OPERATOR_AUDIT_LOG, OperatorConfig
from agentgov.controller.metrics import REGISTRY
from agentgov.controller.reconcile import Lookups, resolve_inputs

log = logging.getLogger(__name__)

LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"
# Field managers that are the operator itself (kopf's client, the reconcile's), never a user.
OPERATOR_MANAGERS: Final = frozenset({"kopf", "agentgov-operator"})
MAX_CHANGED_PATHS: Final = 40
MAX_PATH_CHARS: Final = 120
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Action = Literal["created", "updated", "deleted"]
UserSource = Literal["managedFields", "last-applied-annotation", "unknown"]
# kind -> the subject of its event types
SUBJECTS: Final[dict[str, str]] = {
    "AgentDeployment": "agent",
    "ToolPolicy": "toolpolicy",
    "RegionPolicy": "regionpolicy",
    "AgentBudget": "budget",
}
_VERBS: Final[dict[Action, str]] = {"created": "create", "updated": "update", "deleted": "delete"}


# --- who ---------------------------------------------------------------------------------------


def change_author(metadata: Mapping[str, Any], action: Action) -> tuple[str, UserSource]:
    """Who made the change: the field manager of the latest (for a creation: the earliest)
    ``managedFields`` entry that is not the operator's and not a status write."""
    entries = [
        (str(entry.get("time") or ""), index, str(entry["manager"]))
        for index, entry in enumerate(metadata.get("managedFields") or [])
        if isinstance(entry, Mapping) and isinstance(entry.get("manager"), str) and entry["manager"]
        and entry.get("subresource") != "status" and entry["manager"] not in OPERATOR_MANAGERS
    ]
    if entries:
        # RFC 3339 times in UTC sort as text; the list order breaks ties (later entries are newer).
        chosen = min(entries) if action == "created" else max(entries)
        return chosen[2][:128], "managedFields"
    if LAST_APPLIED in (metadata.get("annotations") or {}):
        return "kubectl", "last-applied-annotation"
    return "unknown", "unknown"


# --- what --------------------------------------------------------------------------------------


def _member(path: str, key: str) -> str:
    step = f".{key}" if _IDENTIFIER.fullmatch(key) else f"[{key!r}]"
    return (path + step) if path else step.lstrip(".")


def changed_paths(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths of the fields that differ between ``old`` and ``new`` (values never included):
    ``spec.replicas``, ``spec.models[0].endpoint``, ``metadata.labels['app.kubernetes.io/name']``."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                found.append(_member(path, str(key)))
            else:
                found += changed_paths(old[key], new[key], _member(path, str(key)))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new)):
            found += changed_paths(a, b, f"{path}[{index}]")
        return found
    return [] if old == new else [path or "."]


def _essence(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a change of a custom resource is about: spec, labels, annotations (not status,
    not the operator's bookkeeping annotations, not server-set metadata)."""
    meta = body.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if not k.startswith("agentgov.io/") and k != LAST_APPLIED}
    return {"spec": body.get("spec") or {}, "metadata": {"labels": dict(meta.get("labels") or {}),
                                                         "annotations": annotations}}


def summarize_paths(paths: Sequence[str]) -> dict[str, object]:
    """``changed`` (at most ``MAX_CHANGED_PATHS``, each cut to ``MAX_PATH_CHARS``) and, when
    cut, how many more: keeps the record within the 4 KiB metadata bound."""
    shown = [p if len(p) <= MAX_PATH_CHARS else p[: MAX_PATH_CHARS - 1] + "…" for p in paths[:MAX_CHANGED_PATHS]]
    summary: dict[str, object] = {"changed": shown}
    if len(paths) > MAX_CHANGED_PATHS:
        summary["changed_more"] = len(paths) - MAX_CHANGED_PATHS
    return summary


def _event_type(kind: str, action: Action) -> EventType:
    return f"{SUBJECTS[kind]}.{action}"  # type: ignore[return-value]  # one of OperatorEventType


def object_event(kind: str, action: Action, body: Mapping[str, Any], now: float, *,
                 old: Mapping[str, Any] | None = None) -> AuditEvent:
    """The record of ``body`` (an AgentDeployment, ToolPolicy, RegionPolicy or AgentBudget)
    having been ``action``; ``old`` (the object before) gives ``changed`` for an update. Pure."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    if action == "deleted":
        user, source = "unknown", "unknown"  # a deletion leaves no field manager behind
    else:
        user, source = change_author(meta, action)
    metadata: dict[str, object] = {
        "kind": kind, "namespace": namespace, "name": name, "uid": meta.get("uid"),
        "generation": meta.get("generation"), "user_source": source,
    }
    if action == "updated":
        metadata.update(summarize_paths(changed_paths(_essence(old), _essence(body)) if old is not None else []))
        if old is None:
            metadata["changed_unknown"] = True  # the previous state was not seen (e.g. changed while watching restarted)
    if action == "deleted":
        metadata["note"] = "who deleted it is in the API server's audit log"
    return AuditEvent(
        _event_type(kind, action), "success", _VERBS[action], f"{kind}/{namespace}/{name}", now,
        user=user, metadata=metadata, agent=f"{namespace}/{name}" if kind == "AgentDeployment" else None,
    )


# --- policies: from watch events ----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What the operator last saw of a policy: to tell a spec change from a status write."""

    uid: str | None
    generation: int | None
    essence: Mapping[str, Any]


def _created_at(meta: Mapping[str, Any]) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(meta.get("creationTimestamp"))).timestamp()
    except ValueError:
        return None


def watched_change(kind: str, event_type: str | None, body: Mapping[str, Any], seen: Seen | None,
                   now: float, started: float) -> tuple[AuditEvent | None, Seen | None]:
    """The record (if any) of one watch event of a policy, and what to remember of it. ``event_type``
    is None for objects listed when the watch (re)starts: the baseline, unless it was created
    since the operator ``started`` (seconds resolution: that second counts) or changed since it
    was last seen. Pure."""
    meta = body.get("metadata") or {}
    if event_type == "DELETED":
        return object_event(kind, "deleted", body, now), None
    current = Seen(meta.get("uid"), meta.get("generation"), _essence(body))
    if seen is not None and seen.uid != current.uid:
        seen = None  # deleted and created again while we were not watching
    if seen is None:
        created = _created_at(meta)
        if event_type == "ADDED" or (event_type is None and created is not None and created >= int(started)):
            return object_event(kind, "created", body, now), current
        return None, current  # listed at start, older than the operator: nothing seen to compare with
    if current.generation == seen.generation and current.essence == seen.essence:
        return None, current  # a status or bookkeeping write
    return object_event(kind, "updated", body, now, old=seen.essence), current


# --- secrets, compile refusals -------------------------------------------------------------------


def secret_access_event(agent: str, name: str, source: str, action: str, result: str, code: str | None,
                        version: str | None, now: float) -> AuditEvent:
    """``secret.synced`` (a read into the agent's Secret) or ``secret.rotated``: which secret of
    which agent, from where (``vault``, ``aws``, ``azure``, ``kubernetes``), the outcome and
    the version read or written; never the value."""
    kind: EventType = "secret.rotated" if action == "rotate" else "secret.synced"
    outcome: Result = "success" if result in ("success", "ok") else "failure"
    return AuditEvent(kind, outcome, "rotate" if action == "rotate" else "read", f"{source}/{name}", now,
                      user="agentgov-operator",
                      metadata={"name": name, "source": source, "code": code, "version": version},
                      agent=agent)


def compile_denial(body: Mapping[str, Any], lookups: Lookups, config: OperatorConfig) -> builders.BuildError | None:
    """The bundle compiler's refusal of the agent's data classes (no region of its RegionPolicy
    may hold them), or None. Pure: the builders run again on the same inputs."""
    try:
        agent = parse_object(body)
        builders.compile_bundle(resolve_inputs(agent, lookups, config, {}))
    except builders.BuildError as error:
        return error if error.field == "spec.dataClasses" else None
    except (ManifestError, builders.UnresolvedReferences):
        return None
    return None


def denial_event(body: Mapping[str, Any], error: builders.BuildError, now: float) -> AuditEvent:
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    user, source = change_author(meta, "updated")
    region_policy = (body.get("spec") or {}).get("regionPolicyRef")
    return AuditEvent(
        "permission.denied", "denied", "compile", f"AgentDeployment/{namespace}/{name}", now, user=user,
        metadata={"field": error.field, "rule": error.message, "region_policy": region_policy,
                  "generation": meta.get("generation"), "user_source": source},
        agent=f"{namespace}/{name}",
    )


# --- the writer ----------------------------------------------------------------------------------


class _Metrics:
    """The writer's metrics, in the operator's registry."""

    def __init__(self) -> None:
        self.audit_records = Counter("agentgov_operator_audit_records_written",
                                     "Audit records appended to the operator's log.", registry=REGISTRY)
        self.audit_dropped = Counter("agentgov_operator_audit_records_dropped",
                                     "Operator audit events dropped because the queue was full.", registry=REGISTRY)
        self.audit_write_errors = Counter("agentgov_operator_audit_write_errors",
                                          "Failed writes to the operator's audit log.", registry=REGISTRY)
        self.audit_sink_up = Gauge("agentgov_operator_audit_sink_up",
                                   "1 when the last write to the operator's audit log succeeded.", registry=REGISTRY)
        self.audit_queue_depth = Gauge("agentgov_operator_audit_queue_depth",
                                       "Operator audit events waiting to be written.", registry=REGISTRY)


_METRICS: _Metrics | None = None


def _metrics() -> _Metrics:
    global _METRICS  # one set per process: a registry refuses the same name twice
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


class OperatorAudit:
    """The operator's audit log: ``emit`` never blocks a handler; off when no path is set."""

    def __init__(self, writer: AuditWriter | None, shipping: AuditShipping | None = None,
                 sinks: SinksSettings | None = None) -> None:
        self.writer = writer
        self.shipping = shipping
        self.sinks = sinks
        self.seen: dict[tuple[str, str, str], Seen] = {}
        self.started = time.time()

    @classmethod
    def from_config(cls, config: OperatorConfig) -> OperatorAudit:
        if config.audit_log == OPERATOR_AUDIT_LOG and not OPERATOR_AUDIT_LOG.parent.is_dir():
            # The default is the image's directory (an emptyDir in the pod): not a path to
            # create on a workstation. A path given on purpose is created.
            return cls(None)
        policy = AuditPolicy(retention_days=config.audit_retention_days)
        shipping = AuditShipping(config.audit_log, REGISTRY) if config.audit_sinks is not None else None
        writer = AuditWriter(
            config.audit_log, policy=lambda: policy, metrics=_metrics(), options=config.audit_log_options,
            # Records a sink has not delivered yet are never pruned; new records wake the shippers.
            retention_hold=(lambda: pending_from(config.audit_log)) if shipping is not None else None,
            echo=(lambda _lines: shipping.notify()) if shipping is not None else None,
        )
        return cls(writer, shipping, config.audit_sinks)

    async def start(self) -> None:
        if self.writer is None:
            log.info("audit: the operator's audit log is off: %s does not exist (set AGENTGOV_AUDIT_LOG)",
                     OPERATOR_AUDIT_LOG.parent)
            return
        if self.shipping is not None:
            await self.shipping.apply(self.sinks)  # before the writer, so its first records ship too
        await self.writer.start()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.shipping is not None:
            await self.shipping.close()  # after the writer: its last records are drained

    def emit(self, event: AuditEvent | None) -> None:
        if event is not None and self.writer is not None:
            self.writer.emit(event)

    def policy_event(self, kind: str, event_type: str | None, body: Mapping[str, Any], now: float) -> None:
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        event, seen = watched_change(kind, event_type, body, self.seen.get(key), now, self.started)
        if seen is None:
            self.seen.pop(key, None)
        else:
            self.seen[key] = seen
        self.emit(event)
