"""The workbench: edit a step of a finished run in the browser, run it again with only it
and its downstream recomputed, see both runs side by side, keep the edit. The interface is
read from the edited text as you type, never run; bad edits write nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from pipelines_app import services
from pipelines_app.models import ModuleVersion, PipelineVersion, VersionOrigin
from runs_app import scheduler
from runs_app.models import PipelineRun, RunStatus, StepStatus
from tests.test_api_support import wait_run

live = pytest.mark.django_db(transaction=True)

# Session, user, the step (with its run and workspace role), its module version; the result
# page adds the two runs and run_diff's seven queries (runs_app.diffs).
QUERIES_EDIT_PAGE = 4
QUERIES_INTERFACE = 4
QUERIES_RESULT_PAGE = 14

PREP = """\
from pathlib import Path

def prep(ctx, *, n: int = 3, trace: str = ""):
    with open(trace, "a") as f:
        f.write("prep\\n")
    return {"data": list(range(n))}
"""

TRAIN = """\
def train(ctx, data, *, scale: float = 2.0, trace: str = ""):
    with open(trace, "a") as f:
        f.write("train\\n")
    ctx.log_metric("score", sum(data) * scale)
    return {"model": {"w": scale}}
"""

EVAL = """\
def evaluate(ctx, model, *, trace: str = ""):
    with open(trace, "a") as f:
        f.write("evaluate\\n")
    ctx.log_metric("quality", model["w"] * 10)
    return {"report": {"w": model["w"]}}
"""


def three_steps(world: Any, trace: Path) -> PipelineRun:
    """prep -> train -> evaluate, run once to the end; each body appends its name to
    `trace`."""
    for name, source, entry in (
        ("prep", PREP, "prep.py:prep"),
        ("train", TRAIN, "train.py:train"),
        ("evaluate", EVAL, "evaluate.py:evaluate"),
    ):
        services.module_version_create(world.workspace, name, {entry.split(":")[0]: source}, entry)
    spec = f"""\
steps:
  prep: {{module: prep@1, params: {{trace: '{trace}'}}}}
  train: {{module: train@1, inputs: {{data: prep.data}}, params: {{trace: '{trace}'}}}}
  evaluate: {{module: evaluate@1, inputs: {{model: train.model}}, params: {{trace: '{trace}'}}}}
