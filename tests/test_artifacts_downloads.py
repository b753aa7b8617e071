"""Downloads: one artifact (streamed, ETag, Range, safe names), a directory as a zip, the
whole run as one zip with its manifest; and who may fetch what."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
from django.test import RequestFactory
from django.urls import reverse

from artifacts.http import artifact_download_response, parse_range
from artifacts.models import ArtifactKind
from artifacts.store import artifact_filename, artifact_store_bytes
from runs_app.downloads import run_zip_response
from runs_app.models import StepOutput, StepRun
from tests.test_explorer_pages import finished_run

pytestmark = pytest.mark.django_db

DATA = bytes(range(256)) * 40  # 10,240 bytes


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def download_url(sha256: str, slug: str = "lab") -> str:
    return reverse("runs:artifact_download", args=[slug, sha256])


@pytest.fixture
def blob(world: Any) -> Any:
    return artifact_store_bytes(world.workspace, DATA, "application/octet-stream")


def test_download_streams_the_bytes_as_an_attachment_with_etag_and_nosniff(
    client: Any, world: Any, blob: Any
) -> None:
    client.force_login(world.viewer)

    response = client.get(download_url(blob.sha256))

    assert response.status_code == 200 and response.streaming
    assert body(response) == DATA
    assert response["ETag"] == f'"{blob.sha256}"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"] == f'attachment; filename="{blob.sha256[:16]}.bin"'
    assert response["Content-Length"] == str(len(DATA))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Security-Policy"].startswith("sandbox")


def test_download_honours_one_range_and_refuses_an_unsatisfiable_one(
    client: Any, world: Any, blob: Any
) -> None:
    client.force_login(world.viewer)
    url = download_url(blob.sha256)

    middle = client.get(url, HTTP_RANGE="bytes=100-199")
    tail = client.get(url, HTTP_RANGE="bytes=-10")
    open_end = client.get(url, HTTP_RANGE="bytes=10200-")
    beyond = client.get(url, HTTP_RANGE="bytes=99999-")
    several = client.get(url, HTTP_RANGE="bytes=0-1,5-6")
    stale = client.get(url, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"other"')

    assert middle.status_code == 206 and body(middle) == DATA[100:200]
    assert middle["Content-Range"] == f"bytes 100-199/{len(DATA)}"
    assert middle["Content-Length"] == "100"
    assert tail.status_code == 206 and body(tail) == DATA[-10:]
    assert open_end.status_code == 206 and body(open_end) == DATA[10200:]
    assert beyond.status_code == 416 and beyond["Content-Range"] == f"bytes */{len(DATA)}"
    assert several.status_code == 200 and body(several) == DATA  # a full answer is allowed
    assert stale.status_code == 200 and body(stale) == DATA  # If-Range no longer matches


def test_download_answers_304_when_the_etag_matches(client: Any, world: Any, blob: Any) -> None:
    client.force_login(world.viewer)

    response = client.get(download_url(blob.sha256), HTTP_IF_NONE_MATCH=f'"{blob.sha256}"')

    assert response.status_code == 304 and response.content == b""


def test_parse_range_cases() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=-0", 10) is False
    assert parse_range("bytes=4-2", 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=", 10) is None


def test_html_and_svg_download_as_octet_stream_never_inline(client: Any, world: Any) -> None:
    page = artifact_store_bytes(world.workspace, b"<script>alert(1)</script>", "text/html")
    client.force_login(world.viewer)

    response = client.get(download_url(page.sha256))

    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment;")


def test_a_stored_media_type_with_a_line_break_downloads_as_bytes_not_a_500(
    client: Any, world: Any
) -> None:
    # Stored before outputs were checked: the header could not be sent at all.
    stored = artifact_store_bytes(world.workspace, b"a,b\n", "text/csv\r\nX-Injected: 1")
    client.force_login(world.viewer)

    response = client.get(download_url(stored.sha256))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert "X-Injected" not in response


def test_content_disposition_is_safe_for_any_name(world: Any, blob: Any) -> None:
    request = RequestFactory().get("/")

    response = artifact_download_response(request, blob, 'ré"port\r\nX-Evil: 1;.csv')

    header = response["Content-Disposition"]
    assert header.startswith("attachment; filename*=utf-8''")
    assert "\n" not in header and "\r" not in header and '"' not in header.split("''", 1)[1]


def test_download_name_is_the_output_name_with_its_type_suffix(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    out = StepOutput.objects.get(step__run=run, step__name="s1")
    client.force_login(world.viewer)

    response = client.get(download_url(out.artifact.sha256))

    assert response["Content-Disposition"] == 'attachment; filename="out.json"'
    assert artifact_filename(out.artifact, "model") == "model.json"


def test_artifact_of_another_workspace_is_404_and_bad_digests_never_match(
    client: Any, world: Any
) -> None:
    secret = artifact_store_bytes(world.other_workspace, b"secret", "text/plain")
    client.force_login(world.owner)

    assert client.get(download_url(secret.sha256)).status_code == 404
    assert client.get(reverse("runs:artifact", args=["lab", secret.sha256])).status_code == 404
    for bad in ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "A" * 64, "0" * 63):
        assert client.get(f"/w/lab/artifacts/{bad}/download/").status_code == 404
    client.force_login(world.stranger)
    mine = artifact_store_bytes(world.workspace, b"mine", "text/plain")
    assert client.get(download_url(mine.sha256)).status_code == 404


def test_anonymous_downloads_go_to_login(client: Any, world: Any, blob: Any) -> None:
    response = client.get(download_url(blob.sha256))

    assert response.status_code == 302 and response.url.startswith(reverse("login"))


# --- directories and whole runs ------------------------------------------------------------------
def directory_artifact(workspace: Any, files: dict[str, bytes]) -> Any:
    rows = []
    for path, data in files.items():
        stored = artifact_store_bytes(workspace, data, "application/octet-stream")
        rows.append({"path": path, "sha256": stored.sha256, "size": stored.size})
    manifest = json.dumps({"files": rows}, sort_keys=True).encode()
    return artifact_store_bytes(
        workspace, manifest, "application/vnd.stepworks.directory+json", ArtifactKind.DIRECTORY
    )


def test_a_directory_artifact_downloads_as_a_zip_of_its_files(client: Any, world: Any) -> None:
    folder = directory_artifact(
        world.workspace, {"a.txt": b"alpha", "sub/b.bin": b"\x00\x01", "../evil": b"x"}
    )
    client.force_login(world.viewer)

    response = client.get(download_url(folder.sha256))

    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].endswith('.zip"')
    assert sorted(archive.namelist()) == ["a.txt", "evil", "sub/b.bin"]  # no ".." survives
    assert archive.read("a.txt") == b"alpha" and archive.read("sub/b.bin") == b"\x00\x01"


def test_run_zip_holds_every_output_and_a_manifest_with_lineage(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.viewer)

    response = client.get(reverse("runs:outputs_zip", args=["lab", run.pk]))

    data = body(response)
    assert response.status_code == 200 and response["Content-Length"] == str(len(data))
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-outputs.zip"'
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist()[0] == "manifest.json"
    manifest = json.loads(archive.read("manifest.json"))
    assert set(manifest) == {"run", "files", "missing", "lineage"} and manifest["run"] == run.pk
    assert manifest["missing"] == []
    assert [f["path"] for f in manifest["files"]] == ["s0/out.json", "s1/out.json", "s2/out.json"]
    for entry in manifest["files"]:
        content = archive.read(entry["path"])
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
        assert len(content) == entry["size"] and entry["output"] == "out"
        assert entry["path"].startswith(entry["step"] + "/")
    assert {"input", "output", "step_of"} <= {e["kind"] for e in manifest["lineage"]["edges"]}


def test_run_zip_of_chosen_steps_and_an_unknown_step(client: Any, world: Any) -> None:
    run = finished_run(world.workspace)
    client.force_login(world.viewer)
    url = reverse("runs:outputs_zip", args=["lab", run.pk])

    chosen = client.get(url, {"step": ["s2", "s0"]})
    unknown = client.get(url, {"step": "../../etc"})

    manifest = json.loads(zipfile.ZipFile(io.BytesIO(body(chosen))).read("manifest.json"))
    assert [f["step"] for f in manifest["files"]] == ["s0", "s2"]
    assert unknown.status_code == 400 and b"unknown step" in unknown.content


def test_run_zip_expands_directory_outputs(world: Any) -> None:
    run = finished_run(world.workspace)
    folder = directory_artifact(world.workspace, {"weights/w.bin": b"123", "config.json": b"{}"})
    step = StepRun.objects.get(run=run, name="s2")
    StepOutput.objects.create(step=step, name="bundle", artifact=folder)

    archive = zipfile.ZipFile(io.BytesIO(body(run_zip_response(run, ["s2"]))))

    assert sorted(archive.namelist()) == [
        "manifest.json",
        "s2/bundle/config.json",
        "s2/bundle/weights/w.bin",
        "s2/out.json",
    ]
    assert archive.read("s2/bundle/weights/w.bin") == b"123"


def test_run_zip_memory_stays_flat_because_members_are_read_lazily(world: Any) -> None:
    """The response is a generator: no member is opened before the client reads it."""
    run = finished_run(world.workspace)

    response = run_zip_response(run)

    assert response.streaming
    first = next(iter(response.streaming_content))
    assert len(first) < 1024 * 1024
