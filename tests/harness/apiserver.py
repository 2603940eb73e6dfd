"""
A test double of kube-apiserver, built on kmock's ``KubernetesEmulator``.

What it is for: integration tests of the operator (kopf), of ``kubectl`` and of the official
``kubernetes`` client against an in-memory API server that behaves like the real one for the
semantics those clients depend on — discovery (built-ins + CRDs from files and from the API),
server-set metadata, optimistic concurrency, the status and scale subresources, the four patch
types, finalizers and ownerReference garbage collection, lists, label/field selectors, watches
with resourceVersion replay and ``410 Gone``, CRD schema validation (via ``harness.schema``) and
server-side tables for ``kubectl get``. ``docs/testing.md`` lists what it still lacks.

What it must never do:

- never invent a behaviour the real server does not have to make a test pass: where it
  approximates, the approximation is named in ``docs/testing.md``;
- never answer with kmock's traceback ``details`` — every error is a real ``Status`` object;
- never touch a real cluster, the network beyond the loopback, or global client state
  (no ``KUBECONFIG``, no ``kubernetes.config`` calls);
- never block its event loop: all state changes are synchronous and atomic between ``await``s,
  only watch streams wait.

Only resource requests (``/api/...`` and ``/apis/...`` below a group-version) are served here;
any other path first goes to kmock's own reactions (so ``server['/x'] << ...`` still works)
and then answers ``404`` as the real server does.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import math
import pathlib
import random
import re
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, cast

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps as kmock_apps
from kmock._internal import enums as kmock_enums
from kmock._internal import rendering as kmock_rendering
from typing_extensions import override

from harness import schema as crd_schema

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

SERVER_VERSION: Final[JSON] = {
    'major': '1',
    'minor': '32',
    'gitVersion': 'v1.32.0',
    'gitCommit': '0000000000000000000000000000000000000000',
    'gitTreeState': 'clean',
    'buildDate': '2024-12-11T00:00:00Z',
    'goVersion': 'go1.23.3',
    'compiler': 'gc',
    'platform': 'linux/amd64',
}

DEFAULT_NAMESPACES: Final[tuple[str, ...]] = ('default', 'kube-system', 'kube-public', 'kube-node-lease')

CRD_GROUP: Final = 'apiextensions.k8s.io'
CRD_PLURAL: Final = 'customresourcedefinitions'
CRD_CLEANUP_FINALIZER: Final = 'customresourcecleanup.apiextensions.k8s.io'
FOREGROUND_FINALIZER: Final = 'foregroundDeletion'
ORPHAN_FINALIZER: Final = 'orphan'
NAMESPACE_FINALIZER: Final = 'kubernetes'

CR_VERBS: Final = ('delete', 'deletecollection', 'get', 'list', 'patch', 'create', 'update', 'watch')
SUBRESOURCE_VERBS: Final = ('get', 'patch', 'update')

# Built-in resources whose registry strategy keeps metadata.generation (set to 1 on create and
# bumped when the spec changes). ConfigMaps, Secrets, Services, Pods (in 1.32) have none.
GENERATION_TRACKED: Final[frozenset[tuple[str, str]]] = frozenset({
    ('apps', 'deployments'), ('apps', 'replicasets'), ('apps', 'statefulsets'), ('apps', 'daemonsets'),
    ('batch', 'jobs'), ('batch', 'cronjobs'), ('networking.k8s.io', 'ingresses'),
    ('networking.k8s.io', 'networkpolicies'), ('policy', 'poddisruptionbudgets'),
    ('autoscaling', 'horizontalpodautoscalers'), (CRD_GROUP, CRD_PLURAL),
    ('admissionregistration.k8s.io', 'validatingwebhookconfigurations'),
    ('admissionregistration.k8s.io', 'mutatingwebhookconfigurations'),
    ('', 'replicationcontrollers'),
})

# Deployments also bump the generation when annotations change (apps/deployment/strategy.go).
GENERATION_ON_ANNOTATIONS: Final[frozenset[tuple[str, str]]] = frozenset({('apps', 'deployments')})

# Stores that answer DELETE with the object rather than a Status (ReturnDeletedObject: true).
RETURNS_DELETED_OBJECT: Final[frozenset[tuple[str, str]]] = frozenset({
    ('', 'pods'), ('', 'serviceaccounts'), ('', 'persistentvolumes'), ('', 'persistentvolumeclaims'),
})

# Field selectors the real server supports beyond metadata.name/metadata.namespace.
EXTRA_FIELD_LABELS: Final[Mapping[tuple[str, str], frozenset[str]]] = {
    ('', 'pods'): frozenset({'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName',
                             'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase',
                             'status.podIP', 'status.nominatedNodeName'}),
    ('', 'events'): frozenset({'involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name',
                               'involvedObject.uid', 'involvedObject.apiVersion',
                               'involvedObject.resourceVersion', 'involvedObject.fieldPath',
                               'reason', 'reportingComponent', 'source', 'type'}),
    ('', 'secrets'): frozenset({'type'}),
    ('', 'namespaces'): frozenset({'status.phase'}),
    ('', 'nodes'): frozenset({'spec.unschedulable'}),
    ('', 'replicationcontrollers'): frozenset({'status.replicas'}),
    ('apps', 'replicasets'): frozenset({'status.replicas'}),
    ('batch', 'jobs'): frozenset({'status.successful'}),
}

NAME_DESCRIPTION: Final = (
    'Name must be unique within a namespace. Is required when creating resources, although some '
    'resources may allow a client to request the generation of an appropriate name automatically. '
    'Name is primarily intended for creation idempotence and configuration definition. Cannot be '
    'updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names'
)
CREATION_TIMESTAMP_DESCRIPTION: Final = (
    'CreationTimestamp is a timestamp representing the server time when this object was created. '
    'It is not guaranteed to be set in happens-before order across separate operations. Clients '
    'may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the '
    'system. Read-only. Null for lists. More info: '
    'https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata'
)

DNS1123_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
DNS1123_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
DNS1035_LABEL = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
GENERATE_NAME_ALPHABET: Final = 'bcdfghjklmnpqrstvwxz2456789'  # as in apiserver's names.SimpleNameGenerator

MERGE_PATCH: Final = 'application/merge-patch+json'
JSON_PATCH: Final = 'application/json-patch+json'
STRATEGIC_PATCH: Final = 'application/strategic-merge-patch+json'
APPLY_PATCH: Final = 'application/apply-patch+yaml'


# --------------------------------------------------------------------------------------------
# Errors: real Status objects (k8s.io/apimachinery/pkg/api/errors)
# --------------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered to the client as a ``Status`` object with its own HTTP code."""

    def __init__(self, status: JSON) -> None:
        super().__init__(status.get('message', ''))
        self.status = status

    @property
    def code(self) -> int:
        return int(self.status.get('code', 500))


def failure(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    """A ``Status`` with ``status: Failure``, in the field order the real server writes."""
    status: JSON = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure', 'message': message}
    if reason:  # StatusReasonUnknown is "" and omitted
        status['reason'] = reason
    if details is not None:
        status['details'] = details
    status['code'] = code
    return status


def _qualified(group: str, name: str) -> str:
    """``GroupResource.String()`` / ``GroupKind.String()``: ``name`` or ``name.group``."""
    return f'{name}.{group}' if group else name


def _resource_details(group: str, plural: str, name: str) -> JSON:
    details: JSON = {'name': name}
    if group:
        details['group'] = group
    details['kind'] = plural
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(failure(404, 'NotFound', f'{_qualified(group, plural)} {_go_quote(name)} not found',
                            _resource_details(group, plural, name)))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(failure(409, 'AlreadyExists',
                            f'{_qualified(group, plural)} {_go_quote(name)} already exists',
                            _resource_details(group, plural, name)))


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(failure(409, 'Conflict',
                            f'Operation cannot be fulfilled on {_qualified(group, plural)} '
                            f'{_go_quote(name)}: {why}',
                            _resource_details(group, plural, name)))


MODIFIED_CONFLICT: Final = 'the object has been modified; please apply your changes to the latest version and try again'


def bad_request(message: str) -> ApiError:
    return ApiError(failure(400, 'BadRequest', message))


def method_not_allowed() -> ApiError:
    return ApiError(failure(405, 'MethodNotAllowed',
                            'the server does not allow this method on the requested resource', {}))


def resource_not_found() -> ApiError:
    return ApiError(failure(404, 'NotFound', 'the server could not find the requested resource', {}))


def unsupported_media_type(accepted: Sequence[str]) -> ApiError:
    return ApiError(failure(415, 'UnsupportedMediaType',
                            'the body of the request was in an unknown format - accepted media types '
                            f'include: {", ".join(accepted)}', {}))


def expired(message: str) -> ApiError:
    return ApiError(failure(410, 'Expired', message))


def internal_error(message: str) -> ApiError:
    return ApiError(failure(500, 'InternalError', f'Internal error occurred: {message}',
                            {'causes': [{'message': message}]}))


@attrs.frozen
class Cause:
    """One field error of this module's own checks (metadata, preconditions)."""
    field: str
    type: str  # the CauseType: FieldValueRequired, FieldValueInvalid, FieldValueForbidden, ...
    body: str  # field.Error.ErrorBody(): "Required value: ...", "Invalid value: ...: ..."


def invalid(group: str, kind: str, name: str, causes: Sequence[Cause]) -> ApiError:
    """``errors.NewInvalid``: 422 with one cause per field error."""
    texts = [f'{cause.field}: {cause.body}' for cause in causes]
    aggregate = texts[0] if len(texts) == 1 else '[' + ', '.join(texts) + ']'
    details: JSON = {'name': name}
    if group:
        details['group'] = group
    details['kind'] = kind
    details['causes'] = [{'reason': c.type, 'message': c.body, 'field': c.field} for c in causes]
    return ApiError(failure(422, 'Invalid', f'{_qualified(group, kind)} {_go_quote(name)} is invalid: {aggregate}',
                            details))


def _go_quote(value: str) -> str:
    """Go's ``%q`` for the strings that appear in messages (close enough: JSON escaping)."""
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Resource types
# --------------------------------------------------------------------------------------------

@attrs.frozen
class ResourceType:
    """One served group/version/resource with what the server needs to know about it."""
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    crd_name: str | None = None  # set for custom resources
    list_kind: str | None = None
    schema: JSON | None = None  # the version's openAPIV3Schema
    printer_columns: tuple[JSON, ...] = ()
    scale: JSON | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath
    selectable_fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def custom(self) -> bool:
        return self.crd_name is not None

    @property
    def storage_key(self) -> tuple[str, str]:
        return self.group, self.plural

    @property
    def list_kind_name(self) -> str:
        return self.list_kind or f'{self.kind}List'


StoreKey = tuple[str, str, str | None, str]  # group, plural, namespace, name


@attrs.frozen
class _Event:
    rv: int
    group: str
    plural: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: JSON
    prev: JSON | None


@attrs.define(eq=False)
class _Watcher:
    group: str
    plural: str
    matches: Callable[[JSON], bool]
    queue: asyncio.Queue[_Event | None]


@attrs.frozen
class _Route:
    """A parsed resource URL."""
    group: str
    version: str
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_resource_path(path: str) -> _Route | None:
    """Split ``/api(s)/...`` into its parts; ``None`` for non-API paths.

    kmock's own parser cannot split ``/api/v1/namespaces`` (the namespace list), hence our own.
    """
    parts = [part for part in path.split('/') if part]
    if len(parts) >= 2 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == 'apis':
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == 'namespaces' and rest[2] not in ('status', 'finalize'):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) >= 2 else None
    subresource = '/'.join(rest[2:]) or None
    return _Route(group, version, plural, namespace, name, subresource)


def _kube_version_key(version: str) -> tuple[int, int, int, str]:
    """Sort key for versions as the real server orders them (GA > beta > alpha, newest first)."""
    match = re.fullmatch(r'v(\d+)(?:(alpha|beta)(\d+))?', version)
    if not match:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stability = {'alpha': 2, 'beta': 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stability, -major, -minor, version)


# --------------------------------------------------------------------------------------------
# Pure helpers: time, patches, selectors, jsonpath, printing
# --------------------------------------------------------------------------------------------

