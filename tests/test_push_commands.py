"""The design-time commands: what they print, and one readable line with exit 2 on refusal."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError

from pipelines_app.models import Module, ModuleVersion, PipelineVersion
from pipelines_app.services import dataset_version_create
from workspaces.models import Workspace

PREP = "def run(ctx, raw, *, test_size: float = 0.25):\n    return {'train': raw, 'test': raw}\n"
SPEC = """
steps:
  prep: {module: prep@latest, inputs: {raw: "dataset:iris@latest"}, params: {test_size: 0.3}}
"""


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert caught.value.returncode == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prep"
    folder.mkdir()
    (folder / "prep.py").write_text(PREP)
    return folder


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "classify.yaml"
    path.write_text(SPEC)
    return path


def test_create_workspace_prints_its_slug(world: Any) -> None:
    out, _ = run("create_workspace", "team-b", "--name", "Team B", "--owner", "eddie")
    assert out == "team-b\n"
    assert Workspace.objects.get(slug="team-b").memberships.get().user == world.editor


def test_create_workspace_refusals(world: Any) -> None:
    taken = refused("create_workspace", "lab", "--name", "Lab", "--owner", "eddie")
    assert taken == "conflict: slug: already taken"
    assert refused("create_workspace", "x", "--name", "X", "--owner", "nobody") == (
        "not_found: no user 'nobody'"
    )


def test_push_module_prints_the_new_ref_and_counts_up(world: Any, module_dir: Path) -> None:
    out, _ = run(
        "push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run"
    )
    assert out == "prep@1\n"
    (module_dir / "prep.py").write_text(PREP.replace("0.25", "0.5"))
    out, _ = run(
        "push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run",
        "-m", "smaller test split",
    )  # fmt: skip
    assert out == "prep@2\n"
    assert ModuleVersion.objects.get(module__name="prep", number=2).message == "smaller test split"


def test_push_module_twice_says_unchanged(world: Any, module_dir: Path) -> None:
    args = ("push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run")
    run(*args)
    out, err = run(*args)
    assert out == "prep@1\n"
    assert "unchanged" in err
    assert ModuleVersion.objects.count() == 1


def test_push_module_prints_import_warnings(world: Any, module_dir: Path) -> None:
    (module_dir / "prep.py").write_text("import torch\n" + PREP)
    out, err = run(
        "push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run"
    )
    assert out == "prep@1\n"
    assert err == "warning: imports 'torch', which workers do not have\n"


def test_push_module_refusal_is_one_line_and_writes_nothing(world: Any, module_dir: Path) -> None:
    (module_dir / "broken.py").write_text("def f(:\n")
    message = refused(
        "push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:nope"
    )
    assert message == (
        "invalid_module: files.broken.py: syntax error on line 1: invalid syntax; "
        "entrypoint: no top-level function 'nope' in the entry file"
    )
    assert Module.objects.count() == 0


def test_push_module_to_an_unknown_workspace(world: Any, module_dir: Path) -> None:
    message = refused(
        "push_module", "nope", str(module_dir), "--name", "p", "--entrypoint", "p.py:f"
    )
    assert message == "not_found: no workspace 'nope'"


def test_push_pipeline_prints_the_new_ref(world: Any, module_dir: Path, spec_file: Path) -> None:
    run("push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run")
    dataset_version_create(world.workspace, "iris", b"a\n1\n", "text/csv")
    out, _ = run("push_pipeline", "lab", str(spec_file), "--name", "classify", "-m", "first")
    assert out == "classify@1\n"
    version = PipelineVersion.objects.get()
    assert version.message == "first" and version.source == SPEC


def test_push_pipeline_refusal_lists_every_problem_on_one_line(
    world: Any, module_dir: Path, spec_file: Path
) -> None:
    run("push_module", "lab", str(module_dir), "--name", "prep", "--entrypoint", "prep.py:run")
    spec_file.write_text(SPEC.replace("0.3", "abc"))
    message = refused("push_pipeline", "lab", str(spec_file), "--name", "classify")
    assert message == (
        "invalid_spec: steps.prep.params.test_size: expected float, got 'abc'; "
        "steps.prep.inputs.raw: no dataset 'iris' in this workspace"
    )
    assert PipelineVersion.objects.count() == 0


def test_push_pipeline_yaml_error_stays_on_one_line(world: Any, spec_file: Path) -> None:
    spec_file.write_text("steps:\n  prep: {module: prep@1\n  x: 1\n")
    assert refused("push_pipeline", "lab", str(spec_file), "--name", "c").startswith(
        "invalid_spec: spec: not valid YAML or JSON: line 3"
    )


def test_push_pipeline_missing_file(world: Any, tmp_path: Path) -> None:
    message = refused("push_pipeline", "lab", str(tmp_path / "none.yaml"), "--name", "c")
    assert message.startswith("invalid_spec: spec: cannot read")


@pytest.mark.django_db(transaction=True)
def test_a_refused_command_exits_2_with_one_line_on_stderr(
    world: Any, spec_file: Path, capsys: Any
) -> None:
    spec_file.write_text("steps: {}\n")
    argv = ["manage.py", "push_pipeline", "lab", str(spec_file), "--name", "classify"]
    with pytest.raises(SystemExit) as caught:
        execute_from_command_line(argv)
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "CommandError: invalid_spec: steps: a pipeline needs at least one step: "
        "a mapping of name -> step"
    ]
