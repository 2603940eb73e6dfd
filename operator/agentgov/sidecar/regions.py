"""Region selection for model calls: which regions may serve a request, in which order. Pure.

A request's data classes come from the ``X-Agentgov-Data-Class`` header (comma-separated; it
can only narrow what the agent declares) or, without it, from the agent's declared classes
(``request_data_classes``). ``plan_route`` turns the classes and the caller's location (the
token's ``region`` claim) into a :class:`RoutePlan`:

1. a region must be allowed to hold every data class of the request;
2. every matching *Required* rule filters the regions (shipped: sensitive and PII data only
   on-premise); nothing left -> ``403 region_not_allowed`` naming the data classes and rules;
3. matching *Preferred* rules order what is left (shipped: callers in ``eu-*`` get ``eu-*``
   regions first), earlier rules first;
4. then the bundle's default region, then the lowest latency SLO, then the name.

``pick_region`` walks the plan at call time, skipping regions at capacity or whose breaker is
open; it never picks a region outside the plan, so a Required rule can never be escaped by
load or failures. A bundle without regions gives an empty plan: the model route's own
endpoint serves the call. Timeouts and retries per region follow the playbook's
``get_deployment_config``: twice the latency SLO, three retries.

Error messages name data classes, rules and regions from the policy; they repeat a header
value only when it is a short token of safe characters. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from agentgov.api.base import DATA_CLASSES, DataClass
from agentgov.api.bundle import PolicyBundle
from agentgov.api.regionpolicy import Region, RoutingRule
from agentgov.sidecar.errors import BadRequest, Forbidden

DATA_CLASS_HEADER: Final = "X-Agentgov-Data-Class"
# Five classes with separators and spaces fit easily; anything longer is not a class list.
MAX_DATA_CLASS_HEADER: Final = 128
REGION_RETRIES: Final = 3
_SAFE_TOKEN: Final = re.compile(r"[a-z0-9_-]{1,32}")


@dataclass(frozen=True)
class RoutePlan:
    """Where a request may go. ``regions`` is the ordered candidate list (empty: no regions in
    the bundle, use the model route's endpoint); ``rules`` names the rules that applied."""

    regions: tuple[Region, ...]
    rules: tuple[str, ...] = ()
    required: bool = False
    data_classes: tuple[DataClass, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(region.name for region in self.regions)


def _ordered(classes: Iterable[str]) -> tuple[DataClass, ...]:
    wanted = set(classes)
    return tuple(c for c in DATA_CLASSES if c in wanted)  # type: ignore[misc]


def _show(token: str) -> str:
    return repr(token) if _SAFE_TOKEN.fullmatch(token) else "an unrecognised value"


def request_data_classes(header: str | None, bundle: PolicyBundle) -> tuple[DataClass, ...]:
    """The data classes of a request, in canonical order (public ... pii), duplicates dropped.

    Raises BadRequest for a malformed header or an unknown class, and
    ``Forbidden("data_class_not_allowed")`` for a class the agent does not declare.
    """
    declared = _ordered(bundle.data_classes)
    if header is None:
        return declared
    if len(header) > MAX_DATA_CLASS_HEADER:
        raise BadRequest(f"{DATA_CLASS_HEADER} is longer than {MAX_DATA_CLASS_HEADER} characters")
    if not header.isascii() or not header.isprintable():
        raise BadRequest(f"{DATA_CLASS_HEADER} must be printable ASCII: a comma-separated list of data classes")
    items = [item.strip().lower() for item in header.split(",")]
    if not any(items):
        raise BadRequest(f"{DATA_CLASS_HEADER} is empty; send one or more of {', '.join(DATA_CLASSES)}")
    if not all(items):
        raise BadRequest(f"{DATA_CLASS_HEADER} has an empty item; separate data classes with single commas")
    for item in items:
        if item not in DATA_CLASSES:
            raise BadRequest(f"{DATA_CLASS_HEADER}: {_show(item)} is not a data class "
                             f"(known: {', '.join(DATA_CLASSES)})")
    requested = _ordered(items)
    undeclared = [c for c in requested if c not in declared]
    if undeclared:
        raise Forbidden(
            "data_class_not_allowed",
            f"agent {bundle.agent.name} does not declare data class {', '.join(undeclared)} "
            f"(declared: {', '.join(declared) or 'none'})",
        )
    return requested


def _matches_region(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def rule_applies(rule: RoutingRule, data_classes: Collection[str], user_region: str | None) -> bool:
    """A rule applies when each of its match lists that is given matches (both must, if both)."""
    match = rule.match
    if match.data_classes and not set(match.data_classes) & set(data_classes):
        return False
    if match.user_regions and (user_region is None or not _matches_region(user_region, match.user_regions)):
        return False
    return bool(match.data_classes or match.user_regions)


def route_admits(rule: RoutingRule, region: Region) -> bool:
    """Whether a rule's route includes a region (both conditions, if both are given)."""
    route = rule.route
    if route.on_premise is not None and region.on_premise != route.on_premise:
        return False
    return not route.regions or _matches_region(region.name, route.regions)


def _describe_route(rule: RoutingRule) -> str:
    parts = []
    if rule.route.on_premise is not None:
        parts.append("on-premise regions only" if rule.route.on_premise else "cloud regions only")
    if rule.route.regions:
        parts.append("regions " + ", ".join(rule.route.regions))
    return f"rule {rule.name} ({'; '.join(parts)})"


def _refusal(classes: tuple[DataClass, ...], required: Sequence[RoutingRule],
             by_rules: Sequence[Region]) -> Forbidden:
    """The 403 when no region is left, naming the data classes at fault and the rules."""
    if required and not by_rules:
        # The rules alone leave nothing: blame the classes that made them apply.
        triggering = {c for rule in required for c in rule.match.data_classes if c in classes}
        culprits = _ordered(triggering) or classes
        where = "; ".join(_describe_route(rule) for rule in required)
        return Forbidden("region_not_allowed",
                         f"no region may process data class {', '.join(culprits)}: {where} applies, "
                         f"and no configured region qualifies")
    # Regions are left, but none may hold every class: blame the classes none of them allows.
    unheld = [c for c in classes if not any(c in region.data_classes for region in by_rules)]
    culprits = tuple(unheld) or classes
    scope = (" under " + "; ".join(_describe_route(rule) for rule in required)) if required else ""
    return Forbidden("region_not_allowed",
                     f"no region{scope} may process data class {', '.join(culprits)} "
                     f"(regions considered: {', '.join(r.name for r in by_rules)})")


def plan_route(bundle: PolicyBundle, data_classes: Sequence[DataClass], user_region: str | None) -> RoutePlan:
    """The ordered regions a request may go to (see the module docstring for the order).

    Raises ``Forbidden("region_not_allowed")`` when the bundle has regions and none is allowed.
    """
    classes = _ordered(data_classes)
    if not bundle.regions:
        return RoutePlan(regions=(), data_classes=classes)
    where = user_region.lower() if user_region else None
    applying = [rule for rule in bundle.routing_rules if rule_applies(rule, classes, where)]
    required = [rule for rule in applying if rule.enforcement == "Required"]
    preferred = [rule for rule in applying if rule.enforcement == "Preferred"]

    by_rules = [r for r in bundle.regions if all(route_admits(rule, r) for rule in required)]
    allowed = [r for r in by_rules if all(c in r.data_classes for c in classes)]
    if not allowed:
        raise _refusal(classes, required, by_rules)

    def preference(region: Region) -> tuple[int, int, int, str]:
        rank = next((i for i, rule in enumerate(preferred) if route_admits(rule, region)), len(preferred))
        return (rank, 0 if region.name == bundle.default_region else 1, region.latency_slo_ms, region.name)

    return RoutePlan(
        regions=tuple(sorted(allowed, key=preference)),
        rules=tuple(rule.name for rule in applying),
        required=bool(required),
        data_classes=classes,
    )


def pick_region(plan: RoutePlan, in_flight: Mapping[str, int], unavailable: Collection[str]) -> Region | None:
    """The first region of the plan below its capacity and not refused by its breaker; None when
    every one is full or failing (the caller answers 503). Never a region outside the plan."""
    for region in plan.regions:
        if region.name in unavailable:
            continue
        if in_flight.get(region.name, 0) >= region.capacity:
            continue
        return region
    return None


def region_timeout_seconds(region: Region) -> float:
    """Timeout of one call to a region: twice its latency SLO."""
    return 2 * region.latency_slo_ms / 1000
