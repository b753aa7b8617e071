from django.apps import AppConfig


class RunsAppConfig(AppConfig):
    name = "runs_app"
    verbose_name = "Runs (run time)"

    def ready(self) -> None:
        # The scheduler sends its "step may be ready" hints through the broker side.
        from runs_app import dispatch, hints, scheduler
        from runs_app.sweeps import services as sweeps
        from runs_app.webhooks.services import on_run_finished

        scheduler.steps_queued.connect(dispatch.on_steps_queued, dispatch_uid="stepworks-hints")
        # Sweeps with runs left to start, and webhook deliveries due, go out the same way.
        hints.sweeps_due.connect(dispatch.on_sweeps_due, dispatch_uid="stepworks-sweeps-due")
        hints.deliveries_due.connect(
            dispatch.on_deliveries_due, dispatch_uid="stepworks-deliveries-due"
        )
        # A run's end queues the workspace's webhooks (after the transaction that ended it),
        # and lets a paced sweep start its next run.
        scheduler.run_finished.connect(on_run_finished, dispatch_uid="stepworks-webhooks")
        scheduler.run_finished.connect(sweeps.on_run_finished, dispatch_uid="stepworks-sweeps")
