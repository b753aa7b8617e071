"""The Django side of a worker process: claim a step, run it through the executor, store
what it produced, report through the scheduler. Plus the process's background services:
the heartbeat (lease renewal, cancel delivery), the reaper, and in embedded mode the
dispatcher that turns queued rows into in-process messages.

Slow work (materialising code, reading inputs, hashing outputs) happens between the
scheduler's short transactions, never inside one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from artifacts.models import Artifact, ArtifactKind
from artifacts.store import (
    artifact_open,
    artifact_storage,
    artifact_store_bytes,
    artifact_store_file,
    storage_name_for,
    valid_media_type,
)
from pipelines_app.interfaces import STEP_PACKAGES
from pipelines_app.models import ModuleVersion
from runs_app import gc as collector
from runs_app import reaper, retention, scheduler
from runs_app.executor.codecache import materialise_code
from runs_app.executor.runner import StepExecutor, StepJob
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.executor.sandbox import NetworkMode, SandboxMode, SandboxPolicy
from runs_app.executor.scratch import STEP_DIR, ScratchFolders
from runs_app.inputcache import input_cache
from runs_app.models import FailureReason, StepLog, StepRun, WorkerHeartbeat
from stepworks.context import MetricPoint
from stepworks.outputs import OCTET_STREAM, OutputError, directory_files
from workspaces.conf import engine, operations
from workspaces.models import Workspace

log = logging.getLogger(__name__)

LOG_FLUSH_BYTES = 64 * 1024


class StepLogWriter:
    """Appends a step attempt's output as rows, up to the configured cap, then one marker."""

    def __init__(self, step_id: int, attempt: int) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.offset = 0
        self.cap = engine().log_max_bytes
        self.truncated = False

    def write(self, text: str) -> None:
        if self.truncated or not text:
            return
        data = text.encode("utf-8", "replace")
        if self.offset + len(data) > self.cap:
            room = max(0, self.cap - self.offset)
            head = data[:room].decode("utf-8", "ignore")
            marker = f"\n[log truncated at {self.cap} bytes]\n"
            text = head + marker
            self.truncated = True
        StepLog.objects.create(
            step_id=self.step_id, attempt=self.attempt, offset=self.offset, text=text
        )
        self.offset += len(text.encode("utf-8"))


class StepMetricWriter:
    """Stores the points a running attempt logs as they arrive, so pages and the API show a
    curve mid-run; the list a successful attempt reports then replaces them."""

    def __init__(self, step_id: int, attempt: int) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.wrote = False

    def write(self, points: list[MetricPoint]) -> None:
        try:
            self.wrote |= scheduler.step_metrics_append(self.step_id, self.attempt, points)
        except DatabaseError:
            # Live points are a view: a database blip loses a batch, never the step.
            log.warning("step %s: live metrics not stored", self.step_id, exc_info=True)


NOT_ISOLATED = (
    "STEPWORKS_STEP_SANDBOX=off: steps are NOT isolated. Every step can read and write "
    "everything this worker can: the database, the secret key, every workspace's code and "
    "artifacts. Use this only where every editor of every workspace is trusted."
)


def sandbox_policy() -> SandboxPolicy:
    """The sandbox every step of this worker gets, from the settings. No step may read the
    data folder (database, secret key, code cache, other steps) or the artifact store."""
    conf = engine()
    private = [settings.DATA_DIR, settings.MEDIA_ROOT, settings.STATIC_ROOT]
    store = getattr(artifact_storage(), "location", None)
    if store:
        private.append(store)
    return _policy(
        conf.step_sandbox,
        conf.step_network,
        tuple(str(p) for p in private),
        tuple(conf.step_read_dirs),
        tuple(conf.step_write_dirs),
    )


@functools.lru_cache(maxsize=16)
def _policy(
    mode: str, network: str, private: tuple[str, ...], read: tuple[str, ...], write: tuple[str, ...]
) -> SandboxPolicy:
    # Read per step (tests change the settings as they go), made once per distinct value:
    # resolving the private folders is a few system calls each.
    return SandboxPolicy(
        # The settings module refused any other value.
        mode=cast(SandboxMode, mode),
        network=cast(NetworkMode, network),
        private=tuple(str(Path(p).resolve()) for p in private),
        read=read,
        write=write,
    )


