"""The comparison statistics against figures worked out by hand.

The t distribution's quantiles and tails are computed here from its density (Simpson's rule
and bisection), not by scipy, so the checks do not repeat the code under test; the helper is
itself checked against the printed table (t(0.975, 2) = 4.303, t(0.975, 3) = 3.182).
"""

from __future__ import annotations

import json
import math

import pytest

from runs_app.sweeps.stats import (
    aggregate_values,
    clip_summary,
    compare,
    compare_variants,
    metric_range,
    summarise,
    welch,
)
from workspaces.errors import DomainError


def t_pdf(x: float, df: float) -> float:
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    return norm * (1 + x * x / df) ** (-(df + 1) / 2)


def t_cdf(x: float, df: float, steps: int = 20_000) -> float:
    """0.5 + the integral of the density from 0 to x (Simpson's rule)."""
    h = x / steps
    total = t_pdf(0, df) + t_pdf(x, df)
    total += sum((4 if i % 2 else 2) * t_pdf(i * h, df) for i in range(1, steps))
    return 0.5 + total * h / 3


def t_quantile(q: float, df: float) -> float:
    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df, 4_000) < q else (low, mid)
    return (low + high) / 2


def two_sided_p(t: float, df: float) -> float:
    return 2 * (1 - t_cdf(abs(t), df))


def row(run, choices, value, status="succeeded", replicate=0):
    return {
        "run": run,
        "choices": choices,
        "replicate": replicate,
        "status": status,
        "values": [] if value is None else [value],
        "value": value,
    }


def test_the_hand_helpers_match_the_printed_t_table():
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=5e-4)
    assert t_quantile(0.975, 3) == pytest.approx(3.182, abs=5e-4)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=5e-4)


# Two variants of one axis, three replicates each; B also has a failed run that logged 0.0
# before failing, and a canceled one.
A = [0.80, 0.82, 0.84]
B = [0.70, 0.75, 0.80]
ROWS = [
    *(row(i, {"train": "a"}, v, replicate=i) for i, v in enumerate(A)),
    *(row(10 + i, {"train": "b"}, v, replicate=i) for i, v in enumerate(B)),
    row(20, {"train": "b"}, 0.0, status="failed", replicate=3),
    row(21, {"train": "b"}, None, status="canceled", replicate=4),
]
AXES = {"train": [{"label": "a"}, {"label": "b"}]}


def test_each_variant_has_mean_std_and_95_ci_over_its_replicates():
    comparison = compare(ROWS, axes=AXES, direction="max", metric="accuracy")

    a, b = comparison.variants
    # A: mean 2.46 / 3 = 0.82; deviations -0.02, 0, 0.02; s^2 = 0.0008 / 2 = 0.0004; s = 0.02
    assert a.choices == {"train": "a"} and a.name == "train=a"
    assert a.summary.n == 3
    assert a.summary.mean == pytest.approx(0.82)
    assert a.summary.std == pytest.approx(0.02)
    half_a = t_quantile(0.975, 2) * 0.02 / math.sqrt(3)  # 4.3027 * 0.011547 = 0.049683
    assert half_a == pytest.approx(0.049683, abs=1e-6)
    assert a.summary.ci_low == pytest.approx(0.82 - half_a, abs=1e-6)
    assert a.summary.ci_high == pytest.approx(0.82 + half_a, abs=1e-6)
    # B: mean 0.75; deviations -0.05, 0, 0.05; s^2 = 0.005 / 2 = 0.0025; s = 0.05
    half_b = t_quantile(0.975, 2) * 0.05 / math.sqrt(3)  # 0.124207
    assert b.summary.n == 3
    assert b.summary.mean == pytest.approx(0.75)
    assert b.summary.std == pytest.approx(0.05)
    assert b.summary.ci_low == pytest.approx(0.75 - half_b, abs=1e-6)
    assert b.summary.ci_high == pytest.approx(0.75 + half_b, abs=1e-6)


