"""The team pages: a new workspace, its members, invites (and the page an invite link opens),
and the audit trail. Thin: fetch through the access helper, call a service, answer.

Owners change members and invites and read the audit trail; editors and viewers see the
member list read-only; someone of another workspace gets a 404 on all of them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from workspaces import invites as invite_services
from workspaces import services
from workspaces.audit import audit_list
from workspaces.conf import team
from workspaces.errors import DomainError
from workspaces.forms import (
    AuditFilterForm,
    InviteForm,
    MemberForm,
    RenameForm,
    SignUpForm,
    WorkspaceForm,
)
from workspaces.models import Invite, Role, Workspace
from workspaces.selectors import get_workspace_for_user, membership_list, role_allows

AUDIT_PER_PAGE = 50
# A session made by sign-up is a ModelBackend login (django-axes' backend only refuses).
LOGIN_BACKEND = "django.contrib.auth.backends.ModelBackend"


@login_required
@require_http_methods(["GET", "POST"])
def workspace_new(request: HttpRequest) -> HttpResponse:
    """Make a workspace; its maker becomes its owner."""
    allowed = services.workspace_creation_allowed(request.user)
    form = WorkspaceForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and allowed and form.is_valid():
        try:
            workspace = services.workspace_create(
                form.cleaned_data["slug"], form.cleaned_data["name"], request.user
            )
        except DomainError as error:
            for field, reasons in error.fields.items():
                for reason in reasons:
                    form.add_error(field if field in form.fields else None, reason)
        else:
            messages.success(
                request,
                f"Workspace {workspace.name} created: you are its owner. "
                "Add colleagues or invite them from Members.",
            )
            return redirect("runs:workspace", slug=workspace.slug)
    status = 403 if not allowed else (400 if form.errors else 200)
    context = {"form": form, "allowed": allowed}
    return TemplateResponse(request, "workspaces/workspace_new.html", context, status=status)


# --- members ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, slug: str) -> HttpResponse:
    """The members and their roles; owners add, change, remove and rename here."""
    workspace = get_workspace_for_user(request.user, slug)
    add_form = MemberForm()
    error = ""
    status = 200
    if request.method == "POST":
        workspace = get_workspace_for_user(request.user, slug, Role.OWNER)
        if request.POST.get("action") == "add":
            add_form = MemberForm(request.POST)
        try:
            done = _member_action(request, workspace, add_form)
        except DomainError as problem:
            # The last owner's refusal is a 409 in the API; on the page it is the form's
            # answer, like any other field error.
            error, status = str(problem), 403 if problem.status_code == 403 else 400
        else:
            messages.success(request, done)
            me: Any = request.user  # login_required: a User
            if not workspace.memberships.filter(user=me).exists():
                return redirect("pipelines:home")  # they removed themselves
            return redirect("workspaces:members", slug=workspace.slug)
    can_own = role_allows(workspace, Role.OWNER)
    context = {
        "workspace": workspace,
        "members": membership_list(workspace),
        "can_own": can_own,
        "add_form": add_form,
        "rename_form": RenameForm(initial={"name": workspace.name}),
        "roles": Role.choices,
        "error": error,
    }
    return TemplateResponse(request, "workspaces/members.html", context, status=status)


def _member_action(request: HttpRequest, workspace: Workspace, add_form: MemberForm) -> str:
    """Do the posted action (add, set, remove, rename); what to tell the owner."""
    action = request.POST.get("action")
    actor = request.user
    if action == "add":
        if not add_form.is_valid():
            raise DomainError("invalid", "Give a username or email and a role.")
        user = services.user_named(add_form.cleaned_data["who"], "who")
        role = add_form.cleaned_data["role"]
        services.membership_set(workspace, user, role, actor=actor)
        return f"{user.get_username()} is now {role} in {workspace.name}."
    if action in ("set", "remove"):
        user = services.user_named(request.POST.get("username", ""))
        if not workspace.memberships.filter(user=user).exists():
            raise DomainError("invalid", f"{user.get_username()} is not a member here.")
        role = request.POST.get("role") if action == "set" else None
        services.membership_set(workspace, user, role, actor=actor)
        if role is None:
            return f"{user.get_username()} was removed from {workspace.name}."
        return f"{user.get_username()} is now {role}."
    if action == "rename":
        services.workspace_rename(workspace, request.POST.get("name", ""), actor=actor)
        return f"Renamed to {workspace.name}."
    raise DomainError("invalid", "Choose add, set, remove or rename.")


# --- invites ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def invites(request: HttpRequest, slug: str) -> HttpResponse:
    """Open invites and a form for a new one (owners). A new link is shown once."""
    workspace = get_workspace_for_user(request.user, slug, Role.OWNER)
    settings = team()
    initial = {
        "role": Role.VIEWER,
        "days": settings.invite_days,
        "max_uses": settings.invite_max_uses,
    }
    form = InviteForm(initial=initial)
    context: dict[str, Any] = {"workspace": workspace, "link": None, "mailed": False}
    status = 200
    if request.method == "POST":
        if request.POST.get("action") == "revoke":
            invite = Invite.objects.filter(
                workspace=workspace, pk=_int(request.POST.get("invite"))
            ).first()
            if invite is None:
                raise Http404("No such invite.")
            if invite_services.invite_revoke(invite, actor=request.user):
                messages.success(request, "Invite revoked: its link no longer works.")
            return redirect("workspaces:invites", slug=workspace.slug)
        form = InviteForm(request.POST)
        status = 400
        if form.is_valid():
            _invite_create(request, workspace, form, context)
            status = 200
    context.update(
        form=form,
        open_invites=invite_services.open_invites(workspace),
        mail=settings.mail,
    )
    return TemplateResponse(request, "workspaces/invites.html", context, status=status)


def _invite_create(
    request: HttpRequest, workspace: Workspace, form: InviteForm, context: dict[str, Any]
) -> None:
    data = form.cleaned_data
    invite, token = invite_services.invite_create(
        workspace,
        data["role"],
        actor=request.user,
        days=data["days"],
        max_uses=data["max_uses"],
        email=data.get("email") or "",
    )
    link = request.build_absolute_uri(reverse("workspaces:invite", args=[token]))
    context.update(link=link, invite=invite)
    try:
        context["mailed"] = invite_services.invite_mail(invite, link)
    except OSError as problem:  # smtplib's errors are OSErrors: the link still works
        context["mail_error"] = str(problem)


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() and len(value) < 19 else 0


@require_http_methods(["GET", "POST"])
def invite_open(request: HttpRequest, token: str) -> HttpResponse:
    """What an invite link opens: sign up (or sign in), then join with the invite's role."""
    invite = invite_services.invite_for_token(token)
    if invite is None:
        return TemplateResponse(request, "workspaces/invite.html", {"invite": None}, status=404)
    form = SignUpForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "join" and request.user.is_authenticated:
            return _join(request, invite, request.user)
        if action == "signup" and not request.user.is_authenticated and form.is_valid():
            with transaction.atomic():
                user = form.save()
                response = _join(request, invite, user)
            login(request, user, backend=LOGIN_BACKEND)
            return response
        status = 400
    context = {
        "invite": invite,
        "form": form,
        "login_url": f"{reverse('login')}?next={request.path}",
    }
    return TemplateResponse(request, "workspaces/invite.html", context, status=status)


def _join(request: HttpRequest, invite: Invite, user: Any) -> HttpResponse:
    membership, joined = invite_services.invite_accept(invite, user)
    workspace = invite.workspace
    if joined:
        messages.success(request, f"Welcome to {workspace.name}: you are {membership.role} here.")
    else:
        messages.info(request, f"You are already {membership.role} in {workspace.name}.")
    return redirect("runs:workspace", slug=workspace.slug)


# --- the audit trail -------------------------------------------------------------------------


@login_required
@require_GET
def audit(request: HttpRequest, slug: str) -> TemplateResponse:
    """Who did what and when (owners), newest first, filtered by actor, act and dates."""
    workspace = get_workspace_for_user(request.user, slug)
    if not role_allows(workspace, Role.OWNER):
        raise PermissionDenied("The audit trail is for the workspace's owners.")
    form = AuditFilterForm(request.GET or None)
    entries = audit_list(workspace).filter(**form.filters())
    page = Paginator(entries, AUDIT_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "workspace": workspace,
        "form": form,
        "page": page,
        "query": query.urlencode(),
    }
    return TemplateResponse(request, "workspaces/audit.html", context)
