"""Kubernetes quantities read exactly: the sizes in specs become the numbers the bundle and
the resource checks use."""

from __future__ import annotations

from fractions import Fraction

import pytest

from agentgov.api.quantity import canonical_quantity, parse_quantity, quantity_bytes


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2", Fraction(2)),
        ("500m", Fraction(1, 2)),
        ("0.1", Fraction(1, 10)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("+3", Fraction(3)),
        ("-3", Fraction(-3)),
        ("10Mi", Fraction(10 * 1024**2)),
        ("1.5Ki", Fraction(1536)),
        ("1Ei", Fraction(1024**6)),
        ("1k", Fraction(1000)),
        ("1G", Fraction(10**9)),
        ("1E", Fraction(10**18)),
        ("100n", Fraction(1, 10**7)),
        ("250u", Fraction(1, 4000)),
        ("2e3", Fraction(2000)),
        ("5E-2", Fraction(1, 20)),
        ("1e+2", Fraction(100)),
        (" 64Mi ", Fraction(64 * 1024**2)),
    ],
    ids=[
        "a plain integer",
        "milli units are thousandths",
        "a decimal fraction is exact, not a float",
        "a leading dot",
        "a trailing dot",
        "an explicit plus sign",
        "a negative number",
        "mebibytes are powers of 1024",
        "a fractional binary suffix",
        "exbibytes do not lose precision",
        "kilo is 1000",
        "giga is a billion",
        "a lone E is exa, not an exponent",
        "nano units",
        "micro units",
        "an exponent",
        "a negative exponent with a capital E",
        "an exponent with a plus sign",
        "surrounding spaces are ignored",
    ],
)
def test_a_quantity_reads_as_its_exact_value(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "Mi", "1Mb", "1 Mi", "1ki", "1.2.3", "e3", "1e", "1e1.5", "1e999", "--1", "0x10"],
    ids=[
        "an empty string",
        "a suffix without a number",
        "a suffix Kubernetes does not know",
        "a space between number and suffix",
        "a lowercase binary suffix",
        "two decimal points",
        "an exponent without a mantissa",
        "an exponent marker without digits",
        "a fractional exponent",
        "an absurd exponent",
        "two signs",
        "hexadecimal",
    ],
)
def test_a_malformed_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    "text, expected",
    [("10Mi", 10_485_760), ("1.5Ki", 1536), ("0.5", 1), ("1500m", 2), ("0", 0)],
    ids=["mebibytes", "a fractional kibibyte", "half a byte rounds up", "milli bytes round up", "zero stays zero"],
)
def test_a_quantity_of_bytes_rounds_up_to_a_whole_byte(text: str, expected: int) -> None:
    assert quantity_bytes(text) == expected


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        quantity_bytes("-1Ki")


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("1000m", "1"),
        ("0.5", "500m"),
        ("1.5", "1500m"),
        ("2000", "2k"),
        ("250m", "250m"),
        ("1024Mi", "1Gi"),
        ("0.5Gi", "512Mi"),
        ("1.5Ki", "1536"),
        ("0.5Ki", "512"),
        ("512Mi", "512Mi"),
        ("12e2", "1200"),
        ("1e3", "1e3"),
        ("3e-3", "3e-3"),
        ("0.0000000001", "1n"),
        ("0Mi", "0"),
    ],
    ids=[
        "a thousand milli is one",
        "a half is 500 milli",
        "one and a half is 1500 milli",
        "two thousand is 2k",
        "milli units already canonical",
        "1024 Mi is 1 Gi",
        "half a Gi is 512 Mi",
        "a fractional Ki that is no whole Ki is written in bytes",
        "a binary quantity under 1024 is written in decimal",
        "binary units already canonical",
        "an exponent that cancels out is dropped",
        "an exponent form is kept",
        "a negative exponent is kept",
        "precision below nano rounds up",
        "zero is 0 whatever its unit",
    ],
)
def test_a_quantity_is_written_as_the_api_server_stores_it(text: str, canonical: str) -> None:
    assert canonical_quantity(text) == canonical
    assert parse_quantity(canonical) >= parse_quantity(text)


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    "text, expected",
    [("-1e-10", "0"), ("-0.0000000001", "0"), ("-1n", "-1n")],
    ids=["a tiny negative exponent rounds up to zero", "a tiny negative decimal rounds up to zero",
         "minus one nano stays as it is"],
)
def test_a_tiny_negative_quantity_is_canonicalised_without_hanging(text: str, expected: str) -> None:
    assert canonical_quantity(text) == expected