def test_failed_runs_are_counted_as_failed_never_measured_as_zeros():
    comparison = compare(ROWS, axes=AXES, direction="max")

    b = comparison.variants[1]
    assert b.summary.mean == pytest.approx(0.75)  # (0.70 + 0.75 + 0.80) / 3, not / 4 with a 0
    assert b.values == B
    assert b.runs == [10, 11, 12, 20, 21]
    assert (b.counts.total, b.counts.measured, b.counts.failed, b.counts.canceled) == (5, 3, 1, 1)
    assert comparison.counts.failed == 1 and comparison.counts.measured == 6


def test_a_vs_b_is_welchs_difference_with_its_satterthwaite_ci_and_p_value():
    diff = compare_variants(ROWS, {"train": "a"}, {"train": "b"})

    # diff = 0.82 - 0.75 = 0.07; se^2 = 0.0004/3 + 0.0025/3 = 0.0029/3
    se = math.sqrt(0.0029 / 3)  # 0.031091
    # df = se^4 / ((0.0004/3)^2/2 + (0.0025/3)^2/2) = 2 * 0.0029^2 / (0.0004^2 + 0.0025^2)
    df = 2 * 0.0029**2 / (0.0004**2 + 0.0025**2)  # = 1.682e-5 / 6.41e-6 = 2.624025
    assert df == pytest.approx(2.624025, abs=1e-6)
    t = 0.07 / se  # 2.2514
    half = t_quantile(0.975, df) * se
    assert diff.a == {"train": "a"} and diff.b == {"train": "b"}
    assert (diff.n_a, diff.n_b) == (3, 3)
    assert diff.diff == pytest.approx(0.07)
    assert diff.df == pytest.approx(df)
    assert diff.t == pytest.approx(t)
    assert diff.ci_low == pytest.approx(0.07 - half, abs=1e-6)
    assert diff.ci_high == pytest.approx(0.07 + half, abs=1e-6)
    assert diff.p_value == pytest.approx(two_sided_p(t, df), abs=1e-6)
    assert diff.p_value == pytest.approx(0.1224, abs=1e-4)


def test_the_welch_p_value_is_scipys_ttest_ind_with_unequal_variances():
    from scipy import stats

    expected = stats.ttest_ind(A, B, equal_var=False).pvalue
    assert welch(A, B).p_value == pytest.approx(expected, rel=1e-9)


def test_the_best_variant_follows_the_direction_and_is_tested_against_the_runner_up():
    highest = compare(ROWS, axes=AXES, direction="max")
    lowest = compare(ROWS, axes=AXES, direction="min")

    assert highest.best.name == "train=a" and highest.runner_up.name == "train=b"
    assert highest.best_vs_runner_up.diff == pytest.approx(0.07)
    assert lowest.best.name == "train=b"
    assert lowest.best_vs_runner_up.diff == pytest.approx(-0.07)


