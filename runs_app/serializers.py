"""Output serializers shared by several run-time API endpoints (input serializers nest in
their API class in runs_app/api.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pipelines_app.serializers import ArtifactSerializer, EnumComponentField, username_of
from runs_app.models import PipelineRun, RunStatus, StepRun, StepStatus, Sweep, SweepEventKind
from runs_app.sweeps import ordered_axes, sweep_size


class StepRefSerializer(serializers.Serializer):
    """Another run's step (the one a step reused or follows)."""

    run = serializers.IntegerField()
    step = serializers.CharField()


class StepOutputSerializer(serializers.Serializer):
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


class RunSerializer(serializers.ModelSerializer):
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
        ]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_created_by(self, obj: PipelineRun) -> str | None:
        return username_of(obj.created_by)


class StepRunSerializer(serializers.ModelSerializer):
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

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "steps"]


# --- sweeps (runs_app/sweep_api.py) ----------------------------------------------------------


SWEEP_STATES = ("active", "canceled")


class SweepStatusField(EnumComponentField):
    component_name = "SweepStatus"
    component_choices = SWEEP_STATES


class SweepEventKindField(EnumComponentField):
    component_name = "SweepEventKind"
    component_choices = tuple(SweepEventKind.values)


class SweepVariantSerializer(serializers.Serializer):
    """One variant of an axis, as the sweep stores it (module pinned to name@N)."""

    label = serializers.CharField()  # type: ignore[assignment]
    module = serializers.CharField(required=False, help_text="name@N; left out: the base's.")
    params = serializers.DictField(required=False, help_text="The variant's own params.")


class SweepSerializer(serializers.ModelSerializer):
    """A sweep as lists and details show it (select_related base_version__pipeline and
    created_by)."""

    pipeline = serializers.CharField(source="base_version.pipeline.name")
    version = serializers.IntegerField(source="base_version.number", help_text="The base.")
    status = serializers.SerializerMethodField()
    axes = serializers.SerializerMethodField()
    seed_params = serializers.ListField(
        child=serializers.CharField(), help_text="`step.param`s replicate r sets to r."
    )
    expected_runs = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = [
            "id",
            "name",
            "pipeline",
            "version",
            "status",
            "axes",
            "replicates",
            "seed_params",
            "reuse",
            "expected_runs",
            "created_by",
            "created_at",
            "canceled_at",
        ]

    @extend_schema_field(SweepStatusField())
    def get_status(self, obj: Sweep) -> str:
        return "canceled" if obj.canceled_at is not None else "active"

    @extend_schema_field(
        serializers.DictField(child=SweepVariantSerializer(many=True), help_text="{step: [...]}")
    )
    def get_axes(self, obj: Sweep) -> dict[str, list[dict[str, Any]]]:
        """In the pipeline's step order (stored JSON may reorder its keys)."""
        return ordered_axes(obj.base_version.spec, obj.axes)

    @extend_schema_field(serializers.IntegerField())
    def get_expected_runs(self, obj: Sweep) -> int:
        return sweep_size(obj.axes, obj.replicates)

    @extend_schema_field({"type": "string", "nullable": True})
    def get_created_by(self, obj: Sweep) -> str | None:
        return username_of(obj.created_by)


class SweepRunCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    done = serializers.IntegerField(help_text="Runs in a terminal status.")
    pending = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()


class SweepStepCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    executed = serializers.IntegerField(help_text="Steps that ran (succeeded).")
    reused = serializers.IntegerField(help_text="Steps that reused an earlier result.")
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()
    in_flight = serializers.IntegerField(help_text="queued, running or following")
    pending = serializers.IntegerField()


class SweepProgressSerializer(serializers.Serializer):
    """runs_app.sweep_queries.sweep_progress."""

    expected = serializers.IntegerField(help_text="Runs the axes x replicates call for.")
    canceled = serializers.BooleanField()
    finished = serializers.BooleanField(help_text="Every run it will have has finished.")
    runs = SweepRunCountsSerializer()
    steps = SweepStepCountsSerializer()


class SweepEventSerializer(serializers.Serializer):
    kind = SweepEventKindField()
    data = serializers.JSONField(  # type: ignore[assignment]
        help_text="What changed: the step and variant, the version."
    )
    by = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()


class SweepRunRowSerializer(serializers.Serializer):
    """A run of a sweep: its variant choices and where it stands."""

    id = serializers.IntegerField()
    status = RunStatusField()
    variant = serializers.DictField(help_text='{step: label, ..., "replicate": r}')
    version = serializers.IntegerField(help_text="The pipeline version it ran.")


class SweepDetailSerializer(SweepSerializer):
    """A sweep with its progress, its events and every run's variant and status."""

    progress = SweepProgressSerializer()
    events = SweepEventSerializer(many=True)
    runs = SweepRunRowSerializer(many=True)

    class Meta(SweepSerializer.Meta):
        fields = [*SweepSerializer.Meta.fields, "progress", "events", "runs"]
