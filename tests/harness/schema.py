"""Structural-schema pruning, defaulting and validation of custom resources, as kube-apiserver does it.

What this module is for: the API server test double (``harness.apiserver``) calls these pure
functions when a custom resource is written, and ``check_crd`` when a CustomResourceDefinition
is created, so that the operator and its tests meet the same answers - including the same error
texts, field paths and ``Status`` bodies - as against a real cluster. Each function is a port of
the Go code named in its docstring (apiextensions-apiserver, kube-openapi, apimachinery), read
from the Kubernetes sources, targeting the current releases (1.33+ message formats).

The request pipeline of the real server, and of the harness, is::

    obj = prune(schema, obj)                 # decoding: unknown fields dropped (unknown_fields()
    obj = prune_nulls(schema, obj)           #   lists them for fieldValidation=Strict/warnings;
                                             #   prune_and_report() gives both in one pass)
    obj = apply_defaults(schema, obj)        # defaulting (also re-applied on read)
    errors = validate(schema, obj, old)      # schema, list-type, then CEL rules
    if errors: respond 422 with invalid_status(kind, group, name, errors)

What it must never do: I/O, reading clocks, randomness, or mutating its arguments - every
function returns new values. It must not validate ObjectMeta (names, labels, finalizers...);
that is the API server double's job, as it is generic apiserver code in Kubernetes.

Faithful (ported from source):

* schema validation order and texts of kube-openapi (type, nullable, allOf/anyOf/oneOf/not,
  maxLength/minLength in characters, pattern (RE2), the string formats the API server keeps,
  multipleOf, minimum/maximum/exclusive*, items, minItems/maxItems, uniqueItems, enum,
  min/maxProperties, additionalProperties, required) and their conversion to field errors
  (``kubeOpenAPIResultToFieldErrors``), e.g. ``spec.replicas: Invalid value: -1: spec.replicas
  in body should be greater than or equal to 0``;
* schema errors name map entries with dots (``spec.labels.foo``) - that is what the server
  prints; list-type and CEL errors use brackets (``spec.labels[foo]``);
* ``format: int32/int64/float/double`` and unknown formats are dropped before validation, as the
  server does (``StripUnsupportedFormatsPostProcess``), so they are never checked;
* ``x-kubernetes-list-type`` set/map uniqueness (``Duplicate value: {"name":"a"}``);
* CEL rules run only when no schema error is "blocking" (Required, NotSupported, TooLong,
  TooMany, TypeInvalid); otherwise one ``<nil>: Invalid value: null: some validation rules were
  not checked ...`` error is added instead - exactly the strategy.go behaviour. Rules on null
  values are skipped; transition rules (``oldSelf``) are skipped when there is no old value;
  ``fieldPath``, ``reason``, ``message``/``messageExpression`` and evaluation-error texts
  follow cel/validation.go;
* ratcheting on update (CRDValidationRatcheting, GA): errors at a node whose value equals its
  correlated old value are dropped (list items correlate only in ``list-type: map`` lists);
  list-type errors are reported only if the old object had none;
* defaulting, including non-nullable nulls (a ``null`` for a non-nullable field with a default
  gets the default; without a default it is pruned by ``prune_nulls``); defaults are deep
  copies and are themselves defaulted deeper;
* pruning (``x-kubernetes-preserve-unknown-fields``, ``additionalProperties``,
  ``x-kubernetes-embedded-resource`` keeping apiVersion/kind/metadata, root metadata kept).

Not reproduced (gaps; also in docs/testing.md):

* error order between sibling properties: Go iterates maps in random order, we use schema order;
* anyOf/oneOf "best failure" selection approximates kube-openapi's match counting;
* CRD checks not ported: structural completeness (properties only in allOf), NewStructural's
  rejection of unknown schema keys, status-subresource root restrictions beyond ``type``,
  printer columns, subresources, conversion, selectable fields, metadata defaults, CEL cost;
  regular-expression compile errors use RE2's wording, not Go's;
* ObjectMeta coercion and validation of root and embedded ``metadata``;
* string formats other than date-time, date, duration, byte, uuid*, ipv4, ipv6, cidr,
  hostname, mac, email, uri and password are accepted unchecked;
* CEL limitations listed in ``harness.cel`` (no type checker, no cost limits, missing
  libraries); rules with ``optionalOldSelf: true`` are skipped (CEL optionals are missing).
"""

from __future__ import annotations

import copy
import datetime
import decimal
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import re2

from . import cel

__all__ = [
    "FieldError",
    "apply_defaults",
    "check_crd",
    "invalid_status",
    "prune",
    "prune_and_report",
    "prune_nulls",
    "unknown_fields",
    "validate",
]

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
TYPE_INVALID: Final = "FieldValueTypeInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
FORBIDDEN: Final = "FieldValueForbidden"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
DUPLICATE: Final = "FieldValueDuplicate"
INTERNAL: Final = "InternalError"

_REASON_TEXT: Final = {
    REQUIRED: "Required value",
    INVALID: "Invalid value",
    TYPE_INVALID: "Invalid value",
    NOT_SUPPORTED: "Unsupported value",
    FORBIDDEN: "Forbidden",
    TOO_LONG: "Too long",
    TOO_MANY: "Too many",
    DUPLICATE: "Duplicate value",
    INTERNAL: "Internal error",
}
_BLOCKING: Final = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})


class _Omit:
    """field.OmitValueType: the error prints no value."""


OMIT: Final = _Omit()


class _Missing:
    """No correlated old value."""


_MISSING: Final = _Missing()


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error`` as the API server reports it.

    ``field`` is the path as printed (``spec.tools[1].name``, ``<nil>`` for the root),
    ``reason`` the ``causes[].reason`` value, ``message`` the full ``Error()`` text
    (``<field>: <body>``)."""

    field: str
    reason: str
    message: str

    @property
    def body(self) -> str:
        """``ErrorBody()``: the message without the field prefix (``causes[].message``)."""
        return self.message[len(self.field) + 2 :]


# --------------------------------------------------------------------------- Go formatting


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` / ``%q``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == " " or (ch.isprintable() and code != 0xFEFF):
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits and decimal-point position (strconv's ``digs.d``/``dp``)."""
    sign, digits, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).lstrip("0") or "0"
    stripped = text.rstrip("0")
    point = len(text) + int(exponent)
    return (stripped or "0", point)


def go_float(value: float) -> str:
    """Go's ``%v`` for a float64: strconv's shortest 'g' form, which switches to exponent
    notation when the decimal exponent is < -4 or >= 6 (``1e+06``, ``1.5e-05``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _shortest_digits(value)
    exponent = point - 1
    sign = "-" if value < 0 else ""
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + _fixed(digits, point)


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _json_float(value: float) -> str:
    """encoding/json's float64 encoding."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, point = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        exponent = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}".replace("e-0", "e-")
    return sign + _fixed(digits, point)


_JSON_ESCAPES: Final = {
    '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
}


def go_json(value: Any) -> str:
    """encoding/json.Marshal of a decoded JSON value (sorted keys, HTML-safe escaping)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        chars = []
        for ch in value:
            if ch in _JSON_ESCAPES:
                chars.append(_JSON_ESCAPES[ch])
            elif ord(ch) < 0x20:
                chars.append(f"\\u{ord(ch):04x}")
            else:
                chars.append(ch)
        return '"' + "".join(chars) + '"'
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    return go_json(str(value))


def _bad_value(value: Any) -> str:
    """How ``ErrorBody`` prints a bad value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return go_json(value)


# --------------------------------------------------------------------------- field errors


def _field_error(reason: str, path: str | None, value: Any, detail: str) -> FieldError:
    field_text = "<nil>" if path is None else path
    text = _REASON_TEXT[reason]
    if reason in (REQUIRED, FORBIDDEN, TOO_LONG, INTERNAL) or isinstance(value, _Omit):
        body = text
    else:
        body = f"{text}: {_bad_value(value)}"
    if detail:
        body += f": {detail}"
    return FieldError(field=field_text, reason=reason, message=f"{field_text}: {body}")


def _required(path: str | None, detail: str = "") -> FieldError:
    return _field_error(REQUIRED, path, OMIT, detail)


def _invalid(path: str | None, value: Any, detail: str) -> FieldError:
    return _field_error(INVALID, path, value, detail)


def _forbidden(path: str | None, detail: str) -> FieldError:
    return _field_error(FORBIDDEN, path, OMIT, detail)


def _not_supported(path: str | None, value: Any, valid: Sequence[str]) -> FieldError:
    detail = "supported values: " + ", ".join(go_quote(v) for v in valid) if valid else ""
    return _field_error(NOT_SUPPORTED, path, value, detail)


