"""What every API endpoint shares: authentication, the one error format, the upload limit,
the OpenAPI schema and its offline docs page, the spec's JSON Schema; plus /healthz,
/readyz. (The token pages: test_tokens.py.)"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as PageClient

from pipelines_app.specs import SPEC_JSON_SCHEMA
from tests.test_api_support import api_client, error_of

pytestmark = pytest.mark.django_db


def test_an_anonymous_call_gets_401_with_a_token_challenge(world):
    response = api_client().get("/api/v1/workspaces/lab/runs/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert error_of(response)["code"] == "not_authenticated"


def test_a_wrong_token_gets_401(world):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    response = client.get("/api/v1/workspaces/")

    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_a_session_works_too_and_writes_need_its_csrf_token(world):
    client = PageClient(enforce_csrf_checks=True)
    client.force_login(world.owner)

    listed = client.get("/api/v1/workspaces/")
    refused = client.post(
        "/api/v1/workspaces/create/", {"slug": "x", "name": "X"}, content_type="application/json"
    )

    assert listed.status_code == 200
    assert [w["slug"] for w in listed.json()["results"]] == ["lab"]
    assert refused.status_code == 403
    assert error_of(refused)["code"] == "permission_denied"


def test_a_stranger_gets_404_for_another_workspace_and_a_viewer_403_for_a_write(world):
    stranger = api_client(world.stranger).get("/api/v1/workspaces/lab/modules/")
    viewer = api_client(world.viewer).post(
        "/api/v1/workspaces/lab/pipelines/p/versions/create/",
        {"spec": {"steps": {}}},
        format="json",
    )

    assert stranger.status_code == 404
    assert error_of(stranger)["code"] == "not_found"
    assert viewer.status_code == 403
    assert error_of(viewer)["code"] == "permission_denied"


def test_a_body_over_the_api_limit_is_refused_by_its_length_before_it_is_read(
    world, settings, monkeypatch
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    read = []
    monkeypatch.setattr(
        "rest_framework.request.Request._load_data_and_files",
        lambda self: read.append(True),
    )

    response = api_client(world.editor).post(
        "/api/v1/workspaces/lab/modules/m/versions/create/",
        {"files": SimpleUploadedFile("m.py", b"x" * 2000), "paths": "m.py", "entrypoint": "m.py:f"},
        format="multipart",
    )

    assert response.status_code == 413
    assert "1000" in error_of(response)["fields"]["body"][0]
    assert read == []


def test_a_dataset_upload_over_its_own_limit_is_refused_by_its_length_before_it_is_read(
    world, settings, monkeypatch
):
    # A dataset may be far bigger than any other request (STEPWORKS_DATASET_MAX_BYTES).
    settings.STEPWORKS = {**settings.STEPWORKS, "DATASET_MAX_BYTES": 1000}
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    read = []
    monkeypatch.setattr(
        "rest_framework.request.Request._load_data_and_files",
        lambda self: read.append(True),
    )

    response = api_client(world.editor).post(
        "/api/v1/workspaces/lab/datasets/d/versions/create/",
        {"file": SimpleUploadedFile("data.csv", b"x" * 2000)},
        format="multipart",
    )

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large"
    assert "1000" in error["fields"]["body"][0]
    assert read == []


def test_too_many_uploaded_files_is_a_400_in_the_one_format(world, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [SimpleUploadedFile(f"f{i}.py", b"X = 1\n") for i in range(4)]

    response = api_client(world.editor).post(
        "/api/v1/workspaces/lab/modules/m/versions/create/",
        {"files": files, "entrypoint": "f0.py:run"},
        format="multipart",
    )

    assert response.status_code == 400
    assert "DATA_UPLOAD_MAX_NUMBER_FILES" in error_of(response)["fields"]["body"][0]


def test_a_malformed_json_body_is_a_400_in_the_one_format(world):
    response = api_client(world.editor).post(
        "/api/v1/workspaces/lab/runs/create/", "{nope", content_type="application/json"
    )

    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


def test_the_schema_is_openapi_3_and_documents_every_operation_with_its_errors(world):
    response = api_client().get("/api/v1/schema/?format=json")

    schema = json.loads(response.content)
    assert response.status_code == 200
    assert schema["openapi"].startswith("3.")
    runs = schema["paths"]["/api/v1/workspaces/{workspace}/runs/"]["get"]
    params = {p["name"] for p in runs["parameters"]}
    assert {"status", "pipeline", "version", "sweep", "created_by", "created_after"} <= params
    assert {"limit", "offset"} <= params
    assert {"200", "400", "401", "403", "404"} <= set(runs["responses"])
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ErrorBody"
    zip_op = schema["paths"]["/api/v1/workspaces/{workspace}/runs/{run_id}/outputs.zip"]["get"]
    assert "application/zip" in zip_op["responses"]["200"]["content"]
    assert "StepStatus" in schema["components"]["schemas"]


@pytest.mark.parametrize(
    ("url", "marker"), [("/api/v1/docs/", "swagger-ui"), ("/api/v1/redoc/", "redoc")]
)
def test_the_docs_pages_work_offline(world, url, marker):
    response = api_client().get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert marker in html.lower()
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html
    # Nothing from another origin: no fonts, no scripts (Redoc's page linked Google Fonts).
    assert not re.search(r"""(?:href|src)=["']?(?:https?:)?//""", html), html


