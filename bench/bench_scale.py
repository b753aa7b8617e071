"""Scale-out on PostgreSQL + Redis: steps a second of 1, 2 and 4 worker processes, and the
seed sweep with its artifacts in an S3-compatible bucket.

    .venv/bin/python bench/bench_scale.py [--workers 1 2 4] [--runs 10]

Prints `NAME VALUE` lines:

    scale.<n>.steps_per_s   1,010 short steps (10 runs of bench_engine's W2 fan, 100 no-op
                            leaves and their join, started at once, nothing reused) over <n>
                            `rundramatiq --processes <n> --threads 1` worker processes:
                            steps executed / seconds from the first run_create to the last
                            run's end
    W3.s3.wall_s            bench_engine's W3 (18 runs of a -> b -> c, 0.2 s steps, 27 bodies)
                            with STEPWORKS_ARTIFACTS_BACKEND=s3 on moto's S3 server, one
                            worker process with two threads (as W3.pg_redis)
    W3.s3.executed          step bodies W3 executed, counted by the bodies (27)
    s3.input_cache.hit_ratio  of the inputs W3's steps were given, the share the host's input
                            cache already held (runs_app/inputcache.py; the workers log their
                            counts when they stop, and the bench reads them there)

Lines starting with `#` are diagnostics. The bench never asserts a figure. It needs
PostgreSQL and Redis on 127.0.0.1 (as CI's machines have them); without them it prints
`# skipped: <why>`. moto's server is started by the bench on a free loopback port (as the
tests start it), on a database the bench creates and drops. On a machine with fewer CPUs
than worker processes the processes share them: the `#` lines say how busy it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (  # bench/ on sys.path
    REDIS_URL,
    bench_database,
    postgres_ready,
    redis_forget,
    run_child,
)
from bench_engine import CHILD_TIMEOUT_S, Workers, _base_env, _markers

if TYPE_CHECKING:
    from _engine_workloads import World

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEGS = ("scale", "s3")
BUCKET = "stepworks-bench"
CACHE_LINE = re.compile(r"input cache: (\d+) hits, (\d+) misses")


# --- the parent: a database, a broker namespace and (for s3) a bucket per leg ---------------
@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, with the bench's bucket."""
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_dir / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


def parent(arguments: argparse.Namespace, passed: list[str]) -> int:
    why = postgres_ready()
    if why is not None:
        print(f"# skipped: {why}", flush=True)
        return 0
    failed = False
    for leg in arguments.legs:
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{leg}-"))
        prefix = f"stepworks-bench-scale-{os.getpid()}-{leg}"
        env = _base_env(data_dir, prefix)
        try:
            with contextlib.ExitStack() as stack:
                database_url = stack.enter_context(
                    bench_database(f"stepworks_bench_scale_{os.getpid()}")
                )
                env.update(
                    DATABASE_URL=database_url,
                    BROKER_URL=REDIS_URL,
                    SECRET_KEY=secrets.token_urlsafe(32),
                )
                if leg == "s3":
                    endpoint = stack.enter_context(moto_server(data_dir))
                    env.update(
                        STEPWORKS_ARTIFACTS_BACKEND="s3",
                        STEPWORKS_S3_BUCKET=BUCKET,
                        STEPWORKS_S3_ENDPOINT_URL=endpoint,
                        AWS_ACCESS_KEY_ID="bench",
                        AWS_SECRET_ACCESS_KEY="bench",
                    )
                try:
                    code = run_child(__file__, "leg", leg, env, passed, CHILD_TIMEOUT_S, data_dir)
                    failed |= code != 0
                finally:
                    redis_forget(prefix)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            shutil.rmtree(_markers(data_dir), ignore_errors=True)
    return 1 if failed else 0


