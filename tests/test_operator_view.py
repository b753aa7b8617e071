"""The operator's view (issue 15): the workers page and API (staff), the admin's workers
list, queue depths (the database's, and the broker's own when there is one), and /metrics
for Prometheus behind a bearer token."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from runs_app import scheduler
from runs_app.fleet import broker_depth, steps_queue
from runs_app.models import (
    Event,
    FailureReason,
    PipelineRun,
    StepRun,
    StepStatus,
    WorkerHeartbeat,
)
from tests import factories
from tests.test_api_support import api_client

pytestmark = pytest.mark.django_db

TOKEN = "scrape-me-please"


@pytest.fixture
def staff(world: Any) -> Any:
    world.viewer.is_staff = True
    world.viewer.save()
    return world.viewer


@pytest.fixture
def one_step(world: Any) -> Any:
    return factories.pipeline_version(
        world.workspace,
        "solo",
        {"only": {"module_version": factories.module_version(world.workspace, "m")}},
    )


def worker(name: str, seen_s_ago: float = 0.0, sandbox: str = "required") -> WorkerHeartbeat:
    host, pid = name.split(":")
    return WorkerHeartbeat.objects.create(
        host=host,
        pid=int(pid),
        runtime="r" * 64,
        sandbox=sandbox,
        last_seen=timezone.now() - timedelta(seconds=seen_s_ago),
    )


def running_on(version: Any, worker_name: str) -> StepRun:
    """A run whose one step a worker has claimed (the real transition)."""
    run = scheduler.run_create(version, reuse=False)
    step = run.steps.get()
    claimed = scheduler.step_claim(step.pk, worker_name)
    assert claimed is not None
    return claimed


def queued(version: Any) -> PipelineRun:
    return scheduler.run_create(version, reuse=False)


# --- the workers page and API ---------------------------------------------------------------


def test_the_workers_page_shows_who_is_alive_what_each_runs_and_the_queue(
    staff: Any, one_step: Any
) -> None:
    worker("gpu-box:11")
    worker("old-box:7", seen_s_ago=3600, sandbox="off")
    step = running_on(one_step, "gpu-box:11")
    queued(one_step)
    queued(one_step)
    page = Client()
    page.force_login(staff)

    response = page.get("/workers/")

    html = response.content.decode()
    assert response.status_code == 200
    alive_row, gone_row = html.split("gpu-box:11")[1], html.split("old-box:7")[1]
    assert "alive" in alive_row.split("</tr>")[0] and "gone" in gone_row.split("</tr>")[0]
    assert f'href="/w/lab/runs/{step.run_id}/steps/only/"' in alive_row.split("</tr>")[0]
    assert "steps not isolated" in gone_row.split("</tr>")[0]
    assert f"{django_settings.QUEUE_PREFIX}.steps" in html
    assert response.context["queues"][0].queued == 2
    assert response.context["queues"][0].broker is None  # embedded: no broker to ask
    assert [w.name for w in response.context["workers"]] == ["gpu-box:11", "old-box:7"]


def test_the_reaper_forgets_workers_silent_for_a_day_and_keeps_their_steps_blame(
    staff: Any, one_step: Any, settings: Any
) -> None:
    from runs_app import reaper

    settings.STEPWORKS = {**settings.STEPWORKS, "WORKER_FORGET_S": 3600}
    worker("gpu-box:11", seen_s_ago=60)  # gone a minute: still shown, as gone
    worker("old-box:7", seen_s_ago=3601)  # gone over the setting: forgotten
    step = running_on(one_step, "old-box:7")

    counts = reaper.reap()

    assert counts["workers_forgotten"] == 1
    assert list(WorkerHeartbeat.objects.values_list("host", flat=True)) == ["gpu-box"]
    page = Client()
    page.force_login(staff)
    assert [w.name for w in page.get("/workers/").context["workers"]] == ["gpu-box:11"]
    step.refresh_from_db()
    assert step.worker == "old-box:7"  # what it ran still names it


def test_the_workers_api_lists_workers_with_their_steps_and_queue_depths(
    staff: Any, one_step: Any
) -> None:
    worker("gpu-box:11")
    idle = worker("cpu-box:12", seen_s_ago=0.1)
    step = running_on(one_step, "gpu-box:11")
    queued(one_step)

    body = api_client(staff).get("/api/v1/workers/").json()

    assert [w["name"] for w in body["workers"]] == ["gpu-box:11", "cpu-box:12"]
    busy = body["workers"][0]
    assert busy["host"] == "gpu-box" and busy["pid"] == 11 and busy["alive"] is True
    assert busy["sandbox"] == "required" and busy["runtime"] == "r" * 64
    assert busy["steps"] == [
        {
            "id": step.pk,
            "workspace": "lab",
            "run_id": step.run_id,
            "pipeline": "solo",
            "name": "only",
            "attempt": 1,
            "started_at": busy["steps"][0]["started_at"],
        }
    ]
    assert busy["steps"][0]["started_at"] is not None
    assert body["workers"][1]["steps"] == [] and body["workers"][1]["pid"] == idle.pid
    assert body["queues"] == [
        {"queue": steps_queue(), "queued": 1, "broker": None, "broker_error": ""}
    ]
    assert StepRun.objects.get(pk=step.pk).worker == "gpu-box:11"


def _costs(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_the_workers_page_and_api_cost_the_same_for_1_or_50_workers(
    staff: Any, one_step: Any
) -> None:
    page = Client()
    page.force_login(staff)
    api = api_client(staff)
    worker("box:0")
    running_on(one_step, "box:0")
    one = (_costs(page, "/workers/"), _costs(api, "/api/v1/workers/"))

    for i in range(1, 50):
        worker(f"box:{i}", seen_s_ago=i)
        running_on(one_step, f"box:{i}")
    fifty = (_costs(page, "/workers/"), _costs(api, "/api/v1/workers/"))

    assert fifty == one
    assert len(api.get("/api/v1/workers/").json()["workers"]) == 50


def test_a_broker_that_does_not_answer_is_said_so_and_breaks_nothing(
    staff: Any, settings: Any
) -> None:
    settings.BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.STEPWORKS = {**settings.STEPWORKS, "METRICS_TOKEN": TOKEN}
    page = Client()
    page.force_login(staff)

    html = page.get("/workers/")
    body = api_client(staff).get("/api/v1/workers/").json()
    scrape = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert html.status_code == 200 and "no answer" in html.content.decode()
    assert body["queues"][0]["broker"] is None
    assert "ConnectionError" in body["queues"][0]["broker_error"]
    assert scrape.status_code == 200
    assert b"stepworks_broker_queue_depth" not in scrape.content


@pytest.mark.broker
@pytest.mark.skipif(not django_settings.BROKER_URL, reason="needs BROKER_URL (redis:// or amqp://)")
def test_the_brokers_own_depth_is_read_from_the_broker() -> None:
    """Messages put on a queue of the test's own through dramatiq's broker for BROKER_URL
    (Redis or RabbitMQ) are counted by the broker's own reckoning."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker

    url = django_settings.BROKER_URL
    queue = f"stepworks-test-{uuid.uuid4().hex[:12]}.steps"
    broker: Any = (
        RedisBroker(url=url, namespace=django_settings.QUEUE_PREFIX)
        if url.startswith("redis")
        else RabbitmqBroker(url=url)
    )
    try:
        broker.declare_queue(queue)
        for n in range(3):
            broker.enqueue(dramatiq.Message(queue, "noop", (n,), {}, {}))

        assert broker_depth(url, queue) == 3
    finally:
        if isinstance(broker, RedisBroker):
            broker.flush(queue)
        else:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                broker.channel.queue_delete(name)
        broker.close()


