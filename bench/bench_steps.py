"""A step's bookkeeping, without workers or children: what the engine's own code costs.

    .venv/bin/python bench/bench_steps.py [--modes embedded pg] [--steps 200]

Prints `NAME VALUE` lines per mode, `embedded` (a temp SQLite file) and `pg` (a throwaway
database on 127.0.0.1:5432; `# pg skipped: <why>` when it does not answer):

    steps.<mode>.succeed_ms, ...succeed_cpu_ms  `scheduler.step_succeed` with `claim_next`
                      (succeed, advance, claim the next) down a 1,000-step chain: wall and
                      this thread's CPU per step
    steps.<mode>.store_ms, ...store_cpu_ms      storing a small output (`artifact_store_bytes`:
                      hash, write, fsync, rename, record)
    steps.<mode>.output_and_succeed_ms          a step's end as the worker has it: its output
                      saved (`artifact_save`), then step_succeed with claim_next, the row
                      written in its transaction (one commit)
    steps.<mode>.stored_then_succeed_ms         the same with the output stored and recorded
                      first, in a transaction of its own (two commits: how it was until
                      2026-12-08), alternating with the one above
    steps.<mode>.run_create_1000_ms             `scheduler.run_create` of a 1,000-step chain
    steps.<mode>.rerun_1000_ms                  the same chain again, unchanged, after it all
                      succeeded: every step created reused, the run ended on return

No worker runs: the chain's steps are claimed and reported here, one after another, as a
worker does it. bench_engine.py times the whole thing, children included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import bench_database, postgres_ready  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("embedded", "pg"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--modes", nargs="+", choices=("embedded", "pg"), default=["embedded", "pg"]
    )
    parser.add_argument("--steps", type=int, default=200)
    arguments = parser.parse_args()
    if arguments.mode:
        return child(arguments.mode, arguments.steps)
    failed = 0
    for mode in arguments.modes:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
        command = [sys.executable, __file__, "--mode", mode, f"--steps={arguments.steps}"]
        if mode == "embedded":
            failed |= subprocess.call(command, env=env)
            continue
        why = postgres_ready()
        if why is not None:
            print(f"# pg skipped: {why}", flush=True)
            continue
        with bench_database(f"stepworks_bench_steps_{os.getpid()}") as url:
            env.update(DATABASE_URL=url, SECRET_KEY="bench-only")
            failed |= subprocess.call(command, env=env)
    return failed


def child(mode: str, steps: int) -> int:
    data = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        STEPWORKS_DATA_DIR=str(data / "var"),
        LOG_LEVEL="WARNING",
        DEBUG="false",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    try:
        measure(mode, data, steps)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


def chain_head(chain: Any, v: int) -> Any:
    """A new run of the chain with `s000.v = v`, its first step claimed."""
    from runs_app import scheduler
    from runs_app.models import StepRun

    run = scheduler.run_create(chain, param_overrides={"s000.v": v})
    return scheduler.step_claim(StepRun.objects.get(run=run, name="s000").pk, "bench")


def measure(mode: str, data: Path, steps: int) -> None:
    from _engine_workloads import world_create

    from artifacts.store import artifact_save, artifact_store_bytes, artifact_store_file
    from runs_app import scheduler
    from runs_app.models import RunStatus

    world = world_create(data / "markers")
    chain = world.chains[1000]

    def down_the_chain(v: int, count: int) -> tuple[float, float]:
        step = chain_head(chain, v)
        outputs = [
            artifact_store_bytes(world.workspace, f"{v}-{i}".encode(), "text/plain")
            for i in range(count)
        ]
        wall = cpu = 0.0
        for index in range(count):
            assert step is not None
            started, cpu_started = time.perf_counter(), time.thread_time()
            recorded = scheduler.step_succeed(
                step, step.attempt, {"out": outputs[index]}, [], claim_next=("bench", None)
            )
            wall += time.perf_counter() - started
            cpu += time.thread_time() - cpu_started
            step = recorded.claimed
        return wall * 1000 / count, cpu * 1000 / count

    def to_the_end(v: int, count: int, one_commit: bool) -> float:
        """ms a step down the chain, each step's output stored as the worker stores it."""
        step = chain_head(chain, v)
        started = time.perf_counter()
        for index in range(count):
            assert step is not None
            with tempfile.TemporaryFile() as handle:
                handle.write(f"{v}-{index}".encode())
                handle.seek(0)
                if one_commit:
                    out: Any = artifact_save(world.workspace, handle, "text/plain")
                else:
                    out = artifact_store_file(world.workspace, handle, "text/plain")
                recorded = scheduler.step_succeed(
                    step, step.attempt, {"out": out}, [], claim_next=("bench", None)
                )
            step = recorded.claimed
        return (time.perf_counter() - started) * 1000 / count

    down_the_chain(1, steps)  # warm: the graph cached, every statement's path taken once
    wall, cpu = down_the_chain(2, steps)
    print(f"steps.{mode}.succeed_ms {wall:.3f}", flush=True)
    print(f"steps.{mode}.succeed_cpu_ms {cpu:.3f}", flush=True)

    both = {"output_and_succeed": [], "stored_then_succeed": []}
    for rep in range(6):  # alternating, so both see the machine in the same state
        for name, one_commit in (("output_and_succeed", True), ("stored_then_succeed", False)):
            both[name].append(to_the_end(10 + rep * 2 + one_commit, steps, one_commit))
    for name, walls in both.items():
        print(f"steps.{mode}.{name}_ms {statistics.median(walls):.3f}", flush=True)

    started, cpu_started = time.perf_counter(), time.thread_time()
    for index in range(steps):
        artifact_store_bytes(world.workspace, f"store-{index}".encode(), "text/plain")
    store_cpu = (time.thread_time() - cpu_started) * 1000 / steps
    print(f"steps.{mode}.store_ms {(time.perf_counter() - started) * 1000 / steps:.3f}")
    print(f"steps.{mode}.store_cpu_ms {store_cpu:.3f}", flush=True)

    creates = []
    for rep in range(3):
        started = time.perf_counter()
        scheduler.run_create(chain, param_overrides={"s000.v": 100 + rep})
        creates.append((time.perf_counter() - started) * 1000)
    print(f"steps.{mode}.run_create_1000_ms {statistics.median(creates):.1f}", flush=True)

    down_the_chain(3, 1000)  # every step of v=3 succeeded: a source for the rerun
    reruns = []
    for _ in range(3):
        started = time.perf_counter()
        rerun = scheduler.run_create(chain, param_overrides={"s000.v": 3})
        reruns.append((time.perf_counter() - started) * 1000)
        assert rerun.status == RunStatus.SUCCEEDED, rerun.status
    print(f"steps.{mode}.rerun_1000_ms {statistics.median(reruns):.1f}", flush=True)
    print(f"# {mode}: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)


if __name__ == "__main__":
    sys.exit(main())
