"""The operator's view of the workers (the workers page, its API, the admin, /metrics): each
worker process with its heartbeat and the steps it runs now, and the queues' depths.

A worker is alive while its heartbeat is fresher than a lease (the reaper's rule). The
database is the truth of a queue's depth: its steps with status `queued`. With a real broker
the broker's own count is shown beside it when it is cheap to ask (Redis: LLEN of the
queue's list; RabbitMQ: a passive declare, which creates nothing); the two differ when
messages were lost (the reaper sends them again) or duplicated (a duplicate claims nothing).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from runs_app.models import StepRun, StepStatus, WorkerHeartbeat
from workspaces.conf import engine

BROKER_TIMEOUT_S = 1.0
WORKERS_SHOWN = 500  # heartbeat rows, freshest first (a killed worker leaves its row)


@dataclass(frozen=True)
class RunningStep:
    id: int
    workspace: str  # its slug
    run_id: int
    pipeline: str
    name: str
    attempt: int
    started_at: datetime | None


@dataclass
class WorkerView:
    name: str  # "host:pid", as StepRun.worker names it
    host: str
    pid: int
    runtime: str
    sandbox: str
    started_at: datetime
    last_seen: datetime
    alive: bool
    steps: list[RunningStep] = field(default_factory=list)


def workers_overview() -> list[WorkerView]:
    """Every worker with a heartbeat row (alive first, then the freshest), with the steps it
    runs now. Two queries, whatever the number of workers and steps."""
    fresh = timezone.now() - timedelta(seconds=engine().lease_s)
    rows = WorkerHeartbeat.objects.order_by("-last_seen", "host", "pid")[:WORKERS_SHOWN]
    running: defaultdict[str, list[RunningStep]] = defaultdict(list)
    steps = (
        StepRun.objects.filter(status=StepStatus.RUNNING)
        .select_related("workspace", "run__pipeline_version__pipeline")
        .only(
            "name",
            "attempt",
            "started_at",
            "worker",
            "run_id",
            "workspace__slug",
            "run__pipeline_version__pipeline__name",
        )
        .order_by("started_at", "id")
    )
    for step in steps:
        running[step.worker].append(
            RunningStep(
                id=step.pk,
                workspace=step.workspace.slug,
                run_id=step.run_id,
                pipeline=step.run.pipeline_version.pipeline.name,
                name=step.name,
                attempt=step.attempt,
                started_at=step.started_at,
            )
        )
    workers = [
        WorkerView(
            name=str(row),
            host=row.host,
            pid=row.pid,
            runtime=row.runtime,
            sandbox=row.sandbox,
            started_at=row.started_at,
            last_seen=row.last_seen,
            alive=row.last_seen >= fresh,
            steps=running.get(str(row), []),
        )
        for row in rows
    ]
    workers.sort(key=lambda w: not w.alive)  # stable: alive first, each part freshest first
    return workers


def live_workers() -> int:
    """How many workers beat within a lease (one COUNT on the heartbeat's index)."""
    fresh = timezone.now() - timedelta(seconds=engine().lease_s)
    return WorkerHeartbeat.objects.filter(last_seen__gte=fresh).count()


@dataclass(frozen=True)
class QueueDepth:
    queue: str  # the dramatiq queue name
    queued: int  # steps queued for it, from the database
    broker: int | None  # messages waiting in the broker; None when not asked (embedded)
    broker_error: str = ""  # why the broker did not answer


def steps_queue() -> str:
    """The queue every step is sent to (runs_app.tasks.execute_step's)."""
    return f"{settings.QUEUE_PREFIX}.steps"


def queue_depths(with_broker: bool = True) -> list[QueueDepth]:
    """Each step queue's depth (the default one, and every resource queue of the settings or
    with steps queued): one grouped COUNT over the queued steps (the reaper's index), and,
    with a real broker and `with_broker`, the broker's own count."""
    counts = dict(
        StepRun.objects.filter(status=StepStatus.QUEUED)
        .order_by()
        .values_list("queue")
        .annotate(n=Count("id"))
        .values_list("queue", "n")
    )
    names = ["", *sorted(set(engine().queues) | (set(counts) - {""}))]
    depths = []
    for name in names:
        queue = f"{settings.QUEUE_PREFIX}.{name}" if name else steps_queue()
        broker: int | None = None
        error = ""
        if with_broker and settings.BROKER_URL:
            try:
                broker = broker_depth(settings.BROKER_URL, queue)
            except Exception as failure:  # an operator's view shows the broker's trouble
                error = f"{type(failure).__name__}: {failure}"[:200]
        depths.append(
            QueueDepth(queue=queue, queued=counts.get(name, 0), broker=broker, broker_error=error)
        )
    return depths


def broker_depth(url: str, queue: str) -> int:
    """Messages waiting in `queue` on the broker at `url` (not those being worked on)."""
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=BROKER_TIMEOUT_S, socket_connect_timeout=BROKER_TIMEOUT_S
        )
        try:
            # dramatiq's Redis broker keeps a queue's waiting message ids in the list
            # `<namespace>:<queue>` (its namespace is STEPWORKS_QUEUE_PREFIX).
            return int(client.llen(f"{settings.QUEUE_PREFIX}:{queue}"))
        finally:
            client.close()
    import pika

    separator = "&" if urlsplit(url).query else "?"
    timeouts = {"socket_timeout": BROKER_TIMEOUT_S, "connection_attempts": 1}
    connection = pika.BlockingConnection(pika.URLParameters(url + separator + urlencode(timeouts)))
    try:
        declared = connection.channel().queue_declare(queue=queue, passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


# --- which workers serve which queue (the reaper and the step page ask) ---------------------
def live_servers(now: Any = None) -> list[tuple[str, list[str]]]:
    """(runtime, queues) of each live worker (queues empty: it consumes all)."""
    fresh = (now or timezone.now()) - timedelta(seconds=3 * engine().heartbeat_s)
    rows = WorkerHeartbeat.objects.filter(last_seen__gte=fresh).values_list("runtime", "queues")
    return [(runtime, list(queues or [])) for runtime, queues in rows]


def serves(queues: list[str], queue: str) -> bool:
    """Whether a worker consuming `queues` (empty: all) takes the steps of `queue` ("":
    the default queue)."""
    name = f"{settings.QUEUE_PREFIX}.{queue or 'steps'}"
    return not queues or name in queues


def waiting_for(step: StepRun) -> str:
    """Why a queued step of a resource queue waits: no live worker serves its queue ("" when
    one does, or the step is not waiting)."""
    if step.status != StepStatus.QUEUED or not step.queue:
        return ""
    if any(serves(queues, step.queue) for _, queues in live_servers()):
        return ""
    return f"waiting for a worker on queue {step.queue}"
