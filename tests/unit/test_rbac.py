"""The operator's RBAC grants exactly the API calls the operator makes: derived from the code,
compared with the Helm chart's and the kustomize manifests' roles, no wildcards, no extras.

What the operator calls is collected from three places, none of them a hand-kept list:

- agentgov's own calls: every ``KubeApi`` call (get/create/merge_patch/delete) in
  ``agentgov.controller``, found by walking the source (AST) and resolving the
  ``object_path(apiVersion, kind, ...)`` it is given through constants, f-strings, loops over
  module constants and the arguments of the function's callers. The one call site that writes
  whatever the builders built (``reconcile.apply_child``) is resolved through
  ``builders.CHILD_KINDS``, the list of every kind the builders may produce. A call site the
  resolver cannot follow fails the test, naming file and line.
- kopf's calls for agentgov's handlers, read from kopf's registry after importing the handlers:
  every handled resource is listed and watched; those with create/update/resume handlers or
  timers are patched too (kopf's progress annotations and finalizer).
- kopf's own needs: CRD discovery (list, watch), namespaces (list, watch) when it watches a list
  of namespaces, peering objects (list, watch, patch) when several replicas run, and Events.

tests/integration/test_operator_rbac.py checks the other direction against the running
operator: every request it sends is granted by these roles.
"""

from __future__ import annotations

import ast
import copy
import importlib
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kopf
import pytest
import yaml

from agentgov.controller import builders, handlers, kube

REPO = Path(__file__).resolve().parents[2]
CONTROLLER = REPO / "operator" / "agentgov" / "controller"
CHART = REPO / "charts" / "agentgov"
KUSTOMIZE = REPO / "manifests"
OPERATOR_ROLE = "agentgov-operator"
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH (CI installs it)")

Permission = tuple[str, str, str]  # (API group, resource[/subresource], verb)

KUBE_VERBS = {"get": "get", "create": "create", "merge_patch": "patch", "delete": "delete"}
# Call sites whose object is whatever the builders built: the builders' list of kinds.
DYNAMIC_SITES: Mapping[str, tuple[tuple[str, str], ...]] = {"apply_child": builders.CHILD_KINDS}
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


class Unresolved(Exception):
    """An expression the resolver cannot reduce to constants."""


@dataclass(frozen=True)
class Function:
    module: str
    node: ast.FunctionDef | ast.AsyncFunctionDef

    @property
    def params(self) -> list[str]:
        args = self.node.args
        return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]


