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
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypedDict

from runs_app.numbers import finite
from runs_app.sweeps.plan import REPLICATE_KEY, variant_name
from workspaces.errors import DomainError

# --- statistics -----------------------------------------------------------------------------------

AGGREGATES = ("last", "min", "max")
DIRECTIONS = ("max", "min")
CONFIDENCE = 0.95
# The levels a winner may be named at (the page offers them; the API takes any in between).
LEVELS = (0.01, 0.05, 0.1)
DEFAULT_LEVEL = 0.05
MAX_LEVEL = 0.2
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
    clipped: bool = False  # an end of the CI was cut at the metric's known range

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
class Verdict:
    """Is the variant with the best mean a clear winner?

    Only if it beats every other measured variant by Welch's two-sided test at
    `level / comparisons` (Bonferroni over the `comparisons` = k - 1 other variants). Why
    Bonferroni and not Holm: the winner is picked by the data, then compared with the others.
    Naming a wrong winner needs its comparison with the truly best variant to pass; each of
    the k - 1 candidates' comparisons with that variant passes with chance at most
    level / (k - 1) when it is no better, so a wrong winner is named with chance at most
    `level` whichever variant the data picks. Holm's step-down tests the last comparison at
    the full level, and its guarantee is for a family of tests fixed in advance, which this
    one is not. `p_value` and `against` are the deciding comparison's: the largest p (the
    other variant hardest to beat; an undefined p counts as the largest)."""

    clear: bool
    level: float
    correction: str
    comparisons: int
    threshold: float | None
    p_value: float | None
    against: dict[str, str] | None
    against_name: str | None
    p_values: dict[str, float | None]  # {variant name: p against the best mean}
    reason: str


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
    best: VariantStats | None  # the best mean (a winner only when `verdict.clear`)
    runner_up: VariantStats | None
    best_vs_runner_up: Difference | None
    verdict: Verdict | None = None
    value_range: tuple[float | None, float | None] | None = None  # the metric's, when known

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


# --- a metric's known range ------------------------------------------------------------------
# A 95% CI is mean +- t * s / sqrt(n): with few replicates near a bound it runs past values
# the metric cannot take (an accuracy CI of [0.93, 1.04]). A range is known from the metric's
# name: its whole name, or its last word (`val_accuracy`, `test/f1`, `roc_auc`), is in the
# table below; and only while every value the comparison holds lies inside it (an
# `accuracy` logged in percent is then left alone). CI ends past it are cut to it.
UNIT_INTERVAL = (0.0, 1.0)
NON_NEGATIVE = (0.0, None)
KNOWN_RANGES: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(
        (
            "accuracy",
            "acc",
            "precision",
            "recall",
            "f1",
            "f1_score",
            "auc",
            "roc_auc",
            "pr_auc",
            "average_precision",
            "balanced_accuracy",
            "specificity",
            "sensitivity",
            "iou",
            "jaccard",
            "dice",
        ),
        UNIT_INTERVAL,
    ),
    **dict.fromkeys(
        ("mse", "rmse", "mae", "log_loss", "logloss", "cross_entropy", "perplexity"),
        NON_NEGATIVE,
    ),
    "r2": (None, 1.0),
}


def _name_range(metric: str) -> tuple[float | None, float | None] | None:
    name = metric.strip().lower()
    if name in KNOWN_RANGES:
        return KNOWN_RANGES[name]
    words = [w for w in re.split(r"[^a-z0-9]+", name) if w]
    for size in (2, 1):  # `roc_auc` before `auc`, `log_loss` before nothing
        if len(words) >= size and "_".join(words[-size:]) in KNOWN_RANGES:
            return KNOWN_RANGES["_".join(words[-size:])]
    return None


def metric_range(
    metric: str, values: Iterable[float | None]
) -> tuple[float | None, float | None] | None:
    """(low, high) the metric cannot leave (None: unbounded on that side), or None when no
    range is known: the name is not in KNOWN_RANGES, or a value lies outside its range."""
    known = _name_range(metric)
    if known is None:
        return None
    low, high = known
    for value in values:
        number = finite(value)
        if number is None:
            continue
        if (low is not None and number < low) or (high is not None and number > high):
            return None
    return known


