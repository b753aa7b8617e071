"""The seed's 3x2x3 demo sweep end to end: real demo modules, embedded workers, the command.

3 replicates take about 25 s here (54 runs on two worker threads).
"""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
from django.core.management import call_command

from runs_app.models import PipelineRun, RunStatus, StepRun, StepStatus, Sweep
from runs_app.sweeps.selectors import sweep_comparison

pytestmark = pytest.mark.django_db(transaction=True)

REPLICATES = 3


def test_the_demo_sweep_runs_every_combination_once_and_finds_no_clear_winner(embedded_workers):
    call_command("seed_demo", stdout=io.StringIO())
    out = io.StringIO()

    call_command("demo_sweep", "--replicates", str(REPLICATES), "--wait", stdout=out)

    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    sweep = Sweep.objects.get(pk=summary["sweep"])
    runs = PipelineRun.objects.filter(sweep=sweep)
    assert runs.count() == 3 * 2 * 3 * REPLICATES == summary["runs"]
    assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    # What reuse implies: a prep per prep choice, an augment per prep x augment, and a
    # train (seeded by the replicate) and its evaluation per run.
    executed = Counter(
        StepRun.objects.filter(run__sweep=sweep, status=StepStatus.SUCCEEDED).values_list(
            "name", flat=True
        )
    )
    assert executed == {
        "prep": 3,
        "augment": 6,
        "train": 18 * REPLICATES,
        "evaluate": 18 * REPLICATES,
    }
    assert summary["executed"] == 9 + 36 * REPLICATES
    assert summary["reused"] == 4 * runs.count() - summary["executed"]

    comparison = sweep_comparison(sweep, "accuracy", step="evaluate", direction="max")
    assert len(comparison.variants) == 18
    assert {v.summary.n for v in comparison.variants} == {REPLICATES}
    best = comparison.best
    assert best is not None and best.name == summary["best"]["variant"]
    assert best.summary.ci_low <= best.summary.mean <= best.summary.ci_high
    assert all(best.summary.mean >= v.summary.mean for v in comparison.variants)
    assert summary["best"]["ci"] == [best.summary.ci_low, best.summary.ci_high]
    assert [lv.label for lv in comparison.marginals["train"]] == ["logreg", "rf", "mlp"]
    # The best mean is no winner: the runner-up differs by < 0.001 (p = 0.80 here) and 17
    # comparisons must each reach 0.05 / 17.
    assert comparison.verdict.clear is False and summary["clear_winner"] is False
    assert comparison.verdict.comparisons == 17
    assert "<- best mean" in out.getvalue() and "no clear winner at level 0.05" in out.getvalue()
