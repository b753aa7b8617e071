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
