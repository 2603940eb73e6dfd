"""The harness's custom-resource schema layer answers as kube-apiserver does.

Expected messages are the API server's, worked out from the Go sources the harness ports
(kube-openapi validate/errors, apiextensions-apiserver schema/cel/listtype/defaulting/pruning,
apimachinery field errors) and cross-checked against messages real clusters print.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness import schema
from harness.schema import FieldError

BLOCKED = (
    "<nil>: Invalid value: null: some validation rules were not checked because the object was "
    "invalid; correct the existing errors to complete validation"
)


def spec_with(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A CR root schema whose ``spec`` has the given properties."""
    return {"type": "object", "properties": {"spec": {"type": "object", "properties": properties, **extra}}}


def messages(errors: list[FieldError]) -> list[str]:
    return [e.message for e in errors]


# --------------------------------------------------------------------------- schema keywords

KEYWORD_CASES = [
    # type
    ({"type": "string"}, "text", []),
    ({"type": "string"}, 5, ['spec.x: Invalid value: "integer": spec.x in body must be of type string: "integer"']),
    ({"type": "integer"}, 3.0, []),
    ({"type": "integer"}, 1.5, ['spec.x: Invalid value: "number": spec.x in body must be of type integer: "number"']),
    ({"type": "number"}, 2, []),
    ({"type": "boolean"}, "true", ['spec.x: Invalid value: "string": spec.x in body must be of type boolean: "string"']),
    ({"type": "object"}, [1], ['spec.x: Invalid value: "array": spec.x in body must be of type object: "array"']),
    ({"type": "array", "items": {"type": "string"}}, {"a": 1}, ['spec.x: Invalid value: "object": spec.x in body must be of type array: "object"']),
    # nullable
    ({"type": "string", "nullable": True}, None, []),
    ({"type": "string"}, None, ['spec.x: Invalid value: "null": spec.x in body must be of type string: "null"']),
    # enum
    ({"type": "string", "enum": ["Hard", "Soft"]}, "Soft", []),
    ({"type": "string", "enum": ["Hard", "Soft"]}, "hardish", ['spec.x: Unsupported value: "hardish": supported values: "Hard", "Soft"']),
    ({"type": "integer", "enum": [1, 2]}, 3, ['spec.x: Unsupported value: 3: supported values: "1", "2"']),
    # minimum / maximum
    ({"type": "integer", "minimum": 0}, 0, []),
    ({"type": "integer", "minimum": 0}, -1, ["spec.x: Invalid value: -1: spec.x in body should be greater than or equal to 0"]),
    ({"type": "integer", "minimum": 0, "exclusiveMinimum": True}, 0, ["spec.x: Invalid value: 0: spec.x in body should be greater than 0"]),
    ({"type": "integer", "maximum": 10}, 11, ["spec.x: Invalid value: 11: spec.x in body should be less than or equal to 10"]),
    ({"type": "integer", "maximum": 10, "exclusiveMaximum": True}, 10, ["spec.x: Invalid value: 10: spec.x in body should be less than 10"]),
    ({"type": "number", "maximum": 2.5}, 3.5, ["spec.x: Invalid value: 3.5: spec.x in body should be less than or equal to 2.5"]),
    # multipleOf
    ({"type": "integer", "multipleOf": 5}, 15, []),
    ({"type": "integer", "multipleOf": 5}, 7, ["spec.x: Invalid value: 7: spec.x in body should be a multiple of 5"]),
    ({"type": "number", "multipleOf": 0.5}, 1.25, ["spec.x: Invalid value: 1.25: spec.x in body should be a multiple of 0.5"]),
    # string length, in characters
    ({"type": "string", "maxLength": 3}, "héé", []),
    ({"type": "string", "maxLength": 3}, "abcd", ["spec.x: Too long: may not be more than 3 bytes"]),
    ({"type": "string", "maxLength": 1}, "ab", ["spec.x: Too long: may not be more than 1 byte"]),
    ({"type": "string", "minLength": 2}, "a", ['spec.x: Invalid value: "a": spec.x in body should be at least 2 chars long']),
    # pattern (RE2, unanchored like Go's MatchString)
    ({"type": "string", "pattern": "^[a-z]+$"}, "abc", []),
    ({"type": "string", "pattern": "^[a-z]+$"}, "ABC", ["spec.x: Invalid value: \"ABC\": spec.x in body should match '^[a-z]+$'"]),
    ({"type": "string", "pattern": "[0-9]"}, "a1b", []),
    # formats the server keeps, and the ones it strips
    ({"type": "string", "format": "date-time"}, "2024-05-01T10:00:00Z", []),
    ({"type": "string", "format": "date-time"}, "yesterday", ['spec.x: Invalid value: "yesterday": spec.x in body must be of type date-time: "yesterday"']),
    ({"type": "string", "format": "byte"}, "aGVsbG8=", []),
    ({"type": "string", "format": "byte"}, "not base64!", ['spec.x: Invalid value: "not base64!": spec.x in body must be of type byte: "not base64!"']),
    ({"type": "integer", "format": "int32"}, 2**40, []),
    ({"type": "number", "format": "double"}, 1.5, []),
    # arrays
    ({"type": "array", "items": {"type": "string"}, "minItems": 1}, [], ["spec.x: Invalid value: 0: spec.x in body should have at least 1 items"]),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 2}, ["a", "b", "c"], ["spec.x: Too many: 3: must have at most 2 items"]),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 1}, ["a", "b"], ["spec.x: Too many: 2: must have at most 1 item"]),
    ({"type": "array", "items": {"type": "integer"}}, [1, "two"], ['spec.x[1]: Invalid value: "string": spec.x[1] in body must be of type integer: "string"']),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, ["a", "a"], ['spec.x: Invalid value: "": spec.x in body shouldn\'t contain duplicates']),
    # objects
    ({"type": "object", "minProperties": 2, "additionalProperties": {"type": "string"}}, {"a": "1"}, ["spec.x: Invalid value: 1: spec.x in body should have at least 2 properties"]),
    ({"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}}, {"a": "1", "b": "2"}, ["spec.x: Too many: 2: must have at most 1 item"]),
    ({"type": "object", "additionalProperties": {"type": "string", "maxLength": 2}}, {"team": "abc"}, ["spec.x.team: Too long: may not be more than 2 bytes"]),
    ({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}, {}, ["spec.x.name: Required value"]),
    # int-or-string
    ({"x-kubernetes-int-or-string": True}, 80, []),
    ({"x-kubernetes-int-or-string": True}, "80%", []),
    ({"x-kubernetes-int-or-string": True}, True, ['spec.x: Invalid value: "boolean": spec.x in body must be of type integer,string: "boolean"']),
    # list types
    ({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}, ["a", "b", "a"], ['spec.x[2]: Duplicate value: "a"']),
    ({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "integer"}}, [1, 2, 3], []),
    (
        {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "properties": {"name": {"type": "string"}, "url": {"type": "string"}}}},
        [{"name": "a", "url": "x"}, {"name": "a", "url": "y"}],
        ['spec.x[1]: Duplicate value: {"name":"a"}'],
    ),
    (
        {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "port"], "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
        [{"name": "a", "port": 1}, {"name": "a", "port": 2}, {"name": "a", "port": 1}],
        ['spec.x[2]: Duplicate value: {"name":"a","port":1}'],
    ),
    # value validations combined
    ({"type": "string", "allOf": [{"maxLength": 2}, {"pattern": "^a"}]}, "ab", []),
    (
        {"type": "string", "allOf": [{"maxLength": 2}]},
        "abc",
        ["spec.x: Too long: may not be more than 2 bytes", '<nil>: Invalid value: "": "spec.x" must validate all the schemas (allOf). None validated'],
    ),
    (
        {"type": "string", "anyOf": [{"maxLength": 1}, {"pattern": "^z"}]},
        "abc",
        ['<nil>: Invalid value: "": "spec.x" must validate at least one schema (anyOf)', "spec.x: Too long: may not be more than 1 byte"],
    ),
    ({"type": "string", "oneOf": [{"maxLength": 5}, {"pattern": "^a"}]}, "abc", ['<nil>: Invalid value: "": "spec.x" must validate one and only one schema (oneOf). Found 2 valid alternatives']),
    ({"type": "string", "not": {"pattern": "^a"}}, "abc", ['<nil>: Invalid value: "": "spec.x" must not validate the schema (not)']),
]

