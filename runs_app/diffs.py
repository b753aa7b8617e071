"""Two runs side by side: params, metrics, module versions and step outcomes; the graph
diff, the code diff of changed module versions and the outputs side by side.

`run_diff(a, b)` reads both runs (a fixed number of queries) and hands plain data to the
pure `diff_runs`, `graph_diff` and `files_diff`, which the tests drive without a database;
only the outputs' contents are read from storage, as bounded heads. The compare page and the
API's `GET .../runs/compare/?a=&b=` both call `run_diff` (the API serialises the keys it
declares: everything added here is extra keys, never changed ones).

2 to 10 runs at once (`?runs=1,2,3`): `runs_compare` reads them all in two queries and the
pure `compare_runs` lines them up (params that differ first, metrics with the best of each
row, step-wise series, which runs share each step's cache key); `pair_diff` details any two
of them from the facts already read.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from artifacts.models import Artifact
from artifacts.previews import artifact_preview
from artifacts.store import INLINE_IMAGE_TYPES, PARQUET_TYPE, artifact_open, media_base
from pipelines_app.diffs import files_diff, steps_diff, text_diff
from pipelines_app.models import ModuleVersion
from runs_app.models import Metric, PipelineRun, StepOutput, StepRun, StepStatus
from runs_app.selectors import reuse_explanation
from runs_app.sweeps.stats import default_direction
from workspaces.errors import DomainError


def metric_direction(metric: str) -> str:
    """Which end of a metric is better, "min" (a loss, an error) or "max": the sweep
    comparison's rule, so the run comparison and the runs list agree with it."""
    return default_direction(metric)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def run_facts(run: PipelineRun) -> dict[str, Any]:
    """What a comparison needs of one run, as plain data (two queries)."""
    return runs_facts([run])[0]


def runs_facts(runs: list[PipelineRun]) -> list[dict[str, Any]]:
    """run_facts of several runs, in two queries whatever their number (the runs come with
    pipeline_version__pipeline and created_by). Each also has "series": {step: {metric:
    [(index, value), ...]}}, the metrics logged with a step number, in order."""
    steps = list(
        StepRun.objects.filter(run_id__in=[run.pk for run in runs])
        .select_related("module_version__module", "reused_from")
        .defer("module_version__files", "module_version__interface", "key_parts")
        .order_by("run_id", "position")
    )
    # A reused step's metrics are those of the step it reused (it logged none itself).
    measured: dict[int, list[StepRun]] = {}
    for step in steps:
        measured.setdefault(step.reused_from_id or step.pk, []).append(step)
    metrics: dict[int, dict[str, dict[str, float]]] = {}  # run -> step -> metric -> last
    series: dict[int, dict[str, dict[str, list[tuple[int, float]]]]] = {}
    for step_id, name, value, index in (
        Metric.objects.filter(step_id__in=list(measured))
        .order_by("name", "index", "id")
        .values_list("step_id", "name", "value", "index")
    ):
        for step in measured[step_id]:
            metrics.setdefault(step.run_id, {}).setdefault(step.name, {})[name] = value
            if index is not None:
                by_step = series.setdefault(step.run_id, {}).setdefault(step.name, {})
                by_step.setdefault(name, []).append((index, value))
    by_run: dict[int, list[StepRun]] = {}
    for step in steps:
        by_run.setdefault(step.run_id, []).append(step)
    return [
        _facts(run, by_run.get(run.pk, []), metrics.get(run.pk, {}), series.get(run.pk, {}))
        for run in runs
    ]


def _facts(
    run: PipelineRun,
    steps: list[StepRun],
    metrics: dict[str, dict[str, float]],
    series: dict[str, dict[str, list[tuple[int, float]]]],
) -> dict[str, Any]:
    version = run.pipeline_version
    spec_steps = (version.spec or {}).get("steps", {})
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
                "inputs": dict(spec_steps.get(s.name, {}).get("inputs") or {}),
                "module_version_id": s.module_version_id,
                "duration_s": s.duration_s,
                "reused_from_run": s.reused_from.run_id if s.reused_from is not None else None,
                "outputs_key": s.cache_key,
            }
            for s in steps
        ],
        "metrics": {s.name: metrics[s.name] for s in steps if s.name in metrics},
        "series": {s.name: series[s.name] for s in steps if s.name in series},
    }


