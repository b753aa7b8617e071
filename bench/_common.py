"""What the benches share: a throwaway Postgres database, Redis under a namespace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
