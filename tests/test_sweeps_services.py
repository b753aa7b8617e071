"""Sweeps as services: checked before anything is written, expanded into runs that reuse what
they share, extended by one variant at a time, canceled and promoted; read back in a fixed
number of queries.

Step bodies are counted by a side effect of the body itself (a line appended to a file named
by a param), as in test_engine.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from pipelines_app.models import PipelineVersion
from pipelines_app.services import (
    module_version_create,
    pipeline_version_clone,
    pipeline_version_create,
)
from runs_app.models import (
    PipelineRun,
    RunStatus,
    StepRun,
    Sweep,
    SweepEvent,
    SweepEventKind,
)
from runs_app.sweeps import plan
from runs_app.sweeps import services as sweep_services
from runs_app.sweeps.selectors import (
    sweep_comparison,
    sweep_metrics,
    sweep_progress,
    sweep_rows,
)
from tests.helpers import wait_runs, wait_until
from tests.test_engine import bodies
from workspaces.conf import engine
from workspaces.errors import DomainError

# Logs `score`: v for a and b; 10 * (b's v) + v for c; 100 more for c2 (another module line).
STEP = """
def main(ctx, {inputs}*, v: int = 0, marker: str = ""):
    with open(marker, "a") as handle:
        handle.write("{name} %d\\n" % v)
    ctx.log_metric("score", float({score}))
    return {{"out": "{name}-%d|" % v + {upstream}}}
"""
B_OF = "int(x.split('|')[0].split('-')[1])"


def _module(workspace: Any, name: str, *, upstream: bool, score: str = "v") -> None:
    source = STEP.format(
        inputs="x, " if upstream else "",
        name=name,
        score=score,
        upstream="x" if upstream else '""',
    )
    module_version_create(workspace, name, {"step.py": source}, "step.py:main")


def sweep_world(workspace: Any, marker: Path) -> PipelineVersion:
    """a -> b -> c, plus modules a variant may (or may not) put in a step's place."""
    _module(workspace, "a", upstream=False)
    _module(workspace, "b", upstream=True)
    _module(workspace, "c", upstream=True, score=f"10 * {B_OF} + v")
    _module(workspace, "c2", upstream=True, score=f"100 + 10 * {B_OF} + v")
    module_version_create(  # takes `y`, not the `x` the step binds
        workspace,
        "c_badin",
        {"step.py": "def main(ctx, y):\n    return {'out': y}\n"},
        "step.py:main",
    )
    module_version_create(  # declares `other`, not the `out` that c binds
        workspace,
        "b_noout",
        {"step.py": "def main(ctx, x):\n    return {'other': x}\n"},
        "step.py:main",
    )
    marked = {"marker": str(marker)}
    steps = {
        "a": {"module": "a@1", "params": marked},
        "b": {"module": "b@1", "params": marked, "inputs": {"x": "a.out"}},
        "c": {"module": "c@1", "params": marked, "inputs": {"x": "b.out"}},
    }
    return pipeline_version_create(workspace, "abc", {"steps": steps})


def b_axis(*values: int) -> list[dict[str, Any]]:
    return [{"label": f"b{v}", "params": {"v": v}} if v else {"label": "b0"} for v in values]


def c_axis(marker: Path) -> list[dict[str, Any]]:
    # c2 is another line: it starts from its own defaults, so it names its own marker.
    return [{"label": "c"}, {"label": "c2", "module": "c2@1", "params": {"marker": str(marker)}}]


def written() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Sweep, SweepEvent, PipelineRun, StepRun, PipelineVersion)
    }


# --- bad input: a DomainError naming the field, and nothing written ---------------------------


