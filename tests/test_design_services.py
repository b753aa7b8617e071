"""Design-time services: what they write, what they refuse, and that refusals write nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.forms.models import model_to_dict

from artifacts.models import Artifact
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    InterfaceSource,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
)
from pipelines_app.services import (
    dataset_version_create,
    module_code_digest,
    module_version_create,
    module_version_create_from_dir,
    pipeline_version_clone,
    pipeline_version_create,
)
from workspaces.errors import DomainError
from workspaces.models import Membership, Role, Workspace
from workspaces.services import membership_set, workspace_create

PREP = "def run(ctx, raw, *, test_size: float = 0.25):\n    return {'train': raw, 'test': raw}\n"
TRAIN = (
    "import torch\ndef fit(ctx, train, *, hidden: int = 32, seed: int):\n    return {'model': 1}\n"
)


def counts() -> dict[str, int]:
    models = (Module, ModuleVersion, Pipeline, PipelineVersion, PipelineStep, Dataset)
    tallies = {model.__name__: model.objects.count() for model in models}
    tallies["DatasetVersion"] = DatasetVersion.objects.count()
    tallies["Artifact"] = Artifact.objects.count()
    tallies["Workspace"] = Workspace.objects.count()
    tallies["Membership"] = Membership.objects.count()
    return tallies


def refused(call: Any, *args: Any, **kwargs: Any) -> DomainError:
    """Run a call that must be refused, and check it wrote nothing."""
    before = counts()
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    assert counts() == before
    return caught.value


def push_prep(world: Any, source: str = PREP, **kwargs: Any) -> ModuleVersion:
    return module_version_create(
        world.workspace, "prep", {"prep.py": source}, "prep.py:run", **kwargs
    )


def push_train(world: Any) -> ModuleVersion:
    return module_version_create(world.workspace, "train_mlp", {"train.py": TRAIN}, "train.py:fit")


def push_iris(world: Any, data: bytes = b"a,b\n1,2\n") -> DatasetVersion:
    return dataset_version_create(world.workspace, "iris", data, "text/csv")


SPEC = """
steps:
  prep:  {module: prep@latest, inputs: {raw: "dataset:iris@latest"}}
  train: {module: train_mlp@1, inputs: {train: prep.train}, params: {seed: 0}}
