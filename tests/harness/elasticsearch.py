"""A local Elasticsearch stand-in for the audit sink's tests: the endpoints the sink uses, with
Elasticsearch 8's request and response shapes, and fault modes.

What it is for: driving ``agentgov.audit.sinks.elasticsearch`` (our aiohttp client) over real
HTTP against the parts of the REST API it relies on, so that idempotent ``create``, per-item
errors, mapping errors from the installed template and outages are exercised as a cluster
would answer them:

- ``GET /``: cluster info (name, ``version.number``, tagline);
- ``PUT|GET /_index_template/{name}``: composable templates (``index_patterns``,
  ``template.mappings``); a template's mappings are enforced on the indices it matches;
- ``POST /_bulk``: NDJSON, ``create`` and ``index`` actions; ``{"took", "errors", "items":
  [{"create": {"_index", "_id", "_version", "result", "_shards", "_seq_no", "_primary_term",
  "status"}}]}``; a second ``create`` of an id is ``409 version_conflict_engine_exception``;
  a value the mapping refuses is ``400 document_parsing_exception``;
- ``GET|POST /{target}/_search``: ``query.bool.filter`` of ``term`` / ``range`` (and
  ``match_all``), ``sort``, ``size`` (at most 10,000: ``index.max_result_window``),
  ``search_after``; ``ignore_unavailable`` / ``allow_no_indices``.

TLS when given an ``ssl_context`` (certificates from ``harness.azure_keyvault.make_tls``).
Authentication (when users or API keys are set): ``Authorization: Basic`` or ``ApiKey``,
else ``401 security_exception`` with a ``WWW-Authenticate`` challenge. Faults: ``down()`` /
``up()`` (the port stops accepting connections and comes back), ``mode = "503"`` / ``"429"``
(every request), ``mode = "hang"`` (requests never answered until ``mode`` changes or the
server stops), ``item_status`` (a per-document status for ``_bulk`` items, e.g. 429 on
some), ``max_content_length`` (a larger request is ``413``).

What it must never do: listen beyond 127.0.0.1, outlive the test (``serve`` stops it), or
accept input a real cluster would refuse for the features above.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import fnmatch
import functools
import itertools
import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.redis import free_port

MAX_RESULT_WINDOW = 10_000
VERSION = '8.15.0'


def compare_sort_values(a: list[Any], b: list[Any], order: list[str]) -> int:
    """Elasticsearch's order of two hits' sort values: key by key, missing values last."""
    for x, y, direction in zip(a, b, order):
        if x == y:
            continue
        if x is None:
            return 1
        if y is None:
            return -1
        result = -1 if x < y else 1
        return result if direction == 'asc' else -result
    return 0


def error_body(status: int, kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    cause = {'type': kind, 'reason': reason, **extra}
    return {'error': {'root_cause': [cause], **cause}, 'status': status}


def _error(status: int, kind: str, reason: str, **extra: Any) -> web.Response:
    response = web.json_response(error_body(status, kind, reason, **extra), status=status)
    if status == 401:
        response.headers['WWW-Authenticate'] = 'Basic realm="security" charset="UTF-8", ApiKey'
    return response


def parse_date(value: Any) -> float | None:
    """Epoch milliseconds of a value ``strict_date_optional_time||epoch_millis`` accepts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace('Z', '+00:00'))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp() * 1000


class MappingError(Exception):
    """A value the index's mapping refuses (``document_parsing_exception``)."""


def _preview(value: Any) -> str:
    return json.dumps(value)[:40]


