"""Kubernetes resource quantities, only as far as the downward API needs them.

`resourceFieldRef` values are computed the kubelet's way: the quantity divided by the
divisor and rounded *up* (so `limits.cpu` of `500m` with the default divisor `1` is `1`).
Exact arithmetic (Fraction) keeps `250m / 1m` from turning into 249.99999.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Z]*)$")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Fraction:
    """Returns the exact value of a quantity such as `500m`, `8Gi`, `1e3` or `2`."""
    if isinstance(value, int | float):
        return Fraction(value)
    match = _QUANTITY.match(value.strip())
    if match is None or match.group(3) not in _SUFFIXES:
        raise QuantityError(f"not a quantity: {value!r}")
    number = Fraction(match.group(1))
    if match.group(2) is not None:
        number *= Fraction(10) ** int(match.group(2))
    return number * _SUFFIXES[match.group(3)]


def divide_rounding_up(value: str | int, divisor: str | int | None) -> str:
    """The kubelet's rendering of a resource for env vars and downwardAPI files."""
    div = parse_quantity("1" if divisor is None or divisor == "" else divisor)
    if div <= 0:
        raise QuantityError(f"divisor must be positive: {divisor!r}")
    return str(math.ceil(parse_quantity(value) / div))
