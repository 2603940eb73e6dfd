"""A local server speaking HashiCorp Vault's HTTP API: the parts agentgov's Vault provider uses.

What it is for: driving ``agentgov.secrets.vault`` through real ``hvac`` (and real HTTP) without
a Vault binary. It serves, on 127.0.0.1 and a free port, with the paths, JSON bodies, status codes
and error texts of Vault 1.17+ (checked against hashicorp/vault-plugin-secrets-kv's
``path_data.go`` and hashicorp/vault-plugin-auth-kubernetes's ``path_login.go``):

- KV version 2 at any mount: ``GET/POST/PUT/DELETE /v1/{mount}/data/{path}`` (``?version=N``;
  ``options.cas``; 404 ``{"errors": []}`` for no secret or no such version; 404 with the
  version's metadata and ``"data": null`` for a deleted or destroyed one), ``/delete/``,
  ``/undelete/``, ``/destroy/`` (204) and ``GET /metadata/``; ``max_versions`` and
  ``cas_required`` per mount.
- Tokens (``X-Vault-Token``) with policies: path globs (``*`` suffix, ``+`` segment) mapped to
  capabilities (create, read, update, delete, list, deny); ``root``; a ``default`` policy every
  token has unless told otherwise (lookup-self). A missing capability is 403
  ``1 error occurred: permission denied``; a missing, unknown, revoked or expired token is 403
  with ``permission denied`` and ``invalid token`` (Vault 1.17+). Tokens expire on the server's
  clock, which tests move with ``advance()``: no sleeps.
- ``GET /v1/auth/token/lookup-self``.
- Kubernetes auth at any mount: ``POST /v1/auth/{mount}/login`` with ``role`` and ``jwt``; roles
  bind service account names and namespaces (globs) to policies and a token ttl. Errors as the
  plugin's: ``missing role`` / ``missing jwt`` / ``invalid role name "x"`` (400), ``permission
  denied`` for a JWT the TokenReview would refuse, ``service account name not authorized`` /
  ``namespace not authorized`` (403).
- Namespaces (``X-Vault-Namespace``): each an isolated set of mounts, policies, tokens and roles.
- Faults: ``seal()`` (503 ``Vault is sealed``), ``pause()`` (connections are accepted and
  requests read, nothing is answered until ``resume()``), ``stop_listening()`` (connection
  refused; every open connection closed) and ``start_listening()`` on the same port.
- What it saw: ``requests`` (method, path, namespace, status, token accessor; never a token or a
  body) and ``logins()``.

Gaps, on purpose: real Vault validates a service account JWT by calling the Kubernetes
TokenReview API; here the JWTs the test issued with ``issue_service_account_jwt`` are the
ones the "review" accepts (and names the account of). Policies are the union of every matching
rule (``deny`` wins), not Vault's most-specific-rule precedence. Tokens are valid only in the
namespace that issued them (no parent-namespace tokens). Only the parts above are served; the
``sys/`` API is replaced by the Python setup methods (``enable_kv``, ``add_policy``, ...).

What it must never do: listen beyond 127.0.0.1, outlive the test that started it (``stop`` in
every fixture's teardown), or log tokens, JWTs or values.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.redis import free_port
from harness.threaded import ThreadedServer

# Vault's default max_request_size (32 MiB) and default max lease (768h).
MAX_REQUEST_SIZE = 32 * 1024 * 1024
DEFAULT_TTL = 768 * 3600
CAPABILITIES = frozenset({'create', 'read', 'update', 'patch', 'delete', 'list', 'sudo', 'deny'})
DEFAULT_POLICY = {
    'auth/token/lookup-self': ['read'],
    'auth/token/renew-self': ['update'],
    'auth/token/revoke-self': ['update'],
}
PERMISSION_DENIED = '1 error occurred:\n\t* permission denied\n\n'
INVALID_TOKEN = '2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n'
SEALED = 'Vault is sealed'
CAS_MISMATCH = 'check-and-set parameter did not match the current version'

JSON = dict[str, Any]


def rfc3339(moment: float | None) -> str:
    """Vault's timestamps (Go's RFC3339Nano, UTC); "" for none."""
    if moment is None:
        return ''
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


@dataclass
class _Version:
    data: JSON | None
    created: float
    deleted: float | None = None
    destroyed: bool = False

    def metadata(self) -> JSON:
        return {'created_time': rfc3339(self.created), 'deletion_time': rfc3339(self.deleted),
                'destroyed': self.destroyed}


@dataclass
class _Secret:
    created: float
    updated: float
    current: int = 0
    oldest: int = 0
    versions: dict[int, _Version] = field(default_factory=dict)
    custom_metadata: dict[str, str] | None = None


@dataclass
class _KvMount:
    max_versions: int = 0
    cas_required: bool = False
    secrets: dict[str, _Secret] = field(default_factory=dict)


@dataclass
class _Token:
    token: str
    accessor: str
    policies: tuple[str, ...]
    issued: float
    ttl: int  # seconds from issue; 0: never expires
    path: str
    display_name: str
    meta: dict[str, str] | None = None
    revoked: bool = False

    def expires(self) -> float | None:
        return self.issued + self.ttl if self.ttl else None

    def valid(self, now: float) -> bool:
        expires = self.expires()
        return not self.revoked and (expires is None or now < expires)


@dataclass
class _Role:
    service_account_names: tuple[str, ...]
    service_account_namespaces: tuple[str, ...]
    policies: tuple[str, ...]
    ttl: int


@dataclass
class _Namespace:
    kv: dict[str, _KvMount] = field(default_factory=dict)
    policies: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    kubernetes_auth: dict[str, dict[str, _Role]] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it: never a token, a JWT or a body."""
    method: str
    path: str
    namespace: str
    status: int
    accessor: str | None