def test_the_pipeline_spec_json_schema_is_published(world):
    response = api_client().get("/api/v1/spec-schema.json")

    assert response.status_code == 200
    assert response.json() == SPEC_JSON_SCHEMA


def test_the_schema_yaml_parses(world):
    response = api_client().get("/api/v1/schema/")

    assert yaml.safe_load(response.content)["info"]["title"] == "Stepworks API"


def test_healthz_says_the_process_is_up():
    response = PageClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_and_the_embedded_broker(db, settings):
    settings.BROKER_URL = ""

    response = PageClient().get("/readyz")

    body = response.json()
    assert response.status_code == 200
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "embedded"


def test_readyz_is_503_when_the_broker_does_not_answer(db, settings):
    settings.BROKER_URL = "redis://127.0.0.1:1/0"

    response = PageClient().get("/readyz")

    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["status"] == "error"
    assert body["checks"]["database"]["status"] == "ok"


# --- the API token page --------------------------------------------------------------------


def test_the_tokens_page_needs_a_login(db):
    response = PageClient().get("/account/tokens/")

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_django_404_and_403_keep_their_message_in_the_one_error_format() -> None:
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from workspaces.errors import api_exception_handler

    missing = api_exception_handler(Http404("No such run."), {})
    denied = api_exception_handler(PermissionDenied("This needs the editor role."), {})

    assert missing is not None and missing.status_code == 404
    assert missing.data == {"error": {"code": "not_found", "message": "No such run.", "fields": {}}}
    assert denied is not None and denied.status_code == 403
    assert denied.data["error"]["code"] == "permission_denied"
    assert denied.data["error"]["message"] == "This needs the editor role."


def test_readyz_warns_when_a_live_worker_runs_steps_unisolated(db):
    from django.utils import timezone

    from runs_app.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(
        host="box", pid=7, runtime="r" * 64, sandbox="off", last_seen=timezone.now()
    )
    WorkerHeartbeat.objects.create(host="box", pid=8, runtime="r" * 64, last_seen=timezone.now())

    body = PageClient().get("/readyz").json()

    assert body["checks"]["step_sandbox"]["status"] == "off"
    assert body["checks"]["step_sandbox"]["workers"] == ["box:7"]
    assert "not isolated" in body["checks"]["step_sandbox"]["warning"]


def test_readyz_says_the_sandbox_mode_when_every_worker_isolates(db, settings):
    settings.STEPWORKS = {**settings.STEPWORKS, "STEP_SANDBOX": "required"}

    body = PageClient().get("/readyz").json()

    assert body["checks"]["step_sandbox"] == {"status": "required"}
