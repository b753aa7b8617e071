"""Two runs side by side: params, metrics, module versions and step outcomes.

`run_diff(a, b)` reads both runs (a fixed number of queries) and hands plain data to the
pure `diff_runs`, which the tests drive without a database. The compare page and the API's
`GET .../runs/compare/?a=&b=` both call `run_diff`; the sweeps issue extends it.
"""

from __future__ import annotations

import math
from typing import Any

from runs_app.models import Metric, PipelineRun, StepRun


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def run_facts(run: PipelineRun) -> dict[str, Any]:
    """What a comparison needs of one run, as plain data (two queries)."""
    steps = list(
        StepRun.objects.filter(run=run)
        .select_related("module_version__module")
        .defer("module_version__files", "module_version__interface", "key_parts")
        .order_by("position")
    )
    # A reused step's metrics are those of the step it reused (it logged none itself).
    measured = {s.reused_from_id or s.pk: s for s in steps}
    metrics: dict[str, dict[str, float]] = {}
    for step_id, name, value in (
        Metric.objects.filter(step_id__in=list(measured))
        .order_by("name", "index", "id")
        .values_list("step_id", "name", "value")
    ):
        metrics.setdefault(measured[step_id].name, {})[name] = value  # a series: its last point
    metrics = {s.name: metrics[s.name] for s in steps if s.name in metrics}
    version = run.pipeline_version
    return {
        "id": run.pk,
        "status": run.status,
        "pipeline": version.pipeline.name,
        "version": version.number,
        "param_overrides": dict(run.param_overrides or {}),
        "created_by": run.created_by.get_username() if run.created_by else None,
        "steps": [
            {
                "name": s.name,
                "status": s.status,
                "module": s.module_version.ref,
                "code_digest": s.module_version.code_digest,
                "params": dict(s.params or {}),
                "duration_s": s.duration_s,
                "reused_from_run": s.reused_from.run_id if s.reused_from is not None else None,
                "outputs_key": s.cache_key,
            }
            for s in steps
        ],
        "metrics": metrics,
    }


def _row(key: str, a: Any, b: Any, **extra: Any) -> dict[str, Any]:
    return {"key": key, "a": a, "b": b, "same": a == b, **extra}


def diff_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Pure: two `run_facts` -> {"a", "b", "steps", "modules", "params", "metrics",
    "differences"}. Rows name a step that one run lacks with None on that side; metric rows
    carry `delta` = b - a when both are finite numbers."""
    a_steps = {s["name"]: s for s in a["steps"]}
    b_steps = {s["name"]: s for s in b["steps"]}
    names = [s["name"] for s in a["steps"]] + [
        s["name"] for s in b["steps"] if s["name"] not in a_steps
    ]
    steps, modules, params = [], [], []
    for name in names:
        sa, sb = a_steps.get(name) or {}, b_steps.get(name) or {}
        steps.append(
            {
                "name": name,
                "a_status": sa.get("status"),
                "b_status": sb.get("status"),
                "a_duration_s": sa.get("duration_s"),
                "b_duration_s": sb.get("duration_s"),
                "a_reused_from_run": sa.get("reused_from_run"),
                "b_reused_from_run": sb.get("reused_from_run"),
                "same_key": bool(sa and sb and sa.get("outputs_key"))
                and sa.get("outputs_key") == sb.get("outputs_key"),
            }
        )
        modules.append(
            _row(
                name,
                sa.get("module"),
                sb.get("module"),
                same_code=bool(sa and sb) and sa.get("code_digest") == sb.get("code_digest"),
            )
        )
        pa, pb = sa.get("params") or {}, sb.get("params") or {}
        for param in sorted(set(pa) | set(pb)):
            params.append(_row(f"{name}.{param}", pa.get(param), pb.get(param)))
    metrics = []
    metric_steps = list(a["metrics"]) + [s for s in b["metrics"] if s not in a["metrics"]]
    for step in metric_steps:
        ma, mb = a["metrics"].get(step, {}), b["metrics"].get(step, {})
        for metric in sorted(set(ma) | set(mb)):
            va, vb = _number(ma.get(metric)), _number(mb.get(metric))
            delta = vb - va if va is not None and vb is not None else None
            metrics.append(_row(f"{step}.{metric}", va, vb, delta=delta))
    differences = {
        "params": sum(not r["same"] for r in params),
        "modules": sum(not r["same"] for r in modules),
        "metrics": sum(not r["same"] for r in metrics),
    }
    summary = {k: v for k, v in a.items() if k not in ("steps", "metrics")}
    other = {k: v for k, v in b.items() if k not in ("steps", "metrics")}
    return {
        "a": summary,
        "b": other,
        "steps": steps,
        "modules": modules,
        "params": params,
        "metrics": metrics,
        "differences": differences,
    }


def run_diff(a: PipelineRun, b: PipelineRun) -> dict[str, Any]:
    """Compare two runs the caller already fetched through the access helper."""
    return diff_runs(run_facts(a), run_facts(b))
