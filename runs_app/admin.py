"""Admin console for run-time rows.

Runs and step runs are view-only here: their status (and everything the scheduler or a
worker writes) changes only through runs_app/scheduler.py, so the one write the admin offers
is the "Cancel selected runs" action, which calls the scheduler. Artifacts, step inputs and
outputs, events and metrics are records of what happened: never added or edited here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import CharField, Count, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, Concat
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat, truncatechars
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from artifacts.models import Artifact, ArtifactMember, DeletedArtifact
from runs_app.models import (
    Event,
    Metric,
    PipelineRun,
    RetentionPolicy,
    RunListPrefs,
    RunTag,
    StepInput,
    StepLog,
    StepOutput,
    StepRun,
    StepStatus,
    Sweep,
    SweepEvent,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WorkerHeartbeat,
)
from runs_app.selectors import live_workers_unisolated
from workspaces.admin import ImmutableMixin, ViewOnlyMixin, short_digest
from workspaces.conf import engine

# Django's admin classes can't be subscripted at run time (only django-stubs-ext's monkeypatch
# would allow it): the type checker sees each base with its model, the interpreter without.


class IdSearchMixin:
    """A number typed in the search box also matches these id columns exactly.

    Admin's own `=id` lookup casts the column to text (no index); on the big tables an
    exact integer match is what keeps the search cheap.
    """

    id_search_fields: tuple[str, ...] = ("id",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip().lstrip("#")
        if term.isdigit():
            matches = Q()
            for field in self.id_search_fields:
                matches |= Q(**{field: int(term)})
            return queryset.filter(matches), False
        found: tuple[QuerySet[Any], bool] = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        return found


# --- artifacts -------------------------------------------------------------------------------
@admin.register(Artifact)
class ArtifactAdmin(ViewOnlyMixin, admin.ModelAdmin[Artifact]):
    """Deletable: every reference to an artifact row is a PROTECT foreign key, so only an
    unreferenced row can go (its bytes stay in the store, shared by sha256)."""

    list_display = ["digest", "workspace", "kind", "media_type", "size_display", "created_at"]
    list_filter = ["kind", "workspace", "media_type"]
    search_fields = ["^sha256", "media_type", "storage_name"]
    list_select_related = ["workspace"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="sha256", ordering="sha256")
    def digest(self, obj: Artifact) -> str:
        return short_digest(obj.sha256)

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: Artifact) -> str:
        return filesizeformat(obj.size)


# --- sweeps ----------------------------------------------------------------------------------
@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin[Sweep]):
    """Made and extended by the sweeps service (it expands the runs); only the name is edited."""

    list_display = ["name", "workspace", "base_version", "replicates", "run_count", "created_by"]
    list_filter = ["workspace"]
    search_fields = ["name", "base_version__pipeline__name"]
    list_select_related = ["workspace", "base_version__pipeline", "created_by"]
    readonly_fields = [
        "workspace",
        "base_version",
        "axes",
        "replicates",
        "seed_params",
        "created_by",
        "created_at",
    ]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Sweep]:
        return super().get_queryset(request).annotate(run_count=Count("runs"))

    @admin.display(description="runs", ordering="run_count")
    def run_count(self, obj: Sweep) -> int:
        count: int = obj.run_count  # type: ignore[attr-defined]
        return count


# --- runs --------------------------------------------------------------------------------------
class EventInline(ImmutableMixin, admin.TabularInline[Event, PipelineRun]):
    model = Event
    extra = 0
    fields = readonly_fields = (
        "at",
        "step",
        "old_status",
        "new_status",
        "reason",
        "attempt",
        "message",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        return super().get_queryset(request).select_related("step")


class RunTagInline(ImmutableMixin, admin.TabularInline[RunTag, PipelineRun]):
    model = RunTag
    extra = 0
    fields = readonly_fields = ("name", "created_by", "created_at")


@admin.register(RunTag)
class RunTagAdmin(admin.ModelAdmin[RunTag]):
    """People's labels on runs: the operator may remove a wrong one (the run stays as it
    was; only its label goes)."""

    list_display = ["name", "run", "created_by", "created_at"]
    search_fields = ["name"]
    list_select_related = ["run", "created_by"]
    readonly_fields = ["run", "name", "created_by", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class StepRunInline(ImmutableMixin, admin.TabularInline[StepRun, PipelineRun]):
    model = StepRun
    extra = 0
    show_change_link = True
    fields = readonly_fields = (
        "position",
        "name",
        "module_version",
        "status",
        "attempt",
        "failure_reason",
        "started_at",
        "finished_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[StepRun]:
        return super().get_queryset(request).select_related("module_version__module")


@admin.register(PipelineRun)
class PipelineRunAdmin(IdSearchMixin, ViewOnlyMixin, admin.ModelAdmin[PipelineRun]):
    list_display = [
        "__str__",
        "workspace",
        "pipeline_version",
        "status",
        "failure_reason",
        "created_by",
        "created_at",
        "finished_at",
        "sweep",
    ]
    list_filter = ["status", "failure_reason", "reuse", "cancel_requested", "workspace"]
    search_fields = ["pipeline_version__pipeline__name", "created_by__username", "sweep__name"]
    list_select_related = ["workspace", "pipeline_version__pipeline", "created_by", "sweep"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    inlines = [RunTagInline, StepRunInline, EventInline]
    actions = ["cancel_runs", "forget_runs"]

    @admin.action(description="Forget cached results of selected runs", permissions=["cancel"])
    def forget_runs(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        from runs_app.services import steps_forget

        steps = StepRun.objects.filter(run__in=queryset)
        count = steps_forget(steps, what="the admin", user=request.user)
        self.message_user(
            request,
            f"Forgot {count} cached result(s): later runs recompute them.",
            messages.SUCCESS,
        )

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[PipelineRun]) -> None:
        # Imported here so that loading the admin (every process, at start-up) does not pull
        # in the engine: the scheduler imports the executor's runtime and the spec parser.
        from runs_app.services import run_cancel

        canceled = finished = 0
        for run in queryset.select_related(None).only("pk", "workspace_id"):
            if run_cancel(run, user=request.user):
                canceled += 1
            else:
                finished += 1
        if canceled:
            self.message_user(
                request,
                f"Canceled {canceled} run(s); running steps stop when their worker kills them.",
                messages.SUCCESS,
            )
        if finished:
            self.message_user(
                request,
                f"{finished} run(s) had already finished and were left as they were.",
                messages.WARNING,
            )

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        # Canceling is a change to a run, though the change form itself is view-only.
        return request.user.has_perm("runs_app.change_pipelinerun")


class ArtifactLinkInline(ImmutableMixin, admin.TabularInline[StepInput | StepOutput, StepRun]):
    """A step's inputs or outputs: a name and the artifact it names."""

    extra = 0
    fields = readonly_fields = ("name", "artifact")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("artifact")


