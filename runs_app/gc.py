"""The garbage collector: bytes that no kept row refers to go, in short transactions.

An artifact row is kept while a step's input or output or a dataset version refers to it,
and for a grace period after it was last touched (stored, found again by a worker storing
the same bytes, or released by a deleted run): a step stores its outputs a moment before
its success refers to them, and a reuse that read a run just deleted links that run's
outputs a moment later. Past that, an unreferenced row is deleted, and the bytes of a
stored name go when no row names them any more, 200 names per short transaction.

The bytes and the rows are made to agree under one lock per stored name (`name_lock`):
a worker storing the same bytes takes it to look for them and record its row, the
collector takes it to look for rows and delete the bytes, so neither can slip between the
other's look and act. Cache-aware by construction: a step whose outputs an artifact holds
refers to it, so an artifact is never collected while any step could be reused from it;
deleting a run deletes its steps (no longer reuse sources) in the same transaction that
releases its artifacts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, ProtectedError, QuerySet
from django.utils import timezone

from artifacts.models import Artifact, ArtifactMember, DeletedArtifact
from artifacts.store import artifact_storage, name_lock
from pipelines_app.models import DatasetVersion
from runs_app.models import StepInput, StepOutput

log = logging.getLogger(__name__)

GRACE = timedelta(hours=1)
BATCH = 200  # stored names per transaction


@dataclass
class Collected:
    rows: int = 0  # artifact rows deleted (or, on a dry run, that would be)
    names: int = 0  # stored names whose bytes were deleted
    bytes: int = 0  # bytes freed
    seconds: float = 0.0


def unreferenced(grace: timedelta = GRACE) -> QuerySet[Artifact]:
    """Artifact rows nothing refers to, untouched for `grace`. A directory's files are
    referred to by its row (ArtifactMember) until that row goes."""
    return Artifact.objects.filter(touched_at__lt=timezone.now() - grace).exclude(
        Exists(StepOutput.objects.filter(artifact=OuterRef("pk")))
        | Exists(StepInput.objects.filter(artifact=OuterRef("pk")))
        | Exists(DatasetVersion.objects.filter(artifact=OuterRef("pk")))
        | Exists(ArtifactMember.objects.filter(member=OuterRef("pk")))
    )


def collect(*, dry_run: bool = False, grace: timedelta = GRACE) -> Collected:
    """Delete unreferenced artifact rows and the bytes no row names any more."""
    started = time.monotonic()
    done = Collected()
    if dry_run:
        done = _would_collect(grace)
        done.seconds = time.monotonic() - started
        return done
    names = unreferenced(grace).order_by("storage_name").values_list("storage_name", flat=True)
    pending = list(dict.fromkeys(names))
    for start in range(0, len(pending), BATCH):  # a short transaction per batch of names
        batch = pending[start : start + BATCH]
        try:
            results = [_collect_names(batch, grace)]
        except (ProtectedError, IntegrityError):
            # One of them was referred to since we looked: each on its own, that one kept.
            results = []
            for name in batch:
                with contextlib.suppress(ProtectedError, IntegrityError):
                    results.append(_collect_names([name], grace))
        for rows, freed, size in results:
            done.rows += rows
            done.names += freed
            done.bytes += size
    done.seconds = time.monotonic() - started
    if done.rows:
        log.info(
            "gc: %s rows, %s names, %s bytes in %.2f s",
            *(done.rows, done.names, done.bytes, done.seconds),
        )
    return done


def _would_collect(grace: timedelta) -> Collected:
    doomed = unreferenced(grace)
    names = set(doomed.values_list("storage_name", flat=True))
    kept = set(
        Artifact.objects.filter(storage_name__in=names)
        .exclude(pk__in=doomed.values("pk"))
        .values_list("storage_name", flat=True)
    )
    sizes = dict(doomed.values_list("storage_name", "size"))
    freed = names - kept
    return Collected(rows=doomed.count(), names=len(freed), bytes=sum(sizes[n] for n in freed))


def _collect_names(names: list[str], grace: timedelta) -> tuple[int, int, int]:
    """Some stored names, in one transaction under their locks (taken in order, so two
    collectors cannot deadlock): their unreferenced rows, then the bytes of those that no
    row names any more. Returns (rows deleted, names freed, bytes freed)."""
    storage = artifact_storage()
    with transaction.atomic():
        for name in sorted(names):
            name_lock(name)
        doomed = unreferenced(grace).filter(storage_name__in=names)
        sizes = dict(doomed.values_list("storage_name", "size"))
        DeletedArtifact.objects.bulk_create(
            (
                DeletedArtifact(workspace_id=workspace_id, sha256=sha256)
                for workspace_id, sha256 in doomed.values_list("workspace_id", "sha256")
            ),
            ignore_conflicts=True,  # the same digest may go again after being stored again
        )
        rows, _ = doomed.delete()
        kept = set(
            Artifact.objects.filter(storage_name__in=names).values_list("storage_name", flat=True)
        )
        freed = [name for name in names if name not in kept]
        for name in freed:
            with contextlib.suppress(FileNotFoundError):  # already gone (it was `missing`)
                storage.delete(name)
        return rows, len(freed), sum(sizes.get(name, 0) for name in freed)
