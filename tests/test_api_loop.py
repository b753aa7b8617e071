"""The edit-run loop's two requests (issue 13's speed target): `POST .../runs/from-source/`
pushes the changed module folders (known ones by code digest alone), the spec and starts
the run; the run's long-poll with `until=end&compare_with=RUN` answers once, at the end,
with the comparison the CLI prints."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from pipelines_app import services
from pipelines_app.models import ModuleVersion, PipelineVersion
from runs_app.models import PipelineRun
from stepworks.client import Client, code_digest
from tests.helpers import api_token
from tests.test_api_support import PREP, TRAIN, api_client, error_of, wait_run

API = "/api/v1/workspaces/lab"
SPEC = {
    "steps": {
        "prep": {"module": "local"},
        "train": {"module": "local", "inputs": {"data": "prep.data"}, "params": {"scale": 2.0}},
    }
}


def source(name: str, text: str, *, files: bool = True) -> dict[str, Any]:
    """A module of one file as the CLI sends it: by digest, with its files or not."""
    filename, entrypoint = f"{name}.py", f"{name}.py:{name}"
    module = {
        "name": name,
        "entrypoint": entrypoint,
        "digest": code_digest([(filename, text.encode())], entrypoint),
    }
    return {**module, "files": {filename: text}} if files else module


def push(client: Any, prep: dict[str, Any], train: dict[str, Any], **body: Any) -> Any:
    body = {"pipeline": "loop", "spec": SPEC, "modules": {"prep": prep, "train": train}, **body}
    return client.post(f"{API}/runs/from-source/", body, format="json")


def test_the_digest_is_the_one_the_server_computes():
    files = {"main.py": "x = 'é'\n", "pkg/util.py": ""}
    sent = code_digest([(path, text.encode()) for path, text in files.items()], "main.py:f")

    assert sent == services.module_code_digest(files, "main.py:f")


def test_one_request_pushes_changed_modules_the_spec_and_starts_a_run(world):
    client = api_client(world.editor)

    first = push(client, source("prep", PREP), source("train", TRAIN))
    again = push(client, source("prep", PREP, files=False), source("train", TRAIN, files=False))
    edited = TRAIN.replace("* scale", "* scale * 2")
    unknown = push(client, source("prep", PREP, files=False), source("train", edited, files=False))
    before = (ModuleVersion.objects.count(), PipelineVersion.objects.count())
    runs = PipelineRun.objects.count()
    sent = push(client, source("prep", PREP, files=False), source("train", edited))

    assert first.status_code == 201, first.content
    body = first.json()
    assert body["pushed"] == {
        "modules": [
            {"step": "prep", "ref": "prep@1", "created": True},
            {"step": "train", "ref": "train@1", "created": True},
        ],
        "pipeline_version": {"ref": "loop@1", "created": True},
    }
    assert body["previous_run"] is None
    assert body["status"] in ("pending", "running") and body["created_by"] == "eddie"
    assert [s["module"] for s in body["steps"]] == ["prep@1", "train@1"]
    assert again.status_code == 201
    assert again.json()["pushed"]["pipeline_version"] == {"ref": "loop@1", "created": False}
    assert not any(m["created"] for m in again.json()["pushed"]["modules"])
    assert again.json()["previous_run"] == body["id"]
    # A digest the server does not hold as the latest: 409 naming the step, nothing written.
    assert unknown.status_code == 409
    error = error_of(unknown)
    assert error["code"] == "module_files_needed"
    assert list(error["fields"]) == ["modules.train.files"]
    assert sent.status_code == 201
    assert before == (2, 1) and runs == 2  # the 409 wrote nothing
    assert sent.json()["pushed"]["modules"][1] == {
        "step": "train",
        "ref": "train@2",
        "created": True,
    }
    assert sent.json()["pushed"]["pipeline_version"] == {"ref": "loop@2", "created": True}
    version = PipelineVersion.objects.get(pipeline__name="loop", number=2)
    assert version.spec["steps"]["train"]["params"] == {"scale": 2.0}
    assert version.created_by == world.editor


def test_a_bad_source_request_is_a_400_naming_the_field_and_writes_nothing(world):
    client = api_client(world.editor)
    bad_digest = {**source("prep", PREP), "digest": "abc"}
    no_step = {"pipeline": "loop", "spec": SPEC, "modules": {"nope": source("prep", PREP)}}

    digest = push(client, bad_digest, source("train", TRAIN))
    step = client.post(f"{API}/runs/from-source/", no_step, format="json")
    name = push(client, source("prep", PREP), source("train", TRAIN), pipeline="Not A Name")

    assert digest.status_code == 400 and "modules.prep.digest" in error_of(digest)["fields"]
    assert step.status_code == 400 and "modules.nope" in error_of(step)["fields"]
    assert name.status_code == 400 and "pipeline" in error_of(name)["fields"]
    assert ModuleVersion.objects.count() == 0 and PipelineRun.objects.count() == 0


def test_viewers_may_not_start_from_source_and_strangers_do_not_see_the_workspace(world):
    viewer = push(api_client(world.viewer), source("prep", PREP), source("train", TRAIN))
    stranger = push(api_client(world.stranger), source("prep", PREP), source("train", TRAIN))

    assert viewer.status_code == 403
    assert stranger.status_code == 404
    assert ModuleVersion.objects.count() == 0


def test_compare_with_is_null_until_the_run_ends_and_must_be_a_visible_run(world):
    client = api_client(world.editor)
    run = push(client, source("prep", PREP), source("train", TRAIN)).json()
    other = push(client, source("prep", PREP), source("train", TRAIN)).json()

    going = client.get(f"{API}/runs/{other['id']}/", {"compare_with": run["id"]})
    hidden = api_client(world.stranger).get(
        f"/api/v1/workspaces/elsewhere/runs/{other['id']}/", {"compare_with": run["id"]}
    )
    missing = client.get(f"{API}/runs/{other['id']}/", {"compare_with": 10**6})
    wrong = client.get(f"{API}/runs/{other['id']}/", {"wait": 1, "after_event": 0, "until": "x"})

    assert going.status_code == 200 and going.json()["comparison"] is None
    assert hidden.status_code == 404
    assert missing.status_code == 404
    assert wrong.status_code == 400 and "until" in error_of(wrong)["fields"]


@pytest.mark.django_db(transaction=True)
def test_the_end_long_poll_answers_once_with_the_comparison(world, embedded_workers):
    client = api_client(world.editor)
    first = push(client, source("prep", PREP), source("train", TRAIN)).json()
    wait_run(first["id"])
    edited = TRAIN.replace("* scale", "* scale * 2")
    second = push(client, source("prep", PREP, files=False), source("train", edited)).json()

    answer = client.get(
        f"{API}/runs/{second['id']}/",
        {
            "wait": 25,
            "after_event": second["last_event"],
            "until": "end",
            "compare_with": second["previous_run"],
        },
    ).json()

    assert second["previous_run"] == first["id"]
    assert answer["status"] == "succeeded"  # one answer, at the end: no step change woke it
    comparison = answer["comparison"]
    assert comparison["run"] == first["id"]
    assert [row["step"] for row in comparison["ran"]] == ["train"]  # prep was reused
    assert "code changed" in comparison["ran"][0]["why"]
    moved = {row["key"]: row for row in comparison["metrics"] if not row["same"]}
    assert moved["train.total"]["a"] == 6.0 and moved["train.total"]["b"] == 12.0
    assert moved["train.total"]["delta"] == 6.0


@pytest.mark.django_db(transaction=True)
def test_the_client_sends_files_again_when_the_server_lacks_a_digest_it_remembers(
    world, live_server, embedded_workers, tmp_path
):
    project = tmp_path / "project"
    for name, text in (("prep", PREP), ("train", TRAIN)):
        (project / name).mkdir(parents=True)
        (project / name / f"{name}.py").write_text(text)
    (project / "loop.yaml").write_text(
        "steps:\n"
        "  prep: {module: ./prep, entrypoint: prep.py:prep}\n"
        "  train: {module: ./train, entrypoint: train.py:train, inputs: {data: prep.data}}\n"
    )
    with Client(live_server.url, api_token(world.owner), "lab", cache_dir=tmp_path) as client:
        first = client.run_file(project / "loop.yaml")
        # Someone else pushes train: the digest this machine remembers is no longer latest.
        services.module_version_create(
            world.workspace, "train", {"train.py": TRAIN + "\n# theirs\n"}, "train.py:train"
        )
        second = client.run_file(project / "loop.yaml")
        third = client.run_file(project / "loop.yaml")

    assert [m["ref"] for m in first["pushed"]["modules"]] == ["prep@1", "train@1"]
    assert second["pushed"]["modules"][1] == {"step": "train", "ref": "train@3", "created": True}
    assert not any(m["created"] for m in third["pushed"]["modules"])
    assert third["previous_run"] == second["id"]
    remembered = (tmp_path / "pushed.json").read_text()
    assert hashlib.sha256(TRAIN.encode()).hexdigest() not in remembered  # digests of code
    assert code_digest([("train.py", TRAIN.encode())], "train.py:train") in remembered


def test_the_schema_documents_the_loop_endpoint_and_the_end_long_poll(world):
    schema = api_client().get("/api/v1/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/workspaces/{workspace}/runs/from-source/"]["post"]
    detail = schema["paths"]["/api/v1/workspaces/{workspace}/runs/{run_id}/"]["get"]

    assert {"201", "409"} <= set(operation["responses"])
    assert {"until", "compare_with"} <= {p["name"] for p in detail["parameters"]}
