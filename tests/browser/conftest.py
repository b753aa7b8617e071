"""Browser tests drive Debian's Chromium through pytest-playwright (never `playwright
install`). Playwright's sync API runs an event loop in the test thread, so Django's
async-safety check is turned off for these tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if CHROMIUM is None:
                item.add_marker(
                    pytest.mark.skip(
                        reason="chromium is not installed (apt-get install chromium); "
                        "browser tests skipped"
                    )
                )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
        ],
    }


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# Every page and frame reports its Content-Security-Policy violations to the console; the
# `page` fixture below fails the test on any, and on any HTML document without the header.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}` +
                ` at ${event.sourceFile}:${event.lineNumber} on ${event.documentURI}`);
});
"""


@pytest.fixture
def page(page: Any) -> Any:
    violations: list[str] = []
    unprotected: list[str] = []

    def on_console(message: Any) -> None:
        text = message.text
        if "CSP violation" in text or "Content Security Policy" in text:
            violations.append(text)

    def on_response(response: Any) -> None:
        headers = response.headers
        html = "text/html" in headers.get("content-type", "")
        # "document": a page or a frame's page, as the browser navigates to it.
        document = response.request.resource_type == "document"
        if document and html and "content-security-policy" not in headers:
            unprotected.append(response.url)

    page.add_init_script(_REPORT_VIOLATIONS)
    page.on("console", on_console)
    page.on("response", on_response)
    yield page
    assert violations == [], violations
    assert unprotected == [], unprotected
