"""Run time: runs, step runs, their events, logs and metrics, sweeps.

Status fields are written by runs_app/scheduler.py alone, one conditional UPDATE per
transition, each with an Event row.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from artifacts.models import Artifact
from pipelines_app.models import ModuleVersion, PipelineVersion
from workspaces.models import Workspace


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


RUN_TERMINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED)


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    FOLLOWING = "following", "Following an identical step"
    SUCCEEDED = "succeeded", "Succeeded"
    REUSED = "reused", "Reused"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


STEP_TERMINAL = (StepStatus.SUCCEEDED, StepStatus.REUSED, StepStatus.FAILED, StepStatus.CANCELED)
# A step a worker holds or waits on: neither terminal nor pending.
STEP_IN_FLIGHT = (StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.FOLLOWING)
STEP_DONE_OK = (StepStatus.SUCCEEDED, StepStatus.REUSED)


class FailureReason(models.TextChoices):
    """Why a step or run failed: a closed set. `canceled` is a status, never a reason."""

    USER_ERROR = "user_error", "The step's code raised"
    TIMEOUT = "timeout", "Time limit exceeded"
    WORKER_LOST = "worker_lost", "The worker was lost"
    WORKER_LOST_REPEATEDLY = "worker_lost_repeatedly", "The worker was lost on every attempt"
    PROCESS_DIED = "process_died", "The step's process died"
    OUTPUT_INVALID = "output_invalid", "Undeclared, missing or unserialisable output"
    STORAGE_FULL = "storage_full", "Storage full"
    DEPENDENCY_FAILED = "dependency_failed", "An upstream step failed"
    RUNTIME_MISMATCH = "runtime_mismatch", "No worker has this step's runtime"
    INTERNAL_ERROR = "internal_error", "Internal error"


# The reasons of the events of a step whose worker stopped renewing its lease (requeued, or
# failed for good): /metrics counts them as lease expiries.
LEASE_LOST_REASONS = (FailureReason.WORKER_LOST, FailureReason.WORKER_LOST_REPEATEDLY)


class Sweep(models.Model):
    """A base pipeline version, axes of variants, and replicates; expands into runs.

    `axes` is {step: [{"label", "module"?, "params"?}, ...]}; `seed_params` names the
    `step.param`s replicate r sets to r. Axes are append-only once started.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=200)
    base_version = models.ForeignKey(
        PipelineVersion, on_delete=models.PROTECT, related_name="sweeps"
    )
    axes = models.JSONField(default=dict)
    replicates = models.PositiveIntegerField(default=1)
    seed_params = models.JSONField(default=list)
    # Runs added later (an extended axis) reuse as the first ones did.
    reuse = models.BooleanField(default=True)
    # Set once by sweep_cancel: no run of the sweep starts after it, and axes stay as they are.
    canceled_at = models.DateTimeField(null=True, blank=True)
    # Its runs are started by sweep_expand: in the request that made or grew the sweep for
    # up to STEPWORKS_SWEEP_INLINE_S, then by the expand_sweep actor. `expanding_at` is the
    # expander's heartbeat (the reaper sends another when it stops); `expanded_at` is set
    # when every combination has its run, and cleared when the axes grow.
    expanding_at = models.DateTimeField(null=True, blank=True)
    expanded_at = models.DateTimeField(null=True, blank=True)
    # Fair sharing: at most this many of its runs unfinished at once (null: no cap); the
    # next one starts as one ends, so one big sweep cannot take every worker.
    max_parallel_runs = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(replicates__gte=1), name="sweep_replicates_positive")
        ]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="sweep_recent_idx")]

    def __str__(self) -> str:
        return self.name


NOTE_MAX = 10_000
TAG_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,49}$"


