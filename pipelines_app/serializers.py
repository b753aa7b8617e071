"""Output serializers shared by several API endpoints (input serializers nest in their API
class, pipelines_app/api.py and runs_app/api.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines_app.models import DatasetVersion, ModuleVersion, PipelineVersion, Workspace


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="A stable, machine-readable code (invalid, not_found).")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Each field path (steps.train.params.hidden) with its reasons.",
    )


class ErrorSerializer(serializers.Serializer):
    """The one error format of every API response that is not a success."""

    error = ErrorBodySerializer()


class EnumComponentField(serializers.ChoiceField):
    """A choice field documented as an enum component of its own name (RunStatus,
    StepStatus), instead of one named after the field and disambiguated by a hash."""

    component_name = ""
    component_choices: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=self.component_choices, **kwargs)


class EnumComponentFieldExtension(OpenApiSerializerFieldExtension):
    target_class = EnumComponentField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field = self.target
        component = ResolvedComponent(
            name=field.component_name,
            type=ResolvedComponent.SCHEMA,
            object=field.component_name,
            schema={"type": "string", "enum": list(field.component_choices)},
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


def username_of(user: Any) -> str | None:
    return user.get_username() if user is not None else None


class WorkspaceSerializer(serializers.ModelSerializer):
    role = serializers.CharField(
        source="user_role", read_only=True, help_text="The caller's role in the workspace."
    )

    class Meta:
        model = Workspace
        fields = ["slug", "name", "role", "created_at"]


class CreatedBySerializerMixin(serializers.Serializer):
    """`created_by` as a username (its select_related is the caller's query budget)."""

    created_by = serializers.SerializerMethodField()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_created_by(self, obj: Any) -> str | None:
        return username_of(obj.created_by)


class ModuleVersionSerializer(CreatedBySerializerMixin, serializers.ModelSerializer):
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


class PipelineStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    module = serializers.CharField(help_text="name@N")
    params = serializers.JSONField()
    inputs = serializers.DictField(child=serializers.CharField())


class PipelineVersionSerializer(CreatedBySerializerMixin, serializers.ModelSerializer):
    """A pipeline version with its spec (detail, create and clone)."""

    pipeline = serializers.CharField(source="pipeline.name", read_only=True)
    ref = serializers.CharField(read_only=True)
    parent = serializers.SerializerMethodField()  # type: ignore[assignment]
    spec = serializers.JSONField(help_text="The resolved spec: every step's module name@N.")
    steps = serializers.SerializerMethodField()

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
            "created_by",
            "created_at",
        ]

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


class ArtifactSerializer(serializers.Serializer):
    """Content-addressed bytes: what a step produced or a dataset version holds."""

    id = serializers.IntegerField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    media_type = serializers.CharField()
    kind = serializers.ChoiceField(choices=["file", "directory"])
    created_at = serializers.DateTimeField()


class DatasetVersionSerializer(CreatedBySerializerMixin, serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    ref = serializers.CharField(read_only=True, help_text="dataset:NAME@N, as a spec binds it.")
    artifact = ArtifactSerializer()

    class Meta:
        model = DatasetVersion
        fields = ["dataset", "number", "ref", "message", "artifact", "created_by", "created_at"]
