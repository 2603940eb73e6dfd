"""The secret providers' contract (``agentgov.secrets.base``): locators, values, errors, extras.

Pure: no provider, no I/O. What is checked is what every provider and every caller relies on:
a locator prints as ``provider:path#key``; a value never prints; each error has its stable code,
names the provider and locator, and holds no value; a missing SDK names the pip extra.
"""
from __future__ import annotations

import pickle
import re
import sys
import types

import pytest

from agentgov.secrets.base import (
    EXTRAS,
    SecretError,
    SecretLocator,
    SecretNotFound,
    SecretPermissionDenied,
    SecretProvider,
    SecretProviderMisconfigured,
    SecretProviderUnavailable,
    SecretValue,
    generate_value,
    require_extra,
)

CANARY = 'canary-31c9b2-never-shown'


@pytest.mark.parametrize(('locator', 'text'), [
    (SecretLocator('vault', 'agents/research', 'api_key'), 'vault:agents/research#api_key'),
    (SecretLocator('kubernetes', 'default/model-keys', 'openai'), 'kubernetes:default/model-keys#openai'),
    (SecretLocator('aws', 'prod/agents/db'), 'aws:prod/agents/db'),
    (SecretLocator('azure', 'agentgov-kv/openai-key'), 'azure:agentgov-kv/openai-key'),
    (SecretLocator('aws', 'prod/db', ''), 'aws:prod/db#'),
], ids=['a vault key', 'a kubernetes key', 'a whole aws secret', 'an azure secret', 'an empty key is still shown'])
def test_a_locator_prints_as_provider_path_and_key(locator: SecretLocator, text: str) -> None:
    assert str(locator) == text


def test_a_locator_is_a_hashable_value() -> None:
    assert SecretLocator('vault', 'a', 'k') == SecretLocator('vault', 'a', 'k')
    assert len({SecretLocator('vault', 'a', 'k'), SecretLocator('vault', 'a', 'k'), SecretLocator('vault', 'a')}) == 2
    with pytest.raises(AttributeError):
        SecretLocator('vault', 'a').path = 'b'  # type: ignore[misc]


@pytest.mark.parametrize('render', [str, repr, format, lambda v: f'{v!s} {v!r}', lambda v: str([v]), lambda v: str({'v': v})],
                         ids=['str', 'repr', 'format', 'an f-string', 'inside a list', 'inside a dict'])
def test_a_value_never_shows_in_its_text(render: object) -> None:
    value = SecretValue(CANARY, '7')
    text = render(value)  # type: ignore[operator]
    assert CANARY not in text
    assert '7' in text


def test_a_value_compares_by_value_and_version() -> None:
    assert SecretValue('a', '1') == SecretValue('a', '1')
    assert SecretValue('a', '1') != SecretValue('a', '2')
    assert SecretValue('a', '1') != SecretValue('b', '1')


@pytest.mark.parametrize(('kind', 'code'), [
    (SecretNotFound, 'not_found'),
    (SecretPermissionDenied, 'permission_denied'),
    (SecretProviderUnavailable, 'provider_unavailable'),
    (SecretProviderMisconfigured, 'provider_misconfigured'),
], ids=['not found', 'permission denied', 'unavailable', 'misconfigured'])
def test_each_error_has_its_stable_code_and_names_provider_and_locator(kind: type[SecretError], code: str) -> None:
    locator = SecretLocator('vault', 'agents/research', 'api_key')
    error = kind(locator, 'what went wrong')
    assert error.code == code
    assert isinstance(error, SecretError)
    assert (error.provider, error.locator, error.message) == ('vault', locator, 'what went wrong')
    assert str(error) == 'vault:agents/research#api_key: what went wrong'


def test_the_four_errors_are_distinct_so_callers_can_tell_them_apart() -> None:
    kinds = [SecretNotFound, SecretPermissionDenied, SecretProviderUnavailable, SecretProviderMisconfigured]
    for kind in kinds:
        others = [k for k in kinds if k is not kind]
        assert not any(issubclass(kind, other) for other in others)
    assert len({k.code for k in kinds}) == 4