class StepInputInline(ArtifactLinkInline):
    model = StepInput


class StepOutputInline(ArtifactLinkInline):
    model = StepOutput


FORGOT = "Forgot {} cached result(s): later runs recompute them."


@admin.register(StepRun)
class StepRunAdmin(IdSearchMixin, ImmutableMixin, admin.ModelAdmin[StepRun]):
    """View-only; a step is deleted with its run, never on its own (the run would lie)."""

    id_search_fields = ("id", "run_id")
    list_display = [
        "__str__",
        "workspace",
        "module_version",
        "status",
        "attempt",
        "failure_reason",
        "worker",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "failure_reason", "workspace"]
    search_fields = ["name", "^cache_key", "worker"]
    list_select_related = ["workspace", "module_version__module"]
    raw_id_fields = ["run", "module_version", "reused_from", "following"]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [StepInputInline, StepOutputInline]
    actions = ["forget_steps"]

    @admin.action(description="Forget cached results of selected steps", permissions=["forget"])
    def forget_steps(self, request: HttpRequest, queryset: QuerySet[StepRun]) -> None:
        from runs_app.services import steps_forget

        count = steps_forget(queryset, what="the admin", user=request.user)
        self.message_user(
            request,
            f"Forgot {count} cached result(s): later runs recompute them.",
            messages.SUCCESS,
        )

    def has_forget_permission(self, request: HttpRequest) -> bool:
        # Forgetting changes which steps are reuse sources, not the step rows' history.
        return request.user.has_perm("runs_app.change_steprun")


