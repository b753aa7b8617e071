"""A small named world for every test: a workspace with an owner, an editor and a viewer,
and a stranger who owns another workspace. Artifacts go to a temp folder per test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from pipelines_app.models import Membership, Role, Workspace


@pytest.fixture(autouse=True)
def _artifact_root(settings: Any, tmp_path: Any) -> None:  # noqa: PT004
    """Each test writes artifacts into its own folder."""
    root = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "runs_app.artifacts.AtomicFileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }  # Django's setting_changed signal resets the storage handler, before and after


@dataclass
class World:
    workspace: Workspace
    other_workspace: Workspace
    owner: Any
    editor: Any
    viewer: Any
    stranger: Any


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
