"""A worker process's services as it boots: the reaper works before the zygotes are up."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from runs_app import scheduler
from runs_app.models import StepRun, StepStatus
from runs_app.worker import WorkerServices
from tests.factories import chain
from tests.helpers import wait_until


@pytest.mark.django_db(transaction=True)
def test_a_booting_worker_reaps_before_its_zygotes_are_up(world: Any) -> None:
    run = scheduler.run_create(chain(world.workspace))
    lost = scheduler.step_claim(StepRun.objects.get(run=run, name="s0").pk, "gone:1")
    assert lost is not None
    StepRun.objects.filter(pk=lost.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=60)
    )
    services = WorkerServices()
    booted = threading.Event()
    boot = services.executor.start

    def slow_boot() -> None:  # the zygotes take as long as this test wants
        booted.wait(30)
        boot()

    services.executor.start = slow_boot  # type: ignore[method-assign]

    def start() -> None:
        try:
            services.start()
        finally:
            connection.close()

    starter = threading.Thread(target=start)
    starter.start()
    try:
        requeued = wait_until(
            lambda: StepRun.objects.filter(pk=lost.pk, status=StepStatus.QUEUED).exists(), 20
        )
        assert requeued, "the reaper did nothing while the worker booted"
        assert services.executor.zygote_pids() == {"light": None, "scientific": None}
    finally:
        booted.set()
        starter.join(60)
        services.stop()