# --- the admin ------------------------------------------------------------------------------


def test_the_admins_workers_list_counts_running_steps_and_a_worker_page_lists_them(
    admin_client: Any, one_step: Any
) -> None:
    busy = worker("gpu-box:11")
    worker("cpu-box:12")
    first = running_on(one_step, "gpu-box:11")
    second = running_on(one_step, "gpu-box:11")

    listing = admin_client.get("/admin/runs_app/workerheartbeat/")
    detail = admin_client.get(f"/admin/runs_app/workerheartbeat/{busy.pk}/change/")
    steps = admin_client.get(
        "/admin/runs_app/steprun/", {"status__exact": "running", "worker": "gpu-box:11"}
    )

    rows = {str(w): w.running_count for w in listing.context["cl"].result_list}
    assert rows == {"gpu-box:11": 2, "cpu-box:12": 0}
    assert "status__exact=running&amp;worker=gpu-box%3A11" in listing.content.decode()
    page = detail.content.decode()
    assert f"/admin/runs_app/steprun/{first.pk}/change/" in page
    assert f"/admin/runs_app/steprun/{second.pk}/change/" in page
    assert {s.pk for s in steps.context["cl"].result_list} == {first.pk, second.pk}


def test_the_admins_workers_list_costs_the_same_for_1_or_50_workers(
    admin_client: Any, one_step: Any
) -> None:
    worker("box:0")
    running_on(one_step, "box:0")
    one = _costs(admin_client, "/admin/runs_app/workerheartbeat/")

    for i in range(1, 50):
        worker(f"box:{i}")
        running_on(one_step, f"box:{i}")

    assert _costs(admin_client, "/admin/runs_app/workerheartbeat/") == one


# --- /metrics -------------------------------------------------------------------------------


