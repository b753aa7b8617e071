"""Queues by resource: a step's spec names a queue; only the workers serving it take it, and
while none does the step waits (said on its page and in the API), never failed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.utils import timezone

from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app import dispatch, fleet, reaper, scheduler
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.models import StepRun, StepStatus, WorkerHeartbeat
from workspaces.errors import DomainError


@pytest.fixture
def gpu(settings: Any) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "QUEUES": ["gpu"]}


def gpu_pipeline(workspace: Any) -> Any:
    module_version_create(
        workspace, "fit", {"step.py": "def main(ctx):\n    return {'out': 1}\n"}, "step.py:main"
    )
    return pipeline_version_create(
        workspace,
        "fit",
        {"steps": {"fit": {"module": "fit@1", "resources": {"queue": "gpu", "gpus": 1}}}},
    )


def beat(queues: list[str]) -> None:
    """A live worker consuming `queues`."""
    WorkerHeartbeat.objects.create(
        host="h", pid=WorkerHeartbeat.objects.count() + 1, runtime=runtime_fingerprint(),
        queues=queues, last_seen=timezone.now(),
    )  # fmt: skip


def test_a_step_naming_a_queue_no_worker_knows_is_refused_with_its_path(world: Any) -> None:
    version = gpu_pipeline(world.workspace)

    with pytest.raises(DomainError) as caught:
        scheduler.run_create(version)

    assert caught.value.code == "invalid_queue"
    assert "steps.fit.resources.queue" in caught.value.fields
    assert StepRun.objects.count() == 0


def test_a_step_of_a_resource_queue_is_sent_to_that_queue(world: Any, gpu: None) -> None:
    run = scheduler.run_create(gpu_pipeline(world.workspace))
    step = run.steps.get()
    assert (step.queue, step.resources) == ("gpu", {"queue": "gpu", "gpus": 1})
    broker = dramatiq.get_broker()
    gpu_queue = f"{settings.QUEUE_PREFIX}.gpu"

    dispatch._send([step.pk])

    assert broker.queues[gpu_queue].qsize() >= 1
    message = broker.queues[gpu_queue].get_nowait()
    assert dramatiq.Message.decode(message).args == (step.pk,)


def test_a_step_waits_for_a_worker_on_its_queue_and_is_not_failed(world: Any, gpu: None) -> None:
    run = scheduler.run_create(gpu_pipeline(world.workspace))
    step = run.steps.get()
    beat([f"{settings.QUEUE_PREFIX}.steps"])  # a live worker, but not on the gpu queue
    StepRun.objects.filter(pk=step.pk).update(queued_at=timezone.now() - timedelta(seconds=60))
    step.refresh_from_db()

    assert fleet.waiting_for(step) == "waiting for a worker on queue gpu"
    reaper.reap()
    step.refresh_from_db()
    assert step.status == StepStatus.QUEUED

    beat([f"{settings.QUEUE_PREFIX}.gpu"])
    assert fleet.waiting_for(step) == ""


def test_the_step_page_and_api_say_what_a_step_waits_for(
    client: Any, world: Any, gpu: None
) -> None:
    run = scheduler.run_create(gpu_pipeline(world.workspace))
    client.force_login(world.owner)

    page = client.get(f"/w/lab/runs/{run.pk}/steps/fit/")
    api = client.get(f"/api/v1/workspaces/lab/runs/{run.pk}/steps/fit/")

    assert "Waiting for a worker on queue gpu" in page.content.decode()
    assert api.json()["waiting_for"] == "waiting for a worker on queue gpu"
    assert api.json()["resources"] == {"queue": "gpu", "gpus": 1}


def test_a_workspace_at_its_cap_runs_no_more_steps_until_one_ends(
    world: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from artifacts.store import artifact_store_bytes
    from tests.factories import module_version, pipeline_version

    settings.STEPWORKS = {**settings.STEPWORKS, "MAX_RUNNING_STEPS_PER_WORKSPACE": 1}
    mv = module_version(world.workspace, "leaf")
    version = pipeline_version(world.workspace, "one", {"s": {"module_version": mv}})
    first, second = (scheduler.run_create(version, reuse=False).steps.get() for _ in range(2))
    other_mv = module_version(world.other_workspace, "leaf")
    elsewhere = scheduler.run_create(
        pipeline_version(world.other_workspace, "one", {"s": {"module_version": other_mv}})
    ).steps.get()
    hinted: list[int] = []

    def record(sender: Any, step_ids: list[int], **kwargs: Any) -> None:
        hinted.extend(step_ids)

    claimed = scheduler.step_claim(first.pk, "w")
    assert claimed is not None
    assert scheduler.step_claim(second.pk, "w") is None  # the workspace's one place is taken
    assert scheduler.step_claim(elsewhere.pk, "w") is not None  # another workspace's is not
    second.refresh_from_db()
    assert second.status == StepStatus.QUEUED

    scheduler.steps_queued.connect(record)
    try:
        out = {"out": artifact_store_bytes(world.workspace, b"1", "application/json")}
        with django_capture_on_commit_callbacks(execute=True):
            scheduler.step_succeed(claimed, claimed.attempt, out, [])
    finally:
        scheduler.steps_queued.disconnect(record)

    assert hinted == [second.pk]  # its message was spent on the refusal: hinted again
    assert scheduler.step_claim(second.pk, "w") is not None


def test_a_broker_that_refuses_the_messages_fails_no_request(
    world: Any,
    settings: Any,
    monkeypatch: Any,
    caplog: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """A broker restarting when a run is created: the run and its queued steps are
    committed, the request succeeds, and the reaper sends the messages that never went."""
    module_version_create(
        world.workspace, "fit", {"step.py": "def main(ctx):\n    return {'out': 1}\n"},
        "step.py:main",
    )  # fmt: skip
    version = pipeline_version_create(world.workspace, "one", {"steps": {"s": {"module": "fit@1"}}})
    settings.BROKER_URL = "redis://127.0.0.1:9/0"  # a real broker's path: dispatch._send
    broker = dramatiq.get_broker()

    def refuse(message: Any, *, delay: Any = None) -> None:
        raise dramatiq.errors.ConnectionClosed(OSError("connection refused"))

    monkeypatch.setattr(broker, "enqueue", refuse)

    with django_capture_on_commit_callbacks(execute=True) as sent:
        run = scheduler.run_create(version)

    assert sent  # the hint was tried, and refused
    assert run.steps.get().status == StepStatus.QUEUED
    assert "the reaper resends them" in caplog.text
