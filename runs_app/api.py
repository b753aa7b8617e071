"""Run-time REST API: runs, their steps, logs, metrics, artifacts, zips, lineage, compare.

Follows the conventions in workspaces/api.py. Status changes go through runs_app.scheduler
(start, cancel) and runs_app.services (rerun, clone); downloads, zips and lineage are the
explorer's functions (artifacts.http, runs_app.downloads, runs_app.selectors), so a page
and an endpoint answer alike.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import Max, Prefetch, QuerySet, prefetch_related_objects
from django.http import Http404, HttpResponseBase
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from artifacts.http import artifact_download_response
from pipelines_app.interfaces import ENTRYPOINT_RE
from pipelines_app.models import PipelineVersion
from pipelines_app.selectors import (
    get_module_version_for_user,
    newer_modules,
    pipeline_version_by_ref,
)
from pipelines_app.serializers import ArtifactSerializer
from pipelines_app.specs import NAME_PATTERN
from runs_app import fleet, query, retention, selectors, services, wakeups
from runs_app.diffs import compare_ids, loop_comparison, run_diff, runs_compare
from runs_app.downloads import audited, run_zip_response
from runs_app.models import (
    RUN_TERMINAL,
    Event,
    Metric,
    PipelineRun,
    RunStatus,
    RunTag,
    StepOutput,
    StepRun,
    StepStatus,
)
from runs_app.serializers import (
    RunDetailSerializer,
    RunSerializer,
    RunStatusField,
    StepRunSerializer,
)
from workspaces.api import MAX_INT, ApiMixin, JsonObjectField, created_between, workspace_of
from workspaces.errors import DomainError
from workspaces.models import Role, Workspace

PIPELINE_REF_RE = r"^[a-z0-9][a-z0-9_-]{0,99}(@(latest|[1-9][0-9]*))?$"


@extend_schema_field(OpenApiTypes.INT)
def pipeline_version_named(space: Workspace, ref: str) -> PipelineVersion:
    """The version `ref` (NAME, NAME@latest, NAME@N) names, or a 400 on the `pipeline`
    field: in a request body an unknown name is bad input, not a missing page."""
    try:
        return pipeline_version_by_ref(space, ref)
    except Http404:
        raise DomainError(
            "invalid",
            "No such pipeline version.",
            {"pipeline": [f"no pipeline version {ref!r} in {space.slug}"]},
        ) from None


class IntFilter(filters.NumberFilter):  # type: ignore[misc]
    """A whole number (NumberFilter takes decimals), within what a database column holds."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_INT)
        super().__init__(*args, **kwargs)


def run_for(request: Request, workspace: str, run_id: int, role: str = Role.VIEWER) -> PipelineRun:
    return selectors.get_run_for_user(request.user, workspace, run_id, role)


def run_detail(run: PipelineRun) -> dict[str, Any]:
    """A run with its steps and their outputs (RunDetailSerializer's shape) and the steps
    whose module has a newer version, in seven queries whatever the number of steps."""
    # The last event is read first, before the run and its steps: a change made while this
    # answer is built then shows as a newer event next time, never as a state already seen.
    last_event = Event.objects.filter(run_id=run.pk).aggregate(last=Max("pk"))["last"] or 0
    run = (
        PipelineRun.objects.select_related("pipeline_version__pipeline", "created_by")
        .defer("pipeline_version__spec", "pipeline_version__source")
        .get(pk=run.pk)
    )
    steps = selectors.run_step_list(run)
    outputs = StepOutput.objects.select_related("artifact").order_by("name")
    prefetch_related_objects(steps, Prefetch("outputs", queryset=outputs))
    return {
        **RunSerializer(run).data,
        "tags": sorted(RunTag.objects.filter(run=run).values_list("name", flat=True)),
        "steps": StepRunSerializer(steps, many=True).data,
        "newer_modules": newer_modules(run.pipeline_version),
        "last_event": last_event,
    }


# --- runs ----------------------------------------------------------------------------------


