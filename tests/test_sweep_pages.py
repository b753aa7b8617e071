"""The sweep pages over HTTP: the list, the create form, the sweep page with its actions,
and the comparison.

Sweeps are made by the service and their steps worked the way a worker works them (claim,
succeed with an output and metrics, or fail), without executing code: no worker threads.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from artifacts.store import artifact_store_bytes
from pipelines_app.models import PipelineVersion
from runs_app import scheduler
from runs_app.models import (
    PipelineRun,
    RunStatus,
    StepRun,
    StepStatus,
    Sweep,
    SweepEvent,
    SweepEventKind,
)
from runs_app.sweeps import charts as sweep_charts
from runs_app.sweeps import services as sweep_services
from stepworks.context import MetricPoint
from tests.factories import chain, module_version

pytestmark = pytest.mark.django_db

K = {"k": {"type": "int", "required": False, "default": 0}}
# accuracy of s2 by the variant's label; each replicate r adds r / 100.
ACCURACY = {"one": 0.6, "two": 0.8, "three": 0.7}


@pytest.fixture
def base(world: Any) -> PipelineVersion:
    """s0 -> s1 -> s2 (modules m0, m1, m2 with an int param k) and a second version of m2
    a variant may put in s2's place; m0 takes no input, so it cannot."""
    version = chain(world.workspace, "chain", length=3)
    module_version(world.workspace, "m2", inputs=("x",), params=K, number=2)
    return version


def start(world: Any, base: PipelineVersion, replicates: int = 2, **kwargs: Any) -> Sweep:
    return sweep_services.sweep_create(
        base,
        name=kwargs.pop("name", "k sweep"),
        axes=kwargs.pop("axes", {"s2": [{"label": "one"}, {"label": "two", "module": "m2@2"}]}),
        replicates=replicates,
        seed_params=["s2.k"],
        user=world.editor,
        **kwargs,
    )


def work(sweep: Sweep, fail: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
    """Work every queued step of the sweep like a worker: s2 logs `accuracy` (by label and
    replicate) and a `loss` series; the (label, replicate) pairs in `fail` fail at s2."""
    while True:
        step = StepRun.objects.filter(run__sweep=sweep, status=StepStatus.QUEUED).first()
        if step is None:
            return
        claimed = scheduler.step_claim(step.pk, "test-worker")
        assert claimed is not None
        variant = claimed.run.variant
        label, replicate = variant.get("s2", ""), variant.get("replicate", 0)
        metrics: list[MetricPoint] = []
        if claimed.name == "s2":
            if (label, replicate) in fail:
                scheduler.step_fail(claimed, claimed.attempt, "user_error", "boom")
                continue
            metrics = [MetricPoint("accuracy", ACCURACY[label] + replicate / 100)]
            metrics += [MetricPoint("loss", 1 / (i + 1 + replicate), step=i) for i in range(4)]
        payload = json.dumps({"step": claimed.name, "params": claimed.params}).encode()
        out = artifact_store_bytes(claimed.workspace, payload, "application/json")
        assert scheduler.step_succeed(claimed, claimed.attempt, {"out": out}, metrics)


def html(response: Any) -> str:
    return response.content.decode()


def figure(page: str, element_id: str) -> dict[str, Any]:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))  # strict JSON: NaN/inf would not parse back as numbers


# --- the list ----------------------------------------------------------------------------------
def test_sweep_list_shows_each_sweep_with_base_size_and_progress(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)

    response = client.get(reverse("runs:sweep_list", args=["lab"]))

    page = html(response)
    assert response.status_code == 200
    assert f'href="/w/lab/sweeps/{sweep.pk}/">k sweep</a>' in page
    assert "chain@1" in page
    assert "4/4 done" in page
    assert "New sweep" not in page  # a viewer cannot start one


