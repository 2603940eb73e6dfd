"""Prometheus metrics of audit shipping, registered in the registry the process gives (the
sidecar's own ``Metrics.registry``, the operator's), never the global one.

Labels are bounded: ``sink`` is one of stdout, elasticsearch, s3; ``reason`` one of
``FAILURE_REASONS``. Never a URL, a bucket, a user or anything from a record. No I/O.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

FailureReason = Literal["connect", "timeout", "throttled", "server_error", "auth", "rejected", "config",
                        "bad_response", "io", "internal"]
FAILURE_REASONS: Final[tuple[str, ...]] = get_args(FailureReason)


class ShipperMetrics:
    """Shipped, failed, dead-lettered, lag and up, per sink."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.shipped = Counter(
            "agentgov_audit_shipped_records", "Audit records delivered to a sink (including ones it already held).",
            ["sink"], registry=registry,
        )
        self.failures = Counter(
            "agentgov_audit_ship_failures", "Failed deliveries to a sink, by reason (each is retried with backoff).",
            ["sink", "reason"], registry=registry,
        )
        self.dead_letters = Counter(
            "agentgov_audit_ship_dead_letters",
            "Audit lines a sink refused for good (or the shipper could not parse), parked in the dead-letter file.",
            ["sink"], registry=registry,
        )
        self.gaps = Counter(
            "agentgov_audit_ship_gap_records",
            "Records removed from the local log before a sink delivered them (pruned or deleted).",
            ["sink"], registry=registry,
        )
        self.lag_records = Gauge(
            "agentgov_audit_ship_lag_records", "Records written to the local log and not yet delivered to a sink.",
            ["sink"], registry=registry,
        )
        self.lag_seconds = Gauge(
            "agentgov_audit_ship_lag_seconds", "Age of the oldest record not yet delivered to a sink (0: none).",
            ["sink"], registry=registry,
        )
        self.up = Gauge(
            "agentgov_audit_ship_up", "1 when the last delivery to a sink succeeded (or there was nothing to send).",
            ["sink"], registry=registry,
        )

    def forget(self, sink: str) -> None:
        """Drop a removed sink's gauges (its counters keep their totals)."""
        for gauge in (self.lag_records, self.lag_seconds, self.up):
            try:
                gauge.remove(sink)
            except KeyError:
                pass