@pytest.mark.parametrize(('provider', 'text'), [('aws', 'aws: bad region'), (None, 'secrets: bad region')],
                         ids=['named by the provider', 'named generically without one'])
def test_an_error_without_a_locator_names_the_provider_or_the_secrets_layer(provider: str | None, text: str) -> None:
    error = SecretProviderMisconfigured(None, 'bad region', provider=provider)  # type: ignore[arg-type]
    assert (str(error), error.provider, error.locator) == (text, provider, None)


def test_the_locators_provider_wins_over_the_one_given() -> None:
    error = SecretNotFound(SecretLocator('azure', 'kv/name'), 'gone', provider='aws')
    assert error.provider == 'azure'


def test_a_missing_sdk_names_the_pip_extra_that_brings_it() -> None:
    with pytest.raises(SecretProviderMisconfigured) as info:
        require_extra('agentgov_no_such_module', 'vault')
    assert str(info.value) == "vault: the vault provider needs 'agentgov_no_such_module': pip install 'agentgov[vault]'"
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize('provider', ['vault', 'aws', 'azure'])
def test_every_provider_with_an_sdk_has_an_extra_named_in_pyproject(provider: str) -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / 'pyproject.toml').read_text())
    extras = pyproject['project']['optional-dependencies']
    assert EXTRAS[provider] in extras  # type: ignore[index]


def test_an_sdk_that_is_installed_is_returned_as_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType('agentgov_fake_sdk')
    monkeypatch.setitem(sys.modules, 'agentgov_fake_sdk', module)
    assert require_extra('agentgov_fake_sdk', 'aws') is module


def test_a_blocked_sdk_is_reported_like_a_missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, 'agentgov_blocked_sdk', None)  # import raises ImportError
    with pytest.raises(SecretProviderMisconfigured, match=re.escape("pip install 'agentgov[azure]'")):
        require_extra('agentgov_blocked_sdk', 'azure')


def test_generated_values_are_url_safe_random_and_of_the_asked_strength() -> None:
    values = {generate_value() for _ in range(200)}
    assert len(values) == 200
    assert all(re.fullmatch(r'[A-Za-z0-9_-]{43}', v) for v in values)  # 32 bytes of entropy
    assert len(generate_value(64)) == 86


def test_a_value_survives_pickling_and_still_never_shows() -> None:
    copy = pickle.loads(pickle.dumps(SecretValue(CANARY, '1')))
    assert copy == SecretValue(CANARY, '1')
    assert CANARY not in repr(copy) and CANARY not in str(copy)


def test_the_protocol_is_checked_at_runtime_by_its_methods() -> None:
    class Complete:
        kind = 'vault'

        async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue: ...
        async def rotate_secret(self, locator: SecretLocator, new_value: str) -> SecretValue: ...
        async def close(self) -> None: ...

    class NoRotation:
        kind = 'vault'

        async def get_secret(self, locator: SecretLocator, version: str | None = None) -> SecretValue: ...
        async def close(self) -> None: ...

    assert isinstance(Complete(), SecretProvider)
    assert not isinstance(NoRotation(), SecretProvider)


@pytest.mark.parametrize("error_type", [SecretNotFound, SecretPermissionDenied, SecretProviderUnavailable, SecretProviderMisconfigured])
def test_a_secret_error_survives_pickling_with_its_type_locator_and_message(error_type: type[SecretError]) -> None:
    error = error_type(SecretLocator("vault", "agents/research", "api-key"), "permission denied")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_type and copy.locator == error.locator and str(copy) == str(error)
    bare = pickle.loads(pickle.dumps(error_type(None, "no address", provider="aws")))
    assert bare.provider == "aws" and str(bare) == "aws: no address"
