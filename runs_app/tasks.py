"""dramatiq actors: thin, ids in, options explicit.

Steps are limited and retried by our code (the executor kills on timeout; the reaper
retries a lost attempt), so dramatiq's own TimeLimit and Retries are switched off here:
their defaults (10 minutes, 20 retries) are wrong for ML steps.

A webhook delivery is retried by dramatiq's Retries, with the delay our code computes
(`Retry(delay=...)`: STEPWORKS_WEBHOOK_BACKOFF_S, doubling); the delivery row counts the
attempts and ends them at STEPWORKS_WEBHOOK_ATTEMPTS, so the actor's `max_retries` is only a
ceiling above that. Its time limit covers one attempt: a connect and a read per redirect,
each under STEPWORKS_WEBHOOK_TIMEOUT_S, and a DNS lookup.
"""

import dramatiq
from django.conf import settings


def _execute_step(step_id: int) -> None:
    """Claim step `step_id` and run it; a no-op when it is not queued any more."""
    from runs_app.worker import services

    services().step_execute(step_id)


execute_step = dramatiq.actor(
    actor_name="execute_step",
    queue_name=f"{settings.QUEUE_PREFIX}.steps",
    max_retries=0,
    time_limit=float("inf"),
)(_execute_step)


# One actor per resource queue (STEPWORKS_QUEUES): a step whose spec names `queue: gpu` is
# sent to `<prefix>.gpu`, which only the workers started with `--queues <prefix>.gpu` (or with
# no --queues at all) consume.
def _queue_actor(name: str) -> dramatiq.Actor[[int], None]:
    return dramatiq.actor(
        actor_name=f"execute_step_{name.replace('-', '_')}",
        queue_name=f"{settings.QUEUE_PREFIX}.{name}",
        max_retries=0,
        time_limit=float("inf"),
    )(_execute_step)


queue_actors = {name: _queue_actor(name) for name in settings.STEPWORKS["QUEUES"]}


def step_actor(queue: str) -> dramatiq.Actor[[int], None]:
    """The actor that runs a step of `queue` ("": the default). A queue the settings name
    but this process has not declared yet is declared now (a running worker then consumes
    it too, unless its --queues leave it out)."""
    if not queue:
        return execute_step
    if queue not in queue_actors and queue in settings.STEPWORKS["QUEUES"]:
        queue_actors[queue] = _queue_actor(queue)
    return queue_actors.get(queue, execute_step)


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


@dramatiq.actor(
    queue_name=f"{settings.QUEUE_PREFIX}.webhooks",
    max_retries=max(1, int(settings.STEPWORKS["WEBHOOK_ATTEMPTS"])),
    time_limit=int((4 * 2 * float(settings.STEPWORKS["WEBHOOK_TIMEOUT_S"]) + 30) * 1000),
)
def deliver_webhook(delivery_id: int) -> None:
    """Try webhook delivery `delivery_id` once; a no-op once it is delivered or given up."""
    from runs_app.webhooks.services import delivery_attempt

    delay_s = delivery_attempt(delivery_id)
    if delay_s is not None:
        raise dramatiq.Retry(delay=int(delay_s * 1000))
