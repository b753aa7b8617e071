"""The data bench_pages.py measures, written straight to the tables with bulk_create.

Nothing here executes a step or starts a worker: rows only, shaped like what the engine
leaves behind (statuses, timings, reuse links, events, outputs, metrics), so the pages read
what they would read in a real workspace. Imported by bench_pages.py's child, after
`django.setup()`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import random
import tempfile
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from artifacts import store
from artifacts.models import Artifact
from pipelines_app.models import Module, ModuleVersion, Pipeline, PipelineStep, PipelineVersion
from runs_app.models import (
    Event,
    FailureReason,
    Metric,
    PipelineRun,
    RunStatus,
    StepInput,
    StepLog,
    StepOutput,
    StepRun,
    StepStatus,
    Sweep,
)
from workspaces.models import Membership, Role, Workspace

MB = 1 << 20
T0 = timezone.now() - dt.timedelta(days=1)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


@dataclass
class World:
    user: Any
    explore: Workspace  # the 200-step run, the sweeps, the 1 GB run
    runs: Workspace  # 10,000 runs and nothing else
    small: Workspace  # 3 runs: the runs list's query count on a near-empty workspace


def world_create() -> World:
    user = get_user_model().objects.create_user("bench")  # no password: force_login
    spaces = [
        Workspace.objects.create(slug=slug, name=name)
        for slug, name in (
            ("explore", "Explorer bench"),
            ("runs", "Runs list bench"),
            ("small", "Small bench"),
        )
    ]
    Membership.objects.bulk_create(
        Membership(user=user, workspace=space, role=Role.OWNER) for space in spaces
    )
    return World(user, *spaces)


# --- design-time rows ---------------------------------------------------------------------------
def modules_create(workspace: Workspace, names: list[str], versions: int = 3) -> dict[str, list]:
    """{module name: [its versions, oldest first]}; each takes `x`, returns `out`, has `k`."""
    modules = Module.objects.bulk_create(Module(workspace=workspace, name=n) for n in names)
    rows = []
    for module in modules:
        for number in range(1, versions + 1):
            text = f"def run(ctx, x=None, *, k: int = 0):\n    return {{'out': {number}}}\n"
            rows.append(
                ModuleVersion(
                    module=module,
                    number=number,
                    entrypoint="main.py:run",
                    files={"main.py": text},
                    code_digest=_digest(module.name, text),
                    interface={
                        "inputs": ["x"],
                        "outputs": ["out"],
                        "params": {"k": {"type": "int", "required": False, "default": 0}},
                    },
                )
            )
    created = ModuleVersion.objects.bulk_create(rows)
    by_module: dict[str, list] = {}
    for version in created:
        by_module.setdefault(version.module.name, []).append(version)
    return by_module


def pipeline_create(
    workspace: Workspace, name: str, steps: dict[str, tuple[Any, dict[str, str]]]
) -> PipelineVersion:
    """A pipeline with one version; steps: {name: (module version, inputs)} in order."""
    pipeline = Pipeline.objects.create(workspace=workspace, name=name)
    spec = {
        "steps": {
            step: {
                "module": version.ref,
                "module_version": version.pk,
                "params": {"k": 0},
                "inputs": inputs,
            }
            for step, (version, inputs) in steps.items()
        }
    }
    pipeline_version = PipelineVersion.objects.create(
        pipeline=pipeline, number=1, spec=spec, digest=_digest(name, len(steps))
    )
    PipelineStep.objects.bulk_create(
        PipelineStep(
            pipeline_version=pipeline_version,
            name=step,
            position=position,
            module_version=version,
            params={"k": 0},
            inputs=inputs,
        )
        for position, (step, (version, inputs)) in enumerate(steps.items())
    )
    return pipeline_version


def _step(run: PipelineRun, name: str, position: int, version: Any, **fields: Any) -> StepRun:
    fields.setdefault("attempt", 1 if fields.get("status") == StepStatus.SUCCEEDED else 0)
    return StepRun(
        workspace_id=run.workspace_id,
        run=run,
        name=name,
        position=position,
        module_version=version,
        params={"k": 0},
        cache_key=_digest(run.pk, name),
        key_parts={"code": version.code_digest, "params": {"k": 0}, "inputs": {}},
        **fields,
    )


def _spread_created_at(runs: list[PipelineRun], start: dt.datetime, every: dt.timedelta) -> None:
    """auto_now_add ignores a given created_at; set it after, oldest first."""
    for i, run in enumerate(runs):
        run.created_at = start + every * i
    PipelineRun.objects.bulk_update(runs, ["created_at"], batch_size=500)


# --- the run explorer: a 200-step run -----------------------------------------------------------
def explorer_run_create(world: World, length: int = 200, name: str = "wide") -> PipelineRun:
    """A `length`-step pipeline (a chain, every tenth step also reading the step ten back) and
    two runs of it; returns the second: 35% of its steps reused from the first, the rest
    executed, the last few failed (one user error, the rest dependency_failed)."""
    workspace = world.explore
    mods = modules_create(workspace, [f"{name}-m{i}" for i in range(8)])
    steps: dict[str, tuple[Any, dict[str, str]]] = {}
    for i in range(length):
        inputs = {"x": f"s{i - 1:03d}.out"} if i else {}
        if i >= 10 and i % 10 == 0:
            inputs["y"] = f"s{i - 10:03d}.out"
        steps[f"s{i:03d}"] = (mods[f"{name}-m{i % 8}"][i % 3], inputs)
    version = pipeline_create(workspace, name, steps)
    names = list(steps)
    reused = int(length * 0.35)
    failed_at = length - max(length // 20, 1)  # the last 5% fail
    previous, run = PipelineRun.objects.bulk_create(
        PipelineRun(
            workspace=workspace,
            pipeline_version=version,
            created_by=world.user,
            status=status,
            failure_reason=reason,
            started_at=T0 + dt.timedelta(hours=h),
            finished_at=T0 + dt.timedelta(hours=h + 1),
        )
        for h, status, reason in (
            (0, RunStatus.SUCCEEDED, ""),
            (2, RunStatus.FAILED, FailureReason.USER_ERROR),
        )
    )
    rng = random.Random(1)
    old_steps = StepRun.objects.bulk_create(
        _step(
            previous,
            step,
            i,
            steps[step][0],
            status=StepStatus.SUCCEEDED,
            queued_at=T0 + dt.timedelta(seconds=10 * i),
            started_at=T0 + dt.timedelta(seconds=10 * i + 1),
            finished_at=T0 + dt.timedelta(seconds=10 * i + 9),
            worker="bench:1",
        )
        for i, step in enumerate(names)
    )
    new_rows = []
    clock: dt.datetime = T0 + dt.timedelta(hours=2)  # the run's start
    for i, step in enumerate(names):
        fields: dict[str, Any] = {"worker": "bench:1"}
        if i < reused:
            fields.update(status=StepStatus.REUSED, reused_from=old_steps[i], queued_at=clock)
        elif i < failed_at:
            wait, took = rng.uniform(0.05, 2), rng.uniform(0.5, 30)
            fields.update(
                status=StepStatus.SUCCEEDED,
                queued_at=clock,
                started_at=clock + dt.timedelta(seconds=wait),
                finished_at=clock + dt.timedelta(seconds=wait + took),
            )
            clock += dt.timedelta(seconds=wait + took)
        elif i == failed_at:
            fields.update(
                status=StepStatus.FAILED,
                failure_reason=FailureReason.USER_ERROR,
                failure_message="ValueError: bench",
                attempt=1,
                queued_at=clock,
                started_at=clock + dt.timedelta(seconds=0.1),
                finished_at=clock + dt.timedelta(seconds=3),
            )
        else:
            fields.update(status=StepStatus.FAILED, failure_reason=FailureReason.DEPENDENCY_FAILED)
        new_rows.append(_step(run, step, i, steps[step][0], **fields))
    new_steps = StepRun.objects.bulk_create(new_rows)
    _events_create(previous, old_steps)
    _events_create(run, new_steps)
    _outputs_create(workspace, old_steps, steps)
    _outputs_create(workspace, new_steps, steps, reused_from=old_steps)
    return run


def _events_create(run: PipelineRun, steps: list[StepRun]) -> None:
    """The transitions the scheduler would have recorded."""
    events = [Event(run=run, old_status="", new_status="pending")]
    events.append(Event(run=run, old_status="pending", new_status="running"))
    for step in steps:
        if step.status == StepStatus.REUSED:
            path = ["pending", "reused"]
        elif step.started_at is None:
            path = ["pending", step.status]
        else:
            path = ["pending", "queued", "running", step.status]
        for old, new in itertools.pairwise(path):
            reason = step.failure_reason if new == "failed" else ""
            events.append(Event(run=run, step=step, old_status=old, new_status=new, reason=reason))
    events.append(Event(run=run, old_status="running", new_status=run.status))
    Event.objects.bulk_create(events, batch_size=500)


def _outputs_create(
    workspace: Workspace,
    steps: list[StepRun],
    spec: dict[str, tuple[Any, dict[str, str]]],
    reused_from: list[StepRun] | None = None,
) -> None:
    """`out` (an artifact row; the explorer reads no bytes) of every step that produced or
    reused one, its inputs, a log chunk and two metrics of every step that executed."""
    executed = [s for s in steps if s.status == StepStatus.SUCCEEDED]
    made = Artifact.objects.bulk_create(
        Artifact(
            workspace=workspace,
            sha256=_digest("artifact", s.pk),
            size=1000 + s.position,
            media_type="application/json",
            storage_name=store.storage_name_for(_digest("artifact", s.pk)),
        )
        for s in executed
    )
    out_of: dict[str, int] = {s.name: a.pk for s, a in zip(executed, made, strict=True)}
    if reused_from is not None:
        sources = {s.pk: s.name for s in reused_from}
        done = StepOutput.objects.filter(step__in=reused_from).values_list("step_id", "artifact_id")
        old = {sources[step_id]: artifact_id for step_id, artifact_id in done}
        for s in steps:
            if s.status == StepStatus.REUSED:
                out_of[s.name] = old[s.name]
    StepOutput.objects.bulk_create(
        StepOutput(step=s, name="out", artifact_id=out_of[s.name])
        for s in steps
        if s.name in out_of
    )
    StepInput.objects.bulk_create(
        StepInput(step=s, name=name, artifact_id=out_of[binding.partition(".")[0]])
        for s in steps
        if s.name in out_of
        for name, binding in spec[s.name][1].items()
    )
    StepLog.objects.bulk_create(
        StepLog(step=s, attempt=1, offset=0, text=f"step {s.name}: working\n" * 20)
        for s in executed
    )
    Metric.objects.bulk_create(
        Metric(step=s, name=name, value=s.position / 1000 + bump)
        for s in executed
        for name, bump in (("loss", 0.1), ("rows", 1000.0))
    )


# --- the runs list: 10,000 runs -----------------------------------------------------------------
def runs_list_create(world: World, workspace: Workspace, count: int) -> None:
    """`count` runs of three pipelines (prep -> train -> evaluate -> report), newest a minute
    apart, mostly succeeded; prep reused from the pipeline's first run after it; an
    `accuracy` on evaluate and a `train_loss` on train of every run that got that far."""
    step_names = ["prep", "train", "evaluate", "report"]
    mods = modules_create(workspace, step_names, versions=2)
    versions = []
    for p in range(3):
        spec = {
            name: (mods[name][p % 2], {"x": f"{step_names[i - 1]}.out"} if i else {})
            for i, name in enumerate(step_names)
        }
        versions.append(pipeline_create(workspace, f"pipe{p}", spec))
    rng = random.Random(2)
    weights = {
        RunStatus.SUCCEEDED: 85,
        RunStatus.FAILED: 8,
        RunStatus.CANCELED: 3,
        RunStatus.RUNNING: 2,
        RunStatus.PENDING: 2,
    }
    statuses = rng.choices(list(weights), list(weights.values()), k=count)
    runs = PipelineRun.objects.bulk_create(
        (
            PipelineRun(
                workspace=workspace,
                pipeline_version=versions[i % 3],
                created_by=world.user,
                status=status,
                failure_reason=FailureReason.USER_ERROR if status == RunStatus.FAILED else "",
                started_at=None if status == RunStatus.PENDING else T0,
                finished_at=T0 + dt.timedelta(seconds=90) if status in _RUN_DONE else None,
                param_overrides={"train.k": i % 7} if i % 5 == 0 else {},
            )
            for i, status in enumerate(statuses)
        ),
        batch_size=1000,
    )
    start = timezone.now() - dt.timedelta(minutes=count + 1)
    _spread_created_at(runs, start, dt.timedelta(minutes=1))
    first_prep: dict[int, StepRun] = {}
    for run in runs[:3]:  # each pipeline's first run executes its prep
        first_prep[run.pipeline_version_id] = StepRun.objects.create(
            **_step_fields(run, "prep", 0, mods["prep"][0], StepStatus.SUCCEEDED)
        )
    steps: list[StepRun] = []
    for run in runs:
        plan = _run_plan(run.status)
        for i, (name, status) in enumerate(zip(step_names, plan, strict=True)):
            if name == "prep" and run.pk == first_prep[run.pipeline_version_id].run_id:
                continue
            fields = _step_fields(run, name, i, mods[name][0], status)
            if name == "prep" and status == StepStatus.SUCCEEDED:
                fields.update(
                    status=StepStatus.REUSED, reused_from=first_prep[run.pipeline_version_id]
                )
            steps.append(StepRun(**fields))
    StepRun.objects.bulk_create(steps, batch_size=1000)
    executed = StepRun.objects.filter(
        workspace=workspace, name__in=["train", "evaluate"], status=StepStatus.SUCCEEDED
    ).values_list("pk", "name")
    Metric.objects.bulk_create(
        (
            Metric(
                step_id=pk,
                name="accuracy" if name == "evaluate" else "train_loss",
                value=rng.uniform(0.6, 0.95),
            )
            for pk, name in executed
        ),
        batch_size=1000,
    )


_RUN_DONE = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


def _run_plan(status: str) -> list[StepStatus]:
    """The statuses of a run's four steps, given the run's."""
    s = StepStatus
    plans: dict[str, list[StepStatus]] = {
        RunStatus.SUCCEEDED: [s.SUCCEEDED] * 4,
        RunStatus.FAILED: [s.SUCCEEDED, s.FAILED, s.FAILED, s.FAILED],
        RunStatus.CANCELED: [s.SUCCEEDED, s.SUCCEEDED, s.CANCELED, s.CANCELED],
        RunStatus.RUNNING: [s.SUCCEEDED, s.SUCCEEDED, s.RUNNING, s.PENDING],
        RunStatus.PENDING: [s.PENDING] * 4,
    }
    return plans[status]


def _step_fields(run: PipelineRun, name: str, position: int, version: Any, status: str) -> dict:
    fields: dict[str, Any] = {
        "workspace_id": run.workspace_id,
        "run": run,
        "name": name,
        "position": position,
        "module_version": version,
        "params": {"k": 0},
        "cache_key": _digest(run.pk, name),
        "status": status,
    }
    if status == StepStatus.FAILED:
        first = position == 1
        fields["failure_reason"] = (
            FailureReason.USER_ERROR if first else FailureReason.DEPENDENCY_FAILED
        )
    if status in (StepStatus.SUCCEEDED, StepStatus.RUNNING):
        at = T0 + dt.timedelta(seconds=20 * position)
        fields.update(attempt=1, queued_at=at, started_at=at + dt.timedelta(seconds=1))
        if status == StepStatus.SUCCEEDED:
            fields["finished_at"] = at + dt.timedelta(seconds=19)
    return fields


# --- a sweep: runs with variant choices, accuracy on evaluate -----------------------------------
def sweep_create(
    world: World, name: str, prep: int, train: int, replicates: int, series: int = 20
) -> Sweep:
    """A prep x train product with replicates over prep -> train -> evaluate: prep executed
    once per prep variant and reused by every other run with it, train and evaluate executed
    per run; every 25th run failed in train. `accuracy` on evaluate; a `loss` series of
    `series` points on train."""
    workspace = world.explore
    names = ["prep", "train", "evaluate"]
    mods = modules_create(workspace, [f"{name}-{n}" for n in names], versions=1)
    steps = {
        n: (mods[f"{name}-{n}"][0], {"x": f"{names[i - 1]}.out"} if i else {})
        for i, n in enumerate(names)
    }
    base = pipeline_create(workspace, name, steps)
    axes = {
        "prep": [{"label": f"p{i}", "params": {"k": i}} for i in range(prep)],
        "train": [{"label": f"t{j}", "params": {"k": j}} for j in range(train)],
    }
    sweep = Sweep.objects.create(
        workspace=workspace,
        name=name,
        base_version=base,
        axes=axes,
        replicates=replicates,
        seed_params=["train.k"],
        created_by=world.user,
    )
    combos = [(p, t, r) for p in range(prep) for t in range(train) for r in range(replicates)]
    failed = {i for i in range(len(combos)) if i % 25 == 24}
    runs = PipelineRun.objects.bulk_create(
        PipelineRun(
            workspace=workspace,
            pipeline_version=base,
            created_by=world.user,
            status=RunStatus.FAILED if i in failed else RunStatus.SUCCEEDED,
            failure_reason=FailureReason.USER_ERROR if i in failed else "",
            started_at=T0,
            finished_at=T0 + dt.timedelta(minutes=2),
            sweep=sweep,
            variant={"prep": f"p{p}", "train": f"t{t}", "replicate": r},
            param_overrides={"prep.k": p, "train.k": t},
        )
        for i, (p, t, r) in enumerate(combos)
    )
    rng = random.Random(3)
    preps: dict[int, StepRun] = {}
    rows: list[StepRun] = []
    for i, (run, (p, _, _)) in enumerate(zip(runs, combos, strict=True)):
        prep_fields = _step_fields(run, "prep", 0, steps["prep"][0], StepStatus.SUCCEEDED)
        if p in preps:
            prep_fields.update(status=StepStatus.REUSED, reused_from=preps[p])
            rows.append(StepRun(**prep_fields))
        else:
            preps[p] = StepRun.objects.create(**prep_fields)
        end = StepStatus.FAILED if i in failed else StepStatus.SUCCEEDED
        rows.append(StepRun(**_step_fields(run, "train", 1, steps["train"][0], end)))
        rows.append(StepRun(**_step_fields(run, "evaluate", 2, steps["evaluate"][0], end)))
    StepRun.objects.bulk_create(rows, batch_size=1000)
    metrics = []
    for pk, step_name, variant in StepRun.objects.filter(
        run__sweep=sweep, status=StepStatus.SUCCEEDED, name__in=["train", "evaluate"]
    ).values_list("pk", "name", "run__variant"):
        p, t = int(variant["prep"][1:]), int(variant["train"][1:])
        if step_name == "evaluate":
            value = 0.7 + 0.02 * p + 0.01 * t + rng.gauss(0, 0.01)
            metrics.append(Metric(step_id=pk, name="accuracy", value=value))
        else:
            metrics.extend(
                Metric(step_id=pk, name="loss", value=1 / (1 + k + p), index=k)
                for k in range(series)
            )
    Metric.objects.bulk_create(metrics, batch_size=2000)
    return sweep


# --- the 1 GB run -------------------------------------------------------------------------------
def big_run_create(world: World, files: int, size: int, seed: int = 4) -> PipelineRun:
    """A run of `files` steps, each with one output of `size` random bytes stored through
    the artifact store. The bytes are made in 1 MB chunks in a temp file, never held whole."""
    workspace = world.explore
    mods = modules_create(workspace, ["big-m"], versions=1)
    names = [f"b{i}" for i in range(files)]
    steps: dict[str, tuple[Any, dict[str, str]]] = {n: (mods["big-m"][0], {}) for n in names}
    version = pipeline_create(workspace, "big", steps)
    run = PipelineRun.objects.create(
        workspace=workspace,
        pipeline_version=version,
        created_by=world.user,
        status=RunStatus.SUCCEEDED,
        started_at=T0,
        finished_at=T0 + dt.timedelta(minutes=5),
    )
    step_runs = StepRun.objects.bulk_create(
        _step(run, n, i, mods["big-m"][0], status=StepStatus.SUCCEEDED) for i, n in enumerate(names)
    )
    rng = random.Random(seed)  # the same bytes every time: a second mode finds them stored
    for step_run in step_runs:
        with tempfile.TemporaryFile() as handle:
            for _ in range(size // MB):
                handle.write(rng.randbytes(MB))
            handle.write(rng.randbytes(size % MB))
            handle.seek(0)
            artifact = store.artifact_store_file(workspace, handle, "application/octet-stream")
        StepOutput.objects.create(step=step_run, name="weights", artifact=artifact)
    return run
