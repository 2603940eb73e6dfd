"""The Elasticsearch / OpenSearch sink, and searching and exporting what it stored.

Delivery is ``POST /_bulk`` (NDJSON) with one ``create`` per record into the index of the
record's UTC day, ``<prefix>-YYYY.MM.DD``. The document is the record exactly as in the local
log plus ``log_source`` (the pod that wrote it: replicas of one agent write separate chains);
its ``_id`` is ``<source>/<record hash>``, so a record sent twice is a ``409`` conflict the
second time — already delivered, never a duplicate. Per item:

- 200/201 created, 409 already there: delivered;
- 400 (a mapping or parsing error: the record can never be indexed as it is) and 413 (too
  large): refused for good -> the shipper parks it in the dead-letter file;
- 429, 5xx and anything else (403 no privilege, 404 no index allowed): sent again later.

A whole request answered 413 is split in halves (down to one record). At start (``open``) the
sink reads ``/`` (cluster name, flavour, version) and installs the index template
``<prefix>`` (``PUT _index_template/<prefix>``) with explicit mappings: keyword for ids,
types, users and hashes, date for ``timestamp`` and ``retain_until``, ``metadata`` an object
kept in ``_source`` but not indexed (its keys differ by event type and must never cause a
mapping conflict), and ``dynamic: false`` so fields added to records later are stored, not
guessed. Retention is the cluster's index lifecycle (ILM/ISM) over ``retain_until``; the sink
never deletes.

Authentication: basic (a username and a password file) or an API key file (the base64
``encoded`` value, sent as ``Authorization: ApiKey``); files are read for each request, so a
rotated Secret applies at once. TLS: a CA file, else the system's CAs.

``search`` (``agentgov audit search --elasticsearch``: exact values as ``term`` filters and a
``range`` on ``timestamp``) and ``export`` (copies for chain verification) use the same client. Errors name the cluster and the HTTP status or error type;
never a credential, never a response body beyond Elasticsearch's short error reason.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import aiohttp

from agentgov.audit.record import canonical
from agentgov.audit.sinks.base import Delivery, Rejection, SinkUnavailable
from agentgov.audit.sinks.batching import BatchPolicy
from agentgov.audit.sinks.logread import LogLine
from agentgov.audit.sinks.metrics import FailureReason
from agentgov.audit.sinks.settings import ElasticsearchSinkSettings, SinkKind

log = logging.getLogger(__name__)

SOURCE_FIELD: Final = "log_source"
TEMPLATE_PRIORITY: Final = 200
TEMPLATE_VERSION: Final = 1
MAX_CREDENTIAL_BYTES: Final = 64 * 1024
MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
MAX_SEARCH_SIZE: Final = 10_000  # Elasticsearch's default index.max_result_window
_KEYWORD: Final = {"type": "keyword", "ignore_above": 1024}

MAPPINGS: Final[dict[str, Any]] = {
    "dynamic": False,
    "properties": {
        "seq": {"type": "long"},
        "timestamp": {"type": "date"},
        "event_type": {"type": "keyword"},
        "user": _KEYWORD,
        "agent": {"type": "keyword"},
        "resource": _KEYWORD,
        "action": _KEYWORD,
        "result": {"type": "keyword"},
        "metadata": {"type": "object", "dynamic": False},
        "client_ip": {"type": "keyword"},
        "user_agent": _KEYWORD,
        "execution_id": {"type": "keyword"},
        "request_id": {"type": "keyword"},
        "retain_until": {"type": "date"},
        "prev_hash": {"type": "keyword"},
        "hash": {"type": "keyword"},
        SOURCE_FIELD: {"type": "keyword"},
    },
}


# --- pure parts -------------------------------------------------------------------------


def index_name(prefix: str, timestamp: float) -> str:
    """``<prefix>-YYYY.MM.DD`` of the record's UTC day."""
    day = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return f"{prefix}-{day:%Y.%m.%d}"


def document_id(source: str, record_hash: str) -> str:
    return f"{source}/{record_hash}"


def document(record: Mapping[str, object], source: str) -> dict[str, object]:
    return {**record, SOURCE_FIELD: source}


def record_of(document_source: Mapping[str, object]) -> dict[str, object]:
    """The audit record a stored document holds (the document without ``log_source``)."""
    return {k: v for k, v in document_source.items() if k != SOURCE_FIELD}


