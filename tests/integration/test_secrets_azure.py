"""The Azure Key Vault provider (agentgov.secrets.azure.AzureProvider) against a local Key Vault and
Entra ID (harness/azure_keyvault.py), through the real SecretClient and real azure-identity
credentials over HTTPS: reads, versioned reads, rotation (a new latest version), client secret
and workload identity sign-in, not found versus forbidden versus disabled, bad credentials, bad
settings, a hung or stopped vault; and the canary scan: no value, client secret or access token
in any exception's text or repr, or in any log record (at DEBUG) of those failures.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agentgov.secrets.azure import MAX_VALUE_BYTES, AzureProvider, classify_vault_error
from agentgov.secrets.base import (
    SecretError, SecretLocator, SecretNotFound, SecretPermissionDenied, SecretProviderMisconfigured,
    SecretProviderUnavailable,
)
from agentgov.secrets.config import AzureSettings
from harness.azure_keyvault import AUTHORITY, TENANT, VAULT_URL_TEMPLATE, AzureKeyVaultServer, make_tls

CANARY = 'canary-azure-value-51d7e0c3a8'
CANARY_ROTATED = 'canary-azure-rotated-c40e99b2f1'
CLIENT_SECRET = 'canary-client-secret-8f2b61d09e~Q'
WRONG_SECRET = 'canary-wrong-client-secret-07a3d5'
APP = '3f2a6a1e-0000-4000-8000-0000000000a1'
READER = '3f2a6a1e-0000-4000-8000-0000000000b2'
WORKLOAD = '3f2a6a1e-0000-4000-8000-0000000000c3'
OPERATOR_SA = 'system:serviceaccount:agentgov-system:agentgov-operator'
TIMEOUT = 2.0


@pytest.fixture(scope='module')
def keyvault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureKeyVaultServer]:
    server = AzureKeyVaultServer(tmp_path_factory.mktemp('azure-keyvault'))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def keyvault(keyvault_server: AzureKeyVaultServer, monkeypatch: pytest.MonkeyPatch) -> AzureKeyVaultServer:
    """The module's server, emptied, with vault 'research': APP may get and set, READER may get;
    WORKLOAD (get, set) trusts the operator's service account. The SDK's HTTPS goes through its
    proxy; no AZURE_* variable of this machine leaks in."""
    server = keyvault_server
    server.reset()
    server.create_vault('research')
    server.add_app(APP, secret=CLIENT_SECRET)
    server.add_app(READER, secret=CLIENT_SECRET)
    server.add_app(WORKLOAD, federated_subject=OPERATOR_SA)
    server.grant('research', APP, 'get', 'set')
    server.grant('research', READER, 'get')
    server.grant('research', WORKLOAD, 'get', 'set')
    for name in ('AZURE_TENANT_ID', 'AZURE_CLIENT_ID', 'AZURE_CLIENT_SECRET', 'AZURE_FEDERATED_TOKEN_FILE',
                 'AZURE_AUTHORITY_HOST', 'AZURE_TOKEN_CREDENTIALS', 'NO_PROXY', 'no_proxy'):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return server


def settings(server: AzureKeyVaultServer, **changes: Any) -> AzureSettings:
    base: dict[str, Any] = dict(vault_url_template=VAULT_URL_TEMPLATE, credential='client_secret', tenant_id=TENANT,
                                client_id=APP, client_secret=SecretStr(CLIENT_SECRET), authority=AUTHORITY,
                                ca_file=server.ca_file, timeout_seconds=TIMEOUT)
    return AzureSettings(**(base | changes))


@pytest.fixture()
async def make_provider(keyvault: AzureKeyVaultServer) -> AsyncIterator[Any]:
    made: list[AzureProvider] = []

    def make(**changes: Any) -> AzureProvider:
        provider = AzureProvider(settings(keyvault, **changes))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture()
def provider(make_provider: Any) -> AzureProvider:
    """Client secret sign-in as APP (get and set on 'research')."""
    return make_provider()


def locator(path: str) -> SecretLocator:
    return SecretLocator('azure', path)


@contextmanager
def debug_logs(caplog: pytest.LogCaptureFixture, server: AzureKeyVaultServer) -> Iterator[None]:
    """Capture every log record (the SDK's and MSAL's DEBUG ones included) of the block; none may
    hold a value, a client secret or an access token the server issued."""
    with caplog.at_level(logging.DEBUG):
        yield
    assert caplog.records, 'the block logged nothing: the scan would prove nothing'
    for canary in (CANARY, CANARY_ROTATED, CLIENT_SECRET, WRONG_SECRET, *server.issued_tokens):
        assert canary not in caplog.text


def assert_clean(error: SecretError, *canaries: str) -> None:
    """The error says nothing secret, in text or repr, and keeps no SDK exception as cause or context."""
    assert error.__cause__ is None and error.__context__ is None
    for canary in (CANARY, CANARY_ROTATED, CLIENT_SECRET, WRONG_SECRET, *canaries):
        assert canary not in str(error) and canary not in repr(error) and canary not in repr(error.args)


async def failure(server: AzureKeyVaultServer, call: Any, expected: type[SecretError]) -> SecretError:
    with pytest.raises(expected) as caught:
        await call
    assert_clean(caught.value, *server.issued_tokens)
    return caught.value


def token_file(server: AzureKeyVaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> Path:
    """What AKS's workload identity webhook gives a pod: the projected token and where it is."""
    path = tmp_path / 'azure-identity-token'
    path.write_text(token)
    monkeypatch.setenv('AZURE_FEDERATED_TOKEN_FILE', str(path))
    monkeypatch.setenv('AZURE_TENANT_ID', TENANT)
    monkeypatch.setenv('AZURE_CLIENT_ID', WORKLOAD)
    return path