class Package:
    """The controller package's source: its functions by name, and its modules' constants."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.trees = {module: ast.parse(text) for module, text in sources.items()}
        self.functions: dict[str, list[Function]] = {}
        for module, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions.setdefault(node.name, []).append(Function(module, node))

    def constant(self, module: str, name: str) -> Any:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise Unresolved(f"{module}.{name}") from None

    def call_sites(self, function: str) -> Iterator[tuple[Function, ast.Call]]:
        for functions in self.functions.values():
            for caller in functions:
                for node in ast.walk(caller.node):
                    if isinstance(node, ast.Call) and _callee(node) == function:
                        yield caller, node

    # --- values -------------------------------------------------------------------------------

    def values(self, expr: ast.expr, where: Function, depth: int = 0) -> set[Any]:
        """Every value ``expr`` can have in ``where`` (strings, or tuples from loops)."""
        if depth > 6:
            raise Unresolved(ast.unparse(expr))
        if isinstance(expr, ast.Constant):
            return {expr.value}
        if isinstance(expr, ast.JoinedStr):
            results = {""}
            for part in expr.values:
                options = ({part.value} if isinstance(part, ast.Constant)
                           else self.values(part.value, where, depth + 1) if isinstance(part, ast.FormattedValue)
                           else set())
                results = {r + str(o) for r in results for o in options}
            return results
        if isinstance(expr, ast.Name):
            return self._name(expr.id, where, depth)
        raise Unresolved(ast.unparse(expr))

    def _name(self, name: str, where: Function, depth: int) -> set[Any]:
        assigned = [n.value for n in ast.walk(where.node) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]
        if assigned:
            return set().union(*(self.values(value, where, depth + 1) for value in assigned))
        for loop in (n for n in ast.walk(where.node) if isinstance(n, (ast.For, ast.AsyncFor))):
            if isinstance(loop.target, ast.Tuple) and isinstance(loop.iter, ast.Name):
                names = [t.id if isinstance(t, ast.Name) else None for t in loop.target.elts]
                if name in names:
                    items = self.constant(where.module, loop.iter.id)
                    return {item[names.index(name)] for item in items}
        if name in where.params:
            position = where.params.index(name)
            found: set[Any] = set()
            sites = list(self.call_sites(where.node.name))
            if not sites:
                raise Unresolved(f"parameter {name} of {where.node.name} (no callers)")
            for caller, call in sites:
                keyword = next((k.value for k in call.keywords if k.arg == name), None)
                if keyword is not None:
                    found |= self.values(keyword, caller, depth + 1)
                elif position < len(call.args):
                    found |= self.values(call.args[position], caller, depth + 1)
            return found
        value = self.constant(where.module, name)
        if isinstance(value, str):
            return {value}
        raise Unresolved(name)

    # --- paths ----------------------------------------------------------------------------------

    def paths(self, expr: ast.expr, where: Function, depth: int = 0) -> set[tuple[str, str, bool, str]]:
        """(apiVersion, kind, names an object, subresource) of each path ``expr`` can be."""
        if depth > 6:
            raise Unresolved(ast.unparse(expr))
        if isinstance(expr, ast.Call) and _callee(expr) == "object_path":
            args = list(expr.args)
            named = len(args) >= 4 or any(k.arg == "name" for k in expr.keywords)
            versions, kinds = self.values(args[0], where), self.values(args[1], where)
            return {(v, k, named, "") for v in versions for k in kinds if (v, k) in kube.PLURALS}
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add) and isinstance(expr.right, ast.Constant):
            sub = str(expr.right.value).lstrip("/")
            return {(v, k, named, sub) for v, k, named, _ in self.paths(expr.left, where, depth + 1)}
        if isinstance(expr, ast.Name):
            assigned = [n.value for n in ast.walk(where.node) if isinstance(n, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)]
            if assigned:
                return set().union(*(self.paths(value, where, depth + 1) for value in assigned))
            if expr.id in where.params:
                position = where.params.index(expr.id)
                found: set[tuple[str, str, bool, str]] = set()
                for caller, call in self.call_sites(where.node.name):
                    if position < len(call.args):
                        found |= self.paths(call.args[position], caller, depth + 1)
                if found:
                    return found
        raise Unresolved(ast.unparse(expr))


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _kube_api_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names typed ``KubeApi`` in a function: its parameters and annotated assignments."""
    names = {a.arg for a in [*function.args.args, *function.args.kwonlyargs]
             if a.annotation is not None and ast.unparse(a.annotation) == "KubeApi"}
    names |= {n.target.id for n in ast.walk(function) if isinstance(n, ast.AnnAssign)
              and isinstance(n.target, ast.Name) and ast.unparse(n.annotation) == "KubeApi"}
    return names


def _plural(api_version: str, kind: str) -> tuple[str, str]:
    group = api_version.rpartition("/")[0]
    return group, kube.PLURALS[(api_version, kind)]


def own_calls(package: Package) -> tuple[set[Permission], list[str]]:
    """The permissions agentgov's own KubeApi calls need, and the call sites it could not resolve."""
    needed: set[Permission] = set()
    unresolved: list[str] = []
    for functions in package.functions.values():
        for function in functions:
            receivers = _kube_api_names(function.node)
            for node in ast.walk(function.node):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id in receivers
                        and node.func.attr in KUBE_VERBS):
                    continue
                verb = KUBE_VERBS[node.func.attr]
                try:
                    paths = package.paths(node.args[0], function)
                except Unresolved as error:
                    if function.node.name not in DYNAMIC_SITES:
                        unresolved.append(f"{function.module}:{node.lineno} {ast.unparse(node)} ({error})")
                        continue
                    named = verb != "create"
                    paths = {(v, k, named, "") for v, k in DYNAMIC_SITES[function.node.name]}
                for api_version, kind, named, sub in paths:
                    group, plural = _plural(api_version, kind)
                    resource = f"{plural}/{sub}" if sub else plural
                    needed.add((group, resource, verb if named or verb != "get" else "list"))
    return needed, unresolved


