"""Materialise, refresh and rotate an agent's Vault, AWS and Azure secrets into ``<agent>-secrets``.

Each ``spec.secrets`` entry with a ``vault``, ``aws`` or ``azure`` source is read through its
provider (``agentgov.secrets``) and written, one data key per variable name, into the Secret
``<agent>-secrets`` the agent's pods read (``builders/secret.py``). ``secretKeyRef`` entries are
not copied: the pods read them from their own Secret. The reconcile runs the sync first, before
it reads the Secrets' versions into the pod template, so a changed value rolls the pods.

Decided here, purely (table-tested in tests/unit/test_secretsync.py):

- ``locator_of``: where an entry's value lives;
- ``due``: whether an entry is read now — never read, source changed, its key missing from
  the Secret, its ``refreshInterval`` passed (default 1h), a refresh or rotation requested; a
  failing entry waits out a backoff (5 s doubling to 5 min), and one whose provider is not
  configured waits for an operator that has it;
- ``parse_request``: the ``agentgov.io/rotate-secrets`` and ``agentgov.io/refresh-secrets``
  annotations (``<request-id>`` or ``<request-id>:NAME[,NAME]``), each request id handled once;
- ``decide``: what the Secret must hold (a good read's value, else the last good value, which a
  failure never removes), the ``status.secrets`` entries, the ``SecretsSynced`` condition, the
  outcome when the agent cannot run as specified (``Stalled``: SecretNotFound,
  SecretPermissionDenied, ProviderNotConfigured, ProviderMisconfigured; ``Reconciling``:
  WaitingForSecrets), the request outcomes and Events, the audit records (``SecretAccess``)
  and when the next read falls due.

Done thinly by ``sync_secrets``: read the live Secret, call the providers (at most
``MAX_CONCURRENT_READS`` at a time, each call bounded by the timeout), write the Secret only
when its data changed.

This module must never put a value anywhere but the Secret's data: not in status, messages,
Events, audit records, logs or exceptions (provider errors carry a locator and a reason only).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agentgov.api.agentdeployment import AgentDeploymentSpec, SecretSource
from agentgov.controller.builders import secret as secret_builder
from agentgov.controller.builders.inputs import Inputs
from agentgov.controller.config import provider_switch
from agentgov.controller.kube import KubeApi, object_path
from agentgov.controller.status import Outcome, remove_condition, set_condition
from agentgov.secrets.base import (
    ErrorCode,
    ProviderKind,
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
    SecretValue,
    generate_value,
    shown,
)
from agentgov.secrets.registry import ProviderRegistry, SecretProviderNotConfigured

ROTATE_ANNOTATION: Final = "agentgov.io/rotate-secrets"
REFRESH_ANNOTATION: Final = "agentgov.io/refresh-secrets"
CONDITION: Final = "SecretsSynced"
DEFAULT_REFRESH_SECONDS: Final = 3600.0
# A refreshInterval below this is read as this: a provider is not polled in a hot loop.
MIN_REFRESH_SECONDS: Final = 10.0
BACKOFF_BASE_SECONDS: Final = 5.0
BACKOFF_CAP_SECONDS: Final = 300.0
MAX_CONCURRENT_READS: Final = 4
# Bounds on what an annotation may hold, and on a message (what of a value it echoes: ``shown``).
MAX_REQUEST_CHARS: Final = 2048
MAX_MESSAGE_CHARS: Final = 1000
REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"

Reason = Literal["ProviderUnavailable", "PermissionDenied", "NotFound", "ProviderNotConfigured", "ProviderMisconfigured"]
RequestKind = Literal["rotate", "refresh"]
REQUEST_KINDS: Final[tuple[RequestKind, ...]] = ("rotate", "refresh")
Entry = dict[str, Any]

# The outcome of an entry whose source failed, when the agent cannot run without it. Unavailable
# and configuration failures do not stop an agent that still has a last good value.
_STALLED_REASONS: Final[Mapping[Reason, str]] = {
    "NotFound": "SecretNotFound",
    "PermissionDenied": "SecretPermissionDenied",
    "ProviderNotConfigured": "ProviderNotConfigured",
    "ProviderMisconfigured": "ProviderMisconfigured",
}
_VAR_ANNOTATIONS: Final[Mapping[RequestKind, str]] = {"rotate": ROTATE_ANNOTATION, "refresh": REFRESH_ANNOTATION}
_STATUS_FIELDS: Final[Mapping[RequestKind, str]] = {"rotate": "secretsRotation", "refresh": "secretsRefresh"}
_DONE_FIELDS: Final[Mapping[RequestKind, str]] = {"rotate": "rotated", "refresh": "refreshed"}


# --- what is managed, and where it lives ----------------------------------------------------

@dataclass(frozen=True)
class Managed:
    """One ``spec.secrets`` entry this sync materialises (a Vault, AWS or Azure source)."""

    index: int
    name: str
    locator: SecretLocator
    refresh_seconds: float

    @property
    def source(self) -> str:
        return str(self.locator)


def locator_of(source: SecretSource, namespace: str) -> SecretLocator:
    """Where the value of a ``spec.secrets`` entry lives."""
    if source.vault is not None:
        return SecretLocator("vault", source.vault.path, source.vault.key)
    if source.aws is not None:
        return SecretLocator("aws", source.aws.name, source.aws.key)
    if source.azure is not None:
        return SecretLocator("azure", f"{source.azure.vault}/{source.azure.name}", None)
    if source.secret_key_ref is not None:
        return SecretLocator("kubernetes", f"{namespace}/{source.secret_key_ref.name}", source.secret_key_ref.key)
    raise ValueError(f"spec.secrets entry {source.name!r} names no source")  # the CRD's rule forbids it


_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A CRD Duration (``90s``, ``15m``, ``1h30m``, ``500ms``) in seconds; ValueError otherwise."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def refresh_seconds(source: SecretSource) -> float:
    """How often an entry is re-read: its ``refreshInterval``, at least ``MIN_REFRESH_SECONDS``."""
    try:
        seconds = duration_seconds(source.refresh_interval)
    except ValueError:
        seconds = DEFAULT_REFRESH_SECONDS
    return max(seconds, MIN_REFRESH_SECONDS)


def managed_sources(spec: AgentDeploymentSpec, namespace: str) -> list[Managed]:
    """The entries read through a provider (Vault, AWS, Azure), in spec order."""
    return [
        Managed(index, source.name, locator_of(source, namespace), refresh_seconds(source))
        for index, source in enumerate(spec.secrets)
        if source.secret_key_ref is None
    ]


# --- time -------------------------------------------------------------------------------------

def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: object) -> datetime.datetime | None:
    """A status timestamp, or None when absent or not one (then it counts as never)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def parse_now(stamp: str | None) -> datetime.datetime:
    """The reconcile's clock reading (``utc_now``'s format) as a datetime."""
    return parse_time(stamp) or datetime.datetime.now(datetime.timezone.utc)