# --- reads and rotation ---------------------------------------------------------------------------

async def test_a_secret_is_read_with_its_version(keyvault: AzureKeyVaultServer, provider: AzureProvider) -> None:
    version = keyvault.set_secret('research', 'db-url', CANARY)

    got = await provider.get_secret(locator('research/db-url'))

    assert (got.value, got.version) == (CANARY, version)
    assert CANARY not in repr(got) and CANARY not in repr(provider)


async def test_an_old_version_is_read_by_its_id_after_a_rotation(keyvault: AzureKeyVaultServer,
                                                                 provider: AzureProvider) -> None:
    first = keyvault.set_secret('research', 'db-url', CANARY)
    rotated = await provider.rotate_secret(locator('research/db-url'), CANARY_ROTATED)

    old = await provider.get_secret(locator('research/db-url'), version=first)
    latest = await provider.get_secret(locator('research/db-url'))

    assert (old.value, old.version) == (CANARY, first)
    assert latest == rotated and rotated.value == CANARY_ROTATED


async def test_a_rotation_makes_a_new_latest_version(keyvault: AzureKeyVaultServer, provider: AzureProvider) -> None:
    first = keyvault.set_secret('research', 'db-url', CANARY)

    rotated = await provider.rotate_secret(locator('research/db-url'), CANARY_ROTATED)

    assert keyvault.versions('research', 'db-url') == [(first, CANARY, True), (rotated.version, CANARY_ROTATED, True)]


