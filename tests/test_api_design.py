"""The design-time API: workspaces and members, modules, pipelines and datasets.

Each endpoint: the success path and what it wrote, validation errors with their field,
another workspace's object as 404, the role rules, and query counts on lists.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from artifacts.store import artifact_store_bytes
from pipelines_app import services
from pipelines_app.models import Dataset, DatasetVersion, ModuleVersion, Pipeline, PipelineVersion
from tests import factories
from tests.helpers import api_token
from tests.test_api_support import PREP, SPEC, TRAIN, api_client, error_of, small_pipeline
from workspaces.models import Membership, Role, Workspace

pytestmark = pytest.mark.django_db

API = "/api/v1/workspaces"


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content)


def queries_for(client: Any, url: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


def assert_same_cost(
    assert_num_queries: Any, client: Any, url: str, add_rows: Any, count_key: int = 1
) -> None:
    """The list costs as many queries for 50 rows as it did for 1."""
    add_rows(1)
    one, body = queries_for(client, url)
    assert body["count"] == count_key
    add_rows(49)
    with assert_num_queries(one):
        response = client.get(url)
    assert response.json()["count"] == count_key + 49
    assert len(response.json()["results"]) == count_key + 49


# --- workspaces ----------------------------------------------------------------------------


def test_workspaces_lists_only_the_callers_with_their_role(world):
    response = api_client(world.viewer).get(f"{API}/")

    assert response.status_code == 200
    assert [(w["slug"], w["role"]) for w in response.json()["results"]] == [("lab", "viewer")]


def test_creating_a_workspace_makes_the_caller_its_owner(world):
    response = api_client(world.viewer).post(
        f"{API}/create/", {"slug": "team-b", "name": "Team B"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    membership = Membership.objects.get(workspace__slug="team-b")
    assert (membership.user, membership.role) == (world.viewer, Role.OWNER)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "Bad Slug", "name": "x"}, "slug"),
        ({"slug": "create", "name": "x"}, "slug"),
        ({"slug": "ok"}, "name"),
    ],
)
def test_creating_a_workspace_validates_its_fields(world, body, field):
    response = api_client(world.owner).post(f"{API}/create/", body, format="json")

    assert response.status_code == 400
    assert field in error_of(response)["fields"]
    assert not Workspace.objects.filter(slug=body["slug"]).exists() or body["slug"] == "lab"


def test_a_taken_slug_is_a_409(world):
    response = api_client(world.owner).post(
        f"{API}/create/", {"slug": "elsewhere", "name": "Mine"}, format="json"
    )

    assert response.status_code == 409
    assert error_of(response)["fields"] == {"slug": ["already taken"]}
    assert Workspace.objects.get(slug="elsewhere").name == "Elsewhere"


def test_workspace_detail_is_404_for_a_stranger(world):
    assert api_client(world.owner).get(f"{API}/lab/").json()["role"] == "owner"
    assert api_client(world.stranger).get(f"{API}/lab/").status_code == 404


def test_the_workspace_list_costs_the_same_for_1_and_50(world, django_assert_num_queries):
    user = get_user_model().objects.create_user("many")

    def add(n: int) -> None:
        start = Workspace.objects.count()
        for i in range(n):
            space = Workspace.objects.create(slug=f"w{start + i}", name="W")
            Membership.objects.create(user=user, workspace=space, role=Role.EDITOR)

    assert_same_cost(
        django_assert_num_queries, api_client(user), f"{API}/?limit=100", add, count_key=1
    )


# --- members -------------------------------------------------------------------------------


def test_members_lists_usernames_and_roles(world):
    response = api_client(world.viewer).get(f"{API}/lab/members/?role=editor")

    assert response.status_code == 200
    assert response.json()["results"][0]["username"] == "eddie"
    assert response.json()["count"] == 1


def test_an_owner_adds_changes_and_removes_a_member(world):
    owner = api_client(world.owner)

    added = owner.post(
        f"{API}/lab/members/set/", {"username": "sam", "role": "editor"}, format="json"
    )
    changed = owner.post(
        f"{API}/lab/members/set/", {"username": "sam", "role": "viewer"}, format="json"
    )
    removed = owner.post(
        f"{API}/lab/members/set/", {"username": "sam", "role": None}, format="json"
    )

    assert added.json() == {"username": "sam", "role": "editor"}
    assert changed.json() == {"username": "sam", "role": "viewer"}
    assert removed.json() == {"username": "sam", "role": None}
    assert not Membership.objects.filter(workspace=world.workspace, user=world.stranger).exists()


def test_an_editor_may_not_change_members(world):
    response = api_client(world.editor).post(
        f"{API}/lab/members/set/", {"username": "vera", "role": "owner"}, format="json"
    )

    assert response.status_code == 403
    assert Membership.objects.get(workspace=world.workspace, user=world.viewer).role == "viewer"


def test_setting_an_unknown_user_or_role_is_a_400(world):
    owner = api_client(world.owner)

    url = f"{API}/lab/members/set/"
    unknown = owner.post(url, {"username": "nobody", "role": "viewer"}, format="json")
    bad_role = owner.post(url, {"username": "vera", "role": "boss"}, format="json")

    assert unknown.status_code == 400
    assert "username" in error_of(unknown)["fields"]
    assert bad_role.status_code == 400
    assert "role" in error_of(bad_role)["fields"]


def test_the_last_owner_cannot_leave(world):
    response = api_client(world.owner).post(
        f"{API}/lab/members/set/", {"username": "olivia", "role": "viewer"}, format="json"
    )

    assert response.status_code == 409
    assert error_of(response)["code"] == "last_owner"


def test_the_member_list_costs_the_same_for_1_and_50(world, django_assert_num_queries):
    space = Workspace.objects.create(slug="big", name="Big")
    Membership.objects.create(user=world.owner, workspace=space, role=Role.OWNER)
    users = get_user_model()

    def add(n: int) -> None:
        start = users.objects.count()
        for i in range(n):
            user = users.objects.create_user(f"u{start + i}")
            Membership.objects.create(user=user, workspace=space, role=Role.VIEWER)

    assert_same_cost(
        django_assert_num_queries,
        api_client(world.owner),
        f"{API}/big/members/?limit=100",
        add,
        count_key=2,
    )


# --- modules -------------------------------------------------------------------------------


def test_pushing_a_module_from_a_json_map_of_files(world):
    response = api_client(world.editor).post(
        f"{API}/lab/modules/prep/versions/create/",
        {"files": {"prep.py": PREP}, "entrypoint": "prep.py:prep", "message": "first"},
        format="json",
    )

    body = response.json()
    assert response.status_code == 201
    assert (body["ref"], body["message"], body["created_by"]) == ("prep@1", "first", "eddie")
    assert body["interface"]["params"]["n"]["default"] == 3
    assert body["interface"]["outputs"] == ["data"]
    version = ModuleVersion.objects.get(module__workspace=world.workspace, module__name="prep")
    assert version.files == {"prep.py": PREP}


def test_pushing_uploaded_files_keeps_their_folders_and_empty_init_files(world):
    source = b"from pkg.k import K\n\ndef prep(ctx, *, n: int = 3):\n    return {'data': K}\n"
    response = api_client(world.editor).post(
        f"{API}/lab/modules/prep/versions/create/",
        {
            "files": [
                upload("main.py", source),
                upload("__init__.py", b""),
                upload("k.py", b"K = 1\n"),
            ],
            "paths": ["main.py", "pkg/__init__.py", "pkg/k.py"],
            "entrypoint": "main.py:prep",
        },
        format="multipart",
    )

    assert response.status_code == 201, response.content
    assert set(response.json()["files"]) == {"main.py", "pkg/__init__.py", "pkg/k.py"}
    assert response.json()["files"]["pkg/k.py"] == "K = 1\n"


def test_pushing_unchanged_code_returns_the_latest_version_with_200(world):
    body = {"files": {"prep.py": PREP}, "entrypoint": "prep.py:prep"}
    client = api_client(world.editor)
    client.post(f"{API}/lab/modules/prep/versions/create/", body, format="json")

    again = client.post(f"{API}/lab/modules/prep/versions/create/", body, format="json")

    assert again.status_code == 200
    assert again.json()["number"] == 1
    assert ModuleVersion.objects.filter(module__name="prep").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"files": {"prep.py": "def prep(ctx:\n"}, "entrypoint": "prep.py:prep"}, "files"),
        ({"files": {"prep.py": PREP}, "entrypoint": "prep.py:nope"}, "entrypoint"),
        ({"files": {"prep.py": PREP}, "entrypoint": "no colon"}, "entrypoint"),
        ({"files": {}, "entrypoint": "prep.py:prep"}, "files"),
        ({"files": {"prep.py": "x\u0000"}, "entrypoint": "prep.py:prep"}, "files.prep.py"),
        ({"files": {"prep.py": PREP}, "entrypoint": "prep.py:prep", "interface": [1]}, "interface"),
    ],
)
def test_a_module_push_names_the_field_that_is_wrong(world, body, field):
    response = api_client(world.editor).post(
        f"{API}/lab/modules/prep/versions/create/", body, format="json"
    )

    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert any(path == field or path.startswith(field + ".") for path in fields), fields
    assert not ModuleVersion.objects.filter(module__name="prep").exists()


def test_a_bad_module_name_is_a_400(world):
    response = api_client(world.editor).post(
        f"{API}/lab/modules/Bad_/versions/create/",
        {"files": {"prep.py": PREP}, "entrypoint": "prep.py:prep"},
        format="json",
    )

    assert response.status_code == 400
    assert "name" in error_of(response)["fields"]


def test_a_viewer_may_not_push_and_a_stranger_sees_no_workspace(world):
    body = {"files": {"prep.py": PREP}, "entrypoint": "prep.py:prep"}

    viewer = api_client(world.viewer).post(
        f"{API}/lab/modules/prep/versions/create/", body, format="json"
    )
    stranger = api_client(world.stranger).post(
        f"{API}/lab/modules/prep/versions/create/", body, format="json"
    )

    assert (viewer.status_code, stranger.status_code) == (403, 404)
    assert not ModuleVersion.objects.exists()


def test_module_reads(world):
    small_pipeline(world.workspace, world.owner)
    services.module_version_create(
        world.workspace, "prep", {"prep.py": PREP + "\n# v2\n"}, "prep.py:prep", "second"
    )
    client = api_client(world.viewer)

    listed = client.get(f"{API}/lab/modules/?name=pre").json()
    detail = client.get(f"{API}/lab/modules/prep/").json()
    versions = client.get(f"{API}/lab/modules/prep/versions/").json()
    version = client.get(f"{API}/lab/modules/prep/versions/2/").json()

    assert [m["name"] for m in listed["results"]] == ["prep"]
    assert (detail["version_count"], detail["latest_number"]) == (2, 2)
    assert [v["number"] for v in versions["results"]] == [2, 1]
    assert versions["results"][0]["parent"] == 1
    assert (version["parent"], version["message"]) == (1, "second")
    assert "prep.py" in version["files"]


def test_module_reads_are_404_across_workspaces(world):
    small_pipeline(world.other_workspace)
    client = api_client(world.owner)

    for url in (
        f"{API}/lab/modules/prep/",
        f"{API}/lab/modules/prep/versions/",
        f"{API}/lab/modules/prep/versions/1/",
        f"{API}/elsewhere/modules/prep/versions/1/",
    ):
        assert client.get(url).status_code == 404, url


def test_module_and_version_lists_cost_the_same_for_1_and_50(world, django_assert_num_queries):
    client = api_client(world.viewer)

    def add_modules(n: int) -> None:
        start = ModuleVersion.objects.count()
        for i in range(n):
            factories.module_version(world.workspace, f"m{start + i}")

    assert_same_cost(
        django_assert_num_queries, client, f"{API}/lab/modules/?limit=100", add_modules
    )

    def add_versions(n: int) -> None:
        start = ModuleVersion.objects.filter(module__name="line").count()
        for i in range(n):
            factories.module_version(world.workspace, "line", number=start + i + 1)

    assert_same_cost(
        django_assert_num_queries,
        client,
        f"{API}/lab/modules/line/versions/?limit=100",
        add_versions,
    )


# --- pipelines -----------------------------------------------------------------------------


def push_modules(workspace: Workspace) -> None:
    services.module_version_create(workspace, "prep", {"prep.py": PREP}, "prep.py:prep")
    services.module_version_create(workspace, "train", {"train.py": TRAIN}, "train.py:train")


def test_pushing_a_pipeline_from_yaml_text(world):
    push_modules(world.workspace)

    response = api_client(world.editor).post(
        f"{API}/lab/pipelines/small/versions/create/", {"spec": SPEC, "message": "m"}, format="json"
    )

    body = response.json()
    assert response.status_code == 201
    assert body["ref"] == "small@1"
    assert [s["name"] for s in body["steps"]] == ["prep", "train"]
    assert body["spec"]["steps"]["train"]["module"] == "train@1"
    assert body["source"] == SPEC
    assert PipelineVersion.objects.get(pipeline__name="small").message == "m"


def test_pushing_a_pipeline_from_a_json_object_and_again_unchanged(world):
    push_modules(world.workspace)
    spec = {"steps": {"prep": {"module": "prep@1", "params": {"n": 5}}}}
    client = api_client(world.editor)

    first = client.post(f"{API}/lab/pipelines/p/versions/create/", {"spec": spec}, format="json")
    again = client.post(f"{API}/lab/pipelines/p/versions/create/", {"spec": spec}, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["spec"]["steps"]["prep"]["params"] == {"n": 5}
    assert PipelineVersion.objects.filter(pipeline__name="p").count() == 1


def test_a_bad_spec_reports_every_problem_by_its_path(world):
    push_modules(world.workspace)
    spec = "steps:\n  prep: {module: prep@9}\n  train: {module: train@1, params: {scale: x}}\n"

    response = api_client(world.editor).post(
        f"{API}/lab/pipelines/p/versions/create/", {"spec": spec}, format="json"
    )

    fields = error_of(response)["fields"]
    assert response.status_code == 400
    assert "steps.prep.module" in fields
    assert "steps.train.params.scale" in fields
    assert "steps.train.inputs.data" in fields
    assert not Pipeline.objects.filter(name="p").exists()


@pytest.mark.parametrize("spec", [42, ["steps"], "steps: [", 'steps: {a: {module: "x\\0"}}', None])
def test_specs_that_are_not_specs_are_400s(world, spec):
    response = api_client(world.editor).post(
        f"{API}/lab/pipelines/p/versions/create/", {"spec": spec}, format="json"
    )

    assert response.status_code == 400
    assert error_of(response)["fields"]


def test_cloning_a_pipeline_version_with_changes_makes_a_child(world):
    small_pipeline(world.workspace)
    client = api_client(world.editor)

    response = client.post(
        f"{API}/lab/pipelines/small/versions/1/clone/",
        {"changes": {"train": {"params": {"scale": 5.0}}}, "message": "bigger"},
        format="json",
    )

    body = response.json()
    assert response.status_code == 201
    assert (body["ref"], body["parent"], body["message"]) == ("small@2", "small@1", "bigger")
    assert body["spec"]["steps"]["train"]["params"] == {"scale": 5.0}


def test_cloning_with_a_whole_spec_or_with_bad_changes(world):
    small_pipeline(world.workspace)
    client = api_client(world.editor)
    url = f"{API}/lab/pipelines/small/versions/1/clone/"

    whole = client.post(url, {"spec": SPEC.replace("2.0", "3.0")}, format="json")
    neither = client.post(url, {"message": "x"}, format="json")
    unknown = client.post(url, {"changes": {"nope": {"params": {}}}}, format="json")

    assert whole.status_code == 201
    assert whole.json()["parent"] == "small@1"
    assert neither.status_code == 400
    assert "changes" in error_of(neither)["fields"]
    assert unknown.status_code == 400
    assert "steps.nope" in error_of(unknown)["fields"]


def test_a_viewer_may_not_clone(world):
    small_pipeline(world.workspace)

    response = api_client(world.viewer).post(
        f"{API}/lab/pipelines/small/versions/1/clone/", {"changes": {}}, format="json"
    )

    assert response.status_code == 403
    assert PipelineVersion.objects.count() == 1


def test_pipeline_reads_and_404s(world):
    small_pipeline(world.workspace)
    client = api_client(world.viewer)

    assert client.get(f"{API}/lab/pipelines/").json()["results"][0]["latest_number"] == 1
    assert client.get(f"{API}/lab/pipelines/small/").json()["version_count"] == 1
    versions = client.get(f"{API}/lab/pipelines/small/versions/").json()["results"]
    assert versions[0]["step_count"] == 2
    assert client.get(f"{API}/lab/pipelines/small/versions/1/").json()["ref"] == "small@1"
    assert client.get(f"{API}/lab/pipelines/small/versions/2/").status_code == 404
    assert api_client(world.stranger).get(f"{API}/lab/pipelines/small/").status_code == 404


def test_pipeline_and_version_lists_cost_the_same_for_1_and_50(world, django_assert_num_queries):
    client = api_client(world.viewer)
    mv = factories.module_version(world.workspace, "m")

    def add_pipelines(n: int) -> None:
        start = Pipeline.objects.count()
        for i in range(n):
            factories.pipeline_version(
                world.workspace, f"p{start + i}", {"a": {"module_version": mv}}
            )

    assert_same_cost(
        django_assert_num_queries, client, f"{API}/lab/pipelines/?limit=100", add_pipelines
    )

    def add_versions(n: int) -> None:
        start = PipelineVersion.objects.filter(pipeline__name="line").count()
        for i in range(n):
            factories.pipeline_version(
                world.workspace, "line", {"a": {"module_version": mv}}, number=start + i + 1
            )

    assert_same_cost(
        django_assert_num_queries,
        client,
        f"{API}/lab/pipelines/line/versions/?limit=100",
        add_versions,
    )


# --- datasets ------------------------------------------------------------------------------


def test_uploading_a_dataset_version(world):
    response = api_client(world.editor).post(
        f"{API}/lab/datasets/iris/versions/create/",
        {"file": upload("iris.csv", b"a,b\n1,2\n"), "message": "first"},
        format="multipart",
    )

    body = response.json()
    assert response.status_code == 201
    assert body["ref"] == "dataset:iris@1"
    assert body["artifact"]["media_type"] == "text/csv"
    assert body["artifact"]["sha256"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert DatasetVersion.objects.get(dataset__name="iris").artifact.size == 8


def test_the_same_bytes_again_return_the_latest_version_and_a_media_type_can_be_given(world):
    client = api_client(world.editor)
    url = f"{API}/lab/datasets/d/versions/create/"
    client.post(
        url, {"file": upload("a.bin", b"xyz"), "media_type": "text/plain"}, format="multipart"
    )

    again = client.post(
        url, {"file": upload("a.bin", b"xyz"), "media_type": "text/plain"}, format="multipart"
    )

    assert again.status_code == 200
    assert again.json()["artifact"]["media_type"] == "text/plain"
    assert DatasetVersion.objects.count() == 1


def test_a_dataset_upload_needs_a_nonempty_file_and_an_editor(world):
    url = f"{API}/lab/datasets/d/versions/create/"

    missing = api_client(world.editor).post(url, {"message": "x"}, format="multipart")
    empty = api_client(world.editor).post(url, {"file": upload("a.csv", b"")}, format="multipart")
    viewer = api_client(world.viewer).post(url, {"file": upload("a.csv", b"1")}, format="multipart")
    as_json = api_client(world.editor).post(url, {"file": "x"}, format="json")

    assert missing.status_code == 400 and "file" in error_of(missing)["fields"]
    assert empty.status_code == 400
    assert viewer.status_code == 403
    assert as_json.status_code == 415
    assert not Dataset.objects.exists()


def test_dataset_reads_and_404s(world):
    services.dataset_version_create(world.workspace, "d", b"1,2\n", "text/csv", "one")
    services.dataset_version_create(world.workspace, "d", b"3,4\n", "text/csv", "two")
    client = api_client(world.viewer)

    assert client.get(f"{API}/lab/datasets/").json()["results"][0]["latest_size"] == 4
    assert client.get(f"{API}/lab/datasets/d/").json()["version_count"] == 2
    versions = client.get(f"{API}/lab/datasets/d/versions/").json()["results"]
    assert [v["message"] for v in versions] == ["two", "one"]
    assert client.get(f"{API}/lab/datasets/d/versions/1/").json()["artifact"]["size"] == 4
    assert api_client(world.stranger).get(f"{API}/lab/datasets/d/versions/1/").status_code == 404


def test_dataset_and_version_lists_cost_the_same_for_1_and_50(world, django_assert_num_queries):
    client = api_client(world.viewer)

    def add_datasets(n: int) -> None:
        start = Dataset.objects.count()
        for i in range(n):
            artifact = artifact_store_bytes(world.workspace, f"{start + i}".encode(), "text/csv")
            dataset = Dataset.objects.create(workspace=world.workspace, name=f"d{start + i}")
            DatasetVersion.objects.create(dataset=dataset, number=1, artifact=artifact)

    assert_same_cost(
        django_assert_num_queries, client, f"{API}/lab/datasets/?limit=100", add_datasets
    )

    line = Dataset.objects.create(workspace=world.workspace, name="line")

    def add_versions(n: int) -> None:
        start = line.versions.count()
        for i in range(n):
            artifact = artifact_store_bytes(world.workspace, f"v{start + i}".encode(), "text/csv")
            DatasetVersion.objects.create(
                dataset=line, number=start + i + 1, artifact=artifact, created_by=world.owner
            )

    assert_same_cost(
        django_assert_num_queries,
        client,
        f"{API}/lab/datasets/line/versions/?limit=100",
        add_versions,
    )


def test_tokens_are_per_user_so_each_sees_their_own_workspaces(world):
    api_token(world.stranger)

    slugs = [w["slug"] for w in api_client(world.stranger).get(f"{API}/").json()["results"]]

    assert slugs == ["elsewhere"]
