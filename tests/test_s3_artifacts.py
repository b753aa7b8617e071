"""The artifact store on S3 (issue 15): django-storages' S3 backend over boto3, against a real
S3 API (moto's server on loopback, `s3_bucket` in conftest.py). Every promise the store
keeps on disk holds in a bucket: content-addressed and stored once, previews that read a
bounded range, downloads streamed or redirected to a presigned URL with our headers, the run
zip streamed from the bucket, lost objects recomputed, the collector, check_artifacts."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import urllib.request
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from artifacts.checks import check_artifacts
from artifacts.models import Artifact, ArtifactState
from artifacts.previews import PREVIEW_TEXT_BYTES, artifact_preview
from artifacts.s3 import MAX_WINDOW, MIN_WINDOW
from artifacts.store import artifact_open, artifact_store_bytes, artifact_store_file
from pipelines_app.models import PipelineVersion
from runs_app import scheduler
from runs_app.gc import collect
from runs_app.inputcache import input_cache
from runs_app.models import RunStatus, StepInput, StepStatus
from runs_app.selectors import reuse_explanation
from tests.helpers import wait_runs
from tests.test_api_support import api_client
from tests.test_engine import bodies, steps_of, three_step_pipeline
from tests.test_explorer_pages import finished_run
from workspaces.models import AuditEntry, AuditVerb

pytestmark = pytest.mark.django_db


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _gets(requests: list[Any]) -> list[Any]:
    return [r for r in requests if r.method == "GET"]


def _range_length(header: str) -> int:
    first, last = header.removeprefix("bytes=").split("-")
    return int(last) - int(first) + 1


# --- store, dedupe, existence --------------------------------------------------------------


def test_bytes_are_stored_once_by_digest_and_a_second_store_only_asks(
    world: Any, s3_bucket: Any
) -> None:
    data = b"a,b\n1,2\n" * 1000
    first = artifact_store_bytes(world.workspace, data, "text/csv")

    with s3_bucket.recording() as requests:
        again = artifact_store_bytes(world.workspace, data, "text/csv")
        elsewhere = artifact_store_bytes(world.other_workspace, data, "text/csv")

    sha = hashlib.sha256(data).hexdigest()
    assert first.sha256 == again.sha256 == elsewhere.sha256 == sha
    assert first.storage_name == f"{sha[:2]}/{sha[2:4]}/{sha}"
    assert s3_bucket.object_keys() == [
        s3_bucket.key_of(first.storage_name)
    ]  # one object, no suffix
    assert {r.method for r in requests} == {"HEAD"}  # the dedupe: HEADs, never a second PUT
    assert again.pk == first.pk and elsewhere.pk != first.pk  # a row per workspace
    stored = s3_bucket.client.get_object(
        Bucket=s3_bucket.name, Key=s3_bucket.key_of(sha[:2] + "/" + sha[2:4] + "/" + sha)
    )
    assert stored["Body"].read() == data


def test_an_open_of_a_missing_object_is_a_404_naming_the_artifact_and_marks_it(
    world: Any, s3_bucket: Any
) -> None:
    artifact = artifact_store_bytes(world.workspace, b"soon gone", "text/plain")
    s3_bucket.delete(artifact.storage_name)
    page = Client()
    page.force_login(world.viewer)

    response = page.get(reverse("runs:artifact_download", args=["lab", artifact.sha256]))

    assert response.status_code == 404
    assert artifact.sha256[:12] in response.content.decode()
    artifact.refresh_from_db()
    assert artifact.state == ArtifactState.MISSING
    # Stored again (a run recomputed it): the row is present once more.
    assert artifact_store_bytes(world.workspace, b"soon gone", "text/plain").state == "present"


# --- previews read a bounded range -----------------------------------------------------------


def test_a_preview_of_a_big_text_object_fetches_only_its_head(world: Any, s3_bucket: Any) -> None:
    line = b"alpha,beta,gamma\n"
    data = b"a,b,c\n" + line * (20 * 1024 * 1024 // len(line))  # ~20 MB
    artifact = artifact_store_bytes(world.workspace, data, "text/csv")

    with s3_bucket.recording() as requests:
        preview = artifact_preview(artifact)

    assert preview["kind"] == "table" and preview["rows"][0] == ["alpha", "beta", "gamma"]
    assert preview["row_count_exact"] is False
    gets = _gets(requests)
    assert len(gets) == 1 and gets[0].range is not None
    assert _range_length(gets[0].range) <= max(MIN_WINDOW, PREVIEW_TEXT_BYTES + 1)


def test_a_parquet_preview_reads_its_footer_and_first_rows_not_the_object(
    world: Any, s3_bucket: Any
) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((400_000, 6)), columns=list("abcdef"))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, row_group_size=65_536)
    data = buffer.getvalue()
    artifact = artifact_store_bytes(world.workspace, data, "application/vnd.apache.parquet")

    with s3_bucket.recording() as requests:
        preview = artifact_preview(artifact, rows=5)

    assert preview["kind"] == "table" and preview["row_count"] == 400_000
    assert len(preview["rows"]) == 5
    gets = _gets(requests)
    assert gets and all(r.range for r in gets)  # every GET names its bytes
    fetched = sum(_range_length(r.range) for r in gets)
    assert fetched < len(data) / 4, (fetched, len(data))


def test_a_sequential_read_streams_in_growing_bounded_windows(world: Any, s3_bucket: Any) -> None:
    data = np.random.default_rng(1).bytes(9 * 1024 * 1024 + 17)
    artifact = artifact_store_bytes(world.workspace, data, "application/octet-stream")

    with s3_bucket.recording() as requests, artifact_open(artifact) as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)

    assert digest.hexdigest() == artifact.sha256
    lengths = [_range_length(r.range) for r in _gets(requests)]
    assert sum(lengths) == len(data)  # every byte asked for once
    assert len(lengths) <= 6 and max(lengths) <= MAX_WINDOW  # a few bounded GETs
    assert lengths == sorted(lengths[:-1]) + lengths[-1:]  # windows grow while reading on


# --- downloads: streamed, or a presigned redirect ---------------------------------------------


def test_a_download_streams_from_the_bucket_with_ranges_and_etag(
    world: Any, s3_bucket: Any
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    artifact = artifact_store_bytes(world.workspace, data, "application/octet-stream")
    page = Client()
    page.force_login(world.viewer)
    url = reverse("runs:artifact_download", args=["lab", artifact.sha256])

    whole = page.get(url)
    piece = page.get(url, HTTP_RANGE="bytes=1000-1999")

    assert whole.status_code == 200 and whole.streaming and _body(whole) == data
    assert whole["ETag"] == f'"{artifact.sha256}"' and whole["Content-Length"] == str(len(data))
    assert whole["Content-Disposition"].startswith("attachment")
    assert piece.status_code == 206 and _body(piece) == data[1000:2000]
    assert piece["Content-Range"] == f"bytes 1000-1999/{len(data)}"


def test_a_presigned_download_is_a_302_whose_url_carries_our_headers(
    world: Any, s3_presigned: Any
) -> None:
    data = b"<p>not on our origin</p>"
    html = artifact_store_bytes(world.workspace, data, "text/html")
    csv = artifact_store_bytes(world.workspace, b"x,y\n1,2\n", "text/csv")
    page = Client()
    page.force_login(world.viewer)

    response = page.get(reverse("runs:artifact_download", args=["lab", html.sha256]))
    api = api_client(world.viewer).get(f"/api/v1/workspaces/lab/artifacts/{csv.sha256}/download/")

    assert response.status_code == 302 and api.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{s3_presigned.endpoint}/{s3_presigned.name}/")
    query = parse_qs(urlsplit(location).query)
    assert query["response-content-disposition"] == [
        f'attachment; filename="{html.sha256[:16]}.html"'
    ]
    # Active content goes as bytes from the bucket too, never as a page.
    assert query["response-content-type"] == ["application/octet-stream"]
    assert "X-Amz-Signature" in query and query["X-Amz-Expires"] == ["60"]
    assert response["Cache-Control"] == "no-store"
    with urllib.request.urlopen(location) as fetched:  # what the browser does next
        assert fetched.status == 200 and fetched.read() == data
        assert fetched.headers["Content-Disposition"] == (
            f'attachment; filename="{html.sha256[:16]}.html"'
        )
        assert fetched.headers["Content-Type"] == "application/octet-stream"
    with urllib.request.urlopen(api["Location"]) as fetched:
        assert fetched.headers["Content-Type"] == "text/csv"
        assert fetched.read() == b"x,y\n1,2\n"
    # A redirect hands the bytes out: both are in the audit trail.
    downloads = AuditEntry.objects.filter(verb=AuditVerb.ARTIFACT_DOWNLOADED)
    assert sorted(e.data["sha256"] for e in downloads) == sorted([html.sha256, csv.sha256])


def test_a_presigned_download_of_a_lost_object_is_our_404_not_the_buckets(
    world: Any, s3_presigned: Any
) -> None:
    artifact = artifact_store_bytes(world.workspace, b"lost", "text/plain")
    s3_presigned.delete(artifact.storage_name)
    page = Client()
    page.force_login(world.viewer)

    response = page.get(reverse("runs:artifact_download", args=["lab", artifact.sha256]))

    assert response.status_code == 404 and artifact.sha256[:12] in response.content.decode()


# --- the run zip ----------------------------------------------------------------------------


def test_the_run_zip_streams_every_output_from_the_bucket(world: Any, s3_bucket: Any) -> None:
    run = finished_run(world.workspace)
    big = artifact_store_bytes(
        world.workspace, np.random.default_rng(2).bytes(3 << 20), "application/octet-stream"
    )
    step = run.steps.get(name="s2")
    step.outputs.create(name="weights", artifact=big)

    with s3_bucket.recording() as requests:
        response = api_client(world.viewer).get(f"/api/v1/workspaces/lab/runs/{run.pk}/outputs.zip")
        assert response.status_code == 200 and response.streaming
        data = _body(response)

    assert response["Content-Length"] == str(len(data))
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["missing"] == [] and len(manifest["files"]) == 4
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    gets = _gets(requests)
    assert gets and all(r.range and _range_length(r.range) <= MAX_WINDOW for r in gets)


# --- reuse of lost bytes, the collector, check_artifacts ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_objects_were_deleted_is_recomputed_not_reused(
    world: Any, s3_bucket: Any, embedded_workers: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "bodies.txt"
    version = three_step_pipeline(world.workspace, marker)
    first = scheduler.run_create(version)
    wait_runs(first)
    lost = steps_of(first)["b"].outputs.get().artifact
    s3_bucket.delete(lost.storage_name)

    second = scheduler.run_create(version)
    wait_runs(second)

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert bodies(marker) == ["a 0", "b 0", "c 0", "b 0"]  # b again, and only b
    steps = steps_of(second)
    assert [steps[n].status for n in "abc"] == [
        StepStatus.REUSED,
        StepStatus.SUCCEEDED,
        StepStatus.REUSED,
    ]
    assert (
        f"cached outputs of run {first.pk} were missing"
        in (reuse_explanation(steps["b"])["summary"])
    )
    assert s3_bucket.key_of(lost.storage_name) in s3_bucket.object_keys()  # stored again
    lost.refresh_from_db()
    assert lost.state == ArtifactState.PRESENT


def test_the_collector_deletes_unreferenced_objects_from_the_bucket(
    world: Any, s3_bucket: Any
) -> None:
    run = finished_run(world.workspace)
    held = run.steps.get(name="s0").outputs.get().artifact
    loose = artifact_store_bytes(world.workspace, b"nobody refers to me", "text/plain")

    assert collect().rows == 0  # within the grace period nothing goes
    done = collect(grace=timedelta(0))

    assert done.rows == 1 and done.names == 1 and done.bytes == loose.size
    keys = s3_bucket.object_keys()
    assert s3_bucket.key_of(loose.storage_name) not in keys
    assert s3_bucket.key_of(held.storage_name) in keys
    assert not Artifact.objects.filter(pk=loose.pk).exists()


def test_check_artifacts_finds_missing_corrupt_and_unreferenced_objects(
    world: Any, s3_bucket: Any
) -> None:
    kept = artifact_store_bytes(world.workspace, b"fine", "text/plain")
    missing = artifact_store_bytes(world.workspace, b"missing", "text/plain")
    corrupt = artifact_store_bytes(world.workspace, b"corrupt", "text/plain")
    s3_bucket.delete(missing.storage_name)
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key=s3_bucket.key_of(corrupt.storage_name), Body=b"c0rrupt"
    )
    stray = hashlib.sha256(b"stray").hexdigest()
    s3_bucket.client.put_object(
        Bucket=s3_bucket.name, Key=s3_bucket.key_of(f"{stray[:2]}/{stray[2:4]}/{stray}"), Body=b"x"
    )

    findings = check_artifacts()

    assert findings.checked == 3
    assert findings.missing == [missing.storage_name]
    assert findings.corrupt == [corrupt.storage_name]
    assert findings.unreferenced == [f"{stray[:2]}/{stray[2:4]}/{stray}"]
    assert kept.storage_name not in findings.missing + findings.corrupt


def test_a_stored_file_is_read_back_whole_through_the_store(world: Any, s3_bucket: Any) -> None:
    data = b"\x00\x01" * 300_000
    with io.BytesIO(data) as handle:
        artifact = artifact_store_file(world.workspace, handle, "application/octet-stream")

    with artifact_open(artifact) as handle:
        assert handle.read() == data
        handle.seek(-10, io.SEEK_END)
        assert handle.read() == data[-10:]


# --- the demo, for real, with its artifacts in the bucket -------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_demo_runs_on_the_bucket_and_its_workers_read_inputs_from_their_cache(
    s3_bucket: Any, settings: Any, tmp_path_factory: Any, caplog: Any
) -> None:
    from runs_app.dispatch import EmbeddedWorkers

    settings.DATA_DIR = tmp_path_factory.mktemp("data")  # the workers' cache folder
    call_command("seed_demo", stdout=io.StringIO())  # its dataset goes to the bucket
    version = PipelineVersion.objects.filter(pipeline__name="classify").latest("number")
    cache = input_cache(Path(settings.DATA_DIR) / "worker-cache" / "inputs")
    workers = EmbeddedWorkers(threads=2)
    workers.start()
    try:
        run = scheduler.run_create(version)
        wait_runs(run, timeout=240)
        hits, misses = cache.stats.hits, cache.stats.misses
        forced = scheduler.run_create(version, reuse=False)
        wait_runs(forced, timeout=240)
    finally:
        with caplog.at_level(logging.INFO, logger="runs_app.worker"):
            workers.stop()

    assert run.status == forced.status == RunStatus.SUCCEEDED
    inputs = list(StepInput.objects.filter(step__run=run).select_related("artifact"))
    assert len(inputs) == 5  # data, train (twice), model, test
    digests = {i.artifact.sha256 for i in inputs}
    cached = {p.name for p in cache.root.iterdir() if not p.name.startswith(".")}
    assert digests <= cached  # each downloaded once into the host's cache
    assert misses == len(digests) and hits == len(inputs) - len(digests)
    assert cache.stats.hits - hits == len(inputs)  # the forced run downloaded nothing
    assert cache.stats.misses == misses
    # The process says what its cache did as it stops (bench/bench_scale.py reads it).
    said = f"input cache: {cache.stats.hits} hits, {misses} misses"
    assert any(said in r.getMessage() for r in caplog.records), caplog.text
    keys = set(s3_bucket.object_keys())
    outputs = Artifact.objects.filter(producers__step__run__in=[run, forced]).distinct()
    assert outputs.count() >= 6
    assert {s3_bucket.key_of(a.storage_name) for a in outputs} <= keys  # only in the bucket
    accuracy = forced.steps.get(name="evaluate").metrics.get(name="accuracy").value
    assert 0.8 < accuracy <= 1.0


@pytest.mark.django_db(transaction=True)
def test_the_python_client_follows_a_presigned_download_to_the_bucket(
    world: Any, s3_presigned: Any, live_server: Any, tmp_path: Path
) -> None:
    from stepworks.client import Client as StepworksClient
    from tests.helpers import api_token

    data = np.random.default_rng(3).bytes(300_000)
    artifact = artifact_store_bytes(world.workspace, data, "application/octet-stream")

    with StepworksClient(live_server.url, api_token(world.viewer), "lab") as client:
        saved = client.download_artifact(artifact.sha256, tmp_path / "weights.bin")

    assert saved.read_bytes() == data  # verified against its sha256 on the way
