"""manage.py demo_sweep [--replicates 3] [--wait]: the seed's 3x2x3 sweep on the demo's
`classify` pipeline (prep x augment x train, `train.seed` = the replicate); with --wait, wait
for it, print the comparison on evaluate's `accuracy`, and print as the last stdout line one
line of JSON: {"sweep", "runs", "succeeded", "failed", "executed", "reused", "wall_s",
"best": {"variant", "mean", "ci", "n"}, "runner_up": {...}, "p_value", "clear_winner"} ("best"
is the best mean; "clear_winner" whether it beats every other variant: stats.Verdict). Run
`seed_demo` first.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.models import PipelineVersion
from runs_app.dispatch import EmbeddedWorkers
from runs_app.sweeps import services as sweep_services
from runs_app.sweeps.selectors import sweep_comparison, sweep_progress
from runs_app.sweeps.stats import Comparison, VariantStats
from runs_app.worker import fresh_workers_exist
from workspaces.errors import DomainError
from workspaces.models import Workspace

WORKSPACE = "demo"
PIPELINE = "classify"
# The seed's A/B example: data prep x augmentation x model, each a module of examples/.
AXES: dict[str, list[dict[str, Any]]] = {
    "prep": [
        {"label": "standardize", "module": "prep_standardize@latest"},
        {"label": "minmax", "module": "prep_minmax@latest"},
        {"label": "pca", "module": "prep_pca@latest"},
    ],
    "augment": [
        {"label": "none", "module": "augment_none@latest"},
        {"label": "noise", "module": "augment_noise@latest"},
    ],
    "train": [
        {"label": "logreg", "module": "train_logreg@latest"},
        {"label": "rf", "module": "train_rf@latest"},
        {"label": "mlp", "module": "train_mlp@latest"},
    ],
}
SEED_PARAMS = ["train.seed"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _brief(variant: VariantStats | None) -> dict[str, Any] | None:
    if variant is None:
        return None
    s = variant.summary
    return {"variant": variant.name, "mean": s.mean, "ci": [s.ci_low, s.ci_high], "n": s.n}


class Command(BaseCommand):
    help = "Start the demo's prep x augment x train sweep; --wait prints the comparison."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--replicates", type=int, default=3)
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--name", default="prep x augment x train")
        parser.add_argument(
            "--base", type=int, default=None, help="classify version (default: the first)"
        )
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=WORKSPACE).first()
        if workspace is None:
            raise CommandError("no demo workspace: run `manage.py seed_demo` first", returncode=2)
        versions = PipelineVersion.objects.filter(
            pipeline__workspace=workspace, pipeline__name=PIPELINE
        ).select_related("pipeline__workspace")
        # The first version is the seeded baseline: a sweep's own versions come later.
        base = (
            versions.filter(number=options["base"]).first()
            if options["base"]
            else versions.order_by("number").first()
        )
        if base is None:
            raise CommandError(f"no version of {PIPELINE} to sweep", returncode=2)
        workers = None
        if options["wait"] and not fresh_workers_exist():
            # Nobody is serving: run the steps in this process, so --wait always finishes.
            workers = EmbeddedWorkers()
            workers.start()
        try:
            started = time.monotonic()
            try:
                sweep = sweep_services.sweep_create(
                    base,
                    name=options["name"],
                    axes=AXES,
                    replicates=options["replicates"],
                    seed_params=SEED_PARAMS,
                )
            except DomainError as error:
                raise CommandError(f"{error.code}: {error}", returncode=2) from None
            progress = sweep_progress(sweep)
            self.stdout.write(
                f"sweep {sweep.pk} on {base.ref}: {progress['runs']['total']} runs started"
            )
            if not options["wait"]:
                return
            deadline = started + options["timeout"]
            while time.monotonic() < deadline:
                progress = sweep_progress(sweep)
                if progress["finished"]:
                    break
                time.sleep(0.2)
            wall = time.monotonic() - started
        finally:
            if workers is not None:
                workers.stop()
        comparison = sweep_comparison(sweep, "accuracy", step="evaluate", direction="max")
        self._print(comparison)
        runs, steps = progress["runs"], progress["steps"]
        versus = comparison.best_vs_runner_up
        self.stdout.write(
            json.dumps(
                {
                    "sweep": sweep.pk,
                    "runs": runs["total"],
                    "succeeded": runs["succeeded"],
                    "failed": runs["failed"],
                    "executed": steps["executed"],
                    "reused": steps["reused"],
                    "wall_s": round(wall, 1),
                    "best": _brief(comparison.best),
                    "runner_up": _brief(comparison.runner_up),
                    "p_value": versus.p_value if versus else None,
                    "clear_winner": bool(comparison.verdict and comparison.verdict.clear),
                },
                allow_nan=False,
            )
        )
        if not progress["finished"] or runs["succeeded"] != runs["total"]:
            raise CommandError(f"sweep {sweep.pk}: not every run succeeded", returncode=1)

    def _print(self, comparison: Comparison) -> None:
        self.stdout.write(f"\n{comparison.step}.{comparison.metric} (higher is better)")
        for variant in comparison.variants:
            s, c = variant.summary, variant.counts
            failed = f"  failed {c.failed}" if c.failed else ""
            top = comparison.best is not None and variant.name == comparison.best.name
            clear = comparison.verdict is not None and comparison.verdict.clear
            mark = (" <- best" if clear else " <- best mean") if top else ""
            self.stdout.write(
                f"  {variant.name:<45} n={s.n}  mean {_fmt(s.mean)}  "
                f"95% CI [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]{failed}{mark}"
            )
        for step, levels in comparison.marginals.items():
            parts = ", ".join(f"{lv.label} {_fmt(lv.summary.mean)}" for lv in levels)
            self.stdout.write(f"  {step}: {parts}")
        versus = comparison.best_vs_runner_up
        if versus is not None and comparison.runner_up is not None:
            self.stdout.write(
                f"  best - runner-up ({comparison.runner_up.name}): {_fmt(versus.diff)} "
                f"[{_fmt(versus.ci_low)}, {_fmt(versus.ci_high)}], Welch p = {_fmt(versus.p_value)}"
            )
        verdict = comparison.verdict
        if verdict is not None:
            self.stdout.write(
                f"  {'a clear winner' if verdict.clear else 'no clear winner'} at level "
                f"{verdict.level:g} (Bonferroni over {verdict.comparisons}): {verdict.reason}"
            )
