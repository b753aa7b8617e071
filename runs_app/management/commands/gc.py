"""manage.py gc [--dry-run] [--grace-minutes N]: delete bytes no kept row refers to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs_app.gc import GRACE, collect


class Command(BaseCommand):
    help = (
        "Delete artifact rows nothing refers to (no step input or output, no dataset "
        "version) and untouched for the grace period, then the bytes no row names. Worker "
        "processes run this every STEPWORKS_GC_S seconds too."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="say what would go")
        parser.add_argument(
            "--grace-minutes",
            type=int,
            default=int(GRACE.total_seconds() // 60),
            help="leave rows touched this recently (default %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        grace = timedelta(minutes=max(0, options["grace_minutes"]))
        done = collect(dry_run=options["dry_run"], grace=grace)
        verb = "would free" if options["dry_run"] else "freed"
        self.stdout.write(
            f"{verb} {done.bytes} bytes: {done.rows} artifact rows, {done.names} stored "
            f"names ({done.seconds:.2f} s)"
        )
