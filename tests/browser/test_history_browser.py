"""History that reads, in real Chromium (issue 16): from a pipeline's version tree to the
diff of a version against its parent (the steps that changed and the spec, line by line),
then any two versions picked with the form. The page fixture fails a test on any
Content-Security-Policy violation or JavaScript error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines_app.services import module_version_create, pipeline_version_create
from tests.browser.test_workbench_browser import log_in
from tests.test_explorer_design_pages import PREP, SPEC, TRAIN, TRAIN_V2

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def classify(world: Any) -> Any:
    """classify@1 (prep, train@1); train@2 (a new param, a new input) pushed, unused."""
    ws = world.workspace
    module_version_create(ws, "prep", {"prep.py": PREP}, "prep.py:prep")
    module_version_create(ws, "train", {"train.py": TRAIN}, "train.py:train")
    module_version_create(ws, "train", {"train.py": TRAIN_V2}, "train.py:train")
    return pipeline_version_create(ws, "classify", SPEC, message="first")


def test_a_version_s_diff_from_the_tree_then_any_two_versions(
    page: Any,
    world: Any,
    live_server: Any,
    classify: Any,
    screenshots: Path,
) -> None:
    edited = SPEC.replace("train@1", "train@2").replace("{hidden: 32}", "{hidden: 32, epochs: 3}")
    edited = edited.replace(
        "inputs: {train: prep.train}", "inputs: {train: prep.train, labels: prep.train}"
    )
    pipeline_version_create(world.workspace, "classify", edited, parent=classify)
    page.set_default_timeout(15_000)
    page.set_viewport_size({"width": 1024, "height": 800})
    log_in(page, live_server.url, "vera", "pw-vera-1")
    page.goto(f"{live_server.url}/w/lab/pipelines/classify/")

    with page.expect_navigation():
        page.click("a[title='What @2 changed from @1']")

    assert page.inner_text("h1") == "classify: @1 → @2"
    changed = page.locator("table.graph-diff tr.changed")
    assert changed.count() == 1
    assert changed.inner_text().split(None, 1) == [
        "train",
        "changed module train@1 → train@2; params epochs; input labels: — → prep.train",
    ]
    added = page.locator("pre.diff span.add").all_inner_texts()
    assert any("epochs: 3" in line for line in added)
    assert page.locator("pre.diff span.del").count() >= 1
    page.screenshot(path=screenshots / "pipeline-version-diff.png", full_page=True)

    page.select_option("select[name=a]", "2")
    page.select_option("select[name=b]", "1")
    with page.expect_navigation():
        page.click("text=Show the diff")

    assert page.url.endswith("/w/lab/pipelines/classify/diff/?a=2&b=1")
    assert page.inner_text("h1") == "classify: @2 → @1"
    assert any("epochs: 3" in line for line in page.locator("pre.diff span.del").all_inner_texts())
