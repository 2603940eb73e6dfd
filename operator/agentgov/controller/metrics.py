"""The operator's Prometheus metrics, in one registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "agentgov_operator_reconciles",
    "AgentDeployment reconciles, by outcome phase (Ready, Reconciling, Stalled) and reason.",
    ["phase", "reason"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "agentgov_operator_reconcile_errors",
    "Reconciles that failed on an API error and will be retried, by kind of error.",
    ["error"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "agentgov_operator_reconcile_seconds",
    "Time to reconcile one AgentDeployment.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
CHILD_WRITES = Counter(
    "agentgov_operator_child_writes",
    "Children created, updated or deleted, by kind and change.",
    ["kind", "change"],
    registry=REGISTRY,
)
