"""Destructive actions ask first (issue 16, "Careful forms"): every button that cancels,
deletes, promotes, removes or revokes carries the question `static/js/app.js` asks
(`data-confirm`) before its form is sent. The browser test (tests/browser/test_forms_browser)
drives the question once; these hold every such button to it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from runs_app import scheduler
from runs_app.models import Webhook
from runs_app.sweeps import services as sweep_services
from tests.factories import chain, module_version
from tests.test_api_support import api_token
from workspaces.invites import invite_create
from workspaces.models import Role

pytestmark = pytest.mark.django_db

K = {"k": {"type": "int", "default": 0}}


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def buttons(html: str, label: str) -> list[str]:
    """The opening tags of the submit buttons whose text starts with `label`."""
    return re.findall(rf"<button\b[^>]*>\s*{re.escape(label)}", html)


def asks(html: str, label: str) -> list[str]:
    """The questions of the buttons labelled `label` (there is one at least, and each asks)."""
    found = buttons(html, label)
    assert found, f"no button {label!r} on the page"
    questions = [re.search(r'data-confirm="([^"]+)"', tag) for tag in found]
    assert all(questions), f"a {label!r} button that does not ask first: {found}"
    return [q.group(1) for q in questions if q]


def test_cancel_a_run_and_delete_runs_ask_first(world: Any) -> None:
    version = chain(world.workspace, "flow", length=2)
    run = scheduler.run_create(version, user=world.editor)
    client = signed_in(world.editor)

    run_page = client.get(f"/w/lab/runs/{run.pk}/").content.decode()
    runs_list = client.get("/w/lab/runs/").content.decode()

    assert asks(run_page, "Cancel") == [
        f"Cancel run {run.pk}? Its unstarted steps are dropped and its running steps are stopped."
    ]
    assert asks(runs_list, "Delete")


def test_cancel_and_promote_a_sweep_ask_first(world: Any) -> None:
    base = chain(world.workspace, "chain", length=3)
    module_version(world.workspace, "m2", inputs=("x",), params=K, number=2)
    sweep = sweep_services.sweep_create(
        base,
        name="k sweep",
        axes={"s2": [{"label": "one"}, {"label": "two", "module": "m2@2"}]},
        replicates=1,
        seed_params=["s2.k"],
        user=world.editor,
    )

    page = signed_in(world.editor).get(f"/w/lab/sweeps/{sweep.pk}/").content.decode()

    assert asks(page, "Cancel the sweep") == [
        "Cancel sweep k sweep? Its unfinished runs are canceled."
    ]
    assert asks(page, "Promote") == ["Make the chosen variant the next version of chain?"]


def test_removing_a_member_revoking_an_invite_or_token_and_deleting_a_webhook_ask_first(
    world: Any,
) -> None:
    invite_create(world.workspace, Role.VIEWER, actor=world.owner)
    Webhook.objects.create(workspace=world.workspace, url="https://hooks.example.com/x")
    api_token(world.owner, "laptop")
    client = signed_in(world.owner)

    members = client.get("/w/lab/members/").content.decode()
    invites = client.get("/w/lab/invites/").content.decode()
    webhooks = client.get("/w/lab/webhooks/").content.decode()
    tokens = client.get("/account/tokens/").content.decode()

    assert "Remove vera from The lab?" in asks(members, "Remove")
    assert asks(invites, "Revoke") == ["Revoke this invite? Its link stops working."]
    assert asks(webhooks, "Delete") == [
        "Delete the webhook https://hooks.example.com/x? Nothing more is sent to it."
    ]
    assert asks(tokens, "Revoke")
