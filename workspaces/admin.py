"""Admin console for workspaces and memberships, and the mixins every app's admin uses."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from workspaces.models import ApiToken, AuditEntry, Invite, Membership, Workspace

# Django's admin classes can't be subscripted at run time (only django-stubs-ext's monkeypatch
# would allow it): the type checker sees each base with its model, the interpreter without.


class ViewOnlyMixin:
    """For rows only services or workers write: listed and viewable, never added or edited."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ImmutableMixin(ViewOnlyMixin):
    """Immutable history: not even deleted, since other rows and specs point at it."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WorkspaceFixedMixin:
    """A row's workspace is set once: moving it would strand the rows that refer to it."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return (*fields, "workspace") if obj is not None else fields


def short_digest(value: str) -> str:
    return value[:12]


# --- workspaces and members ----------------------------------------------------------------
class MembershipInline(admin.TabularInline[Membership, Workspace]):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin[Workspace]):
    list_display = ["slug", "name", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    date_hierarchy = "created_at"
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workspace]:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Workspace) -> int:
        count: int = obj.member_count  # type: ignore[attr-defined]
        return count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__slug", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]
    list_select_related = ["user", "workspace"]


# --- API tokens ----------------------------------------------------------------------------


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    """Listed and revoked (deleted) here; made by their user (the tokens page) or by
    `manage.py create_token`, because only there can the key be shown once."""

    list_display = ["name", "user", "token_prefix", "created", "expiry", "last_used"]
    list_select_related = ["user"]
    search_fields = ["name", "user__username", "token_key"]
    ordering = ["-created"]
    readonly_fields = ["name", "user", "token_key", "created", "expiry", "last_used"]
    exclude = ["digest"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="starts with", ordering="token_key")
    def token_prefix(self, obj: ApiToken) -> str:
        return f"{obj.token_key[:9]}…"


# --- invites and the audit trail -----------------------------------------------------------


@admin.register(Invite)
class InviteAdmin(ViewOnlyMixin, admin.ModelAdmin[Invite]):
    """Made on the workspace's invites page (only there can the link be shown once);
    listed here, and deleted to revoke."""

    list_display = [
        "workspace",
        "role",
        "uses",
        "max_uses",
        "expires_at",
        "revoked_at",
        "created_by",
    ]
    list_filter = ["role", "workspace"]
    list_select_related = ["workspace", "created_by"]
    exclude = ["token_hash"]
    date_hierarchy = "created_at"


@admin.register(AuditEntry)
class AuditEntryAdmin(ImmutableMixin, admin.ModelAdmin[AuditEntry]):
    """The audit trail: read-only, never edited nor deleted here."""

    list_display = ["at", "workspace", "actor_name", "verb", "target"]
    list_filter = ["verb", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["actor_name", "target", "workspace__slug"]
    date_hierarchy = "at"
