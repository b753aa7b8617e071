"""A small named world for every test: a workspace with an owner, an editor and a viewer,
and a stranger who owns another workspace. Artifacts go to a temp folder per test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from workspaces.models import Membership, Role, Workspace


@pytest.fixture(autouse=True)
def _artifact_root(settings: Any, tmp_path_factory: Any) -> None:
    """Each test writes artifacts into its own folder, beside (not in) its tmp_path: steps
    may write their marker files into tmp_path (below), never into the store."""
    root = tmp_path_factory.mktemp("artifacts")
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "artifacts.store.AtomicFileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }  # Django's setting_changed signal resets the storage handler, before and after


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    """PBKDF2 at a million rounds costs half a second a user; tests need no strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fast_intervals(settings: Any) -> None:
    """Every interval is a setting; tests shorten them so recovery is seen in seconds."""
    settings.STEPWORKS = {
        **settings.STEPWORKS,
        "HEARTBEAT_S": 0.2,
        "LEASE_S": 1.0,
        "REAPER_S": 0.5,
        "EMBEDDED_POLL_S": 0.1,
        "STEP_TIMEOUT_S": 60.0,
        # A sweep's runs all start in the call that makes it, however slow the machine: a
        # test that needs the expand_sweep actor sets this to 0 (test_sweeps_services.py).
        "SWEEP_INLINE_S": 600.0,
        "DRAIN_S": 1.0,  # a test's workers stop within a second, giving back what still runs
    }


@pytest.fixture(autouse=True)
def _steps_write_tmp_path(settings: Any, tmp_path: Any) -> None:
    """Sandboxed steps may write the test's tmp_path: that is how tests count step bodies
    (a line appended to a marker file per body)."""
    settings.STEPWORKS = {**settings.STEPWORKS, "STEP_WRITE_DIRS": [str(tmp_path)]}


@dataclass
class World:
    workspace: Workspace
    other_workspace: Workspace
    owner: Any
    editor: Any
    viewer: Any
    stranger: Any


@pytest.fixture(autouse=True)
def _stop_wakeup_threads() -> Any:
    """A long-poll on PostgreSQL starts a LISTEN thread with its own connection; it must not
    outlive the test (nor hold the test database open when it is dropped)."""
    yield
    from runs_app import wakeups

    wakeups.stop()


@pytest.fixture
def world(db: None) -> World:
    users = get_user_model()
    owner = users.objects.create_user("olivia", password="pw-olivia-1")
    editor = users.objects.create_user("eddie", password="pw-eddie-1")
    viewer = users.objects.create_user("vera", password="pw-vera-1")
    stranger = users.objects.create_user("sam", password="pw-sam-1")
    workspace = Workspace.objects.create(slug="lab", name="The lab")
    other = Workspace.objects.create(slug="elsewhere", name="Elsewhere")
    Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
    Membership.objects.create(user=editor, workspace=workspace, role=Role.EDITOR)
    Membership.objects.create(user=viewer, workspace=workspace, role=Role.VIEWER)
    Membership.objects.create(user=stranger, workspace=other, role=Role.OWNER)
    return World(workspace, other, owner, editor, viewer, stranger)


@pytest.fixture
def embedded_workers(transactional_db: None) -> Any:
    """Two embedded worker threads with their zygotes, heartbeat, reaper and dispatcher;
    stopped before the test ends (a worker thread must not outlive its test database)."""
    from runs_app.dispatch import EmbeddedWorkers

    workers = EmbeddedWorkers(threads=2)
    workers.start()
    yield workers
    workers.stop()
