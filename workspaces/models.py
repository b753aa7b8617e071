"""Workspaces and who is in them: every other object belongs to exactly one workspace."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from knox.models import AbstractAuthToken


class Workspace(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "pipelines_app_workspace"  # moved from pipelines_app; the table kept its name
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    EDITOR = "editor", "Editor"
    OWNER = "owner", "Owner"


# What each role may do; a higher role may do everything a lower one may.
ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.OWNER: 2}


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "pipelines_app_membership"
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="one_membership_per_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    def allows(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]


class ApiToken(AbstractAuthToken):
    """A named API token of a user (django-rest-knox): only the token's sha512 digest and
    its first 15 characters (to find the row) are stored, so a database dump holds no
    usable token. The key itself is shown once, when it is made."""

    name = models.CharField(max_length=100)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_key[:6]}…)"


class Invite(models.Model):
    """A link that lets whoever opens it join a workspace with a role, until it expires, is
    used `max_uses` times or is revoked. Only the sha256 of its token is stored: the link is
    shown once, to the owner who made it (and mailed, when mail is configured)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invites")
    token_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    email = models.EmailField(blank=True)  # whom it was mailed to, if anyone
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(role__in=Role.values), name="invite_role_valid"),
            models.CheckConstraint(condition=Q(max_uses__gte=1), name="invite_max_uses_positive"),
            # accepting is a conditional UPDATE (uses + 1 WHERE uses < max_uses): never past it
            models.CheckConstraint(condition=Q(uses__lte=F("max_uses")), name="invite_uses_capped"),
        ]

    def __str__(self) -> str:
        return f"invite to {self.workspace} as {self.role}"


class AuditVerb(models.TextChoices):
    WORKSPACE_CREATED = "workspace.created", "Workspace created"
    WORKSPACE_RENAMED = "workspace.renamed", "Workspace renamed"
    MEMBER_ADDED = "member.added", "Member added"
    MEMBER_ROLE_CHANGED = "member.role_changed", "Member's role changed"
    MEMBER_REMOVED = "member.removed", "Member removed"
    INVITE_CREATED = "invite.created", "Invite created"
    INVITE_REVOKED = "invite.revoked", "Invite revoked"
    INVITE_ACCEPTED = "invite.accepted", "Invite accepted"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    RUN_STARTED = "run.started", "Run started"
    RUN_CANCELED = "run.canceled", "Run canceled"
    RUNS_DELETED = "runs.deleted", "Runs deleted"
    SWEEP_CREATED = "sweep.created", "Sweep created"
    SWEEP_EXTENDED = "sweep.extended", "Sweep extended"
    SWEEP_CANCELED = "sweep.canceled", "Sweep canceled"
    SWEEP_PROMOTED = "sweep.promoted", "Sweep variant promoted"
    RETENTION_CHANGED = "retention.changed", "Retention policy changed"
    RETENTION_APPLIED = "retention.applied", "Retention applied"
    ARTIFACT_DOWNLOADED = "artifact.downloaded", "Artifact downloaded"
    RUN_ZIP_DOWNLOADED = "run.zip_downloaded", "Run outputs downloaded (zip)"
    DATASET_PUSHED = "dataset.pushed", "Dataset version pushed"
    WEBHOOK_CREATED = "webhook.created", "Webhook created"
    WEBHOOK_DELETED = "webhook.deleted", "Webhook deleted"


class AuditEntry(models.Model):
    """Who did what in a workspace, and when: written once by `audit_record`, never updated
    (the admin shows these rows read-only, and nothing else writes them). `actor_name` keeps
    the name when the user is deleted; `target` names the object in words ("run 12",
    "vera"), `data` holds the details (old and new role, counts, sizes)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    verb = models.CharField(max_length=30, choices=AuditVerb.choices)
    target = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(verb__in=AuditVerb.values), name="audit_verb_valid")
        ]
        indexes = [
            # the audit page and API: a workspace's entries, newest first (filters narrow it)
            models.Index(fields=["workspace", "-at"], name="audit_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.verb} {self.target}"
