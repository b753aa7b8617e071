"""Output serializers every API module shares: the error format, enum components, the
workspace, and `created_by` as a username."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from workspaces.models import Workspace


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="A stable, machine-readable code (invalid, not_found).")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Each field path (steps.train.params.hidden) with its reasons.",
    )


class ErrorSerializer(serializers.Serializer[Any]):
    """The one error format of every API response that is not a success."""

    error = ErrorBodySerializer()


class EnumComponentField(serializers.ChoiceField):
    """A choice field documented as an enum component of its own name (RunStatus,
    StepStatus), instead of one named after the field and disambiguated by a hash."""

    component_name = ""
    component_choices: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=self.component_choices, **kwargs)


class EnumComponentFieldExtension(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = EnumComponentField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field = self.target
        component = ResolvedComponent(  # type: ignore[no-untyped-call]
            name=field.component_name,
            type=ResolvedComponent.SCHEMA,
            object=field.component_name,
            schema={"type": "string", "enum": list(field.component_choices)},
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


def username_of(user: Any) -> str | None:
    return user.get_username() if user is not None else None


class WorkspaceSerializer(serializers.ModelSerializer[Workspace]):
    role = serializers.CharField(
        source="user_role", read_only=True, help_text="The caller's role in the workspace."
    )

    class Meta:
        model = Workspace
        fields = ["slug", "name", "role", "created_at"]


class CreatedBySerializerMixin(serializers.Serializer[Any]):
    """`created_by` as a username (its select_related is the caller's query budget)."""

    created_by = serializers.SerializerMethodField()

    @extend_schema_field({"type": "string", "nullable": True})
    def get_created_by(self, obj: Any) -> str | None:
        return username_of(obj.created_by)
