"""The audit trail: who did what in a workspace, and when.

`audit_record` is the one writer of AuditEntry rows; the services and views of every app call
it for the acts a team wants to trace (members and roles, invites, tokens, runs started and
canceled, sweeps, promotions, deletions, retention, downloads). Rows are never updated: no
function here or elsewhere changes one, and the admin shows them read-only.

API tokens belong to a user, not to a workspace: their creation and revocation are recorded
in every workspace the user is a member of at that moment (each workspace's owners see what
their members did with the keys that reach their data).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from workspaces.models import AuditEntry, AuditVerb, Membership, Workspace


def _actor(user: Any) -> tuple[Any, str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return None, ""
    return user, user.get_username()


def audit_record(
    workspace: Workspace | int,
    actor: Any,
    verb: AuditVerb | str,
    target: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Record one act. `actor` is the user who did it (None or anonymous: the system)."""
    user, name = _actor(actor)
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    return AuditEntry.objects.create(
        workspace_id=workspace_id,
        actor=user,
        actor_name=name,
        verb=AuditVerb(verb),
        target=target[:200],
        data=data or {},
    )


def audit_record_for_user(
    user: Any, verb: AuditVerb | str, target: str = "", data: dict[str, Any] | None = None
) -> int:
    """Record an act on the user's own things (a token) in every workspace they are in."""
    actor, name = _actor(user)
    if actor is None:
        return 0
    workspace_ids = Membership.objects.filter(user=actor).values_list("workspace_id", flat=True)
    entries = [
        AuditEntry(
            workspace_id=workspace_id,
            actor=actor,
            actor_name=name,
            verb=AuditVerb(verb),
            target=target[:200],
            data=data or {},
        )
        for workspace_id in workspace_ids
    ]
    AuditEntry.objects.bulk_create(entries)
    return len(entries)


def audit_list(workspace: Workspace) -> QuerySet[AuditEntry]:
    """A workspace's audit entries, newest first (one query; the actor's name is on the row)."""
    return AuditEntry.objects.filter(workspace=workspace).order_by("-at", "-id")
