"""Searching the local audit log: filters, time expressions, and a streaming scan of its files.

``agentgov audit search`` reads the rotated files and the active file one line at a time
(newest first by default, or oldest first), never the whole log into memory, and stops at
``--limit``. A rotated file is skipped without reading when its neighbours' first records show
it lies wholly outside ``--since``/``--until``, and the scan stops once it has gone past the
window (with ``TIME_SLACK`` of margin both ways: a record's time is its event's time, which can
precede its write by as long as the queue held it).

Event types (see ``record.py``): ``--type`` takes a type, a glob (``agent.*``) or a dotted
alias that also finds the sidecar's records of the same meaning (``TYPE_ALIASES``): so
``--type permission.denied`` finds the operator's compile-time refusals and the sidecar's
authorization, token, tool and model denials alike.

Pure except ``search_log`` (which reads files).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

from agentgov.audit.files import load_json, log_files, open_log, read_lines, reverse_lines

TIME_SLACK: Final = dt.timedelta(hours=1)
MAX_PATTERN_CHARS: Final = 256

# dotted name -> (event_type, result or None for any): what each alias also covers.
TYPE_ALIASES: Final[dict[str, tuple[tuple[str, str | None], ...]]] = {
    "permission.denied": (
        ("permission.denied", None),
        ("authorization", "denied"),
        ("token_issued", "denied"),
        ("tool_access", "denied"),
        ("model_call", "denied"),
    ),
    "authentication.failed": (("authentication", "failure"),),
    "budget.denied": (("budget_denial", None),),
    "budget.alert": (("budget_alert", None),),
    "secret.accessed": (("secret_access", None), ("secret.synced", None), ("secret.rotated", None)),
}

_DURATION = re.compile(r"^(\d{1,9})(s|m|h|d|w)$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_GLOB = re.compile(r"[*?\[]")


def parse_time(text: str, now: dt.datetime) -> dt.datetime:
    """``24h``, ``30m``, ``7d``, ``2w``, ``90s`` (that long before ``now``), ``now``, or an ISO
    8601 date or time (``2026-01-31``, ``2026-01-31T08:00:00Z``; no zone means UTC)."""
    value = text.strip()
    if value == "now":
        return now
    match = _DURATION.fullmatch(value)
    if match:
        try:
            return now - dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        except OverflowError:
            raise ValueError(f"{value[:40]!r} reaches further back than a date can") from None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not a time: use a duration before now (90s, 30m, 24h, 7d, 2w), "
                         f"'now', or an ISO 8601 date or time (2026-01-31, 2026-01-31T08:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def _pattern(value: str, what: str) -> str:
    if not value or len(value) > MAX_PATTERN_CHARS:
        raise ValueError(f"--{what}: give 1 to {MAX_PATTERN_CHARS} characters")
    return value


@dataclass(frozen=True)
class Query:
    """What a record must match (each field: any of its values; empty: anything)."""

    users: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    results: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def __post_init__(self) -> None:
        for what, values in (("user", self.users), ("type", self.types), ("agent", self.agents),
                             ("result", self.results)):
            for value in values:
                _pattern(value, what)
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("--since is after --until: nothing can match")


def _text_matches(pattern: str, value: object) -> bool:
    if not isinstance(value, str):
        return False
    return fnmatchcase(value, pattern) if _GLOB.search(pattern) else value == pattern


def type_matches(pattern: str, event_type: object, result: object) -> bool:
    """Whether a record of ``event_type`` with ``result`` is what ``--type pattern`` asks for."""
    aliases = TYPE_ALIASES.get(pattern)
    if aliases is not None:
        return any(event_type == kind and (wanted is None or result == wanted) for kind, wanted in aliases)
    return _text_matches(pattern, event_type)


def record_time(record: Mapping[str, object]) -> dt.datetime | None:
    value = record.get("timestamp")
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def matches(record: Mapping[str, object], query: Query) -> bool:
    """Whether ``record`` is one ``query`` asks for. Pure."""
    if query.users and not any(_text_matches(p, record.get("user")) for p in query.users):
        return False
    if query.types and not any(type_matches(p, record.get("event_type"), record.get("result")) for p in query.types):
        return False
    if query.agents and not any(_text_matches(p, record.get("agent")) for p in query.agents):
        return False
    if query.results and record.get("result") not in query.results:
        return False
    if query.since is not None or query.until is not None:
        when = record_time(record)
        if when is None:
            return False
        if query.since is not None and when < query.since:
            return False
        if query.until is not None and when > query.until:
            return False
    return True


@dataclass
class SearchStats:
    """What the scan met besides matches: lines it could not read, files it skipped."""

    scanned: int = 0
    unreadable: int = 0
    files_read: int = 0
    files_skipped: int = 0
    sources: list[str] = field(default_factory=list)


def _first_time(path: Path) -> dt.datetime | None:
    with open_log(path) as stream:
        for line in read_lines(stream):
            try:
                record = load_json(line.raw) if not line.oversized else None
            except ValueError:
                continue
            if isinstance(record, dict):
                return record_time(record)
    return None


def _outside(first: dt.datetime | None, following: dt.datetime | None, query: Query) -> bool:
    """Whether a file whose first record is at ``first``, and whose successor's is at
    ``following``, can hold nothing in the query's time window."""
    if query.since is not None and following is not None and following < query.since - TIME_SLACK:
        return True
    return query.until is not None and first is not None and first > query.until + TIME_SLACK


