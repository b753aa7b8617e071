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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Q
from django.dispatch import Signal
from django.utils import timezone

from artifacts.models import Artifact, ArtifactState
from artifacts.store import Saved, artifact_record_saved, artifacts_missing
from pipelines_app.models import DatasetVersion, ModuleVersion, PipelineVersion
from pipelines_app.specs import RETRY_REASONS, StepGraph, effective_params, step_graph
from runs_app import sql, wakeups
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.models import (
    RUN_TERMINAL,
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
from workspaces.models import Workspace

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
STEP_RELEASE = ((S.RUNNING,), S.QUEUED)  # its worker is shutting down: not an attempt lost
STEP_RETRY = ((S.RUNNING,), S.QUEUED)  # it failed for a reason its retry policy names
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
    "release": STEP_RELEASE,
    "retry": STEP_RETRY,
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


@dataclass(frozen=True, slots=True)
class _Event:
    """An Event row, written with the others when its transaction ends (_Tx.flush). Not a
    model instance: making one of those cost ~0.1 ms, three times on every step's path."""

    run_id: int
    old_status: str
    new_status: str
    step_id: int | None = None
    reason: str = ""
    message: str = ""
    attempt: int = 0


class _Tx:
    """What a transition's transaction writes last: its events in one INSERT, and the runs
    whose long-polls to wake after it commits. A step's hot path (succeed, advance, claim
    the next) then writes one statement of events instead of one per move."""

    def __init__(self) -> None:
        self.events: list[_Event] = []
        self.runs: set[int] = set()

    def add(self, event: _Event) -> None:
        self.events.append(event)
        self.runs.add(event.run_id)

    def flush(self) -> None:
        if self.events:
            now = timezone.now()
            sql.insert(
                Event,
                _EVENT_FIELDS,
                (
                    (
                        e.run_id,
                        e.step_id,
                        e.old_status,
                        e.new_status,
                        e.reason,
                        e.message,
                        e.attempt,
                        now,
                    )
                    for e in self.events
                ),
            )
            self.events = []
        _changed(self.runs)
        self.runs = set()


_EVENT_FIELDS = ("run", "step", "old_status", "new_status", "reason", "message", "attempt", "at")


def _record(event: _Event, tx: _Tx | None) -> None:
    if tx is not None:
        tx.add(event)
    else:
        own = _Tx()
        own.add(event)
        own.flush()


def _step_move(
    step: StepRun,
    transition: tuple[tuple[str, ...], str],
    *,
    attempt: int | None = None,
    reason: str = "",
    message: str = "",
    tx: _Tx | None = None,
    **fields: Any,
) -> bool:
    """Conditionally move one step; record the event. False when zero rows matched."""
    sources, target = transition
    where = f"id = %s AND status IN ({sql.placeholders(sources)})"
    params: list[Any] = [step.pk, *sources]
    if attempt is not None:
        where += " AND attempt = %s"
        params.append(attempt)
    if target == S.FAILED:
        fields.setdefault("failure_reason", reason)
        fields.setdefault("failure_message", message)
    if not sql.update(StepRun, {"status": target, **fields}, where, params)[0]:
        return False
    old = step.status
    step.status = target
    for name, value in fields.items():
        if not isinstance(value, sql.Raw):
            setattr(step, name, value)
    _record(
        _Event(
            run_id=step.run_id,
            step_id=step.pk,
            old_status=old,
            new_status=target,
            reason=reason,
            message=message[:2000],
            attempt=step.attempt if attempt is None else attempt,
        ),
        tx,
    )
    return True


def _steps_move(
    steps: list[StepRun],
    transition: tuple[tuple[str, ...], str],
    tx: _Tx,
    *,
    reason: str = "",
    message: str = "",
    **fields: Any,
) -> list[StepRun]:
    """Move several steps locked by the caller (select_for_update) in one UPDATE; returns
    those moved, each with its event."""
    sources, target = transition
    steps = [s for s in steps if s.status in sources]
    if not steps:
        return []
    if target == S.FAILED:
        fields.setdefault("failure_reason", reason)
        fields.setdefault("failure_message", message)
    ids = [s.pk for s in steps]
    where = f"id IN ({sql.placeholders(ids)}) AND status IN ({sql.placeholders(sources)})"
    sql.update(StepRun, {"status": target, **fields}, where, [*ids, *sources])
    for step in steps:
        tx.add(
            _Event(
                run_id=step.run_id,
                step_id=step.pk,
                old_status=step.status,
                new_status=target,
                reason=reason,
                message=message[:2000],
                attempt=step.attempt,
            )
        )
        step.status = target
    return steps


def _run_move(
    run: PipelineRun,
    transition: tuple[tuple[str, ...], str],
    *,
    reason: str = "",
    message: str = "",
    tx: _Tx | None = None,
    **fields: Any,
) -> bool:
    sources, target = transition
    if target == R.FAILED:
        fields.setdefault("failure_reason", reason)
    where = f"id = %s AND status IN ({sql.placeholders(sources)})"
    if not sql.update(PipelineRun, {"status": target, **fields}, where, [run.pk, *sources])[0]:
        return False
    old = run.status
    run.status = target
    for name, value in fields.items():
        setattr(run, name, value)
    _record(
        _Event(
            run_id=run.pk, old_status=old, new_status=target, reason=reason, message=message[:2000]
        ),
        tx,
    )
    _finished(run, target)
    return True


# --- dispatch hints -------------------------------------------------------------------------
# "These steps may be ready" goes out as a signal after the transaction that queued them
# commits. runs_app.dispatch receives it (connected in RunsAppConfig.ready) and talks to the
# broker, so the state machine knows no broker. Without a receiver the hints go nowhere, and
# nothing is lost: the rows are the truth, and the reaper (or the embedded dispatcher) finds
# queued steps without them.
steps_queued = Signal()  # send(sender, step_ids=[...], delay_ms=0)


def _dispatch(step_ids: Iterable[int], delay_s: float = 0.0) -> None:
    """Hint these steps once the transaction that queued them commits (`delay_s` later:
    a retry after its backoff, which the claim refuses before then)."""
    ids = list(step_ids)
    if ids:
        send = functools.partial(
            steps_queued.send, __name__, step_ids=ids, delay_ms=int(delay_s * 1000)
        )
        transaction.on_commit(send)


# "This run has ended" goes out the same way, once its transaction commits; runs_app.webhooks
# receives it (connected in RunsAppConfig.ready) and queues the workspace's webhooks.
# The run's workspace and sweep come with it, so a receiver that has nothing to do for a run
# outside a sweep (or a workspace without webhooks) knows it without a query.
run_finished = Signal()  # send(sender, run_id=..., status=..., workspace_id=..., sweep_id=...)


def _finished(run: PipelineRun, status: str) -> None:
    if status in RUN_TERMINAL:
        transaction.on_commit(
            functools.partial(
                run_finished.send,
                __name__,
                run_id=run.pk,
                status=status,
                workspace_id=run.workspace_id,
                sweep_id=run.sweep_id,
            )
        )


def _changed(run_ids: Iterable[int]) -> None:
    """Wake the long-polls on these runs once the transaction that wrote their events
    commits (runs_app.wakeups)."""
    ids = set(run_ids)
    if ids:
        transaction.on_commit(functools.partial(wakeups.changed, ids))


# --- the graph of a run -----------------------------------------------------------------------
_GRAPHS_MAX = 512
_graphs: dict[tuple[int, str], StepGraph] = {}


def _graph(version: PipelineVersion) -> StepGraph:
    """The step graph of a pipeline version, built once per process: a version's spec never
    changes. Keyed by id and digest, so an id that names another spec (a test database made
    again) is never answered from the cache. `version` needs its id and digest only; the
    spec is read when the graph is not cached."""
    key = (version.pk, version.digest)
    graph = _graphs.get(key)
    if graph is None:
        spec = PipelineVersion.objects.values_list("spec", flat=True).get(pk=version.pk)
        graph = step_graph(spec["steps"])
        if len(_graphs) >= _GRAPHS_MAX:
            _graphs.clear()
        _graphs[key] = graph
    return graph


def _run_graph(run: PipelineRun) -> StepGraph:
    return _graph(run.pipeline_version)


def _lock_run(run_id: int) -> PipelineRun | None:
    """The run's row, locked until the transaction ends: every transition that moves a step
    of a run to an end (and may end the run, or make its successors ready) holds it, so two
    such transitions of one run never see each other half done. Its version comes with it
    (id and digest: the key of its graph), and its sweep (for the run_finished signal)."""
    rows = sql.execute(
        f"SELECT r.id, r.workspace_id, r.sweep_id, r.status, r.cancel_requested, v.id, "
        f"v.digest FROM {sql.table(PipelineRun)} r JOIN {sql.table(PipelineVersion)} v "
        f"ON v.id = r.pipeline_version_id WHERE r.id = %s{sql.for_update('r')}",
        [run_id],
    )
    if not rows:
        return None
    pk, workspace_id, sweep_id, status, cancel_requested, version_id, digest = rows[0]
    run = PipelineRun(
        id=pk,
        workspace_id=workspace_id,
        sweep_id=sweep_id,
        status=status,
        cancel_requested=bool(cancel_requested),
    )
    run.pipeline_version = PipelineVersion(id=version_id, digest=digest)
    return run


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


def _step_params(
    version: PipelineVersion, steps: list[Any], overrides: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every step's params after defaults and overrides, coerced; DomainError listing every
    bad override."""
    by_step, problems = _parse_overrides(version, overrides)
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
    return step_params


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
    variant_key: str = "",
) -> PipelineRun:
    """Create a run and all its steps in one transaction, then start it.

    Params are every declared param after defaults and overrides, coerced to its type, so
    `1` and `1.0` for a float param key alike. `force_steps` and everything downstream of
    them neither reuse nor follow (rerun from a step).

    What can be reused is settled before the rows are written: walking the steps upstream
    first, a step whose inputs are all known (from datasets, or from steps reused this way)
    and whose key has a succeeded twin is created `reused` (the `reuse` transition, made at
    creation: its event says so). So an unchanged rerun costs one query per step to find its
    sources and a fixed number of INSERTs, and ends before this returns.
    """
    overrides = param_overrides or {}
    steps = list(
        version.steps.select_related("module_version")
        .defer("module_version__files", "module_version__message", "module_version__warnings")
        .order_by("position")
    )
    step_params = _step_params(version, steps, overrides)
    _check_queues(version)
    graph = _graph(version)
    unknown = set(force_steps) - {s.name for s in steps}
    if unknown:
        raise DomainError(
            "invalid_step", "No such step.", {"step": [f"unknown step {sorted(unknown)[0]!r}"]}
        )
    forced = set(force_steps) | graph.downstream(set(force_steps))
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
            variant_key=variant_key,
        )
        rows = {
            step.name: StepRun(
                workspace_id=run.workspace_id,
                run=run,
                name=step.name,
                position=step.position,
                module_version=step.module_version,
                params=step_params[step.name],
                reuse_allowed=reuse and step.name not in forced,
                max_attempts=engine().max_attempts,
                waiting=len(graph.upstream[step.name]),
                **_policies(version.spec["steps"][step.name]),
            )
            for step in steps
        }
        tx = _Tx()
        reused = _plan_reuse(run, graph, rows)
        StepRun.objects.bulk_create(rows.values())
        _run_move(run, RUN_START, started_at=timezone.now(), tx=tx)
        _created_reused(run, rows, reused, tx)
        ready = [
            rows[name]
            for name in graph.order
            if rows[name].status == S.PENDING and rows[name].waiting == 0
        ]
        known = {name: plan.outputs for name, plan in reused.items()}
        queued = _start_ready(run, graph, ready, known, tx)
        _finish_if_done(run, tx)
        tx.flush()
        _dispatch(queued)
    return run


def _policies(spec_step: dict[str, Any]) -> dict[str, Any]:
    """A step's time limit and retry policy: its spec's (`timeout`, `retries`), else the
    settings' defaults."""
    conf = engine()
    retries = spec_step.get("retries") or {
        "count": conf.step_retries,
        "backoff": conf.step_retry_backoff_s,
        "on": list(RETRY_REASONS),
    }
    resources = spec_step.get("resources") or {}
    return {
        "timeout_s": float(spec_step.get("timeout") or conf.step_timeout_s),
        "retries": retries["count"],
        "retry_backoff_s": retries["backoff"],
        "retry_on": retries["on"],
        "queue": resources.get("queue", ""),
        "resources": resources,
    }


def _check_queues(version: PipelineVersion) -> None:
    """Every queue the steps name is one this deployment has (STEPWORKS_QUEUES)."""
    known = set(engine().queues)
    problems = {
        f"steps.{name}.resources.queue": [
            f"no queue {queue!r} here: STEPWORKS_QUEUES names "
            + (", ".join(sorted(known)) if known else "none")
        ]
        for name, step in version.spec["steps"].items()
        if (queue := (step.get("resources") or {}).get("queue")) and queue not in known
    }
    if problems:
        raise DomainError("invalid_queue", "A step names a queue no worker serves.", problems)


@dataclass(frozen=True)
class _Reuse:
    """A step settled as reused when its run is created."""

    source: StepRun
    outputs: dict[str, Artifact]
    inputs: dict[str, Artifact]


def _plan_reuse(run: PipelineRun, graph: StepGraph, rows: dict[str, StepRun]) -> dict[str, _Reuse]:
    """Settle, before the rows exist, which steps reuse a succeeded twin: walking upstream
    first, each step whose inputs are all known and whose key has a source. Marks those
    rows reused (with their key and source) and counts their successors down."""
    reused: dict[str, _Reuse] = {}
    known: dict[str, dict[str, Artifact]] = {}
    for name in graph.order:
        row = rows[name]
        if not row.reuse_allowed or row.waiting:
            continue
        inputs = _resolve_inputs(run, graph, name, known, read=False)
        if inputs is None:
            continue  # a missing input: the ready step fails when it is started
        _key(row, inputs)
        found = _reuse_source(row)
        if found is None:  # keyed again, and pinned, when it is started
            row.cache_key, row.key_parts, row.runtime = "", {}, ""
            continue
        source, outputs = found
        now = timezone.now()
        row.status = S.REUSED
        row.reused_from = source
        row.started_at = row.finished_at = now
        reused[name] = _Reuse(source, outputs, inputs)
        known[name] = outputs
        for successor in graph.successors[name]:
            rows[successor].waiting -= 1
    return reused


def _created_reused(
    run: PipelineRun, rows: dict[str, StepRun], reused: dict[str, _Reuse], tx: _Tx
) -> None:
    """The rows of the steps created reused: their inputs, outputs and events."""
    inputs = {name: plan.inputs for name, plan in reused.items()}
    outputs = {name: plan.outputs for name, plan in reused.items()}
    for model, by_step in ((StepInput, inputs), (StepOutput, outputs)):
        sql.insert(
            model,
            ("step", "name", "artifact"),
            (
                (rows[name].pk, link, artifact.pk)
                for name, links in by_step.items()
                for link, artifact in links.items()
            ),
        )
    for name, plan in reused.items():
        tx.add(
            _Event(
                run_id=run.pk,
                step_id=rows[name].pk,
                old_status=S.PENDING,
                new_status=S.REUSED,
                message=f"reused from run {plan.source.run_id}",
            )
        )


# --- advancing ------------------------------------------------------------------------------
@retry_on_conflict
def run_advance(run_id: int) -> list[int]:
    """Start every ready step of the run (pending, nothing left to wait for) and finish the
    run when all its steps are done; returns the steps it queued (hinted after commit).

    Transitions advance their own run as they go; this is for a run another run's step
    moved (a leader releasing its followers) and for the reaper's safety net.
    """
    with transaction.atomic():
        run = _lock_run(run_id)
        if run is None or run.status != R.RUNNING:
            return []
        tx = _Tx()
        graph = _run_graph(run)
        queued = _start_ready(run, graph, _ready_steps(run.pk), {}, tx)
        _finish_if_done(run, tx)
        tx.flush()
        _dispatch(queued)
    return queued


def _ready_steps(run_id: int, names: Iterable[str] | None = None) -> list[StepRun]:
    """The run's pending steps with nothing left to wait for (of `names`, if given), with
    what keying them needs (their module version's code digest)."""
    where, params = "s.run_id = %s AND s.status = %s AND s.waiting = 0", [run_id, S.PENDING]
    if names is not None:
        names = list(names)
        where += f" AND s.name IN ({sql.placeholders(names)})"
        params += names
    rows = sql.execute(
        f"SELECT s.id, s.workspace_id, s.name, s.params, s.status, s.reuse_allowed, "
        f"s.attempt, s.cache_key, s.runtime, s.waiting, s.cancel_requested, m.id, "
        f"m.code_digest FROM {sql.table(StepRun)} s JOIN {sql.table(ModuleVersion)} m "
        f"ON m.id = s.module_version_id WHERE {where} ORDER BY s.position",
        params,
    )
    steps = []
    for (
        pk,
        space,
        name,
        params_,
        status,
        reuse,
        attempt,
        key,
        runtime,
        waiting,
        cancel,
        mv,
        digest,
    ) in rows:
        step = StepRun(
            id=pk,
            workspace_id=space,
            run_id=run_id,
            name=name,
            params=sql.from_json(params_),
            status=status,
            reuse_allowed=bool(reuse),
            attempt=attempt,
            cache_key=key,
            runtime=runtime,
            waiting=waiting,
            cancel_requested=bool(cancel),
        )
        step.module_version = ModuleVersion(id=mv, code_digest=digest)
        steps.append(step)
    return steps


def _count_down(run: PipelineRun, graph: StepGraph, done: Iterable[str]) -> list[StepRun]:
    """Steps `done` succeeded or were reused: count their successors down; returns the
    successors that became ready."""
    counts = Counter(successor for name in done for successor in graph.successors[name])
    if not counts:
        return []
    by_count: dict[int, list[str]] = {}
    for name, count in counts.items():
        by_count.setdefault(count, []).append(name)
    for count, names in by_count.items():
        sql.update(
            StepRun,
            {"waiting": sql.Raw(f"waiting - {int(count)}")},
            f"run_id = %s AND name IN ({sql.placeholders(names)})",
            [run.pk, *names],
        )
    return _ready_steps(run.pk, counts)


def _start_ready(
    run: PipelineRun,
    graph: StepGraph,
    ready: list[StepRun],
    known: dict[str, dict[str, Artifact]],
    tx: _Tx,
    pinned: dict[int, dict[str, Artifact]] | None = None,
) -> list[int]:
    """Start ready steps: each is keyed, then reused, followed or queued; a reused one's
    successors may become ready in turn. `known` holds outputs already in hand by step name
    (the step that just finished); others are read. Returns the steps queued; `pinned`, if
    given, gets each one's inputs."""
    queued: list[int] = []
    work = list(ready)
    while work:
        step = work.pop(0)
        if run.cancel_requested:
            if _step_move(step, STEP_CANCEL, finished_at=timezone.now(), tx=tx):
                _fail_downstream(run, graph, step, tx)
            continue
        inputs = _resolve_inputs(run, graph, step.name, known)
        if inputs is None:
            _step_move(
                step,
                STEP_FAIL_UNSTARTED,
                reason=FailureReason.OUTPUT_INVALID,
                message="an upstream output this step binds is missing",
                finished_at=timezone.now(),
                tx=tx,
            )
            _fail_downstream(run, graph, step, tx)
            continue
        rekeyed = bool(step.cache_key)  # it followed a leader that failed: pinned before
        _key(step, inputs)
        _pin_inputs(step, inputs, rekeyed)
        outcome, outputs = _queue_or_follow(step, tx)
        if outcome == S.QUEUED:
            queued.append(step.pk)
            if pinned is not None:
                pinned[step.pk] = inputs
        elif outcome == S.REUSED:
            known[step.name] = outputs
            work.extend(_count_down(run, graph, [step.name]))
    return queued


def _resolve_inputs(
    run: PipelineRun,
    graph: StepGraph,
    name: str,
    known: dict[str, dict[str, Artifact]],
    *,
    read: bool = True,
) -> dict[str, Artifact] | None:
    """{input name: Artifact} for a ready step; None when a bound output is missing. Reads
    only the outputs of the steps it binds that are not already `known` (none, unless
    `read`)."""
    bindings = graph.bindings[name]
    wanted = {b.step for b in bindings.values() if not b.is_dataset and b.step not in known}
    if wanted and read:
        names = sorted(wanted)
        for step_name, output, *columns in sql.execute(
            f"SELECT s.name, o.name, {_ARTIFACT_SELECT} FROM {sql.table(StepOutput)} o "
            f"JOIN {sql.table(StepRun)} s ON s.id = o.step_id "
            f"JOIN {sql.table(Artifact)} a ON a.id = o.artifact_id "
            f"WHERE s.run_id = %s AND s.name IN ({sql.placeholders(names)})",
            [run.pk, *names],
        ):
            known.setdefault(step_name, {})[output] = _artifact(columns)
    resolved: dict[str, Artifact] = {}
    for input_name, binding in bindings.items():
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
            artifact = known.get(binding.step, {}).get(binding.output)
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


def _key(step: StepRun, inputs: dict[str, Any]) -> None:
    """Record the step's cache key and the parts it was made of (in memory: the transition
    that follows, queue, follow or reuse, writes them: _key_fields)."""
    parts = cache_key_parts(step, inputs)
    step.key_parts = parts
    step.cache_key = cache_key(parts)
    step.runtime = parts["runtime"]


def _pin_inputs(step: StepRun, inputs: dict[str, Any], rekeyed: bool) -> None:
    """Pin the inputs the step is keyed with; a step keyed before has its old pins replaced."""
    if rekeyed:
        StepInput.objects.filter(step=step).delete()
    sql.insert(
        StepInput, ("step", "name", "artifact"), ((step.pk, n, a.pk) for n, a in inputs.items())
    )


def _key_fields(step: StepRun) -> dict[str, Any]:
    return {"key_parts": step.key_parts, "cache_key": step.cache_key, "runtime": step.runtime}


# How many same-key sources a reuse tries before it runs the step: each one found with
# missing bytes is marked so, and is never tried again.
_REUSE_TRIES = 5


def _reuse_source(step: StepRun) -> tuple[StepRun, dict[str, Artifact]] | None:
    """The latest succeeded step with the same key in the workspace whose outputs the store
    still holds, with those outputs ({name: Artifact}); None if there is none or reuse is
    off. One statement a try: the source and its outputs come together. A source found
    with missing bytes has them marked missing (artifacts_missing), and the step's
    `reuse_note` says so: it runs instead, and its page says why."""
    if not step.reuse_allowed:
        return None
    steps, outputs, artifacts = sql.table(StepRun), sql.table(StepOutput), sql.table(Artifact)
    statement = (
        f"SELECT c.id, c.run_id, o.name, {_ARTIFACT_SELECT} FROM {steps} c "
        f"LEFT JOIN {outputs} o ON o.step_id = c.id LEFT JOIN {artifacts} a "
        f"ON a.id = o.artifact_id WHERE c.id = (SELECT t.id FROM {steps} t "
        f"WHERE t.workspace_id = %s AND t.cache_key = %s AND t.status = %s "
        f"AND t.reuse_forgotten_at IS NULL AND t.id <> %s AND NOT EXISTS (SELECT 1 "
        f"FROM {outputs} u JOIN {artifacts} b ON b.id = u.artifact_id "
        f"WHERE u.step_id = t.id AND b.state IN ({sql.placeholders(UNUSABLE_STATES)})) "
        f"ORDER BY t.finished_at DESC, t.id DESC LIMIT 1)"
    )
    params = [step.workspace_id, step.cache_key, S.SUCCEEDED, step.pk or 0, *UNUSABLE_STATES]
    for _ in range(_REUSE_TRIES):
        rows = sql.execute(statement, params)
        if not rows:
            return None
        source = StepRun(id=rows[0][0], run_id=rows[0][1], status=S.SUCCEEDED)
        linked = {row[2]: _artifact(row[3:]) for row in rows if row[2] is not None}
        missing = artifacts_missing(linked.values())
        if not missing:
            return source, linked
        names = {artifact.pk: name for name, artifact in linked.items()}
        gone = ", ".join(f"{names[a.pk]}, sha256 {a.sha256[:12]}" for a in missing)
        step.reuse_note = f"cached outputs of run {source.run_id} were missing ({gone})"
        if step.pk is not None:
            StepRun.objects.filter(pk=step.pk).update(reuse_note=step.reuse_note)
    return None


# An artifact as the scheduler reads it with the step that links it (SQL, then a model).
_ARTIFACT_FIELDS = (
    "id",
    "workspace_id",
    "sha256",
    "size",
    "media_type",
    "kind",
    "storage_name",
    "state",
)
_ARTIFACT_SELECT = ", ".join(f"a.{name}" for name in _ARTIFACT_FIELDS)


def _artifact(values: Sequence[Any]) -> Artifact:
    return Artifact(**dict(zip(_ARTIFACT_FIELDS, values, strict=True)))


class _ReuseInstead(Exception):
    """Rolls back a queue whose key succeeded meanwhile (see _queue_or_follow)."""

    def __init__(self, found: tuple[StepRun, dict[str, Artifact]]) -> None:
        super().__init__()
        self.found = found


def _reuse_from(
    step: StepRun,
    source: StepRun,
    linked: dict[str, Artifact],
    tx: _Tx,
) -> bool:
    """Link the source's outputs to the step; False if it moved on."""
    now = timezone.now()
    if not _step_move(
        step,
        STEP_REUSE,
        message=f"reused from run {source.run_id}",
        reused_from=source,
        following=None,
        started_at=now,
        finished_at=now,
        tx=tx,
        **_key_fields(step),
    ):
        return False
    sql.insert(
        StepOutput, ("step", "name", "artifact"), ((step.pk, n, a.pk) for n, a in linked.items())
    )
    return True


_QUEUE_TRIES = 5


def _queue_or_follow(step: StepRun, tx: _Tx) -> tuple[str, dict[str, Artifact]]:
    """Queue the keyed step as the leader of its key, reuse a succeeded twin, or follow the
    twin that leads; returns the status it reached (and, when reused, the outputs).

    Taking leadership first and then looking for a succeeded twin closes the race of "no
    twin succeeded yet" followed by a twin finishing before we queue: the unique index makes
    our UPDATE wait for a leader that is finishing, and the look after it sees that leader's
    success (we then reuse it instead). A step that may not reuse only queues.
    """
    for _ in range(_QUEUE_TRIES):
        mark = len(tx.events)
        try:
            with transaction.atomic():
                if not _step_move(
                    step, STEP_QUEUE, queued_at=timezone.now(), tx=tx, **_key_fields(step)
                ):
                    return step.status, {}
                found = _reuse_source(step)
                if found is not None:
                    raise _ReuseInstead(found)
                return S.QUEUED, {}
        except _ReuseInstead as instead:
            del tx.events[mark:]
            step.status = S.PENDING  # the savepoint rolled our queueing back
            source, linked = instead.found
            if _reuse_from(step, source, linked, tx):
                return S.REUSED, linked
            return step.status, {}
        except IntegrityError:
            del tx.events[mark:]
            step.status = S.PENDING
            # Another queued/running step with this key exists: the schema says it leads.
        if _follow(step, tx):
            return S.FOLLOWING, {}
        # It finished between our insert and our read: its success may now be reusable.
    return step.status, {}


def _follow(step: StepRun, tx: _Tx) -> bool:
    """Follow the leader of the step's key; False when there is none (any more)."""
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
        .only("pk", "run_id")
        .first()
    )
    if leader is None:
        return False
    return _step_move(
        step,
        STEP_FOLLOW,
        message=f"follows run {leader.run_id}",
        following=leader,
        tx=tx,
        **_key_fields(step),
    )


def _fail_downstream(run: PipelineRun, graph: StepGraph, step: StepRun, tx: _Tx) -> None:
    """`step` failed or was canceled: every pending step downstream of it follows (failed
    with dependency_failed, or canceled), in one UPDATE."""
    below = graph.downstream({step.name})
    if not below:
        return
    pending = list(
        StepRun.objects.select_for_update()
        .filter(run_id=run.pk, name__in=below, status=S.PENDING)
        .only("pk", "run_id", "status", "attempt")
        .order_by("pk")
    )
    now = timezone.now()
    if step.status == S.CANCELED:
        message = f"upstream step {step.name!r} was canceled"
        _steps_move(pending, STEP_CANCEL, tx, message=message, finished_at=now)
    else:
        _steps_move(
            pending,
            STEP_FAIL_UNSTARTED,
            tx,
            reason=FailureReason.DEPENDENCY_FAILED,
            message=f"upstream step {step.name!r} failed",
            finished_at=now,
        )


_OPEN = (S.PENDING, S.QUEUED, S.RUNNING, S.FOLLOWING)


def _finish_if_done(run: PipelineRun, tx: _Tx) -> None:
    """End the run when none of its steps is open (under the run's lock, so the last two
    steps to end cannot each think the other still runs)."""
    if run.status != R.RUNNING:
        return
    still_open = sql.execute(
        f"SELECT 1 FROM {sql.table(StepRun)} WHERE run_id = %s "
        f"AND status IN ({sql.placeholders(_OPEN)}) LIMIT 1",
        [run.pk, *_OPEN],
    )
    if still_open:
        return
    ended = list(
        StepRun.objects.filter(run_id=run.pk, status__in=(S.FAILED, S.CANCELED))
        .order_by("position")
        .values_list("status", "failure_reason")
    )
    now = timezone.now()
    if any(status == S.FAILED for status, _ in ended):
        reasons = [r for s, r in ended if s == S.FAILED and r != FailureReason.DEPENDENCY_FAILED]
        _run_move(
            run,
            RUN_FAIL,
            reason=reasons[0] if reasons else FailureReason.DEPENDENCY_FAILED,
            finished_at=now,
            tx=tx,
        )
    elif ended:
        _run_move(run, RUN_CANCEL, finished_at=now, tx=tx)
    else:
        _run_move(run, RUN_SUCCEED, finished_at=now, tx=tx)


def _step_ended(run: PipelineRun | None, step: StepRun, tx: _Tx) -> list[int]:
    """After a step of a locked run reached an end other than success: its followers go back
    to pending (their runs are advanced after commit), its downstream fails or is canceled,
    and the run ends if that was its last open step. Returns the followers' runs."""
    follower_runs = _release_followers(step, succeeded=False, tx=tx)
    if run is not None:
        _fail_downstream(run, _run_graph(run), step, tx)
        _finish_if_done(run, tx)
    return follower_runs


# --- worker side ----------------------------------------------------------------------------
# What a claim returns of the step: what the worker needs to run it (its module version is
# read through a per-process cache: versions never change).
_CLAIMED = (
    "id", "workspace_id", "run_id", "name", "module_version_id", "params", "attempt",
    "timeout_s", "max_attempts", "started_at", "runtime", "retries", "retry_on",
    "retry_backoff_s", "retried",
)  # fmt: skip


def _claim_update(step_id: int, worker: str, runtime: str | None, now: Any) -> StepRun | None:
    """The claim itself: one conditional UPDATE ... RETURNING the row (PostgreSQL, and
    SQLite from 3.35): a new attempt, the fencing token of everything it reports."""
    # Not before its time: a retry waits out its backoff.
    where = (
        "id = %s AND status = %s AND NOT cancel_requested "
        "AND (not_before IS NULL OR not_before <= %s)"
    )
    params: list[Any] = [step_id, S.QUEUED, sql.prep(StepRun, "not_before", now)]
    if runtime is not None:
        where += " AND runtime IN ('', %s)"
        params.append(runtime)
    cap = engine().max_running_steps_per_workspace
    if cap:
        # Fair sharing: no more than `cap` steps of one workspace run at once. Its claims
        # queue on the workspace's row, so two cannot both take the last place.
        workspace_id = _workspace_lock(step_id)
        if workspace_id is None:
            return None
        where += (
            f" AND (SELECT COUNT(*) FROM {sql.table(StepRun)} r WHERE r.workspace_id = %s"
            " AND r.status = %s) < %s"
        )
        params += [workspace_id, S.RUNNING, cap]
    values = {
        "status": S.RUNNING,
        "attempt": sql.Raw("attempt + 1"),
        "worker": worker,
        "started_at": now,
        "lease_expires_at": now + timedelta(seconds=engine().lease_s),
    }
    count, rows = sql.update(StepRun, values, where, params, returning=_CLAIMED)
    if not count:
        return None
    claimed = dict(zip(_CLAIMED, rows[0], strict=True))
    return StepRun(
        **{
            **claimed,
            "params": sql.from_json(claimed["params"]),
            "retry_on": sql.from_json(claimed["retry_on"]),
            "started_at": now,
        },
        status=S.RUNNING,
        worker=worker,
    )


def _workspace_lock(step_id: int) -> int | None:
    """Lock the row of the step's workspace until the transaction ends; its id."""
    rows = sql.execute(
        f"SELECT w.id FROM {sql.table(Workspace)} w JOIN {sql.table(StepRun)} s "
        f"ON s.workspace_id = w.id WHERE s.id = %s{sql.for_update('w')}",
        [step_id],
    )
    return rows[0][0] if rows else None


def _hint_capped(workspace_id: int) -> None:
    """A step of a capped workspace ended: hint its oldest queued step, which a claim may
    have refused while the workspace was at its cap (its message was then spent)."""
    if not engine().max_running_steps_per_workspace:
        return
    due = Q(not_before__isnull=True) | Q(not_before__lte=timezone.now())
    waiting = (
        StepRun.objects.filter(due, workspace_id=workspace_id, status=S.QUEUED)
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)[:1]
    )
    _dispatch(list(waiting))


