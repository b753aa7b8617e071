"""THE state machine of runs and steps: the only code that writes a `status`.

Each transition is one function with its allowed source states as a visible constant beside
it, done as a conditional `UPDATE ... WHERE status IN (...)` plus an Event row. Zero rows
updated means the transition was illegal or already done; the function returns False and the
caller decides whether that is fine (a duplicate message) or a bug.

The database is the truth, the broker carries hints: `_dispatch` only ever says "step N may be
ready", after commit. Leadership of a cache key is enforced by the schema (a partial unique
index over queued/running steps), so in-flight dedup holds on Postgres under races too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from artifacts.models import Artifact, ArtifactState
from artifacts.store import artifacts_missing
from pipelines_app.models import DatasetVersion, PipelineVersion
from pipelines_app.specs import (
    downstream_steps,
    effective_params,
    step_bindings,
    topological_order,
    upstream_steps,
)
from runs_app import wakeups
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.models import (
    RUN_TERMINAL,
    STEP_DONE_OK,
    STEP_TERMINAL,
    Event,
    FailureReason,
    Metric,
    PipelineRun,
    RunStatus,
    StepInput,
    StepOutput,
    StepRun,
    StepStatus,
)
from workspaces.conf import engine
from workspaces.errors import DomainError

log = logging.getLogger(__name__)

S = StepStatus
R = RunStatus
UNUSABLE_STATES = (ArtifactState.MISSING,)

# --- the transition table ---------------------------------------------------------------
# Step transitions: name -> (allowed sources, target).
STEP_QUEUE = ((S.PENDING,), S.QUEUED)
STEP_FOLLOW = ((S.PENDING,), S.FOLLOWING)
STEP_REUSE = ((S.PENDING, S.FOLLOWING), S.REUSED)
STEP_UNFOLLOW = ((S.FOLLOWING,), S.PENDING)
STEP_CLAIM = ((S.QUEUED,), S.RUNNING)
STEP_SUCCEED = ((S.RUNNING,), S.SUCCEEDED)
STEP_FAIL = ((S.RUNNING,), S.FAILED)
STEP_REQUEUE = ((S.RUNNING,), S.QUEUED)  # lease expired or worker lost, attempts left
STEP_FAIL_UNSTARTED = ((S.PENDING, S.QUEUED, S.FOLLOWING), S.FAILED)  # dependency, runtime
STEP_CANCEL = ((S.PENDING, S.QUEUED, S.FOLLOWING), S.CANCELED)
STEP_CANCEL_RUNNING = ((S.RUNNING,), S.CANCELED)  # the worker killed it, or its lease lapsed

# Run transitions.
RUN_START = ((R.PENDING,), R.RUNNING)
RUN_SUCCEED = ((R.RUNNING,), R.SUCCEEDED)
RUN_FAIL = ((R.PENDING, R.RUNNING), R.FAILED)
RUN_CANCEL = ((R.PENDING, R.RUNNING), R.CANCELED)

STEP_TRANSITIONS = {
    "queue": STEP_QUEUE,
    "follow": STEP_FOLLOW,
    "reuse": STEP_REUSE,
    "unfollow": STEP_UNFOLLOW,
    "claim": STEP_CLAIM,
    "succeed": STEP_SUCCEED,
    "fail": STEP_FAIL,
    "requeue": STEP_REQUEUE,
    "fail_unstarted": STEP_FAIL_UNSTARTED,
    "cancel": STEP_CANCEL,
    "cancel_running": STEP_CANCEL_RUNNING,
}
CONFLICT_RETRIES = 5
Fn = TypeVar("Fn", bound=Callable[..., Any])

RUN_TRANSITIONS = {
    "start": RUN_START,
    "succeed": RUN_SUCCEED,
    "fail": RUN_FAIL,
    "cancel": RUN_CANCEL,
}


def _is_conflict(error: OperationalError) -> bool:
    """A deadlock or serialisation failure (Postgres) or a busy database (SQLite): the
    transaction was rolled back whole and may simply be tried again."""
    state = getattr(error.__cause__, "sqlstate", None)
    return state in ("40P01", "40001") or "database is locked" in str(error)


def retry_on_conflict(func: Fn) -> Fn:
    """Retry a whole transactional transition when the database gave up on it.

    Concurrent advances can wait on each other through the leader index (two runs queueing
    the same two keys in opposite orders); Postgres then aborts one of them. Every
    transition is a conditional UPDATE, so running it again is safe. Only at the outermost
    level: inside a caller's transaction the rollback is the caller's to handle.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                return func(*args, **kwargs)
            except OperationalError as error:
                if (
                    attempt == CONFLICT_RETRIES
                    or not _is_conflict(error)
                    or transaction.get_connection().in_atomic_block
                ):
                    raise
                log.info("%s: %s; trying again", func.__name__, str(error).splitlines()[0])
                for arg in args:  # statuses set in memory were rolled back with the rows
                    if isinstance(arg, StepRun | PipelineRun):
                        arg.refresh_from_db(
                            fields=["status", "attempt"] if isinstance(arg, StepRun) else ["status"]
                        )
                time.sleep(random.uniform(0.005, 0.03) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    return cast(Fn, wrapper)


def _step_move(
    step: StepRun,
    transition: tuple[tuple[str, ...], str],
    *,
    attempt: int | None = None,
    reason: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    """Conditionally move one step; record the event. False when zero rows matched."""
    sources, target = transition
    query = StepRun.objects.filter(pk=step.pk, status__in=sources)
    if attempt is not None:
        query = query.filter(attempt=attempt)
    if target == S.FAILED:
        fields.setdefault("failure_reason", reason)
        fields.setdefault("failure_message", message)
    if not query.update(status=target, **fields):
        return False
    old = step.status
    step.status = target
    for name, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(step, name, value)
    Event.objects.create(
        run_id=step.run_id,
        step=step,
        old_status=old,
        new_status=target,
        reason=reason,
        message=message[:2000],
        attempt=step.attempt if attempt is None else attempt,
    )
    _changed([step.run_id])
    return True


def _run_move(
    run: PipelineRun,
    transition: tuple[tuple[str, ...], str],
    *,
    reason: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    sources, target = transition
    if target == R.FAILED:
        fields.setdefault("failure_reason", reason)
    if not PipelineRun.objects.filter(pk=run.pk, status__in=sources).update(
        status=target, **fields
    ):
        return False
    old = run.status
    run.status = target
    for name, value in fields.items():
        setattr(run, name, value)
    Event.objects.create(
        run_id=run.pk, old_status=old, new_status=target, reason=reason, message=message[:2000]
    )
    _changed([run.pk])
    _finished(run.pk, target)
    return True


# --- dispatch hints -------------------------------------------------------------------------
# "These steps may be ready" goes out as a signal after the transaction that queued them
# commits. runs_app.dispatch receives it (connected in RunsAppConfig.ready) and talks to the
# broker, so the state machine knows no broker. Without a receiver the hints go nowhere, and
# nothing is lost: the rows are the truth, and the reaper (or the embedded dispatcher) finds
# queued steps without them.
steps_queued = Signal()  # send(sender, step_ids=[...])


def _dispatch(step_ids: Iterable[int]) -> None:
    """Hint these steps once the transaction that queued them commits."""
    ids = list(step_ids)
    if ids:
        transaction.on_commit(functools.partial(steps_queued.send, __name__, step_ids=ids))


# "This run has ended" goes out the same way, once its transaction commits; runs_app.webhooks
# receives it (connected in RunsAppConfig.ready) and queues the workspace's webhooks.
run_finished = Signal()  # send(sender, run_id=..., status=...)


def _finished(run_id: int, status: str) -> None:
    if status in RUN_TERMINAL:
        transaction.on_commit(
            functools.partial(run_finished.send, __name__, run_id=run_id, status=status)
        )


def _changed(run_ids: Iterable[int]) -> None:
    """Wake the long-polls on these runs once the transaction that wrote their events
    commits (runs_app.wakeups)."""
    ids = set(run_ids)
    if ids:
        transaction.on_commit(functools.partial(wakeups.changed, ids))


# --- starting a run -------------------------------------------------------------------------
def _parse_overrides(
    version: PipelineVersion, overrides: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """{"step.param": value} -> ({step: {param: value}}, problems); typed later."""
    steps = version.spec["steps"]
    by_step: dict[str, dict[str, Any]] = {}
    problems: dict[str, list[str]] = {}
    for key, value in overrides.items():
        step, _, param = str(key).partition(".")
        if not param:
            problems[f"params.{key}"] = ["write an override as step.param=value"]
        elif step not in steps:
            problems[f"params.{key}"] = [f"the pipeline has no step {step!r}"]
        else:
            by_step.setdefault(step, {})[param] = value
    return by_step, problems


@retry_on_conflict
def run_create(
    version: PipelineVersion,
    *,
    user: Any = None,
    param_overrides: dict[str, Any] | None = None,
    reuse: bool = True,
    force_steps: Iterable[str] = (),
    cloned_from: PipelineRun | None = None,
    rerun_of: PipelineRun | None = None,
    sweep: Any = None,
    variant: dict[str, Any] | None = None,
) -> PipelineRun:
    """Create a run and all its steps (pending) in one transaction, then start it.

    Params are every declared param after defaults and overrides, coerced to its type, so
    `1` and `1.0` for a float param key alike. `force_steps` and everything downstream of
    them neither reuse nor follow (rerun from a step).
    """
    overrides = param_overrides or {}
    by_step, problems = _parse_overrides(version, overrides)
    steps = list(version.steps.select_related("module_version").order_by("position"))
    step_params: dict[str, dict[str, Any]] = {}
    for step in steps:
        merged = {**step.params, **by_step.get(step.name, {})}
        try:
            step_params[step.name] = effective_params(
                step.module_version.interface, merged, f"params.{step.name}"
            )
        except DomainError as error:
            problems.update(error.fields)
    if problems:
        raise DomainError("invalid_params", "Some parameter overrides are not valid.", problems)
    forced = downstream_steps(version.spec["steps"], set(force_steps))
    unknown = set(force_steps) - {s.name for s in steps}
    if unknown:
        raise DomainError(
            "invalid_step", "No such step.", {"step": [f"unknown step {sorted(unknown)[0]!r}"]}
        )
    with transaction.atomic():
        run = PipelineRun.objects.create(
            workspace_id=version.pipeline.workspace_id,
            pipeline_version=version,
            param_overrides=overrides,
            reuse=reuse,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            cloned_from=cloned_from,
            rerun_of=rerun_of,
            sweep=sweep,
            variant=variant or {},
        )
        StepRun.objects.bulk_create(
            StepRun(
                workspace_id=run.workspace_id,
                run=run,
                name=step.name,
                position=step.position,
                module_version=step.module_version,
                params=step_params[step.name],
                reuse_allowed=reuse and step.name not in forced,
                max_attempts=engine().max_attempts,
                timeout_s=engine().step_timeout_s,
            )
            for step in steps
        )
        _run_move(run, RUN_START, started_at=timezone.now())
        _advance_locked(run)
    return run


# --- advancing ------------------------------------------------------------------------------
@retry_on_conflict
def run_advance(run_id: int, *, keep: bool = False) -> list[int]:
    """Move every step of the run that can move; finish the run when all steps are done.

    Returns the steps it queued. Each is hinted to the workers after commit, except, with
    `keep`, the first: the caller (a worker that just finished a step) runs that one itself.
    """
    with transaction.atomic():
        return _advance_run_id(run_id, keep)


def _advance_run_id(run_id: int, keep: bool) -> list[int]:
    # The version comes with the run: its spec is read on every advance.
    run = (
        PipelineRun.objects.select_for_update(of=("self",))
        .select_related("pipeline_version")
        .filter(pk=run_id)
        .first()
    )
    if run is None or run.status != R.RUNNING:
        return []
    return _advance_locked(run, keep)


def _advance_locked(run: PipelineRun, keep: bool = False) -> list[int]:
    spec_steps = run.pipeline_version.spec["steps"]
    order = topological_order(spec_steps)  # upstream first: one pass sees its own moves
    pinned: set[int] = set()
    queued: list[int] = []
    while True:
        steps = {
            s.name: s
            for s in StepRun.objects.filter(run=run)
            .select_related("module_version")
            .defer(  # the key needs the digest, not the sources
                "module_version__files",
                "module_version__message",
                "module_version__warnings",
            )
        }
        outputs = _outputs_by_step([s.pk for s in steps.values() if s.status in STEP_DONE_OK])
        retry = False
        for name in order:
            step = steps[name]
            if step.status != S.PENDING:
                continue
            upstream = upstream_steps(spec_steps[name])
            states = [steps[u].status for u in upstream]
            if run.cancel_requested or any(st == S.CANCELED for st in states):
                _step_move(step, STEP_CANCEL, finished_at=timezone.now())
                continue
            if any(st == S.FAILED for st in states):
                failed = next(u for u in upstream if steps[u].status == S.FAILED)
                _step_move(
                    step,
                    STEP_FAIL_UNSTARTED,
                    reason=FailureReason.DEPENDENCY_FAILED,
                    message=f"upstream step {failed!r} failed",
                    finished_at=timezone.now(),
                )
                continue
            if not all(st in STEP_DONE_OK for st in states):
                continue
            inputs = _resolve_inputs(run, spec_steps[name], steps, outputs)
            if inputs is None:
                _step_move(
                    step,
                    STEP_FAIL_UNSTARTED,
                    reason=FailureReason.OUTPUT_INVALID,
                    message="an upstream output this step binds is missing",
                    finished_at=timezone.now(),
                )
                continue
            _key_step(step, inputs, pinned)
            reused = _try_reuse(step)
            if reused is not None:
                outputs[step.pk] = reused  # downstream steps in this pass read them
                continue
            if _try_queue(step):
                queued.append(step.pk)
            elif step.status == S.PENDING:
                retry = True  # its leader finished meanwhile, or it should reuse: again
        if not retry:
            break
    _dispatch(queued[1:] if keep else queued)
    _finish_if_done(run, steps)
    return queued


def _outputs_by_step(step_ids: list[int]) -> dict[int, dict[str, Any]]:
    result: dict[int, dict[str, Any]] = {}
    for out in StepOutput.objects.filter(step_id__in=step_ids).select_related("artifact"):
        result.setdefault(out.step_id, {})[out.name] = out.artifact
    return result


def _resolve_inputs(
    run: PipelineRun,
    spec_step: dict[str, Any],
    steps: dict[str, StepRun],
    outputs: dict[int, dict[str, Any]],
) -> dict[str, Any] | None:
    """{input name: Artifact} for a ready step; None when a bound output is missing."""
    resolved: dict[str, Any] = {}
    for input_name, binding in step_bindings(spec_step).items():
        if binding.is_dataset:
            dataset_version = (
                DatasetVersion.objects.select_related("artifact")
                .filter(
                    dataset__workspace_id=run.workspace_id,
                    dataset__name=binding.dataset,
                    number=int(binding.number),
                )
                .first()
            )
            if dataset_version is None:
                return None
            resolved[input_name] = dataset_version.artifact
        else:
            artifact = outputs.get(steps[binding.step].pk, {}).get(binding.output)
            if artifact is None:
                return None
            resolved[input_name] = artifact
    return resolved


def cache_key_parts(step: StepRun, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": step.module_version.code_digest,
        "params": step.params,
        "inputs": {name: inputs[name].sha256 for name in sorted(inputs)},
        "runtime": runtime_fingerprint(),
    }


def cache_key(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key_step(step: StepRun, inputs: dict[str, Any], pinned: set[int] | None = None) -> None:
    """Pin the step's inputs and record its cache key and the parts it was made of."""
    parts = cache_key_parts(step, inputs)
    # The key is written by the transition that follows (queue, follow or reuse:
    # _key_fields), not by an UPDATE of its own; a step keyed for the first time has no
    # inputs pinned yet to delete.
    rekeyed = bool(step.cache_key) or pinned is None or step.pk in pinned
    if pinned is not None:
        pinned.add(step.pk)  # a retry in this advance (rolled-back queue) re-pins
    step.key_parts = parts
    step.cache_key = cache_key(parts)
    if rekeyed:
        StepInput.objects.filter(step=step).delete()
    StepInput.objects.bulk_create(
        StepInput(step=step, name=name, artifact=artifact) for name, artifact in inputs.items()
    )


def _key_fields(step: StepRun) -> dict[str, Any]:
    return {"key_parts": step.key_parts, "cache_key": step.cache_key}


# How many same-key sources a reuse tries before it runs the step: each one found with
# missing bytes is marked so, and is never tried again.
_REUSE_TRIES = 5


def _reuse_source(step: StepRun) -> tuple[StepRun, dict[str, Artifact]] | None:
    """The latest succeeded step with the same key in the workspace whose outputs the store
    still holds, with those outputs ({name: Artifact}); None if there is none or reuse is
    off. A source found with missing bytes has them marked missing (artifacts_missing), and
    the step's `reuse_note` says so: it runs instead, and its page says why."""
    if not step.reuse_allowed:
        return None
    candidates = (
        StepRun.objects.filter(
            workspace_id=step.workspace_id,
            cache_key=step.cache_key,
            status=S.SUCCEEDED,
            reuse_forgotten_at__isnull=True,
        )
        .exclude(pk=step.pk)
        .exclude(outputs__artifact__state__in=UNUSABLE_STATES)
        .order_by("-finished_at", "-pk")
    )
    for _ in range(_REUSE_TRIES):
        source = candidates.first()
        if source is None:
            return None
        linked = {
            out.name: out.artifact
            for out in StepOutput.objects.filter(step=source).select_related("artifact")
        }
        missing = artifacts_missing(linked.values())
        if not missing:
            return source, linked
        names = {artifact.pk: name for name, artifact in linked.items()}
        gone = ", ".join(f"{names[a.pk]}, sha256 {a.sha256[:12]}" for a in missing)
        step.reuse_note = f"cached outputs of run {source.run_id} were missing ({gone})"
        StepRun.objects.filter(pk=step.pk).update(reuse_note=step.reuse_note)
    return None


def _try_reuse(step: StepRun) -> dict[str, Any] | None:
    """Reuse a succeeded step with the same key; returns the outputs it linked, or None."""
    found = _reuse_source(step)
    if found is None:
        return None
    source, linked = found
    return _reuse_from(step, source, STEP_REUSE, linked)


class _ReuseInstead(Exception):
    """Rolls back a queue whose key succeeded meanwhile (see _try_queue)."""


def _reuse_from(
    step: StepRun, source: StepRun, transition: Any, linked: dict[str, Artifact]
) -> dict[str, Any] | None:
    """Link the source's outputs to the step; {name: Artifact}, or None if it moved on."""
    now = timezone.now()
    if not _step_move(
        step,
        transition,
        message=f"reused from run {source.run_id}",
        reused_from=source,
        following=None,
        started_at=now,
        finished_at=now,
        **_key_fields(step),
    ):
        return None
    StepOutput.objects.bulk_create(
        StepOutput(step=step, name=name, artifact=artifact) for name, artifact in linked.items()
    )
    return linked


def _try_queue(step: StepRun) -> bool:
    """Queue the step as the leader of its key; if another leads it, follow that one.

    True when queued. Taking leadership first and then looking for a succeeded twin closes
    the race of "no twin succeeded yet" followed by a twin finishing before we queue: the
    unique index makes our UPDATE wait for a leader that is finishing, and the look after
    it sees that leader's success (we then reuse it instead).
    """
    try:
        with transaction.atomic():
            if not _step_move(step, STEP_QUEUE, queued_at=timezone.now(), **_key_fields(step)):
                return False
            if _reuse_source(step) is not None:
                raise _ReuseInstead
            return True
    except _ReuseInstead:
        step.status = S.PENDING  # the savepoint rolled our queueing back
        return False
    except IntegrityError:
        pass  # another queued/running step with this key exists: the schema says it leads
    # Lock the leader's row: its terminal transition (an UPDATE of that row) then waits for
    # us to commit, and releases its followers with ours among them. Without the lock it
    # could finish between our read and our commit and leave us following forever.
    leader = (
        StepRun.objects.select_for_update()
        .filter(
            workspace_id=step.workspace_id,
            cache_key=step.cache_key,
            status__in=(S.QUEUED, S.RUNNING),
            reuse_allowed=True,
        )
        .first()
    )
    if leader is None:  # it finished between our insert and our read: try again next round
        return False
    _step_move(
        step,
        STEP_FOLLOW,
        message=f"follows run {leader.run_id}",
        following=leader,
        **_key_fields(step),
    )
    return False


def _finish_if_done(run: PipelineRun, steps: dict[str, StepRun] | None = None) -> None:
    # The advance's own view (every step's terminal move advances the run again after it
    # commits, so a status this view misses finishes the run then).
    if steps is not None:
        statuses = [(s.status, s.failure_reason) for s in steps.values()]
    else:
        statuses = list(StepRun.objects.filter(run=run).values_list("status", "failure_reason"))
    if any(status not in STEP_TERMINAL for status, _ in statuses):
        return
    now = timezone.now()
    if any(status == S.FAILED for status, _ in statuses):
        reasons = [r for s, r in statuses if s == S.FAILED and r != FailureReason.DEPENDENCY_FAILED]
        _run_move(
            run,
            RUN_FAIL,
            reason=reasons[0] if reasons else FailureReason.DEPENDENCY_FAILED,
            finished_at=now,
        )
    elif any(status == S.CANCELED for status, _ in statuses):
        _run_move(run, RUN_CANCEL, finished_at=now)
    else:
        _run_move(run, RUN_SUCCEED, finished_at=now)


# --- worker side ----------------------------------------------------------------------------
@retry_on_conflict
def step_claim(step_id: int, worker: str, runtime: str | None = None) -> StepRun | None:
    """Claim a queued step for `worker`: a new attempt (the fencing token), or None.

    A worker whose runtime differs from the one the step was keyed with refuses it (its
    outputs would not be what the key promises); the reaper fails a step no live worker
    can take with runtime_mismatch.
    """
    now = timezone.now()
    with transaction.atomic():
        step = (
            StepRun.objects.select_related("module_version", "workspace")
            .filter(pk=step_id, status=S.QUEUED)
            .first()
        )
        if step is None:
            return None
        if runtime is not None and step.key_parts.get("runtime") not in (None, runtime):
            log.warning("worker %s refuses step %s: runtime differs", worker, step_id)
            return None
        if step.cancel_requested:
            _step_move(step, STEP_CANCEL, finished_at=now)
            _after_step_terminal(step)
            return None
        claimed = (
            StepRun.objects.filter(pk=step_id, status=S.QUEUED, attempt=step.attempt).update(
                status=S.RUNNING,
                attempt=F("attempt") + 1,
                worker=worker,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=engine().lease_s),
            )
            == 1
        )
        if not claimed:
            return None
        step.status = S.RUNNING
        step.attempt += 1  # the update matched attempt=step.attempt
        if step.attempt > 1:
            # A retry: the points the lost attempt sent while it ran are not this one's.
            Metric.objects.filter(step_id=step_id).delete()
        step.worker = worker
        step.started_at = now
        Event.objects.create(
            run_id=step.run_id,
            step=step,
            old_status=S.QUEUED,
            new_status=S.RUNNING,
            message=f"claimed by {worker}",
            attempt=step.attempt,
        )
        _changed([step.run_id])
    return step


@dataclass(frozen=True)
class Recorded:
    """What a worker's report did: whether it counted (a stale or duplicate attempt does not;
    the object is truthy when it did), and the steps the run's advance then queued."""

    moved: bool
    queued: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return self.moved


@retry_on_conflict
def step_succeed(
    step: StepRun,
    attempt: int,
    outputs: dict[str, Any],
    metrics: list[Any],
    *,
    keep: bool = False,
    replace_live: bool = False,
) -> Recorded:
    """Record a finished attempt's outputs; a stale or duplicate attempt changes nothing.

    The run advances in a transaction of its own after this one commits, under the run's
    lock: two branches finishing at once then see each other's success (the join). With
    `keep`, the first step that advance queues is not hinted: it is `queued[0]`, for the
    reporting worker to run itself with its inputs on hand and its zygote warm, so a chain of
    short steps costs no broker round trip per step. With `replace_live`, the points the
    attempt sent while it ran (step_metrics_append) give way to `metrics`, the whole list.
    """
    with transaction.atomic():
        if not _step_move(step, STEP_SUCCEED, attempt=attempt, finished_at=timezone.now()):
            return Recorded(False)
        StepOutput.objects.bulk_create(
            StepOutput(step=step, name=name, artifact=artifact)
            for name, artifact in outputs.items()
        )
        if replace_live:
            Metric.objects.filter(step=step).delete()
        Metric.objects.bulk_create(
            Metric(step=step, name=m.name, value=m.value, index=m.step) for m in metrics
        )
        follower_runs = _release_followers(step, succeeded=True, outputs=outputs)
    queued = run_advance(step.run_id, keep=keep)
    _advance_runs(run_id for run_id in follower_runs if run_id != step.run_id)
    return Recorded(True, tuple(queued))


def step_metrics_append(step_id: int, attempt: int, points: list[Any]) -> bool:
    """Store the points a running attempt logged since its last batch; False, storing
    nothing, when that attempt is no longer the step's running one (fenced like a report)."""
    with transaction.atomic():
        running = (
            StepRun.objects.select_for_update()
            .filter(pk=step_id, attempt=attempt, status=S.RUNNING)
            .exists()
        )
        if running:
            Metric.objects.bulk_create(
                Metric(step_id=step_id, name=p.name, value=p.value, index=p.step) for p in points
            )
    return running


@retry_on_conflict
def step_fail(step: StepRun, attempt: int, reason: str, message: str) -> bool:
    """A finished attempt failed with a reason; a stale attempt changes nothing."""
    with transaction.atomic():
        if not _step_move(
            step,
            STEP_FAIL,
            attempt=attempt,
            reason=reason,
            message=message,
            finished_at=timezone.now(),
        ):
            return False
        follower_runs = _release_followers(step, succeeded=False)
    _advance_runs([step.run_id, *follower_runs])
    return True


@retry_on_conflict
def step_cancel_running(step: StepRun, attempt: int, message: str = "canceled") -> bool:
    """The worker killed a running attempt because its cancel was requested."""
    with transaction.atomic():
        if not _step_move(
            step, STEP_CANCEL_RUNNING, attempt=attempt, message=message, finished_at=timezone.now()
        ):
            return False
        follower_runs = _release_followers(step, succeeded=False)
    _advance_runs([step.run_id, *follower_runs])
    return True


def _release_followers(
    leader: StepRun, *, succeeded: bool, outputs: dict[str, Any] | None = None
) -> list[int]:
    """Move a finished leader's followers: reused on success, back to pending otherwise;
    returns their runs, to advance."""
    if not succeeded:
        run_ids = []
        for follower in StepRun.objects.filter(following=leader, status=S.FOLLOWING):
            if _step_move(
                follower, STEP_UNFOLLOW, message="its leader did not succeed", following=None
            ):
                run_ids.append(follower.run_id)
        return run_ids
    # All followers in a fixed number of statements (a sweep's leader has many). Locked
    # first, so the one conditional UPDATE moves exactly the rows read.
    followers = list(
        StepRun.objects.select_for_update()
        .filter(following=leader, status__in=STEP_REUSE[0])
        .only("pk", "run_id", "status", "attempt")
        .order_by("pk")
    )
    if not followers:
        return []
    if outputs is None:
        outputs = {
            out.name: out.artifact
            for out in StepOutput.objects.filter(step=leader).select_related("artifact")
        }
    now = timezone.now()
    StepRun.objects.filter(pk__in=[f.pk for f in followers], status__in=STEP_REUSE[0]).update(
        status=S.REUSED, reused_from=leader, following=None, started_at=now, finished_at=now
    )
    Event.objects.bulk_create(
        Event(
            run_id=f.run_id,
            step_id=f.pk,
            old_status=f.status,
            new_status=S.REUSED,
            message=f"reused from run {leader.run_id}",
            attempt=f.attempt,
        )
        for f in followers
    )
    _changed(f.run_id for f in followers)
    StepOutput.objects.bulk_create(
        StepOutput(step_id=f.pk, name=name, artifact=artifact)
        for f in followers
        for name, artifact in outputs.items()
    )
    return [f.run_id for f in followers]


def _after_step_terminal(step: StepRun) -> None:
    follower_runs = _release_followers(step, succeeded=False)
    transaction.on_commit(lambda: _advance_runs([step.run_id, *follower_runs]))


def _advance_runs(run_ids: Iterable[int]) -> None:
    for run_id in dict.fromkeys(run_ids):
        run_advance(run_id)


# --- canceling ------------------------------------------------------------------------------
@retry_on_conflict
def run_cancel(run_id: int, by: Any = None) -> bool:
    """Cancel a run: unstarted steps now, running ones when their worker kills them.

    False when the run had already finished.
    """
    who = getattr(by, "username", "") or "someone"
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in RUN_CANCEL[0]:
            return False
        PipelineRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        run.cancel_requested = True
        Event.objects.create(
            run_id=run.pk,
            old_status=run.status,
            new_status=run.status,
            message=f"cancel requested by {who}",
        )
        _changed([run.pk])
        released: list[int] = []
        now = timezone.now()
        for step in StepRun.objects.filter(run=run, status__in=STEP_CANCEL[0]):
            if _step_move(step, STEP_CANCEL, message=f"canceled by {who}", finished_at=now):
                released += _release_followers(step, succeeded=False)
        StepRun.objects.filter(run=run, status=S.RUNNING).update(cancel_requested=True)
        if run.status == R.PENDING:
            _run_move(run, RUN_CANCEL, finished_at=now)
        else:
            _finish_if_done(run)
    _advance_runs(released)
    return True


# --- recovery (runs_app/reaper.py finds what needs it) ---------------------------------------
@retry_on_conflict
def step_lease_lost(step: StepRun, now: Any) -> str | None:
    """A running step's lease expired (its worker died or stopped answering): canceled if a
    cancel was asked, requeued while attempts remain (a killed worker counts as an attempt),
    else failed with worker_lost_repeatedly. Returns "requeued", "failed" or None (it had
    moved on already)."""
    with transaction.atomic():
        if step.cancel_requested:
            moved = _step_move(
                step,
                STEP_CANCEL_RUNNING,
                attempt=step.attempt,
                message="canceled; its worker stopped answering",
                finished_at=now,
            )
        elif step.attempt < step.max_attempts:
            if not _step_move(
                step,
                STEP_REQUEUE,
                attempt=step.attempt,
                reason=FailureReason.WORKER_LOST,
                message=f"lease of {step.worker} expired; retrying",
                queued_at=now,
                lease_expires_at=None,
            ):
                return None
            _dispatch([step.pk])
            return "requeued"
        else:
            moved = _step_move(
                step,
                STEP_FAIL,
                attempt=step.attempt,
                reason=FailureReason.WORKER_LOST_REPEATEDLY,
                message=f"worker lost on all {step.attempt} attempts",
                finished_at=now,
            )
        if not moved:
            return None
        _after_step_terminal(step)
    return "failed"


def step_unclaimable(step: StepRun, runtime: str, now: Any) -> bool:
    """Fail a queued step no live worker's runtime can take."""
    with transaction.atomic():
        if not _step_move(
            step,
            STEP_FAIL_UNSTARTED,
            reason=FailureReason.RUNTIME_MISMATCH,
            message=f"no live worker has runtime {runtime[:12]}",
            finished_at=now,
        ):
            return False
        _after_step_terminal(step)
    return True


def steps_redispatch(step_ids: list[int], now: Any) -> None:
    """Hint queued steps again (a lost message); a duplicate hint claims nothing."""
    StepRun.objects.filter(pk__in=step_ids, status=S.QUEUED).update(queued_at=now)
    with transaction.atomic():
        _dispatch(step_ids)


def followers_release(leader_id: int) -> int:
    """Release the followers a finished leader left waiting; returns how many runs moved."""
    with transaction.atomic():
        leader = StepRun.objects.get(pk=leader_id)
        follower_runs = _release_followers(leader, succeeded=leader.status == S.SUCCEEDED)
        run_ids = [leader.run_id, *follower_runs]
        transaction.on_commit(functools.partial(_advance_runs, run_ids))
    return len(follower_runs)