@admin.register(StepInput)
class StepInputAdmin(IdSearchMixin, ImmutableMixin, admin.ModelAdmin[StepInput | StepOutput]):
    id_search_fields = ("step_id",)
    list_display = ["step", "name", "artifact"]
    search_fields = ["name", "^artifact__sha256"]
    list_select_related = ["step", "artifact"]
    raw_id_fields = ["step", "artifact"]
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(StepOutput)
class StepOutputAdmin(StepInputAdmin):
    pass


@admin.register(Event)
class EventAdmin(IdSearchMixin, ImmutableMixin, admin.ModelAdmin[Event]):
    """The audit trail: view-only and never deleted on its own."""

    id_search_fields = ("run_id",)
    list_display = ["at", "run", "step", "old_status", "new_status", "reason", "attempt"]
    list_filter = ["new_status", "reason"]
    search_fields = ["message"]
    list_select_related = ["run", "step"]
    raw_id_fields = ["run", "step"]
    date_hierarchy = "at"
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(SweepEvent)
class SweepEventAdmin(ImmutableMixin, admin.ModelAdmin[SweepEvent]):
    """A sweep's audit trail (created, extended, canceled, promoted): view-only."""

    list_display = ["at", "sweep", "kind", "by"]
    list_filter = ["kind"]
    list_select_related = ["sweep", "by"]
    raw_id_fields = ["sweep"]
    fields = ("sweep", "kind", "data", "by", "at")
    readonly_fields = fields
    ordering = ["-id"]


@admin.register(Metric)
class MetricAdmin(IdSearchMixin, ImmutableMixin, admin.ModelAdmin[Metric]):
    id_search_fields = ("step_id", "step__run_id")
    list_display = ["name", "value", "index", "step", "at"]
    search_fields = ["name"]
    list_select_related = ["step"]
    raw_id_fields = ["step"]
    date_hierarchy = "at"
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(StepLog)
class StepLogAdmin(IdSearchMixin, ViewOnlyMixin, admin.ModelAdmin[StepLog]):
    """View-only; deletable, since old logs are the one thing worth freeing space from."""

    id_search_fields = ("step_id", "step__run_id")
    list_display = ["step", "attempt", "offset", "excerpt"]
    list_select_related = ["step"]
    raw_id_fields = ["step"]
    ordering = ["-id"]
    show_full_result_count = False

    @admin.display(description="text")
    def excerpt(self, obj: StepLog) -> str:
        return truncatechars(obj.text, 100)


@admin.register(DeletedArtifact)
class DeletedArtifactAdmin(ViewOnlyMixin, admin.ModelAdmin[DeletedArtifact]):
    """Tombstones the collector leaves: links to these digests answer 410 Gone."""

    list_display = ["sha256", "workspace", "deleted_at"]
    search_fields = ["^sha256"]
    list_select_related = ["workspace"]
    ordering = ["-deleted_at"]


@admin.register(ArtifactMember)
class ArtifactMemberAdmin(ViewOnlyMixin, admin.ModelAdmin[ArtifactMember]):
    """Which files each directory artifact holds: the collector keeps them while it is kept."""

    list_display = ["id", "directory", "member"]
    list_select_related = ["directory", "member"]
    search_fields = ["^directory__sha256", "^member__sha256"]
    ordering = ["-id"]