@retry_on_conflict
def step_claim(step_id: int, worker: str, runtime: str | None = None) -> StepRun | None:
    """Claim a queued step for `worker`: a new attempt (the fencing token), or None.

    A worker whose runtime differs from the one the step was keyed with refuses it (its
    outputs would not be what the key promises); the reaper fails a step no live worker
    can take with runtime_mismatch. The returned step carries what a worker needs (its
    module version's id, params, attempt, timeout), not its module's sources.
    """
    with transaction.atomic():
        tx = _Tx()
        step = _claim_in(step_id, worker, runtime, timezone.now(), tx)
        tx.flush()
    return step


def _claim_in(step_id: int, worker: str, runtime: str | None, now: Any, tx: _Tx) -> StepRun | None:
    step = _claim_update(step_id, worker, runtime, now)
    if step is None:
        _unclaimed(step_id, worker, runtime, now, tx)
        return None
    if step.attempt > 1:
        # A retry: the points the lost attempt sent while it ran are not this one's.
        Metric.objects.filter(step_id=step_id).delete()
    tx.add(
        _Event(
            run_id=step.run_id,
            step_id=step.pk,
            old_status=S.QUEUED,
            new_status=S.RUNNING,
            message=f"claimed by {worker}",
            attempt=step.attempt,
        )
    )
    return step