def controller_package() -> Package:
    sources = {}
    for path in sorted(CONTROLLER.rglob("*.py")):
        module = ".".join(path.relative_to(REPO / "operator").with_suffix("").parts)
        sources[module.removesuffix(".__init__")] = path.read_text(encoding="utf-8")
    return Package(sources)


def kopf_handler_calls() -> set[Permission]:
    """What kopf does for agentgov's handlers: list+watch each resource; patch those it keeps
    state on (create/update/resume handlers: progress annotations; timers: the finalizer)."""
    assert handlers.GROUP  # imported: the handlers are registered
    registry = kopf.get_default_registry()
    needed: set[Permission] = set()
    for attribute, patched in (("_indexing", False), ("_watching", False), ("_changing", True), ("_spawning", True)):
        for handler in getattr(registry, attribute).get_all_handlers():
            selector = handler.selector
            plural = selector.plural or selector.any_name
            assert plural, f"kopf handler {handler.id} names no resource plural"
            group = "" if selector.group in (None, "v1") else selector.group
            needed |= {(group, plural, "list"), (group, plural, "watch")}
            if patched:
                needed.add((group, plural, "patch"))
    return needed


def derived_permissions(*, namespaced: bool, replicas: int) -> set[Permission]:
    package = controller_package()
    own, unresolved = own_calls(package)
    assert unresolved == []
    needed = own | kopf_handler_calls()
    # kopf posts Events (ours through kopf.info/warn/event, and its own for handler errors).
    needed.add(("", "events", "create"))
    # kopf's scanning of CRDs, always; of namespaces, when it serves a list of them.
    needed |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    if namespaced:
        needed |= {("", "namespaces", v) for v in ("list", "watch")}
    if replicas > 1:
        peerings = "kopfpeerings" if namespaced else "clusterkopfpeerings"
        needed |= {("kopf.dev", peerings, v) for v in ("list", "watch", "patch")}
    return needed


def granted(rules: Iterable[Mapping[str, Any]]) -> set[Permission]:
    permissions = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    permissions.add((group, resource, verb))
    return permissions


def split_by_scope(permissions: set[Permission]) -> tuple[set[Permission], set[Permission]]:
    cluster = {p for p in permissions if p[1].split("/")[0] in CLUSTER_SCOPED}
    return cluster, permissions - cluster


