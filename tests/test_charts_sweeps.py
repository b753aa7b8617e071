"""The sweep chart builders, on rows: no database, no browser.

Each figure must be one plotly accepts as it is (`go.Figure(...)` validates every key) and
must survive `json.dumps(allow_nan=False)`: NaN and inf never reach a page.
"""

from __future__ import annotations

import json
import math
from typing import Any

import plotly.graph_objects as go
import pytest

from runs_app.sweeps import charts as sweep_charts
from runs_app.sweeps import stats

AXES = {"prep": ["std", "pca"], "train": ["rf", "mlp"]}


def row(
    run: int, prep: str, train: str, r: int, value: float | None, status: str = "succeeded"
) -> Any:
    values = [] if value is None else [1.0 - value, value]
    return {
        "run": run,
        "choices": {"prep": prep, "train": train},
        "replicate": r,
        "status": status,
        "values": values,
        "value": value,
    }


@pytest.fixture
def rows() -> list[Any]:
    """std·rf is clearly best; pca·mlp failed on every replicate; std·mlp has an inf."""
    return [
        row(1, "std", "rf", 0, 0.90),
        row(2, "std", "rf", 1, 0.92),
        row(3, "std", "mlp", 0, 0.80),
        row(4, "std", "mlp", 1, float("inf")),
        row(5, "pca", "rf", 0, 0.70),
        row(6, "pca", "rf", 1, 0.74),
        row(7, "pca", "mlp", 0, None, status="failed"),
        row(8, "pca", "mlp", 1, None, status="failed"),
    ]


@pytest.fixture
def comparison(rows: list[Any]) -> dict[str, Any]:
    return stats.compare(
        rows, axes=AXES, metric="accuracy", step="evaluate", direction="max"
    ).as_dict()


