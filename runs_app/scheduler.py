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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from pipelines_app.errors import DomainError
from pipelines_app.models import DatasetVersion, PipelineVersion
from pipelines_app.specs import effective_params
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.models import (
    STEP_DONE_OK,
    STEP_TERMINAL,
    Event,
    FailureReason,
    PipelineRun,
    RunStatus,
    StepInput,
    StepOutput,
    StepRun,
    StepStatus,
)

log = logging.getLogger(__name__)

S = StepStatus
R = RunStatus

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

IN_FLIGHT = (S.QUEUED, S.RUNNING, S.FOLLOWING)


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


def _cfg(name: str) -> Any:
    return settings.STEPWORKS[name]


def _event(
    step: StepRun | None,
    run_id: int,
    old: str,
    new: str,
    reason: str = "",
    message: str = "",
    attempt: int = 0,
) -> Event:
    return Event(
        run_id=run_id,
        step=step,
        old_status=old,
        new_status=new,
        reason=reason,
        message=message[:2000],
        attempt=attempt,
    )


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
    return True


# --- dispatch hints -------------------------------------------------------------------------
def _no_hints(step_ids: list[int]) -> None:
    """Until a process connects its broker side, hints go nowhere: the rows are the truth
    and the reaper (or the embedded dispatcher) finds queued steps without them."""


# Where "these steps may be ready" goes. RunsAppConfig.ready connects runs_app.dispatch,
# so the state machine knows no broker and imports nothing that imports it back.
_send_hints: Callable[[list[int]], None] = _no_hints


def hints_connect(send: Callable[[list[int]], None]) -> None:
    global _send_hints
    _send_hints = send


@dataclass
class Kept:
    step_id: int | None = None


_local = threading.local()


@contextmanager
def keep_one() -> Iterator[Kept]:
    """While active, the first step this thread would hint is kept for it to run itself: a
    worker that just finished a step claims one ready successor with its inputs on hand and
    its zygote warm, so a chain of short steps costs no broker round trip per step."""
    kept = Kept()
    _local.kept = kept
    try:
        yield kept
    finally:
        _local.kept = None


def _dispatch(step_ids: Iterable[int]) -> None:
    """Say "these steps may be ready" once the transaction that queued them commits."""
    ids = list(step_ids)
    if ids:
        transaction.on_commit(lambda: _hint(ids))


def _hint(ids: list[int]) -> None:
    kept: Kept | None = getattr(_local, "kept", None)
    if kept is not None and kept.step_id is None:
        kept.step_id = ids.pop(0)
    if ids:
        _send_hints(ids)


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
    forced = _downstream(version.spec["steps"], set(force_steps))
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
                max_attempts=_cfg("MAX_ATTEMPTS"),
                timeout_s=_cfg("STEP_TIMEOUT_S"),
            )
            for step in steps
        )
        _run_move(run, RUN_START, started_at=timezone.now())
        _advance_locked(run)
    return run


def _downstream(spec_steps: dict[str, Any], roots: set[str]) -> set[str]:
    """The given steps and every step that consumes them, transitively."""
    result = set(roots)
    changed = True
    while changed:
        changed = False
        for name, step in spec_steps.items():
            if name in result:
                continue
            for binding in step.get("inputs", {}).values():
                if not str(binding).startswith("dataset:") and binding.split(".")[0] in result:
                    result.add(name)
                    changed = True
                    break
    return result


# --- advancing ------------------------------------------------------------------------------
@retry_on_conflict
def run_advance(run_id: int) -> None:
    """Move every step of the run that can move; finish the run when all steps are done."""
    with transaction.atomic():
        _advance_run_id(run_id)


def _advance_run_id(run_id: int) -> None:
    # The version comes with the run: its spec is read on every advance.
    run = (
        PipelineRun.objects.select_for_update(of=("self",))
        .select_related("pipeline_version")
        .filter(pk=run_id)
        .first()
    )
    if run is None or run.status != R.RUNNING:
        return
    _advance_locked(run)


def _topological(spec_steps: dict[str, Any]) -> list[str]:
    """Step names, upstream before downstream (ties in spec order)."""
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(spec_steps):
        progressed = False
        for name, spec in spec_steps.items():
            if name not in placed and all(u in placed for u in _upstream(spec)):
                order.append(name)
                placed.add(name)
                progressed = True
        if not progressed:  # a cycle the spec check missed: keep the rest in spec order
            order += [n for n in spec_steps if n not in placed]
            break
    return order