def _past_the_window(record: Mapping[str, object], query: Query, newest_first: bool) -> bool:
    """Whether the scan, going back (or forward) in time, has left the window for good."""
    when = record_time(record)
    if when is None:
        return False
    if newest_first:
        return query.since is not None and when < query.since - TIME_SLACK
    return query.until is not None and when > query.until + TIME_SLACK


def _is_record(value: object) -> bool:
    """The shape of an audit record (not a proof: ``agentgov audit verify`` checks hashes)."""
    if not isinstance(value, dict):
        return False
    seq = value.get("seq")
    return (isinstance(seq, int) and not isinstance(seq, bool) and isinstance(value.get("event_type"), str)
            and isinstance(value.get("timestamp"), str))


def _records(lines: Iterator[bytes], stats: SearchStats) -> Iterator[dict[str, object]]:
    for raw in lines:
        if not raw.strip():
            continue
        stats.scanned += 1
        try:
            record = load_json(raw)
        except ValueError:
            record = None
        if not _is_record(record):
            stats.unreadable += 1
            continue
        assert isinstance(record, dict)
        yield record


def _forward(path: Path) -> Iterator[bytes]:
    with open_log(path) as stream:
        for line in read_lines(stream):
            if not line.oversized:
                yield line.raw


def search_log(path: Path, query: Query, *, newest_first: bool = True, limit: int | None = None,
               stats: SearchStats | None = None) -> Iterator[dict[str, object]]:
    """The records of the log at ``path`` that match ``query``, newest (or oldest) first."""
    stats = stats if stats is not None else SearchStats()
    files = log_files(Path(path))
    if not files:
        raise FileNotFoundError(2, "No such file or directory", str(path))
    timed = query.since is not None or query.until is not None
    firsts = [_first_time(f) for f in files] if timed and len(files) > 1 else [None] * len(files)
    order = range(len(files) - 1, -1, -1) if newest_first else range(len(files))
    found = 0
    for index in order:
        following = firsts[index + 1] if index + 1 < len(files) else None
        if timed and _outside(firsts[index], following, query):
            stats.files_skipped += 1
            continue
        stats.files_read += 1
        stats.sources.append(files[index].name)
        lines = reverse_lines(files[index]) if newest_first and not files[index].name.endswith(".gz") else _forward(files[index])
        for record in _records(lines, stats):
            if timed and _past_the_window(record, query, newest_first):
                return
            if matches(record, query):
                yield record
                found += 1
                if limit is not None and found >= limit:
                    return


# --- output -----------------------------------------------------------------------------------

COLUMNS: Final[tuple[tuple[str, str, int], ...]] = (
    ("TIME", "timestamp", 24),
    ("SEQ", "seq", 8),
    ("TYPE", "event_type", 20),
    ("RESULT", "result", 8),
    ("USER", "user", 24),
    ("AGENT", "agent", 32),
    ("ACTION", "action", 12),
    ("RESOURCE", "resource", 48),
)


def _cell(value: object, width: int) -> str:
    text = "-" if value is None else str(value)
    # Records hold what callers sent (user agents, paths): no terminal control characters out.
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table_header() -> str:
    return "  ".join(name.ljust(width) for name, _, width in COLUMNS).rstrip()


def table_row(record: Mapping[str, object]) -> str:
    return "  ".join(_cell(record.get(key), width).ljust(width) for _, key, width in COLUMNS).rstrip()


def jsonl_row(record: Mapping[str, object]) -> str:
    # ensure_ascii: a JSON line on a terminal or in a pipe carries no raw control characters.
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def parse_query(*, users: Sequence[str] = (), types: Sequence[str] = (), agents: Sequence[str] = (),
                results: Sequence[str] = (), since: str | None = None, until: str | None = None,
                now: dt.datetime) -> Query:
    """A query from command-line values; ValueError naming the option at fault."""
    try:
        start = parse_time(since, now) if since is not None else None
    except ValueError as error:
        raise ValueError(f"--since: {error}") from None
    try:
        end = parse_time(until, now) if until is not None else None
    except ValueError as error:
        raise ValueError(f"--until: {error}") from None
    return Query(tuple(users), tuple(types), tuple(agents), tuple(results), start, end)