def clip_summary(
    summary: Summary, value_range: tuple[float | None, float | None] | None
) -> Summary:
    """The summary with its CI's ends cut to `value_range` (and `clipped` set if one was)."""
    if value_range is None or summary.ci_low is None or summary.ci_high is None:
        return summary
    low, high = value_range
    ci_low = max(summary.ci_low, low) if low is not None else summary.ci_low
    ci_high = min(summary.ci_high, high) if high is not None else summary.ci_high
    if (ci_low, ci_high) == (summary.ci_low, summary.ci_high):
        return summary
    return replace(summary, ci_low=ci_low, ci_high=ci_high, clipped=True)


# --- the verdict -------------------------------------------------------------------------------
def parse_level(value: Any) -> float:
    """The level a winner is named at: a number in (0, MAX_LEVEL]."""
    try:
        level = float(value)
    except (TypeError, ValueError):
        level = math.nan
    if not (0 < level <= MAX_LEVEL):
        raise DomainError(
            "invalid_level",
            f"{value!r} is not a significance level.",
            {"level": [f"a number above 0 and at most {MAX_LEVEL}, e.g. {DEFAULT_LEVEL}"]},
        )
    return level


def verdict(ranked: Sequence[VariantStats], level: float) -> Verdict | None:
    """Whether ranked[0] (the best mean) beats every other measured variant: Welch's
    two-sided test against each, Bonferroni over them (see Verdict). None without a mean."""
    if not ranked:
        return None
    best, others = ranked[0], ranked[1:]
    k = len(others)
    if k == 0:
        return Verdict(
            False,
            level,
            "bonferroni",
            0,
            None,
            None,
            None,
            None,
            {},
            "only one variant has a value",
        )
    threshold = level / k
    tests = [(other, welch(best.values, other.values).p_value) for other in others]
    # The deciding comparison: an undefined p first, else the largest.
    other, p = max(tests, key=lambda test: math.inf if test[1] is None else test[1])
    clear = p is not None and p <= threshold
    if clear:
        reason = f"beats each of the other {k} at p <= {threshold:.3g}"
    elif p is None:
        reason = f"p against {other.name} is not defined (n < 2 or no variance)"
    else:
        reason = f"against {other.name} p = {p:.3g}, above {threshold:.3g}"
    return Verdict(
        clear=clear,
        level=level,
        correction="bonferroni",
        comparisons=k,
        threshold=threshold,
        p_value=p,
        against=dict(other.choices),
        against_name=other.name,
        p_values={o.name: value for o, value in tests},
        reason=reason,
    )


def compare(
    rows: Sequence[Row],
    *,
    axes: Mapping[str, Sequence[Any]] | None = None,
    direction: str = "max",
    metric: str = "",
    step: str | None = None,
    aggregate: str = "last",
    level: float = DEFAULT_LEVEL,
) -> Comparison:
    """The comparison of a sweep's variants on one metric.

    `axes` ({step: [variant or label, ...]}, in display order) lists every variant, also those
    without runs. The best variant has the best mean among those measured at least once (ties:
    the first in axis order); it is compared with the runner-up by Welch's test, and the
    verdict says whether it is a clear winner at `level` (see Verdict). Marginal effects pool
    every run with a given choice of an axis (balanced when nothing failed, so their mean is
    then the mean over the other axes). CIs are cut to the metric's range when one is known
    (metric_range).
    """
    _check_direction(direction)
    level = parse_level(level)
    value_range = metric_range(metric, (row.get("value") for row in rows))
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
                clip_summary(summarise(samples), value_range),
                _counts(group),
                [r["run"] for r in group],
                samples,
            )
        )
    overall = clip_summary(summarise(_samples(rows)), value_range)
    marginals: dict[str, list[LevelStats]] = {}
    for index, s in enumerate(steps):
        marginals[s] = []
        for label in labels[s]:
            group = [r for key, rs in by_variant.items() if key[index] == label for r in rs]
            summary = clip_summary(summarise(_samples(group)), value_range)
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
        verdict=verdict(ranked, level),
        value_range=value_range,
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
