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
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.utils import timezone

from artifacts.models import Artifact, ArtifactKind
from artifacts.store import (
    Saved,
    artifact_open,
    artifact_save,
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
from runs_app.executor.runner import StepExecutor, StepJob, StepResult
from runs_app.executor.runtime import runtime_fingerprint
from runs_app.executor.sandbox import NetworkMode, SandboxMode, SandboxPolicy
from runs_app.executor.scratch import STEP_DIR, ScratchFolders
from runs_app.inputcache import input_cache
from runs_app.models import FailureReason, StepLog, StepRun, WorkerHeartbeat
from stepworks.context import MetricPoint
from stepworks.outputs import OCTET_STREAM, OutputError, directory_files
from workspaces import faultpoints
from workspaces.conf import engine, operations
from workspaces.models import Workspace

log = logging.getLogger(__name__)

LOG_FLUSH_BYTES = 64 * 1024
# An attempt's result is reported again after these, doubling, while the database is away.
REPORT_BACKOFF_S = 0.05
REPORT_BACKOFF_MAX_S = 1.0
T = TypeVar("T")


class StepLogWriter:
    """Appends a step attempt's output as rows, up to the configured cap, then one marker."""

    def __init__(self, step_id: int, attempt: int) -> None:
        self.step_id = step_id
        self.attempt = attempt
        self.offset = 0
        self.cap = engine().log_max_bytes
        self.truncated = False
        self.pending = ""  # written text the database did not take yet

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
        self.pending += text
        try:
            StepLog.objects.create(
                step_id=self.step_id, attempt=self.attempt, offset=self.offset, text=self.pending
            )
        except DatabaseError:
            # The database is away: keep the text (it is within the cap) and write it with
            # the next batch; the step goes on.
            log.warning("step %s: log not stored yet", self.step_id, exc_info=True)
            connection.close()
            return
        self.offset += len(self.pending.encode("utf-8"))
        self.pending = ""


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
    storage = artifact_storage()
    if isinstance(storage, FileSystemStorage):  # on S3, `location` is a key prefix, no folder
        private.append(Path(storage.location))
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

    def __init__(
        self, *, reaper: bool = True, threads: int = 1, queues: list[str] | None = None
    ) -> None:
        self.threads_count = threads
        self.queues = queues or []
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.runtime = runtime_fingerprint()
        self.sandbox = sandbox_policy()
        self.executor = StepExecutor(sandbox=self.sandbox)
        self.cache_root = Path(settings.DATA_DIR) / "worker-cache"
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.scratch = ScratchFolders(self.cache_root)
        self.cancels: set[tuple[int, int]] = set()
        # The attempts this process executes now, (step, attempt) -> when their lease was
        # last renewed (monotonic): the heartbeat renews exactly these.
        self.running: dict[tuple[int, int], float] = {}
        # Shutting down: no step is chained on, and the attempts in `releasing` (still
        # running when the drain time ran out) are stopped and given back.
        self.draining = threading.Event()
        self.releasing: set[tuple[int, int]] = set()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.with_reaper = reaper
        self.lock = threading.Lock()

    def start(self) -> None:
        if self.sandbox.mode == "off":
            log.warning(NOT_ISOLATED)
        self.executor.check_sandbox()  # a worker that may not run steps starts nothing
        # The reaper first: booting the zygotes takes seconds (the scientific one imports
        # scikit-learn), and a fleet whose workers all restart must not stop reaping.
        if self.with_reaper:
            self._spawn(self._reaper_loop, "stepworks-reaper")
        self.executor.start()
        self.scratch.start()
        self._beat()
        self._spawn(self._heartbeat_loop, "stepworks-heartbeat")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.executor.stop()
        self.scratch.stop()
        stats = input_cache(self.cache_root / "inputs").stats
        if stats.hits + stats.misses:
            # What this process's steps found in the host's cache of remote inputs.
            log.info(
                "input cache: %d hits, %d misses (hit ratio %.3f), %d evicted (%d bytes)",
                stats.hits,
                stats.misses,
                stats.hit_ratio,
                stats.evicted,
                stats.evicted_bytes,
            )
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
            defaults={
                "runtime": self.runtime,
                "sandbox": self.sandbox.mode,
                "threads": self.threads_count,
                "queues": self.queues,
                "last_seen": now,
            },
        )
        with self.lock:
            attempts = list(self.running)
        renewed = time.monotonic()
        cancels = reaper.leases_renew(self.name, attempts, now)
        with self.lock:
            for pair in attempts:
                if pair in self.running:
                    self.running[pair] = renewed
            self.cancels.update(cancels)

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
        """Whether to stop the attempt: its cancel was asked, or it is being given back."""
        with self.lock:
            return (step_id, attempt) in self.cancels or (step_id, attempt) in self.releasing

    def drain(self, within_s: float) -> None:
        """Shutting down: take no step on from a finished one, let running attempts finish
        for `within_s`, then stop those still running and give them back (requeued, not
        counted). Returns at once; `drained()` says when no attempt runs any more."""
        self.draining.set()
        deadline = time.monotonic() + within_s

        def give_back_late() -> None:
            while time.monotonic() < deadline:
                with self.lock:
                    if not self.running:
                        return
                time.sleep(0.05)
            with self.lock:
                self.releasing.update(self.running)

        self._spawn(give_back_late, "stepworks-drain")

    def drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.running:
                    return True
            time.sleep(0.05)
        return False

    # --- one step -------------------------------------------------------------------
    def step_execute(self, step_id: int) -> None:
        """Claim and run a step; then run the successor its success claimed for us, if any
        (its inputs on hand, the zygote warm), and so on down a chain."""
        step = scheduler.step_claim(step_id, self.name, self.runtime)
        if step is not None:
            faultpoints.attempt.set(step.attempt)
            faultpoints.reach("after_claim")
        inputs = None
        while step is not None:
            step, inputs = self._run_attempt(step, inputs)

    def _run_attempt(
        self, step: StepRun, pinned: dict[str, Artifact] | None = None
    ) -> tuple[StepRun | None, dict[str, Artifact] | None]:
        """Run one claimed attempt (its inputs, when the claim knew them, as `pinned`);
        returns the next step its success claimed for us, and that step's inputs. While it
        runs, the heartbeat renews its lease, and only then."""
        key = (step.pk, step.attempt)
        faultpoints.attempt.set(step.attempt)
        with self.lock:
            self.running[key] = time.monotonic()  # its claim just set its lease
        work = self.scratch.take()
        try:
            return self._attempt(step, pinned, work)
        finally:
            faultpoints.attempt.set(0)  # no step runs on this thread now
            with self.lock:
                self.running.pop(key, None)
                self.cancels.discard(key)
                self.releasing.discard(key)
            self.scratch.give_back(work)

    def _attempt(
        self, step: StepRun, pinned: dict[str, Artifact] | None, work: Path
    ) -> tuple[StepRun | None, dict[str, Artifact] | None]:
        attempt = step.attempt
        key = (step.pk, attempt)
        logs = StepLogWriter(step.pk, attempt)
        live_metrics = StepMetricWriter(step.pk, attempt)
        try:
            try:
                result = self._execute(step, pinned, work, logs, live_metrics)
            except _GaveUp:
                return None, None
            if result.status == "succeeded":
                try:
                    artifacts = self._report(
                        key,
                        lambda: {
                            name: self._store_output(step, name, out, logs)
                            for name, out in result.outputs.items()
                        },
                    )
                except (OutputError, OSError) as error:
                    why = (
                        FailureReason.OUTPUT_INVALID
                        if isinstance(error, OutputError)
                        else FailureReason.STORAGE_FULL
                    )
                    text = str(error)
                    self._report(key, lambda: scheduler.step_fail(step, attempt, why, text))
                    return None, None
                if artifacts is None:
                    return None, None  # given up: the reaper owns the attempt
                recorded = self._report(
                    key,
                    lambda: scheduler.step_succeed(
                        step,
                        attempt,
                        artifacts,
                        result.metrics,
                        # Shutting down: the successor goes to another worker.
                        claim_next=None if self.draining.is_set() else (self.name, self.runtime),
                        replace_live=live_metrics.wrote,
                    ),
                )
                if recorded is None:
                    return None, None
                return recorded.claimed, recorded.claimed_inputs
            if result.status == "canceled":
                with self.lock:
                    given_back = key in self.releasing
                if given_back:
                    self._report(key, lambda: scheduler.step_release(step, attempt, self.name))
                else:
                    self._report(key, lambda: scheduler.step_cancel_running(step, attempt))
                return None, None
            reason = result.reason or FailureReason.INTERNAL_ERROR
            self._report(key, lambda: scheduler.step_fail(step, attempt, reason, result.message))
            return None, None
        except Exception as error:
            log.exception("step %s attempt %s failed inside the worker", step.pk, attempt)
            text = repr(error)
            self._report(
                key,
                lambda: scheduler.step_fail(step, attempt, FailureReason.INTERNAL_ERROR, text),
            )
            return None, None

    def _execute(
        self,
        step: StepRun,
        pinned: dict[str, Artifact] | None,
        work: Path,
        logs: StepLogWriter,
        live_metrics: StepMetricWriter,
    ) -> StepResult:
        """The step's body in a fresh child: its code and inputs made local, then run."""
        key = (step.pk, step.attempt)
        version = self._report(key, lambda: module_version(step.module_version_id))
        if pinned is None:
            pinned = self._report(
                key,
                lambda: {i.name: i.artifact for i in step.inputs.select_related("artifact")},
            )
        if version is None or pinned is None:
            raise _GaveUp  # the database stayed away for a lease: the reaper has the step
        code_dir = materialise_code(version.files, version.code_digest, self.cache_root / "code")
        inputs = {
            name: self._local_input(artifact, work / "inputs" / name)
            for name, artifact in pinned.items()
        }
        job = StepJob(
            code_dir=code_dir,
            entrypoint=version.entrypoint,
            inputs=inputs,
            params=step.params,
            output_dir=work / STEP_DIR,
            timeout_s=step.timeout_s,
            declared_outputs=list(version.interface.get("outputs", [])),
            scientific=bool(STEP_PACKAGES & set(version.imports)),
            run_id=step.run_id,
            step_name=step.name,
            sandbox=sandbox_policy(),  # the settings now, as engine() reads them
        )
        return self.executor.run(
            job,
            on_log=logs.write,
            should_cancel=lambda: self.cancel_requested(step.pk, step.attempt),
            on_metric=live_metrics.write,
        )

    def _report(self, key: tuple[int, int], call: Callable[[], T]) -> T | None:
        """Record what an attempt did (`call`, a transaction of the scheduler's, fenced by
        the attempt), again and again with backoff while the database does not answer:
        until it does, or until the attempt's lease has surely lapsed (no renewal for a
        lease), when it is given up (None): the reaper then owns the attempt, and a late
        report could not count anyway."""
        delay = REPORT_BACKOFF_S
        while True:
            try:
                return call()
            except (OperationalError, InterfaceError):
                connection.close()  # the next try connects afresh
                with self.lock:
                    renewed = self.running.get(key)
                if renewed is None or time.monotonic() - renewed > engine().lease_s:
                    log.warning(
                        "step %s attempt %s: the database did not take its result within "
                        "its lease; the reaper retries the step",
                        *key,
                    )
                    return None
                log.warning("step %s attempt %s: result not recorded yet; retrying", *key)
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, REPORT_BACKOFF_MAX_S)

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

    def _store_output(
        self, step: StepRun, name: str, out: Any, logs: StepLogWriter
    ) -> Artifact | Saved:
        """An output's bytes in the store. A file's row is written by step_succeed, in the
        step's transaction (its file stays in the step's scratch folder until then); a
        directory's files and manifest are recorded here."""
        workspace = Workspace(pk=step.workspace_id)  # the store needs only its id
        if out.kind == ArtifactKind.DIRECTORY:
            files, members = [], []
            root = Path(out.path)
            for path in directory_files(root, name):
                with open(path, "rb", opener=_no_follow) as handle:
                    stored = artifact_store_file(workspace, handle, "application/octet-stream")
                members.append(stored)
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
                members,
            )
        media_type = out.media_type
        if not valid_media_type(media_type):
            logs.write(
                f"stepworks: output {name!r} declared the media type {media_type[:120]!r}, "
                "which is not type/subtype[; param=value]; it is stored as "
                f"{OCTET_STREAM}\n"
            )
            media_type = OCTET_STREAM
        path = out.path
        with open(path, "rb") as handle:
            return artifact_save(workspace, handle, media_type, reopen=lambda: open(path, "rb"))


class _GaveUp(Exception):
    """An attempt could not read what it needs before its lease lapsed: left to the reaper."""


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


def services(threads: int | None = None, queues: list[str] | None = None) -> WorkerServices:
    """This process's worker services, started on first use (worker boot, which says how
    many steps the process runs at once, and from which queues: none, all)."""
    global _services
    with _services_lock:
        if _services is None:
            _services = WorkerServices(threads=threads or 1, queues=queues or [])
            _services.start()
        return _services


def services_drain() -> None:
    """The process is shutting down: let running steps finish (STEPWORKS_DRAIN_S), then
    give back what still runs. Returns at once; services_stop waits for it."""
    with _services_lock:
        if _services is not None:
            _services.drain(engine().drain_s)


def services_stop() -> None:
    global _services
    with _services_lock:
        if _services is not None:
            # Steps still running are given back first (the drain), never killed as failed.
            if not _services.draining.is_set():
                _services.drain(0.0)
            _services.drained(engine().drain_s + 10)
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