@pytest.mark.parametrize(
    ("axes", "kwargs", "path"),
    [
        ({"nope": [{"label": "x"}]}, {}, "axes.nope"),
        ({"c": [{"label": "ok"}, {"label": "bad", "module": "c_badin@1"}]}, {}, "axes.c.1.module"),
        ({"b": [{"label": "noout", "module": "b_noout@1"}]}, {}, "axes.b.0.module"),
        ({"c": [{"label": "x", "module": "nosuch@1"}]}, {}, "axes.c.0.module"),
        ({"c": [{"label": "x", "params": {"nope": 1}}]}, {}, "axes.c.0.params.nope"),
        ({"c": [{"label": "x", "params": {"v": "seven"}}]}, {}, "axes.c.0.params.v"),
        ({"c": []}, {}, "axes.c"),
        ({"c": [{"label": "x"}, {"label": "x", "params": {"v": 1}}]}, {}, "axes.c.1.label"),
        ({"b": [{"label": "x"}]}, {"replicates": 2, "seed_params": ["c.marker"]}, "seed_params.0"),
        ({"b": [{"label": "x"}]}, {"replicates": 2, "seed_params": ["z.v"]}, "seed_params.0"),
        ({"b": [{"label": "x"}]}, {"replicates": 2}, "seed_params"),
        (
            {"c": [{"label": "x", "params": {"v": 3}}]},
            {"replicates": 2, "seed_params": ["c.v"]},
            "axes.c.0.params.v",
        ),
        (
            {
                "b": [{"label": f"b{i}", "params": {"v": i}} for i in range(11)],
                "c": c_axis(Path("m")),
            },
            {"replicates": 50, "seed_params": ["c.v"]},
            "axes",
        ),
    ],
)
def test_a_bad_sweep_names_its_field_and_writes_nothing(world, tmp_path, axes, kwargs, path):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    before = written()

    with pytest.raises(DomainError) as error:
        sweep_services.sweep_create(base, name="bad", axes=axes, **kwargs)

    assert path in error.value.fields, error.value.fields
    assert written() == before


def test_the_run_limit_is_a_setting(world, tmp_path, settings):
    settings.STEPWORKS = {**settings.STEPWORKS, "SWEEP_MAX_RUNS": 7}
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    before = written()

    with pytest.raises(DomainError) as error:
        sweep_services.sweep_create(
            base,
            name="big",
            axes={"b": b_axis(0, 1), "c": c_axis(tmp_path)},
            replicates=2,
            seed_params=["c.v"],
        )  # 2 x 2 x 2 = 8 runs

    assert "8 runs; the limit is 7" in error.value.fields["axes"][0]
    assert written() == before


# --- creating, cancelling, promoting (no workers: runs wait queued) ---------------------------


def test_a_sweep_starts_one_run_per_combination_on_one_version_per_module_swap(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)

    sweep = sweep_services.sweep_create(
        base,
        name="abc",
        axes={"c": c_axis(marker), "b": b_axis(0, 1)},
        replicates=2,
        seed_params=["c.v"],
        user=world.editor,
    )

    runs = list(PipelineRun.objects.filter(sweep=sweep).order_by("pk"))
    assert [run.variant for run in runs] == [
        {"b": b, "c": c, "replicate": r} for b in ("b0", "b1") for c in ("c", "c2") for r in (0, 1)
    ]
    assert runs[3].param_overrides == {"c.marker": str(marker), "c.v": 1}
    assert runs[4].param_overrides == {"b.v": 1, "c.v": 0}
    swapped = {run.pipeline_version for run in runs if run.variant["c"] == "c2"}
    assert len(swapped) == 1
    (version,) = swapped
    assert version.parent == base and version.message == "sweep abc: c=c2"
    assert version.spec["steps"]["c"]["module"] == "c2@1"
    assert {run.pipeline_version for run in runs if run.variant["c"] == "c"} == {base}
    assert sweep.created_by == world.editor and list(sweep.axes) == ["b", "c"]
    assert [e.kind for e in sweep.events.all()] == [SweepEventKind.CREATED]
    assert sweep_progress(sweep)["expected"] == 8


