"""The content-addressed artifact store, over Django's storage API.

Bytes are named by their sha256, so identical bytes are stored once; an Artifact row per
workspace keeps every read scoped. On the filesystem backend a write goes to a temp file in
the target folder, is fsynced and renamed into place: readers see no file or the whole one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import mimetypes
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import IntegrityError, transaction
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from pipelines_app.models import Workspace
from runs_app.models import Artifact, ArtifactKind

TEMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose saves are atomic (temp, fsync, rename) and idempotent."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        # Content-addressed: the same name always means the same bytes, so overwrite.
        return name

    def _save(self, name: str, content: Any) -> str:
        full_path = Path(self.path(name))
        full_path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=full_path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                if hasattr(content, "chunks"):
                    for chunk in content.chunks():
                        handle.write(chunk)
                else:
                    handle.write(content.read())
                handle.flush()
                os.fsync(handle.fileno())
            # Read-only: steps read inputs straight from the store and must not edit them.
            os.chmod(temp_path, 0o444)
            os.replace(temp_path, full_path)
        except BaseException:
            Path(temp_path).unlink(missing_ok=True)
            raise
        return name

    def collect_orphans(self, older_than_s: float = 3600.0) -> int:
        """Remove temp files a crashed writer left behind; returns how many."""
        root = Path(self.location)
        if not root.exists():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for path in root.rglob(f"{TEMP_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def artifact_storage() -> Storage:
    return storages["artifacts"]


def storage_name_for(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def sha256_of_file(handle: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return digest.hexdigest(), size


def artifact_record(
    workspace: Workspace,
    sha256: str,
    size: int,
    media_type: str,
    kind: str = ArtifactKind.FILE,
) -> Artifact:
    """The Artifact row for bytes already in storage (created once per workspace)."""
    lookup = {"workspace": workspace, "sha256": sha256, "media_type": media_type, "kind": kind}
    existing = Artifact.objects.filter(**lookup).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Artifact.objects.create(
                **lookup, size=size, storage_name=storage_name_for(sha256)
            )
    except IntegrityError:  # another writer recorded the same bytes first
        return Artifact.objects.get(**lookup)


def artifact_store_file(
    workspace: Workspace, handle: IO[bytes], media_type: str, kind: str = ArtifactKind.FILE
) -> Artifact:
    """Store an open binary file (content-addressed) and record it in the workspace."""
    sha256, size = sha256_of_file(handle)
    storage = artifact_storage()
    name = storage_name_for(sha256)
    if not storage.exists(name):
        storage.save(name, File(handle))
    return artifact_record(workspace, sha256, size, media_type, kind)


def artifact_store_bytes(
    workspace: Workspace, data: bytes, media_type: str, kind: str = ArtifactKind.FILE
) -> Artifact:
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        return artifact_store_file(workspace, handle, media_type, kind)


def artifact_open(artifact: Artifact) -> IO[bytes]:
    return artifact_storage().open(artifact.storage_name, "rb")


# --- readers shared by the pages and the API: downloads, zips, previews ------------------------
# Everything below reads an Artifact row already fetched through an access helper (so scoped
# to the caller's workspace) and opens its bytes by the storage name recorded on the row: no
# value from a URL ever becomes a path. The web process never unpickles and never renders
# user bytes as active content on the app's origin.

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DIRECTORY_MEDIA_TYPE = "application/vnd.stepworks.directory+json"

# Previews read a bounded head, whatever the artifact's size.
PREVIEW_ROWS = 20
PREVIEW_TEXT_BYTES = 64 * 1024
PREVIEW_JSON_BYTES = 1024 * 1024
PREVIEW_JSON_NODES = 2000
PREVIEW_FRAME_BYTES = 8 * 1024 * 1024  # plotly/HTML/SVG served into the sandboxed frame
PREVIEW_CELL_CHARS = 200
MANIFEST_MAX_BYTES = 16 * 1024 * 1024

# Served inline (for <img>) only for these raster types; never SVG (it can carry script).
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# User bytes of these types only ever render inside the sandboxed frame.
FRAME_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml")
PLOTLY_TYPE = "application/vnd.plotly.v1+json"
PICKLE_TYPE = "application/x-python-pickle"
PARQUET_TYPE = "application/vnd.apache.parquet"
NPY_TYPE = "application/x-npy"
# Downloads of these go out as application/octet-stream, so no browser treats them as a page.
_ACTIVE_TYPES = (
    *FRAME_TYPES,
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
)
SANDBOX_CSP = "sandbox allow-scripts"

_SUFFIXES = {
    PARQUET_TYPE: ".parquet",
    NPY_TYPE: ".npy",
    "application/json": ".json",
    PLOTLY_TYPE: ".plotly.json",
    "image/png": ".png",
    "text/plain": ".txt",
    "application/octet-stream": ".bin",
    PICKLE_TYPE: ".pkl",
    "text/csv": ".csv",
    "text/html": ".html",
    "image/svg+xml": ".svg",
    "text/markdown": ".md",
    "image/jpeg": ".jpg",
    DIRECTORY_MEDIA_TYPE: ".zip",
}


def media_base(media_type: str) -> str:
    """`text/plain; charset=utf-8` -> `text/plain`."""
    return media_type.split(";", 1)[0].strip().lower()


def artifact_filename(artifact: Artifact, name: str | None = None) -> str:
    """A download name: the output's name (or the digest's head) plus the type's suffix."""
    base = media_base(artifact.media_type)
    if artifact.kind == ArtifactKind.DIRECTORY:
        suffix = ".zip"
    else:
        suffix = _SUFFIXES.get(base) or mimetypes.guess_extension(base, strict=False) or ".bin"
    stem = name or artifact.sha256[:16]
    return stem if stem.endswith(suffix) else f"{stem}{suffix}"


