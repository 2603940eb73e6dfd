"""A local Azure Key Vault (secrets) and Entra ID token endpoint, for the real Azure SDK.

What it is for: driving ``agentgov.secrets.azure`` through the real ``azure-keyvault-secrets``
``SecretClient`` and real ``azure-identity`` credentials (MSAL underneath), over real HTTPS,
without Azure. Three pieces on 127.0.0.1, each on a free port, served from one thread:

- an HTTPS server (a CA and a certificate made here with ``cryptography``; ``ca_file`` is the
  CA for ``connection_verify``) answering for two kinds of host names:
  - ``{vault}.vault.agentgov.test``: the Key Vault secrets REST API the SDK calls (shapes as
    Azure's, checked against the SDK's generated client and Azure's recorded sessions):
    ``GET /secrets/{name}[/{version}]?api-version=...``, ``PUT /secrets/{name}`` (a new version,
    the latest), and ``DELETE /secrets/{name}`` (soft delete). An unauthenticated request gets the
    401 challenge ``WWW-Authenticate: Bearer authorization="https://login.agentgov.test/{tenant}",
    resource="https://vault.agentgov.test"`` with ``{"error": {"code": "Unauthorized", ...}}``;
    errors are ``{"error": {"code", "message"[, "innererror": {"code"}]}}``: 404
    ``SecretNotFound``, 403 ``Forbidden``/``ForbiddenByRbac`` (the caller has no role for the
    action), 403 ``Forbidden``/``SecretDisabled``, 409 ``Conflict``/``ObjectIsDeletedButRecoverable``,
    400 ``BadParameter``.
  - ``login.agentgov.test``: Entra ID as MSAL sees it: ``GET /{tenant}/v2.0/.well-known/
    openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token`` (client credentials, with a
    client secret or a client assertion: the workload identity flow, whose assertion is a
    service account token this harness issued and signed as the cluster's OIDC issuer). Access
    tokens are RS256 JWTs for the audience ``https://vault.agentgov.test`` that the vault checks
    (signature, audience, tenant, expiry). Refusals in Entra's shape: ``{"error", "error_description":
    "AADSTS...: ...", "error_codes": [...], "trace_id", "correlation_id", "timestamp"}``.
- an HTTP CONNECT proxy (``proxy_url``) that tunnels ``*.agentgov.test:443`` to the HTTPS server
  and refuses any other host. Why a proxy: the SDK checks that a vault's host name ends with the
  challenge's resource domain (``.vault.azure.net`` in Azure), so the vault must have a host
  name with a subdomain per vault, and on this machine only ``localhost`` resolves. Through
  the proxy (``env()``: ``HTTPS_PROXY``, which requests and so the SDK honour, as behind any
  corporate proxy) the client sees the same URL shapes as Azure's, with TLS end to end and the
  resource check on; ``.test`` is reserved (RFC 2606), so a client that ignored the proxy could
  not reach anything real.

Faults: ``pause()`` (connections accepted, requests read, nothing answered until ``resume()``),
``stop_listening()`` (the proxy and the HTTPS server refuse connections) and ``start_listening()``
on the same ports; ``stop()`` ends everything.

Gaps, on purpose: one tenant; roles are per vault and per client id (``grant``) with two actions,
``get`` and ``set`` (Key Vault Secrets User / Officer), not Azure RBAC scopes; the token is not
bound to an object id; no access policies, no purge or recover API (``delete_secret`` and
``purge`` are setup methods), no paging or listing.

What it must never do: listen beyond 127.0.0.1, tunnel to anything but itself, outlive the
test that started it (``stop`` in every fixture's teardown), or log a value, a client secret or
a token. ``issued_tokens`` keeps the access tokens it issued, for tests' canary scans.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.redis import free_port
from harness.threaded import ThreadedServer

DOMAIN = 'agentgov.test'
VAULT_DOMAIN = f'vault.{DOMAIN}'
LOGIN_HOST = f'login.{DOMAIN}'
RESOURCE = f'https://{VAULT_DOMAIN}'
VAULT_URL_TEMPLATE = 'https://{vault}.' + VAULT_DOMAIN
AUTHORITY = LOGIN_HOST
TENANT = '72f988bf-0000-4000-8000-00000000a9e7'
CLUSTER_ISSUER = f'https://oidc.{DOMAIN}/cluster'
FEDERATED_AUDIENCE = 'api://AzureADTokenExchange'
ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
MAX_VALUE_BYTES = 25 * 1024
MAX_REQUEST_BYTES = 256 * 1024
ACTIONS = {'get': 'Microsoft.KeyVault/vaults/secrets/getSecret/action',
           'set': 'Microsoft.KeyVault/vaults/secrets/setSecret/action',
           'delete': 'Microsoft.KeyVault/vaults/secrets/delete'}
_SECRET_NAME = re.compile(r'[0-9a-zA-Z-]{1,127}')
_VAULT_HOST = re.compile(r'([a-z0-9-]{3,24})\.' + re.escape(VAULT_DOMAIN))


# ---- TLS ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls(workdir: Path, dns_names: list[str]) -> TlsFiles:
    """A CA and a server certificate it signed for ``dns_names`` (wildcards allowed) and 127.0.0.1."""
    workdir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'agentgov test CA')])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names.append(x509.IPAddress(ipaddress.ip_address('127.0.0.1')))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(workdir / 'ca.pem', workdir / 'server.pem', workdir / 'server.key')
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return files


# ---- state ------------------------------------------------------------------------------------

@dataclass
class _Version:
    id: str
    value: str
    enabled: bool
    created: int
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Secret:
    versions: list[_Version] = field(default_factory=list)  # oldest first; the last is the latest
    deleted: bool = False


@dataclass
class _App:
    client_id: str
    secret: str | None
    federated_subject: str | None  # the service account (system:serviceaccount:<ns>:<name>) it trusts


@dataclass(frozen=True)
class RequestRecord:
    """What the server saw: never a token, a secret or a body."""
    host: str
    method: str
    path: str
    status: int
    client_id: str | None  # whose token the vault request carried, or who asked for a token


class _Reply(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _vault_error(status: int, code: str, message: str, inner: str | None = None,
                 headers: dict[str, str] | None = None) -> _Reply:
    error: dict[str, Any] = {'code': code, 'message': message}
    if inner:
        error['innererror'] = {'code': inner}
    return _Reply(status, {'error': error}, headers)


def _entra_error(status: int, error: str, code: int, description: str) -> _Reply:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')
    return _Reply(status, {
        'error': error,
        'error_description': f'AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}',
        'error_codes': [code], 'timestamp': now, 'trace_id': trace, 'correlation_id': correlation,
        'error_uri': f'https://{LOGIN_HOST}/error?code={code}',
    })


class AzureKeyVaultServer(ThreadedServer):
    """Key Vault + Entra ID over HTTPS, behind a CONNECT proxy, on 127.0.0.1, from a thread."""

    def __init__(self, workdir: Path, tenant: str = TENANT) -> None:
        super().__init__()
        self.workdir = workdir
        self.tenant = tenant
        self.tls = make_tls(workdir / 'tls', [f'*.{VAULT_DOMAIN}', LOGIN_HOST])
        self.https_port = free_port()
        self.proxy_port = free_port()
        self._entra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cluster_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._lock = threading.Lock()
        self._vaults: dict[str, dict[str, _Secret]] = {}
        self._grants: dict[tuple[str, str], set[str]] = {}
        self._apps: dict[str, _App] = {}
        self._requests: list[RequestRecord] = []
        self.issued_tokens: list[str] = []
        self.internal_errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self._proxy: asyncio.base_events.Server | None = None
        self._tunnels: set[asyncio.StreamWriter] = set()
        # The resource the 401 challenge names; a test sets another to act as a vault (or an
        # impostor) whose challenge does not match its URL.
        self.challenge_resource = RESOURCE
        # Set to 503 to act as Entra ID in an outage: every token request gets it.
        self.token_outage: int | None = None

    # ---- what clients need -------------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f'http://127.0.0.1:{self.proxy_port}'

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_file)

    def env(self) -> dict[str, str]:
        """The environment that sends the SDK's HTTPS through the proxy (requests reads it). Plain
        HTTP goes to the proxy too, which refuses it: a credential that probes the instance
        metadata endpoint (169.254.169.254, DefaultAzureCredential's managed identity) gets an
        error, not the network."""
        return {name: self.proxy_url for name in ('HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy')}

    def vault_url(self, vault: str) -> str:
        return VAULT_URL_TEMPLATE.format(vault=vault)

    # ---- lifecycle -------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._runner is not None:
            return
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route('*', '/{tail:.*}', self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, '127.0.0.1', self.https_port, ssl_context=context, reuse_address=True).start()
        self._runner = runner
        self._proxy = await asyncio.start_server(self._tunnel, '127.0.0.1', self.proxy_port, reuse_address=True)

    async def _unlisten(self) -> None:
        assert self._released is not None
        self._released.set()  # requests held by pause() finish rather than hold the shutdown
        if self._proxy is not None:
            self._proxy.close()
            for writer in list(self._tunnels):
                writer.close()
            await self._proxy.wait_closed()
            self._proxy = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ---- the proxy ---------------------------------------------------------------------------

    def _tunnels_to(self, authority: str) -> bool:
        host, _, port = authority.rpartition(':')
        if port != '443':
            return False
        if host == LOGIN_HOST:
            return True
        match = _VAULT_HOST.fullmatch(host)
        with self._lock:
            return match is not None and match.group(1) in self._vaults

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tunnels.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), timeout=10)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
                return
            method, _, rest = head.split(b'\r\n', 1)[0].decode('latin-1').partition(' ')
            authority = rest.partition(' ')[0]
            if method != 'CONNECT' or not self._tunnels_to(authority):
                # An unknown vault is a host that does not resolve: the proxy cannot reach it.
                writer.write(b'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
                await writer.drain()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection('127.0.0.1', self.https_port)
            except OSError:
                writer.write(b'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
                await writer.drain()
                return
            self._tunnels.add(up_writer)
            writer.write(b'HTTP/1.1 200 Connection established\r\n\r\n')
            await writer.drain()
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._tunnels.discard(up_writer)
                up_writer.close()
        finally:
            self._tunnels.discard(writer)
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    # ---- setup ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every vault, app, role, request and issued token (between tests sharing a server)."""
        with self._lock:
            self._vaults.clear()
            self._grants.clear()
            self._apps.clear()
            self._requests.clear()
            self.issued_tokens.clear()
            self.internal_errors.clear()
        self.challenge_resource = RESOURCE
        self.token_outage = None

    def create_vault(self, vault: str) -> None:
        with self._lock:
            self._vaults.setdefault(vault, {})

    def add_app(self, client_id: str, *, secret: str | None = None, federated_subject: str | None = None) -> None:
        """An app registration: a client secret, or a federated credential trusting a service
        account of the cluster (issuer ``CLUSTER_ISSUER``, audience ``FEDERATED_AUDIENCE``)."""
        with self._lock:
            self._apps[client_id] = _App(client_id, secret, federated_subject)

    def set_app_secret(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._apps[client_id].secret = secret

    def grant(self, vault: str, client_id: str, *actions: str) -> None:
        """Role assignments on a vault: ``get`` (Key Vault Secrets User), ``set`` and ``delete``."""
        unknown = set(actions) - set(ACTIONS)
        assert not unknown, f'unknown actions {unknown}'
        with self._lock:
            self._grants.setdefault((vault, client_id), set()).update(actions)

    def set_secret(self, vault: str, name: str, value: str, *, enabled: bool = True) -> str:
        """A new version (the latest); its version id."""
        with self._lock:
            return self._new_version(self._vaults[vault], name, value, enabled).id

    def disable(self, vault: str, name: str, version: str | None = None) -> None:
        with self._lock:
            secret = self._vaults[vault][name]
            target = secret.versions[-1] if version is None else next(v for v in secret.versions if v.id == version)
            target.enabled = False

    def delete_secret(self, vault: str, name: str) -> None:
        """Soft delete: the name answers 404 and cannot be reused until purged."""
        with self._lock:
            self._vaults[vault][name].deleted = True

    def versions(self, vault: str, name: str) -> list[tuple[str, str, bool]]:
        """(version id, value, enabled), oldest first."""
        with self._lock:
            return [(v.id, v.value, v.enabled) for v in self._vaults[vault][name].versions]

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def issue_service_account_token(self, subject: str, *, audience: str = FEDERATED_AUDIENCE,
                                    issuer: str = CLUSTER_ISSUER, expires_in: int = 3600) -> str:
        """A projected service account token as the cluster's OIDC issuer signs it (what AKS
        writes to AZURE_FEDERATED_TOKEN_FILE)."""
        now = int(time.time())
        return jwt.encode({'iss': issuer, 'sub': subject, 'aud': [audience], 'iat': now, 'nbf': now,
                           'exp': now + expires_in}, self._cluster_key, algorithm='RS256', headers={'kid': 'cluster-1'})

    def _new_version(self, vault: dict[str, _Secret], name: str, value: str, enabled: bool,
                     content_type: str | None = None, tags: dict[str, str] | None = None) -> _Version:
        secret = vault.setdefault(name, _Secret())
        version = _Version(uuid.uuid4().hex, value, enabled, int(time.time()), content_type, tags or {})
        secret.versions.append(version)
        return version

    # ---- HTTP ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._released is not None
        await self._released.wait()
        host = request.host.rpartition(':')[0] if request.host.count(':') == 1 else request.host
        who: list[str | None] = [None]
        try:
            if host == LOGIN_HOST:
                reply = await self._entra(request, who)
            elif match := _VAULT_HOST.fullmatch(host):
                reply = await self._vault(request, match.group(1), who)
            else:
                reply = _vault_error(404, 'NotFound', f'no such host {host!r}')
        except _Reply as error:
            reply = error
        except Exception as error:  # noqa: BLE001 - a harness bug: recorded for the tests, answered as a 500
            self.internal_errors.append(f'{type(error).__name__}: {error}')
            reply = _vault_error(500, 'InternalError', 'harness error')
        with self._lock:
            self._requests.append(RequestRecord(host, request.method, request.path, reply.status, who[0]))
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)

    # ---- Entra ID ------------------------------------------------------------------------------

    async def _entra(self, request: web.Request, who: list[str | None]) -> _Reply:
        parts = request.path.strip('/').split('/')
        tenant = parts[0] if parts else ''
        if request.method == 'GET' and parts[1:] == ['v2.0', '.well-known', 'openid-configuration']:
            if tenant != self.tenant:
                raise _entra_error(400, 'invalid_tenant', 90002, f"Tenant '{tenant}' not found. Check to make sure "
                                   'you have the correct tenant ID and are signing into the correct cloud.')
            base = f'https://{LOGIN_HOST}/{tenant}'
            return _Reply(200, {
                'token_endpoint': f'{base}/oauth2/v2.0/token',
                'authorization_endpoint': f'{base}/oauth2/v2.0/authorize',
                'issuer': f'{base}/v2.0',
                'jwks_uri': f'https://{LOGIN_HOST}/{tenant}/discovery/v2.0/keys',
                'token_endpoint_auth_methods_supported': ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
                'response_types_supported': ['code', 'id_token', 'code id_token', 'id_token token'],
                'tenant_region_scope': 'EU',
            })
        if request.method == 'POST' and parts[1:] == ['oauth2', 'v2.0', 'token']:
            form = parse_qs((await request.read()).decode('utf-8', 'replace'))
            fields = {k: v[0] for k, v in form.items() if v}
            who[0] = fields.get('client_id')
            return self._token(tenant, fields)
        raise _entra_error(404, 'invalid_request', 900561, 'The endpoint only accepts POST requests.')

    def _token(self, tenant: str, fields: dict[str, str]) -> _Reply:
        if self.token_outage is not None:
            raise _entra_error(self.token_outage, 'temporarily_unavailable', 90033,
                               'A transient error has occurred. Please try again.')
        if tenant != self.tenant:
            raise _entra_error(400, 'invalid_tenant', 90002, f"Tenant '{tenant}' not found.")
        if fields.get('grant_type') != 'client_credentials':
            raise _entra_error(400, 'unsupported_grant_type', 70003, 'The app requested an unsupported grant type.')
        client_id = fields.get('client_id', '')
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise _entra_error(400, 'unauthorized_client', 700016, f"Application with identifier '{client_id}' was "
                               f"not found in the directory '{tenant}'.")
        if 'client_secret' in fields:
            if app.secret is None or not secrets.compare_digest(fields['client_secret'], app.secret):
                raise _entra_error(401, 'invalid_client', 7000215, 'Invalid client secret provided. Ensure the secret '
                                   'being sent in the request is the client secret value, not the client secret ID, '
                                   f"for a secret added to app '{client_id}'.")
        elif fields.get('client_assertion_type') == ASSERTION_TYPE and 'client_assertion' in fields:
            self._check_assertion(app, fields['client_assertion'])
        else:
            raise _entra_error(401, 'invalid_client', 7000218, "The request body must contain the following parameter: "
                               "'client_assertion' or 'client_secret'.")
        scopes = fields.get('scope', '').split()
        if scopes != [f'{RESOURCE}/.default']:
            raise _entra_error(400, 'invalid_resource', 500011, f"The resource principal named {' '.join(scopes)} was "
                               f"not found in the tenant named {tenant}.")
        now = int(time.time())
        token = jwt.encode({'aud': RESOURCE, 'iss': f'https://sts.{DOMAIN}/{tenant}/', 'iat': now, 'nbf': now,
                            'exp': now + 3600, 'appid': client_id, 'tid': tenant, 'oid': str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
                            'ver': '1.0'}, self._entra_key, algorithm='RS256', headers={'kid': 'entra-1'})
        with self._lock:
            self.issued_tokens.append(token)
        return _Reply(200, {'token_type': 'Bearer', 'expires_in': 3599, 'ext_expires_in': 3599, 'access_token': token})

    def _check_assertion(self, app: _App, assertion: str) -> None:
        try:
            claims = jwt.decode(assertion, self._cluster_key.public_key(), algorithms=['RS256'],
                                audience=FEDERATED_AUDIENCE, options={'require': ['exp', 'iss', 'sub', 'aud']})
        except jwt.ExpiredSignatureError:
            raise _entra_error(400, 'invalid_client', 700024, 'Client assertion is not within its valid time range.') from None
        except jwt.InvalidAudienceError:
            raise _entra_error(400, 'invalid_client', 700212, 'No matching federated identity record found for '
                               'presented assertion audience.') from None
        except jwt.PyJWTError:
            raise _entra_error(401, 'invalid_client', 700027, 'Client assertion failed signature validation.') from None
        if claims.get('iss') != CLUSTER_ISSUER:
            raise _entra_error(400, 'invalid_client', 700211, 'No matching federated identity record found for '
                               f"presented assertion issuer '{claims.get('iss')}'.")
        if app.federated_subject is None or claims.get('sub') != app.federated_subject:
            raise _entra_error(400, 'invalid_client', 700213, 'No matching federated identity record found for '
                               f"presented assertion subject '{claims.get('sub')}'.")

    # ---- Key Vault ---------------------------------------------------------------------------

    def _challenge(self, message: str) -> _Reply:
        header = f'Bearer authorization="https://{LOGIN_HOST}/{self.tenant}", resource="{self.challenge_resource}"'
        return _vault_error(401, 'Unauthorized', message, headers={'WWW-Authenticate': header})

    def _caller(self, request: web.Request) -> str:
        """The client id of a valid bearer token, or the 401 challenge."""
        scheme, _, token = request.headers.get('Authorization', '').partition(' ')
        if scheme.lower() != 'bearer' or not token:
            raise self._challenge('AKV10000: Request is missing a Bearer or PoP token.')
        try:
            claims = jwt.decode(token, self._entra_key.public_key(), algorithms=['RS256'], audience=RESOURCE)
        except jwt.ExpiredSignatureError:
            raise self._challenge('AKV10022: Token has expired.') from None
        except jwt.InvalidAudienceError:
            raise self._challenge(f"AKV10022: Invalid audience. Expected {RESOURCE}.") from None
        except jwt.PyJWTError:
            raise self._challenge('AKV10032: Invalid issuer or signature.') from None
        if claims.get('tid') != self.tenant:
            raise self._challenge(f"AKV10032: Invalid issuer. Expected one of https://sts.{DOMAIN}/{self.tenant}/.")
        return str(claims.get('appid'))

    def _authorize(self, vault: str, client_id: str, action: str) -> None:
        with self._lock:
            allowed = action in self._grants.get((vault, client_id), set())
        if not allowed:
            raise _vault_error(403, 'Forbidden', (
                'Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or '
                'role definitions were changed recently, please observe propagation time.\r\n'
                f"Caller: appid={client_id};oid={uuid.uuid5(uuid.NAMESPACE_URL, client_id)}\r\n"
                f"Action: '{ACTIONS[action]}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/"
                f"resourcegroups/agentgov/providers/microsoft.keyvault/vaults/{vault}/secrets/...'\r\n"
                'Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\n'
                f'Vault: {vault};location=westeurope\r\n'), 'ForbiddenByRbac')

    def _bundle(self, vault: str, name: str, version: _Version) -> dict[str, Any]:
        recovery = {'recoveryLevel': 'Recoverable+Purgeable', 'recoverableDays': 90}
        bundle: dict[str, Any] = {
            'value': version.value, 'id': f'{self.vault_url(vault)}/secrets/{name}/{version.id}',
            'attributes': {'enabled': version.enabled, 'created': version.created, 'updated': version.created, **recovery},
            'tags': version.tags,
        }
        if version.content_type is not None:
            bundle['contentType'] = version.content_type
        return bundle

    async def _vault(self, request: web.Request, vault: str, who: list[str | None]) -> _Reply:
        client_id = self._caller(request)
        who[0] = client_id
        if 'api-version' not in request.query:
            raise _vault_error(400, 'BadParameter', 'The api-version parameter is missing.')
        parts = request.path.strip('/').split('/')
        if len(parts) < 2 or parts[0] != 'secrets' or len(parts) > 3:
            raise _vault_error(404, 'NotFound', 'The requested resource was not found.')
        name = parts[1]
        version_id = parts[2] if len(parts) == 3 else ''
        if not _SECRET_NAME.fullmatch(name):
            raise _vault_error(400, 'BadParameter', 'The request URI contains an invalid name.')
        with self._lock:
            known = vault in self._vaults
        if not known:
            raise _vault_error(404, 'NotFound', 'The vault was not found.')
        if request.method == 'GET':
            self._authorize(vault, client_id, 'get')
            return self._get(vault, name, version_id)
        if request.method == 'PUT' and not version_id:
            self._authorize(vault, client_id, 'set')
            return self._put(vault, name, await request.read())
        if request.method == 'DELETE' and not version_id:
            self._authorize(vault, client_id, 'delete')
            with self._lock:
                secret = self._vaults[vault].get(name)
                if secret is None or secret.deleted:
                    raise self._not_found(name)
                secret.deleted = True
                return _Reply(200, self._bundle(vault, name, secret.versions[-1]))
        raise _vault_error(405, 'MethodNotAllowed', f'The method {request.method} is not allowed here.')

    @staticmethod
    def _not_found(name: str, version: str = '') -> _Reply:
        shown = f'{name}/{version}' if version else name
        return _vault_error(404, 'SecretNotFound', f'A secret with (name/id) {shown} was not found in this key vault. '
                            'If you recently deleted this secret you may be able to recover it using the correct '
                            'recovery command. For help resolving this issue, please see '
                            'https://go.microsoft.com/fwlink/?linkid=2125182')

    def _get(self, vault: str, name: str, version_id: str) -> _Reply:
        with self._lock:
            secret = self._vaults[vault].get(name)
            if secret is None or secret.deleted or not secret.versions:
                raise self._not_found(name, version_id)
            if version_id:
                found = next((v for v in secret.versions if v.id == version_id), None)
                if found is None:
                    raise self._not_found(name, version_id)
            else:
                found = secret.versions[-1]
            if not found.enabled:
                raise _vault_error(403, 'Forbidden', 'Operation get is not allowed on a disabled secret.', 'SecretDisabled')
            return _Reply(200, self._bundle(vault, name, found))

    def _put(self, vault: str, name: str, raw: bytes) -> _Reply:
        try:
            body = json.loads(raw)
        except ValueError:
            raise _vault_error(400, 'BadParameter', 'The request body is not valid JSON.') from None
        if not isinstance(body, dict) or not isinstance(body.get('value'), str):
            raise _vault_error(400, 'BadParameter', "Property 'value' is required and must be a string.")
        if len(body['value'].encode('utf-8')) > MAX_VALUE_BYTES:
            raise _vault_error(400, 'BadParameter', 'The secret value exceeds the maximum size of 25 KB.')
        attributes = body.get('attributes') if isinstance(body.get('attributes'), dict) else {}
        tags = body.get('tags') if isinstance(body.get('tags'), dict) else {}
        content_type = body.get('contentType') if isinstance(body.get('contentType'), str) else None
        with self._lock:
            existing = self._vaults[vault].get(name)
            if existing is not None and existing.deleted:
                raise _vault_error(409, 'Conflict', f'Secret {name} is currently in a deleted but recoverable state, '
                                   'and its name cannot be reused; in this state, the secret can only be recovered '
                                   'or purged.', 'ObjectIsDeletedButRecoverable')
            version = self._new_version(self._vaults[vault], name, body['value'], bool(attributes.get('enabled', True)),
                                        content_type, {str(k): str(v) for k, v in tags.items()})
            return _Reply(200, self._bundle(vault, name, version))

