"""Error codes of the sidecar (agentgov.sidecar.errors): stable, snake_case, one status each,
documented, and bodies that never carry more than code and message."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentgov.sidecar.errors import ERROR_CODES, AuthError, Forbidden, MissingToken

DOCS = (Path(__file__).resolve().parents[2] / 'docs' / 'sidecar.md').read_text(encoding='utf-8')


@pytest.mark.parametrize('code', sorted(ERROR_CODES), ids=lambda c: f'{c} is snake_case and documented')
def test_every_error_code_is_snake_case_and_documented(code: str) -> None:
    assert re.fullmatch(r'[a-z]+(_[a-z]+)*', code)
    assert f'`{code}`' in DOCS


def test_every_bad_token_reason_gives_the_same_body() -> None:
    bodies = {str(AuthError(reason, f'detail {reason}').body()) for reason in ('expired', 'signature', 'issuer', 'malformed')}
    assert bodies == {"{'error': {'code': 'invalid_token', 'message': 'a valid bearer token is required'}}"}
    assert MissingToken().body()['error']['code'] == 'missing_token'


def test_a_forbidden_error_carries_its_rule_code() -> None:
    error = Forbidden('scope_required', 'needs financial_data')
    assert (error.status, error.body()) == (403, {'error': {'code': 'scope_required', 'message': 'needs financial_data'}})
