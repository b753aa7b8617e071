"""The lineage graph in real Chromium: a wide run (a chain of 16 steps, each writing an
artifact the next reads) is fitted to its box at first, can be zoomed (buttons, wheel) and
dragged, and "Fit" brings all of it back inside the box and the window. A click on a node
still follows its link; the end of a drag does not."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.management import call_command

from runs_app import scheduler
from runs_app.models import PipelineRun, RunStatus, StepRun
from tests.browser.test_explorer_browser import log_in
from tests.factories import chain
from tests.helpers import next_queued, succeed
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 16
WINDOW = {"width": 1280, "height": 800}


@pytest.fixture
def wide_run(live_server: Any) -> tuple[str, PipelineRun]:
    """The demo's user and workspace, and a finished run of a 16-step chain (no workers: the
    test finishes each step as a worker would)."""
    call_command("seed_demo", stdout=io.StringIO())
    version = chain(Workspace.objects.get(slug="demo"), "long", length=STEPS)
    run = scheduler.run_create(version)
    while (step := next_queued(run=run)) is not None:
        assert succeed(step, {"out": (f'{{"step": "{step.name}"}}'.encode(), "application/json")})
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    return live_server.url, run


def boxes(page: Any) -> dict[str, dict[str, float]]:
    """Client rectangles of the drawn graph (its nodes and edges) and of the SVG's box."""
    return page.evaluate(
        """() => {
          const rect = (el) => { const r = el.getBoundingClientRect();
            return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
          const svg = document.querySelector("[data-dag='run-lineage'] svg");
          const nodes = svg.querySelector(".dag-nodes").getBoundingClientRect();
          const edges = svg.querySelector(".dag-edges").getBoundingClientRect();
          return {
            graph: {left: Math.min(nodes.left, edges.left),
                    right: Math.max(nodes.right, edges.right),
                    top: Math.min(nodes.top, edges.top),
                    bottom: Math.max(nodes.bottom, edges.bottom)},
            svg: rect(svg),
            window: {left: 0, right: window.innerWidth, top: 0, bottom: window.innerHeight},
          };
        }"""
    )


def inside(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["top"] >= outer["top"] - slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def scale(page: Any) -> float:
    return float(page.get_attribute("[data-dag='run-lineage']", "data-scale"))


def test_the_lineage_of_a_wide_run_pans_zooms_and_fits(
    page: Any, wide_run: tuple[str, PipelineRun]
) -> None:
    base, run = wide_run
    page.set_viewport_size(WINDOW)
    page.set_default_timeout(30_000)
    log_in(page, base)
    page.goto(f"{base}/w/demo/runs/{run.pk}/lineage/")
    page.wait_for_selector("[data-dag='run-lineage'] svg .dag-node")
    graph = page.locator("[data-dag='run-lineage']")
    assert page.locator(".dag-node.kind-step").count() == STEPS

    # First view: the whole graph, scaled down to fit the box, inside the window too.
    page.locator("[data-dag='run-lineage'] svg").scroll_into_view_if_needed()
    first = boxes(page)
    assert graph.get_attribute("data-fitted") == "1"
    assert scale(page) < 0.6  # 16 steps and 16 artifacts side by side are far wider
    assert inside(first["graph"], first["svg"]) and inside(first["graph"], first["window"])

    # Zoom in with the button, then the wheel: the graph outgrows its box (cut off).
    fitted = scale(page)
    for _ in range(4):
        page.click("[data-dag='run-lineage'] button[aria-label='Zoom in']")
    assert scale(page) == pytest.approx(fitted * 1.25**4, rel=0.01)
    svg_box = first["svg"]
    middle = ((svg_box["left"] + svg_box["right"]) / 2, (svg_box["top"] + svg_box["bottom"]) / 2)
    page.mouse.move(*middle)
    page.mouse.wheel(0, -300)  # up: in
    zoomed = scale(page)
    assert zoomed > fitted * 1.25**4
    assert graph.get_attribute("data-fitted") is None
    wide = boxes(page)
    assert (
        wide["graph"]["right"] - wide["graph"]["left"] > wide["svg"]["right"] - wide["svg"]["left"]
    )
    assert not inside(wide["graph"], wide["window"])

    # A drag that starts on a step's node moves the graph by as much as the mouse, changes
    # nothing else, and does not open the step.
    x, y = page.evaluate(
        """() => {
          const svg = document.querySelector("[data-dag='run-lineage'] svg");
          const box = svg.getBoundingClientRect();
          for (const node of svg.querySelectorAll(".dag-node.kind-step")) {
            const r = node.getBoundingClientRect();
            if (r.left > box.left + 260 && r.right < box.right && r.top > box.top
                && r.bottom < box.bottom) return [(r.left + r.right) / 2, (r.top + r.bottom) / 2];
          }
        }"""
    )
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 100, y, steps=5)
    page.mouse.move(x - 250, y + 10, steps=5)
    page.mouse.up()
    moved = boxes(page)
    assert moved["graph"]["left"] == pytest.approx(wide["graph"]["left"] - 250, abs=2)
    assert moved["graph"]["top"] == pytest.approx(wide["graph"]["top"] + 10, abs=2)
    assert scale(page) == pytest.approx(zoomed)
    page.wait_for_timeout(300)
    assert page.url.endswith("/lineage/")  # the drag ended on the node: no link followed

    # Fit: all of it back inside the box and the window.
    page.click("[data-dag='run-lineage'] button:has-text('Fit')")
    fit = boxes(page)
    assert graph.get_attribute("data-fitted") == "1"
    assert scale(page) == pytest.approx(fitted, rel=0.01)
    assert inside(fit["graph"], fit["svg"]) and inside(fit["graph"], fit["window"])

    # A plain click on a step still opens it.
    first_step = StepRun.objects.get(run=run, name="s0")
    page.click(f".dag-node[data-node='step:{first_step.pk}']")
    page.wait_for_url(re.compile(rf".*/runs/{run.pk}/steps/s0/$"))

    # The run page's graph has the same tools.
    page.goto(f"{base}/w/demo/runs/{run.pk}/")
    page.wait_for_selector("[data-dag='run-graph'] svg .dag-node")
    assert page.locator("[data-dag='run-graph'] button:has-text('Fit')").count() == 1
