"""Per-step overhead of the executor: no-op steps, one after another, in fresh children.

    .venv/bin/python bench/bench_executor.py [--steps 50]

Prints `NAME VALUE` lines: the mean (the figure the design budgets) and the median wall
time of `StepExecutor.run` per step, from the call to the returned result (output folder,
fork request, fork, the child's setup and import of the step module, its result written
and reported, the worker's collection); and the CPU time a step costs the worker, the
zygote and the child together, exits included (on a busy shared machine the wall figures
wait for CPUs; this one does not).
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

NO_OP = "def main(ctx):\n    return {'done': True}\n"


def cpu_seconds(zygote_pid: int) -> float:
    """This process's CPU time plus the zygote's and its reaped children's."""
    fields = Path(f"/proc/{zygote_pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return time.process_time() + (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


def measure(
    executor: StepExecutor, code_dir: Path, root: Path, scientific: bool, steps: int
) -> tuple[list[float], float]:
    kind = "scientific" if scientific else "light"
    zygote_pid = executor.zygote_pids()[kind]
    assert zygote_pid is not None
    timings = []
    cpu_before = 0.0
    for index in range(steps + 3):
        if index == 3:
            cpu_before = cpu_seconds(zygote_pid)
        job = StepJob(
            code_dir=code_dir,
            entrypoint="step.py:main",
            output_dir=root / f"{kind}-{index}",
            declared_outputs=["done"],
            scientific=scientific,
            timeout_s=60,
        )
        started = time.perf_counter()
        result = executor.run(job)
        elapsed = time.perf_counter() - started
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
        with StepExecutor() as executor:
            for scientific in (False, True):
                kind = "scientific" if scientific else "light"
                timings, cpu_ms = measure(executor, code_dir, root, scientific, arguments.steps)
                print(f"executor.{kind}.per_step_ms {statistics.mean(timings):.2f}")
                print(f"executor.{kind}.per_step_ms_p50 {statistics.median(timings):.2f}")
                print(f"executor.{kind}.cpu_ms_per_step {cpu_ms:.2f}")


if __name__ == "__main__":
    main()
