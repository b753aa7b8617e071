"""The dramatiq middleware that gives every worker process its services.

Loaded by django_dramatiq while Django's apps are still loading, so it imports nothing of
ours at module level.
"""

from typing import Any

import dramatiq


class WorkerServicesMiddleware(dramatiq.Middleware):
    """Start the zygotes, heartbeat and reaper when a worker boots; stop them on shutdown."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        from runs_app.worker import services

        queues = sorted(getattr(worker, "queues", None) or ())  # none given: all of them
        services(threads=getattr(worker, "worker_threads", 1), queues=queues)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        # Running steps may finish (dramatiq now waits for its threads, up to its
        # --worker-shutdown-timeout); the zygotes must outlive them.
        from runs_app.worker import services_drain

        services_drain()

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        from runs_app.worker import services_stop

        services_stop()
