"""The work the fault suite runs and how it checks what became of it.

Each run is a 5-step diamond (a -> b, c -> d -> e) of steps that sleep a while and return a
digest of their name, seed and inputs (padded to `kb` KiB): its right outputs are known in
advance. Every body appends `start` and `end` lines to a marker file, so the suite counts
executions whatever the database says. Imported only after django.setup().
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db.models import Count

from artifacts.store import artifact_open, artifact_storage
from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app import scheduler
from runs_app.models import RUN_TERMINAL, Event, PipelineRun, RunStatus, StepOutput, StepRun
from workspaces.models import Workspace

BODY = """import hashlib
import os
import time


def main(ctx, {inputs}*, name: str = "", seed: int = 0, lo: float = 0.0, hi: float = 0.0,
         kb: int = 0, marker: str = "", tag: str = ""):
    digest = hashlib.sha256(":".join([name, str(seed), {joined}]).encode()).hexdigest()
    with open(marker, "a") as handle:
        handle.write("start %s %s %d\\n" % (tag, name, os.getpid()))
    time.sleep(lo + (hi - lo) * int(digest[:8], 16) / 0xFFFFFFFF)
    with open(marker, "a") as handle:
        handle.write("end %s %s\\n" % (tag, name))
    return {{"out": digest + "\\n" + "x" * (kb * 1024)}}
"""

STEPS = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("d",)}
INPUT_NAMES = ("x", "y")

POISON = """import time


def main(ctx, *, marker: str = "", tag: str = ""):
    with open(marker, "a") as handle:
        handle.write("start %s poison 0\\n" % tag)
    time.sleep(60)  # the suite kills whichever worker runs this, every time
    return {"out": "never"}
"""

BLOCKED = """import ctypes
import time


def main(ctx, *, marker: str = "", tag: str = ""):
    with open(marker, "a") as handle:
        handle.write("start %s blocked 0\\n" % tag)
    try:
        ctypes.CDLL(None).sleep(60)  # in C: no Python signal handler runs meanwhile
    except OSError:
        time.sleep(60)
    return {"out": "never"}
"""

BLOCKED_TIMEOUT_S = 1.5


def expected_output(name: str, seed: int, kb: int) -> str:
    """What step `name` of a run with `seed` must output (its inputs computed the same way)."""
    inputs = [expected_output(up, seed, kb) for up in STEPS[name]]
    digest = hashlib.sha256(":".join([name, str(seed), *inputs]).encode()).hexdigest()
    return digest + "\n" + "x" * (kb * 1024)


@dataclass
class Expectation:
    """What a run must end as: succeeded, or failed with one of `reasons`."""

    run: PipelineRun
    kind: str  # diamond, poison, blocked
    seed: int = 0
    reasons: frozenset[str] = frozenset()


@dataclass
class Row:
    """One scenario's line of the report."""

    scenario: str
    broker: str
    runs: int = 0
    steps: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    executions: int = 0
    duplicate_executions: int = 0
    lost: int = 0
    stuck: int = 0
    duplicate_effects: int = 0
    corrupt: int = 0
    injector_failed: int = 0
    max_s_to_terminal: float = 0.0
    resent: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    wall_s: float = 0.0


