"""API tokens at rest and in use (issue 10): hashed (knox), several named ones per user with
an expiry and a last use, shown once, revoked one by one, all at once, by a password change
and by deactivation; `manage.py create_token` prints the token alone on its last line."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, reset_queries
from django.test import Client as PageClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.helpers import api_token
from tests.test_api_support import api_client
from workspaces.models import ApiToken

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"sw_[0-9a-f]{64}")


def _works(key: str) -> bool:
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    status = client.get("/api/v1/workspaces/").status_code
    assert status in (200, 401), status
    return status == 200


def _page(user: Any) -> PageClient:
    page = PageClient()
    page.force_login(user)
    return page


def test_a_database_dump_holds_no_usable_token(world: Any) -> None:
    keys = [api_token(world.editor, "laptop"), api_token(world.owner, "ci")]

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        dump = repr(cursor.fetchall())

    assert all(TOKEN.fullmatch(key) for key in keys)
    assert not any(key in dump for key in keys)
    assert not any(key[15:] in dump for key in keys)  # only knox's 15-character lookup prefix
    assert all(_works(key) for key in keys)


def test_a_user_makes_named_tokens_sees_each_once_and_the_page_lists_them(world: Any) -> None:
    page = _page(world.editor)

    made = page.post("/account/tokens/", {"action": "create", "name": "laptop", "days": "30"})
    again = page.post("/account/tokens/", {"action": "create", "name": "CI", "days": "0"})
    later = page.get("/account/tokens/")

    assert made.status_code == again.status_code == 200
    key = TOKEN.search(made.content.decode()).group(0)  # type: ignore[union-attr]
    other = TOKEN.search(again.content.decode()).group(0)  # type: ignore[union-attr]
    listing = later.content.decode()
    assert key not in listing and other not in listing
    assert "laptop" in listing and "CI" in listing and "never" in listing
    assert 'data-copy="token-key"' in made.content.decode()
    laptop = ApiToken.objects.get(user=world.editor, name="laptop")
    assert timedelta(days=29) < laptop.expiry - timezone.now() <= timedelta(days=30)
    assert ApiToken.objects.get(user=world.editor, name="CI").expiry is None
    assert _works(key) and _works(other)


def test_a_token_records_its_last_use(world: Any) -> None:
    key = api_token(world.editor)
    assert ApiToken.objects.get(user=world.editor).last_used is None

    assert _works(key)

    used = ApiToken.objects.get(user=world.editor).last_used
    assert used is not None and timezone.now() - used < timedelta(minutes=1)


def test_a_bad_name_or_expiry_is_a_400_that_makes_nothing(world: Any) -> None:
    page = _page(world.editor)

    for form, reason in [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "days": "-1"}, "days"),
        ({"name": "ok", "days": "soon"}, "days"),
    ]:
        response = page.post("/account/tokens/", {"action": "create", **form})
        assert response.status_code == 400, form
        assert reason in response.content.decode()
    assert not ApiToken.objects.exists()


def test_an_expired_token_stops_working(world: Any) -> None:
    key = api_token(world.editor)
    ApiToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    assert not _works(key)


def test_a_call_reads_its_token_once_and_expired_tokens_go_when_the_last_use_is_written(
    world: Any,
) -> None:
    key, old = api_token(world.editor, "laptop"), api_token(world.editor, "old")
    ApiToken.objects.filter(name="old").update(expiry=timezone.now() - timedelta(seconds=1))
    assert _works(key)  # writes the last use, and deletes the user's expired tokens

    reset_queries()  # as a request's start does: the capture counts from an empty log
    with CaptureQueriesContext(connection) as second:
        assert _works(key)
    table = ApiToken._meta.db_table
    reads = [q["sql"] for q in second.captured_queries if table in q["sql"]]  # before a reset

    assert len(reads) == 1, reads  # the token itself, with its user: no other token, no write
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["laptop"]
    assert not _works(old)


def test_revoking_one_token_keeps_the_others_and_revoke_all_ends_them(world: Any) -> None:
    first, second, third = (api_token(world.editor, name) for name in ("a", "b", "c"))
    page = _page(world.editor)
    digest = ApiToken.objects.get(user=world.editor, name="a").digest

    revoked = page.post("/account/tokens/", {"action": "revoke", "token": digest})

    assert revoked.status_code == 302
    assert not _works(first) and _works(second) and _works(third)
    mine = api_token(world.owner)
    stranger = page.post("/account/tokens/", {"action": "revoke", "token": "nope"})
    assert stranger.status_code == 404
    page.post("/account/tokens/", {"action": "revoke_all"})
    assert not _works(second) and not _works(third)
    assert _works(mine)  # another user's token is not the editor's to revoke


def test_a_user_cannot_revoke_another_user_s_token(world: Any) -> None:
    key = api_token(world.owner)
    digest = ApiToken.objects.get(user=world.owner).digest

    response = _page(world.editor).post("/account/tokens/", {"action": "revoke", "token": digest})

    assert response.status_code == 404
    assert _works(key)


def test_a_password_change_revokes_every_token_and_ends_other_sessions(world: Any) -> None:
    key = api_token(world.editor)
    elsewhere, here = PageClient(), PageClient()
    for client in (elsewhere, here):
        signed_in = client.post("/login/", {"username": "eddie", "password": "pw-eddie-1"})
        assert signed_in.status_code == 302

    changed = here.post(
        "/account/password/",
        {
            "old_password": "pw-eddie-1",
            "new_password1": "a-new-long-password-9",
            "new_password2": "a-new-long-password-9",
        },
    )

    assert changed.status_code == 302
    assert not _works(key)
    assert here.get("/account/tokens/").status_code == 200  # this session stays
    assert elsewhere.get("/account/tokens/").status_code == 302  # the other is signed out


def test_a_wrong_old_password_is_a_400_and_keeps_the_tokens(world: Any) -> None:
    key = api_token(world.editor)

    response = _page(world.editor).post(
        "/account/password/",
        {"old_password": "wrong", "new_password1": "x-9-long-pw", "new_password2": "x-9-long-pw"},
    )

    assert response.status_code == 400
    assert _works(key)


def test_a_password_set_by_an_operator_or_deactivation_revokes_tokens(world: Any) -> None:
    editor_key, viewer_key = api_token(world.editor), api_token(world.viewer)
    world.editor.set_password("reset-by-admin-1")
    world.editor.save()
    world.viewer.is_active = False
    world.viewer.save()

    assert not ApiToken.objects.filter(user__in=[world.editor, world.viewer]).exists()
    assert not _works(editor_key) and not _works(viewer_key)


def test_a_login_does_not_touch_the_tokens(world: Any) -> None:
    key = api_token(world.editor)

    signed_in = PageClient().post("/login/", {"username": "eddie", "password": "pw-eddie-1"})
    assert signed_in.status_code == 302  # which saves last_login

    assert _works(key)


def test_create_token_prints_only_the_token_on_its_last_line(world: Any) -> None:
    out, err = io.StringIO(), io.StringIO()

    call_command(
        "create_token", "eddie", "--name", "notebook", "--days", "7", stdout=out, stderr=err
    )

    key = out.getvalue().strip().splitlines()[-1]
    assert TOKEN.fullmatch(key)
    assert "notebook" in err.getvalue()
    assert _works(key)
    assert ApiToken.objects.get(user=world.editor).name == "notebook"
    with pytest.raises(CommandError, match="nobody"):
        call_command("create_token", "nobody", stdout=io.StringIO())
