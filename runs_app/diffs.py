"""Two runs side by side: params, metrics, module versions and step outcomes; the graph
diff, the code diff of changed module versions and the outputs side by side.

`run_diff(a, b)` reads both runs (a fixed number of queries) and hands plain data to the
pure `diff_runs`, `graph_diff` and `files_diff`, which the tests drive without a database;
only the outputs' contents are read from storage, as bounded heads. The compare page and the
API's `GET .../runs/compare/?a=&b=` both call `run_diff` (the API serialises the keys it
declares: everything added here is extra keys, never changed ones).
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
from runs_app.models import Metric, PipelineRun, StepOutput, StepRun
from runs_app.sweeps.stats import default_direction


def metric_direction(metric: str) -> str:
    """Which end of a metric is better, "min" (a loss, an error) or "max": the sweep
    comparison's rule, so the run comparison and the runs list agree with it."""
    return default_direction(metric)


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def run_facts(run: PipelineRun) -> dict[str, Any]:
    """What a comparison needs of one run, as plain data (two queries)."""
    steps = list(
        StepRun.objects.filter(run=run)
        .select_related("module_version__module", "reused_from")
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
