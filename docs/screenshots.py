"""Screenshots of the demo for the README's tour: `make screenshots` (or run this file).

    .venv/bin/python docs/screenshots.py                      # a fresh demo, about 2 minutes
    .venv/bin/python docs/screenshots.py --url http://127.0.0.1:8000 --run 1 --sweep 1

Without --url it starts the demo the way `make run` does, in a temp data folder (migrate,
collectstatic, seed_demo, one run of classify, the seed's 3 x 2 x 3 sweep; then `manage.py
serve`: bench/_demo_server.py), logs in as demo / demo and drives Debian's Chromium over the
pages at 1280 x 800 (the viewport, not the whole page: a picture of what one sees, each
under ~300 KB), writing docs/screenshots/NN-name.png. With --url it uses a demo already
running (`make run`) and the run and sweep you name.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
# The demo server and the login are the benches' (one way to start the demo for both).
sys.path.insert(0, str(ROOT / "bench"))

from _demo_server import CHROMIUM_ARGS, chromium, demo_server, log_in  # noqa: E402

VIEWPORT = {"width": 1280, "height": 800}


def _settle(page: Any, ms: int = 600) -> None:
    """Let plotly and dagre finish drawing (and transitions end) before the picture."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(ms)


def _scroll_to(page: Any, selector: str, offset: int = 90) -> None:
    page.locator(selector).first.scroll_into_view_if_needed()
    page.evaluate(
        "([selector, offset]) => window.scrollTo(0, "
        "document.querySelector(selector).getBoundingClientRect().top + window.scrollY - offset)",
        [selector, offset],
    )


def shots(run: int, sweep: int) -> list[tuple[str, str, Callable[[Any], None] | None]]:
    """(file name, path, what to do on the page before the picture)."""

    def run_page(page: Any) -> None:
        page.wait_for_selector("[data-dag='run-graph'] svg .dag-node")

    def step_outputs(page: Any) -> None:
        _scroll_to(page, "#outputs")
        page.wait_for_timeout(800)  # the plotly preview frame draws on its own

    def compare_charts(page: Any) -> None:
        _scroll_to(page, "#charts-title")
        page.wait_for_selector("[data-plotly='sweep-bars'] .main-svg")

    def lineage(page: Any) -> None:
        page.wait_for_selector("[data-dag='run-lineage'] svg .dag-node")

    return [
        ("01-workspace.png", "/w/demo/", None),
        ("02-run.png", f"/w/demo/runs/{run}/", run_page),
        ("03-step-outputs.png", f"/w/demo/runs/{run}/steps/evaluate/", step_outputs),
        ("04-runs-list.png", "/w/demo/runs/", None),
        ("05-sweep-compare.png", f"/w/demo/sweeps/{sweep}/compare/", None),
        ("06-sweep-charts.png", f"/w/demo/sweeps/{sweep}/compare/", compare_charts),
        ("07-module-version.png", "/w/demo/modules/train_mlp/2/", None),
        ("08-lineage.png", f"/w/demo/runs/{run}/lineage/", lineage),
    ]


@contextlib.contextmanager
def _server(arguments: argparse.Namespace) -> Iterator[tuple[str, int, int]]:
    if arguments.url:
        yield arguments.url.rstrip("/"), arguments.run, arguments.sweep
        return
    with demo_server(sweep=True) as demo:
        assert demo.sweep is not None
        yield demo.url, demo.run, demo.sweep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running demo (make run); default: start one")
    parser.add_argument("--run", type=int, default=1, help="with --url: the run to show")
    parser.add_argument("--sweep", type=int, default=1, help="with --url: the sweep to show")
    arguments = parser.parse_args()
    executable = chromium()
    if executable is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with _server(arguments) as (url, run, sweep), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=VIEWPORT, color_scheme="light").new_page()
            log_in(page, url)
            for name, path, prepare in shots(run, sweep):
                page.goto(f"{url}{path}")
                if prepare is not None:
                    prepare(page)
                _settle(page)
                page.screenshot(path=OUT / name)
                size = (OUT / name).stat().st_size
                print(f"{OUT.relative_to(ROOT) / name} {size // 1024} KB ({path})")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
