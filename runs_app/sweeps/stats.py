"""What a sweep's runs measured, compared: per-variant summaries with 95% CIs, Welch's test
between two variants, per-axis effects and the winner.

Pure functions over plain rows (runs_app/sweeps/selectors.py makes them). A figure that is
not defined (n < 2, a t or p over zero variance, a non-finite value) is None, never NaN or
inf: NaN/inf break DRF's JSON and `json_script`. Failed or canceled runs are counted as
such, never measured as zeros."""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

from runs_app.numbers import finite
from runs_app.sweeps.plan import REPLICATE_KEY, variant_name
from workspaces.errors import DomainError

# --- statistics -----------------------------------------------------------------------------------

AGGREGATES = ("last", "min", "max")
DIRECTIONS = ("max", "min")
CONFIDENCE = 0.95
# The defaults of a comparison, for the page and the API alike.
DEFAULT_AGGREGATE = "last"
LOWER_IS_BETTER = ("loss", "error", "err", "mse", "rmse", "mae", "time", "latency")


def default_direction(metric: str) -> str:
    """ "min" for a metric whose name says lower is better (a loss, an error), else "max"."""
    return "min" if any(word in metric.lower() for word in LOWER_IS_BETTER) else "max"


class Row(TypedDict, total=False):
    """One run as the statistics take it (runs_app.sweeps.selectors.sweep_rows makes them)."""

    run: int
    choices: dict[str, str]  # {step: label}
    replicate: int
    status: str  # the run's status
    values: list[float]  # the metric's values in order (a series by its index)
    value: float | None  # the aggregate of `values`; None when the run logged none


def aggregate_values(values: Sequence[float], how: str) -> float | None:
    """`last`, `min` or `max` of a run's values; None when there is none."""
    if how not in AGGREGATES:
        raise DomainError(
            "invalid_aggregate",
            f"{how!r} is not an aggregate.",
            {"aggregate": [f"one of {', '.join(AGGREGATES)}"]},
        )
    if not values:
        return None
    if how == "last":
        return values[-1]
    return min(values) if how == "min" else max(values)


@functools.lru_cache(maxsize=1024)  # a sweep's variants share a few n - 1: ppf is not free
def t_critical(df: float) -> float | None:
    """t(0.975, df), the two-sided 95% quantile; None without a degree of freedom."""
    if not df or not math.isfinite(df) or df <= 0:
        return None
    from scipy import stats  # imported late: expansion and checks must not need scipy

    return finite(float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)))


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std and 95% CI of a set of values (None where undefined)."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def ci_half_width(self) -> float | None:
        if self.mean is None or self.ci_high is None:
            return None
        return self.ci_high - self.mean


def summarise(values: Iterable[float | None]) -> Summary:
    """Non-finite values are left out. A variant whose replicates agree exactly has std 0 and
    a CI of zero width: that is the formula's value, not an undefined one."""
    sample = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(sample)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = finite(statistics.fmean(sample))
    if n < 2 or mean is None:
        return Summary(n, mean, None, None, None)
    std = finite(statistics.stdev(sample))
    t = t_critical(n - 1)
    if std is None or t is None:
        return Summary(n, mean, std, None, None)
    half = t * std / math.sqrt(n)
    return Summary(n, mean, std, finite(mean - half), finite(mean + half))


@dataclass(frozen=True)
class RunCounts:
    """What became of a group's runs: measured ones are the samples; failed and canceled runs
    are counted, never measured; `missing` succeeded without a finite value of the metric."""

    total: int = 0
    measured: int = 0
    failed: int = 0
    canceled: int = 0
    unfinished: int = 0
    missing: int = 0


def _counts(rows: Sequence[Row]) -> RunCounts:
    counts = {"failed": 0, "canceled": 0, "unfinished": 0, "measured": 0, "missing": 0}
    for row in rows:
        status = row.get("status")
        if status == "failed":
            counts["failed"] += 1
        elif status == "canceled":
            counts["canceled"] += 1
        elif status != "succeeded":
            counts["unfinished"] += 1
        elif finite(row.get("value")) is None:
            counts["missing"] += 1
        else:
            counts["measured"] += 1
    return RunCounts(total=len(rows), **counts)