KEYWORD_IDS = [
    "a string is a string",
    "an integer where a string belongs is a type error",
    "an integral float is an integer",
    "a float with a fraction is not an integer",
    "an integer is a number",
    "the string true is not a boolean",
    "a list where an object belongs is a type error",
    "an object where an array belongs is a type error",
    "null is accepted for a nullable field",
    "null is a type error for a non-nullable field",
    "an enum member is accepted",
    "a value outside the enum is unsupported and the server lists the choices",
    "integer enum choices are listed as quoted JSON",
    "the minimum itself is accepted",
    "a value below the minimum is invalid",
    "the exclusive minimum itself is invalid",
    "a value above the maximum is invalid",
    "the exclusive maximum itself is invalid",
    "float bounds print the way Go prints floats",
    "a multiple of multipleOf is accepted",
    "an integer that is not a multiple is invalid",
    "a float that is not a multiple is invalid",
    "maxLength counts characters not bytes",
    "a string over maxLength is too long and the value is omitted",
    "a maxLength of one says byte not bytes",
    "a string under minLength is invalid",
    "a matching pattern is accepted",
    "a string not matching the pattern is invalid",
    "patterns match anywhere unless anchored",
    "a RFC 3339 date-time is accepted",
    "a malformed date-time is a type error",
    "valid base64 is accepted for format byte",
    "invalid base64 is a type error for format byte",
    "format int32 is stripped by the server so big integers pass",
    "format double is stripped by the server",
    "too few items is invalid with the item count",
    "too many items is reported with the count and the limit",
    "a maxItems of one says item not items",
    "array items are validated with their index in the path",
    "uniqueItems duplicates are reported by the validator",
    "too few properties is invalid with the property count",
    "too many properties uses the server's items wording",
    "map values are named with dots in schema errors",
    "a missing required property is a required value",
    "int-or-string accepts an integer",
    "int-or-string accepts a string",
    "int-or-string rejects a boolean naming both types",
    "a set with a repeated item reports the second appearance",
    "a set without repeats is accepted",
    "a map list with a repeated key reports the key as JSON",
    "a map list with several keys compares all of them",
    "allOf passes when every branch passes",
    "allOf reports the branch error and the composite error",
    "anyOf reports the composite error and the best failing branch",
    "oneOf with two matching branches is invalid",
    "not fails when its schema matches",
]


