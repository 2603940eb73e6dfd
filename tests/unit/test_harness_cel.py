"""The harness's CEL layer evaluates validation rules with Kubernetes semantics."""

from __future__ import annotations

from typing import Any

import pytest

from harness import cel

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer"},
        "ratio": {"type": "number"},
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "port": {"x-kubernetes-int-or-string": True},
        "since": {"type": "string", "format": "date-time"},
        "timeout": {"type": "string", "format": "duration"},
        "key": {"type": "string", "format": "byte"},
        "max-tokens": {"type": "integer"},
        "namespace": {"type": "string"},
        "a.b": {"type": "string"},
        "a__b": {"type": "string"},
        "tools": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "timeout": {"type": "integer"}}},
        },
    },
}
OBJECT: dict[str, Any] = {
    "replicas": 3,
    "ratio": 2,
    "name": "Agent",
    "tags": ["b", "a"],
    "sizes": [1, 2, 3],
    "labels": {"team": "ml"},
    "port": "http",
    "since": "2024-05-01T00:00:00Z",
    "timeout": "90s",
    "key": "aGk=",
    "max-tokens": 100,
    "namespace": "prod",
    "a.b": "dotted",
    "a__b": "underscored",
    "tools": [{"name": "search", "timeout": 5}],
    "undeclared": "hidden",
}


def evaluate(rule: str, obj: Any = None, old: Any = None) -> Any:
    activation = {"self": cel.to_cel(OBJECT if obj is None else obj, SCHEMA)}
    if old is not None:
        activation["oldSelf"] = cel.to_cel(old, SCHEMA)
    return cel.compile_expression(rule).evaluate(activation)


TRUE_RULES = [
    "self.replicas == 3",
    "self.ratio == 2.0 && self.ratio == 2",
    "1 == 1.0 && 1 < 1.5",
    "1 != 'a'",
    "has(self.name) && !has(self.undeclared)",
    "size(self.tags) == 2 && self.name.size() == 5",
    "self.name.matches('^[A-Z]')",
    "self.name.startsWith('Ag') && self.name.endsWith('nt') && self.name.contains('gen')",
    "self.tags.all(t, t.size() == 1) && self.tags.exists(t, t == 'a') && self.tags.exists_one(t, t == 'b')",
    "self.sizes.map(s, s * 2) == [2, 4, 6] && self.sizes.filter(s, s > 1) == [2, 3]",
    "self.labels['team'] == 'ml' && 'team' in self.labels && self.labels.all(k, k == 'team')",
    "self.port == 'http'",
    "self.since > timestamp('2024-01-01T00:00:00Z')",
    "self.timeout == duration('90s') && self.timeout > duration('1m')",
    "self.key == b'hi'",
    "self.max__dash__tokens == 100 && self.__namespace__ == 'prod'",
    "self.a__dot__b == 'dotted' && self.a__underscores__b == 'underscored'",
    "self.tools[0].name == 'search' && self.tools.all(t, t.timeout < 10)",
    "self.sizes.isSorted() && !self.tags.isSorted()",
    "self.sizes.sum() == 6 && [1.5, 2.5].sum() == 4.0 && [].sum() == 0",
    "self.sizes.min() == 1 && self.sizes.max() == 3 && self.tags.max() == 'b'",
    "self.sizes.indexOf(2) == 1 && [1, 2, 2].lastIndexOf(2) == 2 && self.sizes.indexOf(9) == -1",
    "self.name.lowerAscii() == 'agent' && self.name.upperAscii() == 'AGENT'",
    "self.name.indexOf('e') == 2 && 'a-b-c'.lastIndexOf('-') == 3",
    "'a,b,c'.split(',') == ['a', 'b', 'c'] && ['x', 'y'].join('-') == 'x-y'",
    "self.name.substring(1, 3) == 'ge' && self.name.charAt(0) == 'A' && '  x '.trim() == 'x'",
    "self.name.replace('A', 'a') == 'agent'",
    "'v1.2.3'.find('[0-9]+') == '1' && 'v1.2.3'.findAll('[0-9]+') == ['1', '2', '3']",
    "-7 / 2 == -3 && -7 % 2 == -1",
]


