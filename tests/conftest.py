"""Shared fixtures: the Kubernetes API emulator, in-loop and in a thread, and a kubeconfig for it.

What it is for: giving integration tests a running ``harness.apiserver.ApiServer`` loaded with
the bundled built-in resources and the repository's own ``crds/`` (never a copy), always
stopped at the end; a small HTTP client (``api``) to drive it through real requests; the
emulator's test-only CRDs (``widgets``); and a kubeconfig file for subprocesses (kubectl) and kopf.

What it must never do: point at a real cluster, leak ``KUBECONFIG`` (or any environment
change) into other tests, or leave a server, thread, session or port behind.
"""
from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import attrs
import kubernetes
import multidict
import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
CRDS_DIR = REPO_ROOT / 'crds'
TESTDATA = pathlib.Path(__file__).resolve().parent / 'harness' / 'testdata'

from harness.apiserver import ApiServer
from harness.redis import RedisServer
from harness.moto import ACCESS_KEY_ID as moto_access_key, REGION as moto_region, SECRET_ACCESS_KEY as moto_secret_key, MotoServer

WIDGETS = '/apis/harness.test/v1/namespaces/default/widgets'
GADGETS = '/apis/harness.test/v1/gadgets'
CONFIGMAPS = '/api/v1/namespaces/default/configmaps'
CRDS = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions'


@attrs.frozen
class Reply:
    """One HTTP answer: status code, decoded JSON body (or text), headers."""
    status: int
    body: Any
    headers: multidict.CIMultiDictProxy[str]

    @property
    def warnings(self) -> list[str]:
        return self.headers.getall('Warning', [])