def _unclaimed(step_id: int, worker: str, runtime: str | None, now: Any, tx: _Tx) -> None:
    """Why a claim matched nothing, for the cases that need an answer: a queued step whose
    cancel was requested is canceled; another runtime's step is left (and logged). A step
    that is not queued (a duplicate message) needs nothing."""
    step = (
        StepRun.objects.filter(pk=step_id, status=S.QUEUED)
        .only("pk", "run_id", "status", "attempt", "cancel_requested", "runtime", "name")
        .first()
    )
    if step is None:
        return
    if step.cancel_requested:
        run = _lock_run(step.run_id)
        if _step_move(step, STEP_CANCEL, finished_at=now, tx=tx):
            _step_ended(run, step, tx)
    elif runtime is not None and step.runtime not in ("", runtime):
        log.warning("worker %s refuses step %s: runtime differs", worker, step_id)


@dataclass(frozen=True)
class Recorded:
    """What a worker's report did: whether it counted (a stale or duplicate attempt does not;
    the object is truthy when it did), the steps the run's advance queued (hinted), and the
    step claimed for the reporting worker to run next, if it asked for one."""

    moved: bool
    queued: tuple[int, ...] = ()
    claimed: StepRun | None = None
    claimed_inputs: dict[str, Artifact] | None = None  # what `claimed` reads, by input

    def __bool__(self) -> bool:
        return self.moved