def test_marginal_effects_pool_each_choice_over_the_other_axes():
    # prep x train, two replicates each:
    #   p,a: 1 3   p,b: 5 7   q,a: 2 4   q,b: 6 8
    cells = {("p", "a"): [1, 3], ("p", "b"): [5, 7], ("q", "a"): [2, 4], ("q", "b"): [6, 8]}
    rows = []
    for (prep, train), values in cells.items():
        for r, v in enumerate(values):
            rows.append(row(len(rows), {"prep": prep, "train": train}, float(v), replicate=r))
    axes = {"prep": ["p", "q"], "train": ["a", "b"]}

    comparison = compare(rows, axes=axes, direction="max")

    prep = {level.label: level for level in comparison.marginals["prep"]}
    train = {level.label: level for level in comparison.marginals["train"]}
    # prep=p: 1 3 5 7 -> mean 4; s^2 = (9 + 1 + 1 + 9) / 3 = 20/3; CI 4 +- t(3) * s / 2
    half = t_quantile(0.975, 3) * math.sqrt(20 / 3) / 2
    assert prep["p"].summary.n == 4
    assert prep["p"].summary.mean == pytest.approx(4)
    assert prep["p"].summary.std == pytest.approx(math.sqrt(20 / 3))
    assert prep["p"].summary.ci_low == pytest.approx(4 - half, abs=1e-6)
    assert prep["q"].summary.mean == pytest.approx(5)
    # train=a: 1 3 2 4 -> 2.5; train=b: 5 7 6 8 -> 6.5; grand mean 36 / 8 = 4.5
    assert train["a"].summary.mean == pytest.approx(2.5)
    assert train["a"].summary.std == pytest.approx(math.sqrt(5 / 3))
    assert train["b"].summary.mean == pytest.approx(6.5)
    assert comparison.overall.mean == pytest.approx(4.5)
    assert [prep["p"].effect, prep["q"].effect] == pytest.approx([-0.5, 0.5])
    assert [train["a"].effect, train["b"].effect] == pytest.approx([-2, 2])
    # best q,b (7) vs runner-up p,b (6): diff 1, se = sqrt(2/2 + 2/2) = sqrt(2),
    # df = (1 + 1)^2 / (1/1 + 1/1) = 2, t = 1/sqrt(2); with df = 2 the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2) = 1 - 0.7071/1.5811 = 0.5528
    assert comparison.best.choices == {"prep": "q", "train": "b"}
    assert comparison.runner_up.choices == {"prep": "p", "train": "b"}
    versus = comparison.best_vs_runner_up
    t = 1 / math.sqrt(2)
    assert versus.df == pytest.approx(2)
    assert versus.t == pytest.approx(t)
    assert versus.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    # A partial variant compares two choices of one axis over all the others.
    marginal = compare_variants(rows, {"train": "b"}, {"train": "a"})
    assert (marginal.n_a, marginal.n_b, marginal.diff) == (4, 4, pytest.approx(4))


def test_undefined_figures_are_none_never_nan_or_inf():
    rows = [
        row(1, {"s": "one"}, 0.5),  # n = 1: no std, no CI
        row(2, {"s": "flat"}, 0.9),
        row(3, {"s": "flat"}, 0.9),  # zero variance
        row(4, {"s": "flat2"}, 0.8),
        row(5, {"s": "flat2"}, 0.8),
        row(6, {"s": "odd"}, float("nan")),  # non-finite: not a sample, counted missing
        row(7, {"s": "odd"}, float("inf")),
        row(8, {"s": "odd"}, None),  # succeeded without logging the metric
    ]
    axes = {"s": ["one", "flat", "flat2", "odd", "never"]}

    comparison = compare(rows, axes=axes, direction="max")

    by = {v.choices["s"]: v for v in comparison.variants}
    assert by["one"].summary == summarise([0.5])
    assert (by["one"].summary.n, by["one"].summary.std, by["one"].summary.ci_low) == (1, None, None)
    # Replicates that agree exactly: std 0 and a CI of zero width (defined by the formula).
    assert by["flat"].summary.std == 0.0
    assert (by["flat"].summary.ci_low, by["flat"].summary.ci_high) == (0.9, 0.9)
    assert by["odd"].summary.n == 0 and by["odd"].summary.mean is None
    assert by["odd"].counts.missing == 3 and by["odd"].counts.measured == 0
    assert by["never"].counts.total == 0 and by["never"].summary.mean is None
    # No variance on either side: t, df, CI and p are undefined; the difference is not.
    flat = compare_variants(rows, {"s": "flat"}, {"s": "flat2"})
    assert flat.diff == pytest.approx(0.1)
    assert (flat.t, flat.df, flat.ci_low, flat.ci_high, flat.p_value) == (None,) * 5
    # n < 2 on one side: only the difference.
    single = compare_variants(rows, {"s": "one"}, {"s": "flat"})
    assert single.diff == pytest.approx(-0.4) and single.p_value is None
    # The whole comparison is strict JSON (NaN or inf would make this raise).
    json.dumps(comparison.as_dict(), allow_nan=False)


