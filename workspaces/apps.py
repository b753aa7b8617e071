from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    verbose_name = "Workspaces (who may see what)"

    def ready(self) -> None:
        from workspaces import tokens  # noqa: F401  (its receivers revoke tokens)
