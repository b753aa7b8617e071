"""Comparing 2 to 10 runs: the pure line-up (runs_app.diffs.compare_runs) and its figure
builder, the page (`?runs=1,2,3`), the runs list's Compare button, the API and the CLI."""

from __future__ import annotations

import json
import re
from typing import Any

import plotly.graph_objects as go
import pytest
from django.urls import reverse

from runs_app import charts, scheduler
from runs_app.diffs import compare_ids, compare_runs
from runs_app.models import PipelineRun
from stepworks.context import MetricPoint
from tests.factories import chain
from tests.helpers import next_queued
from tests.test_api_support import api_client, error_of
from tests.test_cli import cli  # noqa: F401 (the fixture)
from tests.test_explorer_pages import text, work
from workspaces.errors import DomainError

API = "/api/v1/workspaces/lab"


def run_of(version: Any, k: int, accuracy: float, losses: list[float]) -> PipelineRun:
    """A run of the 3-step chain with s2.k = k; s2 logs accuracy, val_loss and a loss curve.
    s0 and s1 are reused from the first such run; s2 runs again for each new k."""
    run = scheduler.run_create(version, param_overrides={"s2.k": k})
    while (queued := next_queued("position", run=run)) is not None:
        points = []
        if queued.name == "s2":
            points = [MetricPoint("accuracy", accuracy), MetricPoint("val_loss", losses[-1])]
            points += [MetricPoint("loss", value, step=i) for i, value in enumerate(losses)]
        work(queued, str(k).encode(), points)
    run.refresh_from_db()
    return run


@pytest.fixture
def three(world: Any) -> list[PipelineRun]:
    version = chain(world.workspace)
    return [
        run_of(version, 1, 0.80, [1.0, 0.6, 0.4]),
        run_of(version, 2, 0.90, [1.1, 0.5, 0.3, 0.2]),
        run_of(version, 3, 0.85, [0.9, 0.7]),
    ]


# --- pure ----------------------------------------------------------------------------------------
def facts(run_id: int, steps: list[dict[str, Any]], metrics: dict[str, Any], series: Any = None):
    return {
        "id": run_id,
        "status": "succeeded",
        "pipeline": "p",
        "version": 1,
        "param_overrides": {},
        "created_by": None,
        "steps": steps,
        "metrics": metrics,
        "series": series or {},
    }


def step(name: str, key: str, params: dict[str, Any], reused_from: int | None = None):
    status = "reused" if reused_from else "succeeded"
    return {
        "name": name,
        "status": status,
        "params": params,
        "outputs_key": key,
        "reused_from_run": reused_from,
    }


def test_compare_runs_lines_up_params_metrics_best_and_shared_keys() -> None:
    a = facts(
        1,
        [step("prep", "k1", {"n": 3}), step("train", "t1", {"lr": 0.1, "seed": 0})],
        {"train": {"accuracy": 0.8, "loss": 0.5, "same": 1.0}},
        {"train": {"loss": [(0, 1.0), (1, 0.5)]}},
    )
    b = facts(
        2,
        [step("prep", "k1", {"n": 3}, reused_from=1), step("train", "t2", {"lr": 0.2, "seed": 0})],
        {"train": {"accuracy": 0.9, "loss": 0.4, "same": 1.0}},
        {"train": {"loss": [(0, 0.9), (1, float("nan"))]}},
    )
    c = facts(3, [step("prep", "k3", {"n": 4})], {"prep": {"rows": 10.0}})

    out = compare_runs([a, b, c])

    assert [r["id"] for r in out["runs"]] == [1, 2, 3] and "steps" not in out["runs"][0]
    assert [(r["key"], r["values"], r["same"]) for r in out["params"]] == [
        ("prep.n", [3, 3, 4], False),
        ("train.lr", [0.1, 0.2, None], False),
        ("train.seed", [0, 0, None], False),
    ]
    metrics = {r["key"]: r for r in out["metrics"]}
    assert metrics["train.accuracy"]["direction"] == "max"
    assert metrics["train.accuracy"]["best"] == [False, True, False]
    assert metrics["train.loss"]["direction"] == "min"
    assert metrics["train.loss"]["best"] == [False, True, False]
    assert metrics["train.same"]["best"] == [False, False, False]  # a tie of all: no best
    assert metrics["prep.rows"]["values"] == [None, None, 10.0]
    assert metrics["prep.rows"]["best"] == [False, False, False]  # one value: nothing to beat
    prep = out["steps"][0]
    assert [(c["group"], c["shared"], c["reused_from_run"]) for c in prep["cells"]] == [
        ("A", True, None),
        ("A", True, 1),
        ("B", False, None),
    ]
    assert prep["keys"] == 2
    assert out["steps"][1]["cells"][2] == {
        "run": 3,
        "status": None,
        "reused_from_run": None,
        "key": None,
        "group": None,
        "shared": False,
    }
    assert out["series"] == {"train · loss": {1: [(0, 1.0), (1, 0.5)], 2: [(0, 0.9), (1, None)]}}
    assert out["differences"] == {"params": 3, "metrics": 4}  # a missing value differs too


