"""The audit record: what one event becomes on disk, and the hash that chains it to the last one.

Each record has the playbook's fields (``timestamp``, ``event_type``, ``user``, ``agent``,
``resource``, ``action``, ``result``, ``metadata``, ``client_ip``, ``user_agent``) plus
``execution_id``, ``request_id``, ``retain_until`` (the event's date plus the retention in
days), ``seq`` (0, 1, 2, ... over the life of the log, across rotated files), ``prev_hash``
(the previous record's ``hash``, or ``GENESIS_HASH`` for seq 0) and ``hash`` (sha256 of the
record's canonical JSON without ``hash``). The sidecar and the operator write the same schema.

Event types, one scheme for both writers: the sidecar's request-path types are single
snake_case words (``authorization``, ``tool_access`` ...: existing logs keep them and stay
valid); everything else is ``<subject>.<verb>`` (``agent.created``, ``permission.denied``,
``audit.digest``). ``agentgov audit search --type`` knows which sidecar records each dotted
name also covers (``audit.search.TYPE_ALIASES``).

Pure: no I/O, no clock (the event carries its time). The byte layout (``canonical``) is part
of the contract: logs written by earlier versions must keep verifying.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from agentgov.audit.redact import Redactor

SidecarEventType = Literal[
    "authentication",
    "authorization",
    "agent_execution",
    "tool_access",
    "secret_access",
    "budget_denial",
    "budget_alert",
    "model_call",
    "breaker_transition",
    "token_issued",
    "policy_reload",
    "audit_integrity",
]
OperatorEventType = Literal[
    "agent.created",
    "agent.updated",
    "agent.deleted",
    "toolpolicy.created",
    "toolpolicy.updated",
    "toolpolicy.deleted",
    "regionpolicy.created",
    "regionpolicy.updated",
    "regionpolicy.deleted",
    "budget.created",
    "budget.updated",
    "budget.deleted",
    "secret.synced",
    "secret.rotated",
    "permission.denied",
]
# Written by the log itself (any writer): signed digests and notes of pruning.
LogEventType = Literal["audit.digest", "audit.pruned"]
EventType = SidecarEventType | OperatorEventType | LogEventType
EVENT_TYPES: Final[tuple[str, ...]] = (
    *get_args(SidecarEventType), *get_args(OperatorEventType), *get_args(LogEventType),
)
Result = Literal["success", "failure", "allowed", "denied", "started"]
RESULTS: Final[tuple[str, ...]] = get_args(Result)

GENESIS_HASH: Final = "sha256:" + "0" * 64
MAX_METADATA_CHARS: Final = 4096
DIGEST_EVENT: Final = "audit.digest"
PRUNED_EVENT: Final = "audit.pruned"


@dataclass(frozen=True)
class AuditEvent:
    """Something that happened, as the reporting code sees it (before redaction).

    ``agent`` names the agent the event is about when the writer serves several (the
    operator); a sidecar leaves it None and the policy's agent is recorded.
    """

    event_type: EventType
    result: Result
    action: str
    resource: str
    timestamp: float
    user: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)
    client_ip: str | None = None
    user_agent: str | None = None
    execution_id: str | None = None
    request_id: str | None = None
    agent: str | None = None


@dataclass(frozen=True)
class AuditPolicy:
    """What the policy in force says about auditing, and what to redact."""

    enabled: bool = True
    retention_days: int = 365
    agent: str | None = None
    redactor: Redactor = field(default_factory=Redactor)


def canonical(record: Mapping[str, object]) -> bytes:
    """The record's bytes on disk and under its hash: sorted keys, no spaces, UTF-8."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, object]) -> str:
    """sha256 of the record's canonical JSON, ``hash`` member excluded."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def iso_time(when: dt.datetime) -> str:
    """``2026-01-01T00:00:01.000Z``: the records' timestamp format."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_record(event: AuditEvent, *, seq: int, prev_hash: str, policy: AuditPolicy,
                 redact_metadata: bool = True) -> dict[str, object]:
    """The record written for ``event``: redacted, dated, chained. Pure.

    ``redact_metadata=False`` is for the log's own records (digests, pruning notes), whose
    metadata is hashes and signatures the redactor would otherwise mistake for credentials.
    """
    redact = policy.redactor
    if redact_metadata:
        metadata = redact.value(dict(event.metadata))
        if len(canonical(metadata if isinstance(metadata, dict) else {})) > MAX_METADATA_CHARS:
            metadata = {"truncated": True, "note": "metadata over 4 KiB was dropped"}
    else:
        metadata = dict(event.metadata)
    when = dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc)
    agent = event.agent if event.agent is not None else policy.agent
    record: dict[str, object] = {
        "seq": seq,
        "timestamp": iso_time(when),
        "event_type": event.event_type,
        "user": redact.text(event.user) if event.user is not None else None,
        "agent": agent,
        "resource": redact.text(event.resource),
        "action": redact.text(event.action),
        "result": event.result,
        "metadata": metadata,
        "client_ip": event.client_ip,
        "user_agent": redact.text(event.user_agent) if event.user_agent is not None else None,
        "execution_id": event.execution_id,
        "request_id": event.request_id,
        "retain_until": (when + dt.timedelta(days=policy.retention_days)).date().isoformat(),
        "prev_hash": prev_hash,
    }
    record["hash"] = record_hash(record)
    return record