@retry_on_conflict
def step_succeed(
    step: StepRun,
    attempt: int,
    outputs: Mapping[str, Artifact | Saved],
    metrics: list[Any],
    *,
    claim_next: tuple[str, str | None] | None = None,
    replace_live: bool = False,
) -> Recorded:
    """Record a finished attempt's outputs and advance its run, in one transaction; a stale
    or duplicate attempt changes nothing.

    Under the run's lock: the step succeeds, its successors count down, the ones that became
    ready are keyed and queued (or reused, or follow a twin), and the run ends if that was
    its last step. With `claim_next=(worker, runtime)` the first step queued is claimed for
    that worker in the same transaction and returned (`claimed`, never hinted): it runs
    next with its inputs on hand and its zygote warm, so a chain of short steps costs no
    broker round trip and no transaction of its own per step. The other queued steps are
    hinted after commit. With `replace_live`, the points the attempt sent while it ran
    (step_metrics_append) give way to `metrics`, the whole list. Followers of this step in
    other runs are reused, and their runs advance after commit.

    An output may be bytes already saved whose row is not written yet (artifacts.store's
    Saved, as the worker passes them): its row is written here, so a step's success is one
    commit, rows and all. The rows come first, before the run's lock: the store's look at
    the bytes (a request, on S3) is not made while the run's other steps wait to report,
    and every success takes its locks in one order, the names (sorted), then the run. A
    stale attempt's rows are written too, and refer to nothing: the collector's.
    """
    with transaction.atomic():
        outputs = _recorded(outputs)
        run = _lock_run(step.run_id)
        tx = _Tx()
        if run is None or not _step_move(
            step, STEP_SUCCEED, attempt=attempt, finished_at=timezone.now(), tx=tx
        ):
            return Recorded(False)
        sql.insert(
            StepOutput,
            ("step", "name", "artifact"),
            ((step.pk, n, a.pk) for n, a in outputs.items()),
        )
        if replace_live:
            Metric.objects.filter(step=step).delete()
        now = timezone.now()
        sql.insert(
            Metric,
            ("step", "name", "value", "index", "at"),
            ((step.pk, m.name, m.value, m.step, now) for m in metrics),
        )
        follower_runs = _release_followers(step, succeeded=True, outputs=outputs, tx=tx)
        queued: list[int] = []
        claimed = None
        pinned: dict[int, dict[str, Artifact]] = {}
        if run.status == R.RUNNING:
            graph = _run_graph(run)
            ready = _count_down(run, graph, [step.name])
            queued = _start_ready(run, graph, ready, {step.name: dict(outputs)}, tx, pinned)
            if claim_next is not None and queued:
                claimed = _claim_in(queued[0], *claim_next, timezone.now(), tx)
            if not queued:  # a step just queued is open: the run goes on
                _finish_if_done(run, tx)
        if claimed is None:
            _hint_capped(step.workspace_id)  # its place is free: another step may take it
        tx.flush()
        _dispatch(queued[1:] if claimed is not None else queued)
    _advance_runs(run_id for run_id in follower_runs if run_id != step.run_id)
    inputs = pinned.get(claimed.pk) if claimed is not None else None
    return Recorded(True, tuple(queued), claimed, inputs)


