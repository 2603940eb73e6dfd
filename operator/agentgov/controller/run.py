"""Start the operator: kopf with agentgov's handlers, a liveness endpoint and /metrics.

``agentgov operator`` calls ``run``. Several replicas may run: without ``--standalone`` kopf
peering (the ``KopfPeering``/``ClusterKopfPeering`` resources, installed with the chart) lets
one replica act while the others wait, so no work is done twice.

The liveness endpoint (``--liveness``) is agentgov's own, not kopf's: it fails (503, JSON
naming the watch) when one of the operator's watch streams has died or stalled, which kopf's
endpoint does not notice (see ``liveness``). It is served from the operator's event loop, so a
blocked loop fails the probe too (by timing out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from agentgov.controller import handlers, liveness, metrics
from agentgov.controller.config import OperatorConfig


def run(
    namespaces: Sequence[str],
    standalone: bool,
    peering: str | None,
    liveness_endpoint: str | None,
    metrics_port: int | None,
) -> None:
    """``namespaces`` from the command line win over ``AGENTGOV_NAMESPACES``; none means all."""
    assert handlers.GROUP  # the import registers the handlers with kopf
    try:  # bad settings stop here, with the message, before anything starts
        config = OperatorConfig.from_env(os.environ)
        if liveness_endpoint:
            liveness.parse_endpoint(liveness_endpoint)
    except ValueError as error:
        raise SystemExit(f"agentgov operator: {error}") from None
    namespaces = list(namespaces) or list(config.namespaces)
    # Timestamps and object names on stderr (kopf.configure leaves the names out unless asked).
    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL, log_prefix=True)
    if metrics_port:
        start_http_server(metrics_port, registry=metrics.REGISTRY)
    asyncio.run(_operate(config, namespaces, standalone, peering, liveness_endpoint))


async def _operate(config: OperatorConfig, namespaces: Sequence[str], standalone: bool, peering: str | None,
                   liveness_endpoint: str | None) -> None:
    vitals = liveness.WatchVitals(config.stalled_watch_seconds)
    async with contextlib.AsyncExitStack() as stack:
        if liveness_endpoint:
            try:
                await stack.enter_async_context(liveness.serve(liveness_endpoint, vitals))
            except OSError as error:  # the port is taken, or the address is not this host's
                raise SystemExit(f"agentgov operator: cannot serve liveness at {liveness_endpoint}: "
                                 f"{error.strerror or error}") from None
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=standalone,
            peering_name=peering,
            memo=kopf.Memo({handlers.MEMO_VITALS: vitals}),
        )
