"""What many tests share: a fake worker that claims and finishes steps through the real
state machine (no executor, no broker), and polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from artifacts.store import artifact_store_bytes
from runs_app import scheduler
from runs_app.models import RUN_TERMINAL, PipelineRun, StepRun, StepStatus

WORKER = "test-worker"
Outputs = Mapping[str, tuple[bytes, str]]  # {output name: (bytes, media type)}


def api_token(user: Any, name: str = "test") -> str:
    """A new API token (knox) for `user`: its key, which the database does not keep."""
    from workspaces.tokens import token_create

    return token_create(user, name)[1]


def next_queued(*order: str, **filters: Any) -> StepRun | None:
    """The first queued step matching `filters` (e.g. run=..., run__sweep=...)."""
    return StepRun.objects.filter(status=StepStatus.QUEUED, **filters).order_by(*order).first()


def succeed(step: StepRun, outputs: Outputs, metrics: Iterable[Any] = ()) -> bool:
    """Claim `step` and record its success the way a worker does, with these outputs and
    metrics; False when it was not claimable (another attempt has it, or it moved on)."""
    claimed = scheduler.step_claim(step.pk, WORKER)
    if claimed is None:
        return False
    stored = {
        name: artifact_store_bytes(claimed.workspace, data, media_type)
        for name, (data, media_type) in outputs.items()
    }
    assert scheduler.step_succeed(claimed, claimed.attempt, stored, list(metrics))
    return True


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def wait_runs(*runs: PipelineRun | int, timeout: float = 60) -> None:
    """Until every run is terminal (read from the database); runs given as objects are
    refreshed. On timeout, fail with each run's and step's status."""
    ids = [run if isinstance(run, int) else run.pk for run in runs]

    def done() -> bool:
        finished = PipelineRun.objects.filter(pk__in=ids, status__in=RUN_TERMINAL).count()
        return finished == len(ids)

    if not wait_until(done, timeout):
        states = dict(PipelineRun.objects.filter(pk__in=ids).values_list("pk", "status"))
        steps = list(StepRun.objects.filter(run_id__in=ids).values_list("run_id", "name", "status"))
        raise AssertionError(f"runs did not finish in {timeout} s: {states} {steps}")
    for run in runs:
        if isinstance(run, PipelineRun):
            run.refresh_from_db()