def _advance_locked(run: PipelineRun) -> None:
    spec_steps = run.pipeline_version.spec["steps"]
    order = _topological(spec_steps)  # upstream first: one pass sees its own moves
    pinned: set[int] = set()
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
        to_dispatch: list[int] = []
        retry = False
        for name in order:
            step = steps[name]
            if step.status != S.PENDING:
                continue
            upstream = _upstream(spec_steps[name])
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
                to_dispatch.append(step.pk)
            elif step.status == S.PENDING:
                retry = True  # its leader finished meanwhile, or it should reuse: again
        _dispatch(to_dispatch)
        if not retry:
            break
    _finish_if_done(run, steps)


def _upstream(spec_step: dict[str, Any]) -> list[str]:
    names = []
    for binding in spec_step.get("inputs", {}).values():
        if not str(binding).startswith("dataset:"):
            upstream = binding.split(".")[0]
            if upstream not in names:
                names.append(upstream)
    return names


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
    for input_name, binding in spec_step.get("inputs", {}).items():
        if str(binding).startswith("dataset:"):
            name, _, number = binding.removeprefix("dataset:").rpartition("@")
            dataset_version = (
                DatasetVersion.objects.select_related("artifact")
                .filter(
                    dataset__workspace_id=run.workspace_id, dataset__name=name, number=int(number)
                )
                .first()
            )
            if dataset_version is None:
                return None
            resolved[input_name] = dataset_version.artifact
        else:
            step_name, _, output_name = binding.partition(".")
            artifact = outputs.get(steps[step_name].pk, {}).get(output_name)
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


def _reuse_source(step: StepRun) -> StepRun | None:
    """The latest succeeded step with the same key in the workspace, if reuse is allowed."""
    if not step.reuse_allowed:
        return None
    return (
        StepRun.objects.filter(
            workspace_id=step.workspace_id, cache_key=step.cache_key, status=S.SUCCEEDED
        )
        .exclude(pk=step.pk)
        .order_by("-finished_at", "-pk")
        .first()
    )


def _try_reuse(step: StepRun) -> dict[str, Any] | None:
    """Reuse a succeeded step with the same key; returns the outputs it linked, or None."""
    source = _reuse_source(step)
    if source is None:
        return None
    return _reuse_from(step, source, STEP_REUSE)


class _ReuseInstead(Exception):
    """Rolls back a queue whose key succeeded meanwhile (see _try_queue)."""


def _reuse_from(step: StepRun, source: StepRun, transition: Any) -> dict[str, Any] | None:
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
    linked = {
        out.name: out.artifact
        for out in StepOutput.objects.filter(step=source).select_related("artifact")
    }
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
                lease_expires_at=now + timedelta(seconds=_cfg("LEASE_S")),
            )
            == 1
        )
        if not claimed:
            return None
        step.status = S.RUNNING
        step.attempt += 1  # the update matched attempt=step.attempt
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
    return step


@retry_on_conflict
def step_succeed(step: StepRun, attempt: int, outputs: dict[str, Any], metrics: list[Any]) -> bool:
    """Record a finished attempt's outputs; a stale or duplicate attempt changes nothing.

    The run advances in a transaction of its own after this one commits, under the run's
    lock: two branches finishing at once then see each other's success (the join).
    """
    from runs_app.models import Metric

    with transaction.atomic():
        if not _step_move(step, STEP_SUCCEED, attempt=attempt, finished_at=timezone.now()):
            return False
        StepOutput.objects.bulk_create(
            StepOutput(step=step, name=name, artifact=artifact)
            for name, artifact in outputs.items()
        )
        Metric.objects.bulk_create(
            Metric(step=step, name=m.name, value=m.value, index=m.step) for m in metrics
        )
        follower_runs = _release_followers(step, succeeded=True, outputs=outputs)
    _advance_runs([step.run_id, *follower_runs])
    return True


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


