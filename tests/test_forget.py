"""Forget a cached result (issue 12): for a step run, a whole run or a module version, in
the browser, the API, the CLI and the admin. Later runs recompute; history stays; each
forgotten step gets an event saying who forgot it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from runs_app import scheduler
from runs_app.models import Event, StepStatus
from runs_app.selectors import reuse_explanation
from tests.helpers import wait_runs
from tests.test_api_support import api_client
from tests.test_engine import bodies, steps_of, three_step_pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def _run(version: Any) -> Any:
    run = scheduler.run_create(version)
    wait_runs(run)
    return run


def test_forgetting_one_step_recomputes_it_and_says_why(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = _run(version)
    page = Client()
    page.force_login(world.editor)

    forgot = page.post(f"/w/lab/runs/{first.pk}/steps/c/forget/", follow=True)
    second = _run(version)

    assert "Forgot 1 cached result(s) of step c" in forgot.content.decode()
    assert bodies(marker) == ["a 0", "b 0", "c 0", "c 0"]
    steps = steps_of(second)
    assert [steps[n].status for n in "abc"] == [
        StepStatus.REUSED,
        StepStatus.REUSED,
        StepStatus.SUCCEEDED,
    ]
    assert (
        f"cached result of run {first.pk} was forgotten" in reuse_explanation(steps["c"])["summary"]
    )
    event = Event.objects.get(reason="forgotten")
    assert event.step_id == steps_of(first)["c"].pk and "by eddie" in event.message
    assert steps_of(first)["c"].outputs.exists()  # history and outputs stay


def test_forgetting_a_reused_step_forgets_its_source(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    _run(version)
    second = _run(version)  # all reused

    response = api_client(world.editor).post(
        f"/api/v1/workspaces/lab/runs/{second.pk}/steps/b/forget/"
    )
    _run(version)

    assert response.status_code == 200 and response.json() == {"forgotten": 1}
    assert bodies(marker) == ["a 0", "b 0", "c 0", "b 0"]


def test_forgetting_a_run_or_a_module_version_through_the_api(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = _run(version)
    api = api_client(world.editor)

    whole = api.post(f"/api/v1/workspaces/lab/runs/{first.pk}/forget/")
    again = api.post(f"/api/v1/workspaces/lab/runs/{first.pk}/forget/")
    _run(version)
    module = api.post("/api/v1/workspaces/lab/modules/a/versions/1/forget/")
    _run(version)

    assert whole.json() == {"forgotten": 3}
    assert again.json() == {"forgotten": 0}  # nothing left to forget
    assert module.json() == {"forgotten": 1}
    assert bodies(marker) == ["a 0", "b 0", "c 0", "a 0", "b 0", "c 0", "a 0"]
    viewer = api_client(world.viewer).post(f"/api/v1/workspaces/lab/runs/{first.pk}/forget/")
    assert viewer.status_code == 403


def test_the_admin_forgets_selected_runs(world: Any, embedded_workers: Any, tmp_path: Path) -> None:
    from django.contrib.auth import get_user_model

    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = _run(version)
    get_user_model().objects.create_superuser("root", password="pw-root-1")
    admin = Client()
    admin.force_login(get_user_model().objects.get(username="root"))

    response = admin.post(
        "/admin/runs_app/pipelinerun/",
        {"action": "forget_runs", "_selected_action": [first.pk]},
        follow=True,
    )

    assert "Forgot 3 cached result(s)" in response.content.decode()
    _run(version)
    assert bodies(marker) == ["a 0", "b 0", "c 0", "a 0", "b 0", "c 0"]


def test_a_reused_step_carries_its_source_s_log_and_metrics(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    first = _run(version)
    second = _run(version)  # every step reused
    source = steps_of(first)["c"]
    from runs_app.models import Metric

    Metric.objects.create(step=source, name="accuracy", value=0.9)
    api = api_client(world.viewer)

    log = api.get(f"/api/v1/workspaces/lab/runs/{second.pk}/steps/c/log/").json()
    metrics = api.get(f"/api/v1/workspaces/lab/runs/{second.pk}/steps/c/metrics/").json()
    page = Client()
    page.force_login(world.viewer)
    html = page.get(f"/w/lab/runs/{second.pk}/steps/c/").content.decode()

    assert log["from_run"] == first.pk and log["complete"] is True
    own = api.get(f"/api/v1/workspaces/lab/runs/{first.pk}/steps/c/log/").json()
    assert log["text"] == own["text"] and own["from_run"] is None
    assert [(m["name"], m["value"]) for m in metrics["results"]] == [("accuracy", 0.9)]
    assert f'from <a href="/w/lab/runs/{first.pk}/steps/c/">run {first.pk}</a> (reused)' in html
