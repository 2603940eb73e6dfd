"""Proxy header rules (agentgov.sidecar.headers): RFC 9110 hop-by-hop headers, identity headers the
caller cannot forge, X-Forwarded-* only from trusted proxies, and safe encoding of identity values."""
from __future__ import annotations

import pytest

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.headers import (
    client_address, encode_value, request_headers_for_agent, response_headers_for_client,
)
from agentgov.sidecar.settings import parse_trusted_proxies
from sidecar_support import ISSUER

ALICE = Identity(user='alice', role='analyst', scopes=frozenset({'b', 'a'}), issuer=ISSUER, expires_at=0, team='research')
PROXIES = parse_trusted_proxies('10.0.0.0/8, fd00::/8')


def to_agent(headers: list[tuple[str, str]], peer: str = '192.0.2.10', identity: Identity = ALICE) -> list[tuple[str, str]]:
    return request_headers_for_agent(headers, peer=peer, trusted=PROXIES, identity=identity, execution_id='exe_1',
                                     request_id='req_1', scheme='http')


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [n.lower() for n, _ in headers]


@pytest.mark.parametrize('header', [
    'Connection', 'Keep-Alive', 'Proxy-Connection', 'TE', 'Trailer', 'Transfer-Encoding', 'Upgrade',
    'Proxy-Authorization', 'Proxy-Authenticate',
], ids=lambda h: f'{h} is not forwarded')
def test_hop_by_hop_headers_do_not_cross_the_proxy(header: str) -> None:
    assert header.lower() not in names(to_agent([(header, 'x'), ('Accept', '*/*')]))
    assert header.lower() not in names(response_headers_for_client([(header, 'x'), ('Content-Type', 'text/plain')]))


def test_headers_named_in_connection_are_hop_by_hop_too() -> None:
    out = to_agent([('Connection', 'close, X-Secret-Hop , x-other'), ('X-Secret-Hop', '1'), ('X-Other', '2'),
                    ('X-Kept', '3')])
    assert 'x-secret-hop' not in names(out) and 'x-other' not in names(out) and ('X-Kept', '3') in out
    assert response_headers_for_client([('Connection', 'X-Drop'), ('x-drop', '1'), ('ETag', 'v1')]) == [('ETag', 'v1')]


@pytest.mark.parametrize('forged', [
    'X-Agentgov-User', 'x-agentgov-user', 'X-AGENTGOV-ROLE', 'X-Agentgov-Scopes', 'X-Agentgov-Execution-Id',
    'X-Agentgov-Team', 'X-Agentgov-Anything-New',
], ids=lambda h: f'an incoming {h} is dropped')
def test_identity_headers_from_the_caller_are_dropped_whatever_their_case(forged: str) -> None:
    out = to_agent([(forged, 'admin')])
    assert ('admin' not in [v for n, v in out if n.lower() == forged.lower()])


def test_the_agent_gets_the_sidecars_identity_headers_once() -> None:
    out = dict(to_agent([('X-Agentgov-User', 'mallory'), ('X-Agentgov-Role', 'admin')]))
    assert out['X-Agentgov-User'] == 'alice'
    assert out['X-Agentgov-Role'] == 'analyst'
    assert out['X-Agentgov-Scopes'] == 'a b'
    assert out['X-Agentgov-Team'] == 'research'
    assert out['X-Agentgov-Execution-Id'] == 'exe_1'
    assert [n for n in names(to_agent([('x-agentgov-user', 'm')])) if n == 'x-agentgov-user'] == ['x-agentgov-user']


def test_the_callers_credentials_and_host_are_not_forwarded() -> None:
    out = to_agent([('Authorization', 'Bearer abc'), ('Host', 'agents.example.com'), ('Forwarded', 'for=1.2.3.4'),
                    ('X-Real-IP', '1.2.3.4')])
    assert not {'authorization', 'host', 'forwarded', 'x-real-ip'} & set(names(out))
    assert ('X-Forwarded-Host', 'agents.example.com') in out


def test_forwarding_headers_from_an_untrusted_peer_are_replaced() -> None:
    out = to_agent([('X-Forwarded-For', '6.6.6.6'), ('X-Forwarded-Proto', 'https'), ('X-Forwarded-Host', 'evil')],
                   peer='192.0.2.10')
    assert ('X-Forwarded-For', '192.0.2.10') in out
    assert ('X-Forwarded-Proto', 'http') in out
    assert dict(out)['X-Agentgov-Client-Ip'] == '192.0.2.10'
    assert 'evil' not in dict(out).values()


def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() -> None:
    out = to_agent([('X-Forwarded-For', '203.0.113.5, 10.1.1.1'), ('X-Forwarded-Proto', 'https')], peer='10.0.0.2')
    assert ('X-Forwarded-For', '203.0.113.5, 10.1.1.1, 10.0.0.2') in out
    assert ('X-Forwarded-Proto', 'https') in out
    assert dict(out)['X-Agentgov-Client-Ip'] == '203.0.113.5'


@pytest.mark.parametrize('peer, chain, client', [
    ('192.0.2.1', ['6.6.6.6'], '192.0.2.1'),
    ('10.0.0.1', ['203.0.113.5'], '203.0.113.5'),
    ('10.0.0.1', ['6.6.6.6, 203.0.113.5, 10.0.0.9'], '203.0.113.5'),
    ('10.0.0.1', ['10.0.0.8, 10.0.0.9'], '10.0.0.1'),
    ('10.0.0.1', ['not-an-ip'], '10.0.0.1'),
    ('10.0.0.1', [], '10.0.0.1'),
    ('fd00::1', ['2001:db8::7'], '2001:db8::7'),
    ('10.0.0.1', ['203.0.113.5:4431'], '203.0.113.5'),
    (None, ['1.2.3.4'], None),
], ids=['an untrusted peer is the client whatever it claims', 'a trusted proxy names the client',
        'the right-most untrusted hop is the client, spoofed entries to its left are ignored',
        'a chain of trusted proxies only leaves the peer', 'a garbled chain is not believed',
        'no chain leaves the peer', 'IPv6 proxies and clients', 'an entry with a port', 'no peer at all'])
def test_client_address(peer: str | None, chain: list[str], client: str | None) -> None:
    assert client_address(peer, chain, PROXIES) == client


@pytest.mark.parametrize('value, encoded', [
    ('alice', 'alice'), ('alice@example.com', 'alice@example.com'), ('José', 'Jos%C3%A9'),
    ('a\r\nX-Evil: 1', 'a%0D%0AX-Evil: 1'), ('100%', '100%25'),
], ids=['plain ASCII is unchanged', 'an email is unchanged', 'non-ASCII is percent-encoded',
        'CR and LF cannot start a new header', 'a percent sign is escaped'])
def test_identity_values_are_safe_in_a_header_line(value: str, encoded: str) -> None:
    assert encode_value(value) == encoded


def test_a_peer_that_is_not_an_address_is_never_echoed_raw() -> None:
    out = to_agent([], peer='\r\nX-Evil: 1')
    assert 'x-forwarded-for' not in names(out)
    assert all('\r' not in v and '\n' not in v for _, v in out)
