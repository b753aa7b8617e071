"""Admin console for design-time rows.

Versions (ModuleVersion, PipelineVersion with its steps, DatasetVersion) are immutable and
made by services, which compute their digests: here they are view-only, never added, never
deleted (runs, sweeps and specs refer to them, some only by `name@N` inside JSON that no
foreign key guards). As a consequence the admin refuses to delete a module, pipeline,
dataset or workspace that has versions: its history would go with it.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
)
from workspaces.admin import ImmutableMixin, WorkspaceFixedMixin, short_digest
from workspaces.models import Workspace

# Django's admin classes can't be subscripted at run time (only django-stubs-ext's monkeypatch
# would allow it): the type checker sees each base with its model, the interpreter without.


# --- modules -----------------------------------------------------------------------------------
@admin.register(Module)
class ModuleAdmin(WorkspaceFixedMixin, admin.ModelAdmin[Module]):
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
        count: int = obj.version_count  # type: ignore[attr-defined]
        return count


@admin.register(ModuleVersion)
class ModuleVersionAdmin(ImmutableMixin, admin.ModelAdmin[ModuleVersion]):
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
class PipelineAdmin(WorkspaceFixedMixin, admin.ModelAdmin[Pipeline]):
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
        count: int = obj.version_count  # type: ignore[attr-defined]
        return count


class PipelineStepInline(ImmutableMixin, admin.TabularInline[PipelineStep, PipelineVersion]):
    model = PipelineStep
    extra = 0
    fields = readonly_fields = ("position", "name", "module_version", "params", "inputs")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PipelineStep]:
        return super().get_queryset(request).select_related("module_version__module")


@admin.register(PipelineVersion)
class PipelineVersionAdmin(ImmutableMixin, admin.ModelAdmin[PipelineVersion]):
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
class PipelineStepAdmin(ImmutableMixin, admin.ModelAdmin[PipelineStep]):
    """Also a list of its own: "where is this module version used" is a search here."""

    list_display = ["name", "pipeline_version", "position", "module_version"]
    list_filter = ["pipeline_version__pipeline__workspace"]
    search_fields = ["name", "module_version__module__name", "pipeline_version__pipeline__name"]
    list_select_related = ["pipeline_version__pipeline", "module_version__module"]


# --- datasets --------------------------------------------------------------------------------
@admin.register(Dataset)
class DatasetAdmin(WorkspaceFixedMixin, admin.ModelAdmin[Dataset]):
    list_display = ["name", "workspace", "version_count", "created_at"]
    list_filter = ["workspace"]
    search_fields = ["name", "description", "workspace__slug"]
    autocomplete_fields = ["workspace"]
    list_select_related = ["workspace"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return super().get_queryset(request).annotate(version_count=Count("versions"))

    @admin.display(description="versions", ordering="version_count")
    def version_count(self, obj: Dataset) -> int:
        count: int = obj.version_count  # type: ignore[attr-defined]
        return count


@admin.register(DatasetVersion)
class DatasetVersionAdmin(ImmutableMixin, admin.ModelAdmin[DatasetVersion]):
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