def check_document(doc: Any, mappings: dict[str, Any], doc_id: str, path: str = '') -> None:
    """Raise MappingError when ``doc`` does not fit ``mappings`` (types of mapped fields; with
    ``dynamic: false`` unmapped fields are kept in ``_source`` and not checked)."""
    if not isinstance(doc, dict):
        raise MappingError(f'[1:1] failed to parse: source is not an object in document with id {doc_id!r}')
    properties = mappings.get('properties', {})
    for name, value in doc.items():
        mapping = properties.get(name)
        full = f'{path}{name}'
        if mapping is None or value is None:
            continue
        kind = mapping.get('type', 'object' if 'properties' in mapping else None)
        values = value if isinstance(value, list) and kind != 'object' else [value]
        for item in values:
            if item is None:
                continue
            if kind == 'keyword':
                if isinstance(item, (dict, list)):
                    raise MappingError(f"[1:1] failed to parse field [{full}] of type [keyword] in document with id "
                                       f"{doc_id!r}. Preview of field's value: '{_preview(item)}'")
            elif kind == 'long':
                ok = isinstance(item, int) and not isinstance(item, bool)
                if isinstance(item, str):
                    try:
                        int(item)
                        ok = True
                    except ValueError:
                        ok = False
                if not ok:
                    raise MappingError(f"[1:1] failed to parse field [{full}] of type [long] in document with id "
                                       f"{doc_id!r}. Preview of field's value: '{_preview(item)}'")
            elif kind == 'date':
                if parse_date(item) is None:
                    raise MappingError(f"[1:1] failed to parse field [{full}] of type [date] in document with id "
                                       f"{doc_id!r}. Preview of field's value: '{_preview(item)}'")
            elif kind == 'object':
                if not isinstance(item, dict):
                    raise MappingError(f'[1:1] object mapping for [{full}] tried to parse field [{full}] as object, '
                                       'but found a concrete value')
                if mapping.get('enabled', True) and 'properties' in mapping:
                    check_document(item, mapping, doc_id, f'{full}.')


@dataclass
class Index:
    name: str
    mappings: dict[str, Any] | None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)


