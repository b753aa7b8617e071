"""The sweep API: create, read, extend, cancel, promote, compare, metrics.

Bad input is a 400 naming its field and starts nothing; viewers read, editors write, a
stranger sees 404s. The comparison runs on real runs (embedded workers) and on rows made by
hand where a figure must be odd (an infinite value); lists cost the same queries for 1 and 50.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipelines_app.models import PipelineVersion
from runs_app.models import Metric, PipelineRun, RunStatus, StepRun, Sweep, SweepEventKind
from runs_app.sweeps import services as sweep_services
from tests.helpers import wait_runs
from tests.test_api_support import api_client, error_of
from tests.test_sweeps_services import b_axis, c_axis, sweep_world, written

API = "/api/v1/workspaces/lab/sweeps"
db = pytest.mark.django_db
live = pytest.mark.django_db(transaction=True)


def create(client: Any, tmp_path: Path, **body: Any) -> Any:
    payload = {
        "pipeline": "abc",
        "name": "abc sweep",
        "axes": {"c": c_axis(tmp_path / "bodies.txt"), "b": b_axis(0, 1)},
        **body,
    }
    return client.post(f"{API}/create/", payload, format="json")


# --- create and read ---------------------------------------------------------------------------


@db
def test_create_starts_one_run_per_combination_and_the_detail_shows_them(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)

    response = create(client, tmp_path, replicates=2, seed_params=["c.v"])
    detail = client.get(f"{API}/{response.json()['id']}/").json()

    assert response.status_code == 201
    body = response.json()
    assert body == detail
    assert (body["pipeline"], body["version"], body["status"]) == ("abc", 1, "active")
    assert list(body["axes"]) == ["b", "c"]  # pipeline order, not the order sent
    assert body["axes"]["c"][1] == {
        "label": "c2",
        "module": "c2@1",
        "params": {"marker": str(tmp_path / "bodies.txt")},
    }
    assert (body["replicates"], body["seed_params"], body["expected_runs"]) == (2, ["c.v"], 8)
    assert body["created_by"] == "eddie"
    assert body["progress"]["expected"] == 8 and body["progress"]["runs"]["total"] == 8
    assert [e["kind"] for e in body["events"]] == ["created"]
    assert body["events"][0]["by"] == "eddie"
    runs = {run["id"]: run for run in body["runs"]}
    stored = PipelineRun.objects.filter(sweep_id=body["id"])
    assert set(runs) == set(stored.values_list("pk", flat=True))
    assert [r["variant"] for r in body["runs"]] == [
        {"b": b, "c": c, "replicate": r} for b in ("b0", "b1") for c in ("c", "c2") for r in (0, 1)
    ]
    assert {r["version"] for r in body["runs"] if r["variant"]["c"] == "c2"} == {2}
    assert {r["status"] for r in body["runs"]} <= set(RunStatus.values)


@db
def test_the_list_the_runs_and_the_filters(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.viewer)
    editor = api_client(world.editor)
    first = create(editor, tmp_path, name="first").json()
    second = create(editor, tmp_path, name="second", axes={"b": b_axis(0, 1, 2)}).json()
    editor.post(f"{API}/{first['id']}/cancel/")

    listed = client.get(f"{API}/").json()
    active = client.get(f"{API}/?status=active").json()
    canceled = client.get(f"{API}/?status=canceled").json()
    by_name = client.get(f"{API}/?name=SEC&pipeline=abc&version=1&created_by=eddie").json()
    runs = client.get(f"{API}/{second['id']}/runs/?limit=2").json()
    running = client.get(f"{API}/{first['id']}/runs/?status=running").json()

    assert [s["name"] for s in listed["results"]] == ["second", "first"]
    row = listed["results"][0]
    assert row["runs"]["total"] == 3 and row["expected_runs"] == 3 and not row["finished"]
    assert listed["results"][1]["runs"]["canceled"] == 4 and listed["results"][1]["finished"]
    assert [s["id"] for s in active["results"]] == [second["id"]]
    assert [s["id"] for s in canceled["results"]] == [first["id"]]
    assert [s["id"] for s in by_name["results"]] == [second["id"]]
    assert runs["count"] == 3 and len(runs["results"]) == 2
    assert runs["results"][0]["variant"] == {"b": "b0", "replicate": 0}
    assert runs["results"][0]["sweep"] == second["id"] and "step_counts" in runs["results"][0]
    assert running["count"] == 0


# --- bad input: a 400 naming the field, and nothing started ------------------------------------

BAD_INPUTS = {"label": "x", "module": "c_badin@1"}  # takes `y`; the step binds `x`


@db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"axes": {"nope": [{"label": "x"}]}}, "axes.nope"),
        ({"axes": {"c": [{"label": "k"}, BAD_INPUTS]}}, "axes.c.1.module"),
        ({"axes": {"b": [{"label": "x", "module": "nosuch@1"}]}}, "axes.b.0.module"),
        ({"axes": {"c": [{"label": "x", "params": {"v": "seven"}}]}}, "axes.c.0.params.v"),
        ({"axes": {"c": []}}, "axes.c"),
        ({"axes": {"c": [{"label": "no spaces"}]}}, "axes.c.0.label"),
        ({"axes": {}}, "axes"),
        ({"axes": ["c"]}, "axes"),
        ({"axes": {"c": [{"label": "x\u0000"}]}}, "axes.c.0.label"),
        ({"replicates": 2}, "seed_params"),
        ({"replicates": 2, "seed_params": ["z.v"]}, "seed_params.0"),
        ({"replicates": 0}, "replicates"),
        ({"replicates": 10**9}, "replicates"),
        ({"seed_params": "c.v"}, "seed_params"),
        ({"pipeline": "nope"}, "pipeline"),
        ({"pipeline": "abc@7"}, "pipeline"),
        ({"pipeline": "a b"}, "pipeline"),
        ({"name": ""}, "name"),
        ({"reuse": "maybe"}, "reuse"),
    ],
)  # fmt: skip
def test_a_bad_sweep_is_a_400_naming_its_field_and_starts_nothing(world, tmp_path, change, field):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    before = written()

    response = create(api_client(world.editor), tmp_path, **change)

    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"], error_of(response)
    assert written() == before


@db
def test_a_sweep_over_the_run_limit_is_a_400_on_axes(world, tmp_path, settings):
    settings.STEPWORKS = {**settings.STEPWORKS, "SWEEP_MAX_RUNS": 3}
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    before = written()

    response = create(api_client(world.editor), tmp_path)

    assert response.status_code == 400
    assert "the limit is 3" in error_of(response)["fields"]["axes"][0]
    assert written() == before


# --- roles and workspaces ----------------------------------------------------------------------


@db
def test_viewers_read_editors_write_strangers_see_nothing(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = create(api_client(world.editor), tmp_path).json()
    before = written()
    reads = ["", f"{sweep['id']}/", f"{sweep['id']}/runs/", f"{sweep['id']}/metrics/",
             f"{sweep['id']}/compare/?metric=score&step=c"]  # fmt: skip
    writes = {
        "create/": {"pipeline": "abc", "name": "x", "axes": {"b": b_axis(0)}},
        f"{sweep['id']}/extend/": {"step": "b", "variant": {"label": "b2"}},
        f"{sweep['id']}/cancel/": {},
        f"{sweep['id']}/promote/": {"variant": {"b": "b1", "c": "c"}},
    }
    viewer, stranger, anonymous = (
        api_client(world.viewer),
        api_client(world.stranger),
        api_client(),
    )

    for url in reads:
        assert viewer.get(f"{API}/{url}").status_code == 200, url
        assert stranger.get(f"{API}/{url}").status_code == 404, url
        assert anonymous.get(f"{API}/{url}").status_code == 401, url
    for url, body in writes.items():
        denied = viewer.post(f"{API}/{url}", body, format="json")
        hidden = stranger.post(f"{API}/{url}", body, format="json")
        assert denied.status_code == 403 and error_of(denied)["code"] == "permission_denied"
        assert hidden.status_code == 404 and error_of(hidden)["code"] == "not_found"
        assert anonymous.post(f"{API}/{url}", body, format="json").status_code == 401
    assert written() == before
    assert Sweep.objects.get().canceled_at is None


@db
def test_another_workspaces_sweep_is_a_404_in_every_path(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = create(api_client(world.editor), tmp_path).json()
    stranger = api_client(world.stranger)
    owner = api_client(world.owner)

    for path in ("", "runs/", "metrics/", "compare/?metric=score"):
        elsewhere = stranger.get(f"/api/v1/workspaces/elsewhere/sweeps/{sweep['id']}/{path}")
        missing = owner.get(f"{API}/999999/{path}")
        huge = owner.get(f"{API}/{10**30}/{path}")
        assert elsewhere.status_code == 404, path
        assert error_of(missing)["code"] == "not_found"
        assert huge.status_code == 404
    cancel = stranger.post(f"/api/v1/workspaces/elsewhere/sweeps/{sweep['id']}/cancel/")
    assert cancel.status_code == 404
    assert Sweep.objects.get().canceled_at is None


# --- extend, cancel, promote -------------------------------------------------------------------


@db
def test_extend_starts_only_the_new_combinations(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)
    sweep = create(client, tmp_path).json()

    response = client.post(
        f"{API}/{sweep['id']}/extend/",
        {"step": "b", "variant": {"label": "b2", "module": "b@latest", "params": {"v": 2}}},
        format="json",
    )
    detail = client.get(f"{API}/{sweep['id']}/").json()

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["variant"] == {"label": "b2", "module": "b@1", "params": {"v": 2}}  # pinned
    assert sorted(r["variant"]["c"] for r in body["runs"]) == ["c", "c2"]
    assert {r["variant"]["b"] for r in body["runs"]} == {"b2"}
    assert len(detail["runs"]) == 6 and detail["expected_runs"] == 6
    assert [v["label"] for v in detail["axes"]["b"]] == ["b0", "b1", "b2"]
    assert [e["kind"] for e in detail["events"]] == ["created", "extended"]


@db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"step": "a", "variant": {"label": "x"}}, "step"),
        ({"step": "b", "variant": {"label": "b1"}}, "variant.label"),
        ({"step": "b", "variant": {"label": "bad", "module": "b_noout@1"}}, "variant.module"),
        ({"step": "b", "variant": {"label": "bad", "params": {"v": 1.5}}}, "variant.params.v"),
        ({"step": "b", "variant": {"label": "bad", "colour": "red"}}, "variant.colour"),
        ({"step": "b", "variant": "b2"}, "variant"),
        ({"variant": {"label": "b2"}}, "step"),
    ],
)
def test_a_bad_extension_is_a_400_naming_its_field_and_starts_nothing(world, tmp_path, body, field):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)
    sweep = create(client, tmp_path).json()
    before = written()

    response = client.post(f"{API}/{sweep['id']}/extend/", body, format="json")

    assert response.status_code == 400, response.content
    assert field in error_of(response)["fields"], error_of(response)
    assert written() == before


@db
def test_cancel_stops_every_run_and_a_canceled_sweep_takes_no_variant(world, tmp_path):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)
    sweep = create(client, tmp_path).json()

    canceled = client.post(f"{API}/{sweep['id']}/cancel/")
    again = client.post(f"{API}/{sweep['id']}/cancel/")
    extend = client.post(
        f"{API}/{sweep['id']}/extend/", {"step": "b", "variant": {"label": "b2"}}, format="json"
    )

    assert canceled.status_code == 200
    body = canceled.json()
    assert (body["status"], body["canceled_runs"]) == ("canceled", 4)
    assert body["canceled_at"] is not None and body["progress"]["finished"]
    assert {r["status"] for r in body["runs"]} == {"canceled"}
    assert again.json()["canceled_runs"] == 0
    assert extend.status_code == 409 and error_of(extend)["code"] == "sweep_canceled"
    assert PipelineRun.objects.count() == 4
    assert [e["kind"] for e in again.json()["events"]] == ["created", "canceled"]


@db
def test_promote_makes_the_variant_the_next_version_and_names_bad_choices(world, tmp_path):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)
    sweep = create(client, tmp_path).json()

    promoted = client.post(
        f"{API}/{sweep['id']}/promote/", {"variant": {"b": "b1", "c": "c2"}}, format="json"
    )
    again = client.post(
        f"{API}/{sweep['id']}/promote/",
        {"variant": {"b": "b1", "c": "c2", "replicate": 1}, "message": "same spec"},
        format="json",
    )
    versions = PipelineVersion.objects.count()
    bad = client.post(
        f"{API}/{sweep['id']}/promote/", {"variant": {"b": "b9", "x": "y"}}, format="json"
    )
    not_a_mapping = client.post(f"{API}/{sweep['id']}/promote/", {"variant": 3}, format="json")

    assert promoted.status_code == 201, promoted.content
    version = promoted.json()
    assert version["parent"] == base.ref and version["pipeline"] == "abc"
    assert version["message"] == f"promoted from sweep 'abc sweep' (#{sweep['id']}): b=b1, c=c2"
    steps = {s["name"]: s for s in version["steps"]}
    assert steps["c"]["module"] == "c2@1" and steps["b"]["params"]["v"] == 1
    assert again.status_code == 200 and again.json()["ref"] == version["ref"]
    assert bad.status_code == 400
    assert set(error_of(bad)["fields"]) == {"variant.b", "variant.c", "variant.x"}
    assert not_a_mapping.status_code == 400 and "variant" in error_of(not_a_mapping)["fields"]
    assert PipelineVersion.objects.count() == versions
    kinds = list(Sweep.objects.get().events.values_list("kind", flat=True))
    assert kinds == ["created", SweepEventKind.PROMOTED, SweepEventKind.PROMOTED]


# --- compare and metrics -----------------------------------------------------------------------


@live
def test_compare_names_the_best_variant_with_its_ci_and_tests_a_against_b(
    world, embedded_workers, tmp_path
):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = sweep_services.sweep_create(
        base,
        name="abc",
        axes={"b": b_axis(0, 1), "c": c_axis(tmp_path / "bodies.txt")},
        replicates=2,
        seed_params=["c.v"],
    )
    wait_runs(*sweep.runs.all())
    client = api_client(world.viewer)
    url = f"{API}/{sweep.pk}/compare/?metric=score&step=c"

    result = client.get(url).json()
    versus = client.get(f"{url}&a=c%3Dc2&b=c%3Dc").json()
    lowest = client.get(f"{url}&direction=min&aggregate=max").json()
    strict = client.get(f"{url}&level=0.01").json()
    metrics = client.get(f"{API}/{sweep.pk}/metrics/").json()

    # c: 10 * b + replicate; c2: 100 more; replicates 0 and 1.
    means = {v["name"]: v["summary"]["mean"] for v in result["variants"]}
    assert means == {"b=b0, c=c": 0.5, "b=b0, c=c2": 100.5, "b=b1, c=c": 10.5, "b=b1, c=c2": 110.5}
    best = result["best"]
    assert best["name"] == "b=b1, c=c2" and best["summary"]["n"] == 2
    ci_half = 12.706204736174698 * math.sqrt(0.5) / math.sqrt(2)
    assert best["summary"]["ci_low"] == pytest.approx(110.5 - ci_half)
    assert best["summary"]["ci_high"] == pytest.approx(110.5 + ci_half)
    assert best["counts"] == {
        "total": 2,
        "measured": 2,
        "failed": 0,
        "canceled": 0,
        "unfinished": 0,
        "missing": 0,
    }
    assert [lv["summary"]["mean"] for lv in result["marginals"]["c"]] == [5.5, 105.5]
    assert result["marginals"]["c"][1]["effect"] == pytest.approx(50.0)
    assert result["runner_up"]["name"] == "b=b0, c=c2"
    assert result["best_vs_runner_up"]["diff"] == pytest.approx(10.0)
    # A winner: best vs runner-up, t = 10 / sqrt(0.5/2 + 0.5/2), df = 2, so
    # p = 1 - t / sqrt(2 + t^2) = 0.00496, under 0.05 / 3 (three other variants); the other
    # two comparisons are farther apart. At level 0.01 (0.0033 each) it is not clear.
    t = 10 / math.sqrt(0.5)
    verdict = result["verdict"]
    assert verdict["clear"] is True and verdict["correction"] == "bonferroni"
    assert (verdict["level"], verdict["comparisons"]) == (0.05, 3)
    assert verdict["threshold"] == pytest.approx(0.05 / 3)
    assert verdict["against_name"] == "b=b0, c=c2"
    assert verdict["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)
    assert strict["verdict"]["clear"] is False and strict["verdict"]["level"] == 0.01
    assert result["value_range"] is None  # "score" has no known range
    assert best["summary"]["clipped"] is False
    assert result["a_vs_b"] is None
    assert versus["a_vs_b"]["a"] == {"c": "c2"} and versus["a_vs_b"]["diff"] == pytest.approx(100)
    assert versus["a_vs_b"]["n_a"] == 4 and versus["a_vs_b"]["p_value"] < 0.001
    assert lowest["best"]["name"] == "b=b0, c=c"
    assert {"step": "c", "name": "score", "runs": 8} in metrics["metrics"]
    assert metrics["steps"] == {"a": ["score"], "b": ["score"], "c": ["score"]}


@live
def test_compare_names_what_is_wrong_with_its_query(world, embedded_workers, tmp_path):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = sweep_services.sweep_create(base, name="abc", axes={"b": b_axis(0, 1)})
    wait_runs(*sweep.runs.all())
    client = api_client(world.viewer)
    url = f"{API}/{sweep.pk}/compare/"

    cases = {
        "metric=accuracy&step=c": "metric",
        "metric=score": "step",  # a, b and c all log it
        "": "metric",
        "metric=score&step=nope": "step",
        "metric=score&step=c&aggregate=mean": "aggregate",
        "metric=score&step=c&direction=up": "direction",
        "metric=score&step=c&a=b%3Db0": "b",
        "metric=score&step=c&a=b0&b=b1": "a",
        "metric=score&step=c&a=b%3Db0&b=b%3Db9": "b",
        "metric=score&step=c&a=x%3Dy&b=b%3Db1": "a",
        "metric=score&step=c&level=0.5": "level",
        "metric=score&step=c&level=often": "level",
    }
    for query, field in cases.items():
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400, (query, response.content)
        assert field in error_of(response)["fields"], (query, error_of(response))


@db
def test_failed_runs_are_counted_and_non_finite_values_are_null_never_a_500(world, tmp_path):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = sweep_services.sweep_create(base, name="odd", axes={"b": b_axis(0, 1)})
    runs = list(sweep.runs.order_by("pk"))
    PipelineRun.objects.filter(pk=runs[0].pk).update(status=RunStatus.SUCCEEDED)
    PipelineRun.objects.filter(pk=runs[1].pk).update(status=RunStatus.FAILED)
    step = StepRun.objects.get(run=runs[0], name="c")
    Metric.objects.create(step=step, name="score", value=math.inf)
    Metric.objects.create(step=step, name="big", value=1e308)
    Metric.objects.create(step=step, name="big", value=-1e308)

    response = api_client(world.viewer).get(f"{API}/{sweep.pk}/compare/?metric=score&step=c")
    big = api_client(world.viewer).get(f"{API}/{sweep.pk}/compare/?metric=big&aggregate=min")

    assert response.status_code == 200
    body = json.loads(response.content)  # strict JSON: no NaN or Infinity
    by_name = {v["name"]: v for v in body["variants"]}
    assert by_name["b=b0"]["summary"]["mean"] is None
    assert by_name["b=b0"]["counts"]["missing"] == 1
    assert by_name["b=b1"]["counts"]["failed"] == 1 and by_name["b=b1"]["summary"]["n"] == 0
    assert body["best"] is None
    assert big.status_code == 200
    assert json.loads(big.content)["variants"][0]["summary"]["mean"] == -1e308


# --- query counts ------------------------------------------------------------------------------


def count_queries(client: Any, url: str) -> tuple[int, dict[str, Any]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


def add_sweeps(base: PipelineVersion, user: Any, n: int) -> None:
    """n sweeps of two runs each, as rows."""
    for i in range(n):
        sweep = Sweep.objects.create(
            workspace=base.pipeline.workspace,
            name=f"s{i}",
            base_version=base,
            axes={"b": b_axis(0, 1)},
            created_by=user,
        )
        for label in ("b0", "b1"):
            PipelineRun.objects.create(
                workspace=sweep.workspace,
                pipeline_version=base,
                sweep=sweep,
                variant={"b": label, "replicate": 0},
                status=RunStatus.SUCCEEDED,
            )


@db
def test_the_sweep_list_costs_the_same_for_1_and_50(world, tmp_path, django_assert_num_queries):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.viewer)
    url = f"{API}/?limit=100&status=active&pipeline=abc"

    add_sweeps(base, world.owner, 1)
    one, _ = count_queries(client, url)
    add_sweeps(base, world.owner, 49)
    with django_assert_num_queries(one):
        body = client.get(url).json()

    assert body["count"] == 50
    assert body["results"][0]["runs"]["succeeded"] == 2 and body["results"][0]["finished"]


@db
def test_a_sweeps_detail_and_runs_cost_the_same_for_2_and_40_runs(
    world, tmp_path, django_assert_num_queries
):
    sweep_world(world.workspace, tmp_path / "bodies.txt")
    client = api_client(world.editor)
    small = create(client, tmp_path, axes={"b": b_axis(0, 1)}).json()
    large = create(
        client,
        tmp_path,
        axes={"b": b_axis(0, 1), "c": c_axis(tmp_path / "bodies.txt")},
        replicates=10,
        seed_params=["c.v"],
    ).json()
    paths = ["", "runs/?limit=100", "metrics/", "compare/?metric=score&step=c"]

    for path in paths:
        few, _ = count_queries(client, f"{API}/{small['id']}/{path}")
        with django_assert_num_queries(few):
            client.get(f"{API}/{large['id']}/{path}")
    assert len(client.get(f"{API}/{large['id']}/").json()["runs"]) == 40
