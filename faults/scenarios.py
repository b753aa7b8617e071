"""The fault scenarios: what each breaks, while runs arrive over its storm, and what each
run may end as. Each scenario gets a workspace, a marker file and a worker fleet of its own;
`play()` runs one and returns its row. Imported only after django.setup()."""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.db import close_old_connections, connection

from faults.fleet import Broker, Database, Fleet
from faults.workload import BLOCKED_TIMEOUT_S, Row, Workload
from runs_app import dispatch
from runs_app.models import StepRun, StepStatus


@dataclass(frozen=True)
class Size:
    """How much work a scenario runs: `runs` diamonds arriving over `storm_s` seconds of
    faults, steps of `lo`-`hi` seconds, on `workers` groups of 2 threads."""

    runs: int
    storm_s: float
    lo: float
    hi: float
    workers: int = 2
    settle_s: float = 150.0  # after the storm, how long runs may take to end

    @classmethod
    def named(cls, name: str) -> Size:
        return {
            "full": cls(runs=12, storm_s=45, lo=1.0, hi=3.0),
            "quick": cls(runs=4, storm_s=10, lo=0.3, hi=0.8, settle_s=90),
        }[name]


@dataclass
class Stage:
    """What a scenario's injector can reach, and where it records what it did."""

    fleet: Fleet
    broker: Broker
    database: Database
    workload: Workload
    size: Size
    rng: random.Random
    storm_ends: float
    done: threading.Event = field(default_factory=threading.Event)
    faults: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def record(self, kind: str, count: int = 1) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + count
        self.times.append(time.time())

    def storming(self) -> bool:
        return not self.done.is_set() and time.monotonic() < self.storm_ends

    def pause(self, low: float, high: float) -> bool:
        """Wait a random while; False once the storm is over."""
        self.done.wait(self.rng.uniform(low, high))
        return self.storming()


Injector = Callable[[Stage], None]


def kill_storm(stage: Stage) -> None:
    """SIGKILL a random worker group every few seconds (its supervisor starts another)."""
    scale = stage.size.storm_s / 45
    while stage.pause(4 * scale, 6 * scale):
        if stage.fleet.kill_random(stage.rng):
            stage.record("sigkill")


def poison_killer(stage: Stage) -> None:
    """Whichever worker runs the poison step dies, on every attempt."""
    run = stage.workload.start_special("poison")
    killed: set[int] = set()
    while not stage.done.wait(0.2):
        step = StepRun.objects.filter(run=run, status=StepStatus.RUNNING).first()
        if step is None or step.attempt in killed or not step.worker:
            continue
        pid = int(step.worker.rpartition(":")[2])
        if stage.fleet.kill_pid(pid):
            killed.add(step.attempt)
            stage.record("poison_kill")


def blocked_in_c(stage: Stage) -> None:
    """One step blocks in C past its time limit; the fault is the moment its limit passed."""
    run = stage.workload.start_special("blocked")
    while not stage.done.wait(0.2):
        step = run.steps.get()
        if step.status == StepStatus.FAILED and step.started_at and step.finished_at:
            stage.faults["blocked_in_c"] = 1
            limit = step.started_at.timestamp() + BLOCKED_TIMEOUT_S
            stage.times.append(limit)
            late = step.finished_at.timestamp() - limit
            stage.notes.append(f"ended {late:.2f} s past its {BLOCKED_TIMEOUT_S} s limit")
            return


def _send_duplicates(stage: Stage, newest: int | None = None) -> None:
    """Send 6 of the scenario's queued, running or finished steps' messages again (picked
    among its `newest` steps, else among all)."""
    steps = (
        StepRun.objects.filter(workspace=stage.workload.workspace)
        .exclude(status=StepStatus.PENDING)
        .order_by("-pk")
        .values_list("pk", flat=True)
    )
    ids = list(steps[:newest] if newest else steps)
    if ids:
        picked = stage.rng.sample(ids, min(len(ids), 6))
        dispatch.send_steps(picked)
        stage.record("duplicate_message", len(picked))


def _broker_restart(stage: Stage, down_s: float) -> None:
    stage.record("broker_restart")
    stage.broker.restart(down_s=down_s)


def _database_outage(stage: Stage, down_s: float) -> None:
    stage.record("db_outage")
    stage.database.proxy.cut()
    time.sleep(down_s)
    stage.database.proxy.restore()


