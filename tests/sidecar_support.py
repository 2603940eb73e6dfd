"""Test support for the sidecar: keys made at runtime, bundles, tokens, a stand-in agent, a running sidecar.

What it is for: letting sidecar tests build real keys (``cryptography``; no private key is
ever committed), write real bundle and secret files, sign real tokens, and run the real
sidecar app against a real local aiohttp server standing in for the agent, each on
127.0.0.1 and a free port.

What it must never do: sleep to wait for something (tests poll with ``harness.waiting``), leave
a server, session or task running after its ``async with`` block, or touch the network
beyond 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentgov.api.agentdeployment import Audit, Cache
from agentgov.api.bundle import (
    AgentIdentity, BundleAuth, BundleModelRoute, BundleSidecar, BundleTool, PolicyBundle, SecretFile, canonical_json,
)
from agentgov.api.defaults import DEFAULT_ROLES
from agentgov.api.toolpolicy import CircuitBreaker
from agentgov.sidecar.app import serving
from agentgov.sidecar.settings import Settings

ISSUER = 'https://login.example.com/'
AUDIENCE = 'agents.example.com'
HMAC_SECRET = b'k' * 16 + b'0123456789abcdef-agentgov-test'  # 46 bytes, test-only


# --- keys ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def rsa_key(name: str = 'a') -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.lru_cache(maxsize=None)
def ec_key(name: str = 'a') -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.lru_cache(maxsize=None)
def ed_key(name: str = 'a') -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_jwk(key: Any, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    if kid is not None:
        data['kid'] = kid
    data.update(extra)
    return data


def oct_jwk(secret: bytes, kid: str) -> dict[str, Any]:
    return {'kty': 'oct', 'kid': kid, 'k': b64url(secret)}


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b'=').decode()


# --- tokens ----------------------------------------------------------------------------


def claims(user: str = 'alice', role: str | None = 'analyst', scopes: Sequence[str] = (), ttl: int = 600,
           **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {'iss': ISSUER, 'aud': AUDIENCE, 'sub': user, 'iat': now, 'exp': now + ttl}
    if role is not None:
        out['role'] = role
    if scopes:
        out['scope'] = ' '.join(scopes)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def sign(payload: Mapping[str, Any], key: Any = HMAC_SECRET, alg: str = 'HS256', **headers: Any) -> str:
    """A correctly signed JWS over ``payload`` as given (PyJWT's JWS layer: no claim checks)."""
    return jwt.api_jws.encode(json.dumps(dict(payload)).encode(), key, algorithm=alg, headers=headers or None)


def raw_token(header: Mapping[str, Any] | str, payload: Mapping[str, Any] | str, signature: bytes | str = b'') -> str:
    """A token assembled by hand (for forgeries the library would refuse to produce)."""
    h = header if isinstance(header, str) else b64url(json.dumps(header))
    p = payload if isinstance(payload, str) else b64url(json.dumps(payload))
    s = signature if isinstance(signature, str) else b64url(signature)
    return f'{h}.{p}.{s}'


def bearer(token: str) -> dict[str, str]:
    return {'Authorization': f'Bearer {token}'}


# --- bundles ---------------------------------------------------------------------------

KEY_FILE = SecretFile(secret='agent-auth', key='jwt-key')


def make_bundle(*, agent_port: int = 8000, algorithms: Sequence[str] = ('HS256',), jwks_url: str | None = None,
                key_file: SecretFile | None = KEY_FILE, tools: Sequence[BundleTool] = (),
                roles: Mapping[str, Sequence[str]] | None = None, max_body_bytes: int = 1024 * 1024,
                upstream_timeout_seconds: int = 30, required_scopes: Sequence[str] = (),
                signing_key_file: SecretFile | None = None, name: str = 'research-assistant',
                leeway_seconds: int = 30, audit: Audit | None = None) -> PolicyBundle:
    return PolicyBundle(
        agent=AgentIdentity(name=name, namespace='research', generation=1),
        data_classes=['internal'],
        auth=BundleAuth(
            issuer=ISSUER, audiences=[AUDIENCE], algorithms=list(algorithms),  # type: ignore[arg-type]
            jwks_url=jwks_url, key_file=None if jwks_url and key_file is KEY_FILE else key_file,
            leeway_seconds=leeway_seconds, required_scopes=list(required_scopes), signing_key_file=signing_key_file,
        ),
        roles={k: list(v) for k, v in (roles or DEFAULT_ROLES).items()},  # type: ignore[misc]
        tools=list(tools),
        cache=Cache(),
        audit=audit or Audit(),
        sidecar=BundleSidecar(agent_port=agent_port, max_body_bytes=max_body_bytes,
                              upstream_timeout_seconds=upstream_timeout_seconds),
    )


def tool(name: str, permission: str = 'tool:read', scopes: Sequence[str] = (), methods: Sequence[str] = ()) -> BundleTool:
    return BundleTool(name=name, upstream=f'http://127.0.0.1:9/{name}', permission=permission,  # type: ignore[arg-type]
                      scopes=list(scopes), methods=list(methods), timeout_seconds=5,
                      circuit_breaker=CircuitBreaker())


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write a file the way kubelet swaps a volume: a temporary file renamed over the old one."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    temporary.write_bytes(raw)
    os.replace(temporary, path)


def write_bundle(path: Path, bundle: PolicyBundle) -> None:
    write_atomically(path, canonical_json(bundle))


def write_secret(secrets_dir: Path, file: SecretFile, value: bytes | str) -> Path:
    path = Path(file.path(str(secrets_dir)))
    write_atomically(path, value)
    return path


# --- the stand-in agent ----------------------------------------------------------------


@dataclass
class Agent:
    """A real aiohttp server playing the agent; it records what it received."""

    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    first_chunk_sent: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    upload_bytes: int = 0


def agent_app(agent: Agent) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        agent.requests.append({'method': request.method, 'path': request.path_qs,
                               'headers': list(request.headers.items()), 'body': body})
        return web.json_response({'path': request.path_qs, 'method': request.method, 'bytes': len(body),
                                  'headers': {k: v for k, v in request.headers.items()}})

    async def stream(request: web.Request) -> web.StreamResponse:
        """SSE: one event, then wait for the test to release the rest."""
        response = web.StreamResponse(headers={'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache'})
        await response.prepare(request)
        try:
            await response.write(b'data: first\n\n')
            agent.first_chunk_sent.set()
            await agent.release.wait()
            await response.write(b'data: second\n\n')
            await response.write_eof()
        except asyncio.CancelledError:
            agent.cancelled.set()
            raise
        return response

    async def hang(request: web.Request) -> web.Response:
        """Never answers until released; notes being cancelled (the caller went away)."""
        agent.started.set()
        try:
            await agent.release.wait()
        except asyncio.CancelledError:
            agent.cancelled.set()
            raise
        return web.json_response({'released': True})

    async def upload(request: web.Request) -> web.Response:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            agent.upload_bytes += len(chunk)
        return web.json_response({'bytes': total})

    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={'Content-Type': 'text/plain'})
        await response.prepare(request)
        await response.write(b'partial')
        assert request.transport is not None
        request.transport.close()
        return response

    async def gzip_body(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'hello compressed world'),
                            headers={'Content-Encoding': 'gzip', 'Content-Type': 'text/plain'})

    app = web.Application()
    app.router.add_route('*', '/stream', stream)
    app.router.add_route('*', '/hang', hang)
    app.router.add_route('*', '/upload', upload)
    app.router.add_route('*', '/broken', broken)
    app.router.add_route('*', '/gzip', gzip_body)
    app.router.add_route('*', '/{tail:.*}', echo)
    return app