@pytest.mark.parametrize(("property_schema", "value", "expected"), KEYWORD_CASES, ids=KEYWORD_IDS)
def test_schema_keywords_fail_with_the_servers_message(property_schema: dict[str, Any], value: Any, expected: list[str]) -> None:
    errors = schema.validate(spec_with({"x": property_schema}), {"spec": {"x": value}})
    assert messages(errors) == expected


REASON_CASES = [
    ({"type": "string"}, 5, "FieldValueTypeInvalid", "spec.x"),
    ({"type": "string", "enum": ["a"]}, "b", "FieldValueNotSupported", "spec.x"),
    ({"type": "integer", "minimum": 1}, 0, "FieldValueInvalid", "spec.x"),
    ({"type": "string", "maxLength": 1}, "ab", "FieldValueTooLong", "spec.x"),
    ({"type": "array", "items": {"type": "string"}, "maxItems": 0}, ["a"], "FieldValueTooMany", "spec.x"),
    ({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}, ["a", "a"], "FieldValueDuplicate", "spec.x[1]"),
    ({"type": "object", "required": ["y"], "properties": {"y": {"type": "string"}}}, {}, "FieldValueRequired", "spec.x.y"),
]


@pytest.mark.parametrize(
    ("property_schema", "value", "reason", "field"),
    REASON_CASES,
    ids=[
        "a type mismatch has reason FieldValueTypeInvalid",
        "an enum miss has reason FieldValueNotSupported",
        "a bound violation has reason FieldValueInvalid",
        "a long string has reason FieldValueTooLong",
        "a long list has reason FieldValueTooMany",
        "a set duplicate has reason FieldValueDuplicate",
        "a missing property has reason FieldValueRequired",
    ],
)
def test_each_error_carries_the_servers_reason_and_field(property_schema: dict[str, Any], value: Any, reason: str, field: str) -> None:
    (error,) = schema.validate(spec_with({"x": property_schema}), {"spec": {"x": value}})
    assert (error.reason, error.field) == (reason, field)
    assert error.message == f"{field}: {error.body}"


# --------------------------------------------------------------------------- CEL rules

AUTOSCALING = {
    "type": "object",
    "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
}