def test_aggregates_take_the_last_min_or_max_value():
    assert aggregate_values([3.0, 1.0, 2.0], "last") == 2.0
    assert aggregate_values([3.0, 1.0, 2.0], "min") == 1.0
    assert aggregate_values([3.0, 1.0, 2.0], "max") == 3.0
    assert aggregate_values([], "last") is None
    with pytest.raises(DomainError) as error:
        aggregate_values([1.0], "mean")
    assert "aggregate" in error.value.fields


def test_bad_directions_and_unknown_variants_name_their_field():
    with pytest.raises(DomainError) as error:
        compare(ROWS, axes=AXES, direction="up")
    assert "direction" in error.value.fields
    with pytest.raises(DomainError) as error:
        compare_variants(ROWS, {"train": "a"}, {"train": "zzz"})
    assert list(error.value.fields) == ["b"]


# --- the verdict: a winner only when it beats every other variant -----------------------------
def three(a, b, c):
    """Variants a, b, c of one axis with these replicate values."""
    rows = []
    for label, values in (("a", a), ("b", b), ("c", c)):
        rows += [row(len(rows), {"train": label}, v, replicate=i) for i, v in enumerate(values)]
    return rows


THREE = {"train": [{"label": "a"}, {"label": "b"}, {"label": "c"}]}


def test_a_clear_winner_beats_every_other_variant_at_the_bonferroni_level():
    rows = three([0.90, 0.91, 0.92], [0.50, 0.51, 0.52], [0.60, 0.61, 0.62])

    verdict = compare(rows, axes=THREE, metric="accuracy").verdict

    # a vs c: diff 0.30, s = 0.01 on both sides, se = sqrt(2 * 0.0001 / 3), df = 4
    p_c = two_sided_p(0.30 / math.sqrt(2 * 0.0001 / 3), 4)
    p_b = two_sided_p(0.40 / math.sqrt(2 * 0.0001 / 3), 4)
    assert verdict.clear is True
    assert (verdict.level, verdict.correction, verdict.comparisons) == (0.05, "bonferroni", 2)
    assert verdict.threshold == pytest.approx(0.025)
    assert verdict.against_name == "train=c"  # the closer one decides
    assert verdict.p_value == pytest.approx(p_c, rel=1e-3)
    assert verdict.p_values == {"train=b": pytest.approx(p_b, rel=1e-3), "train=c": verdict.p_value}


def test_the_correction_takes_a_winner_away_that_one_comparison_alone_would_give():
    a, b = [0.80, 0.82, 0.84], [0.745, 0.765, 0.785]
    # a vs b: diff 0.055, s = 0.02 on both sides: t = 0.055 / sqrt(2 * 0.0004 / 3), df = 4
    p = two_sided_p(0.055 / math.sqrt(2 * 0.0004 / 3), 4)
    assert 0.025 < p < 0.05
    pair = [row(i, {"train": "a"}, v) for i, v in enumerate(a)]
    pair += [row(10 + i, {"train": "b"}, v) for i, v in enumerate(b)]

    alone = compare(pair, axes={"train": ["a", "b"]}, metric="accuracy").verdict
    # A third variant, far behind: two comparisons now, each at 0.05 / 2.
    corrected = compare(three(a, b, [0.1, 0.11, 0.12]), axes=THREE, metric="accuracy").verdict
    strict = compare(pair, axes={"train": ["a", "b"]}, metric="accuracy", level=0.01).verdict

    assert alone.clear is True and alone.threshold == 0.05
    assert corrected.clear is False and corrected.threshold == 0.025
    assert corrected.against_name == "train=b" and corrected.p_value == pytest.approx(p, rel=1e-3)
    assert strict.clear is False  # the level is the user's


