"""Kubernetes resource quantities ("500m", "10Mi", "1.5G", "2e3") as exact numbers.

Specs carry sizes as quantity strings (``sidecar.maxBodyBytes``, ``cache.maxBytes``, container
requests and limits); the operator needs their values to fill the bundle and to compare
requests with limits, and the sidecar needs them for its cache. Both sides import this module,
so it lives with the contracts. Values are ``fractions.Fraction``, never floats: ``0.1`` CPU
is exactly one tenth, and ``"1Ei"`` does not lose bits. Pure; no I/O.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Final

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY: Final = re.compile(
    rf"^(?P<number>[+-]?{_NUMBER})(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?[0-9]+))?$"
)
_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Exponents beyond this would build absurd integers (1e999999); Kubernetes caps far lower.
_MAX_EXPONENT: Final = 64


def parse_quantity(text: str) -> Fraction:
    """The exact value of a quantity; raises ValueError saying what is wrong.

    Accepts what the API server accepts: an optional sign, a decimal number, then a binary
    suffix (Ki..Ei, powers of 1024), a decimal suffix (n u m k M G T P E) or an integer
    exponent (e3, E-2). ``E`` alone is exa; ``E`` followed by digits is an exponent.
    """
    return _value(_match(text), text)


def _match(text: str) -> re.Match[str]:
    if not isinstance(text, str):
        raise ValueError(f"a quantity must be a string, got {type(text).__name__}")
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (expected e.g. 500m, 128Mi, 2, 1.5G)")
    return match


def _value(match: re.Match[str], text: str) -> Fraction:
    value = Fraction(match["number"])
    if binary := match["binary"]:
        return value * Fraction(1024) ** _BINARY[binary]
    if decimal := match["decimal"]:
        return value * Fraction(10) ** _DECIMAL[decimal]
    if (exponent := match["exponent"]) is not None:
        if abs(int(exponent)) > _MAX_EXPONENT:
            raise ValueError(f"{text!r}: exponent out of range")
        return value * Fraction(10) ** int(exponent)
    return value


def quantity_bytes(text: str) -> int:
    """A quantity read as a whole number of bytes, rounded up ("1.5Ki" -> 1536, "0.5" -> 1).

    Raises ValueError for a negative quantity; zero is returned as 0 for the caller to judge.
    """
    value = parse_quantity(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return math.ceil(value)


_DECIMAL_SUFFIXES: Final = {exponent: suffix for suffix, exponent in _DECIMAL.items()} | {0: ""}
_BINARY_SUFFIXES: Final = {power: suffix for suffix, power in _BINARY.items()} | {0: ""}
_NANO: Final = 10**9


def canonical_quantity(text: str) -> str:
    """The quantity as the API server stores it (Go's ``Quantity.String()``): ``1000m`` -> ``1``,
    ``0.5`` -> ``500m``, ``1024Mi`` -> ``1Gi``, ``1.5Ki`` -> ``1536``, ``12e2`` -> ``1200``.

    Writing quantities in this form lets a controller compare what it wants with what it
    reads back without seeing a difference that is only notation. The format is kept
    (binary suffix, decimal suffix or exponent), as Kubernetes keeps it; precision below
    nano units is rounded up, as Kubernetes does.
    """
    match = _match(text)
    value = _value(match, text)
    if (value * _NANO).denominator != 1:
        value = Fraction(math.ceil(value * _NANO), _NANO)
    if value == 0:  # after rounding: a tiny negative value rounds up to zero
        return "0"
    if match["binary"] and abs(value) >= 1024 and value.denominator == 1:
        amount, power = int(value), 0
        while amount % 1024 == 0 and power < max(_BINARY_SUFFIXES):
            amount, power = amount // 1024, power + 1
        return f"{amount}{_BINARY_SUFFIXES[power]}"
    # Decimal: an integer mantissa with the largest exponent, then the exponent rounded down
    # to a multiple of three.
    exponent = -9
    amount = int(value * _NANO)
    while amount % 10 == 0:
        amount, exponent = amount // 10, exponent + 1
    shift = exponent % 3
    amount, exponent = amount * 10**shift, exponent - shift
    if match["exponent"] is not None:
        return f"{amount}e{exponent}" if exponent else str(amount)
    if exponent in _DECIMAL_SUFFIXES:
        return f"{amount}{_DECIMAL_SUFFIXES[exponent]}"
    return f"{amount}e{exponent}"
