"""Admin console for design-time rows.

Versions (ModuleVersion, PipelineVersion with its steps, DatasetVersion) are immutable and
made by services, which compute their digests: here they are view-only, never added, never
deleted (runs, sweeps and specs refer to them, some only by `name@N` inside JSON that no
foreign key guards). As a consequence the admin refuses to delete a module, pipeline,
dataset or workspace that has versions: its history would go with it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Membership,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
    Workspace,
)


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
class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "member_count", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    date_hierarchy = "created_at"
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workspace]:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Workspace) -> int:
        return obj.member_count  # type: ignore[attr-defined]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "user__email", "workspace__slug", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]
    list_select_related = ["user", "workspace"]


# --- modules -----------------------------------------------------------------------------------
@admin.register(Module)
class ModuleAdmin(WorkspaceFixedMixin, admin.ModelAdmin):
    list_display = ["name", "workspace", "version_count", "created_by", "created_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "description", "workspace__slug"]
    autocomplete_fields = ["workspace", "created_by"]
    list_select_related = ["workspace", "created_by"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Module]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, obj: Module) -> int:
        return obj.version_count  # type: ignore[attr-defined]


@admin.register(ModuleVersion)
class ModuleVersionAdmin(ImmutableMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "workspace",
        "number",
        "digest",
        "interface_source",
        "created_by",
        "created_at",
    ]
    list_filter = ["interface_source", "module__workspace"]
    search_fields = ["module__name", "code_digest", "message", "entrypoint"]
    list_select_related = ["module__workspace", "created_by"]
    date_hierarchy = "created_at"

    @admin.display(description="workspace", ordering="module__workspace__slug")
    def workspace(self, obj: ModuleVersion) -> Workspace:
        return obj.module.workspace

    @admin.display(description="code digest", ordering="code_digest")
    def digest(self, obj: ModuleVersion) -> str:
        return short_digest(obj.code_digest)


# --- pipelines -------------------------------------------------------------------------------
@admin.register(Pipeline)
class PipelineAdmin(WorkspaceFixedMixin, admin.ModelAdmin):
    list_display = ["name", "workspace", "version_count", "created_by", "created_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "description", "workspace__slug"]
    autocomplete_fields = ["workspace", "created_by"]
    list_select_related = ["workspace", "created_by"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Pipeline]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, obj: Pipeline) -> int:
        return obj.version_count  # type: ignore[attr-defined]


class PipelineStepInline(ImmutableMixin, admin.TabularInline):
    model = PipelineStep
    extra = 0
    fields = readonly_fields = ("position", "name", "module_version", "params", "inputs")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PipelineStep]:
        return super().get_queryset(request).select_related("module_version__module")


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ImmutableMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "workspace",
        "number",
        "short_digest",
        "parent",
        "created_by",
        "created_at",
    ]
    list_filter = ["pipeline__workspace"]
    search_fields = ["pipeline__name", "digest", "message"]
    list_select_related = ["pipeline__workspace", "parent__pipeline", "created_by"]
    date_hierarchy = "created_at"
    inlines = [PipelineStepInline]

    @admin.display(description="workspace", ordering="pipeline__workspace__slug")
    def workspace(self, obj: PipelineVersion) -> Workspace:
        return obj.pipeline.workspace

    @admin.display(description="digest", ordering="digest")
    def short_digest(self, obj: PipelineVersion) -> str:
        return short_digest(obj.digest)


@admin.register(PipelineStep)
class PipelineStepAdmin(ImmutableMixin, admin.ModelAdmin):
    """Also a list of its own: "where is this module version used" is a search here."""

    list_display = ["name", "pipeline_version", "position", "module_version"]
    list_filter = ["pipeline_version__pipeline__workspace"]
    search_fields = ["name", "module_version__module__name", "pipeline_version__pipeline__name"]
    list_select_related = ["pipeline_version__pipeline", "module_version__module"]


# --- datasets --------------------------------------------------------------------------------
@admin.register(Dataset)
class DatasetAdmin(WorkspaceFixedMixin, admin.ModelAdmin):
    list_display = ["name", "workspace", "version_count", "created_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "description", "workspace__slug"]
    autocomplete_fields = ["workspace"]
    list_select_related = ["workspace"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, obj: Dataset) -> int:
        return obj.version_count  # type: ignore[attr-defined]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ImmutableMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "workspace",
        "number",
        "artifact",
        "size",
        "created_by",
        "created_at",
    ]
    list_filter = ["dataset__workspace"]
    search_fields = ["dataset__name", "message", "artifact__sha256"]
    list_select_related = ["dataset__workspace", "artifact", "created_by"]
    date_hierarchy = "created_at"

    @admin.display(description="workspace", ordering="dataset__workspace__slug")
    def workspace(self, obj: DatasetVersion) -> Workspace:
        return obj.dataset.workspace

    @admin.display(description="size", ordering="artifact__size")
    def size(self, obj: DatasetVersion) -> str:
        return filesizeformat(obj.artifact.size)
