"""manage.py push_module WORKSPACE PATH --name N --entrypoint file.py:func [-m MSG]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from pipelines_app.models import ModuleVersion
from pipelines_app.services import module_version_create_from_dir
from workspaces.errors import DomainError
from workspaces.management import rejected, user_named, workspace_named


class Command(BaseCommand):
    help = "Push a folder (or one file) of step code as the next version of a module."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workspace", help="workspace slug")
        parser.add_argument("path", help="a folder of step code, or one .py file")
        parser.add_argument("--name", required=True, help="module name")
        parser.add_argument("--entrypoint", required=True, help="file.py:function")
        parser.add_argument("-m", "--message", default="", help="what changed")
        parser.add_argument("--user", default=None, help="username recorded as the author")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = workspace_named(options["workspace"])
        user = user_named(options["user"])
        latest_before = (
            ModuleVersion.objects.filter(module__workspace=workspace, module__name=options["name"])
            .order_by("-number")
            .values_list("pk", flat=True)
            .first()
        )
        try:
            version = module_version_create_from_dir(
                workspace,
                options["name"],
                options["path"],
                options["entrypoint"],
                message=options["message"],
                user=user,
            )
        except DomainError as exc:
            raise rejected(exc) from exc
        for warning in version.warnings:
            self.stderr.write(f"warning: {warning}")
        if version.pk == latest_before:
            self.stderr.write("unchanged: identical to the latest version")
        self.stdout.write(version.ref)