# --- the reaper -----------------------------------------------------------------------------
def reap(now: Any = None) -> dict[str, int]:
    """Recover what a dead worker or a lost message left behind; never depends on the broker.

    - running steps whose lease expired: requeued while attempts remain, else failed with
      worker_lost_repeatedly (a killed worker counts as an attempt);
    - queued steps nobody claimed for a lease: dispatched again (duplicates claim nothing);
    - running runs with no step in flight: advanced (a crash between a step's end and the
      run's advance).
    """
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0, "redispatched": 0, "released": 0, "advanced": 0}
    counts["orphans"] = _collect_orphans()
    expired = StepRun.objects.filter(status=S.RUNNING, lease_expires_at__lt=now)
    for step in expired:
        with transaction.atomic():
            if step.cancel_requested:
                moved = _step_move(
                    step,
                    STEP_CANCEL_RUNNING,
                    attempt=step.attempt,
                    message="canceled; its worker stopped answering",
                    finished_at=now,
                )
                succeeded = False
            elif step.attempt < step.max_attempts:
                moved = _step_move(
                    step,
                    STEP_REQUEUE,
                    attempt=step.attempt,
                    reason=FailureReason.WORKER_LOST,
                    message=f"lease of {step.worker} expired; retrying",
                    queued_at=now,
                    lease_expires_at=None,
                )
                if moved:
                    _dispatch([step.pk])
                    counts["requeued"] += 1
                continue
            else:
                moved = _step_move(
                    step,
                    STEP_FAIL,
                    attempt=step.attempt,
                    reason=FailureReason.WORKER_LOST_REPEATEDLY,
                    message=f"worker lost on all {step.attempt} attempts",
                    finished_at=now,
                )
                succeeded = False
            if moved:
                counts["failed"] += 1
                follower_runs = _release_followers(step, succeeded=succeeded)
                run_ids = [step.run_id, *follower_runs]
                transaction.on_commit(functools.partial(_advance_runs, run_ids))
    counts["runtime_mismatch"] = _fail_unclaimable(now)  # before the redispatch renews them
    stale = now - timedelta(seconds=_cfg("LEASE_S"))
    lost = list(
        StepRun.objects.filter(status=S.QUEUED, queued_at__lt=stale).values_list("pk", flat=True)
    )
    if lost:
        StepRun.objects.filter(pk__in=lost, status=S.QUEUED).update(queued_at=now)
        with transaction.atomic():
            _dispatch(lost)
        counts["redispatched"] = len(lost)
    orphans = StepRun.objects.filter(status=S.FOLLOWING, following__status__in=STEP_TERMINAL)
    for leader_id in set(orphans.values_list("following_id", flat=True)):
        # Belt and braces: a leader's terminal transition releases its followers; this
        # releases any it missed, so no run waits on a finished leader.
        with transaction.atomic():
            leader = StepRun.objects.get(pk=leader_id)
            run_ids = [
                leader.run_id,
                *_release_followers(leader, succeeded=leader.status == S.SUCCEEDED),
            ]
            transaction.on_commit(functools.partial(_advance_runs, run_ids))
            counts["released"] += len(run_ids) - 1
    idle_runs = PipelineRun.objects.filter(status=R.RUNNING).exclude(Q(steps__status__in=IN_FLIGHT))
    for run_id in idle_runs.values_list("pk", flat=True).distinct():
        run_advance(run_id)
        counts["advanced"] += 1
    return counts


_orphans_swept_at: float | None = None
ORPHAN_SWEEP_EVERY_S = 3600.0


def _collect_orphans() -> int:
    """Temp files a crashed artifact writer left behind (filesystem storage only), looked
    for once an hour per process: it walks the whole store."""
    import time

    from runs_app.artifacts import artifact_storage

    global _orphans_swept_at
    if (
        _orphans_swept_at is not None
        and time.monotonic() - _orphans_swept_at < ORPHAN_SWEEP_EVERY_S
    ):
        return 0
    _orphans_swept_at = time.monotonic()
    storage = artifact_storage()
    collect = getattr(storage, "collect_orphans", None)
    return collect() if collect is not None else 0


def _fail_unclaimable(now: Any) -> int:
    """Fail queued steps that no live worker's runtime can take (after a lease of grace)."""
    from runs_app.models import WorkerHeartbeat

    fresh = now - timedelta(seconds=3 * _cfg("HEARTBEAT_S"))
    runtimes = set(
        WorkerHeartbeat.objects.filter(last_seen__gte=fresh).values_list("runtime", flat=True)
    )
    if not runtimes:
        return 0  # nobody is alive to judge; the steps wait for a worker
    stale = now - timedelta(seconds=_cfg("LEASE_S"))
    failed = 0
    for step in StepRun.objects.filter(status=S.QUEUED, queued_at__lt=stale):
        runtime = step.key_parts.get("runtime")
        if runtime is None or runtime in runtimes:
            continue
        with transaction.atomic():
            if _step_move(
                step,
                STEP_FAIL_UNSTARTED,
                reason=FailureReason.RUNTIME_MISMATCH,
                message=f"no live worker has runtime {runtime[:12]}",
                finished_at=now,
            ):
                failed += 1
                run_ids = [step.run_id, *_release_followers(step, succeeded=False)]
                transaction.on_commit(functools.partial(_advance_runs, run_ids))
    return failed


def leases_renew(worker: str, now: Any = None) -> list[tuple[int, int]]:
    """One UPDATE renews every running attempt of `worker`; returns (step, attempt) pairs
    whose cancel was requested, so the worker can kill them."""
    now = now or timezone.now()
    running = StepRun.objects.filter(worker=worker, status=S.RUNNING)
    running.update(lease_expires_at=now + timedelta(seconds=_cfg("LEASE_S")))
    return list(running.filter(cancel_requested=True).values_list("pk", "attempt"))
