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


def engine() -> Engine:
    raw = settings.STEPWORKS
    return Engine(
        heartbeat_s=float(raw["HEARTBEAT_S"]),
        lease_s=float(raw["LEASE_S"]),
        reaper_s=float(raw["REAPER_S"]),
        embedded_poll_s=float(raw["EMBEDDED_POLL_S"]),
        embedded_workers=int(raw["EMBEDDED_WORKERS"]),
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
    )
