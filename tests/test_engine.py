"""Runs for real: embedded dramatiq workers, zygote children, the artifact store.

Step bodies are counted by a side effect of the body itself (a line appended to a file
named by a param), never by status rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app import scheduler
from runs_app.dispatch import EmbeddedWorkers
from runs_app.models import (
    Event,
    FailureReason,
    Metric,
    PipelineRun,
    RunStatus,
    StepLog,
    StepRun,
    StepStatus,
)
from runs_app.tasks import execute_step
from tests.helpers import wait_runs

pytestmark = pytest.mark.django_db(transaction=True)

COUNTED = """
def main(ctx, {inputs}*, v: int = 0, marker: str = ""):
    with open(marker, "a") as handle:
        handle.write("{name} %d\\n" % v)
    return {{"out": "{name}-%d|" % v + "{upstream}"}}
"""


def counted_module(workspace: Any, name: str, upstream: bool) -> None:
    source = COUNTED.format(
        inputs="x, " if upstream else "",
        name=name,
        upstream='" + x + "' if upstream else "",
    )
    module_version_create(workspace, name, {"step.py": source}, "step.py:main")


def three_step_pipeline(workspace: Any, marker: Path) -> Any:
    """a -> b -> c, each appending a line to `marker` when its body runs."""
    for name, upstream in (("a", False), ("b", True), ("c", True)):
        counted_module(workspace, name, upstream)
    steps = {
        "a": {"module": "a@latest", "params": {"marker": str(marker)}},
        "b": {"module": "b@latest", "params": {"marker": str(marker)}, "inputs": {"x": "a.out"}},
        "c": {"module": "c@latest", "params": {"marker": str(marker)}, "inputs": {"x": "b.out"}},
    }
    return pipeline_version_create(workspace, "abc", {"steps": steps})


def bodies(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


def steps_of(run: PipelineRun) -> dict[str, StepRun]:
    return {s.name: s for s in StepRun.objects.filter(run=run)}


def test_a_run_executes_every_step_then_an_unchanged_rerun_executes_none(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)

    first = scheduler.run_create(version)
    wait_runs(first)
    second = scheduler.run_create(version)
    wait_runs(second)

    assert first.status == RunStatus.SUCCEEDED
    assert bodies(marker) == ["a 0", "b 0", "c 0"]
    assert second.status == RunStatus.SUCCEEDED
    assert {s.status for s in steps_of(second).values()} == {StepStatus.REUSED}
    c_out = steps_of(second)["c"].outputs.get()
    assert c_out.artifact.media_type.startswith("text/plain")
    assert c_out.artifact_id == steps_of(first)["c"].outputs.get().artifact_id


def test_changing_one_param_of_the_last_step_executes_exactly_that_step(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    wait_runs(scheduler.run_create(version))

    run = scheduler.run_create(version, param_overrides={"c.v": 7})
    wait_runs(run)

    assert bodies(marker) == ["a 0", "b 0", "c 0", "c 7"]
    assert [s.status for s in steps_of(run).values()] == ["reused", "reused", "succeeded"]


def test_the_3x2x3_product_started_at_once_executes_exactly_27_bodies(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)

    runs = [
        scheduler.run_create(version, param_overrides={"a.v": i, "b.v": j, "c.v": k})
        for i in range(3)
        for j in range(2)
        for k in range(3)
    ]
    wait_runs(*runs, timeout=120)

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    lines = bodies(marker)
    assert len(lines) == 27
    per_step = {name: sum(line.startswith(name) for line in lines) for name in "abc"}
    assert per_step == {"a": 3, "b": 6, "c": 18}
    executed = StepRun.objects.filter(run__in=runs, status=StepStatus.SUCCEEDED).count()
    assert executed == 27


def test_a_raising_step_fails_with_its_traceback_and_the_worker_lives_on(world, embedded_workers):
    module_version_create(
        world.workspace,
        "boom",
        {"step.py": "def main(ctx):\n    print('about to fail')\n    raise ValueError('no')\n"},
        "step.py:main",
        interface={"inputs": [], "outputs": ["out"], "params": {}},
    )
    module_version_create(
        world.workspace,
        "after",
        {"step.py": "def main(ctx, x):\n    return {'out': x}\n"},
        "step.py:main",
    )
    module_version_create(
        world.workspace,
        "fine",
        {"step.py": "def main(ctx):\n    return {'out': 'ok'}\n"},
        "step.py:main",
    )
    failing = pipeline_version_create(
        world.workspace,
        "failing",
        {
            "steps": {
                "boom": {"module": "boom@1"},
                "after": {"module": "after@1", "inputs": {"x": "boom.out"}},
            }
        },
    )
    fine = pipeline_version_create(world.workspace, "fine", {"steps": {"f": {"module": "fine@1"}}})

    run = scheduler.run_create(failing)
    wait_runs(run)
    later = scheduler.run_create(fine)
    wait_runs(later)

    assert run.status == RunStatus.FAILED and run.failure_reason == FailureReason.USER_ERROR
    boom, after = steps_of(run)["boom"], steps_of(run)["after"]
    assert boom.failure_reason == FailureReason.USER_ERROR
    assert "ValueError: no" in boom.failure_message
    log = "".join(StepLog.objects.filter(step=boom).values_list("text", flat=True))
    assert "about to fail" in log and "ValueError: no" in log
    assert after.status == StepStatus.FAILED
    assert after.failure_reason == FailureReason.DEPENDENCY_FAILED
    assert later.status == RunStatus.SUCCEEDED


def test_an_undeclared_output_fails_the_step_as_output_invalid(world, embedded_workers):
    module_version_create(
        world.workspace,
        "liar",
        {"step.py": "OUTPUTS = ('out',)\ndef main(ctx):\n    return {'other': 1}\n"},
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace, "liar", {"steps": {"s": {"module": "liar@1"}}}
    )

    run = scheduler.run_create(version)
    wait_runs(run)

    step = steps_of(run)["s"]
    assert step.failure_reason == FailureReason.OUTPUT_INVALID
    assert not step.outputs.exists()


def test_a_step_blocked_in_c_past_its_limit_fails_with_timeout(world, embedded_workers, settings):
    settings.STEPWORKS = {**settings.STEPWORKS, "STEP_TIMEOUT_S": 1.0}
    module_version_create(
        world.workspace,
        "sleeper",
        {
            "step.py": "import ctypes\n\ndef main(ctx):\n"
            "    ctypes.CDLL(None).sleep(60)\n    return {'out': 1}\n"
        },
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace, "sleepy", {"steps": {"s": {"module": "sleeper@1"}}}
    )

    started = time.monotonic()
    run = scheduler.run_create(version)
    wait_runs(run, timeout=30)

    step = steps_of(run)["s"]
    assert step.status == StepStatus.FAILED and step.failure_reason == FailureReason.TIMEOUT
    assert time.monotonic() - started < 30  # killed, not waited out


def test_metrics_are_recorded_with_their_series_index(world, embedded_workers):
    module_version_create(
        world.workspace,
        "metered",
        {
            "step.py": "def main(ctx):\n"
            "    for i in range(3):\n        ctx.log_metric('loss', 1.0 / (i + 1), step=i)\n"
            "    ctx.log_metric('accuracy', 0.9)\n    return {'out': 1}\n"
        },
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace, "metered", {"steps": {"s": {"module": "metered@1"}}}
    )

    run = scheduler.run_create(version)
    wait_runs(run)

    metrics = list(
        Metric.objects.filter(step__run=run)
        .order_by("name", "index")
        .values_list("name", "index", "value")
    )
    assert metrics == [
        ("accuracy", None, 0.9),
        ("loss", 0, 1.0),
        ("loss", 1, 0.5),
        ("loss", 2, 1 / 3),
    ]


def test_a_message_delivered_twice_has_one_outcome(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    run = scheduler.run_create(version)  # no workers yet: the step waits, queued
    first = steps_of(run)["a"]
    execute_step.send(first.pk)
    execute_step.send(first.pk)

    workers = EmbeddedWorkers(threads=2)
    workers.start()
    try:
        wait_runs(run)
    finally:
        workers.stop()

    assert run.status == RunStatus.SUCCEEDED
    assert bodies(marker) == ["a 0", "b 0", "c 0"]
    first.refresh_from_db()
    assert first.attempt == 1 and first.outputs.count() == 1


def test_a_step_queued_while_no_worker_listened_is_dispatched_from_the_database(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    run = scheduler.run_create(version)  # its hint went nowhere: no worker in this process

    workers = EmbeddedWorkers(threads=1)
    workers.start()
    try:
        wait_runs(run)
    finally:
        workers.stop()

    assert run.status == RunStatus.SUCCEEDED and len(bodies(marker)) == 3


def test_a_segfaulting_step_fails_as_process_died_and_a_flood_of_output_is_capped(
    world, embedded_workers, settings
):
    settings.STEPWORKS = {**settings.STEPWORKS, "LOG_MAX_BYTES": 10_000}
    module_version_create(
        world.workspace,
        "crash",
        {
            "step.py": "import ctypes\n\nOUTPUTS = ('out',)\n\n"
            "def main(ctx):\n    ctypes.string_at(0)\n"
        },
        "step.py:main",
    )
    module_version_create(
        world.workspace,
        "chatty",
        {
            "step.py": "def main(ctx):\n    for i in range(200_000):\n"
            "        print('x' * 100)\n    return {'out': 1}\n"
        },
        "step.py:main",
    )
    crash = pipeline_version_create(
        world.workspace, "crash", {"steps": {"s": {"module": "crash@1"}}}
    )
    chatty = pipeline_version_create(
        world.workspace, "chatty", {"steps": {"s": {"module": "chatty@1"}}}
    )

    crashed = scheduler.run_create(crash)
    flooded = scheduler.run_create(chatty)
    wait_runs(crashed, flooded, timeout=60)

    step = steps_of(crashed)["s"]
    assert step.failure_reason == FailureReason.PROCESS_DIED
    assert "SIGSEGV" in step.failure_message
    assert flooded.status == RunStatus.SUCCEEDED
    log = "".join(StepLog.objects.filter(step__run=flooded).values_list("text", flat=True))
    assert len(log.encode()) < 10_000 + 200
    assert log.endswith("[log truncated at 10000 bytes]\n")


def test_a_directory_output_is_stored_as_a_manifest_of_its_files(world, embedded_workers):
    import json

    from artifacts.store import artifact_open

    module_version_create(
        world.workspace,
        "folder",
        {
            "step.py": "from pathlib import Path\n\ndef main(ctx):\n"
            "    out = Path(ctx.work_dir) / 'out'\n    (out / 'sub').mkdir(parents=True)\n"
            "    (out / 'a.txt').write_text('a')\n    (out / 'sub' / 'b.txt').write_text('b')\n"
            "    return {'out': out}\n"
        },
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace, "folder", {"steps": {"s": {"module": "folder@1"}}}
    )

    run = scheduler.run_create(version)
    wait_runs(run)

    artifact = steps_of(run)["s"].outputs.get().artifact
    assert artifact.kind == "directory"
    with artifact_open(artifact) as handle:
        manifest = json.load(handle)
    assert [(f["path"], f["size"]) for f in manifest["files"]] == [("a.txt", 1), ("sub/b.txt", 1)]


# --- step policies: the spec's timeout and retries ---------------------------------------------
FLAKY = """
def main(ctx, *, marker: str = ""):
    with open(marker, "a") as handle:
        handle.write("ran\\n")
    with open(marker) as handle:
        if len(handle.read().splitlines()) < 2:
            raise RuntimeError("flaky: the first try fails")
    return {"out": "ok"}
