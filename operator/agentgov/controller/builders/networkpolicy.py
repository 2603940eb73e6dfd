"""The NetworkPolicy isolating an agent's pods, when ``spec.networkPolicy.enabled`` (default).

Ingress: only TCP to the sidecar's inbound port, from anywhere (callers reach it through the
Service or the Ingress; the sidecar authenticates each one). The agent's own port and the
sidecar's egress port are closed to the network.

Egress, and what it does and does not promise:

- DNS: UDP and TCP 53 to the ``kube-dns`` pods in ``kube-system`` (the label CoreDNS keeps).
  A cluster resolving through NodeLocal DNSCache (169.254.20.10) needs that address in
  ``extraEgressCidrs``.
- The budget store: ``AGENTGOV_REDIS_PORT`` to pods matching ``AGENTGOV_REDIS_SELECTOR`` (in
  ``AGENTGOV_REDIS_NAMESPACE``, or in any namespace when that is unset).
- The upstreams the policies name (model endpoints, tool upstreams, region endpoints, the
  JWKS URL, budget webhooks) and the OpenTelemetry collector (``AGENTGOV_OTLP_ENDPOINT``). A NetworkPolicy selects addresses, not host names, and the
  addresses behind a name change under it (CDNs, cloud load balancers), so for a URL whose
  host is a name the honest rule is: **its port (443, 80 or the one written in the URL) to
  any address** (``0.0.0.0/0`` and ``::/0``), minus link-local addresses (``169.254.0.0/16``,
  ``fe80::/10``: the cloud instance-metadata endpoint, whose credentials an agent must not
  reach). So this policy narrows *ports*, not *hosts*: the pod can open no database, SMTP or
  other cluster port that no policy names, but the agent container (which shares the pod's
  network) could reach any host on those ports directly. Host-level control is the sidecar's:
  it forwards only to the upstreams in its bundle, and the agent is given only the sidecar's
  address. Where hosts must be enforced on the wire, use an FQDN-aware policy (Cilium
  ``toFQDNs``, Calico DNS policy) or an egress gateway beside this one.
- An upstream written as an IP literal (``https://10.0.3.7:8443``) gets exactly that address
  and port.
- ``spec.networkPolicy.extraEgressCidrs``: any port to those ranges, as the field says
  ("additional destinations"); it widens, it never narrows the rules above.

Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from agentgov.api.bundle import PolicyBundle
from agentgov.controller.builders.bundle import upstream_urls, url_ip, url_port
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_NETWORK, metadata, selector_labels, workload_name

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
DNS_PEER: Final = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
ANY_IPV4: Final = {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}
ANY_IPV6: Final = {"cidr": "::/0", "except": ["fe80::/10"]}


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def wanted(inputs: Inputs) -> bool:
    return inputs.spec.network_policy.enabled


def _tcp(ports: list[int]) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _extra_cidrs(inputs: Inputs) -> list[str]:
    """The extra CIDRs in canonical form (host bits cleared), duplicates dropped; the CRD's
    pattern admits strings such as ``999.1.1.1/40`` that the API server would refuse."""
    cidrs = []
    for index, text in enumerate(inputs.spec.network_policy.extra_egress_cidrs):
        try:
            cidrs.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise BuildError(f"spec.networkPolicy.extraEgressCidrs[{index}]", f"{text!r} is not a CIDR") from None
    return list(dict.fromkeys(cidrs))


def build(inputs: Inputs, bundle: PolicyBundle) -> Manifest:
    config = inputs.config
    redis_peer: Manifest = {"podSelector": {"matchLabels": config.redis_selector_labels}}
    redis_peer["namespaceSelector"] = (
        {"matchLabels": {"kubernetes.io/metadata.name": config.redis_namespace}} if config.redis_namespace else {}
    )
    egress: list[Manifest] = [
        {"to": [DNS_PEER], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [redis_peer], "ports": _tcp([config.redis_port])},
    ]

    by_name: set[int] = set()
    by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, set[int]] = {}
    for url in [*upstream_urls(bundle), *([inputs.config.otlp_endpoint] if inputs.config.otlp_endpoint else [])]:
        port, address = url_port(url), url_ip(url)
        if address is None:
            by_name.add(port)
        else:
            by_address.setdefault(address, set()).add(port)
    if by_name:
        egress.append({"to": [{"ipBlock": ANY_IPV4}, {"ipBlock": ANY_IPV6}], "ports": _tcp(sorted(by_name))})
    for address in sorted(by_address, key=lambda a: (a.version, int(a))):
        egress.append(
            {"to": [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}], "ports": _tcp(sorted(by_address[address]))}
        )
    extra = _extra_cidrs(inputs)
    if extra:
        egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in extra]})

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_NETWORK),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(inputs.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": _tcp([bundle.sidecar.inbound_port])}],
            "egress": egress,
        },
    }
