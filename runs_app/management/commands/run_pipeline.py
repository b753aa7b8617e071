"""manage.py run_pipeline WORKSPACE PIPELINE[@VERSION] [--param STEP.NAME=VALUE ...]
[--no-reuse] [--wait]: start a run; with --wait, print a JSON summary as the last line and
exit non-zero unless it succeeded."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from pipelines_app.selectors import pipeline_version_by_ref
from runs_app import services
from runs_app.dispatch import EmbeddedWorkers
from runs_app.models import RUN_TERMINAL, PipelineRun, RunStatus
from runs_app.selectors import run_summary, run_with_steps
from runs_app.worker import fresh_workers_exist
from workspaces.errors import DomainError
from workspaces.models import Workspace


def parse_param(text: str) -> tuple[str, Any]:
    """`step.name=value`; the value is read as JSON when it parses (1, 0.5, true, "x")."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise CommandError(f"--param {text!r}: write it as STEP.NAME=VALUE", returncode=2)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


class Command(BaseCommand):
    help = "Start a run of a pipeline version; --wait waits and prints a JSON summary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workspace")
        parser.add_argument("pipeline", help="NAME, NAME@latest or NAME@N")
        parser.add_argument("--param", "-p", action="append", default=[])
        parser.add_argument("--no-reuse", action="store_true")
        parser.add_argument("--wait", action="store_true")
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"no workspace {options['workspace']!r}", returncode=2)
        try:
            version = pipeline_version_by_ref(workspace, options["pipeline"])
        except Http404:
            raise CommandError(
                f"no pipeline version {options['pipeline']!r} in {workspace.slug}", returncode=2
            ) from None
        overrides = dict(parse_param(p) for p in options["param"])
        try:
            run = services.run_start(
                version,
                user=None,  # the server's operator: the audit trail says "system"
                how="manage.py run_pipeline",
                param_overrides=overrides,
                reuse=not options["no_reuse"],
            )
        except DomainError as error:
            raise CommandError(f"{error.code}: {error}", returncode=2) from None
        self.stdout.write(f"run {run.pk} started ({version.ref})")
        if not options["wait"]:
            return
        workers = None
        if run.status not in RUN_TERMINAL and not fresh_workers_exist():
            # A step must execute and nobody is serving: run the steps in this process, so
            # --wait always finishes. (A run reused whole ended already: no worker boots.)
            self.stdout.write("no worker is serving: running the steps in this process")
            workers = EmbeddedWorkers()
            workers.start()
            workers.dispatch_queued()  # queued before these workers listened
        try:
            deadline = time.monotonic() + options["timeout"]
            while time.monotonic() < deadline:
                status = PipelineRun.objects.values_list("status", flat=True).get(pk=run.pk)
                if status in RUN_TERMINAL:
                    break
                time.sleep(0.05)
            summary = run_summary(run_with_steps(run.pk))
        finally:
            if workers is not None:
                workers.stop()
        self.stdout.write(json.dumps(summary))
        if summary["status"] != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run.pk} {summary['status']}", returncode=1)