def _reached(stage: Stage, share: float) -> bool:
    """Wait until `share` of the storm has passed; False if the scenario ended first."""
    wait = stage.storm_ends - stage.size.storm_s * (1 - share) - time.monotonic()
    return not stage.done.wait(max(0.0, wait))


def duplicates(stage: Stage) -> None:
    """Send every queued and running step's message again, and replay finished ones."""
    while stage.pause(0.3, 0.6):
        _send_duplicates(stage)


def broker_restarts(stage: Stage) -> None:
    """The broker dies and comes back empty, twice."""
    for share in (0.3, 0.65):
        if not _reached(stage, share):
            return
        _broker_restart(stage, down_s=3.0)


def database_outages(stage: Stage) -> None:
    """The workers lose PostgreSQL (through the proxy in front of it) for a short and a
    longer while: longer than a lease, so results wait and leases lapse."""
    for share, down_s in ((0.3, 2.5), (0.6, min(10.0, stage.size.storm_s / 3))):
        if not _reached(stage, share):
            return
        _database_outage(stage, down_s)


def deploys(stage: Stage) -> None:
    """Rolling deploys: a new worker group starts, an old one gets SIGTERM and drains."""
    scale = stage.size.storm_s / 45
    while stage.pause(5 * scale, 7 * scale):
        if stage.fleet.deploy_one(stage.rng):
            stage.record("sigterm_deploy")


def mix(stage: Stage) -> None:
    """The soak: a seeded random mix of every injector above, one at a time."""
    kinds = ("sigkill", "deploy", "duplicates", "broker", "database")
    while stage.pause(3, 8):
        kind = stage.rng.choice(kinds)
        if kind == "sigkill" and stage.fleet.kill_random(stage.rng):
            stage.record("sigkill")
        elif kind == "deploy" and stage.fleet.deploy_one(stage.rng):
            stage.record("sigterm_deploy")
        elif kind == "duplicates":
            _send_duplicates(stage, newest=50)  # a long soak: among its recent steps
        elif kind == "broker":
            _broker_restart(stage, down_s=stage.rng.uniform(1, 4))
        elif kind == "database":
            _database_outage(stage, down_s=stage.rng.uniform(1, 8))


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    inject: Injector | None = None
    points: str = ""  # STEPWORKS_FAULT_POINTS of its workers
    allowed: frozenset[str] = frozenset()  # failure reasons a diamond run may end with
    disk: bool = False  # the artifact store on a small tmpfs that fills up


SCENARIOS = [
    Scenario("sigkill", "SIGKILL a random worker group every 4-6 s", kill_storm),
    Scenario("after_claim", "workers die just after a claim commits", points="after_claim@0.3"),
    Scenario(
        "output_saved",
        "workers die between an output's rename into the store and its row's commit",
        points="output_saved@0.1",
    ),
    Scenario(
        "dispatch_gap",
        "workers die after queuing successors, before sending their messages",
        points="queued_not_sent@0.4",
    ),
    Scenario("poison", "a step whose worker dies on every attempt", poison_killer),
    Scenario("duplicates", "duplicate and replayed messages, 6 every 0.3-0.6 s", duplicates),
    Scenario("broker_restart", "the broker restarts twice with persistence off", broker_restarts),
    Scenario("db_outage", "PostgreSQL unreachable for 2.5 s and for 10 s", database_outages),
    Scenario(
        "disk_full",
        "the artifact store fills up (a tmpfs), then space is freed",
        allowed=frozenset({"storage_full"}),
        disk=True,
    ),
    Scenario("blocked_in_c", "a step blocked in C past its time limit", blocked_in_c),
    Scenario("deploy", "rolling SIGTERM deploys, a new group started before each", deploys),
]
MIX = Scenario("mix", "a seeded random mix of kills, deploys, duplicates, outages", mix)
BY_NAME = {s.name: s for s in [*SCENARIOS, MIX]}
# The subset CI runs on every submission (small N, both brokers: tests/test_faults.py).
CI_SUBSET = ("sigkill", "output_saved", "db_outage", "deploy")


