"""CEL for CRD validation rules, with the Kubernetes semantics the API server gives them.

What this module is for: the API server test double (``harness.apiserver``) validates custom
resources against the ``x-kubernetes-validations`` rules of the CRDs we ship. cel-python
(``celpy``) parses and evaluates the expressions; this module adds what Kubernetes puts on top
of plain CEL:

* schema-aware conversion of JSON values (``to_cel``): property names escaped the way the API
  server escapes them (``__dash__``, ``__dot__``, ``__slash__``, ``__underscores__``,
  ``__namespace__`` ...), ``format: date-time``/``date`` strings become timestamps,
  ``duration`` strings durations, ``byte`` strings bytes, ``number`` fields doubles,
  ``x-kubernetes-int-or-string`` values stay ``int`` or ``string``, and the root of a resource
  (and every ``x-kubernetes-embedded-resource``) exposes only ``apiVersion``, ``kind``,
  ``metadata.name`` and ``metadata.generateName`` from its type and object meta;
* the runtime error texts of cel-go (``no such key: x``, ``index out of bounds: 3``,
  ``division by zero``, ``integer overflow``, ``no such overload``), because the API server
  copies them into the field errors users read;
* cel-go's heterogeneous equality (``1 == 1.0`` is true, ``1 == 'a'`` is false) and the
  cross-type numeric ordering Kubernetes enables;
* the Kubernetes list library (``isSorted``, ``sum``, ``min``, ``max``, ``indexOf``,
  ``lastIndexOf``), the regex library (``find``, ``findAll``) and the cel-go strings extension
  (``charAt``, ``indexOf``, ``lastIndexOf``, ``lowerAscii``, ``upperAscii``, ``replace``,
  ``split``, ``substring``, ``trim``, ``join``);
* a compile-time check (``check_rule``) that rejects what cel-go's type checker rejects most
  often in practice: syntax errors, undeclared identifiers, and selecting a field the schema
  does not declare (including fields under ``x-kubernetes-preserve-unknown-fields`` objects and
  typeless fields, which are invisible to CEL). Messages use cel-go's
  ``ERROR: <input>:line:col: ...`` layout with the source snippet and caret.

What it must never do: I/O, clocks, randomness, or mutating its inputs. The only state is the
memoisation of compiled programs, which is invisible to callers.

Kubernetes CEL behaviours NOT reproduced (known gaps, also listed in docs/testing.md):

* no real type checker: wrong argument types, non-bool rule results, unknown functions and
  methods are found only at evaluation time (or never, if the branch is not taken); cel-go
  rejects them when the CRD is created;
* no cost estimation or runtime cost budget (``estimated_cost_exceeded`` is deliberately absent:
  there is no cheap faithful way to reproduce cel-go's estimator), so rules that the API server
  refuses as too expensive are accepted here;
* syntax error texts come from the lark parser, not ANTLR: position and caret are right, the
  wording after ``Syntax error:`` is not cel-go's;
* missing libraries: ``url``/``isURL``, ``quantity``/``isQuantity``, ``ip``/``cidr``,
  ``semver``, ``format``, ``strings.quote``, ``math.*``, ``sets.*``, ``base64.*``, optional
  types (``?.``, ``optional.of``, ``orValue``) and the two-variable comprehensions
  (``all(k, v, ...)``, ``transformMap``) - they raise ``undeclared reference`` here;
* ``x-kubernetes-list-type: set``/``map`` lists compare as plain ordered lists (Kubernetes
  compares them as sets / by key);
* regular expressions are RE2 (google-re2), like cel-go, but through Python bindings.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy.adapter import json_to_cel
import lark
import lark.exceptions
import re2
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

__all__ = [
    "CelCompileError",
    "CelEvalError",
    "Program",
    "check_rule",
    "compile_expression",
    "escape_field_name",
    "is_true",
    "to_cel",
    "with_type_and_object_meta",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# apiserver/pkg/cel/escaping.go
_CEL_RESERVED = frozenset(
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
        "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
        "void", "while",
    }
)
_ESCAPE_MATCHER = re.compile(r"(__|[-./]|[^a-zA-Z0-9\-./_])")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class CelCompileError(Exception):
    """A rule that cel-go would refuse to compile; ``detail`` is the text after
    ``compilation failed: `` in the API server's message."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CelEvalError(Exception):
    """A rule whose evaluation failed; ``message`` is cel-go's error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def escape_field_name(name: str) -> str | None:
    """The CEL identifier under which a property is visible, or None if it cannot be."""
    if not name or name[0].isdigit():
        return None
    if name in _CEL_RESERVED:
        return f"__{name}__"
    ok = True

    def repl(match: re.Match[str]) -> str:
        nonlocal ok
        token = match.group(0)
        if token in _ESCAPES:
            return _ESCAPES[token]
        ok = False
        return ""

    escaped = _ESCAPE_MATCHER.sub(repl, name)
    return escaped if ok else None


# --------------------------------------------------------------------------- schema helpers


def with_type_and_object_meta(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema CEL sees at a resource root: the given one plus apiVersion, kind and the two
    metadata fields rules may read (``metadata.name``, ``metadata.generateName``)."""
    result = dict(schema)
    properties = dict(schema.get("properties") or {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
    }
    result["properties"] = properties
    return result


def _additional_schema(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- JSON -> CEL


def to_cel(value: Any, schema: Mapping[str, Any] | None, *, resource_root: bool = False) -> Any:
    """Convert a JSON value to the CEL value a rule sees for ``schema``.

    Only properties the schema declares are visible (under their escaped names); maps
    (``additionalProperties``) keep their keys; the root of a resource exposes type and object
    meta only through ``apiVersion``, ``kind``, ``metadata.name`` and ``metadata.generateName``.
    """
    if value is None:
        return None
    if schema is None:
        return json_to_cel(value)
    if schema.get("x-kubernetes-int-or-string"):
        return json_to_cel(value)
    if resource_root or schema.get("x-kubernetes-embedded-resource"):
        schema = with_type_and_object_meta(schema)
    schema_type = schema.get("type")
    if isinstance(value, Mapping):
        additional = _additional_schema(schema)
        if additional is not None:
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(v, additional) for k, v in value.items()}
            )
        properties = schema.get("properties") or {}
        if not properties and schema_type != "object":
            return json_to_cel(dict(value))
        fields: dict[Any, Any] = {}
        for key, item in value.items():
            prop = properties.get(key)
            escaped = escape_field_name(key)
            if prop is None or escaped is None:
                continue
            fields[celtypes.StringType(escaped)] = to_cel(item, prop)
        return celtypes.MapType(fields)
    if isinstance(value, list):
        items = schema.get("items")
        return celtypes.ListType([to_cel(v, items if isinstance(items, Mapping) else None) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if schema_type == "number" and isinstance(value, (int, float)):
        return celtypes.DoubleType(float(value))
    if schema_type == "string" and isinstance(value, str):
        return _formatted_string(value, schema.get("format"))
    return json_to_cel(value)


def _formatted_string(value: str, fmt: Any) -> Any:
    try:
        if fmt == "date-time":
            return celtypes.TimestampType(value)
        if fmt == "date":
            return celtypes.TimestampType(
                datetime.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
            )
        if fmt == "duration":
            return celtypes.DurationType(value)
        if fmt == "byte":
            return celtypes.BytesType(base64.b64decode(value, validate=True))
    except (ValueError, TypeError, binascii.Error):
        # The schema validation reports malformed formatted strings; CEL then sees the raw text.
        pass
    return celtypes.StringType(value)


# --------------------------------------------------------------------------- runtime library


def _is_number(value: Any) -> bool:
    # celpy returns plain floats from double arithmetic; BoolType is an int subclass.
    return isinstance(value, (int, float)) and not isinstance(value, (bool, celtypes.BoolType))


def _py_number(value: Any) -> int | float:
    return float(value) if isinstance(value, float) else int(value)


def _cel_equal(left: Any, right: Any) -> bool:
    """cel-go's heterogeneous equality: numbers compare by value, other type mismatches are
    simply unequal (never an error)."""
    if isinstance(left, celtypes.BoolType) or isinstance(right, celtypes.BoolType):
        return isinstance(left, celtypes.BoolType) and isinstance(right, celtypes.BoolType) and bool(
            left
        ) == bool(right)
    if _is_number(left) and _is_number(right):
        return _py_number(left) == _py_number(right)
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_cel_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        if len(left) != len(right):
            return False
        for key, value in left.items():
            match = [k for k in right if _cel_equal(k, key)]
            if not match or not _cel_equal(value, right[match[0]]):
                return False
        return True
    if type(left) is not type(right):
        same_family = (isinstance(left, str) and isinstance(right, str)) or (
            isinstance(left, bytes) and isinstance(right, bytes)
        )
        if not same_family:
            return False
    try:
        return bool(left == right)
    except TypeError:
        return False


def _compare(left: Any, right: Any) -> int:
    """Three-way comparison for CEL ordering; raises TypeError for incomparable values."""
    a: Any
    b: Any
    if _is_number(left) and _is_number(right):
        a, b = _py_number(left), _py_number(right)
    elif isinstance(left, celtypes.BoolType) and isinstance(right, celtypes.BoolType):
        a, b = bool(left), bool(right)
    elif type(left) is type(right) and isinstance(
        left, (celtypes.StringType, celtypes.BytesType, celtypes.TimestampType, celtypes.DurationType)
    ):
        a, b = left, right
    else:
        raise TypeError("no such overload")
    return int(a > b) - int(a < b)


def _ordering(test: Callable[[int], bool]) -> Callable[[Any, Any], Any]:
    def op(left: Any, right: Any) -> Any:
        for operand in (left, right):
            if isinstance(operand, CELEvalError):
                return operand
        try:
            return celtypes.BoolType(test(_compare(left, right)))
        except TypeError:
            return CELEvalError("no such overload")

    return op


def _equals(left: Any, right: Any) -> Any:
    for operand in (left, right):
        if isinstance(operand, CELEvalError):
            return operand
    return celtypes.BoolType(_cel_equal(left, right))


def _not_equals(left: Any, right: Any) -> Any:
    result = _equals(left, right)
    return result if isinstance(result, CELEvalError) else celtypes.BoolType(not result)


def _in(item: Any, container: Any) -> Any:
    for operand in (item, container):
        if isinstance(operand, CELEvalError):
            return operand
    if isinstance(container, (list, dict)):
        return celtypes.BoolType(any(_cel_equal(item, element) for element in container))
    return CELEvalError("no such overload")


def _checked_int(value: int) -> Any:
    if value < _INT64_MIN or value > _INT64_MAX:
        return CELEvalError("integer overflow")
    return celtypes.IntType(value)


def _arithmetic(operation: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """celpy's +, - and * with cel-go's error texts, keeping doubles typed as CEL doubles."""

    def op(left: Any, right: Any) -> Any:
        for operand in (left, right):
            if isinstance(operand, CELEvalError):
                return operand
        if isinstance(left, float) and isinstance(right, float):
            return celtypes.DoubleType(operation(float(left), float(right)))
        try:
            result = operation(left, right)
        except (ValueError, OverflowError):
            return CELEvalError("integer overflow")
        except TypeError:
            return CELEvalError("no such overload")
        if result is NotImplemented:
            return CELEvalError("no such overload")
        if isinstance(result, float) and not isinstance(result, celtypes.DoubleType):
            return celtypes.DoubleType(result)
        if isinstance(result, str) and not isinstance(result, celtypes.StringType):
            return celtypes.StringType(result)
        if isinstance(result, list) and not isinstance(result, celtypes.ListType):
            return celtypes.ListType(result)
        return result

    return op


def _divide(left: Any, right: Any) -> Any:
    for operand in (left, right):
        if isinstance(operand, CELEvalError):
            return operand
    if isinstance(left, celtypes.IntType) and isinstance(right, celtypes.IntType):
        if int(right) == 0:
            return CELEvalError("division by zero")
        quotient = abs(int(left)) // abs(int(right))
        return _checked_int(quotient if (left < 0) == (right < 0) else -quotient)
    if isinstance(left, celtypes.UintType) and isinstance(right, celtypes.UintType):
        if int(right) == 0:
            return CELEvalError("division by zero")
        return celtypes.UintType(int(left) // int(right))
    if isinstance(left, float) and isinstance(right, float):
        if float(right) == 0.0:
            if float(left) == 0.0 or math.isnan(float(left)):
                return celtypes.DoubleType(math.nan)
            sign = math.copysign(1.0, float(left)) * math.copysign(1.0, float(right))
            return celtypes.DoubleType(math.copysign(math.inf, sign))
        return celtypes.DoubleType(float(left) / float(right))
    return CELEvalError("no such overload")


def _modulo(left: Any, right: Any) -> Any:
    for operand in (left, right):
        if isinstance(operand, CELEvalError):
            return operand
    if isinstance(left, celtypes.IntType) and isinstance(right, celtypes.IntType):
        if int(right) == 0:
            return CELEvalError("modulus by zero")
        remainder = abs(int(left)) % abs(int(right))
        return celtypes.IntType(remainder if left >= 0 else -remainder)
    if isinstance(left, celtypes.UintType) and isinstance(right, celtypes.UintType):
        if int(right) == 0:
            return CELEvalError("modulus by zero")
        return celtypes.UintType(int(left) % int(right))
    return CELEvalError("no such overload")


def _index(container: Any, index: Any) -> Any:
    for operand in (container, index):
        if isinstance(operand, CELEvalError):
            return operand
    if isinstance(container, list):
        if not _is_number(index) or (isinstance(index, celtypes.DoubleType) and float(index) != int(index)):
            return CELEvalError(f"unsupported index type '{_type_name(index)}' in list")
        position = int(index)
        if position < 0 or position >= len(container):
            return CELEvalError(f"index out of bounds: {position}")
        return container[position]
    if isinstance(container, dict):
        for key, value in container.items():
            if _cel_equal(key, index):
                return value
        return CELEvalError(f"no such key: {_plain(index)}")
    return CELEvalError("no such overload")


def _type_name(value: Any) -> str:
    names = (
        (celtypes.BoolType, "bool"),
        (celtypes.IntType, "int"),
        (celtypes.UintType, "uint"),
        (celtypes.DoubleType, "double"),
        (celtypes.StringType, "string"),
        (celtypes.BytesType, "bytes"),
        (celtypes.ListType, "list"),
        (celtypes.MapType, "map"),
        (celtypes.TimestampType, "google.protobuf.Timestamp"),
        (celtypes.DurationType, "google.protobuf.Duration"),
    )
    for cls, name in names:
        if isinstance(value, cls):
            return name
    return "null_type" if value is None else type(value).__name__


def _plain(value: Any) -> str:
    """How cel-go's ``%v`` prints a CEL value inside an error message."""
    if isinstance(value, celtypes.BoolType):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    return str(value)


def _is_sorted(items: Any) -> Any:
    if not isinstance(items, list):
        return CELEvalError("no such overload")
    try:
        return celtypes.BoolType(all(_compare(a, b) <= 0 for a, b in zip(items, items[1:])))
    except TypeError:
        return CELEvalError("no such overload")


def _sum(items: Any) -> Any:
    if not isinstance(items, list):
        return CELEvalError("no such overload")
    if not items:
        return celtypes.IntType(0)
    kind = type(items[0])
    if any(type(item) is not kind for item in items):
        return CELEvalError("no such overload")
    if kind is celtypes.IntType:
        return _checked_int(sum(int(item) for item in items))
    if kind is celtypes.UintType:
        total = sum(int(item) for item in items)
        return CELEvalError("unsigned integer overflow") if total >= 2**64 else celtypes.UintType(total)
    if kind is celtypes.DoubleType:
        return celtypes.DoubleType(sum(float(item) for item in items))
    if kind is celtypes.DurationType:
        duration: Any = items[0]
        for item in items[1:]:
            duration = celtypes.DurationType(duration + item)
        return duration
    return CELEvalError("no such overload")


def _extreme(name: str, prefer: int) -> Callable[[Any], Any]:
    def pick(items: Any) -> Any:
        if not isinstance(items, list):
            return CELEvalError("no such overload")
        if not items:
            return CELEvalError(f"{name} called on empty list")
        result = items[0]
        try:
            for item in items[1:]:
                if _compare(result, item) == prefer:
                    result = item
        except TypeError:
            return CELEvalError("no such overload")
        return result

    return pick


def _index_of(receiver: Any, item: Any, *offset: Any) -> Any:
    if isinstance(receiver, list) and not offset:
        for position, element in enumerate(receiver):
            if _cel_equal(element, item):
                return celtypes.IntType(position)
        return celtypes.IntType(-1)
    if isinstance(receiver, str) and isinstance(item, str):
        start = int(offset[0]) if offset else 0
        if start < 0 or start > len(receiver):
            return CELEvalError(f"index out of range: {start}")
        return celtypes.IntType(receiver.find(item, start))
    return CELEvalError("no such overload")


def _last_index_of(receiver: Any, item: Any, *offset: Any) -> Any:
    if isinstance(receiver, list) and not offset:
        for position in range(len(receiver) - 1, -1, -1):
            if _cel_equal(receiver[position], item):
                return celtypes.IntType(position)
        return celtypes.IntType(-1)
    if isinstance(receiver, str) and isinstance(item, str):
        end = int(offset[0]) if offset else len(receiver)
        if end < 0 or end > len(receiver):
            return CELEvalError(f"index out of range: {end}")
        return celtypes.IntType(receiver.rfind(item, 0, end + len(item)))
    return CELEvalError("no such overload")


def _string_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    def method(receiver: Any, *args: Any) -> Any:
        if not isinstance(receiver, str):
            return CELEvalError("no such overload")
        return fn(receiver, *args)

    method.__name__ = fn.__name__
    return method


def _char_at(text: str, index: Any) -> Any:
    position = int(index)
    if position < 0 or position > len(text):
        return CELEvalError(f"index out of range: {position}")
    return celtypes.StringType(text[position : position + 1])


def _substring(text: str, start: Any, *end: Any) -> Any:
    begin = int(start)
    finish = int(end[0]) if end else len(text)
    if begin < 0 or begin > len(text):
        return CELEvalError(f"index out of range: {begin}")
    if finish < 0 or finish > len(text):
        return CELEvalError(f"index out of range: {finish}")
    if begin > finish:
        return CELEvalError(f"invalid substring range. start: {begin}, end: {finish}")
    return celtypes.StringType(text[begin:finish])


def _replace(text: str, old: Any, new: Any, *limit: Any) -> Any:
    count = int(limit[0]) if limit else -1
    return celtypes.StringType(text.replace(str(old), str(new), count))


def _split(text: str, separator: Any, *limit: Any) -> Any:
    count = int(limit[0]) if limit else -1
    if count == 0:
        return celtypes.ListType([])
    if separator == "":
        parts = list(text)
        if count > 0 and len(parts) > count:
            parts = parts[: count - 1] + ["".join(parts[count - 1 :])]
    else:
        parts = text.split(str(separator), count - 1 if count > 0 else -1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join(items: Any, *separator: Any) -> Any:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return CELEvalError("no such overload")
    return celtypes.StringType((str(separator[0]) if separator else "").join(items))


def _find(text: Any, pattern: Any) -> Any:
    if not isinstance(text, str) or not isinstance(pattern, str):
        return CELEvalError("no such overload")
    try:
        match = re2.search(str(pattern), str(text))
    except re2.error as err:
        return CELEvalError(f"regex compilation failed: {err}")
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: Any, pattern: Any, *limit: Any) -> Any:
    if not isinstance(text, str) or not isinstance(pattern, str):
        return CELEvalError("no such overload")
    try:
        found = [m.group(0) for m in re2.finditer(str(pattern), str(text))]
    except re2.error as err:
        return CELEvalError(f"regex compilation failed: {err}")
    count = int(limit[0]) if limit else -1
    if count >= 0:
        found = found[:count]
    return celtypes.ListType([celtypes.StringType(f) for f in found])


_LOWER_ASCII: dict[int, int] = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER_ASCII: dict[int, int] = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_==_": _equals,
    "_!=_": _not_equals,
    "_<_": _ordering(lambda c: c < 0),
    "_<=_": _ordering(lambda c: c <= 0),
    "_>_": _ordering(lambda c: c > 0),
    "_>=_": _ordering(lambda c: c >= 0),
    "_in_": _in,
    "_+_": _arithmetic(operator.add),
    "_-_": _arithmetic(operator.sub),
    "_*_": _arithmetic(operator.mul),
    "_/_": _divide,
    "_%_": _modulo,
    "_[_]": _index,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _extreme("min", 1),
    "max": _extreme("max", -1),
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "charAt": _string_method(_char_at),
    "lowerAscii": _string_method(lambda t: celtypes.StringType(t.translate(_LOWER_ASCII))),
    "upperAscii": _string_method(lambda t: celtypes.StringType(t.translate(_UPPER_ASCII))),
    "replace": _string_method(_replace),
    "split": _string_method(_split),
    "substring": _string_method(_substring),
    "trim": _string_method(lambda t: celtypes.StringType(t.strip())),
    "join": _join,
    "find": _find,
    "findAll": _find_all,
}

# Names a rule may use without declaring them: standard CEL functions, the Kubernetes and
# strings libraries above, and type names used as conversion functions.
_KNOWN_FUNCTIONS = frozenset(
    {
        "size", "has", "matches", "contains", "startsWith", "endsWith", "int", "uint", "double",
        "string", "bytes", "bool", "duration", "timestamp", "type", "dyn", "getDate",
        "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getMonth", "getHours",
        "getMilliseconds", "getMinutes", "getSeconds",
    }
    | {name for name in _FUNCTIONS if not name.startswith("_")}
    | _MACROS
)


# --------------------------------------------------------------------------- compile / evaluate


_ENV = celpy.Environment()


@dataclass(frozen=True)
class Program:
    """A parsed rule, ready to evaluate against an activation (``self``, ``oldSelf``)."""

    source: str
    ast: "lark.Tree[Any]"
    runner: celpy.Runner
    uses_old_self: bool

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate; raises CelEvalError with cel-go's message when evaluation fails."""
        try:
            result = self.runner.evaluate(dict(activation))
        except CELEvalError as err:
            raise CelEvalError(_go_message(err)) from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise CelEvalError(f"no such overload: {err}") from None
        if isinstance(result, CELEvalError):
            raise CelEvalError(_go_message(result))
        return result


def is_true(value: Any) -> bool:
    """Whether a rule result is CEL ``true`` (anything else, even truthy, fails the rule)."""
    return isinstance(value, (bool, celtypes.BoolType)) and bool(value)


def _go_message(err: CELEvalError) -> str:
    """Translate celpy's error text into the cel-go text the API server shows."""
    message = err.args[0] if err.args else ""
    if not isinstance(message, str):
        return str(message)
    member = re.fullmatch(r"no such member in mapping: '(.*)'", message)
    if member:
        return f"no such key: {member.group(1)}"
    if message == "no such key":
        detail = err.args[2] if len(err.args) > 2 else None
        key = detail[0] if isinstance(detail, tuple) and detail else ""
        return f"no such key: {_plain(key)}"
    if message.startswith("return error for overflow"):
        return "integer overflow"
    if message == "modulus or divide by zero":
        return "division by zero"
    if message.startswith("found no matching overload") or message.startswith("no such overload"):
        return "no such overload"
    if message.startswith("undeclared reference to"):
        return message.split(" (in activation")[0]
    if message == "invalid_argument":
        return "index out of bounds"
    if message.startswith("Attempt to reduce an empty sequence"):
        # celpy treats ``min()`` as a built-in macro; cel-go's list library says this.
        return "min called on empty list"
    return message


def _ident_names(tree: Any) -> Iterator[Any]:
    for ident in tree.find_data("ident"):
        yield ident.children[0]


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> Program:
    """Parse ``source`` once (memoised) and bind the Kubernetes function library.

    Raises CelCompileError for syntax errors, with cel-go's message layout."""
    try:
        ast = _ENV.compile(source)
    except CELParseError as err:
        raise CelCompileError(_syntax_issue(source, err)) from None
    runner = _ENV.program(ast, functions=_FUNCTIONS)
    uses_old_self = any(token.value == "oldSelf" for token in _ident_names(ast))
    return Program(source=source, ast=ast, runner=runner, uses_old_self=uses_old_self)


def _syntax_issue(source: str, err: CELParseError) -> str:
    """Position a syntax error as cel-go does: unexpected end of input points past the end."""
    line = getattr(err, "line", None) or 1
    column = getattr(err, "column", None) or 1
    cause = err.__cause__ or err.__context__
    token = getattr(cause, "token", None)
    if isinstance(cause, lark.exceptions.UnexpectedToken) and getattr(token, "type", "") == "$END":
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
        return _issue(source, line, column, "Syntax error: unexpected end of input")
    if isinstance(cause, lark.exceptions.UnexpectedToken):
        return _issue(source, line, column, f"Syntax error: unexpected input '{token}'")
    return _issue(source, line, column, "Syntax error: token recognition error")


def _issue(source: str, line: int, column: int, message: str) -> str:
    """One cel-go issue: ``ERROR: <input>:L:C: msg`` then the source line and a caret."""
    lines = source.splitlines() or [""]
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return f"ERROR: <input>:{line}:{column}: {message}\n | {text}\n | {'.' * (column - 1)}^"


# --------------------------------------------------------------------------- static check


@dataclass(frozen=True)
class _Type:
    """What the checker knows about an expression: kind is object, map, list, scalar or dyn."""

    kind: str
    schema: Mapping[str, Any] | None = None
    elem: "_Type | None" = None


_DYN = _Type("dyn")


def _decl_type(schema: Mapping[str, Any] | None, resource_root: bool = False) -> _Type | None:
    """model.SchemaDeclType: None for schemas CEL cannot see (typeless fields)."""
    if schema is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return _DYN
    if resource_root or schema.get("x-kubernetes-embedded-resource"):
        schema = with_type_and_object_meta(schema)
    schema_type = schema.get("type")
    if schema_type == "array":
        items = schema.get("items")
        return _Type("list", schema, _decl_type(items if isinstance(items, Mapping) else None) or _DYN)
    if schema_type == "object":
        additional = _additional_schema(schema)
        if additional is not None:
            return _Type("map", schema, _decl_type(additional) or _DYN)
        return _Type("object", schema)
    if schema_type in ("string", "integer", "number", "boolean"):
        return _Type("scalar", schema)
    return None


def _field_type(object_type: _Type, escaped: str) -> _Type | None:
    properties = (object_type.schema or {}).get("properties") or {}
    for name, prop in properties.items():
        if escape_field_name(name) == escaped:
            return _decl_type(prop)
    return None


class _Checker:
    """A small slice of cel-go's checker: identifiers and field selections against the schema."""

    def __init__(self, source: str, scope: Mapping[str, _Type]) -> None:
        self.source = source
        self.scope = dict(scope)
        self.issues: list[str] = []

    def report(self, line: Any, column: Any, message: str) -> None:
        self.issues.append(_issue(self.source, int(line or 1), int(column or 1), message))

    def visit(self, node: Any) -> _Type:
        if isinstance(node, lark.Token):
            return _DYN
        handler = getattr(self, f"visit_{node.data}", None)
        if handler is not None:
            result: _Type = handler(node)
            return result
        types = [self.visit(child) for child in node.children if isinstance(child, lark.Tree)]
        return types[0] if len(types) == 1 and node.data in {
            "expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
            "unary", "member", "primary", "paren_expr",
        } else _DYN

    def visit_ident(self, node: Any) -> _Type:
        token = node.children[0]
        if token.value in self.scope:
            return self.scope[token.value]
        self.report(token.line, token.column, f"undeclared reference to '{token.value}' (in container '')")
        return _DYN

    def select(self, operand: _Type, token: Any) -> _Type:
        if operand.kind == "object":
            field = _field_type(operand, token.value)
            if field is None:
                self.report(token.line, int(token.column or 2) - 1, f"undefined field '{token.value}'")
                return _DYN
            return field
        if operand.kind == "map":
            return operand.elem or _DYN
        return _DYN

    def visit_member_dot(self, node: Any) -> _Type:
        operand = self.visit(node.children[0])
        return self.select(operand, node.children[1])

    def visit_member_index(self, node: Any) -> _Type:
        operand = self.visit(node.children[0])
        self.visit(node.children[1])
        if operand.kind in ("list", "map"):
            return operand.elem or _DYN
        return _DYN

    def visit_ident_arg(self, node: Any) -> _Type:
        token = node.children[0]
        args = node.children[1] if len(node.children) > 1 else None
        if token.value not in _KNOWN_FUNCTIONS:
            column = self._paren_column(token)
            self.report(token.line, column, f"undeclared reference to '{token.value}' (in container '')")
        if isinstance(args, lark.Tree):
            for arg in args.children:
                self.visit(arg)
        return _DYN

    def visit_member_dot_arg(self, node: Any) -> _Type:
        operand = self.visit(node.children[0])
        method = node.children[1]
        args = node.children[2] if len(node.children) > 2 else None
        arg_list = list(args.children) if isinstance(args, lark.Tree) else []
        if method.value in _MACROS and len(arg_list) == 2:
            variable = next(_ident_names(arg_list[0]), None)
            element = _DYN
            if operand.kind == "list":
                element = operand.elem or _DYN
            elif operand.kind == "map":
                element = _Type("scalar", {"type": "string"})
            saved = dict(self.scope)
            if variable is not None:
                self.scope[variable.value] = element
            self.visit(arg_list[1])
            self.scope = saved
            if method.value == "filter":
                return operand
            return _Type("list", None, _DYN) if method.value == "map" else _Type("scalar")
        for arg in arg_list:
            self.visit(arg)
        return _DYN

    def _paren_column(self, token: Any) -> int:
        return int(token.column) + len(token.value)

    def visit_literal(self, node: Any) -> _Type:
        return _Type("scalar")


def check_rule(
    source: str,
    schema: Mapping[str, Any],
    *,
    resource_root: bool = False,
    old_self: bool = True,
) -> str | None:
    """Return cel-go-style compile errors for ``source`` at ``schema``, or None if it compiles.

    ``has(self.x)`` is checked like ``self.x``; ``self`` and ``oldSelf`` (when allowed) are the
    only free variables."""
    try:
        program = compile_expression(source)
    except CelCompileError as err:
        return err.detail
    self_type = _decl_type(schema, resource_root) or _DYN
    scope = {"self": self_type}
    if old_self:
        scope["oldSelf"] = self_type
    checker = _Checker(source, scope)
    checker.visit(program.ast)
    return "\n".join(checker.issues) or None
