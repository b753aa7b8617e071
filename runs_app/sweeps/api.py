"""Sweep REST API: list, create, detail, runs, extend, cancel, promote, compare, metrics.

Follows the conventions in workspaces/api.py. Every write is a service of
runs_app/services.py (sweep_create, sweep_extend, sweep_cancel, sweep_promote), which checks
the whole request first and raises one DomainError naming each field (`axes.train.1.module`)
before anything is written; reads are sweeps/selectors.py, a fixed number of queries
whatever the number of runs. The statistics are sweeps/stats.py's `Comparison`, whose
figures are finite or None (DRF's JSON refuses NaN).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db.models import Count, Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pipelines_app.models import PipelineVersion
from pipelines_app.serializers import PipelineVersionSerializer
from runs_app import selectors as run_selectors
from runs_app.api import PIPELINE_REF_RE, IntFilter, RunListApi, pipeline_version_named
from runs_app.models import RUN_TERMINAL, PipelineRun, RunStatus, Sweep, SweepEvent
from runs_app.sweeps import plan, services, stats
from runs_app.sweeps.selectors import (
    get_sweep_for_user,
    sweep_comparison,
    sweep_metrics,
    sweep_progress,
    sweep_rows,
)
from runs_app.sweeps.serializers import (
    SWEEP_STATES,
    SweepDetailSerializer,
    SweepRunCountsSerializer,
    SweepRunRowSerializer,
    SweepSerializer,
)
from workspaces.api import ApiMixin, JsonObjectField, created, created_between, newest_id
from workspaces.conf import engine
from workspaces.errors import DomainError
from workspaces.models import Role
from workspaces.selectors import get_workspace_for_user
from workspaces.serializers import username_of

# The shape of `axes` (the service checks it, naming each path): documented for clients.
AXES_SCHEMA = {
    "type": "object",
    "description": '{step: [{"label", "module"?: "name@N", "params"?: {...}}, ...]}',
    "additionalProperties": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "description": plan.LABEL_HELP},
                "module": {"type": "string", "description": "name@N or name@latest"},
                "params": {"type": "object", "additionalProperties": True},
            },
            "required": ["label"],
        },
    },
}
VARIANT_SCHEMA = AXES_SCHEMA["additionalProperties"]["items"]  # type: ignore[index]


@extend_schema_field(AXES_SCHEMA)
class AxesField(JsonObjectField):
    """A sweep's axes, passed on as sent: sweep_create reports what is wrong, by path."""


@extend_schema_field(VARIANT_SCHEMA)
class VariantField(JsonObjectField):
    """One variant, passed on as sent: sweep_extend reports what is wrong, by path."""


@extend_schema_field(
    {"type": "object", "additionalProperties": {"type": "string"}, "description": "{step: label}"}
)
class ChoicesField(JsonObjectField):
    """A variant named by its choices: {step: label, ...}."""


def sweep_for(request: Request, workspace: str, sweep_id: int, role: str = Role.VIEWER) -> Sweep:
    return get_sweep_for_user(request.user, workspace, sweep_id, role)


def sweep_list(workspace: Any) -> QuerySet[Sweep]:
    """The workspace's sweeps, newest first, each with its runs counted by status (one
    query for a page, whatever its size)."""
    by_status = {
        f"runs_{value}": Count("runs", filter=Q(runs__status=value)) for value in RunStatus.values
    }
    return (
        Sweep.objects.filter(workspace=workspace)
        .select_related("base_version__pipeline", "created_by")
        .defer("base_version__source", "base_version__pipeline__description")
        .annotate(runs_total=Count("runs"), **by_status)
        .order_by("-created_at", "-id")
    )


def _run_counts(sweep: Sweep) -> dict[str, int]:
    counts = {value: getattr(sweep, f"runs_{value}") for value in RunStatus.values}
    done = sum(counts[value] for value in RUN_TERMINAL)
    return {"total": sweep.runs_total, "done": done, **counts}  # type: ignore[attr-defined]


