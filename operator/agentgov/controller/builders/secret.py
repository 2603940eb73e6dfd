"""The Secret ``<agent>-secrets``: the values of an agent's Vault, AWS and Azure secrets.

Written by the secrets sync (``controller/secretsync.py``), never by ``build_children``: its
data are values read from the providers, which no other builder ever sees. One data key per
variable name (the Deployment builder points each variable at it), type ``Opaque``, the
children's labels and ownerReference (deleting the agent deletes it), and one annotation,
``agentgov.io/secret-versions``, with the provider's version of each value — versions only,
never a value. The agent's pod template hashes this Secret's resourceVersion
(``deployment.secrets_hash``), so writing new data rolls the pods.

Pure: values in, manifest out; no I/O, no clock. This module must never log, print or put a
value anywhere but ``data``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from agentgov.controller.builders.inputs import Inputs, Manifest
from agentgov.controller.builders.naming import labels, materialized_secret_name, metadata, owner_reference

API_VERSION: Final = "v1"
KIND: Final = "Secret"
TYPE: Final = "Opaque"
COMPONENT_SECRETS: Final = "secrets"
VERSIONS_ANNOTATION: Final = "agentgov.io/secret-versions"


def name(inputs: Inputs) -> str:
    return materialized_secret_name(inputs.name)


def versions_annotation(versions: Mapping[str, str]) -> str:
    """``{variable: provider version}`` as the annotation holds it (keys sorted, compact)."""
    return json.dumps(dict(sorted(versions.items())), separators=(",", ":"))


def encoded(data: Mapping[str, str]) -> dict[str, str]:
    """``data`` as a Secret's ``data`` field holds it (base64 of the UTF-8 bytes), keys sorted."""
    return {key: base64.b64encode(value.encode()).decode("ascii") for key, value in sorted(data.items())}


def decoded(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """The values a live Secret holds, by key. A key whose data is not base64 of UTF-8 text is
    left out (it counts as missing, so it is read again), never raised on."""
    values: dict[str, str] = {}
    data = (secret or {}).get("data") or {}
    if not isinstance(data, Mapping):
        return values
    for key, text in data.items():
        if not isinstance(key, str) or not isinstance(text, str):
            continue
        try:
            values[key] = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return values


def build(inputs: Inputs, data: Mapping[str, str], versions: Mapping[str, str]) -> Manifest:
    """The whole Secret, to create it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(inputs, name(inputs), COMPONENT_SECRETS, {VERSIONS_ANNOTATION: versions_annotation(versions)}),
        "type": TYPE,
        "data": encoded(data),
    }


def update_patch(inputs: Inputs, live: Mapping[str, Any], data: Mapping[str, str], versions: Mapping[str, str]) -> Manifest:
    """A merge patch that makes the ``live`` Secret hold exactly ``data`` (keys it has beyond them
    are removed), with our labels, annotation and ownerReference (a Secret someone created by
    hand is adopted; owner references to other, non-controller owners are kept). Its ``type``
    is left alone: it is immutable."""
    live_meta = live.get("metadata") or {}
    ours = owner_reference(inputs)
    others = [ref for ref in live_meta.get("ownerReferences") or []
              if isinstance(ref, Mapping) and ref.get("uid") != ours["uid"] and not ref.get("controller")]
    patch_data: dict[str, str | None] = {key: None for key in (live.get("data") or {}) if key not in data}
    patch_data.update(encoded(data))
    return {
        "metadata": {
            "labels": labels(inputs, COMPONENT_SECRETS),
            "annotations": {VERSIONS_ANNOTATION: versions_annotation(versions)},
            "ownerReferences": [*(dict(ref) for ref in others), ours],
        },
        "data": patch_data,
    }


def owned_by(live: Mapping[str, Any] | None, inputs: Inputs) -> bool:
    """Whether ``live`` names this AgentDeployment as its controller (so it may be emptied)."""
    refs = ((live or {}).get("metadata") or {}).get("ownerReferences") or []
    uid = inputs.agent.metadata.uid
    return bool(uid) and any(isinstance(r, Mapping) and r.get("uid") == uid and r.get("controller") for r in refs)
