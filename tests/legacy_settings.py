"""Settings that build a database at the head of the migrations from before the layered
apps: pipelines_app and runs_app migrate from their old files, workspaces and artifacts have
no migrations of their own yet. Only tests/legacy_db.py uses it."""

from config.settings import *  # noqa: F403

MIGRATION_MODULES = {
    **MIGRATION_MODULES,  # noqa: F405
    "pipelines_app": "tests.legacy_migrations.pipelines_app",
    "runs_app": "tests.legacy_migrations.runs_app",
    "workspaces": None,
    "artifacts": None,
}

# Before knox, API tokens were DRF's plain ones: workspaces.0003 drops their table.
INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework.authtoken"]  # noqa: F405
