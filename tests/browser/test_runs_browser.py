"""Runs you can find, in real Chromium: filter the runs list with an expression, tag a run
and write its note in place and find it by its tag, sort by a metric, pick three runs from
the list and compare them (the loss curves drawn, the params table). The page fixture fails
a test on any Content-Security-Policy violation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runs_app.models import PipelineRun, RunTag
from tests.browser.test_workbench_browser import log_in
from tests.factories import chain
from tests.test_compare_runs import run_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runs(world: Any) -> list[PipelineRun]:
    version = chain(world.workspace)
    return [
        run_of(version, 1, 0.80, [1.0, 0.6, 0.4]),
        run_of(version, 2, 0.92, [1.1, 0.5, 0.3, 0.2]),
        run_of(version, 3, 0.85, [0.9, 0.7, 0.65]),
        run_of(version, 4, 0.60, [1.2, 1.0]),
    ]


def listed(page: Any) -> list[int]:
    return [int(t.lstrip("#")) for t in page.locator("table.run-list td a.mono").all_inner_texts()]


def test_filter_the_runs_list_with_an_expression(
    page: Any, world: Any, live_server: Any, runs: list[PipelineRun], screenshots: Path
) -> None:
    page.set_default_timeout(15_000)
    log_in(page, live_server.url, "vera", "pw-vera-1")
    page.goto(f"{live_server.url}/w/lab/runs/")
    assert len(listed(page)) == 4

    page.fill("#run-q", "metrics.accuracy > 0.82 and params.s2.k >= 2")
    with page.expect_navigation():
        page.click(".run-search button[type=submit]")

    assert sorted(listed(page)) == sorted([runs[1].pk, runs[2].pk])
    assert "filter=metrics.accuracy" in page.url  # the filter is in the address

    # Sorted by a metric with a click on its header, best first.
    with page.expect_navigation():
        page.click("th a[data-sort='metrics.accuracy']")
    assert listed(page) == [runs[1].pk, runs[2].pk]
    assert "sort=-metrics.accuracy" in page.url
    page.screenshot(path=screenshots / "runs-filtered.png", full_page=True)

    # A mistake points at its token and matches nothing.
    page.fill("#run-q", "metrics.accuracy > lots")
    with page.expect_navigation():
        page.click(".run-search button[type=submit]")
    assert "at column 20" in page.inner_text("#run-q-error")
    assert listed(page) == []


def test_tag_a_run_and_write_its_note_in_place_then_find_it_by_tag(
    page: Any, world: Any, live_server: Any, runs: list[PipelineRun]
) -> None:
    run = runs[2]
    page.set_default_timeout(15_000)
    log_in(page, live_server.url, "eddie", "pw-eddie-1")
    page.goto(f"{live_server.url}/w/lab/runs/{run.pk}/")
    page.evaluate("window.__sameDocument = true")

    page.click("text=Edit tags and note")
    page.wait_for_selector("form#run-annotations")
    page.fill("#run-tags-input", "baseline, paper")
    page.fill("#run-note-input", "The one for figure 3.")
    page.click("form#run-annotations button[type=submit]")
    page.wait_for_selector("section#run-annotations a.tag")

    assert page.evaluate("window.__sameDocument") is True  # swapped in place, no reload
    assert page.locator("section#run-annotations a.tag").all_inner_texts() == ["baseline", "paper"]
    assert page.inner_text(".run-note") == "The one for figure 3."
    assert sorted(RunTag.objects.filter(run=run).values_list("name", flat=True)) == [
        "baseline",
        "paper",
    ]

    # A bad tag comes back in the form with its reason, and nothing changes.
    page.click("text=Edit tags and note")
    page.fill("#run-tags-input", "baseline b@d")
    page.click("form#run-annotations button[type=submit]")
    page.wait_for_selector("form#run-annotations [data-error-summary]")
    assert "'b@d': a tag is 1-50 letters" in page.inner_text("form#run-annotations")
    page.click("form#run-annotations >> text=Cancel")
    page.wait_for_selector("section#run-annotations")

    # The tag's link is the runs list filtered by it.
    with page.expect_navigation():
        page.click("section#run-annotations a.tag >> text=baseline")
    assert page.input_value("#run-q") == "tag = baseline"
    assert listed(page) == [run.pk]
    assert page.locator("table.run-list .tag").all_inner_texts() == ["baseline", "paper"]


def test_pick_three_runs_in_the_list_and_compare_them(
    page: Any, world: Any, live_server: Any, runs: list[PipelineRun], screenshots: Path
) -> None:
    a, b, c, _ = runs
    page.set_default_timeout(30_000)
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server.url, "vera", "pw-vera-1")
    page.goto(f"{live_server.url}/w/lab/runs/")

    for run in (a, b, c):
        page.check(f"input[name=runs][value='{run.pk}']")
    with page.expect_navigation():
        page.click("#bulk button[value=compare]")

    # In the list's order (newest first), at an address to share.
    assert page.url.endswith(f"/w/lab/runs/compare/?runs={c.pk},{b.pk},{a.pk}")
    assert page.inner_text("h1") == "Compare 3 runs"
    # The params that differ, one column per run.
    row = page.locator("table.compare-params tr.differs").first
    assert row.inner_text().split() == ["s2.k", "3", "2", "1"]
    # The best accuracy is marked.
    assert "0.92" in page.inner_text("table.compare-metrics td.best >> nth=0")
    # The loss curves, drawn by plotly: one line per run in one figure.
    page.wait_for_selector("[data-plotly^='curve-'] .main-svg")
    traces = page.locator("[data-plotly^='curve-'] .main-svg .scatterlayer .trace")
    assert traces.count() == 3
    page.screenshot(path=screenshots / "compare-3-runs.png", full_page=True)

    # Any two of them in detail.
    page.select_option("select[name=a]", str(c.pk))
    page.select_option("select[name=b]", str(a.pk))
    with page.expect_navigation():
        page.click("text=Show these two")
    assert f"Run {c.pk} vs run {a.pk}" in page.inner_text("#pair-title")
