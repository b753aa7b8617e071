"""The runs list you can find things in: sortable columns (page and API), default metric
columns, and the columns a user picked, remembered per user and workspace."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.urls import reverse

from runs_app import query
from runs_app.models import Metric, PipelineRun, RunListPrefs, RunStatus, StepRun, StepStatus
from tests import factories
from tests.factories import chain
from tests.test_api_support import api_client, error_of
from tests.test_explorer_pages import text

pytestmark = pytest.mark.django_db


def runs_with(
    workspace: Any, rows: list[dict[str, Any]], name: str = "p", version: Any = None
) -> list[PipelineRun]:
    """One run per row, each with one step s0: `metrics` {name: value}, `k` its param,
    `took` seconds from start to end (None: not finished)."""
    version = version or chain(workspace, name, length=1)
    step = version.steps.get()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    runs = []
    for row in rows:
        took = row.get("took")
        run = PipelineRun.objects.create(
            workspace=workspace,
            pipeline_version=version,
            status=RunStatus.SUCCEEDED,
            started_at=start,
            finished_at=start + dt.timedelta(seconds=took) if took is not None else None,
        )
        step_run = StepRun.objects.create(
            workspace=workspace,
            run=run,
            name=step.name,
            position=0,
            module_version=step.module_version,
            status=StepStatus.SUCCEEDED,
            params={"k": row["k"]} if "k" in row else {},
        )
        for metric, value in row.get("metrics", {}).items():
            Metric.objects.create(step=step_run, name=metric, value=value)
        runs.append(run)
    return runs


def listed(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'class="mono">#(\d+)<', html)]


# --- sorting ---------------------------------------------------------------------------------
def test_sort_by_a_metric_puts_runs_without_it_last_and_breaks_ties_by_newest(
    client: Any, world: Any
) -> None:
    a, b, c, d = runs_with(
        world.workspace,
        [
            {"metrics": {"accuracy": 0.7}},
            {"metrics": {"accuracy": 0.9}},
            {},
            {"metrics": {"accuracy": 0.7}},
        ],
    )
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])

    down = text(client.get(url, {"sort": "-metrics.accuracy", "metric": "accuracy"}))
    up = text(client.get(url, {"sort": "metrics.accuracy", "metric": "accuracy"}))

    assert listed(down) == [b.pk, d.pk, a.pk, c.pk]
    assert listed(up) == [d.pk, a.pk, b.pk, c.pk]
    # The sorted column says so, and a click on it turns the order round.
    assert 'aria-sort="descending"><a href="?sort=metrics.accuracy&amp;metric=accuracy"' in down
    assert 'aria-sort="ascending"><a href="?sort=-metrics.accuracy&amp;metric=accuracy"' in up


def test_sort_by_a_param_duration_pipeline_and_id(client: Any, world: Any) -> None:
    a, b, c = runs_with(
        world.workspace, [{"k": 5, "took": 30}, {"k": 12, "took": 5}, {"k": 1}], name="zeta"
    )
    alpha = factories.pipeline_version(
        world.workspace, "alpha", {"s0": {"module_version": a.steps.get().module_version}}
    )
    (d,) = runs_with(world.workspace, [{"k": 7, "took": 60}], version=alpha)
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])

    def order(sort: str) -> list[int]:
        return listed(text(client.get(url, {"sort": sort})))

    assert order("params.s0.k") == [c.pk, a.pk, d.pk, b.pk]  # numbers as numbers: 12 after 7
    assert order("-params.s0.k") == [b.pk, d.pk, a.pk, c.pk]
    assert order("-duration") == [d.pk, a.pk, b.pk, c.pk]  # an unfinished run last
    assert order("pipeline") == [d.pk, c.pk, b.pk, a.pk]  # alpha, then zeta newest first
    assert order("id") == [a.pk, b.pk, c.pk, d.pk]


def test_a_metric_column_first_sorts_its_better_end_first(client: Any, world: Any) -> None:
    runs_with(world.workspace, [{"metrics": {"accuracy": 0.5, "val_loss": 0.2}}])
    client.force_login(world.viewer)

    html = text(
        client.get(reverse("runs:list", args=["lab"]), {"metric": ["accuracy", "val_loss"]})
    )

    assert 'href="?metric=accuracy&amp;metric=val_loss&amp;sort=-metrics.accuracy"' in html
    assert 'href="?metric=accuracy&amp;metric=val_loss&amp;sort=metrics.val_loss"' in html
    # Unsorted, the list is newest first, and says so on its Created column.
    assert (
        'aria-sort="descending"><a href="?metric=accuracy&amp;metric=val_loss&amp;sort=created"'
        in html
    )


def test_a_column_the_list_cannot_sort_by_is_said_and_the_list_stays_whole(
    client: Any, world: Any
) -> None:
    a, b = runs_with(world.workspace, [{}, {}])
    client.force_login(world.viewer)

    response = client.get(reverse("runs:list", args=["lab"]), {"sort": "-colour"})
    junk = client.get(reverse("runs:list", args=["lab"]), {"sort": "params.s0.k'--"})

    assert response.status_code == 200 and junk.status_code == 200
    assert "unknown column &#x27;colour&#x27;" in text(response)
    assert listed(text(response)) == [b.pk, a.pk]
    assert "name the step and the param" in text(junk)


def test_the_api_sorts_as_the_page_and_names_a_bad_sort(world: Any) -> None:
    a, b, c = runs_with(
        world.workspace,
        [{"metrics": {"accuracy": 0.8}}, {"metrics": {"accuracy": 0.6}}, {"metrics": {}}],
    )
    client = api_client(world.viewer)

    best = client.get("/api/v1/workspaces/lab/runs/", {"sort": "-metrics.accuracy"})
    bad = client.get("/api/v1/workspaces/lab/runs/", {"sort": "metrics."})

    assert [row["id"] for row in best.json()["results"]] == [a.pk, b.pk, c.pk]
    assert bad.status_code == 400 and set(error_of(bad)["fields"]) == {"sort"}


def test_parse_sort_reads_a_column_and_its_direction() -> None:
    assert query.parse_sort("-metrics.accuracy") == query.Sort("metrics.accuracy", True)
    assert query.parse_sort(" created ") == query.Sort("created", False)
    assert query.parse_sort("params.train.hidden").text == "params.train.hidden"
    for bad in ("", "-", "--id", "params.train", "params.a.b.c", "params.a.b__gt", "nope"):
        with pytest.raises(query.SortError):
            query.parse_sort(bad)


# --- columns: the default and the remembered ---------------------------------------------------
def test_without_a_pick_the_list_shows_the_workspaces_most_used_metrics(
    client: Any, world: Any
) -> None:
    runs_with(
        world.workspace,
        [
            {"metrics": {"accuracy": 0.9, "loss": 0.1, "f1": 0.5, "rare": 1}},
            {"metrics": {"accuracy": 0.8, "loss": 0.2, "f1": 0.4}},
            {"metrics": {"accuracy": 0.7, "loss": 0.3}},
        ],
    )
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:list", args=["lab"])))

    shown = re.findall(r'data-sort="metrics\.([^"]+)"', html)
    assert shown == ["accuracy", "loss", "f1"]  # by how many runs logged them; not `rare`
    assert "the workspace's most used metrics" in html


def test_picked_columns_are_remembered_per_user_and_workspace(client: Any, world: Any) -> None:
    runs_with(world.workspace, [{"metrics": {"accuracy": 0.9, "loss": 0.1}, "k": 3}])
    url = reverse("runs:list", args=["lab"])
    client.force_login(world.viewer)

    picked = text(client.get(url, {"columns": "1", "metric": "loss", "param": "s0.k"}))
    again = text(client.get(url))
    shared = text(client.get(url, {"metric": "accuracy"}))  # a link's columns are not saved
    after_link = text(client.get(url))
    client.force_login(world.editor)
    other_user = text(client.get(url))

    assert re.findall(r'data-sort="(metrics\.[^"]+|params\.[^"]+)"', picked) == [
        "metrics.loss",
        "params.s0.k",
    ]
    assert re.findall(r'data-sort="(metrics\.[^"]+|params\.[^"]+)"', again) == [
        "metrics.loss",
        "params.s0.k",
    ]
    assert "the ones you picked" in again
    assert re.findall(r'data-sort="metrics\.([^"]+)"', shared) == ["accuracy"]
    assert re.findall(r'data-sort="metrics\.([^"]+)"', after_link) == ["loss"]
    assert re.findall(r'data-sort="metrics\.([^"]+)"', other_user) == ["accuracy", "loss"]
    prefs = RunListPrefs.objects.get()
    assert (prefs.user, prefs.workspace) == (world.viewer, world.workspace)
    assert prefs.columns == {"metrics": ["loss"], "params": ["s0.k"]}


def test_default_columns_forgets_the_pick(client: Any, world: Any) -> None:
    runs_with(world.workspace, [{"metrics": {"accuracy": 0.9, "loss": 0.1}}])
    url = reverse("runs:list", args=["lab"])
    client.force_login(world.viewer)
    client.get(url, {"columns": "1", "metric": "loss"})

    reset = text(client.get(url, {"columns": "reset"}))

    assert re.findall(r'data-sort="metrics\.([^"]+)"', reset) == ["accuracy", "loss"]
    assert not RunListPrefs.objects.exists()


def test_the_page_takes_filter_and_still_the_old_q(client: Any, world: Any) -> None:
    a, b = runs_with(world.workspace, [{"metrics": {"accuracy": 0.9}}, {}])
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])

    assert listed(text(client.get(url, {"filter": "metrics.accuracy > 0.5"}))) == [a.pk]
    assert listed(text(client.get(url, {"q": "metrics.accuracy > 0.5"}))) == [a.pk]
    assert b.pk not in listed(text(client.get(url, {"filter": "metrics.accuracy > 0.5"})))
