"""The layered apps' migrations: no cycle between apps, and a database made at the head of
the old migrations (pipelines_app <-> runs_app) migrates forward with its rows intact, no
table made again, and the same schema as a new database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["workspaces", "artifacts", "pipelines_app", "runs_app"]


def test_each_app_migrates_on_top_of_the_apps_below_it_only() -> None:
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    for (app, _name), node in graph.nodes.items():
        if app not in LAYERS:
            continue
        for parent, _ in node.dependencies:
            if parent in LAYERS:
                assert LAYERS.index(parent) <= LAYERS.index(app), (app, _name, parent)


@pytest.fixture
def databases(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Environments for two empty databases of the engine under test: (legacy, fresh)."""
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "BROKER_URL"}}
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        yield tuple(  # type: ignore[misc]
            {**base, "STEPWORKS_DATA_DIR": str(tmp_path / name)} for name in ("legacy", "fresh")
        )
        return
    import psycopg

    server = url.rsplit("/", 1)[0]
    names = [f"stepworks_migrate_{name}_{uuid.uuid4().hex[:8]}" for name in ("legacy", "fresh")]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield tuple(  # type: ignore[misc]
            {**base, "DATABASE_URL": f"{server}/{name}", "SECRET_KEY": "migration-test"}
            for name in names
        )
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run(env: dict[str, str], *args: str, settings: str = "config.settings") -> str:
    result = subprocess.run(
        [sys.executable, *args],
        check=False,  # the assertion below shows stderr
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": settings},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _read(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(_run(env, "-m", "tests.legacy_db", "read"))


def test_a_database_from_before_the_move_migrates_forward_intact(
    databases: tuple[dict[str, str], dict[str, str]],
) -> None:
    legacy, fresh = databases
    _run(legacy, "-m", "tests.legacy_db", "build", settings="tests.legacy_settings")

    applied = _run(legacy, "manage.py", "migrate", "--noinput", "-v1")

    # The replacing migrations are recorded as applied; only the content-type moves run,
    # and the migrations made since the move.
    ran = [line.split()[1] for line in applied.splitlines() if line.strip().startswith("Applying")]
    assert sorted(ran) == [
        "artifacts.0002_adopt_content_types...",
        "artifacts.0003_artifact_state...",
        "artifacts.0004_artifact_touched_at...",
        "artifacts.0005_deleted_artifact...",
        "pipelines_app.0004_workbench_origin...",
        "runs_app.0003_worker_sandbox...",
        "runs_app.0004_reuse_notes_and_forget...",
        "runs_app.0005_run_archive_pin...",
        "runs_app.0006_retention_policy...",
        "runs_app.0007_run_tags_and_note...",
        "runs_app.0008_run_list_prefs...",
        "workspaces.0002_adopt_content_types...",
        "workspaces.0003_api_tokens...",
    ]
    upgraded = _read(legacy)
    assert upgraded["membership"] == ["ada", "lab", "owner"]
    assert upgraded["dataset_version"] == [1, "a" * 64, "lab"]
    assert upgraded["step_output"] == ["succeeded", "prep", "a" * 64]
    assert upgraded["content_types"] == [
        "artifacts.artifact",
        "workspaces.membership",
        "workspaces.workspace",
    ]
    _run(legacy, "manage.py", "migrate", "--check", "--noinput")

    _run(fresh, "manage.py", "migrate", "--noinput", "-v0")
    assert upgraded["schema"] == _read_schema(fresh)


def _read_schema(env: dict[str, str]) -> dict[str, Any]:
    code = (
        "import json, sys, django; django.setup(); from django.db import connection;"
        "from tests.legacy_db import schema; json.dump(schema(connection), sys.stdout)"
    )
    return json.loads(_run(env, "-c", code))
