"""Pure builders: an AgentDeployment and what it references in, child manifests out.

Everything the operator creates for an agent is decided here, from ``Inputs`` alone, as plain
dicts the handlers apply: no API calls, no clock, no randomness, no environment reads. The
same ``Inputs`` always give byte-identical output (lists in spec order or sorted, never in
the order a mapping happened to be filled), so a reconcile that changes nothing writes nothing,
and ``agentgov render`` shows exactly what the operator would write.

The handler's sequence::

    missing = missing_references(inputs)     # -> condition naming them; leave children as they are
    children = build_children(inputs)        # BuildError -> Stalled (names the field); apply in order
    stale = owned children whose (apiVersion, kind, name) is not in child_keys(inputs) -> delete

One module per child kind; ``bundle`` compiles the policy bundle, ``placement`` decides the
regions, ``naming`` holds the names, labels and owner references every child shares.
``secret`` builds ``<agent>-secrets`` from values the secrets sync read (``controller/secretsync.py``);
it is no part of ``build_children``, which never sees a secret value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final, Protocol

from agentgov.api.bundle import PolicyBundle
from agentgov.controller.builders import (
    configmap,
    deployment,
    horizontalpodautoscaler,
    ingress,
    networkpolicy,
    placement,
    poddisruptionbudget,
    service,
    serviceaccount,
)
from agentgov.controller.builders.bundle import compile_bundle, missing_references
from agentgov.controller.builders.inputs import BuildError, Inputs, Manifest, UnresolvedReferences
from agentgov.controller.builders.naming import (
    BUNDLE_HASH_ANNOTATION,
    SECRETS_HASH_ANNOTATION,
    bundle_configmap_name,
    selector_labels,
    selector_string,
    workload_name,
)

ChildKey = tuple[str, str, str]


class _ChildModule(Protocol):
    """What every child module has (``service``, ``deployment``, ...)."""

    API_VERSION: str
    KIND: str

    def name(self, inputs: Inputs) -> str: ...


# Every child module, in apply order, with the test for a child the spec may turn off (None:
# always built). CHILD_KINDS and child_keys read it; build_children_from keeps the same order.
_CHILDREN: Final[tuple[tuple[_ChildModule, Callable[[Inputs], bool] | None], ...]] = (
    (serviceaccount, None),
    (configmap, None),
    (networkpolicy, networkpolicy.wanted),
    (deployment, None),
    (service, None),
    (poddisruptionbudget, None),
    (horizontalpodautoscaler, horizontalpodautoscaler.wanted),
    (ingress, ingress.wanted),
)

# Every (apiVersion, kind) the builders may produce, in apply order: what a handler lists
# (by the instance label) to find children that are no longer wanted.
CHILD_KINDS: Final[tuple[tuple[str, str], ...]] = tuple((module.API_VERSION, module.KIND) for module, _ in _CHILDREN)


def build_children(inputs: Inputs) -> list[Manifest]:
    """Every child manifest, in apply order: identity and policy before the pods that use
    them, the NetworkPolicy before the first pod starts, the Service before the Ingress and
    the Deployment before its autoscaler. Raises UnresolvedReferences or BuildError."""
    bundle = compile_bundle(inputs)
    return build_children_from(inputs, bundle)


def build_children_from(inputs: Inputs, bundle: PolicyBundle) -> list[Manifest]:
    """``build_children`` for a bundle already compiled from the same ``inputs``."""
    children = [serviceaccount.build(inputs), configmap.build(inputs, bundle)]
    if networkpolicy.wanted(inputs):
        children.append(networkpolicy.build(inputs, bundle))
    children.append(deployment.build(inputs, bundle, placement.node_affinity(inputs)))
    children.append(service.build(inputs))
    children.append(poddisruptionbudget.build(inputs))
    if horizontalpodautoscaler.wanted(inputs):
        children.append(horizontalpodautoscaler.build(inputs))
    if ingress.wanted(inputs):
        children.append(ingress.build(inputs, bundle))
    # A JSON round trip: plain JSON types only, and no dict shared between two places (or
    # with a module constant), so a caller may mutate what it gets (kopf.adopt does).
    result: list[Manifest] = json.loads(json.dumps(children))
    return result


def child_keys(inputs: Inputs, *, all_optional: bool = False) -> list[ChildKey]:
    """(apiVersion, kind, name) of each child ``build_children`` makes, in the same order;
    with ``all_optional``, also the children the spec has turned off (NetworkPolicy, HPA,
    Ingress), i.e. every child the agent could have: what to look for when deleting.
    Never raises for a parsed spec (it compiles nothing), so a handler can compute what to
    delete even when the spec is stalled."""
    return [
        (module.API_VERSION, module.KIND, module.name(inputs))
        for module, wanted in _CHILDREN
        if all_optional or wanted is None or wanted(inputs)
    ]


def referenced_secrets(inputs: Inputs, bundle: PolicyBundle) -> list[str]:
    """Names of the Secrets the agent's pods read (sorted), for ``bundle`` compiled from the same
    ``inputs``: the handler reads their resourceVersions into ``Inputs.secret_versions`` so a
    change rolls the pods. Includes the budget-store Secret and, when ``spec.secrets`` uses
    Vault/AWS/Azure, ``<agent>-secrets``."""
    return deployment.referenced_secret_names(inputs, bundle)


__all__ = [
    "BUNDLE_HASH_ANNOTATION",
    "CHILD_KINDS",
    "SECRETS_HASH_ANNOTATION",
    "BuildError",
    "ChildKey",
    "Inputs",
    "Manifest",
    "UnresolvedReferences",
    "build_children",
    "build_children_from",
    "bundle_configmap_name",
    "child_keys",
    "compile_bundle",
    "missing_references",
    "referenced_secrets",
    "selector_labels",
    "selector_string",
    "workload_name",
]
