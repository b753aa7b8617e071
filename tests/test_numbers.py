"""One rule for the numbers people read (runs_app.numbers), and the exact value on hover."""

from __future__ import annotations

import pytest

from runs_app.numbers import exact, for_people


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (12345, "12,345"),
        (12345.0, "12,345"),
        (-3, "-3"),
        (1234.5, "1,234"),
        (123456789.123, "123,456,789"),
        (3.14159, "3.142"),
        (0.1234567, "0.1235"),
        (0.0007407, "0.0007407"),  # not 7.407e-04, which wrapped over two lines
        (0.00001, "1.000e-05"),
        (2.5e20, "2.500e+20"),
        (float("nan"), "n/a"),
        (float("inf"), "n/a"),
        (None, "n/a"),
        (True, "n/a"),
        ("0.5", "n/a"),
    ],
)
def test_a_number_for_people(value, shown):
    assert for_people(value) == shown


def test_the_exact_value_keeps_every_digit():
    assert exact(0.1234567) == "0.1234567"
    assert exact(12345) == "12345"
    assert exact(17.0000000001) == "17.0000000001" and for_people(17.0000000001) == "17"
    assert exact(float("nan")) == "" and exact(None) == ""
