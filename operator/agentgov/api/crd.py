"""Generate CustomResourceDefinitions (apiextensions.k8s.io/v1) from the pydantic models.

The output is a *structural* schema as the API server requires: every node typed, ``$ref``s
inlined, optional fields plain (never ``anyOf`` with null), no ``additionalProperties`` next
to ``properties``, a description on every field (it becomes ``kubectl explain`` text),
defaults taken from the models (an object field whose model has only defaults gets that
whole default object), and the models' cross-field rules as CEL
``x-kubernetes-validations``. Pure: returns dicts, writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agentgov.api.base import CATEGORY, GROUP, VERSION, Model
from agentgov.api.resources import KINDS, ResourceKind

# Keys of pydantic's JSON schema that a structural schema does not carry.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}


class SchemaError(ValueError):
    """The models produced something that cannot be a structural schema (a bug in a model)."""


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve $refs, collapse Optional (anyOf [X, null]) and drop non-structural keys."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise SchemaError(f"unions are not structural: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        return _inline({**variants[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key in ("default", "enum", "x-kubernetes-list-map-keys", "x-kubernetes-validations"):
            out[key] = value
        else:
            out[key] = _inline(value, defs)
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _inline(node["additionalProperties"], defs)
    _to_openapi_v3_bounds(out, "exclusiveMinimum", "minimum", max)
    _to_openapi_v3_bounds(out, "exclusiveMaximum", "maximum", min)
    return out


def _to_openapi_v3_bounds(schema: dict[str, Any], exclusive: str, inclusive: str, stricter: Any) -> None:
    """JSON Schema's numeric exclusiveMinimum/Maximum -> OpenAPI v3.0's boolean form."""
    bound = schema.get(exclusive)
    if isinstance(bound, bool) or bound is None:
        return
    current = schema.get(inclusive)
    if current is None or stricter(bound, current) == bound:
        schema[inclusive] = bound
        schema[exclusive] = True
    else:
        del schema[exclusive]


def _default_of(field: FieldInfo) -> tuple[bool, Any]:
    """The JSON default of a field, if the server should apply one."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is not PydanticUndefined and field.default is not None:
        value = field.default
    else:
        return False, None
    if isinstance(value, BaseModel):
        # The whole default object, not `{}`: the server validates a default as written.
        return True, without_empty_lists(value.model_dump(mode="json", by_alias=True, exclude_none=True))
    if value in ([], {}, ()):
        return False, None
    return True, TypeAdapter(type(value)).dump_python(value, mode="json", by_alias=True)


def without_empty_lists(value: Any) -> Any:
    """Drop empty lists: the server leaves an absent list absent (no `[]` defaults here)."""
    if isinstance(value, dict):
        return {k: without_empty_lists(v) for k, v in value.items() if v != []}
    if isinstance(value, list):
        return [without_empty_lists(v) for v in value]
    return value


def _decorate(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Add the model's rules and the server-side defaults, recursing into nested models."""
    if issubclass(model, Model) and model.cel_rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in model.cel_rules]
    properties = schema.get("properties", {})
    required = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = properties[alias]
        if field.is_required():
            required.append(alias)
        has_default, default = _default_of(field)
        if has_default:
            prop["default"] = default
        else:
            prop.pop("default", None)
        nested = _nested_model(field.annotation)
        if nested is not None:
            target = prop["items"] if prop.get("type") == "array" else prop
            _decorate(target, nested)
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside X, X | None or list[X], if any."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in getattr(candidate, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    _decorate(schema, model)
    if model.__doc__:
        schema["description"] = model.__doc__.strip().splitlines()[0]
    return schema


def build_crd(resource: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource."""
    spec_schema = model_schema(resource.spec_model)
    status_schema = model_schema(resource.status_model)
    root = {
        "type": "object",
        "description": resource.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            # The API server refuses anything but `type` (and name/generateName rules) here.
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/name": "agentgov", "app.kubernetes.io/part-of": "agentgov"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": [c.to_schema() for c in resource.printer_columns],
                }
            ],
        },
    }


def build_all() -> dict[str, dict[str, Any]]:
    """File name (``<plural>.<group>.yaml``) -> CRD, for every resource."""
    return {f"{r.crd_name}.yaml": build_crd(r) for r in KINDS}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[]{_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    return str(kind)


def _rows(schema: dict[str, Any], path: str) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        field = f"{path}.{name}" if path else name
        default = f"`{_compact(prop['default'])}`" if "default" in prop and prop["default"] != {} else ""
        mark = " (required)" if name in required else ""
        description = prop.get("description", "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{field}`{mark} | {_type_of(prop)} | {default} | {description} |")
        nested = prop.get("items", {}) if prop.get("type") == "array" else prop
        rows.extend(_rows(nested, f"{field}[]" if prop.get("type") == "array" else field))
    return rows


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rules(schema: dict[str, Any], path: str) -> list[str]:
    found = [
        f"- `{path}{r.get('fieldPath', '')}`: {r['message']}" for r in schema.get("x-kubernetes-validations", [])
    ]
    for name, prop in schema.get("properties", {}).items():
        is_array = prop.get("type") == "array"
        nested = prop.get("items", {}) if is_array else prop
        found.extend(_rules(nested, f"{path}.{name}{'[]' if is_array else ''}"))
    return found


def reference_markdown() -> str:
    """docs/resources.md: every field of every resource, its type, default and description."""
    parts = [
        "# The agentgov resources\n",
        "Generated by `agentgov crds docs` from the models in `operator/agentgov/api/`; "
        "the same text is served by `kubectl explain`. Group `agentgov.io`, version `v1alpha1`, "
        "category `agentgov` (`kubectl get agentgov`).\n",
    ]
    for resource in KINDS:
        spec = build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        short = ", ".join(f"`{s}`" for s in resource.short_names)
        parts.append(f"## {resource.kind} ({short})\n\n{resource.description}\n")
        parts.append("| field | type | default | description |\n|---|---|---|---|")
        parts.extend(_rows(spec, "spec"))
        rules = _rules(spec, "spec")
        if rules:
            parts.append("\nCross-field rules (enforced by the API server as CEL, and by `agentgov render`):\n")
            parts.extend(rules)
        parts.append("")
    return "\n".join(parts)
