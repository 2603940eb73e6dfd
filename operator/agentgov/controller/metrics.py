"""The operator's Prometheus metrics, in one registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
SPEND_STORE_READS = Counter(
    "agentgov_operator_spend_store_reads",
    "Reads of AgentBudget spend from the spend store, by outcome (ok, unreachable).",
    ["outcome"],
    registry=REGISTRY,
)
BUDGET_ALERTS = Counter(
    "agentgov_operator_budget_alerts",
    "AgentBudget alerts announced (one Event each), by reason (BudgetThresholdReached, BudgetExceeded).",
    ["reason"],
    registry=REGISTRY,
)
WATCHES = Gauge(
    "agentgov_operator_watches",
    "The operator's watch streams, by state (ok, dead, stalled), as the liveness endpoint judges them.",
    ["state"],
    registry=REGISTRY,
)
