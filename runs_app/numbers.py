"""The one rule for numbers that reach JSON: NaN and inf never do (DRF's JSON and
`json_script` would emit invalid JSON), and neither do bools or non-numbers."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite int or float; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def for_people(value: Any) -> str:
    """The one rule for a number on a page: whole numbers with thousands separators
    (12,345), others with four significant digits in fixed point from 0.0001 (0.0007407,
    3.142, 1,234), scientific only below that (5.000e-05); "n/a" when missing or not
    finite. `exact` gives the full value for a hover."""
    number = finite(value)
    if number is None:
        return "n/a"
    if number == 0:
        return "0"
    size = abs(number)
    if size >= 1e15:
        return f"{number:.3e}"
    if number.is_integer():
        return f"{int(number):,}"
    if size >= 1000:
        return f"{number:,.0f}"
    if size >= 1e-4:
        return f"{number:.4g}"
    return f"{number:.3e}"


def exact(value: Any) -> str:
    """Every digit the value has (Python's shortest round-trip form); empty when it is not
    a finite number."""
    number = finite(value)
    if number is None:
        return ""
    return str(int(number)) if isinstance(value, int) else repr(number)
