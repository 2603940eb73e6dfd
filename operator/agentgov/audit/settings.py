"""How a local audit log is kept: rotation, signed digests, retention pruning — and the
``AGENTGOV_AUDIT_*`` variables that set it, shared by the sidecar and the operator.

| variable | default | meaning |
|---|---|---|
| AGENTGOV_AUDIT_MAX_BYTES | 100Mi | rotate the active file once it holds this much (bytes, or a quantity: 100Mi, 1G) |
| AGENTGOV_AUDIT_MAX_AGE_SECONDS | 86400 | rotate the active file once its first record is this old |
| AGENTGOV_AUDIT_DIGEST_KEY_FILE | (none: no digests) | PEM private key (Ed25519, or RSA of 2048 bits or more) mounted from a Secret |
| AGENTGOV_AUDIT_DIGEST_RECORDS | 1000 | sign a digest after this many records ... |
| AGENTGOV_AUDIT_DIGEST_SECONDS | 300 | ... or once the oldest unsigned record is this old |
| AGENTGOV_AUDIT_PRUNE_INTERVAL_SECONDS | 3600 | how often rotated files past their records' ``retain_until`` are pruned |

Pure: the environment is passed in. Errors name the variable and never echo more than a short
excerpt of its value.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agentgov.audit.errors import AuditConfigError

DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
DEFAULT_MAX_AGE_SECONDS: Final = 24 * 3600.0
MIN_MAX_BYTES: Final = 4096
MAX_DIGEST_RECORDS: Final = 1_000_000
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_FACTORS: Final = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@dataclass(frozen=True)
class LogOptions:
    """Rotation, digests and pruning of one local audit log."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    digest_key_file: Path | None = None
    digest_every_records: int = 1000
    digest_every_seconds: float = 300.0
    prune_interval_seconds: float = 3600.0
    # How often the writer checks the age-based rules (rotation, digests) when idle.
    tick_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_bytes < MIN_MAX_BYTES:
            raise AuditConfigError(f"max_bytes: {self.max_bytes} is below {MIN_MAX_BYTES} bytes")
        if not 1 <= self.digest_every_records <= MAX_DIGEST_RECORDS:
            raise AuditConfigError(f"digest_every_records: {self.digest_every_records} is not 1-{MAX_DIGEST_RECORDS}")
        for name in ("max_age_seconds", "digest_every_seconds", "prune_interval_seconds", "tick_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise AuditConfigError(f"{name}: {value!r} is not a positive number of seconds")


ENV_VARIABLES: Final[tuple[str, ...]] = (
    "AGENTGOV_AUDIT_MAX_BYTES",
    "AGENTGOV_AUDIT_MAX_AGE_SECONDS",
    "AGENTGOV_AUDIT_DIGEST_KEY_FILE",
    "AGENTGOV_AUDIT_DIGEST_RECORDS",
    "AGENTGOV_AUDIT_DIGEST_SECONDS",
    "AGENTGOV_AUDIT_PRUNE_INTERVAL_SECONDS",
)


def _excerpt(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def parse_bytes(text: str) -> int:
    """``104857600``, ``100Mi``, ``1G`` -> bytes; ValueError otherwise."""
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{_excerpt(text)} is not a size (bytes, or e.g. 100Mi, 1Gi, 500M)")
    return int(match.group(1)) * _FACTORS[match.group(2)]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{_excerpt(text)} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{_excerpt(text)} is not a positive number of seconds")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_DIGEST_RECORDS:
        raise ValueError(f"{_excerpt(text)} is not a whole number from 1 to {MAX_DIGEST_RECORDS}")
    return int(text)


def _key_file(text: str) -> Path:
    if "\x00" in text:
        raise ValueError("is not a file path")
    return Path(text)


def log_options_from_env(environ: Mapping[str, str], defaults: LogOptions = LogOptions()) -> LogOptions:
    """``LogOptions`` from the ``AGENTGOV_AUDIT_*`` variables (unset or empty: the default);
    AuditConfigError naming the first variable that cannot be used."""
    parsers: dict[str, tuple[str, Callable[[str], object]]] = {
        "AGENTGOV_AUDIT_MAX_BYTES": ("max_bytes", parse_bytes),
        "AGENTGOV_AUDIT_MAX_AGE_SECONDS": ("max_age_seconds", _seconds),
        "AGENTGOV_AUDIT_DIGEST_KEY_FILE": ("digest_key_file", _key_file),
        "AGENTGOV_AUDIT_DIGEST_RECORDS": ("digest_every_records", _count),
        "AGENTGOV_AUDIT_DIGEST_SECONDS": ("digest_every_seconds", _seconds),
        "AGENTGOV_AUDIT_PRUNE_INTERVAL_SECONDS": ("prune_interval_seconds", _seconds),
    }
    values: dict[str, Any] = {}  # field name -> parsed value, checked again by LogOptions
    for variable, (name, parser) in parsers.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            values[name] = parser(text)
        except ValueError as error:
            raise AuditConfigError(str(error), variable=variable) from None
    if "max_bytes" in values and int(str(values["max_bytes"])) < MIN_MAX_BYTES:
        raise AuditConfigError(f"below the smallest file size ({MIN_MAX_BYTES} bytes)", variable="AGENTGOV_AUDIT_MAX_BYTES")
    return dataclasses.replace(defaults, **values)
