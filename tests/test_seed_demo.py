"""manage.py seed_demo: the demo world, created once and found the second time."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.storage import storages
from django.core.management import call_command

from artifacts.models import Artifact
from pipelines_app import services
from pipelines_app.management.commands.seed_demo import DEMO_MODULES, digits_parquet
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
)
from workspaces.models import Membership, Role, Workspace

pytestmark = pytest.mark.django_db

SEEDED = (
    Workspace,
    Membership,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineVersion,
    PipelineStep,
    Dataset,
    DatasetVersion,
    Artifact,
)


def _int(default: int) -> dict[str, Any]:
    return {"type": "int", "required": False, "default": default}


def _float(default: float) -> dict[str, Any]:
    return {"type": "float", "required": False, "default": default}


SPLIT = {"test_size": _float(0.25), "split_seed": _int(0)}
# (module, version) -> (inputs, outputs, params), as read from the code by ast
INTERFACES = {
    ("prep_standardize", 1): (["data"], ["train", "test"], SPLIT),
    ("prep_minmax", 1): (["data"], ["train", "test"], SPLIT),
    ("prep_pca", 1): (["data"], ["train", "test"], {**SPLIT, "n_components": _int(16)}),
    ("augment_none", 1): (["train"], ["train"], {}),
    ("augment_noise", 1): (
        ["train"],
        ["train"],
        {"copies": _int(1), "scale": _float(0.1), "seed": _int(0)},
    ),
    ("train_logreg", 1): (["train"], ["model"], {"C": _float(1.0), "seed": _int(0)}),
    ("train_rf", 1): (
        ["train"],
        ["model"],
        {"n_estimators": _int(100), "max_depth": _int(8), "seed": _int(0)},
    ),
    ("train_mlp", 1): (
        ["train"],
        ["model"],
        {"hidden": _int(64), "max_iter": _int(300), "seed": _int(0)},
    ),
    ("train_mlp", 2): (
        ["train"],
        ["model"],
        {"hidden": _int(128), "max_iter": _int(300), "seed": _int(0)},
    ),
    ("evaluate", 1): (["model", "test"], ["metrics", "confusion", "report"], {}),
}


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    rows = {model.__name__: model.objects.count() for model in SEEDED}
    rows["User"] = get_user_model().objects.count()
    return rows


def test_seed_demo_twice_creates_everything_once() -> None:
    first = seed()
    after_first = counts()
    second = seed()

    assert counts() == after_first
    assert after_first == {
        "Workspace": 1,
        "Membership": 1,
        "Module": 9,
        "ModuleVersion": 10,
        "Pipeline": 1,
        "PipelineVersion": 1,
        "PipelineStep": 4,
        "Dataset": 1,
        "DatasetVersion": 1,
        "Artifact": 1,
        "User": 1,
    }
    assert "created user demo (password: demo)" in first
    assert "created pipeline classify@1" in first and "train=train_mlp@2" in first
    assert "created" not in second and "found   pipeline classify@1" in second


def test_demo_user_owns_the_demo_workspace_and_signs_in_with_demo() -> None:
    seed()
    user = get_user_model().objects.get(username="demo")
    assert user.check_password("demo")
    membership = Membership.objects.get(user=user, workspace__slug="demo")
    assert membership.role == Role.OWNER


def test_reseeding_leaves_a_changed_password_alone() -> None:
    seed()
    user = get_user_model().objects.get(username="demo")
    user.set_password("something-else-1")
    user.save()
    seed()
    user.refresh_from_db()
    assert user.check_password("something-else-1")


def test_classify_runs_four_pinned_steps_in_order_on_the_digits_dataset() -> None:
    seed()
    version = PipelineVersion.objects.get(
        pipeline__workspace__slug="demo", pipeline__name="classify"
    )

    steps = list(version.steps.select_related("module_version__module"))
    assert [(s.name, s.position) for s in steps] == [
        ("prep", 0),
        ("augment", 1),
        ("train", 2),
        ("evaluate", 3),
    ]
    assert [s.module_version.ref for s in steps] == [
        "prep_standardize@1",
        "augment_noise@1",
        "train_mlp@2",
        "evaluate@1",
    ]
    inputs = {s.name: s.inputs for s in steps}
    assert inputs == {
        "prep": {"data": "dataset:digits@1"},
        "augment": {"train": "prep.train"},
        "train": {"train": "augment.train"},
        "evaluate": {"model": "train.model", "test": "prep.test"},
    }
    assert version.spec["steps"]["prep"]["inputs"] == {"data": "dataset:digits@1"}


def test_digits_dataset_is_deterministic_parquet_of_features_and_target() -> None:
    assert digits_parquet() == digits_parquet()
    seed()
    version = DatasetVersion.objects.select_related("artifact").get(dataset__name="digits")

    assert version.number == 1
    assert version.artifact.media_type == "application/vnd.apache.parquet"
    with storages["artifacts"].open(version.artifact.storage_name) as handle:
        frame = pd.read_parquet(io.BytesIO(handle.read()))
    assert frame.shape == (1797, 65)
    assert list(frame.columns[:2]) == ["pixel_0_0", "pixel_0_1"] and frame.columns[-1] == "target"
    assert isinstance(frame.index, pd.RangeIndex)
    assert sorted(frame["target"].unique()) == list(range(10))


def test_every_module_interface_is_read_from_the_code() -> None:
    seed()
    versions = ModuleVersion.objects.filter(module__workspace__slug="demo").select_related("module")

    found = {(v.module.name, v.number): v for v in versions}
    assert set(found) == set(INTERFACES)
    for key, (inputs, outputs, params) in INTERFACES.items():
        version = found[key]
        assert version.interface_source == "inferred", key
        assert version.interface["inputs"] == inputs, key
        assert version.interface["outputs"] == outputs, key
        assert version.interface["params"] == params, key
        assert version.warnings == [], key
    assert found[("train_mlp", 2)].parent == found[("train_mlp", 1)]
    assert "plotly" in found[("evaluate", 1)].imports


def test_every_example_folder_is_seeded() -> None:
    folders = {p.name for p in (settings.BASE_DIR / "examples").iterdir() if p.is_dir()}
    assert {m.folder for m in DEMO_MODULES} == folders - {"__pycache__"}


def test_reseeding_after_users_evolve_the_demo_adds_nothing() -> None:
    """A user's train_mlp@3 and classify@2 must not make the next seed push old copies."""
    seed()
    workspace = Workspace.objects.get(slug="demo")
    classify = PipelineVersion.objects.get(pipeline__name="classify")
    mlp_v2 = (settings.BASE_DIR / "examples" / "train_mlp_v2" / "train.py").read_text()
    mlp3 = services.module_version_create(
        workspace,
        "train_mlp",
        {"train.py": mlp_v2.replace("hidden: int = 128", "hidden: int = 256")},
        "train.py:train",
        message="mine",
    )
    services.pipeline_version_clone(classify, {"train": {"module": mlp3.ref}}, message="mine")
    before = counts()

    output = seed()

    assert counts() == before
    assert "found   pipeline classify@1" in output
