"""Start the operator: kopf with agentgov's handlers, a liveness endpoint and /metrics.

``agentgov operator`` calls ``run``. Several replicas may run: without ``--standalone`` kopf
peering (the ``KopfPeering``/``ClusterKopfPeering`` resources, installed with the chart) lets
one replica act while the others wait, so no work is done twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from agentgov.controller import handlers, metrics


def run(
    namespaces: Sequence[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    metrics_port: int | None,
) -> None:
    assert handlers.GROUP  # the import registers the handlers with kopf
    if metrics_port:
        start_http_server(metrics_port, registry=metrics.REGISTRY)
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=standalone,
            peering_name=peering,
            liveness_endpoint=liveness,
        )
    )