def test_params_that_are_the_same_come_after_those_that_differ() -> None:
    a = facts(1, [step("s", "x", {"a": 1, "b": 1, "c": 1})], {})
    b = facts(2, [step("s", "y", {"a": 1, "b": 2, "c": 1})], {})

    out = compare_runs([a, b])

    assert [(r["key"], r["same"]) for r in out["params"]] == [
        ("s.b", False),
        ("s.a", True),
        ("s.c", True),
    ]


def test_compare_curves_figure_overlays_one_trace_per_run() -> None:
    figures = charts.compare_curve_figures(
        {"train · loss": {4: [(1, 0.5), (0, 1.0)], 7: [(0, 0.9), (1, None)]}}
    )

    (only,) = figures
    figure = only["figure"]
    go.Figure(figure)  # plotly accepts it as it is
    assert only["element_id"] == "curve-0" and only["name"] == "train · loss"
    assert [t["name"] for t in figure["data"]] == ["run 4", "run 7"]
    assert figure["data"][0]["x"] == [0, 1] and figure["data"][0]["y"] == [1.0, 0.5]
    assert figure["data"][1]["y"] == [0.9, None]
    assert figure["data"][0]["line"]["color"] != figure["data"][1]["line"]["color"]
    json.dumps(figure, allow_nan=False)


@pytest.mark.parametrize(
    ("values", "ids"),
    [(["3,1,2"], [3, 1, 2]), (["1", "2", "1"], [1, 2]), ([" 4 , 5 ,"], [4, 5])],
)
def test_compare_ids_reads_runs_in_order_once(values: list[str], ids: list[int]) -> None:
    assert compare_ids(values) == ids


@pytest.mark.parametrize(
    "values", [["1"], ["1,1"], [",".join(map(str, range(1, 12)))], ["1,x"], ["1,-2"], ["0,1"]]
)
def test_compare_ids_refuses_too_few_too_many_or_a_bad_id(values: list[str]) -> None:
    with pytest.raises(DomainError) as caught:
        compare_ids(values)
    assert set(caught.value.fields) == {"runs"}


# --- the page ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_compare_page_shows_three_runs_params_metrics_curves_and_reuse(
    client: Any, world: Any, three: list[PipelineRun]
) -> None:
    a, b, c = three
    client.force_login(world.viewer)
    ids = f"{a.pk},{b.pk},{c.pk}"

    response = client.get(reverse("runs:compare", args=["lab"]), {"runs": ids})

    html = text(response)
    assert response.status_code == 200
    assert "<h1>Compare 3 runs</h1>" in html
    assert f"http://testserver/w/lab/runs/compare/?runs={ids}" in html  # the shareable link
    params = html.split('id="runs-params-title"')[1].split("</section>")[0]
    assert (
        '<tr class="differs"><th scope="row" class="mono">s2.k</th>'
        '<td class="mono">1</td><td class="mono">2</td><td class="mono">3</td></tr>' in params
    )
    assert '<details class="same-params">' in params and ">s0.k</th>" in params
    metrics = html.split('id="runs-metrics-title"')[1].split("</section>")[0]
    assert re.search(
        r'<td class="num best" title="0\.9"><span class="visually-hidden">best: ', metrics
    )
    assert 'title="0.2"><span class="visually-hidden">best: </span>★ 0.2' in metrics  # val_loss
    curve = json.loads(
        re.search(r'<script id="curve-\d+" type="application/json">(.*?)</script>', html).group(1)
    )
    assert [t["name"] for t in curve["data"]] == [f"run {a.pk}", f"run {b.pk}", f"run {c.pk}"]
    assert 'data-plotly="curve-' in html and "vendor/plotly.min.js" in html
    steps = html.split('id="runs-steps-title"')[1].split("</section>")[0]
    # s0 and s1: one key shared by all three runs; s2: a key of its own in each.
    assert steps.count("key A") == 3 + 3 + 1 and steps.count('key-group shared"') == 6
    assert "key B" in steps and "key C" in steps
    assert steps.count(f"↻ run {a.pk}") == 4  # b and c reused a's s0 and s1
    assert f"Run {a.pk} vs run {b.pk}" in html  # the first two in detail by default


