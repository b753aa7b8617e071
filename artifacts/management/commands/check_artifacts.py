"""manage.py check_artifacts [--repair]: missing, corrupt and unreferenced bytes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from artifacts.checks import UNREFERENCED_GRACE_S, check_artifacts


class Command(BaseCommand):
    help = (
        "Hash every stored artifact: list rows whose bytes are missing or corrupt and bytes "
        "no row names. Exits 1 when it finds any. --repair marks the missing and corrupt "
        "(never reused again; the next run that needs them recomputes them) and deletes "
        "unreferenced bytes older than an hour."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repair", action="store_true", help="mark and collect")

    def handle(self, *args: Any, **options: Any) -> None:
        found = check_artifacts(repair=options["repair"])
        for kind, names in (
            ("missing", found.missing),
            ("corrupt", found.corrupt),
            ("unreferenced", found.unreferenced),
        ):
            for name in names:
                self.stdout.write(f"{kind} {name}")
        summary = (
            f"{found.checked} checked: {len(found.missing)} missing, {len(found.corrupt)} "
            f"corrupt, {len(found.unreferenced)} unreferenced"
        )
        if options["repair"]:
            summary += (
                f"; marked {len(found.missing) + len(found.corrupt)}, collected "
                f"{found.collected} (unreferenced bytes younger than "
                f"{UNREFERENCED_GRACE_S / 3600:g} h are kept)"
            )
        self.stdout.write(summary)
        if found.problems and not options["repair"]:
            raise CommandError("the store is not consistent: run with --repair", returncode=1)