"""


def test_a_step_whose_policy_retries_user_errors_runs_again_and_succeeds(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "flaky.txt"
    module_version_create(world.workspace, "flaky", {"step.py": FLAKY}, "step.py:main")
    version = pipeline_version_create(
        world.workspace,
        "flaky",
        {
            "steps": {
                "f": {
                    "module": "flaky@1",
                    "params": {"marker": str(marker)},
                    "retries": {"count": 2, "backoff": 0.2, "on": ["user_error"]},
                }
            }
        },
    )

    run = scheduler.run_create(version)
    wait_runs(run)

    step = steps_of(run)["f"]
    assert run.status == RunStatus.SUCCEEDED
    assert (step.attempt, step.retried, step.retries) == (2, 1, 2)
    assert bodies(marker) == ["ran", "ran"]
    retry = Event.objects.get(step=step, new_status=StepStatus.QUEUED, reason="user_error")
    assert retry.message.startswith("retry 1 of 2 in 0.2 s") and "flaky" in retry.message


def test_a_step_past_its_own_timeout_is_retried_as_its_policy_says_then_fails(
    world, embedded_workers
):
    module_version_create(
        world.workspace,
        "sleepy",
        {"step.py": "import time\n\ndef main(ctx):\n    time.sleep(30)\n    return {'out': 1}\n"},
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace,
        "sleepy",
        {
            "steps": {
                "s": {
                    "module": "sleepy@1",
                    "timeout": 0.5,
                    "retries": {"count": 1, "backoff": 0, "on": "timeout"},
                }
            }
        },
    )

    run = scheduler.run_create(version)
    wait_runs(run)

    step = steps_of(run)["s"]
    assert step.timeout_s == 0.5  # the spec's, not the settings' 60 s
    assert (step.status, step.failure_reason) == (StepStatus.FAILED, FailureReason.TIMEOUT)
    assert (step.attempt, step.retried) == (2, 1)
    assert "0.5 s" in step.failure_message
