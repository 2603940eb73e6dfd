"""Header rules of the inbound proxy. Pure functions over (name, value) pairs; fuzz-tested.

- Hop-by-hop headers (RFC 9110 section 7.6.1: ``Connection`` and every header it names,
  plus ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
  ``Upgrade``, ``Proxy-Authenticate``, ``Proxy-Authorization``) never cross the proxy.
- Identity headers (``X-Agentgov-*``) are the sidecar's word to the agent: any copy a caller
  sends is dropped (case-insensitively), then the sidecar sets its own.
- ``X-Forwarded-For/-Proto/-Host/-Port/-Prefix`` are kept only when the peer is a trusted proxy
  (settings); ``Forwarded`` and ``X-Real-IP`` are always dropped. The agent gets an
  ``X-Forwarded-For`` ending with the peer, and the client address the sidecar believes.
- The caller's ``Authorization`` is not forwarded: the agent learns who called from the
  identity headers and never holds a caller's credential.

Identity values are percent-encoded outside printable ASCII (and ``%`` itself), so a user
name can never break a header line; agents percent-decode them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import quote

from agentgov.sidecar.auth import Identity
from agentgov.sidecar.settings import IPNetwork

HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
})
FORWARDING: Final = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix",
})
ALWAYS_DROPPED: Final = frozenset({"forwarded", "x-real-ip", "authorization", "host", "expect"})
IDENTITY_PREFIX: Final = "x-agentgov-"

USER: Final = "X-Agentgov-User"
ROLE: Final = "X-Agentgov-Role"
SCOPES: Final = "X-Agentgov-Scopes"
TEAM: Final = "X-Agentgov-Team"
EXECUTION_ID: Final = "X-Agentgov-Execution-Id"
REQUEST_ID: Final = "X-Agentgov-Request-Id"
CLIENT_IP: Final = "X-Agentgov-Client-Ip"

Headers = list[tuple[str, str]]


def connection_tokens(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop for this connection)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def _is_hop_by_hop(name: str, listed: frozenset[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered in listed


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if not address or not trusted:
        return False
    ip = _parse_ip(address)
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str | None:
    """The caller's address: the peer, or when the peer is a trusted proxy, the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy (aiohttp-remotes' rule)."""
    if not is_trusted(peer, trusted):
        return peer
    chain = [part.strip() for value in forwarded_for for part in value.split(",") if part.strip()]
    for hop in reversed(chain):
        ip = _parse_ip(hop)
        if ip is None:
            return peer  # a garbled chain is not believed
        if not is_trusted(str(ip), trusted):
            return str(ip)
    return peer


def encode_value(value: str) -> str:
    """Percent-encode anything but printable ASCII (and '%'): safe in any header line."""
    return quote(value, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def request_headers_for_agent(
    headers: Iterable[tuple[str, str]],
    *,
    peer: str | None,
    trusted: Sequence[IPNetwork],
    identity: Identity,
    execution_id: str,
    request_id: str,
    scheme: str,
) -> Headers:
    """The headers the agent receives: the caller's, cleaned, plus the sidecar's identity headers."""
    incoming = list(headers)
    listed = connection_tokens(incoming)
    from_proxy = is_trusted(peer, trusted)
    kept: Headers = []
    forwarded_for: list[str] = []
    host: str | None = None
    for name, value in incoming:
        lowered = name.lower()
        if lowered == "host":
            host = value
        if _is_hop_by_hop(lowered, listed) or lowered in ALWAYS_DROPPED or lowered.startswith(IDENTITY_PREFIX):
            continue
        if lowered in FORWARDING:
            if not from_proxy:
                continue
            if lowered == "x-forwarded-for":
                forwarded_for.append(value)
                continue
        kept.append((name, value))
    # The peer comes from the socket; anything that is not an address is left out, never echoed.
    peer_ip = _parse_ip(peer) if peer else None
    chain = ", ".join([*forwarded_for, *([str(peer_ip)] if peer_ip else [])])
    if chain:
        kept.append(("X-Forwarded-For", chain))
    names = {name.lower() for name, _ in kept}
    if "x-forwarded-proto" not in names:
        kept.append(("X-Forwarded-Proto", scheme))
    if host is not None and "x-forwarded-host" not in names:
        kept.append(("X-Forwarded-Host", encode_value(host)))
    client = client_address(peer, forwarded_for, trusted)
    kept.extend(identity_headers(identity, execution_id=execution_id, request_id=request_id, client_ip=client))
    return kept


def identity_headers(identity: Identity, *, execution_id: str, request_id: str, client_ip: str | None) -> Headers:
    out: Headers = [(USER, encode_value(identity.user))]
    if identity.role is not None:
        out.append((ROLE, encode_value(identity.role)))
    out.append((SCOPES, encode_value(" ".join(sorted(identity.scopes)))))
    if identity.team is not None:
        out.append((TEAM, encode_value(identity.team)))
    out.append((EXECUTION_ID, execution_id))
    out.append((REQUEST_ID, request_id))
    if client_ip:
        out.append((CLIENT_IP, encode_value(client_ip)))
    return out


def response_headers_for_client(headers: Iterable[tuple[str, str]]) -> Headers:
    """The agent's response headers minus hop-by-hop ones."""
    incoming = list(headers)
    listed = connection_tokens(incoming)
    return [(name, value) for name, value in incoming if not _is_hop_by_hop(name, listed)]