def test_sweep_pages_are_404_for_a_stranger(client: Any, world: Any, base: PipelineVersion) -> None:
    sweep = start(world, base)
    client.force_login(world.stranger)

    urls = [
        reverse("runs:sweep_list", args=["lab"]),
        reverse("runs:sweep_new", args=["lab"]),
        reverse("runs:sweep_detail", args=["lab", sweep.pk]),
        reverse("runs:sweep_live", args=["lab", sweep.pk]),
        reverse("runs:sweep_compare", args=["lab", sweep.pk]),
        # another workspace's sweep under the stranger's own workspace: no such sweep
        reverse("runs:sweep_detail", args=["elsewhere", sweep.pk]),
    ]

    assert [client.get(url).status_code for url in urls] == [404] * len(urls)
    assert client.post(reverse("runs:sweep_cancel", args=["lab", sweep.pk])).status_code == 404
    assert Sweep.objects.get().canceled_at is None


SWEEP_LIST_QUERIES = 5  # session, user, workspace, count, the page of sweeps


@pytest.mark.parametrize("n", [1, 50])
def test_sweep_list_costs_the_same_queries_for_1_and_50_sweeps(
    client: Any, world: Any, base: PipelineVersion, django_assert_num_queries: Any, n: int
) -> None:
    for i in range(n):
        sweep = Sweep.objects.create(
            workspace=world.workspace,
            name=f"s{i}",
            base_version=base,
            axes={"s2": [{"label": "one"}]},
            replicates=2,
            created_by=world.owner,
        )
        for r in range(2):
            PipelineRun.objects.create(
                workspace=world.workspace,
                pipeline_version=base,
                sweep=sweep,
                variant={"s2": "one", "replicate": r},
                status=RunStatus.SUCCEEDED if r else RunStatus.FAILED,
            )
    client.force_login(world.owner)

    with django_assert_num_queries(SWEEP_LIST_QUERIES):
        response = client.get(reverse("runs:sweep_list", args=["lab"]))

    assert response.status_code == 200
    assert html(response).count("2/2 done") == n
    assert html(response).count("1 failed") == n


# --- the create form ---------------------------------------------------------------------------
def new_url(**query: Any) -> str:
    url = reverse("runs:sweep_new", args=["lab"])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_new_sweep_without_a_base_offers_the_pipelines(client: Any, world: Any, base: Any) -> None:
    client.force_login(world.editor)

    response = client.get(new_url())

    assert response.status_code == 200
    assert '<option value="chain">chain (1 version)</option>' in html(response)


def test_new_sweep_needs_an_editor(client: Any, world: Any, base: PipelineVersion) -> None:
    client.force_login(world.viewer)

    assert client.get(new_url(pipeline="chain", version=1)).status_code == 403
    assert client.post(new_url(pipeline="chain", version=1), {"name": "x"}).status_code == 403
    assert not Sweep.objects.exists()