@asynccontextmanager
async def serving_on_free_port(app: web.Application, on_stop: Callable[[], None] = lambda: None) -> AsyncIterator[int]:
    """Serve a stand-in aiohttp app on 127.0.0.1 and a free port; yield the port. ``on_stop``
    runs before the server stops (to release requests the stand-in holds)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        on_stop()
        await runner.cleanup()


@asynccontextmanager
async def running_agent() -> AsyncIterator[Agent]:
    agent = Agent()
    async with serving_on_free_port(agent_app(agent), agent.release.set) as agent.port:
        yield agent


def free_port() -> int:
    """A port nothing listens on (bound then released): the agent being down."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


# --- the sidecar under test ------------------------------------------------------------


@dataclass
class Sidecar:
    app: web.Application
    url: str
    settings: Settings
    session: aiohttp.ClientSession
    # The egress port's base URL (models and tools for the agent): http://127.0.0.1:<port>.
    egress_url: str = ''
    # Clients made by ``openai_client`` for this sidecar, closed with it.
    clients: list[Any] = field(default_factory=list)

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Mapping[str, str]]:
        return await self._call(self.url + path, method, **kwargs)

    async def egress(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Mapping[str, str]]:
        """A request to the egress port (models and tools), as the agent would send it."""
        return await self._call(self.egress_url + path, method, **kwargs)

    async def _call(self, url: str, method: str, **kwargs: Any) -> tuple[int, Any, Mapping[str, str]]:
        async with self.session.request(method, url, **kwargs) as response:
            text = await response.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return response.status, body, response.headers

    async def ready(self) -> tuple[int, Any]:
        """``GET /ready``: the status and the body."""
        status, body, _ = await self.request('GET', '/ready')
        return status, body

    @property
    def audit_lines(self) -> list[dict[str, Any]]:
        path = self.settings.audit_log
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines() if line.strip()]


