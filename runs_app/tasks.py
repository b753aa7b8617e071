"""dramatiq actors: thin, ids in, options explicit.

Steps are limited and retried by our code (the executor kills on timeout; the reaper
retries a lost attempt), so dramatiq's own TimeLimit and Retries are switched off here:
their defaults (10 minutes, 20 retries) are wrong for ML steps.
"""

import dramatiq
from django.conf import settings


@dramatiq.actor(
    queue_name=f"{settings.QUEUE_PREFIX}.steps",
    max_retries=0,
    time_limit=float("inf"),
)
def execute_step(step_id: int) -> None:
    """Claim step `step_id` and run it; a no-op when it is not queued any more."""
    from runs_app.worker import services

    services().step_execute(step_id)


@dramatiq.actor(
    queue_name=f"{settings.QUEUE_PREFIX}.sweeps",
    max_retries=0,
    time_limit=float("inf"),
)
def expand_sweep(sweep_id: int) -> None:
    """Start the runs sweep `sweep_id` still lacks; a no-op when it has them all or was
    canceled. No retries here: the reaper sends it again if the sweep stays unexpanded."""
    from runs_app.sweeps.services import sweep_expand

    sweep_expand(sweep_id)
