"""The ConfigMap holding the compiled policy bundle, mounted read-only in the sidecar.

``bundle.json`` is the bundle's canonical JSON (sorted keys, no whitespace), so the same
policies always give the same bytes and the same hash. It holds references to Secrets, never
their values. Not immutable: the sidecar hot-reloads the mounted file when it changes.

A ConfigMap holds at most 1 MiB; a bundle over that (a ToolPolicy with many large static
fallbacks, say) is a BuildError naming the reference that contributes most, rather than a
write the API server would refuse.
Pure; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel

from agentgov.api.bundle import BUNDLE_FILE_NAME, PolicyBundle, bundle_hash, canonical_json
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest
from agentgov.controller.builders.naming import BUNDLE_HASH_ANNOTATION, COMPONENT_BUNDLE, bundle_configmap_name, metadata

API_VERSION = "v1"
KIND = "ConfigMap"
MAX_CONFIGMAP_BYTES: Final = 1024 * 1024


def name(inputs: Inputs) -> str:
    return bundle_configmap_name(inputs.name)


def _check_size(text: str, bundle: PolicyBundle) -> None:
    size = len(BUNDLE_FILE_NAME) + len(text.encode())
    if size <= MAX_CONFIGMAP_BYTES:
        return
    parts: dict[str, list[Sequence[BaseModel]]] = {
        "spec.toolPolicyRef": [bundle.tools],
        "spec.budgetRefs": [bundle.budgets],
        "spec.regionPolicyRef": [bundle.regions, bundle.routing_rules],
    }
    part_sizes = {
        field: sum(len(json.dumps([item.model_dump(mode="json", by_alias=True) for item in items])) for items in lists)
        for field, lists in parts.items()
    }
    field = max(part_sizes, key=lambda f: part_sizes[f])
    raise BuildError(
        field,
        f"the compiled policy bundle is {size} bytes, over the {MAX_CONFIGMAP_BYTES} a ConfigMap holds "
        f"({part_sizes[field]} bytes come from what this field references)",
    )


def build(inputs: Inputs, bundle: PolicyBundle) -> Manifest:
    text = canonical_json(bundle)
    _check_size(text, bundle)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_BUNDLE, {BUNDLE_HASH_ANNOTATION: bundle_hash(bundle)}),
        "data": {BUNDLE_FILE_NAME: text},
    }
