"""The store's consistency check (`manage.py check_artifacts [--repair]`): rows whose bytes
are missing (a directory's: its manifest or any file it names), bytes that no longer hash to
their name (corrupt), and bytes no row names.

Reading every byte is the point (a flipped bit is found only by hashing), so this is an
operator's command, not something a request does. `--repair` deletes corrupt bytes, marks
their rows and the missing ones `missing` (reuse then refuses them, and the next run that
needs them recomputes and so restores them), and deletes unreferenced bytes older than an
hour (younger ones may be a write whose row is not recorded yet).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.core.files.storage import Storage

from artifacts.models import Artifact, ArtifactKind
from artifacts.store import (
    CHUNK,
    SHA256_RE,
    TEMP_PREFIX,
    artifact_storage,
    directory_manifest,
    mark_missing,
    storage_name_for,
)

UNREFERENCED_GRACE_S = 3600.0


@dataclass
class Findings:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # storage names
    corrupt: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    collected: int = 0

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.corrupt) + len(self.unreferenced)


def check_artifacts(repair: bool = False) -> Findings:
    storage = artifact_storage()
    findings = Findings()
    named = dict(Artifact.objects.values_list("storage_name", "sha256").distinct())
    for name, sha256 in sorted(named.items()):
        findings.checked += 1
        if not storage.exists(name):
            findings.missing.append(name)
        elif _digest(storage, name) != sha256:
            findings.corrupt.append(name)
    bad = set(findings.missing) | set(findings.corrupt)
    folders = Artifact.objects.filter(kind=ArtifactKind.DIRECTORY).exclude(storage_name__in=bad)
    one_row = {folder.storage_name: folder for folder in folders.order_by("-pk")}
    for name, folder in sorted(one_row.items()):
        if _files_lost(storage, folder):
            findings.missing.append(name)  # a directory is whole only with all its files
    for name in _stored_names(storage):
        if name not in named:
            findings.unreferenced.append(name)
    if repair:
        # Corrupt bytes are worth nothing: they go, and their rows are then simply missing
        # (the next run that needs them stores the right bytes, which heals every row).
        for name in findings.corrupt:
            storage.delete(name)
        mark_missing(findings.missing + findings.corrupt)
        cutoff = time.time() - UNREFERENCED_GRACE_S
        for name in findings.unreferenced:
            if storage.get_modified_time(name).timestamp() < cutoff:
                storage.delete(name)
                findings.collected += 1
    return findings


def _files_lost(storage: Storage, folder: Artifact) -> bool:
    """Whether a directory's manifest names a file the store no longer holds (before
    ArtifactMember, the collector took a directory's files an hour after they were stored)."""
    try:
        files = directory_manifest(folder)
    except (ValueError, KeyError, TypeError):
        return True  # not a manifest any more: its files cannot be found
    return any(not storage.exists(storage_name_for(f["sha256"])) for f in files)


def _digest(storage: Storage, name: str) -> str:
    digest = hashlib.sha256()
    with storage.open(name, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stored_names(storage: Storage, folder: str = "") -> Iterator[str]:
    """Every content-addressed name in the store (`ab/cd/<sha256>`), temp files left out."""
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:  # nothing stored yet
        return
    for name in files:
        if not name.startswith(TEMP_PREFIX) and SHA256_RE.fullmatch(name):
            yield f"{folder}/{name}" if folder else name
    for sub in folders:
        yield from _stored_names(storage, f"{folder}/{sub}" if folder else sub)
