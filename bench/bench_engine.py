"""The engine end to end: runs created with `scheduler.run_create`, executed by real workers.

    .venv/bin/python bench/bench_engine.py [--modes embedded pg_redis] [--reps-w1 3] ...

Prints `NAME VALUE` lines (medians over the repetitions, after a throwaway warm-up run),
for `<mode>` in `embedded` (SQLite, in-process broker, `EmbeddedWorkers(threads=2)` in the
bench process) and `pg_redis` (PostgreSQL, Redis, one `rundramatiq --processes 1 --threads 2`
worker process):

    W1.<mode>.per_step_ms  a 30-step chain of no-op steps: wall time of the run / 30
    W1_<n>.<mode>.per_step_ms  the same chain at 10, 100 and 1,000 steps (one run of 1,000)
    W2.<mode>.wall_s       100 independent no-op steps and one step joining them, 2 workers:
                           run_create until the run is terminal (a `#` line adds 1 worker)
    W3.<mode>.wall_s       18 runs of a -> b -> c (0.2 s steps; a.v 0..2, b.v 0..1, c.v 0..2)
                           started at once: first run_create until all 18 runs are terminal
    W3.<mode>.executed     step bodies W3 executed, counted by the bodies themselves (27)
    W4.<mode>.ms           run_create of an unchanged a -> b -> c (everything reused) until the
                           run is terminal, which it is on return

Lines starting with `#` are diagnostics
(where W1's time goes, every repetition, which targets were met); the bench never asserts a
target. Each mode runs in its own subprocess (settings are read at import), in a temp data
folder, on a database it creates and drops; if Postgres or Redis is unreachable the pg_redis
mode prints `# pg_redis skipped: <why>`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (  # bench/ is on sys.path
    REDIS_URL,
    bench_database,
    postgres_ready,
    redis_forget,
    run_child,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("embedded", "pg_redis")
CHILD_TIMEOUT_S = 600
WORKER_BOOT_TIMEOUT_S = 120


# --- the parent: one subprocess per mode --------------------------------------------------------
def _markers(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + "-markers")


def _base_env(data_dir: Path, prefix: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Whatever the caller's shell points at, each mode says what it runs on.
        if key not in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_ROOT")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        STEPWORKS_DATA_DIR=str(data_dir),
        # W3's steps count their bodies in marker files: a folder every sandboxed step may
        # write, beside (never in) the data folder no step may touch.
        STEPWORKS_STEP_WRITE_DIRS=str(_markers(data_dir)),
        STEPWORKS_QUEUE_PREFIX=prefix,
        LOG_LEVEL="WARNING",  # the figures, not the workers' INFO chatter
        DEBUG="false",  # DEBUG would keep every query in memory and slow each one
    )
    return env


def parent(arguments: argparse.Namespace, passed: list[str]) -> int:
    failed = 0
    for mode in arguments.modes:
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-engine-{mode}-"))
        prefix = f"stepworks-bench-{os.getpid()}-{mode}"
        env = _base_env(data_dir, prefix)
        try:
            if mode == "embedded":
                code = run_child(__file__, "mode", mode, env, passed, CHILD_TIMEOUT_S, data_dir)
                failed |= code != 0
                continue
            why = postgres_ready()
            if why is not None:
                print(f"# pg_redis skipped: {why}", flush=True)
                continue
            with bench_database(f"stepworks_bench_{os.getpid()}") as database_url:
                env.update(
                    DATABASE_URL=database_url,
                    BROKER_URL=REDIS_URL,
                    SECRET_KEY=secrets.token_urlsafe(32),
                )
                try:
                    code = run_child(__file__, "mode", mode, env, passed, CHILD_TIMEOUT_S, data_dir)
                    failed |= code != 0
                finally:
                    redis_forget(prefix)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(_markers(data_dir), ignore_errors=True)
    return 1 if failed else 0


# --- the child: one mode, Django configured from its environment --------------------------------
class Workers:
    """`rundramatiq` worker processes, each in its own session so its group can be ended."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, processes: int, threads: int) -> None:
        # The worker writes to its own copy of the descriptor; ours closes after Popen.
        with open(self.data_dir / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "rundramatiq",
                    "--processes",
                    str(processes),
                    "--threads",
                    str(threads),
                    "--worker-shutdown-timeout",
                    "5000",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        with open(self.data_dir / "worker-groups", "a") as handle:
            handle.write(f"{proc.pid}\n")

    def wait_ready(self, count: int) -> int:
        """Until `count` worker processes have a heartbeat (zygotes booted); returns the
        pid of one of them (they run on this machine)."""
        from runs_app.models import WorkerHeartbeat
        from runs_app.worker import wait_for

        def ready() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}:\n{self.logs()}")
            return WorkerHeartbeat.objects.count() >= count

        if not wait_for(ready, WORKER_BOOT_TIMEOUT_S, poll_s=0.2):
            raise RuntimeError(f"no heartbeat after {WORKER_BOOT_TIMEOUT_S} s\n{self.logs()}")
        return WorkerHeartbeat.objects.values_list("pid", flat=True).first()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                # The main process only: it passes the signal on, and a worker process that
                # gets a second one is killed without its drain (or its closing log lines).
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        (self.data_dir / "worker-groups").unlink(missing_ok=True)  # nothing left to sweep
        self.procs.clear()

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in self.data_dir.glob("worker-*.log")
        )


