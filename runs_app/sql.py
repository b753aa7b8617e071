"""Statements written out, for the scheduler's hot path.

A step's completion is a dozen small statements. Built by the ORM, each cost 0.3-0.6 ms of
CPU to compile (filters, joins, ordering, converters), several times what the database
spent on it: a step's bookkeeping took about 6 ms of CPU (bench/README.md, "Queries per
step"). These helpers take the model's own field definitions for every value (so dates,
JSON and foreign keys are adapted as the ORM adapts them, on SQLite and PostgreSQL alike)
and leave only the SQL text to us. They know nothing of statuses: scheduler.py decides
every transition.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, models


class Raw:
    """A value written as SQL (`attempt + 1`), not as a parameter."""

    def __init__(self, sql: str) -> None:
        self.sql = sql


@functools.cache
def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@functools.cache
def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field), f"{model.__name__}.{name} is not a column"
    return field


@functools.cache
def column(model: type[models.Model], name: str) -> str:
    return connection.ops.quote_name(_field(model, name).column)


def prep(model: type[models.Model], name: str, value: Any) -> Any:
    """`value` as the database takes it for field `name` (a model or an id for a foreign
    key)."""
    if isinstance(value, models.Model):
        value = value.pk
    return _field(model, name).get_db_prep_save(value, connection)


def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for a statement that returns none)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def update(
    model: type[models.Model],
    values: Mapping[str, Any],
    where: str,
    params: Sequence[Any] = (),
    returning: Sequence[str] = (),
) -> tuple[int, list[tuple[Any, ...]]]:
    """UPDATE `model` SET `values` WHERE `where` (SQL with %s and `params`); the rows
    changed, and the `returning` columns of each (PostgreSQL, SQLite 3.35+)."""
    sets, values_params = [], []
    for name, value in values.items():
        if isinstance(value, Raw):
            sets.append(f"{column(model, name)} = {value.sql}")
        else:
            sets.append(f"{column(model, name)} = %s")
            values_params.append(prep(model, name, value))
    sql = f"UPDATE {table(model)} SET {', '.join(sets)} WHERE {where}"
    if returning:
        sql += " RETURNING " + ", ".join(column(model, name) for name in returning)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values_params, *params])
        rows = list(cursor.fetchall()) if returning else []
        return (len(rows) if returning else cursor.rowcount), rows


def insert(model: type[models.Model], names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """INSERT rows of `names` into `model`'s table: one statement, or as few as the
    backend's limit on a statement's parameters allows (a 10,000-step run's events)."""
    values = [
        [prep(model, name, value) for name, value in zip(names, row, strict=True)] for row in rows
    ]
    columns = ", ".join(column(model, name) for name in names)
    one = "(" + ", ".join(["%s"] * len(names)) + ")"
    size = max(1, _max_params() // len(names))
    for start in range(0, len(values), size):
        batch = values[start : start + size]
        sql = f"INSERT INTO {table(model)} ({columns}) VALUES {', '.join([one] * len(batch))}"
        execute(sql, [value for row in batch for value in row])


def _max_params() -> int:
    """How many parameters one statement may carry: SQLite's compiled-in limit (32,766
    since 3.32, where Django assumes 999), PostgreSQL's 65,535."""
    return _sqlite_limit() if connection.vendor == "sqlite" else 65535


@functools.cache
def _sqlite_limit() -> int:
    probe = sqlite3.connect(":memory:")  # the library's limit, the same for every connection
    try:
        limit: int = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()
    return limit


def placeholders(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def from_json(value: Any) -> Any:
    """A JSON column's value as read by a raw cursor (text on both backends here)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def for_update(alias: str) -> str:
    """The clause locking the rows of table `alias` in a SELECT, where the backend has row
    locks (SQLite's IMMEDIATE transactions hold the whole database instead)."""
    if not connection.features.has_select_for_update:
        return ""
    if connection.features.has_select_for_update_of:
        return f" FOR UPDATE OF {alias}"
    return " FOR UPDATE"