def index_template(prefix: str) -> dict[str, Any]:
    return {
        "index_patterns": [f"{prefix}-*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {"mappings": MAPPINGS},
        "_meta": {"managed_by": "agentgov", "version": TEMPLATE_VERSION},
    }


def bulk_body(lines: Sequence[LogLine], prefix: str, source: str) -> bytes:
    """The ``_bulk`` NDJSON: a ``create`` action and the document for each usable line."""
    parts: list[bytes] = []
    for line in lines:
        assert line.record is not None and line.timestamp is not None and line.hash is not None
        action = {"create": {"_index": index_name(prefix, line.timestamp), "_id": document_id(source, line.hash)}}
        parts.append(json.dumps(action, separators=(",", ":")).encode())
        parts.append(json.dumps(document(line.record, source), separators=(",", ":"), ensure_ascii=False).encode())
    return b"\n".join(parts) + b"\n"


def status_reason(status: int) -> FailureReason:
    """The failure label of an HTTP status that failed a whole request."""
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "rejected"


def error_summary(payload: object, *, with_reason: bool = True) -> str:
    """``type: reason`` of an Elasticsearch error body (cut short), or "no error details"."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return error[:200]
    if not isinstance(error, dict):
        return "no error details"
    kind = str(error.get("type", "error"))[:100]
    reason = error.get("reason")
    if with_reason and isinstance(reason, str):
        return f"{kind}: {reason[:300]}"
    return kind


def classify_bulk(lines: Sequence[LogLine], payload: object) -> Delivery:
    """What a ``_bulk`` answer says about each record sent (``lines``, in the same order).
    Raises ValueError when the answer is not a bulk response for them."""
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ValueError("the answer has no items")
    items = payload["items"]
    if len(items) != len(lines):
        raise ValueError(f"{len(items)} item(s) answered for {len(lines)} sent")
    rejected: list[Rejection] = []
    retry: list[LogLine] = []
    reasons: set[FailureReason] = set()
    for line, item in zip(lines, items):
        result = item.get("create") if isinstance(item, dict) else None
        status = result.get("status") if isinstance(result, dict) else None
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError("an item has no status")
        if status in (200, 201, 409):
            continue
        if status in (400, 413):
            rejected.append(Rejection(line, f"elasticsearch refused it ({status} {error_summary(result)})"))
        else:
            retry.append(line)
            reasons.add(status_reason(status))
    reason: FailureReason | None = None
    if retry:
        reason = "throttled" if reasons == {"throttled"} else sorted(reasons)[0]
    return Delivery(rejected=tuple(rejected), retry=tuple(retry), retry_reason=reason)


def merge(deliveries: Sequence[Delivery]) -> Delivery:
    rejected = tuple(r for d in deliveries for r in d.rejected)
    retry = tuple(line for d in deliveries for line in d.retry)
    reason = next((d.retry_reason for d in deliveries if d.retry_reason is not None), None)
    return Delivery(rejected=rejected, retry=retry, retry_reason=reason)


@dataclass(frozen=True)
class SearchFilters:
    """What ``agentgov audit search --elasticsearch`` asks the cluster for: exact values (None:
    any) and a time range. Globs, type aliases and several values per field are the command's
    to apply to what comes back (``audit.commands``)."""

    user: str | None = None
    event_type: str | None = None
    result: str | None = None
    agent: str | None = None
    source: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 100


def _iso(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def search_body(filters: SearchFilters) -> dict[str, Any]:
    """The query: exact matches as ``term`` filters, the time range (both ends included, as the
    local search's) as ``range``, newest first."""
    if not 1 <= filters.limit <= MAX_SEARCH_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_SEARCH_SIZE}")
    clauses: list[dict[str, Any]] = []
    for name, value in (("user", filters.user), ("event_type", filters.event_type), ("result", filters.result),
                        ("agent", filters.agent), (SOURCE_FIELD, filters.source)):
        if value is not None:
            clauses.append({"term": {name: value}})
    span: dict[str, str] = {}
    if filters.since is not None:
        span["gte"] = _iso(filters.since)
    if filters.until is not None:
        span["lte"] = _iso(filters.until)
    if span:
        clauses.append({"range": {"timestamp": span}})
    return {
        "size": filters.limit,
        "sort": [{"timestamp": {"order": "desc"}}, {"seq": {"order": "desc"}}],
        "query": {"bool": {"filter": clauses}},
    }


def export_body(source: str | None, page: int, after: list[Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "size": page,
        "sort": [{SOURCE_FIELD: {"order": "asc"}}, {"seq": {"order": "asc"}}, {"hash": {"order": "asc"}}],
        "query": {"bool": {"filter": [{"term": {SOURCE_FIELD: source}}] if source is not None else []}},
    }
    if after is not None:
        body["search_after"] = after
    return body


# --- the client ---------------------------------------------------------------------------


def _read_credential(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CREDENTIAL_BYTES + 1)
    except OSError as e:
        raise SinkUnavailable("config", f"cannot read the Elasticsearch {what} file {path}: "
                                        f"{e.strerror or type(e).__name__}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise SinkUnavailable("config", f"the Elasticsearch {what} file {path} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SinkUnavailable("config", f"the Elasticsearch {what} file {path} is not UTF-8 text") from None
    if not text or any(ch in text for ch in "\r\n\x00"):
        raise SinkUnavailable("config", f"the Elasticsearch {what} file {path} is empty or holds more than one line")
    return text


def auth_header(settings: ElasticsearchSinkSettings) -> str | None:
    """The ``Authorization`` value from the credential files (read now), or None."""
    if settings.api_key_file is not None:
        return "ApiKey " + _read_credential(settings.api_key_file, "API key")
    if settings.username is not None and settings.password_file is not None:
        password = _read_credential(settings.password_file, "password")
        token = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
        return "Basic " + token
    return None


class ElasticsearchClient:
    """One aiohttp session to one cluster: JSON or NDJSON in, parsed JSON out, failures as
    ``SinkUnavailable``."""

    def __init__(self, settings: ElasticsearchSinkSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.settings.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=self.settings.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise SinkUnavailable("config", f"cannot load the CA file {self.settings.ca_file}: "
                                            f"{getattr(e, 'strerror', None) or type(e).__name__}") from None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=4)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, object]:
        """(status, parsed JSON body or None). SinkUnavailable when no answer came."""
        session = self._open_session()
        headers = {"Accept": "application/json"}
        authorization = auth_header(self.settings)
        if authorization is not None:
            headers["Authorization"] = authorization
        if body is not None:
            headers["Content-Type"] = content_type
        where = f"{self.base} ({method} {path.split('?')[0]})"
        try:
            async with session.request(method, self.base + path, data=body, headers=headers,
                                       allow_redirects=False) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except asyncio.TimeoutError:
            raise SinkUnavailable("timeout", f"{where}: no answer within {self.settings.timeout_seconds:g} s") from None
        except aiohttp.ClientConnectorError as e:
            raise SinkUnavailable("connect", f"{where}: cannot connect ({type(e).__name__}: {str(e)[:200]})") from None
        except aiohttp.ClientError as e:
            raise SinkUnavailable("connect", f"{where}: the connection failed ({type(e).__name__})") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise SinkUnavailable("bad_response", f"{where}: the answer is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            payload: object = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return status, payload

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _failed_request(where: str, status: int, payload: object) -> SinkUnavailable:
    reason = status_reason(status)
    summary = error_summary(payload, with_reason=reason != "auth")
    hint = "; check the credentials and the user's privileges" if reason == "auth" else ""
    return SinkUnavailable(reason, f"{where} answered {status} ({summary}){hint}")


class ElasticsearchSink:
    kind: SinkKind = "elasticsearch"
    fixed_batches = False

    def __init__(self, settings: ElasticsearchSinkSettings, *, source: str) -> None:
        self.settings = settings
        self.source = source
        self.destination = f"{settings.url.rstrip('/')} index {settings.index_prefix}-*"
        self.batching = BatchPolicy(max_records=settings.max_records, max_bytes=settings.max_bytes,
                                    window_seconds=settings.flush_seconds)
        self._client = ElasticsearchClient(settings)
        self.cluster: dict[str, object] = {}

    async def open(self) -> None:
        """Read the cluster's identity and install the index template. A user allowed to write
        documents but not to read cluster info or manage templates (403) still ships: the
        template is then the cluster administrator's to install (``index_template(prefix)``)."""
        client, prefix = self._client, self.settings.index_prefix
        status, payload = await client.request("GET", "/")
        if status == 200 and isinstance(payload, dict):
            version = payload.get("version")
            version = version if isinstance(version, dict) else {}
            self.cluster = {
                "cluster": str(payload.get("cluster_name", ""))[:100],
                "flavour": "opensearch" if version.get("distribution") == "opensearch" else "elasticsearch",
                "version": str(version.get("number", ""))[:40],
            }
        elif status != 403:
            raise _failed_request(client.base, status, payload)
        body = json.dumps(index_template(prefix)).encode()
        status, payload = await client.request("PUT", f"/_index_template/{prefix}", body=body)
        if status == 200:
            self.cluster["template"] = "installed"
        elif status == 403:
            self.cluster["template"] = "not installed: the user may not manage index templates"
            log.warning("audit shipping to %s: the index template %s was not installed (403: the user may not "
                        "manage index templates); records are indexed with the cluster's mappings", client.base,
                        prefix)
        else:
            raise _failed_request(f"{client.base} (index template {prefix})", status, payload)

    async def deliver(self, batch: Sequence[LogLine]) -> Delivery:
        body = bulk_body(batch, self.settings.index_prefix, self.source)
        status, payload = await self._client.request("POST", "/_bulk", body=body,
                                                     content_type="application/x-ndjson")
        if status == 413:
            if len(batch) == 1:
                return Delivery(rejected=(Rejection(batch[0], "elasticsearch refused it (413: larger than the "
                                                              "cluster accepts in one request)"),))
            half = len(batch) // 2
            return merge([await self.deliver(batch[:half]), await self.deliver(batch[half:])])
        if status != 200:
            raise _failed_request(f"{self._client.base}/_bulk", status, payload)
        try:
            return classify_bulk(batch, payload)
        except ValueError as e:
            raise SinkUnavailable("bad_response", f"{self._client.base}/_bulk: not a bulk answer ({e})") from None

    async def close(self) -> None:
        await self._client.close()

    def details(self) -> Mapping[str, object]:
        return dict(self.cluster)


# --- reading back -------------------------------------------------------------------------


async def _search(client: ElasticsearchClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    path = f"/{client.settings.index_prefix}-*/_search?ignore_unavailable=true&allow_no_indices=true"
    status, payload = await client.request("POST", path, body=json.dumps(body).encode())
    if status != 200:
        raise _failed_request(f"{client.base}/_search", status, payload)
    hits = payload.get("hits") if isinstance(payload, dict) else None
    found = hits.get("hits") if isinstance(hits, dict) else None
    if not isinstance(found, list):
        raise SinkUnavailable("bad_response", f"{client.base}/_search: not a search answer")
    return [hit for hit in found if isinstance(hit, dict) and isinstance(hit.get("_source"), dict)]


async def search(settings: ElasticsearchSinkSettings, filters: SearchFilters) -> list[dict[str, object]]:
    """The newest ``filters.limit`` records matching, oldest first, each with ``log_source`` (the
    pod that wrote it). SinkUnavailable when the cluster cannot answer; ValueError for a bad limit."""
    body = search_body(filters)
    client = ElasticsearchClient(settings)
    try:
        hits = await _search(client, body)
    finally:
        await client.close()
    return [dict(hit["_source"]) for hit in reversed(hits)]


async def export(settings: ElasticsearchSinkSettings, *, source: str | None = None,
                 page: int = 1000) -> AsyncIterator[tuple[str, dict[str, object]]]:
    """Every stored record as (source, record), by source then seq: the copy to verify."""
    client = ElasticsearchClient(settings)
    try:
        after: list[Any] | None = None
        while True:
            hits = await _search(client, export_body(source, page, after))
            for hit in hits:
                stored = hit["_source"]
                yield str(stored.get(SOURCE_FIELD, "")), record_of(stored)
            if len(hits) < page:
                return
            sort = hits[-1].get("sort")
            if not isinstance(sort, list):
                raise SinkUnavailable("bad_response", f"{client.base}/_search: a page without sort values")
            after = sort
    finally:
        await client.close()


async def export_to_directory(settings: ElasticsearchSinkSettings, directory: Path, *,
                              source: str | None = None) -> dict[str, Path]:
    """Write every stored record, as its canonical JSON line, to ``<directory>/<source>/
    <index prefix>.jsonl`` (one file per source, by seq), for ``agentgov audit verify`` over
    the copy; the files written, by source."""
    files: dict[str, Path] = {}
    handles: dict[str, BinaryIO] = {}
    try:
        async for found_source, record in export(settings, source=source):
            handle = handles.get(found_source)
            if handle is None:
                if not found_source or "/" in found_source or found_source in (".", ".."):
                    raise SinkUnavailable("bad_response", f"a stored record has an unusable {SOURCE_FIELD}")
                target = directory / found_source / f"{settings.index_prefix}.jsonl"
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = handles[found_source] = open(target, "wb")  # noqa: SIM115 - closed below
                files[found_source] = target
            handle.write(canonical(record) + b"\n")
    finally:
        for handle in handles.values():
            handle.close()
    return files
