"""The run diff beyond params and metrics: the graph diff, the code diff of changed module
versions, and outputs side by side (a text diff for text and JSON, table heads for Parquet,
images); the pure parts without a database, then `run_diff` and the compare page."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from pipelines_app import diffs
from pipelines_app.diffs import files_diff, text_diff
from runs_app import scheduler
from runs_app.diffs import graph_diff, run_diff
from runs_app.models import PipelineRun, StepRun
from stepworks.context import MetricPoint
from tests.factories import module_version, pipeline_version
from tests.helpers import next_queued, succeed

K = {"k": {"type": "int", "required": False, "default": 0}}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


# --- pure ----------------------------------------------------------------------------------------
def facts(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"id": 1, "status": "succeeded", "steps": list(steps), "metrics": {}}


def step(name: str, module: str = "m@1", **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "module": module, "code_digest": module, **kwargs}


def test_graph_diff_names_steps_only_on_one_side_and_what_changed() -> None:
    a = facts(
        step("prep"),
        step("train", "t@1", params={"lr": 0.1, "seed": 0}, inputs={"x": "prep.out"}),
        step("report"),
    )
    b = facts(
        step("prep"),
        step("train", "t@2", params={"lr": 0.2, "seed": 0}, inputs={"x": "aug.out"}),
        step("aug"),
    )

    diff = graph_diff(a, b)

    assert diff["only_a"] == ["report"]
    assert diff["only_b"] == ["aug"]
    assert diff["unchanged"] == ["prep"]
    assert diff["changed"] == [
        {
            "name": "train",
            "changes": ["module t@1 → t@2", "params lr", "input x: prep.out → aug.out"],
        }
    ]


def test_graph_diff_says_when_a_new_module_version_has_the_same_code() -> None:
    a = facts(step("train", "t@1", code_digest="same"))
    b = facts(step("train", "t@2", code_digest="same"))

    assert graph_diff(a, b)["changed"][0]["changes"] == ["module t@1 → t@2 (same code)"]


def test_files_diff_is_a_unified_diff_per_changed_file() -> None:
    a = {"main.py": "x = 1\ny = 2\n", "gone.py": "old\n", "same.py": "s\n"}
    b = {"main.py": "x = 1\ny = 3\n", "new.py": "fresh\n", "same.py": "s\n"}

    out = files_diff(a, b, "m@1", "m@2")

    assert [(f["path"], f["status"]) for f in out] == [
        ("gone.py", "removed"),
        ("main.py", "changed"),
        ("new.py", "added"),
    ]
    main = out[1]["lines"]
    assert {"kind": "del", "text": "-y = 2"} in main and {"kind": "add", "text": "+y = 3"} in main
    assert main[0]["kind"] == "hunk" and {"kind": "same", "text": " x = 1"} in main


def test_text_diff_is_cut_at_its_line_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(diffs, "MAX_DIFF_LINES", 5)

    out = text_diff("\n".join(map(str, range(100))), "", "a", "b")

    assert len(out["lines"]) == 5 and out["truncated"] is True


# --- run_diff and the page ------------------------------------------------------------------------
def parquet(values: list[int]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"value": values, "name": [f"r{v}" for v in values]}), sink)
    return sink.getvalue()


def finish(run: PipelineRun, outputs: dict[str, dict[str, tuple[bytes, str]]]) -> PipelineRun:
    """Work the run's queued steps with the given outputs per step ({step: {name: (bytes,
    media type)}}); each step logs `score`."""
    while (queued := next_queued(run=run)) is not None:
        score = [MetricPoint("score", 0.5 + run.pk / 100)]
        assert succeed(queued, outputs.get(queued.name, {}), score)
    run.refresh_from_db()
    return run


@pytest.fixture
def two_runs(world: Any) -> tuple[PipelineRun, PipelineRun]:
    """s0 -> s1; run b uses a second version of s1's module (other code) with k=2."""
    workspace = world.workspace
    m0 = module_version(workspace, "m0", params=K)
    old = module_version(
        workspace, "m1", inputs=("x",), params=K, source="def run(ctx, x):\n    return 1\n"
    )
    new = module_version(
        workspace,
        "m1",
        inputs=("x",),
        params=K,
        number=2,
        source="def run(ctx, x):\n    return 2\n",
    )
    steps: dict[str, dict[str, Any]] = {
        "s0": {"module_version": m0},
        "s1": {"module_version": old, "inputs": {"x": "s0.out"}},
    }
    va = pipeline_version(workspace, "p", steps)
    vb = pipeline_version(
        workspace, "p", {**steps, "s1": {**steps["s1"], "module_version": new}}, number=2
    )
    shared = {"s0": {"out": (b'{"rows": 10}', "application/json")}}
    a = finish(
        scheduler.run_create(va),
        {
            **shared,
            "s1": {
                "report": (json.dumps({"acc": 0.5, "n": 3}).encode(), "application/json"),
                "table": (parquet([1, 2, 3]), "application/vnd.apache.parquet"),
                "plot": (PNG, "image/png"),
                "log": (b"epoch 1\nepoch 2\n", "text/plain"),
            },
        },
    )
    b = finish(
        scheduler.run_create(vb, param_overrides={"s1.k": 2}),
        {
            **shared,
            "s1": {
                "report": (json.dumps({"n": 3, "acc": 0.75}).encode(), "application/json"),
                "table": (parquet([7, 8]), "application/vnd.apache.parquet"),
                "plot": (PNG + b"\0", "image/png"),
                "extra": (b"only in b", "text/plain"),
            },
        },
    )
    return a, b


