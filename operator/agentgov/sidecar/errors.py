"""The sidecar's errors: one small hierarchy, each error with an HTTP status and a stable code.

A request that fails gets ``{"error": {"code": ..., "message": ...}}`` with the error's status;
the code is the contract clients and dashboards rely on, the message is for humans. Messages
are fixed strings or built from policy names (roles, permissions, scopes, limits): never from
a token, a header value or a secret. Authentication failures carry an internal ``reason``
(for audit and metrics) that is never sent to the client: every bad token gets the same body,
so an attacker learns nothing from which check failed.

Configuration errors (bad bundle, bad key file, bad settings) are not HTTP errors; they have
their own branch (:class:`ConfigError`). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final, Literal

AuthFailure = Literal[
    "missing",
    "malformed",
    "too_large",
    "algorithm",
    "unknown_key",
    "signature",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "issuer",
    "audience",
    "claims",
    "critical_header",
]


class SidecarError(Exception):
    """Base of the errors a request can end with; ``status`` and ``code`` are stable."""

    status: ClassVar[int] = 500
    code: str = "internal_error"  # an instance may narrow it (Forbidden)
    default_message: ClassVar[str] = "the sidecar failed to handle the request"

    # Seconds a client should wait before retrying (the Retry-After header), when known.
    retry_after: float | None = None

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 details: Mapping[str, object] | None = None) -> None:
        self.message = message or self.default_message
        if retry_after is not None:
            self.retry_after = retry_after
        # Machine-readable facts added to the body under the code's name (e.g. which budget, its
        # limit and reset time); built from policy names and numbers only, never from secrets.
        self.details = dict(details or {})
        super().__init__(self.message)

    def body(self) -> dict[str, dict[str, object]]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        error.update(self.details)
        return {"error": error}


class AuthError(SidecarError):
    """401: the caller is not authenticated. The body is the same whatever ``reason`` is."""

    status = 401
    code = "invalid_token"
    default_message = "a valid bearer token is required"

    def __init__(self, reason: AuthFailure, detail: str = "") -> None:
        super().__init__()
        self.reason: AuthFailure = reason
        # For the audit log and debug logs only (already free of token material).
        self.detail = detail

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.detail!r})"


class MissingToken(AuthError):
    """401 without any credentials: a separate code so clients can tell "log in" from "re-login"."""

    code = "missing_token"
    default_message = "this endpoint needs an Authorization: Bearer token"

    def __init__(self) -> None:
        super().__init__("missing", "no bearer token")


class Forbidden(SidecarError):
    """403: authenticated, not allowed. ``code`` says which rule refused (see authz.Decision)."""

    status = 403
    code = "forbidden"
    default_message = "not allowed"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # one class, several stable 403 codes


class BadRequest(SidecarError):
    status = 400
    code = "bad_request"
    default_message = "the request is malformed"


class NotFound(SidecarError):
    status = 404
    code = "not_found"
    default_message = "no such endpoint"


class MethodNotAllowed(SidecarError):
    status = 405
    code = "method_not_allowed"
    default_message = "this endpoint does not accept that method"


class BodyTooLarge(SidecarError):
    status = 413
    code = "body_too_large"
    default_message = "the request body is larger than the sidecar accepts"


class MintingNotConfigured(SidecarError):
    status = 501
    code = "token_minting_not_configured"
    default_message = "this sidecar has no signing key (bundle auth.signingKeyFile or an HS256 keyFile)"


class AgentUnavailable(SidecarError):
    status = 502
    code = "agent_unavailable"
    default_message = "the agent is not accepting connections"


class AgentBadResponse(SidecarError):
    status = 502
    code = "agent_bad_response"
    default_message = "the agent closed the connection or sent an invalid response"


class PolicyUnavailable(SidecarError):
    status = 503
    code = "policy_unavailable"
    default_message = "the sidecar has no valid policy bundle loaded"


class AuthUnavailable(SidecarError):
    status = 503
    code = "auth_unavailable"
    default_message = "the token signing keys could not be fetched; try again later"


class AuditUnavailable(SidecarError):
    status = 503
    code = "audit_unavailable"
    default_message = "the audit log cannot be written; privileged operations are refused until it can"


class AgentTimeout(SidecarError):
    status = 504
    code = "agent_timeout"
    default_message = "the agent did not answer in time"


class ExecutionRequired(SidecarError):
    """400 on the egress port: model and tool calls must name the execution they belong to."""

    status = 400
    code = "execution_id_required"
    default_message = "send the X-Agentgov-Execution-Id the sidecar gave the agent with this request"


class ModelNotFound(SidecarError):
    status = 404
    code = "model_not_found"
    default_message = "no route for this model"


class ToolNotFound(SidecarError):
    status = 404
    code = "tool_not_found"
    default_message = "no such tool"


class BudgetExceeded(SidecarError):
    """429: a Hard budget has no room for this call. ``details`` say which budget, its period,
    limit, spend and when it resets."""

    status = 429
    code = "budget_exceeded"
    default_message = "the budget for this call is exhausted"


class RateLimited(SidecarError):
    status = 429
    code = "rate_limited"
    default_message = "too many requests; slow down"


class UpstreamUnavailable(SidecarError):
    status = 502
    code = "upstream_unavailable"
    default_message = "the upstream is not accepting connections"


class UpstreamBadResponse(SidecarError):
    status = 502
    code = "upstream_bad_response"
    default_message = "the upstream closed the connection or sent an invalid response"


class CircuitOpen(SidecarError):
    """503 while a breaker is open and no fallback applies; Retry-After says when it half-opens."""

    status = 503
    code = "circuit_open"
    default_message = "the upstream is failing; calls are paused"


class BudgetStoreUnavailable(SidecarError):
    """503 when the spend store cannot be reached and the budget's failure policy is Closed."""

    status = 503
    code = "budget_store_unavailable"
    default_message = "spend cannot be checked (the budget store is unreachable); the budget's failure policy is Closed"


class UpstreamTimeout(SidecarError):
    status = 504
    code = "upstream_timeout"
    default_message = "the upstream did not answer in time"


class InternalError(SidecarError):
    """500: a bug. The body never says more than this (details go to the log, redacted)."""


# Every code a client can see, with its status: the table docs and tests are checked against.
FORBIDDEN_CODES: Final[tuple[str, ...]] = (
    "permission_denied",
    "scope_required",
    "role_required",
    "unknown_role",
    "tool_not_allowed",
    "tool_method_not_allowed",
    "mint_not_narrower",
    "unknown_execution",
    "data_class_not_allowed",
    "region_not_allowed",
)
ERROR_CODES: Final[dict[str, int]] = {
    **{cls.code: cls.status for cls in (
        AuthError, MissingToken, BadRequest, NotFound, MethodNotAllowed, BodyTooLarge,
        MintingNotConfigured, AgentUnavailable, AgentBadResponse, PolicyUnavailable,
        AuthUnavailable, AuditUnavailable, AgentTimeout, InternalError, ExecutionRequired, ModelNotFound,
        ToolNotFound, BudgetExceeded, RateLimited, UpstreamUnavailable, UpstreamBadResponse, CircuitOpen,
        BudgetStoreUnavailable, UpstreamTimeout,
    )},
    **{code: Forbidden.status for code in FORBIDDEN_CODES},
}


class ConfigError(Exception):
    """A bundle, key file or setting the sidecar cannot use; the message names the file or field."""


class KeyMaterialError(ConfigError):
    """A key file or JWKS entry that cannot be used (too short, wrong family, unparsable)."""
