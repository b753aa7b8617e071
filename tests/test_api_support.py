"""Builders shared by the API and CLI tests: token clients and a small pipeline made through
the services (real code, real inspection). No tests here."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework.test import APIClient

from pipelines_app import services
from pipelines_app.models import PipelineVersion
from tests.helpers import api_token, wait_runs
from workspaces.models import ApiToken, Workspace

PREP = """\
def prep(ctx, *, n: int = 3):
    print("preparing", n)
    return {"data": list(range(n))}
"""

TRAIN = """\
def train(ctx, data, *, scale: float = 1.0):
    total = sum(data) * scale
    ctx.log_metric("total", total)
    for i in range(3):
        ctx.log_metric("loss", 1.0 / (i + 1), step=i)
    print("trained with", scale)
    return {"model": {"w": scale, "total": total}, "report": "scale %s" % scale}
"""

SPEC = """\
steps:
  prep: {module: prep@latest}
  train: {module: train@latest, inputs: {data: prep.data}, params: {scale: 2.0}}
"""


def api_client(user: Any = None) -> APIClient:
    """A client that authenticates with the user's token (anonymous without a user)."""
    client = APIClient()
    if user is not None:
        key = api_token(user)
        # A token in use: its last use is recorded at most once a minute, so the queries a
        # test counts are the endpoint's, not that first UPDATE (test_tokens.py checks it).
        ApiToken.objects.filter(token_key=key[:15]).update(last_used=timezone.now())
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def small_pipeline(workspace: Workspace, user: Any = None) -> PipelineVersion:
    """prep -> train, pushed through the services."""
    services.module_version_create(workspace, "prep", {"prep.py": PREP}, "prep.py:prep", user=user)
    services.module_version_create(
        workspace, "train", {"train.py": TRAIN}, "train.py:train", user=user
    )
    return services.pipeline_version_create(workspace, "small", SPEC, "first", user=user)


def error_of(response: Any) -> dict[str, Any]:
    """The one error format's body, asserting its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    return body["error"]


def wait_run(run_id: int, timeout: float = 60) -> None:
    """Until the run reaches a terminal status (read from the database)."""
    wait_runs(run_id, timeout=timeout)
