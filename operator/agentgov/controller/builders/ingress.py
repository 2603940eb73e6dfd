"""The Ingress (networking.k8s.io/v1), only when ``spec.ingress.enabled``.

It routes the host to the Service (hence to the sidecar, never the agent). TLS uses the named
certificate Secret; with a cert-manager ``clusterIssuer`` and no Secret named, ``<agent>-tls``
is used so cert-manager's ingress-shim has somewhere to put the certificate it issues.
Annotations for ingress-nginx (other controllers ignore them):

- ``limit-rpm``: ``requestsPerMinute`` per client address (a per-caller limit still applies
  in the sidecar; this one sheds floods before they reach a pod);
- ``proxy-body-size``: the sidecar's ``maxBodyBytes``, so nginx's 1m default neither refuses
  bodies the sidecar accepts nor lets larger ones through;
- ``proxy-read-timeout`` / ``proxy-send-timeout``: the sidecar's upstream timeout, since model
  calls routinely outlast nginx's 60 s default.

Pure; no I/O.
"""

from __future__ import annotations

from typing import Final

from agentgov.api.bundle import PolicyBundle
from agentgov.controller.builders import service
from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_INGRESS, metadata, tls_secret_name, workload_name

API_VERSION = "networking.k8s.io/v1"
KIND = "Ingress"
NGINX: Final = "nginx.ingress.kubernetes.io/"
CLUSTER_ISSUER_ANNOTATION: Final = "cert-manager.io/cluster-issuer"


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def wanted(inputs: Inputs) -> bool:
    return inputs.spec.ingress.enabled


def nginx_size(size: int) -> str:
    """Bytes in nginx's size syntax: ``10m`` for 10 MiB, ``512k``, else plain bytes."""
    for unit, factor in (("m", 1024 * 1024), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def build(inputs: Inputs, bundle: PolicyBundle) -> Manifest:
    ingress = inputs.spec.ingress
    assert ingress.host is not None  # the CRD requires a host when enabled
    timeout = str(bundle.sidecar.upstream_timeout_seconds)
    annotations = {
        NGINX + "limit-rpm": str(ingress.requests_per_minute),
        NGINX + "proxy-body-size": nginx_size(bundle.sidecar.max_body_bytes),
        NGINX + "proxy-read-timeout": timeout,
        NGINX + "proxy-send-timeout": timeout,
    }
    spec: Manifest = {}
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.cluster_issuer:
        annotations[CLUSTER_ISSUER_ANNOTATION] = ingress.cluster_issuer
    if ingress.tls or ingress.cluster_issuer:
        secret = ingress.tls.secret_name if ingress.tls else tls_secret_name(inputs.name)
        spec["tls"] = [{"hosts": [ingress.host], "secretName": secret}]
    spec["rules"] = [
        {
            "host": ingress.host,
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": service.name(inputs), "port": {"name": service.PORT_NAME}}},
                    }
                ]
            },
        }
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_INGRESS, dict(sorted(annotations.items()))),
        "spec": spec,
    }