def backoff_seconds(failures: int) -> float:
    """Wait before the next try after ``failures`` failed reads in a row: 5 s, 10 s, ... 5 min."""
    exponent = max(min(failures, 32) - 1, 0)
    return float(min(BACKOFF_BASE_SECONDS * (2.0 ** exponent), BACKOFF_CAP_SECONDS))


# --- requests (annotations) -------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """A rotation or refresh asked for by annotation. ``names`` None: every managed entry.
    ``problem`` set: the value is invalid and nothing is done (``request`` is then a digest when
    the id itself did not parse, so the same bad value is reported once)."""

    kind: RequestKind
    request: str
    names: tuple[str, ...] | None = None
    problem: str | None = None

    @property
    def annotation(self) -> str:
        return _VAR_ANNOTATIONS[self.kind]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def request_key(value: str) -> str:
    """What status records as a request's id: the id the value starts with, or a digest of the
    whole value when it holds no valid id (so a bad value is reported once, not echoed)."""
    if len(value) > MAX_REQUEST_CHARS:
        return _digest(value)
    request_id = value.strip().partition(":")[0]
    return request_id if REQUEST_ID.fullmatch(request_id) else _digest(value)


def parse_request(kind: RequestKind, value: str | None, spec: AgentDeploymentSpec) -> Request | None:
    """The request an annotation holds (None when it is absent). Names must be Vault, AWS or
    Azure entries of ``spec.secrets``; repeats are dropped."""
    if value is None:
        return None
    annotation = _VAR_ANNOTATIONS[kind]
    expected = "expected <request-id> or <request-id>:NAME[,NAME...]"
    key = request_key(value)
    if len(value) > MAX_REQUEST_CHARS:
        return Request(kind, key, problem=f"{annotation}: longer than {MAX_REQUEST_CHARS} characters; {expected}")
    request_id, sep, rest = value.strip().partition(":")
    if key != request_id:
        return Request(kind, key, problem=(
            f"{annotation}: {shown(request_id)} is not a request id (1-63 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit); {expected}"))
    if not sep:
        return Request(kind, request_id)
    names = [part.strip() for part in rest.split(",")]
    by_name = {source.name: source for source in spec.secrets}
    for name in names:
        if not name or not _ENV_NAME.fullmatch(name) or len(name) > 253:
            return Request(kind, request_id, problem=f"{annotation}: {shown(name)} is not a secret name; {expected}")
        source = by_name.get(name)
        if source is None:
            return Request(kind, request_id, problem=f"{annotation}: spec.secrets has no entry {shown(name)}")
        if source.secret_key_ref is not None:
            return Request(kind, request_id, problem=(
                f"{annotation}: {name} comes from the Kubernetes Secret {source.secret_key_ref.name}; only Vault, "
                f"AWS and Azure entries are {'rotated' if kind == 'rotate' else 'refreshed'} by the operator"))
    return Request(kind, request_id, tuple(dict.fromkeys(names)))


def pending_request(kind: RequestKind, annotations: Mapping[str, str], status: Mapping[str, Any],
                    spec: AgentDeploymentSpec) -> Request | None:
    """The request of that kind the agent's annotations hold and its status has not recorded as
    handled (a re-sent id does nothing)."""
    request = parse_request(kind, annotations.get(_VAR_ANNOTATIONS[kind]), spec)
    if request is None:
        return None
    handled = status.get(_STATUS_FIELDS[kind])
    if isinstance(handled, Mapping) and handled.get("request") == request.request:
        return None
    return request


def has_pending_request(body: Mapping[str, Any]) -> bool:
    """Whether an AgentDeployment (as read from the API) holds a rotation or refresh request its
    status has not recorded: cheap, for the event handler that decides to reconcile."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = body.get("status") or {}
    for kind in REQUEST_KINDS:
        value = annotations.get(_VAR_ANNOTATIONS[kind])
        if not isinstance(value, str):
            continue
        handled = status.get(_STATUS_FIELDS[kind])
        if not isinstance(handled, Mapping) or handled.get("request") != request_key(value):
            return True
    return False


