"""The state machine, driven as a worker would drive it (claim, succeed, fail), without
executing any code: reuse, in-flight dedup, fencing, the reaper, cancel."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from artifacts.models import Artifact
from artifacts.store import artifact_open, artifact_save, artifact_storage, artifact_store_bytes
from runs_app import reaper, scheduler
from runs_app.gc import unreferenced
from runs_app.models import (
    Event,
    FailureReason,
    PipelineRun,
    RunStatus,
    StepOutput,
    StepRun,
    StepStatus,
)
from tests.factories import chain
from tests.helpers import next_queued, succeed
from workspaces.errors import DomainError

S = StepStatus


def steps_of(run: PipelineRun) -> dict[str, StepRun]:
    return {s.name: s for s in StepRun.objects.filter(run=run)}


def statuses(run: PipelineRun) -> dict[str, str]:
    return {name: s.status for name, s in steps_of(run).items()}


def work(step: StepRun, payload: bytes = b"1") -> bool:
    """Claim and succeed a queued step the way a worker does; True if it claimed."""
    return succeed(step, {"out": (payload + step.name.encode(), "application/json")})


def drain(run: PipelineRun) -> int:
    """Work every queued step of the run until none is left; returns bodies 'executed'."""
    executed = 0
    while (queued := next_queued("position", run=run)) is not None:
        executed += work(queued)
    return executed


@pytest.fixture
def version(world):
    return chain(world.workspace)


def test_run_create_queues_the_first_step_and_keeps_the_rest_pending(version):
    run = scheduler.run_create(version)

    assert run.status == RunStatus.RUNNING
    assert statuses(run) == {"s0": S.QUEUED, "s1": S.PENDING, "s2": S.PENDING}
    first = steps_of(run)["s0"]
    assert first.params == {"k": 0}
    assert len(first.cache_key) == 64 and set(first.key_parts) == {
        "code",
        "params",
        "inputs",
        "runtime",
    }
    assert list(Event.objects.filter(run=run).values_list("old_status", "new_status")) == [
        ("pending", "running"),
        ("pending", "queued"),
    ]


def test_a_chain_runs_in_order_and_the_run_succeeds(version):
    run = scheduler.run_create(version)

    assert drain(run) == 3

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.finished_at is not None
    s1 = steps_of(run)["s1"]
    assert s1.inputs.get().artifact.producers.filter(step__name="s0").exists()


def test_a_duplicate_claim_claims_nothing(version):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]

    first = scheduler.step_claim(step.pk, "w1")
    second = scheduler.step_claim(step.pk, "w2")

    assert first is not None and first.attempt == 1
    assert second is None


def test_an_unchanged_rerun_reuses_every_step_and_executes_none(version):
    first = scheduler.run_create(version)
    drain(first)

    second = scheduler.run_create(version)

    assert statuses(second) == {"s0": S.REUSED, "s1": S.REUSED, "s2": S.REUSED}
    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED
    assert {s.reused_from.run_id for s in steps_of(second).values()} == {first.pk}


def test_changing_the_last_steps_param_executes_only_that_step(version):
    drain(scheduler.run_create(version))

    run = scheduler.run_create(version, param_overrides={"s2.k": 5})

    assert statuses(run) == {"s0": S.REUSED, "s1": S.REUSED, "s2": S.QUEUED}
    assert drain(run) == 1


def test_params_hash_alike_after_coercion(world):
    from tests.factories import module_version, pipeline_version

    mv = module_version(
        world.workspace, "f", params={"lr": {"type": "float", "required": False, "default": 1.0}}
    )
    version = pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    one = scheduler.run_create(version, param_overrides={"a.lr": 1})
    other = scheduler.run_create(version, param_overrides={"a.lr": 1.0}, reuse=False)

    assert steps_of(one)["a"].params == {"lr": 1.0}
    assert steps_of(one)["a"].cache_key == steps_of(other)["a"].cache_key


def test_a_bad_override_is_a_clear_error_and_writes_nothing(version):
    with pytest.raises(DomainError) as error:
        scheduler.run_create(version, param_overrides={"s1.k": "many", "nope.k": 1, "x": 2})

    assert set(error.value.fields) == {"params.s1.k", "params.nope.k", "params.x"}
    assert PipelineRun.objects.count() == 0 and StepRun.objects.count() == 0


def test_an_identical_step_in_flight_is_followed_then_reused(version):
    leader_run = scheduler.run_create(version)
    follower_run = scheduler.run_create(version)

    leader = steps_of(leader_run)["s0"]
    follower = steps_of(follower_run)["s0"]
    assert follower.status == S.FOLLOWING and follower.following_id == leader.pk

    work(leader)

    follower.refresh_from_db()
    assert follower.status == S.REUSED and follower.reused_from_id == leader.pk
    # Both runs' next steps are identical too: one leads, the other follows.
    assert statuses(leader_run) == {"s0": S.SUCCEEDED, "s1": S.QUEUED, "s2": S.PENDING}
    assert statuses(follower_run) == {"s0": S.REUSED, "s1": S.FOLLOWING, "s2": S.PENDING}
    executed = drain(leader_run) + drain(follower_run)
    assert executed == 2
    for run in (leader_run, follower_run):
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED


def test_the_schema_allows_one_leader_per_key(version):
    run = scheduler.run_create(version)
    leader = steps_of(run)["s0"]
    other = scheduler.run_create(version, reuse=False)
    forced = steps_of(other)["s0"]

    # A forced step is not a leader: it may run beside the leader.
    assert forced.status == S.QUEUED and forced.cache_key == leader.cache_key
    third = scheduler.run_create(version)
    sneaky = steps_of(third)["s0"]
    with pytest.raises(IntegrityError), transaction.atomic():
        StepRun.objects.filter(pk=sneaky.pk).update(status=S.QUEUED, following=None)


def test_when_the_leader_fails_its_follower_runs_itself(version):
    leader_run = scheduler.run_create(version)
    follower_run = scheduler.run_create(version)
    leader = scheduler.step_claim(steps_of(leader_run)["s0"].pk, "w1")

    scheduler.step_fail(leader, leader.attempt, FailureReason.USER_ERROR, "boom")

    assert statuses(leader_run) == {
        "s0": S.FAILED,
        "s1": S.FAILED,
        "s2": S.FAILED,
    }
    follower = steps_of(follower_run)["s0"]
    assert follower.status == S.QUEUED and follower.following_id is None
    leader_run.refresh_from_db()
    assert leader_run.status == RunStatus.FAILED
    assert leader_run.failure_reason == FailureReason.USER_ERROR
    assert steps_of(leader_run)["s1"].failure_reason == FailureReason.DEPENDENCY_FAILED


def test_a_stale_attempt_cannot_overwrite_a_newer_one(version, settings):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    old = scheduler.step_claim(step.pk, "w1")
    StepRun.objects.filter(pk=step.pk).update(lease_expires_at=timezone.now() - timedelta(1))

    counts = reaper.reap()
    new = scheduler.step_claim(step.pk, "w2")

    assert counts["requeued"] == 1
    assert new is not None and new.attempt == 2
    out = artifact_store_bytes(step.workspace, b"late", "application/json")
    assert not scheduler.step_succeed(old, old.attempt, {"out": out}, [])
    assert scheduler.step_succeed(new, new.attempt, {"out": out}, [])
    step.refresh_from_db()
    assert step.status == S.SUCCEEDED and step.attempt == 2


def test_a_step_lost_on_every_attempt_fails_with_worker_lost_repeatedly(version):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    for _ in range(step.max_attempts):
        assert scheduler.step_claim(step.pk, "doomed") is not None
        StepRun.objects.filter(pk=step.pk).update(lease_expires_at=timezone.now() - timedelta(1))
        reaper.reap()

    step.refresh_from_db()
    assert step.status == S.FAILED
    assert step.failure_reason == FailureReason.WORKER_LOST_REPEATEDLY
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_the_reaper_redispatches_a_queued_step_nobody_claimed(version, settings):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    long_ago = timezone.now() - timedelta(seconds=settings.STEPWORKS["LEASE_S"] + 1)
    StepRun.objects.filter(pk=step.pk).update(queued_at=long_ago)

    counts = reaper.reap()

    assert counts["redispatched"] == 1
    step.refresh_from_db()
    assert step.queued_at > long_ago and step.status == S.QUEUED


def test_cancel_stops_pending_steps_now_and_running_ones_through_their_worker(version):
    run = scheduler.run_create(version)
    running = scheduler.step_claim(steps_of(run)["s0"].pk, "w1")

    assert scheduler.run_cancel(run.pk)

    assert statuses(run) == {"s0": S.RUNNING, "s1": S.CANCELED, "s2": S.CANCELED}
    assert reaper.leases_renew("w1", [(running.pk, running.attempt)]) == [
        (running.pk, running.attempt)
    ]
    scheduler.step_cancel_running(running, running.attempt)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert not scheduler.run_cancel(run.pk)


def test_rerun_from_a_step_forces_it_and_its_downstream(version):
    drain(scheduler.run_create(version))

    run = scheduler.run_create(version, force_steps=["s1"])

    assert statuses(run) == {"s0": S.REUSED, "s1": S.QUEUED, "s2": S.PENDING}
    assert drain(run) == 2


def test_no_reuse_executes_everything(version):
    drain(scheduler.run_create(version))

    run = scheduler.run_create(version, reuse=False)

    assert drain(run) == 3


def test_every_transition_is_in_the_table():
    for sources, target in [*scheduler.STEP_TRANSITIONS.values()]:
        assert target in S.values and all(s in S.values for s in sources)
    for sources, target in scheduler.RUN_TRANSITIONS.values():
        assert target in RunStatus.values and all(s in RunStatus.values for s in sources)


def test_rerun_links_to_the_old_run_and_reuses_what_succeeded(version):
    from runs_app.services import run_rerun

    first = scheduler.run_create(version, param_overrides={"s1.k": 3})
    drain(first)

    again = run_rerun(first)
    partial = run_rerun(first, from_step="s2")

    assert again.rerun_of_id == first.pk and again.param_overrides == {"s1.k": 3}
    assert set(statuses(again).values()) == {S.REUSED}
    assert statuses(partial) == {"s0": S.REUSED, "s1": S.REUSED, "s2": S.QUEUED}


def test_the_reaper_releases_a_follower_whose_leader_already_finished(version):
    from runs_app.models import StepOutput

    leader_run = scheduler.run_create(version)
    follower_run = scheduler.run_create(version)
    leader = steps_of(leader_run)["s0"]
    # The race the leader lock prevents: the leader finished without releasing its follower.
    out = artifact_store_bytes(leader.workspace, b"x", "application/json")
    StepOutput.objects.create(step=leader, name="out", artifact=out)
    StepRun.objects.filter(pk=leader.pk).update(status=S.SUCCEEDED, finished_at=timezone.now())

    counts = reaper.reap()

    assert counts["released"] == 1
    assert steps_of(follower_run)["s0"].status == S.REUSED
    assert statuses(follower_run)["s1"] == S.QUEUED


def test_a_worker_of_another_runtime_refuses_the_step_and_the_reaper_fails_it(version, settings):
    from runs_app.models import WorkerHeartbeat

    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    assert scheduler.step_claim(step.pk, "odd-worker", runtime="f" * 64) is None
    WorkerHeartbeat.objects.create(host="h", pid=1, runtime="f" * 64, last_seen=timezone.now())
    long_ago = timezone.now() - timedelta(seconds=settings.STEPWORKS["LEASE_S"] + 1)
    StepRun.objects.filter(pk=step.pk).update(queued_at=long_ago)

    counts = reaper.reap()

    assert counts["runtime_mismatch"] == 1
    step.refresh_from_db()
    assert step.status == S.FAILED and step.failure_reason == FailureReason.RUNTIME_MISMATCH
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_orphaned_temp_files_are_collected_and_fresh_ones_kept():
    import os
    import time

    from artifacts.store import artifact_storage

    storage = artifact_storage()
    folder = Path(storage.location) / "ab" / "cd"
    folder.mkdir(parents=True)
    old = folder / ".tmp-crashed"
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = folder / ".tmp-writing"
    fresh.write_bytes(b"in progress")

    assert storage.collect_orphans() == 1
    assert not old.exists() and fresh.exists()


def test_clone_with_changes_makes_a_child_version_and_reuses_what_did_not_change(version):
    from runs_app.services import run_clone

    first = scheduler.run_create(version)
    drain(first)

    clone = run_clone(first, changes={"s2": {"params": {"k": 4}}}, message="try k=4")

    assert clone.cloned_from_id == first.pk
    assert clone.pipeline_version.parent_id == version.pk
    assert clone.pipeline_version.message == "try k=4"
    assert statuses(clone) == {"s0": S.REUSED, "s1": S.REUSED, "s2": S.QUEUED}
    assert steps_of(clone)["s2"].params == {"k": 4}


def test_a_transition_the_database_gave_up_on_is_tried_again_and_others_are_not(
    transactional_db,
):
    from django.db import OperationalError

    calls = []

    @scheduler.retry_on_conflict
    def flaky(kind: str) -> str:
        calls.append(kind)
        if len(calls) < 3:
            raise OperationalError(kind)
        return "done"

    assert flaky("database is locked") == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError):
        flaky("no such table: runs_app_steprun")
    assert len(calls) == 1


def test_every_run_that_reused_a_step_shows_its_metrics(version):
    from runs_app.models import Metric
    from runs_app.selectors import run_metric_values

    first = scheduler.run_create(version)
    drain(first)
    Metric.objects.create(step=steps_of(first)["s2"], name="accuracy", value=0.9)
    second = scheduler.run_create(version)
    third = scheduler.run_create(version)

    values = run_metric_values([first.pk, second.pk, third.pk], ["accuracy"])

    assert values == {run.pk: {"accuracy": 0.9} for run in (first, second, third)}


def test_the_metric_chooser_offers_the_names_recent_runs_logged(version):
    from runs_app.models import Metric
    from runs_app.selectors import workspace_metric_names

    old = scheduler.run_create(version)
    drain(old)
    Metric.objects.create(step=steps_of(old)["s2"], name="old_loss", value=1.0)
    new = scheduler.run_create(version, reuse=False)
    drain(new)
    Metric.objects.create(step=steps_of(new)["s2"], name="accuracy", value=0.9)

    assert workspace_metric_names(version.pipeline.workspace) == ["accuracy", "old_loss"]
    assert workspace_metric_names(version.pipeline.workspace, recent_runs=1) == ["accuracy"]


# One step's completion as a worker reports it (succeed, advance, claim the next): its
# statements, the same whatever the size of the run. bench/README.md ("Queries per step")
# names each: the transaction's begin and end (savepoints here, inside the test's), the
# run's lock, the step's UPDATE, its outputs, its followers, the successor's count-down and
# read, its pinned inputs, its queueing (a savepoint, the UPDATE, the look for a succeeded
# twin, the release), its claim, and the events in one INSERT.
def test_a_saved_output_is_recorded_in_its_step_s_success_and_a_stale_attempt_links_nothing(
    version,
):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    old = scheduler.step_claim(step.pk, "w1")
    StepRun.objects.filter(pk=step.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    reaper.reap()
    new = scheduler.step_claim(step.pk, "w2")
    stale_bytes = artifact_save(step.workspace, io.BytesIO(b"stale"), "application/json")
    saved = artifact_save(step.workspace, io.BytesIO(b"late"), "application/json")

    stale = scheduler.step_succeed(old, old.attempt, {"out": stale_bytes}, [])
    artifact_storage().delete(saved.storage_name)  # the collector took the row-less bytes
    current = scheduler.step_succeed(new, new.attempt, {"out": saved}, [])

    assert not stale and current
    output = StepOutput.objects.select_related("artifact").get(step=step, name="out")
    assert output.artifact.sha256 == saved.sha256
    with artifact_open(output.artifact) as handle:
        assert handle.read() == b"late"  # saved again under the name's lock
    orphan = Artifact.objects.get(sha256=stale_bytes.sha256)  # the stale attempt's row
    assert orphan in unreferenced(grace=timedelta(0))  # refers to nothing: the collector's


# The statements of step_succeed with claim_next, listed in bench/README.md ("Queries per
# step"), plus its output's row: the name's lock on PostgreSQL, then the upsert.
COMPLETION_QUERIES = 15


@pytest.mark.parametrize("length", [3, 300])
def test_a_step_completion_costs_the_same_queries_in_a_3_and_a_300_step_run(
    world, length, django_assert_num_queries
):
    version = chain(world.workspace, length=length)
    run = scheduler.run_create(version)
    first = scheduler.step_claim(next_queued(run=run).pk, "w")
    out = {"out": artifact_store_bytes(world.workspace, b"x", "application/json")}
    scheduler.step_succeed(first, first.attempt, out, [], claim_next=("w", None))
    second = StepRun.objects.get(run=run, name="s1")
    assert second.status == S.RUNNING  # claimed by its predecessor's report

    saved = {"out": artifact_save(world.workspace, io.BytesIO(b"y"), "application/json")}
    output_row = 2 if connection.vendor == "postgresql" else 1
    with django_assert_num_queries(COMPLETION_QUERIES + output_row):
        recorded = scheduler.step_succeed(second, second.attempt, saved, [], claim_next=("w", None))

    assert recorded.claimed is not None and recorded.claimed.name == "s2"
    assert statuses(run)["s2"] == S.RUNNING
    assert recorded.queued == (recorded.claimed.pk,)


def test_a_heartbeat_renews_only_the_attempts_its_worker_executes_now(version, settings):
    run = scheduler.run_create(version)
    step = scheduler.step_claim(steps_of(run)["s0"].pk, "w1")
    lapsed = timezone.now() - timedelta(seconds=60)
    StepRun.objects.filter(pk=step.pk).update(lease_expires_at=lapsed)

    # The worker's name on the row is not enough: the attempt it gave up on is the reaper's.
    reaper.leases_renew("w1", [])
    reaper.leases_renew("w1", [(step.pk, step.attempt + 1)])
    assert StepRun.objects.get(pk=step.pk).lease_expires_at == lapsed

    reaper.leases_renew("w1", [(step.pk, step.attempt)])
    assert StepRun.objects.get(pk=step.pk).lease_expires_at > timezone.now()


def _lose(step: StepRun, worker: str) -> StepRun:
    """The step is claimed by `worker`, which dies: its lease lapses and the reaper acts."""
    claimed = scheduler.step_claim(step.pk, worker)
    assert claimed is not None
    return claimed


def _reap_lapsed(*steps: StepRun) -> None:
    StepRun.objects.filter(pk__in=[s.pk for s in steps]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=60)
    )
    reaper.reap()


def test_a_worker_that_dies_running_several_steps_counts_against_none_of_them(world):
    from tests.factories import module_version, pipeline_version

    mv = module_version(world.workspace, "leaf")
    version = pipeline_version(
        world.workspace, "two", {"a": {"module_version": mv}, "b": {"module_version": mv}}
    )
    run = scheduler.run_create(version, reuse=False)  # a and b: the same code, both run
    a, b = steps_of(run)["a"], steps_of(run)["b"]
    _lose(a, "host1:10")
    _lose(b, "host1:10")

    _reap_lapsed(a, b)

    for step in (a, b):
        step.refresh_from_db()
        assert step.status == S.QUEUED
        assert step.max_attempts == 4  # the attempt was given back: 3 still to go
        assert step.lost_workers == ["host1:10"]
        assert Event.objects.filter(step=step, message__contains="not counted").exists()


def test_a_step_alone_on_a_dying_worker_is_counted_and_a_poison_step_still_ends(version):
    run = scheduler.run_create(version)
    step = steps_of(run)["s0"]
    _lose(step, "host1:1")
    _reap_lapsed(step)
    step.refresh_from_db()
    assert step.max_attempts == 3 and step.status == S.QUEUED  # alone on it: counted

    for pid in (2, 3):  # and twice more, alone each time: its attempts are spent
        _lose(step, f"host1:{pid}")
        _reap_lapsed(step)
    step.refresh_from_db()
    assert step.status == S.FAILED
    assert step.failure_reason == FailureReason.WORKER_LOST_REPEATEDLY
    assert step.lost_workers == ["host1:1", "host1:2", "host1:3"]


def test_the_reaper_resends_only_when_a_step_waited_longer_than_its_turn(world, settings):
    from runs_app.executor.runtime import runtime_fingerprint
    from runs_app.models import WorkerHeartbeat
    from tests.factories import module_version, pipeline_version

    mv = module_version(world.workspace, "leaf")
    steps = {f"s{i}": {"module_version": mv, "params": {}} for i in range(6)}
    run = scheduler.run_create(pipeline_version(world.workspace, "six", steps), reuse=False)
    assert StepRun.objects.filter(run=run, status=S.QUEUED).count() == 6
    # One live worker running 2 steps at once: 6 queued steps are 3 rounds of the queue.
    WorkerHeartbeat.objects.create(
        host="h", pid=1, runtime=runtime_fingerprint(), threads=2, last_seen=timezone.now()
    )
    lease = settings.STEPWORKS["LEASE_S"]

    waited = timezone.now() - timedelta(seconds=2 * lease)
    StepRun.objects.filter(run=run).update(queued_at=waited)
    assert reaper.reap()["redispatched"] == 0  # waiting its turn, not lost

    lost = timezone.now() - timedelta(seconds=3 * lease + 1)
    StepRun.objects.filter(run=run).update(queued_at=lost)
    assert reaper.reap()["redispatched"] == 6  # longer than 3 rounds: the messages are gone


def test_a_poison_step_that_never_runs_alone_ends_after_twice_its_attempts(world):
    """The fault suite's poison scenario: each death gave the attempt back (others ran on
    the worker too) and raised max_attempts, which the 'as often as its attempts' rule
    compared against: the step ran forever. Now its budget is fixed."""
    from tests.factories import module_version, pipeline_version

    mv = module_version(world.workspace, "leaf")
    steps = {f"s{i}": {"module_version": mv, "params": {}} for i in range(8)}
    run = scheduler.run_create(pipeline_version(world.workspace, "eight", steps), reuse=False)
    by_name = steps_of(run)
    poison = by_name["s0"]
    limit = scheduler.LOST_WORKERS_LIMIT * settings.STEPWORKS["MAX_ATTEMPTS"]
    for death in range(1, limit + 1):  # each time with a new companion on the worker
        companion = by_name[f"s{death}"]
        _lose(poison, f"host1:{death}")
        _lose(companion, f"host1:{death}")
        _reap_lapsed(poison, companion)
        poison.refresh_from_db()
        assert poison.status == (S.FAILED if death == limit else S.QUEUED), death

    assert poison.failure_reason == FailureReason.WORKER_LOST_REPEATEDLY
    assert len(poison.lost_workers) == limit
    for name in ("s1", f"s{limit - 1}"):  # the companions' attempts were given back
        companion = StepRun.objects.get(pk=by_name[name].pk)
        assert companion.status == S.QUEUED and companion.max_attempts == 4


# An unchanged rerun: the version's steps, the run's row, its start, the links to the
# sources' outputs and inputs, the run's end (a look for open steps, one for failed ones,
# the UPDATE) and the events, in a savepoint here; plus one look a step for its source and
# the steps' rows in as few INSERTs as the backend's parameter limit allows (Django's
# bulk_create: 999 parameters a statement on SQLite, 28 steps).
RERUN_FIXED_QUERIES = 11


@pytest.mark.parametrize("length", [3, 30])
def test_an_unchanged_rerun_costs_one_query_a_step_and_a_fixed_few_more(world, length):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    version = chain(world.workspace, length=length)
    drain(scheduler.run_create(version))

    with CaptureQueriesContext(connection) as captured:
        rerun = scheduler.run_create(version)

    statements = [query["sql"] for query in captured.captured_queries]
    step_inserts = sum(s.startswith('INSERT INTO "runs_app_steprun"') for s in statements)
    looks = sum(s.startswith("SELECT c.id, c.run_id") for s in statements)
    assert looks == length
    assert 1 <= step_inserts <= 1 + length // 28
    assert len(statements) - step_inserts == RERUN_FIXED_QUERIES + length
    assert set(statuses(rerun).values()) == {S.REUSED}
    rerun.refresh_from_db()
    assert rerun.status == RunStatus.SUCCEEDED


def test_the_end_of_a_run_names_its_workspace_and_sweep_to_the_receivers(
    version, django_capture_on_commit_callbacks
):
    heard: list[dict] = []

    def receiver(sender, **kwargs):
        heard.append(kwargs)

    scheduler.run_finished.connect(receiver, dispatch_uid="test-heard")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run = scheduler.run_create(version)
            drain(run)
    finally:
        scheduler.run_finished.disconnect(dispatch_uid="test-heard")

    assert heard == [
        {
            "signal": scheduler.run_finished,
            "run_id": run.pk,
            "status": RunStatus.SUCCEEDED,
            "workspace_id": run.workspace_id,
            "sweep_id": None,
        }
    ]


def test_a_large_insert_goes_in_as_many_statements_as_the_parameter_limit_needs(
    world, monkeypatch, django_assert_num_queries
):
    from runs_app import sql

    run = scheduler.run_create(chain(world.workspace, length=3))
    monkeypatch.setattr(sql, "_max_params", lambda: 21)  # 3 rows of 7 columns a statement

    columns = ("run", "old_status", "new_status", "reason", "message", "attempt", "at")
    with django_assert_num_queries(3):
        sql.insert(
            Event, columns, [(run.pk, "", f"x{i}", "", "", 0, timezone.now()) for i in range(7)]
        )

    assert Event.objects.filter(run=run, new_status__startswith="x").count() == 7
