"""ToolPolicy (``tpol``): roles and permissions, and the tools agents may call.

Roles map to permissions; the shipped roles (admin, developer, analyst, viewer) apply unless
``inheritDefaultRoles`` is false, and a role given here replaces the shipped one of the same
name. Each tool names its upstream, the permission and token scopes a caller needs, and how
calls to it are guarded (timeout, rate limit, circuit breaker, fallback). Anything not listed
is denied. No I/O here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentgov.api import defaults as shipped
from agentgov.api.base import (
    DNSLabel,
    HttpUrl,
    Model,
    ResourceStatus,
    Rule,
    SecretKeyRef,
    NAMED_LIST,
    unique_names_rule,
)
from agentgov.api.defaults import Permission

Scope = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.:/-]+$")]


class Role(Model):
    """A role and the permissions it grants."""

    name: DNSLabel = Field(description="Role name, as carried in the token's `role` claim.")
    permissions: list[Permission] = Field(
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Permissions granted; `tool:all` grants every tool permission.",
    )


class CircuitBreaker(Model):
    """When to stop calling a failing upstream, and when to try it again."""

    failure_threshold: int = Field(
        shipped.BREAKER_FAILURE_THRESHOLD, ge=1, le=1000,
        description="Consecutive failures that open the breaker.",
    )
    call_timeout_seconds: int = Field(
        shipped.BREAKER_CALL_TIMEOUT_SECONDS, ge=1, le=3600,
        description="A call slower than this counts as a failure.",
    )
    recovery_timeout_seconds: int = Field(
        shipped.BREAKER_RECOVERY_TIMEOUT_SECONDS, ge=1, le=86400,
        description="How long the breaker stays open before letting a trial call through (half-open).",
    )
    half_open_successes: int = Field(
        shipped.BREAKER_HALF_OPEN_SUCCESSES, ge=1, le=100,
        description="Successful trial calls needed in half-open to close the breaker again.",
    )


class RateLimit(Model):
    """A fixed-window request limit per caller."""

    requests_per_minute: int = Field(ge=1, le=1_000_000, description="Requests allowed per caller per minute.")


class Fallback(Model):
    """What a caller gets when the tool is unavailable (breaker open, timeout, upstream error)."""

    type: Literal["StaticResponse", "Tool", "Error"] = Field(
        description="StaticResponse: answer `response`. Tool: call the named tool instead. Error: a clear 503.",
    )
    response: str | None = Field(
        None, max_length=65536, description="The JSON body returned when type is StaticResponse."
    )
    tool: DNSLabel | None = Field(None, description="The tool called instead when type is Tool.")

    cel_rules = (
        Rule(
            cel="self.type != 'StaticResponse' || has(self.response)",
            message="a StaticResponse fallback needs `response`",
            check=lambda m: m.type != "StaticResponse" or m.response is not None,
        ),
        Rule(
            cel="self.type != 'Tool' || has(self.tool)",
            message="a Tool fallback needs `tool`",
            check=lambda m: m.type != "Tool" or m.tool is not None,
        ),
    )


class ToolDefaults(Model):
    """Guards applied to every tool that does not set its own."""

    timeout_seconds: int = Field(30, ge=1, le=3600, description="Upstream call timeout.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, description="Breaker settings.")
    rate_limit: RateLimit | None = Field(None, description="Per-caller rate limit; none when absent.")


class Tool(Model):
    """A tool (an HTTP API) agents may call through the sidecar at /tools/{name}/..."""

    name: DNSLabel = Field(description="Tool name; the path segment under /tools/.")
    upstream: HttpUrl = Field(description="Base URL the sidecar forwards tool calls to.")
    permission: Literal["tool:read", "tool:write"] = Field(
        "tool:read", description="Permission the caller's role needs (tool:all satisfies either)."
    )
    scopes: list[Scope] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Token scopes the caller must all hold, e.g. financial_data.",
    )
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE"]] = Field(
        default_factory=list,
        max_length=5,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="HTTP methods allowed; all when empty.",
    )
    timeout_seconds: int | None = Field(None, ge=1, le=3600, description="Overrides defaults.timeoutSeconds.")
    rate_limit: RateLimit | None = Field(None, description="Overrides defaults.rateLimit.")
    circuit_breaker: CircuitBreaker | None = Field(None, description="Overrides defaults.circuitBreaker.")
    fallback: Fallback | None = Field(None, description="What to answer when the tool is unavailable.")
    credentials_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key sent upstream as a bearer token; never exposed to the agent."
    )


class ToolPolicySpec(Model):
    """Desired state of a ToolPolicy."""

    inherit_default_roles: bool = Field(
        True, description="Start from the shipped roles (admin, developer, analyst, viewer)."
    )
    roles: list[Role] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=NAMED_LIST, description="Roles added to, or replacing by name, the shipped ones.",
    )
    tools: list[Tool] = Field(default_factory=list, max_length=128, json_schema_extra=NAMED_LIST, description="Tools agents may call.")
    defaults: ToolDefaults = Field(default_factory=ToolDefaults, description="Guards for tools that set none.")
    default_action: Literal["Deny", "Allow"] = Field(
        "Deny",
        description="For a tool not listed. Deny (recommended) refuses it; Allow still requires authentication.",
    )

    cel_rules = (
        unique_names_rule("roles", "roles", "role"),
        unique_names_rule("tools", "tools", "tool"),
        Rule(
            cel="!has(self.tools) || self.tools.all(t, !has(t.fallback) || !has(t.fallback.tool) || "
            "(t.fallback.tool != t.name && self.tools.exists(u, u.name == t.fallback.tool)))",
            message="a fallback tool must be another tool of this policy",
            check=lambda m: all(
                t.fallback is None
                or t.fallback.tool is None
                or (t.fallback.tool != t.name and any(u.name == t.fallback.tool for u in m.tools))
                for t in m.tools
            ),
            field_path=".tools",
        ),
    )

    def effective_roles(self) -> dict[str, tuple[Permission, ...]]:
        """Role name -> permissions after applying inheritance and overrides."""
        roles: dict[str, tuple[Permission, ...]] = (
            dict(shipped.DEFAULT_ROLES) if self.inherit_default_roles else {}
        )
        roles.update({role.name: tuple(role.permissions) for role in self.roles})
        return roles


class ToolPolicyStatus(ResourceStatus):
    """What the operator compiled from the policy."""

    tools: int | None = Field(None, ge=0, description="Number of tools in force.")
    roles: int | None = Field(None, ge=0, description="Number of roles in force, shipped ones included.")
