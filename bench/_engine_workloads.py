"""The engine benchmark's workloads, run inside a configured Django process.

Imported by `bench_engine.py --mode ...` after `django.setup()`; holds no orchestration
(databases, environments, subprocesses of the bench itself). Workers are whatever the mode
started: embedded threads in this process, or `rundramatiq` processes elsewhere. Either way
the workloads only call `scheduler.run_create` and watch the database, as a user would.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.utils import timezone

from pipelines_app.models import PipelineVersion
from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app import scheduler
from runs_app.models import RUN_TERMINAL, PipelineRun, RunStatus, StepRun
from workspaces.models import Workspace

CHAIN_STEPS = 30
# W1_<n>: the same chain at other sizes (a step's cost should not grow with its run's).
CHAIN_SIZES = (10, 30, 100, 1000)
# W2: this many independent no-op leaves and one step that joins them all.
FAN_LEAVES = 100

# The chain's steps do nothing but pass a string on. Each link appends a character, so no
# two steps of a run share a cache key (identical inputs would make step N+1 reuse step N);
# the head's `v` makes each repetition's whole chain new, so nothing is reused across runs.
HEAD = 'def main(ctx, *, v: int = 0):\n    return {"out": str(v)}\n'
LINK = 'def main(ctx, x):\n    return {"out": x + "."}\n'

LEAF = 'def main(ctx, *, v: int = 0, i: int = 0):\n    return {"out": "%d-%d" % (v, i)}\n'
JOIN = 'def main(ctx, {inputs}):\n    return {{"out": str(len([{inputs}]))}}\n'

# W3's step: 0.2 s of "work", counted by a line the body itself appends to `marker` (never by
# status rows: a counted body is one that really ran). The marker is a param, so a new marker
# file makes every key new and the whole sweep executes again.
COUNTED = """import time


def main(ctx, {inputs}*, v: int = 0, marker: str = ""):
    time.sleep({seconds})
    with open(marker, "a") as handle:
        handle.write("{name} %d\\n" % v)
    return {{"out": "{name}-%d|" % v + {upstream}}}
"""
STEP_SECONDS = 0.2


@dataclass
class World:
    workspace: Workspace
    chains: dict[int, PipelineVersion]  # by length
    fan: PipelineVersion
    abc: PipelineVersion
    markers: Path

    @property
    def chain(self) -> PipelineVersion:
        return self.chains[CHAIN_STEPS]


def world_create(markers: Path) -> World:
    """The bench's workspace with its two pipelines (a 30-step chain, and a -> b -> c)."""
    workspace = Workspace.objects.create(slug="bench", name="Engine benchmark")
    module_version_create(workspace, "head", {"step.py": HEAD}, "step.py:main")
    module_version_create(workspace, "link", {"step.py": LINK}, "step.py:main")
    chains = {size: _chain_version(workspace, size) for size in CHAIN_SIZES}
    module_version_create(workspace, "leaf", {"step.py": LEAF}, "step.py:main")
    inputs = ", ".join(f"x{i}" for i in range(FAN_LEAVES))
    module_version_create(
        workspace, "join", {"step.py": JOIN.format(inputs=inputs)}, "step.py:main"
    )
    fan_steps: dict[str, Any] = {
        f"l{i:03d}": {"module": "leaf@latest", "params": {"i": i}} for i in range(FAN_LEAVES)
    }
    fan_steps["join"] = {
        "module": "join@latest",
        "inputs": {f"x{i}": f"l{i:03d}.out" for i in range(FAN_LEAVES)},
    }
    fan = pipeline_version_create(workspace, "fan", {"steps": fan_steps})
    for name, upstream in (("a", False), ("b", True), ("c", True)):
        source = COUNTED.format(
            inputs="x, " if upstream else "",
            seconds=STEP_SECONDS,
            name=name,
            upstream="x" if upstream else '""',
        )
        module_version_create(workspace, name, {"step.py": source}, "step.py:main")
    abc = pipeline_version_create(
        workspace,
        "abc",
        {
            "steps": {
                "a": {"module": "a@latest"},
                "b": {"module": "b@latest", "inputs": {"x": "a.out"}},
                "c": {"module": "c@latest", "inputs": {"x": "b.out"}},
            }
        },
    )
    markers.mkdir(parents=True, exist_ok=True)
    return World(workspace, chains, fan, abc, markers)


