"""Invitations: a link that lets a colleague join a workspace with a role.

An owner makes an invite for a role, valid for some days and some number of uses (the
defaults are settings). Its token is in the link and nowhere else: the database keeps the
token's sha256, so the link is shown once, to the owner who made it (and mailed, when
EMAIL_URL is set and an address was given). Whoever opens the link signs up or signs in,
then joins; joining is a conditional UPDATE (`uses + 1 WHERE uses < max_uses AND open`), so
two people racing for the last use cannot both get it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from workspaces.audit import audit_record
from workspaces.conf import team
from workspaces.errors import DomainError
from workspaces.models import AuditVerb, Invite, Membership, Role, Workspace

MAX_DAYS = 90
MAX_USES = 1000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _check(role: str, days: int, max_uses: int) -> None:
    fields: dict[str, list[str]] = {}
    if role not in Role.values:
        fields["role"] = [f"one of {', '.join(Role.values)}"]
    if not 1 <= days <= MAX_DAYS:
        fields["days"] = [f"from 1 to {MAX_DAYS} days"]
    if not 1 <= max_uses <= MAX_USES:
        fields["max_uses"] = [f"from 1 to {MAX_USES}"]
    if fields:
        raise DomainError("invalid", "The invite cannot be made as asked.", fields)


def invite_create(
    workspace: Workspace,
    role: str,
    *,
    actor: Any,
    days: int | None = None,
    max_uses: int | None = None,
    email: str = "",
) -> tuple[Invite, str]:
    """A new invite and its token (shown once: only its hash is stored)."""
    settings = team()
    days = settings.invite_days if days is None else days
    max_uses = settings.invite_max_uses if max_uses is None else max_uses
    _check(role, days, max_uses)
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        invite = Invite.objects.create(
            workspace=workspace,
            token_hash=token_hash(token),
            role=role,
            email=email.strip(),
            max_uses=max_uses,
            expires_at=timezone.now() + timedelta(days=days),
            created_by=actor,
        )
        audit_record(
            workspace,
            actor,
            AuditVerb.INVITE_CREATED,
            f"invite {invite.pk}",
            {"role": role, "days": days, "max_uses": max_uses, "email": invite.email},
        )
    return invite, token


def invite_mail(invite: Invite, link: str) -> bool:
    """Mail the link to the invite's address when mail is configured (EMAIL_URL); whether
    it was sent. A mail server that refuses raises: the owner still has the link to copy."""
    if not (team().mail and invite.email):
        return False
    inviter = invite.created_by.get_username() if invite.created_by else "Someone"
    send_mail(
        subject=f"{inviter} invites you to {invite.workspace.name} on Stepworks",
        message=(
            f"{inviter} invites you to the workspace {invite.workspace.name} as {invite.role}.\n\n"
            f"Open this link to sign up or sign in, and join:\n{link}\n\n"
            f"The link works until {invite.expires_at:%Y-%m-%d %H:%M} UTC."
        ),
        from_email=None,
        recipient_list=[invite.email],
    )
    return True


def open_invites(workspace: Workspace) -> QuerySet[Invite]:
    """Invites of the workspace that still let someone in, newest first, with their maker."""
    return (
        Invite.objects.filter(
            workspace=workspace,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            uses__lt=F("max_uses"),
        )
        .select_related("created_by")
        .order_by("-created_at", "-id")
    )


def invite_revoke(invite: Invite, *, actor: Any) -> bool:
    """Revoke an open invite; False when it was already revoked."""
    with transaction.atomic():
        done = Invite.objects.filter(pk=invite.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if done:
            audit_record(
                invite.workspace_id,
                actor,
                AuditVerb.INVITE_REVOKED,
                f"invite {invite.pk}",
                {"role": invite.role},
            )
    return bool(done)


def invite_for_token(token: str) -> Invite | None:
    """The open invite this token opens, with its workspace; None when there is none (never
    was, revoked, expired or used up: the page says the same for all four)."""
    if not token or len(token) > 100:
        return None
    invite = (
        Invite.objects.select_related("workspace", "created_by")
        .filter(token_hash=token_hash(token))
        .first()
    )
    if invite is None or invite.revoked_at is not None:
        return None
    if invite.expires_at <= timezone.now() or invite.uses >= invite.max_uses:
        return None
    return invite


def invite_accept(invite: Invite, user: Any) -> tuple[Membership, bool]:
    """Join the invite's workspace as `user`: (membership, joined). Someone already a
    member keeps their role and uses nothing up (joined False)."""
    with transaction.atomic():
        current = Membership.objects.filter(workspace_id=invite.workspace_id, user=user).first()
        if current is not None:
            return current, False
        taken = Invite.objects.filter(
            pk=invite.pk,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
            uses__lt=F("max_uses"),
        ).update(uses=F("uses") + 1)
        if not taken:
            raise DomainError(
                "invite_closed",
                "This invite no longer works (used up, expired or revoked): ask for a new one.",
                status_code=410,
            )
        membership = Membership.objects.create(
            workspace_id=invite.workspace_id, user=user, role=invite.role
        )
        audit_record(
            invite.workspace_id,
            user,
            AuditVerb.INVITE_ACCEPTED,
            user.get_username(),
            {"invite": invite.pk, "role": invite.role},
        )
    return membership, True
