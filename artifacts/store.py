"""The content-addressed artifact store, over Django's storage API.

Bytes are named by their sha256, so identical bytes are stored once; an Artifact row per
workspace keeps every read scoped. On the filesystem backend a write goes to a temp file in
the target folder, is fsynced and renamed into place: readers see no file or the whole one.

Everything that reads takes an Artifact row already fetched through an access helper (so
scoped to the caller's workspace) and opens its bytes by the storage name recorded on the
row: no value from a URL ever becomes a path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mimetypes
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, cast

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone

from artifacts.models import Artifact, ArtifactKind, ArtifactMember, ArtifactState
from workspaces import faultpoints
from workspaces.errors import DomainError
from workspaces.models import Workspace

TEMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024
# A store that held a name this recently is believed without asking again (a reuse checks
# its source's outputs; a sweep reuses the same ones many times in a second).
PRESENT_TTL_S = 5.0
_seen_present: dict[tuple[str, str], float] = {}  # (the store's location, name) -> when


class PresigningStorage(Protocol):
    """A store that can hand a download to its own server (artifacts.s3.ArtifactS3Storage
    with STEPWORKS_S3_PRESIGNED=1)."""

    presigned: bool

    def presigned_download_url(self, name: str, *, disposition: str, content_type: str) -> str:
        """A short-lived GET URL whose response carries these headers."""


class ArtifactGone(DomainError):
    """The collector deleted this artifact (its runs were deleted or expired): 410 Gone."""

    def __init__(self, sha256: str, deleted_at: Any) -> None:
        super().__init__(
            "gone",
            f"Artifact {sha256[:12]} was deleted on {deleted_at:%Y-%m-%d %H:%M} (its runs were "
            "deleted or expired, and nothing else held it).",
            status_code=410,
        )


class ArtifactMissing(Http404):
    """The row is here, the bytes are not: a 404 that names the artifact, never a 500."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__(
            f"The bytes of artifact {artifact.sha256[:12]} ({artifact.media_type}) are "
            "missing from the store; a run that needs them recomputes them."
        )
        self.artifact = artifact


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
    """The Artifact row for bytes already in storage (created once per workspace), marked
    present and touched (the collector leaves it a grace period, for the row about to refer
    to it). One statement, an upsert on the row's unique key: as the ORM's look-then-create
    it cost ~1.5 ms of CPU on every stored output, and raced with other writers."""
    now = timezone.now()
    stamp = connection.ops.adapt_datetimefield_value(now)
    name = storage_name_for(sha256)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(Artifact._meta.db_table)} "
            "(workspace_id, sha256, size, media_type, kind, storage_name, state, created_at, "
            "touched_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (workspace_id, sha256, media_type, kind) "  # artifact_unique
            "DO UPDATE SET state = %s, touched_at = %s RETURNING id, created_at, size",
            [
                *(workspace.pk, sha256, size, media_type, kind, name, ArtifactState.PRESENT),
                *(stamp, stamp, ArtifactState.PRESENT, stamp),
            ],
        )
        pk, created_at, stored_size = cursor.fetchone()
    if isinstance(created_at, str):  # SQLite's text, naive UTC
        created_at = datetime.fromisoformat(created_at).replace(tzinfo=UTC)
    return Artifact(
        id=pk,
        workspace_id=workspace.pk,
        sha256=sha256,
        size=stored_size,
        media_type=media_type,
        kind=kind,
        storage_name=name,
        state=ArtifactState.PRESENT,
        created_at=created_at,
        touched_at=now,
    )


@dataclass(frozen=True)
class Saved:
    """Bytes in the store whose Artifact row is still to be written: artifact_save's answer,
    for artifact_record_saved inside the transaction that refers to the row (a step's
    outputs are recorded in the transaction of its success: one commit a step). `reopen`
    gives the same bytes again, should the collector take them in between."""

    workspace_id: int
    sha256: str
    size: int
    media_type: str
    kind: str
    reopen: Callable[[], AbstractContextManager[IO[bytes]]]

    @property
    def storage_name(self) -> str:
        return storage_name_for(self.sha256)


def artifact_save(
    workspace: Workspace,
    handle: IO[bytes],
    media_type: str,
    kind: str = ArtifactKind.FILE,
    reopen: Callable[[], AbstractContextManager[IO[bytes]]] | None = None,
) -> Saved:
    """Put an open binary file's bytes in the store (content-addressed; the slow part, in
    no transaction); its row is artifact_record_saved's. Without `reopen`, the handle itself,
    rewound, is the bytes again."""
    sha256, size = sha256_of_file(handle)
    storage = artifact_storage()
    name = storage_name_for(sha256)
    if not storage.exists(name):
        storage.save(name, File(handle))
    faultpoints.reach("output_saved")
    if reopen is None:
        reopen = functools.partial(_rewound, handle)
    return Saved(workspace.pk, sha256, size, media_type, kind, reopen)


def artifact_record_saved(saved: Saved, members: Sequence[Artifact] = ()) -> Artifact:
    """The row of saved bytes, in the caller's transaction, which holds the name's lock
    until it ends; a directory's manifest with its `members` (its files' rows), linked in
    the same transaction so the collector keeps them while the directory is kept. Record
    several in the order of their storage names, as the collector locks names."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("artifact_record_saved runs inside the transaction that refers to it")
    storage = artifact_storage()
    name = saved.storage_name
    # Under the name's lock the collector cannot delete these bytes between our look and
    # our row (it takes the same lock to check for rows and delete the bytes).
    name_lock(name)
    if not storage.exists(name):  # collected in the meantime: store them again
        with saved.reopen() as handle:
            storage.save(name, File(handle))
    artifact = artifact_record(
        Workspace(pk=saved.workspace_id), saved.sha256, saved.size, saved.media_type, saved.kind
    )
    ArtifactMember.objects.bulk_create(
        (ArtifactMember(directory=artifact, member=m) for m in {m.pk: m for m in members}.values()),
        ignore_conflicts=True,
    )
    return artifact


def artifact_store_file(
    workspace: Workspace,
    handle: IO[bytes],
    media_type: str,
    kind: str = ArtifactKind.FILE,
    members: Sequence[Artifact] = (),
) -> Artifact:
    """Store an open binary file and record it in the workspace, in a transaction of its
    own; a directory's manifest with its `members`."""
    saved = artifact_save(workspace, handle, media_type, kind)
    with transaction.atomic():
        return artifact_record_saved(saved, members)