@pytest.mark.django_db
def test_the_pair_in_detail_is_any_two_of_them_and_a_b_links_still_work(
    client: Any, world: Any, three: list[PipelineRun]
) -> None:
    a, b, c = three
    client.force_login(world.viewer)
    url = reverse("runs:compare", args=["lab"])

    chosen = text(client.get(url, {"runs": f"{a.pk},{b.pk},{c.pk}", "a": c.pk, "b": a.pk}))
    outside = text(client.get(url, {"runs": f"{a.pk},{b.pk}", "a": c.pk, "b": a.pk}))
    old_link = text(client.get(url, {"a": b.pk, "b": c.pk}))

    assert f"Run {c.pk} vs run {a.pk}" in chosen
    assert f'<option value="{c.pk}" selected>' in chosen
    assert f"Run {a.pk} vs run {b.pk}" in outside  # not among the runs: the first two
    assert "<h1>Compare 2 runs</h1>" in old_link and f"Run {b.pk} vs run {c.pk}" in old_link


@pytest.mark.django_db
def test_the_compare_page_refuses_too_many_or_a_foreign_run_and_never_500s(
    client: Any, world: Any, three: list[PipelineRun]
) -> None:
    a, b, _ = three
    secret = run_of(chain(world.other_workspace), 1, 0.5, [1.0])
    client.force_login(world.viewer)
    url = reverse("runs:compare", args=["lab"])

    one = client.get(url, {"runs": str(a.pk)})
    junk = client.get(url, {"runs": "1,../etc"})
    foreign = client.get(url, {"runs": f"{a.pk},{secret.pk}"})
    missing = client.get(url, {"runs": f"{a.pk},{b.pk},999999"})

    assert one.status_code == 400 and "name 2 to 10 runs to compare, not 1" in text(one)
    assert junk.status_code == 400 and "is not a run id" in text(junk)
    assert foreign.status_code == 404 and missing.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("n", [2, 10])
def test_the_compare_page_costs_the_same_queries_for_2_or_10_runs(
    client: Any, world: Any, django_assert_num_queries: Any, n: int
) -> None:
    version = chain(world.workspace)
    runs = [run_of(version, k, 0.5 + k / 100, [1.0 / (k + 1), 0.5]) for k in range(n)]
    client.force_login(world.viewer)
    ids = ",".join(str(run.pk) for run in runs)

    # Session, user, workspace, the runs, their steps, their metrics; the pair in detail: the
    # code of changed module versions and both runs' outputs.
    with django_assert_num_queries(9):
        response = client.get(reverse("runs:compare", args=["lab"]), {"runs": ids})

    assert response.status_code == 200
    assert f"<h1>Compare {n} runs</h1>" in text(response)


# --- picked in the runs list ---------------------------------------------------------------------
@pytest.mark.django_db
def test_ticking_runs_in_the_list_and_pressing_compare_opens_the_comparison(
    client: Any, world: Any, three: list[PipelineRun]
) -> None:
    a, b, c = three
    client.force_login(world.viewer)  # a viewer compares too; only editors archive or delete
    listing = text(client.get(reverse("runs:list", args=["lab"])))
    bulk = reverse("runs:bulk", args=["lab"])

    picked = client.post(bulk, {"action": "compare", "runs": [c.pk, a.pk, b.pk]})
    alone = client.post(bulk, {"action": "compare", "runs": [a.pk], "back": "/w/lab/runs/"})
    told = text(client.get("/w/lab/runs/"))
    archive = client.post(bulk, {"action": "archive", "runs": [a.pk]})

    assert 'name="action" value="compare"' in listing
    assert f'<input type="checkbox" name="runs" value="{a.pk}" form="bulk"' in listing
    assert 'value="delete"' not in listing
    assert picked.status_code == 302
    assert picked["Location"] == f"/w/lab/runs/compare/?runs={c.pk},{a.pk},{b.pk}"
    assert alone.status_code == 302 and alone["Location"] == "/w/lab/runs/"
    assert "Tick 2 to 10 runs" in told
    assert archive.status_code == 403
    a.refresh_from_db()
    assert a.archived_at is None