def sweep_detail(sweep: Sweep) -> dict[str, Any]:
    """SweepDetailSerializer's shape in five queries, whatever the number of runs."""
    sweep = (
        Sweep.objects.select_related("base_version__pipeline", "created_by")
        .defer("base_version__source")
        .get(pk=sweep.pk)
    )
    events = [
        {"kind": e.kind, "data": e.data, "by": username_of(e.by), "at": e.at}
        for e in SweepEvent.objects.filter(sweep=sweep).select_related("by").order_by("at", "id")
    ]
    runs = [
        {"id": pk, "status": run_status, "variant": variant, "version": number}
        for pk, run_status, variant, number in PipelineRun.objects.filter(sweep=sweep)
        .order_by("pk")
        .values_list("pk", "status", "variant", "pipeline_version__number")
    ]
    return {
        **SweepSerializer(sweep).data,
        "progress": sweep_progress(sweep),
        "events": events,
        "runs": SweepRunRowSerializer(runs, many=True).data,
    }


class SweepListApi(ApiMixin, generics.ListAPIView[Sweep]):
    """The workspace's sweeps, newest first, each with its runs counted by status."""

    queryset = Sweep.objects.none()

    class OutputSerializer(SweepSerializer):
        runs = serializers.SerializerMethodField()
        finished = serializers.SerializerMethodField()

        class Meta(SweepSerializer.Meta):
            fields = [*SweepSerializer.Meta.fields, "runs", "finished"]

        @extend_schema_field(SweepRunCountsSerializer)
        def get_runs(self, obj: Sweep) -> dict[str, int]:
            return _run_counts(obj)

        @extend_schema_field(serializers.BooleanField(help_text="Every run has finished."))
        def get_finished(self, obj: Sweep) -> bool:
            counts = _run_counts(obj)
            enough = obj.canceled_at is not None or counts["total"] >= plan.sweep_size(
                obj.axes, obj.replicates
            )
            return counts["done"] == counts["total"] and enough

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        pipeline = filters.CharFilter(field_name="base_version__pipeline__name")
        version = IntFilter(field_name="base_version__number")
        status = filters.ChoiceFilter(
            choices=[(s, s) for s in SWEEP_STATES], method="filter_status"
        )
        name = filters.CharFilter(lookup_expr="icontains")
        created_by = filters.CharFilter(field_name="created_by__username")
        created_after, created_before = created_between()

        class Meta:
            model = Sweep
            fields = ["name"]

        def filter_status(self, queryset: QuerySet[Sweep], name: str, value: str) -> Any:
            return queryset.filter(canceled_at__isnull=value == "active")

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[Sweep]:
        workspace = get_workspace_for_user(self.request.user, self.kwargs["workspace"])
        return sweep_list(workspace)


