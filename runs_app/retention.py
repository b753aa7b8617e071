"""Retention: which of a workspace's runs its policy keeps, and deleting the rest.

Kept, always: runs not finished, pinned runs, runs of a promoted pipeline version, and the
runs of each sweep's promoted variant (the variant a person chose as the sweep's best).
Kept by the policy: the newest `keep_last` runs of each pipeline version and every run of
the last `keep_days` days. Everything else expires. `retention_plan` says what applying
would delete and what the collector would then free; `retention_apply` deletes it (through
`runs_delete`, so the same rules hold); the bytes go when the collector next runs, after
its grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from artifacts.models import Artifact
from pipelines_app.models import DatasetVersion
from runs_app.models import (
    RUN_TERMINAL,
    PipelineRun,
    RetentionPolicy,
    StepInput,
    StepOutput,
    SweepEvent,
    SweepEventKind,
)
from runs_app.webhooks.services import deliveries_prune
from workspaces.audit import audit_record
from workspaces.errors import DomainError
from workspaces.models import AuditVerb, Workspace

CHUNK = 200  # runs deleted per transaction
KEEP_LAST_MAX = 1_000_000  # runs per pipeline version
KEEP_DAYS_MAX = 36_500


@dataclass
class Plan:
    runs: list[int] = field(default_factory=list)  # the runs that expire, oldest first
    kept: int = 0  # finished runs the policy keeps
    artifacts: int = 0  # artifact rows only expiring runs hold
    bytes: int = 0  # their stored bytes, each stored name counted once


def policy_of(workspace: Workspace) -> RetentionPolicy:
    policy, _ = RetentionPolicy.objects.get_or_create(workspace=workspace)
    return policy


def policy_set(
    workspace: Workspace,
    *,
    enabled: bool,
    keep_last: int | None,
    keep_days: int | None,
    user: Any = None,
) -> RetentionPolicy:
    """Set the workspace's policy; DomainError when it is on but keeps nothing by age or
    count (that would expire every finished run)."""
    for name, value, most in (
        ("keep_last", keep_last, 1_000_000),
        ("keep_days", keep_days, 36_500),
    ):
        if value is not None and not 1 <= value <= most:
            reason = f"from 1 to {most}, or empty"
            raise DomainError("invalid", f"{name}: {reason}", {name: [reason]})
    if enabled and keep_last is None and keep_days is None:
        raise DomainError(
            "invalid",
            "A retention policy that is on keeps the last N runs or the last D days, or both.",
            {"keep_last": ["set keep_last or keep_days (or both)"]},
        )
    policy = policy_of(workspace)
    old = {"enabled": policy.enabled, "keep_last": policy.keep_last, "keep_days": policy.keep_days}
    new = {"enabled": enabled, "keep_last": keep_last, "keep_days": keep_days}
    policy.enabled, policy.keep_last, policy.keep_days = enabled, keep_last, keep_days
    policy.updated_by = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        policy.save()
        if old != new:
            audit_record(
                workspace, user, AuditVerb.RETENTION_CHANGED, "retention", {"old": old, "new": new}
            )
    return policy


def retention_plan(workspace: Workspace, policy: RetentionPolicy | None = None) -> Plan:
    """What applying the policy would delete now, and what that would free."""
    policy = policy or policy_of(workspace)
    finished = PipelineRun.objects.filter(
        workspace=workspace, status__in=RUN_TERMINAL, pinned=False
    )
    if not policy.enabled:
        return Plan(kept=finished.count())
    keep = _kept_ids(workspace, policy, finished)
    expired = list(
        finished.exclude(pk__in=keep).order_by("created_at", "pk").values_list("pk", flat=True)
    )
    plan = Plan(runs=expired, kept=finished.count() - len(expired))
    if expired:
        plan.artifacts, plan.bytes = _freed(expired)
    return plan


def retention_apply(workspace: Workspace, user: Any = None) -> Plan:
    """Delete the runs the policy does not keep (in chunks); returns the plan it carried out."""
    from runs_app.services import runs_delete

    plan = retention_plan(workspace)
    for start in range(0, len(plan.runs), CHUNK):
        chunk = plan.runs[start : start + CHUNK]
        # The plan was made a moment ago: a run pinned since is simply left out.
        runs = PipelineRun.objects.filter(pk__in=chunk, pinned=False, status__in=RUN_TERMINAL)
        runs_delete(runs, user=user, why="retention")
    if plan.runs:
        audit_record(
            workspace,
            user,
            AuditVerb.RETENTION_APPLIED,
            "retention",
            {"runs": len(plan.runs), "artifacts": plan.artifacts, "bytes": plan.bytes},
        )
    return plan


def retention_apply_all() -> int:
    """Apply every workspace's policy that is on, and prune the webhook delivery logs past
    STEPWORKS_WEBHOOK_LOG_DAYS (the worker's periodic pass, every STEPWORKS_GC_S). The
    number of runs deleted."""
    deleted = 0
    for policy in RetentionPolicy.objects.filter(enabled=True).select_related("workspace"):
        deleted += len(retention_apply(policy.workspace).runs)
    deliveries_prune()
    return deleted


def _kept_ids(workspace: Workspace, policy: RetentionPolicy, finished: Any) -> set[int]:
    keep: set[int] = set()
    if policy.keep_days:
        since = timezone.now() - timedelta(days=policy.keep_days)
        keep |= set(finished.filter(created_at__gte=since).values_list("pk", flat=True))
    if policy.keep_last:
        ranked = finished.annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("pipeline_version_id")],
                order_by=[F("created_at").desc(), F("pk").desc()],
            )
        )
        keep |= set(ranked.filter(rank__lte=policy.keep_last).values_list("pk", flat=True))
    promotions = SweepEvent.objects.filter(
        sweep__workspace=workspace, kind=SweepEventKind.PROMOTED
    ).values_list("sweep_id", "data")
    versions = [data.get("version") for _, data in promotions if data.get("version")]
    keep |= set(finished.filter(pipeline_version_id__in=versions).values_list("pk", flat=True))
    for sweep_id, data in promotions:
        chosen = data.get("variant") or {}
        if chosen:
            match = Q(sweep_id=sweep_id)
            for step, label in chosen.items():
                match &= Q(**{f"variant__{step}": label})
            keep |= set(finished.filter(match).values_list("pk", flat=True))
    return keep


def _freed(expired: list[int]) -> tuple[int, int]:
    """Artifact rows that only these runs hold, and their bytes (each name once)."""

    def artifact_ids(rows: Any) -> set[int]:
        return set(rows.values_list("artifact_id", flat=True))

    held = artifact_ids(StepOutput.objects.filter(step__run_id__in=expired)) | artifact_ids(
        StepInput.objects.filter(step__run_id__in=expired)
    )
    elsewhere = (
        artifact_ids(
            StepOutput.objects.filter(artifact_id__in=held).exclude(step__run_id__in=expired)
        )
        | artifact_ids(
            StepInput.objects.filter(artifact_id__in=held).exclude(step__run_id__in=expired)
        )
        | artifact_ids(DatasetVersion.objects.filter(artifact_id__in=held))
    )
    only = held - elsewhere
    sizes = dict(Artifact.objects.filter(pk__in=only).values_list("storage_name", "size"))
    return len(only), sum(sizes.values())
