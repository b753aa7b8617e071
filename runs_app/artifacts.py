"""The content-addressed artifact store, over Django's storage API.

Bytes are named by their sha256, so identical bytes are stored once; an Artifact row per
workspace keeps every read scoped. On the filesystem backend a write goes to a temp file in
the target folder, is fsynced and renamed into place: readers see no file or the whole one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import IntegrityError, transaction

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