def _recorded(outputs: Mapping[str, Artifact | Saved]) -> dict[str, Artifact]:
    """The outputs with the rows of saved bytes written, in the order of their storage
    names (the collector's, so the two never wait on each other's name locks)."""
    recorded = dict(outputs)
    saved = [(name, out) for name, out in outputs.items() if isinstance(out, Saved)]
    for name, out in sorted(saved, key=lambda item: item[1].storage_name):
        recorded[name] = artifact_record_saved(out)
    return cast(dict[str, Artifact], recorded)


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


def _end_step(step: StepRun, attempt: int, transition: Any, **move: Any) -> bool:
    """Move a running attempt to an end other than success, in its run's transaction."""
    with transaction.atomic():
        run = _lock_run(step.run_id)
        tx = _Tx()
        if not _step_move(step, transition, attempt=attempt, tx=tx, **move):
            return False
        follower_runs = _step_ended(run, step, tx)
        _hint_capped(step.workspace_id)
        tx.flush()
    _advance_runs(follower_runs)
    return True


@retry_on_conflict
def step_fail(step: StepRun, attempt: int, reason: str, message: str) -> bool:
    """A finished attempt failed with a reason; a stale attempt changes nothing. A reason
    the step's retry policy names, with retries left, queues it again after its backoff
    (doubling each time) instead: the failure is an event, the attempt's log stays."""
    if reason in (step.retry_on or ()) and step.retried < step.retries:
        delay = step.retry_backoff_s * 2**step.retried
        with transaction.atomic():
            if not _step_move(
                step,
                STEP_RETRY,
                attempt=attempt,
                reason=reason,
                message=f"retry {step.retried + 1} of {step.retries} in {delay:g} s: {message}",
                queued_at=timezone.now(),
                not_before=timezone.now() + timedelta(seconds=delay),
                lease_expires_at=None,
                retried=sql.Raw("retried + 1"),
            ):
                return False
            _dispatch([step.pk], delay_s=delay)
        return True
    return _end_step(
        step, attempt, STEP_FAIL, reason=reason, message=message, finished_at=timezone.now()
    )