def loop_comparison(previous: PipelineRun, run: PipelineRun) -> dict[str, Any]:
    """What `stepworks run FILE.yaml --watch` ends with, against the pipeline's previous
    run: {"run": previous's id, "ran": [{"step", "why"}] for each step of `run` that was not
    reused (why: the step page's reuse summary), "metrics": diff_runs' metric rows (`same`
    False where a metric moved)}. Four queries and one per step that ran."""
    both = PipelineRun.objects.select_related("pipeline_version__pipeline", "created_by")
    rows = {row.pk: row for row in both.filter(pk__in=[previous.pk, run.pk])}
    before, after = runs_facts([rows[previous.pk], rows[run.pk]])
    ran = (
        StepRun.objects.filter(run_id=run.pk)
        .exclude(status=StepStatus.REUSED)
        .select_related("run__pipeline_version__pipeline", "module_version__module")
        .order_by("position")
    )
    return {
        "run": previous.pk,
        "ran": [{"step": step.name, "why": reuse_explanation(step)["summary"]} for step in ran],
        "metrics": diff_runs(before, after)["metrics"],
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
    summary = {k: v for k, v in a.items() if k not in ("steps", "metrics", "series")}
    other = {k: v for k, v in b.items() if k not in ("steps", "metrics", "series")}
    return {
        "a": summary,
        "b": other,
        "steps": steps,
        "modules": modules,
        "params": params,
        "metrics": metrics,
        "differences": differences,
    }


# --- the graph, the code and the outputs (the sweeps issue) --------------------------------------

TEXT_DIFF_BYTES = 256 * 1024  # the head of a text or JSON output a text diff reads
MAX_OUTPUT_PAIRS = 40  # outputs compared with their contents; the rest by digest only
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-python", "text/x-log")
JSON_TYPES = ("application/json",)


def graph_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Pure: two `run_facts` -> pipelines_app.diffs.steps_diff of their steps (params after
    overrides)."""
    return steps_diff({s["name"]: s for s in a["steps"]}, {s["name"]: s for s in b["steps"]})


def code_diffs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The code diff of each step whose module version differs in code (one query):
    [{"step", "a", "b", "entrypoint": [a, b] | None, "files": files_diff(...)}]."""
    a_steps = {s["name"]: s for s in a["steps"]}
    pairs = []
    for sb in b["steps"]:
        sa = a_steps.get(sb["name"])
        if sa and sa.get("code_digest") != sb.get("code_digest"):
            pairs.append((sb["name"], sa, sb))
    ids = {s["module_version_id"] for _, sa, sb in pairs for s in (sa, sb)}
    versions = {
        v.pk: v for v in ModuleVersion.objects.filter(pk__in=ids).only("id", "files", "entrypoint")
    }
    out = []
    for name, sa, sb in pairs:
        va, vb = versions.get(sa["module_version_id"]), versions.get(sb["module_version_id"])
        if va is None or vb is None:
            continue
        entry = [va.entrypoint, vb.entrypoint] if va.entrypoint != vb.entrypoint else None
        out.append(
            {
                "step": name,
                "a": sa["module"],
                "b": sb["module"],
                "entrypoint": entry,
                "files": files_diff(va.files or {}, vb.files or {}, sa["module"], sb["module"]),
            }
        )
    return out


def _outputs(run: PipelineRun) -> dict[tuple[str, str], Artifact]:
    """{(step, output): artifact} of a run (one query)."""
    rows = (
        StepOutput.objects.filter(step__run=run)
        .select_related("artifact", "step")
        .only("name", "step__name", "step__position", "artifact")
        .order_by("step__position", "name")
    )
    return {(row.step.name, row.name): row.artifact for row in rows}


def _artifact_side(artifact: Artifact | None) -> dict[str, Any] | None:
    if artifact is None:
        return None
    return {
        "sha256": artifact.sha256,
        "size": artifact.size,
        "media_type": artifact.media_type,
        "kind": artifact.kind,
    }


def _text_of(artifact: Artifact) -> tuple[str, bool]:
    """The head of a text or JSON output as text (JSON pretty-printed with sorted keys, so a
    diff shows values, not formatting) and whether it was cut."""
    with artifact_open(artifact) as handle:
        data = handle.read(TEXT_DIFF_BYTES + 1)
    cut = len(data) > TEXT_DIFF_BYTES
    text = data[:TEXT_DIFF_BYTES].decode("utf-8", "replace")
    if not cut and media_base(artifact.media_type) in JSON_TYPES:
        with contextlib.suppress(ValueError):  # not JSON after all: diff the text as it is
            text = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    return text, cut


def _compare_kind(a: Artifact | None, b: Artifact | None) -> str:
    """How two outputs are shown side by side: `text` (a diff), `table` (the heads),
    `image`, or `other` (links)."""
    bases = {media_base(x.media_type) for x in (a, b) if x is not None}
    kinds = {x.kind for x in (a, b) if x is not None}
    if kinds != {"file"} or len(bases) != 1:
        return "other"
    base = bases.pop()
    if base in JSON_TYPES or base in TEXT_TYPES:
        return "text"
    if base in (PARQUET_TYPE, "text/csv", "text/tab-separated-values"):
        return "table"
    if base in INLINE_IMAGE_TYPES:
        return "image"
    return "other"


def output_pairs(a: PipelineRun, b: PipelineRun, *, contents: bool = True) -> list[dict[str, Any]]:
    """Each output of either run beside the other run's output of the same step and name:
    [{"step", "output", "a", "b", "same", "show": text|table|image|other, "text_diff"?,
    "a_preview"?, "b_preview"?, "error"?}]. Identical outputs (one digest) are not read;
    with `contents`, the first MAX_OUTPUT_PAIRS that differ are (bounded heads, never an
    unpickle). Two queries plus those reads."""
    a_out, b_out = _outputs(a), _outputs(b)
    keys = list(a_out) + [key for key in b_out if key not in a_out]
    pairs = []
    read = 0
    for step, output in keys:
        xa, xb = a_out.get((step, output)), b_out.get((step, output))
        same = xa is not None and xb is not None and xa.sha256 == xb.sha256
        pair: dict[str, Any] = {
            "step": step,
            "output": output,
            "a": _artifact_side(xa),
            "b": _artifact_side(xb),
            "same": same,
            "show": _compare_kind(xa, xb),
        }
        if contents and not same and read < MAX_OUTPUT_PAIRS:
            read += 1
            _read_contents(pair, xa, xb, a.pk, b.pk)
        pairs.append(pair)
    return pairs


def _read_contents(
    pair: dict[str, Any], xa: Artifact | None, xb: Artifact | None, a_id: int, b_id: int
) -> None:
    try:
        if pair["show"] == "text" and xa is not None and xb is not None:
            (ta, cut_a), (tb, cut_b) = _text_of(xa), _text_of(xb)
            label = f"{pair['step']}.{pair['output']}"
            pair["text_diff"] = text_diff(ta, tb, f"run {a_id}: {label}", f"run {b_id}: {label}")
            pair["text_diff"]["cut"] = cut_a or cut_b
        elif pair["show"] == "table":
            pair["a_preview"] = artifact_preview(xa) if xa is not None else None
            pair["b_preview"] = artifact_preview(xb) if xb is not None else None
    except (OSError, ValueError) as error:  # a missing or unreadable file never breaks a page
        pair["error"] = f"{type(error).__name__}: {error}"[:300]


def run_diff(a: PipelineRun, b: PipelineRun, *, contents: bool = True) -> dict[str, Any]:
    """Compare two runs the caller already fetched through the access helper.

    Adds to `diff_runs`: "graph" (graph_diff), "code" (code_diffs) and "outputs"
    (output_pairs; with `contents=False` digests only, no storage read). Seven queries.
    """
    fa, fb = run_facts(a), run_facts(b)
    diff = diff_runs(fa, fb)
    diff["graph"] = graph_diff(fa, fb)
    diff["code"] = code_diffs(fa, fb)
    diff["outputs"] = output_pairs(a, b, contents=contents)
    return diff


# --- 2 to 10 runs at once -----------------------------------------------------------------------

COMPARE_MIN, COMPARE_MAX = 2, 10
KEY_GROUPS = "ABCDEFGHIJ"  # one letter per distinct cache key of a step (at most 10 runs)


def compare_ids(values: list[str], field: str = "runs") -> list[int]:
    """The run ids of `?runs=1,2,3` (or `?runs=1&runs=2`), in order, each once: a
    DomainError naming `field` for a bad id, or fewer than 2 or more than 10 runs."""
    ids: list[int] = []
    for value in values:
        for part in value.split(","):
            text = part.strip()
            if not text:
                continue
            if not text.isdigit() or len(text) > 18 or int(text) < 1:
                raise DomainError(
                    "invalid_runs", "Not a run id.", {field: [f"{text[:40]!r} is not a run id"]}
                )
            if int(text) not in ids:
                ids.append(int(text))
    if not COMPARE_MIN <= len(ids) <= COMPARE_MAX:
        raise DomainError(
            "invalid_runs",
            f"Compare {COMPARE_MIN} to {COMPARE_MAX} runs.",
            {field: [f"name {COMPARE_MIN} to {COMPARE_MAX} runs to compare, not {len(ids)}"]},
        )
    return ids


def _same(values: list[Any]) -> bool:
    return all(value == values[0] for value in values[1:])


def _best(values: list[float | None], direction: str) -> list[bool]:
    """Which cells of a metric row are the best (ties all are); none when every run that
    logged it has the same value, or fewer than two did."""
    finite = [v for v in values if v is not None]
    if len(finite) < 2 or _same(finite):
        return [False] * len(values)
    best = min(finite) if direction == "min" else max(finite)
    return [v is not None and v == best for v in values]


def compare_runs(facts: list[dict[str, Any]]) -> dict[str, Any]:
    """Pure: run_facts of 2-10 runs -> {"runs": [summary], "params": [{"key", "values",
    "same"}] (those that differ first), "metrics": [{"key", "values", "same", "direction",
    "best"}], "steps": [{"name", "cells": [{"run", "status", "reused_from_run", "key",
    "group", "shared"}]}], "series": {"step · metric": {run id: [(index, value)]}},
    "differences": {"params", "metrics"}}. Values are in the runs' order, None where a run
    lacks the step, param or metric."""
    names = list(dict.fromkeys(s["name"] for run in facts for s in run["steps"]))
    steps_of = [{s["name"]: s for s in run["steps"]} for run in facts]
    params: list[dict[str, Any]] = []
    for name in names:
        keys = sorted({p for steps in steps_of for p in (steps.get(name) or {}).get("params", {})})
        for param in keys:
            values = [(steps.get(name) or {}).get("params", {}).get(param) for steps in steps_of]
            params.append({"key": f"{name}.{param}", "values": values, "same": _same(values)})
    params.sort(
        key=lambda row: bool(row["same"])
    )  # stable: the differing ones first, in step order
    metrics = []
    for name in names:
        keys = sorted({m for run in facts for m in run["metrics"].get(name, {})})
        for metric in keys:
            values = [_number(run["metrics"].get(name, {}).get(metric)) for run in facts]
            direction = metric_direction(metric)
            metrics.append(
                {
                    "key": f"{name}.{metric}",
                    "values": values,
                    "same": _same(values),
                    "direction": direction,
                    "best": _best(values, direction),
                }
            )
    return {
        "runs": [
            {k: v for k, v in run.items() if k not in ("steps", "metrics", "series")}
            for run in facts
        ],
        "params": params,
        "metrics": metrics,
        "steps": [_step_row(name, facts, steps_of) for name in names],
        "series": _series(facts, names),
        "differences": {
            "params": sum(not row["same"] for row in params),
            "metrics": sum(not row["same"] for row in metrics),
        },
    }


def _step_row(
    name: str, facts: list[dict[str, Any]], steps_of: list[dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """One step across the runs: each run's status, where it reused from, and which runs
    share its cache key (one letter per distinct key, in the runs' order)."""
    keys = [(steps.get(name) or {}).get("outputs_key") or None for steps in steps_of]
    letters: dict[str, str] = {}
    for key in keys:
        if key is not None and key not in letters:
            letters[key] = KEY_GROUPS[len(letters)]
    cells = []
    for run, steps, key in zip(facts, steps_of, keys, strict=True):
        step = steps.get(name)
        cells.append(
            {
                "run": run["id"],
                "status": step["status"] if step else None,
                "reused_from_run": step["reused_from_run"] if step else None,
                "key": key,
                "group": letters.get(key) if key else None,
                "shared": key is not None and keys.count(key) > 1,
            }
        )
    return {"name": name, "cells": cells, "keys": len(letters)}


def _series(facts: list[dict[str, Any]], names: list[str]) -> dict[str, dict[int, Any]]:
    """{"step · metric": {run id: [(index, value)]}} over every run that logged the series."""
    out: dict[str, dict[int, Any]] = {}
    for name in names:
        metric_names = sorted({m for run in facts for m in run["series"].get(name, {})})
        for metric in metric_names:
            curves = {
                run["id"]: [(i, _number(v)) for i, v in run["series"][name][metric]]
                for run in facts
                if metric in run["series"].get(name, {})
            }
            out[f"{name} · {metric}"] = curves
    return out


def runs_compare(runs: list[PipelineRun]) -> dict[str, Any]:
    """Compare runs the caller fetched through the access helper (2-10, with
    pipeline_version__pipeline and created_by): compare_runs of their facts, in two
    queries whatever their number. `facts` is kept for a two-run detail of any pair."""
    facts = runs_facts(runs)
    return {**compare_runs(facts), "facts": {f["id"]: f for f in facts}}


def pair_diff(
    facts_a: dict[str, Any], facts_b: dict[str, Any], a: PipelineRun, b: PipelineRun
) -> dict[str, Any]:
    """run_diff from facts already read: three queries (the code, both runs' outputs)."""
    diff = diff_runs(facts_a, facts_b)
    diff["graph"] = graph_diff(facts_a, facts_b)
    diff["code"] = code_diffs(facts_a, facts_b)
    diff["outputs"] = output_pairs(a, b)
    return diff