def test_a_second_sweep_reuses_the_versions_the_first_made(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    axes = {"b": b_axis(0, 1), "c": c_axis(marker)}
    sweep_services.sweep_create(base, name="one", axes=axes)
    versions = PipelineVersion.objects.count()
    # The swapped version is no longer the pipeline's latest: the clone service alone would
    # not find it again.
    pipeline_version_create(
        world.workspace, "abc", {"steps": {"a": {"module": "a@1"}}}, message="unrelated"
    )

    second = sweep_services.sweep_create(base, name="two", axes=axes)

    assert PipelineVersion.objects.count() == versions + 1  # only the unrelated one
    first_runs = {
        r.variant["c"]: r.pipeline_version_id for r in Sweep.objects.get(name="one").runs.all()
    }
    second_runs = {r.variant["c"]: r.pipeline_version_id for r in second.runs.all()}
    assert first_runs == second_runs


def test_cancel_stops_every_run_and_freezes_the_axes(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    sweep = sweep_services.sweep_create(base, name="s", axes={"b": b_axis(0, 1)})

    canceled = sweep_services.sweep_cancel(sweep, by=world.owner)

    assert canceled == 2
    assert set(sweep.runs.values_list("status", flat=True)) == {RunStatus.CANCELED}
    progress = sweep_progress(sweep)
    assert progress["canceled"] and progress["finished"] and progress["runs"]["canceled"] == 2
    assert sweep_services.sweep_cancel(sweep) == 0  # again: nothing left to cancel
    with pytest.raises(DomainError) as error:
        sweep_services.sweep_extend(sweep, "b", {"label": "b2", "params": {"v": 2}})
    assert error.value.code == "sweep_canceled" and error.value.status_code == 409
    assert sweep.runs.count() == 2
    assert [e.kind for e in sweep.events.all()] == ["created", "canceled"]


def test_promote_makes_the_variant_the_next_version_of_the_base(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    sweep = sweep_services.sweep_create(
        base, name="abc", axes={"b": b_axis(0, 1), "c": c_axis(marker)}
    )

    version = sweep_services.sweep_promote(sweep, {"b": "b1", "c": "c2"}, user=world.owner)

    assert version.parent == base and version.pipeline == base.pipeline
    assert version.message == f"promoted from sweep 'abc' (#{sweep.pk}): b=b1, c=c2"
    steps = version.spec["steps"]
    assert steps["b"]["params"] == {"marker": str(marker), "v": 1}
    assert steps["c"]["module"] == "c2@1" and steps["c"]["params"] == {"marker": str(marker)}
    assert base.pipeline.versions.order_by("-number").first() == version
    event = sweep.events.get(kind=SweepEventKind.PROMOTED)
    assert event.data["version"] == version.pk and event.data["variant"] == {"b": "b1", "c": "c2"}
    with pytest.raises(DomainError) as error:
        sweep_services.sweep_promote(sweep, {"b": "b9"})
    assert set(error.value.fields) == {"variant.b", "variant.c"}


def test_promoting_a_spec_that_is_already_a_version_returns_it_and_makes_no_copy(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    sweep = sweep_services.sweep_create(base, name="abc", axes={"b": b_axis(0, 1)})
    first = sweep_services.sweep_promote(sweep, {"b": "b1"}, user=world.owner)
    later = pipeline_version_clone(first, {"b": {"params": {"v": 7}}}, "later")

    again = sweep_services.sweep_promote(sweep, {"b": "b1"}, user=world.owner)

    assert again == first  # @2 again, not a copy of it after @3
    assert base.pipeline.versions.mainline().order_by("-number").first() == later
    assert base.pipeline.versions.filter(digest=first.digest).count() == 1
    events = sweep.events.filter(kind=SweepEventKind.PROMOTED).order_by("pk")
    assert [e.data["ref"] for e in events] == [first.ref, first.ref]


def test_a_bad_extension_names_its_field_and_writes_nothing(world, tmp_path):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    sweep = sweep_services.sweep_create(base, name="s", axes={"b": b_axis(0, 1)})
    before = written()

    cases = [
        ("a", {"label": "x"}, "step"),  # not an axis: a new axis would change every run
        ("b", {"label": "b1"}, "variant.label"),
        ("b", {"label": "bad", "module": "b_noout@1"}, "variant.module"),
        ("b", {"label": "bad", "params": {"v": 1.5}}, "variant.params.v"),
    ]
    for step, variant, path in cases:
        with pytest.raises(DomainError) as error:
            sweep_services.sweep_extend(sweep, step, variant)
        assert path in error.value.fields, (step, variant, error.value.fields)
    assert written() == before
    sweep.refresh_from_db()
    assert [v["label"] for v in sweep.axes["b"]] == ["b0", "b1"]


# --- running for real ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_sweep_shares_upstream_steps_and_an_extension_runs_only_new_combinations(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)

    sweep = sweep_services.sweep_create(
        base,
        name="abc",
        axes={"b": b_axis(0, 1), "c": c_axis(marker)},
        replicates=2,
        seed_params=["c.v"],
    )
    wait_runs(*sweep.runs.all())

    # a once; b once per b variant; c and c2 once per b variant and replicate.
    assert Counter(bodies(marker)) == Counter(
        {"a 0": 1, "b 0": 1, "b 1": 1, "c 0": 2, "c 1": 2, "c2 0": 2, "c2 1": 2}
    )
    progress = sweep_progress(sweep)
    assert progress["runs"] == {**progress["runs"], "total": 8, "succeeded": 8, "done": 8}
    assert (progress["steps"]["executed"], progress["steps"]["reused"]) == (11, 13)
    assert progress["finished"]

    before = len(bodies(marker))
    new_runs = sweep_services.sweep_extend(sweep, "b", {"label": "b2", "params": {"v": 2}})
    wait_runs(*new_runs)

    assert sorted((r.variant["c"], r.variant["replicate"]) for r in new_runs) == [
        ("c", 0),
        ("c", 1),
        ("c2", 0),
        ("c2", 1),
    ]
    assert {r.variant["b"] for r in new_runs} == {"b2"}
    assert Counter(bodies(marker)[before:]) == Counter(
        {"b 2": 1, "c 0": 1, "c 1": 1, "c2 0": 1, "c2 1": 1}
    )
    assert sweep.runs.count() == 12
    sweep.refresh_from_db()
    assert [v["label"] for v in sweep.axes["b"]] == ["b0", "b1", "b2"]
    extended = sweep.events.get(kind=SweepEventKind.EXTENDED)
    assert extended.data == {"step": "b", "variant": {"label": "b2", "params": {"v": 2}}, "runs": 4}

    comparison = sweep_comparison(sweep, "score", step="c", direction="max")
    means = {v.name: v.summary.mean for v in comparison.variants}
    # c: 10 * b + replicate, c2: 100 more; replicates 0 and 1 -> mean + 0.5
    assert means == {
        "b=b0, c=c": 0.5,
        "b=b0, c=c2": 100.5,
        "b=b1, c=c": 10.5,
        "b=b1, c=c2": 110.5,
        "b=b2, c=c": 20.5,
        "b=b2, c=c2": 120.5,
    }
    assert comparison.best.name == "b=b2, c=c2" and comparison.best.summary.n == 2
    assert [lv.summary.mean for lv in comparison.marginals["c"]] == [10.5, 110.5]
    assert {"step": "c", "name": "score", "runs": 12} in sweep_metrics(sweep)
    with pytest.raises(DomainError) as error:
        sweep_rows(sweep, "accuracy")
    assert "metric" in error.value.fields
    with pytest.raises(DomainError) as error:
        sweep_rows(sweep, "score")  # a, b and c all log it
    assert "step" in error.value.fields


@pytest.mark.django_db(transaction=True)
def test_a_repeated_sweep_executes_nothing_and_reads_metrics_through_reuse(
    world, embedded_workers, tmp_path
):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    axes = {"b": b_axis(0, 1), "c": c_axis(marker)}
    first = sweep_services.sweep_create(
        base, name="one", axes=axes, replicates=2, seed_params=["c.v"]
    )
    wait_runs(*first.runs.all())
    executed = len(bodies(marker))

    second = sweep_services.sweep_create(
        base, name="two", axes=axes, replicates=2, seed_params=["c.v"]
    )
    wait_runs(*second.runs.all())

    assert len(bodies(marker)) == executed
    progress = sweep_progress(second)
    assert (progress["steps"]["executed"], progress["steps"]["reused"]) == (0, 24)
    values = {
        (tuple(r["choices"].items()), r["replicate"]): r["value"]
        for r in sweep_rows(second, "score", "c")
    }
    assert values == {
        (tuple(r["choices"].items()), r["replicate"]): r["value"]
        for r in sweep_rows(first, "score", "c")
    }
    assert None not in values.values()


@pytest.mark.django_db(transaction=True)
def test_reads_cost_the_same_queries_for_2_and_20_runs(
    world, embedded_workers, tmp_path, django_assert_num_queries
):
    marker = tmp_path / "bodies.txt"
    base = sweep_world(world.workspace, marker)
    small = sweep_services.sweep_create(
        base, name="2", axes={"c": [{"label": "c"}]}, replicates=2, seed_params=["c.v"]
    )
    large = sweep_services.sweep_create(
        base, name="20", axes={"c": c_axis(marker)}, replicates=10, seed_params=["c.v"]
    )
    wait_runs(*PipelineRun.objects.filter(sweep__in=[small, large]))

    for made, runs in ((small, 2), (large, 20)):
        sweep = Sweep.objects.select_related("base_version").get(pk=made.pk)
        with django_assert_num_queries(3):
            rows = sweep_rows(sweep, "score", step="c", aggregate="max")
        with django_assert_num_queries(3):
            comparison = sweep_comparison(sweep, "score", step="c")
        with django_assert_num_queries(2):
            progress = sweep_progress(sweep)
        with django_assert_num_queries(2):
            sweep_metrics(sweep)
        assert len(rows) == runs and progress["runs"]["succeeded"] == runs
        assert comparison.counts.measured == runs


# --- big sweeps: accepted at once, expanded by the actor ---------------------------------------


def _twelve(world: Any, tmp_path: Path) -> Sweep:
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    return sweep_services.sweep_create(
        base,
        name="twelve",
        axes={"b": b_axis(0, 1, 2), "c": c_axis(tmp_path / "bodies.txt")},
        replicates=2,
        seed_params=["a.v"],
    )


def _no_inline_runs(settings: Any) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "SWEEP_INLINE_S": 0.0}


@pytest.mark.django_db(transaction=True)
def test_a_sweep_past_its_inline_time_is_accepted_and_the_actor_starts_the_rest(
    world, tmp_path, settings
):
    from runs_app.dispatch import EmbeddedWorkers

    _no_inline_runs(settings)
    sweep = _twelve(world, tmp_path)

    # Returned at once: no run started in the request, the rest waits for a worker.
    assert sweep.expanded_at is None
    assert PipelineRun.objects.filter(sweep=sweep).count() == 0
    assert sweep_progress(sweep)["finished"] is False

    workers = EmbeddedWorkers(threads=2)
    workers.start()
    try:
        assert wait_until(lambda: Sweep.objects.get(pk=sweep.pk).expanded_at is not None, 60)
        runs = list(PipelineRun.objects.filter(sweep=sweep))
        wait_runs(*runs)
    finally:
        workers.stop()
    assert len(runs) == 12
    assert len({plan.combination_key(run.variant) for run in runs}) == 12
    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}


@pytest.mark.django_db(transaction=True)
def test_two_expanders_at_once_start_each_combination_once(world, tmp_path, settings):
    _no_inline_runs(settings)
    sweep = _twelve(world, tmp_path)
    started: list[int] = []

    def expand() -> None:
        try:
            started.extend(run.pk for run in sweep_services.sweep_expand(sweep.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=expand) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    runs = PipelineRun.objects.filter(sweep=sweep)
    assert runs.count() == 12 and sorted(started) == sorted(runs.values_list("pk", flat=True))
    assert Sweep.objects.get(pk=sweep.pk).expanded_at is not None
    assert sweep_services.sweep_expand(sweep.pk) == []  # expanded: nothing more to do


@pytest.mark.django_db(transaction=True)
def test_the_reaper_sends_a_quiet_sweep_to_the_actor_again(world, tmp_path, settings):
    import dramatiq

    from runs_app import reaper

    _no_inline_runs(settings)
    sweep = _twelve(world, tmp_path)
    dramatiq.get_broker().flush_all()  # the request's message is lost
    assert reaper.reap()["sweeps_resumed"] == 0  # its expander is not quiet for a lease yet
    Sweep.objects.filter(pk=sweep.pk).update(
        expanding_at=timezone.now() - timedelta(seconds=engine().lease_s + 1)
    )

    assert reaper.reap()["sweeps_resumed"] == 1
    assert reaper.reap()["sweeps_resumed"] == 0  # once a lease, not on every pass

    from runs_app.dispatch import EmbeddedWorkers

    workers = EmbeddedWorkers(threads=2)
    workers.start()
    try:
        assert wait_until(lambda: Sweep.objects.get(pk=sweep.pk).expanded_at is not None, 60)
    finally:
        workers.stop()
    assert PipelineRun.objects.filter(sweep=sweep).count() == 12


def test_a_canceled_sweep_expands_no_further(world, tmp_path, settings):
    _no_inline_runs(settings)
    sweep = _twelve(world, tmp_path)
    sweep_services.sweep_cancel(sweep)

    assert sweep_services.sweep_expand(sweep.pk) == []
    assert PipelineRun.objects.filter(sweep=sweep).count() == 0
    assert sweep_progress(Sweep.objects.get(pk=sweep.pk))["finished"] is True


def test_an_extension_reopens_the_expansion_for_its_new_combinations(world, tmp_path):
    sweep = _twelve(world, tmp_path)
    assert Sweep.objects.get(pk=sweep.pk).expanded_at is not None
    assert PipelineRun.objects.filter(sweep=sweep).count() == 12

    added = sweep_services.sweep_extend(sweep, "b", {"label": "b3", "params": {"v": 3}})

    assert len(added) == 4  # 1 new b x 2 c x 2 replicates, started within the inline time
    assert Sweep.objects.get(pk=sweep.pk).expanded_at is not None
    assert PipelineRun.objects.filter(sweep=sweep).count() == 16


@pytest.mark.django_db(transaction=True)
def test_a_paced_sweep_has_at_most_its_cap_of_runs_unfinished_and_still_ends(
    world, tmp_path, embedded_workers
):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    sweep = sweep_services.sweep_create(
        base,
        name="paced",
        axes={"b": b_axis(0, 1, 2), "c": c_axis(tmp_path / "bodies.txt")},
        max_parallel_runs=2,
    )
    most = 0

    def done() -> bool:
        nonlocal most
        runs = PipelineRun.objects.filter(sweep=sweep)
        unfinished = runs.exclude(status__in=(RunStatus.SUCCEEDED, RunStatus.FAILED)).count()
        most = max(most, unfinished)
        return runs.count() == 6 and unfinished == 0

    assert wait_until(done, 120, every=0.02), sweep_progress(sweep)
    assert most <= 2
    assert Sweep.objects.get(pk=sweep.pk).expanded_at is not None
    assert {r.status for r in PipelineRun.objects.filter(sweep=sweep)} == {RunStatus.SUCCEEDED}


def test_a_cap_below_one_is_refused_by_name(world, tmp_path):
    base = sweep_world(world.workspace, tmp_path / "bodies.txt")
    with pytest.raises(DomainError) as caught:
        sweep_services.sweep_create(base, name="x", axes={"b": b_axis(0, 1)}, max_parallel_runs=0)
    assert "max_parallel_runs" in caught.value.fields
    assert Sweep.objects.count() == 0
