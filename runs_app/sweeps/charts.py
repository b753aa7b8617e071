"""The sweep comparison's figures: bars with CIs, parallel coordinates, per-axis effects and
metric curves. Plain figure data out, drawn by the vendored plotly on the page."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runs_app.charts import STATUS_COLOURS
from runs_app.numbers import finite

# --- sweeps ---------------------------------------------------------------------------------------
# Builders for the sweep comparison. They take `Comparison.as_dict()` and the rows of
# runs_app.sweeps.selectors.sweep_rows (plain dicts), so the tests drive them without a database.
# A variant or run without a value is never drawn as a zero: it has no bar, no line and no
# point, and its failed/missing counts are written beside it.

BEST_COLOUR = STATUS_COLOURS["succeeded"]
BAR_COLOUR = STATUS_COLOURS["running"]
FAILED_COLOUR = STATUS_COLOURS["failed"]
# A qualitative palette (plotly's D3 one) that keeps its contrast on light and dark pages.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MAX_CURVE_RUNS = 200  # more lines than this is a blur, and a slow page


def _ci_errors(
    summary: Mapping[str, Any],
) -> tuple[float | None, float | None]:
    """(plus, minus) distances from the mean to the CI's ends; None where undefined."""
    mean, low, high = (finite(summary.get(k)) for k in ("mean", "ci_low", "ci_high"))
    if mean is None or low is None or high is None:
        return None, None
    return finite(high - mean), finite(mean - low)


def short_variant_name(choices: Mapping[str, str]) -> str:
    """`standardize · noise · rf`: a variant by its labels in axis order (the axis names are
    the chart's axis title), short enough for a chart's tick labels."""
    return " · ".join(str(label) for label in choices.values())


def _counts_note(counts: Mapping[str, Any]) -> str:
    """`2 failed, 1 canceled`: what became of the runs that are not samples."""
    parts = [
        f"{counts.get(key, 0)} {word}"
        for key, word in (
            ("failed", "failed"),
            ("canceled", "canceled"),
            ("missing", "without a value"),
            ("unfinished", "unfinished"),
        )
        if counts.get(key, 0)
    ]
    return ", ".join(parts)


def _metric_title(comparison: Mapping[str, Any]) -> str:
    metric = comparison.get("metric") or "metric"
    step = comparison.get("step")
    name = f"{step}.{metric}" if step else metric
    aggregate = comparison.get("aggregate")
    return f"{name} ({aggregate})" if aggregate and aggregate != "last" else name


def _empty_figure(title: str, message: str, height: int = 240) -> dict[str, Any]:
    return {
        "data": [],
        "layout": {
            "title": {"text": title},
            "height": height,
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "annotations": [
                {
                    "text": message,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "showarrow": False,
                }
            ],
        },
    }


