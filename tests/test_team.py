"""The team in the browser (issue 17): workspaces made from a page, members added, changed
and removed by owners (never the last owner), invite links that sign a colleague up and in,
and the audit trail of those acts (page, API, admin read-only)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.test_api_support import api_client, error_of
from workspaces.audit import audit_record
from workspaces.invites import invite_accept, invite_create, invite_for_token
from workspaces.models import AuditEntry, AuditVerb, Invite, Membership, Role, Workspace
from workspaces.tokens import token_create, token_revoke

pytestmark = pytest.mark.django_db

API = "/api/v1/workspaces"


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def verbs(workspace: Workspace) -> list[str]:
    return list(
        AuditEntry.objects.filter(workspace=workspace).order_by("id").values_list("verb", flat=True)
    )


# --- workspaces -------------------------------------------------------------------------------


def test_a_signed_in_user_creates_a_workspace_and_owns_it(world: Any) -> None:
    client = signed_in(world.viewer)

    response = client.post("/workspaces/new/", {"name": "Vision team", "slug": "vision"})

    assert response.status_code == 302
    assert response["Location"] == "/w/vision/"
    space = Workspace.objects.get(slug="vision")
    assert space.name == "Vision team"
    assert Membership.objects.get(workspace=space, user=world.viewer).role == Role.OWNER
    assert verbs(space) == [AuditVerb.WORKSPACE_CREATED]


def test_a_taken_or_malformed_slug_is_shown_on_the_form_and_nothing_is_made(world: Any) -> None:
    client = signed_in(world.viewer)

    taken = client.post("/workspaces/new/", {"name": "Again", "slug": "lab"})
    malformed = client.post("/workspaces/new/", {"name": "Bad", "slug": "Not A Slug"})
    reserved = client.post("/workspaces/new/", {"name": "New", "slug": "new"})

    assert taken.status_code == 400
    assert "already taken" in taken.content.decode()
    assert malformed.status_code == 400
    assert reserved.status_code == 400
    assert Workspace.objects.count() == 2


def test_with_staff_only_creation_a_plain_user_is_refused_on_page_and_api(
    world: Any, settings: Any
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "WORKSPACE_CREATION": "staff"}

    page = signed_in(world.viewer).get("/workspaces/new/")
    posted = signed_in(world.viewer).post("/workspaces/new/", {"name": "X", "slug": "x"})
    api = api_client(world.viewer).post(f"{API}/create/", {"slug": "x", "name": "X"}, format="json")
    world.viewer.is_staff = True
    world.viewer.save()
    staff = signed_in(world.viewer).post("/workspaces/new/", {"name": "X", "slug": "x"})

    assert page.status_code == 403
    assert "only staff" in page.content.decode()
    assert posted.status_code == 403
    assert api.status_code == 403
    assert staff.status_code == 302
    assert list(Workspace.objects.filter(slug="x").values_list("name", flat=True)) == ["X"]


def test_home_without_a_workspace_links_to_the_new_workspace_page(db: None) -> None:
    user = get_user_model().objects.create_user("newbie", password="x")

    response = signed_in(user).get("/")

    assert response.status_code == 200
    assert 'href="/workspaces/new/"' in response.content.decode()


# --- members ----------------------------------------------------------------------------------


def test_an_owner_adds_a_member_by_email_with_a_role(world: Any) -> None:
    newcomer = get_user_model().objects.create_user("nina", email="nina@example.com")

    response = signed_in(world.owner).post(
        "/w/lab/members/", {"action": "add", "who": "NINA@example.com", "role": "editor"}
    )

    assert response.status_code == 302
    assert Membership.objects.get(workspace=world.workspace, user=newcomer).role == Role.EDITOR
    entry = AuditEntry.objects.get(verb=AuditVerb.MEMBER_ADDED)
    assert (entry.actor, entry.target, entry.data) == (world.owner, "nina", {"role": "editor"})


def test_adding_someone_unknown_says_so_and_adds_nobody(world: Any) -> None:
    response = signed_in(world.owner).post(
        "/w/lab/members/", {"action": "add", "who": "nobody@example.com", "role": "viewer"}
    )

    assert response.status_code == 400
    assert "no user with the name or email" in response.content.decode()
    assert Membership.objects.filter(workspace=world.workspace).count() == 3


def test_an_owner_changes_a_role_then_removes_the_member(world: Any) -> None:
    client = signed_in(world.owner)

    changed = client.post(
        "/w/lab/members/", {"action": "set", "username": "vera", "role": "editor"}
    )
    role = Membership.objects.get(workspace=world.workspace, user=world.viewer).role
    removed = client.post("/w/lab/members/", {"action": "remove", "username": "vera"})

    assert changed.status_code == removed.status_code == 302
    assert role == Role.EDITOR
    assert not Membership.objects.filter(workspace=world.workspace, user=world.viewer).exists()
    change = AuditEntry.objects.get(verb=AuditVerb.MEMBER_ROLE_CHANGED)
    assert change.data == {"old": "viewer", "new": "editor"}
    assert AuditEntry.objects.get(verb=AuditVerb.MEMBER_REMOVED).target == "vera"


def test_an_owner_who_leaves_goes_to_their_workspaces(world: Any) -> None:
    Membership.objects.filter(user=world.editor).update(role=Role.OWNER)

    response = signed_in(world.owner).post(
        "/w/lab/members/", {"action": "remove", "username": "olivia"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert not Membership.objects.filter(workspace=world.workspace, user=world.owner).exists()


def test_the_last_owner_is_neither_demoted_nor_removed_from_the_page(world: Any) -> None:
    client = signed_in(world.owner)

    demoted = client.post(
        "/w/lab/members/", {"action": "set", "username": "olivia", "role": "viewer"}
    )
    removed = client.post("/w/lab/members/", {"action": "remove", "username": "olivia"})

    assert demoted.status_code == removed.status_code == 400
    assert "at least one owner" in demoted.content.decode()
    assert Membership.objects.get(workspace=world.workspace, user=world.owner).role == Role.OWNER
    assert not AuditEntry.objects.filter(verb__startswith="member.").exists()


def test_a_member_of_another_workspace_cannot_be_changed_here(world: Any) -> None:
    response = signed_in(world.owner).post(
        "/w/lab/members/", {"action": "set", "username": "sam", "role": "viewer"}
    )

    assert response.status_code == 400
    assert not Membership.objects.filter(workspace=world.workspace, user=world.stranger).exists()


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_editors_and_viewers_see_the_members_read_only(world: Any, role: str) -> None:
    user = world.viewer if role == "viewer" else world.editor

    page = signed_in(user).get("/w/lab/members/")
    posted = signed_in(user).post(
        "/w/lab/members/", {"action": "set", "username": "vera", "role": "owner"}
    )

    body = page.content.decode()
    assert page.status_code == 200
    assert all(name in body for name in ("olivia", "eddie", "vera"))
    assert 'value="remove"' not in body
    assert "<select" not in body
    assert posted.status_code == 403
    assert Membership.objects.get(workspace=world.workspace, user=world.viewer).role == Role.VIEWER


def test_an_owner_renames_the_workspace_and_its_slug_stays(world: Any) -> None:
    response = signed_in(world.owner).post("/w/lab/members/", {"action": "rename", "name": "Lab 2"})

    world.workspace.refresh_from_db()
    assert response.status_code == 302
    assert (world.workspace.slug, world.workspace.name) == ("lab", "Lab 2")
    assert AuditEntry.objects.get(verb=AuditVerb.WORKSPACE_RENAMED).data == {
        "old": "The lab",
        "new": "Lab 2",
    }


def test_the_api_sets_a_member_by_email_and_records_who_did_it(world: Any) -> None:
    get_user_model().objects.create_user("nina", email="nina@example.com")

    response = api_client(world.owner).post(
        f"{API}/lab/members/set/", {"username": "nina@example.com", "role": "viewer"}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"username": "nina", "role": "viewer"}
    assert AuditEntry.objects.get(verb=AuditVerb.MEMBER_ADDED).actor == world.owner


def test_the_api_refuses_to_demote_or_remove_the_last_owner_naming_the_field_and_why(
    world: Any,
) -> None:
    client = api_client(world.owner)
    url = f"{API}/lab/members/set/"

    demoted = client.post(url, {"username": "olivia", "role": "viewer"}, format="json")
    removed = client.post(url, {"username": "olivia", "role": None}, format="json")

    for response in (demoted, removed):
        assert response.status_code == 409
        assert error_of(response) == {
            "code": "last_owner",
            "message": "A workspace keeps at least one owner: make someone else owner first.",
            "fields": {"role": ["this is the workspace's last owner"]},
        }
    assert Membership.objects.get(workspace=world.workspace, user=world.owner).role == Role.OWNER
    assert not AuditEntry.objects.filter(verb__startswith="member.").exists()


def test_with_a_second_owner_the_first_may_step_down_through_the_api(world: Any) -> None:
    client = api_client(world.owner)
    url = f"{API}/lab/members/set/"

    promoted = client.post(url, {"username": "eddie", "role": "owner"}, format="json")
    stepped_down = client.post(url, {"username": "olivia", "role": "editor"}, format="json")

    assert (promoted.status_code, stepped_down.status_code) == (200, 200)
    assert Membership.objects.get(workspace=world.workspace, user=world.owner).role == Role.EDITOR


def test_the_api_renames_for_owners_only(world: Any) -> None:
    refused = api_client(world.editor).post(f"{API}/lab/rename/", {"name": "X"}, format="json")
    done = api_client(world.owner).post(f"{API}/lab/rename/", {"name": "Renamed"}, format="json")
    blank = api_client(world.owner).post(f"{API}/lab/rename/", {"name": " "}, format="json")

    assert refused.status_code == 403
    assert done.status_code == 200
    assert done.json()["name"] == "Renamed"
    assert blank.status_code == 400
    assert Workspace.objects.get(slug="lab").name == "Renamed"


def add_members(workspace: Workspace, n: int) -> None:
    """`n` more viewers, member0 to member<n-1>."""
    users = get_user_model()
    for i in range(n):
        Membership.objects.create(user=users.objects.create_user(f"member{i}"), workspace=workspace)


@pytest.mark.parametrize("n", [1, 50])
def test_the_members_page_costs_the_same_for_1_or_50_members(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    add_members(world.workspace, n)
    client = signed_in(world.owner)

    with django_assert_num_queries(MEMBERS_PAGE_QUERIES):
        response = client.get("/w/lab/members/")

    assert response.status_code == 200
    assert f"member{n - 1}" in response.content.decode()


# session, user, workspace with role, members with users
MEMBERS_PAGE_QUERIES = 4


@pytest.mark.parametrize("n", [1, 50])
def test_the_members_api_costs_a_pinned_number_of_queries_for_1_or_50_members(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    add_members(world.workspace, n)
    client = api_client(world.viewer)

    with django_assert_num_queries(MEMBERS_API_QUERIES):
        body = client.get(f"{API}/lab/members/?limit=100").json()

    assert body["count"] == n + 3  # and olivia, eddie, vera
    assert {m["username"] for m in body["results"]} >= {f"member{n - 1}", "olivia"}
    assert all(m["role"] for m in body["results"])


# the token with its user, workspace with role, count, members with their users
MEMBERS_API_QUERIES = 4


# --- invites ----------------------------------------------------------------------------------


def make_invite(client: Client, **data: Any) -> str:
    fields = {"action": "create", "role": "viewer", "days": 7, "max_uses": 1, **data}
    response = client.post("/w/lab/invites/", fields)
    assert response.status_code == 200, response.content.decode()
    match = re.search(
        r'<pre class="mono" id="invite-link">([^<]+)</pre>', response.content.decode()
    )
    assert match is not None
    return match.group(1)


def test_an_invite_link_is_shown_once_and_only_its_hash_is_stored(world: Any) -> None:
    client = signed_in(world.owner)

    link = make_invite(client, role="editor", days=3, max_uses=2)
    page = client.get("/w/lab/invites/")

    token = link.rsplit("/", 2)[-2]
    invite = Invite.objects.get()
    assert link.startswith("http://testserver/invite/")
    assert invite.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (invite.role, invite.max_uses, invite.created_by) == ("editor", 2, world.owner)
    assert timedelta(days=2, hours=23) < invite.expires_at - timezone.now() <= timedelta(days=3)
    assert token not in page.content.decode()
    assert "2 / 2" not in page.content.decode() and "0 / 2" in page.content.decode()
    assert AuditEntry.objects.get(verb=AuditVerb.INVITE_CREATED).data["role"] == "editor"


def test_a_newcomer_signs_up_by_the_link_and_lands_in_the_workspace_as_its_role(
    world: Any,
) -> None:
    link = make_invite(signed_in(world.owner))
    path = link.removeprefix("http://testserver")
    guest = Client()

    page = guest.get(path)
    joined = guest.post(
        path,
        {
            "action": "signup",
            "username": "nina",
            "email": "nina@example.com",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
        },
    )
    home = guest.get("/w/lab/")

    assert page.status_code == 200
    assert "Join The lab" in page.content.decode()
    assert joined.status_code == 302
    assert joined["Location"] == "/w/lab/"
    nina = get_user_model().objects.get(username="nina")
    assert nina.email == "nina@example.com"
    assert Membership.objects.get(workspace=world.workspace, user=nina).role == Role.VIEWER
    assert home.status_code == 200
    assert Invite.objects.get().uses == 1
    accepted = AuditEntry.objects.get(verb=AuditVerb.INVITE_ACCEPTED)
    assert (accepted.actor, accepted.data["role"]) == (nina, "viewer")


def test_a_weak_password_is_refused_by_django_validators_and_nobody_joins(world: Any) -> None:
    link = make_invite(signed_in(world.owner))

    response = Client().post(
        link.removeprefix("http://testserver"),
        {
            "action": "signup",
            "username": "nina",
            "email": "nina@example.com",
            "password1": "password",
            "password2": "password",
        },
    )

    assert response.status_code == 400
    assert "too common" in response.content.decode()
    assert not get_user_model().objects.filter(username="nina").exists()
    assert Invite.objects.get().uses == 0


def test_someone_with_an_account_signs_in_and_joins(world: Any) -> None:
    link = make_invite(signed_in(world.owner), role="editor")
    path = link.removeprefix("http://testserver")

    anonymous = Client().get(path)
    response = signed_in(world.stranger).post(path, {"action": "join"})

    assert f"/login/?next={path}" in anonymous.content.decode()
    assert response.status_code == 302
    assert Membership.objects.get(workspace=world.workspace, user=world.stranger).role == "editor"


def test_an_invite_used_up_expired_or_revoked_lets_nobody_in(world: Any) -> None:
    client = signed_in(world.owner)
    used = make_invite(client).removeprefix("http://testserver")
    expired = make_invite(client).removeprefix("http://testserver")
    revoked = make_invite(client).removeprefix("http://testserver")
    signed_in(world.stranger).post(used, {"action": "join"})
    Invite.objects.filter(token_hash=_hash(expired)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    invite = Invite.objects.get(token_hash=_hash(revoked))
    revoke = client.post("/w/lab/invites/", {"action": "revoke", "invite": invite.pk})
    latecomer = get_user_model().objects.create_user("late")

    answers = [
        signed_in(latecomer).post(path, {"action": "join"}) for path in (used, expired, revoked)
    ]

    assert revoke.status_code == 302
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert "does not work" in answers[0].content.decode()
    assert not Membership.objects.filter(user=latecomer).exists()
    assert AuditEntry.objects.filter(verb=AuditVerb.INVITE_REVOKED).count() == 1
    assert list(client.get("/w/lab/invites/").context["open_invites"]) == []


def _hash(path: str) -> str:
    return hashlib.sha256(path.rstrip("/").rsplit("/", 1)[1].encode()).hexdigest()


def test_the_last_use_goes_to_one_person_only(world: Any) -> None:
    _, token = invite_create(world.workspace, Role.VIEWER, actor=world.owner, max_uses=1)
    users = get_user_model()
    first, second = users.objects.create_user("a"), users.objects.create_user("b")
    stale = invite_for_token(token)  # both opened the page while one use was left
    assert stale is not None

    invite_accept(stale, first)
    with pytest.raises(Exception, match="no longer works"):
        invite_accept(stale, second)

    assert Invite.objects.get().uses == 1
    assert not Membership.objects.filter(user=second).exists()


def test_a_member_opening_an_invite_keeps_their_role_and_uses_nothing(world: Any) -> None:
    invite, _ = invite_create(world.workspace, Role.VIEWER, actor=world.owner)

    membership, joined = invite_accept(invite, world.editor)

    assert (membership.role, joined) == (Role.EDITOR, False)
    assert Invite.objects.get().uses == 0


def test_an_invite_is_mailed_when_email_url_is_set(world: Any, settings: Any) -> None:
    settings.EMAIL_URL = "smtp://mail.example.com:25"  # the tests' backend is locmem anyway

    link = make_invite(signed_in(world.owner), email="nina@example.com")

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["nina@example.com"]
    assert link in mail.outbox[0].body
    assert "The lab" in mail.outbox[0].subject


def test_without_email_url_nothing_is_mailed_and_the_link_is_shown(world: Any) -> None:
    link = make_invite(signed_in(world.owner), email="nina@example.com")

    assert mail.outbox == []
    assert link.startswith("http://testserver/invite/")


def test_an_invite_form_out_of_range_is_refused(world: Any) -> None:
    response = signed_in(world.owner).post(
        "/w/lab/invites/", {"action": "create", "role": "boss", "days": 0, "max_uses": 0}
    )

    assert response.status_code == 400
    assert Invite.objects.count() == 0


@pytest.mark.parametrize("n", [1, 50])
def test_the_invites_page_costs_the_same_for_1_or_50_invites(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    for _ in range(n):
        invite_create(world.workspace, Role.VIEWER, actor=world.owner)
    client = signed_in(world.owner)

    with django_assert_num_queries(4):  # session, user, workspace, invites with their makers
        response = client.get("/w/lab/invites/")

    assert len(response.context["open_invites"]) == n


# --- the audit trail --------------------------------------------------------------------------


def test_tokens_made_and_revoked_are_recorded_in_each_workspace_of_their_user(
    world: Any,
) -> None:
    Membership.objects.create(user=world.editor, workspace=world.other_workspace)
    token, _ = token_create(world.editor, "laptop")
    token_revoke(world.editor, token.digest)

    for space in (world.workspace, world.other_workspace):
        assert verbs(space) == [AuditVerb.TOKEN_CREATED, AuditVerb.TOKEN_REVOKED]
    assert AuditEntry.objects.filter(actor=world.editor, target="token laptop").count() == 4


def test_a_password_change_records_the_tokens_it_revoked(world: Any) -> None:
    token_create(world.viewer, "ci")
    world.viewer.set_password("another-passphrase")
    world.viewer.save()

    entry = AuditEntry.objects.get(verb=AuditVerb.TOKEN_REVOKED)
    assert entry.data == {"names": ["ci"], "why": "password changed"}


def test_the_audit_page_lists_acts_newest_first_and_filters_them(world: Any) -> None:
    audit_record(world.workspace, world.owner, AuditVerb.MEMBER_ADDED, "nina", {"role": "viewer"})
    audit_record(world.workspace, world.editor, AuditVerb.RUN_STARTED, "run 7")
    audit_record(world.other_workspace, world.stranger, AuditVerb.RUN_STARTED, "run 8")
    client = signed_in(world.owner)

    everything = client.get("/w/lab/audit/")
    by_verb = client.get("/w/lab/audit/", {"verb": "run.started"})
    by_actor = client.get("/w/lab/audit/", {"actor": "olivia"})
    by_date = client.get("/w/lab/audit/", {"before": "2000-01-01"})

    assert [e.target for e in everything.context["page"]] == ["run 7", "nina"]
    assert [e.target for e in by_verb.context["page"]] == ["run 7"]
    assert [e.target for e in by_actor.context["page"]] == ["nina"]
    assert list(by_date.context["page"]) == []
    assert "run 8" not in everything.content.decode()


@pytest.mark.parametrize("n", [1, 50])
def test_the_audit_page_costs_the_same_for_1_or_50_entries(
    world: Any, django_assert_num_queries: Any, n: int
) -> None:
    for i in range(n):
        audit_record(world.workspace, world.editor, AuditVerb.RUN_STARTED, f"run {i}")
    client = signed_in(world.owner)

    with django_assert_num_queries(5):  # session, user, workspace, count, one page of rows
        response = client.get("/w/lab/audit/")

    assert response.status_code == 200
    assert len(response.context["page"].object_list) == n


def test_the_audit_api_is_paginated_filtered_and_for_owners(world: Any) -> None:
    client = api_client(world.owner)  # its token's creation is recorded first
    for i in range(3):
        audit_record(world.workspace, world.editor, AuditVerb.RUN_STARTED, f"run {i}")
    audit_record(world.workspace, world.owner, AuditVerb.MEMBER_REMOVED, "vera")

    page = client.get(f"{API}/lab/audit/?limit=2")
    runs = client.get(f"{API}/lab/audit/", {"verb": "run.started", "actor": "eddie"})
    bad = client.get(f"{API}/lab/audit/", {"verb": "nonsense"})
    editor = api_client(world.editor).get(f"{API}/lab/audit/")

    assert page.status_code == 200
    assert page.json()["count"] == 5
    assert page.json()["next"] is not None
    assert [r["target"] for r in page.json()["results"]] == ["vera", "run 2"]
    assert page.json()["results"][0]["actor"] == "olivia"
    assert runs.json()["count"] == 3
    assert bad.status_code == 400
    assert "verb" in error_of(bad)["fields"]
    assert editor.status_code == 403


def test_the_audit_api_costs_the_same_for_1_or_50_entries(
    world: Any, django_assert_num_queries: Any
) -> None:
    client = api_client(world.owner)

    def add(n: int) -> None:
        for i in range(n):
            audit_record(world.workspace, world.editor, AuditVerb.RUN_STARTED, f"run {i}")

    add(1)
    client.get(f"{API}/lab/audit/")
    with CaptureQueriesContext(connection) as one:
        client.get(f"{API}/lab/audit/")
    add(49)
    with django_assert_num_queries(len(one.captured_queries)):
        response = client.get(f"{API}/lab/audit/")
    assert response.json()["count"] == 51  # and the client's token, made first


def test_audit_entries_are_read_only_in_the_admin(world: Any, admin_client: Any) -> None:
    entry = audit_record(world.workspace, world.owner, AuditVerb.RUN_STARTED, "run 1")
    change = reverse("admin:workspaces_auditentry_change", args=[entry.pk])

    page = admin_client.get(change)
    posted = admin_client.post(change, {"verb": "run.canceled", "target": "forged"})
    deleted = admin_client.post(reverse("admin:workspaces_auditentry_delete", args=[entry.pk]))
    added = admin_client.get(reverse("admin:workspaces_auditentry_add"))

    entry.refresh_from_db()
    assert page.status_code == 200
    assert posted.status_code == 403
    assert deleted.status_code == 403
    assert added.status_code == 403
    assert (entry.verb, entry.target) == ("run.started", "run 1")


# --- invites through the API ------------------------------------------------------------------


def test_the_api_makes_lists_and_revokes_invites_for_owners(world: Any) -> None:
    client = api_client(world.owner)

    made = client.post(f"{API}/lab/invites/create/", {"role": "editor", "days": 2}, format="json")
    listed = client.get(f"{API}/lab/invites/")
    editor = api_client(world.editor).post(f"{API}/lab/invites/create/", {}, format="json")
    bad = client.post(f"{API}/lab/invites/create/", {"max_uses": 0}, format="json")
    invite_id = made.json()["id"]
    revoked = client.post(f"{API}/lab/invites/{invite_id}/revoke/")
    again = client.post(f"{API}/lab/invites/{invite_id}/revoke/")

    assert made.status_code == 201
    body = made.json()
    assert body["url"].startswith("http://testserver/invite/")
    assert (body["role"], body["max_uses"], body["created_by"], body["mailed"]) == (
        "editor",
        1,
        "olivia",
        False,
    )
    token = body["url"].rstrip("/").rsplit("/", 1)[1]
    assert Invite.objects.get().token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert [r["id"] for r in listed.json()["results"]] == [invite_id]
    assert "url" not in listed.json()["results"][0]
    assert editor.status_code == 403
    assert bad.status_code == 400
    assert "max_uses" in error_of(bad)["fields"]
    assert revoked.json() == {"revoked": True}
    assert again.json() == {"revoked": False}
    assert client.get(f"{API}/lab/invites/").json()["count"] == 0


def test_another_workspace_s_invite_is_a_404_to_revoke(world: Any) -> None:
    invite, _ = invite_create(world.other_workspace, Role.VIEWER, actor=world.stranger)

    response = api_client(world.owner).post(f"{API}/lab/invites/{invite.pk}/revoke/")

    assert response.status_code == 404
    assert Invite.objects.get().revoked_at is None


def test_the_invite_list_api_costs_the_same_for_1_or_50(
    world: Any, django_assert_num_queries: Any
) -> None:
    client = api_client(world.owner)
    invite_create(world.workspace, Role.VIEWER, actor=world.owner)
    client.get(f"{API}/lab/invites/")
    with CaptureQueriesContext(connection) as one:
        client.get(f"{API}/lab/invites/")
    for _ in range(49):
        invite_create(world.workspace, Role.VIEWER, actor=world.owner)

    with django_assert_num_queries(len(one.captured_queries)):
        response = client.get(f"{API}/lab/invites/")

    assert response.json()["count"] == 50
