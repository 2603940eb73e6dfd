"""The Service in front of the agent's pods. It targets the sidecar's inbound port only: every
call is authenticated, authorized and audited; the agent's own port is never exposed.
Pure; no I/O.
"""

from __future__ import annotations

from typing import Final

from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_AGENT, metadata, selector_labels, workload_name

API_VERSION = "v1"
KIND = "Service"
PORT: Final = 80
PORT_NAME: Final = "http"  # the sidecar container's inbound port is named the same


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def build(inputs: Inputs) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_AGENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(inputs.name),
            "ports": [{"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
