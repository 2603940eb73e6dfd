"""Test support: the metric and label names a PromQL expression uses, and the names a
Prometheus text exposition declares.

What it is for: checking that alert rules and dashboards only query metrics agentgov exports
(tests/unit/test_alerts.py, tests/integration/test_dashboard_metrics.py). It is a small
tokenizer, not a PromQL parser: it knows the syntax agentgov's own files use (selectors,
range and offset modifiers, aggregations with by/without, vector matching, Grafana's
``$variables``) and refuses a function it does not know rather than guessing, so a new
function in a rule makes the test say so instead of passing silently.

What it must never do: accept an expression it could not read (it raises ``ValueError``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

# Labels Prometheus adds when it scrapes (Kubernetes service discovery, static configs).
TARGET_LABELS = frozenset({'namespace', 'pod', 'job', 'instance', 'service', 'container', 'endpoint'})
FUNCTIONS = frozenset({
    'abs', 'absent', 'avg', 'avg_over_time', 'bottomk', 'ceil', 'clamp_max', 'clamp_min', 'count',
    'count_over_time', 'count_values', 'delta', 'deriv', 'floor', 'group', 'histogram_quantile', 'idelta',
    'increase', 'irate', 'label_replace', 'last_over_time', 'max', 'max_over_time', 'min', 'min_over_time',
    'quantile', 'quantile_over_time', 'rate', 'resets', 'round', 'scalar', 'sort', 'sort_desc', 'stddev',
    'sum', 'sum_over_time', 'time', 'topk', 'vector', 'changes',
})
KEYWORDS = frozenset({'and', 'or', 'unless', 'offset', 'bool', 'by', 'without', 'on', 'ignoring',
                      'group_left', 'group_right', 'inf', 'nan'})
LABEL_LISTS = re.compile(r'\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)')
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SELECTOR = re.compile(r'(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}')
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*,?')
IDENTIFIER = re.compile(r'(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?')


@dataclass
class Usage:
    """What one expression refers to."""

    metrics: set[str] = field(default_factory=set)
    # metric -> label names in its selector's matchers
    matchers: dict[str, set[str]] = field(default_factory=dict)
    # labels named in by/without/on/ignoring/group_left/group_right lists
    grouping: set[str] = field(default_factory=set)


def _balanced(text: str, opening: str, closing: str) -> str:
    out, depth = [], 0
    for char in text:
        if char == opening:
            depth += 1
        elif char == closing:
            if depth == 0:
                raise ValueError(f'unbalanced {closing!r} in {text!r}')
            depth -= 1
            continue
        if depth == 0:
            out.append(char)
    if depth:
        raise ValueError(f'unbalanced {opening!r} in {text!r}')
    return ''.join(out)


def usage(expr: str) -> Usage:
    """The metrics, selector labels and grouping labels of a PromQL expression."""
    found = Usage()
    for match in SELECTOR.finditer(STRING.sub(lambda m: m.group(0).replace('{', '(').replace('}', ')'), expr)):
        body = match.group(2)
        labels: set[str] = set()
        rest = body
        while rest.strip():
            m = MATCHER.match(rest)
            if not m:
                raise ValueError(f'cannot read the matchers {{{body}}} of {match.group(1)} in {expr!r}')
            labels.add(m.group(1))
            rest = rest[m.end():]
        found.matchers.setdefault(match.group(1), set()).update(labels)
    text = STRING.sub('""', expr)
    text = _balanced(text, '{', '}')
    text = _balanced(text, '[', ']')
    for m in LABEL_LISTS.finditer(text):
        found.grouping.update(name.strip() for name in m.group(2).split(',') if name.strip())
    text = LABEL_LISTS.sub(' ', text)
    for m in IDENTIFIER.finditer(text):
        name, call = m.group(1), m.group(2)
        if name in KEYWORDS:
            continue
        if call:
            if name not in FUNCTIONS:
                raise ValueError(f'unknown PromQL function {name!r} in {expr!r}')
        else:
            found.metrics.add(name)
    found.metrics.update(found.matchers)
    return found


@dataclass(frozen=True)
class Exported:
    """What a /metrics page declares: every sample name, and the label names seen per sample name."""

    names: frozenset[str]
    labels: dict[str, frozenset[str]]
    # sample name -> the family it belongs to (for messages)
    family_of: dict[str, str]


SUFFIXES = {
    'counter': ('_total', '_created'),
    'histogram': ('_bucket', '_sum', '_count', '_created'),
    'summary': ('', '_sum', '_count', '_created'),
    'gauge': ('',),
    'info': ('_info',),
    'untyped': ('',),
}


def exported(texts: Iterable[str]) -> Exported:
    """Sample names each family of the exposition can have (from its TYPE, so families that have
    no sample yet count too), and the labels of the samples present."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    family_of: dict[str, str] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ('',)):
                sample_name = family.name + suffix
                names.add(sample_name)
                family_of[sample_name] = family.name
            for sample in family.samples:
                names.add(sample.name)
                family_of[sample.name] = family.name
                labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported(frozenset(names), {k: frozenset(v) for k, v in labels.items()}, family_of)


def registry_labels(objects: Iterable[MetricWrapperBase]) -> dict[str, frozenset[str]]:
    """Sample name -> its label names, for every sample name each metric object can export
    (read from prometheus_client's metric objects, whose type and label names it keeps in
    ``_type`` and ``_labelnames``)."""
    names: dict[str, frozenset[str]] = {}
    for metric in objects:
        kind, base, labels = metric._type, metric._name, frozenset(metric._labelnames)  # noqa: SLF001
        for suffix in SUFFIXES[kind]:
            names[base + suffix] = labels | ({'le'} if suffix == '_bucket' else frozenset())
    return names