def rules_schema(property_schema: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return spec_with({"x": {**property_schema, "x-kubernetes-validations": rules}})


CEL_CASES = [
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}],
        {"minReplicas": 1, "maxReplicas": 3},
        [],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"}],
        {"minReplicas": 5, "maxReplicas": 3},
        ["spec.x: Invalid value: minReplicas must not exceed maxReplicas"],
    ),
    (
        {"type": "string"},
        [{"rule": "self == self.lowerAscii()", "message": "must be lowercase"}],
        "Bad",
        ['spec.x: Invalid value: "Bad": must be lowercase'],
    ),
    (
        {"type": "integer"},
        [{"rule": "self % 2 == 0"}],
        3,
        ["spec.x: Invalid value: 3: failed rule: self % 2 == 0"],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "messageExpression": "'min ' + string(self.minReplicas) + ' exceeds max ' + string(self.maxReplicas)"}],
        {"minReplicas": 5, "maxReplicas": 3},
        ["spec.x: Invalid value: min 5 exceeds max 3"],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "fallback", "messageExpression": "self.missing"}],
        {"minReplicas": 5, "maxReplicas": 3},
        ["spec.x: Invalid value: fallback"],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "too small", "fieldPath": ".maxReplicas"}],
        {"minReplicas": 5, "maxReplicas": 3},
        ["spec.x.maxReplicas: Invalid value: too small"],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "not allowed", "reason": "FieldValueForbidden"}],
        {"minReplicas": 5, "maxReplicas": 3},
        ["spec.x: Forbidden: not allowed"],
    ),
    (
        AUTOSCALING,
        [{"rule": "has(self.maxReplicas)", "message": "maxReplicas is needed", "reason": "FieldValueRequired"}],
        {"minReplicas": 5},
        ["spec.x: Required value: maxReplicas is needed"],
    ),
    (
        AUTOSCALING,
        [{"rule": "false", "message": "twice", "reason": "FieldValueDuplicate"}],
        {"minReplicas": 5},
        ["spec.x: Duplicate value"],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas"}],
        {"minReplicas": 5},
        ['spec.x: Invalid value: "object": no such key: maxReplicas evaluating rule: self.minReplicas <= self.maxReplicas'],
    ),
    (
        AUTOSCALING,
        [{"rule": "self.minReplicas <= self.maxReplicas", "message": "min above max"}],
        {"minReplicas": 5},
        ['spec.x: Invalid value: "object": no such key: maxReplicas evaluating rule: min above max'],
    ),
    (
        {"type": "integer"},
        [{"rule": "100 / self > 1"}],
        0,
        ['spec.x: Invalid value: "integer": division by zero evaluating rule: 100 / self > 1'],
    ),
    (
        {"type": "array", "items": {"type": "string"}},
        [{"rule": "self[3] == 'x'"}],
        ["a"],
        ['spec.x: Invalid value: "array": index out of bounds: 3 evaluating rule: self[3] == \'x\''],
    ),
    (
        {"type": "object", "additionalProperties": {"type": "string", "x-kubernetes-validations": [{"rule": "self.size() <= 3", "message": "at most 3 characters"}]}},
        [],
        {"team": "platform"},
        ['spec.x[team]: Invalid value: "platform": at most 3 characters'],
    ),
    (
        {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}, "x-kubernetes-validations": [{"rule": "self.name != ''", "message": "name is empty"}]}},
        [],
        [{"name": "a"}, {"name": ""}],
        ["spec.x[1]: Invalid value: name is empty"],
    ),
    (
        {"type": "string", "nullable": True},
        [{"rule": "self.size() > 0"}],
        None,
        [],
    ),
    (
        {"type": "object", "properties": {"enforcement": {"type": "string"}}},
        [{"rule": "self.enforcement == oldSelf.enforcement", "message": "enforcement is immutable"}],
        {"enforcement": "Hard"},
        [],
    ),
    (
        {"type": "object", "properties": {"x-y": {"type": "integer"}, "namespace": {"type": "string"}}},
        [{"rule": "self.x__dash__y > 0 && self.__namespace__ != ''"}],
        {"x-y": 1, "namespace": "ns"},
        [],
    ),
    (
        {"type": "array", "items": {"type": "integer"}},
        [{"rule": "self.isSorted() && self.sum() == 6 && self.max() == 3 && self.indexOf(2) == 1"}],
        [1, 2, 3],
        [],
    ),
    (
        {"type": "string", "format": "date-time"},
        [{"rule": "self > timestamp('2020-01-01T00:00:00Z')", "message": "must be after 2020"}],
        "2019-06-01T00:00:00Z",
        ['spec.x: Invalid value: "2019-06-01T00:00:00Z": must be after 2020'],
    ),
]

CEL_IDS = [
    "a rule that holds reports nothing",
    "a failing rule on an object omits the value and shows the message",
    "a failing rule on a string shows the value",
    "a failing rule without a message says failed rule",
    "messageExpression is evaluated for the message",
    "a failing messageExpression falls back to the message",
    "fieldPath is appended to the node's path",
    "reason FieldValueForbidden gives a Forbidden error",
    "reason FieldValueRequired gives a Required error",
    "reason FieldValueDuplicate on an object prints no value",
    "a missing field is a no such key evaluation error",
    "an evaluation error names the rule's message when it has one",
    "division by zero is reported with cel-go's wording",
    "an out of range index is reported with cel-go's wording",
    "map entries are named with brackets in rule errors",
    "list items are named with their index in rule errors",
    "rules do not run on null values",
    "transition rules are skipped on create",
    "escaped property names are visible to rules",
    "the kubernetes list library is available",
    "date-time strings are timestamps in rules",
]


@pytest.mark.parametrize(("property_schema", "rules", "value", "expected"), CEL_CASES, ids=CEL_IDS)
def test_validation_rules_fail_with_the_servers_message(
    property_schema: dict[str, Any], rules: list[dict[str, Any]], value: Any, expected: list[str]
) -> None:
    errors = schema.validate(rules_schema(property_schema, rules), {"spec": {"x": value}})
    assert messages(errors) == expected


UPDATE_CASES = [
    (
        {"type": "object", "properties": {"enforcement": {"type": "string"}}},
        [{"rule": "self.enforcement == oldSelf.enforcement", "message": "enforcement is immutable"}],
        {"enforcement": "Hard"},
        {"enforcement": "Soft"},
        ["spec.x: Invalid value: enforcement is immutable"],
    ),
    (
        {"type": "object", "properties": {"enforcement": {"type": "string"}}},
        [{"rule": "self.enforcement == oldSelf.enforcement", "message": "enforcement is immutable"}],
        {"enforcement": "Hard"},
        {"enforcement": "Hard"},
        [],
    ),
    (
        {"type": "integer"},
        [{"rule": "self <= 10", "message": "at most 10"}],
        50,
        50,
        [],
    ),
    (
        {"type": "integer"},
        [{"rule": "self <= 10", "message": "at most 10"}],
        50,
        60,
        ["spec.x: Invalid value: 60: at most 10"],
    ),
]


