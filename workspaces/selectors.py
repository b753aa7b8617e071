"""Who may see what: the workspaces of a user, and the one way to fetch a workspace object.

Every access helper of every app is one query through `scoped_or_404`: the object, its
workspace and the caller's role in it (`obj.user_role`, also set on `obj.workspace`). An
object of a workspace the caller is not a member of is a 404 (never a 403 that would confirm
it exists); a member whose role is too low for the action gets a 403.
"""

from __future__ import annotations

from functools import reduce
from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import F, Model, QuerySet
from django.http import Http404

from workspaces.models import ROLE_RANK, Membership, Role, Workspace

M = TypeVar("M", bound=Model)


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
    require_role(workspace.user_role, role, slug)  # type: ignore[attr-defined]
    return workspace


def one_or_404(queryset: QuerySet[M], what: str) -> M:
    obj = queryset.first()
    if obj is None:
        raise Http404(f"No such {what}.")
    return obj


def role_allows(workspace: Workspace, role: str) -> bool:
    """Whether the role annotated by get_workspace_for_user is at least `role`."""
    current = getattr(workspace, "user_role", None)
    return current is not None and ROLE_RANK[Role(current)] >= ROLE_RANK[Role(role)]


def membership_list(workspace: Workspace) -> QuerySet[Membership]:
    """A workspace's members with their users, by username."""
    return (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("user__username")
    )


def require_role(user_role: str, role: str, slug: str) -> None:
    """403 unless `user_role` is at least `role`."""
    if ROLE_RANK[Role(user_role)] < ROLE_RANK[Role(role)]:
        raise PermissionDenied(f"This needs the {role} role in workspace {slug}.")


def scoped_or_404(
    queryset: QuerySet[M],
    user: Any,
    slug: str,
    what: str,
    *,
    role: str = Role.VIEWER,
    workspace_path: str = "workspace",
    **lookup: Any,
) -> M:
    """The one object of `queryset` matching `lookup` in workspace `slug`, in one query, with
    the caller's role attached: `obj.user_role`, and on the workspace reached by
    `workspace_path` ("workspace", "module__workspace", "run__workspace", ...)."""
    if not user.is_authenticated:
        raise Http404(f"No such {what}.")
    # One join to the caller's membership: the filter and the annotation share it.
    obj = (
        queryset.select_related(workspace_path)
        .filter(
            **{f"{workspace_path}__slug": slug, f"{workspace_path}__memberships__user": user},
            **lookup,
        )
        .annotate(user_role=F(f"{workspace_path}__memberships__role"))
        .first()
    )
    if obj is None:
        raise Http404(f"No such {what}.")
    user_role: str = obj.user_role
    require_role(user_role, role, slug)
    workspace = reduce(getattr, workspace_path.split("__"), obj)
    workspace.user_role = user_role
    found: M = obj
    return found
