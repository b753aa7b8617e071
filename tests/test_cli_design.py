"""The CLI's design side against a live test server: module diff and pull, pipeline clone,
clone of a run, dataset push and list, and the "did you mean" of a name that is not there."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from pipelines_app.models import Dataset, ModuleVersion, PipelineVersion
from runs_app.models import PipelineRun
from stepworks import Client
from tests.helpers import api_token
from tests.test_api_support import PREP, TRAIN
from tests.test_cli import SPEC, Cli, module_folder

pytestmark = pytest.mark.django_db(transaction=True)

TRAIN_V2 = TRAIN.replace("scale: float = 1.0", "scale: float = 2.0")


@pytest.fixture
def cli(world, live_server, tmp_path) -> Cli:
    """The owner, logged in, as in test_cli.py."""
    shell = Cli(tmp_path / "home")
    shell("login", live_server.url, "--token", api_token(world.owner))
    return shell


def flat(text: str) -> str:
    """The output as one line: the terminal wraps long messages."""
    return " ".join(text.split())


def push_small(cli: Cli, tmp_path: Path) -> None:
    """prep@1, train@1 and small@1 (prep -> train), pushed as a user does."""
    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    (tmp_path / "small.yaml").write_text(SPEC)
    cli("pipeline", "push", str(tmp_path / "small.yaml"))


def push_train_v2(cli: Cli, tmp_path: Path) -> None:
    """train@2: another default for scale, and a second file."""
    folder = tmp_path / "train_v2"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN_V2)
    (folder / "notes.py").write_text("NOTE = 'wider'\n")
    cli("module", "push", str(folder), "--name", "train", "-e", "train.py:train")


def test_module_diff_shows_the_code_and_interface_changes(cli, world, tmp_path):
    push_small(cli, tmp_path)
    push_train_v2(cli, tmp_path)

    newest = cli("module", "diff", "train")
    explicit = cli("module", "diff", "train", "1", "2")
    from_one = cli("module", "diff", "train", "1")
    body = cli.json("module", "diff", "train")
    first = cli("module", "diff", "prep")
    same = cli("module", "diff", "train", "2", "2")
    missing = cli("module", "diff", "train", "1", "9", code=3)

    lines = newest.stdout.splitlines()
    assert lines[0] == "train@1 -> train@2"
    assert "interface: param 'scale': default 1.0 -> 2.0" in lines
    assert "--- train@1/train.py" in lines and "+++ train@2/train.py" in lines
    assert "-def train(ctx, data, *, scale: float = 1.0):" in lines
    assert "+def train(ctx, data, *, scale: float = 2.0):" in lines
    assert "--- /dev/null" in lines and "+++ train@2/notes.py" in lines
    assert explicit.stdout == from_one.stdout == newest.stdout
    assert (body["a"], body["b"]) == (
        {"number": 1, "ref": "train@1"},
        {"number": 2, "ref": "train@2"},
    )
    assert [(f["path"], f["status"]) for f in body["files"]] == [
        ("notes.py", "added"),
        ("train.py", "changed"),
    ]
    assert body["interface"] == ["param 'scale': default 1.0 -> 2.0"]
    assert body["entrypoint"] is None
    assert first.stdout.startswith("nothing -> prep@1\nentrypoint: nothing -> prep.py:prep\n")
    assert "+++ prep@1/prep.py" in first.stdout
    assert same.stdout == "train@2 -> train@2: the same files, entrypoint and interface\n"
    assert "Did you mean" not in missing.output  # the module is there; version 9 is not


def test_module_pull_writes_the_files_and_refuses_a_folder_with_files(
    cli, world, tmp_path, monkeypatch
):
    cli("module", "push", str(module_folder(tmp_path)), "--name", "prep", "-e", "main.py:prep")
    stored = ModuleVersion.objects.get(module__name="prep", number=1).files
    monkeypatch.chdir(tmp_path)

    pulled = cli("module", "pull", "prep")  # into ./prep
    edited = tmp_path / "prep" / "main.py"
    edited.write_text("# my edit\n")
    refused = cli("module", "pull", "prep@1", code=2)
    kept_edit = edited.read_text()
    (tmp_path / "prep" / "extra.py").write_text("X = 1\n")
    forced = cli("module", "pull", "prep@1", "--force")
    body = cli.json("module", "pull", "prep", "--to", str(tmp_path / "elsewhere"))

    written = {
        path.relative_to(tmp_path / "elsewhere").as_posix(): path.read_text()
        for path in (tmp_path / "elsewhere").rglob("*")
        if path.is_file()
    }
    assert written == stored
    assert set(stored) == {"main.py", "helpers/__init__.py", "helpers/sizes.py"}
    assert "wrote prep@1 to prep/: 3 files" in pulled.stdout
    assert "is not empty" in flat(refused.output) and "--force" in refused.output
    assert kept_edit == "# my edit\n"  # the refusal wrote nothing
    assert edited.read_text() == stored["main.py"]
    assert (tmp_path / "prep" / "extra.py").read_text() == "X = 1\n"
    assert "also has extra.py, which prep@1 has not" in flat(forced.output)
    assert body["files"] == sorted(stored) and body["kept"] == []


@pytest.mark.parametrize("bad_path", ["../escape.py", "/tmp/stepworks-absolute.py"])
def test_module_pull_refuses_a_file_path_that_leaves_the_folder(cli, world, tmp_path, bad_path):
    (tmp_path / "main.py").write_text(PREP)
    cli("module", "push", str(tmp_path / "main.py"), "--name", "evil", "-e", "main.py:prep")
    # A push with such a path is refused; a row stored before that check may still hold one.
    ModuleVersion.objects.filter(module__name="evil").update(
        files={"main.py": PREP, bad_path: "X = 1\n"}
    )
    target = tmp_path / "pulled"

    refused = cli("module", "pull", "evil", "--to", str(target), code=2)

    assert f"evil@1 has a file {bad_path!r} whose path is absolute or leaves the folder" in flat(
        refused.output
    )
    assert not target.exists()
    assert not (tmp_path / "escape.py").exists()
    assert not Path("/tmp/stepworks-absolute.py").exists()


def test_pipeline_clone_makes_the_next_version_with_the_changes(cli, world, tmp_path):
    push_small(cli, tmp_path)
    push_train_v2(cli, tmp_path)

    params = cli("pipeline", "clone", "small", "-p", "train.scale=5", "-m", "scale 5")
    pinned = cli.json("pipeline", "clone", "small@2", "--step", "train=train@2")
    again = cli("pipeline", "clone", "small@3", "--step", "train=train@2")
    nothing = cli("pipeline", "clone", "small", code=2)
    no_step = cli("pipeline", "clone", "small", "-s", "nostep=train@1", code=2)

    assert "cloned small@1 to small@2" in params.stdout
    two = PipelineVersion.objects.get(pipeline__name="small", number=2)
    assert two.spec["steps"]["train"]["params"] == {"scale": 5}
    assert (two.message, two.parent.number) == ("scale 5", 1)
    assert (pinned["ref"], pinned["parent"], pinned["created"]) == ("small@3", "small@2", True)
    three = PipelineVersion.objects.get(pipeline__name="small", number=3)
    assert three.spec["steps"]["train"]["module"] == "train@2"
    assert three.spec["steps"]["train"]["params"] == {"scale": 5}  # same line: params stay
    assert "unchanged: small@3" in again.stdout
    assert PipelineVersion.objects.filter(pipeline__name="small").count() == 3
    assert "--step STEP=MODULE@N or --param" in flat(nothing.output)
    assert "nostep" in no_step.output


def test_clone_of_a_run_changes_a_param_and_watch_waits_for_it(
    cli, world, embedded_workers, tmp_path
):
    push_small(cli, tmp_path)
    source = cli.json("run", "small", "--watch")
    push_train_v2(cli, tmp_path)

    watched = cli("clone", str(source["id"]), "--change", "train.scale=4", "--watch")
    clone_id = PipelineRun.objects.latest("pk").pk
    with_module = cli.json(
        "clone", str(source["id"]), "--module", "train=train@2", "-c", "train.scale=7"
    )
    missing = cli("clone", "999999", "-c", "train.scale=1", code=3)

    detail = cli.json("show", str(clone_id))
    steps = {s["name"]: s for s in detail["steps"]}
    assert f"run {clone_id} succeeded" in watched.stdout
    assert steps["train"]["params"] == {"scale": 4}
    assert (steps["prep"]["status"], steps["train"]["status"]) == ("reused", "succeeded")
    assert (detail["version"], detail["params"]) == (1, {"train.scale": 4})  # an override
    new = PipelineRun.objects.get(pk=with_module["id"])
    assert new.cloned_from_id == source["id"]
    assert (with_module["pipeline"], with_module["version"]) == ("small", 2)
    train = new.pipeline_version.spec["steps"]["train"]
    assert (train["module"], train["params"]) == ("train@2", {"scale": 7})
    assert "No such run" in missing.output


def test_dataset_push_then_list_shows_it(cli, world, live_server, tmp_path):
    (tmp_path / "points.csv").write_text("x,y\n1,2\n")
    folder = tmp_path / "images"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("a\n")
    (folder / "b" / "c.txt").write_text("c\n")
    (folder / ".DS_Store").write_bytes(b"junk")

    pushed = cli("dataset", "push", "points", str(tmp_path / "points.csv"), "-m", "first")
    again = cli("dataset", "push", "points", str(tmp_path / "points.csv"))
    zipped = cli.json("dataset", "push", "images", str(folder))
    (folder / "a.txt").touch()  # a new mtime, the same bytes
    zipped_again = cli.json("dataset", "push", "images", str(folder))
    listed = cli("dataset", "list")
    rows = cli.json("dataset", "list")
    missing = cli("dataset", "push", "points", str(tmp_path / "nope.csv"), code=2)

    assert "pushed dataset:points@1 (text/csv, 8 B, sha256" in pushed.stdout
    assert "unchanged: dataset:points@1" in again.stdout
    assert (zipped["ref"], zipped["artifact"]["media_type"]) == (
        "dataset:images@1",
        "application/zip",
    )
    assert (zipped_again["ref"], zipped_again["created"]) == ("dataset:images@1", False)
    with Client(live_server.url, api_token(world.owner), "lab") as client:
        archive = client.download_artifact(zipped["artifact"]["sha256"], tmp_path / "got.zip")
    with zipfile.ZipFile(archive) as handle:
        assert handle.namelist() == ["a.txt", "b/c.txt"]
    assert Dataset.objects.filter(workspace=world.workspace).count() == 2
    table = listed.stdout.splitlines()
    assert any("points" in line and "8 B" in line for line in table)
    assert {(r["name"], r["latest_number"], r["latest_size"]) for r in rows} == {
        ("points", 1, 8),
        ("images", 1, zipped["artifact"]["size"]),
    }
    assert "does not exist" in missing.output


def test_a_name_that_is_not_there_is_exit_3_with_did_you_mean(cli, world, tmp_path):
    (tmp_path / "prep.py").write_text(PREP)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "wine_model", "-e", "prep.py:prep")
    (tmp_path / "wine_pipeline.yaml").write_text("steps:\n  prep: {module: wine_model@1}\n")
    cli("pipeline", "push", str(tmp_path / "wine_pipeline.yaml"))
    target = tmp_path / "pulled"

    shown = cli("module", "show", "wine_modle", code=3)
    diffed = cli("module", "diff", "wine_modle", code=3)
    pulled = cli("module", "pull", "wine_modle@1", "--to", str(target), code=3)
    forgot = cli("forget", "--module", "wine_modle@1", code=3)
    pipeline = cli("pipeline", "show", "wine_pipline@1", code=3)
    cloned = cli("pipeline", "clone", "wine_pipline", "-p", "prep.n=2", code=3)
    updated = cli("pipeline", "update", "wine_pipline", code=3)
    far = cli("module", "show", "zzz", code=3)
    version = cli("module", "show", "wine_model@9", code=3)

    module_hint = "No module 'wine_modle' in workspace 'lab'. Did you mean 'wine_model'?"
    for result in (shown, diffed, pulled, forgot):
        assert module_hint in flat(result.output)
    pipeline_hint = "No pipeline 'wine_pipline' in workspace 'lab'. Did you mean 'wine_pipeline'?"
    for result in (pipeline, cloned, updated):
        assert pipeline_hint in flat(result.output)
    assert "No module 'zzz' in workspace 'lab'." in flat(far.output)
    assert "Did you mean" not in far.output
    assert "Did you mean" not in version.output and "No module 'wine_model'" not in version.output
    assert not target.exists()
    assert PipelineVersion.objects.count() == 1  # the clone made nothing