def child(arguments: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _engine_workloads import run_all, world_create

    from runs_app.models import WorkerHeartbeat

    data_dir = Path(settings.DATA_DIR)
    started = time.monotonic()
    call_command("migrate", verbosity=0)
    world = world_create(_markers(data_dir))
    if arguments.mode == "embedded":
        from runs_app.dispatch import EmbeddedWorkers

        embedded = EmbeddedWorkers(threads=2)  # W3 wants two workers
        embedded.start()

        def embedded_workers(threads: int) -> None:
            nonlocal embedded
            embedded.stop()
            embedded = EmbeddedWorkers(threads=threads)
            embedded.start()

        try:
            run_all(
                world,
                arguments.mode,
                arguments.reps_w1,
                arguments.reps_w3,
                arguments.reps_w4,
                workers=embedded_workers,
            )
        finally:
            embedded.stop()
    else:
        workers = Workers(data_dir)
        try:
            # One process with two threads: two workers sharing one pair of zygotes, as CI
            # and the broker tests run them (two processes would boot two scientific ones).
            workers.start(processes=1, threads=2)
            worker_pid = workers.wait_ready(1)

            def worker_threads(threads: int) -> int:
                workers.stop()
                WorkerHeartbeat.objects.all().delete()
                workers.start(processes=1, threads=threads)
                return workers.wait_ready(1)

            run_all(
                world,
                arguments.mode,
                arguments.reps_w1,
                arguments.reps_w3,
                arguments.reps_w4,
                worker_pid=worker_pid,
                workers=worker_threads,
            )
        except Exception:
            print(f"# worker log:\n{workers.logs()}", file=sys.stderr)
            raise
        finally:
            workers.stop()
    # The figures are wall times: on a shared machine, say how busy it was.
    load = os.getloadavg()[0]
    print(
        f"# {arguments.mode} took {time.monotonic() - started:.1f} s; load average {load:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, help="run one mode here (the parent's child)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--reps-w1", type=int, default=3)
    parser.add_argument("--reps-w3", type=int, default=2)
    parser.add_argument("--reps-w4", type=int, default=5)
    arguments = parser.parse_args()
    # A SIGTERM unwinds through the finally blocks: children stopped, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if arguments.mode:
        return child(arguments)
    passed = [
        f"--reps-w1={arguments.reps_w1}",
        f"--reps-w3={arguments.reps_w3}",
        f"--reps-w4={arguments.reps_w4}",
    ]
    return parent(arguments, passed)


if __name__ == "__main__":
    sys.exit(main())
