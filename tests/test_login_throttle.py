"""Login throttling (issue 10, django-axes): after STEPWORKS_LOGIN_FAILURES wrong passwords
for one user from one address, that pair is locked out (the right password too) with a
clear message, on the login page and the admin's; an administrator unlocks it."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

HERE, ELSEWHERE = "203.0.113.7", "198.51.100.9"


def _login(url: str, username: str, password: str, address: str = HERE) -> Any:
    return Client(REMOTE_ADDR=address).post(url, {"username": username, "password": password})


def _fail(url: str, times: int, username: str = "eddie", address: str = HERE) -> list[int]:
    """Wrong passwords `times` times: the form again with its error (200), until the one
    that reaches the limit, which is already answered with the lockout (429)."""
    return [_login(url, username, "wrong-password", address).status_code for _ in range(times)]


def test_after_the_limit_even_the_right_password_is_refused_with_a_clear_message(
    world: Any, settings: Any
) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    assert _fail("/login/", limit) == [200] * (limit - 1) + [429]

    locked = _login("/login/", "eddie", "pw-eddie-1")

    assert locked.status_code == 429
    text = locked.content.decode()
    assert "Too many failed logins" in text and "eddie" in text
    assert "unlock" in text
    assert "_auth_user_id" not in locked.client.session


def test_below_the_limit_the_right_password_works_and_resets_the_count(
    world: Any, settings: Any
) -> None:
    assert set(_fail("/login/", settings.AXES_FAILURE_LIMIT - 1)) == {200}

    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 302
    assert set(_fail("/login/", settings.AXES_FAILURE_LIMIT - 1)) == {200}
    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 302


def test_a_lockout_holds_one_user_at_one_address_only(world: Any, settings: Any) -> None:
    _fail("/login/", settings.AXES_FAILURE_LIMIT)

    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 429
    assert _login("/login/", "eddie", "pw-eddie-1", ELSEWHERE).status_code == 302
    assert _login("/login/", "vera", "pw-vera-1").status_code == 302


def test_the_admin_login_is_throttled_too(world: Any, settings: Any) -> None:
    users = get_user_model()
    users.objects.create_superuser("root", password="pw-root-1")
    _fail("/admin/login/", settings.AXES_FAILURE_LIMIT, username="root")

    assert _login("/admin/login/", "root", "pw-root-1").status_code == 429
    assert _login("/login/", "root", "pw-root-1").status_code == 429  # one count for both


def test_the_limit_is_a_setting(world: Any, settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = 2
    _fail("/login/", 2)

    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 429


def test_an_administrator_unlocks_from_the_admin(world: Any, settings: Any) -> None:
    get_user_model().objects.create_superuser("root", password="pw-root-1")
    _fail("/login/", settings.AXES_FAILURE_LIMIT)
    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 429
    admin = Client(REMOTE_ADDR=ELSEWHERE)
    signed_in = admin.post("/admin/login/", {"username": "root", "password": "pw-root-1"})
    assert signed_in.status_code == 302
    attempt = AccessAttempt.objects.get(username="eddie")

    listed = admin.get("/admin/axes/accessattempt/")
    unlocked = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"},
    )

    assert listed.status_code == 200 and "eddie" in listed.content.decode()
    assert unlocked.status_code == 302
    assert not AccessAttempt.objects.exists()
    assert _login("/login/", "eddie", "pw-eddie-1").status_code == 302
