"""The collector's time for 10,000 unreferenced artifacts (issue 12): `gc.10000.s`, the
wall time of `runs_app.gc.collect()` deleting 10,000 rows and their bytes, one stored name
per short transaction; and `gc.dry_run.s`, the time to say what it would free.

    .venv/bin/python bench/bench_gc.py [--artifacts 10000]

Runs on the embedded defaults (SQLite, the filesystem store) in a temp data folder, which
it removes at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=int, default=10_000)
    count = parser.parse_args().artifacts
    folder = tempfile.mkdtemp(prefix="bench-gc-")
    os.environ.update(STEPWORKS_DATA_DIR=folder, DJANGO_SETTINGS_MODULE="config.settings")
    for name in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_BACKEND"):
        os.environ.pop(name, None)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone

        from artifacts import store
        from artifacts.models import Artifact
        from runs_app.gc import collect
        from workspaces.models import Workspace

        call_command("migrate", verbosity=0)
        workspace = Workspace.objects.create(slug="bench", name="bench")
        for i in range(count):
            store.artifact_store_bytes(workspace, f"garbage {i}\n".encode(), "text/plain")
        Artifact.objects.update(touched_at=timezone.now() - timedelta(days=1))

        started = time.perf_counter()
        would = collect(dry_run=True)
        dry = time.perf_counter() - started
        started = time.perf_counter()
        done = collect()
        wall = time.perf_counter() - started
        assert done.rows == would.rows == count, (done, would)
        assert not Artifact.objects.exists()
        print(f"gc.dry_run.s {dry:.2f}")
        print(f"gc.{count}.s {wall:.2f}")
        print(f"gc.{count}.per_artifact_ms {wall / count * 1000:.3f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
