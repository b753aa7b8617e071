"""The runs filter language (runs_app.query): its grammar and errors (pure), and what each
field matches in the database, on SQLite here and on PostgreSQL in CI."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from runs_app import scheduler
from runs_app.models import PipelineRun, RunStatus, RunTag
from runs_app.query import Comparison, FilterError, Node, filter_q, parse
from stepworks.context import MetricPoint
from tests.factories import chain
from tests.helpers import next_queued, succeed


# --- grammar --------------------------------------------------------------------------------
def test_and_binds_tighter_than_or_and_parentheses_group():
    tree = parse("status = failed or tag = a and not (metrics.acc >= 0.5 or version = 2)")

    assert tree == Node(
        "or",
        (
            Comparison("status", "=", "failed", 1),
            Node(
                "and",
                (
                    Comparison("tag", "=", "a", 20),
                    Node(
                        "not",
                        (
                            Node(
                                "or",
                                (
                                    Comparison("metrics.acc", ">=", 0.5, 37),
                                    Comparison("version", "=", 2, 59),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    )


def test_values_are_typed_by_their_field():
    assert parse("params.train.hidden = 32") == Comparison("params.train.hidden", "=", 32, 1)
    assert parse("params.train.lr <= 1e-3").value == 0.001
    assert parse("params.train.opt = 'adam w'").value == "adam w"
    assert parse("params.train.shuffle = true").value is True
    assert parse("created >= 2026-12-01").value == dt.date(2026, 12, 1)
    assert parse("  ") is None


def test_keywords_are_whole_words_in_any_case():
    assert parse("tag = a AND NOT tag = b") == Node(
        "and", (Comparison("tag", "=", "a", 1), Node("not", (Comparison("tag", "=", "b", 17),)))
    )
    assert parse("params.s.android = 1") == Comparison("params.s.android", "=", 1, 1)
    assert parse("tag = 'and'").value == "and"  # quoted, a keyword is text


@pytest.mark.parametrize(
    ("text", "column", "says"),
    [
        ("metrics.accuracy > ", 20, "expected a value after '>'"),
        ("metrics.accuracy > high", 20, "compares with a number"),
        ("accuracy > 0.9", 1, "unknown field 'accuracy'"),
        ("status = done", 10, "'done' is not a status"),
        ("tag > baseline", 5, "tag takes = or !="),
        ("created < yesterday", 11, "a date (YYYY-MM-DD)"),
        ("params.hidden = 3", 1, "params.STEP.PARAM"),
        ("params.s1.k__gt = 3", 1, "params.STEP.PARAM"),  # a name, never a lookup
        ("tag = a tag = b", 9, "expected 'and', 'or' or the end"),
        ("(tag = a", 9, "expected ')'"),
        ("tag = a and", 12, "expected a field"),
        ("tag ~ a", 5, "unexpected character '~'"),
        ("tag = and", 7, "expected a value after '='"),
        ("or = 1", 1, "expected a field"),
        ("((tag = a) tag = b", 12, "expected ')', found 'tag'"),
        ("tag baseline", 5, "expected = != > >= < <= after 'tag', found 'baseline'"),
        ("version = 1.5", 11, "a whole number"),
    ],
)
def test_a_mistake_names_the_column_of_the_token_at_fault(text, column, says):
    with pytest.raises(FilterError) as error:
        parse(text)

    assert error.value.column == column, error.value.message
    assert says in error.value.message
    assert error.value.fields["filter"][0].startswith(f"at column {column}: ")


def test_a_filter_is_bounded():
    with pytest.raises(FilterError, match="at most 50 comparisons"):
        parse(" and ".join(["tag = a"] * 51))
    with pytest.raises(FilterError, match="at most 2000 characters"):
        parse("tag = " + "a" * 2000)


# --- what it matches -------------------------------------------------------------------------
def finished(version: Any, *, accuracy: float, hidden: int = 0, **kwargs: Any) -> PipelineRun:
    run = scheduler.run_create(version, param_overrides={"s1.k": hidden}, **kwargs)
    while (step := next_queued("position", run=run)) is not None:
        points = [MetricPoint("accuracy", accuracy)] if step.name == "s1" else []
        points += [MetricPoint("loss", 1.0 - i / 10, step=i) for i in range(3)]
        assert succeed(
            step,
            {"out": (f'{{"v": "{accuracy}{step.name}"}}'.encode(), "application/json")},
            points,
        )
    run.refresh_from_db()
    return run


def matching(workspace: Any, text: str) -> list[int]:
    runs = PipelineRun.objects.filter(workspace=workspace).filter(filter_q(text))
    return sorted(runs.values_list("pk", flat=True))


@pytest.mark.django_db
def test_each_field_matches_what_it_says(world: Any) -> None:
    ws = world.workspace
    version = chain(ws)
    low = finished(version, accuracy=0.6, hidden=16, user=world.editor)
    high = finished(version, accuracy=0.95, hidden=32, user=world.owner)
    failing = scheduler.run_create(version, param_overrides={"s1.k": 64})
    step = scheduler.step_claim(next_queued("position", run=failing).pk, "w1")
    scheduler.step_fail(step, step.attempt, "user_error", "boom")
    RunTag.objects.create(run=high, name="baseline")
    other = finished(chain(world.other_workspace), accuracy=0.99)

    assert matching(ws, "metrics.accuracy > 0.9") == [high.pk]
    assert matching(ws, "metrics.accuracy <= 0.6") == [low.pk]
    assert matching(ws, "metrics.accuracy != 0.6") == sorted([high.pk, failing.pk])
    # A series counts by its final point (0.8), not by any point; the failed run's s0 was
    # reused, so its loss is its source's.
    assert matching(ws, "metrics.loss < 0.85") == sorted([low.pk, high.pk, failing.pk])
    assert matching(ws, "metrics.loss > 0.95") == []
    assert matching(ws, "params.s1.k = 32") == [high.pk]
    assert matching(ws, "params.s1.k >= 32") == sorted([high.pk, failing.pk])
    assert matching(ws, "tag = baseline") == [high.pk]
    assert matching(ws, "not tag = baseline and status = succeeded") == [low.pk]
    assert matching(ws, "status = failed") == [failing.pk]
    assert matching(ws, "user = eddie") == [low.pk]
    assert matching(ws, "pipeline = chain and version = 1") == sorted([low.pk, high.pk, failing.pk])
    today = dt.date.today().isoformat()
    assert matching(ws, f"created >= {today}") == sorted([low.pk, high.pk, failing.pk])
    assert matching(ws, f"created < {today}") == []
    assert matching(ws, "metrics.accuracy > 0.9 and params.s1.k = 32 and tag = baseline") == [
        high.pk
    ]
    assert other.status == RunStatus.SUCCEEDED  # another workspace's run never matches here


@pytest.mark.django_db
def test_a_reused_step_counts_with_its_sources_metrics(world: Any) -> None:
    version = chain(world.workspace)
    first = finished(version, accuracy=0.9)
    again = scheduler.run_create(version, param_overrides={"s1.k": 0})  # every step reused
    again.refresh_from_db()

    assert again.status == RunStatus.SUCCEEDED
    assert matching(world.workspace, "metrics.accuracy = 0.9") == sorted([first.pk, again.pk])


# --- the API and the CLI take the same language ----------------------------------------------
@pytest.mark.django_db
def test_the_api_filters_by_expression_and_400s_naming_the_column(world: Any) -> None:
    from tests.test_api_support import api_client, error_of

    version = chain(world.workspace)
    low = finished(version, accuracy=0.6)
    high = finished(version, accuracy=0.95, hidden=32)
    client = api_client(world.viewer)
    url = "/api/v1/workspaces/lab/runs/"

    found = client.get(url, {"filter": "metrics.accuracy > 0.9 or params.s1.k = 99"})
    everything = client.get(url, {"filter": ""})
    bad = client.get(url, {"filter": "metrics.accuracy >> 1"})

    assert [r["id"] for r in found.json()["results"]] == [high.pk]
    assert sorted(r["id"] for r in everything.json()["results"]) == sorted([low.pk, high.pk])
    assert bad.status_code == 400
    assert error_of(bad)["fields"] == {"filter": ["at column 19: expected a value after '>'"]}
