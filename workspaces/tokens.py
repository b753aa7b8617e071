"""API tokens: made, listed, used and revoked (django-rest-knox underneath).

A token is `sw_` and 64 hex characters. The database keeps its sha512 digest and its first
15 characters (knox's lookup key), never the token: a dump of the table authenticates
nobody. A user has any number of named tokens, each with an expiry (or none) and the time
it was last used. A password change or a deactivated account revokes all of the user's
tokens (the receivers below); Django itself ends the user's other sessions on a password
change (their session hash no longer matches) and refuses inactive users.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.utils import timezone

from workspaces.audit import audit_record_for_user
from workspaces.errors import DomainError
from workspaces.models import ApiToken, AuditVerb

NAME_MAX = 100
# What the tokens page offers; the API and the command take any number of days (0: never).
EXPIRY_CHOICES = ((7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "1 year"), (0, "never"))
DEFAULT_DAYS = 90


def token_create(user: Any, name: str, days: int = DEFAULT_DAYS) -> tuple[ApiToken, str]:
    """A new token for `user`: the row and the key, which is never shown again."""
    name = name.strip()
    if not name:
        _invalid("name", "give the token a name (say where it will be used)")
    if len(name) > NAME_MAX:
        _invalid("name", f"at most {NAME_MAX} characters")
    if days < 0:
        _invalid("days", "0 (never expires) or more")
    expiry = timedelta(days=days) if days else None
    token, key = ApiToken.objects.create(user=user, expiry=expiry, name=name)
    audit_record_for_user(
        user, AuditVerb.TOKEN_CREATED, f"token {name}", {"prefix": key[:9], "days": days}
    )
    return token, key


def _invalid(field: str, reason: str) -> None:
    raise DomainError("invalid", f"{field}: {reason}", fields={field: [reason]})


def tokens_of(user: Any) -> list[ApiToken]:
    """The user's tokens that still work, newest first."""
    now = timezone.now()
    return [t for t in ApiToken.objects.filter(user=user) if t.expiry is None or t.expiry > now]


def token_revoke(user: Any, digest: str) -> bool:
    """Revoke one of the user's tokens; False when they have no such token."""
    token = ApiToken.objects.filter(user=user, digest=digest).first()
    if token is None:
        return False
    deleted, _ = ApiToken.objects.filter(pk=token.pk).delete()
    if deleted:
        audit_record_for_user(
            user, AuditVerb.TOKEN_REVOKED, f"token {token.name}", {"prefix": token.token_key[:9]}
        )
    return deleted > 0


def tokens_revoke_all(user: Any, why: str = "revoked all") -> int:
    names = list(ApiToken.objects.filter(user=user).values_list("name", flat=True))
    deleted, _ = ApiToken.objects.filter(user=user).delete()
    if deleted:
        audit_record_for_user(
            user, AuditVerb.TOKEN_REVOKED, f"{deleted} token(s)", {"names": names, "why": why}
        )
    return deleted


@receiver(pre_save, sender=get_user_model(), dispatch_uid="tokens-revoked-with-password")
def _revoke_on_password_change_or_deactivation(
    sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    if raw or instance.pk is None:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # a login's last_login, say: no query
    before = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["password"] != instance.password:
        tokens_revoke_all(instance, "password changed")
    elif before["is_active"] and not instance.is_active:
        tokens_revoke_all(instance, "account deactivated")
