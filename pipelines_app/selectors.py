"""Workspace-scoped reads: the one access helper per object type.

Nothing else fetches a workspace object by id. An object of a workspace the user is not a
member of is a 404 (never a 403 that would confirm it exists); a member whose role is too low
for the action gets a 403.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import Http404

from pipelines_app.models import (
    ROLE_RANK,
    Dataset,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineVersion,
    Role,
    Workspace,
)


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
