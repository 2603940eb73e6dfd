"""Validation of built-in Kubernetes objects against the published OpenAPI schemas.

What this module is for: every object the operator writes (Deployment, Service, HPA, Ingress,
Secret, ConfigMap, PDB, ...) must be accepted by a real API server. The harness cannot run one,
so tests check the rendered objects with ``kubernetes-validate``'s *strict* JSON schemas (unknown
fields are errors, as with ``kubectl apply --validate=strict``) for the oldest Kubernetes release
we support and the newest release the installed package bundles.

What it must never do: fetch schemas over the network, or mutate the object it checks.

Real-server behaviours NOT reproduced (gaps, also in docs/testing.md): the JSON schemas only
encode types, required fields, enums and unknown-field checks. Semantic validation done in Go
(name and label syntax, port ranges, immutable fields, cross-field rules such as selector
matching template labels, resource quantity syntax, defaulting) is not performed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import kubernetes_validate
from kubernetes_validate import utils as _kv_utils

__all__ = ["LATEST_VERSION", "OLDEST_VERSION", "bundled_versions", "validate_builtin"]


def bundled_versions() -> tuple[str, ...]:
    """The Kubernetes minor versions ("1.30", ...) whose schemas the installed package ships."""
    # The package ships a lax and a "-strict" directory per version: list each version once.
    return tuple(dict.fromkeys(_kv_utils.major_minor(v) for v in _kv_utils.all_versions()))


OLDEST_VERSION: Final = "1.30"
LATEST_VERSION: Final = _kv_utils.major_minor(kubernetes_validate.latest_version())


def _field_path(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _failing_field(error: Any) -> str:
    """The path of the offending field; for an unknown or missing field, that field itself."""
    path = list(error.path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [k for k in error.validator_value or [] if k not in error.instance]
        if missing:
            path.append(missing[0])
    elif error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set((error.schema or {}).get("properties") or {})
        unexpected = sorted(k for k in error.instance if k not in known)
        if unexpected:
            path.append(unexpected[0])
    return _field_path(path) or "<root>"


def validate_builtin(obj: Mapping[str, Any], versions: tuple[str, ...] = (OLDEST_VERSION, LATEST_VERSION)) -> None:
    """Check ``obj`` against the strict schema of each Kubernetes version in ``versions``.

    Raises AssertionError naming the kind, the object name, the Kubernetes version and the
    failing field path, e.g. ``Deployment "web" is invalid for Kubernetes 1.30 at
    spec.replicas: 'three' is not of type 'integer'``."""
    kind = str(obj.get("kind", "<no kind>"))
    name = str((obj.get("metadata") or {}).get("name", "<no name>"))
    for version in versions:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(
                f'{kind} "{name}" is invalid for Kubernetes {error.version} at '
                f"{_failing_field(error)}: {error.message}"
            ) from None
        except kubernetes_validate.SchemaNotFoundError as error:
            raise AssertionError(
                f'{kind} "{name}" cannot be checked for Kubernetes {version}: {error.message}'
            ) from None