class PipelineRun(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="runs")
    pipeline_version = models.ForeignKey(
        PipelineVersion, on_delete=models.PROTECT, related_name="runs"
    )
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    # {"step.param": value}; applied over the version's params when the run starts.
    param_overrides = models.JSONField(default=dict, blank=True)
    reuse = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=30, choices=FailureReason.choices, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cloned_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones"
    )
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    sweep = models.ForeignKey(
        Sweep, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # In a sweep: {step: variant label, "replicate": r}.
    variant = models.JSONField(default=dict, blank=True)
    # Archived runs are hidden from lists but kept; pinned ones are never deleted.
    archived_at = models.DateTimeField(null=True, blank=True)
    pinned = models.BooleanField(default=False)
    # What a person says of the run (editable, unlike everything else about it).
    note = models.TextField(blank=True, max_length=NOTE_MAX)
    # A sweep's run: its combination (variant and replicate) as a digest, unique in the
    # sweep, so two expanders at once start each combination once.
    variant_key = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(failure_reason="") | Q(status=RunStatus.FAILED),
                name="run_reason_only_when_failed",
            ),
            # One run per combination of a sweep, however many expanders start them.
            models.UniqueConstraint(
                fields=["sweep", "variant_key"],
                condition=Q(sweep__isnull=False) & ~Q(variant_key=""),
                name="run_one_per_sweep_combination",
            ),
        ]
        indexes = [
            # the runs list and the workspace home ("recent runs", "running now")
            models.Index(fields=["workspace", "-created_at"], name="run_recent_idx"),
            models.Index(fields=["workspace", "status"], name="run_status_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}"


class RunTag(models.Model):
    """A label on a run ("baseline", "paper-fig-3"): runs are found by tag (`tag = x`)."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=50)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="run_tag_unique"),
        ]
        indexes = [models.Index(fields=["name", "run"], name="run_tag_name_idx")]

    def __str__(self) -> str:
        return self.name


class StepRun(models.Model):
    """One step of one run; an attempt counter is the fencing token of each claim."""

    # Denormalised from run: the leader constraint below cannot join.
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    position = models.PositiveIntegerField()
    module_version = models.ForeignKey(
        ModuleVersion, on_delete=models.PROTECT, related_name="step_runs"
    )
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.PENDING)
    reuse_allowed = models.BooleanField(default=True)
    # Why a same-key step was not reused although one succeeded (its bytes were missing).
    reuse_note = models.CharField(max_length=500, blank=True)
    # Set by "forget cached result": a succeeded step that is no longer a reuse source.
    reuse_forgotten_at = models.DateTimeField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    timeout_s = models.FloatField(default=3600.0)
    cache_key = models.CharField(max_length=64, blank=True)
    # The parts hashed into cache_key, kept so a person can see why a step was (not) reused.
    key_parts = models.JSONField(default=dict, blank=True)
    reused_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reused_by"
    )
    following = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="followers"
    )
    failure_reason = models.CharField(max_length=30, choices=FailureReason.choices, blank=True)
    failure_message = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # How many of the steps it reads from have not succeeded or been reused yet: a step's
    # completion counts its successors down, and one at 0 (and pending) is ready. So an
    # advance reads the few steps that changed, never the whole run.
    waiting = models.PositiveIntegerField(default=0)
    # The runtime fingerprint its cache key was made with (key_parts["runtime"]): a claim
    # checks it in its one UPDATE.
    runtime = models.CharField(max_length=64, blank=True)
    # The workers ("host:pid") that died while running it: the evidence the reaper weighs
    # before it counts a lost worker against this step (scheduler.step_lease_lost).
    lost_workers = models.JSONField(default=list, blank=True)
    # Its retry policy (the spec's `retries`, else the settings'): a failed attempt whose
    # reason is in `retry_on` runs again, `retries` times at most, after `retry_backoff_s`
    # doubling; `retried` counts those so far.
    retries = models.PositiveIntegerField(default=0)
    retry_on = models.JSONField(default=list, blank=True)
    retry_backoff_s = models.FloatField(default=10.0)
    retried = models.PositiveIntegerField(default=0)
    # A retry waits out its backoff: no claim before this (null: no wait).
    not_before = models.DateTimeField(null=True, blank=True)
    # The spec's `resources`: `queue` routes it to the workers that serve that queue ("":
    # every worker); cpus, memory and gpus are shown.
    queue = models.CharField(max_length=40, blank=True)
    resources = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="step_name_unique_in_run"),
            # In-flight dedup: one leader per key. Queuing a second identical step raises
            # IntegrityError, and the scheduler makes it follow the leader instead.
            models.UniqueConstraint(
                fields=["workspace", "cache_key"],
                condition=Q(status__in=["queued", "running"], reuse_allowed=True),
                name="one_leader_per_cache_key",
            ),
            models.CheckConstraint(
                condition=Q(status__in=StepStatus.values), name="step_status_valid"
            ),
            models.CheckConstraint(
                condition=(Q(status="failed") & ~Q(failure_reason=""))
                | (~Q(status="failed") & Q(failure_reason="")),
                name="step_reason_iff_failed",
            ),
            models.CheckConstraint(
                condition=~Q(status="following") | Q(following__isnull=False),
                name="step_following_has_leader",
            ),
            # No "a reused step has a source" check: its source may be deleted with its run
            # (SET_NULL), and the step then says "reused from a deleted run".
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="step_max_attempts"),
        ]
        indexes = [
            # reuse lookup: a succeeded step with this key in the workspace
            models.Index(fields=["workspace", "cache_key", "status"], name="step_key_idx"),
            # the reaper: queued steps nobody claimed, running steps whose lease expired
            models.Index(fields=["status", "lease_expires_at"], name="step_reaper_idx"),
            # the scheduler: a run's ready steps (pending, waiting 0) and whether any step of
            # a run is still open (its finish)
            models.Index(fields=["run", "status", "waiting"], name="step_run_status_idx"),
            # the runs filter's `metrics.NAME`: the runs whose step reused a matching step
            # (runs_app.query), read from the index alone
            models.Index(
                fields=["reused_from", "run"],
                condition=Q(reused_from__isnull=False),
                name="step_reused_by_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class StepInput(models.Model):
    """An artifact a step read, by input name (pinned when the step is keyed)."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="inputs")
    name = models.CharField(max_length=100)
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="consumers")

    class Meta:
        ordering = ["step", "name"]
        constraints = [models.UniqueConstraint(fields=["step", "name"], name="step_input_unique")]

    def __str__(self) -> str:
        return f"input {self.name} of step {self.step_id}"


class StepOutput(models.Model):
    """An artifact a step produced (or, when reused, linked from its source)."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="outputs")
    name = models.CharField(max_length=100)
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="producers")

    class Meta:
        ordering = ["step", "name"]
        constraints = [models.UniqueConstraint(fields=["step", "name"], name="step_output_unique")]

    def __str__(self) -> str:
        return f"output {self.name} of step {self.step_id}"


class Event(models.Model):
    """One status change of a run (step null) or a step: the timeline and audit trail."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="events")
    step = models.ForeignKey(
        StepRun, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    old_status = models.CharField(max_length=10, blank=True)
    new_status = models.CharField(max_length=10)
    reason = models.CharField(max_length=30, blank=True)
    message = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=0)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["run", "at"], name="event_run_idx"),
            # /metrics' lease expiries: a count over the few events of lost workers (the
            # condition is the query's), never a scan of every transition ever made.
            models.Index(
                fields=["reason"],
                condition=Q(reason__in=["worker_lost", "worker_lost_repeatedly"]),
                name="event_lease_lost_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.old_status or '-'} -> {self.new_status}"


class Metric(models.Model):
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="metrics")
    name = models.CharField(max_length=200)
    value = models.FloatField()
    index = models.IntegerField(null=True, blank=True)  # a series' step number
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "name", "index", "id"]
        indexes = [
            # a metric of some steps (the runs list's columns, the compare page), and the runs
            # filter's final value of a metric: no later `index` of the same step and name
            models.Index(fields=["name", "step", "index"], name="metric_name_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class StepLog(models.Model):
    """A chunk of a step attempt's stdout/stderr, appended while it runs."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="logs")
    attempt = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    text = models.TextField()

    class Meta:
        ordering = ["step", "attempt", "offset"]
        constraints = [
            models.UniqueConstraint(fields=["step", "attempt", "offset"], name="step_log_unique")
        ]

    def __str__(self) -> str:
        return f"log of step {self.step_id} attempt {self.attempt} @{self.offset}"


class WorkerHeartbeat(models.Model):
    """A worker process, alive while last_seen is fresh."""

    host = models.CharField(max_length=200)
    pid = models.IntegerField()
    runtime = models.CharField(max_length=64)
    # "required" (its steps run in the Landlock sandbox) or "off" (they are not isolated).
    sandbox = models.CharField(max_length=16, default="required")
    # How many steps it runs at once (its dramatiq threads): the fleet's capacity, by which
    # the reaper tells a queued step that waits its turn from one whose message was lost.
    threads = models.PositiveIntegerField(default=1)
    # The dramatiq queues it consumes (`rundramatiq --queues ...`); empty: all of them.
    queues = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="worker_unique")]
        indexes = [models.Index(fields=["last_seen"], name="worker_seen_idx")]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class SweepEventKind(models.TextChoices):
    CREATED = "created", "Created"
    EXTENDED = "extended", "Variant added"
    CANCELED = "canceled", "Canceled"
    PROMOTED = "promoted", "Variant promoted"


class SweepEvent(models.Model):
    """One change to a sweep (created, a variant appended, canceled, a variant promoted):
    the audit trail of its append-only axes. `data` holds what changed (the step and
    variant, the promoted version)."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=SweepEventKind.choices)
    data = models.JSONField(default=dict, blank=True)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=SweepEventKind.values), name="sweep_event_kind_valid"
            )
        ]
        indexes = [models.Index(fields=["sweep", "at"], name="sweep_event_idx")]

    def __str__(self) -> str:
        return f"{self.kind} sweep {self.sweep_id}"


