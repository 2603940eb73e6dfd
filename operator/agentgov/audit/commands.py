"""What ``agentgov audit verify`` and ``agentgov audit search`` do.

``cli.py`` parses the arguments and calls these; each returns the exit code: 0 fine, 1 the
log was tampered with (verify), 2 a usage or I/O error (a file that cannot be read, a bad
``--since``, a key that is not one), printed as one ``error: ...`` line, never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from agentgov.audit.chain import Anchor, ChainReport, verify_copies, verify_log
from agentgov.audit.digest import VerifyKey, load_verify_key
from agentgov.audit.errors import AuditConfigError
from agentgov.audit.search import (
    TYPE_ALIASES, Query, SearchStats, jsonl_row, matches, parse_query, search_log, table_header, table_row,
)
from agentgov.audit.sinks.base import SinkUnavailable

OutputFormat = Literal["table", "jsonl"]
Order = Literal["newest", "oldest"]


def _usage_error(message: str, stream: TextIO) -> int:
    print(f"error: {message}", file=stream)
    return 2


def _pinned_keys(paths: Sequence[str]) -> dict[str, VerifyKey]:
    keys: dict[str, VerifyKey] = {}
    for path in paths:
        key = load_verify_key(Path(path))
        keys[key.key_id] = key
    return keys


def _print_report(label: str, report: ChainReport, keys: Mapping[str, VerifyKey] | None, out: TextIO,
                  err: TextIO, where: Callable[[str], str]) -> bool:
    if report.ok:
        spread = f" in {report.files} files" if report.files > 1 else ""
        ending = f", last seq {report.last_seq}" if report.last_seq is not None else ""
        print(f"{label}: {report.records} record(s){spread}, chain intact{ending}", file=out)
    else:
        for problem in report.problems:
            print(f"{where(problem.file)}: {problem}", file=out)
        more = f" (and {report.problems_dropped} more not listed)" if report.problems_dropped else ""
        print(f"{label}: {len(report.problems)} problem(s){more} in {report.records} record(s)", file=err)
    if report.digests:
        if keys is None:
            signed = "signatures not checked (give --public-key)"
        else:
            signed = f"{report.signatures_checked} signature(s) verified with the pinned key(s)"
        print(f"{label}: {report.digests} digest(s), {signed}", file=out)
        if report.unsigned_tail is not None:
            print(f"{label}: seq {report.unsigned_tail[0]}-{report.unsigned_tail[1]} not signed yet "
                  f"(after the last digest)", file=out)
    for note in report.notes:
        print(f"{label}: note: {note}", file=out)
    return report.ok


def _under(directory: str) -> Callable[[str], str]:
    return lambda file: str(Path(directory) / file) if file else directory


def verify(path: str | None, *, head: str | None = None, public_keys: Sequence[str] = (),
           copies: Sequence[str] = (), start_seq: int | None = None, start_hash: str | None = None,
           stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Verify the local log at ``path`` (rotated files, anchor, head) and/or sink copies."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if path is None and not copies:
        return _usage_error("give the audit log (PATH) and/or --copy DIR", err)
    if (start_seq is None) != (start_hash is None):
        return _usage_error("--start-seq and --start-hash go together (the first record's seq and prev_hash)", err)
    try:
        keys = _pinned_keys(public_keys) if public_keys else None
    except AuditConfigError as e:
        return _usage_error(str(e), err)
    ok = True
    if path is not None:
        log = Path(path)
        try:
            report = verify_log(log, head_path=head, keys=keys)
        except OSError as e:
            return _usage_error(f"{path}: {e.strerror or e}", err)
        except ValueError as e:
            return _usage_error(str(e), err)
        ok &= _print_report(path, report, keys, out, err, lambda f: str(log.with_name(f)) if f else path)
    for directory in copies:
        start = Anchor(start_seq - 1, start_hash) if start_seq is not None and start_hash is not None else None
        try:
            report = verify_copies(directory, keys=keys, start=start)
        except OSError as e:
            return _usage_error(f"--copy {directory}: {e.strerror or e}", err)
        ok &= _print_report(directory, report, keys, out, err, _under(directory))
    return 0 if ok else 1


def search(path: str | None, *, users: Sequence[str] = (), types: Sequence[str] = (), agents: Sequence[str] = (),
           results: Sequence[str] = (), since: str | None = None, until: str | None = None,
           output: OutputFormat = "table", limit: int | None = None, order: Order = "newest",
           elasticsearch: ElasticsearchOptions | None = None, now: dt.datetime | None = None,
           stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Print the matching records of the local log at ``path`` (or of the Elasticsearch sink),
    as a table or JSON lines; a note on stderr says how many lines could not be read."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if limit is not None and limit < 1:
        return _usage_error("--limit: give a positive number", err)
    try:
        query = parse_query(users=users, types=types, agents=agents, results=results, since=since, until=until,
                            now=now or dt.datetime.now(dt.timezone.utc))
    except ValueError as e:
        return _usage_error(str(e), err)
    stats = SearchStats()
    if (elasticsearch is None) == (path is None):
        return _usage_error("give the audit log (PATH) or --elasticsearch URL, one of them", err)
    shown = 0
    try:
        records: Iterable[Mapping[str, object]]
        if elasticsearch is not None:
            records = elasticsearch_records(elasticsearch, query, limit=limit, newest_first=order == "newest")
        else:
            assert path is not None
            records = search_log(Path(path), query, newest_first=order == "newest", limit=limit, stats=stats)
        for record in records:
            if shown == 0 and output == "table":
                print(table_header(), file=out)
            print(table_row(record) if output == "table" else jsonl_row(record), file=out)
            shown += 1
    except OSError as e:
        return _usage_error(f"{path or 'elasticsearch'}: {e.strerror or e}", err)
    except AuditConfigError as e:
        return _usage_error(str(e), err)
    if shown == 0 and output == "table":
        print("no matching records", file=err)
    if stats.unreadable:
        print(f"note: {stats.unreadable} line(s) were not audit records and were skipped "
              f"(run `agentgov audit verify`)", file=err)
    return 0


def _single(values: tuple[str, ...]) -> str | None:
    """The value an exact Elasticsearch ``term`` filter can take: one, without glob characters."""
    return values[0] if len(values) == 1 and not any(c in values[0] for c in "*?[") else None


@dataclass(frozen=True)
class ElasticsearchOptions:
    """Where the Elasticsearch/OpenSearch sink is, and how to sign in (files, never values)."""

    url: str
    index_prefix: str | None = None
    username: str | None = None
    password_file: str | None = None
    api_key_file: str | None = None
    ca_file: str | None = None


def elasticsearch_records(options: ElasticsearchOptions, query: Query, *, limit: int | None,
                          newest_first: bool) -> Iterator[Mapping[str, object]]:
    """The records of the Elasticsearch sink that match ``query``. Single exact values are
    filters of the cluster's query; globs, aliases and several values are applied here to the
    newest ``MAX_SEARCH_SIZE`` records the others match. The cluster sorts newest first, so
    ``limit`` keeps the newest matches whatever the order they are printed in. AuditConfigError
    for bad options, OSError when the cluster cannot answer."""
    from agentgov.audit.sinks import elasticsearch as es
    from agentgov.audit.sinks.settings import ElasticsearchSinkSettings, SinkConfigError, check_elasticsearch

    try:
        settings = check_elasticsearch(ElasticsearchSinkSettings(
            url=options.url, index_prefix=options.index_prefix or ElasticsearchSinkSettings(url=options.url).index_prefix,
            username=options.username, password_file=options.password_file, api_key_file=options.api_key_file,
            ca_file=options.ca_file,
        ), lambda name: "--elasticsearch" if name == "url" else f"--es-{name.replace('_', '-')}")
    except SinkConfigError as error:
        raise AuditConfigError(str(error)) from None
    event_type = _single(query.types)
    if event_type in TYPE_ALIASES:
        event_type = None
    exact = (event_type is not None or not query.types) and all(
        _single(values) is not None or not values for values in (query.users, query.agents, query.results))
    filters = es.SearchFilters(
        user=_single(query.users), event_type=event_type, result=_single(query.results),
        agent=_single(query.agents), since=query.since, until=query.until,
        limit=min(limit, es.MAX_SEARCH_SIZE) if exact and limit is not None else es.MAX_SEARCH_SIZE)
    try:
        found = asyncio.run(es.search(settings, filters))  # the newest matches, oldest first
    except SinkUnavailable as error:
        raise OSError(str(error)) from None
    except (SinkConfigError, ValueError) as error:
        raise AuditConfigError(str(error)) from None
    chosen = [record for record in found if matches(record, query)]
    if newest_first:
        chosen.reverse()
    yield from chosen[:limit] if limit is not None else chosen
