"""Hints to the broker: "step N may be ready". The database stays the truth.

With a real broker (BROKER_URL) every queued step is sent as a message. Embedded, the
process hosting the worker threads sends to its in-process broker, and its dispatcher
thread sends the queued rows any other process committed (the database is the queue
between processes), and webhook deliveries whose message died with another process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from runs_app import wakeups
from workspaces import faultpoints
from workspaces.conf import engine

log = logging.getLogger(__name__)


def send_steps(ids: list[int], delay_ms: int = 0) -> None:
    """Hint that these steps may be ready (`delay_ms` from now)."""
    if settings.BROKER_URL:
        _send(ids, delay_ms)
    elif _embedded is not None:
        _embedded.send(ids, delay_ms)


def _send(ids: list[int], delay_ms: int = 0) -> None:
    """Each step's message, on its queue (a step of a resource queue goes to that queue's
    actor: one query for the batch, only where resource queues are configured)."""
    from runs_app.models import StepRun
    from runs_app.tasks import step_actor

    queues: dict[int, str] = {}
    if engine().queues:
        queues = dict(
            StepRun.objects.filter(pk__in=ids).exclude(queue="").values_list("pk", "queue")
        )
    for step_id in ids:
        step_actor(queues.get(step_id, "")).send_with_options(
            args=(step_id,), delay=delay_ms or None
        )
    # else: embedded without workers in this process; the hosting process polls the rows.


def send_sweeps(ids: list[int]) -> None:
    """Ask a worker to start the runs these sweeps still lack (the expand_sweep actor)."""
    from runs_app.tasks import expand_sweep

    for sweep_id in ids:
        expand_sweep.send(sweep_id)


def send_deliveries(ids: list[int]) -> None:
    """Ask a worker to try these webhook deliveries (the deliver_webhook actor)."""
    from runs_app.tasks import deliver_webhook

    for delivery_id in ids:
        deliver_webhook.send(delivery_id)


def on_sweeps_due(sender: Any, sweep_ids: list[int], **kwargs: Any) -> None:
    """The receiver of runs_app.hints.sweeps_due."""
    send_sweeps(sweep_ids)


def on_deliveries_due(sender: Any, delivery_ids: list[int], **kwargs: Any) -> None:
    """The receiver of runs_app.hints.deliveries_due."""
    send_deliveries(delivery_ids)


def on_steps_queued(sender: Any, step_ids: list[int], delay_ms: int = 0, **kwargs: Any) -> None:
    """The receiver of scheduler.steps_queued (sent after the queuing transaction commits).

    A broker that cannot take the hint (down, restarting) fails nothing: what was queued is
    committed, and the reaper sends queued steps whose message never went out again. The
    request or step that queued them goes on."""
    faultpoints.reach("queued_not_sent")
    try:
        send_steps(step_ids, delay_ms)
    except Exception as error:  # whichever broker's connection error: the rows are the truth
        log.warning(
            "the broker did not take %d step message(s) (%s); the reaper resends them",
            len(step_ids),
            error,
        )


class EmbeddedWorkers:
    """dramatiq worker threads on the in-process broker, plus the dispatcher thread."""

    def __init__(self, threads: int | None = None) -> None:
        import dramatiq

        import runs_app.tasks  # noqa: F401  (declares the actor on the broker)

        self.broker = dramatiq.get_broker()
        self.worker = dramatiq.Worker(
            self.broker,
            worker_threads=threads or engine().embedded_workers,
            worker_timeout=100,
        )
        self.sent: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        global _embedded
        self.worker.start()
        wakeups.hosting_workers(True)
        if settings.BROKER_URL:
            return  # a real broker carries every message; the reaper covers lost ones
        _embedded = self
        self.thread = threading.Thread(
            target=self._dispatch_loop, name="stepworks-dispatcher", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        global _embedded
        _embedded = None
        wakeups.hosting_workers(False)
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.worker.stop(timeout=10_000)
        # dramatiq leaves the stopped worker's middleware on the (process-wide) broker; a
        # later worker in this process would otherwise find two.
        self.broker.middleware[:] = [
            m for m in self.broker.middleware if getattr(m, "worker", None) is not self.worker
        ]

    def send(self, step_ids: list[int], delay_ms: int = 0) -> None:
        """Send now (or `delay_ms` later); the dispatcher then adopts the row's queued_at as
        already sent."""
        with self.lock:
            for step_id in step_ids:
                self.sent[step_id] = None
        _send(step_ids, delay_ms)

    def _dispatch_loop(self) -> None:
        hooks_checked = 0.0
        while not self.stopping.wait(engine().embedded_poll_s):
            try:
                self.dispatch_queued()
                if time.monotonic() - hooks_checked >= engine().reaper_s:
                    hooks_checked = time.monotonic()
                    self.redeliver_webhooks()
            except Exception:
                log.exception("embedded dispatcher failed")
            finally:
                connection.close()

    def redeliver_webhooks(self) -> int:
        """Webhook deliveries whose message an exited process took with it (its in-process
        broker), sent again once two leases overdue."""
        from runs_app.webhooks.services import redeliver_overdue

        return redeliver_overdue(grace_s=2 * engine().lease_s)

    def dispatch_queued(self) -> None:
        """Send every queued row not yet sent at its current queued_at (a requeue, or a row
        another process committed)."""
        from runs_app.models import StepRun, StepStatus

        due = Q(not_before__isnull=True) | Q(not_before__lte=timezone.now())
        queued = dict(  # a retry waiting out its backoff is not due yet
            StepRun.objects.filter(due, status=StepStatus.QUEUED)
            .order_by()
            .values_list("pk", "queued_at")
        )
        to_send = []
        with self.lock:
            for step_id in [pk for pk in self.sent if pk not in queued]:
                del self.sent[step_id]
            for step_id, queued_at in queued.items():
                mark = self.sent.get(step_id, _UNSENT)
                if mark is None:  # sent directly by this process: adopt its queued_at
                    self.sent[step_id] = queued_at
                elif mark != queued_at:
                    self.sent[step_id] = queued_at
                    to_send.append(step_id)
        if to_send:
            _send(to_send)


_UNSENT = object()
_embedded: EmbeddedWorkers | None = None


def embedded_running() -> bool:
    return _embedded is not None