def _chain_version(workspace: Workspace, size: int) -> PipelineVersion:
    width = len(str(size - 1))
    names = [f"s{index:0{width}d}" for index in range(size)]
    steps: dict[str, Any] = {names[0]: {"module": "head@latest"}}
    for index in range(1, size):
        steps[names[index]] = {"module": "link@latest", "inputs": {"x": f"{names[index - 1]}.out"}}
    return pipeline_version_create(workspace, f"chain{size}", {"steps": steps})


def wait_terminal(run_ids: list[int], timeout_s: float) -> list[PipelineRun]:
    """Poll until every run is terminal; raise with the stuck steps otherwise."""
    deadline = time.monotonic() + timeout_s
    ended = PipelineRun.objects.filter(pk__in=run_ids, status__in=RUN_TERMINAL).order_by()
    while time.monotonic() < deadline:
        if ended.count() == len(run_ids):
            runs = list(ended)
            not_ok = [r for r in runs if r.status != RunStatus.SUCCEEDED]
            if not_ok:
                raise RuntimeError(f"runs did not succeed: {[(r.pk, r.status) for r in not_ok]}")
            return runs
        # Coarse on purpose: the figures come from the runs' finished_at, not from when this
        # loop notices; a tight loop would only steal CPU (and, embedded, the GIL) from workers.
        time.sleep(0.1)
    stuck = list(
        StepRun.objects.filter(run_id__in=run_ids)
        .exclude(status__in=("succeeded", "reused"))
        .values_list("run_id", "name", "status")
    )
    raise RuntimeError(f"runs not terminal after {timeout_s} s; unfinished steps: {stuck}")


def _wall_s(started: datetime, runs: list[PipelineRun]) -> float:
    """From `started` to the last run's finished_at (the worker's clock: same host)."""
    finished = max(run.finished_at for run in runs if run.finished_at is not None)
    return (finished - started).total_seconds()


def cpu_probe(pid: int | None) -> Callable[[], float]:
    """CPU seconds used so far by the worker process `pid` (None: this process, whose
    threads are the embedded workers). The step children are not in it: bench_executor
    measures those. On a busy shared machine wall figures wait for CPUs; this does not."""
    if pid is None:
        return time.process_time
    ticks = os.sysconf("SC_CLK_TCK")

    def probe() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    return probe


@dataclass
class ChainResult:
    per_step_ms: float
    in_step_ms: float  # claim -> succeeded, mean per step
    between_ms: float  # previous step succeeded -> this one claimed, mean
    cpu_ms: float  # the worker process's CPU per step
    first_claim_ms: float  # run_create called -> first step claimed (commit + broker hop)


_values = itertools.count(1)


def chain_once(
    world: World,
    v: int,
    cpu: Callable[[], float] = time.process_time,
    size: int = CHAIN_STEPS,
) -> ChainResult:
    """W1 (W1_<size>): one no-op chain run, wall time divided by the step count. `v` is
    made unique per call, so no step of any chain reuses one of another."""
    version = world.chains[size]
    head = min(version.spec["steps"])
    cpu_before = cpu()
    started = timezone.now()
    unique = v * 100_000 + next(_values)
    run = scheduler.run_create(version, param_overrides={f"{head}.v": unique})
    runs = wait_terminal([run.pk], timeout_s=60 + size * 0.5)
    cpu_ms = (cpu() - cpu_before) * 1000 / size
    steps = list(StepRun.objects.filter(run=run).order_by("position"))
    executed = sum(s.status == "succeeded" for s in steps)
    if executed != size:
        raise RuntimeError(f"the chain executed {executed} steps, not {size}")
    in_step = [(s.finished_at - s.started_at).total_seconds() for s in steps]
    between = [
        (later.started_at - earlier.finished_at).total_seconds()
        for earlier, later in itertools.pairwise(steps)
    ]
    return ChainResult(
        per_step_ms=_wall_s(started, runs) * 1000 / size,
        in_step_ms=statistics.mean(in_step) * 1000,
        between_ms=statistics.mean(between) * 1000,
        cpu_ms=cpu_ms,
        first_claim_ms=(steps[0].started_at - started).total_seconds() * 1000,
    )


