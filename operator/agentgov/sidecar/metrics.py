"""Prometheus metrics of one sidecar app, in its own CollectorRegistry (never the global one).

Labels are bounded sets chosen by the sidecar (route kinds, status classes, failure reasons,
error codes, names from the bundle: model routes, regions, tools, budgets): never a token, a
path or anything a caller controls, so a metric can neither leak a secret nor explode in
cardinality. The one exception is the playbook's ``user_id`` label, kept so its dashboards
work: it is never the user id itself but a short hash of it (``user_label``), and only the
first ``MAX_USER_LABELS`` distinct users of the process get their own; the rest share
``other``. No I/O here; /metrics renders the registry.

Two families: ``agentgov_*`` (the sidecar's own), and the playbook's ``agent_*`` names and
labels (``agent_requests_total{agent_id,user_id,status}``, ``agent_request_duration_seconds``,
``agent_tokens_total``, ``agent_cost_dollars_total``, ``agent_active_count``,
``agent_cache_hit_rate``, ``agent_errors_total``) for model calls on the egress port.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# The text format ``generate_latest`` renders by default (prometheus_client's CONTENT_TYPE_LATEST
# names a newer version on recent releases).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Distinct users that get their own ``user_id`` label value per process; the rest are "other".
MAX_USER_LABELS: Final = 1000
OTHER_USERS: Final = "other"
USER_HASH_CHARS: Final = 12
# agentgov_breaker_state values.
BREAKER_STATE_VALUES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}
RequestStatus = Literal["success", "denied", "error"]
_SECONDS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def user_hash(user: str) -> str:
    """The label value of a user: the first 12 hex digits of sha256(user id). Stable across
    replicas (so dashboards can sum pods), not reversible without guessing the id."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:USER_HASH_CHARS]