class WorkerServices:
    """One per worker process: the executor's zygotes, the heartbeat and the reaper."""

    def __init__(self, *, reaper: bool = True) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.runtime = runtime_fingerprint()
        self.sandbox = sandbox_policy()
        self.executor = StepExecutor(sandbox=self.sandbox)
        self.cache_root = Path(settings.DATA_DIR) / "worker-cache"
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.scratch = ScratchFolders(self.cache_root)
        self.cancels: set[tuple[int, int]] = set()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.with_reaper = reaper
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.sandbox.mode == "off":
            log.warning(NOT_ISOLATED)
        self.executor.start()
        self.scratch.start()
        self._beat()
        self._spawn(self._heartbeat_loop, "stepworks-heartbeat")
        if self.with_reaper:
            self._spawn(self._reaper_loop, "stepworks-reaper")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.executor.stop()
        self.scratch.stop()
        try:
            WorkerHeartbeat.objects.filter(host=socket.gethostname(), pid=os.getpid()).delete()
        finally:
            close_old_connections()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _beat(self) -> None:
        now = timezone.now()
        WorkerHeartbeat.objects.update_or_create(
            host=socket.gethostname(),
            pid=os.getpid(),
            defaults={"runtime": self.runtime, "sandbox": self.sandbox.mode, "last_seen": now},
        )
        for pair in reaper.leases_renew(self.name, now):
            with self.lock:
                self.cancels.add(pair)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(engine().heartbeat_s):
            try:
                self._beat()
            except Exception:  # a database blip must not kill the heartbeat
                log.exception("heartbeat failed")
            finally:
                connection.close()

    def _reaper_loop(self) -> None:
        last_gc = time.monotonic()
        while not self.stopping.wait(engine().reaper_s):
            try:
                counts = reaper.reap()
                if any(counts.values()):
                    log.info("reaper: %s", counts)
                every = engine().gc_s
                if every > 0 and time.monotonic() - last_gc >= every:
                    last_gc = time.monotonic()
                    retention.retention_apply_all()  # then the collector frees their bytes
                    collector.collect()
            except Exception:
                log.exception("reaper failed")
            finally:
                connection.close()

    def cancel_requested(self, step_id: int, attempt: int) -> bool:
        with self.lock:
            return (step_id, attempt) in self.cancels

    # --- one step -------------------------------------------------------------------
    def step_execute(self, step_id: int) -> None:
        """Claim and run a step; then run the successor its success claimed for us, if any
        (its inputs on hand, the zygote warm), and so on down a chain."""
        step = scheduler.step_claim(step_id, self.name, self.runtime)
        inputs = None
        while step is not None:
            step, inputs = self._run_attempt(step, inputs)

    def _run_attempt(
        self, step: StepRun, pinned: dict[str, Artifact] | None = None
    ) -> tuple[StepRun | None, dict[str, Artifact] | None]:
        """Run one claimed attempt (its inputs, when the claim knew them, as `pinned`);
        returns the next step its success claimed for us, and that step's inputs."""
        attempt = step.attempt
        logs = StepLogWriter(step.pk, attempt)
        live_metrics = StepMetricWriter(step.pk, attempt)
        version = module_version(step.module_version_id)
        work = self.scratch.take()
        try:
            code_dir = materialise_code(
                version.files, version.code_digest, self.cache_root / "code"
            )
            if pinned is None:
                pinned = {
                    item.name: item.artifact for item in step.inputs.select_related("artifact")
                }
            inputs = {
                name: self._local_input(artifact, work / "inputs" / name)
                for name, artifact in pinned.items()
            }
            output_dir = work / STEP_DIR
            job = StepJob(
                code_dir=code_dir,
                entrypoint=version.entrypoint,
                inputs=inputs,
                params=step.params,
                output_dir=output_dir,
                timeout_s=step.timeout_s,
                declared_outputs=list(version.interface.get("outputs", [])),
                scientific=bool(STEP_PACKAGES & set(version.imports)),
                run_id=step.run_id,
                step_name=step.name,
                sandbox=sandbox_policy(),  # the settings now, as engine() reads them
            )
            result = self.executor.run(
                job,
                on_log=logs.write,
                should_cancel=lambda: self.cancel_requested(step.pk, attempt),
                on_metric=live_metrics.write,
            )
            if result.status == "succeeded":
                try:
                    artifacts = {
                        name: self._store_output(step, name, out, logs)
                        for name, out in result.outputs.items()
                    }
                except OutputError as error:
                    scheduler.step_fail(step, attempt, FailureReason.OUTPUT_INVALID, str(error))
                    return None, None
                except OSError as error:
                    scheduler.step_fail(step, attempt, FailureReason.STORAGE_FULL, str(error))
                    return None, None
                recorded = scheduler.step_succeed(
                    step,
                    attempt,
                    artifacts,
                    result.metrics,
                    claim_next=(self.name, self.runtime),
                    replace_live=live_metrics.wrote,
                )
                return recorded.claimed, recorded.claimed_inputs
            if result.status == "canceled":
                scheduler.step_cancel_running(step, attempt)
                return None, None
            scheduler.step_fail(
                step, attempt, result.reason or FailureReason.INTERNAL_ERROR, result.message
            )
            return None, None
        except Exception as error:
            log.exception("step %s attempt %s failed inside the worker", step.pk, attempt)
            scheduler.step_fail(step, attempt, FailureReason.INTERNAL_ERROR, repr(error))
            return None, None
        finally:
            with self.lock:
                self.cancels.discard((step.pk, attempt))
            self.scratch.give_back(work)

    def _local_input(self, artifact: Artifact, target: Path) -> tuple[Path, str, str]:
        """A local path for an input: the stored file itself on the filesystem backend; from
        a remote store (S3), a link to this host's cached copy (runs_app/inputcache.py) at
        `target`, in the step's own scratch folder."""
        storage = artifact_storage()
        remote = not _local_storage(storage)
        if artifact.kind == ArtifactKind.DIRECTORY:
            target.mkdir(parents=True, exist_ok=True)
            with artifact_open(artifact) as handle:
                manifest = json.load(handle)
            for entry in manifest["files"]:
                dest = target / entry["path"]
                if remote:
                    self._cached_input(entry["sha256"], int(entry["size"]), dest)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with (
                    storage.open(storage_name_for(entry["sha256"]), "rb") as src,
                    open(dest, "wb") as out,
                ):
                    shutil.copyfileobj(src, out)
            return target, artifact.media_type, artifact.kind
        if remote:
            path = self._cached_input(artifact.sha256, artifact.size, target)
            return path, artifact.media_type, artifact.kind
        return Path(storage.path(artifact.storage_name)), artifact.media_type, artifact.kind

    def _cached_input(self, sha256: str, size: int, target: Path) -> Path:
        """`target`: a link to the bytes of `sha256` in this host's input cache, downloaded
        once per digest whichever worker process or thread asks first."""
        cache = input_cache(self.cache_root / "inputs")
        name = storage_name_for(sha256)
        return cache.provide(
            sha256,
            size,
            lambda: artifact_storage().open(name, "rb"),
            target,
            cap_bytes=operations().input_cache_bytes,
        )

    def _store_output(self, step: StepRun, name: str, out: Any, logs: StepLogWriter) -> Artifact:
        workspace = Workspace(pk=step.workspace_id)  # the store needs only its id
        if out.kind == ArtifactKind.DIRECTORY:
            files = []
            root = Path(out.path)
            for path in directory_files(root, name):
                with open(path, "rb", opener=_no_follow) as handle:
                    stored = artifact_store_file(workspace, handle, "application/octet-stream")
                files.append(
                    {
                        "path": path.relative_to(root).as_posix(),
                        "sha256": stored.sha256,
                        "size": stored.size,
                    }
                )
            manifest = json.dumps({"files": files}, sort_keys=True).encode()
            return artifact_store_bytes(
                workspace,
                manifest,
                "application/vnd.stepworks.directory+json",
                ArtifactKind.DIRECTORY,
            )
        media_type = out.media_type
        if not valid_media_type(media_type):
            logs.write(
                f"stepworks: output {name!r} declared the media type {media_type[:120]!r}, "
                "which is not type/subtype[; param=value]; it is stored as "
                f"{OCTET_STREAM}\n"
            )
            media_type = OCTET_STREAM
        with open(out.path, "rb") as handle:
            return artifact_store_file(workspace, handle, media_type)


@functools.lru_cache(maxsize=256)
def module_version(pk: int) -> ModuleVersion:
    """A module version's code and interface, read once per process: versions never change."""
    return ModuleVersion.objects.only(
        "files", "code_digest", "entrypoint", "interface", "imports"
    ).get(pk=pk)


def _local_storage(storage: Any) -> bool:
    """Whether the store's files are on this machine (they have a path)."""
    try:
        storage.path("")
    except NotImplementedError:
        return False
    return True


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


_services: WorkerServices | None = None
_services_lock = threading.Lock()


def services() -> WorkerServices:
    """This process's worker services, started on first use (worker boot)."""
    global _services
    with _services_lock:
        if _services is None:
            _services = WorkerServices()
            _services.start()
        return _services


def services_stop() -> None:
    global _services
    with _services_lock:
        if _services is not None:
            _services.stop()
            _services = None


def fresh_workers_exist() -> bool:
    stale = timezone.now() - timedelta(seconds=3 * engine().heartbeat_s)
    return WorkerHeartbeat.objects.filter(last_seen__gte=stale).exists()


def wait_for(predicate: Any, timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    done: bool = predicate()
    return done