def render_chart(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(copy.deepcopy(dict(values)), name="agentgov", namespace="agentgov-system", is_install=True)
    return [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]


def kustomize(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(KUSTOMIZE / overlay)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def operator_roles(objects: list[dict[str, Any]]) -> tuple[set[Permission], dict[str, set[Permission]]]:
    """The operator's ClusterRole permissions, and its Roles' by namespace."""
    [cluster_role] = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == OPERATOR_ROLE]
    roles = {o["metadata"]["namespace"]: granted(o["rules"]) for o in objects if o["kind"] == "Role"}
    return granted(cluster_role["rules"]), roles


# --- the derivation ----------------------------------------------------------------------------

def test_every_kube_api_call_site_of_the_operator_is_resolved() -> None:
    own, unresolved = own_calls(controller_package())
    assert unresolved == []
    # The calls the reconcile and the status writers are known to make, as a floor.
    assert {("", "secrets", "get"), ("apps", "deployments", "create"), ("agentgov.io", "agentdeployments/status", "patch"),
            ("agentgov.io", "toolpolicies/status", "patch"), ("networking.k8s.io", "ingresses", "delete")} <= own
    # Children the spec can turn off are deleted; those it cannot are never deleted.
    assert ("", "configmaps", "delete") not in own and ("apps", "deployments", "delete") not in own


def test_the_resolver_follows_a_new_call_and_refuses_one_it_cannot_follow() -> None:
    source = (
        "from agentgov.controller.kube import KubeApi, object_path\n"
        "KINDS = (('v1', 'Secret'), ('v1', 'ConfigMap'))\n"
        "async def prune(api: KubeApi, ns: str) -> None:\n"
        "    for version, kind in KINDS:\n"
        "        await api.delete(object_path(version, kind, ns, 'x'))\n"
        "async def touch(api: KubeApi, thing: dict) -> None:\n"
        "    await api.merge_patch(object_path(thing['apiVersion'], 'Service', 'ns', 'x'), {})\n"
    )
    import types
    import sys

    module = types.ModuleType("agentgov_rbac_probe")
    exec(compile(source, "probe", "exec"), module.__dict__)  # noqa: S102 - a fixed test snippet
    sys.modules["agentgov_rbac_probe"] = module
    try:
        own, unresolved = own_calls(Package({"agentgov_rbac_probe": source}))
    finally:
        del sys.modules["agentgov_rbac_probe"]
    assert own == {("", "secrets", "delete"), ("", "configmaps", "delete")}
    assert len(unresolved) == 1 and unresolved[0].startswith("agentgov_rbac_probe:7 ")


def test_kopf_watches_every_resource_agentgov_handles_and_patches_only_those_it_keeps_state_on() -> None:
    calls = kopf_handler_calls()
    watched = {(g, r) for g, r, v in calls if v == "watch"}
    assert watched == {("agentgov.io", p) for p in ("agentdeployments", "agentbudgets", "toolpolicies", "regionpolicies")} | {
        ("apps", "deployments")}
    assert {(g, r) for g, r, v in calls if v == "patch"} == {("agentgov.io", "agentdeployments"), ("agentgov.io", "agentbudgets")}


def test_the_builders_only_make_kinds_the_kube_layer_knows() -> None:
    assert set(builders.CHILD_KINDS) <= set(kube.PLURALS)


# --- the roles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("replicas", [1, 3], ids=["one replica", "three replicas (peering)"])
def test_the_charts_cluster_role_grants_exactly_the_operators_calls(replicas: int) -> None:
    cluster, roles = operator_roles(render_chart({"replicas": replicas}))
    expected = derived_permissions(namespaced=False, replicas=replicas)
    assert sorted(cluster - expected) == [], "granted but never used"
    assert sorted(expected - cluster) == [], "used but not granted"
    assert roles == {}


@pytest.mark.parametrize("replicas", [1, 2], ids=["one replica", "two replicas (peering)"])
def test_listed_namespaces_get_exactly_the_namespaced_calls_in_each_role(replicas: int) -> None:
    namespaces = ["research", "support"]
    cluster, roles = operator_roles(render_chart({"replicas": replicas, "watchNamespaces": namespaces}))
    expected_cluster, expected_namespaced = split_by_scope(derived_permissions(namespaced=True, replicas=replicas))
    assert cluster == expected_cluster
    assert sorted(roles) == namespaces
    for namespace, permissions in roles.items():
        assert permissions == expected_namespaced, namespace


@needs_kubectl
@pytest.mark.parametrize("overlay, replicas", [("base", 1), ("overlays/production", 2)])
def test_the_kustomize_cluster_role_grants_exactly_the_operators_calls(overlay: str, replicas: int) -> None:
    objects = kustomize(overlay)
    cluster, roles = operator_roles(objects)
    assert cluster == derived_permissions(namespaced=False, replicas=replicas)
    assert roles == {}
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == replicas


@pytest.mark.parametrize("source", ["chart", "chart, listed namespaces",
                                    pytest.param("kustomize production", marks=needs_kubectl)])
def test_no_role_uses_a_wildcard_or_escalates(source: str) -> None:
    objects = {
        "chart": lambda: render_chart({"replicas": 2}),
        "chart, listed namespaces": lambda: render_chart({"watchNamespaces": ["a", "b"]}),
        "kustomize production": lambda: kustomize("overlays/production"),
    }[source]()
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    assert roles
    for role in roles:
        for group, resource, verb in granted(role["rules"]):
            assert "*" not in (group + resource + verb), role["metadata"]["name"]
            assert verb not in ("escalate", "bind", "impersonate"), role["metadata"]["name"]
            assert resource not in ("roles", "rolebindings", "clusterroles", "clusterrolebindings", "pods/exec")


def test_the_operator_reads_secrets_by_name_and_writes_only_by_create_and_patch() -> None:
    # get: Secrets the pods reference (their versions roll the pods); create/patch: the
    # `<agent>-secrets` Secret the secrets sync materialises. Never list, watch or delete.
    permissions = derived_permissions(namespaced=False, replicas=1)
    assert {v for g, r, v in permissions if r == "secrets"} == {"get", "create", "patch"}
