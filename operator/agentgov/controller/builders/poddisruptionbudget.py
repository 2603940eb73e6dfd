"""The PodDisruptionBudget of the agent's pods: at most one evicted at a time.

``maxUnavailable: 1`` rather than ``minAvailable: 1``: with one replica, ``minAvailable: 1``
forbids every eviction and blocks node drains (cluster upgrades) forever, while
``maxUnavailable: 1`` lets the drain proceed; with several replicas both keep all but one
serving, and ``maxUnavailable`` needs no recomputation as the HPA changes the count. So one
rule, always present, right at every scale. ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets
a drain evict pods that are not ready anyway (a crash-looping pod must not block it).
Pure; no I/O.
"""

from __future__ import annotations

from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_DISRUPTION, metadata, selector_labels, workload_name

API_VERSION = "policy/v1"
KIND = "PodDisruptionBudget"


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def build(inputs: Inputs) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_DISRUPTION),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(inputs.name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