# --- the API -------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_api_compares_2_to_10_runs(world: Any, three: list[PipelineRun]) -> None:
    a, b, c = three
    client = api_client(world.viewer)

    body = client.get(f"{API}/runs/compare/", {"runs": f"{a.pk},{b.pk},{c.pk}"}).json()

    assert [r["id"] for r in body["runs"]] == [a.pk, b.pk, c.pk]
    assert body["params"][0] == {"key": "s2.k", "values": [1, 2, 3], "same": False}
    accuracy = next(r for r in body["metrics"] if r["key"] == "s2.accuracy")
    assert accuracy == {
        "key": "s2.accuracy",
        "values": [0.8, 0.9, 0.85],
        "same": False,
        "direction": "max",
        "best": [False, True, False],
    }
    s0 = body["steps"][0]
    assert s0["name"] == "s0" and s0["keys"] == 1
    assert [cell["reused_from_run"] for cell in s0["cells"]] == [None, a.pk, a.pk]
    assert body["series"]["s2 · loss"][str(b.pk)] == [[0, 1.1], [1, 0.5], [2, 0.3], [3, 0.2]]
    assert body["differences"] == {"params": 1, "metrics": 3}


@pytest.mark.django_db
@pytest.mark.parametrize("runs", ["1", "1,2,3,4,5,6,7,8,9,10,11", "1,abc", ""])
def test_the_api_names_runs_for_too_few_too_many_or_a_bad_id(world: Any, runs: str) -> None:
    response = api_client(world.viewer).get(f"{API}/runs/compare/", {"runs": runs})

    assert response.status_code == 400
    assert set(error_of(response)["fields"]) == {"runs"}


@pytest.mark.django_db
def test_the_api_compare_of_another_workspaces_run_is_a_404(
    world: Any, three: list[PipelineRun]
) -> None:
    a, b, _ = three
    secret = run_of(chain(world.other_workspace), 1, 0.5, [1.0])

    mixed = api_client(world.viewer).get(f"{API}/runs/compare/", {"runs": f"{a.pk},{secret.pk}"})
    stranger = api_client(world.stranger).get(f"{API}/runs/compare/", {"runs": f"{a.pk},{b.pk}"})

    assert mixed.status_code == 404 and stranger.status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("n", [2, 10])
def test_the_api_compare_costs_the_same_for_2_or_10_runs(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    version = chain(world.workspace)
    runs = [run_of(version, k, 0.5, [1.0, 0.5]) for k in range(n)]
    client = api_client(world.viewer)
    ids = ",".join(str(run.pk) for run in runs)

    # The token with its user, the workspace (twice: before any 400, then with the runs),
    # the runs, their steps, their metrics.
    with django_assert_num_queries(6):
        response = client.get(f"{API}/runs/compare/", {"runs": ids})

    assert response.status_code == 200 and len(response.json()["runs"]) == n


# --- the CLI -------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_stepworks_compare_takes_two_or_more_runs(cli: Any, world: Any) -> None:  # noqa: F811
    version = chain(world.workspace)
    a, b, c = (
        run_of(version, k, acc, [1.0, loss])
        for k, acc, loss in ((1, 0.8, 0.5), (2, 0.9, 0.3), (3, 0.7, 0.6))
    )

    three = cli("compare", str(a.pk), str(b.pk), str(c.pk))
    everything = cli("compare", str(a.pk), str(b.pk), str(c.pk), "--all")
    as_json = cli.json("compare", str(a.pk), str(b.pk), str(c.pk))
    two = cli("compare", str(a.pk), str(b.pk))
    sorted_runs = cli.json("runs", "--sort", "-metrics.accuracy")
    alone = cli("compare", str(a.pk), code=2)

    lines = three.stdout.splitlines()
    assert any("param s2.k" in line and "│ 1 " in line and "│ 3" in line for line in lines)
    assert not any("param s0.k" in line for line in lines)
    assert "param s0.k" in everything.stdout
    accuracy = next(line for line in lines if "metric s2.accuracy (max)" in line)
    assert "★ 0.9" in accuracy and "★ 0.8" not in accuracy
    loss = next(line for line in lines if "metric s2.val_loss (min)" in line)
    assert "★ 0.3" in loss
    assert as_json["params"][0]["key"] == "s2.k" and len(as_json["runs"]) == 3
    assert "param s2.k" in two.stdout and "Δ" in two.stdout  # two runs: as before, with deltas
    assert [row["id"] for row in sorted_runs] == [b.pk, a.pk, c.pk]
    assert "name 2 to 10 runs to compare, not 1" in alone.output
