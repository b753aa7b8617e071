"""The run-time API: runs, steps, logs, metrics, artifacts, the run zip, lineage, compare.

Runs execute for real (embedded workers, zygote children) where an endpoint reads what a
run produced; the validation, role and query-count tests build rows directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pipelines_app import services
from pipelines_app.models import PipelineVersion
from runs_app import scheduler
from runs_app.models import (
    Event,
    Metric,
    PipelineRun,
    RunStatus,
    StepLog,
    StepRun,
    StepStatus,
)
from stepworks.context import MetricPoint
from tests import factories
from tests.helpers import wait_until
from tests.test_api_support import api_client, error_of, small_pipeline, wait_run

API = "/api/v1/workspaces/lab"


def start(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/runs/create/", {"pipeline": "small", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def finished(client: Any, **body: Any) -> dict[str, Any]:
    run = start(client, **body)
    wait_run(run["id"])
    return client.get(f"{API}/runs/{run['id']}/").json()


# --- with workers --------------------------------------------------------------------------

live = pytest.mark.django_db(transaction=True)


@live
def test_a_started_run_executes_and_its_detail_shows_steps_and_outputs(world, embedded_workers):
    small_pipeline(world.workspace, world.owner)
    client = api_client(world.editor)

    started = start(client, params={"train.scale": 3})
    run = finished(client, params={"train.scale": 3})

    assert started["status"] == "running"
    assert [s["name"] for s in started["steps"]] == ["prep", "train"]
    assert run["status"] == "succeeded"
    assert run["params"] == {"train.scale": 3}
    assert run["created_by"] == "eddie"
    train = run["steps"][1]
    assert train["params"] == {"scale": 3.0}
    assert {o["name"] for o in train["outputs"]} == {"model", "report"}
    model = next(o for o in train["outputs"] if o["name"] == "model")
    assert model["artifact"]["media_type"] == "application/json"
    assert len(model["artifact"]["sha256"]) == 64


@live
def test_reuse_false_runs_every_step_again_and_rerun_reuses_everything(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    first = finished(client)

    forced = finished(client, reuse=False)
    rerun = client.post(f"{API}/runs/{first['id']}/rerun/", {}, format="json").json()
    wait_run(rerun["id"])
    rerun = client.get(f"{API}/runs/{rerun['id']}/").json()

    assert [s["status"] for s in forced["steps"]] == ["succeeded", "succeeded"]
    assert forced["reuse"] is False
    assert [s["status"] for s in rerun["steps"]] == ["reused", "reused"]
    assert rerun["rerun_of"] == first["id"]
    assert rerun["steps"][0]["reused_from"]["step"] == "prep"


@live
def test_rerun_from_a_step_runs_it_and_its_downstream_again(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    first = finished(client)

    response = client.post(
        f"{API}/runs/{first['id']}/rerun/", {"from_step": "train"}, format="json"
    )
    wait_run(response.json()["id"])
    run = client.get(f"{API}/runs/{response.json()['id']}/").json()

    assert response.status_code == 201
    assert [s["status"] for s in run["steps"]] == ["reused", "succeeded"]


@live
def test_cloning_a_run_with_other_params_reuses_what_did_not_change(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    first = finished(client)

    response = client.post(
        f"{API}/runs/{first['id']}/clone/",
        {"changes": {"train": {"params": {"scale": 4.0}}}},
        format="json",
    )
    wait_run(response.json()["id"])
    run = client.get(f"{API}/runs/{response.json()['id']}/").json()

    assert response.status_code == 201
    assert (run["version"], run["cloned_from"]) == (2, first["id"])
    assert [s["status"] for s in run["steps"]] == ["reused", "succeeded"]
    assert PipelineVersion.objects.get(pipeline__name="small", number=2).parent.number == 1


@live
def test_step_detail_log_and_metrics(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.viewer)
    run = finished(api_client(world.editor))
    base = f"{API}/runs/{run['id']}/steps/train"

    detail = client.get(f"{base}/").json()
    log = client.get(f"{base}/log/?offset=0").json()
    tail = client.get(f"{base}/log/?offset={log['next_offset']}").json()
    metrics = client.get(f"{base}/metrics/").json()
    loss = client.get(f"{base}/metrics/?name=loss").json()

    assert (detail["run"], detail["status"], detail["attempt"]) == (run["id"], "succeeded", 1)
    assert detail["inputs"][0]["binding"] == "prep.data"
    assert (
        detail["inputs"][0]["artifact"]["sha256"]
        == run["steps"][0]["outputs"][0]["artifact"]["sha256"]
    )
    assert set(detail["key_parts"]) == {"code", "params", "inputs", "runtime"}
    assert detail["reuse"]["reused"] is False
    assert "trained with 2.0" in log["text"]
    assert log["next_offset"] == len(log["text"].encode())
    assert (tail["text"], tail["offset"], tail["complete"]) == ("", log["next_offset"], True)
    assert metrics["count"] == 4
    assert [(m["index"], m["value"]) for m in loss["results"]] == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
    ]


LIVE_TRAIN = """\
import time
from pathlib import Path