class SweepCreateApi(ApiMixin, APIView):
    """Check a sweep whole, then start one run per combination of its axes x replicates;
    any problem is a 400 naming its field (`axes.train.1.module`) and nothing starts."""

    class InputSerializer(serializers.Serializer[Any]):
        pipeline = serializers.RegexField(
            PIPELINE_REF_RE, max_length=200, help_text="The base: NAME, NAME@latest or NAME@N"
        )
        name = serializers.CharField(max_length=200)
        axes = AxesField()
        replicates = serializers.IntegerField(
            min_value=1, default=1, help_text="Runs per variant; each sets the seed params."
        )
        seed_params = serializers.ListField(
            child=serializers.CharField(max_length=200),
            default=list,
            help_text="`step.param`s (int) that replicate r sets to r.",
        )
        reuse = serializers.BooleanField(default=True)
        max_parallel_runs = serializers.IntegerField(
            min_value=1,
            required=False,
            allow_null=True,
            default=None,
            help_text="At most this many of its runs unfinished at once (none: no cap).",
        )

        def validate_replicates(self, value: int) -> int:
            limit = engine().sweep_max_runs
            if value > limit:
                raise serializers.ValidationError(f"at most {limit} (the run limit)")
            return value

    @extend_schema(request=InputSerializer, responses={201: SweepDetailSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = get_workspace_for_user(request.user, workspace, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        base = pipeline_version_named(space, data.validated_data["pipeline"])
        sweep = services.sweep_create(
            base,
            name=data.validated_data["name"],
            axes=data.validated_data["axes"],
            replicates=data.validated_data["replicates"],
            seed_params=data.validated_data["seed_params"],
            user=request.user,
            reuse=data.validated_data["reuse"],
            max_parallel_runs=data.validated_data["max_parallel_runs"],
        )
        return Response(sweep_detail(sweep), status=status.HTTP_201_CREATED)


class SweepDetailApi(ApiMixin, APIView):
    """One sweep: its axes, replicates, seed params, progress, events, and every run's
    variant and status."""

    @extend_schema(responses={200: SweepDetailSerializer})
    def get(self, request: Request, workspace: str, sweep_id: int) -> Response:
        return Response(sweep_detail(sweep_for(request, workspace, sweep_id)))


class SweepRunListApi(ApiMixin, generics.ListAPIView[PipelineRun]):
    """The sweep's runs in the order they were made, each with its variant and status."""

    queryset = PipelineRun.objects.none()
    serializer_class = RunListApi.OutputSerializer

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        status = filters.MultipleChoiceFilter(choices=RunStatus.choices)

        class Meta:
            model = PipelineRun
            fields = ["status"]

    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[PipelineRun]:
        sweep = sweep_for(self.request, self.kwargs["workspace"], self.kwargs["sweep_id"])
        return run_selectors.run_list(sweep.workspace).filter(sweep=sweep).order_by("pk")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        counts = run_selectors.run_step_counts([run.pk for run in page or []])
        data = RunListApi.OutputSerializer(page, many=True, context={"step_counts": counts}).data
        return self.get_paginated_response(data)


class SweepExtendApi(ApiMixin, APIView):
    """Append a variant to an axis and start only the combinations that are new."""

    class InputSerializer(serializers.Serializer[Any]):
        step = serializers.CharField(max_length=100, help_text="An axis of the sweep.")
        variant = VariantField(help_text='{"label", "module"?: "name@N", "params"?: {...}}')

    class OutputSerializer(serializers.Serializer[Any]):
        sweep = serializers.IntegerField()
        step = serializers.CharField()
        variant = serializers.DictField(help_text="As stored: module pinned, params coerced.")
        runs = SweepRunRowSerializer(many=True, help_text="The runs it started.")

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, workspace: str, sweep_id: int) -> Response:
        sweep = sweep_for(request, workspace, sweep_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        step = data.validated_data["step"]
        runs = services.sweep_extend(sweep, step, data.validated_data["variant"], request.user)
        numbers = dict(
            PipelineVersion.objects.filter(
                pk__in={r.pipeline_version_id for r in runs}
            ).values_list("pk", "number")
        )
        rows = [
            {
                "id": r.pk,
                "status": r.status,
                "variant": r.variant,
                "version": numbers[r.pipeline_version_id],
            }
            for r in runs
        ]
        body = {"sweep": sweep.pk, "step": step, "variant": sweep.axes[step][-1], "runs": rows}
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class SweepCancelApi(ApiMixin, APIView):
    """Cancel the sweep: no run of it starts any more and each unfinished one is canceled
    (again: nothing more to do, `canceled_runs` 0)."""

    class OutputSerializer(SweepDetailSerializer):
        canceled_runs = serializers.IntegerField(help_text="Runs this call canceled.")

        class Meta(SweepDetailSerializer.Meta):
            fields = [*SweepDetailSerializer.Meta.fields, "canceled_runs"]

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request: Request, workspace: str, sweep_id: int) -> Response:
        sweep = sweep_for(request, workspace, sweep_id, Role.EDITOR)
        canceled = services.sweep_cancel(sweep, by=request.user)
        return Response({**sweep_detail(sweep), "canceled_runs": canceled})


class SweepPromoteApi(ApiMixin, APIView):
    """Make a variant the next version of the base pipeline (parent: the base version); a
    spec identical to the pipeline's latest version returns that version with 200."""

    class InputSerializer(serializers.Serializer[Any]):
        variant = ChoicesField(help_text="{step: label} with a label for every axis.")
        message = serializers.CharField(
            required=False, allow_blank=True, default="", help_text="Default: names the sweep."
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: PipelineVersionSerializer, 200: PipelineVersionSerializer},
    )
    def post(self, request: Request, workspace: str, sweep_id: int) -> Response:
        sweep = sweep_for(request, workspace, sweep_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        previous = newest_id(PipelineVersion.objects.filter(pipeline=sweep.base_version.pipeline))
        version = services.sweep_promote(
            sweep,
            data.validated_data["variant"],
            user=request.user,
            message=data.validated_data["message"] or None,
        )
        return Response(PipelineVersionSerializer(version).data, status=created(version, previous))


# --- the comparison's shapes (runs_app.sweeps.Comparison.as_dict) ------------------------------


class SweepSummarySerializer(serializers.Serializer[Any]):
    n = serializers.IntegerField(help_text="Measured runs.")
    mean = serializers.FloatField(allow_null=True)
    std = serializers.FloatField(allow_null=True, help_text="Sample std (n - 1).")
    ci_low = serializers.FloatField(allow_null=True, help_text="95% CI: t(0.975, n - 1) s/sqrt(n)")
    ci_high = serializers.FloatField(allow_null=True)
    clipped = serializers.BooleanField(
        help_text="An end of the CI was cut at the metric's known range (value_range)."
    )


class SweepCountsSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField()
    measured = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField()
    unfinished = serializers.IntegerField()
    missing = serializers.IntegerField(help_text="Succeeded without a value of the metric.")


class SweepVariantStatsSerializer(serializers.Serializer[Any]):
    choices = serializers.DictField(child=serializers.CharField(), help_text="{step: label}")
    name = serializers.CharField(help_text="step=label, step=label")
    summary = SweepSummarySerializer()
    counts = SweepCountsSerializer()
    runs = serializers.ListField(child=serializers.IntegerField())
    values = serializers.ListField(
        child=serializers.FloatField(), help_text="The samples, in replicate order."
    )


class SweepLevelStatsSerializer(serializers.Serializer[Any]):
    step = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    summary = SweepSummarySerializer()
    counts = SweepCountsSerializer()
    effect = serializers.FloatField(allow_null=True, help_text="Its mean - the grand mean.")


class SweepDifferenceSerializer(serializers.Serializer[Any]):
    a = serializers.DictField(child=serializers.CharField())
    b = serializers.DictField(child=serializers.CharField())
    n_a = serializers.IntegerField()
    n_b = serializers.IntegerField()
    mean_a = serializers.FloatField(allow_null=True)
    mean_b = serializers.FloatField(allow_null=True)
    diff = serializers.FloatField(allow_null=True, help_text="mean(a) - mean(b)")
    ci_low = serializers.FloatField(allow_null=True, help_text="Welch-Satterthwaite 95% CI")
    ci_high = serializers.FloatField(allow_null=True)
    df = serializers.FloatField(allow_null=True)
    t = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True, help_text="Welch's two-sided t-test")


class SweepVerdictSerializer(serializers.Serializer[Any]):
    clear = serializers.BooleanField(
        help_text="The best mean beats every other measured variant: Welch's two-sided p "
        "<= threshold against each. False: no clear winner."
    )
    level = serializers.FloatField(help_text="The chance of naming a wrong winner, at most.")
    correction = serializers.CharField(
        help_text="bonferroni: each comparison at level / comparisons (the winner is picked "
        "by the data, so a step-down such as Holm's does not bound that chance)."
    )
    comparisons = serializers.IntegerField(help_text="The other measured variants (k - 1).")
    threshold = serializers.FloatField(allow_null=True, help_text="level / comparisons")
    p_value = serializers.FloatField(
        allow_null=True, help_text="The deciding (largest) p; null when undefined."
    )
    against = serializers.DictField(
        child=serializers.CharField(), allow_null=True, help_text="Its variant, {step: label}."
    )
    against_name = serializers.CharField(allow_null=True)
    p_values = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="{variant name: Welch's p against the best mean}",
    )
    reason = serializers.CharField()


