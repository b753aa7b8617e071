"""Wake the long-polls waiting on a run when it changes.

Every status change writes an Event row (runs_app.scheduler). Once its transaction commits,
the scheduler calls `changed(run_ids)`, which wakes the waiters of this process at once: the
embedded default, where the workers are threads of the web process. On PostgreSQL it also
hands the ids to a sender thread, which NOTIFYs them on its own connection, and a listener
thread in every process that long-polls LISTENs and wakes its waiters: a worker machine's
change reaches the web machines within a round trip.

A wake-up is a hint, never the truth: `wait` re-reads the database after every wake-up and
at least every FALLBACK_POLL_S, so a lost NOTIFY (a restart, a dropped connection) costs a
poll, not a hang. Where nothing can wake a waiter (SQLite with the workers in another
process), that poll is BLIND_POLL_S.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from django.db import connections

log = logging.getLogger(__name__)

CHANNEL = "stepworks_runs"
FALLBACK_POLL_S = 1.0  # a waiter's re-read when wake-ups can reach it
BLIND_POLL_S = 0.04  # ... when none can (no in-process workers, no LISTEN)
RECONNECT_S = 2.0
IDLE_S = 1.0  # a thread's connection closes after this long without a change to send
MAX_TRACKED_RUNS = 10_000

_cond = threading.Condition()
_generation: dict[int, int] = {}  # run id -> changes seen by this process
_hosting_workers = threading.Event()  # set while this process runs worker threads
_outbox: queue.SimpleQueue[int] = queue.SimpleQueue()
_threads: dict[str, threading.Thread] = {}
_threads_lock = threading.Lock()
_listening = threading.Event()  # set while the listener holds a LISTEN
_stopping = threading.Event()


def changed(run_ids: Iterable[int]) -> None:
    """These runs have new events (called after the commit that wrote them)."""
    ids = set(run_ids)
    if not ids:
        return
    _wake(ids)
    if _postgres():
        _start("sender", _send_forever)
        for run_id in ids:
            _outbox.put(run_id)


def hosting_workers(hosting: bool) -> None:
    """This process starts (or stops) running worker threads: their changes wake its
    waiters directly."""
    if hosting:
        _hosting_workers.set()
    else:
        _hosting_workers.clear()


def wait(run_id: int, ready: Callable[[], bool], timeout: float) -> bool:
    """Block until `ready()` (a database read) is true or `timeout` seconds pass; True
    when it became ready. `ready` runs at once, after each wake-up for this run, and at
    least every poll interval."""
    if _postgres():
        _start("listener", _listen_forever)
    deadline = time.monotonic() + timeout
    with _cond:
        seen = _generation.get(run_id, 0)
    if ready():
        return True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        poll = FALLBACK_POLL_S if _can_be_woken() else BLIND_POLL_S
        with _cond:
            _cond.wait_for(functools.partial(_moved, run_id, seen), min(remaining, poll))
            seen = _generation.get(run_id, 0)
        if ready():
            return True


def _moved(run_id: int, seen: int) -> bool:
    return _generation.get(run_id, 0) != seen


def _wake(run_ids: Iterable[int]) -> None:
    with _cond:
        if len(_generation) > MAX_TRACKED_RUNS:
            _generation.clear()  # a waiter then wakes once for nothing and reads again
        for run_id in run_ids:
            _generation[run_id] = _generation.get(run_id, 0) + 1
        _cond.notify_all()


def _can_be_woken() -> bool:
    return _hosting_workers.is_set() or _listening.is_set()


def _postgres() -> bool:
    return bool(connections["default"].vendor == "postgresql")


def _start(name: str, target: Callable[[], None]) -> None:
    with _threads_lock:
        thread = _threads.get(name)
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=target, name=f"stepworks-wakeups-{name}", daemon=True)
        _threads[name] = thread
        thread.start()


def stop() -> None:
    """Stop the sender and listener threads and close their connections (tests drop their
    database after this)."""
    _stopping.set()
    with _threads_lock:
        threads = list(_threads.values())
        _threads.clear()
    for thread in threads:
        thread.join(timeout=5)
    _stopping.clear()


def _send_forever() -> None:
    """NOTIFY each changed run id on this thread's own connection, a batch at a time."""
    connection = connections["default"]
    try:
        while not _stopping.is_set():
            try:
                batch = {_outbox.get(timeout=IDLE_S)}
            except queue.Empty:
                connection.close()
                continue
            while True:
                try:
                    batch.add(_outbox.get_nowait())
                except queue.Empty:
                    break
            try:
                with connection.cursor() as cursor:
                    for run_id in sorted(batch):
                        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(run_id)])
            except Exception:  # a lost hint costs a waiter one poll
                log.warning("could not notify run changes %s", sorted(batch), exc_info=True)
                connection.close()
                _stopping.wait(RECONNECT_S)
    finally:
        connection.close()


def _listen_forever() -> None:
    """LISTEN on this thread's own connection and wake the waiters of each run named."""
    connection = connections["default"]
    try:
        while not _stopping.is_set():
            try:
                connection.ensure_connection()
                raw = connection.connection
                raw.execute(f"LISTEN {CHANNEL}")
                _listening.set()
                while not _stopping.is_set():
                    for notice in raw.notifies(timeout=IDLE_S):
                        if notice.payload.isdigit():
                            _wake([int(notice.payload)])
            except Exception:  # waiters poll until the listener is back
                _listening.clear()
                log.warning("lost the run change listener; retrying", exc_info=True)
                connection.close()
                _stopping.wait(RECONNECT_S)
    finally:
        _listening.clear()
        connection.close()
