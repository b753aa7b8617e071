from django.apps import AppConfig


class RunsAppConfig(AppConfig):
    name = "runs_app"
    verbose_name = "Runs (run time)"

    def ready(self) -> None:
        # The scheduler sends its "step may be ready" hints through the broker side.
        from runs_app import dispatch, scheduler

        scheduler.hints_connect(dispatch.send_steps)
