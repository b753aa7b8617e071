"""Per-step overhead of the executor: no-op steps, one after another, in fresh children.

    .venv/bin/python bench/bench_executor.py [--steps 50]

Prints `NAME VALUE` lines: the mean (the figure the design budgets) and the median wall
time of `StepExecutor.run` per step, from the call to the returned result (fork request,
the child's start (a spare forked and prepared ahead, as the zygote keeps one), its import of
the step module, its result written and reported, the worker's collection), with output
folders taken from `ScratchFolders` as the worker takes them; and the CPU time a step costs
the worker, the zygote and the child together, exits included (on a busy shared machine the
wall figures wait for CPUs; this one does not).

The `per_step_ms` figures are with the sandbox (the default where Landlock is available);
`executor.sandbox_ms` is what it adds to a light step: the same no-op steps alternate
between a sandboxed executor and one with `STEPWORKS_STEP_SANDBOX=off`, so both see the
machine in the same state, and the figure is the difference of their means.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runs_app.executor.codecache import materialise_code
from runs_app.executor.runner import StepExecutor, StepJob
from runs_app.executor.sandbox import SandboxPolicy, unavailable_reason
from runs_app.executor.scratch import STEP_DIR, ScratchFolders

NO_OP = "def main(ctx):\n    return {'done': True}\n"


def cpu_seconds(zygote_pid: int) -> float:
    """This process's CPU time plus the zygote's and its reaped children's."""
    fields = Path(f"/proc/{zygote_pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return time.process_time() + (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def measure(
    executor: StepExecutor,
    code_dir: Path,
    scratch: ScratchFolders,
    scientific: bool,
    steps: int,
) -> tuple[list[float], float]:
    kind = "scientific" if scientific else "light"
    zygote_pid = executor.zygote_pids()[kind]
    assert zygote_pid is not None
    timings = []
    cpu_before = 0.0
    for index in range(steps + 3):
        if index == 3:
            cpu_before = cpu_seconds(zygote_pid)
        folder = scratch.take()  # outside the clock, as in the worker: made ahead
        job = StepJob(
            code_dir=code_dir,
            entrypoint="step.py:main",
            output_dir=folder / STEP_DIR,
            declared_outputs=["done"],
            scientific=scientific,
            timeout_s=60,
        )
        started = time.perf_counter()
        result = executor.run(job)
        elapsed = time.perf_counter() - started
        scratch.give_back(folder)
        if result.status != "succeeded":
            raise SystemExit(f"a no-op step failed: {result.reason}: {result.message}")
        if index >= 3:  # the first children warm caches (page tables, pyc, dentries)
            timings.append(elapsed * 1000)
    time.sleep(0.5)  # the last child exits and is reaped
    return timings, (cpu_seconds(zygote_pid) - cpu_before) * 1000 / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as folder:
        root = Path(folder)
        code_dir = materialise_code({"step.py": NO_OP}, "0" * 64, root / "code")
        scratch = ScratchFolders(root / "scratch")
        scratch.start()
        with StepExecutor() as executor:
            if executor.sandbox.mode == "required":
                sandbox_cost(executor, code_dir, scratch, arguments.steps)
            else:
                print(f"# no sandbox here ({unavailable_reason()}): figures are without it")
            for scientific in (False, True):
                kind = "scientific" if scientific else "light"
                timings, cpu_ms = measure(executor, code_dir, scratch, scientific, arguments.steps)
                print(f"executor.{kind}.per_step_ms {statistics.mean(timings):.2f}")
                print(f"executor.{kind}.per_step_ms_p50 {statistics.median(timings):.2f}")
                print(f"executor.{kind}.cpu_ms_per_step {cpu_ms:.2f}")
        scratch.stop()


def sandbox_cost(
    sandboxed: StepExecutor, code_dir: Path, scratch: ScratchFolders, steps: int
) -> None:
    timings: dict[str, list[float]] = {"required": [], "off": []}
    with StepExecutor(sandbox=SandboxPolicy(mode="off")) as plain:
        for index in range(steps + 3):
            for mode, executor in (("required", sandboxed), ("off", plain)):
                folder = scratch.take()
                job = StepJob(
                    code_dir=code_dir,
                    entrypoint="step.py:main",
                    output_dir=folder / STEP_DIR,
                    declared_outputs=["done"],
                    timeout_s=60,
                )
                started = time.perf_counter()
                result = executor.run(job)
                elapsed = time.perf_counter() - started
                scratch.give_back(folder)
                if result.status != "succeeded":
                    raise SystemExit(f"a no-op step failed: {result.reason}: {result.message}")
                if index >= 3:
                    timings[mode].append(elapsed * 1000)
    cost = statistics.mean(timings["required"]) - statistics.mean(timings["off"])
    median = statistics.median(timings["required"]) - statistics.median(timings["off"])
    print(f"executor.light.unsandboxed_per_step_ms {statistics.mean(timings['off']):.2f}")
    print(f"executor.sandbox_ms {cost:.2f}")
    print(f"executor.sandbox_ms_p50 {median:.2f}")


if __name__ == "__main__":
    main()