def disk_unavailable(root: Path) -> str:
    """Why the store cannot be put on a small tmpfs here ('' when it can)."""
    if os.geteuid() != 0:
        return "not root: cannot mount a tmpfs for the artifact store"
    probe = root.parent / "tmpfs-probe"
    probe.mkdir(exist_ok=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        return f"mount -t tmpfs failed: {made.stderr.strip()[:160]}"
    subprocess.run(["umount", str(probe)], check=False)
    return ""


@contextlib.contextmanager
def small_store(root: Path, size: Size) -> Iterator[Path]:
    """The artifact store on a tmpfs a few runs fill; a ballast file takes half of it and
    is deleted two thirds into the storm (space freed, later runs succeed)."""
    megabytes = max(4, size.runs // 2)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(root)], check=True
    )
    ballast = root / "ballast"
    try:
        with open(ballast, "wb") as handle:
            handle.write(b"\0" * (megabytes * 1024 * 1024 // 2))
        yield ballast
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _free_later(stage: Stage, ballast: Path) -> None:
    if not stage.done.wait(max(0.0, stage.storm_ends - stage.size.storm_s / 3 - time.monotonic())):
        with contextlib.suppress(FileNotFoundError):
            ballast.unlink()
            stage.record("space_freed")


def play(
    scenario: Scenario,
    *,
    broker: Broker,
    database: Database,
    env: dict[str, str],
    workdir: Path,
    size: Size,
    seed: int,
) -> Row:
    """Run one scenario to its end and check what became of its runs."""
    row = Row(scenario.name, broker.kind)
    artifacts_root = Path(env["STEPWORKS_ARTIFACTS_ROOT"])
    if scenario.disk:
        row.skipped = disk_unavailable(artifacts_root)
        if row.skipped:
            return row
    started = time.monotonic()
    rng = random.Random(f"{seed}:{scenario.name}:{broker.kind}")
    here = workdir / scenario.name
    here.mkdir(parents=True, exist_ok=True)
    kb = 256 if scenario.disk else 1
    with contextlib.ExitStack() as stack:
        ballast = stack.enter_context(small_store(artifacts_root, size)) if scenario.disk else None
        workload = Workload(
            f"{scenario.name}-{broker.kind}", workdir / "markers", size.lo, size.hi, kb
        )
        worker_env = {**env, "DATABASE_URL": database.workers_url}
        if scenario.points:
            worker_env["STEPWORKS_FAULT_POINTS"] = scenario.points
        fleet = Fleet(here, worker_env, size.workers)
        fleet.start()
        stack.callback(fleet.stop)
        stage = Stage(fleet, broker, database, workload, size, rng, time.monotonic() + size.storm_s)
        threads = []
        if scenario.inject is not None:
            injector = threading.Thread(target=_guarded, args=(scenario.inject, stage), daemon=True)
            threads.append(injector)
        if ballast is not None:
            threads.append(threading.Thread(target=_free_later, args=(stage, ballast), daemon=True))
        for thread in threads:
            thread.start()
        spacing = size.storm_s / max(1, size.runs)
        for index in range(size.runs):
            workload.start_runs(1)
            if index < size.runs - 1:
                time.sleep(spacing)
        workload.wait(stage.storm_ends)
        workload.wait(time.monotonic() + size.settle_s)
        stage.done.set()
        for thread in threads:
            thread.join(timeout=30)
        _point_deaths(stage, fleet)
        workload.check(row, stage.times, scenario.allowed)
        row.faults = dict(stage.faults)
        row.notes = stage.notes
        row.problems += stage.broken
        row.injector_failed = len(stage.broken)
        row.resent = _resent(fleet)
    row.wall_s = round(time.monotonic() - started, 1)
    return row


def _guarded(target: Injector, stage: Stage) -> None:
    """An injector on a thread of its own, with a database connection it closes."""
    try:
        target(stage)
    except Exception as error:  # the row fails: it did not inject what it says
        stage.faults[f"injector_error:{type(error).__name__}"] = 1
        stage.broken.append(f"the injector failed: {error!r}")
        raise
    finally:
        close_old_connections()
        connection.close()


def _point_deaths(stage: Stage, fleet: Fleet) -> None:
    """Deaths at fault points count as faults (the workers log each before dying)."""
    for why, count in fleet.deaths.items():
        if why.startswith("fault_point:"):
            stage.faults[why.partition(":")[2]] = count
    stage.times.extend(fleet.death_times)


def _resent(fleet: Fleet) -> int:
    """Messages the reapers sent again (each logs its counts)."""
    total = 0
    for log in fleet.logs():
        for found in re.findall(r"'redispatched': (\d+)", log.read_text(errors="replace")):
            total += int(found)
    return total