def _winner(comparison: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The best variant when it is a clear winner (stats.Verdict), else None."""
    if not (comparison.get("verdict") or {}).get("clear"):
        return None
    best: Mapping[str, Any] | None = comparison.get("best")
    return best


def _is_best(variant: Mapping[str, Any], best: Mapping[str, Any] | None) -> bool:
    return best is not None and variant.get("choices") == best.get("choices")


def sweep_bars_figure(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """Horizontal bars, one per variant: the mean over its replicates with its 95% CI as an
    error bar, each replicate's value as a dot, a clear winner (and only one) in green. A
    variant with no value has no bar: a note says what became of its runs (failed, ...)."""
    title = _metric_title(comparison)
    variants = list(comparison.get("variants") or [])
    if not variants:
        return _empty_figure(title, "The sweep has no variants yet.")
    best = _winner(comparison)
    names, means, plus, minus, colours, texts, hovers = [], [], [], [], [], [], []
    dots_x: list[float | None] = []
    dots_y: list[str] = []
    annotations = []
    for variant in variants:
        name = short_variant_name(variant.get("choices") or {})
        summary = variant.get("summary") or {}
        counts = variant.get("counts") or {}
        mean = finite(summary.get("mean"))
        up, down = _ci_errors(summary)
        note = _counts_note(counts)
        names.append(name)
        means.append(mean)
        plus.append(up)
        minus.append(down)
        colours.append(BEST_COLOUR if _is_best(variant, best) else BAR_COLOUR)
        n = summary.get("n", 0)
        texts.append(f"n={n}" + (f" · {note}" if note else "") if mean is not None else "")
        low, high = summary.get("ci_low"), summary.get("ci_high")
        ci = (
            f"[{low:.4g}, {high:.4g}]"
            if isinstance(low, int | float) and isinstance(high, int | float)
            else "n/a"
        )
        hovers.append(
            f"{variant.get('name', name)}<br>mean {mean:.4g} · 95% CI {ci} · n={n}"
            if mean is not None
            else f"{variant.get('name', name)}<br>no value"
        )
        for value in variant.get("values") or []:
            point = finite(value)
            if point is not None:
                dots_x.append(point)
                dots_y.append(name)
        if mean is None:
            annotation = {
                "text": f"no value ({note})" if note else "no value",
                "xref": "paper",
                "yref": "y",
                "x": 0,
                "y": name,
                "xanchor": "left",
                "showarrow": False,
            }
            if counts.get("failed"):
                annotation["font"] = {"color": FAILED_COLOUR}
            annotations.append(annotation)
    data: list[dict[str, Any]] = [
        {
            "type": "bar",
            "orientation": "h",
            "name": "mean (95% CI)",
            "y": names,
            "x": means,
            "marker": {"color": colours},
            "error_x": {
                "type": "data",
                "symmetric": False,
                "array": plus,
                "arrayminus": minus,
                "visible": True,
                "thickness": 1.5,
            },
            "text": texts,
            "textposition": "inside",
            "insidetextanchor": "start",
            "hovertext": hovers,
            "hoverinfo": "text",
        }
    ]
    if dots_x:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "replicates",
                "y": dots_y,
                "x": dots_x,
                "marker": {"size": 7, "color": "#f59e0b", "opacity": 0.9, "symbol": "circle"},
                "hovertemplate": "%{x:.4g}<extra>replicate</extra>",
            }
        )
    axes = " · ".join(comparison.get("axes") or {})
    xaxis: dict[str, Any] = {"title": {"text": title}, "zeroline": True}
    zoom = _zoomed_range([*means, *dots_x, *_ends(means, plus, minus)])
    if zoom is not None:
        # Variants of one model family differ in the third digit: bars from 0 would all
        # look alike. The axis says it does not start at 0.
        xaxis.update(range=zoom, title={"text": f"{title} (axis not from 0)"})
    return {
        "data": data,
        "layout": {
            "title": {"text": "Mean and 95% CI per variant"},
            "height": max(220, 90 + 28 * len(names)),
            "margin": {"l": 10, "r": 20, "t": 50, "b": 40},
            "xaxis": xaxis,
            "yaxis": {
                "title": {"text": axes},
                "automargin": True,
                "autorange": "reversed",
                "type": "category",
            },
            "showlegend": False,
            "bargap": 0.25,
            "annotations": annotations,
            "autosize": True,
        },
    }


def _choice(row: Mapping[str, Any], step: str) -> str:
    return str((row.get("choices") or {}).get(step))


def _ends(
    means: Sequence[float | None], plus: Sequence[float | None], minus: Sequence[float | None]
) -> list[float | None]:
    """The CI ends drawn as error bars (None where a side is undefined)."""
    ends: list[float | None] = []
    for mean, up, down in zip(means, plus, minus, strict=True):
        if mean is not None:
            ends.append(mean + up if up is not None else None)
            ends.append(mean - down if down is not None else None)
    return ends


def _zoomed_range(values: Iterable[float | None]) -> list[float] | None:
    """An axis range around `values` when zero is far from them (their spread is under a
    fifth of their distance from zero); None when the axis should start at 0."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    if low <= 0 <= high:
        return None
    spread = high - low
    distance = min(abs(low), abs(high))
    if spread >= distance / 5:
        return None
    pad = spread * 0.15 if spread > 0 else abs(high) * 0.01 or 1.0
    return [low - pad, high + pad]


def sweep_parcoords_figure(
    rows: Sequence[Mapping[str, Any]],
    axes: Mapping[str, Sequence[str]],
    metric: str,
    direction: str = "max",
) -> dict[str, Any]:
    """Parallel coordinates: one categorical dimension per axis (its labels as ticks) and
    the metric last; one line per run that has a value, coloured by the metric (brighter is
    better). Failed runs and runs without a value have no line; the title counts them."""
    measured = [
        row
        for row in rows
        if row.get("status") == "succeeded" and finite(row.get("value")) is not None
    ]
    left_out = len(rows) - len(measured)
    note = f" ({left_out} run{'s' if left_out != 1 else ''} without a value not drawn)"
    title = f"Axes and {metric}" + (note if left_out else "")
    if not measured or not axes:
        return _empty_figure(title, "No run has a value of this metric yet.", height=320)
    dimensions = []
    for step, axis_labels in axes.items():
        labels = list(axis_labels)
        index = {label: i for i, label in enumerate(labels)}
        dimensions.append(
            {
                "label": step,
                "values": [index.get(_choice(row, step), 0) for row in measured],
                "tickvals": list(range(len(labels))),
                "ticktext": labels,
                # One label still needs a range of some width to be drawn.
                "range": [0, max(len(labels) - 1, 1)],
            }
        )
    values = [finite(row.get("value")) for row in measured]
    dimensions.append({"label": metric, "values": values})
    return {
        "data": [
            {
                "type": "parcoords",
                "dimensions": dimensions,
                "line": {
                    "color": values,
                    "colorscale": "Viridis",
                    "reversescale": direction == "min",
                    "showscale": True,
                    "colorbar": {"title": {"text": metric}, "thickness": 12},
                },
                "labelangle": 0,
            }
        ],
        "layout": {
            "title": {"text": title},
            "height": 380,
            "margin": {"l": 70, "r": 40, "t": 80, "b": 30},
            "autosize": True,
        },
    }


def sweep_effect_figures(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One figure per axis: each choice's marginal mean (over every other axis and the
    replicates) with its 95% CI, and the grand mean as a dashed line. [{"step",
    "element_id", "figure"}]."""
    title = _metric_title(comparison)
    overall = finite((comparison.get("overall") or {}).get("mean"))
    out = []
    for i, (step, levels) in enumerate((comparison.get("marginals") or {}).items()):
        labels, means, plus, minus, texts = [], [], [], [], []
        missing = []
        for level in levels:
            summary = level.get("summary") or {}
            mean = finite(summary.get("mean"))
            up, down = _ci_errors(summary)
            labels.append(str(level.get("label")))
            means.append(mean)
            plus.append(up)
            minus.append(down)
            note = _counts_note(level.get("counts") or {})
            texts.append(f"n={summary.get('n', 0)}" + (f" · {note}" if note else ""))
            if mean is None:
                missing.append(
                    {
                        "text": f"no value ({note})" if note else "no value",
                        "x": str(level.get("label")),
                        "xref": "x",
                        "y": 0.05,
                        "yref": "paper",
                        "showarrow": False,
                        "textangle": -90,
                    }
                )
        figure: dict[str, Any] = {
            "data": [
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": step,
                    "x": labels,
                    "y": means,
                    "marker": {"size": 11, "color": PALETTE[i % len(PALETTE)]},
                    "error_y": {
                        "type": "data",
                        "symmetric": False,
                        "array": plus,
                        "arrayminus": minus,
                        "visible": True,
                        "thickness": 1.5,
                        "width": 6,
                    },
                    "text": texts,
                    "hovertemplate": "%{x}: %{y:.4g}<br>%{text}<extra></extra>",
                }
            ],
            "layout": {
                "title": {"text": f"{step}: marginal mean of {title}"},
                "height": 300,
                "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                "xaxis": {"title": {"text": step}, "type": "category"},
                "yaxis": {"title": {"text": title}},
                "showlegend": False,
                "annotations": missing,
                "autosize": True,
            },
        }
        if overall is not None:
            figure["layout"]["shapes"] = [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": overall,
                    "y1": overall,
                    "line": {"dash": "dash", "width": 1, "color": "#6b7280"},
                }
            ]
        out.append({"step": step, "element_id": f"sweep-effect-{i}", "figure": figure})
    return out


def sweep_curves_figure(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    max_runs: int = MAX_CURVE_RUNS,
) -> dict[str, Any]:
    """A series (values logged with a step index, e.g. `loss`) overlaid across the sweep's
    runs: one line per run, coloured and grouped in the legend by variant (clicking a legend
    entry hides that variant's runs). A row's `indices` (if given) are the x values; without
    them a point's x is its position in the series, which `values` holds in index order.
    At most `max_runs` runs are drawn; the title says when more were left out."""
    drawn = [row for row in rows if row.get("values")]
    extra = max(len(drawn) - max_runs, 0)
    drawn = drawn[:max_runs]
    title = f"{metric} per run"
    if extra:
        title += f" (first {max_runs} runs shown, {extra} more not drawn)"
    if drawn and all(len(row.get("values") or []) <= 1 for row in drawn):
        title += " (one value per run: pick a series, e.g. a loss)"
    if not drawn:
        return _empty_figure(title, f"No run has logged {metric} yet.", height=320)
    colour_of: dict[str, str] = {}
    data = []
    for row in drawn:
        label = short_variant_name(row.get("choices") or {}) or f"run {row.get('run')}"
        first = label not in colour_of
        colour = colour_of.setdefault(label, PALETTE[len(colour_of) % len(PALETTE)])
        values = [finite(v) for v in row.get("values") or []]
        indices = row.get("indices")
        x = list(indices) if indices and len(indices) == len(values) else list(range(len(values)))
        data.append(
            {
                "type": "scatter",
                "mode": "lines" if len(values) > 1 else "markers",
                "name": label,
                "legendgroup": label,
                "showlegend": first,
                "x": x,
                "y": values,
                "line": {"width": 1.5, "color": colour},
                "marker": {"color": colour},
                "opacity": 0.8,
                "hovertemplate": (
                    f"run {row.get('run')} · replicate {row.get('replicate', 0)}"
                    f"<br>{label}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"
                ),
            }
        )
    return {
        "data": data,
        "layout": {
            "title": {"text": title},
            "height": 380,
            "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
            "xaxis": {"title": {"text": "step"}},
            "yaxis": {"title": {"text": metric}},
            "legend": {"title": {"text": "variant"}, "orientation": "h", "y": -0.2},
            "autosize": True,
        },
    }