def valid(figure: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(figure, allow_nan=False)  # raises on NaN/inf
    go.Figure(json.loads(text))  # raises on any key plotly does not know
    return figure


def test_bars_draw_each_measured_variant_with_its_ci_and_never_a_failed_one_as_zero(
    comparison: dict[str, Any],
) -> None:
    figure = valid(sweep_charts.sweep_bars_figure(comparison))

    bars = figure["data"][0]
    assert bars["y"] == ["std · rf", "std · mlp", "pca · rf", "pca · mlp"]
    assert bars["x"][0] == pytest.approx(0.91)
    # The CI of std·rf: 0.91 +- t(0.975, 1) * s / sqrt(2), s = 0.01414..., = 0.91 +- 0.127;
    # an accuracy cannot pass 1, so its top is cut there: 0.09 above the mean.
    half = 12.706204736 * math.sqrt(0.0002) / math.sqrt(2)
    assert bars["error_x"]["array"][0] == pytest.approx(1.0 - 0.91, rel=1e-6)
    assert bars["error_x"]["arrayminus"][0] == pytest.approx(half, rel=1e-6)
    # std·mlp has one finite sample: a mean, no CI (None, not 0 and not NaN).
    assert bars["x"][1] == pytest.approx(0.80)
    assert bars["error_x"]["array"][1] is None
    assert bars["text"][1] == "n=1 · 1 without a value"  # the inf is counted, not drawn
    # pca·mlp failed twice: no bar at all, and a note saying why.
    assert bars["x"][3] is None
    notes = {a["y"]: a["text"] for a in figure["layout"]["annotations"]}
    assert notes == {"pca · mlp": "no value (2 failed)"}
    # std·rf has the best mean but is no clear winner (std·mlp's one value gives no p):
    # no bar is green.
    assert comparison["verdict"]["clear"] is False
    assert set(bars["marker"]["color"]) == {sweep_charts.BAR_COLOUR}
    # Each replicate's value is a dot; the failed ones are not.
    dots = figure["data"][1]
    expected = [("std · rf", 0.9), ("std · rf", 0.92), ("std · mlp", 0.8)]
    expected += [("pca · rf", 0.7), ("pca · rf", 0.74)]
    assert sorted(zip(dots["y"], dots["x"], strict=True)) == sorted(expected)


def test_only_a_clear_winners_bar_is_green() -> None:
    rows = [row(i, "std", "rf", i, v) for i, v in enumerate([0.90, 0.91, 0.92])]
    rows += [row(10 + i, "pca", "rf", i, v) for i, v in enumerate([0.50, 0.51, 0.52])]
    clear = stats.compare(rows, axes={"prep": ["std", "pca"]}, metric="accuracy").as_dict()

    bars = valid(sweep_charts.sweep_bars_figure(clear))["data"][0]

    assert clear["verdict"]["clear"] is True
    assert bars["marker"]["color"] == [sweep_charts.BEST_COLOUR, sweep_charts.BAR_COLOUR]


def test_bars_of_a_sweep_without_variants_say_so() -> None:
    figure = valid(sweep_charts.sweep_bars_figure({"metric": "accuracy", "variants": []}))

    assert figure["data"] == []
    assert "no variants" in figure["layout"]["annotations"][0]["text"]


def test_parcoords_has_a_categorical_dimension_per_axis_and_the_metric_last(
    rows: list[dict[str, Any]],
) -> None:
    figure = valid(sweep_charts.sweep_parcoords_figure(rows, AXES, "accuracy"))

    trace = figure["data"][0]
    assert trace["type"] == "parcoords"
    prep, train, metric = trace["dimensions"]
    assert prep["label"] == "prep" and prep["ticktext"] == ["std", "pca"]
    assert prep["tickvals"] == [0, 1]
    # Only the 5 runs with a finite value are lines: std·mlp's inf and the failed pair are not.
    assert prep["values"] == [0, 0, 0, 1, 1]
    assert train["values"] == [0, 0, 1, 0, 0]
    assert metric["label"] == "accuracy"
    assert metric["values"] == [0.9, 0.92, 0.8, 0.7, 0.74]
    assert trace["line"]["color"] == metric["values"]
    assert "3 runs without a value not drawn" in figure["layout"]["title"]["text"]


def test_parcoords_of_one_label_axis_still_has_a_range() -> None:
    rows = [row(1, "std", "rf", 0, 0.5)]

    figure = valid(sweep_charts.sweep_parcoords_figure(rows, {"prep": ["std"]}, "accuracy"))

    assert figure["data"][0]["dimensions"][0]["range"] == [0, 1]


def test_parcoords_without_values_is_an_empty_figure_with_a_note() -> None:
    rows = [row(1, "std", "rf", 0, None, status="running")]

    figure = valid(sweep_charts.sweep_parcoords_figure(rows, AXES, "accuracy"))

    assert figure["data"] == []
    assert "No run has a value" in figure["layout"]["annotations"][0]["text"]


def test_effect_figures_plot_each_choice_of_each_axis_with_its_ci(
    comparison: dict[str, Any],
) -> None:
    figures = [valid(f["figure"]) for f in sweep_charts.sweep_effect_figures(comparison)]
    entries = sweep_charts.sweep_effect_figures(comparison)

    assert [e["step"] for e in entries] == ["prep", "train"]
    assert len({e["element_id"] for e in entries}) == 2
    prep = figures[0]["data"][0]
    assert prep["x"] == ["std", "pca"]
    # std pools 0.90, 0.92, 0.80 (inf left out); pca pools 0.70, 0.74 (the failed are not 0).
    assert prep["y"][0] == pytest.approx((0.90 + 0.92 + 0.80) / 3)
    assert prep["y"][1] == pytest.approx(0.72)
    assert "2 failed" in prep["text"][1]
    grand = figures[0]["layout"]["shapes"][0]
    assert grand["y0"] == pytest.approx(comparison["overall"]["mean"])


def test_effect_figure_of_a_choice_without_value_has_no_point() -> None:
    rows = [row(1, "std", "rf", 0, 0.5), row(2, "pca", "rf", 0, None, status="failed")]
    comparison = stats.compare(rows, axes={"prep": ["std", "pca"]}, metric="m").as_dict()

    figure = valid(sweep_charts.sweep_effect_figures(comparison)[0]["figure"])

    assert figure["data"][0]["y"] == [0.5, None]
    assert figure["data"][0]["error_y"]["array"] == [None, None]  # n = 1: no CI
    assert figure["layout"]["annotations"][0]["text"] == "no value (1 failed)"


def test_curves_draw_one_line_per_run_grouped_by_variant(rows: list[dict[str, Any]]) -> None:
    series = [
        {**r, "values": [1.0, 0.5, float("nan"), 0.25], "indices": [0, 1, 2, 3]} for r in rows[:4]
    ]
    series.append({**rows[6], "values": []})  # a failed run logged nothing: no line

    figure = valid(sweep_charts.sweep_curves_figure(series, "loss"))

    lines = figure["data"]
    assert len(lines) == 4
    assert [line["name"] for line in lines] == ["std · rf", "std · rf", "std · mlp", "std · mlp"]
    assert [line["showlegend"] for line in lines] == [True, False, True, False]
    assert lines[0]["line"]["color"] == lines[1]["line"]["color"] != lines[2]["line"]["color"]
    assert lines[0]["y"] == [1.0, 0.5, None, 0.25]
    assert lines[0]["x"] == [0, 1, 2, 3]


def test_curves_use_positions_without_indices_and_cap_the_number_of_runs(
    rows: list[dict[str, Any]],
) -> None:
    figure = valid(sweep_charts.sweep_curves_figure(rows, "accuracy", max_runs=2))

    assert len(figure["data"]) == 2
    assert figure["data"][0]["x"] == [0, 1]
    assert "first 2 runs shown, 4 more not drawn" in figure["layout"]["title"]["text"]


def test_curves_without_any_series_say_so() -> None:
    figure = valid(sweep_charts.sweep_curves_figure([], "loss"))

    assert "No run has logged loss" in figure["layout"]["annotations"][0]["text"]


def test_bars_zoom_the_axis_when_zero_is_far_and_say_so(comparison: dict[str, Any]) -> None:
    close = [row(1, "std", "rf", 0, 0.96), row(2, "std", "rf", 1, 0.97)]
    close += [row(3, "pca", "rf", 0, 0.95), row(4, "pca", "rf", 1, 0.951)]
    # A metric of no known range, so the CIs are not cut at 1.
    zoomed = stats.compare(close, axes={"prep": ["std", "pca"]}, metric="score").as_dict()

    wide = valid(sweep_charts.sweep_bars_figure(comparison))["layout"]["xaxis"]
    near = valid(sweep_charts.sweep_bars_figure(zoomed))["layout"]["xaxis"]

    # 0.7 .. 0.92 plus CIs reaching below 0 (n = 2): the bars start at 0.
    assert "range" not in wide
    low, high = near["range"]
    assert 0.5 < low < 0.95 and high > 0.97 + 0.06  # the std CI's top end is in view
    assert near["title"]["text"] == "score (axis not from 0)"


def test_curves_of_a_single_value_metric_say_to_pick_a_series(rows: list[dict[str, Any]]) -> None:
    single = [{**r, "values": r["values"][-1:]} for r in rows if r["values"]]

    figure = valid(sweep_charts.sweep_curves_figure(single, "accuracy"))

    assert "one value per run" in figure["layout"]["title"]["text"]
    assert figure["data"][0]["mode"] == "markers"
