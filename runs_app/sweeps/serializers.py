"""The sweep API's response shapes (runs_app/sweeps/api.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from runs_app.models import Sweep, SweepEventKind
from runs_app.serializers import RunStatusField
from runs_app.sweeps.plan import ordered_axes, sweep_size
from workspaces.serializers import EnumComponentField, username_of

# --- sweeps (runs_app/sweeps/api.py) ----------------------------------------------------------


SWEEP_STATES = ("active", "canceled")


class SweepStatusField(EnumComponentField):
    component_name = "SweepStatus"
    component_choices = SWEEP_STATES


class SweepEventKindField(EnumComponentField):
    component_name = "SweepEventKind"
    component_choices = tuple(SweepEventKind.values)


class SweepVariantSerializer(serializers.Serializer[Any]):
    """One variant of an axis, as the sweep stores it (module pinned to name@N)."""

    label = serializers.CharField()  # type: ignore[assignment]
    module = serializers.CharField(required=False, help_text="name@N; left out: the base's.")
    params = serializers.DictField(required=False, help_text="The variant's own params.")


class SweepSerializer(serializers.ModelSerializer[Sweep]):
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
            "max_parallel_runs",
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


class SweepRunCountsSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField()
    done = serializers.IntegerField(help_text="Runs in a terminal status.")
    pending = serializers.IntegerField()
    running = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()


class SweepStepCountsSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField()
    executed = serializers.IntegerField(help_text="Steps that ran (succeeded).")
    reused = serializers.IntegerField(help_text="Steps that reused an earlier result.")
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()
    in_flight = serializers.IntegerField(help_text="queued, running or following")
    pending = serializers.IntegerField()


class SweepProgressSerializer(serializers.Serializer[Any]):
    """runs_app.sweeps.selectors.sweep_progress."""

    expected = serializers.IntegerField(help_text="Runs the axes x replicates call for.")
    canceled = serializers.BooleanField()
    starting = serializers.BooleanField(
        help_text="Its runs are still being started (a worker's expand_sweep actor)."
    )
    finished = serializers.BooleanField(help_text="Every run it will have has finished.")
    runs = SweepRunCountsSerializer()
    steps = SweepStepCountsSerializer()


class SweepEventSerializer(serializers.Serializer[Any]):
    kind = SweepEventKindField()
    data = serializers.JSONField(  # type: ignore[assignment]
        help_text="What changed: the step and variant, the version."
    )
    by = serializers.CharField(allow_null=True)
    at = serializers.DateTimeField()


class SweepRunRowSerializer(serializers.Serializer[Any]):
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
