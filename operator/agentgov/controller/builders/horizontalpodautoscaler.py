"""The HorizontalPodAutoscaler (autoscaling/v2), only when ``spec.autoscaling.enabled``.

It scales the Deployment on average CPU and memory utilization (of requests: both containers
always have requests, see ``deployment``); while it exists the Deployment carries no
``replicas`` of ours, so the operator and the HPA never fight over the count. Pure; no I/O.
"""

from __future__ import annotations

from agentgov.controller.builders import deployment
from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_AUTOSCALER, metadata, workload_name

API_VERSION = "autoscaling/v2"
KIND = "HorizontalPodAutoscaler"


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def wanted(inputs: Inputs) -> bool:
    return inputs.spec.autoscaling.enabled


def _utilization(resource: str, percent: int) -> Manifest:
    return {"type": "Resource", "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}}}


def build(inputs: Inputs) -> Manifest:
    scaling = inputs.spec.autoscaling
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_AUTOSCALER),
        "spec": {
            "scaleTargetRef": {"apiVersion": deployment.API_VERSION, "kind": deployment.KIND, "name": deployment.name(inputs)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                _utilization("cpu", scaling.target_cpu_utilization_percent),
                _utilization("memory", scaling.target_memory_utilization_percent),
            ],
        },
    }
