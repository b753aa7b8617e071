"""Run-time reads: the workspace-scoped access helpers and summaries shared by pages, the
API and the commands."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from pipelines_app.selectors import _one, get_workspace_for_user
from runs_app.models import PipelineRun, StepRun


def get_run_for_user(user: Any, slug: str, run_id: int, role: str = "viewer") -> PipelineRun:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(
        PipelineRun.objects.select_related("pipeline_version__pipeline", "workspace").filter(
            workspace=workspace, pk=run_id
        ),
        "run",
    )


def run_with_steps(run_id: int) -> PipelineRun:
    """A run with its steps (and each reused step's source) in two queries."""
    steps = StepRun.objects.select_related("reused_from").order_by("position")
    return PipelineRun.objects.prefetch_related(Prefetch("steps", queryset=steps)).get(pk=run_id)


def run_summary(run: PipelineRun) -> dict[str, Any]:
    """{"run", "status", "steps": {name: {"status", "reused_from", "duration_s", "attempts"}}}.

    `reused_from` is the run whose step was reused (None when the step executed).
    """
    steps = {}
    for step in run.steps.all():
        duration = step.duration_s
        steps[step.name] = {
            "status": step.status,
            "reused_from": step.reused_from.run_id if step.reused_from else None,
            "duration_s": round(duration, 3) if duration is not None else None,
            "attempts": step.attempt,
        }
        if step.failure_reason:
            steps[step.name]["failure_reason"] = step.failure_reason
    return {"run": run.pk, "status": run.status, "steps": steps}
