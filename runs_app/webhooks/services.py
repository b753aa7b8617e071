"""Webhooks: word when work is done, signed, delivered by an actor with retries.

A workspace's owners add webhooks (a URL, the events it wants, a secret made here). When a
run ends, the scheduler sends `run_finished` after its transaction commits; `on_run_finished`
(connected in RunsAppConfig.ready) makes one delivery row per webhook that wants the event
and asks for the `deliver_webhook` actor for each (runs_app.hints.deliveries_due), after its
own commit. The actor calls
`delivery_attempt`: one POST (runs_app.webhooks.outbound: never to the server's own
network unless allowed), one WebhookAttempt row with its status code, latency and error,
and, until the delivery succeeds or its attempts are spent, a retry after an exponential
backoff (STEPWORKS_WEBHOOK_BACKOFF_S, doubling). Nothing here runs in a web request.

The payload is JSON; its HMAC-SHA256 with the webhook's secret is the header
`X-Stepworks-Signature: sha256=<hex>` (README, "Webhooks", says how to check it).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, QuerySet
from django.urls import reverse
from django.utils import timezone

from runs_app import hints
from runs_app.models import (
    RUN_TERMINAL,
    DeliveryStatus,
    PipelineRun,
    RunStatus,
    Sweep,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from runs_app.selectors import run_metrics
from runs_app.webhooks import outbound
from workspaces.audit import audit_record
from workspaces.conf import Team, team
from workspaces.errors import DomainError, text_problem
from workspaces.models import AuditVerb, Workspace

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Stepworks-Signature"
EVENTS = (WebhookEvent.RUN_FINISHED, WebhookEvent.RUN_FAILED, WebhookEvent.SWEEP_FINISHED)
MAX_WEBHOOKS = 20  # per workspace
DELIVERIES_SHOWN = 20  # per webhook, on the page
MAX_BACKOFF_S = 3600.0
USER_AGENT = "Stepworks-Webhook/1"
PRUNE_BATCH = 1000  # deliveries deleted per statement by deliveries_prune


def signature(secret: str, body: bytes) -> str:
    """The value of X-Stepworks-Signature for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- owners' writes ---------------------------------------------------------------------------


def webhook_create(workspace: Workspace, url: str, events: list[str], *, actor: Any) -> Webhook:
    """A new webhook with a fresh secret. A URL that can never be delivered to (not http(s),
    or a literal loopback/private address while those are not allowed) is refused now."""
    url = (url or "").strip()
    fields: dict[str, list[str]] = {}
    try:
        if text_problem(url) or any(c.isspace() for c in url):
            raise outbound.Refused("not a URL (spaces or control characters)")
        outbound.check_url(url, team().webhook_allow_private)
    except outbound.Refused as refused:
        fields["url"] = [str(refused)]
    except ValueError:  # urlsplit's: a malformed port or IPv6 host
        fields["url"] = ["not a URL"]
    if len(url) > 2000:
        fields["url"] = ["at most 2000 characters"]
    wanted = [e for e in EVENTS if e in set(events or [])]
    if not wanted or len(wanted) != len(set(events or [])):
        fields["events"] = [f"one or more of {', '.join(EVENTS)}"]
    if Webhook.objects.filter(workspace=workspace).count() >= MAX_WEBHOOKS:
        fields["url"] = [f"a workspace has at most {MAX_WEBHOOKS} webhooks"]
    if fields:
        raise DomainError("invalid", "The webhook cannot be added as asked.", fields)
    with transaction.atomic():
        webhook = Webhook.objects.create(
            workspace=workspace,
            url=url,
            events=[str(e) for e in wanted],
            secret=secrets.token_hex(32),
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit_record(
            workspace, actor, AuditVerb.WEBHOOK_CREATED, url[:200], {"events": webhook.events}
        )
    return webhook


def webhook_delete(webhook: Webhook, *, actor: Any) -> None:
    with transaction.atomic():
        Webhook.objects.filter(pk=webhook.pk).delete()
        audit_record(webhook.workspace_id, actor, AuditVerb.WEBHOOK_DELETED, webhook.url[:200])


def webhook_test(webhook: Webhook, *, actor: Any) -> WebhookDelivery:
    """Queue a `ping` delivery to the webhook (the page's "send a test"); the actor sends it."""
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
    payload = {
        "event": WebhookEvent.PING.value,
        "workspace": webhook.workspace.slug,
        "webhook": webhook.pk,
        "sent_by": who,
        "message": "A test from Stepworks: this webhook is set up.",
    }
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            webhook=webhook, event=WebhookEvent.PING, payload=payload
        )
        _enqueue([delivery.pk])
    return delivery