class RunListApi(ApiMixin, generics.ListAPIView[PipelineRun]):
    """The workspace's runs, newest first, each with its steps counted by status.

    `?filter=` takes the runs filter language (runs_app.query), e.g. `metrics.accuracy >
    0.9 and params.train.hidden = 32 and tag = baseline`; a filter that does not parse is a
    400 whose `filter` field names the column at fault. `?sort=-metrics.accuracy` orders
    them as the runs page does (a 400 naming `sort` for a column it cannot sort by)."""

    queryset = PipelineRun.objects.none()

    class OutputSerializer(RunSerializer):
        step_counts = serializers.SerializerMethodField()
        tags = serializers.SerializerMethodField()

        class Meta(RunSerializer.Meta):
            fields = [*RunSerializer.Meta.fields, "tags", "step_counts"]

        @extend_schema_field({"type": "array", "items": {"type": "string"}})
        def get_tags(self, obj: PipelineRun) -> list[str]:
            return [tag.name for tag in obj.tags.all()]  # prefetched by selectors.run_list

        @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
        def get_step_counts(self, obj: PipelineRun) -> dict[str, int]:
            counts: dict[str, int] = self.context["step_counts"].get(obj.pk, {})
            return counts

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        status = filters.MultipleChoiceFilter(choices=RunStatus.choices)
        pipeline = filters.CharFilter(field_name="pipeline_version__pipeline__name")
        version = IntFilter(field_name="pipeline_version__number")
        sweep = IntFilter(field_name="sweep_id")
        created_by = filters.CharFilter(field_name="created_by__username")
        created_after, created_before = created_between()
        filter = filters.CharFilter(
            method="by_expression",
            help_text="The runs filter language: metrics.NAME, params.STEP.PARAM, tag, status, "
            "pipeline, version, user, sweep, created; = != > >= < <=; and, or, not, ( ).",
        )

        class Meta:
            model = PipelineRun
            fields = ["status"]

        def by_expression(
            self, queryset: QuerySet[PipelineRun], name: str, value: str
        ) -> QuerySet[PipelineRun]:
            return queryset.filter(query.filter_q(value, field="filter"))

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[PipelineRun]:
        archived = self.request.query_params.get("archived", "").lower() in ("true", "1")
        return selectors.run_list(workspace_of(self.request, self.kwargs["workspace"]), archived)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "sort",
                str,
                description="The order: one column, `-` first for descending: "
                f"{query.SORT_HELP} (e.g. `-metrics.accuracy`). Runs without a value come "
                "last; equal values newest first. Default: `-created`.",
            )
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        runs = self.filter_queryset(self.get_queryset())
        sort_text = request.query_params.get("sort", "")
        if sort_text.strip():
            annotations, order = query.run_ordering(query.parse_sort(sort_text))
            runs = runs.alias(**annotations).order_by(*order)
        page = self.paginate_queryset(runs)
        counts = selectors.run_step_counts([run.pk for run in page or []])
        data = self.OutputSerializer(page, many=True, context={"step_counts": counts}).data
        return self.get_paginated_response(data)


class RunIdsSerializer(serializers.Serializer[Any]):
    runs = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_INT),
        min_length=1,
        max_length=1000,
        help_text="Run ids of this workspace.",
    )


def runs_of(request: Request, workspace: str, role: str = Role.EDITOR) -> QuerySet[PipelineRun]:
    """The runs named by the body's `runs`, all of this workspace (404 naming the first
    that is not)."""
    space = workspace_of(request, workspace, role)
    data = RunIdsSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    ids = list(dict.fromkeys(data.validated_data["runs"]))
    runs = PipelineRun.objects.filter(workspace=space, pk__in=ids)
    found = set(runs.values_list("pk", flat=True))
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise Http404(f"No run {missing[0]} in this workspace.")
    return runs


class RunDeleteApi(ApiMixin, APIView):
    """Delete finished runs: their steps, logs, metrics and events go; the artifacts they
    held go to the collector. 409 for a run still going or pinned (nothing is deleted)."""

    @extend_schema(request=RunIdsSerializer, responses={200: None})
    def post(self, request: Request, workspace: str) -> Response:
        deleted = services.runs_delete(runs_of(request, workspace), user=request.user)
        return Response({"deleted": deleted})


class RunArchiveApi(ApiMixin, APIView):
    """Archive runs (hidden from the runs list, kept) or, with `archived: false`, bring
    them back."""

    class InputSerializer(RunIdsSerializer):
        archived = serializers.BooleanField(default=True)

    @extend_schema(request=InputSerializer, responses={200: None})
    def post(self, request: Request, workspace: str) -> Response:
        runs = runs_of(request, workspace)  # the role first: a viewer's 403 before a 400
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        count = services.runs_archive(runs, archived=data.validated_data["archived"])
        return Response({"archived" if data.validated_data["archived"] else "restored": count})


