"""The agent's ServiceAccount: an identity of its own, with no API token mounted.

Neither the agent nor the sidecar talks to the Kubernetes API (the sidecar reads its bundle
and secrets from mounted files), so no token is mounted; a compromised agent gets no
credentials to the cluster. Pure; no I/O.
"""

from __future__ import annotations

from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import COMPONENT_IDENTITY, metadata, workload_name

API_VERSION = "v1"
KIND = "ServiceAccount"


def name(inputs: Inputs) -> str:
    return workload_name(inputs.name)


def build(inputs: Inputs) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_IDENTITY),
        "automountServiceAccountToken": False,
    }
