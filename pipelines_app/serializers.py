"""Output serializers shared by several API endpoints (input serializers nest in their API
class). The shared conventions are in workspaces/serializers.py."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines_app.models import DatasetVersion, ModuleVersion, PipelineVersion
from pipelines_app.selectors import newer_modules
from workspaces.serializers import CreatedBySerializerMixin


class ModuleVersionSerializer(CreatedBySerializerMixin, serializers.ModelSerializer[ModuleVersion]):
    """A module version with its files and interface (detail and create)."""

    module = serializers.CharField(source="module.name", read_only=True)
    ref = serializers.CharField(read_only=True, help_text="name@N, as a spec refers to it.")
    parent = serializers.SerializerMethodField()  # type: ignore[assignment]
    files = serializers.DictField(child=serializers.CharField(), help_text="{path: text}")
    interface = serializers.JSONField(
        help_text='{"inputs": [...], "outputs": [...], "params": {name: {"type", "default", '
        '"required"}}}'
    )
    imports = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = ModuleVersion
        fields = [
            "module",
            "number",
            "ref",
            "parent",
            "message",
            "entrypoint",
            "code_digest",
            "interface",
            "interface_source",
            "imports",
            "warnings",
            "files",
            "created_by",
            "created_at",
        ]

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_parent(self, obj: ModuleVersion) -> int | None:
        return obj.parent.number if obj.parent_id and obj.parent else None


class PipelineStepSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    module = serializers.CharField(help_text="name@N")
    params = serializers.JSONField()
    inputs = serializers.DictField(child=serializers.CharField())


class ModuleVersionPushedSerializer(ModuleVersionSerializer):
    """A pushed module version, with the pipeline versions its interface would break."""

    breaks = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text='[{"pipeline": "name@N", "steps": [{"step", "uses", "problems"}]}]: the '
        "latest version of each pipeline using this module that would not fit it.",
    )

    class Meta(ModuleVersionSerializer.Meta):
        fields = [*ModuleVersionSerializer.Meta.fields, "breaks"]


NEWER_MODULES_SCHEMA = {
    "type": "array",
    "description": "Steps whose module has a newer version than the one pinned "
    "(POST .../update/ makes a version that pins them).",
    "items": {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("step", "module", "pinned", "latest")},
    },
}


class PipelineVersionSerializer(
    CreatedBySerializerMixin, serializers.ModelSerializer[PipelineVersion]
):
    """A pipeline version with its spec (detail, create and clone)."""

    pipeline = serializers.CharField(source="pipeline.name", read_only=True)
    ref = serializers.CharField(read_only=True)
    parent = serializers.SerializerMethodField()  # type: ignore[assignment]
    spec = serializers.JSONField(help_text="The resolved spec: every step's module name@N.")
    steps = serializers.SerializerMethodField()
    newer_modules = serializers.SerializerMethodField()

    class Meta:
        model = PipelineVersion
        fields = [
            "pipeline",
            "number",
            "ref",
            "parent",
            "origin",
            "message",
            "digest",
            "source",
            "spec",
            "steps",
            "newer_modules",
            "created_by",
            "created_at",
        ]

    @extend_schema_field(NEWER_MODULES_SCHEMA)
    def get_newer_modules(self, obj: PipelineVersion) -> list[dict[str, Any]]:
        return newer_modules(obj)

    @extend_schema_field({"type": "string", "nullable": True, "description": "name@N"})
    def get_parent(self, obj: PipelineVersion) -> str | None:
        return obj.parent.ref if obj.parent_id and obj.parent else None

    @extend_schema_field(PipelineStepSerializer(many=True))
    def get_steps(self, obj: PipelineVersion) -> list[dict[str, Any]]:
        """The steps in topological order, read from the spec (no query)."""
        from pipelines_app.specs import topological_order

        steps = obj.spec.get("steps", {})
        return [
            {
                "name": name,
                "module": steps[name]["module"],
                "params": steps[name].get("params", {}),
                "inputs": steps[name].get("inputs", {}),
            }
            for name in topological_order(steps)
        ]


class ArtifactSerializer(serializers.Serializer[Any]):
    """Content-addressed bytes: what a step produced or a dataset version holds."""

    id = serializers.IntegerField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    media_type = serializers.CharField()
    kind = serializers.ChoiceField(choices=["file", "directory"])
    created_at = serializers.DateTimeField()


class DatasetVersionSerializer(
    CreatedBySerializerMixin, serializers.ModelSerializer[DatasetVersion]
):
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    ref = serializers.CharField(read_only=True, help_text="dataset:NAME@N, as a spec binds it.")
    artifact = ArtifactSerializer()

    class Meta:
        model = DatasetVersion
        fields = ["dataset", "number", "ref", "message", "artifact", "created_by", "created_at"]