@retry_on_conflict
def step_cancel_running(step: StepRun, attempt: int, message: str = "canceled") -> bool:
    """The worker killed a running attempt because its cancel was requested."""
    return _end_step(
        step, attempt, STEP_CANCEL_RUNNING, message=message, finished_at=timezone.now()
    )


def _release_followers(
    leader: StepRun,
    *,
    succeeded: bool,
    tx: _Tx,
    outputs: dict[str, Any] | None = None,
) -> list[int]:
    """Move a finished leader's followers: reused on success (their successors count down),
    back to pending otherwise; returns their runs, to advance after commit."""
    # All followers in a fixed number of statements (a sweep's leader has many). Locked
    # first, so the one conditional UPDATE moves exactly the rows read.
    rows = sql.execute(
        f"SELECT s.id FROM {sql.table(StepRun)} s WHERE s.following_id = %s "
        f"AND s.status = %s ORDER BY s.id{sql.for_update('s')}",
        [leader.pk, S.FOLLOWING],
    )
    if not rows:
        return []  # the common case: nobody followed this step
    followers = list(
        StepRun.objects.filter(pk__in=[row[0] for row in rows], status=S.FOLLOWING)
        .select_related("run__pipeline_version")
        .only("pk", "run", "name", "status", "attempt", "run__pipeline_version__digest")
        .order_by("pk")
    )
    if not succeeded:
        _steps_move(
            followers, STEP_UNFOLLOW, tx, message="its leader did not succeed", following=None
        )
        return [f.run_id for f in followers]
    if outputs is None:
        outputs = {
            out.name: out.artifact
            for out in StepOutput.objects.filter(step=leader).select_related("artifact")
        }
    now = timezone.now()
    _steps_move(
        followers,
        STEP_REUSE,
        tx,
        message=f"reused from run {leader.run_id}",
        reused_from=leader,
        following=None,
        started_at=now,
        finished_at=now,
    )
    StepOutput.objects.bulk_create(
        StepOutput(step_id=f.pk, name=name, artifact=artifact)
        for f in followers
        for name, artifact in outputs.items()
    )
    # Their successors count down: one UPDATE for all (a sweep's leader has many followers).
    counts = Counter(
        (f.run_id, successor)
        for f in followers
        for successor in _run_graph(f.run).successors[f.name]
    )
    by_count: dict[int, Q] = {}
    for (run_id, name), count in counts.items():
        by_count[count] = by_count.get(count, Q()) | Q(run_id=run_id, name=name)
    for count, where in by_count.items():
        StepRun.objects.filter(where).update(waiting=F("waiting") - count)
    return [f.run_id for f in followers]


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
        run = _lock_run(run_id)
        if run is None or run.status not in RUN_CANCEL[0]:
            return False
        tx = _Tx()
        PipelineRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        run.cancel_requested = True
        tx.add(
            _Event(
                run_id=run.pk,
                old_status=run.status,
                new_status=run.status,
                message=f"cancel requested by {who}",
            )
        )
        released: list[int] = []
        now = timezone.now()
        unstarted = list(
            StepRun.objects.select_for_update()
            .filter(run=run, status__in=STEP_CANCEL[0])
            .only("pk", "run_id", "status", "attempt")
            .order_by("pk")
        )
        for step in _steps_move(
            unstarted, STEP_CANCEL, tx, message=f"canceled by {who}", finished_at=now
        ):
            released += _release_followers(step, succeeded=False, tx=tx)
        StepRun.objects.filter(run=run, status=S.RUNNING).update(cancel_requested=True)
        if run.status == R.PENDING:
            _run_move(run, RUN_CANCEL, finished_at=now, tx=tx)
        else:
            _finish_if_done(run, tx)
        tx.flush()
    _advance_runs(released)
    return True