def scrape(client: Any = None) -> dict[str, Any]:
    """{sample name + labels: value} of one scrape."""
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.fixture
def metrics_on(settings: Any) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "METRICS_TOKEN": TOKEN}


def _finish(step: StepRun, seconds: float, status: str = StepStatus.SUCCEEDED) -> None:
    """Give a step a history (rows only: the figures read them, whoever wrote them)."""
    start = timezone.now() - timedelta(seconds=seconds + 1)
    StepRun.objects.filter(pk=step.pk).update(
        status=status, started_at=start, finished_at=start + timedelta(seconds=seconds)
    )


@pytest.mark.usefixtures("metrics_on")
def test_metrics_report_steps_runs_queues_workers_durations_reuse_and_lease_expiries(
    one_step: Any,
) -> None:
    worker("gpu-box:11")
    worker("old-box:7", seen_s_ago=3600)
    running = running_on(one_step, "gpu-box:11")
    waiting = queued(one_step)
    done = [queued(one_step).steps.get() for _ in range(4)]
    for step, seconds in zip(done[:3], (0.2, 3.0, 45.0), strict=True):
        _finish(step, seconds)
    _finish(done[3], 1.0, StepStatus.REUSED)
    for reason in (FailureReason.WORKER_LOST, FailureReason.WORKER_LOST, "worker_lost_repeatedly"):
        Event.objects.create(run=running.run, step=running, new_status="queued", reason=reason)
    Event.objects.create(run=running.run, new_status="running", reason="")

    got = scrape()

    assert got["stepworks_steps{status=running}"] == 1
    assert got["stepworks_steps{status=queued}"] == 1
    assert got["stepworks_steps{status=pending}"] == 0
    assert got["stepworks_runs{status=running}"] + got["stepworks_runs{status=pending}"] == 2
    assert got[f"stepworks_queue_depth{{queue={steps_queue()}}}"] == 1
    assert got["stepworks_workers_alive{}"] == 1
    assert got["stepworks_lease_expiries_total{}"] == 3
    assert got["stepworks_recent_steps{status=succeeded}"] == 3
    assert got["stepworks_recent_steps{status=reused}"] == 1
    assert got["stepworks_reuse_ratio{}"] == pytest.approx(1 / 4)
    assert got["stepworks_step_duration_seconds_count{}"] == 3
    assert got["stepworks_step_duration_seconds_sum{}"] == pytest.approx(48.2, abs=0.01)
    assert got["stepworks_step_duration_seconds_bucket{le=0.25}"] == 1
    assert got["stepworks_step_duration_seconds_bucket{le=5.0}"] == 2
    assert got["stepworks_step_duration_seconds_bucket{le=+Inf}"] == 3
    assert (
        got["stepworks_recent_runs{status=pending}"] + got["stepworks_recent_runs{status=running}"]
        == PipelineRun.objects.count()
    )
    assert waiting.steps.get().status == StepStatus.QUEUED  # a scrape writes nothing


@pytest.mark.usefixtures("metrics_on")
def test_a_scrape_of_an_empty_install_has_every_metric_and_no_reuse_ratio_yet(world: Any) -> None:
    got = scrape()

    assert got["stepworks_steps{status=running}"] == 0
    assert got["stepworks_workers_alive{}"] == 0
    assert got["stepworks_lease_expiries_total{}"] == 0
    assert math.isnan(got["stepworks_reuse_ratio{}"])
    assert got["stepworks_step_duration_seconds_count{}"] == 0


@pytest.mark.usefixtures("metrics_on")
def test_a_scrape_costs_the_same_few_queries_however_much_there_is(one_step: Any) -> None:
    worker("box:0")
    running_on(one_step, "box:0")
    one = _costs(_Scraper(), "/metrics")

    for i in range(1, 50):
        worker(f"box:{i}")
        step = running_on(one_step, f"box:{i}")
        Event.objects.create(run=step.run, step=step, new_status="queued", reason="worker_lost")
        _finish(queued(one_step).steps.get(), 1.0)

    assert _costs(_Scraper(), "/metrics") == one
    # In-flight steps and runs, the recent steps and runs, live workers, lease expiries,
    # the queue: seven statements, each bounded (an index or a LIMIT).
    assert one == 7


class _Scraper(Client):
    def get(self, path: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().get(path, *args, HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **kwargs)


@pytest.mark.usefixtures("metrics_on")
def test_the_recent_window_is_a_setting(settings: Any, one_step: Any) -> None:
    for seconds in (1.0, 2.0, 3.0):
        _finish(queued(one_step).steps.get(), seconds)
    settings.STEPWORKS = {**settings.STEPWORKS, "METRICS_WINDOW": 2}

    got = scrape()

    assert got["stepworks_recent_steps{status=succeeded}"] == 2
    assert got["stepworks_step_duration_seconds_sum{}"] == pytest.approx(5.0, abs=0.01)