@pytest.mark.parametrize(
    ("property_schema", "rules", "old_value", "new_value", "expected"),
    UPDATE_CASES,
    ids=[
        "a transition rule runs on update and catches a change",
        "a transition rule passes when the value is kept",
        "an unchanged invalid value is ratcheted on update",
        "a changed invalid value is still an error on update",
    ],
)
def test_updates_run_transition_rules_and_ratchet(
    property_schema: dict[str, Any], rules: list[dict[str, Any]], old_value: Any, new_value: Any, expected: list[str]
) -> None:
    errors = schema.validate(rules_schema(property_schema, rules), {"spec": {"x": new_value}}, old={"spec": {"x": old_value}})
    assert messages(errors) == expected


SCHEMA_RATCHET_CASES = [
    (50, 50, []),
    (50, 60, ["spec.x: Invalid value: 60: spec.x in body should be less than or equal to 10"]),
]


@pytest.mark.parametrize(
    ("old_value", "new_value", "expected"),
    SCHEMA_RATCHET_CASES,
    ids=["an unchanged value that breaks a new maximum is accepted on update", "a changed value must meet the maximum on update"],
)
def test_schema_errors_ratchet_on_update(old_value: int, new_value: int, expected: list[str]) -> None:
    root = spec_with({"x": {"type": "integer", "maximum": 10}, "y": {"type": "string"}})
    errors = schema.validate(root, {"spec": {"x": new_value, "y": "changed"}}, old={"spec": {"x": old_value, "y": "before"}})
    assert messages(errors) == expected


BLOCKING_CASES = [
    ({"n": "five"}, ['spec.n: Invalid value: "string": spec.n in body must be of type integer: "string"', BLOCKED]),
    ({"n": 1, "s": "abcdef"}, ["spec.s: Too long: may not be more than 3 bytes", BLOCKED]),
    ({"n": -1}, ["spec.n: Invalid value: -1: spec.n in body should be greater than or equal to 0", "spec: Invalid value: n must be even"]),
    ({"n": 3}, ["spec: Invalid value: n must be even"]),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    BLOCKING_CASES,
    ids=[
        "a type error stops rule evaluation and says so",
        "a too-long string stops rule evaluation and says so",
        "a bound violation does not stop rule evaluation",
        "rules run when the schema is satisfied",
    ],
)
def test_blocking_schema_errors_skip_validation_rules(spec: dict[str, Any], expected: list[str]) -> None:
    root = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"n": {"type": "integer", "minimum": 0}, "s": {"type": "string", "maxLength": 3}},
                "x-kubernetes-validations": [{"rule": "self.n % 2 == 0", "message": "n must be even"}],
            }
        },
    }
    assert messages(schema.validate(root, {"spec": spec})) == expected


def test_a_blocking_error_adds_nothing_when_the_schema_has_no_rules() -> None:
    errors = schema.validate(spec_with({"n": {"type": "integer"}}), {"spec": {"n": "five"}})
    assert messages(errors) == ['spec.n: Invalid value: "string": spec.n in body must be of type integer: "string"']


def test_a_rule_at_the_root_reports_the_nil_path_and_sees_only_name_in_metadata() -> None:
    root = {
        "type": "object",
        "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.startsWith('agent-')", "message": "name must start with agent-"},
            {"rule": "!has(self.metadata.labels)", "message": "labels are invisible to rules"},
        ],
    }
    errors = schema.validate(root, {"apiVersion": "agentgov.io/v1alpha1", "kind": "X", "metadata": {"name": "web", "labels": {"a": "b"}}, "spec": {}})
    assert messages(errors) == ["<nil>: Invalid value: name must start with agent-"]


def test_list_type_errors_are_ratcheted_when_the_old_object_had_them() -> None:
    root = spec_with({"x": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}})
    old = {"spec": {"x": ["a", "a"]}}
    assert schema.validate(root, {"spec": {"x": ["a", "a", "b"]}}, old=old) == []


# --------------------------------------------------------------------------- defaulting

