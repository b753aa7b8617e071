"""Careful forms in real Chromium: a destructive action asks first and does nothing when
the question is dismissed; a form that comes back with errors moves focus to its summary
at the top, so the page does not look as if nothing happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_workbench_browser import log_in
from tests.helpers import api_token
from tests.test_workbench import three_steps
from workspaces.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)


def test_revoking_a_token_asks_first(page: Any, world: Any, live_server: Any) -> None:
    api_token(world.editor, "laptop")
    page.set_default_timeout(15_000)
    log_in(page, live_server.url, "eddie", "pw-eddie-1")
    page.goto(f"{live_server.url}/account/tokens/")
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("button[aria-label='Revoke laptop']")
    page.wait_for_timeout(300)  # a dismissed question leaves the page as it was
    assert questions == ["Revoke the token laptop? Whatever uses it stops working."]
    assert ApiToken.objects.filter(user=world.editor).count() == 1

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("button[aria-label='Revoke laptop']")
    assert ApiToken.objects.filter(user=world.editor).count() == 0


def test_a_form_with_errors_brings_its_summary_into_focus(
    page: Any, world: Any, embedded_workers: Any, live_server: Any, tmp_path: Path
) -> None:
    run = three_steps(world, tmp_path / "trace")
    page.set_default_timeout(30_000)
    log_in(page, live_server.url, "eddie", "pw-eddie-1")
    page.set_viewport_size({"width": 1024, "height": 400})  # the form is below the fold
    page.goto(f"{live_server.url}/w/lab/runs/{run.pk}/clone/")
    page.fill("input[name='evaluate.trace']", "")
    page.fill("input[name='train.scale']", "not a number")
    with page.expect_navigation():
        page.click("text=Start the clone")

    page.wait_for_selector("[data-error-summary]")
    assert page.evaluate("document.activeElement.hasAttribute('data-error-summary')") is True
    assert "beside its field" in page.inner_text("[data-error-summary]")
    top = page.evaluate(
        "document.querySelector('[data-error-summary]').getBoundingClientRect().top"
    )
    assert 0 <= top < 400  # in view


def test_a_missing_page_is_the_sites_own(page: Any, world: Any, live_server: Any) -> None:
    page.set_default_timeout(15_000)
    log_in(page, live_server.url, "vera", "pw-vera-1")

    response = page.goto(f"{live_server.url}/w/lab/runs/987654/")

    assert response.status == 404
    assert page.inner_text("h1") == "Not found"
    assert page.locator("nav a:has-text('Log out'), nav button:has-text('Log out')").count() >= 1
    sheets = page.evaluate("[...document.styleSheets].map(s => s.href || '')")
    assert any(href.endswith("/static/css/app.css") for href in sheets)  # the site's styles


def test_a_page_above_your_role_is_the_sites_own_403(
    page: Any, world: Any, live_server: Any
) -> None:
    page.set_default_timeout(15_000)
    log_in(page, live_server.url, "vera", "pw-vera-1")

    response = page.goto(f"{live_server.url}/w/lab/webhooks/")  # owners only

    assert response.status == 403
    assert page.inner_text("h1") == "Not allowed"
    assert "owner" in page.inner_text("main")
    assert page.locator("nav a:has-text('Log out'), nav button:has-text('Log out')").count() >= 1
    sheets = page.evaluate("[...document.styleSheets].map(s => s.href || '')")
    assert any(href.endswith("/static/css/app.css") for href in sheets)