class ElasticsearchServer:
    """One stand-in cluster on a fixed 127.0.0.1 port (kept across ``down``/``up``)."""

    def __init__(self, port: int | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.users: dict[str, str] = {}
        self.api_keys: set[str] = set()
        self.templates: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, Index] = {}
        self.mode: str | None = None
        self.item_status: Callable[[dict[str, Any]], int | None] | None = None
        self.max_content_length: int | None = None
        self.requests: list[tuple[str, str]] = []
        self.bulk_actions = 0
        self.created = 0
        self.conflicts = 0
        self.authorizations: list[str] = []
        self._seq = itertools.count()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f'{"https" if self.ssl_context else "http"}://127.0.0.1:{self.port}'

    # -- lifecycle --

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[ElasticsearchServer]:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route('*', '/{tail:.*}', self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.up()
        try:
            yield self
        finally:
            self._release.set()
            await self._runner.cleanup()
            self._runner = None

    async def down(self) -> None:
        """Stop accepting connections and drop the open ones (clients get "connection refused")."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        assert self._runner is not None and self._runner.server is not None
        for connection in self._runner.server.connections:
            connection.force_close()
            if connection.transport is not None:
                connection.transport.close()

    async def up(self) -> None:
        assert self._runner is not None
        if self._site is None:
            self._site = web.TCPSite(self._runner, '127.0.0.1', self.port, reuse_address=True,
                                     ssl_context=self.ssl_context)
            await self._site.start()

    def set_mode(self, mode: str | None) -> None:
        self.mode = mode
        if mode != 'hang':
            self._release.set()
            self._release = asyncio.Event()

    # -- what a test inspects --

    def documents(self, pattern: str = '*') -> dict[str, dict[str, Any]]:
        """``_id`` -> ``_source`` of every document in the indices matching ``pattern``."""
        found: dict[str, dict[str, Any]] = {}
        for index in self.indices.values():
            if fnmatch.fnmatchcase(index.name, pattern):
                found.update(index.docs)
        return found

    # -- HTTP --

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.mode == 'hang':
            await self._release.wait()
        if self.mode in ('503', '429'):
            status = int(self.mode)
            kind = 'unavailable_shards_exception' if status == 503 else 'es_rejected_execution_exception'
            return _error(status, kind, 'the stand-in cluster is set to refuse every request')
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        body = await request.read()
        if self.max_content_length is not None and len(body) > self.max_content_length:
            return web.Response(status=413, text='')
        path = request.path.rstrip('/') or '/'
        parts = [p for p in path.split('/') if p]
        if path == '/' and request.method in ('GET', 'HEAD'):
            return web.json_response({
                'name': 'stand-in-node', 'cluster_name': 'agentgov-test', 'cluster_uuid': 'agentgov-test-cluster',
                'version': {'number': VERSION, 'build_flavor': 'default', 'lucene_version': '9.11.1',
                            'minimum_wire_compatibility_version': '7.17.0',
                            'minimum_index_compatibility_version': '7.0.0'},
                'tagline': 'You Know, for Search',
            })
        if parts[:1] == ['_index_template'] and len(parts) == 2:
            return self._template(request.method, parts[1], body)
        if parts == ['_bulk'] and request.method in ('POST', 'PUT'):
            return self._bulk(request, body)
        if len(parts) == 2 and parts[1] == '_search' and request.method in ('GET', 'POST'):
            return self._search(parts[0], request, body)
        return _error(400, 'illegal_argument_exception',
                      f'no handler found for uri [{request.path}] and method [{request.method}]')

    def _authenticate(self, request: web.Request) -> web.Response | None:
        if not self.users and not self.api_keys:
            return None
        header = request.headers.get('Authorization', '')
        self.authorizations.append(header)
        scheme, _, value = header.partition(' ')
        if scheme == 'ApiKey' and value in self.api_keys:
            return None
        if scheme == 'Basic':
            try:
                user, _, password = base64.b64decode(value).decode().partition(':')
            except ValueError:
                user, password = '', ''
            if user in self.users and self.users[user] == password:
                return None
            return _error(401, 'security_exception', f'unable to authenticate user [{user}] for REST request '
                                                     f'[{request.path}]')
        return _error(401, 'security_exception', f'missing authentication credentials for REST request '
                                                 f'[{request.path}]')

    # -- templates and indices --

    def _template(self, method: str, name: str, body: bytes) -> web.Response:
        if method == 'GET':
            if name not in self.templates:
                return _error(404, 'resource_not_found_exception', f'index template matching [{name}] not found')
            return web.json_response({'index_templates': [{'name': name, 'index_template': self.templates[name]}]})
        if method != 'PUT':
            return _error(405, 'illegal_argument_exception', f'method [{method}] not allowed')
        try:
            template = json.loads(body)
        except ValueError:
            return _error(400, 'x_content_parse_exception', '[1:1] failed to parse the template')
        patterns = template.get('index_patterns') if isinstance(template, dict) else None
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not patterns:
            return _error(400, 'action_request_validation_exception',
                          'Validation Failed: 1: index patterns are missing;')
        template['index_patterns'] = patterns
        self.templates[name] = template
        return web.json_response({'acknowledged': True})

    def _mappings_for(self, index: str) -> dict[str, Any] | None:
        chosen, priority = None, -1
        for template in self.templates.values():
            if any(fnmatch.fnmatchcase(index, p) for p in template['index_patterns']):
                if template.get('priority', 0) > priority:
                    chosen, priority = template, template.get('priority', 0)
        if chosen is None:
            return None
        mappings = chosen.get('template', {}).get('mappings')
        return mappings if isinstance(mappings, dict) else None

    def _index(self, name: str) -> Index:
        if name not in self.indices:
            self.indices[name] = Index(name, self._mappings_for(name))
        return self.indices[name]

    # -- _bulk --

    def _bulk(self, request: web.Request, body: bytes) -> web.Response:
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        if content_type not in ('application/x-ndjson', 'application/json'):
            return _error(406, 'media_type_header_exception', f'Content-Type header [{content_type}] is not supported')
        if not body.endswith(b'\n'):
            return _error(400, 'illegal_argument_exception', 'The bulk request must be terminated by a newline [\\n]')
        lines = body.split(b'\n')[:-1]
        items: list[dict[str, Any]] = []
        position = 0
        while position < len(lines):
            try:
                action = json.loads(lines[position])
            except ValueError:
                return _error(400, 'x_content_parse_exception', f'[{position + 1}:1] malformed action line')
            if not isinstance(action, dict) or len(action) != 1:
                return _error(400, 'illegal_argument_exception', 'Malformed action/metadata line')
            (op, meta), = action.items()
            if op not in ('create', 'index') or not isinstance(meta, dict):
                return _error(400, 'illegal_argument_exception', f'Action/metadata line [{position + 1}] contains an '
                                                                 f'unknown parameter [{op}]')
            if position + 1 >= len(lines):
                return _error(400, 'illegal_argument_exception', 'The bulk request must be terminated by a newline')
            try:
                doc = json.loads(lines[position + 1])
            except ValueError:
                doc = None
            position += 2
            self.bulk_actions += 1
            items.append({op: self._bulk_item(op, meta, doc)})
        errors = any('error' in next(iter(item.values())) for item in items)
        return web.json_response({'errors': errors, 'took': 3, 'items': items})

    def _bulk_item(self, op: str, meta: dict[str, Any], doc: Any) -> dict[str, Any]:
        name = meta.get('_index')
        doc_id = meta.get('_id')
        if not isinstance(name, str) or not isinstance(doc_id, str):
            return {'_index': name, '_id': doc_id, 'status': 400,
                    'error': {'type': 'action_request_validation_exception',
                              'reason': 'Validation Failed: 1: index is missing;'}}
        result: dict[str, Any] = {'_index': name, '_id': doc_id}
        forced = self.item_status(doc) if self.item_status is not None and isinstance(doc, dict) else None
        if forced is not None:
            kind = {429: 'es_rejected_execution_exception', 503: 'unavailable_shards_exception',
                    400: 'document_parsing_exception'}.get(forced, 'exception')
            return {**result, 'status': forced, 'error': {'type': kind, 'reason': f'the stand-in answers {forced}'}}
        index = self._index(name)
        if op == 'create' and doc_id in index.docs:
            self.conflicts += 1
            return {**result, 'status': 409, 'error': {
                'type': 'version_conflict_engine_exception',
                'reason': f'[{doc_id}]: version conflict, document already exists (current version [1])',
                'index_uuid': 'stand-in-uuid', 'shard': '0', 'index': name}}
        try:
            if not isinstance(doc, dict):
                raise MappingError('[1:1] failed to parse: the source is not a JSON object')
            if index.mappings is not None:
                check_document(doc, index.mappings, doc_id)
        except MappingError as e:
            return {**result, 'status': 400, 'error': {'type': 'document_parsing_exception', 'reason': str(e)}}
        index.docs[doc_id] = doc
        self.created += 1
        return {**result, '_version': 1, 'result': 'created',
                '_shards': {'total': 2, 'successful': 1, 'failed': 0},
                '_seq_no': next(self._seq), '_primary_term': 1, 'status': 201}

    # -- _search --

    def _search(self, target: str, request: web.Request, body: bytes) -> web.Response:
        try:
            query = json.loads(body) if body else {}
        except ValueError:
            return _error(400, 'x_content_parse_exception', '[1:1] failed to parse the search body')
        if not isinstance(query, dict):
            return _error(400, 'parsing_exception', 'the search body must be an object')
        names = self._resolve(target, request.query)
        if isinstance(names, web.Response):
            return names
        size = query.get('size', 10)
        if not isinstance(size, int) or size < 0:
            return _error(400, 'illegal_argument_exception', '[size] must be a non-negative integer')
        if size > MAX_RESULT_WINDOW:
            return _error(400, 'illegal_argument_exception',
                          f'Result window is too large, from + size must be less than or equal to: '
                          f'[{MAX_RESULT_WINDOW}] but was [{size}].')
        try:
            match = self._matcher(query.get('query', {'match_all': {}}))
            sort = self._sort_spec(query.get('sort', []))
        except ValueError as e:
            return _error(400, 'parsing_exception', str(e))
        hits = []
        for name in names:
            mappings = self.indices[name].mappings or {}
            for doc_id, doc in self.indices[name].docs.items():
                if match(doc, mappings):
                    hits.append((name, doc_id, doc, [self._sort_value(doc, f, mappings) for f, _ in sort]))
        order = [direction for _, direction in sort]
        hits.sort(key=functools.cmp_to_key(lambda a, b: compare_sort_values(a[3], b[3], order)))
        after = query.get('search_after')
        if after is not None:
            if not isinstance(after, list) or len(after) != len(sort):
                return _error(400, 'illegal_argument_exception',
                              'search_after has a different number of sort values than the sort')
            hits = [h for h in hits if compare_sort_values(h[3], after, order) > 0]
        total = len(hits)
        shown = hits[:size]
        return web.json_response({
            'took': 1, 'timed_out': False,
            '_shards': {'total': len(names), 'successful': len(names), 'skipped': 0, 'failed': 0},
            'hits': {'total': {'value': total, 'relation': 'eq'}, 'max_score': None, 'hits': [
                {'_index': name, '_id': doc_id, '_score': None, '_source': doc,
                 **({'sort': values} if sort else {})} for name, doc_id, doc, values in shown]},
        })

    def _resolve(self, target: str, params: Any) -> list[str] | web.Response:
        ignore = params.get('ignore_unavailable') == 'true'
        allow_none = params.get('allow_no_indices', 'true') == 'true'
        names: list[str] = []
        for expression in target.split(','):
            if any(ch in expression for ch in '*?'):
                found = sorted(n for n in self.indices if fnmatch.fnmatchcase(n, expression))
                if not found and not allow_none:
                    return _error(404, 'index_not_found_exception', f'no such index [{expression}]')
                names += found
            elif expression in self.indices:
                names.append(expression)
            elif not ignore:
                return _error(404, 'index_not_found_exception', f'no such index [{expression}]',
                              index=expression)
        return names

    @staticmethod
    def _field_type(name: str, mappings: dict[str, Any]) -> str | None:
        mapping = mappings.get('properties', {}).get(name)
        return mapping.get('type') if isinstance(mapping, dict) else None

    def _matcher(self, clause: Any) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
        if not isinstance(clause, dict) or len(clause) != 1:
            raise ValueError('[query] malformed query, expected a single clause')
        (kind, spec), = clause.items()
        if kind == 'match_all':
            return lambda doc, mappings: True
        if kind == 'bool':
            if not isinstance(spec, dict) or set(spec) - {'filter', 'must'}:
                raise ValueError('[bool] query malformed or with a clause the stand-in does not know')
            clauses = []
            for key in ('filter', 'must'):
                value = spec.get(key, [])
                clauses += value if isinstance(value, list) else [value]
            matchers = [self._matcher(c) for c in clauses]
            return lambda doc, mappings: all(m(doc, mappings) for m in matchers)
        if kind == 'term':
            if not isinstance(spec, dict) or len(spec) != 1:
                raise ValueError('[term] query malformed, no start_object after query name')
            (name, wanted), = spec.items()
            if isinstance(wanted, dict):
                wanted = wanted.get('value')

            def term(doc: dict[str, Any], mappings: dict[str, Any]) -> bool:
                value = doc.get(name)
                values = value if isinstance(value, list) else [value]
                if self._field_type(name, mappings) == 'long':
                    return any(v is not None and str(v) == str(wanted) for v in values)
                return any(v == wanted for v in values)
            return term
        if kind == 'range':
            if not isinstance(spec, dict) or len(spec) != 1:
                raise ValueError('[range] query malformed, no start_object after query name')
            (name, bounds), = spec.items()
            if not isinstance(bounds, dict) or set(bounds) - {'gte', 'gt', 'lte', 'lt', 'format'}:
                raise ValueError('[range] query does not support the given parameters')

            def within(doc: dict[str, Any], mappings: dict[str, Any]) -> bool:
                is_date = self._field_type(name, mappings) == 'date'
                convert: Callable[[Any], Any] = parse_date if is_date else (lambda v: v)
                value = convert(doc.get(name))
                if value is None:
                    return False
                for op, bound in bounds.items():
                    if op == 'format':
                        continue
                    limit = convert(bound)
                    if limit is None:
                        raise ValueError(f'failed to parse date field [{bound}]')
                    if not {'gte': value >= limit, 'gt': value > limit, 'lte': value <= limit,
                            'lt': value < limit}[op]:
                        return False
                return True
            return within
        raise ValueError(f'unknown query [{kind}]')

    @staticmethod
    def _sort_spec(sort: Any) -> list[tuple[str, str]]:
        if not isinstance(sort, list):
            sort = [sort]
        spec = []
        for item in sort:
            if isinstance(item, str):
                spec.append((item, 'asc'))
            elif isinstance(item, dict) and len(item) == 1:
                (name, order), = item.items()
                if isinstance(order, dict):
                    order = order.get('order', 'asc')
                if order not in ('asc', 'desc'):
                    raise ValueError(f'[sort] unknown order [{order}]')
                spec.append((name, order))
            else:
                raise ValueError('[sort] malformed sort')
        return spec

    def _sort_value(self, doc: dict[str, Any], name: str, mappings: dict[str, Any]) -> Any:
        value = doc.get(name)
        if self._field_type(name, mappings) == 'date':
            millis = parse_date(value)
            return int(millis) if millis is not None else None
        return value