def _etag(sha256: str) -> str:
    return f'"{sha256}"'


def _etag_matches(header: str, sha256: str) -> bool:
    if header.strip() == "*":
        return True
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return _etag(sha256) in tags


def _read_chunks(handle: IO[bytes], length: int | None = None) -> Iterator[bytes]:
    """The handle's bytes (at most `length`) in CHUNK pieces; closes it at the end."""
    try:
        remaining = length
        while remaining is None or remaining > 0:
            chunk = handle.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """One `bytes=` range -> (first, last) inclusive; None to ignore the header (malformed or
    several ranges: a full 200 is always allowed); False when it cannot be satisfied."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header or "")
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(match[1])
    last = int(match[2]) if match[2] else size - 1
    if match[2] and last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


def _download_headers(response: HttpResponseBase, artifact: Artifact, filename: str) -> None:
    response["Content-Disposition"] = content_disposition_header(True, filename) or "attachment"
    response["ETag"] = _etag(artifact.sha256)
    response["X-Content-Type-Options"] = "nosniff"
    # Should the bytes ever be opened in a tab anyway, they run in an opaque origin.
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["Cache-Control"] = "private, max-age=31536000, immutable"


def _download_type(artifact: Artifact) -> str:
    base = media_base(artifact.media_type)
    return "application/octet-stream" if base in _ACTIVE_TYPES else artifact.media_type


def artifact_download_response(
    request: HttpRequest, artifact: Artifact, filename: str | None = None
) -> HttpResponseBase:
    """Stream an artifact as an attachment: ETag = its sha256, one `Range`, nosniff.

    A directory artifact is streamed as a zip of its files. Memory stays flat: the bytes
    are read in CHUNK pieces as the client takes them.
    """
    filename = filename or artifact_filename(artifact)
    if artifact.kind == ArtifactKind.DIRECTORY:
        return directory_zip_response(artifact, filename)
    if _etag_matches(request.headers.get("If-None-Match", "") or "-", artifact.sha256):
        not_modified = HttpResponse(status=304)
        not_modified["ETag"] = _etag(artifact.sha256)
        return not_modified
    size = artifact.size
    wanted = None
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == _etag(artifact.sha256)):
        wanted = parse_range(range_header, size)
    if wanted is False:
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        return refused
    handle = artifact_open(artifact)
    response: HttpResponseBase
    if isinstance(wanted, tuple):
        first, last = wanted
        handle.seek(first)
        response = StreamingHttpResponse(
            _read_chunks(handle, last - first + 1),
            status=206,
            content_type=_download_type(artifact),
        )
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
        response["Content-Length"] = str(last - first + 1)
    else:
        response = FileResponse(handle, content_type=_download_type(artifact))
        response.block_size = CHUNK
        response["Content-Length"] = str(size)
    response["Accept-Ranges"] = "bytes"
    _download_headers(response, artifact, filename)
    return response


def _safe_arcname(path: str) -> str:
    """A relative zip member name with no `..`, no absolute part, no backslashes."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"


