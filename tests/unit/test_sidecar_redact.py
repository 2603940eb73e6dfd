"""Redaction (agentgov.audit.redact): credentials by key name at any depth and by value pattern
anywhere, the mounted secrets' values, exception messages, log records; counters stay readable."""
from __future__ import annotations

import logging
import sys

import pytest

from agentgov.audit.record import AuditEvent, AuditPolicy, build_record, canonical
from agentgov.audit.redact import REDACTED, RedactingFilter, Redactor, is_sensitive_key
from sidecar_support import secret_fragments, seeded_secrets

SEEDED = seeded_secrets()
REDACTOR = Redactor([SEEDED['mounted secret value']])


@pytest.mark.parametrize('kind', list(SEEDED), ids=[f'a {k} inside free text is replaced' for k in SEEDED])
def test_a_seeded_secret_in_text_is_replaced(kind: str) -> None:
    text = f'upstream said: failed with {SEEDED[kind]} (retrying)'
    redacted = REDACTOR.text(text)
    assert REDACTED in redacted
    for fragment in secret_fragments(SEEDED[kind]):
        assert fragment not in redacted
    assert redacted.startswith('upstream said: failed with')


@pytest.mark.parametrize('key', [
    'password', 'Password', 'api_key', 'apiKey', 'X-Api-Key', 'token', 'access_token', 'refresh-token', 'secret',
    'client_secret', 'clientSecret', 'Authorization', 'cookie', 'Set-Cookie', 'private_key', 'privateKey',
    'aws_secret_access_key', 'db_passwd', 'session',
], ids=lambda k: f'key {k} is sensitive')
def test_credential_key_names_are_recognised(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize('key', [
    'max_tokens', 'prompt_tokens', 'total_tokens', 'author', 'user', 'status', 'duration_ms', 'kid', 'jti', 'role',
    'keyboard', 'monkey',
], ids=lambda k: f'key {k} stays readable')
def test_ordinary_key_names_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)


def test_sensitive_keys_are_redacted_at_any_depth_whatever_their_value() -> None:
    value = {
        'user': 'alice',
        'config': {'nested': [{'password': 12345, 'name': 'db'}, {'headers': {'Authorization': ['x', 'y']}}]},
        'usage': {'max_tokens': 100},
        'clientSecret': {'even': 'objects'},
    }
    assert REDACTOR.value(value) == {
        'user': 'alice',
        'config': {'nested': [{'password': REDACTED, 'name': 'db'}, {'headers': {'Authorization': REDACTED}}]},
        'usage': {'max_tokens': 100},
        'clientSecret': REDACTED,
    }


@pytest.mark.parametrize('text, expected', [
    ('GET /v1/run?api_key=abc123&x=1', f'GET /v1/run?api_key={REDACTED}&x=1'),
    ('password: "hunter2"', f'password: {REDACTED}'),
    ('nothing to see here', 'nothing to see here'),
    ('sk-short', 'sk-short'),
], ids=['a credential in a query string', 'a quoted assignment', 'plain text is unchanged',
        'a short sk- word is not a key'])
def test_assignments_of_credentials_in_text_are_redacted(text: str, expected: str) -> None:
    assert REDACTOR.text(text) == expected


def test_an_exception_message_is_redacted_wherever_it_lands() -> None:
    try:
        raise ConnectionError(f'cannot reach https://api.example.com with {SEEDED["openai key"]}')
    except ConnectionError as e:
        assert SEEDED['openai key'] not in REDACTOR.value({'error': str(e)})['error']  # type: ignore[index]


def test_an_audit_record_carries_no_seeded_secret() -> None:
    event = AuditEvent(
        'authentication', 'failure', 'POST', f'/v1/run?token={SEEDED["jwt"]}', 1_800_000_000.0,
        user=SEEDED['vault token'], user_agent=f'curl {SEEDED["bearer"]}',
        metadata={'detail': dict(SEEDED), 'headers': {'X-Api-Key': 'k', 'authorization': SEEDED['bearer']}},
    )
    line = canonical(build_record(event, seq=0, prev_hash='sha256:' + '0' * 64, policy=AuditPolicy(redactor=REDACTOR)))
    for value in SEEDED.values():
        for fragment in secret_fragments(value):
            assert fragment.encode() not in line


def test_the_logging_filter_redacts_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord('agentgov', logging.ERROR, __file__, 1, 'failed with %s', (SEEDED['aws access key id'],),
                               None)
    try:
        raise RuntimeError(SEEDED['vault token'])
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter(REDACTOR).filter(record)
    text = record.getMessage()
    assert SEEDED['aws access key id'] not in text and SEEDED['vault token'] not in text
    assert 'RuntimeError' in text and record.exc_info is None


def test_known_secrets_shorter_than_eight_characters_are_not_searched_for() -> None:
    assert Redactor(['abc']).text('abcabc') == 'abcabc'


@pytest.mark.parametrize('text', [
    'max_tokens: 100', 'tokens:create: allowed for the admin role', 'auth.leewaySeconds: Input should be an integer',
    'completion_tokens=42',
], ids=['a token counter', 'an action name', 'a field path under auth', 'a counter assignment'])
def test_names_that_only_contain_a_credential_word_are_not_treated_as_assignments(text: str) -> None:
    assert REDACTOR.text(text) == text
