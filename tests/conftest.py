"""A small named world for every test: a workspace with an owner, an editor and a viewer,
and a stranger who owns another workspace. Artifacts go to a temp folder per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

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


# --- a real S3 API on loopback (moto's standalone server), for the S3 artifact store -------


@dataclass
class S3Request:
    method: str
    key: str  # the object key ("" for a bucket-level request)
    range: str | None  # the Range header, as sent


@dataclass
class S3Bucket:
    """A fresh bucket on the test S3 server, and what the tests look at in it."""

    endpoint: str
    name: str
    prefix: str
    client: Any

    def object_keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def key_of(self, storage_name: str) -> str:
        return f"{self.prefix}/{storage_name}"

    def delete(self, storage_name: str) -> None:
        """What an S3 lifecycle rule or a careless operator does: the object goes."""
        self.client.delete_object(Bucket=self.name, Key=self.key_of(storage_name))

    @contextmanager
    def recording(self) -> Iterator[list[S3Request]]:
        """The requests the server answered for this bucket while the block ran (moto's own
        recorder: observed at the server, whichever client or thread sent them)."""
        import json
        import urllib.request

        def call(action: str, method: str = "POST") -> bytes:
            url = f"{self.endpoint}/moto-api/recorder/{action}"
            with urllib.request.urlopen(urllib.request.Request(url, method=method)) as reply:
                data: bytes = reply.read()
                return data

        call("reset-recording")
        call("start-recording")
        seen: list[S3Request] = []
        try:
            yield seen
        finally:
            call("stop-recording")
            for line in call("download-recording", "GET").decode().splitlines():
                entry = json.loads(line)
                path = urlsplit(entry["url"]).path.lstrip("/")
                bucket, _, key = path.partition("/")
                if bucket == self.name:
                    headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
                    seen.append(S3Request(entry["method"], unquote(key), headers.get("range")))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: Any) -> Iterator[str]:
    """moto's S3 server on a free loopback port for the whole session (started on first
    use, stopped at the end): a real HTTP S3 API, nothing to install or configure."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,  # its recorder writes a file into the current folder
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto's S3 server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3_bucket(settings: Any, s3_server: str) -> S3Bucket:
    """The artifact store is a new bucket on the test S3 server (this test's alone)."""
    import uuid

    import boto3

    name = f"stepworks-test-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_CREDENTIALS["region_name"],
        aws_access_key_id=S3_CREDENTIALS["access_key"],
        aws_secret_access_key=S3_CREDENTIALS["secret_key"],
    )
    client.create_bucket(Bucket=name)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "artifacts.s3.ArtifactS3Storage",
            "OPTIONS": {
                "bucket_name": name,
                "endpoint_url": s3_server,
                "location": "artifacts",
                **S3_CREDENTIALS,
            },
        },
    }
    return S3Bucket(endpoint=s3_server, name=name, prefix="artifacts", client=client)


@pytest.fixture
def s3_presigned(settings: Any, s3_bucket: S3Bucket) -> S3Bucket:
    """The same bucket with presigned downloads on (STEPWORKS_S3_PRESIGNED=1)."""
    artifacts = settings.STORAGES["artifacts"]
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {**artifacts, "OPTIONS": {**artifacts["OPTIONS"], "presigned": True}},
    }
    return s3_bucket