@dataclass
class _Hook:
    """Something to do just before serving the next ``times`` matching requests."""
    method: str
    path: re.Pattern[str]
    action: Callable[[], None]
    times: int


@dataclass(frozen=True)
class _ServiceAccount:
    name: str
    namespace: str
    uid: str


class _Reply(Exception):
    """An HTTP answer raised from anywhere in the dispatch."""

    def __init__(self, status: int, body: JSON | None = None) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _errors(status: int, *messages: str) -> _Reply:
    return _Reply(status, {'errors': list(messages)})


def _glob(pattern: str) -> re.Pattern[str]:
    """A Vault policy path: ``+`` is one segment, a trailing ``*`` any suffix."""
    prefix, star = (pattern[:-1], True) if pattern.endswith('*') else (pattern, False)
    regex = '[^/]+'.join(re.escape(part) for part in prefix.split('+'))
    return re.compile(regex + ('.*' if star else ''))


def _name_glob(patterns: Iterable[str], name: str) -> bool:
    """A role's bound names: ``*`` alone is anything; ``*`` inside is Vault's StrListContainsGlob."""
    return any(p == '*' or re.fullmatch('.*'.join(re.escape(x) for x in p.split('*')), name) for p in patterns)


class VaultServer(ThreadedServer):
    """A Vault server (KV v2, tokens, Kubernetes auth) on 127.0.0.1, served from a thread."""

    def __init__(self, host: str = '127.0.0.1', port: int | None = None) -> None:
        super().__init__()
        self.host = host
        self.port = port or free_port()
        self.root_token = 'hvs.' + secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._clock_offset = 0.0
        self._namespaces: dict[str, _Namespace] = {'': _Namespace()}
        self._issue(self._namespaces[''], ('root',), 0, 'auth/token/root', 'root', token=self.root_token)
        self._service_accounts: dict[str, _ServiceAccount] = {}
        self._sealed = False
        self._requests: list[RequestRecord] = []
        self._logins: list[tuple[str, str, str]] = []  # (namespace, mount, role)
        self.internal_errors: list[str] = []
        self._hooks: list[_Hook] = []
        self._accessor: str | None = None  # of the token the request being served presented
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}'

    # ---- lifecycle -------------------------------------------------------------------------

    def seal(self) -> None:
        with self._lock:
            self._sealed = True

    def unseal(self) -> None:
        with self._lock:
            self._sealed = False

    def advance(self, seconds: float) -> None:
        """Move the server's clock (token expiry) forward."""
        with self._lock:
            self._clock_offset += seconds

    def now(self) -> float:
        return time.time() + self._clock_offset

    async def _listen(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=MAX_REQUEST_SIZE)
        app.router.add_route('*', '/{tail:.*}', self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        self._runner = runner

    async def _unlisten(self) -> None:
        if self._runner is None:
            return
        assert self._released is not None
        self._released.set()  # requests held by pause() finish rather than hold the shutdown
        runner, self._runner = self._runner, None
        await runner.cleanup()

    # ---- setup (what an admin does through sys/ and auth/ APIs) ----------------------------

    def add_namespace(self, name: str) -> None:
        with self._lock:
            self._namespaces.setdefault(name.strip('/'), _Namespace())

    def enable_kv(self, mount: str = 'secret', *, namespace: str = '', max_versions: int = 0,
                  cas_required: bool = False) -> None:
        with self._lock:
            self._namespace(namespace).kv[mount.strip('/')] = _KvMount(max_versions, cas_required)

    def add_policy(self, name: str, rules: Mapping[str, Iterable[str]], *, namespace: str = '') -> None:
        """A policy: path glob -> capabilities."""
        compiled = {}
        for path, capabilities in rules.items():
            caps = frozenset(capabilities)
            unknown = caps - CAPABILITIES
            if unknown:
                raise ValueError(f'unknown capabilities {sorted(unknown)}')
            compiled[path] = caps
        with self._lock:
            self._namespace(namespace).policies[name] = compiled

    def create_token(self, policies: Iterable[str] = (), *, ttl: int = 0, namespace: str = '',
                     no_default_policy: bool = False) -> str:
        """A new service token (``auth/token/create``); ``ttl`` seconds, 0 for none."""
        names = tuple(policies) + (() if no_default_policy else ('default',))
        with self._lock:
            return self._issue(self._namespace(namespace), names, ttl, 'auth/token/create', 'token').token

    def revoke(self, token: str) -> None:
        with self._lock:
            for ns in self._namespaces.values():
                if token in ns.tokens:
                    ns.tokens[token].revoked = True

    def enable_kubernetes_auth(self, mount: str = 'kubernetes', *, namespace: str = '') -> None:
        with self._lock:
            self._namespace(namespace).kubernetes_auth.setdefault(mount.strip('/'), {})

    def add_kubernetes_role(self, name: str, *, service_account_names: Iterable[str],
                            service_account_namespaces: Iterable[str], policies: Iterable[str],
                            ttl: int = 0, mount: str = 'kubernetes', namespace: str = '') -> None:
        role = _Role(tuple(service_account_names), tuple(service_account_namespaces), tuple(policies), ttl)
        with self._lock:
            self._namespace(namespace).kubernetes_auth[mount.strip('/')][name] = role

    def issue_service_account_jwt(self, name: str, namespace: str) -> str:
        """A service account token the (stand-in) TokenReview will accept, for ``namespace/name``."""
        header = _b64json({'alg': 'RS256', 'kid': secrets.token_hex(8)})
        claims = _b64json({'iss': 'https://kubernetes.default.svc.cluster.local', 'sub':
                           f'system:serviceaccount:{namespace}:{name}', 'jti': secrets.token_hex(8)})
        jwt = f'{header}.{claims}.{secrets.token_urlsafe(64)}'
        with self._lock:
            self._service_accounts[jwt] = _ServiceAccount(name, namespace, str(uuid.uuid4()))
        return jwt

    def write(self, path: str, data: Mapping[str, Any], *, mount: str = 'secret', namespace: str = '') -> int:
        """Write a new version as an admin would (no check-and-set); its version number."""
        with self._lock:
            mount_state = self._namespace(namespace).kv[mount.strip('/')]
            answer = self._kv_write(mount_state, path, mount_state.secrets.get(path), {'data': dict(data)})
        return int(answer['data']['version'])

    def before(self, method: str, path: str, action: Callable[[], None], *, times: int = 1) -> None:
        """Run ``action`` (in the server's thread, before the request is served) for the next
        ``times`` ``method`` requests whose path (``/v1/...``) matches the regex ``path``: another
        writer acting between a client's read and its write, deterministically."""
        with self._lock:
            self._hooks.append(_Hook(method.upper(), re.compile(path), action, times))

    def forget_service_account_jwt(self, jwt: str) -> None:
        """The TokenReview no longer accepts ``jwt`` (the service account or its token is gone)."""
        with self._lock:
            self._service_accounts.pop(jwt, None)

    # ---- what it saw -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def logins(self, role: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, _, r in self._logins if role is None or r == role)

    def secret_material(self) -> set[str]:
        """Every token, JWT and stored string value: what must never show up in a client's
        errors or logs."""
        found: set[str] = set(self._service_accounts)

        def strings(value: Any) -> Iterator[str]:
            if isinstance(value, str):
                yield value
            elif isinstance(value, dict):
                for item in value.values():
                    yield from strings(item)
            elif isinstance(value, list):
                for item in value:
                    yield from strings(item)

        with self._lock:
            for ns in self._namespaces.values():
                found.update(ns.tokens)
                for mount in ns.kv.values():
                    for secret in mount.secrets.values():
                        for version in secret.versions.values():
                            found.update(strings(version.data))
        return {text for text in found if len(text) >= 6}  # short values ("1", "true") are not evidence

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._logins.clear()

    # ---- serving ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert self._released is not None
        await self._released.wait()
        namespace = request.headers.get('X-Vault-Namespace', '').strip('/')
        path = '/' + request.match_info['tail']
        try:
            for action in self._due_hooks(request.method, path):
                action()
            with self._lock:
                self._accessor = None
                try:
                    payload = self._dispatch(request.method, request.match_info['tail'], request.query,
                                             request.headers, body, namespace)
                    status = 200 if payload is not None else 204
                except _Reply as reply:
                    status, payload = reply.status, reply.body
                self._requests.append(RequestRecord(request.method, path, namespace, status, self._accessor))
        except Exception as error:  # a harness bug: answer like Vault's 500 and keep the evidence
            self.internal_errors.append(f'{request.method} {request.path}: {type(error).__name__}: {error}')
            status, payload = 500, {'errors': ['1 error occurred:\n\t* internal error\n\n']}
        if payload is None:
            return web.Response(status=status)
        # Exactly "application/json", as Vault sends it: hvac parses error bodies only then.
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            headers={'Content-Type': 'application/json', 'Cache-Control': 'no-store'})

    def _due_hooks(self, method: str, path: str) -> list[Callable[[], None]]:
        with self._lock:
            due = [hook for hook in self._hooks if hook.method == method and hook.path.search(path)]
            for hook in due:
                hook.times -= 1
            self._hooks = [hook for hook in self._hooks if hook.times > 0]
        return [hook.action for hook in due]

    def _dispatch(self, method: str, tail: str, query: Mapping[str, str], headers: Mapping[str, str],
                  raw: bytes, namespace: str) -> JSON | None:
        if not tail.startswith('v1/'):
            raise _errors(404)
        path = tail[len('v1/'):]
        if self._sealed:
            raise _errors(503, SEALED)
        body = self._body(raw)
        ns = self._namespaces.get(namespace, _Namespace())
        login = re.fullmatch(r'auth/(.+)/login', path)
        if login and method in ('POST', 'PUT'):
            return self._kubernetes_login(ns, namespace, login.group(1), body)
        token = self._authenticate(ns, headers)
        self._accessor = token.accessor
        if path == 'auth/token/lookup-self' and method == 'GET':
            self._authorize(ns, token, path, 'read')
            return self._lookup_self(token)
        for mount in sorted(ns.kv, key=len, reverse=True):
            match = re.fullmatch(re.escape(mount) + r'/(data|metadata|delete|undelete|destroy)/(.+)', path)
            if match:
                return self._kv(ns, token, mount, match.group(1), match.group(2), method, query, body)
        self._authorize(ns, token, path, 'read' if method == 'GET' else 'update')
        raise _errors(404, f'no handler for route "{path}". route entry not found.')

    @staticmethod
    def _body(raw: bytes) -> JSON:
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _errors(400, 'failed to parse JSON input: invalid character') from None
        if not isinstance(body, dict):
            raise _errors(400, 'failed to parse JSON input: json: cannot unmarshal into map')
        return body

    def _namespace(self, name: str) -> _Namespace:
        name = name.strip('/')
        if name not in self._namespaces:
            raise KeyError(f'no namespace {name!r}: add_namespace first')
        return self._namespaces[name]

    def _issue(self, ns: _Namespace, policies: tuple[str, ...], ttl: int, path: str, display_name: str,
               meta: dict[str, str] | None = None, token: str | None = None) -> _Token:
        issued = _Token(token or 'hvs.' + secrets.token_urlsafe(24), secrets.token_urlsafe(18), policies,
                        self.now(), ttl, path, display_name, meta)
        ns.tokens[issued.token] = issued
        return issued

    def _authenticate(self, ns: _Namespace, headers: Mapping[str, str]) -> _Token:
        value = headers.get('X-Vault-Token', '')
        if not value:
            raise _errors(403, 'permission denied')
        token = ns.tokens.get(value)
        if token is None or not token.valid(self.now()):
            raise _errors(403, INVALID_TOKEN)
        return token

    def _authorize(self, ns: _Namespace, token: _Token, path: str, capability: str) -> None:
        if 'root' in token.policies:
            return
        granted: set[str] = set()
        for name in token.policies:
            rules = DEFAULT_POLICY if name == 'default' else ns.policies.get(name, {})
            for pattern, caps in rules.items():
                if _glob(pattern).fullmatch(path):
                    granted |= set(caps)
        if 'deny' in granted or capability not in granted:
            raise _errors(403, PERMISSION_DENIED)

    def _lookup_self(self, token: _Token) -> JSON:
        now, expires = self.now(), token.expires()
        data = {
            'accessor': token.accessor, 'creation_time': int(token.issued), 'creation_ttl': token.ttl,
            'display_name': token.display_name, 'entity_id': '', 'expire_time': rfc3339(expires) or None,
            'explicit_max_ttl': 0, 'id': token.token, 'issue_time': rfc3339(token.issued), 'meta': token.meta,
            'num_uses': 0, 'orphan': True, 'path': token.path, 'policies': sorted(token.policies),
            'renewable': bool(token.ttl), 'ttl': max(0, math.ceil(expires - now)) if expires else 0,
            'type': 'service',
        }
        return _envelope(data, mount_type='token')

    def _kubernetes_login(self, ns: _Namespace, namespace: str, mount: str, body: JSON) -> JSON:
        roles = ns.kubernetes_auth.get(mount)
        if roles is None:
            raise _errors(404, f'no handler for route "auth/{mount}/login". route entry not found.')
        role_name, jwt = body.get('role'), body.get('jwt')
        if not isinstance(role_name, str) or not role_name:
            raise _errors(400, 'missing role')
        if not isinstance(jwt, str) or not jwt:
            raise _errors(400, 'missing jwt')
        role = roles.get(role_name)
        if role is None:
            raise _errors(400, f'invalid role name "{role_name}"')
        account = self._service_accounts.get(jwt)  # the stand-in for the TokenReview API
        if account is None:
            raise _errors(403, 'permission denied')
        if not _name_glob(role.service_account_names, account.name):
            raise _errors(403, 'service account name not authorized')
        if not _name_glob(role.service_account_namespaces, account.namespace):
            raise _errors(403, 'namespace not authorized')
        metadata = {'role': role_name, 'service_account_name': account.name,
                    'service_account_namespace': account.namespace, 'service_account_secret_name': '',
                    'service_account_uid': account.uid}
        ttl = role.ttl or DEFAULT_TTL
        policies = tuple(role.policies) + ('default',)
        token = self._issue(ns, policies, ttl, f'auth/{mount}/login', f'{mount}-{account.namespace}-{account.name}',
                            metadata)
        self._logins.append((namespace, mount, role_name))
        auth = {'client_token': token.token, 'accessor': token.accessor, 'policies': sorted(policies),
                'token_policies': sorted(policies), 'identity_policies': None, 'metadata': metadata,
                'lease_duration': ttl, 'renewable': True, 'entity_id': str(uuid.uuid4()),
                'token_type': 'service', 'orphan': True, 'mfa_requirement': None, 'num_uses': 0}
        return _envelope(None, auth=auth, mount_type='kubernetes')

    # ---- KV version 2 --------------------------------------------------------------------

    def _kv(self, ns: _Namespace, token: _Token, mount_name: str, operation: str, path: str, method: str,
            query: Mapping[str, str], body: JSON) -> JSON | None:
        mount = ns.kv[mount_name]
        secret = mount.secrets.get(path)
        full = f'{mount_name}/{operation}/{path}'
        if operation == 'data':
            if method == 'GET':
                self._authorize(ns, token, full, 'read')
                return self._kv_read(secret, query)
            if method in ('POST', 'PUT'):
                self._authorize(ns, token, full, 'create' if secret is None else 'update')
                return self._kv_write(mount, path, secret, body)
            if method == 'DELETE':
                self._authorize(ns, token, full, 'delete')
                if secret is not None and secret.current in secret.versions:
                    self._mark_deleted(secret, [secret.current])
                return None
        elif operation == 'metadata' and method == 'GET':
            self._authorize(ns, token, full, 'read')
            if secret is None:
                raise _errors(404)
            return _envelope(self._kv_metadata(mount, secret))
        elif operation in ('delete', 'undelete', 'destroy') and method in ('POST', 'PUT'):
            self._authorize(ns, token, full, 'update')
            versions = body.get('versions')
            if not isinstance(versions, list) or not versions:
                raise _errors(400, 'no version number provided')
            numbers = [v for v in versions if isinstance(v, int)]
            if secret is not None:
                if operation == 'delete':
                    self._mark_deleted(secret, numbers)
                for number in numbers:
                    version = secret.versions.get(number)
                    if version is not None and operation == 'undelete' and not version.destroyed:
                        version.deleted = None
                    if version is not None and operation == 'destroy':
                        version.destroyed, version.data = True, None
            return None
        raise _errors(405, '1 error occurred:\n\t* unsupported operation\n\n')

    def _mark_deleted(self, secret: _Secret, numbers: Iterable[int]) -> None:
        for number in numbers:
            version = secret.versions.get(number)
            if version is not None and version.deleted is None and not version.destroyed:
                version.deleted = self.now()

    def _kv_read(self, secret: _Secret | None, query: Mapping[str, str]) -> JSON:
        raw = query.get('version', '0')
        try:
            wanted = int(raw)
        except ValueError:
            raise _errors(400, f'1 error occurred:\n\t* error converting input {raw} for field "version": '
                               f'cannot parse \'\' as int: strconv.ParseInt: parsing "{raw}": invalid syntax\n\n') from None
        if secret is None:
            raise _errors(404)
        number = wanted if wanted > 0 else secret.current
        version = secret.versions.get(number)
        if version is None:
            raise _errors(404)
        metadata = {'version': number, **version.metadata(), 'custom_metadata': secret.custom_metadata}
        gone = version.destroyed or (version.deleted is not None and version.deleted <= self.now())
        response = _envelope({'data': None if gone else dict(version.data or {}), 'metadata': metadata})
        if gone:
            raise _Reply(404, response)
        return response

    def _kv_write(self, mount: _KvMount, path: str, secret: _Secret | None, body: JSON) -> JSON:
        data = body.get('data')
        if not isinstance(data, dict):
            raise _errors(400, 'no data provided')
        current = secret.current if secret is not None else 0
        options = body.get('options') or {}
        if not isinstance(options, dict):
            raise _errors(400, 'error parsing options')
        if 'cas' in options:
            try:
                cas = int(options['cas'])
            except (TypeError, ValueError):
                raise _errors(400, 'error parsing check-and-set parameter') from None
            if cas != current:
                raise _errors(400, CAS_MISMATCH)
        elif mount.cas_required:
            raise _errors(400, 'check-and-set parameter required for this call')
        now = self.now()
        if secret is None:
            secret = mount.secrets[path] = _Secret(created=now, updated=now)
        secret.current += 1
        secret.updated = now
        secret.versions[secret.current] = _Version(json.loads(json.dumps(data)), now)
        if mount.max_versions and len(secret.versions) > mount.max_versions:
            for number in sorted(secret.versions)[:-mount.max_versions]:
                del secret.versions[number]
            secret.oldest = min(secret.versions)
        return _envelope({'version': secret.current, **secret.versions[secret.current].metadata(),
                          'custom_metadata': secret.custom_metadata})

    @staticmethod
    def _kv_metadata(mount: _KvMount, secret: _Secret) -> JSON:
        return {
            'cas_required': mount.cas_required, 'created_time': rfc3339(secret.created),
            'current_version': secret.current, 'custom_metadata': secret.custom_metadata,
            'delete_version_after': '0s', 'max_versions': mount.max_versions, 'oldest_version': secret.oldest,
            'updated_time': rfc3339(secret.updated),
            'versions': {str(n): v.metadata() for n, v in sorted(secret.versions.items())},
        }


def _envelope(data: JSON | None, *, auth: JSON | None = None, mount_type: str = 'kv') -> JSON:
    """Vault's response body around ``data`` (logical.HTTPResponse)."""
    return {'request_id': str(uuid.uuid4()), 'lease_id': '', 'renewable': False, 'lease_duration': 0,
            'data': data, 'wrap_info': None, 'warnings': None, 'auth': auth, 'mount_type': mount_type}


def _b64json(value: JSON) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b'=').decode()


@contextlib.contextmanager
def running_vault() -> Iterator[VaultServer]:
    """A started server with KV v2 at ``secret`` and Kubernetes auth at ``kubernetes``; stopped after."""
    server = VaultServer()
    server.enable_kv('secret')
    server.enable_kubernetes_auth('kubernetes')
    with server:
        yield server
