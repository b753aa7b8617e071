"""What the fault suite starts and breaks: its own PostgreSQL database, a broker (a
redis-server of its own, or RabbitMQ behind a proxy), TCP proxies in front of both, and
`rundramatiq` worker groups it kills, stops and replaces."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from faults.proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Database:
    """A database of the suite's own on the PostgreSQL server of `DATABASE_URL` (or the
    local default), made afresh and migrated; workers reach it through a proxy the
    'database outage' scenario cuts, the suite directly."""

    def __init__(self, server_url: str, name: str) -> None:
        if not server_url.startswith("postgres"):
            server_url = DEFAULT_DATABASE
        self.admin_url = urlunsplit(urlsplit(server_url)._replace(path="/postgres"))
        self.url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        self.name = name
        self.proxy = TcpProxy(_address(self.url, 5432))

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.proxy.start()

    @property
    def workers_url(self) -> str:
        return _with_port(self.url, "127.0.0.1", self.proxy.port)

    def drop(self) -> None:
        import psycopg

        self.proxy.close()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Broker:
    """The leg's broker. Redis: a redis-server of the suite's own on a free port, with
    persistence off, so a restart loses every message as a real one would. RabbitMQ: the
    shared server behind a proxy; a 'restart' cuts every connection, purges the suite's
    queues (what a broker without persistence loses) and listens again."""

    def __init__(self, kind: str, prefix: str, workdir: Path) -> None:
        self.kind = kind
        self.prefix = prefix
        self.workdir = workdir
        self.redis: subprocess.Popen[bytes] | None = None
        self.proxy: TcpProxy | None = None
        self.url = ""

    @staticmethod
    def unavailable(kind: str) -> str:
        """Why this leg cannot run here ('' when it can)."""
        if kind == "redis" and shutil.which("redis-server") is None:
            return "no redis-server on PATH"
        if kind == "rabbitmq":
            upstream = _address(os.environ.get("STEPWORKS_FAULTS_RABBITMQ", DEFAULT_RABBITMQ), 5672)
            try:
                socket.create_connection(upstream, timeout=2).close()
            except OSError as error:
                return f"no RabbitMQ at {upstream[0]}:{upstream[1]} ({error})"
        return ""

    def start(self) -> None:
        if self.kind == "redis":
            self.port = free_port()
            self._start_redis()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            upstream = os.environ.get("STEPWORKS_FAULTS_RABBITMQ", DEFAULT_RABBITMQ)
            self.upstream_url = upstream
            self.proxy = TcpProxy(_address(upstream, 5672)).start()
            self.url = _with_port(upstream, "127.0.0.1", self.proxy.port)

    def _start_redis(self) -> None:
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115
        self.redis = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def restart(self, down_s: float) -> None:
        """The broker goes away for `down_s` and comes back empty."""
        if self.kind == "redis":
            assert self.redis is not None
            self.redis.kill()
            self.redis.wait()
            time.sleep(down_s)
            self._start_redis()
            return
        assert self.proxy is not None
        self.proxy.cut()
        self.purge()
        time.sleep(down_s)
        self.proxy.restore()

    def queue_names(self) -> list[str]:
        names = [f"{self.prefix}.{q}" for q in ("steps", "sweeps", "webhooks")]
        return [f"{n}{suffix}" for n in names for suffix in ("", ".DQ", ".XQ")]

    def purge(self, delete: bool = False) -> None:
        """Empty (or delete) the suite's RabbitMQ queues, on a connection of our own."""
        import pika

        params = pika.URLParameters(self.upstream_url)
        with contextlib.closing(pika.BlockingConnection(params)) as conn:
            for name in self.queue_names():
                channel = conn.channel()
                try:
                    if delete:
                        channel.queue_delete(name)
                    else:
                        channel.queue_purge(name)
                except pika.exceptions.ChannelClosedByBroker:
                    pass  # never declared
                with contextlib.suppress(Exception):
                    channel.close()

    def close(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
        if self.proxy is not None:
            self.proxy.close()
            with contextlib.suppress(Exception):
                self.purge(delete=True)  # a shared server keeps nothing of ours


class Worker:
    """One `rundramatiq --processes 1` group: its main process and the worker process it
    forks (the one the fault points and SIGKILLs hit)."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, started: float) -> None:
        self.proc = proc
        self.log = log
        self.started = started
        self.stopping = False  # SIGTERM sent: a deploy, not a fault to replace


class Fleet:
    """Worker groups on `env`, kept at `size` by a watcher that replaces the dead (a
    supervisor's restart), counting how each died."""

    def __init__(self, workdir: Path, env: dict[str, str], size: int, threads: int = 2) -> None:
        self.workdir = workdir
        self.env = env
        self.size = size
        self.threads = threads
        self.workers: list[Worker] = []
        self.deaths: dict[str, int] = {}
        self.death_times: list[float] = []  # epoch seconds
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._count = 0
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        for _ in range(self.size):
            self.spawn()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def spawn(self) -> Worker:
        self._count += 1
        log = self.workdir / f"worker-{self._count}.log"
        command = [
            *(sys.executable, "manage.py", "rundramatiq", "--processes", "1"),
            *("--threads", str(self.threads), "--worker-shutdown-timeout", "60000"),
        ]
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, log, time.monotonic())
        with self.lock:
            self.workers.append(worker)
        return worker

    def live(self) -> list[Worker]:
        with self.lock:
            return [w for w in self.workers if w.proc.poll() is None and not w.stopping]

    def worker_pids(self, worker: Worker) -> list[int]:
        """The group's processes (main first): its children are the dramatiq worker."""
        try:
            out = subprocess.run(
                ["pgrep", "-g", str(worker.proc.pid)], capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError:
            return [worker.proc.pid]
        return [int(pid) for pid in out.split()]

    def kill_random(self, rng: random.Random) -> bool:
        """SIGKILL a random live group, all of it (a machine lost); True if one was."""
        live = self.live()
        if not live:
            return False
        victim = rng.choice(live)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.proc.pid, signal.SIGKILL)
        return True

    def kill_pid(self, pid: int) -> bool:
        """SIGKILL the group that holds `pid` (a worker named in a step's row)."""
        for worker in self.live():
            if pid in self.worker_pids(worker):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                return True
        return False

    def deploy_one(self, rng: random.Random) -> bool:
        """A rolling deploy's step: a new group starts, an old one gets SIGTERM and drains."""
        live = self.live()
        if not live:
            return False
        old = rng.choice(live)
        self.spawn()
        old.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(old.proc.pid, signal.SIGTERM)
        return True

    def _watch(self) -> None:
        while not self.closing.wait(0.2):
            with self.lock:
                ended = [w for w in self.workers if w.proc.poll() is not None]
                self.workers = [w for w in self.workers if w not in ended]
            for worker in ended:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)  # its zygotes, left over
                why = self._why(worker)
                self.deaths[why] = self.deaths.get(why, 0) + 1
                if why != "deployed":
                    self.death_times.append(time.time())
            missing = self.size - len(self.live())
            for _ in range(max(0, missing)):
                if not self.closing.is_set():
                    self.spawn()

    def _why(self, worker: Worker) -> str:
        if worker.stopping:
            return "deployed"
        text = worker.log.read_text(errors="replace")
        point = re.findall(r"fault point (\w+): killing", text)
        if point:
            return f"fault_point:{point[-1]}"
        return f"exit:{worker.proc.returncode}"

    def stop(self) -> None:
        self.closing.set()
        if self._watcher is not None:
            self._watcher.join()
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait()

    def logs(self) -> list[Path]:
        return sorted(self.workdir.glob("worker-*.log"))
