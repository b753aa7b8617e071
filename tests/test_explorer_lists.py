"""The runs list (filters, metric columns, pagination, query budget), the compare page and
the pure builders behind the explorer: run_diff, charts, the reuse explanation."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import plotly.graph_objects as go
import pytest
from django.urls import reverse
from django.utils import timezone

from runs_app import charts, scheduler
from runs_app.diffs import diff_runs, run_diff
from runs_app.models import (
    Metric,
    PipelineRun,
    RunStatus,
    RunTag,
    StepRun,
    StepStatus,
    Sweep,
)
from runs_app.selectors import explain_reuse, human_duration, key_changes
from tests.factories import chain
from tests.test_explorer_pages import drain, finished_run, text

pytestmark = pytest.mark.django_db


def bare_runs(workspace: Any, n: int, version: Any = None, **fields: Any) -> list[PipelineRun]:
    """n runs with one step and one metric each, written straight to the tables."""
    version = version or chain(workspace, length=1)
    step = version.steps.get()
    runs = []
    for i in range(n):
        run = PipelineRun.objects.create(
            workspace=workspace, pipeline_version=version, status=RunStatus.SUCCEEDED, **fields
        )
        step_run = StepRun.objects.create(
            workspace=workspace,
            run=run,
            name=step.name,
            position=0,
            module_version=step.module_version,
            status=StepStatus.SUCCEEDED,
        )
        Metric.objects.create(step=step_run, name="accuracy", value=0.5 + i / 1000)
        runs.append(run)
    return runs


# --- the runs list ------------------------------------------------------------------------------
def test_runs_list_shows_runs_newest_first_with_step_counts(client: Any, world: Any) -> None:
    older = finished_run(world.workspace)
    newer = drain(scheduler.run_create(older.pipeline_version))
    finished_run(world.other_workspace)
    client.force_login(world.viewer)

    response = client.get(reverse("runs:list", args=["lab"]))

    html = text(response)
    assert response.status_code == 200
    assert 'Runs <span class="count">(2)</span>' in html
    assert html.index(f"#{newer.pk}<") < html.index(f"#{older.pk}<")
    assert "3 · 3 reused" in html
    assert reverse("runs:detail", args=["lab", newer.pk]) in html


def test_runs_list_filters_and_keeps_them_in_the_pagination_links(client: Any, world: Any) -> None:
    version = chain(world.workspace, length=1)
    bare_runs(world.workspace, 55, version, created_by=world.editor)
    failed = bare_runs(world.workspace, 1, version)[0]
    PipelineRun.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])

    everything = text(client.get(url))
    mine = text(client.get(url, {"user": "eddie", "status": "succeeded", "pipeline": "chain"}))
    page_two = text(client.get(url, {"user": "eddie", "status": "succeeded", "page": 2}))
    failed_only = text(client.get(url, {"status": "failed"}))
    nothing = text(client.get(url, {"pipeline": "nope", "version": "x"}))

    assert 'Runs <span class="count">(56)</span>' in everything
    assert 'Runs <span class="count">(55)</span>' in mine
    assert 'href="?user=eddie&amp;status=succeeded&amp;pipeline=chain&amp;page=2"' in mine
    assert "page 2 of 2" in page_two and page_two.count('class="mono">#') == 5
    assert 'Runs <span class="count">(1)</span>' in failed_only and f"#{failed.pk}<" in failed_only
    assert "No run matches these filters" in nothing  # bad values: an empty page, never a 500


def test_runs_list_filters_by_date_sweep_and_version(client: Any, world: Any) -> None:
    version = chain(world.workspace, length=1)
    sweep = Sweep.objects.create(workspace=world.workspace, name="s", base_version=version)
    old, swept = bare_runs(world.workspace, 2, version)
    PipelineRun.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=9))
    PipelineRun.objects.filter(pk=swept.pk).update(sweep=sweep)
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])
    since = (timezone.now() - dt.timedelta(days=1)).date().isoformat()

    recent = text(client.get(url, {"created_after": since}))
    in_sweep = text(client.get(url, {"sweep": sweep.pk}))
    v2 = text(client.get(url, {"version": 2}))

    assert f"#{swept.pk}<" in recent and f"#{old.pk}<" not in recent
    assert f"#{swept.pk}<" in in_sweep and f"#{old.pk}<" not in in_sweep
    assert "No run matches" in v2


def test_runs_list_shows_chosen_metric_columns(client: Any, world: Any) -> None:
    runs = bare_runs(world.workspace, 2)
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:list", args=["lab"]), {"metric": "accuracy"}))

    assert (
        '<th scope="col" class="num" aria-sort="none">'
        '<a href="?metric=accuracy&amp;sort=-metrics.accuracy"' in html
    )
    # Four significant digits shown, every digit on hover.
    assert '<td class="num" title="0.5">0.5</td>' in html
    assert '<td class="num" title="0.501">0.501</td>' in html
    assert '<option value="accuracy" selected>' in html
    assert len(runs) == 2


def test_empty_runs_list_says_what_to_do(client: Any, world: Any) -> None:
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:list", args=["lab"])))

    assert "No runs yet" in html and "manage.py run_pipeline lab" in html


def test_runs_list_of_another_workspace_is_404(client: Any, world: Any) -> None:
    client.force_login(world.stranger)

    assert client.get(reverse("runs:list", args=["lab"])).status_code == 404


# Session, user, workspace, pipeline choices, count, page, tags, the page's steps (counts,
# reuse sources, params), metric values, metric names; and without columns in the link, the
# columns the user picked last time.
RUN_LIST_QUERIES = 10


@pytest.mark.parametrize("n", [1, 50])
def test_runs_list_costs_the_same_queries_for_1_or_50_runs(
    client: Any, world: Any, django_assert_num_queries: Any, n: int
) -> None:
    sweep_version = chain(world.workspace, "swept", length=1)
    sweep = Sweep.objects.create(workspace=world.workspace, name="s", base_version=sweep_version)
    runs = bare_runs(world.workspace, n, sweep_version, created_by=world.owner, sweep=sweep)
    RunTag.objects.bulk_create(RunTag(run=run, name=name) for run in runs for name in ("a", "b"))
    StepRun.objects.filter(run__in=runs).update(params={"k": 3})
    client.force_login(world.owner)
    url = reverse("runs:list", args=["lab"])

    with django_assert_num_queries(RUN_LIST_QUERIES + 1):
        default = client.get(url)
    with django_assert_num_queries(RUN_LIST_QUERIES):
        response = client.get(url, {"metric": "accuracy", "param": "s0.k"})
    # A filter expression and a sort are part of the same queries, whatever they name.
    where = "status != canceled and not tag = x and (metrics.accuracy > 0.1 or version >= 1)"
    for sort in ("-metrics.accuracy", "params.s0.k", "duration", "-pipeline"):
        with django_assert_num_queries(RUN_LIST_QUERIES):
            filtered = client.get(url, {"metric": "accuracy", "filter": where, "sort": sort})
        assert text(filtered).count('class="mono">#') == n

    assert default.status_code == 200 and response.status_code == 200
    assert '<td class="num" title="0.5">0.5</td>' in text(default)  # the default column
    assert text(response).count('class="mono">#') == n
    assert text(response).count('<span class="tag">b</span>') == n
    assert text(response).count('<td class="num mono">3</td>') == n


def test_the_runs_page_finds_runs_by_expression_and_points_at_a_mistake(
    client: Any, world: Any
) -> None:
    a = finished_run(world.workspace)
    b = drain(scheduler.run_create(a.pipeline_version, param_overrides={"s2.k": 3}), metrics=True)
    client.force_login(world.viewer)
    url = reverse("runs:list", args=["lab"])

    found = text(client.get(url, {"filter": "params.s2.k = 3"}))
    wrong = client.get(url, {"q": "params.s2.k = 3 and metrics.accuracy > lots"})

    assert f'class="mono">#{b.pk}<' in found and f'class="mono">#{a.pk}<' not in found
    assert 'value="params.s2.k = 3"' in found
    page = text(wrong)
    assert wrong.status_code == 200 and 'class="mono">#' not in page  # matches nothing
    assert "at column 40: metrics.accuracy compares with a number, not &#x27;lots&#x27;" in page
    assert "params.s2.k = 3 and metrics.accuracy &gt; lots\n" + " " * 39 + "^" in page


# --- compare -------------------------------------------------------------------------------------
def test_compare_page_shows_params_metrics_and_modules_side_by_side(
    client: Any, world: Any
) -> None:
    a = finished_run(world.workspace)
    b = drain(scheduler.run_create(a.pipeline_version, param_overrides={"s2.k": 3}), metrics=True)
    client.force_login(world.viewer)

    response = client.get(reverse("runs:compare", args=["lab"]), {"a": a.pk, "b": b.pk})

    html = text(response)
    assert response.status_code == 200
    assert f"Run {a.pk} vs run {b.pk}" in html
    assert '<tr class="differs"><th scope="row" class="mono">s2.k</th>' in html
    assert "s2.accuracy" in html and "m2@1" in html
    assert "1 param differs" not in html and "1 param," in html


def test_compare_without_runs_offers_a_form_and_never_500s(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    secret = finished_run(world.other_workspace)
    client.force_login(world.viewer)
    url = reverse("runs:compare", args=["lab"])

    form = client.get(url)
    junk = client.get(url, {"a": "../../etc", "b": "1e9"})
    foreign = client.get(url, {"a": run.pk, "b": secret.pk})

    assert form.status_code == 200 and f'name="runs" value="{run.pk}"' in text(form)
    assert junk.status_code == 200
    assert foreign.status_code == 404


def test_run_diff_is_what_the_api_calls(world: Any) -> None:
    a = finished_run(world.workspace)
    b = drain(scheduler.run_create(a.pipeline_version, param_overrides={"s0.k": 2}), metrics=True)

    diff = run_diff(a, b)

    assert diff["a"]["id"] == a.pk and diff["b"]["id"] == b.pk
    assert [r["key"] for r in diff["params"] if not r["same"]] == ["s0.k"]
    assert diff["differences"] == {"params": 1, "modules": 0, "metrics": 0}
    # s0's output bytes do not depend on k here, so s1 and s2 were reused, with their
    # source's metrics.
    assert {s["name"]: s["same_key"] for s in diff["steps"]} == {
        "s0": False,
        "s1": True,
        "s2": True,
    }
    assert {s["name"]: s["b_status"] for s in diff["steps"]}["s2"] == "reused"
    assert {r["key"]: r["b"] for r in diff["metrics"]}["s2.accuracy"] == 0.7


def test_diff_runs_handles_missing_steps_and_non_finite_metrics() -> None:
    def facts(run_id: int, steps: list[dict[str, Any]], metrics: dict[str, Any]) -> dict:
        return {"id": run_id, "status": "succeeded", "steps": steps, "metrics": metrics}

    step = {"name": "train", "module": "t@1", "code_digest": "c", "params": {"lr": 0.1}}
    a = facts(1, [step], {"train": {"acc": 0.5, "loss": float("nan")}})
    b = facts(2, [{**step, "module": "t@2", "code_digest": "c"}, {"name": "eval"}], {})

    diff = diff_runs(a, b)

    assert diff["modules"][0] == {
        "key": "train",
        "a": "t@1",
        "b": "t@2",
        "same": False,
        "same_code": True,
    }
    assert diff["modules"][1]["a"] is None
    assert {r["key"]: (r["a"], r["b"], r["delta"]) for r in diff["metrics"]} == {
        "train.acc": (0.5, None, None),
        "train.loss": (None, None, None),
    }


# --- pure builders -------------------------------------------------------------------------------
def test_metric_series_figure_is_a_valid_plotly_figure_without_nan() -> None:
    figure = charts.metric_series_figure("loss", [(2, 0.5), (0, 1.0), (1, float("inf"))])

    assert figure["data"][0]["x"] == [0, 1, 2]
    assert figure["data"][0]["y"] == [1.0, None, 0.5]
    go.Figure(figure)  # plotly accepts it as it is


def test_timeline_rows_place_steps_in_percent_of_the_run() -> None:
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    s = dt.timedelta(seconds=1)
    steps = [
        SimpleNamespace(
            name="a", status="succeeded", queued_at=t0, started_at=t0 + s, finished_at=t0 + 4 * s
        ),
        SimpleNamespace(
            name="b",
            status="running",
            queued_at=t0 + 4 * s,
            started_at=t0 + 6 * s,
            finished_at=None,
        ),
        SimpleNamespace(
            name="c", status="pending", queued_at=None, started_at=None, finished_at=None
        ),
    ]

    timeline = charts.timeline_rows(steps, now=t0 + 10 * s)

    a, b, c = timeline["rows"]
    assert timeline["total_s"] == 10
    assert (a["wait_x"], a["wait_w"], a["run_x"], a["run_w"]) == (0, 10, 10, 30)
    assert (b["run_x"], b["run_w"], b["duration_s"]) == (60, 40, 4)
    assert c == {"name": "c", "status": "pending"}
    assert charts.timeline_rows([steps[2]], now=t0)["total_s"] == 0


def test_human_durations() -> None:
    assert human_duration(0.25) == "250 ms"
    assert human_duration(3.21) == "3.2 s"
    assert human_duration(192) == "3 m 12 s"
    assert human_duration(3720) == "1 h 2 m"
    assert human_duration(None) == "—"


def test_key_changes_name_every_part_that_differs() -> None:
    old = {
        "code": "a",
        "params": {"hidden": 64, "lr": 0.1},
        "inputs": {"x": "1" * 64},
        "runtime": "r",
    }
    new = {
        "code": "b",
        "params": {"hidden": 128, "seed": 0},
        "inputs": {"x": "2" * 64},
        "runtime": "r",
    }

    changes = key_changes(new, old)

    assert changes == [
        {"part": "code", "details": []},
        {
            "part": "params",
            "details": ["hidden: 64 -> 128", "lr: removed (was 0.1)", "seed: new, 0"],
        },
        {"part": "inputs", "details": ["x: 11111111 -> 22222222"]},
    ]
    assert key_changes(old, old) == []


def _step(**fields: Any) -> SimpleNamespace:
    defaults = {
        "name": "train",
        "status": "succeeded",
        "cache_key": "k",
        "key_parts": {"code": "c", "params": {"hidden": 128}, "inputs": {}, "runtime": "r"},
        "reuse_allowed": True,
        "reused_from": None,
        "following": None,
        "run_id": 42,
        "module_version": SimpleNamespace(ref="train_mlp@2"),
        "failure_message": "",
        "duration_s": 1.0,
        "reuse_note": "",
        "reuse_forgotten_at": None,
        "queued_at": None,
    }
    defaults.update(fields)
    step = SimpleNamespace(**defaults)
    step.get_status_display = lambda: step.status
    return step


def test_explain_reuse_names_missing_bytes_and_a_forgotten_result() -> None:
    from datetime import datetime

    missing = _step(reuse_note="cached outputs of run 41 were missing (model, sha256 ab12)")
    forgotten = _step(run_id=41, reuse_forgotten_at=datetime(2026, 12, 4, 3, 0, tzinfo=dt.UTC))
    queued = datetime(2026, 12, 4, 4, 0, tzinfo=dt.UTC)

    assert explain_reuse(missing, _step(run_id=41))["summary"] == (
        "ran because the cached outputs of run 41 were missing (model, sha256 ab12)"
    )
    assert explain_reuse(_step(queued_at=queued), forgotten)["summary"] == (
        "ran because the cached result of run 41 was forgotten (2026-12-04 03:00)"
    )


def test_explain_reuse_says_why_a_step_ran_or_was_reused() -> None:
    earlier = _step(run_id=41, key_parts={**_step().key_parts, "params": {"hidden": 64}})
    code = _step(run_id=41, module_version=SimpleNamespace(ref="train_mlp@1"))
    code.key_parts = {**code.key_parts, "code": "old"}
    source = _step(run_id=40, duration_s=192.0)

    assert (
        explain_reuse(_step(), earlier)["summary"]
        == "ran because params changed since run 41 (hidden: 64 -> 128)"
    )
    assert (
        explain_reuse(_step(), code)["summary"]
        == "ran because code changed since run 41 (train_mlp@1 -> train_mlp@2)"
    )
    reused = explain_reuse(_step(status="reused", reused_from=source), None)
    assert reused["summary"] == "reused from run 40, saved 3 m 12 s" and reused["reused"]
    assert "reuse was off" in explain_reuse(_step(reuse_allowed=False), _step(run_id=41))["summary"]
    failed = explain_reuse(_step(), _step(run_id=41, status="failed"))["summary"]
    assert failed == "ran because the identical step in run 41 failed"
    first = explain_reuse(_step(), None, "classify")["summary"]
    assert first == "ran: no earlier run of pipeline classify has a step 'train'"
    waiting = explain_reuse(_step(status="pending", cache_key=""), None)["summary"]
    assert waiting == "not keyed yet: it waits for its upstream steps"
