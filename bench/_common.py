"""What the benches share: a throwaway Postgres database, Redis under a namespace, a child
process per mode."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def bench_database(name: str) -> Iterator[str]:
    """A fresh database, dropped afterwards even when the bench failed."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            # FORCE: a worker killed mid-transaction may still hold a connection.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_ready() -> str | None:
    """None when Postgres and Redis answer, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except Exception as error:
        return f"PostgreSQL: {error}".splitlines()[0]
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:
        return f"Redis: {error}".splitlines()[0]
    return None


def redis_forget(prefix: str) -> None:
    """Delete the queues, heartbeats and acks dramatiq kept under our namespace."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def run_child(
    script: str,
    flag: str,
    value: str,
    env: dict[str, str],
    arguments: list[str],
    timeout_s: float,
    data_dir: Path | None = None,
) -> int:
    """Run `script --<flag> <value> ...` (one mode or leg of a bench); its stdout is ours.
    Ends its process group if it hangs or we are interrupted, then the worker groups it
    started and could not stop (their pids in `data_dir/worker-groups`)."""
    child = subprocess.Popen(
        [sys.executable, str(Path(script).resolve()), f"--{flag}", value, *arguments],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        start_new_session=True,  # one group to end if it hangs
    )
    try:
        return child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"# {value} timed out after {timeout_s:g} s", flush=True)
        return 1
    finally:
        # SIGTERM first, so the child's handler stops its workers and closes its
        # connections (the database is dropped after this).
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        pids = data_dir / "worker-groups" if data_dir is not None else None
        if pids is not None and pids.exists():
            for line in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.killpg(int(line), signal.SIGKILL)