class Metrics:
    """Every metric of the sidecar, registered in ``self.registry``."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "agentgov_inbound_requests", "Inbound requests by route kind and status class.",
            ["route", "status"], registry=registry,
        )
        self.request_seconds = Histogram(
            "agentgov_inbound_request_duration_seconds",
            "Time to the end of the response, by route kind.", ["route"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.auth_failures = Counter(
            "agentgov_auth_failures", "Requests refused by authentication, by reason.", ["reason"],
            registry=registry,
        )
        self.authz_denials = Counter(
            "agentgov_authz_denials", "Requests refused by authorization, by code.", ["code"],
            registry=registry,
        )
        self.agent_errors = Counter(
            "agentgov_agent_errors", "Proxied requests that failed at the agent, by error code.",
            ["code"], registry=registry,
        )
        self.executions_active = Gauge(
            "agentgov_executions_in_flight", "Requests being proxied to the agent right now.",
            registry=registry,
        )
        self.executions_tracked = Gauge(
            "agentgov_executions_tracked", "Execution ids held for attribution (until their TTL).",
            registry=registry,
        )
        self.tokens_minted = Counter(
            "agentgov_tokens_minted", "Scoped tokens minted through the admin endpoint.", registry=registry,
        )
        self.audit_records = Counter(
            "agentgov_audit_records_written", "Audit records appended to the log.", registry=registry,
        )
        self.audit_dropped = Counter(
            "agentgov_audit_records_dropped", "Audit events dropped because the queue was full.",
            registry=registry,
        )
        self.audit_write_errors = Counter(
            "agentgov_audit_write_errors", "Failed writes to the audit log.", registry=registry,
        )
        self.audit_sink_up = Gauge(
            "agentgov_audit_sink_up", "1 when the last write to the audit log succeeded.", registry=registry,
        )
        self.audit_queue_depth = Gauge(
            "agentgov_audit_queue_depth", "Audit events waiting to be written.", registry=registry,
        )
        self.bundle_reloads = Counter(
            "agentgov_bundle_reloads", "Policy bundle (re)loads by result.", ["result"], registry=registry,
        )
        self.bundle_valid = Gauge(
            "agentgov_bundle_valid",
            "1 when the bundle on disk is the one in force; 0 when it is missing or invalid "
            "(the last good one, if any, stays in force).", registry=registry,
        )
        self.bundle_info = Gauge(
            "agentgov_bundle_info", "The bundle in force (value 1), by hash.", ["hash"], registry=registry,
        )
        self.jwks_fetches = Counter(
            "agentgov_jwks_fetches", "JWKS fetches by result.", ["result"], registry=registry,
        )

        # --- model egress: the playbook's names and labels -----------------------------------
        self.agent_requests = Counter(
            "agent_requests",
            "Model calls on the egress port by agent, hashed user (see docs) and outcome "
            "(success, denied by a policy, error).", ["agent_id", "user_id", "status"], registry=registry,
        )
        self.agent_request_seconds = Histogram(
            "agent_request_duration_seconds", "Time to the end of a model call's answer, by agent and model route.",
            ["agent_id", "model"], registry=registry, buckets=_SECONDS_BUCKETS,
        )
        self.agent_tokens = Counter(
            "agent_tokens", "Tokens of model calls answered by an upstream, by type (input, output).",
            ["agent_id", "model", "type"], registry=registry,
        )
        self.agent_cost = Counter(
            "agent_cost_dollars", "USD spent on model calls (settled cost), by agent and model route.",
            ["agent_id", "model"], registry=registry,
        )
        self.agent_active = Gauge(
            "agent_active_count", "Model calls in flight on the egress port.", registry=registry,
        )
        self.agent_cache_hit_rate = Gauge(
            "agent_cache_hit_rate", "Response cache hits / lookups since the sidecar started.", registry=registry,
        )
        self.agent_errors_by_type = Counter(
            "agent_errors", "Failed model calls by agent and error code (or upstream_4xx).",
            ["agent_id", "error_type"], registry=registry,
        )

        # --- model egress: the sidecar's own ---------------------------------------------------
        self.breaker_state = Gauge(
            "agentgov_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["kind", "name"], registry=registry,
        )
        self.breaker_transitions = Counter(
            "agentgov_breaker_transitions", "Circuit breaker transitions, by the state entered.",
            ["kind", "name", "state"], registry=registry,
        )
        self.upstream_attempts = Counter(
            "agentgov_upstream_attempts", "Attempts to call a model upstream, by route, region and result.",
            ["route", "region", "result"], registry=registry,
        )
        self.fallbacks = Counter(
            "agentgov_model_fallbacks", "Model calls answered by a fallback route or a cached answer, by kind.",
            ["kind"], registry=registry,
        )
        self.budget_spend = Gauge(
            "agentgov_budget_spend_dollars",
            "Committed spend of a budget in its current period, as last seen by this sidecar (for scope "
            "Each: the subject charged last).", ["budget", "period"], registry=registry,
        )
        self.budget_remaining = Gauge(
            "agentgov_budget_remaining_dollars", "Limit minus committed spend, as last seen by this sidecar.",
            ["budget", "period"], registry=registry,
        )
        self.budget_alerts = Counter(
            "agentgov_budget_alerts", "Budget threshold alerts raised, by budget, period and percent.",
            ["budget", "period", "percent"], registry=registry,
        )
        self.budget_denials = Counter(
            "agentgov_budget_denials", "Model calls refused by a budget (429) or its store (503).",
            ["budget", "code"], registry=registry,
        )
        self.budget_store_degraded = Counter(
            "agentgov_budget_store_degraded",
            "Model calls let through while the budget store was unreachable (failure policy Open; "
            "counted locally).", ["budget"], registry=registry,
        )
        self.cache_hits = Counter(
            "agentgov_cache_hits", "Response cache hits by level (l1 in-process, l2 Redis).", ["level"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "agentgov_cache_misses", "Response cache lookups that found nothing.", registry=registry,
        )
        self.cache_saved = Counter(
            "agentgov_cache_saved_dollars", "USD the answers served from the cache cost when first made.",
            registry=registry,
        )
        self.cache_skipped = Counter(
            "agentgov_cache_skipped", "Model calls not looked up in the cache, by reason.", ["reason"],
            registry=registry,
        )
        self.cache_entries = Gauge(
            "agentgov_cache_entries", "Entries in the in-process (L1) cache.", registry=registry,
        )
        self.cache_bytes = Gauge(
            "agentgov_cache_bytes", "Bytes charged to the in-process (L1) cache.", registry=registry,
        )
        self.cache_redis_errors = Gauge(
            "agentgov_cache_redis_errors", "Redis errors and timeouts met by the cache since start (each a miss).",
            registry=registry,
        )
        self.redis_up = Gauge(
            "agentgov_redis_up", "1 when the last Redis health check succeeded; 0 when it failed or no Redis "
            "is configured.", registry=registry,
        )
        self._user_labels: dict[str, str] = {}

    def user_label(self, user: str) -> str:
        """The ``user_id`` label value: a short hash for the first MAX_USER_LABELS users, then "other"."""
        label = self._user_labels.get(user)
        if label is not None:
            return label
        if len(self._user_labels) >= MAX_USER_LABELS:
            return OTHER_USERS
        label = self._user_labels[user] = user_hash(user)
        return label

    def set_breaker(self, kind: str, name: str, state: str) -> None:
        self.breaker_state.labels(kind=kind, name=name).set(BREAKER_STATE_VALUES.get(state, 2))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_bundle(self, bundle_hash: str | None) -> None:
        self.bundle_info.clear()
        if bundle_hash:
            self.bundle_info.labels(hash=bundle_hash).set(1)
