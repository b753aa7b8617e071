"""Design time: step code, pipelines and datasets.

Versions (ModuleVersion, PipelineVersion, DatasetVersion) are immutable: services create
them, nothing updates them, the admin shows them read-only.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from workspaces.models import Workspace


class Module(models.Model):
    """A named line of step code that evolves on its own ("prep", "train")."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="modules")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="module_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class InterfaceSource(models.TextChoices):
    INFERRED = "inferred", "Read from the code"
    EXPLICIT = "explicit", "Given explicitly"


class ModuleVersion(models.Model):
    """An immutable snapshot of a module's files, entrypoint and interface.

    `files` maps a relative path to its text; `interface` is
    {"inputs": [name...], "outputs": [name...], "params": {name: {"type", "default", "required"}}}.
    """

    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    message = models.TextField(blank=True)
    entrypoint = models.CharField(max_length=300)
    files = models.JSONField()
    code_digest = models.CharField(max_length=64)
    interface = models.JSONField()
    interface_source = models.CharField(
        max_length=10, choices=InterfaceSource.choices, default=InterfaceSource.INFERRED
    )
    imports = models.JSONField(default=list)
    warnings = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["module", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["module", "number"], name="module_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="module_version_positive"),
        ]
        indexes = [
            # "which versions share this code" (reuse explanations, push dedup)
            models.Index(fields=["code_digest"], name="module_version_digest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.module.name}@{self.number}"

    @property
    def ref(self) -> str:
        return f"{self.module.name}@{self.number}"


class Pipeline(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="pipelines")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="pipeline_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class VersionOrigin(models.TextChoices):
    USER = "user", "Pushed, cloned or promoted by a person"
    SWEEP = "sweep", "Made by a sweep for a variant"
    WORKBENCH = "workbench", "Tried from the workbench"


class PipelineVersionQuerySet(models.QuerySet["PipelineVersion"]):
    def mainline(self) -> PipelineVersionQuerySet:
        """The versions people made: "latest" is the newest of these, never a sweep's
        variant (a sweep makes one version per module swap it tries) nor a workbench try
        (until it is kept)."""
        return self.filter(origin=VersionOrigin.USER)


class PipelineVersion(models.Model):
    """An immutable, resolved pipeline spec.

    `spec` is the canonical resolved form: {"steps": {name: {"module": "name@N",
    "module_version": id, "params": {...}, "inputs": {input: "step.output" |
    "dataset:NAME@N"}}}}; `source` is the text the user wrote. Its steps are also rows
    (PipelineStep) so "where is this module version used" is one indexed query.
    """

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    message = models.TextField(blank=True)
    source = models.TextField(blank=True)
    spec = models.JSONField()
    digest = models.CharField(max_length=64)
    origin = models.CharField(
        max_length=10, choices=VersionOrigin.choices, default=VersionOrigin.USER
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PipelineVersionQuerySet.as_manager()

    class Meta:
        ordering = ["pipeline", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="pipeline_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="pipeline_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name}@{self.number}"

    @property
    def ref(self) -> str:
        return f"{self.pipeline.name}@{self.number}"


class PipelineStep(models.Model):
    """One step of a pipeline version, as a row (immutable with its version)."""

    pipeline_version = models.ForeignKey(
        PipelineVersion, on_delete=models.CASCADE, related_name="steps"
    )
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField()  # topological order
    module_version = models.ForeignKey(
        ModuleVersion, on_delete=models.PROTECT, related_name="pipeline_steps"
    )
    params = models.JSONField(default=dict)
    inputs = models.JSONField(default=dict)

    class Meta:
        ordering = ["pipeline_version", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline_version", "name"], name="pipeline_step_name_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Dataset(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datasets")
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="dataset_name_unique")
        ]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One immutable version of a dataset: exactly one artifact."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    artifact = models.ForeignKey(
        "artifacts.Artifact", on_delete=models.PROTECT, related_name="dataset_versions"
    )
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="dataset_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="dataset_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name}@{self.number}"

    @property
    def ref(self) -> str:
        return f"dataset:{self.dataset.name}@{self.number}"
