"""Recovery, beside the scheduler: find what a dead worker or a lost message left behind and
hand each case to its transition in runs_app/scheduler.py (the only writer of status).

Every worker runs `reap()` every REAPER_S (so does `manage.py reaper`); it never depends on
the broker, and two reapers at once are safe: every transition is fenced by status.
Leases are here too: a worker renews all of its leases in one UPDATE per heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from artifacts.store import artifact_storage
from runs_app import hints, scheduler
from runs_app.fleet import live_servers, serves
from runs_app.models import (
    STEP_IN_FLIGHT,
    STEP_TERMINAL,
    PipelineRun,
    RunStatus,
    StepRun,
    StepStatus,
    Sweep,
    WorkerHeartbeat,
)
from workspaces.conf import engine

ORPHAN_SWEEP_EVERY_S = 3600.0
_orphans_swept_at: float | None = None


def reap(now: Any = None) -> dict[str, int]:
    """Recover, and count what was recovered:

    - running steps whose lease expired: requeued while attempts remain, else failed with
      worker_lost_repeatedly (a killed worker counts as an attempt);
    - queued steps no live worker's runtime can take: failed with runtime_mismatch;
    - queued steps nobody claimed for a lease: dispatched again (duplicates claim nothing);
    - followers of a finished leader: released;
    - running runs with no step in flight: advanced (a crash between a step's end and the
      run's advance);
    - sweeps whose expander stopped before every combination had its run: sent to the
      expand_sweep actor again;
    - heartbeat rows of workers silent for STEPWORKS_WORKER_FORGET_S: deleted (a killed
      worker never deletes its own; the steps it ran keep their `lost_workers`).
    """
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "redispatched": 0, "released": 0, "advanced": 0}
    counts["orphans"] = _collect_orphans()
    for step in StepRun.objects.filter(status=StepStatus.RUNNING, lease_expires_at__lt=now):
        outcome = scheduler.step_lease_lost(step, now)
        if outcome is not None:
            counts[outcome] += 1
    counts["runtime_mismatch"] = _fail_unclaimable(now)  # before the redispatch renews them
    lost = _lost_messages(now)
    if lost:
        scheduler.steps_redispatch(lost, now)
        counts["redispatched"] = len(lost)
    # Belt and braces: a leader's terminal transition releases its followers; this releases
    # any it missed, so no run waits on a finished leader.
    orphans = StepRun.objects.filter(
        status=StepStatus.FOLLOWING, following__status__in=STEP_TERMINAL
    )
    for leader_id in set(orphans.values_list("following_id", flat=True)):
        counts["released"] += scheduler.followers_release(leader_id)
    idle_runs = PipelineRun.objects.filter(status=RunStatus.RUNNING).exclude(
        Q(steps__status__in=STEP_IN_FLIGHT)
    )
    for run_id in idle_runs.values_list("pk", flat=True).distinct():
        scheduler.run_advance(run_id)
        counts["advanced"] += 1
    counts["sweeps_resumed"] = _resume_sweeps(now)
    forget = now - timedelta(seconds=engine().worker_forget_s)
    counts["workers_forgotten"] = WorkerHeartbeat.objects.filter(last_seen__lt=forget).delete()[0]
    return counts


def _resume_sweeps(now: Any) -> int:
    """Send the expand_sweep actor again for each sweep whose expander went quiet (no
    heartbeat for a lease) with combinations still lacking runs; at most once a lease."""
    stale = now - timedelta(seconds=engine().lease_s)
    quiet = Sweep.objects.filter(
        expanded_at__isnull=True, canceled_at__isnull=True, expanding_at__lt=stale
    )
    ids = list(quiet.values_list("pk", flat=True))
    if ids:
        Sweep.objects.filter(pk__in=ids).update(expanding_at=now)
        hints.sweeps_due.send(__name__, sweep_ids=ids)
    return len(ids)


def _lost_messages(now: Any) -> list[int]:
    """Queued steps whose message can be presumed lost: queued longer than the dispatch
    horizon, a lease while the fleet keeps up, longer as the queue outgrows what the live
    workers run at once (each waits its turn: a lease per round of the queue). A step that
    merely waits behind busy workers is not sent again (on RabbitMQ a kill storm once
    re-sent hundreds, whose duplicates then queued ahead of real work)."""
    lease = engine().lease_s
    due = Q(not_before__isnull=True) | Q(not_before__lt=now)  # a retry's backoff is no loss
    queued = StepRun.objects.filter(due, status=StepStatus.QUEUED).order_by()
    fresh = now - timedelta(seconds=3 * engine().heartbeat_s)
    capacity = (
        WorkerHeartbeat.objects.filter(last_seen__gte=fresh).aggregate(n=Sum("threads"))["n"] or 1
    )
    rounds = max(1.0, queued.count() / capacity)
    horizon = now - timedelta(seconds=lease * rounds)
    return list(queued.filter(queued_at__lt=horizon).values_list("pk", flat=True))


def _collect_orphans() -> int:
    """Temp files a crashed artifact writer left behind (filesystem storage only), looked
    for once an hour per process: it walks the whole store."""
    global _orphans_swept_at
    if (
        _orphans_swept_at is not None
        and time.monotonic() - _orphans_swept_at < ORPHAN_SWEEP_EVERY_S
    ):
        return 0
    _orphans_swept_at = time.monotonic()
    collect = getattr(artifact_storage(), "collect_orphans", None)
    return collect() if collect is not None else 0


def _fail_unclaimable(now: Any) -> int:
    """Fail queued steps that the live workers serving their queue can all not take (their
    runtime differs), after a lease of grace. A step whose queue no live worker serves is
    not failed: it waits for one (its page says so)."""
    live = live_servers(now)
    if not live:
        return 0  # nobody is alive to judge; the steps wait for a worker
    stale = now - timedelta(seconds=engine().lease_s)
    failed = 0
    for step in StepRun.objects.filter(status=StepStatus.QUEUED, queued_at__lt=stale):
        runtimes = {runtime for runtime, queues in live if serves(queues, step.queue)}
        runtime = step.runtime or step.key_parts.get("runtime")
        if runtimes and runtime and runtime not in runtimes:
            failed += scheduler.step_unclaimable(step, runtime, now)
    return failed


def leases_renew(
    worker: str, attempts: Iterable[tuple[int, int]], now: Any = None
) -> list[tuple[int, int]]:
    """One UPDATE renews the leases of exactly the attempts a worker is executing now, as
    (step, attempt) pairs: never a row that merely bears its name (an attempt whose result
    it could not record, and gave up on, is the reaper's). Returns the pairs whose cancel
    was requested, so the worker can kill them."""
    pairs = list(attempts)
    if not pairs:
        return []
    now = now or timezone.now()
    mine = Q()
    for step_id, attempt in pairs:
        mine |= Q(pk=step_id, attempt=attempt)
    running = StepRun.objects.filter(mine, worker=worker, status=StepStatus.RUNNING)
    running.update(lease_expires_at=now + timedelta(seconds=engine().lease_s))
    return list(running.filter(cancel_requested=True).values_list("pk", "attempt"))