@attrs.define
class ApiClient:
    """A thin aiohttp client for the emulator: real HTTP, JSON in and out, no retries."""
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, body: Any = None, *,
                      params: Mapping[str, str] | None = None,
                      content_type: str = 'application/json',
                      headers: Mapping[str, str] | None = None) -> Reply:
        data = None
        all_headers = dict(headers or {})
        if body is not None:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
            all_headers['Content-Type'] = content_type
        async with self.session.request(method, path, data=data, params=params, headers=all_headers) as response:
            text = await response.text()
            try:
                payload: Any = json.loads(text)
            except ValueError:
                payload = text
            return Reply(response.status, payload, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request('GET', path, **kwargs)

    async def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return await self.request('POST', path, body, **kwargs)

    async def put(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return await self.request('PUT', path, body, **kwargs)

    async def patch(self, path: str, body: Any, content_type: str = 'application/merge-patch+json',
                    **kwargs: Any) -> Reply:
        return await self.request('PATCH', path, body, content_type=content_type, **kwargs)

    async def delete(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.request('DELETE', path, body, **kwargs)

    async def watch(self, path: str, params: Mapping[str, str], count: int | None = None,
                    timeout: float = 10) -> list[dict[str, Any]]:
        """Read watch events until ``count`` arrived or the server ends the stream."""
        events: list[dict[str, Any]] = []
        query = dict(params, watch='true')
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with self.session.get(path, params=query, timeout=client_timeout) as response:
            assert response.status == 200, await response.text()
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
                if count is not None and len(events) >= count:
                    break
        return events


@pytest.fixture()
async def apiserver() -> AsyncIterator[ApiServer]:
    """An ApiServer with the built-ins and the repository's CRDs, served in the test's loop."""
    server = ApiServer(crd_dirs=[CRDS_DIR], strict=True)
    async with server.serve():
        yield server


@pytest.fixture()
def apiserver_in_thread() -> Iterator[ApiServer]:
    """The same server, served from a background thread with its own event loop."""
    server = ApiServer(crd_dirs=[CRDS_DIR], strict=True)
    with server.run_in_thread():
        yield server


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server per test session (per xdist worker); never killed by tests."""
    server = RedisServer(tmp_path_factory.mktemp('redis'))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """The shared redis-server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture()
def private_redis(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for fault tests that kill, pause or restart it."""
    server = RedisServer(tmp_path / 'redis')
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server per test session (per xdist worker): AWS APIs for boto3."""
    server = MotoServer(tmp_path_factory.mktemp('moto'))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def aws_endpoint(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared moto server, emptied for this test; boto3 in this process gets fake
    credentials and a region from the environment (never a real account's)."""
    moto_server.reset()
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', moto_access_key)
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', moto_secret_key)
    monkeypatch.setenv('AWS_DEFAULT_REGION', moto_region)
    for name in ('AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE'):
        monkeypatch.delenv(name, raising=False)
    return moto_server.url


@pytest.fixture()
async def api(apiserver: ApiServer) -> AsyncIterator[ApiClient]:
    """An HTTP client bound to the in-loop server."""
    async with aiohttp.ClientSession(base_url=str(apiserver.url)) as session:
        yield ApiClient(session)


def widget_crds() -> list[dict[str, Any]]:
    """The emulator's test-only CRDs (widgets and gadgets of group harness.test)."""
    return [doc for doc in yaml.safe_load_all((TESTDATA / 'widgets.yaml').read_text(encoding='utf-8')) if doc]


@pytest.fixture()
async def widgets(api: ApiClient) -> list[dict[str, Any]]:
    """Create the test-only CRDs through the API (so API-created CRDs are what the tests use)."""
    created = []
    for crd in widget_crds():
        reply = await api.post(CRDS, crd)
        assert reply.status == 201, reply.body
        created.append(reply.body)
    return created


@pytest.fixture()
def kubeconfig(apiserver_in_thread: ApiServer, tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A kubeconfig file for the thread-served server; KUBECONFIG points at it for this test only."""
    path = tmp_path / 'kubeconfig'
    config = {
        'apiVersion': 'v1',
        'kind': 'Config',
        'clusters': [{'name': 'emulator', 'cluster': {'server': str(apiserver_in_thread.url).rstrip('/')}}],
        'users': [{'name': 'tester', 'user': {'token': 'emulator-token'}}],
        'contexts': [{'name': 'emulator', 'context': {'cluster': 'emulator', 'user': 'tester',
                                                      'namespace': 'default'}}],
        'current-context': 'emulator',
    }
    path.write_text(yaml.safe_dump(config), encoding='utf-8')
    monkeypatch.setenv('KUBECONFIG', str(path))
    # The official client reads KUBECONFIG once, at import time, into a module constant (which is
    # why kopf's login_via_client found no credentials in earlier attempts); point it here too.
    # kopf's login also installs a process-wide default client Configuration: restore it after.
    monkeypatch.setattr(kubernetes.config.kube_config, 'KUBE_CONFIG_DEFAULT_LOCATION', str(path))
    monkeypatch.setattr(kubernetes.client.Configuration, '_default', kubernetes.client.Configuration._default)
    return path


# --- opt-in tests against a real kind cluster ------------------------------------------------

KIND_KUBECONFIG_ENV = 'AGENTGOV_KIND_KUBECONFIG'
KIND_CONTEXT = 'kind-agentgov'


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``k8s`` run only when a kind kubeconfig is given."""
    import os

    if os.environ.get(KIND_KUBECONFIG_ENV):
        return
    skip = pytest.mark.skip(reason=f'needs a kind cluster: set {KIND_KUBECONFIG_ENV} (context {KIND_CONTEXT})')
    for item in items:
        if 'k8s' in item.keywords:
            item.add_marker(skip)


def checked_kind_kubeconfig(path: pathlib.Path) -> pathlib.Path:
    """``path`` if it is a kubeconfig whose current context is ``kind-agentgov``; else a usage error.

    A usage error, not a skip: pointing the suite at a production cluster by mistake must stop
    the run, never quietly apply test objects to it.
    """
    if not path.is_file():
        raise pytest.UsageError(f'{KIND_KUBECONFIG_ENV}={path}: no such file')
    config = yaml.safe_load(path.read_text()) or {}
    context = config.get('current-context') if isinstance(config, dict) else None
    if context != KIND_CONTEXT:
        raise pytest.UsageError(
            f'{KIND_KUBECONFIG_ENV} points at context {context!r}; only {KIND_CONTEXT!r} is allowed '
            '(kind create cluster --config kind-config.yaml)')
    return path


@pytest.fixture(scope='session')
def kind_kubeconfig() -> pathlib.Path:
    """The kind cluster's kubeconfig from the environment, checked by ``checked_kind_kubeconfig``."""
    import os

    return checked_kind_kubeconfig(pathlib.Path(os.environ[KIND_KUBECONFIG_ENV]))
