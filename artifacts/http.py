"""HTTP responses for artifacts: downloads with ETag and Range, streamed zips, inline images.

The web process never renders user bytes as active content on the app's origin: downloads
are attachments with nosniff and a sandbox CSP, and only raster images are served inline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any

from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from artifacts.models import Artifact, ArtifactKind
from artifacts.store import (
    ACTIVE_TYPES,
    CHUNK,
    INLINE_IMAGE_TYPES,
    ArtifactMissing,
    PresigningStorage,
    artifact_filename,
    artifact_open,
    artifact_storage,
    artifacts_missing,
    directory_manifest,
    media_base,
    presigning_storage,
    storage_name_for,
    valid_media_type,
)

# The policy of the frame that renders user HTML, SVG and plotly figures. `sandbox` without
# allow-same-origin gives it an opaque origin (no cookies, no calls to the app as the
# user); its scripts run (the figure's, the HTML's own) but may fetch nothing, post no
# form, load nothing from elsewhere, and only our pages may frame it.
FRAME_CSP = "; ".join(
    [
        "sandbox allow-scripts",
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src data:",
        "connect-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)


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
    """The header's type: active content and anything that is not a well-formed media type
    (stored before outputs were checked) go as bytes, never as a header that cannot be sent."""
    base = media_base(artifact.media_type)
    if base in ACTIVE_TYPES or not valid_media_type(artifact.media_type):
        return "application/octet-stream"
    return artifact.media_type


def artifact_download_response(
    request: HttpRequest, artifact: Artifact, filename: str | None = None
) -> HttpResponseBase:
    """Stream an artifact as an attachment: ETag = its sha256, one `Range`, nosniff.

    A directory artifact is streamed as a zip of its files. Memory stays flat: the bytes
    are read in CHUNK pieces as the client takes them. On a bucket with presigned downloads
    (STEPWORKS_S3_PRESIGNED=1) a file is a 302 to a short-lived URL of the bucket instead,
    whose answer carries the same Content-Disposition and type (Range is the bucket's).
    """
    filename = filename or artifact_filename(artifact)
    if artifact.kind == ArtifactKind.DIRECTORY:
        return directory_zip_response(artifact, filename)
    if _etag_matches(request.headers.get("If-None-Match", "") or "-", artifact.sha256):
        not_modified = HttpResponse(status=304)
        not_modified["ETag"] = _etag(artifact.sha256)
        return not_modified
    presigning = presigning_storage()
    if presigning is not None:
        return _presigned_redirect(presigning, artifact, filename)
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


def _presigned_redirect(
    storage: PresigningStorage, artifact: Artifact, filename: str
) -> HttpResponseRedirect:
    """A 302 to the bucket. The bytes are checked first (a HEAD, or the existence check's
    recent answer), so a lost object is our 404 naming the artifact, not the bucket's XML."""
    if artifacts_missing([artifact]):
        raise ArtifactMissing(artifact)
    url = storage.presigned_download_url(
        artifact.storage_name,
        disposition=content_disposition_header(True, filename) or "attachment",
        content_type=_download_type(artifact),
    )
    response = HttpResponseRedirect(url)
    # The URL expires within a minute or so: neither the browser nor a proxy may keep it.
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def stored_chunks(sha256: str) -> Iterator[bytes]:
    """Lazily open the stored bytes of one digest (for zip members)."""
    yield from _read_chunks(artifact_storage().open(storage_name_for(sha256), "rb"))


def zip_response(stream: Any, filename: str) -> StreamingHttpResponse:
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

    if artifacts_missing([artifact]):  # checked before the first byte: no truncated zip
        raise ArtifactMissing(artifact)
    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    for entry in directory_manifest(artifact):
        stream.add(stored_chunks(entry["sha256"]), entry["path"], size=entry["size"])
    response = zip_response(stream, filename or artifact_filename(artifact))
    response["ETag"] = _etag(artifact.sha256)
    return response


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
