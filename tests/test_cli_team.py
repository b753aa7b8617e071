"""The team from the terminal (issue 17): `stepworks members list | set | remove` and
`stepworks dataset push FILE --name N [-m MSG]` (the older `dataset push NAME PATH` still
works)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from pipelines_app.models import DatasetVersion
from runs_app.models import Webhook
from tests.helpers import api_token
from tests.test_cli import Cli
from workspaces.models import AuditEntry, AuditVerb, Membership, Role

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cli(world, live_server, tmp_path) -> Cli:
    shell = Cli(tmp_path / "home")
    shell("login", live_server.url, "--token", api_token(world.owner))
    return shell


def test_an_owner_lists_adds_changes_and_removes_members(cli, world):
    get_user_model().objects.create_user("nina", email="nina@example.com")

    added = cli("members", "set", "nina@example.com", "viewer")
    changed = cli("members", "set", "nina", "editor")
    listed = cli.json("members", "list")
    removed = cli("members", "remove", "nina")

    assert "nina is now viewer" in added.stdout
    assert "nina is now editor" in changed.stdout
    assert {(r["username"], r["role"]) for r in listed} >= {("nina", "editor"), ("olivia", "owner")}
    assert "nina was removed" in removed.stdout
    assert not Membership.objects.filter(user__username="nina").exists()
    assert list(
        AuditEntry.objects.filter(target="nina").order_by("id").values_list("verb", flat=True)
    ) == [AuditVerb.MEMBER_ADDED, AuditVerb.MEMBER_ROLE_CHANGED, AuditVerb.MEMBER_REMOVED]


def test_members_refuses_a_bad_role_the_last_owner_and_a_viewer(cli, world, live_server, tmp_path):
    bad_role = cli("members", "set", "vera", "boss", code=2)
    last_owner = cli("members", "remove", "olivia", code=2)
    viewer = Cli(tmp_path / "viewer")
    viewer("login", live_server.url, "--token", api_token(world.viewer))
    refused = viewer("members", "set", "vera", "owner", code=3)
    table = viewer("members", "list")

    assert "one of viewer, editor, owner" in bad_role.output
    assert "at least one owner" in last_owner.output
    assert "owner role" in refused.output
    assert "olivia" in table.stdout
    assert Membership.objects.get(user=world.viewer, workspace=world.workspace).role == Role.VIEWER


def test_dataset_push_takes_a_file_with_name_and_message(cli, world, tmp_path):
    (tmp_path / "points.csv").write_text("x,y\n1,2\n")

    pushed = cli("dataset", "push", str(tmp_path / "points.csv"), "--name", "points", "-m", "v1")
    older_form = cli("dataset", "push", "points", str(tmp_path / "points.csv"))
    neither = cli("dataset", "push", str(tmp_path / "points.csv"), code=2)

    assert "pushed dataset:points@1 (text/csv, 8 B" in pushed.stdout
    assert "unchanged: dataset:points@1" in older_form.stdout
    assert "--name" in neither.output
    version = DatasetVersion.objects.get(dataset__name="points")
    assert (version.message, version.created_by) == ("v1", world.owner)


def test_an_owner_adds_lists_tests_reads_the_log_of_and_removes_a_webhook(
    cli, world, settings, live_server, tmp_path
):
    refused = cli("webhook", "add", "http://127.0.0.1:9/hook", code=2)  # loopback: off
    settings.STEPWORKS = {**settings.STEPWORKS, "WEBHOOK_ALLOW_PRIVATE": True}
    bad_event = cli("webhook", "add", "http://127.0.0.1:9/hook", "-e", "run.won", code=2)

    added = cli("webhook", "add", "http://127.0.0.1:9/hook", "-e", "run.failed")
    hook = Webhook.objects.get(workspace=world.workspace)
    listed = cli.json("webhook", "list")
    tested = cli("webhook", "test", str(hook.pk))
    log = cli.json("webhook", "log", str(hook.pk))
    viewer = Cli(tmp_path / "viewer")
    viewer("login", live_server.url, "--token", api_token(world.viewer))
    not_theirs = viewer("webhook", "list", code=3)
    removed = cli("webhook", "remove", str(hook.pk))

    assert "url" in refused.output and "loopback" in refused.output.lower()
    assert "one of run.finished, run.failed, sweep.finished" in bad_event.output
    assert f"secret (shown once): {hook.secret}" in added.stdout
    assert [(r["id"], r["events"]) for r in listed] == [(hook.pk, ["run.failed"])]
    assert "secret" not in listed[0]
    assert "queued" in tested.stdout
    assert [(d["event"], d["status"]) for d in log] == [("ping", "pending")]
    assert not_theirs.output.strip()
    assert f"webhook {hook.pk} was removed" in removed.stdout
    assert not Webhook.objects.filter(pk=hook.pk).exists()
