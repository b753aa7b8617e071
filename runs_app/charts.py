"""Our own figure builders: rows in, plain figure data out (no database, no browser).

The pages hand the result to `json_script`, and a vendored script draws it: a plotly
figure for metric series, SVG bars for the timeline. Only these builders render charts on
the app's origin; a user's own plotly output is shown in the sandboxed frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from runs_app.numbers import finite

STATUS_COLOURS = {
    "pending": "#6b7280",
    "queued": "#7c3aed",
    "running": "#2563eb",
    "following": "#0891b2",
    "succeeded": "#15803d",
    "reused": "#4d7c0f",
    "failed": "#b91c1c",
    "canceled": "#92400e",
}


def metric_series_figure(name: str, points: Sequence[tuple[int, float]]) -> dict[str, Any]:
    """A plotly figure (as JSON-ready dicts) of one metric series: index on x, value on y."""
    ordered = sorted(points, key=lambda point: point[0])
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers" if len(ordered) <= 50 else "lines",
                "name": name,
                "x": [index for index, _ in ordered],
                "y": [finite(value) for _, value in ordered],
                "line": {"width": 2},
                "hovertemplate": f"{name} %{{y}} at step %{{x}}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": name},
            "xaxis": {"title": {"text": "step"}},
            "yaxis": {"title": {"text": name}},
            "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
            "height": 280,
            "autosize": True,
        },
    }


def metric_figures(series: dict[str, list[tuple[int, float]]]) -> list[dict[str, Any]]:
    """One figure per series, by name: [{"name", "element_id", "figure"}]."""
    return [
        {"name": name, "element_id": f"metric-{i}", "figure": metric_series_figure(name, points)}
        for i, (name, points) in enumerate(sorted(series.items()))
    ]


RUN_COLOURS = (
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c",
    "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
)  # fmt: skip


def compare_curves_figure(
    name: str, curves: Mapping[Any, Sequence[tuple[int, float]]]
) -> dict[str, Any]:
    """A plotly figure of one step-wise metric for several runs: one trace per run (its
    label, e.g. "run 12"), overlaid, index on x, each run in its own colour."""
    data = []
    for number, (label, points) in enumerate(curves.items()):
        ordered = sorted(points, key=lambda point: point[0])
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers" if len(ordered) <= 50 else "lines",
                "name": str(label),
                "x": [index for index, _ in ordered],
                "y": [finite(value) for _, value in ordered],
                "line": {"width": 2, "color": RUN_COLOURS[number % len(RUN_COLOURS)]},
                "hovertemplate": f"{label}: {name} %{{y}} at step %{{x}}<extra></extra>",
            }
        )
    return {
        "data": data,
        "layout": {
            "title": {"text": name},
            "xaxis": {"title": {"text": "step"}},
            "yaxis": {"title": {"text": name.rpartition(" · ")[2]}},
            "legend": {"orientation": "h", "y": -0.25},
            "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
            "height": 320,
            "autosize": True,
        },
    }


def compare_curve_figures(
    series: Mapping[str, Mapping[int, Sequence[tuple[int, float]]]],
) -> list[dict[str, Any]]:
    """One overlaid figure per series of runs_app.diffs.compare_runs ({"step · metric": {run
    id: points}}), in its order: [{"name", "element_id", "figure"}]."""
    return [
        {
            "name": name,
            "element_id": f"curve-{i}",
            "figure": compare_curves_figure(
                name, {f"run {run}": points for run, points in curves.items()}
            ),
        }
        for i, (name, curves) in enumerate(series.items())
    ]


def timeline_rows(steps: Iterable[Any], now: datetime) -> dict[str, Any]:
    """A Gantt chart of a run's steps: each step's wait and run as percentages of the run.

    `steps` have name, status, queued_at, started_at, finished_at (model rows or anything
    alike). A step still running ends at `now`; a step that never started has no bar.
    {"total_s", "rows": [{"name", "status", "wait_x", "wait_w", "run_x", "run_w",
    "duration_s", "offset_s"}]}, every *_x/*_w in 0..100.
    """
    steps = list(steps)
    starts = [s.queued_at or s.started_at for s in steps if (s.queued_at or s.started_at)]
    if not starts:
        return {"total_s": 0.0, "rows": [{"name": s.name, "status": s.status} for s in steps]}
    origin: datetime = min(starts)
    ends = [s.finished_at or now for s in steps if (s.queued_at or s.started_at)]
    total = max((max(ends) - origin).total_seconds(), 1e-3)

    def pct(moment: datetime) -> float:
        return round(100 * (moment - origin).total_seconds() / total, 3)

    rows = []
    for s in steps:
        row: dict[str, Any] = {"name": s.name, "status": s.status}
        if s.started_at:
            end = s.finished_at or now
            row["run_x"] = pct(s.started_at)
            row["run_w"] = max(round(pct(end) - row["run_x"], 3), 0.4)  # a reuse stays visible
            row["duration_s"] = (end - s.started_at).total_seconds()
            row["offset_s"] = (s.started_at - origin).total_seconds()
        if s.queued_at and s.started_at and s.started_at > s.queued_at:
            row["wait_x"] = pct(s.queued_at)
            row["wait_w"] = round(pct(s.started_at) - row["wait_x"], 3)
        elif s.queued_at and not s.started_at:
            row["wait_x"] = pct(s.queued_at)
            row["wait_w"] = round(100 - row["wait_x"], 3)
        rows.append(row)
    return {"total_s": total, "rows": rows}


def storage_bars_figure(
    rows: Sequence[dict[str, Any]], label: str, top: int = 15
) -> dict[str, Any]:
    """Horizontal bars of stored megabytes by `label` (the largest `top`, largest on top)."""
    shown = list(rows)[:top][::-1]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "y": [str(row[label]) for row in shown],
                "x": [round(row["bytes"] / 2**20, 3) for row in shown],
                "text": [f"{row['artifacts']} artifacts" for row in shown],
                "hovertemplate": "%{y}: %{x} MB (%{text})<extra></extra>",
                "marker": {"color": STATUS_COLOURS["running"]},
            }
        ],
        "layout": {
            "height": 60 + 28 * max(1, len(shown)),
            "margin": {"l": 160, "r": 20, "t": 10, "b": 40},
            "xaxis": {"title": {"text": "MB"}},
            "yaxis": {"automargin": True},
        },
    }


def storage_over_time_figure(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The workspace's stored megabytes at the end of each day."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": [point["day"] for point in points],
                "y": [round(point["bytes"] / 2**20, 3) for point in points],
                "hovertemplate": "%{x}: %{y} MB<extra></extra>",
                "line": {"width": 2, "color": STATUS_COLOURS["succeeded"]},
            }
        ],
        "layout": {
            "height": 260,
            "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
            "yaxis": {"title": {"text": "MB"}, "rangemode": "tozero"},
        },
    }