class Workload:
    """A workspace of one scenario's own, its pipelines, and the runs it starts."""

    def __init__(self, scenario: str, markers: Path, lo: float, hi: float, kb: int) -> None:
        self.scenario = scenario
        self.marker = markers / f"{scenario}.txt"
        self.marker.touch()
        self.lo, self.hi, self.kb = lo, hi, kb
        self.workspace = Workspace.objects.create(slug=f"faults-{scenario}", name=scenario)
        self.expectations: list[Expectation] = []
        for name, ups in STEPS.items():
            module = "src" if not ups else ("join" if len(ups) == 2 else "mid")
            if name in ("a", "b", "d"):  # the first step of each module's kind
                names = INPUT_NAMES[: len(ups)]
                source = BODY.format(
                    inputs="".join(f"{n}, " for n in names),
                    joined=", ".join(names) if names else "",
                )
                module_version_create(self.workspace, module, {"step.py": source}, "step.py:main")
        steps: dict[str, Any] = {}
        for name, ups in STEPS.items():
            module = "src" if not ups else ("join" if len(ups) == 2 else "mid")
            steps[name] = {
                "module": f"{module}@latest",
                "params": {"name": name, "lo": lo, "hi": hi, "kb": kb, "marker": str(self.marker)},
                "inputs": {n: f"{up}.out" for n, up in zip(INPUT_NAMES, ups, strict=False)},
            }
        self.diamond = pipeline_version_create(self.workspace, "diamond", {"steps": steps})

    def start_runs(self, count: int) -> None:
        for _ in range(count):
            seed = len(self.expectations)
            tag = f"{self.scenario}/{seed}"
            overrides = {f"{s}.{p}": v for s in STEPS for p, v in (("seed", seed), ("tag", tag))}
            run = scheduler.run_create(self.diamond, param_overrides=overrides)
            self.expectations.append(Expectation(run, "diamond", seed))

    def start_special(self, kind: str) -> PipelineRun:
        """A run of one poison step (ends worker_lost_repeatedly) or one step blocked in C
        past its time limit (ends timeout)."""
        source, reason, policies = {
            "poison": (POISON, "worker_lost_repeatedly", {}),
            "blocked": (BLOCKED, "timeout", {"timeout": BLOCKED_TIMEOUT_S, "retries": 0}),
        }[kind]
        module_version_create(self.workspace, kind, {"step.py": source}, "step.py:main")
        tag = f"{self.scenario}/{kind}"
        spec = {
            "steps": {
                "s": {
                    "module": f"{kind}@latest",
                    "params": {"marker": str(self.marker), "tag": tag},
                    **policies,
                }
            }
        }
        version = pipeline_version_create(self.workspace, kind, spec)
        run = scheduler.run_create(version)
        self.expectations.append(Expectation(run, kind, reasons=frozenset({reason})))
        return run

    def runs(self) -> list[PipelineRun]:
        return [e.run for e in self.expectations]

    def unfinished(self) -> int:
        ids = [e.run.pk for e in self.expectations]
        return PipelineRun.objects.filter(pk__in=ids).exclude(status__in=RUN_TERMINAL).count()

    def wait(self, deadline: float, poll_s: float = 0.25) -> None:
        while self.unfinished() and time.monotonic() < deadline:
            time.sleep(poll_s)

    def check(self, row: Row, fault_times: list[float], allowed: frozenset[str]) -> None:
        """Fill `row` from the database, the store and the marker file."""
        ids = [e.run.pk for e in self.expectations]
        runs = {r.pk: r for r in PipelineRun.objects.filter(pk__in=ids)}
        row.runs = len(runs)
        row.steps = StepRun.objects.filter(run__in=ids).count()
        for expectation in self.expectations:
            run = runs[expectation.run.pk]
            self._check_run(row, expectation, run, allowed)
        self._check_effects(row, ids)
        self._check_artifacts(row)
        self._count_executions(row)
        reasons = Event.objects.filter(run__in=ids).exclude(reason="").values_list("reason")
        row.reasons = dict(Counter(reason for (reason,) in reasons))
        row.max_s_to_terminal = round(self._max_to_terminal(runs.values(), fault_times), 2)

    def _check_run(
        self, row: Row, expectation: Expectation, run: PipelineRun, allowed: frozenset[str]
    ) -> None:
        if run.status not in RUN_TERMINAL:
            row.stuck += 1
            row.problems.append(f"run {run.pk} ({expectation.kind}) still {run.status}")
            return
        failed = list(
            run.steps.exclude(failure_reason="").values_list("name", "failure_reason", "attempt")
        )
        if run.status == RunStatus.SUCCEEDED and expectation.kind == "diamond":
            return
        reasons = {reason for _, reason, _ in failed}
        ok_reasons = expectation.reasons | allowed | {"dependency_failed"}
        if run.status == RunStatus.FAILED and reasons and reasons <= ok_reasons:
            return
        row.lost += 1
        row.problems.append(f"run {run.pk} ({expectation.kind}) ended {run.status}: {failed}")

    def _check_effects(self, row: Row, ids: list[int]) -> None:
        """A step's result is recorded once: one success, one row per output; and a
        succeeded diamond step's output is the one its seed and inputs determine."""
        twice = (
            Event.objects.filter(run__in=ids, step__isnull=False, new_status="succeeded")
            .values("step")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
        )
        row.duplicate_effects += twice.count()
        outputs = StepOutput.objects.filter(step__run__in=ids)
        doubled = outputs.values("step", "name").annotate(n=Count("id")).filter(n__gt=1)
        row.duplicate_effects += doubled.count()
        seeds = {e.run.pk: e.seed for e in self.expectations if e.kind == "diamond"}
        for output in outputs.select_related("step", "artifact"):
            if output.step.run_id not in seeds or output.step.name not in STEPS:
                continue
            want = expected_output(output.step.name, seeds[output.step.run_id], self.kb)
            with artifact_open(output.artifact) as handle:
                got = handle.read().decode(errors="replace")
            if got != want:
                row.corrupt += 1
                row.problems.append(f"step {output.step_id} output differs from its inputs'")
        missing = StepRun.objects.filter(run__in=ids, status="succeeded", outputs__isnull=True)
        for step in missing:
            if step.name in STEPS:
                row.lost += 1
                row.problems.append(f"step {step.pk} succeeded without its output")

    def _check_artifacts(self, row: Row) -> None:
        """Every recorded artifact's bytes are there and hash to its digest."""
        storage = artifact_storage()
        for artifact in self.workspace.artifacts.all():
            digest = hashlib.sha256()
            size = 0
            try:
                with storage.open(artifact.storage_name, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
            except OSError as error:
                row.corrupt += 1
                row.problems.append(f"artifact {artifact.pk} unreadable: {error}")
                continue
            if digest.hexdigest() != artifact.sha256 or size != artifact.size:
                row.corrupt += 1
                row.problems.append(f"artifact {artifact.pk} bytes differ from its digest")

    def _count_executions(self, row: Row) -> None:
        starts = 0
        ends: Counter[tuple[str, str]] = Counter()
        for line in self.marker.read_text().splitlines():
            parts = line.split()
            if parts and parts[0] == "start":
                starts += 1
            elif parts and parts[0] == "end":
                ends[(parts[1], parts[2])] += 1
        row.executions = starts
        row.duplicate_executions = sum(n - 1 for n in ends.values() if n > 1)

    @staticmethod
    def _max_to_terminal(runs: Any, fault_times: list[float]) -> float:
        """The longest a run took to end after the last fault that struck while it ran
        (fault times and finished_at both as epoch seconds)."""
        worst = 0.0
        for run in runs:
            if run.finished_at is None:
                continue
            end = run.finished_at.timestamp()
            during = [t for t in fault_times if run.created_at.timestamp() <= t <= end]
            if during:
                worst = max(worst, end - max(during))
        return worst
