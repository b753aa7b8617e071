"""Run-time reads: the workspace-scoped access helpers and summaries shared by pages, the
API and the commands."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.http import Http404
from django.utils import timezone

from artifacts.models import Artifact, DeletedArtifact
from artifacts.store import ArtifactGone
from pipelines_app.models import PipelineVersion
from pipelines_app.specs import step_bindings
from runs_app.models import (
    RUN_TERMINAL,
    Metric,
    PipelineRun,
    RunListPrefs,
    RunStatus,
    RunTag,
    StepInput,
    StepLog,
    StepOutput,
    StepRun,
    StepStatus,
    WorkerHeartbeat,
)
from workspaces.conf import engine
from workspaces.models import Role, Workspace
from workspaces.selectors import get_workspace_for_user, scoped_or_404


def get_run_for_user(user: Any, slug: str, run_id: int, role: str = Role.VIEWER) -> PipelineRun:
    return scoped_or_404(
        PipelineRun.objects.select_related("pipeline_version__pipeline"),
        user,
        slug,
        "run",
        role=role,
        pk=run_id,
    )


def get_runs_for_user(
    user: Any, slug: str, run_ids: list[int], role: str = Role.VIEWER
) -> list[PipelineRun]:
    """Runs `run_ids` of workspace `slug`, in that order (two queries: the workspace with the
    caller's role, then the runs); a 404 naming the first id the workspace has not."""
    workspace = get_workspace_for_user(user, slug, role)
    found = {
        run.pk: run
        for run in PipelineRun.objects.filter(workspace=workspace, pk__in=run_ids)
        .select_related("pipeline_version__pipeline", "created_by")
        .defer("pipeline_version__source")
    }
    missing = [pk for pk in run_ids if pk not in found]
    if missing:
        raise Http404(f"No run {missing[0]} in this workspace.")
    for run in found.values():
        run.workspace = workspace  # with the caller's role, as the access helpers give it
    return [found[pk] for pk in run_ids]


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


# --- the explorer's reads ----------------------------------------------------------------------
# Appended for the pages (and the API, which calls the same functions): access helpers for
# steps and artifacts, the run graph, a step's inputs/outputs/metrics/log, why a step was or
# was not reused, and lineage as plain dicts.

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
LOG_TAIL_BYTES = 256 * 1024
LOG_SEARCH_MAX_MATCHES = 1000


def get_step_for_user(
    user: Any, slug: str, run_id: int, name: str, role: str = Role.VIEWER
) -> StepRun:
    """Step `name` of run `run_id` in workspace `slug`; 404 for anything of another one."""
    return scoped_or_404(
        StepRun.objects.select_related(
            "run__pipeline_version__pipeline",
            "module_version__module",
            "reused_from__module_version__module",
            "following",
        ),
        user,
        slug,
        "step",
        role=role,
        workspace_path="run__workspace",
        run_id=run_id,
        name=name,
    )


def get_artifact_for_user(user: Any, slug: str, sha256: str, role: str = Role.VIEWER) -> Artifact:
    """The artifact with this digest in workspace `slug`; a digest of another workspace, or
    anything that is not a lowercase hex sha256, is a 404 (it never reaches storage)."""
    if not isinstance(sha256, str) or not SHA256_PATTERN.match(sha256):
        raise Http404("No such artifact.")
    try:
        return scoped_or_404(
            Artifact.objects.order_by("pk"), user, slug, "artifact", role=role, sha256=sha256
        )
    except Http404:
        workspace = get_workspace_for_user(user, slug, role)  # a stranger's 404 stays one
        gone = DeletedArtifact.objects.filter(workspace=workspace, sha256=sha256).first()
        if gone is not None:
            raise ArtifactGone(sha256, gone.deleted_at) from None
        raise


def run_step_list(run: PipelineRun) -> list[StepRun]:
    """A run's steps in order with their module versions and reuse sources (one query)."""
    return list(
        StepRun.objects.filter(run=run)
        .select_related("module_version__module", "reused_from", "following")
        .defer("module_version__files", "module_version__interface", "key_parts")
        .order_by("position")
    )


def run_results(run: PipelineRun, steps: list[StepRun]) -> dict[str, Any]:
    """What a run's page leads with, from its steps as run_step_list read them (no query):
    every step's effective params ("overridden" when the run's overrides set it), the time
    reuse saved (the sources' running times) and the first failed step with its reason and
    the exception's last line."""
    overrides = run.param_overrides or {}
    params = [
        {
            "key": f"{step.name}.{name}",
            "value": value,
            "overridden": f"{step.name}.{name}" in overrides,
        }
        for step in steps
        for name, value in sorted((step.params or {}).items())
    ]
    reused = [step for step in steps if step.status == StepStatus.REUSED and step.reused_from]
    saved = [step.reused_from.duration_s for step in reused if step.reused_from is not None]
    failed = next((step for step in steps if step.status == StepStatus.FAILED), None)
    failure = None
    if failed is not None:
        lines = [line for line in failed.failure_message.splitlines() if line.strip()]
        failure = {
            "step": failed.name,
            "reason": failed.get_failure_reason_display(),
            "last_line": lines[-1].strip() if lines else "",
        }
    return {
        "params": params,
        "reused": len(reused),
        "saved_s": sum(s for s in saved if s is not None),
        "failure": failure,
    }


def run_graph(spec: dict[str, Any], steps: list[StepRun] | None = None) -> dict[str, Any]:
    """{"nodes": [...], "edges": [...]} of a spec's DAG, with each step's status when the
    steps of a run are given; datasets are nodes of their own. Plain data for json_script."""
    by_name = {s.name: s for s in steps or []}
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    datasets: dict[str, str] = {}
    for name, spec_step in spec.get("steps", {}).items():
        step = by_name.get(name)
        node: dict[str, Any] = {"id": name, "kind": "step", "label": name}
        node["module"] = spec_step.get("module", "")
        if step is not None:
            node["status"] = step.status
            node["reused_from_run"] = step.reused_from.run_id if step.reused_from else None
            node["attempts"] = step.attempt
            duration = step.duration_s
            node["duration_s"] = round(duration, 3) if duration is not None else None
        nodes.append(node)
        for input_name, binding in sorted(step_bindings(spec_step).items()):
            if binding.is_dataset:
                dataset_id = datasets.setdefault(binding.dataset_ref, f"dataset-{len(datasets)}")
                edges.append({"source": dataset_id, "target": name, "label": input_name})
            else:
                label = f"{binding.output} → {input_name}"
                edges.append({"source": binding.step, "target": name, "label": label})
    for label, dataset_id in datasets.items():
        nodes.append({"id": dataset_id, "kind": "dataset", "label": label})
    return {"nodes": nodes, "edges": edges}


def run_is_active(run: PipelineRun) -> bool:
    return run.status not in RUN_TERMINAL


def step_io(step: StepRun) -> dict[str, Any]:
    """A step's inputs (with the step and output that produced each, or its dataset) and
    outputs (with the steps of the run that consume each), artifacts included."""
    spec_steps = step.run.pipeline_version.spec.get("steps", {})
    bindings = step_bindings(spec_steps.get(step.name, {}))
    pinned = {
        i.name: i.artifact for i in StepInput.objects.filter(step=step).select_related("artifact")
    }
    inputs = []
    for name in sorted(set(bindings) | set(pinned)):
        binding = bindings.get(name)
        producer = binding if binding is not None and not binding.is_dataset else None
        inputs.append(
            {
                "name": name,
                "binding": binding.text if binding is not None else "",
                "producer_step": producer.step if producer else None,
                "producer_output": producer.output if producer else None,
                "dataset": binding.dataset_ref if binding and binding.is_dataset else None,
                "artifact": pinned.get(name),
            }
        )
    consumers: dict[str, list[tuple[str, str]]] = {}
    for other, spec_step in spec_steps.items():
        for input_name, binding in step_bindings(spec_step).items():
            if not binding.is_dataset and binding.step == step.name:
                consumers.setdefault(binding.output, []).append((other, input_name))
    outputs = [
        {
            "name": out.name,
            "artifact": out.artifact,
            "consumers": [{"step": s, "input": i} for s, i in sorted(consumers.get(out.name, []))],
        }
        for out in StepOutput.objects.filter(step=step).select_related("artifact").order_by("name")
    ]
    return {"inputs": inputs, "outputs": outputs}


def step_metrics(step: StepRun) -> dict[str, Any]:
    """{"scalars": [{"name", "value"}], "series": {name: [(index, value), ...]}, "count"}.

    A metric logged without a step number is a scalar (the last value wins); with one it is
    a series, in index order. A reused step shows the metrics of the step it reused.
    """
    scalars: dict[str, float] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    # A reused step logged nothing itself: its results, metrics included, are its source's.
    source_id = step.reused_from_id or step.pk
    rows = (
        Metric.objects.filter(step_id=source_id)
        .order_by("name", "index", "id")
        .values_list("name", "value", "index")
    )
    count = 0
    for name, value, index in rows:
        count += 1
        if index is None:
            scalars[name] = value
        else:
            series.setdefault(name, []).append((index, value))
    return {
        "scalars": [{"name": n, "value": v} for n, v in sorted(scalars.items())],
        "series": series,
        "count": count,
    }


def run_metrics(steps: list[StepRun]) -> dict[str, Any]:
    """A run's metrics, by step (a reused step's are its source's), in one query:
    {"scalars": [{"step", "name", "value"}], "series": {"step · name": [(index, value)]}}."""
    source_of = {
        (s.reused_from_id if s.status == StepStatus.REUSED and s.reused_from_id else s.pk): s.name
        for s in steps
    }
    last: dict[tuple[str, str], float] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    rows = (
        Metric.objects.filter(step_id__in=source_of)
        .order_by("step_id", "name", "index", "id")
        .values_list("step_id", "name", "value", "index")
    )
    for step_id, name, value, index in rows:
        step_name = source_of[step_id]
        if index is None:
            last[(step_name, name)] = value
        else:
            series.setdefault(f"{step_name} · {name}", []).append((index, value))
    order = {s.name: s.position for s in steps}
    scalars = [
        {"step": step_name, "name": name, "value": value}
        for (step_name, name), value in sorted(last.items(), key=lambda i: (order[i[0][0]], i[0]))
    ]
    return {"scalars": scalars, "series": series}


def step_log_attempts(step: StepRun) -> list[int]:
    return list(
        StepLog.objects.filter(step=step)
        .values_list("attempt", flat=True)
        .distinct()
        .order_by("attempt")
    )


def step_log_tail(
    step: StepRun, attempt: int, after: int | None = None, limit: int = LOG_TAIL_BYTES
) -> dict[str, Any]:
    """The log of one attempt from byte offset `after` (the whole tail, at most `limit`
    bytes, when None): {"text", "next", "skipped"}; `next` is where the next poll starts."""
    logs = StepLog.objects.filter(step=step, attempt=attempt)
    chunks: list[tuple[int, str]] = []
    if after is None:
        size = 0
        for offset, text in logs.order_by("-offset").values_list("offset", "text").iterator():
            chunks.append((offset, text))
            size += len(text)
            if size >= limit:
                break
        chunks.reverse()
    else:
        chunks = list(
            logs.filter(offset__gte=after).order_by("offset").values_list("offset", "text")
        )
    text = "".join(t for _, t in chunks)
    if chunks:
        last_offset, last_text = chunks[-1]
        next_offset = last_offset + len(last_text.encode("utf-8"))
    else:
        next_offset = after or 0
    skipped = chunks[0][0] if chunks and after is None else 0
    return {"text": text, "next": next_offset, "skipped": skipped}


def step_log_search(step: StepRun, attempt: int, query: str) -> dict[str, Any]:
    """Lines of one attempt's log containing `query` (case-insensitive), with line numbers."""
    needle = query.casefold()
    matches: list[dict[str, Any]] = []
    number = 0
    pending = ""
    logs = StepLog.objects.filter(step=step, attempt=attempt).order_by("offset")

    def scan(lines: list[str]) -> None:
        nonlocal number
        for line in lines:
            number += 1
            if needle in line.casefold() and len(matches) < LOG_SEARCH_MAX_MATCHES:
                matches.append({"number": number, "text": line})

    for text in logs.values_list("text", flat=True).iterator():
        lines = (pending + text).split("\n")
        pending = lines.pop()
        scan(lines)
    if pending:
        scan([pending])
    return {"query": query, "matches": matches, "limited": len(matches) >= LOG_SEARCH_MAX_MATCHES}


# --- why a step was or was not reused ---------------------------------------------------------


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def key_changes(current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """What differs between two steps' cache-key parts (code, params, inputs, runtime):
    [{"part", "details": [text, ...]}], in that order; empty when the keys are equal."""
    changes: list[dict[str, Any]] = []
    if current.get("code") != previous.get("code"):
        changes.append({"part": "code", "details": []})
    now_params, old_params = current.get("params") or {}, previous.get("params") or {}
    details = []
    for name in sorted(set(now_params) | set(old_params)):
        if name not in old_params:
            details.append(f"{name}: new, {_short(now_params[name])}")
        elif name not in now_params:
            details.append(f"{name}: removed (was {_short(old_params[name])})")
        elif now_params[name] != old_params[name]:
            details.append(f"{name}: {_short(old_params[name])} -> {_short(now_params[name])}")
    if details:
        changes.append({"part": "params", "details": details})
    now_inputs, old_inputs = current.get("inputs") or {}, previous.get("inputs") or {}
    details = []
    for name in sorted(set(now_inputs) | set(old_inputs)):
        old, new = old_inputs.get(name), now_inputs.get(name)
        if old != new:
            details.append(f"{name}: {(old or 'none')[:8]} -> {(new or 'none')[:8]}")
    if details:
        changes.append({"part": "inputs", "details": details})
    if current.get("runtime") != previous.get("runtime"):
        changes.append({"part": "runtime", "details": []})
    return changes


def human_duration(seconds: float | None) -> str:
    """3 m 12 s, 850 ms, 1 h 2 m: durations as a person reads them."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{round(seconds)} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs} s" if secs else f"{minutes} m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} m" if minutes else f"{hours} h"


def explain_reuse(
    step: StepRun, previous: StepRun | None, pipeline_name: str = ""
) -> dict[str, Any]:
    """Why `step` was reused or ran, given the nearest earlier step of the same name in the
    same pipeline's runs (`previous`, or None). Pure: reads only the rows given.

    {"reused": bool, "summary": text, "changes": [...], "compared_run": id | None,
    "saved_s": seconds | None}
    """
    result: dict[str, Any] = {
        "reused": False,
        "summary": "",
        "changes": [],
        "compared_run": None,
        "saved_s": None,
    }
    if step.status == StepStatus.REUSED and step.reused_from is not None:
        source = step.reused_from
        saved = source.duration_s
        result.update(reused=True, compared_run=source.run_id, saved_s=saved)
        result["summary"] = f"reused from run {source.run_id}" + (
            f", saved {human_duration(saved)}" if saved is not None else ""
        )
        return result
    if step.status == StepStatus.REUSED and step.reused_from is None:
        result.update(reused=True)
        result["summary"] = "reused from a deleted run (its outputs are kept here)"
        return result
    if step.status == StepStatus.FOLLOWING and step.following is not None:
        result["compared_run"] = step.following.run_id
        result["summary"] = (
            f"waits for the identical step running in run {step.following.run_id}, "
            "then reuses its outputs"
        )
        return result
    if not step.cache_key:
        if step.status in (StepStatus.FAILED, StepStatus.CANCELED):
            reason = step.failure_message or step.get_status_display().lower()
            result["summary"] = f"never ran: {reason}"
        else:
            result["summary"] = "not keyed yet: it waits for its upstream steps"
        return result
    verb = "runs" if step.status in (StepStatus.QUEUED, StepStatus.RUNNING) else "ran"
    if previous is None:
        where = f" of pipeline {pipeline_name}" if pipeline_name else ""
        result["summary"] = f"{verb}: no earlier run{where} has a step {step.name!r}"
        return result
    result["compared_run"] = previous.run_id
    changes = key_changes(step.key_parts or {}, previous.key_parts or {})
    if changes and changes[0]["part"] == "code":
        old_ref, new_ref = previous.module_version.ref, step.module_version.ref
        if old_ref != new_ref:
            changes[0]["details"] = [f"{old_ref} -> {new_ref}"]
    result["changes"] = changes
    if changes:
        parts = [c["part"] for c in changes]
        named = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        details = "; ".join(d for c in changes for d in c["details"])
        result["summary"] = f"{verb} because {named} changed since run {previous.run_id}" + (
            f" ({details})" if details else ""
        )
    else:
        result["summary"] = _same_key_summary(step, previous, verb)
    return result


def _same_key_summary(step: StepRun, previous: StepRun, verb: str) -> str:
    """Why a step ran although the nearest earlier one had the same key."""
    if step.reuse_note:
        return f"{verb} because the {step.reuse_note}"
    forgotten = previous.reuse_forgotten_at
    if forgotten is not None and (step.queued_at is None or forgotten <= step.queued_at):
        return (
            f"{verb} because the cached result of run {previous.run_id} was forgotten "
            f"({forgotten:%Y-%m-%d %H:%M})"
        )
    if not step.reuse_allowed:
        return (
            f"{verb} because reuse was off for this step (a rerun from a step, or reuse "
            f"switched off); run {previous.run_id} had the same key"
        )
    if previous.status not in (StepStatus.SUCCEEDED, StepStatus.REUSED):
        return (
            f"{verb} because the identical step in run {previous.run_id} "
            f"{previous.get_status_display().lower()}"
        )
    return (
        f"{verb}: run {previous.run_id} has the same key but had not finished when this "
        "step was queued"
    )


def previous_step_of_pipeline(step: StepRun) -> StepRun | None:
    """The nearest earlier keyed step of the same name in runs of the same pipeline."""
    return (
        StepRun.objects.filter(
            workspace_id=step.workspace_id,
            run__pipeline_version__pipeline_id=step.run.pipeline_version.pipeline_id,
            name=step.name,
            run_id__lt=step.run_id,
        )
        .exclude(cache_key="")
        .select_related("module_version__module")
        .order_by("-run_id")
        .first()
    )


def results_source(step: StepRun) -> StepRun:
    """The step whose log and metrics are `step`'s results: its source when it was reused
    (a reused step ran nothing itself), else the step itself."""
    if step.status == StepStatus.REUSED and step.reused_from_id is not None:
        source = step.reused_from
        if source is not None:
            return source
    return step


def reuse_explanation(step: StepRun) -> dict[str, Any]:
    """Why this step was or was not reused (see explain_reuse); at most one query."""
    needs_previous = step.cache_key and step.status not in (
        StepStatus.REUSED,
        StepStatus.FOLLOWING,
    )
    previous = previous_step_of_pipeline(step) if needs_previous else None
    return explain_reuse(step, previous, step.run.pipeline_version.pipeline.name)


# --- lineage -------------------------------------------------------------------------------------


def _artifact_node(artifact: Artifact, label: str, datasets: dict[int, str]) -> dict[str, Any]:
    node = {
        "id": f"artifact:{artifact.sha256}",
        "kind": "artifact",
        "label": label,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "media_type": artifact.media_type,
    }
    if artifact.pk in datasets:
        node["dataset"] = datasets[artifact.pk]
        node["label"] = f"dataset {datasets[artifact.pk]}"
    return node


def _run_node(run: PipelineRun) -> dict[str, Any]:
    return {"id": f"run:{run.pk}", "kind": "run", "label": f"run {run.pk}", "status": run.status}


def run_lineage(run: PipelineRun) -> dict[str, Any]:
    """The run's lineage as plain dicts: {"run", "nodes", "edges"}.

    Nodes: the run, its steps, the artifacts they read and wrote (datasets named), the
    steps they reused (with those runs), the runs it was cloned or rerun from, its sweep.
    Edges (source -> target): artifact -input-> step, step -output-> artifact, step
    -reused_from-> step, step -step_of-> run, run -cloned_from/rerun_of-> run,
    run -sweep-> sweep. A fixed number of queries, whatever the size of the run.
    """
    from pipelines_app.models import DatasetVersion

    run = (
        PipelineRun.objects.select_related("cloned_from", "rerun_of", "sweep")
        .only(
            "id",
            "status",
            "variant",
            "cloned_from__id",
            "cloned_from__status",
            "rerun_of__id",
            "rerun_of__status",
            "sweep__id",
            "sweep__name",
        )
        .get(pk=run.pk)
    )
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    nodes[f"run:{run.pk}"] = _run_node(run)
    for kind in ("cloned_from", "rerun_of"):
        other = getattr(run, kind)
        if other is not None:
            nodes.setdefault(f"run:{other.pk}", _run_node(other))
            edges.append({"source": f"run:{run.pk}", "target": f"run:{other.pk}", "kind": kind})
    if run.sweep is not None:
        nodes[f"sweep:{run.sweep.pk}"] = {
            "id": f"sweep:{run.sweep.pk}",
            "kind": "sweep",
            "label": f"sweep {run.sweep.name}",
        }
        edge = {"source": f"run:{run.pk}", "target": f"sweep:{run.sweep.pk}", "kind": "sweep"}
        if run.variant:
            edge["label"] = ", ".join(f"{k}={v}" for k, v in sorted(run.variant.items()))
        edges.append(edge)
    steps = list(
        StepRun.objects.filter(run=run)
        .select_related("reused_from__run")
        .only(
            "id",
            "name",
            "status",
            "position",
            "run_id",
            "reused_from__id",
            "reused_from__name",
            "reused_from__status",
            "reused_from__run__id",
        )
        .order_by("position")
    )
    step_ids = [s.pk for s in steps]
    inputs = list(StepInput.objects.filter(step_id__in=step_ids).select_related("artifact"))
    outputs = list(StepOutput.objects.filter(step_id__in=step_ids).select_related("artifact"))
    artifact_ids = {i.artifact_id for i in inputs} | {o.artifact_id for o in outputs}
    datasets = {
        artifact_id: f"{name}@{number}"
        for artifact_id, name, number in DatasetVersion.objects.filter(
            artifact_id__in=artifact_ids
        ).values_list("artifact_id", "dataset__name", "number")
    }
    for step in steps:
        node_id = f"step:{step.pk}"
        nodes[node_id] = {
            "id": node_id,
            "kind": "step",
            "label": step.name,
            "name": step.name,
            "run": run.pk,
            "status": step.status,
        }
        edges.append({"source": node_id, "target": f"run:{run.pk}", "kind": "step_of"})
        source = step.reused_from
        if source is not None:
            source_id = f"step:{source.pk}"
            nodes.setdefault(
                source_id,
                {
                    "id": source_id,
                    "kind": "step",
                    "label": f"{source.name} (run {source.run_id})",
                    "name": source.name,
                    "run": source.run_id,
                    "status": source.status,
                },
            )
            edges.append({"source": node_id, "target": source_id, "kind": "reused_from"})
    step_names = {s.pk: s.name for s in steps}
    for row in inputs:
        artifact_id = f"artifact:{row.artifact.sha256}"
        nodes.setdefault(artifact_id, _artifact_node(row.artifact, row.name, datasets))
        edges.append(
            {
                "source": artifact_id,
                "target": f"step:{row.step_id}",
                "kind": "input",
                "label": row.name,
            }
        )
    for out in outputs:
        artifact_id = f"artifact:{out.artifact.sha256}"
        label = f"{step_names[out.step_id]}.{out.name}"
        node = nodes.setdefault(artifact_id, _artifact_node(out.artifact, label, datasets))
        if node["label"] != label and "dataset" not in node:
            node["label"] = label  # an output's name says more than the input that read it
        edges.append(
            {
                "source": f"step:{out.step_id}",
                "target": artifact_id,
                "kind": "output",
                "label": out.name,
            }
        )
    return {"run": run.pk, "nodes": list(nodes.values()), "edges": edges}


def artifact_usage(artifact: Artifact, limit: int = 50) -> dict[str, Any]:
    """Who produced and who consumed an artifact (workspace rows only), newest first."""
    related = ("step__run__pipeline_version__pipeline",)
    producers = list(
        StepOutput.objects.filter(artifact=artifact)
        .select_related(*related)
        .defer("step__run__pipeline_version__spec", "step__run__pipeline_version__source")
        .order_by("-step__run_id")[:limit]
    )
    consumers = list(
        StepInput.objects.filter(artifact=artifact)
        .select_related(*related)
        .defer("step__run__pipeline_version__spec", "step__run__pipeline_version__source")
        .order_by("-step__run_id")[:limit]
    )
    from pipelines_app.models import DatasetVersion

    datasets = list(
        DatasetVersion.objects.filter(artifact=artifact)
        .select_related("dataset")
        .order_by("number")
    )
    # The original producer is the one that ran (not reused); the first one if all reused.
    original = next(
        (p for p in reversed(producers) if p.step.status == StepStatus.SUCCEEDED),
        producers[-1] if producers else None,
    )
    return {
        "producers": producers,
        "consumers": consumers,
        "datasets": datasets,
        "original": original,
    }


def artifact_lineage(artifact: Artifact) -> dict[str, Any]:
    """The lineage of an artifact: the run lineage of the step that produced it, kept to
    the artifact's ancestors, plus the steps (any run) that read it."""
    usage = artifact_usage(artifact)
    here = f"artifact:{artifact.sha256}"
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    if usage["original"] is not None:
        full = run_lineage(usage["original"].step.run)
        by_id = {n["id"]: n for n in full["nodes"]}
        into: dict[str, list[dict[str, Any]]] = {}
        for edge in full["edges"]:
            if edge["kind"] in ("input", "output"):
                into.setdefault(edge["target"], []).append(edge)
        wanted, stack = {here}, [here]
        while stack:
            for edge in into.get(stack.pop(), []):
                if edge["source"] not in wanted:
                    wanted.add(edge["source"])
                    stack.append(edge["source"])
        # A reused ancestor step shows the step it reused.
        wanted |= {
            e["target"]
            for e in full["edges"]
            if e["kind"] == "reused_from" and e["source"] in wanted
        }
        nodes = {i: by_id[i] for i in wanted if i in by_id}
        edges = [e for e in full["edges"] if e["source"] in wanted and e["target"] in wanted]
    if here not in nodes:
        nodes[here] = _artifact_node(artifact, artifact.sha256[:12], {})
    for consumer in usage["consumers"]:
        step = consumer.step
        node_id = f"step:{step.pk}"
        nodes.setdefault(
            node_id,
            {
                "id": node_id,
                "kind": "step",
                "label": f"{step.name} (run {step.run_id})",
                "name": step.name,
                "run": step.run_id,
                "status": step.status,
            },
        )
        edge = {"source": here, "target": node_id, "kind": "input", "label": consumer.name}
        if edge not in edges:
            edges.append(edge)
    return {"artifact": artifact.sha256, "nodes": list(nodes.values()), "edges": edges}


def run_annotations(run: PipelineRun) -> dict[str, Any]:
    """{"run", "tags" (sorted), "note"}: what people say of a run (one query)."""
    tags = sorted(RunTag.objects.filter(run=run).values_list("name", flat=True))
    return {"run": run.pk, "tags": tags, "note": run.note}


# --- the runs list -----------------------------------------------------------------------------


def run_list(workspace: Any, archived: bool = False) -> QuerySet[PipelineRun]:
    """The workspace's runs for the runs list (its archived ones instead with `archived`),
    newest first, with what a row shows (tags in one more query for the page)."""
    return (
        PipelineRun.objects.filter(workspace=workspace, archived_at__isnull=not archived)
        .select_related("pipeline_version__pipeline", "created_by", "sweep")
        .defer(
            "pipeline_version__spec",
            "pipeline_version__source",
            "sweep__axes",
            "pipeline_version__pipeline__description",
        )
        .prefetch_related(Prefetch("tags", queryset=RunTag.objects.only("run_id", "name")))
        .order_by("-created_at", "-id")
    )


def run_step_counts(run_ids: list[int]) -> dict[int, dict[str, int]]:
    """{run id: {status: count}} for a page of runs, in one query."""
    counts: dict[int, dict[str, int]] = {run_id: {} for run_id in run_ids}
    rows = (
        StepRun.objects.filter(run_id__in=run_ids)
        .values("run_id", "status")
        .annotate(n=Count("id"))
        .values_list("run_id", "status", "n")
    )
    for run_id, status, n in rows:
        counts[run_id][status] = n
    return counts


def run_page_steps(run_ids: list[int]) -> dict[str, Any]:
    """What the runs list reads of a page of runs' steps, in one query: {"counts": {run id:
    {status: count}}, "readers": {step id whose metrics count: [run ids]}, "params": {run id:
    {"step.param": value}}, "param_keys": sorted "step.param" seen on the page}."""
    counts: dict[int, dict[str, int]] = {run_id: {} for run_id in run_ids}
    params: dict[int, dict[str, Any]] = {run_id: {} for run_id in run_ids}
    readers: dict[int, list[int]] = {}
    rows = (
        StepRun.objects.filter(run_id__in=run_ids)
        .order_by("position")
        .values_list("pk", "run_id", "reused_from_id", "status", "name", "params")
    )
    for step_id, run_id, source_id, status, name, step_params in rows:
        counts[run_id][status] = counts[run_id].get(status, 0) + 1
        readers.setdefault(source_id or step_id, []).append(run_id)
        for param, value in (step_params or {}).items():
            params[run_id][f"{name}.{param}"] = value
    keys = sorted({key for values in params.values() for key in values})
    return {"counts": counts, "readers": readers, "params": params, "param_keys": keys}


def run_metric_values(
    run_ids: list[int], names: list[str], readers: dict[int, list[int]] | None = None
) -> dict[int, dict[str, float]]:
    """{run id: {metric: value}} for a page of runs and the chosen metric names (two
    queries; one when run_page_steps gave the `readers`). A reused step counts with the
    metrics of the step it reused; a series counts by its last point; when several steps log
    a name, the later step wins."""
    values: dict[int, dict[str, float]] = {run_id: {} for run_id in run_ids}
    if not names or not run_ids:
        return values
    # Which runs read each step's metrics: its own run, and every run on the page whose step
    # reused it. Looking metrics up by step id keeps the (name, step) index in use.
    if readers is None:
        readers = {}
        for step_id, run_id, source_id in (
            StepRun.objects.filter(run_id__in=run_ids)
            .order_by()
            .values_list("pk", "run_id", "reused_from_id")
        ):
            readers.setdefault(source_id or step_id, []).append(run_id)
    rows = (
        Metric.objects.filter(name__in=names, step_id__in=list(readers))
        .order_by("step__position", "index", "id")
        .values_list("step_id", "name", "value")
    )
    for step_id, name, value in rows:
        for run_id in readers[step_id]:
            values[run_id][name] = value
    return values


METRIC_CHOOSER_RUNS = 1000


def workspace_metric_names(
    workspace: Any, limit: int = 200, recent_runs: int = METRIC_CHOOSER_RUNS
) -> list[str]:
    """The metric names logged by the workspace's most recent runs, the most used first (by
    how many steps logged each), for the column chooser and the default columns.

    Only recent runs (about the `recent_runs` newest): over all of them the join grows with
    the workspace (about 150 ms at 40,000 runs on Postgres), and a name nobody logged lately
    is rarely the column wanted. A reused step's metrics live on its source step, which is
    usually recent too. The steps are those from the oldest of those runs on (a range of
    `run_id`) of the workspace's runs in that range: `run_id IN (the newest runs)` alone made
    Postgres hash every step of every workspace (30 ms at 10,000 runs), and the workspace's
    steps in the range made SQLite, without statistics, read all the workspace's steps (20
    ms); this shape takes 3-6 ms on both.
    """
    newest = (
        PipelineRun.objects.filter(workspace=workspace)
        .order_by("-created_at", "-id")  # run_recent_idx
        .values("pk")[recent_runs - 1 : recent_runs]
    )
    oldest = Coalesce(Subquery(newest), 0)
    runs = PipelineRun.objects.filter(workspace=workspace, pk__gte=oldest).values("pk")
    steps = StepRun.objects.filter(run_id__gte=oldest, run_id__in=runs).values("pk")
    return list(
        Metric.objects.filter(step_id__in=steps)
        .values("name")
        .annotate(steps=Count("step_id", distinct=True))
        .order_by("-steps", "name")
        .values_list("name", flat=True)[:limit]
    )


def run_list_columns(user: Any, workspace: Any) -> dict[str, list[str]] | None:
    """The columns `user` last picked for the workspace's runs list ({"metrics", "params"}),
    or None when they never did (the list then shows the defaults)."""
    row = RunListPrefs.objects.filter(user=user, workspace=workspace).only("columns").first()
    if row is None:
        return None
    columns = row.columns or {}
    return {
        "metrics": [str(m) for m in columns.get("metrics", [])],
        "params": [str(p) for p in columns.get("params", [])],
    }


# --- runs on the design-time pages -----------------------------------------------------------

# "Running now" on the workspace home: runs not yet finished.
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)


def workspace_run_list(workspace: Workspace) -> QuerySet[PipelineRun]:
    """The workspace's runs, newest first (index run_recent_idx), with what a row shows."""
    return (
        PipelineRun.objects.filter(workspace=workspace)
        .select_related("pipeline_version__pipeline", "created_by")
        .defer("pipeline_version__spec", "pipeline_version__source")
        .order_by("-created_at", "-id")
    )


def workspace_run_counts(workspace: Workspace) -> dict[str, int]:
    """{"total": runs, "active": runs pending or running}, in one query."""
    return PipelineRun.objects.filter(workspace=workspace).aggregate(
        total=Count("id"),
        active=Count("id", filter=Q(status__in=ACTIVE_RUN_STATUSES)),
    )


def pipeline_version_runs(version: PipelineVersion) -> QuerySet[PipelineRun]:
    """The runs of one pipeline version, newest first."""
    return (
        PipelineRun.objects.filter(pipeline_version=version)
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def live_workers_unisolated() -> list[str]:
    """The live workers (host:pid) whose steps run without the sandbox."""
    fresh = timezone.now() - timedelta(seconds=engine().lease_s)
    rows = WorkerHeartbeat.objects.filter(last_seen__gte=fresh).exclude(sandbox="required")
    return [str(row) for row in rows.order_by("host", "pid")]


# --- storage -----------------------------------------------------------------------------------


def workspace_storage(workspace: Any, biggest: int = 20) -> dict[str, Any]:
    """What a workspace stores, for its storage page and API: {"total_bytes", "artifacts",
    "by_pipeline": [{"pipeline", "bytes", "artifacts"}], "by_step": [{"pipeline", "step",
    "bytes", "artifacts"}], "by_media_type": [...], "over_time": [{"day", "bytes"}] (the
    workspace's bytes at the end of each day), "biggest": [{"sha256", "size", "media_type",
    "run", "step", "output"}]}. An artifact counts once per group it is produced in (a
    reused step produces nothing); datasets count under "by_media_type" and the total."""
    artifacts = Artifact.objects.filter(workspace=workspace)
    totals = artifacts.aggregate(n=Count("id"), size=Sum("size"))
    produced = (
        StepOutput.objects.filter(step__workspace=workspace, step__status=StepStatus.SUCCEEDED)
        .values_list(
            "step__run__pipeline_version__pipeline__name",
            "step__name",
            "artifact_id",
            "artifact__size",
        )
        .distinct()
    )
    pipelines: dict[str, dict[int, int]] = {}
    steps: dict[tuple[str, str], dict[int, int]] = {}
    for pipeline, step, artifact_id, size in produced:
        pipelines.setdefault(pipeline, {})[artifact_id] = size
        steps.setdefault((pipeline, step), {})[artifact_id] = size
    by_day = (
        artifacts.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(size=Sum("size"))
        .order_by("day")
    )
    running = 0
    over_time = []
    for row in by_day:
        running += int(row["size"] or 0)
        over_time.append({"day": row["day"].isoformat(), "bytes": running})
    top = (
        StepOutput.objects.filter(step__workspace=workspace, step__status=StepStatus.SUCCEEDED)
        .select_related("artifact", "step")
        .order_by("-artifact__size", "artifact_id")[:biggest]
    )
    return {
        "total_bytes": int(totals["size"] or 0),
        "artifacts": totals["n"],
        "by_pipeline": sorted(
            (
                {"pipeline": name, "bytes": sum(held.values()), "artifacts": len(held)}
                for name, held in pipelines.items()
            ),
            key=lambda row: (-row["bytes"], row["pipeline"]),
        ),
        "by_step": sorted(
            (
                {"pipeline": p, "step": s, "bytes": sum(held.values()), "artifacts": len(held)}
                for (p, s), held in steps.items()
            ),
            key=lambda row: (-row["bytes"], row["pipeline"], row["step"]),
        ),
        "by_media_type": [
            {"media_type": row["media_type"], "bytes": int(row["size"] or 0), "artifacts": row["n"]}
            for row in artifacts.values("media_type")
            .annotate(size=Sum("size"), n=Count("id"))
            .order_by("-size", "media_type")
        ],
        "over_time": over_time,
        "biggest": [
            {
                "sha256": out.artifact.sha256,
                "size": out.artifact.size,
                "media_type": out.artifact.media_type,
                "run": out.step.run_id,
                "step": out.step.name,
                "output": out.name,
            }
            for out in top
        ],
    }


# The most runs a dataset page lists per version (the newest); the count says the rest.
READERS_SHOWN = 20


def artifact_reader_runs(artifact_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """For each artifact, the runs whose steps read it (StepInput rows), newest first: one
    query. Each run is {"id", "status", "pipeline", "version", "steps": [names]}; at most
    READERS_SHOWN runs per artifact, the last entry {"more": n} when there are others."""
    rows = (
        StepInput.objects.filter(artifact_id__in=artifact_ids)
        .values_list(
            "artifact_id",
            "step__run_id",
            "step__run__status",
            "step__run__pipeline_version__pipeline__name",
            "step__run__pipeline_version__number",
            "step__name",
        )
        .order_by("artifact_id", "-step__run_id", "step__name")
    )
    runs: dict[int, dict[int, dict[str, Any]]] = {}
    for artifact_id, run_id, status, pipeline, number, step in rows:
        run = runs.setdefault(artifact_id, {}).setdefault(
            run_id,
            {"id": run_id, "status": status, "pipeline": pipeline, "version": number, "steps": []},
        )
        run["steps"].append(step)
    out: dict[int, list[dict[str, Any]]] = {}
    for artifact_id, by_run in runs.items():
        listed = list(by_run.values())
        out[artifact_id] = listed[:READERS_SHOWN]
        if len(listed) > READERS_SHOWN:
            out[artifact_id].append({"more": len(listed) - READERS_SHOWN})
    return out
