"""Retention: which rotated files may be pruned, and what the chain starts from afterwards.

A record may go once its ``retain_until`` date has passed (the day after it). Pruning takes
whole rotated files, oldest first, and stops at the first file that still holds a record not
yet expired, one it cannot read, or one a sink has not delivered yet (``hold_from_seq``): so
the remaining files are always a suffix of the chain, never with a hole. The active file is
never pruned. What the remaining chain links to is kept in ``<path>.anchor`` (the last pruned
record's seq and hash, and the last pruned digest), announced first by an ``audit.pruned``
record in the chain (signed by the next digest), which ``chain.py`` requires to match.

``summarize`` reads a file; the rest is pure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentgov.audit.chain import Anchor
from agentgov.audit.digest import DigestLink
from agentgov.audit.files import load_json, open_log, read_lines
from agentgov.audit.record import DIGEST_EVENT, PRUNED_EVENT, AuditEvent


@dataclass(frozen=True)
class FileSummary:
    """What retention needs to know about one rotated file."""

    path: Path
    records: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    # The latest retain_until of its records; None when a record has none (never pruned).
    retain_until: dt.date | None
    last_digest: DigestLink | None
    unreadable_lines: int = 0


def _date(value: object) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def summarize(path: Path) -> FileSummary:
    """Read a rotated file once: counts, its last record, its latest retention date."""
    records = unreadable = 0
    first = last = None
    last_hash = None
    latest: dt.date | None = None
    undated = False
    last_digest = None
    with open_log(path) as stream:
        for line in read_lines(stream):
            if not line.raw.strip() and not line.oversized:
                continue
            try:
                record = load_json(line.raw) if not line.oversized else None
            except ValueError:
                record = None
            seq = record.get("seq") if isinstance(record, dict) else None
            if not isinstance(record, dict) or not isinstance(seq, int) or isinstance(seq, bool):
                unreadable += 1
                continue
            records += 1
            first = seq if first is None else first
            last, last_hash = seq, record.get("hash") if isinstance(record.get("hash"), str) else None
            until = _date(record.get("retain_until"))
            if until is None:
                undated = True
            elif latest is None or until > latest:
                latest = until
            if record.get("event_type") == DIGEST_EVENT:
                metadata = record.get("metadata")
                signature = metadata.get("signature") if isinstance(metadata, dict) else None
                if isinstance(signature, str):
                    last_digest = DigestLink(seq, signature)
    return FileSummary(path, records, first, last, str(last_hash) if last_hash else None,
                       None if undated else latest, last_digest, unreadable)


def expired(summary: FileSummary, today: dt.date) -> bool:
    """Every record of the file is past its retention date (and the file is sound)."""
    return (summary.records > 0 and summary.unreadable_lines == 0 and summary.retain_until is not None
            and summary.retain_until < today and summary.last_hash is not None)


def plan_prune(rotated: Sequence[FileSummary], today: dt.date, hold_from_seq: int | None = None) -> list[FileSummary]:
    """The oldest rotated files that may go now: a prefix of ``rotated`` (oldest first), each
    wholly expired and, when sinks still need records from ``hold_from_seq`` on, wholly before it."""
    chosen: list[FileSummary] = []
    for summary in rotated:
        if not expired(summary, today):
            break
        if hold_from_seq is not None and (summary.last_seq is None or summary.last_seq >= hold_from_seq):
            break
        chosen.append(summary)
    return chosen


def anchor_after(pruned: Sequence[FileSummary], previous: Anchor | None) -> Anchor:
    """The anchor once ``pruned`` (non-empty, oldest first) are gone."""
    last = pruned[-1]
    assert last.last_seq is not None and last.last_hash is not None
    digest = next((s.last_digest for s in reversed(pruned) if s.last_digest is not None),
                  previous.last_digest if previous else None)
    return Anchor(last.last_seq, last.last_hash, digest)


def pruned_event(pruned: Sequence[FileSummary], anchor: Anchor, timestamp: float) -> AuditEvent:
    """The ``audit.pruned`` record announcing the removal (built without redaction: hashes only)."""
    first = pruned[0].first_seq
    return AuditEvent(PRUNED_EVENT, "success", "prune", "audit-log", timestamp, metadata={
        "reason": "retention",
        "first_seq": first,
        "records": sum(s.records for s in pruned),
        "files": [s.path.name for s in pruned],
        "anchor": anchor.as_json(),
    })