# --- the child: one leg, Django configured from its environment ----------------------------
def child(arguments: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _engine_workloads import chain_once, world_create

    data_dir = Path(settings.DATA_DIR)
    started = time.monotonic()
    call_command("migrate", verbosity=0)
    world = world_create(_markers(data_dir))
    workers = Workers(data_dir)
    try:
        if arguments.leg == "scale":
            _scale(world, workers, arguments.workers, arguments.runs)
        else:
            # The workers log their input cache's counts when they stop: at INFO.
            os.environ["LOG_LEVEL"] = "INFO"
            workers.start(processes=1, threads=2)
            workers.wait_ready(1)
            chain_once(world, v=-1, size=10)  # code materialised, connections open
            _restart(workers, processes=1, threads=2)  # the cache's counters from zero
            _s3_sweep(world)
    except Exception:
        print(f"# worker log:\n{workers.logs()}", file=sys.stderr)
        raise
    finally:
        workers.stop()
    if arguments.leg == "s3":
        _print_cache_ratio(workers)
    print(
        f"# {arguments.leg} took {time.monotonic() - started:.1f} s; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    return 0


def _restart(workers: Workers, processes: int, threads: int) -> None:
    from runs_app.models import WorkerHeartbeat

    workers.stop()
    WorkerHeartbeat.objects.all().delete()
    workers.start(processes=processes, threads=threads)
    workers.wait_ready(processes)


def _scale(world: World, workers: Workers, counts: list[int], runs: int) -> None:
    from _engine_workloads import FAN_LEAVES, fan_once

    from runs_app.models import WorkerHeartbeat

    steps = runs * (FAN_LEAVES + 1)
    one = None
    for count in counts:
        workers.stop()
        WorkerHeartbeat.objects.all().delete()
        workers.start(processes=count, threads=1)
        workers.wait_ready(count)
        fan_once(world)  # every process's zygote forked from once, connections open
        wall = _fans_at_once(world, runs)
        rate = steps / wall
        one = one or rate
        print(f"scale.{count}.steps_per_s {rate:.1f}", flush=True)
        print(
            f"# scale.{count}: {steps} steps in {wall:.2f} s over {count} worker processes "
            f"({rate / one:.2f}x one); load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs",
            flush=True,
        )


def _fans_at_once(world: World, runs: int) -> float:
    """`runs` runs of the fan started together, every leaf new; their wall seconds."""
    from _engine_workloads import FAN_LEAVES, _values, wait_terminal
    from django.utils import timezone

    from runs_app import scheduler
    from runs_app.models import StepRun

    started = timezone.now()
    run_ids = []
    for _ in range(runs):
        unique = next(_values) + 20_000_000
        overrides = {f"l{i:03d}.v": unique for i in range(FAN_LEAVES)}
        run_ids.append(scheduler.run_create(world.fan, param_overrides=overrides).pk)
    ended = wait_terminal(run_ids, timeout_s=600)
    executed = StepRun.objects.filter(run_id__in=run_ids, status="succeeded").count()
    if executed != runs * (FAN_LEAVES + 1):
        raise RuntimeError(f"the fans executed {executed} steps, not {runs * (FAN_LEAVES + 1)}")
    finished = max(run.finished_at for run in ended if run.finished_at is not None)
    return (finished - started).total_seconds()


def _s3_sweep(world: World) -> None:
    from _engine_workloads import sweep_once

    from artifacts.models import Artifact

    wall, executed = sweep_once(world, "sweep-s3")
    print(f"W3.s3.wall_s {wall:.2f}", flush=True)
    print(f"W3.s3.executed {executed}", flush=True)
    print(
        f"# W3.s3: {Artifact.objects.count()} artifacts stored in the bucket; ideal 2.70 s "
        f"(27 x 0.2 s on 2 workers)",
        flush=True,
    )


def _print_cache_ratio(workers: Workers) -> None:
    hits = misses = 0
    for path in workers.data_dir.glob("worker-*.log"):
        for match in CACHE_LINE.finditer(path.read_text(errors="replace")):
            hits += int(match.group(1))
            misses += int(match.group(2))
    if hits + misses == 0:
        print("# s3.input_cache: the workers logged no input cache counts", flush=True)
        return
    print(f"s3.input_cache.hit_ratio {hits / (hits + misses):.3f}", flush=True)
    print(
        f"# s3.input_cache: W3's steps were given {hits + misses} inputs, {misses} downloaded "
        f"from the bucket and {hits} found in the host's cache (an input is downloaded once "
        f"per digest per host: 3 outputs of a and 6 of b are 9 digests for 24 inputs)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leg", choices=LEGS, help="run one leg here (the parent's child)")
    parser.add_argument("--legs", nargs="+", choices=LEGS, default=list(LEGS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=10, help="fans started at once (101 steps)")
    arguments = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if arguments.leg:
        return child(arguments)
    passed = ["--workers", *map(str, arguments.workers), f"--runs={arguments.runs}"]
    return parent(arguments, passed)


if __name__ == "__main__":
    sys.exit(main())