# --- recovery (runs_app/reaper.py finds what needs it) ---------------------------------------
@retry_on_conflict
def step_release(step: StepRun, attempt: int, worker: str) -> bool:
    """A worker shutting down gives back an attempt it could not finish in its drain time:
    queued again at once, for another worker, and not counted against the step (its
    max_attempts grows by one: the attempt number is the fencing token and only grows)."""
    with transaction.atomic():
        if not _step_move(
            step,
            STEP_RELEASE,
            attempt=attempt,
            message=f"{worker} shut down before it finished; given back, not counted",
            queued_at=timezone.now(),
            lease_expires_at=None,
            max_attempts=sql.Raw("max_attempts + 1"),
        ):
            return False
        _dispatch([step.pk])
    return True


# A step on dying workers this many times its attempts (never alone, never on another host)
# is a poison step that ends: twice, so that a step merely unlucky in a kill storm is not.
LOST_WORKERS_LIMIT = 2


@retry_on_conflict
def step_lease_lost(step: StepRun, now: Any) -> str | None:
    """A running step's lease expired (its worker died or stopped answering): canceled if a
    cancel was asked, requeued while attempts remain (a killed worker counts as an attempt),
    else failed with worker_lost_repeatedly. Returns "requeued", "failed" or None (it had
    moved on already)."""
    blamed, why = _blame(step)
    exhausted = len(step.lost_workers) + 1 >= LOST_WORKERS_LIMIT * engine().max_attempts
    if (
        not step.cancel_requested
        and not exhausted
        and (step.attempt < step.max_attempts or not blamed)
    ):
        fields: dict[str, Any] = {
            "queued_at": now,
            "lease_expires_at": None,
            "lost_workers": [*step.lost_workers, step.worker],
        }
        if not blamed:  # the attempt is given back, as a drained worker's would be
            fields["max_attempts"] = sql.Raw("max_attempts + 1")
        with transaction.atomic():
            if not _step_move(
                step,
                STEP_REQUEUE,
                attempt=step.attempt,
                reason=FailureReason.WORKER_LOST,
                message=f"lease of {step.worker} expired; retrying ({why})",
                **fields,
            ):
                return None
            _dispatch([step.pk])
        return "requeued"
    if step.cancel_requested:
        moved = _end_step(
            step,
            step.attempt,
            STEP_CANCEL_RUNNING,
            message="canceled; its worker stopped answering",
            finished_at=now,
        )
    else:
        moved = _end_step(
            step,
            step.attempt,
            STEP_FAIL,
            reason=FailureReason.WORKER_LOST_REPEATEDLY,
            message=f"worker lost on all {step.attempt} attempts ({why})",
            finished_at=now,
            lost_workers=[*step.lost_workers, step.worker],
        )
    return "failed" if moved else None


