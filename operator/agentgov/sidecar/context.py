"""The app's typed keys (``web.AppKey``) and a read-only view over them for handlers.

Every resource of an app lives under one of these keys, opened and closed by the app's
``cleanup_ctx`` (see ``app.py``): no module-level state, so a test can run several apps.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from agentgov.sidecar.audit import AuditWriter
from agentgov.sidecar.bundle_loader import PolicyStore
from agentgov.sidecar.executions import ExecutionStore
from agentgov.sidecar.jwks import JwksClients
from agentgov.sidecar.metrics import Metrics
from agentgov.sidecar.settings import Settings

SETTINGS = web.AppKey("agentgov_settings", Settings)
METRICS = web.AppKey("agentgov_metrics", Metrics)
POLICY = web.AppKey("agentgov_policy", PolicyStore)
AUDIT = web.AppKey("agentgov_audit", AuditWriter)
EXECUTIONS = web.AppKey("agentgov_executions", ExecutionStore)
AGENT_SESSION = web.AppKey("agentgov_agent_session", aiohttp.ClientSession)
JWKS = web.AppKey("agentgov_jwks", JwksClients)


class AppState:
    """Typed access to one app's resources."""

    __slots__ = ("_app",)

    def __init__(self, app: web.Application) -> None:
        self._app = app

    @property
    def settings(self) -> Settings:
        return self._app[SETTINGS]

    @property
    def metrics(self) -> Metrics:
        return self._app[METRICS]

    @property
    def policy(self) -> PolicyStore:
        return self._app[POLICY]

    @property
    def audit(self) -> AuditWriter:
        return self._app[AUDIT]

    @property
    def executions(self) -> ExecutionStore:
        return self._app[EXECUTIONS]

    @property
    def agent_session(self) -> aiohttp.ClientSession:
        return self._app[AGENT_SESSION]

    @property
    def jwks(self) -> JwksClients:
        return self._app[JWKS]


def state(request: web.Request) -> AppState:
    return AppState(request.app)