class RetentionPolicy(models.Model):
    """What a workspace keeps (its owners edit it): runs older than the policy keeps expire
    and are deleted, then the collector frees their bytes. Off until an owner turns it on."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="retention")
    enabled = models.BooleanField(default=False)
    keep_last = models.PositiveIntegerField(
        null=True, blank=True, help_text="Keep the newest N runs of each pipeline version."
    )
    keep_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Keep every run of the last D days."
    )
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(enabled=False)
                | Q(keep_last__isnull=False)
                | Q(keep_days__isnull=False),
                name="retention_keeps_something",
            )
        ]

    def __str__(self) -> str:
        return f"retention of {self.workspace_id}"


class WebhookEvent(models.TextChoices):
    RUN_FINISHED = "run.finished", "A run finished (any way: succeeded, failed, canceled)"
    RUN_FAILED = "run.failed", "A run failed"
    SWEEP_FINISHED = "sweep.finished", "A sweep finished (its every run is over)"
    PING = "ping", "A test (the “send a test” button)"


class Webhook(models.Model):
    """Where a workspace wants word when work is done: a URL, the events it wants and the
    secret its payloads are signed with (HMAC-SHA256, runs_app/webhooks)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)  # a subset of WebhookEvent, without ping
    secret = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (given up)"


class WebhookDelivery(models.Model):
    """One event for one webhook: its payload, delivered once or given up after the
    attempts allowed. `subject` says what it is about ("run:12", "sweep:3:18" with the
    sweep's run count): one delivery per webhook, event and subject, however many times the
    end of a run is announced."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=20, choices=WebhookEvent.choices)
    subject = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due. Embedded, a message dies with its process (a
    # `run_pipeline --wait` that exits): the dispatcher of the next one sends a pending
    # delivery well past this again (runs_app.webhooks.services.redeliver_overdue).
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # the embedded dispatcher: pending deliveries whose attempt is overdue
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "event", "subject"],
                condition=~Q(subject=""),
                name="one_delivery_per_subject",
            ),
            models.CheckConstraint(
                condition=Q(status__in=DeliveryStatus.values), name="delivery_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.webhook_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try at a delivery: the answer's status code (none when there was no answer),
    how long it took, and what went wrong."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"


class RunListPrefs(models.Model):
    """The columns one user picked for one workspace's runs list, shown again on the next
    visit: {"metrics": [name, ...], "params": ["step.param", ...]}. No row: the defaults
    (the workspace's most used metrics)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    columns = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="run_list_prefs_unique")
        ]

    def __str__(self) -> str:
        return f"runs list of {self.user_id} in {self.workspace_id}"