def fan_once(world: World) -> float:
    """W2: FAN_LEAVES independent no-op steps and their join; the run's wall seconds."""
    unique = next(_values) + 10_000_000
    overrides = {f"l{i:03d}.v": unique for i in range(FAN_LEAVES)}
    started = timezone.now()
    run = scheduler.run_create(world.fan, param_overrides=overrides)
    runs = wait_terminal([run.pk], timeout_s=300)
    executed = StepRun.objects.filter(run=run, status="succeeded").count()
    if executed != FAN_LEAVES + 1:
        raise RuntimeError(f"the fan executed {executed} steps, not {FAN_LEAVES + 1}")
    return _wall_s(started, runs)


def sweep_params(marker: Path) -> list[dict[str, Any]]:
    """The 3x2x3 product of W3, every step writing to `marker`."""
    return [
        {
            "a.v": i,
            "b.v": j,
            "c.v": k,
            "a.marker": str(marker),
            "b.marker": str(marker),
            "c.marker": str(marker),
        }
        for i in range(3)
        for j in range(2)
        for k in range(3)
    ]


def sweep_once(world: World, name: str) -> tuple[float, int]:
    """W3: the 18 runs started at once; (wall seconds, step bodies executed)."""
    marker = world.markers / f"{name}.txt"
    started = timezone.now()
    run_ids = [
        scheduler.run_create(world.abc, param_overrides=params).pk
        for params in sweep_params(marker)
    ]
    runs = wait_terminal(run_ids, timeout_s=120)
    executed = len(marker.read_text().splitlines()) if marker.exists() else 0
    return _wall_s(started, runs), executed


def rerun_ms(world: World, name: str) -> tuple[float, float]:
    """W4: run_create of an unchanged pipeline whose every step already succeeded;
    (wall ms, this thread's CPU ms)."""
    params = sweep_params(world.markers / f"{name}.txt")[0]
    cpu_before = time.thread_time()
    started = time.perf_counter()
    run = scheduler.run_create(world.abc, param_overrides=params)
    elapsed = time.perf_counter() - started
    cpu_ms = (time.thread_time() - cpu_before) * 1000
    if run.status != RunStatus.SUCCEEDED:
        raise RuntimeError(f"the rerun is {run.status} on return, not succeeded (reused)")
    return elapsed * 1000, cpu_ms


def warm_up(world: World) -> None:
    """A throwaway chain and two concurrent a->b->c runs: zygotes forked from, every worker
    thread's database connection open, code materialised, the broker's queues declared."""
    chain_once(world, v=-1)
    marker = world.markers / "warm-up.txt"
    run_ids = [
        scheduler.run_create(world.abc, param_overrides=params).pk
        for params in sweep_params(marker)[:2]
    ]
    wait_terminal(run_ids, timeout_s=60)