def webhooks_with_deliveries(workspace: Workspace) -> QuerySet[Webhook]:
    """The workspace's webhooks, each with its newest deliveries (`recent`) and their
    attempts: three queries, however many."""
    recent = WebhookDelivery.objects.order_by("-id")[:DELIVERIES_SHOWN]
    # django-stubs cannot follow a prefetch through `to_attr` ("recent__tries"); Django can.
    return (
        Webhook.objects.filter(workspace=workspace)
        .order_by("created_at", "id")
        .prefetch_related(  # type: ignore[misc]
            Prefetch("deliveries", queryset=recent, to_attr="recent"),
            Prefetch("recent__tries", queryset=WebhookAttempt.objects.order_by("number")),
        )
    )


# --- what ends, announced ---------------------------------------------------------------------


def on_run_finished(
    sender: Any, run_id: int, status: str, workspace_id: int | None = None, **kwargs: Any
) -> None:
    """The receiver of scheduler.run_finished (after the run's end committed): a delivery
    per webhook that wants it. It never raises into the scheduler's caller (a worker)."""
    try:
        _announce_run(run_id, status, workspace_id)
    except Exception:
        log.exception("webhooks for run %s could not be queued", run_id)


def _announce_run(run_id: int, status: str, workspace_id: int | None = None) -> None:
    # By the workspace the signal names (no join through the runs), else by the run's.
    where = {"workspace_id": workspace_id} if workspace_id else {"workspace__runs__pk": run_id}
    hooks = list(Webhook.objects.filter(**where, active=True))
    if not hooks:
        return  # the common case: one query per finished run
    run = PipelineRun.objects.select_related(
        "workspace", "pipeline_version__pipeline", "created_by", "sweep"
    ).get(pk=run_id)
    wanted = {WebhookEvent.RUN_FINISHED} | (
        {WebhookEvent.RUN_FAILED} if status == RunStatus.FAILED else set()
    )
    made: list[int] = []
    body = None
    for hook in hooks:
        for event in wanted & set(hook.events):
            body = body or run_payload(run)
            made += _delivery(hook, event, f"run:{run.pk}", {"event": event, **body})
    if run.sweep is not None:
        made += _announce_sweep(run.sweep, [h for h in hooks if "sweep.finished" in h.events])
    _enqueue(made)


def _announce_sweep(sweep: Sweep, hooks: list[Webhook]) -> list[int]:
    if not hooks:
        return []
    runs = PipelineRun.objects.filter(sweep=sweep)
    if runs.exclude(status__in=RUN_TERMINAL).exists():
        return []
    counts: dict[str, int] = {}
    for value in runs.values_list("status", flat=True):
        counts[value] = counts.get(value, 0) + 1
    total = sum(counts.values())
    # Extending a finished sweep makes it finish again later: a new subject, a new delivery.
    subject = f"sweep:{sweep.pk}:{total}"
    body = sweep_payload(sweep, counts)
    made: list[int] = []
    for hook in hooks:
        made += _delivery(hook, WebhookEvent.SWEEP_FINISHED, subject, body)
    return made


def _delivery(hook: Webhook, event: str, subject: str, payload: dict[str, Any]) -> list[int]:
    """A delivery row, once per (webhook, event, subject): [its id], or [] when there was
    one already (the end of a run or sweep announced twice)."""
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                webhook=hook, event=event, subject=subject, payload=payload
            )
    except IntegrityError:
        return []
    return [delivery.pk]


def _url(path: str) -> str:
    return team().public_url + path


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_payload(run: PipelineRun) -> dict[str, Any]:
    """What ended, its status, its URL and its headline metrics (each step's last value of
    each scalar metric, a reused step's from its source)."""
    version = run.pipeline_version
    duration = None
    if run.started_at and run.finished_at:
        duration = round((run.finished_at - run.started_at).total_seconds(), 3)
    scalars = run_metrics(list(run.steps.all()))["scalars"]
    return {
        "workspace": run.workspace.slug,
        "run": {
            "id": run.pk,
            "url": _url(reverse("runs:detail", args=[run.workspace.slug, run.pk])),
            "pipeline": version.pipeline.name,
            "version": version.number,
            "status": run.status,
            "failure_reason": run.failure_reason or None,
            "started_by": run.created_by.get_username() if run.created_by else None,
            "created_at": _iso(run.created_at),
            "finished_at": _iso(run.finished_at),
            "duration_s": duration,
            "sweep": run.sweep_id,
            "metrics": {f"{m['step']}.{m['name']}": m["value"] for m in scalars},
        },
    }