def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse_time(value: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(value, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def human_duration(seconds_float: float) -> str:
    """apimachinery's ``duration.HumanDuration`` (what ``kubectl get`` shows as AGE)."""
    seconds = int(seconds_float)
    if seconds < -1:
        return '<invalid>'
    if seconds < 0:
        return '0s'
    if seconds < 60 * 2:
        return f'{seconds}s'
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f'{minutes}m' if rest == 0 else f'{minutes}m{rest}s'
    if minutes < 60 * 3:
        return f'{minutes}m'
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f'{hours}h' if rest == 0 else f'{hours}h{rest}m'
    if hours < 48:
        return f'{hours}h'
    if hours < 24 * 8:
        rest = hours % 24
        return f'{hours // 24}d' if rest == 0 else f'{hours // 24}d{rest}h'
    if hours < 24 * 365 * 2:
        return f'{hours // 24}d'
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f'{hours // 24 // 365}y' if days == 0 else f'{hours // 24 // 365}y{days}d'
    return f'{hours // 24 // 365}y'


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, ``null`` deletes, everything else replaces.
    Returns a new value; neither argument is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    return _merge_into(copy.deepcopy(target) if isinstance(target, dict) else {}, patch)


def _merge_into(result: JSON, patch: JSON) -> JSON:
    """``merge_patch`` into ``result``, which is changed: the caller's own copy."""
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = _merge_into(current if isinstance(current, dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# Strategic merge patch metadata for built-in types: list field -> merge key. A list field not
# named here is atomic (replaced). The real server reads this from the Go struct tags
# (patchStrategy/patchMergeKey); this table covers the lists of core/apps/batch/networking types.
SMP_MERGE_KEYS: Final[Mapping[str, str]] = {
    'containers': 'name', 'initContainers': 'name', 'ephemeralContainers': 'name',
    'volumes': 'name', 'env': 'name', 'volumeMounts': 'mountPath', 'volumeDevices': 'devicePath',
    'imagePullSecrets': 'name', 'hostAliases': 'ip', 'ownerReferences': 'uid', 'conditions': 'type',
    'topologySpreadConstraints': 'topologyKey', 'resourceClaims': 'name', 'webhooks': 'name',
    'secrets': 'name',
}
SMP_PRIMITIVE_MERGE_LISTS: Final[frozenset[str]] = frozenset({'finalizers'})
_SMP_DELETE: Final = object()


def _smp_merge_key(path: tuple[str, ...]) -> str | None:
    field = path[-1]
    if field == 'ports':
        # Container ports merge on containerPort, Service ports on port.
        in_container = len(path) >= 2 and path[-2] in ('containers', 'initContainers', 'ephemeralContainers')
        return 'containerPort' if in_container else 'port'
    if field == 'secrets' and 'spec' in path:  # only ServiceAccount.secrets (top-level) merges
        return None
    return SMP_MERGE_KEYS.get(field)


def strategic_merge_patch(original: JSON, patch: JSON) -> JSON:
    """Apply a strategic merge patch to a built-in object (see SMP_MERGE_KEYS for the limits).

    Supported directives: ``$patch: replace|delete|merge`` on maps and list items,
    ``$retainKeys``, ``$deleteFromPrimitiveList/<field>``, ``$setElementOrder/<field>``.
    Returns a new object; ``original`` is not changed.
    """
    result = _smp_map(copy.deepcopy(original), patch, ())
    return cast(JSON, {} if result is _SMP_DELETE else result)


# The _smp_* helpers may take apart ``original``: strategic_merge_patch hands them its own copy.

def _smp_map(original: JSON, patch: JSON, path: tuple[str, ...]) -> Any:
    directive = patch.get('$patch')
    if directive == 'replace':
        return _smp_strip({key: value for key, value in patch.items() if key != '$patch'})
    if directive == 'delete':
        return _SMP_DELETE
    result = dict(original)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ('$patch', '$retainKeys'):
            continue
        if key.startswith('$setElementOrder/'):
            orders[key.split('/', 1)[1]] = list(value or [])
            continue
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [item for item in result[field] if item not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            current = result.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value, path + (key,))
            if merged is _SMP_DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            current = result.get(key)
            result[key] = _smp_list(current if isinstance(current, list) else [], value, path + (key,))
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _smp_reorder(result[field], order, _smp_merge_key(path + (field,)))
    if isinstance(patch.get('$retainKeys'), list):
        retained = set(patch['$retainKeys'])
        result = {key: value for key, value in result.items() if key in retained}
    return result


def _smp_list(original: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    field = path[-1]
    if any(isinstance(item, dict) and item.get('$patch') == 'replace' for item in patch):
        return [_smp_strip(item) for item in patch if not (isinstance(item, dict) and '$patch' in item)]
    if field in SMP_PRIMITIVE_MERGE_LISTS:
        result = list(original)
        result.extend(item for item in patch if item not in result)
        return result
    key = _smp_merge_key(path)
    if key is None:
        return [_smp_strip(item) for item in patch]
    result = list(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_smp_strip(item))
            continue
        index = next((i for i, existing in enumerate(result)
                      if isinstance(existing, dict) and existing.get(key) == item[key]), None)
        if item.get('$patch') == 'delete':
            if index is not None:
                del result[index]
            continue
        if index is None:
            merged = _smp_map({}, item, path)
            if merged is not _SMP_DELETE:
                result.append(merged)
        else:
            merged = _smp_map(result[index], item, path)
            if merged is _SMP_DELETE:
                del result[index]
            else:
                result[index] = merged
    return result


def _smp_reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Put the listed elements first, in the given order; the rest keep their relative order."""
    def identity(item: Any) -> Any:
        if key is not None and isinstance(item, dict):
            return json.dumps(item.get(key), sort_keys=True)
        return json.dumps(item, sort_keys=True)
    ranks = {identity(item): rank for rank, item in enumerate(order)}
    return sorted(items, key=lambda item: ranks.get(identity(item), len(ranks)))


def _smp_strip(value: Any) -> Any:
    """Drop patch directives from a value that is inserted as a whole."""
    if isinstance(value, dict):
        return {key: _smp_strip(item) for key, item in value.items() if not key.startswith('$')}
    if isinstance(value, list):
        return [_smp_strip(item) for item in value]
    return value


@attrs.frozen
class LabelRequirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == '=':
            return present and value == self.values[0]
        if self.operator == '!=':
            return not present or value != self.values[0]
        if self.operator == 'in':
            return present and value in self.values
        if self.operator == 'notin':
            return not present or value not in self.values
        if self.operator == 'exists':
            return present
        if self.operator == '!':
            return not present
        if self.operator in ('gt', 'lt'):
            try:
                number, bound = int(str(value)), int(self.values[0])
            except ValueError:
                return False
            return present and (number > bound if self.operator == 'gt' else number < bound)
        return False  # pragma: no cover  # the parser creates no other operators


_LABEL_KEY = re.compile(r'^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?'
                        r'[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')
_LABEL_VALUE = re.compile(r'^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$')


def parse_label_selector(text: str) -> list[LabelRequirement]:
    """Parse ``a=b,c!=d,e in (x,y),!f,g`` (apimachinery ``labels.Parse``); ValueError if invalid."""
    parts: list[str] = []
    depth, current = 0, ''
    for char in text:
        if char == '(':
            depth += 1
        elif char == ')':
            depth -= 1
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
        else:
            current += char
    parts.append(current)
    if text.strip() == '':
        return []
    requirements: list[LabelRequirement] = []
    for raw in parts:
        part = raw.strip()
        if not part:
            raise ValueError("found '', expected: identifier")
        set_match = re.fullmatch(r'(\S+)\s+(in|notin)\s*\((.*)\)', part)
        op_match = re.fullmatch(r'([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(\S*)', part)
        if part.startswith('!'):
            requirement = LabelRequirement(part[1:].strip(), '!')
        elif set_match:
            values = tuple(value.strip() for value in set_match.group(3).split(',') if value.strip())
            requirement = LabelRequirement(set_match.group(1), set_match.group(2), values)
        elif op_match:
            operator = {'==': '=', '=': '=', '!=': '!=', '>': 'gt', '<': 'lt'}[op_match.group(2)]
            requirement = LabelRequirement(op_match.group(1), operator, (op_match.group(3),))
        elif re.fullmatch(r'\S+', part):
            requirement = LabelRequirement(part, 'exists')
        else:
            raise ValueError(f"found '{part}', expected: in, notin, =, ==, !=, gt, lt")
        if not _LABEL_KEY.match(requirement.key):
            raise ValueError(f'invalid label key "{requirement.key}"')
        for value in requirement.values:
            if requirement.operator in ('gt', 'lt'):
                if not re.fullmatch(r'-?\d+', value):
                    raise ValueError("for 'gt', 'lt' operators, the value must be an integer")
            elif not _LABEL_VALUE.match(value) or len(value) > 63:
                raise ValueError(f'invalid label value: "{value}"')
        requirements.append(requirement)
    return requirements


@attrs.frozen
class FieldRequirement:
    field: str
    operator: str  # = or !=
    value: str


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """Parse ``metadata.name=x,metadata.namespace!=y``; ValueError if malformed."""
    requirements: list[FieldRequirement] = []
    for raw in text.split(','):
        part = raw.strip()
        if not part:
            continue
        match = re.fullmatch(r'([^=!]+?)\s*(==|=|!=)\s*(.*)', part)
        if not match:
            raise ValueError(f'invalid selector: \'{part}\'; can\'t understand \'{part}\'')
        operator = '!=' if match.group(2) == '!=' else '='
        requirements.append(FieldRequirement(match.group(1).strip(), operator, match.group(3).strip()))
    return requirements


class JSONPathError(ValueError):
    pass


def jsonpath_find(obj: Any, expression: str) -> list[Any]:
    """Evaluate the JSONPath subset CRDs use: ``.a.b``, ``['k']``, ``[n]``, ``[*]``, ``[?(@.k=="v")]``.

    Returns every match (kubectl takes the first). Raises JSONPathError for unsupported syntax.
    """
    text = expression.strip()
    if text.startswith('{') and text.endswith('}'):
        text = text[1:-1].strip()
    if text.startswith('$'):
        text = text[1:]
    values: list[Any] = [obj]
    for step in _jsonpath_steps(text):
        values = [found for value in values for found in _jsonpath_apply(step, value)]
    return values


def _jsonpath_steps(text: str) -> list[tuple[Any, ...]]:
    steps: list[tuple[Any, ...]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == '.':
            if text[i + 1:i + 2] == '.':
                raise JSONPathError('recursive descent (..) is not supported')
            i += 1
            name, i = _jsonpath_identifier(text, i)
            steps.append(('wild',) if name == '*' else ('key', name))
        elif char == '[':
            end = _jsonpath_bracket_end(text, i)
            inner = text[i + 1:end].strip()
            i = end + 1
            if inner[:1] in ('"', "'") and inner[-1:] == inner[:1]:
                steps.append(('key', inner[1:-1].replace('\\' + inner[0], inner[0])))
            elif inner == '*':
                steps.append(('wild',))
            elif inner.startswith('?(') and inner.endswith(')'):
                steps.append(('filter', _jsonpath_filter(inner[2:-1].strip())))
            elif re.fullmatch(r'-?\d+', inner):
                steps.append(('index', int(inner)))
            elif re.fullmatch(r'-?\d*:-?\d*(:-?\d*)?', inner):
                bounds = [int(part) if part else None for part in inner.split(':')]
                steps.append(('slice', *bounds))
            else:
                raise JSONPathError(f'unsupported bracket expression [{inner}]')
        else:
            name, i = _jsonpath_identifier(text, i)
            steps.append(('key', name))
    return steps


def _jsonpath_identifier(text: str, i: int) -> tuple[str, int]:
    name = ''
    while i < len(text) and text[i] not in '.[':
        if text[i] == '\\' and i + 1 < len(text):
            name += text[i + 1]
            i += 2
            continue
        name += text[i]
        i += 1
    if not name:
        raise JSONPathError(f'empty field name at position {i}')
    return name, i


def _jsonpath_bracket_end(text: str, start: int) -> int:
    quote: str | None = None
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if char == quote and text[i - 1] != '\\':
                quote = None
        elif char in ('"', "'"):
            quote = char
        elif char in '[(':
            depth += 1
        elif char in '])':
            depth -= 1
            if depth == 0 and char == ']':
                return i
    raise JSONPathError(f'unterminated bracket at position {start}')


def _jsonpath_filter(text: str) -> tuple[str, str, Any]:
    match = re.fullmatch(r'@((?:\.[^\s=!<>]+|\[[^\]]*\])*)\s*(==|!=|<=|>=|<|>)?\s*(.*)', text)
    if not match:
        raise JSONPathError(f'unsupported filter ?({text})')
    path, operator, literal = match.group(1), match.group(2) or '', match.group(3).strip()
    value: Any = None
    if operator:
        if literal[:1] in ('"', "'") and literal[-1:] == literal[:1]:
            value = literal[1:-1]
        elif literal in ('true', 'false'):
            value = literal == 'true'
        else:
            try:
                value = json.loads(literal)
            except ValueError as e:
                raise JSONPathError(f'unsupported filter literal {literal}') from e
    return path, operator, value


def _jsonpath_apply(step: tuple[Any, ...], value: Any) -> list[Any]:
    kind = step[0]
    if kind == 'key':
        return [value[step[1]]] if isinstance(value, dict) and step[1] in value else []
    if kind == 'index':
        if isinstance(value, list) and -len(value) <= step[1] < len(value):
            return [value[step[1]]]
        return []
    if kind == 'slice':
        return list(value[slice(*step[1:])]) if isinstance(value, list) else []
    if kind == 'wild':
        if isinstance(value, dict):
            return [value[key] for key in sorted(value)]
        return list(value) if isinstance(value, list) else []
    if kind == 'filter':
        path, operator, literal = step[1]
        items = value if isinstance(value, list) else [value[key] for key in sorted(value)] if isinstance(value, dict) else []
        return [item for item in items if _jsonpath_test(item, path, operator, literal)]
    raise JSONPathError(f'unknown step {kind}')  # pragma: no cover


def _jsonpath_test(item: Any, path: str, operator: str, literal: Any) -> bool:
    found = jsonpath_find(item, path) if path else [item]
    if not operator:
        return bool(found)
    if not found:
        return False
    actual = found[0]
    try:
        if operator == '==':
            return bool(actual == literal)
        if operator == '!=':
            return bool(actual != literal)
        if operator == '<':
            return bool(actual < literal)
        if operator == '>':
            return bool(actual > literal)
        if operator == '<=':
            return bool(actual <= literal)
        if operator == '>=':
            return bool(actual >= literal)
    except TypeError:
        return False
    return False  # pragma: no cover


def go_print(value: Any) -> str:
    """Go's ``fmt.Print`` of a JSON value, as kubectl's jsonpath prints a string column."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return '<nil>'
    if isinstance(value, dict):
        return 'map[' + ' '.join(f'{key}:{go_print(value[key])}' for key in sorted(value)) + ']'
    if isinstance(value, list):
        return '[' + ' '.join(go_print(item) for item in value) + ']'
    return str(value)


def _go_float(value: float) -> str:
    """``strconv.FormatFloat(f, 'g', -1, 64)``: shortest digits, exponent form below 1e-4 or from 1e21."""
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    if math.isnan(value):
        return 'NaN'
    if value == 0:
        return '0'
    digits = repr(abs(value))
    mantissa, _, exponent_text = digits.partition('e')
    exponent = int(exponent_text or 0)
    integer, _, fraction = mantissa.partition('.')
    fraction = fraction.rstrip('0')
    significant = (integer + fraction).lstrip('0')
    point = len(integer) + exponent if integer != '0' else exponent - (len(fraction) - len(fraction.lstrip('0')))
    decimal_exponent = point - 1
    sign = '-' if value < 0 else ''
    if decimal_exponent < -4 or decimal_exponent >= 21:
        head, tail = significant[0], significant[1:].rstrip('0')
        exp_sign = '-' if decimal_exponent < 0 else '+'
        return f'{sign}{head}{"." + tail if tail else ""}e{exp_sign}{abs(decimal_exponent):02d}'
    text = f'{abs(value):.{max(0, len(significant) - point)}f}'
    if '.' in text:
        text = text.rstrip('0').rstrip('.')
    return sign + text


def _nested(obj: Any, path: str) -> Any:
    """Read a dotted path (``.spec.replicas``) from an object; None if absent."""
    found = jsonpath_find(obj, path) if path else []
    return found[0] if found else None


def _set_nested(obj: JSON, path: str, value: Any) -> None:
    keys = [key for key in path.strip('.').split('.') if key]
    target = obj
    for key in keys[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[keys[-1]] = value


def _selector_string(selector: Any) -> str:
    """A LabelSelector object (matchLabels/matchExpressions) as a selector string."""
    if not isinstance(selector, dict):
        return ''
    parts = [f'{key}={value}' for key, value in sorted((selector.get('matchLabels') or {}).items())]
    for expression in selector.get('matchExpressions') or []:
        operator = str(expression.get('operator', '')).lower()
        values = ','.join(sorted(expression.get('values') or []))
        key = expression.get('key', '')
        parts.append({'in': f'{key} in ({values})', 'notin': f'{key} notin ({values})',
                      'exists': key, 'doesnotexist': f'!{key}'}.get(operator, key))
    return ','.join(parts)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

FAULT_REASONS: Final[Mapping[int, str]] = {
    409: 'Conflict', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout',
}


@attrs.define(eq=False)
class Fault:
    """A fault the server injects into matching requests, ``times`` times: a delay, then an
    error ``Status`` with ``status`` (or the real answer after the delay when ``status`` is None)."""
    method: str
    path: re.Pattern[str]
    status: int | None = None
    delay: float = 0.0
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and method == self.method and bool(self.path.search(path))


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kube-apiserver semantics on top of kmock's emulator; see the module docstring.

    ``crd_dirs``: directories whose ``*.yaml``/``*.yml``/``*.json`` files hold the CRDs to serve
    from the start; a missing directory, or none with a CRD, is an error (envtest's
    ``ErrorIfCRDPathMissing``). ``builtins``: serve kmock's bundled built-in resources.
    ``event_window``: how many change events watches can replay before ``410 Gone``.
    ``bookmark_interval``: seconds between BOOKMARK events on watches that allow them.
    ``namespaces``: namespaces that exist from the start. ``require_namespaces``: refuse to
    create namespaced objects in a namespace that does not exist (as the real server does).
    """

    crd_dirs: Sequence[str | pathlib.Path] = ()
    builtins: bool = True
    event_window: int = 10_000
    bookmark_interval: float = 60.0
    namespaces: Sequence[str] = DEFAULT_NAMESPACES
    require_namespaces: bool = True

    _faults: list[Fault] = attrs.field(factory=list, init=False)
    # uid -> key of every stored object, and whether a write since the last garbage collection
    # may have given the collector work (something deleting or removed, or an owner reference
    # to a uid that is not stored). Without them every write scanned the whole store (O(N^2)).
    _uids: dict[str, StoreKey] = attrs.field(factory=dict, init=False)
    _gc_pending: bool = attrs.field(default=False, init=False)
    _custom_types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[StoreKey, JSON] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _events: collections.deque[_Event] = attrs.field(factory=collections.deque, init=False)
    _compacted_rv: int = attrs.field(default=0, init=False)
    _watchers: list[_Watcher] = attrs.field(factory=list, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.builtins:
            self.resources.load_bundled()
        for namespace in self.namespaces:
            self._create(self._require_type('', 'v1', 'namespaces'), None,
                         {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': namespace}}, {})
        for crd in self._load_crd_files():
            self._create(self._require_type(CRD_GROUP, 'v1', CRD_PLURAL), None, crd, {})

    # ---- public surface ------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current value of the global resourceVersion counter."""
        return self._rv

    def served_resources(self) -> list[ResourceType]:
        """Every resource type served right now (built-ins and CRD-defined)."""
        return list(self._all_types())

    @property
    @override
    def objects(self) -> kmock.ObjectsArray:
        raise AttributeError('ApiServer keeps its own store; read objects through the HTTP API.')

    @contextlib.asynccontextmanager
    async def serve(self, host: str = '127.0.0.1', port: int | None = None) -> AsyncIterator[ApiServer]:
        """Run on ``host:port`` (random port by default) in the current event loop."""
        async with self:
            async with kmock.Server(self, host=host, port=port):
                try:
                    yield self
                finally:
                    self._close_watches()

    @contextlib.contextmanager
    def run_in_thread(self, host: str = '127.0.0.1', port: int | None = None,
                      startup_timeout: float = 30) -> Iterator[ApiServer]:
        """Run in a background thread with its own event loop (for sync tests and subprocesses)."""
        ready = threading.Event()
        failures: list[BaseException] = []
        loop = asyncio.new_event_loop()
        stop: asyncio.Future[None] = loop.create_future()

        async def main() -> None:
            try:
                async with self.serve(host=host, port=port):
                    ready.set()
                    await stop
            except BaseException as e:  # re-raised in the caller's thread
                failures.append(e)
                ready.set()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),),
                                  name='apiserver', daemon=True)
        thread.start()
        try:
            if not ready.wait(startup_timeout):
                raise TimeoutError('the API server did not start in time')
            if failures:
                raise failures[0]
            yield self
        finally:
            def release() -> None:
                if not stop.done():
                    stop.set_result(None)
            loop.call_soon_threadsafe(release)
            thread.join(timeout=60)
            loop.close()
            if failures:
                raise failures[0]

    # ---- kmock integration -----------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # Same contract as kmock's RawHandler.__call__, but with our own URL parsing (kmock's
        # fails on `/api/v1/namespaces`) and without kmock's object tracking.
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await self._parse_request(raw_request)
            self._requests.append(request)
            try:
                return await self._handle(request)
            except kmock_rendering.StreamingError as e:
                raw_response = e.args[0]
                if e.__cause__ is not None:
                    raise e.__cause__
                raise  # pragma: no cover
        except Exception as e:
            if not self._errors:
                raise
            self._errors[-1].append(e)
            logger.error('Internal error serving %s %s:\n%s', raw_request.method, raw_request.path_qs,
                         traceback.format_exc())
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    @override
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        error = exc if isinstance(exc, ApiError) else internal_error(repr(exc))
        return self._status_response(error)

    @override
    async def _stream_error(self, exc: Exception, raw_response: aiohttp.web.StreamResponse) -> None:
        error = exc if isinstance(exc, ApiError) else internal_error(repr(exc))
        await raw_response.write(json.dumps({'type': 'ERROR', 'object': error.status}).encode() + b'\n')

    async def _parse_request(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        text = body.decode('utf-8', errors='replace')
        try:
            data: Any = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        route = parse_resource_path(raw_request.path)
        method = raw_request.method.upper()
        action: kmock_enums.action | None = None
        resource: kmock.resource | None = None
        if route is not None and route.plural is not None:
            resource = kmock.resource(route.group, route.version, route.plural)
            if method == 'GET' and raw_request.query.get('watch') in ('true', '1'):
                action = kmock_enums.action.WATCH
            elif route.name is None:
                action = {'GET': kmock_enums.action.LIST, 'POST': kmock_enums.action.CREATE}.get(method)
            else:
                action = {'GET': kmock_enums.action.FETCH, 'PUT': kmock_enums.action.UPDATE,
                          'PATCH': kmock_enums.action.UPDATE,
                          'DELETE': kmock_enums.action.DELETE}.get(method)
        return kmock.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url,
            method=raw_request.method, params=dict(raw_request.query),
            headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
            body=body, text=text, data=data, action=action, resource=resource,
            namespace=route.namespace if route else None, name=route.name if route else None,
            subresource=route.subresource if route else None,
        )

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as e:
            return self._status_response(e)

    def inject_fault(self, method: str, path: str, *, status: int | None = None, delay: float = 0.0,
                     times: int = 1) -> Fault:
        """Make the next ``times`` ``method`` requests whose path matches the regex ``path`` fail
        with ``status`` (409, 429, 500, 503, 504) and/or stall for ``delay`` seconds first."""
        fault = Fault(method.upper(), re.compile(path), status, delay, times)
        self._faults.append(fault)
        return fault

    async def _dispatch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path.rstrip('/') or '/'
        for fault in self._faults:
            if fault.matches(getattr(request.method, "value", str(request.method)), path):
                fault.hits += 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    reason = FAULT_REASONS.get(fault.status, '')
                    raise ApiError(failure(fault.status, reason, f'injected fault: {reason or fault.status}'))
                break
        route = parse_resource_path(path)
        if request.method == kmock.method.GET:
            static = self._serve_static(path, request)
            if static is not None:
                return static
        if route is not None and route.plural is not None:
            return await self._serve_resource(request, route)
        try:
            return await kmock_apps.RawHandler._handle(self, request)  # user reactions only
        except (kmock.KubernetesNotFoundError, NotImplementedError):
            raise ApiError(failure(404, 'NotFound', 'the server could not find the requested resource',
                                   {'causes': [{'reason': 'UnexpectedServerResponse',
                                                'message': '404 page not found'}]}))

    # ---- responses -------------------------------------------------------------------------

    @staticmethod
    def _json_response(payload: Any, status: int = 200, warnings: Sequence[str] = ()) -> aiohttp.web.Response:
        response = aiohttp.web.Response(body=json.dumps(payload).encode(), status=status,
                                        content_type='application/json')
        for warning in warnings:
            response.headers.add('Warning', f'299 - {_go_quote(warning)}')
        return response

    def _status_response(self, error: ApiError) -> aiohttp.web.Response:
        return self._json_response(error.status, status=error.code)

    # ---- discovery, version, openapi ---------------------------------------------------------

    def _serve_static(self, path: str, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        if path in ('/healthz', '/livez', '/readyz'):
            return aiohttp.web.Response(text='ok', content_type='text/plain')
        if path == '/version':
            return self._json_response(SERVER_VERSION)
        if path == '/api':
            return self._json_response({'kind': 'APIVersions', 'versions': ['v1'],
                                        'serverAddressByClientCIDRs': [
                                            {'clientCIDR': '0.0.0.0/0', 'serverAddress': request.url.host or ''}]})
        if path == '/apis':
            return self._json_response(self._group_list())
        if path == '/openapi/v3':
            return self._json_response(self._openapi_index())
        if path.startswith('/openapi/v3/'):
            return self._json_response(self._openapi_document(path[len('/openapi/v3/'):]))
        if path == '/openapi/v2':
            # Not served: kubectl falls back to v3 for field validation and to its built-in
            # patch metadata for apply (see docs/testing.md).
            raise resource_not_found()
        if path == '/':
            paths = {'/api', '/api/v1', '/apis', '/version', '/healthz', '/livez', '/readyz', '/openapi/v3'}
            for rtype in self._all_types():
                if rtype.group:
                    paths |= {f'/apis/{rtype.group}', f'/apis/{rtype.group}/{rtype.version}'}
            return self._json_response({'paths': sorted(paths)})
        route = parse_resource_path(path)
        if route is not None and route.plural is None:
            if route.group == '' and route.version == 'v1':
                return self._json_response(self._resource_list('', 'v1'))
            if route.group and path == f'/apis/{route.group}/{route.version}':
                if not any(t.group == route.group and t.version == route.version for t in self._all_types()):
                    raise resource_not_found()
                return self._json_response(self._resource_list(route.group, route.version))
        match = re.fullmatch(r'/apis/([^/]+)', path)
        if match:
            group = self._group_entry(match.group(1))
            if group is None:
                raise resource_not_found()
            return self._json_response({'kind': 'APIGroup', 'apiVersion': 'v1', **group})
        return None

    def _group_entry(self, group: str) -> JSON | None:
        versions = sorted({t.version for t in self._all_types() if t.group == group}, key=_kube_version_key)
        if not versions:
            return None
        entries = [{'groupVersion': f'{group}/{version}', 'version': version} for version in versions]
        return {'name': group, 'versions': entries, 'preferredVersion': entries[0]}

    def _group_list(self) -> JSON:
        groups: list[str] = []
        for rtype in self._all_types():
            if rtype.group and rtype.group not in groups:
                groups.append(rtype.group)
        entries = [entry for group in groups if (entry := self._group_entry(group)) is not None]
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': entries}

    def _resource_list(self, group: str, version: str) -> JSON:
        resources: list[JSON] = []
        for rtype in sorted(self._all_types(), key=lambda t: t.plural):
            if rtype.group != group or rtype.version != version:
                continue
            entry: JSON = {'name': rtype.plural, 'singularName': rtype.singular, 'namespaced': rtype.namespaced,
                           'kind': rtype.kind, 'verbs': list(rtype.verbs)}
            if rtype.short_names:
                entry['shortNames'] = list(rtype.short_names)
            if rtype.categories:
                entry['categories'] = list(rtype.categories)
            entry['storageVersionHash'] = base64.b64encode(
                hashlib.sha256(f'{rtype.group}/{rtype.version}/{rtype.kind}'.encode()).digest()[:8]).decode()
            resources.append(entry)
            for sub in sorted(rtype.subresources):
                sub_entry: JSON = {'name': f'{rtype.plural}/{sub}', 'singularName': '',
                                   'namespaced': rtype.namespaced, 'kind': rtype.kind,
                                   'verbs': list(SUBRESOURCE_VERBS)}
                if sub == 'scale':
                    sub_entry.update({'group': 'autoscaling', 'version': 'v1', 'kind': 'Scale'})
                resources.append(sub_entry)
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version, 'resources': resources}

    def _openapi_index(self) -> JSON:
        paths: JSON = {}
        for group, version in sorted({(t.group, t.version) for t in self._all_types()}):
            key = f'apis/{group}/{version}' if group else f'api/{version}'
            digest = hashlib.sha256(json.dumps(self._openapi_document(key), sort_keys=True).encode()).hexdigest()
            paths[key] = {'serverRelativeURL': f'/openapi/v3/{key}?hash={digest.upper()}'}
        return {'paths': paths}

    def _openapi_document(self, key: str) -> JSON:
        """A minimal OpenAPI v3 document for one group-version.

        It declares, per resource, the PATCH operation with its ``x-kubernetes-group-version-kind``
        and ``fieldValidation`` parameter — what kubectl checks to decide that the server validates
        fields itself — and, for custom resources, the CRD's schema as a component.
        """
        route = parse_resource_path('/' + key)
        if route is None or route.plural is not None:
            raise resource_not_found()
        types = [t for t in self._all_types() if t.group == route.group and t.version == route.version]
        if not types:
            raise resource_not_found()
        paths: JSON = {}
        schemas: JSON = {}
        prefix = f'/apis/{route.group}/{route.version}' if route.group else f'/api/{route.version}'
        for rtype in types:
            gvk = {'group': rtype.group, 'version': rtype.version, 'kind': rtype.kind}
            parameters = [{'name': name, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                          for name in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
            scope = f'{prefix}/namespaces/{{namespace}}/{rtype.plural}' if rtype.namespaced else f'{prefix}/{rtype.plural}'
            patch_types = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
            paths[f'{scope}/{{name}}'] = {
                'patch': {
                    'operationId': f'patch{rtype.kind}',
                    'parameters': parameters,
                    'requestBody': {'content': {ctype: {'schema': {'type': 'object'}} for ctype in patch_types}},
                    'responses': {'200': {'description': 'OK'}},
                    'x-kubernetes-action': 'patch',
                    'x-kubernetes-group-version-kind': gvk,
                },
            }
            if rtype.schema is not None:
                component = copy.deepcopy(rtype.schema)
                component['x-kubernetes-group-version-kind'] = [gvk]
                reverse_group = '.'.join(reversed(rtype.group.split('.')))
                schemas[f'{reverse_group}.{rtype.version}.{rtype.kind}'] = component
        return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': SERVER_VERSION['gitVersion']},
                'paths': paths, 'components': {'schemas': schemas}}

    # ---- resource types ----------------------------------------------------------------------

    def _all_types(self) -> Iterator[ResourceType]:
        seen: set[tuple[str, str, str]] = set()
        for res in self.resources:
            if res.group is None or res.version is None or res.plural is None:
                continue
            key = (res.group, res.version, res.plural)
            if key in self._custom_types:
                continue
            seen.add(key)
            yield self._builtin_type(res.group, res.version, res.plural, self.resources[res])
        for key, rtype in self._custom_types.items():
            if key not in seen:
                yield rtype

    def _builtin_type(self, group: str, version: str, plural: str, info: kmock.ResourceInfo) -> ResourceType:
        subresources = frozenset(info.subresources)
        scale = None
        if 'scale' in subresources:
            scale = {'specReplicasPath': '.spec.replicas', 'statusReplicasPath': '.status.replicas',
                     'labelSelectorPath': '.spec.selector'}
        verbs = tuple(sorted(info.verbs)) or CR_VERBS
        return ResourceType(
            group=group, version=version, plural=plural,
            kind=info.kind or plural.capitalize(), singular=info.singular or plural.rstrip('s'),
            namespaced=bool(info.namespaced), verbs=verbs,
            short_names=tuple(sorted(info.shortnames)), categories=tuple(sorted(info.categories)),
            subresources=subresources, scale=scale,
        )

    def _find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        custom = self._custom_types.get((group, version, plural))
        if custom is not None:
            return custom
        key = kmock.resource(group, version, plural)
        if key in self.resources:
            return self._builtin_type(group, version, plural, self.resources[key])
        return None

    def _require_type(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self._find_type(group, version, plural)
        if rtype is None:
            raise resource_not_found()
        return rtype

    def _types_of(self, group: str, plural: str) -> list[ResourceType]:
        return [t for t in self._all_types() if t.group == group and t.plural == plural]

    def _register_crd(self, crd: JSON) -> None:
        spec = crd.get('spec', {})
        names = spec.get('names', {})
        group = spec['group']
        for key in [key for key, rtype in self._custom_types.items() if rtype.crd_name == crd['metadata']['name']]:
            del self._custom_types[key]
        for version in spec.get('versions', []):
            if not version.get('served', True):
                continue
            subresources = version.get('subresources') or {}
            scale = subresources.get('scale')
            rtype = ResourceType(
                group=group, version=version['name'], plural=names['plural'], kind=names['kind'],
                singular=names.get('singular') or names['kind'].lower(),
                namespaced=spec.get('scope', 'Namespaced') == 'Namespaced', verbs=CR_VERBS,
                short_names=tuple(names.get('shortNames') or ()), categories=tuple(names.get('categories') or ()),
                subresources=frozenset(key for key in ('status', 'scale') if key in subresources),
                crd_name=crd['metadata']['name'], list_kind=names.get('listKind'),
                schema=(version.get('schema') or {}).get('openAPIV3Schema'),
                printer_columns=tuple(version.get('additionalPrinterColumns') or ()),
                scale=dict(scale) if isinstance(scale, dict) else None,
                selectable_fields=tuple(field.get('jsonPath', '') for field in version.get('selectableFields') or ()),
            )
            self._custom_types[(group, rtype.version, rtype.plural)] = rtype

    def _unregister_crd(self, name: str) -> None:
        for key in [key for key, rtype in self._custom_types.items() if rtype.crd_name == name]:
            del self._custom_types[key]

    def _load_crd_files(self) -> list[JSON]:
        crds: list[JSON] = []
        for directory in self.crd_dirs:
            path = pathlib.Path(directory)
            if not path.is_dir():
                raise FileNotFoundError(f'CRD directory does not exist: {path}')
            found = 0
            for file in sorted(path.iterdir()):
                if file.suffix not in ('.yaml', '.yml', '.json'):
                    continue
                for document in yaml.safe_load_all(file.read_text(encoding='utf-8')):
                    if isinstance(document, dict) and document.get('kind') == 'CustomResourceDefinition':
                        crds.append(document)
                        found += 1
            if not found:
                raise FileNotFoundError(f'no CustomResourceDefinition found in {path}')
        return crds

    # ---- the store -----------------------------------------------------------------------------

    @staticmethod
    def _key(rtype: ResourceType, namespace: str | None, name: str) -> StoreKey:
        return rtype.group, rtype.plural, namespace if rtype.namespaced else None, name

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, rtype: ResourceType, event_type: str, obj: JSON, prev: JSON | None) -> None:
        """Log a change for watches. ``obj`` and ``prev`` are kept, not copied: they are stored
        states, and the store replaces an object on every change, never changes one in place."""
        event = _Event(int(obj['metadata']['resourceVersion']), rtype.group, rtype.plural, event_type, obj, prev)
        self._events.append(event)
        while len(self._events) > self.event_window:
            self._compacted_rv = self._events.popleft().rv
        for watcher in self._watchers:
            if watcher.group == event.group and watcher.plural == event.plural:
                watcher.queue.put_nowait(event)

    def _write(self, rtype: ResourceType, key: StoreKey, obj: JSON, prev: JSON | None) -> JSON:
        """Store a new state of an object with the next resourceVersion and record the event."""
        obj['metadata']['resourceVersion'] = str(self._next_rv())
        stored = self._store[key] = copy.deepcopy(obj)
        meta = obj['metadata']
        if meta.get('uid'):
            self._uids[meta['uid']] = key
        if meta.get('deletionTimestamp') or any(
                ref.get('uid') not in self._uids for ref in meta.get('ownerReferences') or []):
            self._gc_pending = True
        self._record(rtype, 'ADDED' if prev is None else 'MODIFIED', stored, prev)
        return obj

    def _remove(self, rtype: ResourceType, key: StoreKey) -> JSON:
        """Remove an object for good; the DELETED event carries the deletion's resourceVersion."""
        prev = self._store.pop(key)
        self._uids.pop(prev['metadata'].get('uid', ''), None)
        self._gc_pending = True
        obj = {**prev, 'metadata': {**prev['metadata'], 'resourceVersion': str(self._next_rv())}}
        self._record(rtype, 'DELETED', obj, prev)
        if rtype.group == CRD_GROUP and rtype.plural == CRD_PLURAL:
            self._unregister_crd(obj['metadata']['name'])
        return obj

    def _type_for_key(self, key: StoreKey) -> ResourceType:
        types = self._types_of(key[0], key[1])
        if types:
            return types[0]
        # A custom resource whose CRD is gone: keep a minimal type to record events with.
        return ResourceType(group=key[0], version='v1', plural=key[1], kind=key[1], singular=key[1],
                            namespaced=key[2] is not None, verbs=CR_VERBS)

    def _present(self, rtype: ResourceType, obj: JSON) -> JSON:
        """An object as served for a given version: deep copy with apiVersion/kind set."""
        rest = {key: copy.deepcopy(value) for key, value in obj.items() if key not in ('apiVersion', 'kind')}
        return {'apiVersion': rtype.api_version, 'kind': rtype.kind, **rest}

    # ---- request routing ---------------------------------------------------------------------

    async def _serve_resource(self, request: kmock.Request, route: _Route) -> aiohttp.web.StreamResponse:
        assert route.plural is not None
        rtype = self._find_type(route.group, route.version, route.plural)
        if rtype is None:
            raise resource_not_found()
        if route.namespace is not None and not rtype.namespaced:
            raise resource_not_found()
        params = dict(request.params)
        method = request.method.value.upper() if request.method else 'GET'
        namespace = route.namespace

        if route.subresource is not None:
            if route.name is None or route.subresource not in rtype.subresources:
                raise resource_not_found()
            if rtype.namespaced and namespace is None:
                raise resource_not_found()
            if route.subresource == 'scale':
                return await self._serve_scale(request, rtype, namespace, route.name, method, params)
            if route.subresource != 'status':
                raise method_not_allowed()
            if method == 'GET':
                return self._json_response(self._present(rtype, self._get(rtype, namespace, route.name)))
            if method == 'PUT':
                obj, warnings = self._update(rtype, namespace, route.name, self._decode_body(request), params,
                                             subresource='status')
                return self._json_response(obj, warnings=warnings)
            if method == 'PATCH':
                obj, warnings = self._patch(rtype, namespace, route.name, request, params, subresource='status')
                return self._json_response(obj, warnings=warnings)
            raise method_not_allowed()

        if route.name is None:
            if method == 'GET' and params.get('watch') in ('true', '1'):
                return await self._watch_response(request, rtype, namespace, params)
            if method == 'GET':
                return self._list_response(request, rtype, namespace, params)
            if method == 'POST':
                if rtype.namespaced and namespace is None:
                    raise method_not_allowed()
                self._require_verb(rtype, 'create')
                obj, warnings, status = self._create_request(rtype, namespace, request, params)
                return self._json_response(obj, status=status, warnings=warnings)
            if method == 'DELETE':
                self._require_verb(rtype, 'deletecollection')
                return self._json_response(self._delete_collection(rtype, namespace, request, params))
            raise method_not_allowed()

        if rtype.namespaced and namespace is None:
            raise resource_not_found()
        if method == 'GET' and params.get('watch') in ('true', '1'):
            params['fieldSelector'] = ','.join(filter(None, [params.get('fieldSelector', ''),
                                                             f'metadata.name={route.name}']))
            return await self._watch_response(request, rtype, namespace, params)
        if method == 'GET':
            self._require_verb(rtype, 'get')
            obj = self._present(rtype, self._get(rtype, namespace, route.name))
            table = self._table_request(request)
            if table is not None:
                return self._json_response(self._table(rtype, [obj], table, params))
            partial = self._partial_request(request)
            if partial:
                return self._json_response(self._partial(obj))
            return self._json_response(obj)
        if method == 'PUT':
            self._require_verb(rtype, 'update')
            obj, warnings = self._update(rtype, namespace, route.name, self._decode_body(request), params)
            return self._json_response(obj, warnings=warnings)
        if method == 'PATCH':
            self._require_verb(rtype, 'patch')
            content_type = self._content_type(request)
            if content_type == APPLY_PATCH and self._key(rtype, namespace, route.name) not in self._store:
                obj, warnings = self._apply_create(rtype, namespace, route.name, request, params)
                return self._json_response(obj, status=201, warnings=warnings)
            obj, warnings = self._patch(rtype, namespace, route.name, request, params)
            return self._json_response(obj, warnings=warnings)
        if method == 'DELETE':
            self._require_verb(rtype, 'delete')
            result, status = self._delete(rtype, namespace, route.name, self._delete_options(request, params))
            return self._json_response(result, status=status)
        raise method_not_allowed()

    @staticmethod
    def _require_verb(rtype: ResourceType, verb: str) -> None:
        if verb not in rtype.verbs:
            raise method_not_allowed()

    @staticmethod
    def _content_type(request: kmock.Request) -> str:
        header = next((value for key, value in request.headers.items() if key.lower() == 'content-type'), '')
        return header.split(';')[0].strip().lower()

    def _decode_body(self, request: kmock.Request) -> JSON:
        content_type = self._content_type(request)
        if content_type and content_type not in ('application/json', 'application/yaml', 'text/yaml',
                                                 'application/x-yaml', '*/*'):
            # Protobuf (and CBOR) bodies of typed Go clients cannot be decoded without the Go types.
            raise unsupported_media_type(['application/json', 'application/yaml'])
        text = request.text
        try:
            if 'yaml' in content_type:
                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f'the body of the request could not be decoded: {e}')
        if not isinstance(data, dict):
            raise bad_request('the body of the request must be a JSON object')
        return data

    # ---- reads -------------------------------------------------------------------------------

    def _get(self, rtype: ResourceType, namespace: str | None, name: str) -> JSON:
        obj = self._store.get(self._key(rtype, namespace, name))
        if obj is None:
            raise not_found(rtype.group, rtype.plural, name)
        return obj

    def _matcher(self, rtype: ResourceType, namespace: str | None, params: Mapping[str, str]) -> Callable[[JSON], bool]:
        try:
            labels = parse_label_selector(params.get('labelSelector', ''))
        except ValueError as e:
            raise bad_request(f'unable to parse requirement: {e}')
        try:
            fields = parse_field_selector(params.get('fieldSelector', ''))
        except ValueError as e:
            raise bad_request(str(e))
        supported = {'metadata.name', 'metadata.namespace'} | set(EXTRA_FIELD_LABELS.get(rtype.storage_key, ()))
        supported |= set(field.lstrip('.') for field in rtype.selectable_fields)
        for requirement in fields:
            if requirement.field not in supported:
                raise bad_request(f'field label not supported: {requirement.field}')

        def field_value(obj: JSON, field: str) -> str:
            if field == 'metadata.namespace':
                return str(obj.get('metadata', {}).get('namespace') or '')
            value = _nested(obj, '.' + field)
            if isinstance(value, bool):
                return 'true' if value else 'false'
            return '' if value is None else str(value)

        def matches(obj: JSON) -> bool:
            meta = obj.get('metadata', {})
            if namespace is not None and meta.get('namespace') != namespace:
                return False
            object_labels = meta.get('labels') or {}
            if not all(requirement.matches(object_labels) for requirement in labels):
                return False
            for requirement in fields:
                equal = field_value(obj, requirement.field) == requirement.value
                if equal != (requirement.operator == '='):
                    return False
            return True

        return matches

    def _list_response(self, request: kmock.Request, rtype: ResourceType, namespace: str | None,
                    params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        self._require_verb(rtype, 'list')
        matches = self._matcher(rtype, namespace, params)
        objs = [obj for key, obj in sorted(self._store.items(), key=lambda item: (item[0][2] or '', item[0][3]))
                if key[:2] == rtype.storage_key and matches(obj)]
        # Paging: `continue` is a base64 JSON {"start": [namespace, name]}; items after it are
        # served from the current state (the real server serves a snapshot at the first page's rv).
        start: list[str] | None = None
        if params.get('continue'):
            try:
                start = json.loads(base64.b64decode(params['continue']))['start']
            except (ValueError, KeyError, TypeError):
                raise bad_request('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)')
            objs = [obj for obj in objs if [obj['metadata'].get('namespace') or '', obj['metadata']['name']] > start]
        metadata: JSON = {'resourceVersion': str(self._rv)}
        limit = int(params['limit']) if params.get('limit', '').isdigit() and int(params['limit']) > 0 else None
        if limit is not None and len(objs) > limit:
            last = objs[limit - 1]['metadata']
            token = {'start': [last.get('namespace') or '', last['name']], 'rv': self._rv}
            metadata['continue'] = base64.b64encode(json.dumps(token).encode()).decode()
            metadata['remainingItemCount'] = len(objs) - limit
            objs = objs[:limit]
        items = [self._present(rtype, obj) for obj in objs]
        table = self._table_request(request)
        if table is not None:
            result = self._table(rtype, items, table, params)
            result['metadata'].update({k: v for k, v in metadata.items() if k != 'resourceVersion'})
            return self._json_response(result)
        if self._partial_request(request):
            return self._json_response({'kind': 'PartialObjectMetadataList', 'apiVersion': 'meta.k8s.io/v1',
                                        'metadata': metadata, 'items': [self._partial(obj) for obj in items]})
        if not rtype.custom:
            # Typed lists of built-ins carry no apiVersion/kind per item.
            for item in items:
                item.pop('apiVersion', None)
                item.pop('kind', None)
        return self._json_response({'apiVersion': rtype.api_version, 'kind': rtype.list_kind_name,
                                    'metadata': metadata, 'items': items})

    # ---- watches -----------------------------------------------------------------------------

    async def _watch_response(self, request: kmock.Request, rtype: ResourceType, namespace: str | None,
                           params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        self._require_verb(rtype, 'watch')
        matches = self._matcher(rtype, namespace, params)
        rv_text = params.get('resourceVersion', '')
        try:
            timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        except ValueError:
            raise bad_request(f'timeoutSeconds: Invalid value: {_go_quote(params["timeoutSeconds"])}')
        bookmarks = params.get('allowWatchBookmarks') in ('true', '1')
        send_initial = params.get('sendInitialEvents') in ('true', '1')
        if rv_text not in ('', '0') and not rv_text.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: {_go_quote(rv_text)}: must be a non-negative integer')

        initial: list[JSON] = []
        expired_error: ApiError | None = None
        if rv_text in ('', '0') or send_initial:
            for key, obj in sorted(self._store.items(), key=lambda item: int(item[1]['metadata']['resourceVersion'])):
                if key[:2] == rtype.storage_key and matches(obj):
                    initial.append({'type': 'ADDED', 'object': self._present(rtype, obj)})
            if send_initial and bookmarks:
                initial.append(self._bookmark(rtype, initial_events_end=True))
        elif int(rv_text) < self._compacted_rv:
            expired_error = expired(f'too old resource version: {rv_text} ({self._compacted_rv})')
        else:
            since = int(rv_text)
            for event in self._events:
                if event.rv > since and (event.group, event.plural) == rtype.storage_key:
                    converted = self._watch_event(rtype, event, matches)
                    if converted is not None:
                        initial.append(converted)

        watcher = _Watcher(rtype.group, rtype.plural, matches, asyncio.Queue())
        if expired_error is None and not self._closing:
            self._watchers.append(watcher)

        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request._raw_request)
        except ConnectionError:  # the client went away before the answer started (a stopping operator)
            if watcher in self._watchers:
                self._watchers.remove(watcher)
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        next_bookmark = loop.time() + self.bookmark_interval
        try:
            if expired_error is not None:
                await response.write(json.dumps({'type': 'ERROR', 'object': expired_error.status}).encode() + b'\n')
                return response
            for initial_event in initial:
                await response.write(json.dumps(initial_event).encode() + b'\n')
            while watcher in self._watchers:
                waits = [next_bookmark - loop.time()] if bookmarks else []
                if deadline is not None:
                    waits.append(deadline - loop.time())
                try:
                    if waits:
                        item = await asyncio.wait_for(watcher.queue.get(), timeout=max(0.0, min(waits)))
                    else:
                        item = await watcher.queue.get()
                except asyncio.TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        break
                    next_bookmark = loop.time() + self.bookmark_interval
                    await response.write(json.dumps(self._bookmark(rtype)).encode() + b'\n')
                    continue
                if item is None:
                    break
                converted = self._watch_event(rtype, item, matches)
                if converted is not None:
                    await response.write(json.dumps(converted).encode() + b'\n')
        except ConnectionError:
            pass  # the client went away
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    def _watch_event(self, rtype: ResourceType, event: _Event, matches: Callable[[JSON], bool]) -> JSON | None:
        """Translate a stored event for one watcher, with the selector transitions of the watch cache."""
        now = matches(event.obj)
        before = event.prev is not None and matches(event.prev)
        if event.type == 'ADDED':
            kind, obj = ('ADDED', event.obj) if now else (None, None)
        elif event.type == 'DELETED':
            kind, obj = ('DELETED', event.obj) if before else (None, None)
        elif now and before:
            kind, obj = 'MODIFIED', event.obj
        elif now:
            kind, obj = 'ADDED', event.obj
        elif before and event.prev is not None:
            obj = copy.deepcopy(event.prev)
            obj['metadata']['resourceVersion'] = str(event.rv)
            kind = 'DELETED'
        else:
            kind, obj = None, None
        if kind is None or obj is None:
            return None
        return {'type': kind, 'object': self._present(rtype, obj)}

    def _bookmark(self, rtype: ResourceType, initial_events_end: bool = False) -> JSON:
        metadata: JSON = {'resourceVersion': str(self._rv)}
        if initial_events_end:
            metadata['annotations'] = {'k8s.io/initial-events-end': 'true'}
        return {'type': 'BOOKMARK', 'object': {'kind': rtype.kind, 'apiVersion': rtype.api_version,
                                                'metadata': metadata}}

    def _close_watches(self) -> None:
        self._closing = True
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)

    # ---- tables ------------------------------------------------------------------------------

    @staticmethod
    def _accept(request: kmock.Request) -> str:
        return next((value for key, value in request.headers.items() if key.lower() == 'accept'), '')

    def _table_request(self, request: kmock.Request) -> str | None:
        """The Table apiVersion asked for by ``Accept: ...;as=Table;g=meta.k8s.io;v=v1``, if any."""
        for media in self._accept(request).split(','):
            params = dict(part.strip().split('=', 1) for part in media.split(';')[1:] if '=' in part)
            if params.get('as') == 'Table' and params.get('g') == 'meta.k8s.io' and params.get('v') in ('v1', 'v1beta1'):
                return f'meta.k8s.io/{params["v"]}'
        return None

    def _partial_request(self, request: kmock.Request) -> bool:
        for media in self._accept(request).split(','):
            params = dict(part.strip().split('=', 1) for part in media.split(';')[1:] if '=' in part)
            if params.get('as', '').startswith('PartialObjectMetadata') and params.get('g') == 'meta.k8s.io':
                return True
        return False

    @staticmethod
    def _partial(obj: JSON) -> JSON:
        return {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
                'metadata': copy.deepcopy(obj.get('metadata', {}))}

    def _table(self, rtype: ResourceType, objs: Sequence[JSON], api_version: str, params: Mapping[str, str]) -> JSON:
        """A ``meta.k8s.io`` Table as the CRD tableconvertor (or the default one) builds it."""
        columns: list[JSON] = [{'name': 'Name', 'type': 'string', 'format': 'name',
                                'description': NAME_DESCRIPTION, 'priority': 0}]
        custom = [dict(column) for column in rtype.printer_columns]
        if not custom:
            custom = [{'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp',
                       'description': CREATION_TIMESTAMP_DESCRIPTION}]
        for column in custom:
            columns.append({'name': column.get('name', ''), 'type': column.get('type', 'string'),
                            'format': column.get('format', ''), 'description': column.get('description', ''),
                            'priority': int(column.get('priority', 0))})
        include = params.get('includeObject', 'Metadata')
        rows: list[JSON] = []
        for obj in objs:
            cells: list[Any] = [obj['metadata']['name']]
            for column in custom:
                cells.append(self._cell(obj, column))
            row: JSON = {'cells': cells}
            if include == 'Object':
                row['object'] = obj
            elif include != 'None':
                row['object'] = self._partial(obj)
            rows.append(row)
        return {'kind': 'Table', 'apiVersion': api_version, 'metadata': {'resourceVersion': str(self._rv)},
                'columnDefinitions': columns, 'rows': rows}

    @staticmethod
    def _cell(obj: JSON, column: Mapping[str, Any]) -> Any:
        try:
            results = jsonpath_find(obj, str(column.get('jsonPath', '')))
        except JSONPathError:
            return None
        if not results or results[0] is None:
            return None
        value = results[0]
        kind = column.get('type', 'string')
        if kind == 'string':
            return go_print(value)
        if kind == 'integer':
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if kind == 'number':
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if kind == 'boolean':
            return value if isinstance(value, bool) else None
        if kind == 'date':
            if not isinstance(value, str):
                return None
            moment = _parse_time(value)
            if moment is None:
                return '<invalid>'
            return human_duration((datetime.datetime.now(tz=datetime.timezone.utc) - moment).total_seconds())
        return None

    # ---- writes: create ----------------------------------------------------------------------

    def _create_request(self, rtype: ResourceType, namespace: str | None, request: kmock.Request,
                        params: Mapping[str, str]) -> tuple[JSON, list[str], int]:
        body = self._decode_body(request)
        obj, warnings = self._create(rtype, namespace, body, params)
        return obj, warnings, 201

    def _create(self, rtype: ResourceType, namespace: str | None, body: JSON,
                params: Mapping[str, str]) -> tuple[JSON, list[str]]:
        obj = copy.deepcopy(body)
        self._check_type_meta(rtype, obj)
        obj['apiVersion'], obj['kind'] = rtype.api_version, rtype.kind
        meta = obj.get('metadata')
        if meta is None:
            meta = obj['metadata'] = {}
        if not isinstance(meta, dict):
            raise bad_request('metadata must be an object')

        if not meta.get('name') and meta.get('generateName'):
            for _ in range(100):
                candidate = meta['generateName'] + ''.join(random.choices(GENERATE_NAME_ALPHABET, k=5))
                if self._key(rtype, namespace or meta.get('namespace'), candidate) not in self._store:
                    break
            meta['name'] = candidate
        if rtype.namespaced:
            self._reconcile_namespace(namespace, meta)
        else:
            meta.pop('namespace', None)
        name = meta.get('name') or ''

        if meta.get('resourceVersion'):
            raise internal_error('resourceVersion should not be set on objects to be created')
        for field in ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                      'generation', 'selfLink'):
            meta.pop(field, None)

        warnings: list[str] = []
        if rtype.custom:
            obj, warnings = self._decode_custom(rtype, obj, params, patch=False)
            meta = obj['metadata']

        # PrepareForCreate
        if 'status' in rtype.subresources:
            obj.pop('status', None)
        if rtype.custom or rtype.storage_key in GENERATION_TRACKED:
            meta['generation'] = 1
        self._prepare_builtin_create(rtype, obj)

        causes = self._validate_meta(rtype, meta, create=True)
        if causes:
            raise invalid(rtype.group, rtype.kind, name, causes)
        if rtype.custom:
            self._validate_custom(rtype, obj, None)
        if rtype.storage_key == (CRD_GROUP, CRD_PLURAL):
            self._admit_crd(obj)

        key = self._key(rtype, meta.get('namespace'), name)
        if key in self._store:
            raise already_exists(rtype.group, rtype.plural, name)
        if rtype.custom and self._crd_terminating(rtype):
            raise ApiError(failure(405, 'MethodNotAllowed',
                                   'create not allowed while custom resource definition is terminating', {}))
        if rtype.namespaced and self.require_namespaces:
            ns_obj = self._store.get(('', 'namespaces', None, meta['namespace']))
            if ns_obj is None:
                raise not_found('', 'namespaces', meta['namespace'])
            if ns_obj['metadata'].get('deletionTimestamp'):
                raise ApiError(failure(403, 'Forbidden',
                                       f'{rtype.plural} {_go_quote(name)} is forbidden: unable to create new content in '
                                       f'namespace {meta["namespace"]} because it is being terminated',
                                       {'name': name, 'kind': rtype.plural,
                                        'causes': [{'reason': 'NamespaceTerminating',
                                                    'message': f'namespace {meta["namespace"]} is being terminated',
                                                    'field': 'metadata.namespace'}]}))

        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = now_rfc3339()
        if params.get('dryRun') == 'All':
            meta['resourceVersion'] = ''
            return self._present(rtype, obj), warnings
        self._write(rtype, key, obj, None)
        if rtype.storage_key == (CRD_GROUP, CRD_PLURAL):
            self._register_crd(obj)
        self._collect_garbage()
        return self._present(rtype, self._store.get(key, obj)), warnings

    def _check_type_meta(self, rtype: ResourceType, obj: JSON) -> None:
        api_version = obj.get('apiVersion')
        if api_version and api_version != rtype.api_version:
            raise bad_request(f'the API version in the data ({api_version}) does not match the expected API version '
                              f'({rtype.api_version})')
        kind = obj.get('kind')
        if kind and kind != rtype.kind:
            raise bad_request(f'{kind} in version {_go_quote(rtype.version)} cannot be handled as a {rtype.kind}: '
                              f'the kind in the data ({kind}) does not match the expected kind ({rtype.kind})')

    @staticmethod
    def _reconcile_namespace(namespace: str | None, meta: JSON) -> None:
        """``rest.EnsureObjectNamespaceMatchesRequestNamespace``."""
        body_namespace = meta.get('namespace') or ''
        request_namespace = namespace or ''
        if body_namespace == request_namespace:
            return
        if not body_namespace:
            meta['namespace'] = request_namespace
            return
        raise bad_request('the namespace of the provided object does not match the namespace sent on the request')

    def _prepare_builtin_create(self, rtype: ResourceType, obj: JSON) -> None:
        if rtype.storage_key == ('', 'namespaces'):
            meta = obj['metadata']
            meta.setdefault('labels', {})['kubernetes.io/metadata.name'] = meta.get('name', '')
            obj['spec'] = {'finalizers': [NAMESPACE_FINALIZER]}
            obj['status'] = {'phase': 'Active'}

    @staticmethod
    def _validate_meta(rtype: ResourceType, meta: JSON, create: bool) -> list[Cause]:
        causes: list[Cause] = []
        name = meta.get('name') or ''
        if not name:
            if create:
                causes.append(Cause('metadata.name', 'FieldValueRequired',
                                    'Required value: name or generateName is required'))
            return causes
        if rtype.storage_key == ('', 'namespaces'):
            pattern, what = DNS1123_LABEL, ('a lowercase RFC 1123 label must consist of lower case alphanumeric '
                                            "characters or '-', and must start and end with an alphanumeric character "
                                            "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                                            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
        elif rtype.storage_key == ('', 'services'):
            pattern, what = DNS1035_LABEL, ('a DNS-1035 label must consist of lower case alphanumeric characters or '
                                            "'-', start with an alphabetic character, and end with an alphanumeric "
                                            "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                                            "'[a-z]([-a-z0-9]*[a-z0-9])?')")
        else:
            pattern, what = DNS1123_SUBDOMAIN, ('a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                                                "characters, '-' or '.', and must start and end with an alphanumeric "
                                                "character (e.g. 'example.com', regex used for validation is "
                                                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
        if not pattern.match(name) or len(name) > 253:
            causes.append(Cause('metadata.name', 'FieldValueInvalid', f'Invalid value: {_go_quote(name)}: {what}'))
        for field in ('labels', 'annotations'):
            value = meta.get(field)
            if value is not None and (not isinstance(value, dict)
                                      or not all(isinstance(v, str) for v in value.values())):
                causes.append(Cause(f'metadata.{field}', 'FieldValueInvalid',
                                    f'Invalid value: {json.dumps(value)}: must be a map of strings'))
        for key, value in (meta.get('labels') or {}).items():
            if not _LABEL_KEY.match(str(key)):
                causes.append(Cause('metadata.labels', 'FieldValueInvalid',
                                    f'Invalid value: {_go_quote(str(key))}: name part must consist of alphanumeric '
                                    "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
            elif isinstance(value, str) and (not _LABEL_VALUE.match(value) or len(value) > 63):
                causes.append(Cause('metadata.labels', 'FieldValueInvalid',
                                    f'Invalid value: {_go_quote(value)}: a valid label must be an empty string or '
                                    "consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
                                    'an alphanumeric character'))
        return causes

    # ---- custom resources: prune, default, validate -----------------------------------------

    def _decode_custom(self, rtype: ResourceType, obj: JSON, params: Mapping[str, str],
                       patch: bool) -> tuple[JSON, list[str]]:
        """Prune unknown fields and apply defaults, as the CR decoder does; honour fieldValidation."""
        if rtype.schema is None:
            return obj, []
        directive = params.get('fieldValidation') or 'Warn'
        if directive not in ('Ignore', 'Warn', 'Strict'):
            raise bad_request(f'fieldValidation: Unsupported value: {_go_quote(directive)}: supported values: '
                              '"Ignore", "Warn", "Strict"')
        # The schema functions return new objects; ``obj`` is the caller's own copy, so its
        # type and object meta can go into the result as they are.
        root: JSON = {key: obj[key] for key in ('apiVersion', 'kind', 'metadata') if key in obj}
        pruned, unknown = crd_schema.prune_and_report(rtype.schema, obj)
        pruned = crd_schema.prune_nulls(rtype.schema, pruned)
        pruned.update(root)
        warnings: list[str] = []
        if unknown:
            messages = [f'unknown field {_go_quote(path)}' for path in unknown]
            if directive == 'Strict':
                text = 'strict decoding error: ' + ', '.join(messages)
                if not patch:
                    text = f'{rtype.kind} in version {_go_quote(rtype.version)} cannot be handled as a {rtype.kind}: {text}'
                raise bad_request(text)
            if directive == 'Warn':
                warnings = messages
        defaulted = crd_schema.apply_defaults(rtype.schema, pruned)
        defaulted.update(root)
        return defaulted, warnings

    def _validate_custom(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> None:
        if rtype.schema is None:
            return
        errors = crd_schema.validate(rtype.schema, obj, old)
        if errors:
            name = obj.get('metadata', {}).get('name', '')
            raise ApiError(crd_schema.invalid_status(rtype.kind, rtype.group, name, errors))

    def _admit_crd(self, crd: JSON) -> None:
        """CRD create/update: the schema module's checks, then the defaults the server applies."""
        name = crd.get('metadata', {}).get('name', '')
        errors = crd_schema.check_crd(crd)
        if errors:
            raise ApiError(crd_schema.invalid_status('CustomResourceDefinition', CRD_GROUP, name, errors))
        spec = crd.get('spec')
        names = spec.get('names') if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(names, dict) or not names.get('plural') \
                or not names.get('kind') or not spec.get('group') or not spec.get('versions'):
            raise invalid(CRD_GROUP, 'CustomResourceDefinition', name,
                          [Cause('spec', 'FieldValueRequired', 'Required value: group, names.plural, names.kind and '
                                 'versions are required')])
        names.setdefault('singular', names['kind'].lower())
        names.setdefault('listKind', f'{names["kind"]}List')
        spec.setdefault('scope', 'Namespaced')
        spec.setdefault('conversion', {'strategy': 'None'})
        storage = next((v['name'] for v in spec['versions'] if v.get('storage')), spec['versions'][0]['name'])
        previous = crd.get('status')
        status: JSON = previous if isinstance(previous, dict) else {}
        crd['status'] = {
            'acceptedNames': copy.deepcopy(names),
            'conditions': status.get('conditions') or [
                {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
                 'message': 'no conflicts found', 'lastTransitionTime': now_rfc3339()},
                {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                 'message': 'the initial names have been accepted', 'lastTransitionTime': now_rfc3339()},
            ],
            'storedVersions': sorted(set(status.get('storedVersions') or []) | {storage}),
        }

    def _crd_terminating(self, rtype: ResourceType) -> bool:
        crd = self._store.get((CRD_GROUP, CRD_PLURAL, None, rtype.crd_name or ''))
        return bool(crd and crd['metadata'].get('deletionTimestamp'))

    # ---- writes: update and patch -------------------------------------------------------------

    def _update(self, rtype: ResourceType, namespace: str | None, name: str, body: JSON,
                params: Mapping[str, str], subresource: str | None = None,
                patch: bool = False) -> tuple[JSON, list[str]]:
        key = self._key(rtype, namespace, name)
        current = self._store.get(key)
        if current is None:
            raise not_found(rtype.group, rtype.plural, name)
        new = copy.deepcopy(body)
        self._check_type_meta(rtype, new)
        new['apiVersion'], new['kind'] = rtype.api_version, rtype.kind
        meta = new.get('metadata')
        if not isinstance(meta, dict):
            meta = new['metadata'] = {}
        if meta.get('name') and meta['name'] != name:
            raise bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        meta['name'] = name
        if rtype.namespaced:
            self._reconcile_namespace(namespace, meta)

        # Preconditions (storage GuaranteedUpdate): a resourceVersion in the body must be current.
        rv = meta.get('resourceVersion')
        if rv:
            if str(rv) != current['metadata']['resourceVersion']:
                raise conflict(rtype.group, rtype.plural, name, MODIFIED_CONFLICT)
        elif not patch and rtype.custom:
            raise invalid(rtype.group, rtype.kind, name,
                          [Cause('metadata.resourceVersion', 'FieldValueInvalid',
                                 'Invalid value: 0x0: must be specified for an update')])
        uid = meta.get('uid')
        if uid and uid != current['metadata'].get('uid'):
            if patch:
                raise conflict(rtype.group, rtype.plural, name,
                               f'Precondition failed: UID in precondition: {uid}, UID in object meta: '
                               f'{current["metadata"].get("uid")}')
            raise invalid(rtype.group, rtype.kind, name,
                          [Cause('metadata.uid', 'FieldValueInvalid', f'Invalid value: {_go_quote(uid)}: field is immutable')])

        warnings: list[str] = []
        if rtype.custom:
            new, warnings = self._decode_custom(rtype, new, params, patch=patch)
            meta = new['metadata']

        # PrepareForUpdate (main resource or status subresource).
        if subresource == 'status':
            status = new.get('status')
            has_status = 'status' in new
            new = copy.deepcopy(current)
            new['apiVersion'], new['kind'] = rtype.api_version, rtype.kind
            if has_status:
                new['status'] = status
            else:
                new.pop('status', None)
            meta = new['metadata']
        elif 'status' in rtype.subresources:
            if 'status' in current:
                new['status'] = copy.deepcopy(current['status'])
            else:
                new.pop('status', None)
        if rtype.storage_key == ('', 'namespaces') and subresource != 'status':
            new['spec'] = copy.deepcopy(current.get('spec', {}))
        for field in ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                      'generation', 'namespace'):
            if field in current['metadata']:
                meta[field] = current['metadata'][field]
            else:
                meta.pop(field, None)
        meta['resourceVersion'] = current['metadata']['resourceVersion']
        if 'generation' in meta and subresource != 'status' and self._spec_changed(rtype, current, new):
            meta['generation'] = int(meta['generation']) + 1

        causes = self._validate_meta(rtype, meta, create=False)
        if current['metadata'].get('deletionTimestamp'):
            added = sorted(set(meta.get('finalizers') or []) - set(current['metadata'].get('finalizers') or []))
            if added:
                go_list = '[]string{' + ', '.join(_go_quote(f) for f in added) + '}'
                causes.append(Cause('metadata.finalizers', 'FieldValueForbidden',
                                    'Forbidden: no new finalizers can be added if the object is being deleted, '
                                    f'found new finalizers {go_list}'))
        if causes:
            raise invalid(rtype.group, rtype.kind, name, causes)
        if rtype.custom:
            self._validate_custom(rtype, new, current)
        if rtype.storage_key == (CRD_GROUP, CRD_PLURAL) and subresource != 'status':
            new['status'] = copy.deepcopy(current.get('status'))
            self._admit_crd(new)

        if params.get('dryRun') == 'All':
            return self._present(rtype, new), warnings
        if self._comparable(new) == self._comparable(current):
            return self._present(rtype, current), warnings  # a no-op write: no new resourceVersion, no event
        removed = self._commit_update(rtype, key, new, current)
        if rtype.storage_key == (CRD_GROUP, CRD_PLURAL) and not removed:
            self._register_crd(new)
        self._collect_garbage()
        return self._present(rtype, self._store.get(key, new)), warnings

    @staticmethod
    def _comparable(obj: JSON) -> JSON:
        return {key: value for key, value in obj.items() if key not in ('apiVersion', 'kind')}

    @staticmethod
    def _spec_changed(rtype: ResourceType, old: JSON, new: JSON) -> bool:
        if rtype.custom:
            # Everything outside metadata (status was reset to the old one when it is a subresource).
            ignored = ('metadata', 'apiVersion', 'kind')
            return {k: v for k, v in old.items() if k not in ignored} != {k: v for k, v in new.items() if k not in ignored}
        if rtype.storage_key in GENERATION_ON_ANNOTATIONS and \
                old['metadata'].get('annotations') != new['metadata'].get('annotations'):
            return True
        return old.get('spec') != new.get('spec')

    def _patch(self, rtype: ResourceType, namespace: str | None, name: str, request: kmock.Request,
               params: Mapping[str, str], subresource: str | None = None) -> tuple[JSON, list[str]]:
        content_type = self._content_type(request)
        accepted = [JSON_PATCH, MERGE_PATCH] + ([] if rtype.custom else [STRATEGIC_PATCH]) + [APPLY_PATCH]
        if content_type not in accepted:
            raise unsupported_media_type(accepted)
        current = self._get(rtype, namespace, name)
        document = self._present(rtype, current)
        patched = self._apply_patch(rtype, document, content_type, request, params)
        return self._update(rtype, namespace, name, patched, params, subresource=subresource, patch=True)

    def _apply_patch(self, rtype: ResourceType, document: JSON, content_type: str, request: kmock.Request,
                     params: Mapping[str, str]) -> JSON:
        text = request.text
        if content_type == JSON_PATCH:
            try:
                operations = json.loads(text)
                patch = jsonpatch.JsonPatch(operations)
            except (ValueError, jsonpatch.InvalidJsonPatch, TypeError) as e:
                raise bad_request(str(e))
            try:
                result = patch.apply(document)
            except jsonpatch.JsonPatchTestFailed:
                failed = next((op.get('path', '') for op in operations if isinstance(op, dict) and op.get('op') == 'test'
                               and not _json_pointer_equals(document, op)), '')
                raise self._patch_rejected(f'testing value {failed} failed: test failed')
            except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException, jsonpatch.JsonPatchException) as e:
                raise self._patch_rejected(str(e))
        elif content_type == APPLY_PATCH:
            if not params.get('fieldManager'):
                raise bad_request('PATCH requests with apply content type must include a fieldManager query parameter')
            try:
                applied = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise bad_request(f'error decoding YAML: {e}')
            if not isinstance(applied, dict):
                raise bad_request('the apply patch must be an object')
            applied.setdefault('metadata', {}).pop('resourceVersion', None)
            self._check_applied_fields(rtype, document['metadata'], applied)
            result = _apply_merge(document, applied)
        else:
            try:
                patch_data = json.loads(text)
            except ValueError as e:
                raise bad_request(f'error decoding patch: {e}')
            if not isinstance(patch_data, dict):
                raise bad_request('the patch must be a JSON object')
            if content_type == MERGE_PATCH:
                result = merge_patch(document, patch_data)
            else:
                result = strategic_merge_patch(document, patch_data)
        if not isinstance(result, dict):
            raise self._patch_rejected('the patched object is not a JSON object')
        return result

    @staticmethod
    def _patch_rejected(message: str) -> ApiError:
        """``NewGenericServerResponse(422, ...)``, as the real server answers a failing JSON patch."""
        return ApiError(failure(422, 'Invalid', 'the server rejected our request due to an error in our request',
                                {'causes': [{'reason': 'UnexpectedServerResponse', 'message': message}]}))

    def _apply_create(self, rtype: ResourceType, namespace: str | None, name: str, request: kmock.Request,
                      params: Mapping[str, str]) -> tuple[JSON, list[str]]:
        """Server-side apply of an object that does not exist: create it from the applied config."""
        if not params.get('fieldManager'):
            raise bad_request('PATCH requests with apply content type must include a fieldManager query parameter')
        try:
            applied = yaml.safe_load(request.text)
        except yaml.YAMLError as e:
            raise bad_request(f'error decoding YAML: {e}')
        if not isinstance(applied, dict):
            raise bad_request('the apply patch must be an object')
        meta = applied.setdefault('metadata', {})
        if meta.get('name') and meta['name'] != name:
            raise bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        meta['name'] = name
        meta.pop('resourceVersion', None)
        self._check_applied_fields(rtype, {'name': name, 'namespace': namespace}, applied)
        return self._create(rtype, namespace, applied, params)

    @staticmethod
    def _check_applied_fields(rtype: ResourceType, meta: Mapping[str, Any], applied: JSON) -> None:
        """Server-side apply converts the applied config to a typed object first: a field the schema
        does not declare fails the request (500, whatever fieldValidation says), unlike the pruning
        of create/update/merge patches."""
        if rtype.schema is None:
            return
        unknown = crd_schema.unknown_fields(rtype.schema, applied)
        if not unknown:
            return
        texts = [f'.{path}: field not declared in schema' for path in unknown]
        detail = texts[0] if len(texts) == 1 else 'errors:\n  ' + '\n  '.join(texts)
        namespace = meta.get('namespace')
        who = f'{namespace}/{meta.get("name", "")}' if namespace else str(meta.get('name', ''))
        raise ApiError(failure(500, '', f'failed to create typed patch object ({who}; {rtype.api_version}, '
                                        f'Kind={rtype.kind}): {detail}'))

    # ---- scale ---------------------------------------------------------------------------------

    async def _serve_scale(self, request: kmock.Request, rtype: ResourceType, namespace: str | None, name: str,
                           method: str, params: Mapping[str, str]) -> aiohttp.web.StreamResponse:
        paths = rtype.scale or {}
        current = self._get(rtype, namespace, name)
        if method == 'GET':
            return self._json_response(self._scale_of(rtype, current))
        if method not in ('PUT', 'PATCH'):
            raise method_not_allowed()
        if method == 'PUT':
            scale = self._decode_body(request)
        else:
            content_type = self._content_type(request)
            accepted = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]
            if content_type not in accepted:
                raise unsupported_media_type(accepted)
            scale = self._apply_patch(rtype, self._scale_of(rtype, current), content_type, request, params)
        replicas = (scale.get('spec') or {}).get('replicas')
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid('autoscaling', 'Scale', name,
                          [Cause('spec.replicas', 'FieldValueInvalid',
                                 f'Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0')])
        updated = copy.deepcopy(current)
        _set_nested(updated, paths.get('specReplicasPath', '.spec.replicas'), replicas)
        scale_rv = (scale.get('metadata') or {}).get('resourceVersion')
        updated['metadata']['resourceVersion'] = scale_rv or current['metadata']['resourceVersion']
        obj, _ = self._update(rtype, namespace, name, updated, params, patch=True)
        return self._json_response(self._scale_of(rtype, obj))

    def _scale_of(self, rtype: ResourceType, obj: JSON) -> JSON:
        paths = rtype.scale or {}
        meta = obj['metadata']
        spec_replicas = _nested(obj, paths.get('specReplicasPath', '.spec.replicas'))
        status_replicas = _nested(obj, paths.get('statusReplicasPath', '.status.replicas'))
        selector_path = paths.get('labelSelectorPath')
        selector = _nested(obj, selector_path) if selector_path else None
        if isinstance(selector, dict):
            selector = _selector_string(selector)
        status: JSON = {'replicas': int(status_replicas) if isinstance(status_replicas, int) else 0}
        if isinstance(selector, str) and selector:
            status['selector'] = selector
        scale_meta = {key: meta[key] for key in ('name', 'namespace', 'uid', 'resourceVersion', 'creationTimestamp')
                      if key in meta}
        return {'kind': 'Scale', 'apiVersion': 'autoscaling/v1', 'metadata': scale_meta,
                'spec': {'replicas': int(spec_replicas) if isinstance(spec_replicas, int) else 0},
                'status': status}

    # ---- deletion and garbage collection ---------------------------------------------------

    def _delete_options(self, request: kmock.Request, params: Mapping[str, str]) -> JSON:
        options: JSON = {}
        if request.text.strip():
            try:
                body = json.loads(request.text)
            except ValueError as e:
                raise bad_request(f'the body of the request could not be decoded: {e}')
            if isinstance(body, dict):
                options.update(body)
        if params.get('propagationPolicy'):
            options['propagationPolicy'] = params['propagationPolicy']
        if params.get('dryRun'):
            options['dryRun'] = [params['dryRun']]
        if params.get('gracePeriodSeconds'):
            options['gracePeriodSeconds'] = int(params['gracePeriodSeconds'])
        if 'orphanDependents' in options and 'propagationPolicy' not in options:
            options['propagationPolicy'] = 'Orphan' if options['orphanDependents'] else 'Background'
        policy = options.get('propagationPolicy')
        if policy is not None and policy not in ('Background', 'Foreground', 'Orphan'):
            raise invalid('', 'DeleteOptions', '',
                          [Cause('propagationPolicy', 'FieldValueNotSupported',
                                 f'Unsupported value: {_go_quote(str(policy))}: supported values: '
                                 '"Foreground", "Background", "Orphan", "nil"')])
        return options

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str, options: JSON) -> tuple[JSON, int]:
        obj, removed = self._delete_object(rtype, namespace, name, options)
        return (self._deleted_response(rtype, obj) if removed else self._present(rtype, obj)), 200

    def _delete_object(self, rtype: ResourceType, namespace: str | None, name: str, options: JSON) -> tuple[JSON, bool]:
        """Delete (or start deleting) an object: the object as the deletion left it, and whether it
        is gone from the store."""
        key = self._key(rtype, namespace, name)
        current = self._get(rtype, namespace, name)
        meta = current['metadata']
        preconditions = options.get('preconditions') or {}
        if preconditions.get('uid') and preconditions['uid'] != meta.get('uid'):
            raise conflict(rtype.group, rtype.plural, name,
                           f'Precondition failed: UID in precondition: {preconditions["uid"]}, '
                           f'UID in object meta: {meta.get("uid")}')
        if preconditions.get('resourceVersion') and preconditions['resourceVersion'] != meta.get('resourceVersion'):
            raise conflict(rtype.group, rtype.plural, name,
                           f'Precondition failed: ResourceVersion in precondition: {preconditions["resourceVersion"]}, '
                           f'ResourceVersion in object meta: {meta.get("resourceVersion")}')
        if 'All' in (options.get('dryRun') or []):
            return current, False
        if meta.get('deletionTimestamp'):
            return current, False  # already being deleted

        policy = options.get('propagationPolicy') or 'Background'
        finalizers = list(meta.get('finalizers') or [])
        extra = {'Foreground': FOREGROUND_FINALIZER, 'Orphan': ORPHAN_FINALIZER}.get(policy)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if rtype.storage_key == (CRD_GROUP, CRD_PLURAL) and CRD_CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CRD_CLEANUP_FINALIZER)
        pending_namespace = rtype.storage_key == ('', 'namespaces') and bool((current.get('spec') or {}).get('finalizers'))

        if finalizers or pending_namespace:
            updated = copy.deepcopy(current)
            self._mark_deleting(updated, finalizers)
            if pending_namespace:
                updated.setdefault('status', {})['phase'] = 'Terminating'
            self._write(rtype, key, updated, current)
            self._collect_garbage()
            return self._store.get(key, updated), False

        removed = self._remove(rtype, key)
        self._collect_garbage()
        return removed, True

    @staticmethod
    def _mark_deleting(obj: JSON, finalizers: list[str]) -> None:
        """``markAsDeleting``: deletionTimestamp, zero grace period, generation bump."""
        meta = obj['metadata']
        if finalizers:
            meta['finalizers'] = finalizers
        if not meta.get('deletionTimestamp') and int(meta.get('generation') or 0) > 0:
            meta['generation'] = int(meta['generation']) + 1
        meta['deletionTimestamp'] = meta.get('deletionTimestamp') or now_rfc3339()
        meta['deletionGracePeriodSeconds'] = 0

    def _deleted_response(self, rtype: ResourceType, removed: JSON) -> JSON:
        if rtype.storage_key in RETURNS_DELETED_OBJECT:
            return self._present(rtype, removed)
        details = _resource_details(rtype.group, rtype.plural, removed['metadata']['name'])
        details['uid'] = removed['metadata'].get('uid', '')
        return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success', 'details': details}

    def _delete_collection(self, rtype: ResourceType, namespace: str | None, request: kmock.Request,
                           params: Mapping[str, str]) -> JSON:
        matches = self._matcher(rtype, namespace, params)
        options = self._delete_options(request, params)
        deleted: list[JSON] = []
        for key, obj in sorted(self._store.items()):
            if key[:2] == rtype.storage_key and key in self._store and matches(obj):
                deleted.append(self._present(rtype, self._delete_object(rtype, key[2], key[3], options)[0]))
        return {'apiVersion': rtype.api_version, 'kind': rtype.list_kind_name,
                'metadata': {'resourceVersion': str(self._rv)}, 'items': deleted}

    def _commit_update(self, rtype: ResourceType, key: StoreKey, new: JSON, current: JSON) -> bool:
        """Store an update, or — when it empties the finalizers of an object being deleted — delete
        the object instead (the registry's ``deleteWithoutFinalizers``: no MODIFIED event, one DELETED
        event carrying the last stored state). Returns whether the object was removed."""
        meta = new['metadata']
        pending_namespace = rtype.storage_key == ('', 'namespaces') and bool((new.get('spec') or {}).get('finalizers'))
        if meta.get('deletionTimestamp') and not meta.get('finalizers') and not pending_namespace \
                and current['metadata'].get('deletionGracePeriodSeconds') == 0:
            self._remove(rtype, key)
            return True
        self._write(rtype, key, new, current)
        return False

    def _set_finalizers(self, key: StoreKey, finalizers: list[str]) -> None:
        current = self._store[key]
        updated = copy.deepcopy(current)
        if finalizers:
            updated['metadata']['finalizers'] = finalizers
        else:
            updated['metadata'].pop('finalizers', None)
        self._commit_update(self._type_for_key(key), key, updated, current)

    def _collect_garbage(self) -> None:
        """What kube-controller-manager's garbage collector, namespace controller and
        apiextensions' finalizer controller do, run to a fixpoint right after every write that
        may have given them work."""
        if not self._gc_pending:
            return
        for _ in range(1000):
            if not self._gc_step():
                self._gc_pending = False
                return
        raise RuntimeError('garbage collection did not converge')  # pragma: no cover

    def _gc_step(self) -> bool:
        uids = {obj['metadata'].get('uid') for obj in self._store.values()}
        for key in list(self._store):
            obj = self._store.get(key)
            if obj is None:
                continue
            meta = obj['metadata']
            finalizers = list(meta.get('finalizers') or [])
            uid = meta.get('uid')
            if meta.get('deletionTimestamp'):
                dependents = [k for k, o in self._store.items()
                              if any(ref.get('uid') == uid for ref in o['metadata'].get('ownerReferences') or [])]
                if ORPHAN_FINALIZER in finalizers:
                    for dep_key in dependents:
                        current = self._store[dep_key]
                        updated = copy.deepcopy(current)
                        refs = [ref for ref in updated['metadata'].get('ownerReferences') or [] if ref.get('uid') != uid]
                        if refs:
                            updated['metadata']['ownerReferences'] = refs
                        else:
                            updated['metadata'].pop('ownerReferences', None)
                        self._write(self._type_for_key(dep_key), dep_key, updated, current)
                    self._set_finalizers(key, [f for f in finalizers if f != ORPHAN_FINALIZER])
                    return True
                if FOREGROUND_FINALIZER in finalizers:
                    for dep_key in dependents:
                        if not self._store[dep_key]['metadata'].get('deletionTimestamp'):
                            self._delete_key(dep_key, 'Background')
                            return True
                    blocking = [k for k in dependents if k in self._store and any(
                        ref.get('uid') == uid and ref.get('blockOwnerDeletion')
                        for ref in self._store[k]['metadata'].get('ownerReferences') or [])]
                    if not blocking:
                        self._set_finalizers(key, [f for f in finalizers if f != FOREGROUND_FINALIZER])
                        return True
                if CRD_CLEANUP_FINALIZER in finalizers and key[:2] == (CRD_GROUP, CRD_PLURAL):
                    spec = obj.get('spec', {})
                    storage = (spec.get('group', ''), spec.get('names', {}).get('plural', ''))
                    instances = [k for k in self._store if k[:2] == storage]
                    for instance in instances:
                        if not self._store[instance]['metadata'].get('deletionTimestamp'):
                            self._delete_key(instance, 'Background')
                            return True
                    if not instances:
                        self._set_finalizers(key, [f for f in finalizers if f != CRD_CLEANUP_FINALIZER])
                        return True
                if key[:2] == ('', 'namespaces') and (obj.get('spec') or {}).get('finalizers'):
                    contents = [k for k in self._store if k[2] == key[3]]
                    for content in contents:
                        if not self._store[content]['metadata'].get('deletionTimestamp'):
                            self._delete_key(content, 'Background')
                            return True
                    if not contents:
                        current = obj
                        updated = copy.deepcopy(current)
                        updated['spec']['finalizers'] = []
                        self._commit_update(self._type_for_key(key), key, updated, current)
                        return True
            else:
                owners = [ref.get('uid') for ref in meta.get('ownerReferences') or []]
                if owners and not any(owner in uids for owner in owners):
                    self._delete_key(key, 'Background')
                    return True
        return False

    def _delete_key(self, key: StoreKey, policy: str) -> None:
        rtype = self._type_for_key(key)
        obj = self._store[key]
        meta = obj['metadata']
        finalizers = list(meta.get('finalizers') or [])
        if policy == 'Foreground' and FOREGROUND_FINALIZER not in finalizers:
            finalizers.append(FOREGROUND_FINALIZER)
        pending_namespace = key[:2] == ('', 'namespaces') and bool((obj.get('spec') or {}).get('finalizers'))
        if finalizers or pending_namespace:
            updated = copy.deepcopy(obj)
            self._mark_deleting(updated, finalizers)
            self._write(rtype, key, updated, obj)
        else:
            self._remove(rtype, key)


def _apply_merge(live: JSON, applied: JSON) -> JSON:
    """Server-side apply approximated as a merge of the applied config into the live object.

    Without managedFields there is no ownership: fields dropped from a later applied config are
    not removed, and conflicts between managers are never reported.
    """
    return cast(JSON, merge_patch(live, _drop_nulls(applied)))


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value


def _json_pointer_equals(document: JSON, operation: Mapping[str, Any]) -> bool:
    try:
        return bool(jsonpatch.JsonPointer(operation.get('path', '')).resolve(document) == operation.get('value'))
    except (jsonpatch.JsonPointerException, TypeError):
        return False
