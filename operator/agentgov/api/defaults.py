"""Shipped defaults: roles and permissions, model prices, region preferences.

Policies override these by name (a role or model given in a CR replaces the shipped one of
the same name). The values are data, not logic; the functions that merge them live next to
the models that use them. No I/O here.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Permission = Literal[
    "agent:create",
    "agent:delete",
    "agent:execute",
    "tool:read",
    "tool:write",
    "tool:all",
]
PERMISSIONS: Final[tuple[Permission, ...]] = get_args(Permission)
# `tool:all` grants every tool permission.
TOOL_PERMISSIONS: Final[tuple[Permission, ...]] = ("tool:read", "tool:write")

DEFAULT_ROLES: Final[dict[str, tuple[Permission, ...]]] = {
    "admin": PERMISSIONS,
    "developer": ("agent:create", "agent:execute", "tool:read", "tool:write"),
    "analyst": ("agent:execute", "tool:read"),
    "viewer": ("tool:read",),
}

# USD per 1,000 tokens (input, output), from the providers' public price lists (late 2025).
# Budgets may override any of these or add their own models.
DEFAULT_PRICING_PER_1K: Final[dict[str, tuple[float, float]]] = {
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
    "o3-mini": (0.0011, 0.0044),
    "gpt-4": (0.03, 0.06),
    "gpt-3.5-turbo": (0.0005, 0.0015),
    "claude-sonnet-4": (0.003, 0.015),
    "claude-3-5-haiku": (0.0008, 0.004),
    "text-embedding-3-small": (0.00002, 0.0),
    "text-embedding-3-large": (0.00013, 0.0),
}

DEFAULT_ALERT_THRESHOLDS: Final[tuple[int, ...]] = (80, 90)
DAYS_PER_MONTH_FOR_DAILY_DEFAULT: Final[int] = 30

# Circuit breaker defaults (the playbook's values).
BREAKER_FAILURE_THRESHOLD: Final[int] = 5
BREAKER_CALL_TIMEOUT_SECONDS: Final[int] = 30
BREAKER_RECOVERY_TIMEOUT_SECONDS: Final[int] = 60
BREAKER_HALF_OPEN_SUCCESSES: Final[int] = 3