def sweep_payload(sweep: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    slug = sweep.workspace.slug
    return {
        "event": WebhookEvent.SWEEP_FINISHED.value,
        "workspace": slug,
        "sweep": {
            "id": sweep.pk,
            "name": sweep.name,
            "url": _url(reverse("runs:sweep_detail", args=[slug, sweep.pk])),
            "pipeline": sweep.base_version.ref,
            "canceled": sweep.canceled_at is not None,
            "runs": counts,
        },
    }


# --- delivery (the actor's work) --------------------------------------------------------------


def _enqueue(ids: list[int]) -> None:
    """Send the deliveries to the actor once the transaction that made them commits."""
    if ids:
        transaction.on_commit(lambda: _send(ids))


def _send(ids: list[int]) -> None:
    hints.deliveries_due.send(__name__, delivery_ids=ids)


def delivery_attempt(delivery_id: int) -> float | None:
    """Try a delivery once: record the attempt; the seconds to wait before the next one, or
    None when it is over (delivered, given up, refused, or not there any more)."""
    delivery = (
        WebhookDelivery.objects.select_related("webhook")
        .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .first()
    )
    if delivery is None:
        return None  # delivered, given up, or deleted with its webhook: nothing to do
    settings = team()
    number = delivery.attempts + 1
    body = json.dumps(
        {**delivery.payload, "delivery": delivery.pk, "attempt": number, "sent_at": _now()},
        sort_keys=True,
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Stepworks-Event": delivery.event,
        "X-Stepworks-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: signature(delivery.webhook.secret, body),
    }
    status_code, latency, error, final = _post(delivery.webhook.url, body, headers, settings)
    ok = status_code is not None and 200 <= status_code < 300
    spent = number >= settings.webhook_attempts
    over = ok or final or spent
    status = DeliveryStatus.PENDING
    if over:
        status = DeliveryStatus.DELIVERED if ok else DeliveryStatus.FAILED
    with transaction.atomic():
        # Conditional on the attempts seen: a duplicate message's attempt records nothing.
        if not WebhookDelivery.objects.filter(
            pk=delivery.pk, attempts=delivery.attempts, status=DeliveryStatus.PENDING
        ).update(attempts=number, status=status, finished_at=timezone.now() if over else None):
            return None
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=number,
            status_code=status_code,
            latency_ms=latency,
            error=error[:500],
        )
    if over:
        return None
    delay = min(settings.webhook_backoff_s * 2.0 ** (number - 1), MAX_BACKOFF_S)
    WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
        next_attempt_at=timezone.now() + timedelta(seconds=delay)
    )
    return delay


def deliveries_prune(now: datetime | None = None) -> int:
    """Delete the deliveries (and their attempts) that finished, delivered or given up,
    over STEPWORKS_WEBHOOK_LOG_DAYS ago: without this every run's end left rows forever.
    Pending ones stay whatever their age. The number of deliveries deleted."""
    days = team().webhook_log_days
    if days <= 0:
        return 0
    before = (now or timezone.now()) - timedelta(days=days)
    old = WebhookDelivery.objects.exclude(status=DeliveryStatus.PENDING).filter(
        finished_at__lt=before
    )
    deleted = 0
    while True:  # in batches: one short transaction each, however big the backlog
        ids = list(old.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        WebhookDelivery.objects.filter(pk__in=ids).delete()
        deleted += len(ids)


def redeliver_overdue(grace_s: float, limit: int = 100) -> int:
    """Send again the pending deliveries whose attempt is `grace_s` overdue: their message
    died with an embedded process (the broker of `run_pipeline --wait` goes with it). The
    embedded dispatcher calls this; a real broker keeps its messages and needs no help. A
    message that was only slow makes one extra attempt at most (attempts are fenced)."""
    now = timezone.now()
    overdue = WebhookDelivery.objects.filter(
        status=DeliveryStatus.PENDING, next_attempt_at__lt=now - timedelta(seconds=grace_s)
    )
    ids = list(overdue.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    if ids:
        WebhookDelivery.objects.filter(pk__in=ids).update(next_attempt_at=now)
        _send(ids)
    return len(ids)


def _post(
    url: str, body: bytes, headers: dict[str, str], settings: Team
) -> tuple[int | None, int, str, bool]:
    """(status code, latency ms, error, final): `final` when retrying cannot help."""
    started = timezone.now()
    try:
        answer = outbound.post(
            url,
            body,
            headers,
            timeout=settings.webhook_timeout_s,
            allow_private=settings.webhook_allow_private,
        )
    except outbound.Refused as refused:
        return None, _ms(started), f"refused: {refused}", True
    except (OSError, http.client.HTTPException) as failed:
        reason = str(failed) or type(failed).__name__
        return None, _ms(started), f"{type(failed).__name__}: {reason}", False
    error = "" if 200 <= answer.status < 300 else f"answered {answer.status}"
    return answer.status, answer.latency_ms, error, False


def _ms(started: datetime) -> int:
    return int((timezone.now() - started).total_seconds() * 1000)


def _now() -> str:
    return timezone.now().isoformat()
