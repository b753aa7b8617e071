"""The edit-run loop at the terminal (issue 13): `stepworks run PIPELINE.yaml --watch` after
a one-step edit, against a real server, minus the time the steps themselves took.

    .venv/bin/python bench/bench_iterate.py [--modes embedded,pg] [--reps 10] [--traced 3]

A temp project holds three modules named by path (`module: ./prep`, `./train`, `./eval`;
light pure-python bodies of a few ms each) in `iterate.yaml`. Each repetition edits
train/main.py (a constant its output depends on), so the CLI pushes train as a new
version, leaves prep and eval unchanged, makes a new pipeline version and starts it in one
request (prep reused; train and eval execute), follows it by a long-poll that answers at
its end with the comparison with the previous run. Prints, medians over --reps:

    iterate.<mode>.wall_ms       the command's wall time, from its start to its exit
    iterate.<mode>.overhead_ms   wall_ms minus the executed steps' own time (each step's
                                 started_at -> finished_at from the API: train and eval)
    cli.<mode>.end_latency_ms    the run's finished_at (from the API) to the CLI's exit:
                                 the long-poll's answer (the comparison in it), the exit

Modes: `embedded` (SQLite in a temp data folder, `manage.py serve`: the web server and
in-process workers in one process, as `make run` starts it) and `pg` (a fresh database on
127.0.0.1:5432, Redis under its own STEPWORKS_QUEUE_PREFIX, gunicorn for the web and a
`rundramatiq` worker process, as the README's scale-out section runs them; `# pg skipped:
<why>` when Postgres or Redis does not answer). Each mode first makes a user, a workspace
and a token with manage.py, then runs the loop twice untimed (the first pushes everything;
zygotes warm). --traced more repetitions then run the CLI through bench/_iterate_trace.py,
which times every HTTP request: the `#` lines say where the time goes. The servers, the
database, the Redis keys and the temp folders are removed at the end, also after a failure
or a SIGTERM.
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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import REDIS_URL, bench_database, postgres_ready, redis_forget  # bench/ on sys.path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRACE = Path(__file__).resolve().with_name("_iterate_trace.py")
MODES = ("embedded", "pg")
BOOT_TIMEOUT_S = 120
CLI_TIMEOUT_S = 120

# Pure-python work of a few ms each, no imports: the light zygote runs them.
PREP = """\
def prep(ctx, *, n: int = 2000):
    return {"data": [(i * 7919) % 1000 for i in range(n) for _ in range(20)][:n]}
"""
TRAIN = """\
SALT = {salt}


def train(ctx, data, *, rounds: int = 30):
    w = float(SALT)
    for _ in range(rounds):
        w = sum((x - w) * 0.001 for x in data) + w
    return {{"model": {{"w": w, "salt": SALT}}}}
"""
EVAL = """\
def evaluate(ctx, data, model, *, rounds: int = 20):
    loss = 0.0
    for _ in range(rounds):
        loss = sum((x - model["w"]) ** 2 for x in data) / len(data)
    ctx.log_metric("loss", loss)
    return {"loss": loss}
"""
SPEC = """\
steps:
  prep: {module: ./prep, entrypoint: main.py:prep}
  train:
    module: ./train
    entrypoint: main.py:train
    inputs: {data: prep.data}
  eval:
    module: ./eval
    entrypoint: main.py:evaluate
    inputs: {data: prep.data, model: train.model}
"""


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# --- the server -------------------------------------------------------------------------------
class Processes:
    """Server processes, each in its own session so its whole group can be ended."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def _wait_ready(url: str, procs: Processes) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        procs.check()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url}/readyz did not answer 200 in {BOOT_TIMEOUT_S} s\n{procs.tail()}")


