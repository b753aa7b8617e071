"""`/metrics` for Prometheus: the engine's state, read from the database at scrape time.

Every figure is computed when Prometheus asks, from the tables (the database is the truth;
several web processes then agree, and nothing is kept in memory), with bounded queries that
an index serves:

- steps and runs in flight (pending, queued, running, following): the reaper's index on
  step status; runs through their in-flight steps;
- the last STEPWORKS_METRICS_WINDOW steps and runs (newest ids, the primary key): their
  statuses, the durations of the succeeded ones and the reuse ratio;
- live workers: the heartbeat's index; lease expiries: the partial index on the events of
  lost workers;
- queue depths: the queued steps (and the broker's own count, when it has one).

The metric names are listed in the README ("Scaling out").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from django.db.models import Count
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from runs_app import fleet
from runs_app.models import (
    LEASE_LOST_REASONS,
    Event,
    PipelineRun,
    RunStatus,
    StepRun,
    StepStatus,
)
from workspaces.conf import operations

IN_FLIGHT = (StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.FOLLOWING)
RUNS_IN_FLIGHT = (RunStatus.PENDING, RunStatus.RUNNING)
# Step durations: a light step takes tens of milliseconds, training takes hours.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class EngineCollector:
    """One scrape's figures (prometheus_client's custom collector protocol)."""

    def collect(self) -> Iterator[Metric]:
        window = operations().metrics_window
        yield from self._in_flight()
        yield from self._recent_steps(window)
        yield from self._recent_runs(window)
        yield from self._workers_and_queues()

    def _in_flight(self) -> Iterator[Metric]:
        steps = dict(
            StepRun.objects.filter(status__in=IN_FLIGHT)
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        gauge = GaugeMetricFamily(
            "stepworks_steps", "Steps in flight now, by status.", labels=["status"]
        )
        for status in IN_FLIGHT:
            gauge.add_metric([status], steps.get(status, 0))
        yield gauge
        runs = dict(
            PipelineRun.objects.filter(
                pk__in=StepRun.objects.filter(status__in=IN_FLIGHT).values("run_id")
            )
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        gauge = GaugeMetricFamily(
            "stepworks_runs", "Runs in flight now, by status.", labels=["status"]
        )
        for run_status in RUNS_IN_FLIGHT:
            gauge.add_metric([run_status], runs.get(run_status, 0))
        yield gauge

    def _recent_steps(self, window: int) -> Iterator[Metric]:
        recent = list(
            StepRun.objects.order_by("-id").values_list("status", "started_at", "finished_at")[
                :window
            ]
        )
        counts = Counter(status for status, _, _ in recent)
        gauge = GaugeMetricFamily(
            "stepworks_recent_steps",
            f"The last {window} steps made (STEPWORKS_METRICS_WINDOW), by status.",
            labels=["status"],
        )
        for status in StepStatus.values:
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge
        durations = [
            (finished - started).total_seconds()
            for status, started, finished in recent
            if status == StepStatus.SUCCEEDED and started and finished
        ]
        yield _histogram(
            "stepworks_step_duration_seconds",
            f"How long the succeeded steps among the last {window} ran (claim to success).",
            durations,
        )
        executed = counts[StepStatus.SUCCEEDED] + counts[StepStatus.REUSED]
        yield GaugeMetricFamily(
            "stepworks_reuse_ratio",
            f"Reused / (reused + succeeded) among the last {window} steps (NaN: none yet).",
            value=counts[StepStatus.REUSED] / executed if executed else float("nan"),
        )

    def _recent_runs(self, window: int) -> Iterator[Metric]:
        statuses = Counter(
            PipelineRun.objects.order_by("-id").values_list("status", flat=True)[:window]
        )
        gauge = GaugeMetricFamily(
            "stepworks_recent_runs",
            f"The last {window} runs made (STEPWORKS_METRICS_WINDOW), by status.",
            labels=["status"],
        )
        for run_status in RunStatus.values:
            gauge.add_metric([run_status], statuses.get(run_status, 0))
        yield gauge

    def _workers_and_queues(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "stepworks_workers_alive",
            "Worker processes whose heartbeat is fresher than a lease.",
            value=fleet.live_workers(),
        )
        expiries = Event.objects.filter(reason__in=LEASE_LOST_REASONS).count()
        yield CounterMetricFamily(
            "stepworks_lease_expiries",
            "Step attempts whose worker stopped renewing their lease (worker lost), ever.",
            value=expiries,
        )
        depth = GaugeMetricFamily(
            "stepworks_queue_depth",
            "Steps queued (from the database), by queue.",
            labels=["queue"],
        )
        broker = GaugeMetricFamily(
            "stepworks_broker_queue_depth",
            "Messages waiting in the broker, by queue (only with a real broker).",
            labels=["queue"],
        )
        answered = False
        for queue in fleet.queue_depths():
            depth.add_metric([queue.queue], queue.queued)
            if queue.broker is not None:
                broker.add_metric([queue.queue], queue.broker)
                answered = True
        yield depth
        if answered:
            yield broker


def _histogram(name: str, documentation: str, values: list[float]) -> HistogramMetricFamily:
    buckets = [(_bound(le), sum(1 for v in values if v <= le)) for le in DURATION_BUCKETS]
    buckets.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=sum(values))


def _bound(le: float) -> str:
    return str(float(le))


def metrics_exposition(accept: str = "") -> tuple[bytes, str]:
    """One scrape's exposition and its content type, in the format the scraper's Accept
    header asks for (Prometheus' text format, or OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector())
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