"""
    version = services.pipeline_version_create(world.workspace, "loop", spec, "first")
    run = scheduler.run_create(version, user=world.editor)
    wait_run(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    trace.write_text("")
    return run


def latest_of(pipeline: str) -> PipelineVersion:
    """The version `@latest` means."""
    versions = PipelineVersion.objects.filter(pipeline__name=pipeline).mainline()
    return versions.order_by("-number").first()


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(run: PipelineRun, step: str, suffix: str = "") -> str:
    return f"/w/lab/runs/{run.pk}/steps/{step}/workbench/{suffix}"


def check(client: Client, run: PipelineRun, step: str, files: dict[str, str]) -> Any:
    return client.post(
        url(run, step, "interface/"), json.dumps({"files": files}), content_type="application/json"
    )


@live
def test_edit_run_compare_keep(world, embedded_workers, tmp_path):
    trace = tmp_path / "trace"
    run = three_steps(world, trace)
    editor = browser(world.editor)

    page = editor.get(url(run, "train"))
    assert page.status_code == 200
    assert 'name="file:train.py"' in page.content.decode() and "scale: float = 2.0" in (
        page.content.decode()
    )
    edited = TRAIN.replace("sum(data) * scale", "sum(data) * scale + 1")
    # CRLF, as a browser posts a textarea: the stored code keeps LF.
    posted = editor.post(
        url(run, "train"),
        {"file:train.py": edited.replace("\n", "\r\n"), "train.scale": "2.5", "train.n": ""},
    )
    assert posted.status_code == 302, posted.content.decode()[:2000]
    tried = PipelineRun.objects.exclude(pk=run.pk).get()
    assert posted["Location"] == f"/w/lab/runs/{tried.pk}/workbench/"
    wait_run(tried.pk)
    tried.refresh_from_db()

    # Only the edited step and its downstream ran; prep was reused from the first run.
    assert tried.status == RunStatus.SUCCEEDED
    assert trace.read_text().split() == ["train", "evaluate"]
    statuses = dict(tried.steps.values_list("name", "status"))
    assert statuses == {
        "prep": StepStatus.REUSED,
        "train": StepStatus.SUCCEEDED,
        "evaluate": StepStatus.SUCCEEDED,
    }
    new = ModuleVersion.objects.get(module__name="train", number=2)
    assert new.files == {"train.py": edited} and new.parent.number == 1
    tried_version = tried.pipeline_version
    assert tried_version.origin == VersionOrigin.WORKBENCH
    assert tried_version.parent_id == run.pipeline_version_id
    assert tried_version.spec["steps"]["train"]["params"]["scale"] == 2.5
    # A try is not the pipeline's latest: pipelines pinning @latest do not move.
    assert latest_of("loop").pk == run.pipeline_version_id

    # Side by side: both runs' metrics, the delta, and the code diff.
    result = editor.get(f"/w/lab/runs/{tried.pk}/workbench/").content.decode()
    assert 'data-finished="true"' in result
    assert "train.score" in result and "6" in result and "8.5" in result  # 3*2 vs 3*2.5+1
    assert "evaluate.quality" in result and "+5" in result  # 20 -> 25
    assert "sum(data) * scale + 1" in result
    assert 'id="workbench-keep"' in result

    kept = editor.post(f"/w/lab/runs/{tried.pk}/keep/")
    assert kept.status_code == 302
    latest = latest_of("loop")
    assert kept["Location"] == f"/w/lab/pipelines/loop/{latest.number}/"
    assert latest.origin == VersionOrigin.USER and latest.parent_id == run.pipeline_version_id
    assert latest.spec["steps"] == tried_version.spec["steps"]
    assert latest.spec["steps"]["train"]["module"] == "train@2"
    assert "kept from the workbench" in latest.message


@live
def test_the_interface_is_read_as_you_type_and_never_run(world, embedded_workers, tmp_path):
    run = three_steps(world, tmp_path / "trace")
    editor = browser(world.editor)
    marker = tmp_path / "ran"

    good = check(
        editor,
        run,
        "train",
        {
            "train.py": f"open({str(marker)!r}, 'w')\n"
            + TRAIN.replace("trace: str", "epochs: int = 5, trace: str")
        },
    )
    broken = check(editor, run, "train", {"train.py": "def train(ctx, data:\n    return {}\n"})
    not_json = editor.post(url(run, "train", "interface/"), "{", content_type="application/json")
    wrong = check(editor, run, "train", {"train.py": 3})  # type: ignore[dict-item]

    assert good.status_code == 200 and good.json()["ok"] is True
    interface = good.json()["interface"]
    assert interface["params"]["epochs"] == {"type": "int", "default": 5, "required": False}
    assert interface["inputs"] == ["data"] and interface["outputs"] == ["model"]
    assert not marker.exists()  # read with ast, never executed
    assert broken.status_code == 200 and broken.json()["ok"] is False
    [problem] = broken.json()["problems"]
    assert problem["file"] == "train.py" and problem["line"] == 1
    assert "syntax error" in problem["message"]
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    assert wrong.status_code == 400 and "files" in wrong.json()["error"]


@live
def test_a_bad_edit_is_a_400_that_writes_nothing(world, embedded_workers, tmp_path):
    run = three_steps(world, tmp_path / "trace")
    editor = browser(world.editor)
    modules, versions = ModuleVersion.objects.count(), PipelineVersion.objects.count()

    syntax = editor.post(url(run, "train"), {"file:train.py": "def train(ctx, data:\n"})
    # The edit no longer returns `model`, which evaluate reads.
    breaking = editor.post(
        url(run, "train"), {"file:train.py": TRAIN.replace('"model"', '"weights"')}
    )
    bad_param = editor.post(url(run, "train"), {"file:train.py": TRAIN, "train.scale": "lots"})

    assert syntax.status_code == 400
    assert "train.py</span>, line 1" in syntax.content.decode()
    assert breaking.status_code == 400
    assert "model" in breaking.content.decode()
    assert bad_param.status_code == 400 and "scale" in bad_param.content.decode()
    assert ModuleVersion.objects.count() == modules
    assert PipelineVersion.objects.count() == versions
    assert PipelineRun.objects.count() == 1
    # The page kept what was typed, to fix it.
    assert "def train(ctx, data:" in syntax.content.decode()


@live
def test_viewers_read_the_code_and_cannot_run_it(world, embedded_workers, tmp_path):
    run = three_steps(world, tmp_path / "trace")
    viewer = browser(world.viewer)

    page = viewer.get(url(run, "train")).content.decode()
    step_page = viewer.get(f"/w/lab/runs/{run.pk}/steps/train/").content.decode()

    assert "read-only" in page and 'data-readonly="true"' in page
    assert " readonly>" in page and 'id="workbench-run"' not in page
    assert "Edit and rerun" not in step_page and "The step's code" in step_page
    assert viewer.post(url(run, "train"), {"file:train.py": TRAIN}).status_code == 403
    assert check(viewer, run, "train", {"train.py": TRAIN}).status_code == 403
    assert PipelineRun.objects.count() == 1


@live
def test_a_running_run_cannot_be_tried_and_only_a_succeeded_try_is_kept(
    world, embedded_workers, tmp_path
):
    run = three_steps(world, tmp_path / "trace")
    editor = browser(world.editor)
    PipelineRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)  # as if it were

    refused = editor.post(url(run, "train"), {"file:train.py": TRAIN})
    not_a_try = editor.post(f"/w/lab/runs/{run.pk}/keep/")
    not_a_try_page = editor.get(f"/w/lab/runs/{run.pk}/workbench/")

    assert refused.status_code == 409 and "still running" in refused.content.decode()
    assert PipelineRun.objects.count() == 1
    assert not_a_try.status_code == 404 and not_a_try_page.status_code == 404

    PipelineRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    failing = TRAIN.replace("    return", "    raise ValueError('nope')\n    return")
    editor.post(url(run, "train"), {"file:train.py": failing})
    tried = PipelineRun.objects.exclude(pk=run.pk).get()
    wait_run(tried.pk)
    result = editor.get(f"/w/lab/runs/{tried.pk}/workbench/").content.decode()
    keep = editor.post(f"/w/lab/runs/{tried.pk}/keep/")

    assert "Only a run that succeeded can be kept" in result
    assert keep.status_code == 409 and "only a run that succeeded" in keep.content.decode()
    assert PipelineVersion.objects.filter(origin=VersionOrigin.USER).count() == 1


@live
def test_the_workbench_pages_cost_a_fixed_number_of_queries(
    world, embedded_workers, tmp_path, django_assert_num_queries
):
    run = three_steps(world, tmp_path / "trace")
    editor = browser(world.editor)
    editor.post(url(run, "train"), {"file:train.py": TRAIN, "train.scale": "3"})
    tried = PipelineRun.objects.exclude(pk=run.pk).get()
    wait_run(tried.pk)
    editor.get("/")  # the session's first request loads the user once

    with django_assert_num_queries(QUERIES_EDIT_PAGE):
        assert editor.get(url(run, "train")).status_code == 200
    with django_assert_num_queries(QUERIES_INTERFACE):
        assert check(editor, run, "train", {"train.py": TRAIN}).status_code == 200
    with django_assert_num_queries(QUERIES_RESULT_PAGE):
        assert editor.get(f"/w/lab/runs/{tried.pk}/workbench/").status_code == 200