def directory_manifest(artifact: Artifact) -> list[dict[str, Any]]:
    """A directory artifact's files: [{"path", "sha256", "size"}] (read bounded)."""
    with artifact_open(artifact) as handle:
        data = handle.read(MANIFEST_MAX_BYTES + 1)
    if len(data) > MANIFEST_MAX_BYTES:
        raise ValueError("directory manifest too large")
    files = json.loads(data).get("files", [])
    return [
        {"path": _safe_arcname(str(f["path"])), "sha256": str(f["sha256"]), "size": int(f["size"])}
        for f in files
        if SHA256_RE.match(str(f.get("sha256", "")))
    ]


def _stored_chunks(sha256: str) -> Iterator[bytes]:
    """Lazily open the stored bytes of one digest (for zip members)."""
    yield from _read_chunks(artifact_storage().open(storage_name_for(sha256), "rb"))


def _zip_response(stream: Any, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="application/zip")
    response["Content-Length"] = str(len(stream))
    response["Content-Disposition"] = content_disposition_header(True, filename) or "attachment"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response


def directory_zip_response(
    artifact: Artifact, filename: str | None = None
) -> StreamingHttpResponse:
    """A directory artifact as one streamed (stored, uncompressed) zip of its files."""
    import zipstream

    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    for entry in directory_manifest(artifact):
        stream.add(_stored_chunks(entry["sha256"]), entry["path"], size=entry["size"])
    response = _zip_response(stream, filename or artifact_filename(artifact))
    response["ETag"] = _etag(artifact.sha256)
    return response


def run_zip_files(run: Any, steps: list[str] | None = None) -> list[dict[str, Any]]:
    """Every output file of a run (or of the named steps), as manifest rows:
    [{"path", "sha256", "size", "step", "output"}]; a directory output adds one row per file.

    Unknown step names raise DomainError (the caller maps it to 400).
    """
    from pipelines_app.errors import DomainError
    from runs_app.models import StepOutput

    outputs = (
        StepOutput.objects.filter(step__run=run)
        .select_related("artifact", "step")
        .order_by("step__position", "name")
    )
    if steps:
        known = set(run.steps.values_list("name", flat=True))
        unknown = sorted(set(steps) - known)
        if unknown:
            raise DomainError(
                "invalid_step",
                "No such step in this run.",
                {"step": [f"unknown step {unknown[0]!r}"]},
            )
        outputs = outputs.filter(step__name__in=steps)
    files: list[dict[str, Any]] = []
    for out in outputs:
        artifact = out.artifact
        step_name = out.step.name
        if artifact.kind == ArtifactKind.DIRECTORY:
            for entry in directory_manifest(artifact):
                files.append(
                    {
                        "path": f"{step_name}/{_safe_arcname(out.name)}/{entry['path']}",
                        "sha256": entry["sha256"],
                        "size": entry["size"],
                        "step": step_name,
                        "output": out.name,
                    }
                )
        else:
            files.append(
                {
                    "path": f"{step_name}/{_safe_arcname(artifact_filename(artifact, out.name))}",
                    "sha256": artifact.sha256,
                    "size": artifact.size,
                    "step": step_name,
                    "output": out.name,
                }
            )
    return files


