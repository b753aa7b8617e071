"""What the services ask the broker for, as signals: "sweep N has runs left to start",
"webhook delivery N is due". runs_app.dispatch receives them (connected in
RunsAppConfig.ready) and sends the actors' messages, as it does the scheduler's
`steps_queued`. So no service imports an actor: the actors module calls the services, and
nothing calls back up to it.

Send them after the transaction that made the work commits; without a receiver (a process
that never readied the app) they go nowhere, and the reaper sends a quiet sweep again.
"""

from __future__ import annotations

from django.dispatch import Signal

sweeps_due = Signal()  # send(sender, sweep_ids=[...])
deliveries_due = Signal()  # send(sender, delivery_ids=[...])