# --- due-ness ---------------------------------------------------------------------------------

def due(item: Managed, entry: Mapping[str, Any] | None, now: datetime.datetime, has_value: bool,
        configured: frozenset[ProviderKind], requested: bool = False) -> str | None:
    """Why ``item`` is read now, or None when it is not due. ``entry`` is its ``status.secrets``
    entry, ``has_value`` whether ``<agent>-secrets`` holds its key, ``configured`` the providers
    this operator has settings for, ``requested`` a refresh or rotation asked for it."""
    if requested:
        return "requested"
    if entry is None:
        return "never read"
    if entry.get("source") != item.source:
        return "source changed"
    reason = entry.get("reason")
    if reason is not None:
        if reason == "ProviderNotConfigured":
            return "provider now configured" if item.locator.provider in configured else None
        failed_at = parse_time(entry.get("failedAt"))
        failures = entry.get("failures")
        wait = backoff_seconds(failures if isinstance(failures, int) and failures > 0 else 1)
        if failed_at is None or now >= failed_at + datetime.timedelta(seconds=wait):
            return "retry after a failure"
        return None
    if not has_value:
        return "missing from the Secret"
    synced_at = parse_time(entry.get("syncedAt"))
    if synced_at is None or now >= synced_at + datetime.timedelta(seconds=item.refresh_seconds):
        return "refresh interval passed"
    return None


def next_due(managed: Sequence[Managed], entries: Mapping[str, Mapping[str, Any]],
             configured: frozenset[ProviderKind]) -> datetime.datetime | None:
    """When the earliest entry falls due again (None: none will until something changes)."""
    moments: list[datetime.datetime] = []
    for item in managed:
        entry = entries.get(item.name)
        if entry is None:
            continue
        reason = entry.get("reason")
        if reason == "ProviderNotConfigured":
            continue  # read again when an operator with the settings starts
        if reason is not None:
            failed_at = parse_time(entry.get("failedAt"))
            failures = entry.get("failures")
            if failed_at is not None:
                moments.append(failed_at + datetime.timedelta(
                    seconds=backoff_seconds(failures if isinstance(failures, int) and failures > 0 else 1)))
            continue
        synced_at = parse_time(entry.get("syncedAt"))
        if synced_at is not None:
            moments.append(synced_at + datetime.timedelta(seconds=item.refresh_seconds))
    return min(moments) if moments else None


