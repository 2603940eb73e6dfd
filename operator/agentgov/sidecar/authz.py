"""Authorization: ``decide(identity, route, bundle) -> Decision``. Pure and table-tested.

A route is what the request wants to do, classified from its method and path (``classify``):

- ``AgentRoute``: anything proxied to the agent; needs ``agent:execute`` and every scope in
  ``bundle.auth.requiredScopes``;
- ``ToolRoute``: a call to a tool under ``/tools/{name}`` (served on the egress port, issue 5);
  needs the tool's permission (``tool:all`` grants both tool permissions), all its scopes and
  an allowed method; a tool the bundle does not list follows ``defaultToolAction``;
- ``AdminRoute``: the sidecar's own admin API (minting scoped tokens); needs the ``admin`` role.
  Admin routes are *privileged*: they fail closed when the audit log cannot be written.

Roles come from the bundle (the shipped admin/developer/analyst/viewer merged with the
ToolPolicy's). A role the bundle does not know grants nothing. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from agentgov.api.bundle import PolicyBundle
from agentgov.api.defaults import TOOL_PERMISSIONS, Permission
from agentgov.sidecar.auth import Identity

ADMIN_ROLE: Final = "admin"
# The sidecar's own endpoints on the inbound port; everything else is the agent's.
ADMIN_PREFIX: Final = "/agentgov/"
TOKENS_PATH: Final = "/agentgov/v1/tokens"
TOOLS_PREFIX: Final = "/tools/"


@dataclass(frozen=True)
class AgentRoute:
    """A request forwarded to the agent (any path outside the sidecar's own)."""

    method: str
    path: str


@dataclass(frozen=True)
class ToolRoute:
    """A call to a tool: ``/tools/{tool}/...``."""

    tool: str
    method: str


@dataclass(frozen=True)
class AdminRoute:
    """One of the sidecar's admin operations."""

    action: Literal["tokens:create"]


Route = AgentRoute | ToolRoute | AdminRoute


@dataclass(frozen=True)
class Decision:
    """The outcome, with a stable ``code`` and a message naming the rule (never the token)."""

    allowed: bool
    code: str
    message: str
    permission: Permission | None = None
    missing_scopes: tuple[str, ...] = ()
    privileged: bool = False


def permissions_of(role: str | None, roles: Mapping[str, Sequence[Permission]]) -> frozenset[Permission]:
    """The permissions a role grants, ``tool:all`` expanded into every tool permission."""
    if role is None or role not in roles:
        return frozenset()
    granted = set(roles[role])
    if "tool:all" in granted:
        granted.update(TOOL_PERMISSIONS)
    return frozenset(granted)


def classify(method: str, path: str) -> Route | None:
    """What an inbound request wants; None for a path under the sidecar's prefix it does not serve."""
    if path == TOKENS_PATH or path.startswith(ADMIN_PREFIX):
        return AdminRoute("tokens:create") if path == TOKENS_PATH and method == "POST" else None
    return AgentRoute(method=method, path=path)


def classify_tool(method: str, path: str) -> ToolRoute | None:
    """``/tools/{name}/rest`` -> ToolRoute(name); None when the path names no tool."""
    if not path.startswith(TOOLS_PREFIX):
        return None
    name = path[len(TOOLS_PREFIX):].split("/", 1)[0]
    return ToolRoute(tool=name, method=method) if name else None


def _missing(required: Iterable[str], held: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(set(required) - held))


def _needs(identity: Identity, bundle: PolicyBundle, permission: Permission, what: str,
           scopes: Iterable[str], privileged: bool = False) -> Decision:
    if identity.role is None:
        return Decision(False, "role_required", f"the token carries no role; {what} needs {permission}",
                        permission, privileged=privileged)
    if identity.role not in bundle.roles:
        return Decision(False, "unknown_role", "the token's role is not defined by this agent's policy",
                        permission, privileged=privileged)
    if permission not in permissions_of(identity.role, bundle.roles):
        return Decision(False, "permission_denied",
                        f"role {identity.role!r} lacks permission {permission} ({what})",
                        permission, privileged=privileged)
    missing = _missing(scopes, identity.scopes)
    if missing:
        return Decision(False, "scope_required", f"{what} needs token scope(s) {', '.join(missing)}",
                        permission, missing, privileged=privileged)
    return Decision(True, "allowed", f"{what}: allowed by role {identity.role!r}", permission, privileged=privileged)


def decide(identity: Identity, route: Route, bundle: PolicyBundle) -> Decision:
    """Whether ``identity`` may take ``route`` under ``bundle``."""
    if isinstance(route, AgentRoute):
        return _needs(identity, bundle, "agent:execute", "executing the agent", bundle.auth.required_scopes)
    if isinstance(route, AdminRoute):
        if identity.role != ADMIN_ROLE:
            return Decision(False, "role_required", f"{route.action} needs the {ADMIN_ROLE} role",
                            privileged=True)
        return Decision(True, "allowed", f"{route.action}: allowed for the {ADMIN_ROLE} role", privileged=True)
    tool = next((t for t in bundle.tools if t.name == route.tool), None)
    if tool is None:
        if bundle.default_tool_action == "Deny":
            return Decision(False, "tool_not_allowed", f"tool {route.tool!r} is not in this agent's policy")
        return Decision(True, "allowed", f"tool {route.tool!r}: not listed, allowed by defaultToolAction")
    if tool.methods and route.method.upper() not in tool.methods:
        return Decision(False, "tool_method_not_allowed",
                        f"tool {tool.name!r} allows {', '.join(tool.methods)}, not {route.method.upper()}",
                        tool.permission)
    return _needs(identity, bundle, tool.permission, f"tool {tool.name!r}", tool.scopes,
                  privileged=tool.permission == "tool:write")