def _rewound(handle: IO[bytes]) -> AbstractContextManager[IO[bytes]]:
    handle.seek(0)
    return contextlib.nullcontext(handle)  # the caller closes it, not the store


def name_lock(name: str) -> None:
    """Hold the lock of one stored name until the current transaction ends. PostgreSQL: a
    transaction-scoped advisory lock on the name's hash; SQLite: nothing to do, since its
    IMMEDIATE transactions already run one writer at a time."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [name])


def artifact_store_bytes(
    workspace: Workspace,
    data: bytes,
    media_type: str,
    kind: str = ArtifactKind.FILE,
    members: Sequence[Artifact] = (),
) -> Artifact:
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        return artifact_store_file(workspace, handle, media_type, kind, members)


def artifact_open(artifact: Artifact) -> IO[bytes]:
    """The stored bytes, open; ArtifactMissing (a 404) when the store lost them, which
    also marks every row of those bytes missing, so nothing reuses them."""
    try:
        return artifact_storage().open(artifact.storage_name, "rb")
    except FileNotFoundError:
        mark_missing([artifact.storage_name])
        raise ArtifactMissing(artifact) from None


def presigning_storage() -> PresigningStorage | None:
    """The artifact store, when downloads are to be redirected to it (presigned URLs)."""
    storage = artifact_storage()
    if getattr(storage, "presigned", False):
        return cast(PresigningStorage, storage)
    return None


def _seen_key(storage: Storage, name: str) -> tuple[str, str]:
    # A folder, or a bucket and its key prefix.
    where = f"{getattr(storage, 'bucket_name', '')}/{getattr(storage, 'location', '')}"
    return where, name


def mark_missing(storage_names: Iterable[str]) -> None:
    names = list(storage_names)
    storage = artifact_storage()
    for name in names:
        _seen_present.pop(_seen_key(storage, name), None)
    Artifact.objects.filter(storage_name__in=names, state=ArtifactState.PRESENT).update(
        state=ArtifactState.MISSING
    )


def artifacts_missing(artifacts: Iterable[Artifact]) -> list[Artifact]:
    """Those of `artifacts` whose bytes are gone from the store, marked missing (a directory
    is missing when its manifest or any of its files is); a row marked missing whose bytes
    were stored again since is marked present. One existence check per stored name, none
    for a name seen present in the last PRESENT_TTL_S."""
    storage = artifact_storage()
    now = time.monotonic()

    def present(name: str) -> bool:
        key = _seen_key(storage, name)
        if now - _seen_present.get(key, -PRESENT_TTL_S) < PRESENT_TTL_S:
            return True
        if storage.exists(name):
            _seen_present[key] = now
            return True
        return False

    missing: list[Artifact] = []
    gone: list[str] = []
    back: list[int] = []
    for artifact in artifacts:
        if not present(artifact.storage_name):
            missing.append(artifact)
            gone.append(artifact.storage_name)
            continue
        if artifact.state != ArtifactState.PRESENT:  # stored again since (any workspace)
            back.append(artifact.pk)
            artifact.state = ArtifactState.PRESENT
        if artifact.kind == ArtifactKind.DIRECTORY:
            lost = [
                storage_name_for(f["sha256"])
                for f in directory_manifest(artifact)
                if not present(storage_name_for(f["sha256"]))
            ]
            if lost:
                missing.append(artifact)
                gone += [artifact.storage_name, *lost]
    if back:
        Artifact.objects.filter(pk__in=back).update(state=ArtifactState.PRESENT)
    if gone:
        mark_missing(gone)
    return missing


# --- media types and names ----------------------------------------------------------------

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DIRECTORY_MEDIA_TYPE = "application/vnd.stepworks.directory+json"

# Served inline (for <img>) only for these raster types; never SVG (it can carry script).
INLINE_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# User bytes of these types only ever render inside the sandboxed frame.
FRAME_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml")
PLOTLY_TYPE = "application/vnd.plotly.v1+json"
PICKLE_TYPE = "application/x-python-pickle"
PARQUET_TYPE = "application/vnd.apache.parquet"
NPY_TYPE = "application/x-npy"
# Downloads of these go out as application/octet-stream, so no browser treats them as a page.
ACTIVE_TYPES = (
    *FRAME_TYPES,
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
)

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


# type/subtype[; param=value]...: RFC 6838 names, no control characters, within the column.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
MEDIA_TYPE_RE = re.compile(
    rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*'
)
MEDIA_TYPE_MAX = 100  # Artifact.media_type's length


def valid_media_type(media_type: str) -> bool:
    """Whether a step-declared media type may be stored and sent as a header as it is."""
    return len(media_type) <= MEDIA_TYPE_MAX and MEDIA_TYPE_RE.fullmatch(media_type) is not None


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


MANIFEST_MAX_BYTES = 16 * 1024 * 1024


def safe_arcname(path: str) -> str:
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
        {"path": safe_arcname(str(f["path"])), "sha256": str(f["sha256"]), "size": int(f["size"])}
        for f in files
        if SHA256_RE.match(str(f.get("sha256", "")))
    ]