def run_zip_response(run: Any, steps: list[str] | None = None) -> StreamingHttpResponse:
    """The whole run (or the chosen steps) as one streamed zip with `manifest.json` first:
    {"run", "files": [{"path", "sha256", "size", "step", "output"}], "lineage"}.

    Files are stored uncompressed (model outputs rarely compress and the size is then known
    up front, so the response has a Content-Length); memory stays flat whatever their size.
    """
    import zipstream

    from runs_app.selectors import run_lineage

    files = run_zip_files(run, steps)
    manifest = {"run": run.pk, "files": files, "lineage": run_lineage(run)}
    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    stream.add(json.dumps(manifest, indent=2, sort_keys=True).encode(), "manifest.json")
    for row in files:
        stream.add(_stored_chunks(row["sha256"]), row["path"], size=row["size"])
    suffix = "" if not steps else "-" + "-".join(sorted(set(steps)))[:80]
    return _zip_response(stream, f"run-{run.pk}{suffix}-outputs.zip")


# --- previews ----------------------------------------------------------------------------------


def _read_head(artifact: Artifact, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes from the start, and whether there was more."""
    with artifact_open(artifact) as handle:
        data = handle.read(limit + 1)
    return data[:limit], len(data) > limit


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def _parquet_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    with artifact_open(artifact) as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=1 << 20)
        schema = parquet.schema_arrow
        total = parquet.metadata.num_rows
        head: list[list[str]] = []
        for batch in parquet.iter_batches(batch_size=rows):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            head = [[_cell(col[r]) for col in columns] for r in range(batch.num_rows)]
            break  # one batch: the head, never the whole file
    return {
        "kind": "table",
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "rows": head,
        "row_count": total,
        "row_count_exact": True,
    }


def _csv_type(values: list[str]) -> str:
    present = [v for v in values if v != ""]
    if not present:
        return "empty"
    for kind, parse in (("int", int), ("float", float)):
        try:
            for v in present:
                parse(v)
            return kind
        except ValueError:
            continue
    return "str"


def _csv_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if more and lines:
        lines = lines[:-1]  # the last line may be cut in the middle
    parsed = list(csv.reader(io.StringIO("\n".join(lines))))
    header, body = (parsed[0], parsed[1:]) if parsed else ([], [])
    head = body[:rows]
    types = [_csv_type([r[i] if i < len(r) else "" for r in head]) for i in range(len(header))]
    return {
        "kind": "table",
        "columns": [{"name": _cell(n), "type": t} for n, t in zip(header, types, strict=False)],
        "rows": [[_cell(v) for v in r] for r in head],
        # Exact only when the whole file was read; otherwise a lower bound.
        "row_count": len(body),
        "row_count_exact": not more,
    }


def _npy_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    import numpy as np
    from numpy.lib import format as npy_format

    with artifact_open(artifact) as handle:
        version = npy_format.read_magic(handle)
        # The header is a Python literal read with ast.literal_eval: no pickle involved.
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
        preview: dict[str, Any] = {"kind": "array", "shape": list(shape), "dtype": str(dtype)}
        if dtype.hasobject or fortran or len(shape) > 2:
            return preview
        width = shape[1] if len(shape) == 2 else 1
        count = min(rows, shape[0] if shape else 1) * width
        values = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    if len(shape) == 2:
        preview["rows"] = [
            [_cell(v) for v in values[i * width : (i + 1) * width]]
            for i in range(len(values) // max(width, 1))
        ]
    else:
        preview["rows"] = [[_cell(v)] for v in values]
    return preview


def json_tree(value: Any, budget: list[int] | None = None, key: str = "") -> dict[str, Any]:
    """A JSON value as nested nodes for a `<details>` tree, at most PREVIEW_JSON_NODES."""
    budget = budget if budget is not None else [PREVIEW_JSON_NODES]
    budget[0] -= 1
    if isinstance(value, dict | list):
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        children = []
        for child_key, child in items:
            if budget[0] <= 0:
                break
            children.append(json_tree(child, budget, str(child_key)))
        return {
            "key": key,
            "type": "object" if isinstance(value, dict) else "array",
            "size": len(items),
            "children": children,
            "hidden": len(items) - len(children),
        }
    shown = json.dumps(value, ensure_ascii=False)
    return {"key": key, "type": "value", "value": _cell(shown)}


def _markdown_html(text: str) -> str:
    """Markdown -> HTML with raw HTML off, then sanitised by nh3 (links get rel=noopener)."""
    import nh3
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).render(text)
    return nh3.clean(rendered, url_schemes={"http", "https", "mailto"})


def artifact_preview(artifact: Artifact, rows: int = PREVIEW_ROWS) -> dict[str, Any]:
    """What the artifact page shows, by media type; reads a bounded head only.

    {"kind": "table" | "array" | "image" | "json" | "text" | "markdown" | "frame" |
    "directory" | "download_only" | "none", ...}. Never unpickles; HTML, SVG and plotly
    figures get "frame" (rendered only in the sandboxed iframe).
    """
    base = media_base(artifact.media_type)
    try:
        if artifact.kind == ArtifactKind.DIRECTORY:
            return {"kind": "directory", "files": directory_manifest(artifact)[:500]}
        if base == PICKLE_TYPE:
            return {"kind": "download_only"}
        if base == PARQUET_TYPE:
            return _parquet_preview(artifact, rows)
        if base == NPY_TYPE:
            return _npy_preview(artifact, rows)
        if base in ("text/csv", "text/tab-separated-values"):
            return _csv_preview(artifact, rows)
        if base in INLINE_IMAGE_TYPES:
            return {"kind": "image"}
        if base == PLOTLY_TYPE or base in FRAME_TYPES:
            if artifact.size > PREVIEW_FRAME_BYTES:
                return {"kind": "too_large", "limit": PREVIEW_FRAME_BYTES}
            return {"kind": "frame"}
        if base == "application/json" or base.endswith("+json"):
            if artifact.size > PREVIEW_JSON_BYTES:
                data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
                return {"kind": "text", "text": data.decode("utf-8", "replace"), "truncated": more}
            data, _ = _read_head(artifact, PREVIEW_JSON_BYTES)
            return {"kind": "json", "tree": json_tree(json.loads(data))}
        if base == "text/markdown":
            data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
            return {
                "kind": "markdown",
                "html": _markdown_html(data.decode("utf-8", "replace")),
                "truncated": more,
            }
        if base.startswith("text/"):
            data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
            return {"kind": "text", "text": data.decode("utf-8", "replace"), "truncated": more}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {"kind": "error", "message": f"{type(error).__name__}: {error}"[:300]}
    except Exception as error:  # pyarrow's errors and friends: a preview never breaks a page
        return {"kind": "error", "message": f"{type(error).__name__}: {error}"[:300]}
    return {"kind": "none"}


def artifact_inline_image_response(artifact: Artifact) -> HttpResponseBase:
    """A raster image for `<img src>`: only PNG/JPEG/GIF/WebP, nosniff, sandboxed."""
    base = media_base(artifact.media_type)
    if base not in INLINE_IMAGE_TYPES or artifact.kind != ArtifactKind.FILE:
        raise Http404("Not an image.")
    response = FileResponse(artifact_open(artifact), content_type=base)
    response["Content-Length"] = str(artifact.size)
    response["Content-Disposition"] = "inline"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["ETag"] = _etag(artifact.sha256)
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


def artifact_frame_bytes(artifact: Artifact) -> bytes:
    """The bytes the sandboxed frame shows (bounded); the caller sets the sandbox CSP."""
    data, _ = _read_head(artifact, PREVIEW_FRAME_BYTES)
    return data