@admin.register(RunListPrefs)
class RunListPrefsAdmin(admin.ModelAdmin[RunListPrefs]):
    """The runs list columns each user picked per workspace (delete one to give that user
    the defaults again)."""

    list_display = ["user", "workspace", "columns", "updated_at"]
    list_select_related = ["user", "workspace"]
    readonly_fields = ["user", "workspace", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(RetentionPolicy)
class RetentionPolicyAdmin(admin.ModelAdmin[RetentionPolicy]):
    """A workspace's retention policy (its owners edit it on the workspace's pages too)."""

    list_display = ["workspace", "enabled", "keep_last", "keep_days", "updated_at", "updated_by"]
    list_filter = ["enabled"]
    list_select_related = ["workspace", "updated_by"]
    raw_id_fields = ["workspace", "updated_by"]
    readonly_fields = ["updated_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ViewOnlyMixin, admin.ModelAdmin[WorkerHeartbeat]):
    """Written by the workers; a stale row may be deleted."""

    list_display = [
        "__str__",
        "runtime_short",
        "isolated",
        "started_at",
        "last_seen",
        "alive",
        "running",
    ]
    list_filter = ["sandbox"]
    search_fields = ["host", "^runtime"]
    ordering = ["-last_seen"]
    readonly_fields = ["running_steps"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkerHeartbeat]:
        # The count of its running steps in the list's one query: a step names its worker
        # "host:pid" (StepRun.worker); running steps are few (the reaper's index).
        running = (
            StepRun.objects.filter(
                status=StepStatus.RUNNING,
                worker=Concat(OuterRef("host"), Value(":"), Cast(OuterRef("pid"), CharField())),
            )
            .order_by()
            .values("worker")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return super().get_queryset(request).annotate(running_count=Coalesce(Subquery(running), 0))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        unisolated = live_workers_unisolated()
        if unisolated:
            self.message_user(
                request,
                f"Steps are not isolated on {len(unisolated)} live worker(s) "
                f"({', '.join(unisolated)}): STEPWORKS_STEP_SANDBOX=off lets every step read "
                "and write everything its worker can.",
                level=messages.WARNING,
            )
        return super().changelist_view(request, extra_context)

    @admin.display(boolean=True, description="steps isolated", ordering="sandbox")
    def isolated(self, obj: WorkerHeartbeat) -> bool:
        return obj.sandbox == "required"

    @admin.display(description="runtime", ordering="runtime")
    def runtime_short(self, obj: WorkerHeartbeat) -> str:
        return short_digest(obj.runtime)

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: WorkerHeartbeat) -> bool:
        # The same freshness the reaper uses: seen within one lease.
        lease = timedelta(seconds=engine().lease_s)
        return obj.last_seen >= timezone.now() - lease

    @admin.display(description="running steps", ordering="running_count")
    def running(self, obj: WorkerHeartbeat) -> str:
        count = int(getattr(obj, "running_count", 0))
        if not count:
            return "0"
        url = reverse("admin:runs_app_steprun_changelist")
        query = urlencode({"status__exact": StepStatus.RUNNING, "worker": str(obj)})
        return format_html('<a href="{}?{}">{}</a>', url, query, count)

    @admin.display(description="running steps")
    def running_steps(self, obj: WorkerHeartbeat) -> str:
        steps = (
            StepRun.objects.filter(status=StepStatus.RUNNING, worker=str(obj))
            .select_related("workspace")
            .order_by("started_at", "id")
        )
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> ({}, attempt {}, since {})</li>',
            (
                (
                    reverse("admin:runs_app_steprun_change", args=[step.pk]),
                    step,
                    step.workspace.slug,
                    step.attempt,
                    step.started_at,
                )
                for step in steps
            ),
        )
        return format_html("<ul>{}</ul>", items) if items else "none"


# --- webhooks ------------------------------------------------------------------------------


class WebhookAttemptInline(ImmutableMixin, admin.TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    extra = 0
    fields = readonly_fields = ("number", "status_code", "latency_ms", "error", "at")


@admin.register(Webhook)
class WebhookAdmin(ViewOnlyMixin, admin.ModelAdmin[Webhook]):
    """Added on the workspace's webhooks page by its owners; listed, and deleted, here."""

    list_display = ["url", "workspace", "events", "active", "created_by", "created_at"]
    list_filter = ["active", "workspace"]
    list_select_related = ["workspace", "created_by"]
    search_fields = ["url", "workspace__slug"]
    exclude = ["secret"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ImmutableMixin, admin.ModelAdmin[WebhookDelivery]):
    list_display = ["id", "webhook", "event", "subject", "status", "attempts", "created_at"]
    list_filter = ["status", "event"]
    list_select_related = ["webhook"]
    search_fields = ["subject", "webhook__url"]
    inlines = [WebhookAttemptInline]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ImmutableMixin, admin.ModelAdmin[WebhookAttempt]):
    list_display = ["delivery", "number", "status_code", "latency_ms", "error", "at"]
    list_select_related = ["delivery"]