@pytest.mark.parametrize(
    "rule",
    TRUE_RULES,
    ids=[
        "integer fields are CEL ints",
        "number fields are doubles even when the JSON has an integer",
        "numbers compare across int and double as in cel-go",
        "values of different types are unequal rather than an error",
        "has tells present declared fields from absent ones and undeclared fields are invisible",
        "size works as a function and a method",
        "matches uses RE2",
        "the standard string functions work",
        "the all exists and exists_one macros work",
        "the map and filter macros work",
        "additionalProperties are maps with their keys kept",
        "int-or-string values keep their JSON type",
        "date-time strings are timestamps",
        "duration strings are durations",
        "byte strings are bytes",
        "dashes and reserved words are escaped in field names",
        "dots and double underscores are escaped in field names",
        "lists of objects can be indexed and iterated",
        "isSorted comes from the Kubernetes list library",
        "sum comes from the Kubernetes list library",
        "min and max come from the Kubernetes list library",
        "indexOf and lastIndexOf on lists come from the Kubernetes list library",
        "lowerAscii and upperAscii come from the strings extension",
        "indexOf and lastIndexOf on strings come from the strings extension",
        "split and join come from the strings extension",
        "substring charAt and trim come from the strings extension",
        "replace comes from the strings extension",
        "find and findAll come from the Kubernetes regex library",
        "integer division and modulus truncate toward zero as in Go",
    ],
)
def test_rules_evaluate_with_kubernetes_semantics(rule: str) -> None:
    assert evaluate(rule) is not None and bool(evaluate(rule)) is True


ERROR_RULES = [
    ("self.missing == 1", {"replicas": 1}, "no such key: missing"),
    ("self.labels['nope'] == 'x'", None, "no such key: nope"),
    ("self.tags[5] == 'x'", None, "index out of bounds: 5"),
    ("self.replicas / 0 > 1", None, "division by zero"),
    ("self.replicas % 0 > 1", None, "modulus by zero"),
    ("9223372036854775807 + self.replicas > 0", None, "integer overflow"),
    ("self.name + 1 == 'x'", None, "no such overload"),
    ("[].max() == 1", None, "max called on empty list"),
    ("[].min() == 1", None, "min called on empty list"),
    ("self.name.substring(9) == ''", None, "index out of range: 9"),
]


@pytest.mark.parametrize(
    ("rule", "obj", "message"),
    ERROR_RULES,
    ids=[
        "selecting an absent field is no such key",
        "a missing map key is no such key",
        "an index past the end is out of bounds",
        "integer division by zero is an error",
        "integer modulus by zero is an error",
        "integer overflow is an error",
        "adding a string and an int has no overload",
        "max of an empty list is an error",
        "min of an empty list is an error",
        "a substring past the end is out of range",
    ],
)
def test_evaluation_errors_use_cel_go_wording(rule: str, obj: Any, message: str) -> None:
    with pytest.raises(cel.CelEvalError) as raised:
        evaluate(rule, obj)
    assert raised.value.message == message