DEFAULT_CASES = [
    (spec_with({"replicas": {"type": "integer", "default": 1}}), {"spec": {}}, {"spec": {"replicas": 1}}),
    (spec_with({"replicas": {"type": "integer", "default": 1}}), {"spec": {"replicas": 3}}, {"spec": {"replicas": 3}}),
    (spec_with({"replicas": {"type": "integer", "default": 1}}), {"spec": {"replicas": None}}, {"spec": {"replicas": 1}}),
    (spec_with({"note": {"type": "string", "nullable": True, "default": "x"}}), {"spec": {"note": None}}, {"spec": {"note": None}}),
    (
        spec_with({"autoscaling": {"type": "object", "default": {}, "properties": {"min": {"type": "integer", "default": 1}, "max": {"type": "integer", "default": 3}}}}),
        {"spec": {}},
        {"spec": {"autoscaling": {"min": 1, "max": 3}}},
    ),
    (
        spec_with({"autoscaling": {"type": "object", "properties": {"min": {"type": "integer", "default": 1}}}}),
        {"spec": {}},
        {"spec": {}},
    ),
    (
        spec_with({"tools": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "timeout": {"type": "integer", "default": 30}}}}}),
        {"spec": {"tools": [{"name": "a"}, {"name": "b", "timeout": 5}]}},
        {"spec": {"tools": [{"name": "a", "timeout": 30}, {"name": "b", "timeout": 5}]}},
    ),
    (
        spec_with({"routes": {"type": "object", "additionalProperties": {"type": "object", "properties": {"weight": {"type": "integer", "default": 100}}}}}),
        {"spec": {"routes": {"gpt": {}}}},
        {"spec": {"routes": {"gpt": {"weight": 100}}}},
    ),
    (
        spec_with({"thresholds": {"type": "array", "items": {"type": "integer"}, "default": [80, 90]}}),
        {"spec": {}},
        {"spec": {"thresholds": [80, 90]}},
    ),
]


@pytest.mark.parametrize(
    ("root", "obj", "expected"),
    DEFAULT_CASES,
    ids=[
        "an absent field gets its default",
        "a present field keeps its value",
        "a null non-nullable field gets its default",
        "a null nullable field stays null",
        "a defaulted object is defaulted deeper",
        "an absent object without a default is not created",
        "array items get their defaults",
        "map values get their defaults",
        "a list default is copied in",
    ],
)
def test_defaults_apply_as_the_server_applies_them(root: dict[str, Any], obj: dict[str, Any], expected: dict[str, Any]) -> None:
    assert schema.apply_defaults(root, obj) == expected


def test_defaulting_does_not_mutate_its_input_or_share_the_default() -> None:
    root = spec_with({"thresholds": {"type": "array", "items": {"type": "integer"}, "default": [80, 90]}})
    obj: dict[str, Any] = {"spec": {}}
    first = schema.apply_defaults(root, obj)
    first["spec"]["thresholds"].append(99)
    assert obj == {"spec": {}}
    assert schema.apply_defaults(root, obj) == {"spec": {"thresholds": [80, 90]}}


NULL_CASES = [
    (spec_with({"a": {"type": "string"}}), {"spec": {"a": None}}, {"spec": {}}),
    (spec_with({"a": {"type": "string", "default": "x"}}), {"spec": {"a": None}}, {"spec": {"a": None}}),
    (spec_with({"a": {"type": "string", "nullable": True}}), {"spec": {"a": None}}, {"spec": {"a": None}}),
    (spec_with({"m": {"type": "object", "additionalProperties": {"type": "string"}}}), {"spec": {"m": {"k": None}}}, {"spec": {"m": {}}}),
]


@pytest.mark.parametrize(
    ("root", "obj", "expected"),
    NULL_CASES,
    ids=[
        "a null without a default is dropped",
        "a null with a default is left for defaulting",
        "a nullable null is kept",
        "a null map value is dropped",
    ],
)
def test_prune_nulls_drops_non_nullable_nulls_without_defaults(root: dict[str, Any], obj: dict[str, Any], expected: dict[str, Any]) -> None:
    assert schema.prune_nulls(root, obj) == expected


# --------------------------------------------------------------------------- pruning

