"""The webhooks page (owners): the workspace's webhooks with their secrets and delivery
logs; add one, delete one, or send one a test (queued: the actor sends it, never this
request)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from runs_app.models import Webhook, WebhookEvent
from runs_app.webhooks import services
from workspaces.conf import team
from workspaces.errors import DomainError
from workspaces.models import Role, Workspace
from workspaces.selectors import get_workspace_for_user

EVENT_CHOICES = [(e.value, e.label) for e in services.EVENTS]


@login_required
@require_http_methods(["GET", "POST"])
def webhooks_page(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = get_workspace_for_user(request.user, slug, Role.OWNER)
    form: dict[str, Any] = {"url": "", "events": [e.value for e in services.EVENTS[:2]]}
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action in ("delete", "test"):
            return _act(request, workspace, action)
        form = {"url": request.POST.get("url", ""), "events": request.POST.getlist("events")}
        try:
            hook = services.webhook_create(
                workspace, form["url"], form["events"], actor=request.user
            )
        except DomainError as error:
            errors, status = error.fields or {"url": [error.message]}, 400
        else:
            messages.success(
                request, f"Webhook added: {hook.url}. Its secret is below; send it a test."
            )
            return redirect("runs:webhooks", slug=workspace.slug)
    context = {
        "workspace": workspace,
        "webhooks": services.webhooks_with_deliveries(workspace),
        "event_choices": EVENT_CHOICES,
        "form": form,
        "errors": errors,
        "allow_private": team().webhook_allow_private,
        "signature_header": services.SIGNATURE_HEADER,
        "ping": WebhookEvent.PING.value,
    }
    return TemplateResponse(request, "runs_app/webhooks.html", context, status=status)


def _act(request: HttpRequest, workspace: Workspace, action: str) -> HttpResponse:
    raw = request.POST.get("webhook", "")
    hook = Webhook.objects.filter(
        workspace=workspace, pk=int(raw) if raw.isdigit() and len(raw) < 19 else 0
    ).first()
    if hook is None:
        raise Http404("No such webhook.")
    hook.workspace = workspace
    if action == "delete":
        services.webhook_delete(hook, actor=request.user)
        messages.success(request, f"Webhook {hook.url} deleted.")
    else:
        services.webhook_test(hook, actor=request.user)
        messages.success(
            request, f"A test is on its way to {hook.url}: its attempts appear below in a moment."
        )
    return redirect("runs:webhooks", slug=workspace.slug)