"""


# --- workspaces and members ---------------------------------------------------------------------


def test_workspace_create_makes_the_owner_its_first_owner(world: Any) -> None:
    workspace = workspace_create("team-b", "Team B", world.editor)
    assert workspace.name == "Team B"
    assert Membership.objects.get(workspace=workspace).user == world.editor
    assert Membership.objects.get(workspace=workspace).role == Role.OWNER


def test_workspace_create_refuses_a_taken_slug(world: Any) -> None:
    error = refused(workspace_create, "lab", "Another lab", world.editor)
    assert (error.code, error.status_code, error.fields) == (
        "conflict",
        409,
        {"slug": ["already taken"]},
    )


@pytest.mark.parametrize("slug", ["", "Lab", "a b", "-lab", "lab_1", "x" * 65])
def test_workspace_create_refuses_a_bad_slug(world: Any, slug: str) -> None:
    assert "slug" in refused(workspace_create, slug, "X", world.editor).fields


def test_membership_set_adds_changes_and_removes(world: Any) -> None:
    newcomer = get_user_model().objects.create_user("nina")
    membership = membership_set(world.workspace, newcomer, Role.VIEWER)
    assert membership is not None and membership.role == Role.VIEWER
    membership_set(world.workspace, newcomer, Role.EDITOR)
    assert Membership.objects.get(user=newcomer).role == Role.EDITOR
    assert membership_set(world.workspace, newcomer, None) is None
    assert not Membership.objects.filter(user=newcomer).exists()


def test_the_last_owner_can_be_neither_demoted_nor_removed(world: Any) -> None:
    for role in (Role.EDITOR, None):
        error = refused(membership_set, world.workspace, world.owner, role)
        assert error.code == "last_owner"
    assert Membership.objects.get(user=world.owner, workspace=world.workspace).role == Role.OWNER


def test_an_owner_may_step_down_once_there_is_another(world: Any) -> None:
    membership_set(world.workspace, world.editor, Role.OWNER)
    membership_set(world.workspace, world.owner, Role.VIEWER)
    assert Membership.objects.get(user=world.owner, workspace=world.workspace).role == Role.VIEWER


def test_membership_set_refuses_an_unknown_role(world: Any) -> None:
    assert refused(membership_set, world.workspace, world.viewer, "admin").code == "invalid_role"


# --- module versions ----------------------------------------------------------------------------


def test_module_versions_count_up_per_module_and_record_their_parent(world: Any) -> None:
    first = push_prep(world, message="first")
    train = push_train(world)
    second = push_prep(world, PREP.replace("0.25", "0.3"), user=world.editor)
    assert (first.number, second.number, train.number) == (1, 2, 1)
    assert first.parent is None and second.parent == first
    assert second.created_by == world.editor and first.message == "first"
    assert second.ref == "prep@2"


def test_module_version_records_interface_imports_and_warnings(world: Any) -> None:
    version = push_train(world)
    assert version.interface["inputs"] == ["train"]
    assert version.interface["params"]["seed"] == {"type": "int", "required": True}
    assert version.interface_source == InterfaceSource.INFERRED
    assert version.imports == ["torch"]
    assert version.warnings == ["imports 'torch', which workers do not have"]


def test_code_digest_covers_sorted_file_hashes_and_the_entrypoint(world: Any) -> None:
    files = {"b.py": "B = 1\n", "prep.py": PREP}
    version = module_version_create(world.workspace, "prep", files, "prep.py:run")
    lines = sorted(f"{p}\0{hashlib.sha256(t.encode()).hexdigest()}" for p, t in files.items())
    text = "\n".join([*lines, "entrypoint\0prep.py:run"])
    assert version.code_digest == hashlib.sha256(text.encode()).hexdigest()
    assert module_code_digest(files, "prep.py:run") == version.code_digest
    assert module_code_digest(files, "b.py:run") != version.code_digest


def test_an_identical_push_returns_the_latest_version_unchanged(world: Any) -> None:
    first = push_prep(world)
    before = counts()
    again = push_prep(world, message="same code again")
    assert again.pk == first.pk and again.message == ""
    assert counts() == before


def test_same_code_with_another_interface_is_a_new_version(world: Any) -> None:
    first = push_prep(world)
    interface = {"inputs": ["raw"], "outputs": ["train"], "params": {}}
    second = push_prep(world, interface=interface)
    assert second.number == 2 and second.code_digest == first.code_digest
    assert second.interface_source == InterfaceSource.EXPLICIT
    assert second.interface["outputs"] == ["train"]


def test_a_new_push_never_updates_the_previous_version(world: Any) -> None:
    first = push_prep(world)
    snapshot = model_to_dict(ModuleVersion.objects.get(pk=first.pk))
    push_prep(world, PREP.replace("0.25", "0.5"), message="bump")
    assert model_to_dict(ModuleVersion.objects.get(pk=first.pk)) == snapshot
    assert ModuleVersion.objects.filter(module__name="prep").count() == 2


@pytest.mark.parametrize(
    ("files", "entrypoint", "field"),
    [
        ({}, "prep.py:run", "files"),
        ({"prep.py": ""}, "prep.py:run", "files.prep.py"),
        ({"prep.py": "def run(ctx:\n"}, "prep.py:run", "files.prep.py"),
        ({"prep.py": PREP}, "prep.py:missing", "entrypoint"),
        ({"prep.py": PREP, "../x.py": "x = 1"}, "prep.py:run", "files.../x.py"),
    ],
)
def test_a_rejected_module_push_writes_nothing(
    world: Any, files: dict[str, str], entrypoint: str, field: str
) -> None:
    error = refused(module_version_create, world.workspace, "fresh", files, entrypoint)
    assert error.code == "invalid_module" and field in error.fields


def test_a_module_name_must_be_a_slug(world: Any) -> None:
    error = refused(module_version_create, world.workspace, "Bad Name", {"p.py": PREP}, "p.py:run")
    assert error.code == "invalid_name"


def test_a_parent_from_another_module_is_refused_and_the_new_module_is_not_kept(world: Any) -> None:
    other = push_train(world)
    error = refused(
        module_version_create, world.workspace, "fresh", {"p.py": PREP}, "p.py:run", parent=other
    )
    assert "parent" in error.fields


def test_sources_over_the_size_limit_are_refused(world: Any, settings: Any) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "MAX_SOURCE_BYTES": 100}
    files = {"p.py": PREP + "# " + "x" * 200 + "\n"}
    error = refused(module_version_create, world.workspace, "prep", files, "p.py:run")
    assert "the limit is 100" in error.fields["files"][0]


def test_push_from_a_folder_skips_caches_and_dotfiles(world: Any, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "prep.py").write_text("from pkg.helpers import scale\n" + PREP)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "helpers.py").write_text("def scale(x):\n    return x\n")
    (tmp_path / "notes.md").write_text("# why\n")
    (tmp_path / "__pycache__" / "prep.cpython-311.pyc").write_bytes(b"\x00\x01")
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / ".env").write_text("SECRET=1")
    version = module_version_create_from_dir(world.workspace, "prep", tmp_path, "prep.py:run")
    assert sorted(version.files) == ["notes.md", "pkg/__init__.py", "pkg/helpers.py", "prep.py"]
    assert version.imports == []


def test_push_from_a_single_file(world: Any, tmp_path: Path) -> None:
    (tmp_path / "prep.py").write_text(PREP)
    version = module_version_create_from_dir(
        world.workspace, "prep", tmp_path / "prep.py", "prep.py:run"
    )
    assert version.files == {"prep.py": PREP}


def test_push_from_a_folder_refuses_binary_missing_and_oversized(
    world: Any, tmp_path: Path, settings: Any
) -> None:
    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "model.pkl").write_bytes(b"\x80\x04\x95\x00\xff")
    error = refused(
        module_version_create_from_dir, world.workspace, "prep", tmp_path, "prep.py:run"
    )
    assert "binary" in error.fields["files.model.pkl"][0]
    missing = tmp_path / "nowhere"
    error = refused(module_version_create_from_dir, world.workspace, "prep", missing, "prep.py:run")
    assert error.fields == {"path": ["no such file or folder"]}
    settings.STEPWORKS = {**settings.STEPWORKS, "MAX_SOURCE_BYTES": 10}
    (tmp_path / "model.pkl").unlink()
    error = refused(
        module_version_create_from_dir, world.workspace, "prep", tmp_path, "prep.py:run"
    )
    assert "the limit is 10" in error.fields["files"][0]


# --- pipeline versions --------------------------------------------------------------------------


def test_pipeline_version_create_stores_the_resolved_spec_and_its_steps(world: Any) -> None:
    prep = push_prep(world)
    train = push_train(world)
    iris = push_iris(world)
    version = pipeline_version_create(
        world.workspace, "classify", SPEC, message="v1", user=world.owner
    )
    assert version.ref == "classify@1" and version.parent is None and version.source == SPEC
    assert version.spec["steps"]["prep"] == {
        "module": "prep@1",
        "module_version": prep.pk,
        "params": {},
        "inputs": {"raw": "dataset:iris@1"},
    }
    steps = list(
        version.steps.order_by("position").values_list("name", "position", "module_version")
    )
    assert steps == [("prep", 0, prep.pk), ("train", 1, train.pk)]
    assert iris.number == 1


def test_pipeline_versions_count_up_with_the_previous_as_parent(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    first = pipeline_version_create(world.workspace, "classify", SPEC)
    second = pipeline_version_create(
        world.workspace, "classify", SPEC.replace("seed: 0", "seed: 1")
    )
    assert (first.number, second.number, second.parent) == (1, 2, first)


def test_an_identical_pipeline_push_returns_the_latest_version(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    first = pipeline_version_create(world.workspace, "classify", SPEC)
    before = counts()
    assert pipeline_version_create(world.workspace, "classify", SPEC).pk == first.pk
    assert counts() == before


def test_latest_is_resolved_at_creation(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    first = pipeline_version_create(world.workspace, "classify", SPEC)
    push_prep(world, PREP.replace("0.25", "0.4"))
    push_iris(world, b"a,b\n3,4\n")
    second = pipeline_version_create(world.workspace, "classify", SPEC)
    assert first.spec["steps"]["prep"]["module"] == "prep@1"
    assert second.spec["steps"]["prep"]["module"] == "prep@2"
    assert second.spec["steps"]["prep"]["inputs"] == {"raw": "dataset:iris@2"}


def test_a_rejected_spec_writes_nothing(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    bad = SPEC.replace("seed: 0", "seed: abc")
    error = refused(pipeline_version_create, world.workspace, "classify", bad)
    assert error.fields == {"steps.train.params.seed": ["expected int, got 'abc'"]}


def test_modules_of_another_workspace_are_unknown(world: Any) -> None:
    module_version_create(world.other_workspace, "prep", {"p.py": PREP}, "p.py:run")
    spec = {"steps": {"prep": {"module": "prep@1", "inputs": {"raw": "dataset:iris@1"}}}}
    error = refused(pipeline_version_create, world.workspace, "classify", spec)
    assert error.fields == {
        "steps.prep.module": ["no module 'prep' in this workspace"],
        "steps.prep.inputs.raw": ["no dataset 'iris' in this workspace"],
    }


def test_validation_queries_do_not_grow_with_the_steps(
    world: Any, django_assert_num_queries: Any
) -> None:
    push_prep(world), push_iris(world)

    def spec(n: int) -> dict[str, Any]:
        steps = {
            f"s{i}": {"module": "prep@1", "inputs": {"raw": "dataset:iris@1"}} for i in range(n)
        }
        return {"steps": steps}

    pipeline_version_create(world.workspace, "warmup", spec(1))  # the pipeline row exists now
    # catalogue (2), savepoint, locked pipeline, latest version, 2 inserts, release
    with django_assert_num_queries(8):
        pipeline_version_create(world.workspace, "warmup", spec(2))
    with django_assert_num_queries(8):
        pipeline_version_create(world.workspace, "warmup", spec(8))


def test_clone_changes_params_and_records_its_parent(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    base = pipeline_version_create(world.workspace, "classify", SPEC)
    snapshot = model_to_dict(PipelineVersion.objects.get(pk=base.pk))
    pipeline_version_create(world.workspace, "classify", SPEC.replace("seed: 0", "seed: 5"))
    clone = pipeline_version_clone(
        base, {"train": {"params": {"hidden": 128}}}, "wider", world.editor
    )
    assert clone.number == 3 and clone.parent == base and clone.message == "wider"
    assert clone.spec["steps"]["train"]["params"] == {"hidden": 128, "seed": 0}
    assert model_to_dict(PipelineVersion.objects.get(pk=base.pk)) == snapshot


def test_clone_swaps_a_module_version(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    base = pipeline_version_create(world.workspace, "classify", SPEC)
    newer = push_prep(world, PREP.replace("0.25", "0.5"))
    clone = pipeline_version_clone(
        base, {"prep": {"module": "prep@2", "params": {"test_size": 0.1}}}
    )
    assert clone.spec["steps"]["prep"]["module_version"] == newer.pk
    assert clone.spec["steps"]["prep"]["params"] == {"test_size": 0.1}
    assert clone.steps.get(name="prep").module_version == newer


def test_clone_from_spec_text(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    base = pipeline_version_create(world.workspace, "classify", SPEC)
    clone = pipeline_version_clone(base, SPEC.replace("seed: 0", "seed: 9"))
    assert clone.parent == base and clone.spec["steps"]["train"]["params"] == {"seed": 9}


def test_a_rejected_clone_writes_nothing(world: Any) -> None:
    push_prep(world), push_train(world), push_iris(world)
    base = pipeline_version_create(world.workspace, "classify", SPEC)
    error = refused(pipeline_version_clone, base, {"ghost": {"params": {}}})
    assert error.fields == {"steps.ghost": ["no step 'ghost' in the version being cloned"]}
    error = refused(pipeline_version_clone, base, {"train": {"params": {"hidden": "wide"}}})
    assert error.fields == {"steps.train.params.hidden": ["expected int, got 'wide'"]}


# --- datasets -----------------------------------------------------------------------------------


def test_dataset_versions_count_up_and_store_their_bytes(world: Any) -> None:
    first = push_iris(world)
    second = push_iris(world, b"a,b\n5,6\n")
    assert (first.number, second.number) == (1, 2)
    assert first.artifact.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert first.artifact.media_type == "text/csv"
    assert first.artifact.workspace == world.workspace


def test_the_same_bytes_again_return_the_latest_dataset_version(world: Any) -> None:
    first = push_iris(world)
    before = counts()
    assert push_iris(world).pk == first.pk
    assert counts() == before


@pytest.mark.parametrize(
    ("name", "data", "media_type", "field"),
    [
        ("iris", b"", "text/csv", "data"),
        ("iris", "text", "text/csv", "data"),
        ("iris", b"x", "csv", "media_type"),
        ("Iris Data", b"x", "text/csv", "name"),
    ],
)
def test_a_rejected_dataset_push_writes_nothing(
    world: Any, name: str, data: Any, media_type: str, field: str
) -> None:
    error = refused(dataset_version_create, world.workspace, name, data, media_type)
    assert field in error.fields


def test_a_sweeps_variant_version_never_becomes_latest(world: Any) -> None:
    from pipelines_app.models import VersionOrigin
    from pipelines_app.selectors import pipeline_version_by_ref
    from pipelines_app.services import (
        module_version_create,
        pipeline_version_clone,
        pipeline_version_create,
    )

    for name in ("a", "b"):
        module_version_create(
            world.workspace, name, {"m.py": "def run(ctx):\n    return {'out': 1}\n"}, "m.py:run"
        )
    base = pipeline_version_create(world.workspace, "p", {"steps": {"s": {"module": "a@1"}}})
    variant = pipeline_version_clone(
        base, {"s": {"module": "b@1"}}, "sweep x: s=b", origin=VersionOrigin.SWEEP
    )

    assert pipeline_version_by_ref(world.workspace, "p") == base
    assert pipeline_version_by_ref(world.workspace, "p@latest") == base
    again = pipeline_version_create(world.workspace, "p", {"steps": {"s": {"module": "a@1"}}})
    assert again == base  # identical to the latest version people made
    promoted = pipeline_version_clone(base, {"s": {"module": "b@1"}}, "promote b")
    assert (variant.number, promoted.number) == (2, 3)
    assert promoted.origin == VersionOrigin.USER and promoted.parent == base
    assert pipeline_version_by_ref(world.workspace, "p") == promoted