def _samples(rows: Iterable[Row]) -> list[float]:
    """The values of succeeded runs; a failed run's value is never a sample."""
    out = []
    for row in rows:
        value = finite(row.get("value"))
        if row.get("status") == "succeeded" and value is not None:
            out.append(value)
    return out


@dataclass(frozen=True)
class VariantStats:
    """One variant (a label per axis) over its replicates."""

    choices: dict[str, str]
    name: str
    summary: Summary
    counts: RunCounts
    runs: list[int]
    values: list[float]  # the samples, in replicate order (for strip plots)


@dataclass(frozen=True)
class LevelStats:
    """One choice of one axis, pooled over every other axis and replicate; `effect` is its
    mean minus the grand mean."""

    step: str
    label: str
    summary: Summary
    counts: RunCounts
    effect: float | None


@dataclass(frozen=True)
class Difference:
    """A vs B: mean(A) - mean(B), its Welch-Satterthwaite 95% CI and Welch's p-value."""

    a: dict[str, str]
    b: dict[str, str]
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    df: float | None
    t: float | None
    p_value: float | None


@dataclass(frozen=True)
class Comparison:
    metric: str
    step: str | None
    aggregate: str
    direction: str
    axes: dict[str, list[str]]
    variants: list[VariantStats]
    marginals: dict[str, list[LevelStats]]
    overall: Summary
    counts: RunCounts
    best: VariantStats | None
    runner_up: VariantStats | None
    best_vs_runner_up: Difference | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (every float finite or None)."""
        return asdict(self)


def welch(
    a: Sequence[float],
    b: Sequence[float],
    choices_a: Mapping[str, str] | None = None,
    choices_b: Mapping[str, str] | None = None,
) -> Difference:
    """Welch's unequal-variance comparison of two samples.

    se = sqrt(s_a^2/n_a + s_b^2/n_b); df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1));
    CI = diff +- t(0.975, df) * se; p is Welch's two-sided t-test (scipy). With n < 2
    on a side, or no variance on either, only the difference is defined.
    """
    sa, sb = summarise(a), summarise(b)
    diff = finite(sa.mean - sb.mean) if sa.mean is not None and sb.mean is not None else None
    ci_low = ci_high = df = t = p = None
    if sa.n >= 2 and sb.n >= 2 and sa.std is not None and sb.std is not None and diff is not None:
        va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
        se = math.sqrt(va + vb)
        if se > 0:
            df = finite((va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1)))
            t = finite(diff / se)
            crit = t_critical(df) if df is not None else None
            if crit is not None:
                ci_low, ci_high = finite(diff - crit * se), finite(diff + crit * se)
            from scipy import stats  # late, as in t_critical

            # Welch's test (ttest_ind(equal_var=False)) from the same exact moments as the CI:
            # from raw values scipy warns of "catastrophic cancellation" on equal replicates.
            p = finite(
                float(
                    stats.ttest_ind_from_stats(
                        sa.mean, sa.std, sa.n, sb.mean, sb.std, sb.n, equal_var=False
                    ).pvalue
                )
            )
    return Difference(
        dict(choices_a or {}),
        dict(choices_b or {}),
        sa.n,
        sb.n,
        sa.mean,
        sb.mean,
        diff,
        ci_low,
        ci_high,
        df,
        t,
        p,
    )


def _axes_labels(
    rows: Sequence[Row], axes: Mapping[str, Sequence[Any]] | None
) -> dict[str, list[str]]:
    """{step: [label, ...]}: the sweep's axes (so a variant with no run yet still shows),
    plus any label the rows hold that they lack."""
    labels: dict[str, list[str]] = {}
    for step, variants in (axes or {}).items():
        labels[step] = [v["label"] if isinstance(v, Mapping) else str(v) for v in variants]
    for row in rows:
        for step, label in row.get("choices", {}).items():
            known = labels.setdefault(step, [])
            if label not in known:
                known.append(label)
    return labels


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise DomainError(
            "invalid_direction",
            f"{direction!r} is not a direction.",
            {"direction": ["max (higher is better) or min (lower is better)"]},
        )


def _better(direction: str, x: float, y: float) -> bool:
    return x > y if direction == "max" else x < y


def compare(
    rows: Sequence[Row],
    *,
    axes: Mapping[str, Sequence[Any]] | None = None,
    direction: str = "max",
    metric: str = "",
    step: str | None = None,
    aggregate: str = "last",
) -> Comparison:
    """The comparison of a sweep's variants on one metric.

    `axes` ({step: [variant or label, ...]}, in display order) lists every variant, also those
    without runs. The best variant has the best mean among those measured at least once (ties:
    the first in axis order); it is compared with the runner-up by Welch's test. Marginal
    effects pool every run with a given choice of an axis (balanced when nothing failed, so
    their mean is then the mean over the other axes).
    """
    _check_direction(direction)
    labels = _axes_labels(rows, axes)
    steps = list(labels)
    by_variant: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        key = tuple(row.get("choices", {}).get(s, "") for s in steps)
        by_variant.setdefault(key, []).append(row)
    variants = []
    for key in itertools.product(*(labels[s] for s in steps)):
        group = sorted(by_variant.get(key, []), key=lambda r: (r.get("replicate", 0), r["run"]))
        choices = dict(zip(steps, key, strict=True))
        samples = _samples(group)
        variants.append(
            VariantStats(
                choices,
                variant_name(choices),
                summarise(samples),
                _counts(group),
                [r["run"] for r in group],
                samples,
            )
        )
    overall = summarise(_samples(rows))
    marginals: dict[str, list[LevelStats]] = {}
    for index, s in enumerate(steps):
        marginals[s] = []
        for label in labels[s]:
            group = [r for key, rs in by_variant.items() if key[index] == label for r in rs]
            summary = summarise(_samples(group))
            effect = (
                finite(summary.mean - overall.mean)
                if summary.mean is not None and overall.mean is not None
                else None
            )
            marginals[s].append(LevelStats(s, label, summary, _counts(group), effect))
    ranked: list[VariantStats] = []
    for variant in variants:
        if variant.summary.mean is None:
            continue
        position = len(ranked)
        for i, other in enumerate(ranked):
            assert other.summary.mean is not None
            if _better(direction, variant.summary.mean, other.summary.mean):
                position = i
                break
        ranked.insert(position, variant)
    best = ranked[0] if ranked else None
    runner_up = ranked[1] if len(ranked) > 1 else None
    versus = (
        welch(best.values, runner_up.values, best.choices, runner_up.choices)
        if best is not None and runner_up is not None
        else None
    )
    return Comparison(
        metric=metric,
        step=step,
        aggregate=aggregate,
        direction=direction,
        axes=labels,
        variants=variants,
        marginals=marginals,
        overall=overall,
        counts=_counts(rows),
        best=best,
        runner_up=runner_up,
        best_vs_runner_up=versus,
    )


def _matches(row: Row, choices: Mapping[str, str]) -> bool:
    have = row.get("choices", {})
    return all(have.get(step) == label for step, label in choices.items())


def compare_variants(rows: Sequence[Row], a: Mapping[str, str], b: Mapping[str, str]) -> Difference:
    """A vs B for two variants given as {step: label}. A variant naming only some axes
    pools every run that matches it (`{"train": "rf"}` vs `{"train": "mlp"}` compares two
    choices of one axis over all the others)."""
    fields: dict[str, list[str]] = {}
    picked: list[dict[str, str]] = []
    for side, choices in (("a", a), ("b", b)):
        # A run's stored `variant` may be passed as it is: its replicate is not a choice.
        wanted = (
            {k: str(v) for k, v in choices.items() if k != REPLICATE_KEY}
            if isinstance(choices, Mapping)
            else {}
        )
        picked.append(wanted)
        if not wanted:
            fields[side] = ["a variant: {step: label}"]
        elif not any(_matches(row, wanted) for row in rows):
            fields[side] = [f"no run of the sweep is {variant_name(wanted)}"]
    if fields:
        raise DomainError("invalid_variant", "Pick two variants of this sweep.", fields)
    first, second = picked
    return welch(
        _samples(r for r in rows if _matches(r, first)),
        _samples(r for r in rows if _matches(r, second)),
        first,
        second,
    )
