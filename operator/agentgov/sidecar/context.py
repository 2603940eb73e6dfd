"""The app's typed keys (``web.AppKey``) and a read-only view over them for handlers.

Every resource of an app lives under one of these keys, opened and closed by the app's
``cleanup_ctx`` (see ``app.py``): no module-level state, so a test can run several apps.
The egress app (models and tools for the agent, its own port) holds no resources of its own:
it points at the main app (``MAIN_APP``) and its handlers use the main app's through
``AppState`` (``state(request)`` resolves it either way).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from agentgov.audit.sinks.shipper import AuditShipping
from agentgov.audit.writer import AuditWriter
from agentgov.sidecar.breaker import Breakers
from agentgov.sidecar.budgets import BudgetAlert
from agentgov.sidecar.bundle_loader import PolicyStore
from agentgov.sidecar.cache import ResponseCache
from agentgov.sidecar.executions import ExecutionStore
from agentgov.sidecar.jwks import JwksClients
from agentgov.sidecar.metrics import Metrics
from agentgov.sidecar.settings import Settings

if TYPE_CHECKING:
    from agentgov.sidecar.spend import BudgetGuard


@dataclass
class RedisLink:
    """The Redis client (None when no Redis is configured) and what the last health check saw."""

    client: aioredis.Redis | None = None
    configured: bool = False
    up: bool = False
    last_error: str | None = None
    checked_at: float | None = None  # monotonic

    def report(self) -> dict[str, object]:
        """For /ready: never the URL (it may carry a password)."""
        return {"configured": self.configured, "up": self.up, "error": self.last_error}


@dataclass
class EgressState:
    """Live state of the egress port that is neither policy nor a client: model calls in flight
    per region (``pick_region`` skips regions at capacity), background tasks the request path
    started (settling an abandoned call), the signal that budget gauges need a refresh, and the
    budget alert notifier (a webhook), when one is configured."""

    in_flight: Counter[str] = field(default_factory=Counter)
    background: set[asyncio.Task[object]] = field(default_factory=set)
    budgets_changed: asyncio.Event = field(default_factory=asyncio.Event)
    alert_notifier: Callable[[BudgetAlert], None] | None = None

SETTINGS = web.AppKey("agentgov_settings", Settings)
METRICS = web.AppKey("agentgov_metrics", Metrics)
POLICY = web.AppKey("agentgov_policy", PolicyStore)
AUDIT = web.AppKey("agentgov_audit", AuditWriter)
AUDIT_SHIPPING = web.AppKey("agentgov_audit_shipping", AuditShipping)
EXECUTIONS = web.AppKey("agentgov_executions", ExecutionStore)
AGENT_SESSION = web.AppKey("agentgov_agent_session", aiohttp.ClientSession)
JWKS = web.AppKey("agentgov_jwks", JwksClients)
REDIS = web.AppKey("agentgov_redis", RedisLink)
CACHE = web.AppKey("agentgov_cache", ResponseCache)
BUDGETS: web.AppKey[BudgetGuard] = web.AppKey("agentgov_budgets")
BREAKERS = web.AppKey("agentgov_breakers", Breakers)
MODEL_SESSION = web.AppKey("agentgov_model_session", aiohttp.ClientSession)
EGRESS = web.AppKey("agentgov_egress", EgressState)
# On the egress app: the app whose resources it uses.
MAIN_APP = web.AppKey("agentgov_main_app", web.Application)


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

    @property
    def redis(self) -> RedisLink:
        return self._app[REDIS]

    @property
    def cache(self) -> ResponseCache:
        return self._app[CACHE]

    @property
    def budgets(self) -> BudgetGuard:
        return self._app[BUDGETS]

    @property
    def breakers(self) -> Breakers:
        return self._app[BREAKERS]

    @property
    def model_session(self) -> aiohttp.ClientSession:
        return self._app[MODEL_SESSION]

    @property
    def egress(self) -> EgressState:
        return self._app[EGRESS]

def main_app(app: web.Application) -> web.Application:
    """The app holding the resources: ``app`` itself, or the main app of an egress app."""
    return app[MAIN_APP] if MAIN_APP in app else app


def state(request: web.Request) -> AppState:
    return AppState(main_app(request.app))
