"""Child names, label values and the version label: valid for Kubernetes whatever the agent's
name, deterministic, and collision-free when they have to be shortened."""

from __future__ import annotations

import pytest
from builder_cases import LABEL_VALUE, RFC1035

from agentgov.controller.builders.naming import dns_label, image_tag, label_value, selector_string

NAME_63 = "a" + "b" * 61 + "c"


@pytest.mark.parametrize(
    "name, suffix, expected",
    [
        ("research-assistant", "", "research-assistant"),
        ("research-assistant", "-bundle", "research-assistant-bundle"),
        (NAME_63, "", NAME_63),
    ],
    ids=["a short name is kept", "a short name with a suffix is kept", "a 63-character name is kept"],
)
def test_a_name_that_fits_is_kept_as_it_is(name: str, suffix: str, expected: str) -> None:
    assert dns_label(name, suffix) == expected


@pytest.mark.parametrize(
    "name, suffix",
    [
        (NAME_63, "-bundle"),
        ("a" * 253, ""),
        ("team.research.assistant", ""),
        ("7-agents", ""),
        ("x" * 60 + "---", "-tls"),
    ],
    ids=[
        "a 63-character name with a suffix",
        "a 253-character name",
        "a name with dots",
        "a name starting with a digit",
        "a name whose cut would end in dashes",
    ],
)
def test_a_name_that_does_not_fit_becomes_a_hashed_rfc1035_label(name: str, suffix: str) -> None:
    label = dns_label(name, suffix)
    assert len(label) <= 63 and RFC1035.fullmatch(label), label
    assert label.endswith(suffix)
    assert dns_label(name, suffix) == label


def test_names_differing_only_past_the_cut_stay_distinct() -> None:
    first, second = "a" * 70 + "-one", "a" * 70 + "-two"
    assert dns_label(first) != dns_label(second)
    assert dns_label(first, "-bundle") != dns_label(second, "-bundle")


def test_a_cleaned_name_does_not_collide_with_the_name_it_resembles() -> None:
    assert dns_label("team.research") != dns_label("team-research")


@pytest.mark.parametrize(
    "text",
    ["1.4.2", "v2.0.0-rc.1_build", "a" * 63],
    ids=["a semantic version", "a tag with dots, dashes and underscores", "63 characters"],
)
def test_a_valid_label_value_is_kept(text: str) -> None:
    assert label_value(text) == text


@pytest.mark.parametrize(
    "text",
    ["a" * 128, "_private", "tag-", "with/slash", "." * 5],
    ids=["a 128-character tag", "a leading underscore", "a trailing dash", "a slash", "only dots"],
)
def test_an_invalid_label_value_becomes_a_valid_hashed_one(text: str) -> None:
    value = label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value
    assert value != text


@pytest.mark.parametrize(
    "image, tag",
    [
        ("ghcr.io/example/research-agent:1.4.2", "1.4.2"),
        ("research-agent", "latest"),
        ("localhost:5000/research-agent", "latest"),
        ("localhost:5000/research-agent:2.0", "2.0"),
        ("research-agent@sha256:" + "0" * 64, "latest"),
        ("research-agent:2.1@sha256:" + "0" * 64, "2.1"),
    ],
    ids=[
        "a tagged image",
        "an untagged image",
        "a registry port is not a tag",
        "a registry port and a tag",
        "a digest alone gives latest",
        "a tag with a digest",
    ],
)
def test_the_version_label_comes_from_the_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_the_status_selector_lists_the_selector_labels_sorted() -> None:
    assert selector_string("research-assistant") == (
        "app.kubernetes.io/instance=research-assistant,app.kubernetes.io/name=agentgov-agent"
    )
