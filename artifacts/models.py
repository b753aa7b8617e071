"""Content-addressed bytes: step outputs and dataset versions. Artifacts are immutable."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from workspaces.models import Workspace


class ArtifactKind(models.TextChoices):
    FILE = "file", "File"
    DIRECTORY = "directory", "Directory"


class ArtifactState(models.TextChoices):
    """Whether the store still holds the bytes. `missing` is never reused nor served; it is
    set when a read or a check finds the bytes gone (check_artifacts --repair deletes
    corrupt bytes, so they are missing too), and cleared when they are stored again."""

    PRESENT = "present", "Present"
    MISSING = "missing", "Missing"


class Artifact(models.Model):
    """Content-addressed bytes. A directory's bytes are its JSON manifest of files.

    The bytes are stored once per sha256 (storage name derives from it); the row is per
    workspace, so every read stays scoped.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="artifacts")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    media_type = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=ArtifactKind.choices, default=ArtifactKind.FILE)
    storage_name = models.CharField(max_length=300)
    state = models.CharField(
        max_length=10, choices=ArtifactState.choices, default=ArtifactState.PRESENT
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Last stored or released: the collector leaves an unreferenced row alone for a grace
    # period after this (a step's outputs are stored before its success refers to them).
    touched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "runs_app_artifact"  # moved from runs_app; the table kept its name
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "sha256", "media_type", "kind"], name="artifact_unique"
            ),
            models.CheckConstraint(condition=Q(size__gte=0), name="artifact_size_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.media_type})"


class ArtifactMember(models.Model):
    """A file of a directory artifact (a line of its manifest, stored as its own row): the
    collector keeps it while the directory's row is kept, and may take it once that goes."""

    directory = models.ForeignKey(Artifact, on_delete=models.CASCADE, related_name="+")
    # PROTECT, like every other reference to an artifact: a held file's row cannot go.
    member = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")

    class Meta:
        db_table = "artifacts_artifact_member"
        constraints = [
            models.UniqueConstraint(fields=["directory", "member"], name="artifact_member_unique")
        ]
        indexes = [models.Index(fields=["member"], name="artifact_member_member_idx")]

    def __str__(self) -> str:
        return f"{self.member_id} in {self.directory_id}"


class DeletedArtifact(models.Model):
    """A tombstone: the collector deleted this workspace's artifact with this digest, so a
    link to it answers 410 Gone (with when), not a 404 that reads like a typo."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    sha256 = models.CharField(max_length=64)
    deleted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "artifacts_deleted_artifact"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "sha256"], name="deleted_artifact_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} (deleted)"