def sidecar_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        bundle_path=tmp_path / 'bundle' / 'bundle.json',
        secrets_dir=tmp_path / 'secrets',
        host='127.0.0.1',
        port=0,
        audit_log=tmp_path / 'audit' / 'audit.jsonl',
        reload_interval_seconds=0.05,
        jwks_min_refresh_seconds=0.2,
        audit_fsync='never',
        egress_port=0,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_sidecar(settings: Settings) -> AsyncIterator[Sidecar]:
    async with serving(settings) as served:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            yield Sidecar(served.app, f'http://127.0.0.1:{served.port}', settings, session,
                          egress_url=f'http://127.0.0.1:{served.egress_port}')


@asynccontextmanager
async def sidecar_for(tmp_path: Path, bundle: PolicyBundle, secret: bytes | str | None = HMAC_SECRET,
                      **overrides: Any) -> AsyncIterator[Sidecar]:
    """Write ``bundle`` (and the HMAC key file), start a sidecar on it."""
    settings = sidecar_settings(tmp_path, **overrides)
    write_bundle(settings.bundle_path, bundle)
    if secret is not None and bundle.auth.key_file is not None:
        write_secret(settings.secrets_dir, bundle.auth.key_file, secret)
    async with running_sidecar(settings) as sidecar:
        yield sidecar


# --- seeded secrets: one of each kind redaction must catch --------------------------------

def seeded_secrets() -> dict[str, str]:
    """kind -> a value that must never reach an audit record, a log line or an error body."""
    return {
        'jwt': sign({'sub': 'seeded-jwt-subject', 'exp': 4102444800}, b's' * 40),
        'bearer': 'Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZ',
        'openai key': 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345',
        'aws access key id': 'AKIAIOSFODNN7SEEDED1',
        'vault token': 'hvs.CAESIJ1Xy2Zq3Wv4Ut5Sr6Qp7On8Ml9Kk0JjIiHh',
        'pem private key': private_pem(ec_key('seeded')).decode(),
        'mounted secret value': 'correct-horse-battery-staple-4242',
    }


def secret_fragments(value: str) -> list[str]:
    """What to search for: the value, and for multi-line PEM its body lines (a leak may be partial)."""
    if value.startswith('-----BEGIN'):
        return [line for line in value.splitlines() if line and not line.startswith('-----')]
    return [value.removeprefix('Bearer ')]


