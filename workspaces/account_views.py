"""The account pages: API tokens (several named ones, each shown once) and the password.

A new token's key is in the response that made it and nowhere else, ever: the database
keeps its digest (workspaces.tokens). Changing the password revokes every token and ends
the user's other sessions; this one stays signed in.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from workspaces import tokens as token_services
from workspaces.errors import DomainError

ACTIONS = ("create", "revoke", "revoke_all")


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # login_required: a User
    context: dict[str, Any] = {
        "new_key": None,
        "new_token": None,
        "expiry_choices": token_services.EXPIRY_CHOICES,
        "default_days": token_services.DEFAULT_DAYS,
        "api_url": request.build_absolute_uri("/"),
    }
    status = 200
    if request.method == "POST":
        status = _act(request, user, context)
        if status == 302:
            return redirect("account-tokens")
    context["tokens"] = token_services.tokens_of(user)
    return TemplateResponse(request, "account/tokens.html", context, status=status)


def _act(request: HttpRequest, user: Any, context: dict[str, Any]) -> int:
    action = request.POST.get("action")
    if action not in ACTIONS:
        context["error"] = "Choose create, revoke or revoke all."
        return 400
    if action == "revoke_all":
        count = token_services.tokens_revoke_all(user)
        messages.success(request, f"Revoked {count} token(s).")
        return 302
    if action == "revoke":
        if not token_services.token_revoke(user, request.POST.get("token", "")):
            context["error"] = "You have no such token (it may already be revoked)."
            return 404
        messages.success(request, "Token revoked: it no longer works.")
        return 302
    try:
        days = int(request.POST.get("days", token_services.DEFAULT_DAYS))
        token, key = token_services.token_create(user, request.POST.get("name", ""), days)
    except ValueError:
        context["error"] = "days: a whole number of days (0: never expires)."
        return 400
    except DomainError as error:
        context["error"] = error.message
        return 400
    context.update(new_key=key, new_token=token)
    return 200


@login_required
@require_http_methods(["GET", "POST"])
def password(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()  # the tokens go with the old password (workspaces.tokens)
        update_session_auth_hash(request, user)  # other sessions end; this one stays
        messages.success(
            request, "Password changed. Your API tokens were revoked and other sessions ended."
        )
        return redirect("account-tokens")
    return TemplateResponse(
        request, "account/password.html", {"form": form}, status=400 if form.errors else 200
    )