# --- what the reads gave, and what follows from them ------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """What one read (or rotation, then read) of an entry gave: a value or an error, never both."""

    name: str
    action: Literal["read", "rotate"]
    value: SecretValue | None = None
    error: SecretError | None = None


@dataclass(frozen=True)
class SecretAccess:
    """One audit record: an agent's secret read or rotated through a provider. Never a value."""

    agent: str  # namespace/name
    name: str
    source: str
    action: Literal["read", "rotate"]
    result: Literal["ok", "error"]
    code: ErrorCode | None
    version: str | None

    def as_record(self) -> dict[str, Any]:
        return {"event": "secret_access", "agent": self.agent, "secret": self.name, "source": self.source,
                "action": self.action, "result": self.result, "code": self.code, "version": self.version}


@dataclass(frozen=True)
class SecretEvent:
    """A Kubernetes Event to post about the AgentDeployment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """Everything one sync concluded."""

    data: dict[str, str] = field(repr=False, default_factory=dict)  # what <agent>-secrets must hold
    versions: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    condition: tuple[Literal["True", "False"], str, str] | None = None
    outcome: Outcome | None = None  # set when the agent cannot run as specified
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)  # status field -> request outcome
    events: list[SecretEvent] = field(default_factory=list)
    access: list[SecretAccess] = field(default_factory=list)
    next_due: datetime.datetime | None = None


def reason_of(error: SecretError) -> Reason:
    if isinstance(error, SecretNotFound):
        return "NotFound"
    if isinstance(error, SecretPermissionDenied):
        return "PermissionDenied"
    if isinstance(error, SecretProviderNotConfigured):
        return "ProviderNotConfigured"
    if isinstance(error, SecretProviderMisconfigured):
        return "ProviderMisconfigured"
    return "ProviderUnavailable"


def failure_message(item: Managed, error: SecretError) -> str:
    """What failed, naming the provider and the source (and, when the provider is not
    configured, the setting that turns it on). The error's own text never holds a value."""
    if isinstance(error, SecretProviderNotConfigured):
        switch = provider_switch(item.locator.provider)
        setting = f"set {switch} (and its companions) in the operator's environment" if switch else "configure it"
        text = f"{item.source}: the {item.locator.provider} provider is not configured for the operator; {setting}"
    else:
        text = str(error) if error.locator is not None else f"{item.source}: {error.message}"
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _entries_by_name(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    entries = status.get("secrets")
    if not isinstance(entries, list):
        return {}
    return {e["name"]: e for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str)}


def decide(
    agent: str,
    managed: Sequence[Managed],
    status: Mapping[str, Any],
    live_data: Mapping[str, str],
    attempts: Mapping[str, Attempt],
    requests: Sequence[Request],
    now: datetime.datetime,
    configured: frozenset[ProviderKind],
) -> Decision:
    """What follows from the reads of one sync. ``status``: the agent's current status;
    ``live_data``: what ``<agent>-secrets`` holds; ``attempts``: the reads made, by entry name;
    ``requests``: the pending requests (handled now: recorded whatever came of them)."""
    decision = Decision()
    previous = _entries_by_name(status)
    stamp = format_time(now)
    for item in managed:
        attempt = attempts.get(item.name)
        entry = _entry(item, previous.get(item.name), attempt, stamp)
        decision.entries.append(entry)
        if attempt is not None and attempt.value is not None:
            decision.data[item.name] = attempt.value.value
            decision.versions[item.name] = attempt.value.version
        elif item.name in live_data:  # the last good value: a failure never removes it
            decision.data[item.name] = live_data[item.name]
            version = entry.get("version")
            if isinstance(version, str):
                decision.versions[item.name] = version
        if attempt is not None:
            decision.access.append(SecretAccess(
                agent, item.name, item.source, attempt.action, "ok" if attempt.value is not None else "error",
                attempt.error.code if attempt.error is not None else None,
                attempt.value.version if attempt.value is not None else None))
    by_name = {entry["name"]: entry for entry in decision.entries}
    decision.condition = _condition(managed, by_name, decision.data)
    decision.outcome = _outcome(managed, by_name, decision.data)
    for request in requests:
        _record_request(decision, request, managed, attempts, by_name, stamp)
    decision.next_due = next_due(managed, by_name, configured)
    return decision


