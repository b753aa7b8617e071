"""The run long-poll: `GET .../runs/<id>/?wait=S&after_event=N` answers at the run's next
change, at once for a finished run, after S seconds otherwise; the client waits with it.
On PostgreSQL a change in another process wakes the poll by NOTIFY."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipelines_app import services
from runs_app import wakeups
from runs_app.models import Event, PipelineRun
from stepworks.client import Client
from tests import factories
from tests.helpers import api_token, wait_until
from tests.test_api_support import api_client, error_of, small_pipeline, wait_run

API = "/api/v1/workspaces/lab"

HELD = """\
import time
from pathlib import Path

def hold(ctx, *, flag: str = ""):
    deadline = time.monotonic() + 30
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {}
"""

live = pytest.mark.django_db(transaction=True)


def held_pipeline(world: Any, flag: Any) -> None:
    services.module_version_create(world.workspace, "hold", {"h.py": HELD}, "h.py:hold")
    spec = f"steps:\n  hold: {{module: hold@latest, params: {{flag: '{flag}'}}}}\n"
    services.pipeline_version_create(world.workspace, "held", spec, "first")


@live
def test_each_long_poll_is_answered_by_a_change_until_the_run_ends(
    world, embedded_workers, tmp_path
):
    flag = tmp_path / "go"
    held_pipeline(world, flag)
    client = api_client(world.editor)
    run = client.post(f"{API}/runs/create/", {"pipeline": "held"}, format="json").json()
    url = f"{API}/runs/{run['id']}/"

    reads = [client.get(url).json()]
    while reads[-1]["status"] not in ("succeeded", "failed", "canceled") and len(reads) < 20:
        if reads[-1]["steps"][0]["status"] == "running":
            flag.touch()  # the step ends only once a poll has seen it running
        answer = client.get(url, {"wait": 25, "after_event": reads[-1]["last_event"]})
        assert answer.status_code == 200
        reads.append(answer.json())

    events = Event.objects.filter(run_id=run["id"]).count()
    assert reads[-1]["status"] == "succeeded"
    assert reads[-1]["last_event"] == Event.objects.filter(run_id=run["id"]).latest("pk").pk
    # Every answer brought something new: none was a timeout, none a repeat.
    seen = [r["last_event"] for r in reads]
    assert seen == sorted(set(seen)) and len(reads) <= events + 1


@live
def test_the_client_waits_by_long_poll_and_sees_only_changes(
    world, live_server, embedded_workers, tmp_path
):
    flag = tmp_path / "go"
    held_pipeline(world, flag)
    states: list[dict[str, Any]] = []

    def on_update(state: dict[str, Any]) -> None:
        states.append(state)
        if state["steps"][0]["status"] == "running":
            flag.touch()

    with Client(live_server.url, api_token(world.owner), "lab") as client:
        run = client.run("held")
        final = client.wait(run, timeout=60, on_update=on_update)

    assert final["status"] == "succeeded"
    # A poll every 0.5 s would read the held step running many times over; each long-poll
    # read comes with a newer event.
    seen = [s["last_event"] for s in states]
    assert seen == sorted(set(seen))


@live
def test_a_finished_run_answers_at_once_for_the_queries_of_a_plain_read(
    world, embedded_workers, django_assert_num_queries
):
    small_pipeline(world.workspace, world.owner)
    client = api_client(world.viewer)
    run = (
        api_client(world.editor)
        .post(f"{API}/runs/create/", {"pipeline": "small"}, format="json")
        .json()
    )
    wait_run(run["id"])
    url = f"{API}/runs/{run['id']}/"
    with CaptureQueriesContext(connection) as plain_queries:
        plain = client.get(url).json()
    with django_assert_num_queries(len(plain_queries)):
        waited = client.get(url, {"wait": 25, "after_event": 0}).json()

    assert waited == plain


def test_a_quiet_run_answers_after_the_wait_unchanged(world):
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    run = PipelineRun.objects.create(
        workspace=world.workspace, pipeline_version=version, created_by=world.owner
    )
    Event.objects.create(run=run, new_status="pending")
    client = api_client(world.viewer)
    before = client.get(f"{API}/runs/{run.pk}/").json()

    after = client.get(f"{API}/runs/{run.pk}/", {"wait": 1, "after_event": before["last_event"]})

    assert after.status_code == 200
    assert after.json() == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"wait": 5}, "after_event"),
        ({"wait": 26, "after_event": 1}, "wait"),
        ({"wait": -1, "after_event": 1}, "wait"),
        ({"wait": "soon", "after_event": 1}, "wait"),
        ({"wait": 1, "after_event": -1}, "after_event"),
        ({"wait": 1, "after_event": 2**70}, "after_event"),
    ],
)
def test_a_bad_wait_is_a_400_naming_the_field(world, query, field):
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    run = PipelineRun.objects.create(
        workspace=world.workspace, pipeline_version=version, created_by=world.owner
    )
    response = api_client(world.viewer).get(f"{API}/runs/{run.pk}/", query)

    assert response.status_code == 400
    assert field in error_of(response)["fields"]


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's"
)


@postgres_only
@live
def test_a_notify_from_another_process_wakes_the_poll(world, monkeypatch):
    # No worker threads here and a minute between re-reads: only the NOTIFY can wake it.
    monkeypatch.setattr(wakeups, "FALLBACK_POLL_S", 60.0)
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    run = PipelineRun.objects.create(
        workspace=world.workspace, pipeline_version=version, created_by=world.owner
    )
    answered: list[bool] = []

    def poll() -> None:
        try:
            newer = Event.objects.filter(run_id=run.pk)
            answered.append(wakeups.wait(run.pk, newer.exists, timeout=30))
        finally:
            connection.close()

    waiter = threading.Thread(target=poll)
    waiter.start()
    assert wait_until(wakeups._listening.is_set, timeout=10)
    Event.objects.create(run=run, new_status="running")  # "another process" commits ...
    with connection.cursor() as cursor:  # ... and notifies on its own connection
        cursor.execute("SELECT pg_notify(%s, %s)", [wakeups.CHANNEL, str(run.pk)])
    waiter.join(timeout=20)

    assert answered == [True]


@postgres_only
@live
def test_a_change_is_notified_to_other_processes(world):
    import psycopg

    listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        listener.execute(f"LISTEN {wakeups.CHANNEL}")
        wakeups.changed([41, 42])
        got = set()
        for notice in listener.notifies(timeout=10, stop_after=2):
            got.add(notice.payload)
    finally:
        listener.close()

    assert got == {"41", "42"}