def _blame(step: StepRun) -> tuple[bool, str]:
    """Whether the death of `step`'s worker counts as one of its attempts, and why.

    A worker dies with every step it ran: only evidence counts against a step. It was alone
    on that worker; or it lost a worker on another host before (it travels with the
    deaths); or it was on dying workers as often as it may have attempts (a step that kills
    its worker but never runs alone still ends: LOST_WORKERS_LIMIT times its attempts, a
    fixed budget, since each attempt given back raises `max_attempts`). Otherwise its
    attempt is given back.
    """
    companions = (
        StepRun.objects.filter(worker=step.worker, status__in=(S.RUNNING, S.QUEUED))
        .exclude(pk=step.pk)
        .count()
    )
    if companions == 0:
        return True, "counted: it was the only step on that worker"
    host = step.worker.rpartition(":")[0]
    if any(lost.rpartition(":")[0] != host for lost in step.lost_workers):
        return True, "counted: it lost a worker on another host before"
    if len(step.lost_workers) + 1 >= LOST_WORKERS_LIMIT * engine().max_attempts:
        return True, f"counted: on {len(step.lost_workers) + 1} workers that died"
    return False, f"not counted: {companions} other step(s) ran on that worker"


def step_unclaimable(step: StepRun, runtime: str, now: Any) -> bool:
    """Fail a queued step no live worker's runtime can take."""
    with transaction.atomic():
        run = _lock_run(step.run_id)
        tx = _Tx()
        if not _step_move(
            step,
            STEP_FAIL_UNSTARTED,
            reason=FailureReason.RUNTIME_MISMATCH,
            message=f"no live worker has runtime {runtime[:12]}",
            finished_at=now,
            tx=tx,
        ):
            return False
        follower_runs = _step_ended(run, step, tx)
        tx.flush()
    _advance_runs(follower_runs)
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
        tx = _Tx()
        follower_runs = _release_followers(leader, succeeded=leader.status == S.SUCCEEDED, tx=tx)
        tx.flush()
        run_ids = [leader.run_id, *follower_runs]
        transaction.on_commit(functools.partial(_advance_runs, run_ids))
    return len(follower_runs)
