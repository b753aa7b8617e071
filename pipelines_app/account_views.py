"""The API tokens page: a user creates, regenerates and revokes their DRF token.

A user has at most one token (`rest_framework.authtoken`). Its key is shown once, in the
response that made it; afterwards the page only says that one exists and how it ends.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods
from rest_framework.authtoken.models import Token

ACTIONS = ("create", "regenerate", "revoke")


def token_issue(user: Any) -> Token:
    """A fresh token for `user`, replacing any they had (its key stops working at once)."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)


def token_revoke(user: Any) -> bool:
    """Delete the user's token; False when they had none."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return deleted > 0


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # login_required: a User
    existing = Token.objects.filter(user=user).first()
    context: dict[str, Any] = {"token": existing, "new_key": None, "done": None}
    if request.method == "POST":
        action = request.POST.get("action")
        if action not in ACTIONS:
            context["error"] = "Choose create, regenerate or revoke."
            return TemplateResponse(request, "account/tokens.html", context, status=400)
        if action == "revoke":
            token_revoke(user)
            return redirect("account-tokens")
        if action == "create" and existing is not None:
            context["error"] = "You already have a token: regenerate it to get a new key."
            return TemplateResponse(request, "account/tokens.html", context, status=409)
        token = token_issue(user)
        context.update(token=token, new_key=token.key, done=action)
    context["api_url"] = request.build_absolute_uri("/")
    return TemplateResponse(request, "account/tokens.html", context)