PRUNE_CASES = [
    (spec_with({"a": {"type": "string"}}), {"spec": {"a": "x", "b": "y"}}, {"spec": {"a": "x"}}),
    (spec_with({"a": {"type": "string"}}), {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "odd": 1}, "spec": {}, "zzz": 1}, {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "odd": 1}, "spec": {}}),
    (spec_with({"cfg": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}), {"spec": {"cfg": {"any": {"thing": 1}}}}, {"spec": {"cfg": {"any": {"thing": 1}}}}),
    (
        spec_with({"cfg": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
        {"spec": {"cfg": {"free": 1, "known": {"a": "x", "b": "y"}}}},
        {"spec": {"cfg": {"free": 1, "known": {"a": "x"}}}},
    ),
    (spec_with({"labels": {"type": "object", "additionalProperties": {"type": "string"}}}), {"spec": {"labels": {"team": "a"}}}, {"spec": {"labels": {"team": "a"}}}),
    (
        spec_with({"template": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
        {"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": "x", "b": "y"}, "other": 1}}},
        {"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"a": "x"}}}},
    ),
    (
        spec_with({"items": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}),
        {"spec": {"items": [{"a": "x", "b": "y"}]}},
        {"spec": {"items": [{"a": "x"}]}},
    ),
]


@pytest.mark.parametrize(
    ("root", "obj", "expected"),
    PRUNE_CASES,
    ids=[
        "an unknown field is dropped",
        "apiVersion kind and metadata are kept at the root",
        "preserve-unknown-fields keeps everything below it",
        "known properties under preserve-unknown-fields are still pruned",
        "map entries under additionalProperties are kept",
        "an embedded resource keeps its type and object meta",
        "unknown fields in array items are dropped",
    ],
)
def test_prune_drops_fields_the_structural_schema_does_not_specify(root: dict[str, Any], obj: dict[str, Any], expected: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    assert schema.prune(root, obj) == expected
    assert obj == original


def test_unknown_fields_lists_the_pruned_paths_sorted() -> None:
    root = spec_with({"image": {"type": "string"}, "tools": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}})
    obj = {"metadata": {"name": "n"}, "spec": {"image": "x", "imagee": "typo", "tools": [{"name": "a", "url": "u"}]}, "extra": 1}
    assert schema.unknown_fields(root, obj) == ["extra", "spec.imagee", "spec.tools[0].url"]


# --------------------------------------------------------------------------- Status body


def test_a_single_error_gives_a_status_without_brackets() -> None:
    errors = schema.validate(spec_with({"image": {"type": "string"}}, required=["image"]), {"spec": {}})
    assert schema.invalid_status("AgentDeployment", "agentgov.io", "demo", errors) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'AgentDeployment.agentgov.io "demo" is invalid: spec.image: Required value',
        "reason": "Invalid",
        "details": {
            "name": "demo",
            "group": "agentgov.io",
            "kind": "AgentDeployment",
            "causes": [{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.image"}],
        },
        "code": 422,
    }


def test_several_errors_are_bracketed_and_duplicates_are_listed_once_in_the_message() -> None:
    first = FieldError("spec.a", "FieldValueRequired", "spec.a: Required value")
    second = FieldError("spec.b", "FieldValueInvalid", 'spec.b: Invalid value: "x": bad')
    status = schema.invalid_status("AgentBudget", "agentgov.io", "team", [first, second, first])
    assert status["message"] == 'AgentBudget.agentgov.io "team" is invalid: [spec.a: Required value, spec.b: Invalid value: "x": bad]'
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.a", "spec.b", "spec.a"]
    assert status["details"]["causes"][1] == {"reason": "FieldValueInvalid", "message": 'Invalid value: "x": bad', "field": "spec.b"}


# --------------------------------------------------------------------------- CRD checks


def budget_crd(spec_schema: dict[str, Any], **names: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "agentbudgets.agentgov.io"},
        "spec": {
            "group": "agentgov.io",
            "scope": "Namespaced",
            "names": {"plural": "agentbudgets", "singular": "agentbudget", "kind": "AgentBudget", "shortNames": ["agb"], **names},
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


ROOT = "spec.versions[0].schema.openAPIV3Schema"
SPEC = f"{ROOT}.properties[spec]"
GOOD_SPEC = {
    "type": "object",
    "properties": {
        "daily": {"type": "number", "minimum": 0, "default": 10},
        "enforcement": {"type": "string", "enum": ["Hard", "Soft"], "default": "Hard"},
        "tools": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
    },
    "x-kubernetes-validations": [
        {"rule": "self.daily >= 0", "message": "daily must not be negative"},
        {"rule": "self.enforcement == oldSelf.enforcement", "message": "enforcement is immutable"},
    ],
}


def test_a_structural_crd_with_compiling_rules_is_accepted() -> None:
    assert schema.check_crd(budget_crd(GOOD_SPEC)) == []


def rule_value(rule: str) -> str:
    escaped = rule.replace(">", "\\u003e").replace("&", "\\u0026")
    return f'{{"Rule":"{escaped}","Message":"","MessageExpression":"","Reason":null,"FieldPath":"","OptionalOldSelf":null}}'


CRD_CASES = [
    (
        {"type": "object", "properties": {"limit": {"description": "no type"}}},
        [f"{SPEC}.properties[limit].type: Required value: must not be empty for specified object fields"],
    ),
    (
        {"type": "object", "properties": {"users": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}},
        [f"{SPEC}.properties[users].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"],
    ),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
        [f"{SPEC}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"],
    ),
    (
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}, "anyOf": [{"type": "object"}]},
        [f"{SPEC}.anyOf[0].type: Forbidden: must be empty to be structural"],
    ),
    (
        {"type": "object", "properties": {"daily": {"type": "number"}}, "x-kubernetes-validations": [{"rule": "self.dailyy > 0"}]},
        [
            f"{SPEC}.x-kubernetes-validations[0].rule: Invalid value: {rule_value('self.dailyy > 0')}: compilation failed: "
            "ERROR: <input>:1:5: undefined field 'dailyy'\n | self.dailyy > 0\n | ....^"
        ],
    ),
    (
        {"type": "object", "properties": {"daily": {"type": "number"}}, "x-kubernetes-validations": [{"rule": "size(self.daily) > 0 && budget > 0"}]},
        [
            f"{SPEC}.x-kubernetes-validations[0].rule: Invalid value: {rule_value('size(self.daily) > 0 && budget > 0')}: compilation failed: "
            "ERROR: <input>:1:25: undeclared reference to 'budget' (in container '')\n | size(self.daily) > 0 && budget > 0\n | ........................^"
        ],
    ),
    (
        {"type": "object", "properties": {"daily": {"type": "number"}}, "x-kubernetes-validations": [{"rule": "self.daily >"}]},
        [
            f"{SPEC}.x-kubernetes-validations[0].rule: Invalid value: {rule_value('self.daily >')}: compilation failed: "
            "ERROR: <input>:1:13: Syntax error: unexpected end of input\n | self.daily >\n | ............^"
        ],
    ),
    (
        {"type": "object", "properties": {"daily": {"type": "number"}}, "x-kubernetes-validations": [{"rule": "true", "reason": "FieldValueBogus"}]},
        [f'{SPEC}.x-kubernetes-validations[0].reason: Unsupported value: "FieldValueBogus": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"'],
    ),
    (
        {"type": "object", "properties": {"users": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}},
        [f'{SPEC}.properties[users].items.x-kubernetes-validations[0].rule: Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion of the schema within {SPEC}.properties[users]'],
    ),
    (
        {"type": "object", "properties": {"daily": {"type": "number", "default": "ten"}}},
        [f'{SPEC}.properties[daily].default: Invalid value: "string":  in body must be of type number: "string"'],
    ),
    (
        {"type": "object", "properties": {"pricing": {"type": "object", "default": {"gpt": 1}, "properties": {"input": {"type": "number"}}}}},
        [f'{SPEC}.properties[pricing].default: Invalid value: {{"gpt":1}}: must not have unknown fields'],
    ),
    (
        {
            "type": "object",
            "properties": {
                "tools": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                }
            },
        },
        [f"{SPEC}.properties[tools].items.properties[name].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"],
    ),
    (
        {"type": "object", "properties": {"kinds": {"type": "string", "x-kubernetes-list-type": "set"}}},
        [f'{SPEC}.properties[kinds].type: Invalid value: "string": must be array if x-kubernetes-list-type is specified'],
    ),
]


