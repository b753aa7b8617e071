"""Sweep reads: the access helper, progress, and the plain rows the comparison takes.

Every function here costs a fixed number of queries whatever the number of runs (pinned by
tests for 2 and 20 runs), so a sweep page of 1,000 runs stays one page of SQL. The
statistics themselves are pure and live in runs_app/sweeps/stats.py.

A reused step logged no metrics of its own: its values are those of the step it reused
(`reused_from`, always a step that executed), so rows read metrics through that link.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import Coalesce

from runs_app.models import (
    RUN_TERMINAL,
    STEP_IN_FLIGHT,
    Metric,
    PipelineRun,
    RunStatus,
    StepRun,
    StepStatus,
    Sweep,
)
from runs_app.sweeps import plan, stats
from workspaces.errors import DomainError
from workspaces.models import Workspace
from workspaces.selectors import scoped_or_404


def get_sweep_for_user(user: Any, slug: str, sweep_id: int, role: str = "viewer") -> Sweep:
    """The sweep in workspace `slug` if the user may see it with `role`; 404 otherwise."""
    return scoped_or_404(
        Sweep.objects.select_related("base_version__pipeline"),
        user,
        slug,
        "sweep",
        role=role,
        pk=sweep_id,
    )


def sweep_axes(sweep: Sweep) -> dict[str, list[dict[str, Any]]]:
    """The sweep's axes in the pipeline's step order (stored JSON may reorder keys)."""
    return plan.ordered_axes(sweep.base_version.spec, sweep.axes)


def sweep_progress(sweep: Sweep) -> dict[str, Any]:
    """Runs by status against the runs the axes call for, and steps executed vs reused.

    {"expected", "canceled", "starting" (runs still being started by the expander),
    "finished", "runs": {"total", "done", <status>: n, ...},
    "steps": {"total", "executed", "reused", "failed", "canceled", "in_flight", "pending"}}.
    Two queries.
    """
    runs = dict(
        PipelineRun.objects.filter(sweep=sweep)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    steps = dict(
        StepRun.objects.filter(run__sweep=sweep)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    run_counts = {status: runs.get(status, 0) for status in RunStatus.values}
    done = sum(runs.get(status, 0) for status in RUN_TERMINAL)
    total = sum(runs.values())
    expected = plan.sweep_size(sweep.axes, sweep.replicates)
    canceled = sweep.canceled_at is not None
    return {
        "expected": expected,
        "canceled": canceled,
        "starting": not canceled and sweep.expanded_at is None and total < expected,
        # A canceled sweep is finished once what it started has stopped.
        "finished": done == total and (canceled or total >= expected),
        "runs": {"total": total, "done": done, **run_counts},
        "steps": {
            "total": sum(steps.values()),
            "executed": steps.get(StepStatus.SUCCEEDED, 0),
            "reused": steps.get(StepStatus.REUSED, 0),
            "failed": steps.get(StepStatus.FAILED, 0),
            "canceled": steps.get(StepStatus.CANCELED, 0),
            "in_flight": sum(steps.get(status, 0) for status in STEP_IN_FLIGHT),
            "pending": steps.get(StepStatus.PENDING, 0),
        },
    }


def _step_sources(sweep: Sweep, step: str | None, *fields: str) -> QuerySet[Any]:
    """`fields` of the sweep's step runs (of `step` only when given), with `source`: the step
    whose metrics are this one's (itself, or the step it reused)."""
    steps = StepRun.objects.filter(run__sweep=sweep)
    if step is not None:
        steps = steps.filter(name=step)
    source = Coalesce(F("reused_from_id"), F("id"))
    return steps.annotate(source=source).order_by().values_list(*fields)


def sweep_metrics(sweep: Sweep) -> list[dict[str, Any]]:
    """Which metrics the sweep's runs logged: [{"step", "name", "runs"}] sorted. Two queries."""
    sources: dict[int, set[tuple[int, str]]] = {}
    for run_id, name, source in _step_sources(sweep, None, "run_id", "name", "source"):
        sources.setdefault(source, set()).add((run_id, name))
    logged = (
        Metric.objects.filter(step_id__in=_step_sources(sweep, None, "source"))
        .order_by()
        .values_list("step_id", "name")
        .distinct()
    )
    runs: dict[tuple[str, str], set[int]] = {}
    for source, metric in logged:
        for run_id, step in sources.get(source, ()):
            runs.setdefault((step, metric), set()).add(run_id)
    return [
        {"step": step, "name": metric, "runs": len(ids)}
        for (step, metric), ids in sorted(runs.items())
    ]


