"""Deleting, archiving and pinning runs, and the garbage collector (issue 12): a deleted run
takes its rows with it and releases its artifacts; the collector deletes what nothing
refers to once its grace has passed, never what a run holds or is about to use; reuse
never points at collected bytes, even while runs start, reuse and get deleted around it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.test import Client

from artifacts.models import Artifact, ArtifactMember
from artifacts.store import artifact_storage, artifacts_missing
from runs_app import scheduler
from runs_app.gc import collect
from runs_app.models import Event, PipelineRun, RunStatus, StepOutput, StepRun, StepStatus
from runs_app.selectors import reuse_explanation
from tests.helpers import wait_runs
from tests.test_api_support import api_client
from tests.test_engine import steps_of, three_step_pipeline

pytestmark = pytest.mark.django_db(transaction=True)
RUNS = "/api/v1/workspaces/lab/runs"


def _run(version: Any, **overrides: Any) -> PipelineRun:
    run = scheduler.run_create(version, param_overrides=overrides)
    wait_runs(run)
    assert run.status == RunStatus.SUCCEEDED
    return run


def _stored(artifact: Artifact) -> bool:
    return artifact_storage().exists(artifact.storage_name)


def test_deleting_a_run_takes_its_rows_and_the_collector_its_own_bytes(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    first = _run(version)
    other = _run(version, **{"c.v": 1})  # reuses a and b from `first`, its own c
    own = steps_of(first)["c"].outputs.get().artifact  # only `first` holds it
    shared = steps_of(first)["a"].outputs.get().artifact  # `other` holds it too

    deleted = api_client(world.editor).post(f"{RUNS}/delete/", {"runs": [first.pk]}, format="json")

    assert deleted.status_code == 200 and deleted.json() == {"deleted": 1}
    assert not PipelineRun.objects.filter(pk=first.pk).exists()
    assert not StepRun.objects.filter(run_id=first.pk).exists()
    assert not Event.objects.filter(run_id=first.pk).exists()
    reused = steps_of(other)["a"]
    assert reused.status == StepStatus.REUSED and reused.reused_from is None
    assert reuse_explanation(reused)["summary"].startswith("reused from a deleted run")
    assert collect().rows == 0  # within the grace period nothing goes
    done = collect(grace=timedelta(0))
    assert done.rows == 1 and done.names == 1 and done.bytes == own.size
    assert not Artifact.objects.filter(pk=own.pk).exists() and not _stored(own)
    assert Artifact.objects.filter(pk=shared.pk).exists() and _stored(shared)
    # A link to a collected artifact says it is gone (410), to its workspace's members only.
    page = Client()
    page.force_login(world.viewer)
    gone = page.get(f"/w/lab/artifacts/{own.sha256}/")
    api_gone = api_client(world.viewer).get(f"/api/v1/workspaces/lab/artifacts/{own.sha256}/")
    assert gone.status_code == 410 and "was deleted on" in gone.content.decode()
    assert api_gone.status_code == 410 and api_gone.json()["error"]["code"] == "gone"
    assert (
        api_client(world.stranger)
        .get(f"/api/v1/workspaces/lab/artifacts/{own.sha256}/")
        .status_code
        == 404
    )
    # Only succeeded steps are reuse sources: with `first` gone, its steps recompute
    # (the other run's reused copies hold the same bytes, so nothing new is stored).
    again = _run(version)
    assert {s.status for s in steps_of(again).values()} == {StepStatus.SUCCEEDED}
    assert steps_of(again)["a"].outputs.get().artifact_id == shared.pk


def test_a_dry_run_says_what_would_go_and_deletes_nothing(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    run = _run(version)
    api_client(world.editor).post(f"{RUNS}/delete/", {"runs": [run.pk]}, format="json")
    before = Artifact.objects.count()

    would = collect(dry_run=True, grace=timedelta(0))

    assert would.rows == 3 and would.names == 3 and would.bytes > 0
    assert Artifact.objects.count() == before
    assert collect(grace=timedelta(0)).bytes == would.bytes


def test_runs_still_going_or_pinned_are_refused_and_nothing_is_deleted(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    done = _run(version)
    kept = _run(version, **{"c.v": 2})
    api = api_client(world.editor)
    assert api.post(f"{RUNS}/{kept.pk}/pin/", {"pinned": True}, format="json").json()["pinned"]

    refused = api.post(f"{RUNS}/delete/", {"runs": [done.pk, kept.pk]}, format="json")
    elsewhere = api.post(f"{RUNS}/delete/", {"runs": [done.pk, 999_999]}, format="json")

    assert refused.status_code == 409 and refused.json()["error"]["code"] == "run_pinned"
    assert f"{kept.pk}" in refused.json()["error"]["message"]
    assert elsewhere.status_code == 404
    assert PipelineRun.objects.filter(pk__in=[done.pk, kept.pk]).count() == 2
    pending = scheduler.run_create(version, param_overrides={"c.v": 3})
    embedded_workers.stop()  # so that it stays unfinished long enough to be refused
    going = PipelineRun.objects.get(pk=pending.pk)
    if going.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        busy = api.post(f"{RUNS}/delete/", {"runs": [going.pk]}, format="json")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "run_active"


def test_archived_runs_leave_the_list_and_come_back(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    first, second = _run(version), _run(version)
    api = api_client(world.editor)

    archived = api.post(f"{RUNS}/archive/", {"runs": [first.pk]}, format="json")
    listed = [r["id"] for r in api.get(f"{RUNS}/").json()["results"]]
    hidden = [r["id"] for r in api.get(f"{RUNS}/?archived=true").json()["results"]]
    restored = api.post(f"{RUNS}/archive/", {"runs": [first.pk], "archived": False}, format="json")

    assert archived.json() == {"archived": 1} and restored.json() == {"restored": 1}
    assert listed == [second.pk] and hidden == [first.pk]
    assert {r["id"] for r in api.get(f"{RUNS}/").json()["results"]} == {first.pk, second.pk}


def test_the_runs_list_page_archives_and_deletes_the_ticked_runs(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    from django.test import Client

    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    first, second = _run(version), _run(version, **{"c.v": 1})
    page = Client()
    page.force_login(world.editor)

    listed = page.get("/w/lab/runs/").content.decode()
    archived = page.post("/w/lab/runs/bulk/", {"action": "archive", "runs": [first.pk]})
    deleted = page.post("/w/lab/runs/bulk/", {"action": "delete", "runs": [second.pk]}, follow=True)

    assert 'form="bulk"' in listed and archived.status_code == 302
    assert PipelineRun.objects.get(pk=first.pk).archived_at is not None
    assert "Deleted 1 run(s)." in deleted.content.decode()
    assert not PipelineRun.objects.filter(pk=second.pk).exists()
    viewer = Client()
    viewer.force_login(world.viewer)
    assert 'form="bulk"' not in viewer.get("/w/lab/runs/").content.decode()


def test_collection_while_runs_start_reuse_and_are_deleted_never_breaks_a_run(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    """The race: a collector with a 1 s grace runs without pause while runs start, reuse
    what others made and are deleted. No run fails, and afterwards no step that a run
    could reuse lacks its bytes."""
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    stop = threading.Event()
    errors: list[BaseException] = []
    passes = [0]

    def collector() -> None:
        try:
            while not stop.is_set():
                collect(grace=timedelta(seconds=1))
                passes[0] += 1
        except BaseException as error:  # the test reports it
            errors.append(error)
        finally:
            close_old_connections()
            connection.close()

    thread = threading.Thread(target=collector, daemon=True)
    thread.start()
    try:
        finished = []
        for round_ in range(6):
            runs = [
                scheduler.run_create(version, param_overrides={"c.v": round_ % 3}),
                scheduler.run_create(version, param_overrides={"b.v": round_ % 2}),
            ]
            wait_runs(*runs, timeout=120)
            finished += runs
            if round_ % 2:  # delete older runs: their bytes become garbage after 1 s
                old = [r.pk for r in finished[:-2]]
                PipelineRun.objects.filter(pk__in=old).update(pinned=False)
                from runs_app.services import runs_delete

                runs_delete(PipelineRun.objects.filter(pk__in=old))
                finished = finished[-2:]
                time.sleep(1.2)
    finally:
        stop.set()
        thread.join(timeout=30)

    assert errors == []
    assert passes[0] > 3
    statuses = set(PipelineRun.objects.values_list("status", flat=True))
    assert statuses == {RunStatus.SUCCEEDED}, list(
        StepRun.objects.exclude(status__in=["succeeded", "reused"]).values_list(
            "name", "status", "failure_message"
        )
    )
    sources = StepOutput.objects.filter(step__status=StepStatus.SUCCEEDED).select_related(
        "artifact"
    )
    assert artifacts_missing(out.artifact for out in sources) == []


def test_the_collector_keeps_the_files_of_a_directory_output_a_step_holds(
    world: Any, embedded_workers: Any
) -> None:
    from pipelines_app.services import module_version_create, pipeline_version_create

    module_version_create(
        world.workspace,
        "folder",
        {
            "step.py": "from pathlib import Path\n\ndef main(ctx):\n"
            "    out = Path(ctx.work_dir) / 'out'\n    out.mkdir()\n"
            "    (out / 'a.txt').write_text('kept a')\n    (out / 'b.txt').write_text('kept b')\n"
            "    return {'out': out}\n"
        },
        "step.py:main",
    )
    version = pipeline_version_create(
        world.workspace, "folder", {"steps": {"s": {"module": "folder@1"}}}
    )
    run = _run(version)
    folder = steps_of(run)["s"].outputs.get().artifact

    collect(grace=timedelta(0))

    assert artifacts_missing([folder]) == []
    again = scheduler.run_create(version)
    assert steps_of(again)["s"].status == StepStatus.REUSED
    # Once no run holds the directory, it goes, and its files with the next collection.
    members = list(ArtifactMember.objects.filter(directory=folder).values_list("member", flat=True))
    assert len(members) == 2
    deleted = api_client(world.editor).post(
        f"{RUNS}/delete/", {"runs": [run.pk, again.pk]}, format="json"
    )
    assert deleted.status_code == 200
    collect(grace=timedelta(0))
    collect(grace=timedelta(0))
    assert not Artifact.objects.filter(pk__in=[folder.pk, *members]).exists()


def test_directories_stored_before_the_links_existed_get_them_from_their_manifests(
    world: Any,
) -> None:
    import json

    from django.db.migrations.executor import MigrationExecutor

    from artifacts.store import artifact_store_bytes

    before, after = (
        [("artifacts", "0005_deleted_artifact")],
        [("artifacts", "0006_artifact_member")],
    )
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        # As a worker stored a folder then: a row per file, then the manifest's row.
        files = [
            artifact_store_bytes(world.workspace, d, "application/octet-stream")
            for d in (b"1", b"2")
        ]
        manifest = {
            "files": [
                {"path": f"f{i}", "sha256": f.sha256, "size": f.size} for i, f in enumerate(files)
            ]
        }
        folder = artifact_store_bytes(
            world.workspace,
            json.dumps(manifest).encode(),
            "application/vnd.stepworks.directory+json",
            "directory",
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)

    linked = set(ArtifactMember.objects.filter(directory=folder).values_list("member", flat=True))
    assert linked == {f.pk for f in files}
