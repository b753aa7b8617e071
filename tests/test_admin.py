"""The admin console: every model is there, immutable rows stay immutable, statuses are
read-only, changelists don't N+1, and the cancel action goes through the scheduler."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.db.models import Model
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from artifacts.models import Artifact, ArtifactMember, DeletedArtifact
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
)
from runs_app.models import (
    Event,
    Metric,
    PipelineRun,
    RetentionPolicy,
    RunListPrefs,
    RunStatus,
    RunTag,
    StepInput,
    StepLog,
    StepOutput,
    StepRun,
    Sweep,
    SweepEvent,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WorkerHeartbeat,
)
from workspaces.audit import audit_record
from workspaces.invites import invite_create
from workspaces.tokens import token_create

pytestmark = pytest.mark.django_db

OUR_APPS = ("workspaces", "artifacts", "pipelines_app", "runs_app")
IMMUTABLE = (ModuleVersion, PipelineVersion, PipelineStep, DatasetVersion, Artifact)


def admin_url(obj_or_model: Any, view: str, *args: Any) -> str:
    meta = obj_or_model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


def make_module_version(workspace: Any, name: str, number: int = 1) -> ModuleVersion:
    module, _ = Module.objects.get_or_create(workspace=workspace, name=name)
    return ModuleVersion.objects.create(
        module=module,
        number=number,
        entrypoint="main.py:run",
        files={"main.py": "def run(ctx):\n    return {'out': 1}\n"},
        code_digest=hashlib.sha256(f"{name}@{number}".encode()).hexdigest(),
        interface={"inputs": [], "outputs": ["out"], "params": {}},
    )


def make_pipeline_version(workspace: Any, name: str, mv: ModuleVersion) -> PipelineVersion:
    pipeline, _ = Pipeline.objects.get_or_create(workspace=workspace, name=name)
    version = PipelineVersion.objects.create(
        pipeline=pipeline,
        number=1,
        spec={"steps": {"s": {"module": mv.ref, "module_version": mv.pk}}},
        digest="d" * 64,
    )
    PipelineStep.objects.create(pipeline_version=version, name="s", position=0, module_version=mv)
    return version


def make_artifact(workspace: Any, content: str) -> Artifact:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return Artifact.objects.create(
        workspace=workspace,
        sha256=digest,
        size=len(content),
        media_type="text/plain",
        storage_name=digest,
    )


@pytest.fixture
def rows(world: Any) -> dict[type[Model], Model]:
    """One row of every model of both apps."""
    ws = world.workspace
    mv = make_module_version(ws, "prep")
    pv = make_pipeline_version(ws, "flow", mv)
    artifact = make_artifact(ws, "hello")
    dataset = Dataset.objects.create(workspace=ws, name="iris")
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, artifact=artifact)
    sweep = Sweep.objects.create(workspace=ws, name="lr sweep", base_version=pv)
    run = PipelineRun.objects.create(workspace=ws, pipeline_version=pv, sweep=sweep)
    webhook = Webhook.objects.create(workspace=ws, url="https://h.example.com/", secret="s")
    delivery = WebhookDelivery.objects.create(webhook=webhook, event="ping")
    step = StepRun.objects.create(workspace=ws, run=run, name="s", position=0, module_version=mv)
    found: dict[type[Model], Model] = {
        type(obj): obj
        for obj in [
            ws,
            world.workspace.memberships.first(),
            mv.module,
            mv,
            pv.pipeline,
            pv,
            pv.steps.get(),
            dataset,
            dv,
            artifact,
            sweep,
            SweepEvent.objects.create(sweep=sweep, kind="created", data={"runs": 0}),
            run,
            step,
            StepInput.objects.create(step=step, name="x", artifact=artifact),
            StepOutput.objects.create(step=step, name="out", artifact=artifact),
            Event.objects.create(run=run, old_status="", new_status="pending"),
            Metric.objects.create(step=step, name="accuracy", value=0.9),
            RunTag.objects.create(run=run, name="baseline"),
            RunListPrefs.objects.create(user=world.editor, workspace=ws, columns={"metrics": []}),
            StepLog.objects.create(step=step, attempt=1, offset=0, text="hello\n"),
            WorkerHeartbeat.objects.create(
                host="box", pid=42, runtime="r" * 64, last_seen=timezone.now()
            ),
            token_create(world.editor, "laptop")[0],
            RetentionPolicy.objects.create(workspace=ws, enabled=True, keep_last=5),
            DeletedArtifact.objects.create(workspace=ws, sha256="e" * 64),
            ArtifactMember.objects.create(
                directory=make_artifact(ws, "folder"), member=make_artifact(ws, "file")
            ),
            invite_create(ws, "viewer", actor=world.owner)[0],
            audit_record(ws, world.owner, "run.started", "run 1"),
            webhook,
            delivery,
            WebhookAttempt.objects.create(delivery=delivery, number=1, status_code=200),
        ]
    }
    return found


def test_every_model_of_both_apps_is_registered() -> None:
    ours = {m for name in OUR_APPS for m in apps.get_app_config(name).get_models()}

    assert ours <= set(admin.site._registry)


def test_every_changelist_and_change_page_renders(admin_client: Any, rows: Any) -> None:
    assert set(rows) == {m for name in OUR_APPS for m in apps.get_app_config(name).get_models()}
    for model, obj in rows.items():
        listing = admin_client.get(admin_url(model, "changelist"))
        assert listing.status_code == 200, model
        assert listing.context["cl"].result_count >= 1, model
        page = admin_client.get(admin_url(model, "change", obj.pk))
        assert page.status_code == 200, model


def test_changelist_search_and_filters_work(admin_client: Any, rows: Any) -> None:
    run = rows[PipelineRun]
    by_id = admin_client.get(admin_url(PipelineRun, "changelist"), {"q": str(run.pk)})
    by_name = admin_client.get(admin_url(PipelineRun, "changelist"), {"q": "flow"})
    by_status = admin_client.get(admin_url(PipelineRun, "changelist"), {"status__exact": "failed"})
    steps_of_run = admin_client.get(admin_url(StepRun, "changelist"), {"q": str(run.pk)})

    assert list(by_id.context["cl"].result_list) == [run]
    assert list(by_name.context["cl"].result_list) == [run]
    assert list(by_status.context["cl"].result_list) == []
    assert list(steps_of_run.context["cl"].result_list) == [rows[StepRun]]


@pytest.mark.parametrize("model", IMMUTABLE, ids=lambda m: m.__name__)
def test_immutable_rows_cannot_be_added_or_changed(
    admin_client: Any, rows: Any, model: type[Model]
) -> None:
    obj = rows[model]
    before = model.objects.filter(pk=obj.pk).values().get()

    page = admin_client.get(admin_url(model, "change", obj.pk))
    posted = admin_client.post(admin_url(model, "change", obj.pk), {"number": 7, "size": 1})

    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert posted.status_code == 403
    assert model.objects.filter(pk=obj.pk).values().get() == before


@pytest.mark.parametrize(
    "model",
    [ModuleVersion, PipelineVersion, PipelineStep, DatasetVersion],
    ids=lambda m: m.__name__,
)
def test_versions_cannot_be_deleted_in_admin(
    admin_client: Any, rows: Any, model: type[Model]
) -> None:
    obj = rows[model]

    response = admin_client.post(admin_url(model, "delete", obj.pk), {"post": "yes"})

    assert response.status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()


def test_deleting_a_module_with_versions_is_refused(admin_client: Any, rows: Any) -> None:
    module = rows[Module]

    admin_client.post(admin_url(Module, "delete", module.pk), {"post": "yes"})

    assert Module.objects.filter(pk=module.pk).exists()
    assert ModuleVersion.objects.filter(module=module).exists()


def test_unreferenced_artifact_can_be_deleted_but_a_referenced_one_cannot(
    admin_client: Any, rows: Any, world: Any
) -> None:
    used = rows[Artifact]
    orphan = make_artifact(world.workspace, "nobody reads me")

    admin_client.post(admin_url(Artifact, "delete", orphan.pk), {"post": "yes"})
    admin_client.post(admin_url(Artifact, "delete", used.pk), {"post": "yes"})

    assert not Artifact.objects.filter(pk=orphan.pk).exists()
    assert Artifact.objects.filter(pk=used.pk).exists()


@pytest.mark.parametrize("model", [PipelineRun, StepRun], ids=lambda m: m.__name__)
def test_run_and_step_status_cannot_be_set_in_admin(
    admin_client: Any, rows: Any, model: type[Model]
) -> None:
    obj = rows[model]

    page = admin_client.get(admin_url(model, "change", obj.pk))
    posted = admin_client.post(
        admin_url(model, "change", obj.pk), {"status": "succeeded", "_save": "Save"}
    )

    assert 'name="status"' not in page.content.decode()
    assert admin_client.get(admin_url(model, "add")).status_code == 403
    assert posted.status_code == 403
    obj.refresh_from_db()
    assert obj.status == "pending"


def test_cancel_action_cancels_unfinished_runs_and_reports_finished_ones(
    admin_client: Any, world: Any
) -> None:
    mv = make_module_version(world.workspace, "prep")
    pv = make_pipeline_version(world.workspace, "flow", mv)
    pending = PipelineRun.objects.create(workspace=world.workspace, pipeline_version=pv)
    done = PipelineRun.objects.create(
        workspace=world.workspace, pipeline_version=pv, status=RunStatus.SUCCEEDED
    )

    response = admin_client.post(
        admin_url(PipelineRun, "changelist"),
        {"action": "cancel_runs", "_selected_action": [pending.pk, done.pk]},
        follow=True,
    )

    pending.refresh_from_db()
    done.refresh_from_db()
    assert pending.status == RunStatus.CANCELED
    assert done.status == RunStatus.SUCCEEDED
    assert Event.objects.filter(run=pending, new_status=RunStatus.CANCELED).exists()
    assert not Event.objects.filter(run=done).exists()
    notes = [str(m) for m in response.context["messages"]]
    assert any("Canceled 1 run(s)" in note for note in notes), notes
    assert any("1 run(s) had already finished" in note for note in notes), notes


def count_queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_changelists_cost_the_same_for_1_or_50_rows(
    admin_client: Any, rows: Any, world: Any
) -> None:
    models = [ModuleVersion, PipelineVersion, PipelineStep, DatasetVersion, PipelineRun, StepRun]
    models += [Event, Metric, StepInput, StepOutput, StepLog, Artifact, Module, Pipeline, Dataset]
    one = {m: count_queries(admin_client, admin_url(m, "changelist")) for m in models}

    run = rows[PipelineRun]
    for i in range(49):
        mv = make_module_version(world.workspace, f"m{i}")
        pv = make_pipeline_version(world.workspace, f"p{i}", mv)
        artifact = make_artifact(world.workspace, f"a{i}")
        dataset = Dataset.objects.create(workspace=world.workspace, name=f"d{i}")
        DatasetVersion.objects.create(dataset=dataset, number=1, artifact=artifact)
        other = PipelineRun.objects.create(workspace=world.workspace, pipeline_version=pv)
        step = StepRun.objects.create(
            workspace=world.workspace, run=other, name="s", position=0, module_version=mv
        )
        StepInput.objects.create(step=step, name="x", artifact=artifact)
        StepOutput.objects.create(step=step, name="out", artifact=artifact)
        Event.objects.create(run=run, step=step, new_status="pending")
        Metric.objects.create(step=step, name="loss", value=i)
        StepLog.objects.create(step=step, attempt=1, offset=0, text=f"line {i}")

    fifty = {m: count_queries(admin_client, admin_url(m, "changelist")) for m in models}

    assert fifty == one


def test_the_workers_list_says_when_steps_are_not_isolated(admin_client: Any) -> None:
    WorkerHeartbeat.objects.create(
        host="box", pid=7, runtime="r" * 64, sandbox="off", last_seen=timezone.now()
    )

    page = admin_client.get(admin_url(WorkerHeartbeat, "changelist")).content.decode()

    assert "Steps are not isolated on 1 live worker(s) (box:7)" in page
