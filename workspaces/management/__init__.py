"""What the design-time commands share: one-line errors and lookups by name."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from workspaces.errors import DomainError
from workspaces.models import Workspace

# A usage or domain error exits with 2 (like argparse's usage errors), not 1 (a crash).
EXIT_REJECTED = 2


def domain_error_line(exc: DomainError) -> str:
    """`code: path: reason; path: reason` on one line (a reason may hold YAML's newlines)."""
    details = "; ".join(
        f"{path}: {reason}" for path, reasons in exc.fields.items() for reason in reasons
    )
    return " ".join(f"{exc.code}: {details or exc.message}".split())


def rejected(exc: DomainError) -> CommandError:
    return CommandError(domain_error_line(exc), returncode=EXIT_REJECTED)


def workspace_named(slug: str) -> Workspace:
    workspace = Workspace.objects.filter(slug=slug).first()
    if workspace is None:
        raise CommandError(f"not_found: no workspace {slug!r}", returncode=EXIT_REJECTED)
    return workspace


def user_named(username: str | None) -> Any:
    if username is None:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"not_found: no user {username!r}", returncode=EXIT_REJECTED)
    return user