def _too_long(path: str | None, maximum: int) -> FieldError:
    if maximum >= 0:
        detail = f"may not be more than {maximum} {'byte' if maximum == 1 else 'bytes'}"
    else:
        detail = "value is too long"
    return _field_error(TOO_LONG, path, OMIT, detail)


def _too_many(path: str | None, actual: int, maximum: int) -> FieldError:
    if maximum >= 0:
        detail = f"must have at most {maximum} {'item' if maximum == 1 else 'items'}"
    else:
        detail = "has too many items"
    return _field_error(TOO_MANY, path, actual if actual >= 0 else OMIT, detail)


def _duplicate(path: str | None, value: Any) -> FieldError:
    return _field_error(DUPLICATE, path, value, "")


def _child(path: str | None, name: str) -> str:
    return name if path is None else f"{path}.{name}"


def _index(path: str | None, index: int) -> str:
    return f"[{index}]" if path is None else f"{path}[{index}]"


def _key(path: str | None, key: str) -> str:
    return f"[{key}]" if path is None else f"{path}[{key}]"


# --------------------------------------------------------------------------- JSON helpers


def _json_equal(left: Any, right: Any) -> bool:
    """reflect.DeepEqual on decoded JSON: bool, int and float are distinct types."""
    if type(left) is not type(right):
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            pass
        elif isinstance(left, list) and isinstance(right, list):
            pass
        else:
            return False
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right))
    return bool(left == right)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _schema_type(schema: Mapping[str, Any]) -> str:
    value = schema.get("type")
    return value if isinstance(value, str) else ""