ROOT_SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("self.apiVersion == 'agentgov.io/v1alpha1' && self.kind == 'AgentBudget'", True),
        ("self.metadata.name == 'team' && self.metadata.generateName == 'team-'", True),
        ("has(self.metadata.labels)", False),
    ],
    ids=[
        "apiVersion and kind are visible at a resource root",
        "metadata name and generateName are visible at a resource root",
        "other metadata is invisible at a resource root",
    ],
)
def test_a_resource_root_exposes_only_type_and_name_meta(rule: str, expected: bool) -> None:
    obj = {
        "apiVersion": "agentgov.io/v1alpha1",
        "kind": "AgentBudget",
        "metadata": {"name": "team", "generateName": "team-", "labels": {"a": "b"}},
        "spec": {"a": "x"},
    }
    self_value = cel.to_cel(obj, ROOT_SCHEMA, resource_root=True)
    assert bool(cel.compile_expression(rule).evaluate({"self": self_value})) is expected


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("replicas", "replicas"),
        ("max-tokens", "max__dash__tokens"),
        ("a.b/c", "a__dot__b__slash__c"),
        ("a__b", "a__underscores__b"),
        ("namespace", "__namespace__"),
        ("in", "__in__"),
        ("1st", None),
        ("with space", None),
    ],
    ids=[
        "plain names are unchanged",
        "dashes are escaped",
        "dots and slashes are escaped",
        "double underscores are escaped",
        "the reserved word namespace is wrapped",
        "the keyword in is wrapped",
        "names starting with a digit are not accessible",
        "names with spaces are not accessible",
    ],
)
def test_field_names_are_escaped_as_the_apiserver_escapes_them(name: str, escaped: str | None) -> None:
    assert cel.escape_field_name(name) == escaped


CHECK_CASES = [
    ("self.replicas > 0 && self.tools.all(t, t.timeout > 0)", None),
    ("has(self.labels) && self.labels.all(k, self.labels[k] != '')", None),
    ("self == oldSelf", None),
    ("self.replicaz > 0", "ERROR: <input>:1:5: undefined field 'replicaz'\n | self.replicaz > 0\n | ....^"),
    ("has(self.replicaz)", "ERROR: <input>:1:9: undefined field 'replicaz'\n | has(self.replicaz)\n | ........^"),
    ("self.tools.all(t, t.url != '')", "ERROR: <input>:1:20: undefined field 'url'\n | self.tools.all(t, t.url != '')\n | ...................^"),
    ("self.undeclared == ''", "ERROR: <input>:1:5: undefined field 'undeclared'\n | self.undeclared == ''\n | ....^"),
    ("spec.replicas > 0", "ERROR: <input>:1:1: undeclared reference to 'spec' (in container '')\n | spec.replicas > 0\n | ^"),
    ("quantity(self.name).isInteger()", "ERROR: <input>:1:9: undeclared reference to 'quantity' (in container '')\n | quantity(self.name).isInteger()\n | ........^"),
    ("self.replicas >", "ERROR: <input>:1:16: Syntax error: unexpected end of input\n | self.replicas >\n | ...............^"),
]


@pytest.mark.parametrize(
    ("rule", "expected"),
    CHECK_CASES,
    ids=[
        "declared fields and macro variables compile",
        "map keys and values compile",
        "oldSelf is declared",
        "an undefined field is a compile error at the dot",
        "has on an undefined field is a compile error",
        "fields of macro variables are checked against the item schema",
        "fields the schema does not declare are undefined",
        "an undeclared identifier is a compile error",
        "a library the harness lacks is an undeclared reference",
        "a syntax error points past the end of the input",
    ],
)
def test_check_rule_reports_what_cel_go_rejects(rule: str, expected: str | None) -> None:
    assert cel.check_rule(rule, SCHEMA) == expected


@pytest.mark.parametrize(
    ("rule", "uses_old_self"),
    [("self.a == oldSelf.a", True), ("self.a == 'x'", False)],
    ids=["a rule reading oldSelf is a transition rule", "a rule reading only self is not"],
)
def test_transition_rules_are_recognised(rule: str, uses_old_self: bool) -> None:
    assert cel.compile_expression(rule).uses_old_self is uses_old_self


def test_compiled_programs_are_cached() -> None:
    assert cel.compile_expression("self.x == 1") is cel.compile_expression("self.x == 1")


def test_conversion_does_not_mutate_the_json_value() -> None:
    obj = {"labels": {"team": "ml"}, "tags": ["a"]}
    cel.to_cel(obj, SCHEMA)
    assert obj == {"labels": {"team": "ml"}, "tags": ["a"]}