def test_the_deciding_comparison_is_the_hardest_to_beat_not_always_the_runner_up():
    # b's mean (0.70) is below c's (0.79) but its spread is wide: a beats c more surely.
    rows = three([0.80, 0.82, 0.84], [0.40, 0.70, 1.00], [0.785, 0.79, 0.795])

    comparison = compare(rows, axes=THREE, metric="score")

    assert comparison.runner_up.name == "train=c"
    assert comparison.verdict.against_name == "train=b"
    assert comparison.verdict.p_values["train=b"] > comparison.verdict.p_values["train=c"]
    assert comparison.verdict.clear is False


def test_no_winner_without_a_p_value_or_a_second_variant():
    undefined = [row(1, {"s": "x"}, 0.9), row(2, {"s": "y"}, 0.5), row(3, {"s": "y"}, 0.6)]
    single = [row(1, {"s": "x"}, 0.9), row(2, {"s": "x"}, 0.8)]

    one_sample = compare(undefined, axes={"s": ["x", "y"]}).verdict
    alone = compare(single, axes={"s": ["x", "y"]}).verdict
    nothing = compare([], axes={"s": ["x"]}).verdict

    assert one_sample.clear is False and one_sample.p_value is None  # x has n = 1
    assert "not defined" in one_sample.reason
    assert alone.clear is False and alone.comparisons == 0
    assert nothing is None


def test_a_level_is_a_number_above_0_and_at_most_0_2():
    assert compare(ROWS, axes=AXES, level="0.1").verdict.level == 0.1
    for bad in ("0", "-0.05", "0.5", "five", None):
        with pytest.raises(DomainError) as error:
            compare(ROWS, axes=AXES, level=bad)
        assert list(error.value.fields) == ["level"]


# --- a metric's known range ------------------------------------------------------------------
def test_a_range_is_known_from_the_metrics_name_while_every_value_is_inside_it():
    unit, positive = (0.0, 1.0), (0.0, None)

    assert metric_range("accuracy", [0.5, 1.0]) == unit
    assert metric_range("val_accuracy", [0.5]) == unit  # its last word
    assert metric_range("test/F1", [0.5]) == unit
    assert metric_range("roc_auc", [0.5]) == unit
    assert metric_range("rmse", [12.5]) == positive
    assert metric_range("r2", [-3.0, 0.9]) == (None, 1.0)
    # Not a proportion however it is named: logged in percent, or not the last word.
    assert metric_range("accuracy", [0.5, 97.0]) is None
    assert metric_range("accuracy_std", [0.01]) is None
    assert metric_range("loss", [0.3]) is None  # a loss may be negative (a log-likelihood)
    assert metric_range("score", [0.3]) is None


def test_cis_are_cut_at_the_metrics_range_and_say_so():
    near_one = [row(i, {"train": "a"}, v, replicate=i) for i, v in enumerate([0.96, 0.99])]
    axes = {"train": ["a"]}

    accuracy = compare(near_one, axes=axes, metric="accuracy")
    score = compare(near_one, axes=axes, metric="score")

    # 0.975 +- 12.706 * 0.02121 / sqrt(2) = 0.975 +- 0.1906: [0.784, 1.166]
    half = t_quantile(0.975, 1) * math.sqrt(0.00045) / math.sqrt(2)
    assert score.variants[0].summary.ci_high == pytest.approx(0.975 + half, abs=1e-4)
    assert score.value_range is None and not score.variants[0].summary.clipped
    cut = accuracy.variants[0].summary
    assert accuracy.value_range == (0.0, 1.0)
    assert (cut.ci_low, cut.ci_high, cut.clipped) == (
        pytest.approx(0.975 - half, abs=1e-4),
        1.0,
        True,
    )
    assert accuracy.marginals["train"][0].summary.ci_high == 1.0
    assert clip_summary(score.variants[0].summary, None) == score.variants[0].summary
