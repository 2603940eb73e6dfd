"""What ``agentgov sidecar`` and ``agentgov token create`` do (``agentgov audit``: agentgov.audit.commands).

``cli.py`` parses the arguments and calls these; each returns the process exit code and
prints its errors as one ``error: ...`` line (never a traceback, never a key).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from agentgov.audit.errors import AuditConfigError
from agentgov.sidecar.errors import ConfigError
from agentgov.sidecar.logs import LOG_FORMATS, LogFormat, formatter
from agentgov.audit.redact import RedactingFilter


def _error(message: str, stream: TextIO | None) -> int:
    print(f"error: {message}", file=stream or sys.stderr)
    return 1


def configure_logging(level: str = "INFO", kind: LogFormat = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_sidecar(*, bundle: str, secrets_dir: str | None, host: str | None, port: int | None,
                environ: Mapping[str, str] = os.environ, stderr: TextIO | None = None) -> int:
    """Serve the sidecar until SIGTERM/SIGINT."""
    from agentgov.sidecar.app import run
    from agentgov.sidecar.settings import settings_from_env

    try:
        settings = settings_from_env(
            environ, bundle_path=Path(bundle), secrets_dir=Path(secrets_dir) if secrets_dir else None,
            host=host, port=port,
        )
    except ConfigError as e:
        return _error(str(e), stderr)
    kind = environ.get("AGENTGOV_LOG_FORMAT", "json").strip().lower()
    if kind not in LOG_FORMATS:
        return _error(f"AGENTGOV_LOG_FORMAT: {kind[:20]!r} is not one of {', '.join(LOG_FORMATS)}", stderr)
    configure_logging(environ.get("AGENTGOV_LOG_LEVEL", "INFO").upper(), kind)
    try:
        asyncio.run(run(settings))
    except AuditConfigError as e:  # e.g. an unusable digest key file: named, no traceback
        return _error(str(e), stderr)
    return 0


def create_token(*, user: str, role: str, scopes: Sequence[str], ttl: str, key_file: str, issuer: str,
                 audience: str, alg: str | None, kid: str | None, team: str | None,
                 stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Print a signed scoped token."""
    from agentgov.sidecar.tokens import load_signing_key, mint, parse_ttl

    try:
        ttl_seconds = parse_ttl(ttl)
    except ValueError as e:
        return _error(f"--ttl: {e}", stderr)
    try:
        data = Path(key_file).read_bytes()
    except OSError as e:
        return _error(f"--key-file {key_file}: {e.strerror or e}", stderr)
    try:
        key = load_signing_key(data, alg, kid)
    except ConfigError as e:
        return _error(f"--key-file {key_file}: {e}", stderr)
    token = mint(user=user, role=role, scopes=scopes, ttl_seconds=ttl_seconds, key=key, issuer=issuer,
                 audience=audience, now=time.time(), token_id="tok_" + secrets.token_urlsafe(16), team=team)
    print(token, file=stdout or sys.stdout)
    return 0
