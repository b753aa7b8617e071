"""The workbench in real Chromium: from a finished run's step, edit the code in the
CodeMirror editor (a syntax error is marked on its line, then undone; a new param shows in
the interface as you type), change a param, run, watch the clone end without a reload,
read both runs side by side, keep the edit. A viewer sees the code read-only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pipelines_app.models import PipelineVersion, VersionOrigin
from runs_app.models import PipelineRun, RunStatus
from tests.test_workbench import three_steps

pytestmark = pytest.mark.django_db(transaction=True)


def log_in(page: Any, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_edit_run_side_by_side_keep(
    page: Any,
    browser: Any,
    world: Any,
    embedded_workers: Any,
    live_server: Any,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    base = live_server.url
    run = three_steps(world, tmp_path / "trace")
    page.set_default_timeout(30_000)
    log_in(page, base, "eddie", "pw-eddie-1")

    page.goto(f"{base}/w/lab/runs/{run.pk}/steps/train/")
    page.click("#edit-and-rerun")
    page.wait_for_url(re.compile(r".*/steps/train/workbench/$"))
    page.wait_for_selector(".workbench-file .sw-editor .cm-content[contenteditable=true]")
    assert page.locator("textarea[name='file:train.py']").is_hidden()

    # A syntax error is marked where it is, and the interface says why; undo clears it.
    page.click(".cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("def broken(:")
    page.wait_for_selector("#interface-problems li:has-text('syntax error on line 6')")
    page.wait_for_selector(".cm-lintRange-error, .cm-lint-marker-error")
    page.keyboard.press("Control+z")
    page.wait_for_selector("#interface-status:has-text('as the code now declares it')")
    assert page.locator("#interface-problems li").count() == 0

    # A new param appears in the interface as it is typed; the metric changes.
    page.locator(".cm-line", has_text="def train(").click()
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.type(", epochs: int = 5")
    page.wait_for_selector("#interface-body [data-part=params] code:has-text('epochs')")
    page.locator(".cm-line", has_text="ctx.log_metric").click()
    page.keyboard.press("End")
    page.keyboard.press("ArrowLeft")
    page.keyboard.type(" + 1")
    page.fill("input[name='train.scale']", "2.5")
    page.screenshot(path=screenshots / "30-workbench-edit.png", full_page=True)
    page.click("#workbench-run")

    # The clone runs; the page follows it without a reload, then sets both runs side by side.
    page.wait_for_url(re.compile(r".*/runs/\d+/workbench/$"))
    tried = PipelineRun.objects.exclude(pk=run.pk).get()
    page.evaluate("window.__sameDocument = true")
    page.wait_for_selector("#workbench-live[data-finished='true']", timeout=60_000)
    assert page.evaluate("window.__sameDocument") is True
    tried.refresh_from_db()
    assert tried.status == RunStatus.SUCCEEDED
    assert (tmp_path / "trace").read_text().split() == ["train", "evaluate"]
    metrics = page.locator("#metrics-title + .table-wrap table")
    score = metrics.locator("tr", has_text="train.score").inner_text().split()
    assert score[:3] == ["train.score", "6", "8.5"]
    assert "+5" in metrics.locator("tr", has_text="evaluate.quality").inner_text()
    assert "epochs: int = 5" in page.inner_text("pre.diff")
    page.screenshot(path=screenshots / "31-workbench-side-by-side.png", full_page=True)

    page.click("#workbench-keep")
    page.wait_for_url(re.compile(r".*/w/lab/pipelines/loop/\d+/$"))
    kept = PipelineVersion.objects.get(origin=VersionOrigin.USER, number__gt=1)
    assert page.url.endswith(f"/pipelines/loop/{kept.number}/")
    assert kept.spec["steps"]["train"]["module"] == "train@2"
    assert f"is the edit tried in run {tried.pk}" in page.inner_text("main")

    # A viewer reads the same code, read-only, with nothing to run.
    context = browser.new_context()
    viewer = context.new_page()
    log_in(viewer, base, "vera", "pw-vera-1")
    viewer.goto(f"{base}/w/lab/runs/{run.pk}/steps/train/workbench/")
    viewer.wait_for_selector(".workbench-file .sw-editor .cm-content[contenteditable=false]")
    assert viewer.locator("#workbench-run").count() == 0
    assert "read-only" in viewer.inner_text("main")
    context.close()