@pytest.mark.parametrize(
    ("spec_schema", "expected"),
    CRD_CASES,
    ids=[
        "a field without a type is not structural",
        "uniqueItems is forbidden",
        "properties and additionalProperties together are forbidden",
        "a type inside anyOf is not structural",
        "a rule selecting an undefined field does not compile",
        "a rule using an undeclared name does not compile",
        "a rule with a syntax error does not compile",
        "an unknown rule reason is unsupported",
        "oldSelf under an atomic list is refused",
        "a default of the wrong type is invalid",
        "a default with unknown fields is refused",
        "a map list key needs a default or to be required",
        "a list type on a non-array is invalid",
    ],
)
def test_check_crd_refuses_what_the_server_refuses(spec_schema: dict[str, Any], expected: list[str]) -> None:
    assert messages(schema.check_crd(budget_crd(spec_schema))) == expected


NAME_CASES = [
    (
        {"plural": "Agent_Budgets"},
        [
            'metadata.name: Invalid value: "agentbudgets.agentgov.io": must be spec.names.plural+"."+spec.group',
            "spec.names.plural: Invalid value: \"Agent_Budgets\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ],
    ),
    (
        {"shortNames": ["agb", "2x"]},
        ["spec.names.shortNames[1]: Invalid value: \"2x\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"],
    ),
    ({"kind": "AgentBudget", "listKind": "AgentBudget"}, ['spec.names.listKind: Invalid value: "AgentBudget": kind and listKind may not be the same']),
    ({"kind": ""}, ["spec.names.kind: Required value", "spec.names.listKind: Required value"]),
]


@pytest.mark.parametrize(
    ("names", "expected"),
    NAME_CASES,
    ids=[
        "a plural that is not a DNS label is refused and no longer matches the name",
        "a short name starting with a digit is refused",
        "kind and listKind may not be equal",
        "without a kind there is no kind and no defaulted listKind",
    ],
)
def test_check_crd_validates_the_names(names: dict[str, Any], expected: list[str]) -> None:
    assert messages(schema.check_crd(budget_crd(GOOD_SPEC, **names))) == expected


def test_metadata_at_the_root_may_only_constrain_name_and_generate_name() -> None:
    crd = budget_crd(GOOD_SPEC)
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["properties"]["metadata"] = {"type": "object", "properties": {"labels": {"type": "object"}}}
    assert messages(schema.check_crd(crd)) == [
        f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
    ]