@pytest.mark.django_db
def test_run_diff_keeps_its_keys_and_adds_graph_code_and_outputs(
    two_runs: tuple[PipelineRun, PipelineRun],
) -> None:
    a, b = two_runs

    diff = run_diff(a, b)

    assert {"a", "b", "steps", "modules", "params", "metrics", "differences"} <= set(diff)
    assert diff["differences"] == {"params": 1, "modules": 1, "metrics": 1}  # s0 reused
    assert diff["graph"]["unchanged"] == ["s0"]
    assert diff["graph"]["changed"] == [
        {"name": "s1", "changes": ["module m1@1 → m1@2", "params k"]}
    ]
    [code] = diff["code"]
    assert (code["step"], code["a"], code["b"]) == ("s1", "m1@1", "m1@2")
    lines = code["files"][0]["lines"]
    assert {"kind": "del", "text": "-    return 1"} in lines
    assert {"kind": "add", "text": "+    return 2"} in lines
    outputs = {(o["step"], o["output"]): o for o in diff["outputs"]}
    assert list(outputs) == [
        ("s0", "out"),
        ("s1", "log"),
        ("s1", "plot"),
        ("s1", "report"),
        ("s1", "table"),
        ("s1", "extra"),
    ]
    assert outputs[("s0", "out")]["same"] is True
    assert "text_diff" not in outputs[("s0", "out")]  # identical: not read
    report = outputs[("s1", "report")]
    # JSON is compared as sorted, indented JSON: the key order does not count, the value does.
    assert [line["text"] for line in report["text_diff"]["lines"] if line["kind"] != "same"][
        1:
    ] == ['-  "acc": 0.5,', '+  "acc": 0.75,']
    table = outputs[("s1", "table")]
    assert table["show"] == "table"
    assert [c["name"] for c in table["a_preview"]["columns"]] == ["value", "name"]
    assert table["a_preview"]["rows"] == [["1", "r1"], ["2", "r2"], ["3", "r3"]]
    assert table["b_preview"]["row_count"] == 2
    assert outputs[("s1", "plot")]["show"] == "image"
    assert outputs[("s1", "log")]["b"] is None and outputs[("s1", "extra")]["a"] is None
    json.dumps(diff, allow_nan=False, default=str)


@pytest.mark.django_db
def test_run_diff_without_contents_reads_no_output_and_costs_seven_queries(
    two_runs: tuple[PipelineRun, PipelineRun], django_assert_num_queries: Any
) -> None:
    a, b = two_runs
    a = PipelineRun.objects.select_related("pipeline_version__pipeline").get(pk=a.pk)
    b = PipelineRun.objects.select_related("pipeline_version__pipeline").get(pk=b.pk)

    with django_assert_num_queries(7):
        diff = run_diff(a, b, contents=False)

    assert all("text_diff" not in o and "a_preview" not in o for o in diff["outputs"])


@pytest.mark.django_db
def test_compare_page_shows_the_graph_code_and_outputs_side_by_side(
    client: Any, world: Any, two_runs: tuple[PipelineRun, PipelineRun]
) -> None:
    a, b = two_runs
    client.force_login(world.viewer)
    url = reverse("runs:compare", args=["lab"])

    response = client.get(url, {"a": a.pk, "b": b.pk})

    page = response.content.decode()
    assert response.status_code == 200
    assert '<tr class="changed"><th scope="row" class="mono">s1</th>' in page
    assert "module m1@1 → m1@2; params k" in page
    assert '<span class="add">+    return 2</span>' in page
    assert '<span class="add">+  &quot;acc&quot;: 0.75,</span>' in page
    assert '<th scope="col">value<small>int64</small></th>' in page
    assert f'src="/w/lab/artifacts/{png_sha(a)}/image/"' in page
    assert "only in run" not in page  # same steps on both sides
    assert "no such output" in page  # s1.extra exists in b only


def png_sha(run: PipelineRun) -> str:
    return StepRun.objects.get(run=run, name="s1").outputs.get(name="plot").artifact.sha256


@pytest.mark.django_db
def test_compare_page_shows_differing_params_unless_asked_for_all(
    client: Any, world: Any, two_runs: tuple[PipelineRun, PipelineRun]
) -> None:
    a, b = two_runs
    client.force_login(world.viewer)
    url = reverse("runs:compare", args=["lab"])

    differing = client.get(url, {"a": a.pk, "b": b.pk}).content.decode()
    every = client.get(url, {"a": a.pk, "b": b.pk, "params": "all"}).content.decode()

    # Above, the runs' params: those that differ, then the same ones folded away; below,
    # the pair in detail shows only those that differ unless asked for all.
    overview, pair = differing.split('id="pair-title"')
    assert '<tr class="differs"><th scope="row" class="mono">s1.k</th>' in overview
    folded = overview.split('<details class="same-params">')[1]
    assert '<th scope="row" class="mono">s0.k</th>' in folded
    assert '<tr class="differs"><th scope="row" class="mono">s1.k</th>' in pair
    assert '<th scope="row" class="mono">s0.k</th>' not in pair
    assert "Show all 2" in differing
    assert '<tr><th scope="row" class="mono">s0.k</th>' in every
    assert "Show only the 1 that differ" in every