class RunPinApi(ApiMixin, APIView):
    """Pin a run (retention never deletes it, nor does a bulk delete) or unpin it."""

    class InputSerializer(serializers.Serializer[Any]):
        pinned = serializers.BooleanField(default=True)

    @extend_schema(request=InputSerializer, responses={200: RunDetailSerializer})
    def post(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.run_pin(run, pinned=data.validated_data["pinned"])
        return Response(run_detail(run))


class RunAnnotationsApi(ApiMixin, APIView):
    """What people say of a run: its tags and note, the only things about a run they may
    change. PUT sets what it gives: `tags` replaces the whole set, `add` and `remove`
    change it, `note` replaces the note."""

    class InputSerializer(serializers.Serializer[Any]):
        tags = serializers.ListField(
            child=serializers.CharField(allow_blank=True),
            required=False,
            max_length=100,
            help_text="The run's tags, all of them: 1-50 of letters, digits, _ . : - each, "
            "at most 20.",
        )
        add = serializers.ListField(
            child=serializers.CharField(allow_blank=True),
            required=False,
            max_length=100,
            help_text="Tags to add to those the run has.",
        )
        remove = serializers.ListField(
            child=serializers.CharField(allow_blank=True),
            required=False,
            max_length=100,
            help_text="Tags to take off (one it does not have is no error).",
        )
        note = serializers.CharField(
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="The note, at most 10,000 characters; empty clears it.",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        run = serializers.IntegerField()
        tags = serializers.ListField(child=serializers.CharField(), help_text="Sorted.")
        note = serializers.CharField()

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id)
        return Response(self.OutputSerializer(selectors.run_annotations(run)).data)

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def put(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answer = services.run_annotate(run, **data.validated_data, user=request.user)
        return Response(self.OutputSerializer(answer).data)


class RetentionSerializer(serializers.Serializer[Any]):
    enabled = serializers.BooleanField()
    keep_last = serializers.IntegerField(
        min_value=1,
        max_value=retention.KEEP_LAST_MAX,
        allow_null=True,
        help_text="Newest N runs per version.",
    )
    keep_days = serializers.IntegerField(
        min_value=1,
        max_value=retention.KEEP_DAYS_MAX,
        allow_null=True,
        help_text="Every run of the last D days.",
    )


def retention_body(workspace: Workspace) -> dict[str, Any]:
    policy = retention.policy_of(workspace)
    plan = retention.retention_plan(workspace, policy)
    return {
        "policy": RetentionSerializer(policy).data,
        "plan": {
            "runs": plan.runs,
            "kept": plan.kept,
            "artifacts": plan.artifacts,
            "bytes": plan.bytes,
        },
    }


class RetentionApi(ApiMixin, APIView):
    """The workspace's retention policy and what applying it now would delete and free
    (pinned runs, runs still going, promoted versions' and variants' runs are always kept).
    Owners change it with PUT."""

    @extend_schema(responses={200: None})
    def get(self, request: Request, workspace: str) -> Response:
        return Response(retention_body(workspace_of(request, workspace)))

    @extend_schema(request=RetentionSerializer, responses={200: None})
    def put(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = RetentionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        retention.policy_set(space, user=request.user, **data.validated_data)
        return Response(retention_body(space))


class StorageApi(ApiMixin, APIView):
    """What the workspace stores: totals, by pipeline, step and media type, over time, the
    biggest artifacts, and what retention would free now."""

    @extend_schema(responses={200: None})
    def get(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace)
        plan = retention.retention_plan(space)
        body = selectors.workspace_storage(space)
        body["retention"] = {
            "runs": len(plan.runs),
            "artifacts": plan.artifacts,
            "bytes": plan.bytes,
        }
        return Response(body)


class RetentionApplyApi(ApiMixin, APIView):
    """Apply the policy now: delete the runs it does not keep (owners)."""

    @extend_schema(request=None, responses={200: None})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        plan = retention.retention_apply(space, user=request.user)
        return Response(
            {"deleted": len(plan.runs), "artifacts": plan.artifacts, "bytes": plan.bytes}
        )


class RunCreateApi(ApiMixin, APIView):
    """Start a run of a pipeline version, with param overrides and reuse on or off."""

    class InputSerializer(serializers.Serializer[Any]):
        pipeline = serializers.RegexField(
            PIPELINE_REF_RE, max_length=200, help_text="NAME, NAME@latest or NAME@N"
        )
        params = JsonObjectField(
            required=False, default=dict, help_text='Overrides: {"step.param": value}'
        )
        reuse = serializers.BooleanField(
            default=True, help_text="false: every step runs again, none reused or followed."
        )

    @extend_schema(request=InputSerializer, responses={201: RunDetailSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = pipeline_version_named(space, data.validated_data["pipeline"])
        run = services.run_start(
            version,
            user=request.user,
            param_overrides=data.validated_data["params"],
            reuse=data.validated_data["reuse"],
        )
        return Response(run_detail(run), status=status.HTTP_201_CREATED)


class RunFromSourceApi(ApiMixin, APIView):
    """The edit-run loop in one request (`stepworks run FILE.yaml`): push each changed
    module, store the spec as the pipeline's next version if a pin changed, start a run.

    `modules` names, per step, the module of a local folder: its name, entrypoint and code
    digest (sha256 over the sorted `relpath\\0sha256(bytes)` lines plus
    `entrypoint\\0<entrypoint>`), and its `files` when the code may be new. A step given by
    digest alone pins its module's latest version when that version has the digest; else
    nothing is written and the answer is 409 `module_files_needed` with a
    `modules.<step>.files` field for each step whose files must be sent. The spec's other
    steps are taken as written. The answer is the run (as the run detail) with `pushed`
    (the module and pipeline versions, each with `created`) and `previous_run`, the
    pipeline's newest run before this one (null for its first): what the loop compares
    with (`compare_with` on the run detail)."""

    class InputSerializer(serializers.Serializer[Any]):
        class ModuleSourceSerializer(serializers.Serializer[Any]):
            name = serializers.RegexField(NAME_PATTERN, help_text="The module's name.")
            entrypoint = serializers.RegexField(
                ENTRYPOINT_RE, max_length=300, help_text="file.py:function"
            )
            digest = serializers.RegexField(
                r"^[0-9a-f]{64}$", help_text="The code digest of the files (see above)."
            )
            files = serializers.DictField(
                child=serializers.CharField(allow_blank=True, trim_whitespace=False),
                allow_empty=False,
                required=False,
                help_text='{"relative/path.py": "file text", ...}; left out: known by digest.',
            )

        pipeline = serializers.RegexField(NAME_PATTERN, help_text="The pipeline's name.")
        spec = JsonObjectField(help_text="The spec as an object (see /api/v1/spec-schema.json).")
        modules = serializers.DictField(
            child=ModuleSourceSerializer(),
            required=False,
            default=dict,
            help_text="{step: module}: the steps whose module comes from these files.",
        )
        message = serializers.CharField(allow_blank=True, required=False, default="")
        params = JsonObjectField(
            required=False, default=dict, help_text='Overrides: {"step.param": value}'
        )
        reuse = serializers.BooleanField(
            default=True, help_text="false: every step runs again, none reused or followed."
        )

    class OutputSerializer(RunDetailSerializer):
        class PushedSerializer(serializers.Serializer[Any]):
            class ModuleRowSerializer(serializers.Serializer[Any]):
                step = serializers.CharField()
                ref = serializers.CharField(help_text="NAME@N, now pinned by the step")
                created = serializers.BooleanField(help_text="false: the code was unchanged")

            class VersionSerializer(serializers.Serializer[Any]):
                ref = serializers.CharField(help_text="NAME@N, the version the run runs")
                created = serializers.BooleanField(help_text="false: no pin changed")

            modules = ModuleRowSerializer(many=True)
            pipeline_version = VersionSerializer()

        pushed = PushedSerializer(read_only=True)
        previous_run = serializers.IntegerField(read_only=True, allow_null=True)

        class Meta(RunDetailSerializer.Meta):
            fields = [*RunDetailSerializer.Meta.fields, "pushed", "previous_run"]

    @extend_schema(
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            409: OpenApiResponse(description="module_files_needed: send those modules' files"),
        },
    )
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        done = services.run_from_source(
            space,
            data.validated_data["pipeline"],
            data.validated_data["spec"],
            data.validated_data["modules"],
            user=request.user,
            message=data.validated_data["message"],
            params=data.validated_data["params"],
            reuse=data.validated_data["reuse"],
        )
        pushed = {
            "modules": done.modules,
            "pipeline_version": {"ref": done.version.ref, "created": done.version_created},
        }
        body = {**run_detail(done.run), "pushed": pushed, "previous_run": done.previous_run}
        return Response(body, status=status.HTTP_201_CREATED)


MAX_WAIT_S = 25


class RunDetailApi(ApiMixin, APIView):
    """One run with its steps, their statuses and outputs.

    With `wait=S&after_event=N` it is a long-poll: it answers as soon as the run has an
    event newer than N (a status change of the run or a step), at once when the run has
    finished, and after S seconds at the latest, with the run as it then is either way.
    Pass the `last_event` of the previous answer as the next `after_event`. With
    `until=end` it answers only when the run has finished (or after S seconds).

    `compare_with=RUN` adds `comparison` to an answer whose run has finished: which steps
    ran and why, and every metric row against RUN (`same` false where one moved); null
    while the run goes on."""

    class QuerySerializer(serializers.Serializer[Any]):
        wait = serializers.IntegerField(
            min_value=0,
            max_value=MAX_WAIT_S,
            default=0,
            help_text=f"Seconds to wait for a change (0 to {MAX_WAIT_S}); needs after_event.",
        )
        after_event = serializers.IntegerField(
            min_value=0,
            max_value=MAX_INT,
            required=False,
            help_text="The last_event already seen: any newer event answers the wait.",
        )

        until = serializers.ChoiceField(
            choices=["change", "end"],
            default="change",
            help_text="change: a newer event answers the wait; end: only the run's end does.",
        )
        compare_with = serializers.IntegerField(
            min_value=1,
            max_value=MAX_INT,
            required=False,
            help_text="A run to compare with once this one has finished (`comparison`).",
        )

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            if data["wait"] and "after_event" not in data:
                raise serializers.ValidationError(
                    {"after_event": ["give the last_event you have seen to wait for a newer one"]}
                )
            return data

    class ComparedSerializer(RunDetailSerializer):
        class ComparisonSerializer(serializers.Serializer[Any]):
            class RanSerializer(serializers.Serializer[Any]):
                step = serializers.CharField()
                why = serializers.CharField(help_text="Why it ran (the step's reuse summary).")

            run = serializers.IntegerField(help_text="The run compared with.")
            ran = RanSerializer(many=True, help_text="This run's steps that were not reused.")
            metrics = serializers.ListField(
                child=serializers.DictField(),
                help_text='The comparison\'s metric rows: {"key", "a", "b", "same", "delta"}.',
            )

        comparison = ComparisonSerializer(
            read_only=True,
            allow_null=True,
            help_text="With compare_with, once the run has finished; else null.",
        )

        class Meta(RunDetailSerializer.Meta):
            fields = [*RunDetailSerializer.Meta.fields, "comparison"]

    @extend_schema(parameters=[QuerySerializer], responses={200: ComparedSerializer})
    def get(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        options = query.validated_data
        other = (
            run_for(request, workspace, options["compare_with"])
            if "compare_with" in options
            else None
        )
        if options["wait"] and run.status not in RUN_TERMINAL:
            if options["until"] == "end":
                ready = PipelineRun.objects.filter(pk=run.pk, status__in=RUN_TERMINAL).exists
            else:
                ready = Event.objects.filter(run_id=run.pk, pk__gt=options["after_event"]).exists
            wakeups.wait(run.pk, ready, timeout=options["wait"])
        body = run_detail(run)
        finished = body["status"] in RUN_TERMINAL
        body["comparison"] = loop_comparison(other, run) if other and finished else None
        return Response(body)


class RunCancelApi(ApiMixin, APIView):
    """Cancel a run: unstarted steps at once, running ones when their worker kills them."""

    @extend_schema(request=None, responses={200: RunDetailSerializer})
    def post(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        if not services.run_cancel(run, user=request.user):
            raise DomainError(
                "run_finished",
                f"Run {run.pk} has already finished ({run.status}).",
                status_code=status.HTTP_409_CONFLICT,
            )
        return Response(run_detail(run))


class ForgottenSerializer(serializers.Serializer[Any]):
    forgotten = serializers.IntegerField(help_text="Step runs no longer reused.")


class RunForgetApi(ApiMixin, APIView):
    """Forget the run's cached results: later runs recompute its steps (history stays)."""

    @extend_schema(request=None, responses={200: ForgottenSerializer})
    def post(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        count = services.steps_forget(run.steps.all(), what=f"run {run.pk}", user=request.user)
        return Response({"forgotten": count})


class StepForgetApi(ApiMixin, APIView):
    """Forget one step's cached result: the next run that needs it recomputes it."""

    @extend_schema(request=None, responses={200: ForgottenSerializer})
    def post(self, request: Request, workspace: str, run_id: int, step: str) -> Response:
        found = selectors.get_step_for_user(request.user, workspace, run_id, step, Role.EDITOR)
        steps = StepRun.objects.filter(pk=found.pk)
        what = f"step {found.name} of run {run_id}"
        return Response({"forgotten": services.steps_forget(steps, what=what, user=request.user)})


class ModuleVersionForgetApi(ApiMixin, APIView):
    """Forget every cached result of a module version (say it had a bug that its code
    digest does not show: a changed dataset behind a URL, a flaky GPU)."""

    @extend_schema(request=None, responses={200: ForgottenSerializer})
    def post(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = get_module_version_for_user(request.user, workspace, name, number, Role.EDITOR)
        steps = StepRun.objects.filter(module_version=version)
        count = services.steps_forget(steps, what=f"module {version.ref}", user=request.user)
        return Response({"forgotten": count})


class RunRerunApi(ApiMixin, APIView):
    """Run the same version with the same overrides again, reusing what succeeded; with
    `from_step`, that step and everything downstream of it run again."""

    class InputSerializer(serializers.Serializer[Any]):
        from_step = serializers.CharField(required=False, allow_null=True, max_length=100)

    @extend_schema(request=InputSerializer, responses={201: RunDetailSerializer})
    def post(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        from_step = data.validated_data.get("from_step")
        if from_step and from_step not in run.pipeline_version.spec["steps"]:
            raise DomainError(
                "invalid",
                "No such step.",
                {"from_step": [f"run {run.pk} has no step {from_step!r}"]},
            )
        new = services.run_rerun(run, from_step=from_step, user=request.user)
        return Response(run_detail(new), status=status.HTTP_201_CREATED)


class RunCloneApi(ApiMixin, APIView):
    """A run of the same pipeline with other module versions or params: `changes` make a
    new pipeline version (parent: the run's), `params` apply on top; the rest is reused."""

    class InputSerializer(serializers.Serializer[Any]):
        changes = JsonObjectField(
            required=False,
            default=dict,
            help_text='{step: {"module"?: "name@N", "params"?: {...}, "inputs"?: {...}}}',
        )
        params = JsonObjectField(required=False, default=dict, help_text='{"step.param": value}')
        message = serializers.CharField(allow_blank=True, required=False, default="")

    @extend_schema(request=InputSerializer, responses={201: RunDetailSerializer})
    def post(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        new = services.run_clone(
            run,
            changes=data.validated_data["changes"],
            param_overrides=data.validated_data["params"],
            message=data.validated_data["message"],
            user=request.user,
        )
        return Response(run_detail(new), status=status.HTTP_201_CREATED)


class RunEventListApi(ApiMixin, generics.ListAPIView[Event]):
    """A run's timeline: every status change of the run and its steps, oldest first."""

    queryset = Event.objects.none()

    class OutputSerializer(serializers.ModelSerializer[Event]):
        step = serializers.CharField(source="step.name", allow_null=True, default=None)

        class Meta:
            model = Event
            fields = ["at", "step", "old_status", "new_status", "reason", "message", "attempt"]

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        step = filters.CharFilter(field_name="step__name")

        class Meta:
            model = Event
            fields = ["step"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[Event]:
        run = run_for(self.request, self.kwargs["workspace"], self.kwargs["run_id"])
        return Event.objects.filter(run=run).select_related("step").order_by("at", "id")


class RunLineageApi(ApiMixin, APIView):
    """The run's lineage graph: its steps, the artifacts they read and wrote, the steps they
    reused, the runs it was cloned or rerun from, its sweep."""

    class OutputSerializer(serializers.Serializer[Any]):
        run = serializers.IntegerField()
        nodes = serializers.ListField(
            child=serializers.DictField(),
            help_text='{"id", "kind": run|step|artifact|sweep, "label", ...}',
        )
        edges = serializers.ListField(
            child=serializers.DictField(),
            help_text='{"source", "target", "kind": input|output|reused_from|step_of|'
            'cloned_from|rerun_of|sweep, "label"?}',
        )

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, run_id: int) -> Response:
        run = run_for(request, workspace, run_id)
        return Response(self.OutputSerializer(selectors.run_lineage(run)).data)


class _AnyContent(BaseContentNegotiation):
    """Downloads answer whatever the client accepts; their errors are JSON."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class RunOutputsZipApi(ApiMixin, APIView):
    """Every output of the run (or of the `step`s named) as one streamed zip, with
    manifest.json first: {"run", "files": [{"path", "sha256", "size", "step", "output"}],
    "lineage"}."""

    content_negotiation_class = _AnyContent

    class QuerySerializer(serializers.Serializer[Any]):
        step = serializers.ListField(
            child=serializers.CharField(max_length=100),
            required=False,
            help_text="Only these steps' outputs (repeat the parameter for several).",
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "step",
                OpenApiTypes.STR,
                many=True,
                required=False,
                description="Only these steps' outputs (repeat for several).",
            )
        ],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, workspace: str, run_id: int) -> HttpResponseBase:
        run = run_for(request, workspace, run_id)
        query = self.QuerySerializer(data={"step": request.query_params.getlist("step")})
        query.is_valid(raise_exception=True)
        response = run_zip_response(run, query.validated_data.get("step") or None)
        return audited(response, request.user, run=run)


class RunCompareApi(ApiMixin, APIView):
    """Runs side by side. `?runs=1,2,3` (2 to 10 runs): params (those that differ first),
    metrics (each step's final value, the best of each row marked by its direction), the
    step-wise series, and per step which runs share its cache key. `?a=&b=`: two runs' step
    outcomes, module versions, params and metrics with their deltas."""

    class QuerySerializer(serializers.Serializer[Any]):
        a = serializers.IntegerField(min_value=1, max_value=MAX_INT, help_text="A run id.")
        b = serializers.IntegerField(min_value=1, max_value=MAX_INT, help_text="Another run id.")

    class ManyQuerySerializer(serializers.Serializer[Any]):
        runs = serializers.CharField(
            required=False,
            max_length=400,
            help_text="2 to 10 run ids, comma-separated (then `a` and `b` are not read).",
        )
        a = serializers.IntegerField(required=False, help_text="With `b`: two runs' diff.")
        b = serializers.IntegerField(required=False)

    class ManySerializer(serializers.Serializer[Any]):
        class SideSerializer(serializers.Serializer[Any]):
            id = serializers.IntegerField()
            status = RunStatusField()
            pipeline = serializers.CharField()
            version = serializers.IntegerField()
            param_overrides = serializers.JSONField()
            created_by = serializers.CharField(allow_null=True)

        class ParamRowSerializer(serializers.Serializer[Any]):
            key = serializers.CharField(help_text="step.param")
            values = serializers.ListField(
                child=serializers.JSONField(allow_null=True), help_text="In the runs' order."
            )
            same = serializers.BooleanField()

        class MetricRowSerializer(serializers.Serializer[Any]):
            key = serializers.CharField(help_text="step.metric")
            values = serializers.ListField(child=serializers.FloatField(allow_null=True))
            same = serializers.BooleanField()
            direction = serializers.ChoiceField(
                choices=["min", "max"], help_text="Which end is better."
            )
            best = serializers.ListField(
                child=serializers.BooleanField(), help_text="Which values are the row's best."
            )

        class StepRowSerializer(serializers.Serializer[Any]):
            class StepCellSerializer(serializers.Serializer[Any]):
                run = serializers.IntegerField()
                status = serializers.CharField(allow_null=True)
                reused_from_run = serializers.IntegerField(allow_null=True)
                key = serializers.CharField(allow_null=True, help_text="The step's cache key.")
                group = serializers.CharField(
                    allow_null=True, help_text="A letter per distinct key: equal letters share it."
                )
                shared = serializers.BooleanField()

            name = serializers.CharField()
            cells = StepCellSerializer(many=True, help_text="In the runs' order.")
            keys = serializers.IntegerField(help_text="Distinct cache keys among the runs.")

        class DifferencesSerializer(serializers.Serializer[Any]):
            params = serializers.IntegerField()
            metrics = serializers.IntegerField()

        runs = SideSerializer(many=True)
        params = ParamRowSerializer(many=True)
        metrics = MetricRowSerializer(many=True)
        steps = StepRowSerializer(many=True)
        series = serializers.JSONField(
            help_text='{"step · metric": {"run id": [[index, value], ...]}}: step-wise metrics.'
        )
        differences = DifferencesSerializer()

    class OutputSerializer(serializers.Serializer[Any]):
        class SideSerializer(serializers.Serializer[Any]):
            id = serializers.IntegerField()
            status = RunStatusField()
            pipeline = serializers.CharField()
            version = serializers.IntegerField()
            param_overrides = serializers.JSONField()
            created_by = serializers.CharField(allow_null=True)

        class StepRowSerializer(serializers.Serializer[Any]):
            name = serializers.CharField()
            a_status = serializers.CharField(allow_null=True)
            b_status = serializers.CharField(allow_null=True)
            a_duration_s = serializers.FloatField(allow_null=True)
            b_duration_s = serializers.FloatField(allow_null=True)
            a_reused_from_run = serializers.IntegerField(allow_null=True)
            b_reused_from_run = serializers.IntegerField(allow_null=True)
            same_key = serializers.BooleanField()

        class ModuleRowSerializer(serializers.Serializer[Any]):
            key = serializers.CharField(help_text="The step.")
            a = serializers.CharField(allow_null=True, help_text="name@N")
            b = serializers.CharField(allow_null=True)
            same = serializers.BooleanField()
            same_code = serializers.BooleanField()

        class ParamRowSerializer(serializers.Serializer[Any]):
            key = serializers.CharField(help_text="step.param")
            a = serializers.JSONField(allow_null=True)
            b = serializers.JSONField(allow_null=True)
            same = serializers.BooleanField()

        class MetricRowSerializer(serializers.Serializer[Any]):
            key = serializers.CharField(help_text="step.metric")
            a = serializers.FloatField(allow_null=True)
            b = serializers.FloatField(allow_null=True)
            same = serializers.BooleanField()
            delta = serializers.FloatField(allow_null=True, help_text="b - a")

        class DifferencesSerializer(serializers.Serializer[Any]):
            params = serializers.IntegerField()
            modules = serializers.IntegerField()
            metrics = serializers.IntegerField()

        a = SideSerializer()
        b = SideSerializer()
        steps = StepRowSerializer(many=True)
        modules = ModuleRowSerializer(many=True)
        params = ParamRowSerializer(many=True)
        metrics = MetricRowSerializer(many=True)
        differences = DifferencesSerializer()

    @extend_schema(
        parameters=[ManyQuerySerializer],
        responses={
            200: PolymorphicProxySerializer(
                component_name="RunComparison",
                serializers=[OutputSerializer, ManySerializer],
                resource_type_field_name=None,
            )
        },
    )
    def get(self, request: Request, workspace: str) -> Response:
        workspace_of(request, workspace)  # a stranger gets 404 before any 400
        if "runs" in request.query_params:
            ids = compare_ids(request.query_params.getlist("runs"))
            runs = selectors.get_runs_for_user(request.user, workspace, ids)
            comparison = runs_compare(runs)
            return Response(self.ManySerializer(comparison).data)
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        a = run_for(request, workspace, query.validated_data["a"])
        b = run_for(request, workspace, query.validated_data["b"])
        return Response(self.OutputSerializer(run_diff(a, b, contents=False)).data)


# --- steps ---------------------------------------------------------------------------------


def step_for(request: Request, workspace: str, run_id: int, step: str) -> StepRun:
    return selectors.get_step_for_user(request.user, workspace, run_id, step)


class StepDetailApi(ApiMixin, APIView):
    """One step of a run: status, attempts, cache key and its parts, inputs and outputs
    (with their artifacts), and why it was or was not reused."""

    class OutputSerializer(StepRunSerializer):
        class InputRowSerializer(serializers.Serializer[Any]):
            name = serializers.CharField()
            binding = serializers.CharField(help_text="step.output or dataset:NAME@N")
            artifact = ArtifactSerializer(allow_null=True)

        class ReuseSerializer(serializers.Serializer[Any]):
            reused = serializers.BooleanField()
            summary = serializers.CharField()
            compared_run = serializers.IntegerField(allow_null=True)
            saved_s = serializers.FloatField(allow_null=True)

        run = serializers.IntegerField(source="run_id")
        key_parts = serializers.JSONField(
            help_text="What the cache key hashes: code, params, inputs, runtime."
        )
        inputs = serializers.SerializerMethodField()
        reuse = serializers.SerializerMethodField()
        waiting_for = serializers.SerializerMethodField(
            help_text='Why a queued step waits: "waiting for a worker on queue gpu" when no '
            'live worker consumes its queue, else "".'
        )

        class Meta(StepRunSerializer.Meta):
            fields = [
                "run",
                *StepRunSerializer.Meta.fields,
                "key_parts",
                "inputs",
                "reuse",
                "waiting_for",
            ]

        def get_waiting_for(self, obj: StepRun) -> str:
            return fleet.waiting_for(obj)

        @extend_schema_field(InputRowSerializer(many=True))
        def get_inputs(self, obj: StepRun) -> Any:
            return self.InputRowSerializer(self.context["io"]["inputs"], many=True).data

        @extend_schema_field(ReuseSerializer)
        def get_reuse(self, obj: StepRun) -> dict[str, Any]:
            return self.ReuseSerializer(self.context["reuse"]).data

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, run_id: int, step: str) -> Response:
        row = step_for(request, workspace, run_id, step)
        outputs = StepOutput.objects.select_related("artifact").order_by("name")
        prefetch_related_objects([row], Prefetch("outputs", queryset=outputs))
        context = {"io": selectors.step_io(row), "reuse": selectors.reuse_explanation(row)}
        return Response(self.OutputSerializer(row, context=context).data)


class StepLogApi(ApiMixin, APIView):
    """A step attempt's log from byte `offset`; poll again from `next_offset` to tail it
    (`complete` once the step has finished and everything was read)."""

    class QuerySerializer(serializers.Serializer[Any]):
        offset = serializers.IntegerField(
            required=False,
            default=None,
            allow_null=True,
            min_value=0,
            max_value=MAX_INT,
            help_text="Byte offset to read from; left out: the last 256 KiB.",
        )
        attempt = serializers.IntegerField(
            required=False,
            min_value=1,
            max_value=MAX_INT,
            help_text="Which attempt (default: the latest).",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        attempt = serializers.IntegerField()
        attempts = serializers.ListField(child=serializers.IntegerField())
        offset = serializers.IntegerField(help_text="Where `text` starts.")
        next_offset = serializers.IntegerField(help_text="Pass as `offset` to read on.")
        text = serializers.CharField(allow_blank=True)
        complete = serializers.BooleanField(help_text="The step finished and all was read.")
        from_run = serializers.IntegerField(
            allow_null=True, help_text="A reused step's log is its source's: that run."
        )

    @extend_schema(parameters=[QuerySerializer], responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, run_id: int, step: str) -> Response:
        asked = step_for(request, workspace, run_id, step)
        row = selectors.results_source(asked)  # a reused step's log is its source's
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        attempt = query.validated_data.get("attempt") or max(row.attempt, 1)
        offset = query.validated_data["offset"]
        # Read the status before the log, so `complete` never hides a last chunk.
        finished = StepRun.objects.filter(pk=row.pk, status__in=STEP_FINAL).exists()
        tail = selectors.step_log_tail(row, attempt, offset)
        text = tail["text"]
        start = tail["skipped"] if offset is None else offset
        data = {
            "attempt": attempt,
            "attempts": selectors.step_log_attempts(row),
            "offset": start,
            "next_offset": tail["next"],
            "text": text,
            "complete": finished and attempt >= row.attempt,
            "from_run": row.run_id if row.pk != asked.pk else None,
        }
        return Response(self.OutputSerializer(data).data)


STEP_FINAL = (StepStatus.SUCCEEDED, StepStatus.REUSED, StepStatus.FAILED, StepStatus.CANCELED)


class StepMetricListApi(ApiMixin, generics.ListAPIView[Metric]):
    """A step's metric points in name and index order (`index` is a series' step number;
    null for a single value). A reused step's are its source's (see its `reused_from`)."""

    queryset = Metric.objects.none()

    class OutputSerializer(serializers.ModelSerializer[Metric]):
        class Meta:
            model = Metric
            fields = ["name", "value", "index", "at"]

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        name = filters.CharFilter()

        class Meta:
            model = Metric
            fields = ["name"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[Metric]:
        kwargs = self.kwargs
        row = step_for(self.request, kwargs["workspace"], kwargs["run_id"], kwargs["step"])
        # A reused step's metrics are its source's (it ran nothing itself).
        source = selectors.results_source(row)
        return Metric.objects.filter(step=source).order_by("name", "index", "id")


# --- artifacts -----------------------------------------------------------------------------


class ArtifactDetailApi(ApiMixin, APIView):
    """An artifact by its sha256: size, media type, and which steps produced and read it."""

    class UseSerializer(serializers.Serializer[Any]):
        run = serializers.IntegerField()
        step = serializers.CharField()
        name = serializers.CharField(help_text="The output's or input's name.")

    class OutputSerializer(ArtifactSerializer):
        producers = serializers.ListField(child=serializers.DictField())
        consumers = serializers.ListField(child=serializers.DictField())
        datasets = serializers.ListField(child=serializers.CharField(), help_text="NAME@N")

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request, workspace: str, sha256: str) -> Response:
        artifact = selectors.get_artifact_for_user(request.user, workspace, sha256)
        usage = selectors.artifact_usage(artifact)

        def uses(rows: list[Any]) -> list[dict[str, Any]]:
            return [{"run": r.step.run_id, "step": r.step.name, "name": r.name} for r in rows]

        data = {
            **ArtifactSerializer(artifact).data,
            "producers": uses(usage["producers"]),
            "consumers": uses(usage["consumers"]),
            "datasets": [f"{v.dataset.name}@{v.number}" for v in usage["datasets"]],
        }
        return Response(self.OutputSerializer(data).data)


class ArtifactDownloadApi(ApiMixin, APIView):
    """An artifact's bytes, streamed: ETag is its sha256 (If-None-Match gives 304), one
    `Range` gives 206 with Content-Range (416 when it cannot be satisfied); a directory
    comes as a zip of its files."""

    content_negotiation_class = _AnyContent

    @extend_schema(
        parameters=[
            OpenApiParameter("Range", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
        ],
        responses={
            (200, "*/*"): OpenApiTypes.BINARY,
            (206, "*/*"): OpenApiTypes.BINARY,
            302: OpenApiResponse(
                description="With STEPWORKS_S3_PRESIGNED=1: to a short-lived URL of the bucket."
            ),
            304: OpenApiResponse(description="Not modified (If-None-Match matched)."),
            416: OpenApiResponse(description="The range cannot be satisfied."),
        },
    )
    def get(self, request: Request, workspace: str, sha256: str) -> HttpResponseBase:
        artifact = selectors.get_artifact_for_user(request.user, workspace, sha256)
        return audited(artifact_download_response(request, artifact), request.user, artifact)


class _RunningStepSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    workspace = serializers.CharField()
    run_id = serializers.IntegerField()
    pipeline = serializers.CharField()
    name = serializers.CharField()
    attempt = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)


class _WorkerSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(help_text='"host:pid", as a step names its worker')
    host = serializers.CharField()
    pid = serializers.IntegerField()
    runtime = serializers.CharField(help_text="runtime fingerprint (a step's cache key part)")
    sandbox = serializers.CharField(help_text='"required" (steps isolated) or "off"')
    started_at = serializers.DateTimeField()
    last_seen = serializers.DateTimeField(help_text="last heartbeat")
    alive = serializers.BooleanField(help_text="a heartbeat within one lease")
    steps = _RunningStepSerializer(many=True, help_text="the steps it runs now")


class _QueueSerializer(serializers.Serializer[Any]):
    queue = serializers.CharField()
    queued = serializers.IntegerField(help_text="steps queued, from the database")
    broker = serializers.IntegerField(
        allow_null=True, help_text="messages waiting in the broker (null when embedded)"
    )
    broker_error = serializers.CharField(allow_blank=True)


class WorkerListApi(ApiMixin, APIView):
    """Every worker process (staff only): host, pid, runtime, sandbox, started, last
    heartbeat, alive or not, and the steps it runs now; and each step queue's depth."""

    permission_classes = [IsAdminUser]
    pagination_class = None

    class OutputSerializer(serializers.Serializer[Any]):
        workers = _WorkerSerializer(many=True)
        queues = _QueueSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        body = {"workers": fleet.workers_overview(), "queues": fleet.queue_depths()}
        return Response(self.OutputSerializer(body).data)
