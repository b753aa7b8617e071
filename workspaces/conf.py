"""The product's own settings (`settings.STEPWORKS`), typed, read one way by every app.

`engine()` reads the setting on every call, so `override_settings` and the tests' fixtures
apply at once; the values come from the environment (config/settings.py, README's table).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Engine:
    heartbeat_s: float  # a worker's heartbeat and lease renewal interval
    lease_s: float  # a running step's lease; a queued step unclaimed this long is hinted again
    reaper_s: float  # how often a worker (or `manage.py reaper`) recovers what others lost
    embedded_poll_s: float  # the embedded dispatcher's poll of queued steps
    embedded_workers: int  # in-process worker threads without a broker
    queues: tuple[str, ...]  # the resource queues steps may name (STEPWORKS_QUEUES)
    max_running_steps_per_workspace: int  # fair sharing (0: no cap)
    step_timeout_s: float  # a step's default time limit
    max_attempts: int  # attempts of a step whose worker was lost
    log_max_bytes: int  # a step attempt's log is cut here
    sweep_max_runs: int  # a sweep's runs, all extensions included
    sweep_inline_s: float  # how long a request starts a sweep's runs; the actor does the rest
    max_source_bytes: int  # a module version's files, together
    step_sandbox: str  # "required" (Landlock) or "off"
    step_network: str  # "allow" or "deny" (TCP), for sandboxed steps
    step_read_dirs: tuple[str, ...]  # folders every sandboxed step may also read
    step_write_dirs: tuple[str, ...]  # folders every sandboxed step may also write
    gc_s: float  # how often a worker process collects unreferenced bytes (0: never)
    drain_s: float  # on shutdown, how long running steps may finish before given back
    worker_forget_s: float  # a worker without a heartbeat this long is forgotten
    step_retries: int  # a step's retries when its spec gives none
    step_retry_backoff_s: float  # ... and the first wait before one


def engine() -> Engine:
    raw = settings.STEPWORKS
    return Engine(
        heartbeat_s=float(raw["HEARTBEAT_S"]),
        lease_s=float(raw["LEASE_S"]),
        reaper_s=float(raw["REAPER_S"]),
        embedded_poll_s=float(raw["EMBEDDED_POLL_S"]),
        embedded_workers=int(raw["EMBEDDED_WORKERS"]),
        queues=tuple(str(q) for q in raw["QUEUES"]),
        max_running_steps_per_workspace=int(raw["MAX_RUNNING_STEPS_PER_WORKSPACE"]),
        step_timeout_s=float(raw["STEP_TIMEOUT_S"]),
        max_attempts=int(raw["MAX_ATTEMPTS"]),
        log_max_bytes=int(raw["LOG_MAX_BYTES"]),
        sweep_max_runs=int(raw["SWEEP_MAX_RUNS"]),
        sweep_inline_s=float(raw["SWEEP_INLINE_S"]),
        max_source_bytes=int(raw["MAX_SOURCE_BYTES"]),
        step_sandbox=str(raw["STEP_SANDBOX"]),
        step_network=str(raw["STEP_NETWORK"]),
        step_read_dirs=tuple(raw["STEP_READ_DIRS"]),
        step_write_dirs=tuple(raw["STEP_WRITE_DIRS"]),
        gc_s=float(raw["GC_S"]),
        drain_s=float(raw["DRAIN_S"]),
        worker_forget_s=float(raw["WORKER_FORGET_S"]),
        step_retries=int(raw["STEP_RETRIES"]),
        step_retry_backoff_s=float(raw["STEP_RETRY_BACKOFF_S"]),
    )


@dataclass(frozen=True)
class Team:
    workspace_creation: str  # "anyone" (any signed-in user) or "staff"
    invite_days: int  # an invite's default lifetime
    invite_max_uses: int  # an invite's default number of uses
    public_url: str  # the server's address as people reach it (links in mail and webhooks)
    dataset_max_bytes: int  # a dataset upload over this is refused by its Content-Length
    webhook_allow_private: bool  # deliver to loopback, private and link-local addresses
    webhook_timeout_s: float  # one delivery attempt's connect + read timeout
    webhook_attempts: int  # attempts of one delivery before it is given up
    webhook_backoff_s: float  # the first retry's delay; each later one doubles it
    webhook_log_days: int  # finished deliveries older than this are pruned (0: kept)
    mail: bool  # EMAIL_URL is set: invites are mailed too


def team() -> Team:
    raw = settings.STEPWORKS
    return Team(
        workspace_creation=str(raw["WORKSPACE_CREATION"]),
        invite_days=int(raw["INVITE_DAYS"]),
        invite_max_uses=int(raw["INVITE_MAX_USES"]),
        public_url=str(raw["PUBLIC_URL"]).rstrip("/"),
        dataset_max_bytes=int(raw["DATASET_MAX_BYTES"]),
        webhook_allow_private=bool(raw["WEBHOOK_ALLOW_PRIVATE"]),
        webhook_timeout_s=float(raw["WEBHOOK_TIMEOUT_S"]),
        webhook_attempts=max(1, int(raw["WEBHOOK_ATTEMPTS"])),
        webhook_backoff_s=float(raw["WEBHOOK_BACKOFF_S"]),
        webhook_log_days=max(0, int(raw["WEBHOOK_LOG_DAYS"])),
        mail=bool(getattr(settings, "EMAIL_URL", "")),
    )


@dataclass(frozen=True)
class Operations:
    input_cache_bytes: int  # a worker host's cache of inputs from a remote store, at most
    metrics_token: str  # the bearer token of /metrics; empty: /metrics is off (404)
    metrics_window: int  # /metrics' durations and reuse ratio: over this many recent steps


def operations() -> Operations:
    raw = settings.STEPWORKS
    return Operations(
        input_cache_bytes=int(raw["INPUT_CACHE_BYTES"]),
        metrics_token=str(raw["METRICS_TOKEN"]),
        metrics_window=max(1, int(raw["METRICS_WINDOW"])),
    )
