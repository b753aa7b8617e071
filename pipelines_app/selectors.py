"""Workspace-scoped reads: the one access helper per object type.

Nothing else fetches a workspace object by id. An object of a workspace the user is not a
member of is a 404 (never a 403 that would confirm it exists); a member whose role is too low
for the action gets a 403.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from pipelines_app.models import (
    ROLE_RANK,
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
    Role,
    Workspace,
)
from runs_app.models import PipelineRun, RunStatus

# "Running now" on the workspace home: runs not yet finished.
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)


def workspaces_for_user(user: Any) -> QuerySet[Workspace]:
    """The workspaces a user is a member of, each annotated with `user_role`."""
    if not user.is_authenticated:
        return Workspace.objects.none()
    return Workspace.objects.filter(memberships__user=user).annotate(
        user_role=F("memberships__role")
    )


def get_workspace_for_user(user: Any, slug: str, role: str = Role.VIEWER) -> Workspace:
    """The workspace `slug` if the user is in it with at least `role`; else 404 / 403."""
    workspace = workspaces_for_user(user).filter(slug=slug).first()
    if workspace is None:
        raise Http404("No such workspace.")
    if ROLE_RANK[Role(workspace.user_role)] < ROLE_RANK[Role(role)]:  # type: ignore[attr-defined]
        raise PermissionDenied(f"This needs the {role} role in workspace {slug}.")
    return workspace


def _one(queryset: QuerySet[Any], what: str) -> Any:
    obj = queryset.first()
    if obj is None:
        raise Http404(f"No such {what}.")
    return obj


def get_module_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Module:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(Module.objects.filter(workspace=workspace, name=name), "module")


def get_module_version_for_user(
    user: Any, slug: str, name: str, number: int, role: str = Role.VIEWER
) -> ModuleVersion:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(
        ModuleVersion.objects.select_related("module", "parent__module").filter(
            module__workspace=workspace, module__name=name, number=number
        ),
        "module version",
    )


def get_pipeline_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Pipeline:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(Pipeline.objects.filter(workspace=workspace, name=name), "pipeline")


def get_pipeline_version_for_user(
    user: Any, slug: str, name: str, number: int, role: str = Role.VIEWER
) -> PipelineVersion:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(
        PipelineVersion.objects.select_related("pipeline", "parent").filter(
            pipeline__workspace=workspace, pipeline__name=name, number=number
        ),
        "pipeline version",
    )


def get_dataset_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Dataset:
    workspace = get_workspace_for_user(user, slug, role)
    return _one(Dataset.objects.filter(workspace=workspace, name=name), "dataset")


# --- list reads for the pages ------------------------------------------------------------------
# Each list states its joins and annotations, so a page costs the same few queries for 1 row
# or for 50 (tests pin the counts). Callers pass a workspace already fetched through
# get_workspace_for_user: these never check access themselves.


def module_list(workspace: Workspace) -> QuerySet[Module]:
    """The workspace's modules, each with `version_count` and `latest_number` (None if none)."""
    return Module.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"), latest_number=Max("versions__number")
    )


def module_version_list(module: Module) -> QuerySet[ModuleVersion]:
    """A module's versions, newest first, with `parent_number`; files and interface deferred
    (a list shows neither, and they are the large columns)."""
    return (
        ModuleVersion.objects.filter(module=module)
        .select_related("created_by")
        .annotate(parent_number=F("parent__number"))
        .defer("files", "interface", "imports", "warnings")
        .order_by("-number")
    )


def pipeline_list(workspace: Workspace) -> QuerySet[Pipeline]:
    """The workspace's pipelines, each with `version_count` and `latest_number`."""
    return Pipeline.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"), latest_number=Max("versions__number")
    )


def pipeline_version_list(pipeline: Pipeline) -> QuerySet[PipelineVersion]:
    """A pipeline's versions, newest first, with `parent_number` and `parent_pipeline` (a
    parent may belong to another pipeline when a version was cloned from it)."""
    return (
        PipelineVersion.objects.filter(pipeline=pipeline)
        .select_related("created_by")
        .annotate(
            parent_number=F("parent__number"),
            parent_pipeline=F("parent__pipeline__name"),
            step_count=Count("steps"),
        )
        .defer("source", "spec")
        .order_by("-number")
    )


def pipeline_step_list(version: PipelineVersion) -> QuerySet[PipelineStep]:
    """A version's steps in topological order, with their module versions (files deferred)."""
    return (
        PipelineStep.objects.filter(pipeline_version=version)
        .select_related("module_version__module")
        .defer("module_version__files", "module_version__interface")
        .order_by("position")
    )


def dataset_list(workspace: Workspace) -> QuerySet[Dataset]:
    """The workspace's datasets with `version_count`, `latest_number` and `latest_size`."""
    latest = DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by("-number")
    return Dataset.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"),
        latest_number=Max("versions__number"),
        latest_size=Subquery(latest.values("artifact__size")[:1]),
    )


def workspace_run_list(workspace: Workspace) -> QuerySet[PipelineRun]:
    """The workspace's runs, newest first (index run_recent_idx), with what a row shows."""
    return (
        PipelineRun.objects.filter(workspace=workspace)
        .select_related("pipeline_version__pipeline", "created_by")
        .defer("pipeline_version__spec", "pipeline_version__source")
        .order_by("-created_at", "-id")
    )


def workspace_run_counts(workspace: Workspace) -> dict[str, int]:
    """{"total": runs, "active": runs pending or running}, in one query."""
    return PipelineRun.objects.filter(workspace=workspace).aggregate(
        total=Count("id"),
        active=Count("id", filter=Q(status__in=ACTIVE_RUN_STATUSES)),
    )


def pipeline_version_by_ref(workspace: Workspace, ref: str) -> PipelineVersion:
    """`name`, `name@latest` or `name@N` in a workspace the caller already holds; 404 else."""
    name, _, number = ref.partition("@")
    versions = PipelineVersion.objects.select_related("pipeline").filter(
        pipeline__workspace=workspace, pipeline__name=name
    )
    if number in ("", "latest"):
        return _one(versions.order_by("-number"), "pipeline version")
    if not number.isdigit():
        raise Http404(f"{ref!r} is not NAME, NAME@latest or NAME@N.")
    return _one(versions.filter(number=int(number)), "pipeline version")
