"""Prometheus metrics of one sidecar app, in its own CollectorRegistry (never the global one).

Labels are bounded sets chosen by the sidecar (route kinds, status classes, failure reasons,
error codes): never a user, a token, a path or anything a caller controls, so a metric can
neither leak a secret nor explode in cardinality. No I/O here; /metrics renders the registry.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# The text format ``generate_latest`` renders by default (prometheus_client's CONTENT_TYPE_LATEST
# names a newer version on recent releases).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


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

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def set_bundle(self, bundle_hash: str | None) -> None:
        self.bundle_info.clear()
        if bundle_hash:
            self.bundle_info.labels(hash=bundle_hash).set(1)
