"""Writes of workspaces and memberships; each one `transaction.atomic()`, each recorded in
the workspace's audit trail."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from workspaces.audit import audit_record
from workspaces.conf import team
from workspaces.errors import DomainError, text_problem
from workspaces.models import AuditVerb, Membership, Role, Workspace

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # Workspace.slug: in every URL
SLUG_HELP = "lowercase letters, digits and '-', up to 64, starting with a letter or digit"


RESERVED_SLUGS = ("create", "new")  # /api/v1/workspaces/create/, /workspaces/new/


def workspace_creation_allowed(user: Any) -> bool:
    """Whether `user` may make workspaces: anyone signed in, or only staff when
    STEPWORKS_WORKSPACE_CREATION=staff."""
    if not getattr(user, "is_authenticated", False):
        return False
    return team().workspace_creation != "staff" or bool(user.is_staff)


def workspace_create(slug: str, name: str, owner: Any, *, check_policy: bool = True) -> Workspace:
    """A new workspace with `owner` as its first owner (`check_policy=False`: the server's
    own commands, which may make one for anybody)."""
    if check_policy and not workspace_creation_allowed(owner):
        raise DomainError(
            "forbidden",
            "Only staff may create workspaces on this server (STEPWORKS_WORKSPACE_CREATION).",
            status_code=403,
        )
    if isinstance(slug, str) and slug in RESERVED_SLUGS:
        raise DomainError("invalid_name", f"{slug!r} is reserved.", {"slug": ["reserved"]})
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
        audit_record(workspace, owner, AuditVerb.WORKSPACE_CREATED, slug, {"name": workspace.name})
    return workspace


def workspace_rename(workspace: Workspace, name: str, *, actor: Any = None) -> Workspace:
    """Give the workspace a new display name (its slug, in every URL, stays)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise DomainError("invalid_name", "A workspace needs a name.", {"name": ["required"]})
    problem = text_problem(name)
    if problem:
        raise DomainError("invalid_name", "That name cannot be stored.", {"name": [problem]})
    if len(name) > 200:
        raise DomainError("invalid_name", "That name is too long.", {"name": ["at most 200"]})
    old = workspace.name
    if name == old:
        return workspace
    with transaction.atomic():
        Workspace.objects.filter(pk=workspace.pk).update(name=name)
        audit_record(
            workspace, actor, AuditVerb.WORKSPACE_RENAMED, workspace.slug, {"old": old, "new": name}
        )
    workspace.name = name
    return workspace


def user_named(identifier: str, field: str = "username") -> Any:
    """The user with this username, or else this email address; a DomainError naming
    `field` when there is none (or several share the address)."""
    identifier = (identifier or "").strip()
    if text_problem(identifier) or len(identifier) > 254:
        raise DomainError("invalid", "No such user.", {field: ["not a username or an email"]})
    users = get_user_model().objects
    user = users.filter(username=identifier).first() if identifier else None
    if user is None and "@" in identifier:
        matches = list(users.filter(email__iexact=identifier, is_active=True)[:2])
        if len(matches) > 1:
            raise DomainError(
                "invalid",
                "Several users have that email address.",
                {field: [f"several users have {identifier!r}: give the username"]},
            )
        user = matches[0] if matches else None
    if user is None:
        raise DomainError(
            "invalid", "No such user.", {field: [f"no user with the name or email {identifier!r}"]}
        )
    return user


def membership_set(
    workspace: Workspace, user: Any, role: str | None, *, actor: Any = None
) -> Membership | None:
    """Give `user` `role` in the workspace (None removes them); the last owner stays. The
    change (added, role changed, removed) goes into the audit trail, by `actor`."""
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
        target = user.get_username()
        if role is None:
            if current is not None:
                current.delete()
                audit_record(
                    workspace, actor, AuditVerb.MEMBER_REMOVED, target, {"role": current.role}
                )
            return None
        if current is None:
            created = Membership.objects.create(workspace=workspace, user=user, role=role)
            audit_record(workspace, actor, AuditVerb.MEMBER_ADDED, target, {"role": role})
            return created
        if current.role != role:
            old = current.role
            current.role = role
            current.save(update_fields=["role"])
            audit_record(
                workspace, actor, AuditVerb.MEMBER_ROLE_CHANGED, target, {"old": old, "new": role}
            )
        return current
