"""`stepworks sweep ...` driven as a user would, against a live test server with real workers
on the demo: create a small sweep and watch it, compare with --json and as a table, extend
an axis, promote the winner, cancel; and the --axis syntax on its own."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from pipelines_app.management.commands.seed_demo import DEMO_USER
from pipelines_app.models import PipelineVersion
from runs_app.models import PipelineRun, RunStatus, Sweep
from stepworks import Client
from stepworks.cli import parse_axes
from stepworks.client import ValidationError
from tests.helpers import api_token
from tests.test_cli import Cli


@pytest.fixture
def demo_cli(live_server, tmp_path, transactional_db) -> Cli:
    call_command("seed_demo", stdout=io.StringIO())
    key = api_token(get_user_model().objects.get(username=DEMO_USER))
    shell = Cli(tmp_path / "home")
    shell("login", live_server.url, "--token", key)
    return shell


@pytest.mark.django_db(transaction=True)
def test_a_user_sweeps_two_models_compares_them_and_promotes_the_winner(demo_cli, embedded_workers):
    cli = demo_cli
    created = cli.json("sweep", "create", "classify", "--name", "rf vs logreg",
                       "--axis", "train=train_logreg@latest,train_rf@latest:rf",
                       "--replicates", "2", "--seed", "train.seed", "--watch")  # fmt: skip
    sweep_id = created["id"]

    assert created["progress"]["finished"]
    assert created["progress"]["runs"]["succeeded"] == 4
    assert [v["label"] for v in created["axes"]["train"]] == ["train_logreg", "rf"]
    # prep and augment ran once and were reused by the other three runs.
    assert created["progress"]["steps"]["reused"] == 6

    result = cli.json("sweep", "compare", str(sweep_id), "--metric", "accuracy",
                      "--step", "evaluate", "--direction", "max")  # fmt: skip
    best = result["best"]
    means = {v["choices"]["train"]: v["summary"]["mean"] for v in result["variants"]}
    assert best["name"] == f"train={max(means, key=lambda k: means[k])}"
    assert best["summary"]["n"] == 2
    assert best["summary"]["ci_low"] <= best["summary"]["mean"] <= best["summary"]["ci_high"]
    assert result["best_vs_runner_up"]["diff"] >= 0

    table = cli("sweep", "compare", str(sweep_id), "--metric", "accuracy", "--step", "evaluate",
                "--a", "train=rf", "--b", "train=train_logreg")  # fmt: skip
    shown = cli("sweep", "show", str(sweep_id))
    listed = cli.json("sweep", "list")

    # Two replicates a variant: the star only if the test names a winner, else says why not.
    if result["verdict"]["clear"]:
        assert "★ best" in table.stdout and "best: train=" in table.stdout
    else:
        assert "★ best" not in table.stdout and "no clear winner: " in table.stdout
        assert "best mean: train=" in table.stdout
    assert "marginal effects" in table.stdout
    assert "A vs B: train=rf - train=train_logreg" in table.stdout
    assert "runs 4/4 done" in shown.stdout
    assert [s["id"] for s in listed] == [sweep_id]

    extended = cli.json("sweep", "extend", str(sweep_id), "train=train_mlp@1:mlp{hidden=8}",
                        "--watch")  # fmt: skip
    assert extended["progress"]["runs"]["succeeded"] == 6
    assert [v["label"] for v in extended["axes"]["train"]] == ["train_logreg", "rf", "mlp"]
    assert PipelineRun.objects.filter(sweep_id=sweep_id).count() == 6

    winner = best["choices"]["train"]
    promoted = cli("sweep", "promote", str(sweep_id), "--variant", f"train={winner}")
    version = PipelineVersion.objects.filter(pipeline__name="classify").order_by("-number")[0]
    assert f"promoted to {version.ref}" in promoted.stdout
    assert version.parent is not None and version.parent.number == created["version"]
    assert f"train={winner}" in version.message

    canceled = cli("sweep", "cancel", str(sweep_id))
    assert "0 runs canceled now" in canceled.stdout
    assert Sweep.objects.get(pk=sweep_id).canceled_at is not None
    assert set(PipelineRun.objects.filter(sweep_id=sweep_id).values_list("status", flat=True)) == {
        RunStatus.SUCCEEDED
    }


@pytest.mark.django_db(transaction=True)
def test_the_client_waits_for_a_sweep_and_compares_its_variants(
    live_server, embedded_workers, transactional_db
):
    call_command("seed_demo", stdout=io.StringIO())
    key = api_token(get_user_model().objects.get(username=DEMO_USER))
    axes = {
        "train": [
            {"label": "logreg", "module": "train_logreg@latest"},
            {"label": "rf", "module": "train_rf@latest", "params": {"n_estimators": 10}},
        ]
    }

    with Client(live_server.url, key, "demo") as client:
        sweep = client.sweep_create("classify@1", "client", axes, wait=True, timeout=120)
        result = client.sweep_compare(
            sweep, "accuracy", step="evaluate", a={"train": "rf"}, b="train=logreg"
        )
        runs = client.sweep_runs(sweep["id"], status="succeeded")
        metrics = client.sweep_metrics(sweep)
        version = client.sweep_promote(sweep, {"train": "rf", "replicate": 0})

    assert sweep["progress"]["finished"] and sweep["progress"]["runs"]["succeeded"] == 2
    assert result["a_vs_b"]["a"] == {"train": "rf"} and result["a_vs_b"]["n_b"] == 1
    assert result["best"]["name"] in ("train=logreg", "train=rf")
    assert sorted(r["variant"]["train"] for r in runs) == ["logreg", "rf"]
    assert metrics["steps"]["evaluate"] == ["accuracy", "f1_macro"]
    assert version["created"] and version["parent"] == "classify@1"
    assert version["spec"]["steps"]["train"]["params"]["n_estimators"] == 10


@pytest.mark.django_db(transaction=True)
def test_sweep_commands_exit_with_codes_that_mean_something(demo_cli):
    cli = demo_cli

    no_axis_value = cli("sweep", "create", "classify", "--name", "x", "--axis", "train", code=2)
    no_module_version = cli("sweep", "create", "classify", "--name", "x",
                            "--axis", "train=train_rf", code=2)  # fmt: skip
    bad_module = cli("sweep", "create", "classify", "--name", "x",
                     "--axis", "train=train_nope@1", code=2)  # fmt: skip
    no_seed = cli("sweep", "create", "classify", "--name", "x",
                  "--axis", "train=train_rf@1", "--replicates", "2", code=2)  # fmt: skip
    missing = cli("sweep", "show", "999999", code=3)
    no_pipeline = cli("sweep", "create", "clasify", "--name", "x",
                      "--axis", "train=train_rf@1", code=3)  # fmt: skip

    assert "STEP=VARIANT" in no_axis_value.stderr
    assert "MODULE@N" in no_module_version.stderr
    assert "axes.train.0.module: no module 'train_nope'" in bad_module.stderr
    assert "seed_params" in no_seed.stderr
    assert "No such sweep" in missing.stderr
    assert "No pipeline 'clasify' in workspace" in no_pipeline.stderr
    assert "Did you mean 'classify'?" in no_pipeline.stderr
    assert not Sweep.objects.exists() and not PipelineRun.objects.exists()


def test_the_axis_syntax_takes_modules_labels_and_params():
    axes = parse_axes(
        [
            'train=train_rf@1,train_mlp@2:wide{hidden=256, layers=[1, 2], act="a,b"}',
            "prep=:half{test_size=0.5}",
            "train=train_rf@2",
        ]
    )

    assert axes == {
        "train": [
            {"label": "train_rf", "module": "train_rf@1"},
            {
                "label": "wide",
                "module": "train_mlp@2",
                "params": {"hidden": 256, "layers": [1, 2], "act": "a,b"},
            },
            {"label": "train_rf-2", "module": "train_rf@2"},
        ],
        "prep": [{"label": "half", "params": {"test_size": 0.5}}],
    }
    assert parse_axes(["train=train_rf@3"], {"train": ["train_rf"]})["train"][0]["label"] == (
        "train_rf-3"
    )
    for bad in ("train", "train=", "train=rf", "train=rf@1{x=1", "train=a@1,,b@1", "train={x=1}"):
        with pytest.raises(ValidationError):
            parse_axes([bad])