def run_all(
    world: World,
    mode: str,
    reps_w1: int,
    reps_w3: int,
    reps_w4: int,
    worker_pid: int | None = None,
    workers: Callable[[int], int | None] | None = None,
) -> None:
    """Warm up, then print each figure as `NAME VALUE` (medians), plus `#` diagnostics.

    `worker_pid` is the worker process whose CPU W1 reports (None: this process);
    `workers(n)` switches to n workers and returns the new worker pid (W2 is also timed
    with one, to say whether two are twice as fast)."""
    warm_up(world)
    cpu = cpu_probe(worker_pid)
    chains = [chain_once(world, v=rep, cpu=cpu) for rep in range(reps_w1)]
    per_step = statistics.median(c.per_step_ms for c in chains)
    print(f"W1.{mode}.per_step_ms {per_step:.2f}", flush=True)
    print(
        f"# W1.{mode}: per step {statistics.median(c.in_step_ms for c in chains):.2f} ms "
        f"from claim to succeeded, {statistics.median(c.between_ms for c in chains):.2f} ms "
        f"from one step succeeded to the next claimed; worker CPU "
        f"{statistics.median(c.cpu_ms for c in chains):.2f} ms a step (children not "
        f"counted); first step claimed "
        f"{statistics.median(c.first_claim_ms for c in chains):.1f} ms after run_create was "
        f"called; all {len(chains)} repetitions: "
        f"{', '.join(f'{c.per_step_ms:.2f}' for c in chains)}",
        flush=True,
    )
    sizes = _chain_sizes(world, mode, reps_w1, cpu)
    fans = [fan_once(world) for _ in range(reps_w1)]
    fan = statistics.median(fans)
    print(f"W2.{mode}.wall_s {fan:.3f}", flush=True)
    one = None
    if workers is not None:
        workers(1)
        one = statistics.median(fan_once(world) for _ in range(reps_w1))
        worker_pid = workers(2)
        cpu = cpu_probe(worker_pid)
    print(
        f"# W2.{mode}: {FAN_LEAVES} leaves and a join on 2 workers, "
        f"{fan * 1000 / (FAN_LEAVES + 1):.2f} ms a step; all: "
        + ", ".join(f"{w:.3f}" for w in fans)
        + (
            f"; on 1 worker {one:.3f} s, so 2 workers are {one / fan:.2f}x as fast"
            if one is not None
            else ""
        ),
        flush=True,
    )
    sweeps = [sweep_once(world, f"sweep-{rep}") for rep in range(reps_w3)]
    wall = statistics.median(s[0] for s in sweeps)
    executed = [s[1] for s in sweeps]
    # Any repetition off 27 is the news; the median would hide one.
    worst = max(executed, key=lambda n: abs(n - 27))
    print(f"W3.{mode}.wall_s {wall:.2f}", flush=True)
    print(f"W3.{mode}.executed {worst}", flush=True)
    # Two workers busy for the whole wall time, minus the bodies' own sleep: what each
    # executed step cost its worker besides its body (fork, store, succeed, advancing its
    # run and the runs that followed it, claims, waiting for a CPU).
    overhead_ms = (2 * wall - 27 * STEP_SECONDS) * 1000 / 27
    print(
        f"# W3.{mode}: ideal 2.70 s (27 x {STEP_SECONDS} s on 2 workers); about "
        f"{overhead_ms:.0f} ms of worker time per executed step besides its body; "
        f"all {len(sweeps)} repetitions: "
        + ", ".join(f"{s[0]:.2f} s / {s[1]} bodies" for s in sweeps),
        flush=True,
    )
    reruns = [rerun_ms(world, "sweep-0") for _ in range(reps_w4)]
    rerun = statistics.median(ms for ms, _ in reruns)
    print(f"W4.{mode}.ms {rerun:.2f}", flush=True)
    print(
        f"# W4.{mode}: CPU {statistics.median(c for _, c in reruns):.2f} ms; "
        f"all {len(reruns)} repetitions: " + ", ".join(f"{ms:.2f}" for ms, _ in reruns),
        flush=True,
    )
    goal = 3.0 if mode == "embedded" else 5.0
    met = {
        f"W1 <= {goal:g} ms/step": per_step <= goal,
        "W1_1000 within 1.2x of W1_10": sizes[1000] <= 1.2 * sizes[10],
        "W3 <= 3.0 s": wall <= 3.0,
        "W3 == 27 bodies": worst == 27,
        "W4 <= 5 ms": rerun <= 5,
    }
    if mode != "embedded":
        met["W2 <= 0.4 s"] = fan <= 0.4
    verdicts = "; ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in met.items())
    print(f"# targets {mode}: {verdicts}", flush=True)


def _chain_sizes(world: World, mode: str, reps: int, cpu: Callable[[], float]) -> dict[int, float]:
    """W1_<n>: the chain at each size (one run of the longest; it is 1,000 steps)."""
    figures: dict[int, float] = {}
    for size in CHAIN_SIZES:
        if size == CHAIN_STEPS:
            continue
        runs = [
            chain_once(world, v=rep, cpu=cpu, size=size)
            for rep in range(reps if size < 1000 else 1)
        ]
        figures[size] = statistics.median(c.per_step_ms for c in runs)
        print(f"W1_{size}.{mode}.per_step_ms {figures[size]:.2f}", flush=True)
        print(
            f"# W1_{size}.{mode}: worker CPU {statistics.median(c.cpu_ms for c in runs):.2f} "
            f"ms a step; all: " + ", ".join(f"{c.per_step_ms:.2f}" for c in runs),
            flush=True,
        )
    return figures