def parse_choices(text: str, field: str) -> dict[str, str]:
    """`step=label, step=label` (a variant's `name`) -> {step: label}."""
    choices: dict[str, str] = {}
    for part in text.split(","):
        step, sep, label = part.strip().partition("=")
        if not sep or not step.strip() or not label.strip():
            raise DomainError(
                "invalid_variant",
                "Name a variant as step=label, step=label.",
                {field: [f"expected 'step=label, ...', got {text!r}"]},
            )
        choices[step.strip()] = label.strip()
    return choices


class SweepCompareApi(ApiMixin, APIView):
    """The sweep's variants compared on one metric: mean, std, 95% CI and n over replicates
    (failed runs counted, never measured), marginal effects per axis, the best mean against
    the runner-up, the verdict (a winner only when the best mean beats every other variant
    at `level`, Bonferroni-corrected), and A vs B (Welch) when `a` and `b` name two variants.
    CIs are cut to the metric's known range. Undefined figures are null."""

    class QuerySerializer(serializers.Serializer[Any]):
        metric = serializers.CharField(max_length=200, help_text="A metric the runs log.")
        step = serializers.CharField(
            max_length=100, required=False, help_text="The step that logs it (when several do)."
        )
        aggregate = serializers.ChoiceField(
            choices=stats.AGGREGATES,
            default=stats.DEFAULT_AGGREGATE,
            help_text="Of a run's values of it.",
        )
        direction = serializers.ChoiceField(
            choices=stats.DIRECTIONS,
            required=False,
            help_text="max: higher is better. Default, as on the compare page: min when the "
            "metric's name says lower is better (loss, error, mse, ...), else max.",
        )
        a = serializers.CharField(
            max_length=1000,
            required=False,
            help_text="A variant: 'step=label, step=label' (naming some axes pools the rest).",
        )
        b = serializers.CharField(max_length=1000, required=False, help_text="Another variant.")
        level = serializers.FloatField(
            default=stats.DEFAULT_LEVEL,
            min_value=0.0001,
            max_value=stats.MAX_LEVEL,
            help_text="The level the best mean must beat every other variant at to be named "
            "the winner (Bonferroni over the comparisons).",
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("a" in attrs) != ("b" in attrs):
                missing = "b" if "a" in attrs else "a"
                raise serializers.ValidationError({missing: ["give both a and b, or neither"]})
            return attrs

    class OutputSerializer(serializers.Serializer[Any]):
        metric = serializers.CharField()
        step = serializers.CharField(allow_null=True)
        aggregate = serializers.ChoiceField(choices=stats.AGGREGATES)
        direction = serializers.ChoiceField(choices=stats.DIRECTIONS)
        axes = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), help_text="{step: [label]}"
        )
        variants = SweepVariantStatsSerializer(many=True)
        marginals = serializers.DictField(
            child=SweepLevelStatsSerializer(many=True), help_text="{step: [one per label]}"
        )
        overall = SweepSummarySerializer(help_text="Every measured run.")
        counts = SweepCountsSerializer()
        best = SweepVariantStatsSerializer(
            allow_null=True, help_text="The best mean; the winner only when verdict.clear."
        )
        runner_up = SweepVariantStatsSerializer(allow_null=True)
        best_vs_runner_up = SweepDifferenceSerializer(allow_null=True)
        verdict = SweepVerdictSerializer(allow_null=True, help_text="null: no variant measured")
        value_range = serializers.ListField(
            child=serializers.FloatField(allow_null=True),
            allow_null=True,
            help_text="[low, high] the metric cannot leave (null: unbounded on that side), "
            "when known from its name and every value is inside it; CIs are cut to it.",
        )
        a_vs_b = SweepDifferenceSerializer(allow_null=True, help_text="When `a` and `b` are given.")

    @extend_schema(parameters=[QuerySerializer], responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, sweep_id: int) -> Response:
        sweep = sweep_for(request, workspace, sweep_id)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        args = query.validated_data
        comparison = sweep_comparison(
            sweep,
            args["metric"],
            step=args.get("step"),
            aggregate=args["aggregate"],
            direction=args.get("direction") or stats.default_direction(args["metric"]),
            level=args["level"],
        )
        versus = None
        if "a" in args:
            a, b = parse_choices(args["a"], "a"), parse_choices(args["b"], "b")
            rows = sweep_rows(sweep, args["metric"], comparison.step, args["aggregate"])
            versus = asdict(stats.compare_variants(rows, a, b))
        body = {**comparison.as_dict(), "a_vs_b": versus}
        return Response(self.OutputSerializer(body).data)


class SweepMetricListApi(ApiMixin, APIView):
    """The metrics the sweep's runs logged, by step (what `compare` can take)."""

    class OutputSerializer(serializers.Serializer[Any]):
        class MetricSerializer(serializers.Serializer[Any]):
            step = serializers.CharField()
            name = serializers.CharField()
            runs = serializers.IntegerField(help_text="Runs that logged it.")

        steps = serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="{step: [metric name, ...]}",
        )
        metrics = MetricSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, sweep_id: int) -> Response:
        metrics = sweep_metrics(sweep_for(request, workspace, sweep_id))
        steps: dict[str, list[str]] = {}
        for row in metrics:
            steps.setdefault(row["step"], []).append(row["name"])
        return Response(self.OutputSerializer({"steps": steps, "metrics": metrics}).data)
