"""The team in real Chromium (issue 17): an owner creates a workspace, uploads a dataset
(with the progress bar's XHR), invites a colleague, whom a second browser context signs up by
the link into the workspace as a viewer; the owner makes them editor; they start a run of a
pipeline that reads the dataset; the dataset's page shows the run, and the audit page lists
each of those acts. Then webhooks: one added on the page and sent a test that a loopback
receiver answers 500 three times, retried until it is delivered, as the log on the page
shows. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines_app import services as design
from pipelines_app.models import DatasetVersion
from runs_app.models import PipelineRun, WebhookDelivery
from tests.browser.test_workbench_browser import log_in
from tests.helpers import wait_until
from tests.test_webhooks import FAST, Receiver
from workspaces.models import AuditVerb, Membership, Role, Workspace

pytestmark = pytest.mark.django_db(transaction=True)

RUN_TIMEOUT_MS = 120_000
COUNT = """\
from pathlib import Path


def count(ctx, numbers):
    rows = Path(numbers).read_text().strip().splitlines()[1:]
    total = sum(float(row) for row in rows)
    ctx.log_metric("total", total)
    return {"summary": {"rows": len(rows), "total": total}}
"""
SPEC = "steps:\n  count: {module: count@latest, inputs: {numbers: 'dataset:numbers@latest'}}\n"


def test_a_team_forms_in_the_browser_and_its_acts_are_audited(
    page: Any, browser: Any, world: Any, embedded_workers: Any, live_server: Any, tmp_path: Path,
    screenshots: Path,
) -> None:  # fmt: skip
    base = live_server.url
    page.set_default_timeout(30_000)
    log_in(page, base, "olivia", "pw-olivia-1")

    # A new workspace, from the page; its maker owns it.
    page.goto(f"{base}/workspaces/new/")
    page.fill("input[name=name]", "Team B")
    page.fill("input[name=slug]", "team-b")
    page.click("text=Create workspace")
    page.wait_for_url(f"{base}/w/team-b/")
    assert "you are owner" in page.inner_text("main")
    team = Workspace.objects.get(slug="team-b")

    # A dataset, uploaded by the page's script with a progress bar.
    scripted: list[str] = []
    page.on(
        "request",
        lambda r: (
            scripted.append(r.url)
            if r.method == "POST" and r.headers.get("x-requested-with") == "XMLHttpRequest"
            else None
        ),
    )
    data = tmp_path / "numbers.csv"
    data.write_text("n\n1\n2\n3\n4\n")
    page.goto(f"{base}/w/team-b/datasets/")
    page.fill("input[name=name]", "numbers")
    page.set_input_files("input[type=file]", str(data))
    page.fill("input[name=message]", "four numbers")
    page.click("form[data-upload] button[type=submit]")
    page.wait_for_url(f"{base}/w/team-b/datasets/numbers/")
    assert scripted == [f"{base}/w/team-b/datasets/"]
    assert "Stored dataset:numbers@1" in page.inner_text("main")
    assert page.locator("table.table-preview td", has_text="4").count() >= 1
    version = DatasetVersion.objects.get(dataset__workspace=team)
    assert version.artifact.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    page.screenshot(path=screenshots / "30-dataset.png", full_page=True)

    # The step code and the pipeline that reads the dataset, pushed as `stepworks` would.
    owner = world.owner
    design.module_version_create(team, "count", {"count.py": COUNT}, "count.py:count", user=owner)
    design.pipeline_version_create(team, "tally", SPEC, "reads numbers", user=owner)

    # An invite link for a viewer.
    page.goto(f"{base}/w/team-b/invites/")
    page.select_option("select[name=role]", "viewer")
    page.click("text=Make the link")
    link = page.inner_text("#invite-link").strip()
    assert link.startswith(f"{base}/invite/")
    page.screenshot(path=screenshots / "31-invite-link.png", full_page=True)

    # The colleague, in a browser of their own, signs up by the link and lands in it.
    colleague = browser.new_context().new_page()
    colleague.set_default_timeout(30_000)
    colleague.goto(link)
    assert "Join Team B" in colleague.inner_text("h1")
    colleague.fill("input[name=username]", "nina")
    colleague.fill("input[name=email]", "nina@example.com")
    colleague.fill("input[name=password1]", "a-long-enough-passphrase")
    colleague.fill("input[name=password2]", "a-long-enough-passphrase")
    colleague.click("text=Sign up and join")
    colleague.wait_for_url(f"{base}/w/team-b/")
    assert "you are viewer" in colleague.inner_text("main")
    colleague.goto(f"{base}/w/team-b/pipelines/tally/1/")
    assert colleague.locator("text=Start run").count() == 0  # a viewer starts nothing

    # The owner makes them an editor.
    page.goto(f"{base}/w/team-b/members/")
    page.select_option("tr[data-member=nina] select[name=role]", "editor")
    page.click("button[aria-label='Change the role of nina']")
    page.wait_for_selector("text=nina is now editor.")
    assert Membership.objects.get(workspace=team, user__username="nina").role == Role.EDITOR
    page.screenshot(path=screenshots / "32-members.png", full_page=True)

    # ... who starts a run of the pipeline on the dataset.
    colleague.goto(f"{base}/w/team-b/pipelines/tally/1/")
    colleague.click("text=Start run")
    colleague.wait_for_url(re.compile(r".*/w/team-b/runs/\d+/$"))
    run_id = int(colleague.url.rstrip("/").rsplit("/", 1)[1])
    colleague.wait_for_function(
        "() => [...document.querySelectorAll('.dag-node.kind-step')]"
        ".every(n => n.dataset.status === 'succeeded')",
        timeout=RUN_TIMEOUT_MS,
    )
    run = PipelineRun.objects.get(pk=run_id)
    assert (run.status, run.created_by.username) == ("succeeded", "nina")

    # The dataset's page names the run that read it; the audit page lists every act.
    page.goto(f"{base}/w/team-b/datasets/numbers/")
    assert page.locator(f"td.readers a[href='/w/team-b/runs/{run_id}/']").count() == 1
    page.goto(f"{base}/w/team-b/audit/")
    verbs = page.eval_on_selector_all(
        "table.audit tr[data-verb]", "rows => rows.map(r => r.dataset.verb)"
    )
    for verb in (
        AuditVerb.WORKSPACE_CREATED,
        AuditVerb.DATASET_PUSHED,
        AuditVerb.INVITE_CREATED,
        AuditVerb.INVITE_ACCEPTED,
        AuditVerb.MEMBER_ROLE_CHANGED,
        AuditVerb.RUN_STARTED,
    ):
        assert verb in verbs, (verb, verbs)
    text = page.inner_text("table.audit")
    assert "nina" in text and "run " + str(run_id) in text
    page.screenshot(path=screenshots / "33-audit.png", full_page=True)
    colleague.context.close()


def test_a_webhook_test_is_retried_until_delivered_and_the_page_shows_each_attempt(
    page: Any, world: Any, embedded_workers: Any, live_server: Any, settings: Any,
    screenshots: Path,
) -> None:  # fmt: skip
    settings.STEPWORKS = {**settings.STEPWORKS, **FAST, "WEBHOOK_ALLOW_PRIVATE": True}
    receiver = Receiver()
    receiver.answers = [500, 500, 500]
    base = live_server.url
    page.set_default_timeout(30_000)
    try:
        log_in(page, base, "olivia", "pw-olivia-1")
        page.goto(f"{base}/w/lab/webhooks/")
        page.fill("input[name=url]", receiver.url)
        page.click("text=Add the webhook")
        page.wait_for_selector("text=Webhook added")
        page.click("text=Send a test")
        page.wait_for_selector("text=A test is on its way")
        assert wait_until(
            lambda: WebhookDelivery.objects.filter(status="delivered").exists(), timeout=30
        )
        page.reload()
        codes = page.eval_on_selector_all(
            "ol.attempts li", "items => items.map(i => i.dataset.statusCode)"
        )
        assert codes == ["500", "500", "500", "200"]
        page.click("summary:text('Secret')")
        secret = page.inner_text("pre[id^=secret-]").strip()
        last = receiver.requests[-1]
        expected = hmac.new(secret.encode(), last["body"], hashlib.sha256).hexdigest()
        assert last["headers"]["X-Stepworks-Signature"] == f"sha256={expected}"
        page.screenshot(path=screenshots / "34-webhooks.png", full_page=True)
    finally:
        receiver.close()
