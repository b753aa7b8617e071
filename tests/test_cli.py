"""The `stepworks` command line, driven as a user would against a live test server with real
workers: log in, push a module from a folder and a pipeline, run with --watch, download and
verify hashes, read --json; and the exit codes that mean something."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stepworks import Client
from stepworks.cli import app
from stepworks.client import IntegrityError, _extract_verified
from tests.helpers import api_token
from tests.test_api_support import PREP, TRAIN

pytestmark = pytest.mark.django_db(transaction=True)

SPEC = """\
steps:
  prep: {module: prep@latest}
  train: {module: train@latest, inputs: {data: prep.data}, params: {scale: 2.0}}
"""

BROKEN = """\
def boom(ctx):
    raise RuntimeError("this step always fails")
"""


class Cli:
    """Runs `stepworks ...` in-process with its own HOME (config) and environment."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **(env or {})}
        self.env.setdefault("STEPWORKS_URL", "")
        self.env.setdefault("STEPWORKS_TOKEN", "")
        self.env.setdefault("STEPWORKS_WORKSPACE", "")
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, **env: str) -> Any:
        result = self.runner.invoke(app, list(args), env={**self.env, **env})
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


def module_folder(root: Path) -> Path:
    """A module with a package inside it, as a user keeps it on disk."""
    folder = root / "prep_module"
    (folder / "helpers").mkdir(parents=True)
    (folder / "main.py").write_text("from helpers.sizes import default_n  # noqa: F401\n\n" + PREP)
    (folder / "helpers" / "__init__.py").write_text("")
    (folder / "helpers" / "sizes.py").write_text("def default_n():\n    return 3\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"\x00junk")
    return folder


@pytest.fixture
def cli(world, live_server, tmp_path) -> Cli:
    key = api_token(world.owner)
    shell = Cli(tmp_path / "home")
    shell("login", live_server.url, "--token", key)
    return shell


def test_a_user_pushes_runs_watches_downloads_and_reads_json(
    cli, world, embedded_workers, tmp_path
):
    config = cli.home / ".config" / "stepworks" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["workspace"] == "lab"

    pushed = cli("module", "push", str(module_folder(tmp_path)), "--name", "prep",
                 "--entrypoint", "main.py:prep", "-m", "first")  # fmt: skip
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    again = cli("module", "push", str(module_folder(tmp_path / "again")), "--name", "prep",
                "--entrypoint", "main.py:prep")  # fmt: skip
    (tmp_path / "small.yaml").write_text(SPEC)
    pipeline = cli("pipeline", "push", str(tmp_path / "small.yaml"))
    watched = cli("run", "small", "--watch", "-p", "train.scale=3")

    assert "pushed prep@1" in pushed.stdout
    assert "unchanged: prep@1" in again.stdout
    assert "pushed small@1" in pipeline.stdout
    assert "succeeded" in watched.stdout
    version = cli.json("module", "push", str(tmp_path / "train.py"), "--name", "train",
                       "-e", "train.py:train")  # fmt: skip
    assert (version["ref"], version["created"]) == ("train@1", False)

    runs = cli.json("runs")
    run_id = runs[0]["id"]
    detail = cli.json("show", str(run_id))
    assert runs[0]["status"] == "succeeded"
    assert [s["status"] for s in detail["steps"]] == ["succeeded", "succeeded"]
    assert detail["params"] == {"train.scale": 3}

    out = tmp_path / "outputs"
    downloaded = cli("download", str(run_id), "-o", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = {
        (step["name"], o["name"]): o["artifact"]["sha256"]
        for step in detail["steps"]
        for o in step["outputs"]
    }
    assert "sha256 verified" in downloaded.stdout
    assert {(f["step"], f["output"]) for f in manifest["files"]} == set(recorded)
    for row in manifest["files"]:
        data = (out / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert row["sha256"] == recorded[(row["step"], row["output"])]
    assert json.loads((out / "train" / "model.json").read_text()) == {"w": 3.0, "total": 9.0}

    one_step = cli.json("download", str(run_id), "--step", "train", "-o", str(tmp_path / "one"))
    assert {f["step"] for f in one_step["files"]} == {"train"}

    logs = cli("logs", str(run_id), "train")
    followed = cli("logs", str(run_id), "train", "--follow")
    assert "trained with 3.0" in logs.stdout
    assert followed.stdout == logs.stdout

    cli("run", "small", "--watch")
    diff = cli.json("compare", str(run_id), str(run_id + 1))
    table = cli("compare", str(run_id), str(run_id + 1))
    assert [r["key"] for r in diff["params"] if not r["same"]] == ["train.scale"]
    assert "train.scale" in table.stdout
    assert cli.json("workspaces")[0]["slug"] == "lab"


def test_the_client_loads_outputs_by_media_type(world, live_server, embedded_workers, tmp_path):
    key = api_token(world.owner)
    with Client(live_server.url, key, "lab", cache_dir=tmp_path / "cache") as client:
        client.module_push({"prep.py": PREP}, "prep", "prep.py:prep")
        (tmp_path / "train").mkdir()
        (tmp_path / "train" / "train.py").write_text(TRAIN)
        client.module_push(tmp_path / "train", "train", "train.py:train")
        client.pipeline_push(SPEC, "small")
        run = client.run("small", params={"prep.n": 4}, wait=True, timeout=60)

        model = client.load_output(run, "train", "model")
        report = client.load_output(run["id"], "train", "report")
        data = client.load_output(run, "prep", "data")

    assert run["status"] == "succeeded"
    assert model == {"w": 2.0, "total": 12.0}
    assert report == "scale 2.0"
    assert data == [0, 1, 2, 3]


def test_exit_codes_say_what_went_wrong(cli, world, live_server, embedded_workers, tmp_path):
    (tmp_path / "boom.py").write_text(BROKEN)
    cli("module", "push", str(tmp_path / "boom.py"), "--name", "boom", "-e", "boom.py:boom")
    (tmp_path / "boom.yaml").write_text("steps:\n  only: {module: boom@latest}\n")
    cli("pipeline", "push", str(tmp_path / "boom.yaml"))

    failed = cli("run", "boom", "--watch", code=1)
    missing = cli("show", "999999", code=3)
    no_pipeline = cli("run", "nope", code=3)
    close_name = cli("run", "bom", code=3)
    no_version = cli("run", "boom@9", code=3)
    bad_param = cli("run", "boom", "-p", "noequals", code=2)
    bad_option = cli("runs", "--limit", "0", code=2)
    cli("runs", code=4, STEPWORKS_URL="http://127.0.0.1:9")
    cli("runs", code=3, STEPWORKS_TOKEN="0" * 40)
    cli("runs", code=3, STEPWORKS_WORKSPACE="elsewhere")

    assert "failed" in failed.stdout
    assert "user_error" in failed.stdout
    assert "No such run" in missing.stderr
    assert "No pipeline 'nope' in workspace" in no_pipeline.stderr
    assert "Did you mean 'boom'?" in close_name.stderr
    assert "no pipeline version 'boom@9'" in no_version.stderr
    assert "STEP.PARAM=VALUE" in bad_param.stderr
    assert bad_option.exit_code == 2


def test_login_refuses_a_wrong_token_and_writes_nothing(world, live_server, tmp_path):
    shell = Cli(tmp_path / "home")

    shell("login", live_server.url, "--token", "0" * 40, code=3)

    assert not (tmp_path / "home" / ".config" / "stepworks" / "config.json").exists()


def test_a_download_whose_bytes_do_not_match_the_manifest_is_refused(tmp_path):
    archive = tmp_path / "run.zip"
    manifest = {
        "run": 1,
        "files": [{"path": "a/x.txt", "sha256": "0" * 64, "size": 3, "step": "a", "output": "x"}],
        "lineage": {},
    }
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("manifest.json", json.dumps(manifest))
        handle.writestr("a/x.txt", b"abc")

    with pytest.raises(IntegrityError):
        _extract_verified(archive, tmp_path / "out")

    assert not (tmp_path / "out" / "a" / "x.txt").exists()


def test_a_zip_member_may_not_escape_the_download_folder(tmp_path):
    data = b"abc"
    row = {
        "path": "../../evil.txt",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": 3,
        "step": "a",
        "output": "x",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        handle.writestr("manifest.json", json.dumps({"run": 1, "files": [row]}))
        handle.writestr("../../evil.txt", data)
    (tmp_path / "run.zip").write_bytes(buffer.getvalue())

    manifest = _extract_verified(tmp_path / "run.zip", tmp_path / "out")

    assert (tmp_path / "out" / "evil.txt").read_bytes() == data
    assert not (tmp_path / "evil.txt").exists()
    assert manifest["files"][0]["local_path"] == str(tmp_path / "out" / "evil.txt")


def test_download_reports_missing_outputs_and_forget_makes_the_next_run_recompute(
    cli, world, embedded_workers, tmp_path
):
    import os

    from artifacts.store import artifact_storage
    from runs_app.models import StepRun

    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    (tmp_path / "small.yaml").write_text(SPEC)
    cli("pipeline", "push", str(tmp_path / "small.yaml"))
    run_id = cli.json("run", "small", "--watch")["id"]
    lost = StepRun.objects.get(run_id=run_id, name="prep").outputs.get().artifact
    os.unlink(artifact_storage().path(lost.storage_name))

    download = cli("download", str(run_id), "-o", str(tmp_path / "out"), code=1)
    forgot = cli("forget", str(run_id), "--step", "train")
    rerun = cli.json("run", "small", "--watch")
    usage = cli("forget", code=2)

    assert f"missing: prep.data (sha256 {lost.sha256[:12]})" in download.output
    assert "forgot 1 cached result(s) of step train" in forgot.stdout
    steps = {s["name"]: s["status"] for s in cli.json("show", str(rerun["id"]))["steps"]}
    assert steps == {"prep": "succeeded", "train": "succeeded"}  # both recomputed
    assert "RUN" in usage.output and "--module" in usage.output


def test_a_url_and_a_token_are_enough_for_someone_in_one_workspace(world, live_server, tmp_path):
    from workspaces.models import Membership, Role

    env = {"STEPWORKS_URL": live_server.url, "STEPWORKS_TOKEN": api_token(world.editor)}
    shell = Cli(tmp_path / "home", env)  # no login, no STEPWORKS_WORKSPACE

    listed = shell.json("runs")
    Membership.objects.create(user=world.editor, workspace=world.other_workspace, role=Role.VIEWER)
    two = Cli(tmp_path / "home2", env)("runs", code=2)

    assert listed == []
    assert "Choose a workspace: --workspace SLUG" in two.output
    assert "you are in: elsewhere, lab" in two.output


def test_a_run_of_a_version_with_newer_modules_says_so_and_update_pins_them(
    cli, world, embedded_workers, tmp_path
):
    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    (tmp_path / "small.yaml").write_text(SPEC)
    cli("pipeline", "push", str(tmp_path / "small.yaml"))  # pins prep@1, train@1
    (tmp_path / "train.py").write_text(TRAIN + "\n# a better model\n")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")

    warned = cli("run", "small")
    updated = cli("pipeline", "update", "small")
    again = cli("pipeline", "update", "small@2", code=2)
    quiet = cli("run", "small")

    note = " ".join(warned.output.split())  # the terminal wraps it
    assert "small@1 pins train@1 (newest train@2)" in note
    assert "stepworks pipeline update small@1" in note
    assert "small@2: update: train@1 -> train@2" in updated.stdout
    assert "already pins the latest" in again.output
    assert "pins" not in quiet.output and "started run" in quiet.stdout


def test_a_push_that_breaks_a_pipeline_says_which_and_why(cli, world, tmp_path):
    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    (tmp_path / "small.yaml").write_text(SPEC)
    cli("pipeline", "push", str(tmp_path / "small.yaml"))
    renamed = PREP.replace('{"data":', '{"rows":')
    assert renamed != PREP
    (tmp_path / "prep.py").write_text(renamed)

    pushed = cli(
        "module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep"
    )
    body = cli.json(
        "module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep"
    )

    note = " ".join(pushed.output.split())
    assert "breaks: small@1 step prep (uses prep@1) would not fit" in note
    assert "reads output 'data'" in note
    assert body["breaks"] == [
        {
            "pipeline": "small@1",
            "steps": [
                {
                    "step": "prep",
                    "uses": "prep@1",
                    "problems": ["a downstream step reads output 'data', which the module lacks"],
                }
            ],
        }
    ]


LOOP_PREP = """\
def prep(ctx, *, n: int = 3):
    return {"data": list(range(n))}
"""

LOOP_TRAIN = """\
def train(ctx, data, *, scale: float = 2.0):
    ctx.log_metric("score", sum(data) * scale)
    return {"model": {"w": scale}}
"""

LOOP_SPEC = """\
steps:
  prep: {module: ./prep, entrypoint: main.py:prep}
  train:
    module: ./train
    entrypoint: main.py:train
    name: trainer
    inputs: {data: prep.data}
"""


def test_run_a_pipeline_file_pushes_what_changed_runs_it_and_compares(
    cli, world, embedded_workers, tmp_path
):
    project = tmp_path / "project"
    for folder, source in (("prep", LOOP_PREP), ("train", LOOP_TRAIN)):
        (project / folder).mkdir(parents=True)
        (project / folder / "main.py").write_text(source)
    (project / "loop.yaml").write_text(LOOP_SPEC)

    first = cli("run", str(project / "loop.yaml"), "--watch")
    (project / "train" / "main.py").write_text(
        LOOP_TRAIN.replace("scale: float = 2.0", "scale: float = 3.0")
    )
    second = cli("run", str(project / "loop.yaml"), "--watch")
    third = cli("run", str(project / "loop.yaml"), "--watch")

    assert "pushed prep@1 (step prep)" in first.output and "pushed trainer@1" in first.output
    assert "pushed loop@1" in first.output and "compared with" not in first.output
    assert "unchanged: prep@1" in second.output and "pushed trainer@2" in second.output
    assert "pushed loop@2" in second.output
    from runs_app.models import PipelineRun

    one = PipelineRun.objects.order_by("pk").values_list("pk", flat=True)[0]
    summary = " ".join(second.output.split())
    assert f"compared with run {one}:" in summary
    assert (
        f"ran train: ran because code and params changed since run {one} "
        "(trainer@1 -> trainer@2; scale: 2.0 -> 3.0)"
    ) in summary
    assert "ran prep" not in summary  # reused
    assert "train.score: 6 -> 9 (+3)" in summary
    assert "unchanged: loop@2" in third.output and "every step was reused" in third.output


def test_download_of_a_run_that_is_not_there_is_exit_3_and_creates_nothing(cli, world, tmp_path):
    target = tmp_path / "nothing-here"

    missing = cli("download", "999999", "-o", str(target), code=3)

    assert "No such run." in missing.output
    assert not target.exists()


def test_the_design_side_lists_shows_pulls_and_reruns(cli, world, embedded_workers, tmp_path):
    import yaml

    (tmp_path / "prep.py").write_text(PREP)
    (tmp_path / "train.py").write_text(TRAIN)
    cli("module", "push", str(tmp_path / "prep.py"), "--name", "prep", "-e", "prep.py:prep")
    cli("module", "push", str(tmp_path / "train.py"), "--name", "train", "-e", "train.py:train")
    (tmp_path / "small.yaml").write_text(SPEC)
    cli("pipeline", "push", str(tmp_path / "small.yaml"))
    run_id = cli.json("run", "small", "--watch")["id"]

    pipelines = cli("pipeline", "list")
    shown = cli("pipeline", "show", "small")
    cli("pipeline", "pull", "small@1", "-o", str(tmp_path / "pulled.yaml"))
    modules = cli("module", "list")
    module = cli("module", "show", "train")
    rerun = cli("rerun", str(run_id), "--from-step", "train")
    unknown = cli("pipeline", "show", "nope", code=3)

    assert "small  (1 versions)" in pipelines.stdout
    assert "prep: prep@1" in shown.stdout and "train: train@1" in shown.stdout
    pulled = yaml.safe_load((tmp_path / "pulled.yaml").read_text())
    assert pulled["steps"]["train"]["module"] == "train@1"
    assert "prep  (1 versions)" in modules.stdout and "train  (1 versions)" in modules.stdout
    assert "train@1 (train.py:train)" in module.stdout and "train.py" in module.stdout
    assert f"a rerun of run {run_id}, from step train" in rerun.stdout
    assert "error" in unknown.output