async def test_workload_identity_signs_in_with_the_projected_service_account_token(
        keyvault: AzureKeyVaultServer, make_provider: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    token_file(keyvault, tmp_path, monkeypatch, keyvault.issue_service_account_token(OPERATOR_SA))
    workload = make_provider(credential='workload', tenant_id=None, client_id=None, client_secret=None)

    assert (await workload.get_secret(locator('research/db-url'))).value == CANARY
    assert (await workload.rotate_secret(locator('research/db-url'), CANARY_ROTATED)).value == CANARY_ROTATED
    assert {r.client_id for r in keyvault.requests() if r.method == 'PUT'} == {WORKLOAD}


async def test_the_default_credential_chain_signs_in_with_workload_identity_as_on_aks(
        keyvault: AzureKeyVaultServer, make_provider: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    token_file(keyvault, tmp_path, monkeypatch, keyvault.issue_service_account_token(OPERATOR_SA))
    # AKS's webhook also sets the authority host; DefaultAzureCredential hands its workload
    # identity credential that, not its own ``authority`` argument. Only that credential of the
    # chain is tried, so nothing probes for a managed identity.
    monkeypatch.setenv('AZURE_AUTHORITY_HOST', f'https://{AUTHORITY}')
    monkeypatch.setenv('AZURE_TOKEN_CREDENTIALS', 'WorkloadIdentityCredential')
    chain = make_provider(credential='default', tenant_id=None, client_id=None, client_secret=None)

    assert (await chain.get_secret(locator('research/db-url'))).value == CANARY
    assert {r.client_id for r in keyvault.requests() if r.path.endswith('/token')} == {WORKLOAD}


async def test_a_client_secret_file_is_read_again_when_the_mounted_secret_changes(
        keyvault: AzureKeyVaultServer, make_provider: Any, tmp_path: Path) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    secret_file = tmp_path / 'client-secret'
    secret_file.write_text(WRONG_SECRET + '\n')
    from_file = make_provider(client_secret=None, client_secret_file=str(secret_file))
    await failure(keyvault, from_file.get_secret(locator('research/db-url')), SecretPermissionDenied)

    secret_file.write_text(CLIENT_SECRET + '\n')  # the kubelet updates the mounted Secret

    assert (await from_file.get_secret(locator('research/db-url'))).value == CANARY


# --- not found, forbidden, disabled --------------------------------------------------------------

async def test_a_missing_secret_is_not_found(keyvault: AzureKeyVaultServer, provider: AzureProvider) -> None:
    error = await failure(keyvault, provider.get_secret(locator('research/absent')), SecretNotFound)

    assert str(error) == 'azure:research/absent: the secret does not exist'


async def test_a_missing_version_of_an_existing_secret_is_not_found_by_its_version(
        keyvault: AzureKeyVaultServer, provider: AzureProvider) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)

    error = await failure(keyvault, provider.get_secret(locator('research/db-url'), version='f' * 32), SecretNotFound)

    assert str(error) == f"azure:research/db-url: the secret has no version '{'f' * 32}'"


@pytest.mark.parametrize('version', ['../db-url', 'a b', 'v' * 65, '%2e%2e', 'x' * 10_000],
                         ids=['path-traversal', 'space', 'too-long', 'encoded-dots', 'huge'])
async def test_a_version_id_key_vault_cannot_hold_is_not_found_without_a_request(
        keyvault: AzureKeyVaultServer, provider: AzureProvider, version: str) -> None:
    error = await failure(keyvault, provider.get_secret(locator('research/db-url'), version=version), SecretNotFound)

    assert 'Key Vault version ids are letters and digits' in str(error) and len(str(error)) < 300
    assert keyvault.requests() == []


async def test_a_caller_without_a_role_is_permission_denied_whether_or_not_the_secret_exists(
        keyvault: AzureKeyVaultServer, provider: AzureProvider, caplog: pytest.LogCaptureFixture) -> None:
    keyvault.create_vault('finance')  # APP has no role on it
    keyvault.set_secret('finance', 'db-url', CANARY)

    with debug_logs(caplog, keyvault):
        for path in ('finance/db-url', 'finance/absent'):
            error = await failure(keyvault, provider.get_secret(locator(path)), SecretPermissionDenied)
            assert str(error) == f"azure:{path}: the vault refused the operator's identity (Forbidden/ForbiddenByRbac)"


async def test_a_reader_cannot_rotate_and_nothing_is_written(keyvault: AzureKeyVaultServer, make_provider: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    first = keyvault.set_secret('research', 'db-url', CANARY)
    reader = make_provider(client_id=READER)

    with debug_logs(caplog, keyvault):
        error = await failure(keyvault, reader.rotate_secret(locator('research/db-url'), CANARY_ROTATED),
                              SecretPermissionDenied)

    assert 'ForbiddenByRbac' in str(error)
    assert keyvault.versions('research', 'db-url') == [(first, CANARY, True)]


async def test_a_disabled_secret_is_not_found_saying_it_is_disabled(keyvault: AzureKeyVaultServer,
                                                                    provider: AzureProvider) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    keyvault.disable('research', 'db-url')

    error = await failure(keyvault, provider.get_secret(locator('research/db-url')), SecretNotFound)

    assert 'the secret is disabled' in str(error)


async def test_a_disabled_secret_can_be_rotated_to_an_enabled_version(keyvault: AzureKeyVaultServer,
                                                                      provider: AzureProvider) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    keyvault.disable('research', 'db-url')

    rotated = await provider.rotate_secret(locator('research/db-url'), CANARY_ROTATED)

    assert await provider.get_secret(locator('research/db-url')) == rotated


async def test_a_soft_deleted_secret_is_not_found_and_cannot_be_rotated(keyvault: AzureKeyVaultServer,
                                                                        provider: AzureProvider) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    keyvault.delete_secret('research', 'db-url')

    await failure(keyvault, provider.get_secret(locator('research/db-url')), SecretNotFound)
    error = await failure(keyvault, provider.rotate_secret(locator('research/db-url'), CANARY_ROTATED), SecretNotFound)

    assert 'create it first' in str(error)


async def test_rotating_a_missing_secret_is_not_found_and_creates_nothing(keyvault: AzureKeyVaultServer,
                                                                          provider: AzureProvider) -> None:
    error = await failure(keyvault, provider.rotate_secret(locator('research/absent'), CANARY_ROTATED), SecretNotFound)

    assert 'a rotation writes a new version of an existing secret' in str(error)
    assert [r.method for r in keyvault.requests() if r.host.startswith('research.')].count('PUT') == 0


async def test_an_oversized_new_value_is_refused_before_any_request(keyvault: AzureKeyVaultServer,
                                                                    provider: AzureProvider) -> None:
    huge = CANARY + 'x' * MAX_VALUE_BYTES

    with pytest.raises(SecretProviderMisconfigured) as caught:
        await provider.rotate_secret(locator('research/db-url'), huge)

    assert f'Key Vault holds at most {MAX_VALUE_BYTES}' in str(caught.value)
    assert_clean(caught.value, huge)
    assert keyvault.requests() == []


# --- credentials refused --------------------------------------------------------------------------

async def test_a_wrong_client_secret_is_permission_denied_naming_the_entra_code(
        keyvault: AzureKeyVaultServer, make_provider: Any, caplog: pytest.LogCaptureFixture) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    wrong = make_provider(client_secret=SecretStr(WRONG_SECRET))

    with debug_logs(caplog, keyvault):
        error = await failure(keyvault, wrong.get_secret(locator('research/db-url')), SecretPermissionDenied)

    assert str(error) == 'azure:research/db-url: could not authenticate to Entra ID (AADSTS7000215)'


async def test_an_unknown_client_id_is_permission_denied(keyvault: AzureKeyVaultServer, make_provider: Any) -> None:
    stranger = make_provider(client_id='3f2a6a1e-0000-4000-8000-0000000000ff')

    error = await failure(keyvault, stranger.get_secret(locator('research/db-url')), SecretPermissionDenied)

    assert str(error).endswith('could not authenticate to Entra ID (AADSTS700016)')


@pytest.mark.parametrize(('subject', 'expires_in', 'code'), [
    ('system:serviceaccount:default:intruder', 3600, 'AADSTS700213'),
    (OPERATOR_SA, -60, 'AADSTS700024'),
], ids=['untrusted-service-account', 'expired-token'])
async def test_a_service_account_token_entra_does_not_accept_is_permission_denied(
        keyvault: AzureKeyVaultServer, make_provider: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, subject: str, expires_in: int, code: str) -> None:
    token = keyvault.issue_service_account_token(subject, expires_in=expires_in)
    token_file(keyvault, tmp_path, monkeypatch, token)
    workload = make_provider(credential='workload', tenant_id=None, client_id=None, client_secret=None)

    with debug_logs(caplog, keyvault):
        error = await failure(keyvault, workload.get_secret(locator('research/db-url')), SecretPermissionDenied)

    assert str(error).endswith(f'could not authenticate to Entra ID ({code})')
    assert_clean(error, token)
    assert token not in caplog.text


async def test_a_missing_token_file_is_misconfigured(keyvault: AzureKeyVaultServer, make_provider: Any,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = token_file(keyvault, tmp_path, monkeypatch, 'unused')
    path.unlink()
    workload = make_provider(credential='workload', tenant_id=None, client_id=None, client_secret=None)

    error = await failure(keyvault, workload.get_secret(locator('research/db-url')), SecretProviderMisconfigured)

    assert 'cannot read the workload identity token file (FileNotFoundError)' in str(error)


async def test_entra_id_in_an_outage_is_unavailable(keyvault: AzureKeyVaultServer, make_provider: Any) -> None:
    keyvault.token_outage = 503

    error = await failure(keyvault, make_provider().get_secret(locator('research/db-url')), SecretProviderUnavailable)

    assert 'Entra ID' in str(error) and '503' in str(error)


async def test_a_tenant_other_than_the_vaults_is_permission_denied(keyvault: AzureKeyVaultServer,
                                                                   make_provider: Any) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    elsewhere = make_provider(tenant_id='0b7e0c55-0000-4000-8000-00000000beef')

    error = await failure(keyvault, elsewhere.get_secret(locator('research/db-url')), SecretPermissionDenied)

    assert 'could not authenticate to Entra ID' in str(error)
    assert not [r for r in keyvault.requests() if r.path.endswith('/token')]  # the SDK refused before asking


def test_workload_identity_without_its_environment_is_misconfigured(keyvault: AzureKeyVaultServer) -> None:
    with pytest.raises(SecretProviderMisconfigured) as caught:
        AzureProvider(settings(keyvault, credential='workload', tenant_id=None, client_id=None, client_secret=None))

    assert 'AZURE_FEDERATED_TOKEN_FILE' in str(caught.value) and str(caught.value).startswith('azure: ')


async def test_a_challenge_naming_another_resource_gets_no_token(keyvault: AzureKeyVaultServer,
                                                                 make_provider: Any) -> None:
    # A vault no other test used: the SDK caches a vault's challenge per host for the process.
    keyvault.create_vault('impostor')
    keyvault.challenge_resource = 'https://vault.elsewhere.test'

    error = await failure(keyvault, make_provider().get_secret(locator('impostor/db-url')), SecretProviderMisconfigured)

    assert 'challenge does not match the vault URL' in str(error)
    assert not [r for r in keyvault.requests() if r.path.endswith('/token')]


# --- settings and locators ------------------------------------------------------------------------

@pytest.mark.parametrize(('changes', 'says'), [
    ({'tenant_id': None}, 'needs tenant_id and client_id'),
    ({'client_secret': None}, 'exactly one of client_secret and client_secret_file'),
    ({'client_secret_file': 'client-secret'}, 'exactly one of client_secret and client_secret_file'),
    ({'ca_file': 'no/such/ca.pem'}, 'the CA file no/such/ca.pem does not exist'),
    ({'vault_url_template': 'http://{vault}.vault.agentgov.test'}, 'an https URL with a {vault} placeholder'),
    ({'client_secret': None, 'client_secret_file': 'no/such/secret'}, 'cannot read the client secret file no/such/secret'),
], ids=['no-tenant', 'no-secret', 'secret-and-file', 'missing-ca-file', 'plain-http', 'missing-secret-file'])
def test_unusable_settings_are_misconfigured_when_the_provider_is_built(
        keyvault: AzureKeyVaultServer, changes: dict[str, Any], says: str) -> None:
    with pytest.raises(SecretProviderMisconfigured) as caught:
        AzureProvider(settings(keyvault, **changes))

    assert says in str(caught.value)
    assert_clean(caught.value)


def test_an_empty_client_secret_file_is_misconfigured(keyvault: AzureKeyVaultServer, tmp_path: Path) -> None:
    (tmp_path / 'client-secret').write_text('\n')

    with pytest.raises(SecretProviderMisconfigured) as caught:
        AzureProvider(settings(keyvault, client_secret=None, client_secret_file=str(tmp_path / 'client-secret')))

    assert str(caught.value).endswith('client-secret is empty')


@pytest.mark.parametrize(('bad', 'says'), [
    (SecretLocator('aws', 'research/db-url'), 'a aws locator was given to the azure provider'),
    (SecretLocator('azure', 'research/db-url', 'password'), 'has no keys'),
    (SecretLocator('azure', 'db-url'), 'expected <vault name>/<secret name>'),
    (SecretLocator('azure', 'evil.example/db-url'), 'is not a Key Vault name'),
    (SecretLocator('azure', 'attacker.test#/db-url'), 'is not a Key Vault name'),
    (SecretLocator('azure', 'ab/db-url'), 'is not a Key Vault name'),
    (SecretLocator('azure', 'research/db_url'), 'is not a Key Vault secret name'),
    (SecretLocator('azure', 'research/db-url/extra'), 'is not a Key Vault secret name'),
    (SecretLocator('azure', 'research/' + 'a' * 128), 'is not a Key Vault secret name'),
    (SecretLocator('azure', 'research/' + 'a' * 100_000), 'is not a Key Vault secret name'),
], ids=['another-providers-locator', 'a-key', 'no-vault', 'vault-with-a-dot', 'vault-with-url-syntax',
        'vault-too-short', 'underscore-in-name', 'extra-segment', 'name-too-long', 'huge-name'])
async def test_a_locator_the_provider_cannot_serve_is_misconfigured_without_a_request(
        keyvault: AzureKeyVaultServer, provider: AzureProvider, bad: SecretLocator, says: str) -> None:
    for call in (provider.get_secret(bad), provider.rotate_secret(bad, CANARY_ROTATED)):
        error = await failure(keyvault, call, SecretProviderMisconfigured)
        assert says in str(error) and len(str(error)) < 400

    assert keyvault.requests() == []


# --- the vault down -------------------------------------------------------------------------------

async def test_a_hung_vault_is_unavailable_within_two_attempts_of_the_timeout(
        keyvault: AzureKeyVaultServer, make_provider: Any, caplog: pytest.LogCaptureFixture) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    timeout = 0.5
    hung = make_provider(timeout_seconds=timeout)
    keyvault.pause()
    try:
        with debug_logs(caplog, keyvault):
            started = time.monotonic()
            error = await failure(keyvault, hung.get_secret(locator('research/db-url')), SecretProviderUnavailable)
            elapsed = time.monotonic() - started
    finally:
        keyvault.resume()

    # Whichever request hangs first (the vault's challenge, or Entra ID's when the SDK has the
    # challenge cached), it is two attempts of one read timeout, without a backoff in between;
    # 2 s of slack for a loaded machine. At least one timeout: it waited, it did not fail fast.
    assert 'could not reach' in str(error) and 'Timeout' in str(error)
    assert timeout <= elapsed < 2 * timeout + 2


async def test_a_stopped_vault_is_unavailable_and_a_restarted_one_serves_again(
        keyvault: AzureKeyVaultServer, provider: AzureProvider) -> None:
    keyvault.set_secret('research', 'db-url', CANARY)
    assert (await provider.get_secret(locator('research/db-url'))).value == CANARY
    keyvault.stop_listening()
    try:
        error = await failure(keyvault, provider.get_secret(locator('research/db-url')), SecretProviderUnavailable)
    finally:
        keyvault.start_listening()

    assert 'could not reach the vault (ServiceRequestError)' in str(error)
    assert (await provider.get_secret(locator('research/db-url'))).value == CANARY


async def test_a_vault_name_that_resolves_nowhere_is_unavailable(keyvault: AzureKeyVaultServer,
                                                                 provider: AzureProvider) -> None:
    error = await failure(keyvault, provider.get_secret(locator('nosuchvault/db-url')), SecretProviderUnavailable)

    assert str(error) == 'azure:nosuchvault/db-url: could not reach the vault (ServiceRequestError)'


async def test_a_ca_that_did_not_sign_the_vaults_certificate_is_misconfigured(
        keyvault: AzureKeyVaultServer, make_provider: Any, tmp_path: Path) -> None:
    other_ca = make_tls(tmp_path / 'other', ['elsewhere.test']).ca_file
    distrusting = make_provider(ca_file=str(other_ca))

    error = await failure(keyvault, distrusting.get_secret(locator('research/db-url')), SecretProviderMisconfigured)

    assert 'TLS with' in str(error) and 'check ca_file' in str(error)


# --- the error table ------------------------------------------------------------------------------

@pytest.mark.parametrize(('status', 'code', 'inner', 'kind'), [
    (404, 'SecretNotFound', '', SecretNotFound),
    (403, 'Forbidden', 'SecretDisabled', SecretNotFound),
    (403, 'Forbidden', 'ForbiddenByRbac', SecretPermissionDenied),
    (403, 'Forbidden', 'ForbiddenByFirewall', SecretPermissionDenied),
    (403, 'Forbidden', 'AccessDenied', SecretPermissionDenied),
    (401, 'Unauthorized', '', SecretPermissionDenied),
    (409, 'Conflict', 'ObjectIsDeletedButRecoverable', SecretNotFound),
    (429, 'Throttled', '', SecretProviderUnavailable),
    (503, 'ServiceUnavailable', '', SecretProviderUnavailable),
    (400, 'BadParameter', '', SecretProviderMisconfigured),
], ids=['missing-is-not-found', 'disabled-is-not-found', 'rbac-is-denied', 'firewall-is-denied',
        'access-policy-is-denied', 'token-rejected-is-denied', 'soft-deleted-is-not-found',
        'throttled-is-unavailable', '5xx-is-unavailable', 'bad-parameter-is-misconfigured'])
def test_each_key_vault_error_means_one_provider_error(status: int, code: str, inner: str,
                                                       kind: type[SecretError]) -> None:
    assert classify_vault_error(status, code, inner)[0] is kind


def test_without_the_azure_sdk_building_the_provider_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'azure.identity', None)  # what an install without agentgov[azure] has

    with pytest.raises(SecretProviderMisconfigured) as caught:
        AzureProvider(AzureSettings())

    assert str(caught.value) == "azure: the azure provider needs 'azure.identity': pip install 'agentgov[azure]'"
