"""manage.py create_workspace SLUG --name NAME --owner USERNAME"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workspaces.errors import DomainError
from workspaces.management import rejected, user_named
from workspaces.services import workspace_create


class Command(BaseCommand):
    help = "Create a workspace with an existing user as its owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="the workspace's slug, used in URLs")
        parser.add_argument("--name", required=True, help="display name")
        parser.add_argument("--owner", required=True, help="username of its first owner")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = user_named(options["owner"])
        try:
            workspace = workspace_create(
                options["slug"], options["name"], owner, check_policy=False
            )
        except DomainError as exc:
            raise rejected(exc) from exc
        self.stdout.write(workspace.slug)