def _entry(item: Managed, prev: Mapping[str, Any] | None, attempt: Attempt | None, stamp: str) -> Entry:
    """An entry's ``status.secrets`` item after this sync. What the previous item says about
    the last good read is kept across failures, but only while the source is the same."""
    same_source = prev is not None and prev.get("source") == item.source
    kept = dict(prev) if prev is not None and same_source else {}
    if attempt is None:  # not due: as it was
        return kept or {"name": item.name, "source": item.source}
    entry: Entry = {"name": item.name, "source": item.source}
    if attempt.value is not None:
        entry.update(version=attempt.value.version, syncedAt=stamp)
        rotated_at = stamp if attempt.action == "rotate" else kept.get("lastRotatedAt")
        if rotated_at:
            entry["lastRotatedAt"] = rotated_at
        return entry
    assert attempt.error is not None
    entry.update({k: v for k, v in kept.items() if k in ("version", "syncedAt", "lastRotatedAt")})
    failures = kept.get("failures") if kept.get("reason") else 0
    entry.update(reason=reason_of(attempt.error), message=failure_message(item, attempt.error), failedAt=stamp,
                 failures=(failures if isinstance(failures, int) else 0) + 1)
    return entry


def _failing(managed: Sequence[Managed], entries: Mapping[str, Mapping[str, Any]]) -> list[tuple[Managed, Mapping[str, Any]]]:
    return [(item, entries[item.name]) for item in managed if entries.get(item.name, {}).get("reason")]


def _condition(managed: Sequence[Managed], entries: Mapping[str, Mapping[str, Any]],
               data: Mapping[str, str]) -> tuple[Literal["True", "False"], str, str]:
    failing = _failing(managed, entries)
    if not failing:
        providers = ", ".join(sorted({item.locator.provider for item in managed}))
        return "True", "Synced", f"{len(managed)} secret(s) current in the agent's Secret (from {providers})"
    reason = str(failing[0][1]["reason"])
    message = "; ".join(f"{item.name}: {entry.get('message', reason)}" for item, entry in failing)
    kept = [item.name for item, _ in failing if item.name in data]
    if kept:
        message += f" (last good value kept for {', '.join(kept)})"
    return "False", reason, _cut(message)


def _outcome(managed: Sequence[Managed], entries: Mapping[str, Mapping[str, Any]],
             data: Mapping[str, str]) -> Outcome | None:
    stalled: list[tuple[str, str]] = []
    waiting: list[str] = []
    for item, entry in _failing(managed, entries):
        reason = entry["reason"]
        where = f"spec.secrets[{item.index}] {item.name}: {entry.get('message', reason)}"
        if reason in ("NotFound", "PermissionDenied"):
            stalled.append((_STALLED_REASONS[reason], where))
        elif item.name in data:
            continue  # a last good value: the agent runs on it while the provider is fixed
        elif reason == "ProviderUnavailable":
            waiting.append(where)
        else:
            stalled.append((_STALLED_REASONS[reason], where))
    if stalled:
        order = list(_STALLED_REASONS.values())
        stalled.sort(key=lambda pair: order.index(pair[0]))
        return Outcome("Stalled", stalled[0][0], _cut("; ".join(where for _, where in stalled)))
    if waiting:
        return Outcome("Reconciling", "WaitingForSecrets", _cut("no value yet, retrying: " + "; ".join(waiting)))
    return None


