"""Output serializers shared by several run-time API endpoints (input serializers nest in
their API class in runs_app/api.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines_app.serializers import ArtifactSerializer
from runs_app.models import PipelineRun, RunStatus, StepRun, StepStatus
from workspaces.serializers import EnumComponentField, username_of


class StepRefSerializer(serializers.Serializer[Any]):
    """Another run's step (the one a step reused or follows)."""

    run = serializers.IntegerField()
    step = serializers.CharField()


class StepOutputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    artifact = ArtifactSerializer()


class RunStatusField(EnumComponentField):
    component_name = "RunStatus"
    component_choices = tuple(RunStatus.values)


class StepStatusField(EnumComponentField):
    component_name = "StepStatus"
    component_choices = tuple(StepStatus.values)


def _step_ref(step: StepRun | None) -> dict[str, Any] | None:
    return {"run": step.run_id, "step": step.name} if step is not None else None


class RunSerializer(serializers.ModelSerializer[PipelineRun]):
    """A run as lists and details show it (select_related pipeline_version__pipeline and
    created_by)."""

    status = RunStatusField()
    pipeline = serializers.CharField(source="pipeline_version.pipeline.name")
    version = serializers.IntegerField(source="pipeline_version.number")
    params = serializers.JSONField(
        source="param_overrides", help_text='The overrides it started with: {"step.param": value}'
    )
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = PipelineRun
        fields = [
            "id",
            "status",
            "pipeline",
            "version",
            "params",
            "reuse",
            "failure_reason",
            "cancel_requested",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "cloned_from",
            "rerun_of",
            "sweep",
            "variant",
            "archived_at",
            "pinned",
            "note",
        ]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_created_by(self, obj: PipelineRun) -> str | None:
        return username_of(obj.created_by)


class StepRunSerializer(serializers.ModelSerializer[StepRun]):
    """A step of a run (select_related module_version__module, reused_from, following;
    prefetch outputs__artifact)."""

    status = StepStatusField()
    module = serializers.CharField(source="module_version.ref", help_text="name@N")
    reused_from = serializers.SerializerMethodField()
    following = serializers.SerializerMethodField()
    duration_s = serializers.FloatField(allow_null=True)
    outputs = StepOutputSerializer(many=True)

    class Meta:
        model = StepRun
        fields = [
            "name",
            "position",
            "status",
            "module",
            "params",
            "attempt",
            "max_attempts",
            "timeout_s",
            "retries",
            "retried",
            "retry_on",
            "queue",
            "resources",
            "cache_key",
            "reused_from",
            "following",
            "failure_reason",
            "failure_message",
            "worker",
            "queued_at",
            "started_at",
            "finished_at",
            "duration_s",
            "outputs",
        ]

    @extend_schema_field(StepRefSerializer(allow_null=True))
    def get_reused_from(self, obj: StepRun) -> dict[str, Any] | None:
        return _step_ref(obj.reused_from)

    @extend_schema_field(StepRefSerializer(allow_null=True))
    def get_following(self, obj: StepRun) -> dict[str, Any] | None:
        return _step_ref(obj.following)


class RunDetailSerializer(RunSerializer):
    """A run with its steps in topological order."""

    steps = StepRunSerializer(many=True)
    newer_modules = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        read_only=True,
        help_text='Steps whose module has a newer version than the run pins: [{"step", '
        '"module", "pinned", "latest"}] (the pipeline version\'s update/ makes one that '
        "pins them).",
    )
    last_event = serializers.IntegerField(
        read_only=True,
        help_text="The id of the run's newest event: pass it as after_event with wait= to "
        "long-poll for the next change.",
    )

    tags = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="The run's tags, sorted."
    )

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "tags", "steps", "newer_modules", "last_event"]
