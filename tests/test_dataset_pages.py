"""Datasets in the browser (issue 17): the list with an upload form, a dataset's versions
(size, media type, sha256, message, who, when, the runs that read each) with a preview, and
an upload that is refused by its Content-Length before a byte is read, goes to a temp file
(never memory) and streams into the store."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import Client

from artifacts.store import artifact_open
from pipelines_app.models import Dataset, DatasetVersion
from pipelines_app.services import dataset_version_create
from runs_app import scheduler
from runs_app.models import StepInput
from tests.factories import chain
from workspaces.models import AuditEntry, AuditVerb

pytestmark = pytest.mark.django_db

CSV = b"a,b\n1,2\n3,4\n"
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}


def signed_in(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def upload(client: Client, name: str = "points", data: bytes = CSV, **extra: Any) -> Any:
    fields = {"name": name, "file": SimpleUploadedFile("points.csv", data), "message": "first"}
    return client.post("/w/lab/datasets/", fields, **extra)


def test_an_editor_uploads_a_file_as_a_new_dataset_and_lands_on_its_page(world: Any) -> None:
    response = upload(signed_in(world.editor))

    assert response.status_code == 302
    assert response["Location"] == "/w/lab/datasets/points/"
    version = DatasetVersion.objects.select_related("artifact").get(dataset__name="points")
    assert (version.number, version.message, version.created_by) == (1, "first", world.editor)
    assert version.artifact.media_type == "text/csv"
    assert version.artifact.sha256 == hashlib.sha256(CSV).hexdigest()
    with artifact_open(version.artifact) as handle:
        assert handle.read() == CSV
    assert AuditEntry.objects.get(verb=AuditVerb.DATASET_PUSHED).target == "dataset:points@1"


def test_the_script_s_upload_answers_json_with_where_to_go(world: Any) -> None:
    client = signed_in(world.editor)

    first = upload(client, **XHR)
    same = upload(client, **XHR)
    other = upload(client, data=CSV + b"5,6\n", **XHR)

    assert first.status_code == 201
    assert first.json()["url"] == "/w/lab/datasets/points/"
    assert first.json()["ref"] == "dataset:points@1"
    assert same.json()["ref"] == "dataset:points@1"  # the same bytes make no new version
    assert other.json()["ref"] == "dataset:points@2"
    assert DatasetVersion.objects.filter(dataset__name="points").count() == 2


def test_an_upload_over_the_limit_is_refused_by_its_length_before_it_is_read(
    world: Any, settings: Any, monkeypatch: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "DATASET_MAX_BYTES": 100}
    parsed = []
    monkeypatch.setattr(
        "django.http.multipartparser.MultiPartParser.parse",
        lambda self: parsed.append(True),
    )
    client = signed_in(world.editor)

    scripted = upload(client, data=b"x" * 500, **XHR)
    plain = upload(client, data=b"x" * 500)

    assert scripted.status_code == plain.status_code == 413
    assert "too large" in scripted.json()["error"]
    assert "STEPWORKS_DATASET_MAX_BYTES" in plain.content.decode()
    assert parsed == []
    assert not Dataset.objects.exists()


def test_an_upload_goes_to_a_temp_file_however_small(world: Any, monkeypatch: Any) -> None:
    completed = []
    original = TemporaryFileUploadHandler.file_complete

    def spy(self: Any, size: int) -> Any:
        completed.append(size)
        return original(self, size)

    monkeypatch.setattr(TemporaryFileUploadHandler, "file_complete", spy)

    response = upload(signed_in(world.editor), **XHR)

    assert response.status_code == 201
    assert completed == [len(CSV)]


def test_a_dataset_bigger_than_the_api_s_body_limit_is_taken_under_its_own(
    world: Any, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64  # the form's other fields fit; the file not

    response = upload(signed_in(world.editor), data=b"x,y\n" * 250, **XHR)

    assert response.status_code == 201
    assert DatasetVersion.objects.get().artifact.size == 1000


def test_a_viewer_cannot_upload_and_sees_no_form(world: Any) -> None:
    client = signed_in(world.viewer)

    page = client.get("/w/lab/datasets/")
    refused = upload(client)

    assert page.status_code == 200
    assert "data-upload" not in page.content.decode()
    assert refused.status_code == 403
    assert not Dataset.objects.exists()


def test_an_upload_without_the_csrf_token_is_refused(world: Any) -> None:
    response = upload(signed_in(world.editor, enforce_csrf_checks=True))

    assert response.status_code == 403
    assert not Dataset.objects.exists()


def test_a_bad_name_or_no_file_says_so_and_stores_nothing(world: Any) -> None:
    client = signed_in(world.editor)

    bad_name = upload(client, name="Not a slug!")
    no_file = client.post("/w/lab/datasets/", {"name": "points"}, **XHR)
    empty = upload(client, data=b"", **XHR)

    assert bad_name.status_code == 400
    assert "name" in bad_name.content.decode()
    assert no_file.status_code == 400
    assert "file" in no_file.json()["error"]
    assert empty.status_code == 400
    assert not DatasetVersion.objects.exists()


def test_the_dataset_page_lists_versions_with_who_when_and_the_runs_that_read_them(
    world: Any,
) -> None:
    first = dataset_version_create(world.workspace, "points", CSV, "text/csv", "v1", world.owner)
    second = dataset_version_create(
        world.workspace, "points", CSV + b"5,6\n", "text/csv", "v2", world.editor
    )
    run = scheduler.run_create(chain(world.workspace, length=1))
    StepInput.objects.create(step=run.steps.get(), name="data", artifact=first.artifact)
    client = signed_in(world.viewer)

    page = client.get("/w/lab/datasets/points/")
    older = client.get("/w/lab/datasets/points/?version=1")

    html = page.content.decode()
    rows = {r["version"].number: r for r in page.context["rows"]}
    assert page.status_code == 200
    assert [r["id"] for r in rows[1]["runs"]] == [run.pk]
    assert rows[2]["runs"] == []
    assert all(text in html for text in ("dataset:points@2", "v1", "v2", "olivia", "eddie"))
    assert second.artifact.sha256[:12] in html
    assert f'href="/w/lab/runs/{run.pk}/"' in html
    assert page.context["shown"] == second
    assert page.context["preview"]["kind"] == "table"
    assert older.context["shown"] == first
    assert "table-preview" in older.content.decode()


def test_a_dataset_of_another_workspace_is_a_404(world: Any) -> None:
    dataset_version_create(world.other_workspace, "secret", CSV, "text/csv")

    response = signed_in(world.owner).get("/w/elsewhere/datasets/secret/")
    mine = signed_in(world.owner).get("/w/lab/datasets/secret/")

    assert response.status_code == mine.status_code == 404


@pytest.mark.parametrize("n", [1, 50])
def test_the_datasets_page_costs_the_same_for_1_or_50(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    for i in range(n):
        dataset_version_create(world.workspace, f"d{i}", f"x{i}".encode(), "text/plain")
    client = signed_in(world.editor)

    with django_assert_num_queries(4):  # session, user, workspace, datasets with their latest
        response = client.get("/w/lab/datasets/")

    assert f"d{n - 1}" in response.content.decode()


@pytest.mark.parametrize("n", [1, 50])
def test_a_dataset_page_costs_the_same_for_1_or_50_versions(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    for i in range(n):
        dataset_version_create(world.workspace, "points", f"a\n{i}\n".encode(), "text/csv")
    client = signed_in(world.editor)

    # session, user, dataset with workspace and role, versions, the runs that read them
    with django_assert_num_queries(5):
        response = client.get("/w/lab/datasets/points/")

    assert len(response.context["rows"]) == n