def _record_request(decision: Decision, request: Request, managed: Sequence[Managed],
                    attempts: Mapping[str, Attempt], entries: Mapping[str, Mapping[str, Any]], stamp: str) -> None:
    status_field = _STATUS_FIELDS[request.kind]
    record: dict[str, Any] = {"request": request.request, "at": stamp}
    verb = "rotation" if request.kind == "rotate" else "refresh"
    if request.problem is not None:
        record.update(result="Invalid", message=_cut(request.problem + "; nothing was done"))
        decision.requests[status_field] = record
        decision.events.append(SecretEvent("Warning", "InvalidSecretsRequest", record["message"]))
        return
    names = request.names if request.names is not None else tuple(item.name for item in managed)
    done = [n for n in names if (a := attempts.get(n)) is not None and a.value is not None]
    failed = [n for n in names if n not in done]
    record[_DONE_FIELDS[request.kind]] = done
    record["failed"] = failed
    if failed:
        reasons = "; ".join(f"{n}: {entries.get(n, {}).get('message') or 'not attempted'}" for n in failed)
        record.update(result="Failed", message=_cut(f"{verb} {request.request} failed for {', '.join(failed)}: {reasons}"))
        decision.events.append(SecretEvent("Warning", "SecretsRotationFailed" if request.kind == "rotate"
                                           else "SecretsRefreshFailed", record["message"]))
    else:
        record["result"] = "Succeeded"
        versions = ", ".join(f"{n} version {entries[n].get('version')}" for n in done)
        decision.events.append(SecretEvent("Normal", "SecretsRotated" if request.kind == "rotate" else "SecretsRefreshed",
                                           _cut(f"{verb} {request.request}: {versions or 'nothing to do'}")))
    decision.requests[status_field] = record


# --- the thin I/O -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SecretsContext:
    """What a reconcile needs to sync secrets: the providers and the bound on each call."""

    providers: ProviderRegistry
    timeout_seconds: float


@dataclass
class SyncResult:
    """What ``sync_secrets`` did, for the reconcile (status, outcome) and the handler (Events,
    audit records, when to come back). ``managed`` False: the agent has no Vault, AWS or Azure
    secrets (its ``status.secrets`` and ``SecretsSynced`` condition go; a request is refused)."""

    decision: Decision
    managed: bool = True
    written: Literal["created", "updated", "unchanged"] = "unchanged"
    # The resourceVersion of <agent>-secrets as this sync left it (None: unknown or absent): the
    # reconcile hashes it into the pod template without reading the Secret again.
    secret_version: str | None = None

    @property
    def status_fields(self) -> dict[str, Any]:
        if not self.managed:
            return dict(self.decision.requests)
        return {"secrets": self.decision.entries, **self.decision.requests}

    @property
    def dropped_fields(self) -> tuple[str, ...]:
        return () if self.managed else ("secrets",)


def with_secrets_status(status: Mapping[str, Any], sync: SyncResult, generation: int | None, now: str) -> dict[str, Any]:
    """``status`` with what the sync recorded: ``secrets``, the request outcomes and the
    ``SecretsSynced`` condition (removed, with ``secrets``, when the agent has none to sync)."""
    updated = {key: value for key, value in status.items() if key not in sync.dropped_fields}
    updated.update(sync.status_fields)
    conditions = updated.get("conditions") or []
    if sync.managed and sync.decision.condition is not None:
        state, reason, message = sync.decision.condition
        updated["conditions"] = set_condition(conditions, CONDITION, state, reason, message, generation, now)
    else:
        updated["conditions"] = remove_condition(conditions, CONDITION)
    return updated


async def _call(kind: ProviderKind, providers: ProviderRegistry, timeout: float, item: Managed,
                rotate: bool) -> Attempt:
    action: Literal["read", "rotate"] = "rotate" if rotate else "read"
    try:
        async with asyncio.timeout(timeout):
            provider = await providers.get(kind)
        if rotate:
            async with asyncio.timeout(timeout):
                written = await provider.rotate_secret(item.locator, generate_value())
        try:
            async with asyncio.timeout(timeout):
                value = await provider.get_secret(item.locator)
        except SecretError:
            if not rotate:
                raise
            value = written  # the new version is written; what it holds is what was written
        return Attempt(item.name, action, value=value)
    except SecretError as error:
        return Attempt(item.name, action, error=error)
    except TimeoutError:
        return Attempt(item.name, action, error=SecretProviderUnavailable(
            item.locator, f"no answer within {timeout:g} s (AGENTGOV_SECRETS_TIMEOUT_SECONDS)"))
    except Exception as error:  # a provider breaking its contract: never a crash, never its text
        return Attempt(item.name, action, error=SecretProviderUnavailable(
            item.locator, f"unexpected {type(error).__name__} from the provider"))


