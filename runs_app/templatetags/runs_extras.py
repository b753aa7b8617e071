"""Template filters for people: durations, numbers, short digests."""

from __future__ import annotations

import math
from typing import Any

from django import template

from runs_app import numbers
from runs_app.selectors import human_duration

register = template.Library()


@register.filter
def duration(seconds: Any) -> str:
    """3 m 12 s, 850 ms, 1 h 2 m; "—" when unknown."""
    if seconds is None or seconds == "":
        return "—"
    return human_duration(float(seconds))


@register.filter
def metric(value: Any) -> str:
    """A number for people (runs_app.numbers.for_people): 12,345 · 0.0007407 · 3.142."""
    return numbers.for_people(value)


@register.filter
def exact(value: Any) -> str:
    """The full value, for a `title` (hover)."""
    return numbers.exact(value)


@register.filter
def signed(value: Any) -> str:
    """A difference with its sign: +0.012, -3; empty when missing."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return ""
    return ("+" if value > 0 else "") + metric(value)


@register.filter
def short(digest: Any, length: int = 12) -> str:
    return str(digest or "")[:length]


@register.filter
def jsonish(value: Any) -> str:
    """A param value as it was written: strings bare, the rest as JSON; "—" when unset."""
    import json

    if value is None:
        return "—"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@register.filter
def rjust_spaces(count: Any) -> str:
    """`count` spaces: the caret under a filter's bad token."""
    try:
        return " " * max(0, min(int(count), 2000))
    except (TypeError, ValueError):
        return ""
