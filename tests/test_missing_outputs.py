"""Reuse only of outputs that exist (issue 12, first part): bytes removed from the store
behind the product's back are noticed before a reuse, the step runs instead and says why,
and every read of the lost bytes is a 404 that names the artifact, never a 500."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from artifacts.models import Artifact, ArtifactState
from artifacts.store import artifact_storage, artifact_store_bytes, artifacts_missing
from runs_app import scheduler
from runs_app.models import RunStatus, StepStatus
from runs_app.selectors import reuse_explanation
from tests.test_api_support import api_client
from tests.test_engine import bodies, steps_of, three_step_pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def _lose(artifact: Artifact) -> None:
    """What a disk cleanup or an S3 lifecycle rule does: the bytes go, the row stays."""
    os.unlink(artifact_storage().path(artifact.storage_name))


def _finished(run: Any) -> Any:
    from tests.helpers import wait_runs

    wait_runs(run)
    return run


def test_a_lost_output_is_recomputed_alone_and_the_step_says_why(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = _finished(scheduler.run_create(version))
    lost = steps_of(first)["b"].outputs.get().artifact
    _lose(lost)

    second = _finished(scheduler.run_create(version))

    assert second.status == RunStatus.SUCCEEDED
    assert bodies(marker) == ["a 0", "b 0", "c 0", "b 0"]  # b again, and only b
    steps = steps_of(second)
    assert steps["a"].status == StepStatus.REUSED
    assert steps["b"].status == StepStatus.SUCCEEDED
    assert steps["c"].status == StepStatus.REUSED  # b's bytes came back the same
    why = reuse_explanation(steps["b"])["summary"]
    assert f"cached outputs of run {first.pk} were missing" in why
    assert f"out, sha256 {lost.sha256[:12]}" in why
    lost.refresh_from_db()
    assert lost.state == ArtifactState.PRESENT  # the run stored the same bytes again


def test_reads_of_lost_bytes_are_404s_that_name_the_artifact(world: Any) -> None:
    artifact = artifact_store_bytes(world.workspace, b"a,b\n1,2\n", "text/csv")
    _lose(artifact)
    page = Client()
    page.force_login(world.viewer)
    args = ["lab", artifact.sha256]

    download = page.get(reverse("runs:artifact_download", args=args))
    detail = page.get(reverse("runs:artifact", args=args))
    api = api_client(world.viewer).get(
        f"/api/v1/workspaces/lab/artifacts/{artifact.sha256}/download/"
    )

    assert download.status_code == 404
    assert artifact.sha256[:12] in download.content.decode()
    assert detail.status_code == 200  # the page is there; its preview says what is missing
    assert "missing from the store" in detail.content.decode()
    assert api.status_code == 404 and artifact.sha256[:12] in api.json()["error"]["message"]
    artifact.refresh_from_db()
    assert artifact.state == ArtifactState.MISSING


def test_the_run_zip_leaves_lost_files_out_and_lists_them(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    run = _finished(scheduler.run_create(version))
    lost = steps_of(run)["b"].outputs.get().artifact
    _lose(lost)

    response = api_client(world.viewer).get(f"/api/v1/workspaces/lab/runs/{run.pk}/outputs.zip")

    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["missing"] == [{"step": "b", "output": "out", "sha256": lost.sha256}]
    assert sorted(row["step"] for row in manifest["files"]) == ["a", "c"]
    assert archive.testzip() is None


def test_the_existence_check_marks_only_what_is_gone(world: Any) -> None:
    kept = artifact_store_bytes(world.workspace, b"kept", "text/plain")
    gone = artifact_store_bytes(world.workspace, b"gone", "text/plain")
    _lose(gone)

    assert artifacts_missing([kept, gone]) == [gone]
    states = dict(Artifact.objects.values_list("pk", "state"))
    assert states == {kept.pk: ArtifactState.PRESENT, gone.pk: ArtifactState.MISSING}
    assert artifact_store_bytes(world.workspace, b"gone", "text/plain").state == "present"


def _flip_a_byte(artifact: Artifact) -> None:
    path = Path(artifact_storage().path(artifact.storage_name))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def test_check_artifacts_finds_corrupt_and_missing_bytes_and_repair_stops_their_reuse(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = _finished(scheduler.run_create(version))
    corrupt = steps_of(first)["a"].outputs.get().artifact
    _flip_a_byte(corrupt)
    stray = Path(artifact_storage().path("ff/ff/" + "f" * 64))
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"nobody's")
    os.utime(stray, (0, 0))  # old enough to collect

    report = io.StringIO()
    with pytest.raises(CommandError):
        call_command("check_artifacts", stdout=report)
    repaired = io.StringIO()
    call_command("check_artifacts", "--repair", stdout=repaired)

    assert f"corrupt {corrupt.storage_name}" in report.getvalue()
    assert f"unreferenced ff/ff/{'f' * 64}" in report.getvalue()
    assert "collected 1" in repaired.getvalue() and not stray.exists()
    corrupt.refresh_from_db()
    assert corrupt.state == ArtifactState.MISSING  # its corrupt bytes were deleted
    second = _finished(scheduler.run_create(version))
    assert second.status == RunStatus.SUCCEEDED
    assert bodies(marker) == ["a 0", "b 0", "c 0", "a 0"]  # a recomputed, b and c reused
    corrupt.refresh_from_db()
    assert corrupt.state == ArtifactState.PRESENT
    clean = io.StringIO()
    call_command("check_artifacts", stdout=clean)
    assert "0 missing, 0 corrupt, 0 unreferenced" in clean.getvalue()


def test_the_step_page_shows_an_output_the_store_lost_as_missing(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    run = _finished(scheduler.run_create(version))
    lost = steps_of(run)["b"].outputs.get().artifact
    _lose(lost)
    artifacts_missing([lost])
    page = Client()
    page.force_login(world.viewer)

    html = page.get(reverse("runs:step", args=["lab", run.pk, "b"])).content.decode()

    assert '<strong class="error">missing</strong>' in html


def test_after_retention_and_collection_the_store_is_consistent(
    world: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    from datetime import timedelta

    from django.core.management import call_command

    from runs_app import retention
    from runs_app.gc import collect
    from runs_app.models import PipelineRun, StepOutput

    version = three_step_pipeline(world.workspace, tmp_path / "bodies.txt")
    for v in range(4):
        _finished(scheduler.run_create(version, param_overrides={"a.v": v}))
    retention.policy_set(world.workspace, enabled=True, keep_last=1, keep_days=None)

    retention.retention_apply(world.workspace)
    collect(grace=timedelta(0))
    report = io.StringIO()
    call_command("check_artifacts", stdout=report)

    assert PipelineRun.objects.count() == 1
    assert "0 missing, 0 corrupt, 0 unreferenced" in report.getvalue()
    sources = StepOutput.objects.filter(step__status="succeeded").select_related("artifact")
    assert artifacts_missing(out.artifact for out in sources) == []
    assert Artifact.objects.count() == 3  # the kept run's outputs, nothing else


def test_check_artifacts_finds_a_directory_whose_files_are_gone_and_repair_marks_it(
    world: Any,
) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    kept, lost = (
        artifact_store_bytes(world.workspace, data, "application/octet-stream")
        for data in (b"kept", b"lost")
    )
    files = [{"path": p, "sha256": f.sha256, "size": f.size} for p, f in (("a", kept), ("b", lost))]
    folder = artifact_store_bytes(
        world.workspace,
        json.dumps({"files": files}).encode(),
        "application/vnd.stepworks.directory+json",
        "directory",
        [kept, lost],
    )
    _lose(lost)  # as the collector did before a directory held its files

    report = io.StringIO()
    with pytest.raises(CommandError):
        call_command("check_artifacts", stdout=report)
    call_command("check_artifacts", "--repair", stdout=io.StringIO())

    assert f"missing {folder.storage_name}" in report.getvalue()
    assert f"missing {lost.storage_name}" in report.getvalue()
    folder.refresh_from_db()
    assert folder.state == ArtifactState.MISSING  # nothing reuses it; a rerun recomputes it
    assert artifacts_missing([folder]) == [folder]
