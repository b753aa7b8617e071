"""The demo, served as `make run` serves it, in a temp data folder, for Chromium to drive.

`demo_server()` migrates a fresh SQLite database, collects the static files (the manifest
storage: hashed names, as in production), seeds the demo, runs `classify` once and, if
asked, the seed's sweep (`manage.py demo_sweep --replicates 3 --wait`: 3 x 2 x 3 variants,
54 runs, about a minute on 2 CPUs), then starts `manage.py serve --no-workers` on a free
port. The server, its process group and the folder go at the end, also after a failure.
bench/bench_pages.py and docs/screenshots.py use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@dataclass
class Demo:
    url: str
    run: int  # the first run of classify
    sweep: int | None  # the seed's sweep, when asked for
    data_dir: Path
    env: dict[str, str]

    def manage(self, *arguments: str) -> str:
        return _manage(self.env, *arguments)


def chromium() -> str | None:
    """Debian's Chromium (never `playwright install`)."""
    return shutil.which("chromium")


def _manage(env: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=env,
        check=False,  # the error below says which command and why
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(arguments)}: {done.stderr[-2000:]}")
    return done.stdout


def _last_json(stdout: str) -> dict[str, Any]:
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"manage.py serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def demo_server(*, sweep: bool = True, log: Any = print) -> Iterator[Demo]:
    data_dir = Path(tempfile.mkdtemp(prefix="stepworks-demo-"))
    env = {
        key: value
        for key, value in os.environ.items()
        # The embedded defaults, whatever the caller's shell points at.
        if key not in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_BACKEND", "DEBUG")
    }
    env.update(STEPWORKS_DATA_DIR=str(data_dir), LOG_LEVEL="WARNING", DEBUG="false")
    server = None
    try:
        started = time.monotonic()
        _manage(env, "migrate", "--noinput", "-v0")
        _manage(env, "collectstatic", "--noinput", "-v0")
        _manage(env, "seed_demo")
        run = int(_last_json(_manage(env, "run_pipeline", "demo", "classify", "--wait"))["run"])
        sweep_id = None
        if sweep:
            summary = _last_json(_manage(env, "demo_sweep", "--replicates", "3", "--wait"))
            sweep_id = int(summary["sweep"])
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port), "--no-workers"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # one group to end
        )
        _wait_until_up(url, server)
        log(f"# demo served at {url}, ready in {time.monotonic() - started:.0f} s")
        yield Demo(url, run, sweep_id, data_dir, env)
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def log_in(page: Any, url: str, user: str = "demo", password: str = "demo") -> None:
    page.goto(f"{url}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/w/demo/")
