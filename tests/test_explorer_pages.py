"""The run explorer, step pages, runs list, compare and lineage pages, driven over HTTP.

Runs are made by the scheduler and worked the way a worker works them (claim, succeed with
stored outputs, metrics), without executing code, so these tests need no worker threads.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.urls import reverse

from runs_app import scheduler
from runs_app.models import PipelineRun, RunStatus, StepLog, StepRun, StepStatus
from stepworks.context import MetricPoint
from tests.factories import chain
from tests.helpers import next_queued, succeed

pytestmark = pytest.mark.django_db

S = StepStatus


# --- builders ------------------------------------------------------------------------------
def work(step: StepRun, payload: bytes = b"1", metrics: list[MetricPoint] | None = None) -> None:
    """Claim and succeed a queued step the way a worker does, with one JSON output."""
    body = b'{"v": "' + payload + step.name.encode() + b'"}'
    assert succeed(step, {"out": (body, "application/json")}, metrics or [])


def drain(run: PipelineRun, payload: bytes = b"1", metrics: bool = False) -> PipelineRun:
    """Work every queued step of the run until none is left."""
    while (queued := next_queued("position", run=run)) is not None:
        points = None
        if metrics:
            points = [MetricPoint("accuracy", 0.5 + queued.position / 10)]
            points += [MetricPoint("loss", 1.0 / (i + 1), step=i) for i in range(5)]
        work(queued, payload, points)
    run.refresh_from_db()
    return run


def finished_run(workspace: Any, version: Any = None, **kwargs: Any) -> PipelineRun:
    version = version or chain(workspace)
    return drain(scheduler.run_create(version, **kwargs), metrics=True)


def text(response: Any) -> str:
    return response.content.decode()


def graph_of(html: str, element_id: str = "run-graph") -> dict[str, Any]:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))


@pytest.fixture
def version(world: Any) -> Any:
    return chain(world.workspace)


# --- the run explorer ---------------------------------------------------------------------------
def test_explorer_shows_graph_steps_and_timeline_of_a_finished_run(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.viewer)

    response = client.get(reverse("runs:detail", args=["lab", run.pk]))

    html = text(response)
    assert response.status_code == 200
    graph = graph_of(html)
    assert [n["id"] for n in graph["nodes"]] == ["s0", "s1", "s2"]
    assert {n["status"] for n in graph["nodes"]} == {"succeeded"}
    assert graph["nodes"][1]["href"] == reverse("runs:step", args=["lab", run.pk, "s1"])
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {("s0", "s1"), ("s1", "s2")}
    assert "/static/vendor/dagre.min.js" in html and "/static/js/dag.js" in html
    assert 'class="tl-run fill-succeeded"' in html  # the timeline has bars
    assert html.count('data-status="succeeded"') == 3
    # A finished run does not poll; a viewer sees no action buttons.
    assert "hx-trigger" not in html.split('id="live"')[1].split(">")[0]
    assert reverse("runs:cancel", args=["lab", run.pk]) not in html
    assert reverse("runs:rerun", args=["lab", run.pk]) not in html


def test_explorer_of_a_running_run_polls_its_live_partial_until_it_finishes(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    client.force_login(world.editor)
    live_url = reverse("runs:live", args=["lab", run.pk])

    page = text(client.get(reverse("runs:detail", args=["lab", run.pk])))
    partial = client.get(live_url, HTTP_HX_REQUEST="true")

    assert f'hx-get="{live_url}" hx-trigger="every 2s" hx-swap="outerHTML"' in page
    assert reverse("runs:cancel", args=["lab", run.pk]) in page  # editor, active run
    body = text(partial)
    assert partial.status_code == 200 and "<html" not in body and body.lstrip().startswith("<div")
    assert 'hx-trigger="every 2s"' in body
    assert {n["status"] for n in graph_of(body)["nodes"]} == {"queued", "pending"}

    drain(run)
    done = text(client.get(live_url, HTTP_HX_REQUEST="true"))

    assert "hx-trigger" not in done  # terminal: the swapped-in element stops the polling
    assert {n["status"] for n in graph_of(done)["nodes"]} == {"succeeded"}
    assert reverse("runs:cancel", args=["lab", run.pk]) not in done


def test_reused_steps_show_a_reuse_badge_and_their_source_run(
    client: Any, world: Any, version: Any
) -> None:
    first = drain(scheduler.run_create(version))
    second = drain(scheduler.run_create(version))
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:detail", args=["lab", second.pk])))

    nodes = graph_of(html)["nodes"]
    assert {n["status"] for n in nodes} == {"reused"}
    assert {n["reused_from_run"] for n in nodes} == {first.pk}
    assert f"↻ run {first.pk}" in html


def test_the_run_page_leads_with_metrics_params_and_what_reuse_saved(
    client: Any, world: Any, version: Any
) -> None:
    first = finished_run(world.workspace, version)
    second = finished_run(world.workspace, version, param_overrides={"s2.k": 4})
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:detail", args=["lab", second.pk])))

    results = html.split('id="metrics-title"')[1].split('id="graph-title"')[0]
    assert "Results" in results and "accuracy" in results and "0.7" in results
    # Every step's effective params, the override marked; s0 and s1 were reused from `first`.
    overridden = '<tr class="differs"><th scope="row" class="mono">s2.k</th><td class="mono">4</td>'
    assert overridden + '<td><span class="tag">overridden</span>' in results
    assert '<th scope="row" class="mono">s0.k</th><td class="mono">0</td><td></td>' in results
    assert "2 steps reused" in results
    assert first.pk != second.pk and html.index('id="metrics-title"') < html.index(
        'id="graph-title"'
    )


def test_a_failed_run_names_the_step_the_reason_and_the_exceptions_last_line(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    work(next_queued("position", run=run))
    step = scheduler.step_claim(next_queued("position", run=run).pk, "w1")
    trace = "Traceback (most recent call last):\n  File \"m1.py\", line 3, in main\nKeyError: 'x'\n"
    assert scheduler.step_fail(step, step.attempt, "user_error", trace)
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:detail", args=["lab", run.pk])))

    summary = html.split('class="error failure-summary"')[1].split("</article>")[0]
    step_url = reverse("runs:step", args=["lab", run.pk, "s1"])
    assert f'Step <a href="{step_url}" class="mono">s1</a> failed:' in summary
    assert "the step&#x27;s code raised" in summary
    assert "<code>KeyError: &#x27;x&#x27;</code>" in summary
    assert f'href="{step_url}#failure"' in summary


# --- who may do what ---------------------------------------------------------------------------
def test_run_pages_of_another_workspace_are_404(client: Any, world: Any) -> None:
    secret = finished_run(world.other_workspace)
    mine = finished_run(world.workspace)
    client.force_login(world.owner)

    for name in ("detail", "live", "lineage", "outputs_zip", "clone"):
        assert client.get(reverse(f"runs:{name}", args=["lab", secret.pk])).status_code == 404
        assert client.get(reverse(f"runs:{name}", args=["elsewhere", mine.pk])).status_code == 404
    assert client.get(reverse("runs:step", args=["lab", secret.pk, "s0"])).status_code == 404
    assert client.get(reverse("runs:step", args=["lab", mine.pk, "nope"])).status_code == 404
    for name in ("cancel", "rerun"):
        assert client.post(reverse(f"runs:{name}", args=["lab", secret.pk])).status_code == 404


def test_viewer_gets_403_and_stranger_404_on_every_action(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    before = PipelineRun.objects.count()

    client.force_login(world.viewer)
    for name in ("cancel", "rerun", "clone"):
        assert client.post(reverse(f"runs:{name}", args=["lab", run.pk])).status_code == 403
    client.force_login(world.stranger)
    for name in ("cancel", "rerun", "clone"):
        assert client.post(reverse(f"runs:{name}", args=["lab", run.pk])).status_code == 404

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and not run.cancel_requested
    assert PipelineRun.objects.count() == before


def test_actions_are_post_only(client: Any, world: Any, version: Any) -> None:
    run = scheduler.run_create(version)
    client.force_login(world.editor)

    assert client.get(reverse("runs:cancel", args=["lab", run.pk])).status_code == 405
    assert client.get(reverse("runs:rerun", args=["lab", run.pk])).status_code == 405
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING


def test_editor_cancels_a_running_run_through_the_scheduler(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    client.force_login(world.editor)

    response = client.post(reverse("runs:cancel", args=["lab", run.pk]))

    assert response.status_code == 302
    assert response.url == reverse("runs:detail", args=["lab", run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED and run.cancel_requested
    assert set(StepRun.objects.filter(run=run).values_list("status", flat=True)) == {S.CANCELED}
    again = client.post(reverse("runs:cancel", args=["lab", run.pk]), follow=True)
    assert "had already finished" in text(again)


def test_rerun_starts_a_linked_run_that_reuses_everything(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)

    response = client.post(reverse("runs:rerun", args=["lab", run.pk]))

    new = PipelineRun.objects.exclude(pk=run.pk).get()
    assert response.status_code == 302
    assert response.url == reverse("runs:detail", args=["lab", new.pk])
    assert new.rerun_of_id == run.pk and new.created_by == world.editor
    assert set(StepRun.objects.filter(run=new).values_list("status", flat=True)) == {S.REUSED}


def test_rerun_from_a_step_forces_it_and_everything_downstream(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)

    client.post(reverse("runs:rerun", args=["lab", run.pk]), {"from_step": "s1"})

    new = PipelineRun.objects.exclude(pk=run.pk).get()
    statuses = dict(StepRun.objects.filter(run=new).values_list("name", "status"))
    assert statuses == {"s0": S.REUSED, "s1": S.QUEUED, "s2": S.PENDING}


def test_rerun_from_an_unknown_step_says_so_and_starts_nothing(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)

    response = client.post(
        reverse("runs:rerun", args=["lab", run.pk]), {"from_step": "../etc"}, follow=True
    )

    assert response.status_code == 200
    assert "unknown step" in text(response)
    assert PipelineRun.objects.count() == 1


def test_clone_form_shows_each_step_with_its_params_and_module(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)

    html = text(client.get(reverse("runs:clone", args=["lab", run.pk])))

    assert 'name="s1.k" id="id_s1.k" value="0"' in html
    assert '<option value="m1@1" selected>m1@1</option>' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_clone_with_a_changed_param_starts_a_run_that_reuses_upstream(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)
    data = {
        "s0.__module": "m0@1",
        "s1.__module": "m1@1",
        "s2.__module": "m2@1",
        "s0.k": "0",
        "s1.k": "0",
        "s2.k": "5",
    }

    response = client.post(reverse("runs:clone", args=["lab", run.pk]), data)

    new = PipelineRun.objects.exclude(pk=run.pk).get()
    assert response.status_code == 302
    assert new.cloned_from_id == run.pk and new.param_overrides == {"s2.k": 5}
    assert new.pipeline_version_id == run.pipeline_version_id  # params only: same version
    statuses = dict(StepRun.objects.filter(run=new).values_list("name", "status"))
    assert statuses == {"s0": S.REUSED, "s1": S.REUSED, "s2": S.QUEUED}


def test_clone_with_a_bad_value_shows_the_error_next_to_its_field(
    client: Any, world: Any, version: Any
) -> None:
    run = drain(scheduler.run_create(version))
    client.force_login(world.editor)
    data = {"s0.__module": "m0@1", "s1.__module": "m1@1", "s2.__module": "m2@1"}
    data.update({"s0.k": "0", "s1.k": "lots", "s2.k": "0"})

    response = client.post(reverse("runs:clone", args=["lab", run.pk]), data)

    html = text(response)
    assert response.status_code == 200
    assert PipelineRun.objects.count() == 1
    field = html.index('id="id_s1.k"')
    errors = html.index('id="id_s1.k-errors"')
    assert field < errors < html.index('id="id_s2.k"')
    assert "params.s1.k" in html[errors : errors + 400]


# --- step detail ---------------------------------------------------------------------------------
def test_step_page_links_inputs_outputs_and_shows_metrics(
    client: Any, world: Any, version: Any
) -> None:
    run = finished_run(world.workspace, version)
    s1 = StepRun.objects.get(run=run, name="s1")
    client.force_login(world.viewer)

    response = client.get(reverse("runs:step", args=["lab", run.pk, "s1"]))

    html = text(response)
    assert response.status_code == 200
    s0_url = reverse("runs:step", args=["lab", run.pk, "s0"])
    s2_url = reverse("runs:step", args=["lab", run.pk, "s2"])
    assert f'<a href="{s0_url}" class="mono">s0</a>.out' in html  # input x came from s0.out
    assert f'<a href="{s2_url}" class="mono">s2</a>.x' in html  # output read by s2.x
    out = s1.outputs.get().artifact
    assert reverse("runs:artifact", args=["lab", out.sha256]) in html
    assert reverse("runs:artifact_download", args=["lab", out.sha256]) in html
    assert '<th scope="row" class="mono">accuracy</th><td class="num" title="0.6">0.6</td>' in html
    # Each output by its name with its preview inline: here a JSON tree of what s1 stored.
    output = html.split('id="output-out"')[1].split("</article>")[0]
    assert '<h3 class="mono" id="output-out-title">out</h3>' in output
    assert 'class="json-tree"' in output and "1s1" in output
    figure = graph_of(html, "metric-0")
    assert figure["data"][0]["y"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert "/static/vendor/plotly.min.js" in html
    assert "Ran: no earlier run of pipeline chain has a step" in html


def test_step_page_explains_a_reuse_and_what_changed(client: Any, world: Any, version: Any) -> None:
    first = finished_run(world.workspace, version)
    second = drain(scheduler.run_create(version, param_overrides={"s2.k": 7}))
    client.force_login(world.viewer)

    reused = text(client.get(reverse("runs:step", args=["lab", second.pk, "s1"])))
    ran = text(client.get(reverse("runs:step", args=["lab", second.pk, "s2"])))

    assert f"Reused from run {first.pk}, saved" in reused
    assert f"Ran because params changed since run {first.pk} (k: 0 -&gt; 7)" in ran


def test_step_log_tails_from_an_offset_and_filters_lines(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    step = StepRun.objects.get(run=run, name="s0")
    claimed = scheduler.step_claim(step.pk, "test-worker")
    assert claimed is not None
    StepLog.objects.create(step=step, attempt=1, offset=0, text="epoch 1 loss 0.9\nepoch 2 ")
    client.force_login(world.viewer)
    log_url = reverse("runs:step_log", args=["lab", run.pk, "s0"])

    page = text(client.get(reverse("runs:step", args=["lab", run.pk, "s0"])))
    assert "epoch 1 loss 0.9\nepoch 2 </pre>" in page
    assert f'hx-get="{log_url}?attempt=1&amp;after=25" hx-trigger="every 1s"' in page

    StepLog.objects.create(step=step, attempt=1, offset=25, text="loss 0.5\n<b>done</b>\n")
    more = text(client.get(log_url, {"attempt": 1, "after": 25}, HTTP_HX_REQUEST="true"))
    assert (
        '<span hx-swap-oob="beforeend:#log-text">loss 0.5\n&lt;b&gt;done&lt;/b&gt;\n</span>' in more
    )
    assert "after=46" in more and "<html" not in more

    found = text(client.get(log_url, {"q": "LOSS", "attempt": 1}, HTTP_HX_REQUEST="true"))
    assert '<li><span class="ln">1</span>epoch 1 loss 0.9</li>' in found
    assert '<li><span class="ln">2</span>epoch 2 loss 0.5</li>' in found
    assert "done" not in found and "2 lines containing" in found

    scheduler.step_fail(claimed, claimed.attempt, "user_error", "boom")
    final = text(client.get(log_url, {"attempt": 1, "after": 46}, HTTP_HX_REQUEST="true"))
    assert "hx-trigger" not in final  # the step finished: the log stops polling


def test_step_page_draws_metrics_as_they_arrive_and_stops_polling_at_the_end(
    client: Any, world: Any, version: Any
) -> None:
    run = scheduler.run_create(version)
    step = StepRun.objects.get(run=run, name="s0")
    claimed = scheduler.step_claim(step.pk, "test-worker")
    assert claimed is not None
    client.force_login(world.viewer)
    url = reverse("runs:step_metrics", args=["lab", run.pk, "s0"])

    page = text(client.get(reverse("runs:step", args=["lab", run.pk, "s0"])))
    quiet = text(client.get(url, {"seen": 0}, HTTP_HX_REQUEST="true"))
    scheduler.step_metrics_append(step.pk, 1, [MetricPoint("loss", 0.9, 0), MetricPoint("lr", 3)])
    arrived = text(client.get(url, {"seen": 0}, HTTP_HX_REQUEST="true"))
    scheduler.step_fail(claimed, claimed.attempt, "user_error", "diverged")
    final = text(client.get(url, {"seen": 2}, HTTP_HX_REQUEST="true"))

    assert f'hx-get="{url}?seen=0" hx-trigger="every 2s"' in page
    assert "step-scalars" not in quiet and f"{url}?seen=0" in quiet  # nothing new: no redraw
    assert f"{url}?seen=2" in arrived
    assert '<section aria-labelledby="metrics" id="step-scalars" hx-swap-oob="true">' in arrived
    assert '<th scope="row" class="mono">lr</th><td class="num" title="3.0">3</td>' in arrived
    assert graph_of(arrived, "metric-0")["data"][0]["y"] == [0.9]
    # The step failed: what it logged stays, and the page polls no more.
    assert "hx-get" not in final and graph_of(final, "metric-0")["data"][0]["y"] == [0.9]


def test_step_page_search_works_without_javascript(client: Any, world: Any, version: Any) -> None:
    run = finished_run(world.workspace, version)
    step = StepRun.objects.get(run=run, name="s0")
    StepLog.objects.create(step=step, attempt=1, offset=0, text="alpha\nbeta\ngamma\n")
    client.force_login(world.viewer)

    html = text(client.get(reverse("runs:step", args=["lab", run.pk, "s0"]), {"q": "bet"}))

    assert '<li><span class="ln">2</span>beta</li>' in html and "gamma" not in html


# --- lineage --------------------------------------------------------------------------------------
def test_lineage_page_draws_producers_inputs_and_run_links(
    client: Any, world: Any, version: Any
) -> None:
    first = finished_run(world.workspace, version)
    client.force_login(world.editor)
    client.post(reverse("runs:rerun", args=["lab", first.pk]))
    rerun = PipelineRun.objects.exclude(pk=first.pk).get()

    response = client.get(reverse("runs:lineage", args=["lab", rerun.pk]))

    html = text(response)
    lineage = graph_of(html, "run-lineage")
    kinds = {e["kind"] for e in lineage["edges"]}
    assert {"input", "output", "reused_from", "rerun_of", "step_of"} <= kinds
    assert f"run:{first.pk}" in {n["id"] for n in lineage["nodes"]}
    assert reverse("runs:detail", args=["lab", first.pk]) in html


# --- query budgets -------------------------------------------------------------------------------
# Session, user, the run with its workspace and the caller's role (one access query), steps,
# their metrics, and on the full page who started the run, which of its modules have newer
# versions and its tags.
LIVE_QUERIES = 5
EXPLORER_QUERIES = LIVE_QUERIES + 3


@pytest.mark.parametrize("length", [1, 50])
def test_explorer_costs_the_same_queries_for_1_or_50_steps(
    client: Any, world: Any, django_assert_num_queries: Any, length: int
) -> None:
    version = chain(world.workspace, length=length)
    first = drain(scheduler.run_create(version, user=world.owner))
    run = drain(scheduler.run_create(version, user=world.owner))  # every step reused
    client.force_login(world.owner)

    for url, queries in (
        (reverse("runs:detail", args=["lab", run.pk]), EXPLORER_QUERIES),
        (reverse("runs:live", args=["lab", run.pk]), LIVE_QUERIES),
    ):
        with django_assert_num_queries(queries):
            response = client.get(url)
        assert response.status_code == 200
        assert text(response).count(f"↻ run {first.pk}") == length
