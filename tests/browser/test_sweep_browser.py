"""A sweep in real Chromium: log in, create a small sweep on the demo from the form (two
train variants x two replicates), watch its progress complete without a reload, open the
comparison and see the plotly charts drawn (SVG in the page, not only their JSON), promote
the best variant. Screenshots go to test-output/screenshots/."""

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

    # The comparison: tables, and the four charts drawn by plotly.
    page.click("text=Compare the variants")
    page.wait_for_url(re.compile(r".*/compare/$"))
    page.wait_for_selector("table.variants tr.best")
    for chart in ("sweep-bars", "sweep-effect-0", "sweep-parcoords", "sweep-curves"):
        page.wait_for_selector(f"[data-plotly='{chart}'].js-plotly-plot .main-svg")
    assert page.locator("[data-plotly='sweep-bars'] .barlayer .point").count() == 2
    assert page.locator("[data-plotly='sweep-bars'] .errorbar").count() >= 2
    assert page.locator("[data-plotly='sweep-parcoords'] .parcoords").count() == 1
    assert page.locator("[data-plotly='sweep-effect-0'] .errorbar").count() == 2
    text = page.inner_text("main")
    assert "★ best" in text and "95% CI" in text and "Welch" in text
    page.wait_for_timeout(500)  # let plotly finish its transitions before the picture
    page.screenshot(path=screenshots / "22-sweep-compare.png", full_page=True)

    # The URL keeps the choices: pick lower-is-better and share.
    page.select_option("select[name=direction]", "min")
    page.click("main button:has-text('Compare')")
    page.wait_for_url(re.compile(r".*direction=min.*"))
    share = page.get_attribute("p.share a", "href")
    assert "metric=accuracy" in share and "step=evaluate" in share and "direction=min" in share
    page.wait_for_selector("[data-plotly='sweep-bars'] .main-svg")

    # Readable on a phone.
    page.set_viewport_size(PHONE)
    page.reload()
    page.wait_for_selector("[data-plotly='sweep-bars'] .main-svg")
    page.screenshot(path=screenshots / "23-sweep-compare-phone.png", full_page=True)
    no_sideways_scroll(page)
    page.goto(f"{base}/w/demo/sweeps/{sweep.pk}/")
    page.screenshot(path=screenshots / "24-sweep-page-phone.png", full_page=True)
    no_sideways_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Promote the best variant: the next version of classify, parent classify@1.
    # Promote asks first (a destructive act); the test answers yes and checks the question.
    page.goto(f"{base}/w/demo/sweeps/{sweep.pk}/compare/")
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("table.variants tr.best button:has-text('Promote')")
    page.wait_for_url(re.compile(r".*/w/demo/pipelines/classify/\d+/$"))
    assert questions and questions[0].startswith("Make ") and "classify" in questions[0]
    assert "of sweep 'logreg vs rf'" in page.inner_text(".messages")
    page.goto(f"{base}/w/demo/sweeps/")
    assert "4/4 done" in page.inner_text("table.sweeps")
    page.screenshot(path=screenshots / "25-sweep-list.png", full_page=True)