def test_new_sweep_form_offers_variant_rows_per_step_and_ticks_seed_like_params(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    client.force_login(world.editor)

    response = client.get(new_url(pipeline="chain", version=1, slots=2))

    page = html(response)
    assert response.status_code == 200
    form = response.context["form"]
    assert {f"axes.s{i}.{slot}.module" for i in range(3) for slot in range(2)} <= set(form.fields)
    assert "axes.s0.2.module" not in form.fields
    assert '<option value="m2@2">m2@2</option>' in page
    assert '<optgroup label="m2">' in page
    # k is an int param of every step: a seed candidate, but not named like a seed.
    assert form.fields["seed_params"].choices == [
        ("s0.k", "s0.k"),
        ("s1.k", "s1.k"),
        ("s2.k", "s2.k"),
    ]


def form_data(**fields: Any) -> dict[str, Any]:
    data = {"name": "from the form", "replicates": "2", "seed_params": ["s2.k"], "reuse": "on"}
    data.update(fields)
    return data


def test_new_sweep_from_the_form_starts_every_combination(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    client.force_login(world.editor)
    data = form_data(
        **{
            "axes.s2.0.label": "one",
            "axes.s2.1.module": "m2@2",  # no label: named after the module
            "axes.s1.0.label": "k3",
            "axes.s1.0.params": "k=3\n# a comment\n",
        }
    )

    response = client.post(new_url(pipeline="chain", version=1), data)

    sweep = Sweep.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:sweep_detail", args=["lab", sweep.pk])
    assert sweep.axes == {
        "s1": [{"label": "k3", "params": {"k": 3}}],
        "s2": [{"label": "one"}, {"label": "m2", "module": "m2@2"}],
    }
    assert sweep.replicates == 2 and sweep.seed_params == ["s2.k"]
    assert sweep.created_by == world.editor
    assert PipelineRun.objects.filter(sweep=sweep).count() == 1 * 2 * 2


def test_new_sweep_problems_are_shown_next_to_their_inputs_and_start_nothing(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    client.force_login(world.editor)
    data = form_data(
        **{
            "seed_params": [],  # replicates 2 without a seed
            "axes.s2.0.label": "one",
            # row 1 left empty: row 2 becomes the axis' variant 1
            "axes.s2.2.label": "bad",
            "axes.s2.2.module": "m0@1",  # takes no input x: cannot stand in for s2
            "axes.s1.0.label": "not a label!",
        }
    )

    response = client.post(new_url(pipeline="chain", version=1), data)

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "has no input 'x'" in " ".join(errors["axes.s2.2.module"])
    assert errors["axes.s1.0.label"]
    assert "replicates > 1 need a seed param" in " ".join(errors["seed_params"])
    assert "axes.s2.1.module" not in errors
    page = html(response)
    assert "Nothing was started" in page
    assert 'value="not a label!"' in page  # what was typed is kept
    assert not Sweep.objects.exists() and not PipelineRun.objects.exists()


def test_more_rows_keeps_what_was_typed_and_starts_nothing(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    client.force_login(world.editor)
    data = form_data(**{"axes.s2.0.label": "one", "axes.s2.0.params": "k=3", "more": "1"})

    response = client.post(new_url(pipeline="chain", version=1), data)

    assert response.status_code == 200
    form = response.context["form"]
    assert form.slots == 5 and not form.is_bound
    page = html(response)
    assert 'name="axes.s2.4.label"' in page
    assert 'value="one"' in page and ">\nk=3</textarea>" in page
    assert re.search(r'<input type="checkbox" name="seed_params" value="s2.k"[^>]* checked', page)
    assert "The form has problems" not in page
    assert not Sweep.objects.exists()


def test_new_sweep_with_a_malformed_params_line_is_a_400_on_that_box(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    client.force_login(world.editor)
    data = form_data(**{"axes.s2.0.label": "one", "axes.s2.0.params": "k 3"})

    response = client.post(new_url(pipeline="chain", version=1), data)

    assert response.status_code == 400
    assert "write name=value" in " ".join(response.context["form"].errors["axes.s2.0.params"])
    assert not Sweep.objects.exists()


def test_new_sweep_over_the_size_limit_says_so(
    client: Any, world: Any, base: PipelineVersion, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "SWEEP_MAX_RUNS": 3}
    client.force_login(world.editor)
    data = form_data(**{"axes.s2.0.label": "one", "axes.s2.1.label": "two"})

    response = client.post(new_url(pipeline="chain", version=1), data)

    assert response.status_code == 400
    assert "= 4 runs; the limit is 3" in html(response)
    assert not PipelineRun.objects.exists()


def test_new_sweep_of_an_unknown_version_is_a_404(client: Any, world: Any, base: Any) -> None:
    client.force_login(world.editor)

    assert client.get(new_url(pipeline="chain", version=9)).status_code == 404
    assert client.get(new_url(pipeline="nope")).status_code == 404
    assert client.get(new_url(pipeline="../x")).status_code == 404


# --- the sweep page ----------------------------------------------------------------------------
def test_sweep_page_polls_while_runs_go_and_stops_when_all_are_terminal(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.viewer)
    url = reverse("runs:sweep_detail", args=["lab", sweep.pk])
    live = reverse("runs:sweep_live", args=["lab", sweep.pk])

    before = html(client.get(url))
    work(sweep, fail={("two", 1)})
    after = client.get(url)
    partial = client.get(live)

    assert f'hx-get="{live}"' in before
    assert "0</strong> of 4 runs done" in before
    page = html(after)
    assert f'hx-get="{live}"' not in page
    assert "4</strong> of 4 runs done" in page
    assert "3 succeeded" in page and "1 failed" in page
    # s0 and s1 ran once (every run shares them) and were reused three times each; s2 ran
    # per run, once of them failing.
    assert "<strong>5</strong> executed, <strong>6</strong> reused" in page
    assert '<span class="error">1 failed</span>' in page
    assert page.count('<tr data-status="') == 4
    assert "s2.accuracy" in page and ">0.61<" in page and ">0.8<" in page
    assert '<span class="error">failed</span>' in page  # never a 0 for the failed run
    assert "Cancel the sweep" not in page  # finished
    assert "Promote a variant" not in page  # a viewer
    assert partial.status_code == 200
    assert html(partial).strip().startswith('<div id="sweep-live"')


def test_sweep_page_shows_axes_history_and_editor_actions(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.editor)

    page = html(client.get(reverse("runs:sweep_detail", args=["lab", sweep.pk])))

    assert "m2@2" in page and "the base step&#x27;s" in page
    assert "Created by eddie: 4 runs" in page
    assert "Cancel the sweep" in page
    assert 'name="variant.s2"' in page
    assert "Add a variant to an axis" in page
    assert f'href="/w/lab/runs/?sweep={sweep.pk}"' in page


def test_cancel_stops_the_sweep_and_needs_an_editor(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    url = reverse("runs:sweep_cancel", args=["lab", sweep.pk])

    client.force_login(world.viewer)
    forbidden = client.post(url)
    client.force_login(world.editor)
    get = client.get(url)
    response = client.post(url)

    assert forbidden.status_code == 403 and get.status_code == 405
    assert response.status_code == 302
    sweep.refresh_from_db()
    assert sweep.canceled_at is not None
    assert set(PipelineRun.objects.filter(sweep=sweep).values_list("status", flat=True)) == {
        RunStatus.CANCELED
    }
    page = html(client.get(reverse("runs:sweep_detail", args=["lab", sweep.pk])))
    assert "Add a variant to an axis" not in page  # a canceled sweep takes none


def test_extend_adds_a_variant_and_starts_only_the_new_combinations(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.editor)
    url = reverse("runs:sweep_extend", args=["lab", sweep.pk])

    response = client.post(url, {"step": "s2", "label": "three", "params": ""})

    assert response.status_code == 302
    sweep.refresh_from_db()
    assert [v["label"] for v in sweep.axes["s2"]] == ["one", "two", "three"]
    new = PipelineRun.objects.filter(sweep=sweep, variant__s2="three")
    assert new.count() == 2 and PipelineRun.objects.filter(sweep=sweep).count() == 6
    assert SweepEvent.objects.filter(sweep=sweep, kind=SweepEventKind.EXTENDED).count() == 1


def test_extend_with_a_bad_variant_is_a_400_next_to_the_input(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.editor)
    url = reverse("runs:sweep_extend", args=["lab", sweep.pk])

    bad_module = client.post(url, {"step": "s2", "label": "x", "module": "m0@1"})
    taken = client.post(url, {"step": "s2", "label": "one"})
    junk = client.post(url, {"step": "nope", "label": "x"})

    assert bad_module.status_code == 400
    assert "has no input 'x'" in " ".join(bad_module.context["extend_form"].errors["module"])
    assert "duplicate label" in " ".join(taken.context["extend_form"].errors["label"])
    assert junk.status_code == 400 and junk.context["extend_form"].errors["step"]
    assert PipelineRun.objects.filter(sweep=sweep).count() == 4


def test_promote_makes_the_next_version_and_links_it(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.editor)

    response = client.post(
        reverse("runs:sweep_promote", args=["lab", sweep.pk]), {"variant.s2": "two"}
    )

    promoted = PipelineVersion.objects.filter(pipeline=base.pipeline).order_by("-number").first()
    assert promoted is not None and promoted.parent == base
    assert promoted.spec["steps"]["s2"]["module"] == "m2@2"
    assert response.status_code == 302
    assert response["Location"] == f"/w/lab/pipelines/chain/{promoted.number}/"
    page = html(client.get(reverse("runs:sweep_detail", args=["lab", sweep.pk])))
    link = f'<a href="/w/lab/pipelines/chain/{promoted.number}/">chain@{promoted.number}</a>'
    assert link in page


def test_promote_of_a_label_of_no_axis_is_a_400(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.editor)
    versions = PipelineVersion.objects.count()

    response = client.post(
        reverse("runs:sweep_promote", args=["lab", sweep.pk]), {"variant.s2": "nine"}
    )

    assert response.status_code == 400
    assert "no variant &#x27;nine&#x27; on this axis" in html(response)
    assert PipelineVersion.objects.count() == versions


# --- the comparison ----------------------------------------------------------------------------
def compare_url(sweep: Sweep, **query: str) -> str:
    url = reverse("runs:sweep_compare", args=["lab", sweep.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def test_comparison_names_the_best_variant_with_its_ci_and_draws_the_four_charts(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)

    response = client.get(compare_url(sweep))

    assert response.status_code == 200
    page = html(response)
    comparison = response.context["comparison"]
    assert (comparison.metric, comparison.step, comparison.direction) == ("accuracy", "s2", "max")
    assert comparison.best.name == "s2=two"
    # two: 0.80 and 0.81 -> mean 0.805, s = 0.00707, CI 0.805 +- 12.706 * 0.005
    assert comparison.best.summary.ci_low == pytest.approx(0.805 - 12.7062047 * 0.005)
    # two beats one (the only other variant): t = 0.2 / 0.00707, df = 2, p = 0.0012 < 0.05.
    assert comparison.verdict.clear is True
    assert '<tr class="top best">' in page and "★ best" in page
    assert "It beats the other variant with a value at p ≤ 0.05 (level 0.05" in page
    # A vs B defaults to the best against the runner-up.
    versus = response.context["versus"]
    assert versus.diff == pytest.approx(0.2) and versus.p_value is not None
    # The shareable link keeps every choice.
    assert "metric=accuracy&amp;step=s2&amp;aggregate=last&amp;direction=max" in page
    bars = figure(page, "sweep-bars")
    assert bars["data"][0]["x"] == [pytest.approx(0.605), pytest.approx(0.805)]
    assert figure(page, "sweep-parcoords")["data"][0]["type"] == "parcoords"
    assert figure(page, "sweep-effect-0")["data"][0]["x"] == ["one", "two"]
    curves = figure(page, "sweep-curves")
    assert len(curves["data"]) == 4 and curves["layout"]["yaxis"]["title"]["text"] == "loss"
    # plotly is not a tag of the page: charts.js loads it when a figure nears the viewport.
    assert 'data-plotly-src="/static/vendor/plotly.min.js"' in page
    assert '<script src="/static/vendor/plotly.min.js"' not in page


def test_comparison_keeps_the_choices_of_its_url(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)

    response = client.get(
        compare_url(
            sweep,
            metric="loss",
            step="s2",
            aggregate="min",
            direction="min",
            a="s2%3Done",
            b="s2%3Dtwo",
        )
    )

    assert response.status_code == 200
    comparison = response.context["comparison"]
    assert (comparison.metric, comparison.aggregate, comparison.direction) == ("loss", "min", "min")
    # min of 1/(i+1+r) over i < 4 is 1/(4+r), the same for both labels: replicates differ.
    assert comparison.best.summary.mean == pytest.approx((1 / 4 + 1 / 5) / 2)
    page = html(response)
    assert '<option value="min" selected>lower (min)</option>' in page
    assert '<option value="s2=one" selected>' in page
    assert response.context["versus"].a == {"s2": "one"}


def test_comparison_shows_failed_runs_as_failed_never_as_zeros(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep, fail={("two", 0), ("two", 1)})
    client.force_login(world.viewer)

    response = client.get(compare_url(sweep, metric="accuracy", step="s2"))

    page = html(response)
    two = response.context["comparison"].variants[1]
    assert two.summary.n == 0 and two.summary.mean is None and two.counts.failed == 2
    assert response.context["comparison"].best.name == "s2=one"
    assert figure(page, "sweep-bars")["data"][0]["x"][1] is None
    assert '<td class="num" data-value="2"><span class="error">2</span>' in page
    assert page.count(">n/a<") >= 3  # mean, std and CI of the failed variant


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ({"metric": "nope"}, "No run of this sweep logged &#x27;nope&#x27;"),
        ({"metric": "accuracy", "step": "zz"}, "The pipeline has no step &#x27;zz&#x27;"),
        ({"metric": "accuracy", "aggregate": "mean"}, "is not an aggregate"),
        ({"metric": "accuracy", "direction": "up"}, "is not a direction"),
        ({"a": "s2%3Done", "b": "s9%3Dx"}, "is not a variant of this sweep"),
        ({"a": "s2%3Done", "b": "s2%3Dnine"}, "no run of the sweep is s2=nine"),
        ({"metric": "accuracy", "level": "0.5"}, "is not a significance level"),
    ],
)
def test_comparison_with_bad_input_is_a_400_that_says_why(
    client: Any, world: Any, base: PipelineVersion, query: dict[str, str], text: str
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)

    response = client.get(compare_url(sweep, **query))

    assert response.status_code == 400
    assert text in html(response)
    assert 'role="alert"' in html(response)


def test_no_clear_winner_unless_the_best_mean_beats_every_other_variant_at_the_level(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    pair = start(world, base)
    # A third variant identical to `one` (its steps reuse one's): one more comparison.
    three = [{"label": "one"}, {"label": "two", "module": "m2@2"}, {"label": "three"}]
    triple = start(world, base, name="three", axes={"s2": three})
    work(pair)
    work(triple)
    client.force_login(world.viewer)
    query = {"metric": "accuracy", "step": "s2", "level": "0.002"}

    alone = html(client.get(compare_url(pair, **query)))
    response = client.get(compare_url(triple, **query))

    # two (0.80, 0.81) vs one (0.60, 0.61): t = 0.2 / 0.00707, df = 2,
    # p = 1 - t / sqrt(2 + t^2) = 0.00125. Alone, it must reach 0.002: a winner. With three
    # variants each comparison must reach 0.002 / 2 = 0.001: no clear winner.
    assert "★ best" in alone and '<tr class="top best">' in alone
    assert "at p ≤ 0.002 (level 0.002, Bonferroni over 1 comparison" in alone
    page = html(response)
    assert response.status_code == 200
    assert response.context["comparison"].verdict.clear is False
    assert "★ best" not in page and "No clear winner</span> at level 0.002" in page
    assert '<tr class="top">' in page and 'class="top best"' not in page
    assert 'Against the runner-up, s2=one, p = <span title="0.00124766' in page
    assert "at p ≤ 0.001 (level 0.002 / 2, Welch" in page
    assert '<option value="0.002" selected>0.002</option>' in page  # a level of its own
    assert "level=0.002" in response.context["share_query"]
    # Nothing is green in the chart either.
    colours = figure(page, "sweep-bars")["data"][0]["marker"]["color"]
    assert sweep_charts.BEST_COLOUR not in colours
    # Each variant's p against the best mean; a sortable table; accuracy's CIs in [0, 1].
    assert '<table class="variants sortable">' in page
    assert page.count('data-sort="number"') == 6
    assert "95% CIs are cut to the range of" in page and "[0, 1]" in page


def test_comparison_of_a_sweep_still_running_shows_no_value_yet(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.viewer)

    response = client.get(compare_url(sweep, metric="accuracy", step="s2"))

    assert response.status_code == 200
    assert "No variant has a value yet." in html(response)
    assert "No run has logged loss yet" not in html(response)  # curve: the metric itself


def test_comparison_before_any_metric_is_logged_is_an_empty_page_not_an_error(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    client.force_login(world.viewer)

    response = client.get(compare_url(sweep))

    assert response.status_code == 200
    assert "No run of this sweep has logged a metric yet" in html(response)


COMPARE_QUERIES = 11  # session, user, sweep+workspace+role, metrics 2, rows 3, curve rows 3


@pytest.mark.parametrize("replicates", [1, 10])
def test_comparison_costs_the_same_queries_for_2_and_20_runs(
    client: Any,
    world: Any,
    base: PipelineVersion,
    django_assert_num_queries: Any,
    replicates: int,
) -> None:
    sweep = start(world, base, replicates=replicates)
    work(sweep)
    assert PipelineRun.objects.filter(sweep=sweep).count() == 2 * replicates
    client.force_login(world.viewer)

    with django_assert_num_queries(COMPARE_QUERIES):
        response = client.get(compare_url(sweep))

    assert response.status_code == 200
    assert sum(v.summary.n for v in response.context["comparison"].variants) == 2 * replicates


@pytest.mark.parametrize("replicates", [1, 10])
def test_sweep_page_costs_the_same_queries_for_2_and_20_runs(
    client: Any, world: Any, base: PipelineVersion, replicates: int
) -> None:
    sweep = start(world, base, replicates=replicates)
    work(sweep)
    client.force_login(world.editor)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("runs:sweep_detail", args=["lab", sweep.pk]))

    assert response.status_code == 200
    assert len(queries) == 12, [q["sql"][:80] for q in queries]


def test_run_compare_names_the_sweep_and_variant_of_each_run(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base, replicates=1)
    work(sweep)
    one, two = PipelineRun.objects.filter(sweep=sweep).order_by("pk")
    client.force_login(world.viewer)

    page = html(client.get(reverse("runs:compare", args=["lab"]), {"a": one.pk, "b": two.pk}))

    assert f'<a href="/w/lab/sweeps/{sweep.pk}/">sweep {sweep.pk}</a>' in page
    assert "<code>s2=two</code>" in page


def test_sweep_page_lists_the_first_runs_and_links_the_rest(
    client: Any, world: Any, base: PipelineVersion, monkeypatch: Any
) -> None:
    from runs_app.sweeps import views as sweep_views

    monkeypatch.setattr(sweep_views, "SWEEP_TABLE_RUNS", 3)
    sweep = start(world, base)
    client.force_login(world.viewer)

    page = html(client.get(reverse("runs:sweep_detail", args=["lab", sweep.pk])))

    assert page.count('<tr data-status="') == 3
    assert "… and 1 more" in page


def test_the_page_and_the_api_default_to_the_same_direction(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)
    api = reverse("api:sweep-compare", args=["lab", sweep.pk])

    for metric, direction in (("loss", "min"), ("accuracy", "max")):
        page = client.get(compare_url(sweep, metric=metric, step="s2"))
        body = client.get(api, {"metric": metric, "step": "s2"}).json()

        assert page.context["comparison"].direction == direction
        assert body["direction"] == direction


def test_a_compare_query_that_does_not_clean_falls_back_to_the_defaults(
    client: Any, world: Any, base: PipelineVersion
) -> None:
    sweep = start(world, base)
    work(sweep)
    client.force_login(world.viewer)

    response = client.get(reverse("runs:sweep_compare", args=["lab", sweep.pk]), {"a": "x\x00"})

    assert response.status_code == 200, [str(e) for e in response.context["errors"]]
    assert response.context["a_text"] == ""