async def read_due(context: SecretsContext, wanted: Sequence[tuple[Managed, bool]]) -> dict[str, Attempt]:
    """Read (or rotate, then read) each ``(entry, rotate)``, ``MAX_CONCURRENT_READS`` at a time."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def one(item: Managed, rotate: bool) -> Attempt:
        async with limit:
            return await _call(item.locator.provider, context.providers, context.timeout_seconds, item, rotate)

    results = await asyncio.gather(*(one(item, rotate) for item, rotate in wanted))
    return {attempt.name: attempt for attempt in results}


async def sync_secrets(api: KubeApi, context: SecretsContext, inputs: Inputs, body: Mapping[str, Any],
                       now: datetime.datetime) -> SyncResult:
    """Sync one agent's Vault, AWS and Azure secrets into ``<agent>-secrets``. Provider failures
    are recorded in the decision, never raised; API errors are raised (the reconcile retries)."""
    namespace = inputs.namespace
    status: Mapping[str, Any] = body.get("status") or {}
    annotations: Mapping[str, str] = ((body.get("metadata") or {}).get("annotations")) or {}
    managed = managed_sources(inputs.spec, namespace)
    path = object_path("v1", "Secret", namespace, secret_builder.name(inputs))
    requests = [r for kind in REQUEST_KINDS if (r := pending_request(kind, annotations, status, inputs.spec)) is not None]
    if not managed:
        return await _sync_nothing(api, inputs, status, requests, now, path)

    live = await api.get(path)
    live_data = secret_builder.decoded(live)
    rotate_names = _requested(requests, "rotate", managed)
    refresh_names = _requested(requests, "refresh", managed)
    configured = context.providers.configured_kinds
    previous = _entries_by_name(status)
    wanted = [
        (item, item.name in rotate_names) for item in managed
        if due(item, previous.get(item.name), now, item.name in live_data, configured,
               requested=item.name in rotate_names or item.name in refresh_names)
    ]
    attempts = await read_due(context, wanted) if wanted else {}
    agent = f"{namespace}/{inputs.name}"
    decision = decide(agent, managed, status, live_data, attempts, requests, now, configured)

    written: Literal["created", "updated", "unchanged"] = "unchanged"
    stored = live
    if live is None:
        if decision.data:
            stored = await api.create(object_path("v1", "Secret", namespace),
                                      secret_builder.build(inputs, decision.data, decision.versions))
            if stored is None:  # made meanwhile (by hand, or another replica): write over it
                live = await api.get(path)
                if live is not None:
                    stored = await api.merge_patch(path, secret_builder.update_patch(inputs, live, decision.data,
                                                                                     decision.versions))
            written = "created"
    elif dict(live_data) != decision.data or set((live.get("data") or {})) != set(decision.data):
        stored = await api.merge_patch(path, secret_builder.update_patch(inputs, live, decision.data, decision.versions))
        written = "updated"
    version = ((stored or {}).get("metadata") or {}).get("resourceVersion")
    return SyncResult(decision, written=written, secret_version=str(version) if version else None)


async def _sync_nothing(api: KubeApi, inputs: Inputs, status: Mapping[str, Any], requests: Sequence[Request],
                        now: datetime.datetime, path: str) -> SyncResult:
    """An agent without Vault, AWS or Azure secrets: a request is refused (recorded, so it is
    handled once), and a Secret left from entries the spec dropped is emptied if it is ours."""
    decision = Decision()
    for request in requests:
        refused = Request(request.kind, request.request, problem=request.problem or (
            f"{request.annotation}: spec.secrets has no Vault, AWS or Azure entry"))
        _record_request(decision, refused, (), {}, {}, format_time(now))
    written: Literal["created", "updated", "unchanged"] = "unchanged"
    if status.get("secrets"):
        live = await api.get(path)
        if live is not None and secret_builder.owned_by(live, inputs) and live.get("data"):
            await api.merge_patch(path, secret_builder.update_patch(inputs, live, {}, {}))
            written = "updated"
    return SyncResult(decision, managed=False, written=written)


def _requested(requests: Sequence[Request], kind: RequestKind, managed: Sequence[Managed]) -> set[str]:
    for request in requests:
        if request.kind == kind and request.problem is None:
            return set(request.names) if request.names is not None else {item.name for item in managed}
    return set()
