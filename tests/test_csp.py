"""The Content-Security-Policy (issue 10, django-csp): every HTML page carries it, no
template holds an inline script or event handler, and only the pages that draw plotly's
WebGL traces may eval. (tests/browser checks that Chromium reports no violation.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
REQUIRED = (
    "default-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "script-src 'self'",
)


def _directives(header: str) -> dict[str, str]:
    parts = (part.strip().split(" ", 1) for part in header.split(";") if part.strip())
    return {name: rest for name, rest in parts}


@pytest.mark.parametrize(
    "url",
    [
        "/login/",
        "/w/lab/",
        "/w/lab/runs/",
        "/w/lab/sweeps/",
        "/account/tokens/",
        "/workspaces/new/",
        "/w/lab/members/",
        "/w/lab/invites/",
        "/w/lab/audit/",
        "/w/lab/datasets/",
        "/w/lab/webhooks/",
        "/admin/",
        "/workers/",
        "/api/v1/docs/",
    ],
)
def test_every_page_carries_the_policy(world: Any, url: str) -> None:
    client = Client()
    world.owner.is_staff = world.owner.is_superuser = True
    world.owner.save()
    client.force_login(world.owner)

    response = client.get(url)

    assert response.status_code == 200, url
    header = response["Content-Security-Policy"]
    for directive in REQUIRED:
        assert directive in header, (url, directive)
    assert "'unsafe-eval'" not in _directives(header)["script-src"]
    assert "'unsafe-inline'" not in _directives(header)["script-src"]


def test_no_template_holds_an_inline_script_or_handler() -> None:
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag:
                offenders.append(f"{path.name}: {tag}")
        offenders += [f"{path.name}: {m}" for m in re.findall(r"\son[a-z]+=[\"']", text)]
        offenders += [f"{path.name}: javascript: URL" for _ in re.findall(r"javascript:", text)]
    assert offenders == []
