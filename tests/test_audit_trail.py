"""The audit trail records the acts of people across the product (issue 17): runs started
(page, API, rerun, clone) and canceled, runs deleted, sweeps created, extended, canceled and
promoted, retention changed and applied, datasets pushed, and every download that hands out
bytes (a 304 or the later piece of a resumed download does not)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from artifacts.store import artifact_store_bytes
from pipelines_app.services import dataset_version_create
from runs_app import scheduler, services
from runs_app.models import PipelineRun, RunStatus
from runs_app.retention import policy_set, retention_apply
from runs_app.sweeps import services as sweep_services
from tests.factories import chain
from tests.test_api_support import api_client
from workspaces.models import AuditEntry, AuditVerb

pytestmark = pytest.mark.django_db

API = "/api/v1/workspaces/lab"


def entries(verb: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(verb=verb).order_by("id"))


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def finished(run: PipelineRun, status: str = RunStatus.SUCCEEDED) -> PipelineRun:
    """Mark a run over (the steps of these tests never run: no worker is started)."""
    PipelineRun.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


def test_a_run_started_from_the_page_and_the_api_is_recorded_with_who(world: Any) -> None:
    version = chain(world.workspace, length=1)

    page = signed_in(world.editor).post(f"/w/lab/pipelines/{version.pipeline.name}/1/run/", {})
    api = api_client(world.owner).post(
        f"{API}/runs/create/", {"pipeline": "chain@1"}, format="json"
    )

    assert page.status_code == 302 and api.status_code == 201
    started = entries(AuditVerb.RUN_STARTED)
    assert [(e.actor, e.data["pipeline"]) for e in started] == [
        (world.editor, "chain@1"),
        (world.owner, "chain@1"),
    ]
    assert started[1].target == f"run {api.json()['id']}"


def test_a_rerun_and_a_clone_say_what_they_came_from(world: Any) -> None:
    run = finished(scheduler.run_create(chain(world.workspace, length=2), user=world.editor))

    rerun = services.run_rerun(run, from_step="s1", user=world.editor)
    clone = services.run_clone(run, param_overrides={"s0.k": 3}, user=world.editor)

    hows = {e.target: e.data.get("how") for e in entries(AuditVerb.RUN_STARTED)}
    assert hows == {
        f"run {rerun.pk}": f"rerun of run {run.pk} from step s1",
        f"run {clone.pk}": f"clone of run {run.pk}",
    }


def test_a_cancel_is_recorded_once_and_a_finished_run_records_nothing(world: Any) -> None:
    version = chain(world.workspace, length=1)
    going = scheduler.run_create(version, user=world.editor)
    over = finished(scheduler.run_create(version, user=world.editor))

    page = signed_in(world.editor).post(f"/w/lab/runs/{going.pk}/cancel/")
    again = api_client(world.owner).post(f"{API}/runs/{going.pk}/cancel/")
    late = api_client(world.owner).post(f"{API}/runs/{over.pk}/cancel/")

    assert page.status_code == 302
    assert again.status_code == late.status_code == 409
    assert [(e.actor, e.target) for e in entries(AuditVerb.RUN_CANCELED)] == [
        (world.editor, f"run {going.pk}")
    ]


def test_deleting_runs_records_which_and_retention_records_its_changes(world: Any) -> None:
    version = chain(world.workspace, length=1)
    runs = [finished(scheduler.run_create(version, reuse=False)) for _ in range(3)]

    services.runs_delete(PipelineRun.objects.filter(pk=runs[0].pk), user=world.editor)
    policy_set(world.workspace, enabled=True, keep_last=1, keep_days=None, user=world.owner)
    policy_set(world.workspace, enabled=True, keep_last=1, keep_days=None, user=world.owner)
    retention_apply(world.workspace, user=world.owner)

    deleted = entries(AuditVerb.RUNS_DELETED)
    assert [(e.actor, e.data["runs"], e.data.get("why")) for e in deleted] == [
        (world.editor, [runs[0].pk], None),
        (world.owner, [runs[1].pk], "retention"),
    ]
    changed = entries(AuditVerb.RETENTION_CHANGED)
    assert len(changed) == 1  # the same policy again changes nothing
    assert changed[0].data["new"] == {"enabled": True, "keep_last": 1, "keep_days": None}
    assert entries(AuditVerb.RETENTION_APPLIED)[0].data["runs"] == 1


def test_a_sweep_is_recorded_when_made_extended_canceled_and_promoted(world: Any) -> None:
    base = chain(world.workspace, length=1)
    axes = {"s0": [{"label": "one", "params": {"k": 1}}, {"label": "two", "params": {"k": 2}}]}

    sweep = sweep_services.sweep_create(base, name="ks", axes=axes, user=world.editor)
    sweep_services.sweep_extend(sweep, "s0", {"label": "three", "params": {"k": 3}}, world.editor)
    sweep_services.sweep_promote(sweep, {"s0": "two"}, user=world.owner)
    sweep_services.sweep_cancel(sweep, by=world.owner)
    sweep_services.sweep_cancel(sweep, by=world.owner)  # already canceled: nothing more

    rows = list(
        AuditEntry.objects.filter(verb__startswith="sweep.")
        .order_by("id")
        .values_list("verb", "actor__username", "target")
    )
    assert rows == [
        (AuditVerb.SWEEP_CREATED, "eddie", f"sweep {sweep.pk} (ks)"),
        (AuditVerb.SWEEP_EXTENDED, "eddie", f"sweep {sweep.pk} (ks)"),
        (AuditVerb.SWEEP_PROMOTED, "olivia", f"sweep {sweep.pk} (ks)"),
        (AuditVerb.SWEEP_CANCELED, "olivia", f"sweep {sweep.pk} (ks)"),
    ]
    assert entries(AuditVerb.SWEEP_CREATED)[0].data == {"pipeline": "chain@1", "runs": 2}
    assert entries(AuditVerb.SWEEP_PROMOTED)[0].data["version"] == "chain@2"


def test_a_new_dataset_version_is_recorded_and_the_same_bytes_again_are_not(world: Any) -> None:
    dataset_version_create(world.workspace, "iris", b"a,b\n1,2\n", "text/csv", user=world.editor)
    dataset_version_create(world.workspace, "iris", b"a,b\n1,2\n", "text/csv", user=world.editor)

    pushed = entries(AuditVerb.DATASET_PUSHED)
    assert [(e.actor, e.target, e.data["size"]) for e in pushed] == [
        (world.editor, "dataset:iris@1", 8)
    ]


def test_every_download_that_hands_out_bytes_is_recorded(world: Any) -> None:
    artifact = artifact_store_bytes(world.workspace, b"0123456789", "text/plain")
    page_url = f"/w/lab/artifacts/{artifact.sha256}/download/"
    api = api_client(world.viewer)
    client = signed_in(world.viewer)

    whole = client.get(page_url)
    first_piece = api.get(f"{API}/artifacts/{artifact.sha256}/download/", HTTP_RANGE="bytes=0-3")
    rest = api.get(f"{API}/artifacts/{artifact.sha256}/download/", HTTP_RANGE="bytes=4-")
    cached = client.get(page_url, HTTP_IF_NONE_MATCH=f'"{artifact.sha256}"')

    assert [whole.status_code, first_piece.status_code, rest.status_code] == [200, 206, 206]
    assert cached.status_code == 304
    downloads = entries(AuditVerb.ARTIFACT_DOWNLOADED)
    assert len(downloads) == 2
    assert downloads[0].actor == world.viewer
    assert downloads[0].data == {"sha256": artifact.sha256, "size": 10, "media_type": "text/plain"}


def test_a_run_zip_download_is_recorded_from_the_page_and_the_api(world: Any) -> None:
    run = finished(scheduler.run_create(chain(world.workspace, length=1)))

    page = signed_in(world.viewer).get(f"/w/lab/runs/{run.pk}/outputs.zip")
    api = api_client(world.editor).get(f"{API}/runs/{run.pk}/outputs.zip")
    b"".join(page.streaming_content)

    assert page.status_code == api.status_code == 200
    assert [(e.actor, e.target) for e in entries(AuditVerb.RUN_ZIP_DOWNLOADED)] == [
        (world.viewer, f"run {run.pk}"),
        (world.editor, f"run {run.pk}"),
    ]