@contextlib.contextmanager
def server(mode: str, work: Path) -> Iterator[dict[str, str]]:
    """A server of `mode` with a user, a workspace and a token: yields the CLI's env."""
    data_dir = work / "data"
    prefix = f"stepworks-bench-iterate-{os.getpid()}-{mode}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_ROOT")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        STEPWORKS_DATA_DIR=str(data_dir),
        STEPWORKS_QUEUE_PREFIX=prefix,
        LOG_LEVEL="WARNING",
        DEBUG="false",
    )
    with contextlib.ExitStack() as stack:
        if mode == "pg":
            database = stack.enter_context(bench_database(f"stepworks_bench_iterate_{os.getpid()}"))
            env.update(
                DATABASE_URL=database, BROKER_URL=REDIS_URL, SECRET_KEY=secrets.token_urlsafe(32)
            )
            stack.callback(redis_forget, prefix)
        data_dir.mkdir()
        procs = Processes(work)
        stack.callback(procs.stop)  # before the database is dropped (LIFO)
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(
            {**env, "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(16)},
            *("createsuperuser", "--noinput", "--username", "bench", "--email", "b@example.com"),
        )
        _manage(env, "create_workspace", "bench", "--name", "Bench", "--owner", "bench")
        token = _manage(env, "create_token", "bench", "--name", "bench").strip().splitlines()[-1]
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        if mode == "embedded":
            serve = ["manage.py", "serve", "--port", str(port), "--no-demo-run"]
            procs.start("serve", [sys.executable, *serve], env)
        else:
            web = ["config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "-k", "gthread"]
            procs.start("gunicorn", [str(BIN / "gunicorn"), *web, "--threads", "8"], env)
            worker = ["manage.py", "rundramatiq", "--processes", "1", "--threads", "2"]
            procs.start("worker", [sys.executable, *worker], env)
        _wait_ready(url, procs)
        home = work / "home"
        home.mkdir()
        yield {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # no login config of the caller's
            "STEPWORKS_URL": url,
            "STEPWORKS_TOKEN": token,
            "STEPWORKS_WORKSPACE": "bench",
        }


# --- the loop ---------------------------------------------------------------------------------
def _project(folder: Path) -> Path:
    for name, source in (("prep", PREP), ("train", TRAIN.format(salt=0)), ("eval", EVAL)):
        (folder / name).mkdir(parents=True)
        (folder / name / "main.py").write_text(source)
    spec = folder / "iterate.yaml"
    spec.write_text(SPEC)
    return spec


def iterate(spec: Path, salt: int, cli_env: dict[str, str], trace: Path | None) -> dict[str, Any]:
    """Edit train, run the file, return the wall time and the finished run's timings."""
    (spec.parent / "train" / "main.py").write_text(TRAIN.format(salt=salt))
    command = ["run", str(spec), "--watch"]
    if trace is None:
        argv = [str(BIN / "stepworks"), *command]
    else:
        argv = [sys.executable, str(TRACE), str(trace), *command]
    started = time.perf_counter()
    done = subprocess.run(
        argv, check=False, env=cli_env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )
    wall = time.perf_counter() - started
    exited = time.time()
    found = re.search(r"^run (\d+) succeeded", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return {"wall": wall, "exited": exited, "run": int(found.group(1)), "stdout": done.stdout}


def timings(client: Any, result: dict[str, Any]) -> dict[str, Any]:
    detail = client.get_run(result["run"])
    ran = [s for s in detail["steps"] if s["status"] == "succeeded"]
    bodies = {s["name"]: _when(s["finished_at"]) - _when(s["started_at"]) for s in ran}
    return {
        **result,
        "detail": detail,
        "ran": sorted(bodies),
        "bodies": sum(bodies.values()),
        "edited_body": bodies.get("train", 0.0),
        "end": result["exited"] - _when(detail["finished_at"]),
    }


def profile(rep: dict[str, Any], trace: dict[str, Any]) -> dict[str, float]:
    """Split one traced repetition into consecutive phases (ms) that add up to its wall time,
    from the CLI's requests (client clock) and the run's timestamps (server clock, the same
    machine's). The CLI pushes and starts the run in one request (runs/from-source/, made
    twice when the server lacks a module's code) and learns of its end, with the
    comparison, from the run's long-poll."""
    requests = trace["requests"]
    steps = {s["name"]: s for s in rep["detail"]["steps"]}
    run_end = _when(rep["detail"]["finished_at"])
    source = [r for r in requests if r[1].endswith("/runs/from-source/")]
    # The read that saw the run finished is the last read of the run.
    known = max(i for i, r in enumerate(requests) if r[1].endswith(f"/runs/{rep['run']}/"))
    marks = [
        ("startup", trace["started"]),
        ("push_and_start", requests[0][3]),  # to the run's row: modules, spec, run
        ("run_start_to_first_body", _when(rep["detail"]["created_at"])),
        ("train_body", _when(steps["train"]["started_at"])),
        ("between_steps", _when(steps["train"]["finished_at"])),
        ("eval_body", _when(steps["eval"]["started_at"])),
        ("last_step_to_run_end", _when(steps["eval"]["finished_at"])),
        ("run_end_to_cli_knows", run_end),  # the long-poll's answer, comparison included
        ("exit", requests[known][4]),  # the final table and summary printed, the exit
        ("", trace["exited"]),
    ]
    phases = {name: (marks[i + 1][1] - when) * 1000 for i, (name, when) in enumerate(marks[:-1])}
    return {
        **phases,
        "requests": len(requests),
        "source_request_ms": _median([(r[4] - r[3]) * 1000 for r in source]),
        "source_answer_to_poll_ms": (requests[known][3] - source[-1][4]) * 1000,
    }


def bench_mode(mode: str, reps: int, traced: int) -> None:
    import json

    from stepworks.client import Client

    work = Path(tempfile.mkdtemp(prefix=f"bench-iterate-{mode}-"))
    try:
        if mode == "pg" and (why := postgres_ready()) is not None:
            print(f"# pg skipped: {why}", flush=True)
            return
        booted = time.monotonic()
        with server(mode, work) as cli_env:
            spec = _project(work / "project")
            client = Client(cli_env["STEPWORKS_URL"], cli_env["STEPWORKS_TOKEN"], "bench")
            print(f"# {mode}: server up in {time.monotonic() - booted:.1f} s", flush=True)
            for salt in (0, 1):  # untimed: the first pushes all three; warm zygotes, code
                iterate(spec, salt, cli_env, None)
            reps_done = [timings(client, iterate(spec, 2 + i, cli_env, None)) for i in range(reps)]
            profiles = []
            for i in range(traced):
                trace_path = work / f"trace-{i}.json"
                rep = timings(client, iterate(spec, 2 + reps + i, cli_env, trace_path))
                profiles.append(profile(rep, json.loads(trace_path.read_text())))
            client.close()
        report(mode, reps_done, profiles)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(mode: str, reps: list[dict[str, Any]], profiles: list[dict[str, float]]) -> None:
    wall = [r["wall"] * 1000 for r in reps]
    overhead = [(r["wall"] - r["bodies"]) * 1000 for r in reps]
    print(f"iterate.{mode}.wall_ms {_median(wall):.0f}")
    print(f"iterate.{mode}.overhead_ms {_median(overhead):.0f}")
    print(f"cli.{mode}.end_latency_ms {_median([r['end'] * 1000 for r in reps]):.0f}")
    edited_only = [(r["wall"] - r["edited_body"]) * 1000 for r in reps]
    bodies = _median([r["bodies"] * 1000 for r in reps])
    print(
        f"# {mode}: wall minus train's time alone (eval's counted as overhead): "
        f"{_median(edited_only):.0f} ms; the steps' own time {bodies:.0f} ms"
    )
    print(f"# {mode}: overhead per rep (ms): {' '.join(f'{v:.0f}' for v in overhead)}")
    ran = {" ".join(r["ran"]) for r in reps}
    print(f"# {mode}: steps executed per rep: {' | '.join(sorted(ran))} (the rest reused)")
    if profiles:
        phases = {key: _median([p[key] for p in profiles]) for key in profiles[0]}
        print(
            f"# {mode} where the time goes (median of {len(profiles)} traced runs, ms): "
            + ", ".join(f"{key} {value:.0f}" for key, value in phases.items())
        )
    load = os.getloadavg()[0]
    print(f"# {mode}: load average {load:.1f} on {os.cpu_count()} CPUs", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: embedded,pg")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--traced", type=int, default=3, help="extra runs with requests timed")
    arguments = parser.parse_args()
    modes = [m for m in arguments.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    # A SIGTERM unwinds through the finally blocks: servers stopped, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for mode in modes:
        bench_mode(mode, arguments.reps, arguments.traced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
