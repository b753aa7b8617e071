"""manage.py push_pipeline WORKSPACE SPEC_FILE --name N [-m MSG]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pipelines_app.services import pipeline_version_create
from workspaces.errors import DomainError
from workspaces.management import EXIT_REJECTED, rejected, user_named, workspace_named


class Command(BaseCommand):
    help = "Validate a pipeline spec (YAML or JSON) and push it as the pipeline's next version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workspace", help="workspace slug")
        parser.add_argument("spec_file", help="the spec, YAML or JSON")
        parser.add_argument("--name", required=True, help="pipeline name")
        parser.add_argument("-m", "--message", default="", help="what changed")
        parser.add_argument("--user", default=None, help="username recorded as the author")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = workspace_named(options["workspace"])
        user = user_named(options["user"])
        try:
            text = Path(options["spec_file"]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"invalid_spec: spec: cannot read {options['spec_file']}: {exc}",
                returncode=EXIT_REJECTED,
            ) from exc
        try:
            version = pipeline_version_create(
                workspace, options["name"], text, message=options["message"], user=user
            )
        except DomainError as exc:
            raise rejected(exc) from exc
        self.stdout.write(version.ref)
