"""The Kubernetes provider against the API emulator, through the operator's own API client.

``KubernetesProvider`` is given ``controller.kube.KubeApi`` (as the operator gives it) pointed at
``harness.apiserver.ApiServer``: Secrets are real objects of the emulator, with resourceVersions
and merge-patch preconditions; refusals (403) and server errors (503) are the emulator's injected
faults, and a server that is gone is a closed port. Every error a test provokes is also scanned
for the stored values (they must never show).
"""
from __future__ import annotations

import base64
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any

import pytest
from conftest import ApiClient
from harness.apiserver import ApiServer
from harness.redis import free_port

from agentgov.controller.kube import Connection, KubeApi
from agentgov.secrets.base import (
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProvider,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
)
from agentgov.secrets.kubernetes import KubernetesProvider

CANARY = 'canary-8a21f0-never-shown'
SECRETS = '/api/v1/namespaces/default/secrets'
PATH = f'{SECRETS}/model-keys'
LOC = SecretLocator('kubernetes', 'default/model-keys', 'openai')
VALUES = {'openai': f'{CANARY}-openai', 'anthropic': f'{CANARY}-anthropic'}


def encoded(values: Mapping[str, str | bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode() for k, v in values.items()}


class Errors:
    """The errors a test provoked; none may show a stored value."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    async def expect(self, kind: type[SecretError], call: Awaitable[Any]) -> SecretError:
        with pytest.raises(SecretError) as info:
            await call
        self.raised.append(info.value)
        assert type(info.value) is kind, f'{type(info.value).__name__}: {info.value}'
        return info.value


@pytest.fixture()
def errors() -> Iterator[Errors]:
    found = Errors()
    yield found
    for error in found.raised:
        text = str(error) + repr(error) + ''.join(traceback.format_exception(error))
        assert CANARY not in text, f'{type(error).__name__} shows a stored value'
        assert all(v not in text for v in encoded(VALUES).values()), f'{type(error).__name__} shows base64 of a value'


@pytest.fixture()
async def kube(apiserver: ApiServer) -> AsyncIterator[KubeApi]:
    client = KubeApi(Connection(server=str(apiserver.url).rstrip('/')), timeout_seconds=5)
    yield client
    await client.close()


@pytest.fixture()
async def secret(api: ApiClient) -> dict[str, Any]:
    reply = await api.post(SECRETS, {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
                                     'metadata': {'name': 'model-keys', 'namespace': 'default'},
                                     'data': encoded(VALUES)})
    assert reply.status == 201, reply.body
    return reply.body  # type: ignore[no-any-return]


async def stored(api: ApiClient) -> dict[str, Any]:
    reply = await api.get(PATH)
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


# ---- reads ---------------------------------------------------------------------------------------


async def test_a_key_is_read_with_the_secrets_resource_version(kube: KubeApi, secret: dict[str, Any]) -> None:
    value = await KubernetesProvider(kube).get_secret(LOC)
    assert (value.value, value.version) == (VALUES['openai'], secret['metadata']['resourceVersion'])


async def test_the_current_version_can_be_asked_for_by_its_id(kube: KubeApi, secret: dict[str, Any]) -> None:
    value = await KubernetesProvider(kube).get_secret(LOC, version=secret['metadata']['resourceVersion'])
    assert value.value == VALUES['openai']


async def test_an_earlier_version_is_not_found_because_kubernetes_keeps_only_the_current(
        kube: KubeApi, api: ApiClient, secret: dict[str, Any], errors: Errors) -> None:
    old = secret['metadata']['resourceVersion']
    await api.patch(PATH, {'data': encoded({'anthropic': f'{CANARY}-changed'})})
    error = await errors.expect(SecretNotFound, KubernetesProvider(kube).get_secret(LOC, version=old))
    current = (await stored(api))['metadata']['resourceVersion']
    assert error.message == (f"version '{old}' is not the current one ({current}); "
                             'Kubernetes keeps only the current version')


async def test_a_provider_is_a_secret_provider(kube: KubeApi) -> None:
    provider = KubernetesProvider(kube)
    assert isinstance(provider, SecretProvider)
    assert provider.kind == 'kubernetes'


async def test_a_missing_secret_is_not_found_naming_it(kube: KubeApi, errors: Errors) -> None:
    error = await errors.expect(SecretNotFound, KubernetesProvider(kube).get_secret(LOC))
    assert str(error) == 'kubernetes:default/model-keys#openai: Secret default/model-keys does not exist'


async def test_a_missing_key_names_the_keys_present_and_no_value(kube: KubeApi, secret: dict[str, Any],
                                                                 errors: Errors) -> None:
    locator = SecretLocator('kubernetes', 'default/model-keys', 'mistral')
    error = await errors.expect(SecretNotFound, KubernetesProvider(kube).get_secret(locator))
    assert error.message == "key 'mistral' not in Secret default/model-keys (keys: anthropic, openai)"


async def test_a_value_that_is_not_utf8_is_misconfigured_naming_the_key_only(
        kube: KubeApi, api: ApiClient, secret: dict[str, Any], errors: Errors) -> None:
    binary = b'\xff\xfe' + CANARY.encode()
    await api.patch(PATH, {'data': encoded({'openai': binary})})
    error = await errors.expect(SecretProviderMisconfigured, KubernetesProvider(kube).get_secret(LOC))
    assert error.message == ("key 'openai' of Secret default/model-keys is not UTF-8 text; "
                             'only text values can be injected')


# ---- failures of the API server ------------------------------------------------------------------


async def test_a_refusal_is_permission_denied_not_not_found(kube: KubeApi, apiserver: ApiServer,
                                                            secret: dict[str, Any], errors: Errors) -> None:
    apiserver.inject_fault('GET', r'/secrets/model-keys$', status=403)
    error = await errors.expect(SecretPermissionDenied, KubernetesProvider(kube).get_secret(LOC))
    assert error.message == 'the API server refused to read Secret default/model-keys (HTTP 403)'


async def test_a_server_error_is_unavailable(kube: KubeApi, apiserver: ApiServer, secret: dict[str, Any],
                                             errors: Errors) -> None:
    apiserver.inject_fault('GET', r'/secrets/model-keys$', status=503)
    error = await errors.expect(SecretProviderUnavailable, KubernetesProvider(kube).get_secret(LOC))
    assert error.message == 'could not read Secret default/model-keys (HTTP 503)'
    assert (await KubernetesProvider(kube).get_secret(LOC)).value == VALUES['openai']


async def test_an_api_server_that_is_gone_is_unavailable(errors: Errors) -> None:
    client = KubeApi(Connection(server=f'http://127.0.0.1:{free_port()}'), timeout_seconds=5)
    try:
        error = await errors.expect(SecretProviderUnavailable, KubernetesProvider(client).get_secret(LOC))
    finally:
        await client.close()
    assert error.message == 'could not read Secret default/model-keys (TransientError)'


# ---- rotation ------------------------------------------------------------------------------------


async def test_a_rotation_replaces_one_key_and_returns_the_new_resource_version(
        kube: KubeApi, api: ApiClient, secret: dict[str, Any]) -> None:
    provider = KubernetesProvider(kube)
    rotated = await provider.rotate_secret(LOC, f'{CANARY}-rotated')
    after = await stored(api)
    assert rotated.version == after['metadata']['resourceVersion'] != secret['metadata']['resourceVersion']
    assert after['data'] == encoded({**VALUES, 'openai': f'{CANARY}-rotated'})
    assert await provider.get_secret(LOC) == rotated


async def test_a_rotation_never_adds_a_key(kube: KubeApi, api: ApiClient, secret: dict[str, Any],
                                           errors: Errors) -> None:
    locator = SecretLocator('kubernetes', 'default/model-keys', 'mistral')
    error = await errors.expect(SecretNotFound, KubernetesProvider(kube).rotate_secret(locator, f'{CANARY}-new'))
    assert error.message.endswith('a rotation replaces an existing key, it never adds one')
    assert (await stored(api))['metadata']['resourceVersion'] == secret['metadata']['resourceVersion']


async def test_a_rotation_of_a_missing_secret_is_not_found(kube: KubeApi, errors: Errors) -> None:
    await errors.expect(SecretNotFound, KubernetesProvider(kube).rotate_secret(LOC, f'{CANARY}-new'))


async def test_a_value_over_a_secrets_limit_is_refused_before_any_write(
        kube: KubeApi, api: ApiClient, secret: dict[str, Any], errors: Errors) -> None:
    error = await errors.expect(SecretProviderMisconfigured,
                                KubernetesProvider(kube).rotate_secret(LOC, 'x' * (1024 * 1024 + 1)))
    assert error.message == 'the new value is 1048577 bytes; a Kubernetes Secret holds at most 1 MiB'
    assert (await stored(api))['metadata']['resourceVersion'] == secret['metadata']['resourceVersion']


async def test_a_write_between_the_read_and_the_patch_is_kept_and_the_rotation_retried(
        apiserver: ApiServer, api: ApiClient, secret: dict[str, Any]) -> None:
    # Another writer changes the Secret right after the provider's first read: the patch's
    # resourceVersion precondition makes the API server answer 409, and the provider reads again.
    class InterleavedApi(KubeApi):
        reads = 0

        async def get(self, path: str) -> dict[str, Any] | None:
            found = await super().get(path)
            InterleavedApi.reads += 1
            if InterleavedApi.reads == 1:
                reply = await api.patch(PATH, {'data': encoded({'anthropic': f'{CANARY}-meanwhile'})})
                assert reply.status == 200, reply.body
            return found

    client = InterleavedApi(Connection(server=str(apiserver.url).rstrip('/')))
    try:
        rotated = await KubernetesProvider(client).rotate_secret(LOC, f'{CANARY}-rotated')
    finally:
        await client.close()
    after = await stored(api)
    assert after['data'] == encoded({'openai': f'{CANARY}-rotated', 'anthropic': f'{CANARY}-meanwhile'})
    assert rotated.version == after['metadata']['resourceVersion']
    assert InterleavedApi.reads == 2
    patches = [r for r in apiserver if r.method.value == 'PATCH' and r.url.path == PATH]
    assert len(patches) == 3  # the other writer's, the refused one, the retried one


async def test_a_secret_that_keeps_changing_during_a_rotation_is_unavailable(
        kube: KubeApi, apiserver: ApiServer, api: ApiClient, secret: dict[str, Any], errors: Errors) -> None:
    apiserver.inject_fault('PATCH', r'/secrets/model-keys$', status=409, times=2)
    error = await errors.expect(SecretProviderUnavailable, KubernetesProvider(kube).rotate_secret(LOC, f'{CANARY}-x'))
    assert error.message == ('Secret default/model-keys changed during the rotation twice (resourceVersion conflict); '
                             'try again')
    assert (await stored(api))['data'] == encoded(VALUES)


async def test_a_refused_write_is_permission_denied(kube: KubeApi, apiserver: ApiServer, api: ApiClient,
                                                    secret: dict[str, Any], errors: Errors) -> None:
    apiserver.inject_fault('PATCH', r'/secrets/model-keys$', status=403)
    error = await errors.expect(SecretPermissionDenied, KubernetesProvider(kube).rotate_secret(LOC, f'{CANARY}-x'))
    assert error.message == 'the API server refused to write Secret default/model-keys (HTTP 403)'
    assert (await stored(api))['data'] == encoded(VALUES)


# ---- hostile locators ------------------------------------------------------------------------------


@pytest.mark.parametrize(('path', 'key', 'problem'), [
    ('model-keys', 'openai', 'the path must be <namespace>/<secret name>'),
    ('default/model-keys/extra', 'openai', 'the path must be <namespace>/<secret name>'),
    ('../kube-system/model-keys', 'openai', 'the path must be <namespace>/<secret name>'),
    ('kube-system/..', 'openai', 'is not a DNS-1123 subdomain'),
    ('Default/model-keys', 'openai', 'is not a DNS-1123 label'),
    ('default/model-keys?watch=1', 'openai', 'is not a DNS-1123 subdomain'),
    ('default/model\x00keys', 'openai', 'is not a DNS-1123 subdomain'),
    ('default/' + 'a' * 254, 'openai', 'is not a DNS-1123 subdomain'),
    ('default/model-keys', 'k' * 100_000, 'a Secret\'s keys are 1-253 characters'),
    ('default/model-keys', 'open/ai', 'a Secret\'s keys are 1-253 characters'),
    ('default/model-keys', 'open\x00ai', 'a Secret\'s keys are 1-253 characters'),
    ('default/model-keys', None, 'no key'),
], ids=['no namespace', 'an extra segment', 'a dot-dot namespace', 'a dot-dot name', 'an upper-case namespace',
        'a query in the name', 'a NUL in the name', 'an oversized name', 'a huge key', 'a slash in the key',
        'a NUL in the key', 'no key'])
async def test_a_hostile_locator_is_not_found_before_any_request(
        kube: KubeApi, apiserver: ApiServer, errors: Errors, path: str, key: str | None, problem: str) -> None:
    seen = len(list(apiserver))
    provider = KubernetesProvider(kube)
    for call in (provider.get_secret(SecretLocator('kubernetes', path, key)),
                 provider.rotate_secret(SecretLocator('kubernetes', path, key), f'{CANARY}-x')):
        error = await errors.expect(SecretNotFound, call)
        assert problem in error.message
        assert len(str(error)) < 400 and '\x00' not in str(error)
    assert len(list(apiserver)) == seen


async def test_a_locator_of_another_provider_is_misconfigured(kube: KubeApi, errors: Errors) -> None:
    await errors.expect(SecretProviderMisconfigured,
                        KubernetesProvider(kube).get_secret(SecretLocator('vault', 'default/model-keys', 'openai')))
