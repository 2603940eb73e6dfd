"""Start the operator: kopf with agentgov's handlers, a liveness endpoint and /metrics.

``agentgov operator`` calls ``run``. Several replicas may run: without ``--standalone`` kopf
peering (the ``KopfPeering``/``ClusterKopfPeering`` resources, installed with the chart) lets
one replica act while the others wait, so no work is done twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from agentgov.controller import handlers, metrics
from agentgov.controller.config import OperatorConfig


class _QuietTimerTicks(logging.Filter):
    """Drop kopf's per-tick success line of the resync timer (one per agent every few seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timer 'agent_resync' succeeded")


def run(
    namespaces: Sequence[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    metrics_port: int | None,
) -> None:
    """``namespaces`` from the command line win over ``AGENTGOV_NAMESPACES``; none means all."""
    assert handlers.GROUP  # the import registers the handlers with kopf
    namespaces = list(namespaces) or list(OperatorConfig.from_env(os.environ).namespaces)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)  # timestamps and object names on stderr
    logging.getLogger("kopf.objects").addFilter(_QuietTimerTicks())
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
