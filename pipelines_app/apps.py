from django.apps import AppConfig


class PipelinesAppConfig(AppConfig):
    name = "pipelines_app"
    verbose_name = "Pipelines (design time)"
