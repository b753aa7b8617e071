"""The explorer in real Chromium: log in, start the demo, watch the graph turn green without
reloading, open a step, preview a table, download an artifact and the whole run, compare
two runs. Screenshots of the main pages go to test-output/screenshots/."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from runs_app.models import PipelineRun, StepOutput

pytestmark = pytest.mark.django_db(transaction=True)

RUN_TIMEOUT_MS = 180_000
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def demo(embedded_workers: Any, live_server: Any) -> str:
    call_command("seed_demo", stdout=io.StringIO())
    return live_server.url


def log_in(page: Any, base: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "demo")
    page.fill("input[name=password]", "demo")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/w/demo/")


def wait_for_green(page: Any, steps: int = 4) -> None:
    page.wait_for_function(
        """(n) => {
            const nodes = [...document.querySelectorAll('.dag-node.kind-step')];
            return nodes.length === n && nodes.every(node => node.dataset.status === 'succeeded'
                || node.dataset.status === 'reused');
        }""",
        arg=steps,
        timeout=RUN_TIMEOUT_MS,
    )


def start_run(page: Any, base: str, overrides: dict[str, str] | None = None) -> int:
    page.goto(f"{base}/w/demo/pipelines/classify/1/")
    for name, value in (overrides or {}).items():
        page.fill(f"input[name='{name}']", value)
    page.click("text=Start run")
    page.wait_for_url(re.compile(r".*/w/demo/runs/\d+/$"))
    return int(page.url.rstrip("/").rsplit("/", 1)[1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_demo_from_login_to_compare(page: Any, demo: str, screenshots: Path) -> None:
    base = demo
    page.set_default_timeout(30_000)
    log_in(page, base)
    page.screenshot(path=screenshots / "01-workspace-empty.png", full_page=True)

    # Start the demo from the browser and watch it go green without a reload.
    run_id = start_run(page, base)
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector(".dag-node.kind-step")
    wait_for_green(page)
    assert page.evaluate("window.__sameDocument") is True  # htmx polling, never a reload
    page.wait_for_function("!document.querySelector('#live[hx-trigger]')")  # polling stopped
    assert page.locator(".status-succeeded").first.is_visible()
    page.screenshot(path=screenshots / "02-run-explorer.png", full_page=True)

    # Open a step: its metrics chart, explanation, outputs.
    page.click("table.steps >> text=evaluate")
    page.wait_for_url(f"{base}/w/demo/runs/{run_id}/steps/evaluate/")
    page.wait_for_selector("#why")
    assert "no earlier run of pipeline classify" in page.inner_text("#why")
    page.screenshot(path=screenshots / "03-step-evaluate.png", full_page=True)
    page.goto(f"{base}/w/demo/runs/{run_id}/steps/train/")
    page.wait_for_selector("[data-plotly] .main-svg")  # the loss series, drawn by plotly
    page.screenshot(path=screenshots / "04-step-train.png", full_page=True)

    # A table preview of the confusion matrix (Parquet), then download it and check it.
    confusion = StepOutput.objects.get(step__run_id=run_id, step__name="evaluate", name="confusion")
    sha = confusion.artifact.sha256
    page.goto(f"{base}/w/demo/runs/{run_id}/steps/evaluate/")
    page.click(f"a[href='/w/demo/artifacts/{sha}/']")
    page.wait_for_selector("table.table-preview")
    assert "10 rows" in page.inner_text("main")
    assert page.locator("table.table-preview th", has_text="pred_0").count() == 1
    page.screenshot(path=screenshots / "05-artifact-table.png", full_page=True)
    with page.expect_download() as info:
        page.click("main table >> a[download]")
    download = info.value
    assert download.suggested_filename == "confusion.parquet"
    assert sha256(Path(download.path())) == sha

    # The plotly report renders inside its sandboxed frame.
    report = StepOutput.objects.get(step__run_id=run_id, step__name="evaluate", name="report")
    page.goto(f"{base}/w/demo/artifacts/{report.artifact.sha256}/")
    frame = page.frame_locator("iframe.preview-frame")
    frame.locator(".main-svg").first.wait_for()
    page.screenshot(path=screenshots / "06-artifact-plotly-frame.png", full_page=True)

    # The whole run as one zip: every file's sha256 as the manifest says.
    page.goto(f"{base}/w/demo/runs/{run_id}/")
    with page.expect_download() as info:
        page.click("text=Download all outputs (zip)")
    archive = zipfile.ZipFile(info.value.path())
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["run"] == run_id
    assert {f["step"] for f in manifest["files"]} == {"prep", "augment", "train", "evaluate"}
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    assert manifest["lineage"]["edges"]

    # A second run with another seed: prep and augment are reused; compare the two.
    second = start_run(page, base, {"train.seed": "1"})
    wait_for_green(page)
    statuses = page.eval_on_selector_all(
        ".dag-node.kind-step", "nodes => nodes.map(n => n.dataset.status)"
    )
    assert statuses.count("reused") == 2
    assert page.locator(".dag-badge").count() == 2
    page.screenshot(path=screenshots / "07-run-explorer-reused.png", full_page=True)
    page.goto(f"{base}/w/demo/runs/{second}/steps/prep/")
    assert f"Reused from run {run_id}" in page.inner_text("#why")

    page.goto(f"{base}/w/demo/runs/compare/")
    page.check(f"input[name=runs][value='{run_id}']")
    page.check(f"input[name=runs][value='{second}']")
    page.click("main button:has-text('Compare')")
    page.wait_for_selector("h1:has-text('Compare 2 runs')")
    # Newest first, as the picker lists them; the pair below in detail.
    assert page.inner_text("#pair-title") == f"Run {second} vs run {run_id}"
    differing = page.locator("table.compare-params tr.differs", has_text="train.seed")
    assert differing.count() == 1
    assert page.locator(".pair tr.differs", has_text="train.seed").count() == 1
    page.screenshot(path=screenshots / "08-compare.png", full_page=True)

    # The other main pages, for a look.
    for name, path in [
        ("09-runs-list", "/w/demo/runs/?metric=accuracy&metric=f1_macro"),
        ("10-workspace-home", "/w/demo/"),
        ("11-pipeline-version", "/w/demo/pipelines/classify/1/"),
        ("12-lineage", f"/w/demo/runs/{second}/lineage/"),
        ("13-module-version", "/w/demo/modules/train_mlp/2/"),
        ("14-module-diff", "/w/demo/modules/train_mlp/diff/"),
    ]:
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=screenshots / f"{name}.png", full_page=True)
    assert PipelineRun.objects.filter(status="succeeded").count() == 2

    # Readable on a phone.
    page.set_viewport_size(PHONE)
    page.goto(f"{base}/w/demo/runs/{run_id}/")
    page.wait_for_selector(".dag-node")
    page.screenshot(path=screenshots / "15-run-explorer-phone.png", full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"the page scrolls sideways on a phone ({width}px)"


def test_keyboard_reaches_the_graph_and_the_actions(page: Any, demo: str) -> None:
    base = demo
    log_in(page, base)
    run_id = start_run(page, base)
    wait_for_green(page)

    focused = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate(
                "document.activeElement.getAttribute('href') || document.activeElement.textContent"
            )
        )
    assert f"/w/demo/runs/{run_id}/steps/prep/" in focused  # a graph node is a link
    assert any("Rerun" in (text or "") for text in focused)
