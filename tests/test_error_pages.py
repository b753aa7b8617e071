"""Error pages are the site's own: 400, 403, 404 in its layout with what went wrong, and a
500 page that needs no context (it is rendered when something already failed)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import RequestFactory
from django.urls import reverse
from django.views import defaults

from runs_app import scheduler
from tests.factories import chain

pytestmark = pytest.mark.django_db


def test_a_missing_run_is_a_404_in_the_sites_layout(client: Any, world: Any) -> None:
    client.force_login(world.viewer)

    response = client.get(reverse("runs:detail", args=["lab", 987654]))

    html = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in html and "/static/css/app.css" in html
    assert "Log out" in html  # the site's header
    # Its trail leads back to the workspaces and names nothing of what was asked for.
    trail = html[
        html.index('aria-label="breadcrumb"') : html.index("</nav>", html.index("breadcrumb"))
    ]
    assert ">Workspaces</a>" in trail and ">Not found</span>" in trail
    assert "The lab" not in trail and "987654" not in trail


def test_an_action_above_your_role_is_a_403_that_says_so(client: Any, world: Any) -> None:
    run = scheduler.run_create(chain(world.workspace))
    client.force_login(world.viewer)

    response = client.post(reverse("runs:cancel", args=["lab", run.pk]))

    html = response.content.decode()
    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in html and "/static/css/app.css" in html
    assert "editor" in html


def test_the_500_and_400_pages_render_without_a_context() -> None:
    request = RequestFactory().get("/")

    failed = defaults.server_error(request)
    bad = defaults.bad_request(request, SuspiciousOperation("no"))

    assert failed.status_code == 500 and b"Something went wrong on our side" in failed.content
    assert b"/static/css/app.css" in failed.content
    assert bad.status_code == 400 and b"<h1>Bad request</h1>" in bad.content


def test_a_path_no_route_matches_is_the_sites_404_and_under_the_api_a_json_one(
    client: Any, world: Any
) -> None:
    client.force_login(world.owner)

    page = client.get("/no-such-page/")
    api = client.post("/api/v1/workspaces/lab/invites/null,null/revoke/")

    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    assert api.status_code == 404 and api["Content-Type"] == "application/json"
    assert api.json() == {
        "error": {"code": "not_found", "message": "No such API route.", "fields": {}}
    }