def _properties(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    props = schema.get("properties")
    return props if isinstance(props, Mapping) else {}


def _additional(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = schema.get("additionalProperties")
    return value if isinstance(value, Mapping) else None


def _items(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = schema.get("items")
    return value if isinstance(value, Mapping) else None


# --------------------------------------------------------------------------- pruning


_META_FIELDS: Final = frozenset({"apiVersion", "kind", "metadata"})


def prune(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the fields the structural schema does not specify (pruning/algorithm.go).

    The object is a resource root: apiVersion, kind and metadata are always kept (metadata is
    kept as is; the real server also drops unknown ObjectMeta fields)."""
    return prune_and_report(schema, obj)[0]


def unknown_fields(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[str]:
    """The sorted paths ``prune`` removes (``spec.foo``, ``spec.items[0].bar``): what the server
    reports as ``unknown field "<path>"`` warnings, or rejects with fieldValidation=Strict."""
    return prune_and_report(schema, obj)[1]


def prune_and_report(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``prune`` and ``unknown_fields`` of ``obj`` in one pass, as the decoder needs both."""
    result = copy.deepcopy(dict(obj))
    found: list[str] = []
    _prune(result, _as_resource_root(schema), [], found)
    return result, sorted(found)


def _as_resource_root(schema: Mapping[str, Any]) -> dict[str, Any]:
    root = dict(schema)
    root["x-kubernetes-embedded-resource"] = True
    return root


def _path_text(parts: list[str]) -> str:
    return "".join(parts)


def _append_key(parts: list[str], key: str) -> list[str]:
    return parts + (["." , key] if parts else [key])


def _prune(value: Any, schema: Mapping[str, Any] | None, parts: list[str], found: list[str]) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(value, schema, parts, found)
        return
    if isinstance(value, dict):
        if schema is None:
            for key in list(value):
                found.append(_path_text(_append_key(parts, key)))
                del value[key]
            return
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        properties = _properties(schema)
        additional = schema.get("additionalProperties")
        for key in list(value):
            if embedded and key in _META_FIELDS:
                continue
            if key in properties:
                _prune(value[key], properties[key], _append_key(parts, key), found)
            elif additional is not None and additional is not False:
                _prune(value[key], additional if isinstance(additional, Mapping) else None, _append_key(parts, key), found)
            else:
                if key not in _META_FIELDS or parts:
                    found.append(_path_text(_append_key(parts, key)))
                del value[key]
    elif isinstance(value, list):
        items = None if schema is None else _items(schema)
        for position, item in enumerate(value):
            _prune(item, items, parts + ["[", str(position), "]"], found)


def _skip_prune(value: Any, schema: Mapping[str, Any], parts: list[str], found: list[str]) -> None:
    if isinstance(value, dict):
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        properties = _properties(schema)
        additional = _additional(schema)
        for key in list(value):
            if embedded and key in _META_FIELDS:
                continue
            if key in properties:
                _prune(value[key], properties[key], _append_key(parts, key), found)
            elif additional is not None:
                _prune(value[key], additional, _append_key(parts, key), found)
    elif isinstance(value, list):
        items = _items(schema)
        if items is not None:
            for position, item in enumerate(value):
                _skip_prune(item, items, parts + ["[", str(position), "]"], found)


def prune_nulls(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Remove ``null`` values of non-nullable fields that have no default
    (defaulting/prunenulls.go); nulls with a default are left for ``apply_defaults``."""
    result = copy.deepcopy(dict(obj))
    _prune_nulls(result, schema)
    return result


def _field_schema(schema: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    properties = _properties(schema)
    if key in properties:
        found: Mapping[str, Any] = properties[key]
        return found
    return _additional(schema)


def _prune_nulls(value: Any, schema: Mapping[str, Any] | None) -> None:
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                _prune_nulls(value[key], sub)
    elif isinstance(value, list):
        items = None if schema is None else _items(schema)
        for item in value:
            _prune_nulls(item, items)


# --------------------------------------------------------------------------- defaulting


def apply_defaults(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Structural defaulting (defaulting/algorithm.go), returning a new object.

    A property gets its default when it is absent, or when it is ``null`` and the property is
    not nullable (``prune_nulls`` runs first in the server, so a non-nullable null without a
    default never gets here). The same holds for ``additionalProperties`` values and array
    items. Defaults are deep copies and are defaulted further (a default object gains the
    defaults of its own properties)."""
    result = copy.deepcopy(dict(obj))
    _default(result, schema)
    return result


def _non_nullable_null(value: Any, schema: Mapping[str, Any] | None) -> bool:
    return value is None and schema is not None and not schema.get("nullable")


def _default(value: Any, schema: Mapping[str, Any] | None) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        properties = _properties(schema)
        for key, prop in properties.items():
            if "default" not in prop:
                continue
            if key not in value or _non_nullable_null(value[key], prop):
                value[key] = copy.deepcopy(prop["default"])
        additional = _additional(schema)
        for key in list(value):
            if key in properties:
                _default(value[key], properties[key])
            elif additional is not None:
                if _non_nullable_null(value[key], additional):
                    value[key] = copy.deepcopy(additional.get("default"))
                _default(value[key], additional)
    elif isinstance(value, list):
        items = _items(schema)
        for position in range(len(value)):
            if _non_nullable_null(value[position], items):
                value[position] = copy.deepcopy(items.get("default") if items else None)
            _default(value[position], items)


# --------------------------------------------------------------------------- string formats

# validation/formats.go: the formats a CRD schema may use; all others are stripped.
_SUPPORTED_FORMATS: Final = frozenset(
    {
        "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid",
        "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor",
        "rgbcolor", "byte", "password", "date", "duration", "datetime",
    }
)
_DATE_TIME: Final = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
_BASE64: Final = re.compile(
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"
)
_UUID: Final = {
    "uuid": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
    "uuid3": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
    "uuid4": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
    "uuid5": re.compile(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$"),
}
_HOSTNAME: Final = re.compile(
    r"^([a-zA-Z0-9]((-?[a-zA-Z0-9]{0,62})?)|([a-zA-Z0-9](([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.)){1,}([a-zA-Z]){2,63})$"
)
_DURATION: Final = re.compile(r"^[-+]?(\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|h|d|w))+$")
_MAC: Final = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$")
_EMAIL: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


def _normalized_format(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    if not isinstance(fmt, str) or fmt.replace("-", "") not in _SUPPORTED_FORMATS:
        return ""
    return fmt


def _is_date(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        datetime.date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return False
    return True


def _is_date_time(text: str) -> bool:
    if len(text) < 4:
        return False
    parts = text.lower().split("t")
    if len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _DATE_TIME.match(parts[1])
    return match is not None and match.group(1) <= "23" and match.group(2) <= "59" and match.group(3) <= "59"


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _is_uri(text: str) -> bool:
    return bool(re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/)\S*$", text))


def _format_ok(fmt: str, text: str) -> bool:
    name = fmt.replace("-", "")
    checks = {
        "datetime": _is_date_time,
        "date": _is_date,
        "byte": lambda t: bool(_BASE64.match(t)),
        "ipv4": lambda t: _is_ip(t, 4),
        "ipv6": lambda t: _is_ip(t, 6),
        "cidr": _is_cidr,
        "hostname": lambda t: bool(_HOSTNAME.match(t)) and len(t) <= 255 and all(len(p) <= 63 for p in t.split(".")),
        "duration": lambda t: bool(_DURATION.match(t)),
        "mac": lambda t: bool(_MAC.match(t)),
        "email": lambda t: bool(_EMAIL.match(t)),
        "uri": _is_uri,
    }
    if name in _UUID:
        return bool(_UUID[name].match(text))
    check = checks.get(name)
    return True if check is None else check(text)


# --------------------------------------------------------------------------- kube-openapi


@dataclass(frozen=True)
class _OAError:
    """A kube-openapi ``errors.Validation`` (or composite error when ``code`` is composite)."""

    code: str
    name: str
    value: Any
    message: str
    valid: Any = None
    values: tuple[Any, ...] = ()


@dataclass
class _Result:
    errors: list[_OAError] = field(default_factory=list)
    matches: int = 0

    def merge(self, other: "_Result") -> None:
        self.errors.extend(other.errors)
        self.matches += other.matches


def _type_error(name: str, type_name: str, value: str) -> _OAError:
    return _OAError("type", name, value, f"{name} in body must be of type {type_name}: {go_quote(value)}")


def _is_json_integer(number: float) -> bool:
    """swag.IsFloat64AJSONInteger."""
    if math.isnan(number) or math.isinf(number) or abs(number) > float(2**53 - 1):
        return False
    if number == int(number):
        return True
    if number < 0:
        return False
    truncated = float(int(number))
    diff = abs(number - truncated)
    return diff / min(abs(number) + abs(truncated), 1.7976931348623157e308) < 1e-9


def _schema_info(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return "boolean", ""
    if isinstance(value, str):
        return "string", ""
    if isinstance(value, int):
        return "integer", "int64"
    if isinstance(value, float):
        return "number", "float64"
    if isinstance(value, list):
        return "array", ""
    return "object", ""


def _types(schema: Mapping[str, Any]) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    schema_type = _schema_type(schema)
    return [schema_type] if schema_type else []


def _validate_type(schema: Mapping[str, Any], value: Any, name: str) -> list[_OAError]:
    types = _types(schema)
    fmt = _normalized_format(schema)
    if not types and not fmt:
        return []
    if value is None:
        if types and "null" not in types and not schema.get("nullable"):
            return [_type_error(name, ",".join(types), "null")]
        return []
    sch_type, value_format = _schema_info(value)
    is_float_int = sch_type == "number" and _is_json_integer(value) and "integer" in types
    is_int_float = sch_type == "integer" and "number" in types
    is_text_or_list = isinstance(value, (str, list))
    if not is_text_or_list and fmt and not (
        sch_type in types or value_format == fmt or is_float_int or is_int_float
    ):
        return [_type_error(name, fmt, value_format)]
    if not ("number" in types or "integer" in types) and fmt and is_text_or_list:
        return []
    if not (sch_type in types or is_float_int or is_int_float):
        return [_type_error(name, ",".join(types), sch_type)]
    return []


def _validate_string(schema: Mapping[str, Any], value: str, name: str) -> list[_OAError]:
    length = len(value)
    max_length = schema.get("maxLength")
    if max_length is not None and length > max_length:
        return [_OAError("too_long", name, value, f"{name} in body should be at most {max_length} chars long", valid=max_length)]
    min_length = schema.get("minLength")
    if min_length is not None and length < min_length:
        return [_OAError("other", name, value, f"{name} in body should be at least {min_length} chars long")]
    pattern = schema.get("pattern")
    if pattern:
        try:
            matched = re2.search(pattern, value) is not None
        except re2.error as err:
            return [_OAError("other", name, value, f"{name} in body should match '{pattern}, but pattern is invalid: {_regexp_error(err)}'")]
        if not matched:
            return [_OAError("other", name, value, f"{name} in body should match '{pattern}'")]
    return []


def _regexp_error(err: Exception) -> str:
    text = err.args[0] if err.args else str(err)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"error parsing regexp: {text}"


def _validate_format(schema: Mapping[str, Any], value: str, name: str) -> list[_OAError]:
    fmt = _normalized_format(schema)
    if not fmt or _format_ok(fmt, value):
        return []
    return [_OAError("type", name, value, f"{name} in body must be of type {fmt}: {go_quote(value)}")]


def _number_text(value: int | float) -> str:
    return str(value) if _is_int(value) else go_float(float(value))


def _validate_number(schema: Mapping[str, Any], value: int | float, name: str) -> list[_OAError]:
    errors: list[_OAError] = []
    factor: Any = schema.get("multipleOf")
    if _is_number(factor):
        if _is_int(value) and int(factor) != 0:
            int_factor = int(factor)
            quotient = abs(value) // abs(int_factor) * (1 if (value >= 0) == (int_factor > 0) else -1)
            if int_factor < 0:
                errors.append(_OAError("other", name, int_factor, f"factor MultipleOf declared for {name} must be positive: {int_factor}"))
            elif quotient * int_factor != value:
                errors.append(_OAError("other", name, value, f"{name} in body should be a multiple of {int_factor}"))
        else:
            number = float(value)
            if factor < 0:
                errors.append(_OAError("other", name, factor, f"factor MultipleOf declared for {name} must be positive: {go_float(float(factor))}"))
            else:
                mult = (1 / factor) * number if factor < 1 else number / factor
                if not _is_json_integer(mult):
                    errors.append(_OAError("other", name, value, f"{name} in body should be a multiple of {go_float(float(factor))}"))
    errors.extend(_bound(schema, value, name, "minimum"))
    errors.extend(_bound(schema, value, name, "maximum"))
    return errors


def _bound(schema: Mapping[str, Any], value: int | float, name: str, which: str) -> list[_OAError]:
    limit: Any = schema.get(which)
    if not _is_number(limit):
        return []
    exclusive = bool(schema.get("exclusiveMinimum" if which == "minimum" else "exclusiveMaximum"))
    bound: int | float = int(limit) if _is_int(value) else float(limit)
    if which == "minimum":
        failed = value <= bound if exclusive else value < bound
        text = "greater than" if exclusive else "greater than or equal to"
    else:
        failed = value >= bound if exclusive else value > bound
        text = "less than" if exclusive else "less than or equal to"
    if not failed:
        return []
    return [_OAError("other", name, value, f"{name} in body should be {text} {_number_text(bound)}")]


def _enum_match(value: Any, allowed: Any) -> bool:
    if _json_equal(value, allowed):
        return True
    if _is_number(value) and _is_number(allowed):
        # reflect Convert(value -> type of allowed): float -> int truncates.
        converted = int(value) if _is_int(allowed) else float(value)
        return bool(converted == allowed)
    return False


def _validate_enum(schema: Mapping[str, Any], value: Any, name: str) -> list[_OAError]:
    enum = schema.get("enum")
    if not enum:
        return []
    if value is not None and any(_enum_match(value, allowed) for allowed in enum if allowed is not None):
        return []
    return [_OAError("enum", name, value, f"{name} in body should be one of {enum}", values=tuple(enum))]


def _correlate_item(schema: Mapping[str, Any], item: Any, old: Any) -> Any:
    """CorrelatedObject.Index: only list-type map items have an old counterpart (by key)."""
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list) or not isinstance(item, dict):
        return _MISSING
    keys = schema.get("x-kubernetes-list-map-keys") or []
    for candidate in old:
        if isinstance(candidate, dict) and all(
            (k in item) == (k in candidate) and _json_equal(item.get(k), candidate.get(k)) for k in keys
        ):
            return candidate
    return _MISSING


def _correlate_key(old: Any, key: str) -> Any:
    if isinstance(old, dict) and key in old:
        return old[key]
    return _MISSING


def _openapi(schema: Mapping[str, Any], value: Any, name: str, old: Any = _MISSING) -> _Result:
    """SchemaValidator.Validate (kube-openapi) with ratcheting against ``old``."""
    result = _Result()
    if value is None:
        result.errors.extend(_validate_type(schema, value, name))
        result.errors.extend(_validate_enum(schema, value, name))
        result.matches += 1
    else:
        result.errors.extend(_validate_type(schema, value, name))
        result.merge(_validate_combinators(schema, value, name, old))
        if isinstance(value, str):
            result.errors.extend(_validate_string(schema, value, name))
            result.errors.extend(_validate_format(schema, value, name))
        if _is_number(value):
            result.errors.extend(_validate_number(schema, value, name))
        if isinstance(value, list):
            result.merge(_validate_slice(schema, value, name, old))
        result.errors.extend(_validate_enum(schema, value, name))
        if isinstance(value, dict):
            result.merge(_validate_object(schema, value, name, old))
        result.matches += 2
    if result.errors and not isinstance(old, _Missing) and _json_equal(value, old):
        return _Result(matches=result.matches)
    return result


def _composite(message: str) -> _OAError:
    return _OAError("composite", "", None, message)


def _validate_combinators(schema: Mapping[str, Any], value: Any, name: str, old: Any) -> _Result:
    main = _Result()
    any_of = schema.get("anyOf") or []
    if any_of:
        best: _Result | None = None
        succeeded = False
        for branch in any_of:
            outcome = _openapi(branch, value, name, old)
            if not outcome.errors:
                succeeded, best = True, None
                break
            if best is None or outcome.matches > best.matches:
                best = outcome
        if not succeeded:
            main.errors.append(_composite(f"{go_quote(name)} must validate at least one schema (anyOf)"))
        if best is not None:
            main.merge(best)
    one_of = schema.get("oneOf") or []
    if one_of:
        validated = 0
        best = None
        for branch in one_of:
            outcome = _openapi(branch, value, name, old)
            if not outcome.errors:
                validated += 1
                best = None
                continue
            if validated == 0 and (best is None or outcome.matches > best.matches):
                best = outcome
        if validated != 1:
            extra = "Found none valid" if validated == 0 else f"Found {validated} valid alternatives"
            main.errors.append(_composite(f"{go_quote(name)} must validate one and only one schema (oneOf). {extra}"))
            if best is not None:
                main.merge(best)
    all_of = schema.get("allOf") or []
    if all_of:
        validated = 0
        for branch in all_of:
            outcome = _openapi(branch, value, name, old)
            if not outcome.errors:
                validated += 1
            main.merge(outcome)
        if validated != len(all_of):
            extra = ". None validated" if validated == 0 else ""
            main.errors.append(_composite(f"{go_quote(name)} must validate all the schemas (allOf){extra}"))
    not_schema = schema.get("not")
    if isinstance(not_schema, Mapping) and not _openapi(not_schema, value, name, old).errors:
        main.errors.append(_composite(f"{go_quote(name)} must not validate the schema (not)"))
    main.matches += 1
    return main


def _validate_slice(schema: Mapping[str, Any], value: list[Any], name: str, old: Any) -> _Result:
    result = _Result()
    items = _items(schema)
    if items is not None:
        for position, item in enumerate(value):
            result.merge(_openapi(items, item, f"{name}[{position}]", _correlate_item(schema, item, old)))
    size = len(value)
    min_items = schema.get("minItems")
    if min_items is not None and size < min_items:
        result.errors.append(_OAError("other", name, size, f"{name} in body should have at least {min_items} items"))
    max_items = schema.get("maxItems")
    if max_items is not None and size > max_items:
        result.errors.append(_OAError("max_items", name, size, f"{name} in body should have at most {max_items} items", valid=max_items))
    if schema.get("uniqueItems"):
        seen: list[Any] = []
        for item in value:
            if any(_json_equal(item, s) for s in seen):
                result.errors.append(_OAError("other", name, None, f"{name} in body shouldn't contain duplicates"))
                break
            seen.append(item)
    result.matches += 1
    return result


def _validate_object(schema: Mapping[str, Any], value: dict[str, Any], name: str, old: Any) -> _Result:
    result = _Result()
    count = len(value)
    min_properties = schema.get("minProperties")
    if min_properties is not None and count < min_properties:
        result.errors.append(_OAError("other", name, count, f"{name} in body should have at least {min_properties} properties"))
        return result
    max_properties = schema.get("maxProperties")
    if max_properties is not None and count > max_properties:
        result.errors.append(_OAError("max_props", name, count, f"{name} in body should have at most {max_properties} properties", valid=max_properties))
        return result
    properties = _properties(schema)
    additional = schema.get("additionalProperties")
    if additional is False:
        for key in value:
            if key not in properties:
                result.errors.append(_OAError("other", name, key, f"{name}.{key} in body is a forbidden property"))
    elif isinstance(additional, Mapping):
        for key, item in value.items():
            if key not in properties:
                result.merge(_openapi(additional, item, f"{name}.{key}", _correlate_key(old, key)))
    for prop_name, prop_schema in properties.items():
        if prop_name in value:
            child = prop_name if name == "" else f"{name}.{prop_name}"
            result.merge(_openapi(prop_schema, value[prop_name], child, _correlate_key(old, prop_name)))
    for required in schema.get("required") or []:
        if required not in value:
            result.errors.append(_OAError("required", f"{name}.{required}", None, f"{name}.{required} in body is required"))
    result.matches += 1
    return result


def _to_field_errors(base: str | None, errors: Iterable[_OAError]) -> list[FieldError]:
    """kubeOpenAPIResultToFieldErrors."""
    out: list[FieldError] = []
    for err in errors:
        if err.code == "composite":
            out.append(_invalid(base, "", err.message))
            continue
        path = base
        if err.name and err.name != ".":
            path = _child(base, err.name[1:] if err.name.startswith(".") else err.name)
        value = "" if err.value is None else err.value
        if err.code == "required":
            out.append(_required(path))
        elif err.code == "enum":
            allowed = [v if isinstance(v, str) else go_json(v) for v in err.values]
            out.append(_not_supported(path, err.value, allowed))
        elif err.code == "too_long":
            out.append(_too_long(path, err.valid if _is_int(err.valid) else -1))
        elif err.code in ("max_items", "max_props"):
            actual = err.value if _is_int(err.value) else -1
            out.append(_too_many(path, actual, err.valid if _is_int(err.valid) else -1))
        elif err.code == "type":
            out.append(_field_error(TYPE_INVALID, path, value, err.message))
        else:
            out.append(_invalid(path, value, err.message))
    return out


# --------------------------------------------------------------------------- list types


def _list_type_errors(schema: Mapping[str, Any] | None, value: Any, path: str | None) -> list[FieldError]:
    """listtype/validation.go: uniqueness of set items and map-list keys."""
    if schema is None:
        return []
    errors: list[FieldError] = []
    if isinstance(value, dict):
        additional = _additional(schema)
        if additional is not None:
            for key, item in value.items():
                errors.extend(_list_type_errors(additional, item, _key(path, key)))
        properties = _properties(schema)
        for key, item in value.items():
            if key in properties:
                errors.extend(_list_type_errors(properties[key], item, _child(path, key)))
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set":
            for position in _non_unique(value):
                errors.append(_duplicate(_index(path, position), value[position]))
        elif list_type == "map":
            errors.extend(_list_map_errors(schema, value, path))
        items = _items(schema)
        if items is not None:
            for position, item in enumerate(value):
                errors.extend(_list_type_errors(items, item, _index(path, position)))
    return errors


_UNSPECIFIED: Final = object()


def _identity(value: Any) -> Any:
    """A hashable identity with Go's map-key semantics (int64 and float64 differ)."""
    if value is _UNSPECIFIED:
        return ("unspecified",)
    if isinstance(value, (dict, list)):
        return ("json", go_json(value))
    return (type(value).__name__, value)


def _non_unique(values: Sequence[Any]) -> list[int]:
    """validateListSet: the index of each value's second appearance."""
    counts: dict[Any, int] = {}
    indices: list[int] = []
    for position, value in enumerate(values):
        ident = _identity(value)
        counts[ident] = counts.get(ident, 0) + 1
        if counts[ident] == 2:
            indices.append(position)
    return indices


def _list_map_errors(schema: Mapping[str, Any], value: list[Any], path: str | None) -> list[FieldError]:
    for position, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            return [_invalid(_index(path, position), item, "must be an object for an array of list-type map")]
    if len(value) <= 1:
        return []
    keys = list(schema.get("x-kubernetes-list-map-keys") or [])
    if len(keys) == 1:
        key = keys[0]
        found = [_UNSPECIFIED if item is None or key not in item else item[key] for item in value]
        return [
            _duplicate(_index(path, i), {} if found[i] is _UNSPECIFIED else {key: found[i]})
            for i in _non_unique(found)
        ]
    composite = [{k: item[k] for k in keys if item is not None and k in item} for item in value]
    return [_duplicate(_index(path, i), composite[i]) for i in _non_unique(composite)]


# --------------------------------------------------------------------------- CEL rules


@dataclass(frozen=True)
class _RuleError:
    error: FieldError
    ratchetable: bool


def _has_rules(schema: Any) -> bool:
    if isinstance(schema, Mapping):
        if schema.get("x-kubernetes-validations"):
            return True
        return any(_has_rules(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_rules(v) for v in schema)
    return False


def _normalize_field_path(field_path: str, schema: Mapping[str, Any]) -> str | None:
    """cel.ValidFieldPath: ``.a['b.c'].d`` -> ``a[b.c].d`` (None if invalid for the schema)."""
    tokens = re.findall(r"'(?:[^'\\]|\\.)*'|[.\[\]]|[^.\[\]']+", field_path)
    path: str | None = None
    node: Mapping[str, Any] | None = schema
    position = 0

    def append(name: str) -> bool:
        nonlocal path, node
        if node is None:
            return False
        properties = _properties(node)
        if properties:
            if name not in properties:
                return False
            path = _child(path, name)
            node = properties[name]
            return True
        additional = _additional(node)
        if additional is not None:
            path = _key(path, name)
            node = additional
            return True
        return False

    while position < len(tokens):
        token = tokens[position]
        if token == "." and position + 1 < len(tokens):
            if not append(tokens[position + 1]):
                return None
            position += 2
        elif token == "[" and position + 2 < len(tokens) and tokens[position + 2] == "]":
            quoted = tokens[position + 1]
            if len(quoted) < 2 or quoted[0] != "'" or quoted[-1] != "'":
                return None
            if not append(re.sub(r"\\(.)", r"\1", quoted[1:-1])):
                return None
            position += 3
        else:
            return None
    return path


def _rule_error_string(rule: Mapping[str, Any]) -> str:
    message = str(rule.get("message") or "")
    return message.strip() if message else str(rule.get("rule") or "").strip()


def _message_expression(rule: Mapping[str, Any], activation: Mapping[str, Any]) -> str | None:
    source = rule.get("messageExpression")
    if not source:
        return None
    try:
        result = cel.compile_expression(str(source)).evaluate(activation)
    except (cel.CelCompileError, cel.CelEvalError):
        return None
    if not isinstance(result, str):
        return None
    text = result.strip()
    if not text or len(text) > 5 * 1024 or "\n" in text:
        return None
    return text


def _rule_failure(
    rule: Mapping[str, Any], path: str | None, value: Any, schema: Mapping[str, Any], activation: Mapping[str, Any]
) -> FieldError:
    current = path
    field_path = str(rule.get("fieldPath") or "").strip()
    if field_path:
        normalized = _normalize_field_path(field_path, schema)
        if normalized:
            current = _child(path, normalized)
    detail = _message_expression(rule, activation)
    if detail is None:
        message = str(rule.get("message") or "")
        detail = message.strip() if message else f"failed rule: {_rule_error_string(rule)}"
    shown = OMIT if _schema_type(schema) in ("object", "array") else value
    reason = rule.get("reason")
    if reason == FORBIDDEN:
        return _forbidden(current, detail)
    if reason == REQUIRED:
        return _required(current, detail)
    if reason == DUPLICATE:
        return _duplicate(current, shown)
    return _invalid(current, shown, detail)


def _node_rules(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rules = list(schema.get("x-kubernetes-validations") or [])
    for branch in schema.get("allOf") or []:
        if isinstance(branch, Mapping):
            rules.extend(_node_rules(branch))
    return rules


def _cel_validate(
    schema: Mapping[str, Any],
    value: Any,
    path: str | None,
    old: Any,
    *,
    resource_root: bool,
    unchanged: bool,
    ratchet: bool,
) -> list[_RuleError]:
    """cel.Validator.validate: rules at this node, then allOf, then children."""
    if value is None:
        return []
    errors: list[_RuleError] = []
    type_name = _schema_type(schema)
    rules = _node_rules(schema)
    if rules:
        has_old = not isinstance(old, _Missing) and old is not None
        self_value = cel.to_cel(value, schema, resource_root=resource_root)
        activation: dict[str, Any] = {"self": self_value}
        if has_old:
            activation["oldSelf"] = cel.to_cel(old, schema, resource_root=resource_root)
        for rule in rules:
            source = str(rule.get("rule") or "")
            try:
                program = cel.compile_expression(source)
            except cel.CelCompileError as err:
                errors.append(_RuleError(_invalid(path, type_name, f"rule compile error: {err.detail}"), False))
                continue
            if rule.get("optionalOldSelf"):
                # oldSelf would be a CEL optional, which celpy does not have (documented gap).
                continue
            if program.uses_old_self and not has_old:
                continue
            try:
                result = program.evaluate(activation)
            except cel.CelEvalError as err:
                if err.message.startswith("no such overload"):
                    detail = (
                        f"'{err.message}': call arguments did not match a supported operator, "
                        f"function or macro signature for rule: {_rule_error_string(rule)}"
                    )
                else:
                    detail = f"{err.message} evaluating rule: {_rule_error_string(rule)}"
                errors.append(_RuleError(_invalid(path, type_name, detail), False))
                continue
            if cel.is_true(result):
                continue
            failure = _rule_failure(rule, path, value, schema, activation)
            errors.append(_RuleError(failure, ratchet and not program.uses_old_self))
    if unchanged:
        errors = [e for e in errors if not e.ratchetable]
    errors.extend(_cel_children(schema, value, path, old, unchanged=unchanged, ratchet=ratchet))
    return errors


def _child_unchanged(unchanged: bool, new: Any, old: Any) -> bool:
    if isinstance(old, _Missing):
        return unchanged
    return _json_equal(new, old)


def _cel_children(
    schema: Mapping[str, Any], value: Any, path: str | None, old: Any, *, unchanged: bool, ratchet: bool
) -> list[_RuleError]:
    errors: list[_RuleError] = []
    if isinstance(value, dict):
        additional = _additional(schema)
        properties = _properties(schema)
        correlatable = schema.get("x-kubernetes-map-type") != "atomic"
        for key, item in value.items():
            if key in properties:
                sub, child_path = properties[key], _child(path, key)
                child_old = _correlate_key(old, key)
            elif additional is not None:
                sub, child_path = additional, _key(path, key)
                child_old = _correlate_key(old, key) if correlatable else _MISSING
            else:
                continue
            errors.extend(
                _cel_validate(
                    sub, item, child_path, child_old,
                    resource_root=bool(sub.get("x-kubernetes-embedded-resource")),
                    unchanged=_child_unchanged(unchanged, item, child_old) if ratchet else False,
                    ratchet=ratchet,
                )
            )
    elif isinstance(value, list):
        items = _items(schema)
        if items is not None:
            for position, item in enumerate(value):
                child_old = _correlate_item(schema, item, old)
                errors.extend(
                    _cel_validate(
                        items, item, _index(path, position), child_old,
                        resource_root=bool(items.get("x-kubernetes-embedded-resource")),
                        unchanged=_child_unchanged(unchanged, item, child_old) if ratchet else False,
                        ratchet=ratchet,
                    )
                )
    return errors


# --------------------------------------------------------------------------- validate


def validate(schema: Mapping[str, Any], obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[FieldError]:
    """Validate a custom resource (already pruned and defaulted) as the CR strategy does:
    OpenAPI schema errors, then ``x-kubernetes-list-type`` errors, then CEL rules - or, when a
    blocking schema error exists, the single ``<nil>`` "some validation rules were not checked"
    error. With ``old`` (an update) transition rules run and unchanged values are ratcheted."""
    old_root: Any = _MISSING if old is None else old
    errors = _to_field_errors(None, _openapi(schema, obj, "", old_root).errors)
    list_errors = _list_type_errors(schema, obj, None)
    if old is None or not _list_type_errors(schema, old, None):
        errors.extend(list_errors)
    if _has_rules(schema):
        if any(e.reason in _BLOCKING for e in errors):
            errors.append(
                _invalid(
                    None,
                    None,
                    "some validation rules were not checked because the object was invalid; "
                    "correct the existing errors to complete validation",
                )
            )
        else:
            rule_errors = _cel_validate(
                schema, obj, None, old_root,
                resource_root=True,
                unchanged=old is not None and _json_equal(obj, old),
                ratchet=old is not None,
            )
            errors.extend(e.error for e in rule_errors)
    return errors


# --------------------------------------------------------------------------- Status


def invalid_status(kind: str, group: str, name: str, errors: Sequence[FieldError]) -> dict[str, Any]:
    """The 422 ``Status`` body of ``apierrors.NewInvalid(GroupKind{group, kind}, name, errors)``."""
    qualified = f"{kind}.{group}" if group else kind
    messages: list[str] = []
    for err in errors:
        if err.message not in messages:
            messages.append(err.message)
    if not messages:
        aggregate = "<nil>"
    elif len(messages) == 1:
        aggregate = messages[0]
    else:
        aggregate = "[" + ", ".join(messages) + "]"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    causes = []
    for err in errors:
        cause = {"reason": err.reason}
        if err.body:
            cause["message"] = err.body
        if err.field:
            cause["field"] = err.field
        causes.append(cause)
    if causes:
        details["causes"] = causes
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{qualified} {go_quote(name)} is invalid: {aggregate}",
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }


# --------------------------------------------------------------------------- CRD checks

_DNS1035: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_MESSAGE: Final = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1123_SUBDOMAIN_MESSAGE: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_OPENAPI_TYPES: Final = ("array", "boolean", "integer", "number", "object", "string")
_RULE_REASONS: Final = ("FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired")


def _dns1035(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035.match(value):
        errs.append(_DNS1035_MESSAGE)
    return errs


def _dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(_DNS1123_SUBDOMAIN_MESSAGE)
    return errs


def _rule_value(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The internal ValidationRule struct as json.Marshal prints it (Go field names)."""
    return {
        "Rule": rule.get("rule", ""),
        "Message": rule.get("message", ""),
        "MessageExpression": rule.get("messageExpression", ""),
        "Reason": rule.get("reason"),
        "FieldPath": rule.get("fieldPath", ""),
        "OptionalOldSelf": rule.get("optionalOldSelf"),
    }


def _ordered_rule_json(rule: Mapping[str, Any]) -> str:
    value = _rule_value(rule)
    return "{" + ",".join(f"{go_json(k)}:{go_json(v)}" for k, v in value.items()) + "}"


class _RawJSON(str):
    """A bad value that is already JSON (kept in struct field order)."""


def check_crd(crd: Mapping[str, Any]) -> list[FieldError]:
    """What the API server refuses when a CustomResourceDefinition (apiextensions.k8s.io/v1) is
    created: names, group, scope, versions, and per version a structural schema with valid
    defaults, list/map extensions and compilable CEL rules."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    kind = str(names.get("kind") or "")
    if kind and not names.get("singular"):
        names["singular"] = kind.lower()
    if kind and not names.get("listKind"):
        names["listKind"] = kind + "List"
    group = str(spec.get("group") or "")
    errors: list[FieldError] = []

    name = str((crd.get("metadata") or {}).get("name") or "")
    if not name:
        errors.append(_required("metadata.name", "name or generateName is required"))
    else:
        for message in _dns1123_subdomain(name):
            errors.append(_invalid("metadata.name", name, message))
        if name != f"{names.get('plural', '')}.{group}":
            errors.append(_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))

    if not group:
        errors.append(_required("spec.group"))
    elif _dns1123_subdomain(group):
        errors.append(_invalid("spec.group", group, ",".join(_dns1123_subdomain(group))))
    elif len(group.split(".")) < 2:
        errors.append(_invalid("spec.group", group, "should be a domain with at least one dot"))

    scope = str(spec.get("scope") or "")
    if not scope:
        errors.append(_required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errors.append(_not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))

    versions = list(spec.get("versions") or [])
    storage = 0
    seen: set[str] = set()
    unique = True
    for position, version in enumerate(versions):
        version_path = f"spec.versions[{position}]"
        version_name = str(version.get("name") or "")
        storage += 1 if version.get("storage") else 0
        unique = unique and version_name not in seen
        seen.add(version_name)
        dns = _dns1035(version_name)
        if dns:
            errors.append(_invalid(f"{version_path}.name", version_name, ",".join(dns)))
        errors.extend(_check_version_schema(version, f"{version_path}.schema"))
    if not unique:
        errors.append(_invalid("spec.versions", versions, "must contain unique version names"))
    if storage != 1:
        errors.append(_invalid("spec.versions", versions, "must have exactly one version marked as storage version"))

    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            errors.append(_required(f"spec.names.{key}"))
    for key in ("plural", "singular"):
        value = str(names.get(key) or "")
        if value and _dns1035(value):
            errors.append(_invalid(f"spec.names.{key}", value, ",".join(_dns1035(value))))
    for key in ("kind", "listKind"):
        value = str(names.get(key) or "")
        if value and _dns1035(value.lower()):
            errors.append(
                _invalid(f"spec.names.{key}", value, "may have mixed case, but should otherwise match: " + ",".join(_dns1035(value.lower())))
            )
    for key in ("shortNames", "categories"):
        for position, value in enumerate(names.get(key) or []):
            if _dns1035(str(value)):
                errors.append(_invalid(f"spec.names.{key}[{position}]", value, ",".join(_dns1035(str(value)))))
    if kind and kind == names.get("listKind"):
        errors.append(_invalid("spec.names.listKind", names["listKind"], "kind and listKind may not be the same"))
    return errors


def _check_version_schema(version: Mapping[str, Any], path: str) -> list[FieldError]:
    schema = ((version.get("schema") or {}).get("openAPIV3Schema")) if isinstance(version.get("schema"), Mapping) else None
    root = f"{path}.openAPIV3Schema"
    if not isinstance(schema, Mapping):
        return [_required(root, "schemas are required")]
    errors: list[FieldError] = []
    subresources = version.get("subresources") or {}
    if "status" in subresources and _schema_type(schema) != "object":
        errors.append(
            _invalid(f"{root}.type", _schema_type(schema), 'only "object" is allowed as the type at the root of the schema if the status subresource is enabled')
        )
    if schema.get("nullable"):
        errors.append(_forbidden(f"{root}.nullable", "nullable cannot be true at the root"))
    structural = sorted(_structural_invariants(schema, "root", root), key=lambda e: e.message)
    structural_ok = not structural
    errors.extend(structural)
    if structural_ok:
        errors.extend(_check_defaults(schema, root, resource_root=True))
    schema_errors, cel_errors = _openapi_schema_checks(
        schema, root, is_root=True, inside_meta=False, forbid_defaults="", uncorrelatable=None, compile_cel=structural_ok, resource_root=True
    )
    return errors + schema_errors + cel_errors


def _structural_invariants(schema: Mapping[str, Any], level: str, path: str) -> list[FieldError]:
    """schema/validation.go validateStructuralInvariants."""
    errors: list[FieldError] = []
    schema_type = _schema_type(schema)
    items = _items(schema)
    if schema_type == "array" and items is None:
        errors.append(_required(f"{path}.items", "must be specified"))
    if items is not None:
        errors.extend(_structural_invariants(items, "item", f"{path}.items"))
    for key, prop in _properties(schema).items():
        errors.extend(_structural_invariants(prop, "field", f"{path}.properties[{key}]"))
    additional = schema.get("additionalProperties")
    if additional is not None and additional is not True:
        if level == "root":
            errors.append(_forbidden(f"{path}.additionalProperties", "must not be used at the root"))
        if isinstance(additional, Mapping):
            errors.extend(_structural_invariants(additional, "field", f"{path}.additionalProperties"))
    if schema.get("x-kubernetes-int-or-string") and schema.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True, "must be false if x-kubernetes-int-or-string is true"))
    if schema.get("x-kubernetes-int-or-string") and schema.get("x-kubernetes-embedded-resource"):
        errors.append(_invalid(f"{path}.x-kubernetes-embedded-resource", True, "must be false if x-kubernetes-int-or-string is true"))
    errors.extend(_value_validation(schema, path, skip_any_of=_is_int_or_string_any_of(schema.get("anyOf")), skip_first_all_of=_is_int_or_string_all_of(schema)))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    if embedded and schema_type != "object":
        if not schema_type:
            errors.append(_required(f"{path}.type", "must be object if x-kubernetes-embedded-resource is true"))
        else:
            errors.append(_invalid(f"{path}.type", schema_type, "must be object if x-kubernetes-embedded-resource is true"))
    elif not schema_type and not schema.get("x-kubernetes-int-or-string") and not schema.get("x-kubernetes-preserve-unknown-fields"):
        detail = {
            "root": "must not be empty at the root",
            "item": "must not be empty for specified array items",
            "field": "must not be empty for specified object fields",
        }[level]
        errors.append(_required(f"{path}.type", detail))
    if embedded and schema.get("additionalProperties") is not None:
        errors.append(_forbidden(f"{path}.additionalProperties", "must not be used if x-kubernetes-embedded-resource is set"))
    if level == "root" and schema_type and schema_type != "object":
        errors.append(_invalid(f"{path}.type", schema_type, "must be object at the root"))
    check_metadata = level == "root" or embedded
    properties = _properties(schema)
    for meta in ("kind", "apiVersion"):
        if meta in properties and check_metadata and _schema_type(properties[meta]) != "string":
            errors.append(_invalid(f"{path}.properties[{meta}].type", _schema_type(properties[meta]), "must be string"))
    if "metadata" in properties:
        metadata = properties["metadata"]
        meta_path = f"{path}.properties[metadata]"
        if check_metadata and _schema_type(metadata) != "object":
            errors.append(_invalid(f"{meta_path}.type", _schema_type(metadata), "must be object"))
        if level == "root":
            # Only type (cleared), default (checked elsewhere) and properties name/generateName
            # may be left once those are removed; anything else, even a description, is refused.
            rest = {k: v for k, v in metadata.items() if k not in ("type", "default")}
            meta_props = set(_properties(metadata))
            if meta_props and meta_props <= {"name", "generateName"}:
                rest.pop("properties", None)
            if rest:
                errors.append(
                    _forbidden(meta_path, "must not specify anything other than name and generateName, but metadata is implicitly specified")
                )
    if embedded and not schema.get("x-kubernetes-preserve-unknown-fields") and not properties:
        errors.append(
            _required(f"{path}.properties", "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields")
        )
    return errors


def _is_int_or_string_any_of(any_of: Any) -> bool:
    return isinstance(any_of, list) and len(any_of) == 2 and [dict(b) for b in any_of] == [
        {"type": "integer"},
        {"type": "string"},
    ]


def _is_int_or_string_all_of(schema: Mapping[str, Any]) -> bool:
    all_of = schema.get("allOf")
    return isinstance(all_of, list) and bool(all_of) and isinstance(all_of[0], Mapping) and _is_int_or_string_any_of(all_of[0].get("anyOf"))


def _value_validation(schema: Mapping[str, Any], path: str, *, skip_any_of: bool, skip_first_all_of: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if not skip_any_of:
        for position, branch in enumerate(schema.get("anyOf") or []):
            errors.extend(_nested(branch, f"{path}.anyOf[{position}]"))
    for position, branch in enumerate(schema.get("allOf") or []):
        skip = skip_first_all_of and position == 0
        errors.extend(_nested(branch, f"{path}.allOf[{position}]", skip_any_of=skip))
    for position, branch in enumerate(schema.get("oneOf") or []):
        errors.extend(_nested(branch, f"{path}.oneOf[{position}]"))
    if isinstance(schema.get("not"), Mapping):
        errors.extend(_nested(schema["not"], f"{path}.not"))
    pattern = schema.get("pattern")
    if pattern:
        try:
            re2.compile(pattern)
        except re2.error as err:
            errors.append(_invalid(f"{path}.pattern", pattern, f"must be a valid regular expression, but isn't: {_regexp_error(err)}"))
    return errors


_NESTED_FORBIDDEN: Final = (
    ("type", "must be empty to be structural"),
    ("default", "must be undefined to be structural"),
    ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"),
    ("nullable", "must be false to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)


def _nested(schema: Any, path: str, *, skip_any_of: bool = False) -> list[FieldError]:
    """validateNestedValueValidation: value validations under allOf/anyOf/oneOf/not."""
    if not isinstance(schema, Mapping):
        return []
    errors = _value_validation(schema, path, skip_any_of=skip_any_of, skip_first_all_of=False)
    items = _items(schema)
    if items is not None:
        errors.extend(_nested(items, f"{path}.items"))
    for key, prop in _properties(schema).items():
        errors.extend(_nested(prop, f"{path}.properties[{key}]"))
    if schema.get("additionalProperties") is not None:
        errors.append(_forbidden(f"{path}.additionalProperties", "must be undefined to be structural"))
    for key, detail in _NESTED_FORBIDDEN:
        if schema.get(key) not in (None, False, "", [], {}):
            errors.append(_forbidden(f"{path}.{key}", detail))
    if "metadata" in _properties(schema):
        errors.append(_forbidden(f"{path}.properties[metadata]", "must not be specified in a nested context"))
    return errors


def _check_defaults(schema: Mapping[str, Any], path: str, *, resource_root: bool, inside_meta: bool = False) -> list[FieldError]:
    """defaulting/validation.go: defaults must be pruned and valid against their schema."""
    errors: list[FieldError] = []
    embedded = resource_root or bool(schema.get("x-kubernetes-embedded-resource"))
    if embedded:
        inside_meta = False
    if "default" in schema and not inside_meta:
        default = schema["default"]
        default_path = f"{path}.default"
        pruned: Any = copy.deepcopy(default)
        pruned_schema = _as_resource_root(schema) if schema.get("x-kubernetes-embedded-resource") else schema
        holder = {"v": pruned}
        _prune(holder["v"], pruned_schema, [], [])
        if not _json_equal(holder["v"], default):
            errors.append(_invalid(default_path, default, "must not have unknown fields"))
        schema_errors = _to_field_errors(default_path, _openapi(schema, default, "").errors)
        errors.extend(schema_errors)
        if not schema_errors and _has_rules(schema):
            rule_errors = _cel_validate(schema, default, default_path, default, resource_root=embedded, unchanged=False, ratchet=False)
            errors.extend(e.error for e in rule_errors)
    items = _items(schema)
    if items is not None:
        errors.extend(_check_defaults(items, f"{path}.items", resource_root=False, inside_meta=inside_meta))
    for key, prop in _properties(schema).items():
        meta = inside_meta or (embedded and key in _META_FIELDS)
        errors.extend(_check_defaults(prop, f"{path}.properties[{key}]", resource_root=False, inside_meta=meta))
    return errors


def _openapi_schema_checks(
    schema: Mapping[str, Any],
    path: str,
    *,
    is_root: bool,
    inside_meta: bool,
    forbid_defaults: str,
    uncorrelatable: str | None,
    compile_cel: bool,
    resource_root: bool,
) -> tuple[list[FieldError], list[FieldError]]:
    """ValidateCustomResourceDefinitionOpenAPISchema: returns (schema errors, CEL errors)."""
    schema_errors: list[FieldError] = []
    cel_errors: list[FieldError] = []
    schema_type = schema.get("type")
    if schema_type is not None and schema_type != "" and schema_type not in _OPENAPI_TYPES:
        schema_errors.append(_not_supported(f"{path}.type", schema_type, list(_OPENAPI_TYPES)))
    if "default" in schema and forbid_defaults:
        schema_errors.append(_forbidden(f"{path}.default", f"must not be set {forbid_defaults}"))
    for key, detail in (
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ):
        if schema.get(key):
            schema_errors.append(_forbidden(f"{path}.{key}", detail))
    if schema_type == "null":
        schema_errors.append(_forbidden(f"{path}.type", "type cannot be set to null, use nullable as an alternative"))
    if isinstance(schema.get("items"), list):
        schema_errors.append(_forbidden(f"{path}.items", "items must be a schema object and not an array"))
    if inside_meta and schema.get("x-kubernetes-embedded-resource"):
        schema_errors.append(_forbidden(f"{path}.x-kubernetes-embedded-resource", "must not be used inside of resource meta"))
    if schema.get("uniqueItems"):
        schema_errors.append(_forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"))

    def recurse(sub: Any, sub_path: str, **overrides: Any) -> None:
        if not isinstance(sub, Mapping):
            return
        options: dict[str, Any] = dict(
            is_root=False, inside_meta=inside_meta, forbid_defaults=forbid_defaults,
            uncorrelatable=uncorrelatable, compile_cel=compile_cel, resource_root=False,
        )
        options.update(overrides)
        more_schema, more_cel = _openapi_schema_checks(sub, sub_path, **options)
        schema_errors.extend(more_schema)
        cel_errors.extend(more_cel)

    additional = schema.get("additionalProperties")
    if additional is not None:
        if _properties(schema) and (additional is False or isinstance(additional, Mapping)):
            schema_errors.append(_forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive"))
        recurse(
            additional, f"{path}.additionalProperties",
            forbid_defaults="inside additionalProperties applying to object metadata" if inside_meta else forbid_defaults,
        )
    map_correlatable = schema.get("x-kubernetes-map-type") != "atomic"
    for key, prop in _properties(schema).items():
        overrides: dict[str, Any] = {}
        if not map_correlatable and uncorrelatable is None:
            overrides["uncorrelatable"] = path
        if (is_root or schema.get("x-kubernetes-embedded-resource")) and key in _META_FIELDS:
            overrides["inside_meta"] = True
            if is_root:
                overrides["forbid_defaults"] = f"in top-level {key}"
        overrides["resource_root"] = bool(prop.get("x-kubernetes-embedded-resource")) if isinstance(prop, Mapping) else False
        recurse(prop, f"{path}.properties[{key}]", **overrides)
    recurse(schema.get("not"), f"{path}.not", compile_cel=False)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for position, branch in enumerate(schema.get(keyword) or []):
            recurse(branch, f"{path}.{keyword}[{position}]", compile_cel=False)
    items = _items(schema)
    if items is not None:
        item_overrides: dict[str, Any] = {"resource_root": bool(items.get("x-kubernetes-embedded-resource"))}
        if schema.get("x-kubernetes-list-type") != "map" and uncorrelatable is None:
            item_overrides["uncorrelatable"] = path
        recurse(items, f"{path}.items", **item_overrides)

    if schema.get("x-kubernetes-preserve-unknown-fields") is False:
        schema_errors.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False, "must be true or undefined"))
    map_type = schema.get("x-kubernetes-map-type")
    if map_type is not None and schema_type != "object":
        if not schema_type:
            schema_errors.append(_required(f"{path}.type", "must be object if x-kubernetes-map-type is specified"))
        else:
            schema_errors.append(_invalid(f"{path}.type", schema_type, "must be object if x-kubernetes-map-type is specified"))
    if map_type is not None and map_type not in ("atomic", "granular"):
        schema_errors.append(_not_supported(f"{path}.x-kubernetes-map-type", map_type, ["atomic", "granular"]))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type is not None and schema_type != "array":
        if not schema_type:
            schema_errors.append(_required(f"{path}.type", "must be array if x-kubernetes-list-type is specified"))
        else:
            schema_errors.append(_invalid(f"{path}.type", schema_type, "must be array if x-kubernetes-list-type is specified"))
    elif list_type == "set" and items is not None:
        item_type = _schema_type(items)
        if item_type == "array" and items.get("x-kubernetes-list-type") not in (None, "atomic"):
            schema_errors.append(_invalid(f"{path}.items.x-kubernetes-list-type", items.get("x-kubernetes-list-type"), "must be atomic as item of a list with x-kubernetes-list-type=set"))
        if item_type == "object" and items.get("x-kubernetes-map-type") != "atomic":
            schema_errors.append(_invalid(f"{path}.items.x-kubernetes-map-type", items.get("x-kubernetes-list-type"), "must be atomic as item of a list with x-kubernetes-list-type=set"))
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        schema_errors.append(_not_supported(f"{path}.x-kubernetes-list-type", list_type, ["atomic", "set", "map"]))
    map_keys = list(schema.get("x-kubernetes-list-map-keys") or [])
    if map_keys:
        if list_type is None:
            schema_errors.append(_required(f"{path}.x-kubernetes-list-type", "must be map if x-kubernetes-list-map-keys is non-empty"))
        elif list_type != "map":
            schema_errors.append(_invalid(f"{path}.x-kubernetes-list-type", list_type, "must be map if x-kubernetes-list-map-keys is non-empty"))
    if list_type == "map":
        if not map_keys:
            schema_errors.append(_required(f"{path}.x-kubernetes-list-map-keys", "must not be empty if x-kubernetes-list-type is map"))
        if items is None:
            schema_errors.append(_required(f"{path}.items", "must have a schema if x-kubernetes-list-type is map"))
        elif _schema_type(items) != "object":
            schema_errors.append(_invalid(f"{path}.items.type", _schema_type(items), "must be object if parent array's x-kubernetes-list-type is map"))
        else:
            seen_keys: set[str] = set()
            item_props = _properties(items)
            for key in map_keys:
                if key in item_props:
                    if _schema_type(item_props[key]) in ("array", "object"):
                        schema_errors.append(_invalid(f"{path}.items.properties[{key}].type", _schema_type(items), "must be a scalar type if parent array's x-kubernetes-list-type is map"))
                else:
                    schema_errors.append(_invalid(f"{path}.x-kubernetes-list-map-keys", map_keys, "entries must all be names of item properties"))
                if key in seen_keys:
                    schema_errors.append(_invalid(f"{path}.x-kubernetes-list-map-keys", map_keys, "must not contain duplicate entries"))
                seen_keys.add(key)
    if list_type in ("set", "map") and items is not None:
        if items.get("nullable"):
            schema_errors.append(_forbidden(f"{path}.items.nullable", f"cannot be nullable when x-kubernetes-list-type is {list_type}"))
        if list_type == "map":
            required = set(items.get("required") or [])
            for key in map_keys:
                prop = _properties(items).get(key)
                if prop is None:
                    continue
                if key not in required and "default" not in prop:
                    schema_errors.append(_required(f"{path}.items.properties[{key}].default", "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"))
                if prop.get("nullable"):
                    schema_errors.append(_forbidden(f"{path}.items.properties[{key}].nullable", "this property is in x-kubernetes-list-map-keys, so it cannot be nullable"))

    rules = list(schema.get("x-kubernetes-validations") or [])
    for position, rule in enumerate(rules):
        rule_path = f"{path}.x-kubernetes-validations[{position}]"
        text = str(rule.get("rule") or "")
        message = str(rule.get("message") or "")
        if not text.strip():
            schema_errors.append(_required(f"{rule_path}.rule", "rule is not specified"))
        elif message and not message.strip():
            schema_errors.append(_invalid(f"{rule_path}.message", message, "message must be non-empty if specified"))
        elif re.search(r"[\n\r]", message.strip()):
            schema_errors.append(_invalid(f"{rule_path}.message", message, "message must not contain line breaks"))
        elif re.search(r"[\n\r]", text.strip()) and not message.strip():
            schema_errors.append(_required(f"{rule_path}.message", "message must be specified if rule contains line breaks"))
        expression = str(rule.get("messageExpression") or "")
        if expression and not expression.strip():
            schema_errors.append(_required(f"{rule_path}.messageExpression", "messageExpression must be non-empty if specified"))
        reason = rule.get("reason")
        if reason is not None and reason not in _RULE_REASONS:
            schema_errors.append(_not_supported(f"{rule_path}.reason", reason, list(_RULE_REASONS)))
        field_path = str(rule.get("fieldPath") or "")
        if field_path and not field_path.strip():
            schema_errors.append(_invalid(f"{rule_path}.fieldPath", field_path, "fieldPath must be non-empty if specified"))
        if re.search(r"[\n\r]", field_path):
            schema_errors.append(_invalid(f"{rule_path}.fieldPath", field_path, "fieldPath must not contain line breaks"))
        if field_path.strip() and _normalize_field_path(field_path.strip(), schema) is None:
            schema_errors.append(_invalid(f"{rule_path}.fieldPath", field_path, "fieldPath must be a valid path"))
    if rules and compile_cel and not schema_errors:
        for position, rule in enumerate(rules):
            rule_path = f"{path}.x-kubernetes-validations[{position}]"
            text = str(rule.get("rule") or "")
            if not text.strip():
                continue
            value = _RawJSON(_ordered_rule_json(rule))
            issues = cel.check_rule(text, schema, resource_root=resource_root)
            if issues:
                cel_errors.append(_invalid_raw(f"{rule_path}.rule", value, f"compilation failed: {issues}"))
            expression = str(rule.get("messageExpression") or "")
            if expression.strip():
                expression_issues = cel.check_rule(expression, schema, resource_root=resource_root)
                if expression_issues:
                    cel_errors.append(_invalid_raw(f"{rule_path}.messageExpression", value, f"messageExpression compilation failed: {expression_issues}"))
            if issues:
                continue
            uses_old_self = cel.compile_expression(text).uses_old_self
            if uses_old_self and uncorrelatable is not None:
                cel_errors.append(
                    _invalid(f"{rule_path}.rule", text, f"oldSelf cannot be used on the uncorrelatable portion of the schema within {uncorrelatable}")
                )
            elif not uses_old_self and rule.get("optionalOldSelf") is not None:
                cel_errors.append(_invalid(f"{rule_path}.optionalOldSelf", rule["optionalOldSelf"], "may not be set if oldSelf is not used in rule"))
    return schema_errors, cel_errors


def _invalid_raw(path: str, raw: _RawJSON, detail: str) -> FieldError:
    """field.Invalid whose bad value is a Go struct already rendered as JSON."""
    body = f"Invalid value: {raw}: {detail}"
    return FieldError(field=path, reason=INVALID, message=f"{path}: {body}")
