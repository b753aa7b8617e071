"""manage.py run_pipeline as an operator uses it: the demo, --wait, overrides, bad input."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from runs_app.models import PipelineRun, StepRun

pytestmark = pytest.mark.django_db(transaction=True)


def run_command(*args: str) -> list[str]:
    out = StringIO()
    call_command("run_pipeline", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.fixture
def demo(db):
    call_command("seed_demo", stdout=StringIO())


def test_the_demo_runs_with_wait_and_prints_its_summary_last(demo):
    lines = run_command("demo", "classify", "--wait")

    summary = json.loads(lines[-1])
    assert summary["status"] == "succeeded"
    assert list(summary["steps"]) == ["prep", "augment", "train", "evaluate"]
    for step in summary["steps"].values():
        assert step["status"] == "succeeded" and step["attempts"] == 1
        assert step["reused_from"] is None and step["duration_s"] >= 0
    evaluate = StepRun.objects.get(run_id=summary["run"], name="evaluate")
    assert 0.8 < evaluate.metrics.get(name="accuracy").value <= 1.0

    assert "no worker is serving: running the steps in this process" in lines

    unchanged = run_command("demo", "classify", "--wait")

    # Everything was reused when the run was made: it had ended, and no worker booted.
    assert "no worker is serving: running the steps in this process" not in unchanged
    reused = json.loads(unchanged[-1])
    assert reused["status"] == "succeeded"
    assert {s["reused_from"] for s in reused["steps"].values()} == {summary["run"]}

    again = json.loads(run_command("demo", "classify@1", "--wait", "-p", "train.hidden=32")[-1])

    steps = again["steps"]
    assert [steps[n]["reused_from"] for n in ("prep", "augment")] == [summary["run"]] * 2
    assert steps["train"]["status"] == "succeeded" and steps["evaluate"]["status"] == "succeeded"
    assert PipelineRun.objects.get(pk=again["run"]).param_overrides == {"train.hidden": 32}


def test_without_wait_it_prints_the_run_id_and_returns(demo):
    lines = run_command("demo", "classify")

    assert lines[-1].startswith("run ") and "classify@1" in lines[-1]
    assert PipelineRun.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nowhere", "classify"), "no workspace 'nowhere'"),
        (("demo", "nothing"), "no pipeline version 'nothing'"),
        (("demo", "classify@9"), "no pipeline version 'classify@9'"),
        (("demo", "classify", "-p", "hidden=3"), "write it as STEP.NAME=VALUE"),
        (("demo", "classify", "-p", "train.hidden=big"), "params.train.hidden"),
    ],
)
def test_bad_input_is_one_readable_error_and_starts_nothing(demo, args, message):
    with pytest.raises(CommandError) as error:
        run_command(*args)

    assert message in str(error.value)
    assert error.value.returncode == 2
    assert PipelineRun.objects.count() == 0


def test_a_failed_run_exits_1_after_printing_its_summary(world):
    from pipelines_app.services import module_version_create, pipeline_version_create

    module_version_create(
        world.workspace,
        "boom",
        {"step.py": "OUTPUTS = ('out',)\n\ndef main(ctx):\n    raise RuntimeError('no')\n"},
        "step.py:main",
    )
    pipeline_version_create(world.workspace, "boom", {"steps": {"s": {"module": "boom@1"}}})
    out = StringIO()

    with pytest.raises(CommandError) as error:
        call_command("run_pipeline", "lab", "boom", "--wait", stdout=out)

    assert error.value.returncode == 1
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert summary["status"] == "failed"
    assert summary["steps"]["s"]["failure_reason"] == "user_error"