def kubelet_write(directory: Path, files: Mapping[str, bytes | str]) -> None:
    """Update a volume the way kubelet's AtomicWriter does for ConfigMaps and Secrets: write a new
    timestamped folder, point a fresh ``..data`` symlink at it, rename it over the old one, and
    keep each visible file a symlink through ``..data``. Readers see the old set or the new one."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f'..{time.time_ns()}'
    stamp.mkdir()
    for name, value in files.items():
        (stamp / name).write_bytes(value.encode() if isinstance(value, str) else value)
    link = directory / '..data_tmp'
    link.symlink_to(stamp.name)
    old = (directory / '..data').resolve() if (directory / '..data').is_symlink() else None
    os.replace(link, directory / '..data')
    for name in files:
        visible = directory / name
        if not visible.is_symlink():
            if visible.exists():
                visible.unlink()
            visible.symlink_to(f'..data/{name}')
    if old is not None and old.is_dir():
        for child in old.iterdir():
            child.unlink()
        old.rmdir()


# --- the egress port: model routes, stand-in models, execution ids, the openai SDK -----------

MODEL_KEY_FILE = SecretFile(secret='model-provider', key='api-key')
MODEL_KEY = 'sk-standin-upstream-key-0123456789abcdef'


def model_route(name: str, endpoint: str, *, upstream_model: str | None = None,
                key_file: SecretFile | None = MODEL_KEY_FILE, breaker: CircuitBreaker | None = None,
                fallbacks: Sequence[str] = ()) -> BundleModelRoute:
    """A model route to an OpenAI-compatible ``endpoint`` (a stand-in's ``.url``)."""
    return BundleModelRoute(name=name, provider='openai', endpoint=endpoint, upstream_model=upstream_model or name,
                            credentials_file=key_file, circuit_breaker=breaker or CircuitBreaker(),
                            fallbacks=list(fallbacks))


def with_egress(bundle: PolicyBundle, models: Sequence[BundleModelRoute], **fields: Any) -> PolicyBundle:
    """``bundle`` with model routes and any other bundle fields (budgets, regions, routing_rules,
    cache, data_classes, default_region) replaced, validated again."""
    data = bundle.model_dump()
    data['models'] = [m.model_dump() for m in models]
    for name, value in fields.items():
        data[name] = ([v.model_dump() if hasattr(v, 'model_dump') else v for v in value]
                      if isinstance(value, (list, tuple)) else value.model_dump() if hasattr(value, 'model_dump')
                      else value)
    return PolicyBundle.model_validate(data)


async def execution_id(sidecar: Sidecar, headers: Mapping[str, str]) -> str:
    """An execution id issued the real way: a request through the inbound port to the stand-in
    agent, which receives ``X-Agentgov-Execution-Id`` (and the caller gets it back)."""
    status, body, response_headers = await sidecar.request('POST', '/v1/run', json={'task': 'x'}, headers=headers)
    assert status == 200, body
    seen = body['headers']['X-Agentgov-Execution-Id']
    assert response_headers['X-Agentgov-Execution-Id'] == seen
    return str(seen)


def openai_client(sidecar: Sidecar, execution: str | None, **headers: str) -> Any:
    """The official SDK pointed at the sidecar's egress port, as an agent would use it (no
    retries of its own, so tests see each answer)."""
    import openai

    default_headers = {'X-Agentgov-Execution-Id': execution} if execution else {}
    default_headers.update(headers)
    client = openai.AsyncOpenAI(base_url=f'{sidecar.egress_url}/v1', api_key='agent-side-unused-key',
                                default_headers=default_headers, max_retries=0, timeout=30)
    sidecar.clients.append(client)
    return client


@asynccontextmanager
async def egress_sidecar(tmp_path: Path, bundle: PolicyBundle, *, model_key: str | None = MODEL_KEY,
                         **overrides: Any) -> AsyncIterator[tuple[Sidecar, Agent]]:
    """The stand-in agent, and a sidecar in front of it with ``bundle`` (its agent port set) and
    the model key mounted."""
    async with running_agent() as agent:
        bundle = bundle.model_copy(update={'sidecar': bundle.sidecar.model_copy(update={'agent_port': agent.port})})
        settings = sidecar_settings(tmp_path, **overrides)
        if model_key is not None:
            write_secret(settings.secrets_dir, MODEL_KEY_FILE, model_key)
        async with sidecar_for(tmp_path, bundle, **overrides) as sidecar:
            try:
                yield sidecar, agent
            finally:
                for client in sidecar.clients:
                    await client.close()


async def audit_records(sidecar: Sidecar, event_type: str, count: int = 1) -> list[dict[str, Any]]:
    """The audit records of ``event_type`` once there are at least ``count`` (they are written
    off the request path)."""
    from harness.waiting import async_wait_for

    async def probe() -> list[dict[str, Any]]:
        return [r for r in sidecar.audit_lines if r['event_type'] == event_type]

    return await async_wait_for(probe, lambda found: len(found) >= count,
                                what=f'{count} {event_type} audit record(s)')


def metric_value(text: str, name: str, /, **labels: str) -> float | None:
    """The value of one sample of a Prometheus text exposition (labels matched exactly)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (for requests no client library would produce); the status
    and body of the answer."""
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b'\r\n\r\n')
    return int(head.split(b' ', 2)[1]), body
