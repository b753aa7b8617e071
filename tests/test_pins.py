"""No silent pins (issue 13): a pipeline version pins exact module versions, so a run of
it says when newer ones exist (API, pages) and an update makes the version that pins
them, parent set, nothing else changed."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from pipelines_app.models import PipelineVersion
from pipelines_app.selectors import newer_modules
from pipelines_app.services import module_version_create, pipeline_version_create
from tests.test_api_support import api_client

pytestmark = pytest.mark.django_db

API = "/api/v1/workspaces/lab/pipelines/flow/versions"
PREP = "def prep(ctx):\n    return {'data': [1, 2]}\n"
TRAIN = "def train(ctx, data, *, scale: float = 1.0):\n    return {'model': {'w': scale}}\n"
SPEC = {
    "steps": {
        "prep": {"module": "prep@latest"},
        "train": {"module": "train@latest", "inputs": {"data": "prep.data"}},
    }
}


@pytest.fixture
def flow(world: Any) -> PipelineVersion:
    module_version_create(world.workspace, "prep", {"prep.py": PREP}, "prep.py:prep")
    module_version_create(world.workspace, "train", {"train.py": TRAIN}, "train.py:train")
    version = pipeline_version_create(world.workspace, "flow", SPEC)
    newer = TRAIN + "# better\n"
    module_version_create(world.workspace, "train", {"train.py": newer}, "train.py:train")
    return version


def test_a_version_names_the_steps_whose_module_has_a_newer_version(flow: Any) -> None:
    assert newer_modules(flow) == [
        {"step": "train", "module": "train", "pinned": "train@1", "latest": "train@2"}
    ]


def test_the_api_shows_newer_modules_and_update_pins_them_once(world: Any, flow: Any) -> None:
    editor = api_client(world.editor)

    detail = editor.get(f"{API}/1/").json()
    run = editor.post("/api/v1/workspaces/lab/runs/create/", {"pipeline": "flow"}, format="json")
    updated = editor.post(f"{API}/1/update/", {}, format="json")
    again = editor.post(f"{API}/2/update/", {}, format="json")
    unknown = editor.post(f"{API}/1/update/", {"step": "nope"}, format="json")
    viewer = api_client(world.viewer).post(f"{API}/1/update/", {}, format="json")

    assert detail["newer_modules"][0]["latest"] == "train@2"
    assert run.status_code == 201 and run.json()["newer_modules"][0]["pinned"] == "train@1"
    assert updated.status_code == 201
    new = updated.json()
    assert new["ref"] == "flow@2" and new["parent"] == "flow@1"
    assert {s["name"]: s["module"] for s in new["steps"]} == {"prep": "prep@1", "train": "train@2"}
    assert new["newer_modules"] == []
    assert again.status_code == 409 and again.json()["error"]["code"] == "up_to_date"
    assert unknown.status_code == 400 and "step" in unknown.json()["error"]["fields"]
    assert viewer.status_code == 403


def test_the_pages_say_so_and_offer_the_update(world: Any, flow: Any) -> None:
    page = Client()
    page.force_login(world.editor)

    shown = page.get("/w/lab/pipelines/flow/1/").content.decode()
    made = page.post("/w/lab/pipelines/flow/1/update/")
    after = page.get("/w/lab/pipelines/flow/2/").content.decode()

    assert "Newer module versions exist" in shown and "train@2" in shown
    assert "Make a version with the newest modules" in shown
    assert made.status_code == 302 and made["Location"] == "/w/lab/pipelines/flow/2/"
    assert "Newer module versions exist" not in after
    viewer = Client()
    viewer.force_login(world.viewer)
    assert (
        "Make a version with the newest"
        not in viewer.get("/w/lab/pipelines/flow/1/").content.decode()
    )