def sweep_rows(
    sweep: Sweep, metric: str, step: str | None = None, aggregate: str = "last"
) -> list[stats.Row]:
    """One row per run of the sweep: {"run", "choices", "replicate", "status", "values",
    "value"}; `value` is the `aggregate` (last, min, max) of the run's values of `metric`
    logged by `step` (by whichever step logs it when None). Three queries.

    A metric no run logged is a DomainError naming `metric`, once every run has finished
    (before that, it may simply not be logged yet).
    """
    return _rows(sweep, metric, step, aggregate)[0]


def _rows(
    sweep: Sweep, metric: str, step: str | None, aggregate: str
) -> tuple[list[stats.Row], str | None]:
    """(rows, the step that logged the metric)."""
    if aggregate not in stats.AGGREGATES:
        stats.aggregate_values([], aggregate)  # raises, naming the field
    if not isinstance(metric, str) or not metric:
        raise DomainError("invalid_metric", "Pick a metric.", {"metric": ["required"]})
    if step is not None and step not in sweep.base_version.spec["steps"]:
        raise DomainError(
            "invalid_step",
            f"The pipeline has no step {step!r}.",
            {"step": [f"one of {', '.join(sweep.base_version.spec['steps'])}"]},
        )
    runs = list(
        PipelineRun.objects.filter(sweep=sweep)
        .order_by("pk")
        .values_list("pk", "variant", "status")
    )
    # {source step: [(run, step name)]}: one source may serve many runs of the sweep.
    served: dict[int, list[tuple[int, str]]] = {}
    for run_id, name, source in _step_sources(sweep, step, "run_id", "name", "source"):
        served.setdefault(source, []).append((run_id, name))
    points = (
        # A subquery, not a list of ids: no parameter limit, one round trip.
        Metric.objects.filter(name=metric, step_id__in=_step_sources(sweep, step, "source"))
        .order_by()
        .values_list("step_id", "index", "value", "pk")
    )
    # A series is ordered by its index; points logged without one keep their logging order.
    ordered = sorted(points, key=lambda p: (p[1] is not None, p[1] or 0, p[3]))
    values: dict[int, list[float]] = {}
    logged_by: set[str] = set()
    for source, _, value, _ in ordered:
        for run_id, name in served.get(source, ()):
            values.setdefault(run_id, []).append(value)
            logged_by.add(name)
    if step is None and len(logged_by) > 1:
        raise DomainError(
            "ambiguous_metric",
            f"Several steps log {metric!r}: pick one.",
            {"step": [f"one of {', '.join(sorted(logged_by))}"]},
        )
    rows: list[stats.Row] = []
    for run_id, variant, status in runs:
        run_values = values.get(run_id, [])
        rows.append(
            {
                "run": run_id,
                "choices": {k: str(v) for k, v in variant.items() if k != plan.REPLICATE_KEY},
                "replicate": int(variant.get(plan.REPLICATE_KEY, 0)),
                "status": status,
                "values": run_values,
                "value": stats.aggregate_values(run_values, aggregate),
            }
        )
    all_done = all(status in RUN_TERMINAL for _, _, status in runs)
    if runs and all_done and not values:
        known = ", ".join(f"{m['step']}.{m['name']}" for m in sweep_metrics(sweep)) or "none"
        where = f" in step {step!r}" if step else ""
        raise DomainError(
            "unknown_metric",
            f"No run of this sweep logged {metric!r}{where}.",
            {"metric": [f"not logged by any run (logged: {known})"]},
        )
    return rows, step or next(iter(logged_by), None)


def sweep_comparison(
    sweep: Sweep,
    metric: str,
    *,
    step: str | None = None,
    aggregate: str = "last",
    direction: str = "max",
    level: float = stats.DEFAULT_LEVEL,
) -> stats.Comparison:
    """sweep_rows + stats.compare, with the sweep's axes in pipeline order."""
    rows, step = _rows(sweep, metric, step, aggregate)
    return stats.compare(
        rows,
        axes=sweep_axes(sweep),
        direction=direction,
        metric=metric,
        step=step,
        aggregate=aggregate,
        level=level,
    )


def workspace_sweeps(workspace: Workspace) -> QuerySet[Sweep]:
    """The workspace's sweeps, newest first, each with its runs counted by outcome (one
    query whatever the number of sweeps or runs)."""
    terminal = Q(runs__status__in=RUN_TERMINAL)
    return (
        Sweep.objects.filter(workspace=workspace)
        .select_related("base_version__pipeline", "created_by")
        .defer("base_version__spec", "base_version__source", "base_version__pipeline__description")
        .annotate(
            run_total=Count("runs"),
            run_done=Count("runs", filter=terminal),
            run_failed=Count("runs", filter=Q(runs__status=RunStatus.FAILED)),
        )
        .order_by("-created_at", "-id")
    )
