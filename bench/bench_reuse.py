"""What confirming a reuse source's outputs costs (issue 12: a step is reused only from
outputs the store still holds). Prints per-output milliseconds of `artifacts_missing` on the
filesystem store: the store asked every time, and within the positive cache's 5 s.

    .venv/bin/python bench/bench_reuse.py [--artifacts 1000]

Runs on the embedded defaults in a temp data folder (SQLite, the filesystem store), which
it removes at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=int, default=1000)
    arguments = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-reuse-")
    os.environ.update(STEPWORKS_DATA_DIR=folder, DJANGO_SETTINGS_MODULE="config.settings")
    for name in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_ARTIFACTS_BACKEND"):
        os.environ.pop(name, None)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from artifacts import store
        from workspaces.models import Workspace

        call_command("migrate", verbosity=0)
        workspace = Workspace.objects.create(slug="bench", name="bench")
        artifacts = [
            store.artifact_store_bytes(workspace, f"output {i}\n".encode(), "text/plain")
            for i in range(arguments.artifacts)
        ]
        cold, warm = [], []
        for artifact in artifacts:
            store._seen_present.clear()
            started = time.perf_counter()
            assert store.artifacts_missing([artifact]) == []
            cold.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            store.artifacts_missing([artifact])
            warm.append((time.perf_counter() - started) * 1000)
        print(f"reuse.exists_check_ms {statistics.mean(cold):.4f}")
        print(f"reuse.exists_check_ms_p50 {statistics.median(cold):.4f}")
        print(f"reuse.exists_check_cached_ms {statistics.mean(warm):.4f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