def train(ctx, *, flag: str = ""):
    for epoch in range(3):
        ctx.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
    deadline = time.monotonic() + 30
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.log_metric("loss", 0.1, step=3)
    return {}
"""


@live
def test_metrics_reach_the_api_while_the_step_runs(world, embedded_workers, tmp_path):
    # The step holds until the test has seen its first points through the API.
    flag = tmp_path / "seen"
    services.module_version_create(world.workspace, "slow", {"t.py": LIVE_TRAIN}, "t.py:train")
    spec = f"steps:\n  train: {{module: slow@latest, params: {{flag: '{flag}'}}}}\n"
    services.pipeline_version_create(world.workspace, "live", spec, "first")
    client = api_client(world.viewer)
    run = start(api_client(world.editor), pipeline="live")
    url = f"{API}/runs/{run['id']}/steps/train/metrics/"

    mid_run = wait_until(lambda: client.get(url).json()["count"] == 3, timeout=30)
    step_then = client.get(f"{API}/runs/{run['id']}/steps/train/").json()["status"]
    flag.touch()
    wait_run(run["id"])
    final = client.get(url).json()

    assert mid_run and step_then == "running"
    # The result's list replaced the live points: each once, the last one included.
    assert [(m["index"], m["value"]) for m in final["results"]] == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
        (3, 0.1),
    ]


def test_live_points_are_fenced_by_attempt_and_a_retry_starts_afresh(world):
    small_pipeline(world.workspace)
    run = scheduler.run_create(PipelineVersion.objects.get())
    prep = StepRun.objects.get(run=run, name="prep")
    first = scheduler.step_claim(prep.pk, "w1")
    assert first is not None

    stored = scheduler.step_metrics_append(prep.pk, 1, [MetricPoint("loss", 1.0, 0)])
    stale = scheduler.step_metrics_append(prep.pk, 2, [MetricPoint("loss", 9.0, 0)])
    StepRun.objects.filter(pk=prep.pk).update(status=StepStatus.QUEUED)  # its worker was lost
    kept_until_retry = Metric.objects.filter(step=prep).count()
    retry = scheduler.step_claim(prep.pk, "w2")
    late = scheduler.step_metrics_append(prep.pk, 1, [MetricPoint("loss", 8.0, 1)])

    assert (stored, stale, late) == (True, False, False)
    assert kept_until_retry == 1
    assert retry is not None and retry.attempt == 2
    assert not Metric.objects.filter(step=prep).exists()


@live
def test_an_artifact_downloads_with_etag_and_ranges(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.viewer)
    run = finished(api_client(world.editor))
    report = next(o for o in run["steps"][1]["outputs"] if o["name"] == "report")
    sha = report["artifact"]["sha256"]
    url = f"{API}/artifacts/{sha}/download/"

    full = client.get(url)
    body = b"".join(full.streaming_content)
    cached = client.get(url, HTTP_IF_NONE_MATCH=f'"{sha}"')
    part = client.get(url, HTTP_RANGE="bytes=2-4")
    refused = client.get(url, HTTP_RANGE="bytes=999-")
    meta = client.get(f"{API}/artifacts/{sha}/").json()

    assert full.status_code == 200
    assert hashlib.sha256(body).hexdigest() == sha
    assert body == b"scale 2.0"
    assert full["ETag"] == f'"{sha}"'
    assert full["Accept-Ranges"] == "bytes"
    assert cached.status_code == 304
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 2-4/{len(body)}"
    assert b"".join(part.streaming_content) == body[2:5]
    assert refused.status_code == 416
    assert refused["Content-Range"] == f"bytes */{len(body)}"
    assert meta["producers"] == [{"run": run["id"], "step": "train", "name": "report"}]
    assert meta["size"] == len(body)


@live
def test_the_run_zip_has_a_manifest_whose_hashes_match_its_files(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.viewer)
    run = finished(api_client(world.editor))

    response = client.get(f"{API}/runs/{run['id']}/outputs.zip")
    one_step = client.get(f"{API}/runs/{run['id']}/outputs.zip?step=train")
    unknown = client.get(f"{API}/runs/{run['id']}/outputs.zip?step=nope")

    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    manifest = json.loads(archive.read("manifest.json"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert manifest["run"] == run["id"]
    assert {(f["step"], f["output"]) for f in manifest["files"]} == {
        ("prep", "data"),
        ("train", "model"),
        ("train", "report"),
    }
    for row in manifest["files"]:
        data = archive.read(row["path"])
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (row["sha256"], row["size"])
    assert manifest["lineage"]["run"] == run["id"]
    only = zipfile.ZipFile(io.BytesIO(b"".join(one_step.streaming_content)))
    assert {json.loads(only.read("manifest.json"))["files"][0]["step"]} == {"train"}
    assert unknown.status_code == 400
    assert "step" in error_of(unknown)["fields"]


@live
def test_lineage_events_and_compare(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    a = finished(client)
    b = finished(client, params={"train.scale": 5})

    lineage = client.get(f"{API}/runs/{b['id']}/lineage/").json()
    events = client.get(f"{API}/runs/{a['id']}/events/").json()
    train_events = client.get(f"{API}/runs/{a['id']}/events/?step=train").json()
    diff = client.get(f"{API}/runs/compare/?a={a['id']}&b={b['id']}").json()

    kinds = {n["kind"] for n in lineage["nodes"]}
    assert {"run", "step", "artifact"} <= kinds
    assert any(e["kind"] == "reused_from" for e in lineage["edges"])
    assert events["results"][0]["new_status"] == "running"
    assert events["results"][-1]["new_status"] == "succeeded"
    assert {e["step"] for e in train_events["results"]} == {"train"}
    assert (diff["a"]["id"], diff["b"]["id"]) == (a["id"], b["id"])
    assert [r["key"] for r in diff["params"] if not r["same"]] == ["train.scale"]
    total = next(r for r in diff["metrics"] if r["key"] == "train.total")
    assert (total["a"], total["b"], total["delta"]) == (6.0, 15.0, 9.0)


@live
def test_cancel_stops_a_run_and_a_finished_run_is_a_409(world, embedded_workers):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    done = finished(client)
    embedded_workers.stop()  # nothing claims the next run's steps
    pending = start(client, reuse=False)

    canceled = client.post(f"{API}/runs/{pending['id']}/cancel/")
    again = client.post(f"{API}/runs/{done['id']}/cancel/")

    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert {s["status"] for s in canceled.json()["steps"]} == {"canceled"}
    assert again.status_code == 409
    assert error_of(again)["code"] == "run_finished"
    assert PipelineRun.objects.get(pk=done["id"]).status == RunStatus.SUCCEEDED


# --- validation, roles, 404s ---------------------------------------------------------------

db = pytest.mark.django_db


@db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pipeline": "nope"}, "pipeline"),
        ({"pipeline": "small@7"}, "pipeline"),
        ({"pipeline": "Bad Name"}, "pipeline"),
        ({"pipeline": "small", "params": {"train.nope": 1}}, "params.train.nope"),
        ({"pipeline": "small", "params": {"train.scale": "x"}}, "params.train.scale"),
        ({"pipeline": "small", "params": {"nodot": 1}}, "params.nodot"),
        ({"pipeline": "small", "params": ["x"]}, "params"),
        ({"pipeline": "small", "reuse": "maybe"}, "reuse"),
        ({}, "pipeline"),
    ],
)
def test_starting_a_run_names_the_field_that_is_wrong(world, body, field):
    small_pipeline(world.workspace)

    response = api_client(world.editor).post(f"{API}/runs/create/", body, format="json")

    assert response.status_code == 400
    assert field in error_of(response)["fields"]
    assert not PipelineRun.objects.exists()


@db
def test_roles_and_workspaces_for_run_writes(world):
    small_pipeline(world.workspace)
    body = {"pipeline": "small"}

    viewer = api_client(world.viewer).post(f"{API}/runs/create/", body, format="json")
    stranger = api_client(world.stranger).post(f"{API}/runs/create/", body, format="json")
    run = scheduler.run_create(PipelineVersion.objects.get())
    viewer_cancel = api_client(world.viewer).post(f"{API}/runs/{run.pk}/cancel/")
    stranger_read = api_client(world.stranger).get(f"{API}/runs/{run.pk}/")
    elsewhere = api_client(world.stranger).get(f"/api/v1/workspaces/elsewhere/runs/{run.pk}/")

    assert (viewer.status_code, stranger.status_code) == (403, 404)
    assert viewer_cancel.status_code == 403
    assert (stranger_read.status_code, elsewhere.status_code) == (404, 404)
    assert PipelineRun.objects.count() == 1
    assert not PipelineRun.objects.get().cancel_requested


@db
def test_unknown_runs_steps_and_artifacts_are_404s(world):
    small_pipeline(world.workspace)
    run = scheduler.run_create(PipelineVersion.objects.get())
    client = api_client(world.owner)

    for url in (
        f"{API}/runs/999999/",
        f"{API}/runs/{run.pk}/steps/nope/",
        f"{API}/runs/{run.pk}/steps/nope/log/",
        f"{API}/runs/999999/outputs.zip",
        f"{API}/artifacts/{'a' * 64}/",
        f"{API}/artifacts/not-a-digest/download/",
        f"{API}/runs/compare/?a={run.pk}&b=999999",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"


@db
def test_rerun_from_an_unknown_step_and_compare_without_ids_are_400s(world):
    small_pipeline(world.workspace)
    run = scheduler.run_create(PipelineVersion.objects.get())
    client = api_client(world.editor)

    rerun = client.post(f"{API}/runs/{run.pk}/rerun/", {"from_step": "nope"}, format="json")
    compare = client.get(f"{API}/runs/compare/?a=x")
    log = client.get(f"{API}/runs/{run.pk}/steps/prep/log/?offset=-1")

    assert rerun.status_code == 400
    assert "from_step" in error_of(rerun)["fields"]
    assert compare.status_code == 400
    assert set(error_of(compare)["fields"]) == {"a", "b"}
    assert log.status_code == 400
    assert PipelineRun.objects.count() == 1


@db
@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("status=nope", 400),
        ("version=1.5", 400),
        ("sweep=99999999999999999999999", 400),
        ("created_after=yesterday", 400),
        ("created_after=0001-01-01T00:00:00%2B14:00", 400),
        ("created_before=6178-04-12T03:56:12-17:44", 200),  # an offset Postgres refuses
        ("limit=99999999999999999999&offset=99999999999999999999", 200),
    ],
)
def test_odd_run_filters_are_400s_or_answers_never_500s(world, query, status):
    response = api_client(world.viewer).get(f"{API}/runs/?{query}")

    assert response.status_code == status
    if status == 400:
        assert error_of(response)["fields"]


@db
def test_the_log_of_a_step_that_never_ran_is_empty_and_tails_by_offset(world):
    small_pipeline(world.workspace)
    run = scheduler.run_create(PipelineVersion.objects.get())
    step = StepRun.objects.get(run=run, name="prep")
    StepRun.objects.filter(pk=step.pk).update(attempt=1)
    client = api_client(world.viewer)
    url = f"{API}/runs/{run.pk}/steps/prep/log/"

    empty = client.get(url).json()
    StepLog.objects.create(step=step, attempt=1, offset=0, text="héllo\n")
    first = client.get(f"{url}?offset=0").json()
    StepLog.objects.create(step=step, attempt=1, offset=first["next_offset"], text="more\n")
    second = client.get(f"{url}?offset={first['next_offset']}").json()

    assert (empty["text"], empty["complete"]) == ("", False)
    assert (first["text"], first["next_offset"]) == ("héllo\n", 7)
    assert (second["text"], second["offset"], second["next_offset"]) == ("more\n", 7, 12)
    assert second["attempts"] == [1]


# --- query counts --------------------------------------------------------------------------


def queries(client: Any, url: str) -> tuple[int, dict[str, Any]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


def add_runs(version: PipelineVersion, user: Any, n: int) -> None:
    """n finished runs with one step each, as rows."""
    mv = version.steps.get().module_version
    for _ in range(n):
        run = PipelineRun.objects.create(
            workspace=version.pipeline.workspace,
            pipeline_version=version,
            status=RunStatus.SUCCEEDED,
            created_by=user,
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
        StepRun.objects.create(
            workspace=run.workspace,
            run=run,
            name="a",
            position=0,
            module_version=mv,
            status=StepStatus.SUCCEEDED,
        )


@db
def test_the_runs_list_costs_the_same_for_1_and_50_and_filters(world, django_assert_num_queries):
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    client = api_client(world.viewer)
    url = f"{API}/runs/?limit=100&status=succeeded&pipeline=p&version=1&created_by=olivia"

    add_runs(version, world.owner, 1)
    one, _ = queries(client, url)
    add_runs(version, world.owner, 49)
    with django_assert_num_queries(one):
        body = client.get(url).json()

    assert body["count"] == 50
    assert body["results"][0]["step_counts"] == {"succeeded": 1}
    assert client.get(f"{API}/runs/?created_by=vera").json()["count"] == 0
    assert client.get(f"{API}/runs/?status=failed&status=succeeded").json()["count"] == 50


def add_measured_runs(version: PipelineVersion, user: Any, n: int) -> list[PipelineRun]:
    """n finished one-step runs whose step logged `accuracy` 0.2 then 0.9 (final 0.9), each
    followed by a run whose step reused it (its accuracy is its source's), as rows."""
    add_runs(version, user, 2 * n)
    runs = list(PipelineRun.objects.filter(pipeline_version=version).order_by("-pk")[: 2 * n])
    for measured, reusing in zip(runs[1::2], runs[0::2], strict=True):
        step = measured.steps.get()
        Metric.objects.create(step=step, name="accuracy", value=0.2, index=0)
        Metric.objects.create(step=step, name="accuracy", value=0.9, index=1)
        reusing.steps.update(status=StepStatus.REUSED, reused_from=step)
    return runs


# the token with its user, workspace with role, count, one page of runs with their pipeline
# versions, their tags, their steps counted by status: however many runs match.
RUNS_FILTERED_BY_METRIC_QUERIES = 6


@db
@pytest.mark.parametrize("n", [1, 25])
def test_the_runs_list_filtered_by_a_metric_costs_a_pinned_number_of_queries(
    world, django_assert_num_queries, n
):
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    runs = add_measured_runs(version, world.owner, n)
    add_runs(version, world.owner, 3)  # no metric: never listed
    client = api_client(world.viewer)
    url = f"{API}/runs/?limit=100&filter=metrics.accuracy > 0.5&sort=-metrics.accuracy"

    with django_assert_num_queries(RUNS_FILTERED_BY_METRIC_QUERIES):
        body = client.get(url).json()

    assert body["count"] == 2 * n
    assert sorted(r["id"] for r in body["results"]) == sorted(r.pk for r in runs)
    # The final value decides: 0.2 was logged first and is no match on its own.
    assert client.get(f"{API}/runs/?filter=metrics.accuracy < 0.5").json()["count"] == 0


@db
def test_event_and_metric_lists_cost_the_same_for_1_and_50(world, django_assert_num_queries):
    mv = factories.module_version(world.workspace, "m")
    version = factories.pipeline_version(world.workspace, "p", {"a": {"module_version": mv}})
    add_runs(version, world.owner, 1)
    run = PipelineRun.objects.get()
    step = run.steps.get()
    client = api_client(world.viewer)
    events_url = f"{API}/runs/{run.pk}/events/?limit=100"
    metrics_url = f"{API}/runs/{run.pk}/steps/a/metrics/?limit=100"

    Event.objects.create(run=run, step=step, new_status="running")
    Metric.objects.create(step=step, name="loss", value=1.0, index=0)
    one_events, one_metrics = queries(client, events_url)[0], queries(client, metrics_url)[0]
    for i in range(49):
        Event.objects.create(run=run, step=step, new_status="running")
        Metric.objects.create(step=step, name="loss", value=1.0, index=i + 1)
    with django_assert_num_queries(one_events):
        events = client.get(events_url).json()
    with django_assert_num_queries(one_metrics):
        metrics = client.get(metrics_url).json()

    assert (events["count"], len(events["results"])) == (50, 50)
    assert (metrics["count"], len(metrics["results"])) == (50, 50)
