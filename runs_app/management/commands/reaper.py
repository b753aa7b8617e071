"""manage.py reaper: the reaper on its own, for deployments that want it apart from workers."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

from runs_app import reaper
from workspaces.conf import engine


class Command(BaseCommand):
    help = "Recover lost messages and dead workers' steps, every STEPWORKS_REAPER_S seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            counts = reaper.reap()
            if any(counts.values()) or options["once"]:
                self.stdout.write(" ".join(f"{k}={v}" for k, v in counts.items()))
            if options["once"]:
                return
            connection.close()
            time.sleep(engine().reaper_s)
