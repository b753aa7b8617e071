"""Writes of workspaces and memberships; each one `transaction.atomic()`."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction

from workspaces.errors import DomainError
from workspaces.models import Membership, Role, Workspace

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # Workspace.slug: in every URL
SLUG_HELP = "lowercase letters, digits and '-', up to 64, starting with a letter or digit"


def workspace_create(slug: str, name: str, owner: Any) -> Workspace:
    """A new workspace with `owner` as its first owner."""
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        raise DomainError("invalid_name", f"{slug!r} is not a valid slug.", {"slug": [SLUG_HELP]})
    if not isinstance(name, str) or not name.strip():
        raise DomainError("invalid_name", "A workspace needs a name.", {"name": ["required"]})
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: only the slug's uniqueness is caught
                workspace = Workspace.objects.create(slug=slug, name=name.strip())
        except IntegrityError:
            raise DomainError(
                "conflict",
                f"A workspace with slug {slug!r} already exists.",
                {"slug": ["already taken"]},
                status_code=409,
            ) from None
        Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
    return workspace


def membership_set(workspace: Workspace, user: Any, role: str | None) -> Membership | None:
    """Give `user` `role` in the workspace (None removes them); the last owner stays."""
    if role is not None and role not in Role.values:
        raise DomainError(
            "invalid_role",
            f"{role!r} is not a role.",
            {"role": [f"one of {', '.join(Role.values)}"]},
        )
    with transaction.atomic():
        # Locking the workspace row serialises concurrent demotions of different owners.
        Workspace.objects.select_for_update().get(pk=workspace.pk)
        current = Membership.objects.filter(workspace=workspace, user=user).first()
        if current is not None and current.role == Role.OWNER and role != Role.OWNER:
            owners = Membership.objects.filter(workspace=workspace, role=Role.OWNER).count()
            if owners <= 1:
                raise DomainError(
                    "last_owner",
                    "A workspace keeps at least one owner: make someone else owner first.",
                    {"role": ["this is the workspace's last owner"]},
                    status_code=409,
                )
        if role is None:
            if current is not None:
                current.delete()
            return None
        if current is None:
            return Membership.objects.create(workspace=workspace, user=user, role=role)
        if current.role != role:
            current.role = role
            current.save(update_fields=["role"])
        return current
