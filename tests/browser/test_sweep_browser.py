"""A sweep in real Chromium: log in, create a small sweep on the demo from the form (two
train variants x two replicates), watch its progress complete without a reload, open the
comparison and see the plotly charts drawn as they are scrolled to (SVG in the page, not only
their JSON), the honest verdict, sort the variants, promote the highest mean. Screenshots go
to test-output/screenshots/."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from runs_app.models import PipelineRun, RunStatus, Sweep
from tests.browser.test_explorer_browser import PHONE, log_in

pytestmark = pytest.mark.django_db(transaction=True)

SWEEP_TIMEOUT_MS = 240_000


@pytest.fixture
def demo(embedded_workers: Any, live_server: Any) -> str:
    call_command("seed_demo", stdout=io.StringIO())
    return live_server.url


def see_chart(page: Any, chart: str) -> None:
    """Scroll a figure into view and wait for plotly to draw it."""
    page.locator(f"[data-plotly='{chart}']").scroll_into_view_if_needed()
    page.wait_for_selector(f"[data-plotly='{chart}'].js-plotly-plot .main-svg")


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page scrolls sideways on a phone ({width}px)"


def test_a_sweep_from_the_form_to_the_charts(page: Any, demo: str, screenshots: Path) -> None:
    base = demo
    page.set_default_timeout(30_000)
    log_in(page, base)

    # The form: two train variants (each a module version), two replicates over train.seed.
    page.goto(f"{base}/w/demo/sweeps/new/?pipeline=classify&version=1")
    page.fill("input[name=name]", "logreg vs rf")
    page.fill("input[name=replicates]", "2")
    assert page.is_checked("input[name=seed_params][value='train.seed']")  # ticked for us
    assert not page.is_checked("input[name=seed_params][value='augment.seed']")
    page.select_option("select[name='axes.train.0.module']", "train_logreg@1")
    page.select_option("select[name='axes.train.1.module']", "train_rf@1")
    page.fill("input[name='axes.train.1.label']", "forest")
    page.screenshot(path=screenshots / "20-sweep-new.png", full_page=True)
    page.click("text=Start the sweep")
    page.wait_for_url(re.compile(r".*/w/demo/sweeps/\d+/$"))
    sweep = Sweep.objects.get()
    assert sweep.axes["train"] == [
        {"label": "logreg", "module": "train_logreg@1"},
        {"label": "forest", "module": "train_rf@1"},
    ]

    # Progress updates in place (htmx) until every run is terminal; then polling stops.
    page.evaluate("window.__sameDocument = true")
    # A selector, not wait_for_function: a string function is evaluated in the page, which
    # its Content-Security-Policy (no eval) rightly refuses.
    page.wait_for_selector("#sweep-live[data-finished='true']", timeout=SWEEP_TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#sweep-live[hx-trigger]").count() == 0
    assert "4 of 4 runs done" in page.inner_text("#sweep-live")
    assert "4 succeeded" in page.inner_text("#sweep-live")
    assert page.locator("table.sweep-runs tbody tr").count() == 4
    assert set(PipelineRun.objects.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    page.screenshot(path=screenshots / "21-sweep-page.png", full_page=True)

    # The comparison: tables, and the four charts drawn by plotly as they come into view.
    page.click("text=Compare the variants")
    page.wait_for_url(re.compile(r".*/compare/$"))
    page.wait_for_selector("table.variants tr.top")
    # Below the fold, a figure is not drawn before it is scrolled to.
    assert page.locator("[data-plotly='sweep-curves'] .main-svg").count() == 0
    for chart in ("sweep-bars", "sweep-effect-0", "sweep-parcoords", "sweep-curves"):
        see_chart(page, chart)
    assert page.locator("[data-plotly='sweep-bars'] .barlayer .point").count() == 2
    assert page.locator("[data-plotly='sweep-bars'] .errorbar").count() >= 2
    assert page.locator("[data-plotly='sweep-parcoords'] .parcoords").count() == 1
    assert page.locator("[data-plotly='sweep-effect-0'] .errorbar").count() == 2
    assert page.evaluate("performance.getEntriesByName('plotly:loaded').length") == 1  # once
    text = page.inner_text("main")
    assert "95% CI" in text and "Welch" in text
    # No badge: logreg's two replicates agree exactly (its solver ignores the seed) and the
    # forest's differ, so Welch's test has one degree of freedom and p is about 0.5: the
    # data do not tell the two apart. (n = 2 is what the form asked for.)
    assert "No clear winner" in text and "★ best" not in text
    assert page.locator("table.variants tr.best").count() == 0
    # Sorting by the mean, lowest first on the second click.
    mean = page.locator("table.variants thead button.sort:text-is('Mean')")
    mean.click()
    assert mean.locator("xpath=..").get_attribute("aria-sort") == "descending"
    assert "top" in (page.get_attribute("table.variants tbody tr >> nth=0", "class") or "")
    mean.click()
    assert "top" in (page.get_attribute("table.variants tbody tr >> nth=1", "class") or "")
    page.wait_for_timeout(500)  # let plotly finish its transitions before the picture
    page.screenshot(path=screenshots / "22-sweep-compare.png", full_page=True)

    # The URL keeps the choices: pick lower-is-better and share.
    page.select_option("select[name=direction]", "min")
    page.click("main button:has-text('Compare')")
    page.wait_for_url(re.compile(r".*direction=min.*"))
    share = page.get_attribute("p.share a", "href")
    assert "metric=accuracy" in share and "step=evaluate" in share and "direction=min" in share
    see_chart(page, "sweep-bars")

    # Readable on a phone.
    page.set_viewport_size(PHONE)
    page.reload()
    see_chart(page, "sweep-bars")
    page.screenshot(path=screenshots / "23-sweep-compare-phone.png", full_page=True)
    no_sideways_scroll(page)
    page.goto(f"{base}/w/demo/sweeps/{sweep.pk}/")
    page.screenshot(path=screenshots / "24-sweep-page-phone.png", full_page=True)
    no_sideways_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Promote the highest mean (logreg): the next version of classify, parent classify@1.
    # Promote asks first (a destructive act); the test answers yes and checks the question.
    page.goto(f"{base}/w/demo/sweeps/{sweep.pk}/compare/")
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("table.variants tr.top button:has-text('Promote')")
    page.wait_for_url(re.compile(r".*/w/demo/pipelines/classify/\d+/$"))
    assert questions and questions[0].startswith("Make ") and "classify" in questions[0]
    assert "of sweep 'logreg vs rf'" in page.inner_text(".messages")
    page.goto(f"{base}/w/demo/sweeps/")
    assert "4/4 done" in page.inner_text("table.sweeps")
    page.screenshot(path=screenshots / "25-sweep-list.png", full_page=True)
