"""Fuzzing the parsers a caller can reach (hypothesis): Authorization headers, JWS tokens, proxy
headers, forwarding chains, redaction and the audit-chain reader never raise, and never let a
forged identity through. Examples are bounded so the suite stays fast."""
from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgov.audit.chain import verify_lines
from agentgov.sidecar.auth import AuthPolicy, Identity, bearer_token, parse_jws, verify
from agentgov.sidecar.errors import AuthError
from agentgov.sidecar.headers import client_address, request_headers_for_agent, response_headers_for_client
from agentgov.sidecar.keys import parse_key_file
from agentgov.audit.redact import Redactor
from agentgov.sidecar.settings import parse_trusted_proxies
from sidecar_support import AUDIENCE, HMAC_SECRET, ISSUER, b64url, public_pem, rsa_key

# No example database: the fuzz tests leave no files behind in the repository.
FAST = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# For the strategies that build nested JSON: fewer, larger examples.
FEWER = settings(FAST, max_examples=50)
KEYS = parse_key_file(HMAC_SECRET, ['HS256']) + parse_key_file(public_pem(rsa_key('trusted')), ['RS256'])
POLICY = AuthPolicy(issuer=ISSUER, audiences=frozenset({AUDIENCE}), algorithms=frozenset({'HS256', 'RS256'}))
PROXIES = parse_trusted_proxies('10.0.0.0/8')
IDENTITY = Identity(user='alice', role='analyst', scopes=frozenset(), issuer=ISSUER, expires_at=0)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
header_values = st.dictionaries(
    st.sampled_from(['alg', 'kid', 'typ', 'crit', 'jku', 'jwk', 'x5u', 'x5c', 'enc', 'b64', 'zip']) | st.text(max_size=8),
    st.sampled_from(['HS256', 'RS256', 'none', 'ES256', 'EdDSA', 'HS512']) | json_values,
    max_size=5,
)
claim_values = st.dictionaries(
    st.sampled_from(['iss', 'aud', 'sub', 'exp', 'nbf', 'iat', 'role', 'scope', 'scopes', 'scp', 'act', 'team']),
    json_values, max_size=8,
)


@FAST
@given(st.one_of(st.none(), st.text(max_size=300), st.text(max_size=40).map(lambda t: 'Bearer ' + t)))
def test_any_authorization_header_gives_a_token_or_an_auth_error(header: str | None) -> None:
    result = bearer_token(header)
    assert isinstance(result, str | AuthError)


@FAST
@given(st.text(max_size=400))
def test_any_text_as_a_token_is_refused_without_raising(token: str) -> None:
    assert isinstance(verify(token, KEYS, POLICY, time.time()), AuthError)


@FEWER
@given(header_values, claim_values, st.binary(max_size=300))
def test_structured_but_unsigned_tokens_are_refused_without_raising(header: dict[str, object], payload: dict[str, object],
                                                                   signature: bytes) -> None:
    token = f'{b64url(json.dumps(header))}.{b64url(json.dumps(payload))}.{b64url(signature)}'
    parse_jws(token)
    result = verify(token, KEYS, POLICY, time.time())
    assert isinstance(result, AuthError)


@FAST
@given(st.lists(st.tuples(st.sampled_from(['X-Agentgov-User', 'x-agentgov-role', 'X-AGENTGOV-SCOPES', 'Connection',
                                           'X-Forwarded-For', 'Authorization', 'TE', 'Host', 'Accept']) |
                          st.from_regex(r'[A-Za-z][A-Za-z0-9-]{0,15}', fullmatch=True),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)), max_size=12),
       st.one_of(st.none(), st.ip_addresses().map(str), st.text(max_size=20)))
def test_any_request_headers_leave_exactly_the_sidecars_identity(headers: list[tuple[str, str]], peer: str | None) -> None:
    out = request_headers_for_agent(headers, peer=peer, trusted=PROXIES, identity=IDENTITY, execution_id='exe_1',
                                    request_id='req_1', scheme='http')
    users = [v for n, v in out if n.lower() == 'x-agentgov-user']
    assert users == ['alice']
    assert all(v == 'analyst' for n, v in out if n.lower() == 'x-agentgov-role')
    assert not any(n.lower() in ('authorization', 'te', 'connection', 'host') for n, _ in out)
    assert all('\r' not in v and '\n' not in v for _, v in out)
    response_headers_for_client(headers)


@FAST
@given(st.one_of(st.none(), st.ip_addresses().map(str), st.text(max_size=20)),
       st.lists(st.text(max_size=60) | st.ip_addresses().map(str), max_size=4))
def test_any_forwarding_chain_gives_the_peer_or_an_address_in_it(peer: str | None, chain: list[str]) -> None:
    client = client_address(peer, chain, PROXIES)
    assert client == peer or any(client in part for part in chain)


@FAST
@given(json_values)
def test_redaction_of_any_json_value_stays_json(value: object) -> None:
    json.dumps(Redactor(['a-known-secret-value']).value(value))


@FEWER
@given(st.lists(st.binary(max_size=80) | claim_values.map(lambda d: json.dumps(d).encode()), max_size=8),
       st.booleans())
def test_any_audit_file_content_is_checked_without_raising(lines: list[bytes], complete: bool) -> None:
    report = verify_lines(lines, complete=complete)
    # Without a head every problem is on a line of the file, and no line counts as two records.
    assert all(1 <= p.line <= len(lines) for p in report.problems)
    assert report.records <= len(lines)
