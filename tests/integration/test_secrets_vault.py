"""The Vault provider, driven through real hvac against a server speaking Vault's HTTP API.

``harness.vault.VaultServer`` serves KV v2, tokens with policies, Kubernetes auth, namespaces
and faults (sealed, hung, stopped) on 127.0.0.1; every test here runs ``VaultProvider`` against
it and checks what the server saw (requests, logins) as well as what the provider answered.

Every test is also a canary scan (the autouse ``scan`` fixture): after it, no token, JWT or
stored value the server knows appears in any error the test provoked (``str``, ``repr``, the
formatted traceback) nor in anything logged at DEBUG and above.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from harness.vault import VaultServer, running_vault
from pydantic import SecretStr

from agentgov.secrets.base import (
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProvider,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
)
from agentgov.secrets.config import VaultSettings
from agentgov.secrets.vault import RENEW_FRACTION, VaultProvider

CANARY = 'canary-5d1e77-never-shown'
PATH = 'agents/research'
LOC = SecretLocator('vault', PATH, 'api_key')
DATA = {'api_key': f'{CANARY}-api-key', 'db_url': f'postgres://agent:{CANARY}@db/agents', 'port': 5432,
        'flags': {'b': True, 'a': 1}}
ROLE, SA, SA_NS = 'agentgov-operator', 'agentgov-operator', 'agentgov-system'
READ_POLICY = 'agentgov-secrets'
LEASE = 3600


class Scan:
    """Collects the errors a test provokes, for the canary scan at its end."""

    def __init__(self) -> None:
        self.raised: list[BaseException] = []

    async def fails(self, kind: type[SecretError], call: Awaitable[Any]) -> SecretError:
        with pytest.raises(SecretError) as info:
            await call
        self.raised.append(info.value)
        assert type(info.value) is kind, f'{type(info.value).__name__}: {info.value}'
        return info.value

    def fails_now(self, kind: type[SecretError], call: Callable[[], Any]) -> SecretError:
        with pytest.raises(SecretError) as info:
            call()
        self.raised.append(info.value)
        assert type(info.value) is kind, f'{type(info.value).__name__}: {info.value}'
        return info.value


@pytest.fixture()
def vault() -> Iterator[VaultServer]:
    """KV v2 at ``secret`` holding DATA at PATH; a read policy; a Kubernetes role for the operator."""
    with running_vault() as server:
        server.write(PATH, DATA)
        server.add_policy(READ_POLICY, {'secret/data/agents/*': ['read', 'update']})
        server.add_kubernetes_role(ROLE, service_account_names=[SA], service_account_namespaces=[SA_NS],
                                   policies=[READ_POLICY], ttl=LEASE)
        yield server
        assert server.internal_errors == []


@pytest.fixture(autouse=True)
def scan(vault: VaultServer, caplog: pytest.LogCaptureFixture) -> Iterator[Scan]:
    caplog.set_level(logging.DEBUG)
    found = Scan()
    yield found
    material = vault.secret_material() | {CANARY}
    # caplog.text in a teardown holds only the teardown's records: read the test's own phases.
    formatter = logging.Formatter()
    texts = {'the log': '\n'.join(formatter.format(record) for phase in ('setup', 'call')
                                   for record in caplog.get_records(phase))}
    for error in found.raised:
        texts[f'{type(error).__name__} text'] = str(error) + repr(error)
        texts[f'{type(error).__name__} traceback'] = ''.join(traceback.format_exception(error))
    for where, text in texts.items():
        leaked = [m[:12] + '...' for m in material if m in text]
        assert not leaked, f'{where} shows secret material {leaked}'


@pytest.fixture()
def jwt_file(vault: VaultServer, tmp_path: Path) -> Path:
    path = tmp_path / 'serviceaccount-token'
    path.write_text(vault.issue_service_account_jwt(SA, SA_NS) + '\n')
    return path


@pytest.fixture()
async def providers() -> AsyncIterator[list[VaultProvider]]:
    made: list[VaultProvider] = []
    yield made
    for provider in made:
        await provider.close()


@pytest.fixture()
def token_provider(vault: VaultServer, providers: list[VaultProvider]) -> Callable[..., VaultProvider]:
    def make(token: str | None = None, **settings: Any) -> VaultProvider:
        values: dict[str, Any] = {'address': vault.url, 'auth': 'token', 'timeout_seconds': 5.0, **settings}
        if 'token_file' not in settings:
            values['token'] = SecretStr(token or vault.root_token)
        provider = VaultProvider(VaultSettings(**values))
        providers.append(provider)
        return provider
    return make


@pytest.fixture()
def kubernetes_provider(vault: VaultServer, jwt_file: Path,
                        providers: list[VaultProvider]) -> Callable[..., VaultProvider]:
    def make(clock: Callable[[], float] = time.monotonic, **settings: Any) -> VaultProvider:
        values: dict[str, Any] = {'address': vault.url, 'auth': 'kubernetes', 'role': ROLE,
                                  'jwt_file': str(jwt_file), 'timeout_seconds': 5.0, **settings}
        provider = VaultProvider(VaultSettings(**values), clock=clock)
        providers.append(provider)
        return provider
    return make


def root_client(vault: VaultServer) -> Any:
    return hvac.Client(url=vault.url, token=vault.root_token)


def statuses(vault: VaultServer, method: str = 'GET', path: str = PATH) -> list[int]:
    return [r.status for r in vault.requests if r.method == method and r.path == f'/v1/secret/data/{path}']


# ---- reads ---------------------------------------------------------------------------------------


async def test_a_key_is_read_with_the_latest_version_number(token_provider: Callable[..., VaultProvider],
                                                            vault: VaultServer) -> None:
    vault.write(PATH, {**DATA, 'api_key': f'{CANARY}-second'})
    value = await token_provider().get_secret(LOC)
    assert (value.value, value.version) == (f'{CANARY}-second', '2')


async def test_a_versioned_read_returns_that_version(token_provider: Callable[..., VaultProvider],
                                                     vault: VaultServer) -> None:
    vault.write(PATH, {**DATA, 'api_key': f'{CANARY}-second'})
    value = await token_provider().get_secret(LOC, version='1')
    assert (value.value, value.version) == (DATA['api_key'], '1')


@pytest.mark.parametrize(('key', 'text'), [('port', '5432'), ('flags', '{"a":1,"b":true}')],
                         ids=['a number as its digits', 'an object as compact sorted JSON'])
async def test_a_value_that_is_not_a_string_is_given_as_its_json_text(
        token_provider: Callable[..., VaultProvider], key: str, text: str) -> None:
    value = await token_provider().get_secret(SecretLocator('vault', PATH, key))
    assert value.value == text


async def test_a_provider_is_a_secret_provider_and_its_repr_holds_no_token(
        token_provider: Callable[..., VaultProvider], vault: VaultServer) -> None:
    provider = token_provider()
    assert isinstance(provider, SecretProvider)
    assert provider.kind == 'vault'
    assert vault.root_token not in repr(provider)


async def test_a_missing_key_names_the_keys_present_and_no_value(token_provider: Callable[..., VaultProvider],
                                                                 scan: Scan) -> None:
    error = await scan.fails(SecretNotFound, token_provider().get_secret(SecretLocator('vault', PATH, 'apikey')))
    assert str(error) == (f"vault:{PATH}#apikey: key 'apikey' not in vault:{PATH} "
                          '(keys: api_key, db_url, flags, port)')


async def test_a_missing_path_is_not_found(token_provider: Callable[..., VaultProvider], scan: Scan) -> None:
    error = await scan.fails(SecretNotFound, token_provider().get_secret(SecretLocator('vault', 'agents/nobody', 'k')))
    assert error.message == 'no secret at vault:agents/nobody'


async def test_a_version_that_never_existed_is_not_found(token_provider: Callable[..., VaultProvider],
                                                         scan: Scan) -> None:
    error = await scan.fails(SecretNotFound, token_provider().get_secret(LOC, version='99'))
    assert error.message == f'vault:{PATH} has no version 99 (or no secret at all)'


async def test_a_deleted_version_is_reported_as_deleted(token_provider: Callable[..., VaultProvider],
                                                        vault: VaultServer, scan: Scan) -> None:
    vault.write(PATH, DATA)
    root_client(vault).secrets.kv.v2.delete_secret_versions(PATH, versions=[1])
    error = await scan.fails(SecretNotFound, token_provider().get_secret(LOC, version='1'))
    assert error.message.startswith(f'version 1 of vault:{PATH} was deleted at 20')
    assert (await token_provider().get_secret(LOC)).version == '2'


async def test_a_deleted_latest_version_is_reported_as_deleted(token_provider: Callable[..., VaultProvider],
                                                               vault: VaultServer, scan: Scan) -> None:
    root_client(vault).secrets.kv.v2.delete_latest_version_of_secret(PATH)
    error = await scan.fails(SecretNotFound, token_provider().get_secret(LOC))
    assert error.message.startswith(f'the latest version (1) of vault:{PATH} was deleted at ')


async def test_a_destroyed_version_is_reported_as_destroyed(token_provider: Callable[..., VaultProvider],
                                                            vault: VaultServer, scan: Scan) -> None:
    root_client(vault).secrets.kv.v2.destroy_secret_versions(PATH, versions=[1])
    error = await scan.fails(SecretNotFound, token_provider().get_secret(LOC, version='1'))
    assert error.message == f'version 1 of vault:{PATH} was destroyed'


@pytest.mark.parametrize('version', ['abc', '0', '-1', '1.5', ' 1', '1' * 30, '1\x00', '٣'],
                         ids=['letters', 'zero', 'negative', 'a fraction', 'a space', 'too many digits', 'a NUL',
                              'a non-ASCII digit'])
async def test_a_version_that_is_not_a_positive_integer_is_not_found_without_a_request(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan, version: str) -> None:
    provider = token_provider()
    vault.clear_requests()
    error = await scan.fails(SecretNotFound, provider.get_secret(LOC, version=version))
    assert 'is not a Vault version number (a positive integer)' in error.message
    assert '\x00' not in str(error)
    assert vault.requests == []


async def test_a_mount_that_is_not_there_is_misconfigured(token_provider: Callable[..., VaultProvider],
                                                          scan: Scan) -> None:
    error = await scan.fails(SecretProviderMisconfigured, token_provider(mount='kv').get_secret(LOC))
    assert error.message == "no secrets engine is mounted at 'kv' (HTTP 404: no handler for route)"


# ---- permissions and logins --------------------------------------------------------------------------


async def test_permission_denied_and_not_found_are_distinct_errors(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan) -> None:
    provider = token_provider(vault.create_token([READ_POLICY]))
    await scan.fails(SecretNotFound, provider.get_secret(SecretLocator('vault', 'agents/nobody', 'k')))
    vault.write('platform/db', {'password': f'{CANARY}-platform'})
    denied = await scan.fails(SecretPermissionDenied, provider.get_secret(SecretLocator('vault', 'platform/db', 'password')))
    assert denied.message == "Vault denied the operator's token (permission denied)"


async def test_a_refused_static_token_is_permission_denied_after_one_request(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan) -> None:
    token = vault.create_token([READ_POLICY])
    vault.revoke(token)
    await scan.fails(SecretPermissionDenied, token_provider(token).get_secret(LOC))
    assert statuses(vault) == [403]


async def test_kubernetes_auth_logs_in_once_for_many_reads(kubernetes_provider: Callable[..., VaultProvider],
                                                           vault: VaultServer) -> None:
    provider = kubernetes_provider()
    values = await asyncio.gather(*(provider.get_secret(LOC) for _ in range(5)))
    assert {v.value for v in values} == {DATA['api_key']}
    assert vault.logins(ROLE) == 1
    assert {r.accessor for r in vault.requests if r.path.startswith('/v1/secret/')} != {None}


async def test_an_expired_login_token_is_replaced_by_a_new_login_transparently(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer) -> None:
    provider = kubernetes_provider()
    await provider.get_secret(LOC)
    vault.advance(LEASE + 1)  # the server's clock only: the provider still believes in its lease
    assert (await provider.get_secret(LOC)).value == DATA['api_key']
    assert vault.logins(ROLE) == 2
    assert statuses(vault) == [200, 403, 200]


async def test_a_lease_nearly_over_is_renewed_by_a_login_before_the_call(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer) -> None:
    now = [1000.0]
    provider = kubernetes_provider(clock=lambda: now[0])
    await provider.get_secret(LOC)
    now[0] += LEASE * RENEW_FRACTION - 1
    await provider.get_secret(LOC)
    assert vault.logins(ROLE) == 1
    now[0] += 2
    vault.advance(LEASE * RENEW_FRACTION + 1)
    await provider.get_secret(LOC)
    assert vault.logins(ROLE) == 2
    assert statuses(vault) == [200, 200, 200]


async def test_a_rotated_token_file_is_used_once_the_old_token_is_refused(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, tmp_path: Path) -> None:
    token_file = tmp_path / 'vault-token'
    old, new = vault.create_token([READ_POLICY]), vault.create_token([READ_POLICY])
    token_file.write_text(old + '\n')
    provider = token_provider(token_file=str(token_file))
    await provider.get_secret(LOC)
    token_file.write_text(new + '\n')
    vault.revoke(old)
    assert (await provider.get_secret(LOC)).value == DATA['api_key']
    reads = [r for r in vault.requests if r.path == f'/v1/secret/data/{PATH}']
    assert [r.status for r in reads] == [200, 403, 200]
    assert reads[0].accessor != reads[2].accessor


async def test_a_token_whose_ttl_is_nearly_over_is_read_again_from_its_file(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, tmp_path: Path,
        providers: list[VaultProvider]) -> None:
    token_file = tmp_path / 'vault-token'
    token_file.write_text(vault.create_token([READ_POLICY], ttl=100))
    now = [0.0]
    provider = VaultProvider(VaultSettings(address=vault.url, auth='token', token_file=str(token_file)),
                             clock=lambda: now[0])
    providers.append(provider)
    await provider.get_secret(LOC)
    token_file.write_text(vault.create_token([READ_POLICY], ttl=100))
    now[0] += 100 * RENEW_FRACTION + 1
    await provider.get_secret(LOC)
    reads = [r for r in vault.requests if r.path == f'/v1/secret/data/{PATH}']
    lookups = [r for r in vault.requests if r.path == '/v1/auth/token/lookup-self']
    assert [r.status for r in reads] == [200, 200]
    assert reads[0].accessor != reads[1].accessor
    assert len(lookups) == 2


async def test_a_second_refusal_after_a_new_login_is_permission_denied(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan) -> None:
    vault.write('platform/db', {'password': f'{CANARY}-platform'})
    await scan.fails(SecretPermissionDenied,
                     kubernetes_provider().get_secret(SecretLocator('vault', 'platform/db', 'password')))
    assert vault.logins(ROLE) == 2
    assert statuses(vault, path='platform/db') == [403, 403]


async def test_a_login_for_an_unknown_role_is_misconfigured(kubernetes_provider: Callable[..., VaultProvider],
                                                            scan: Scan) -> None:
    error = await scan.fails(SecretProviderMisconfigured, kubernetes_provider(role='nobody').get_secret(LOC))
    assert error.message == ("Vault's kubernetes auth at auth/kubernetes refused the login for role 'nobody' "
                             '(HTTP 400: no such role?)')


async def test_a_service_account_token_the_review_refuses_is_permission_denied(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer, jwt_file: Path, scan: Scan) -> None:
    vault.forget_service_account_jwt(jwt_file.read_text().strip())
    error = await scan.fails(SecretPermissionDenied, kubernetes_provider().get_secret(LOC))
    assert error.message == (f"Vault's kubernetes auth at auth/kubernetes refused the service account token "
                             f'for role {ROLE!r}')


async def test_a_service_account_the_role_does_not_bind_is_permission_denied(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer, tmp_path: Path, scan: Scan) -> None:
    other = tmp_path / 'other-token'
    other.write_text(vault.issue_service_account_jwt('default', SA_NS))
    await scan.fails(SecretPermissionDenied, kubernetes_provider(jwt_file=str(other)).get_secret(LOC))
    assert [r.status for r in vault.requests if r.path == '/v1/auth/kubernetes/login'] == [403]


async def test_an_auth_mount_that_is_not_there_is_misconfigured(kubernetes_provider: Callable[..., VaultProvider],
                                                                scan: Scan) -> None:
    error = await scan.fails(SecretProviderMisconfigured, kubernetes_provider(auth_mount='k8s-east').get_secret(LOC))
    assert 'auth/k8s-east' in error.message and 'no auth method is mounted there' in error.message


@pytest.mark.parametrize('content', [None, '', '  \n', 'two words'],
                         ids=['a missing file', 'an empty file', 'only whitespace', 'not a JWT'])
async def test_a_service_account_token_file_that_cannot_be_used_is_misconfigured_naming_the_file(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer, tmp_path: Path, scan: Scan,
        content: str | None) -> None:
    path = tmp_path / 'token'
    if content is not None:
        path.write_text(content)
    error = await scan.fails(SecretProviderMisconfigured, kubernetes_provider(jwt_file=str(path)).get_secret(LOC))
    assert str(path) in error.message
    assert vault.logins() == 0


# ---- namespaces --------------------------------------------------------------------------------------


async def test_the_namespace_selects_an_isolated_store(token_provider: Callable[..., VaultProvider],
                                                       vault: VaultServer, scan: Scan) -> None:
    vault.add_namespace('team-a')
    vault.enable_kv('secret', namespace='team-a')
    vault.write(PATH, {'api_key': f'{CANARY}-team-a'}, namespace='team-a')
    team_token = vault.create_token(['root'], namespace='team-a', no_default_policy=True)
    assert (await token_provider(team_token, namespace='team-a').get_secret(LOC)).value == f'{CANARY}-team-a'
    assert (await token_provider().get_secret(LOC)).value == DATA['api_key']
    # A token of the root namespace is not valid inside team-a.
    await scan.fails(SecretPermissionDenied, token_provider(namespace='team-a').get_secret(LOC))
    assert {r.namespace for r in vault.requests if r.path == f'/v1/secret/data/{PATH}'} == {'', 'team-a'}


# ---- rotation ----------------------------------------------------------------------------------------


async def test_a_rotation_writes_the_next_version_keeping_the_other_keys(
        kubernetes_provider: Callable[..., VaultProvider], vault: VaultServer) -> None:
    provider = kubernetes_provider()
    rotated = await provider.rotate_secret(LOC, f'{CANARY}-rotated')
    assert rotated.version == '2'
    stored = root_client(vault).secrets.kv.v2.read_secret_version(PATH, raise_on_deleted_version=True)['data']
    assert stored['data'] == {**DATA, 'api_key': f'{CANARY}-rotated'}  # the number and object kept as they were
    assert (await provider.get_secret(LOC)).value == f'{CANARY}-rotated'
    assert (await provider.get_secret(LOC, version='1')).value == DATA['api_key']
    writes = [r for r in vault.requests if r.method == 'POST' and r.path == f'/v1/secret/data/{PATH}']
    assert [r.status for r in writes] == [200]


async def test_a_value_with_nul_and_non_ascii_characters_round_trips(
        token_provider: Callable[..., VaultProvider]) -> None:
    provider = token_provider()
    value = f'{CANARY}\x00é\u2028"\\'
    await provider.rotate_secret(LOC, value)
    assert (await provider.get_secret(LOC)).value == value


async def test_a_rotation_never_adds_a_key(token_provider: Callable[..., VaultProvider], vault: VaultServer,
                                           scan: Scan) -> None:
    error = await scan.fails(SecretNotFound,
                             token_provider().rotate_secret(SecretLocator('vault', PATH, 'api-key'), f'{CANARY}-new'))
    assert 'a rotation replaces an existing key, it never adds one' in error.message
    assert statuses(vault, 'POST') == []


async def test_a_write_between_the_read_and_the_write_is_kept_and_the_rotation_retried(
        token_provider: Callable[..., VaultProvider], vault: VaultServer) -> None:
    concurrent = {**DATA, 'db_url': f'{CANARY}-changed-meanwhile'}
    vault.before('POST', f'/v1/secret/data/{PATH}$', lambda: vault.write(PATH, concurrent))
    rotated = await token_provider().rotate_secret(LOC, f'{CANARY}-rotated')
    assert rotated.version == '3'
    stored = root_client(vault).secrets.kv.v2.read_secret_version(PATH, raise_on_deleted_version=True)['data']
    assert stored['data'] == {**concurrent, 'api_key': f'{CANARY}-rotated'}
    assert statuses(vault, 'POST') == [400, 200]  # check-and-set refused the write based on version 1


async def test_a_secret_changed_twice_during_a_rotation_is_unavailable_and_untouched(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan) -> None:
    versions = iter(range(1, 3))
    vault.before('POST', f'/v1/secret/data/{PATH}$',
                 lambda: vault.write(PATH, {**DATA, 'db_url': f'{CANARY}-writer-{next(versions)}'}), times=2)
    error = await scan.fails(SecretProviderUnavailable, token_provider().rotate_secret(LOC, f'{CANARY}-rotated'))
    assert error.message == (f'vault:{PATH} changed during the rotation twice (check-and-set version 2 '
                             'no longer current); try again')
    stored = root_client(vault).secrets.kv.v2.read_secret_version(PATH, raise_on_deleted_version=True)['data']
    assert stored['data'] == {**DATA, 'db_url': f'{CANARY}-writer-2'}
    assert stored['metadata']['version'] == 3


async def test_concurrent_rotations_lose_no_write(token_provider: Callable[..., VaultProvider],
                                                  vault: VaultServer) -> None:
    keys = [f'key{i}' for i in range(6)]
    vault.write(PATH, {key: f'{CANARY}-old-{key}' for key in keys})
    provider = token_provider()
    outcomes = await asyncio.gather(
        *(provider.rotate_secret(SecretLocator('vault', PATH, key), f'{CANARY}-new-{key}') for key in keys),
        return_exceptions=True)
    stored = root_client(vault).secrets.kv.v2.read_secret_version(PATH, raise_on_deleted_version=True)['data']
    rotated = {key: outcome for key, outcome in zip(keys, outcomes) if not isinstance(outcome, BaseException)}
    refused = {key: outcome for key, outcome in zip(keys, outcomes) if isinstance(outcome, BaseException)}
    assert rotated, 'at least one rotation must get through'
    assert all(isinstance(e, SecretProviderUnavailable) and 'check-and-set' in str(e) for e in refused.values())
    # Every rotation that reported success is in the final data; every refused one left its key alone.
    assert stored['data'] == {key: f'{CANARY}-{"new" if key in rotated else "old"}-{key}' for key in keys}
    assert sorted(int(v.version) for v in rotated.values()) == list(range(3, 3 + len(rotated)))
    assert stored['metadata']['version'] == 2 + len(rotated)


# ---- faults ------------------------------------------------------------------------------------------


async def test_a_sealed_vault_is_unavailable_until_unsealed(token_provider: Callable[..., VaultProvider],
                                                            vault: VaultServer, scan: Scan) -> None:
    provider = token_provider()
    vault.seal()
    error = await scan.fails(SecretProviderUnavailable, provider.get_secret(LOC))
    assert error.message == f'Vault at {vault.url} is sealed or in standby (HTTP 503)'
    vault.unseal()
    assert (await provider.get_secret(LOC)).value == DATA['api_key']


async def test_a_hung_vault_is_unavailable_within_the_timeout(token_provider: Callable[..., VaultProvider],
                                                              vault: VaultServer, scan: Scan) -> None:
    provider = token_provider(timeout_seconds=0.5)
    await provider.get_secret(LOC)
    vault.pause()
    try:
        started = time.monotonic()
        error = await scan.fails(SecretProviderUnavailable, provider.get_secret(LOC))
        elapsed = time.monotonic() - started
    finally:
        vault.resume()
    assert error.message == f'Vault at {vault.url} did not answer within 0.5 s'
    assert 0.5 <= elapsed < 5, elapsed


async def test_a_stopped_vault_is_unavailable_and_a_restarted_one_serves_again(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan) -> None:
    provider = token_provider()
    await provider.get_secret(LOC)
    vault.stop_listening()
    error = await scan.fails(SecretProviderUnavailable, provider.get_secret(LOC))
    assert error.message == f'cannot connect to Vault at {vault.url} (ConnectionError)'
    vault.start_listening()
    assert (await provider.get_secret(LOC)).value == DATA['api_key']


async def test_a_tls_handshake_that_fails_is_misconfigured(token_provider: Callable[..., VaultProvider],
                                                           vault: VaultServer, scan: Scan) -> None:
    https = vault.url.replace('http://', 'https://')  # the server speaks plain HTTP
    error = await scan.fails(SecretProviderMisconfigured, token_provider(address=https).get_secret(LOC))
    assert error.message == f'TLS with Vault at {https} failed (SSLError); check its certificate and ca_file'


# ---- the server itself: what hvac sees of it is Vault's behaviour --------------------------------------


def test_the_server_keeps_version_metadata_and_undeletes_like_vault(vault: VaultServer) -> None:
    kv = root_client(vault).secrets.kv.v2
    kv.create_or_update_secret(PATH, {'api_key': f'{CANARY}-2'}, cas=1)
    kv.delete_secret_versions(PATH, versions=[1])
    metadata = kv.read_secret_metadata(PATH)['data']
    assert (metadata['current_version'], metadata['oldest_version']) == (2, 0)
    assert metadata['versions']['1']['deletion_time'] != '' and metadata['versions']['2']['deletion_time'] == ''
    kv.undelete_secret_versions(PATH, versions=[1])
    assert kv.read_secret_version(PATH, version=1, raise_on_deleted_version=True)['data']['data'] == DATA
    with pytest.raises(hvac.exceptions.InvalidRequest, match='check-and-set parameter did not match'):
        kv.create_or_update_secret(PATH, {'api_key': 'x'}, cas=0)


def test_the_server_tells_create_from_update_in_policies(vault: VaultServer) -> None:
    vault.add_policy('create-only', {'secret/data/drop/*': ['create']})
    kv = hvac.Client(url=vault.url, token=vault.create_token(['create-only'])).secrets.kv.v2
    kv.create_or_update_secret('drop/box', {'k': f'{CANARY}-first'})
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret('drop/box', {'k': f'{CANARY}-second'})
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.read_secret_version('drop/box', raise_on_deleted_version=True)


# ---- hostile input and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(('path', 'key', 'problem'), [
    ('agents/../platform/db', 'password', "'.' and '..' segments are not allowed"),
    ('agents/./research', 'api_key', "'.' and '..' segments are not allowed"),
    ('/agents/research', 'api_key', 'empty segment'),
    ('agents//research', 'api_key', 'empty segment'),
    ('agents/research/', 'api_key', 'empty segment'),
    ('agents/research\x00x', 'api_key', 'control or non-printable characters'),
    ('agents/research\nx', 'api_key', 'control or non-printable characters'),
    ('a' * 1025, 'api_key', 'it must be 1-1024 characters'),
    ('', 'api_key', 'it must be 1-1024 characters'),
    (PATH, 'k' * 100_000, 'invalid key'),
    (PATH, 'api\x00key', 'invalid key'),
    (PATH, '', 'invalid key'),
    (PATH, None, 'needs the key within the secret'),
], ids=['a dot-dot segment', 'a dot segment', 'a leading slash', 'a double slash', 'a trailing slash',
        'a NUL in the path', 'a newline in the path', 'an oversized path', 'an empty path', 'a huge key',
        'a NUL in the key', 'an empty key', 'no key'])
async def test_a_hostile_locator_is_refused_before_any_request(
        token_provider: Callable[..., VaultProvider], vault: VaultServer, scan: Scan,
        path: str, key: str | None, problem: str) -> None:
    provider = token_provider()
    vault.clear_requests()
    for call in (provider.get_secret(SecretLocator('vault', path, key)),
                 provider.rotate_secret(SecretLocator('vault', path, key), f'{CANARY}-new')):
        error = await scan.fails(SecretNotFound, call)
        assert problem in error.message
        assert len(str(error)) < 400 and '\x00' not in str(error) and '\n' not in str(error)
    assert vault.requests == []


async def test_a_locator_of_another_provider_is_misconfigured(token_provider: Callable[..., VaultProvider],
                                                              scan: Scan) -> None:
    await scan.fails(SecretProviderMisconfigured,
                     token_provider().get_secret(SecretLocator('kubernetes', 'default/creds', 'api_key')))


@pytest.mark.parametrize(('settings', 'named'), [
    ({'address': 'vault.example:8200'}, 'address'),
    ({'address': 'https://user:pw@/x'}, 'address'),
    ({'address': 'http://[::1'}, 'address'),
    ({'address': 'http://vault.example:99999'}, 'address'),
    ({'auth': 'token'}, 'exactly one of token and token_file'),
    ({'auth': 'token', 'token': SecretStr('t'), 'token_file': '/x'}, 'exactly one of token and token_file'),
    ({'auth': 'kubernetes'}, '(role)'),
    ({'auth': 'kubernetes', 'role': 'r', 'mount': 'secret/../sys'}, 'mount'),
    ({'auth': 'kubernetes', 'role': 'r', 'auth_mount': ''}, 'auth_mount'),
    ({'auth': 'kubernetes', 'role': 'r', 'namespace': 'team\x00a'}, 'namespace'),
    ({'auth': 'kubernetes', 'role': 'r', 'timeout_seconds': 0}, 'timeout_seconds'),
    ({'auth': 'kubernetes', 'role': 'r', 'timeout_seconds': float('nan')}, 'timeout_seconds'),
    ({'auth': 'kubernetes', 'role': 'r', 'ca_file': '/nonexistent/ca.pem'}, 'ca_file'),
], ids=['an address without a scheme', 'an address without a host', 'an unclosed IPv6 bracket',
        'a port out of range', 'token auth without a token',
        'token auth with two tokens', 'kubernetes auth without a role', 'a mount that climbs out',
        'an empty auth mount', 'a namespace with a NUL', 'a zero timeout', 'a NaN timeout', 'a missing CA file'])
def test_settings_that_can_never_work_fail_at_construction_naming_the_setting(
        settings: dict[str, Any], named: str, scan: Scan) -> None:
    values = {'address': 'https://vault.example:8200', **settings}
    error = scan.fails_now(SecretProviderMisconfigured, lambda: VaultProvider(VaultSettings(**values)))
    assert named in error.message
    assert 'pw' not in str(error)


def test_a_missing_hvac_names_the_extra_that_brings_it(monkeypatch: pytest.MonkeyPatch, scan: Scan) -> None:
    monkeypatch.setitem(sys.modules, 'hvac', None)  # what an install without agentgov[vault] looks like
    error = scan.fails_now(SecretProviderMisconfigured, lambda: VaultProvider(
        VaultSettings(address='https://vault.example:8200', role='agentgov-operator')))
    assert str(error) == "vault: the vault provider needs 'hvac': pip install 'agentgov[vault]'"
