from django.apps import AppConfig


class RunsAppConfig(AppConfig):
    name = "runs_app"
    verbose_name = "Runs (run time)"

    def ready(self) -> None:
        # The scheduler sends its "step may be ready" hints through the broker side.
        from runs_app import dispatch, scheduler

        scheduler.steps_queued.connect(dispatch.on_steps_queued, dispatch_uid="stepworks-hints")
