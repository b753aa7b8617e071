"""The worker side: boot the zygotes, run one step in a fresh child, watch it, collect it.

`StepExecutor.run(job)` blocks the calling thread until the step ends and is safe to call
from several threads at once (dramatiq's worker threads). For each step it makes two pipes
(the child's stdout+stderr, and a result pipe on which the child sends the metrics it logs
and then says "result.json is written"), hands their write ends to a zygote, which forks,
and then drains both pipes continuously (batched to `on_log` and `on_metric` every 0.5 s, the
log also at 64 KB; the executor itself keeps at most a batch), polls
`should_cancel` every 0.2 s and enforces the time limit by SIGKILLing the child's process
group, which works whatever the child is blocked in.

When the step ends, any process it left behind in its group is killed too: a finished step
leaves nothing running.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from runs_app.executor import child as child_layout
from runs_app.executor import protocol
from runs_app.executor.process import (
    describe_returncode,
    kill_process_group,
    oom_kills,
    process_group_exists,
)
from runs_app.executor.sandbox import SandboxPolicy, step_rules, unavailable_reason
from stepworks.context import METRIC_NAME_MAX, MetricPoint
from stepworks.outputs import KIND_DIRECTORY, OutputFile

logger = logging.getLogger(__name__)

Status = Literal["succeeded", "failed", "canceled"]
Reason = Literal["user_error", "timeout", "process_died", "output_invalid", "internal_error"]

LOG_BATCH_BYTES = 64 * 1024
LOG_BATCH_SECONDS = 0.5
CANCEL_POLL_SECONDS = 0.2
# How long a killed or vanished child may take to be reported exited by its zygote.
EXIT_REPORT_TIMEOUT_S = 10.0
FORK_TIMEOUT_S = 30.0
GROUP_EXIT_TIMEOUT_S = 2.0
BOOT_TIMEOUT_S = 120.0
_READ_BYTES = 64 * 1024
_PIPE_BYTES = 1024 * 1024  # a roomier log pipe: the child blocks less while on_log writes

# The project's import root, so `-m runs_app.executor.zygote` works from any directory.
_IMPORT_ROOT = Path(__file__).resolve().parents[2]

# What a step's environment keeps from the worker's: an allow-list, because secrets hide
# under names nobody predicted. Anything with a secret-looking name is dropped even then.
_KEEP_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
        "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONWARNINGS",
        "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "MPLBACKEND", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
        "JOBLIB_TEMP_FOLDER", "LOKY_MAX_CPU_COUNT",
    }
)  # fmt: skip
_KEEP_PREFIXES = (
    "LC_", "OPENBLAS_", "OMP_", "MKL_", "NUMEXPR_", "VECLIB_", "GOTO_", "BLIS_", "KMP_",
    "CUDA_", "NVIDIA_",
)  # fmt: skip
_SECRET_NAMES = frozenset({"SECRET_KEY", "DATABASE_URL", "BROKER_URL", "DJANGO_SETTINGS_MODULE"})
_SECRET_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "PRIVATE_KEY", "API_KEY")
_SECRET_PREFIXES = ("AWS_", "DJANGO_")


def step_environment(environ: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment a zygote (and so every step) gets: `environ` minus secrets.

    `keep` names extra variables to pass on (e.g. a dataset mirror's URL); a name that looks
    like a secret is dropped even then.
    """
    extra = set(keep)
    clean = {}
    for name, value in environ.items():
        upper = name.upper()
        wanted = name in _KEEP_NAMES or name in extra or upper.startswith(_KEEP_PREFIXES)
        secret = (
            upper in _SECRET_NAMES
            or upper.startswith(_SECRET_PREFIXES)
            or any(word in upper for word in _SECRET_WORDS)
        )
        if wanted and not secret:
            clean[name] = value
    return clean


@dataclass(frozen=True, kw_only=True)
class StepJob:
    """One step body to run. Inputs are local files: {name: (path, media_type, kind)}."""

    code_dir: Path
    entrypoint: str  # "file.py:function", relative to code_dir
    output_dir: Path  # empty or missing; the caller removes it after storing the outputs
    inputs: Mapping[str, tuple[Path | str, str, str]] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 3600.0
    declared_outputs: Sequence[str] = ()
    scientific: bool = False
    run_id: int | None = None
    step_name: str = ""
    sandbox: SandboxPolicy | None = None  # None: the executor's


@dataclass
class StepResult:
    status: Status
    reason: Reason | None  # None when succeeded or canceled ("canceled" is never a reason)
    message: str  # traceback tail, "killed by signal 11 (SIGSEGV)", ...; "" on success
    outputs: dict[str, OutputFile] = field(default_factory=dict)
    metrics: list[MetricPoint] = field(default_factory=list)
    duration_s: float = 0.0
    pid: int | None = None  # the child's pid, which is also its process group id


class ExecutorError(RuntimeError):
    """The executor itself cannot run steps (stopped, or a zygote will not boot)."""


class SandboxUnavailable(ExecutorError):
    """Steps must be sandboxed and this kernel cannot: the worker must not start."""


class _ZygoteGone(ExecutorError):
    """The zygote died before forking: nothing ran, so asking a fresh one is safe."""


@dataclass
class _Child:
    """A step child as its zygote reports it; events are set by the zygote's reader thread."""

    job: int
    forked: threading.Event = field(default_factory=threading.Event)  # pid known or never
    exited: threading.Event = field(default_factory=threading.Event)  # exit known or never
    pid: int | None = None
    returncode: int | None = None
    error: str = ""
    zygote_died: bool = False

    def wait_pid(self) -> int | None:
        self.forked.wait(FORK_TIMEOUT_S)
        return self.pid


class _Zygote:
    """The worker's handle on one zygote process: its socket, its reader thread, its jobs."""

    def __init__(self, kind: str, environment: Mapping[str, str]) -> None:
        self.kind = kind
        self._send_lock = threading.Lock()
        self._children_lock = threading.Lock()
        self._children: dict[int, _Child] = {}
        self._jobs = itertools.count(1)
        self._ready = threading.Event()
        self._dead = False
        self._socket, theirs = protocol.channel()
        try:
            # -P: no current directory on sys.path (a stray file there must not shadow a module).
            command = [sys.executable, "-P", "-m", "runs_app.executor.zygote", kind]
            self.process = subprocess.Popen(
                [*command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=dict(environment),
                cwd=tempfile.gettempdir(),
                # Its own session: a Ctrl-C meant for the worker's terminal does not reach it;
                # it ends when the worker's end of the socket closes.
                start_new_session=True,
            )
        except BaseException:
            self._socket.close()
            raise
        finally:
            theirs.close()
        self._reader = threading.Thread(
            target=self._read, name=f"stepworks-zygote-{kind}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout) or self._dead:
            self.close()
            raise ExecutorError(f"the {self.kind} zygote did not start")

    def alive(self) -> bool:
        return not self._dead and self.process.poll() is None

    def fork(self, spec: dict[str, Any], log_fd: int, result_fd: int, spill: Path) -> _Child:
        """Ask the zygote to fork a child for `spec`, without waiting for its answer.

        The pid arrives on the reader thread while the child already runs: waiting for it
        would put one more process hand-off on every step's critical path.
        """
        child = _Child(job=next(self._jobs))
        with self._children_lock:
            self._children[child.job] = child
        if self._dead:
            self._forget(child)
            raise _ZygoteGone(self.kind)
        data = protocol.encode({"op": "fork", "job": child.job, "spec": spec})
        if len(data) > protocol.MAX_INLINE_BYTES:
            spill.write_text(json.dumps(spec), encoding="utf-8")
            data = protocol.encode({"op": "fork", "job": child.job, "spec_file": str(spill)})
        try:
            with self._send_lock:
                protocol.send_encoded(self._socket, data, [log_fd, result_fd])
        except OSError as error:
            self._dead = True
            self._forget(child)
            raise _ZygoteGone(self.kind) from error
        return child

    def _forget(self, child: _Child) -> None:
        with self._children_lock:
            self._children.pop(child.job, None)

    def _read(self) -> None:
        try:
            while True:
                message, fds = protocol.receive(self._socket)
                for fd in fds:
                    os.close(fd)
                if message is None:
                    break
                self._dispatch(message)
        except (OSError, ValueError) as error:
            if not self._dead:
                logger.warning("reading from the %s zygote failed: %r", self.kind, error)
        finally:
            self._on_death()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            self._ready.set()
            return
        with self._children_lock:
            child = self._children.get(message.get("job", -1))
            if child is not None and op in ("exited", "fork_failed"):
                del self._children[child.job]
        if child is None:
            return
        if op == "forked":
            child.pid = int(message["pid"])
            child.forked.set()
        elif op == "fork_failed":
            child.error = str(message.get("error", ""))
            child.forked.set()
            child.exited.set()
        elif op == "exited":
            child.returncode = int(message["returncode"])
            child.exited.set()

    def _on_death(self) -> None:
        self._dead = True
        self._ready.set()
        with self._children_lock:
            orphans = list(self._children.values())
            self._children.clear()
        for child in orphans:
            # Children die with their zygote (parent-death signal); their groups may not.
            if child.pid is not None:
                with contextlib.suppress(OSError):
                    kill_process_group(child.pid)
            child.zygote_died = True
            child.forked.set()
            child.exited.set()

    def close(self) -> None:
        """End the zygote: it kills its children's groups when its socket closes."""
        self._dead = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self._socket.close()


class StepExecutor:
    """Runs step bodies in fresh children of two warm zygotes (`light` and `scientific`).

    `start()` boots both zygotes (and restarts any that died); `run()` also boots or
    restarts the one it needs, so a zygote killed by the OOM killer costs one slower step.
    `stop()` ends the zygotes and so every step child. The environment of the zygotes is
    taken from `environ` (default: this process's, at boot) through `step_environment`.
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        keep_env: Iterable[str] = (),
        boot_timeout_s: float = BOOT_TIMEOUT_S,
        sandbox: SandboxPolicy | None = None,
    ) -> None:
        self.sandbox = sandbox or SandboxPolicy()
        self._sandbox_missing = unavailable_reason() if self.sandbox.mode == "required" else None
        self._environ = environ
        self._keep_env = tuple(keep_env)
        self._boot_timeout_s = boot_timeout_s
        self._zygotes: dict[str, _Zygote | None] = {"light": None, "scientific": None}
        self._locks = {kind: threading.Lock() for kind in self._zygotes}
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Boot both zygotes in parallel (idempotent: only dead or missing ones boot).

        Raises SandboxUnavailable when the policy requires a sandbox this kernel cannot give.
        """
        self._refuse_without_sandbox()
        self._stopped = False
        booting = []
        for kind in self._zygotes:
            with self._locks[kind]:
                current = self._zygotes[kind]
                if current is None or not current.alive():
                    if current is not None:
                        current.close()
                    self._zygotes[kind] = _Zygote(kind, self._zygote_environment())
                    booting.append(kind)
        for kind in booting:
            with self._locks[kind]:
                zygote = self._zygotes[kind]
                if zygote is not None:
                    try:
                        zygote.wait_ready(self._boot_timeout_s)
                    except ExecutorError:
                        self._zygotes[kind] = None
                        raise

    def stop(self) -> None:
        """End both zygotes; running steps are killed and report internal_error."""
        self._stopped = True
        for kind in self._zygotes:
            with self._locks[kind]:
                zygote, self._zygotes[kind] = self._zygotes[kind], None
            if zygote is not None:
                zygote.close()

    def __enter__(self) -> StepExecutor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def zygote_pids(self) -> dict[str, int | None]:
        """The live zygotes' pids by kind (for health checks and heartbeats)."""
        pids: dict[str, int | None] = {}
        for kind, zygote in self._zygotes.items():
            pids[kind] = zygote.pid if zygote is not None and zygote.alive() else None
        return pids

    def _zygote_environment(self) -> dict[str, str]:
        environment = step_environment(
            os.environ if self._environ is None else self._environ, self._keep_env
        )
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_IMPORT_ROOT), path]))
        environment.setdefault("MPLBACKEND", "Agg")  # no display on a worker
        # One BLAS/OpenMP thread per step unless the operator says otherwise: a worker runs
        # several steps at once, and oversubscribed BLAS made a 0.4 s fit take 7 s here.
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(name, "1")
        return environment

    def check_sandbox(self) -> None:
        """Raise SandboxUnavailable if steps must be sandboxed and this kernel cannot."""
        self._refuse_without_sandbox()

    def _refuse_without_sandbox(self) -> None:
        if self._sandbox_missing:
            raise SandboxUnavailable(
                f"steps must be sandboxed (STEPWORKS_STEP_SANDBOX=required) but "
                f"{self._sandbox_missing}; run workers on such a kernel, or set "
                f"STEPWORKS_STEP_SANDBOX=off to run steps unisolated (every step can then "
                f"read and write everything this worker can)"
            )

    def _zygote(self, kind: str) -> _Zygote:
        self._refuse_without_sandbox()
        with self._locks[kind]:
            if self._stopped:
                raise ExecutorError("the executor is stopped")
            zygote = self._zygotes[kind]
            if zygote is not None and zygote.alive():
                return zygote
            if zygote is not None:
                logger.warning("the %s zygote died; starting a new one", kind)
                zygote.close()
            zygote = _Zygote(kind, self._zygote_environment())
            self._zygotes[kind] = zygote
            try:
                zygote.wait_ready(self._boot_timeout_s)
            except ExecutorError:
                self._zygotes[kind] = None
                raise
            return zygote

    # -- running a step --------------------------------------------------------------------

    def run(
        self,
        job: StepJob,
        on_log: Callable[[str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        on_metric: Callable[[list[MetricPoint]], None] | None = None,
    ) -> StepResult:
        """Run `job` to its end in a fresh child; blocks; thread-safe.

        Everything that happens to the step, including its zygote dying or failing to
        fork, is a StepResult. Raises ExecutorError when the executor is stopped or a zygote
        will not boot, ValueError when `output_dir` holds anything but empty `work/` and
        `outputs/`; if `on_log`, `on_metric` or
        `should_cancel` raise, the child's group is killed and the exception propagates.

        `on_metric` gets the points the step logs while it runs, batched like its log; the
        points of a step that succeeds are then all in its result, which supersedes them.
        """
        started = time.monotonic()
        output_dir = Path(job.output_dir).absolute()
        _prepare_output_dir(output_dir)
        spec = {
            "code_dir": str(Path(job.code_dir).absolute()),
            "entrypoint": job.entrypoint,
            "inputs": {
                name: [str(Path(path).absolute()), media_type, kind]
                for name, (path, media_type, kind) in job.inputs.items()
            },
            "params": dict(job.params),
            "output_dir": str(output_dir),
            "declared_outputs": list(job.declared_outputs),
            "run_id": job.run_id,
            "step_name": job.step_name,
            "sandbox": step_rules(
                job.sandbox or self.sandbox,
                code_dir=str(Path(job.code_dir).absolute()),
                inputs=[str(Path(path).absolute()) for path, _, _ in job.inputs.values()],
                output_dir=str(output_dir),
            ),
        }
        kind = "scientific" if job.scientific else "light"
        oom_before = oom_kills()  # a SIGKILL says "out of memory" only if this count rose
        pipes = _Pipes()
        spill = output_dir / ".job.json"
        try:
            try:
                child = self._zygote(kind).fork(spec, pipes.log_w, pipes.result_w, spill)
            except _ZygoteGone:
                # It died between our check and our request, so nothing was forked: one
                # retry on a fresh zygote.
                child = self._zygote(kind).fork(spec, pipes.log_w, pipes.result_w, spill)
        except BaseException:
            pipes.close()
            raise
        # Only the child may hold the write ends: ours would keep end of file from coming.
        pipes.close_write_ends()
        watch = _Watch(child, pipes, output_dir, oom_before)
        result = watch.watch(job, on_log, should_cancel, on_metric)
        spill.unlink(missing_ok=True)
        result.duration_s = time.monotonic() - started
        return result


def _prepare_output_dir(output_dir: Path) -> None:
    """The step's output folder with empty `work/` and `outputs/` in it: made here, not in
    the child (a child's every step costs copy-on-write page faults), unless the caller made
    them ahead (runs_app/executor/scratch.py). Anything else in it is a ValueError."""
    output_dir.mkdir(parents=True, exist_ok=True)
    fixed = (child_layout.WORK_DIR, child_layout.OUTPUTS_DIR)
    present = set(os.listdir(output_dir))
    if present - set(fixed) or any(os.listdir(output_dir / name) for name in present):
        raise ValueError(f"the output folder {output_dir} is not empty")
    for name in fixed:
        if name not in present:
            os.mkdir(output_dir / name)


class _Pipes:
    """The step child's log pipe (stdout+stderr) and result pipe."""

    def __init__(self) -> None:
        self.log_r, self.log_w = os.pipe()
        self.result_r, self.result_w = os.pipe()
        os.set_blocking(self.log_r, False)
        os.set_blocking(self.result_r, False)
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(self.log_r, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._write_open = True

    def close_write_ends(self) -> None:
        # Only the child may hold them: our copies would keep end of file from ever coming.
        if self._write_open:
            self._write_open = False
            os.close(self.log_w)
            os.close(self.result_w)

    def close(self) -> None:
        self.close_write_ends()
        for fd in (self.log_r, self.result_r):
            with contextlib.suppress(OSError):
                os.close(fd)


class _LogBatcher:
    """Decodes the child's bytes as UTF-8 and hands them to `on_log` in bounded batches."""

    def __init__(self, on_log: Callable[[str], None] | None) -> None:
        self._on_log = on_log
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._size = 0
        self._last_flush = time.monotonic()

    def feed(self, data: bytes) -> None:
        if self._on_log is None:
            return  # nobody listens: keep nothing
        self._parts.append(self._decoder.decode(data))
        self._size += len(data)
        if self._size >= LOG_BATCH_BYTES:
            self.flush()

    def next_flush(self) -> float:
        return self._last_flush + LOG_BATCH_SECONDS if self._parts else float("inf")

    def flush(self, final: bool = False) -> None:
        self._last_flush = time.monotonic()
        if self._on_log is None:
            return
        if final:
            self._parts.append(self._decoder.decode(b"", final=True))
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        if text:
            self._on_log(text)


class _MetricBatcher:
    """Parses the result pipe's lines: live metric points (batched to `on_metric` like the
    log) and the child's final REPORTED."""

    def __init__(self, on_metric: Callable[[list[MetricPoint]], None] | None) -> None:
        self._on_metric = on_metric
        self._buffer = b""
        self._points: list[MetricPoint] = []
        self._last_flush = time.monotonic()
        self.reported = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > _READ_BYTES:
            self._buffer = b""  # not a line the child writes: the step's own scribbling
        for line in lines:
            if line + b"\n" == child_layout.REPORTED:
                self.reported = True
            elif line.startswith(child_layout.METRIC_LINE) and self._on_metric is not None:
                point = _metric_point(line[len(child_layout.METRIC_LINE) :])
                if point is not None:
                    self._points.append(point)

    def next_flush(self) -> float:
        return self._last_flush + LOG_BATCH_SECONDS if self._points else float("inf")

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        points, self._points = self._points, []
        if points and self._on_metric is not None:
            self._on_metric(points)


def _metric_point(data: bytes) -> MetricPoint | None:
    # The step's own process writes these lines: keep only what is well-formed.
    try:
        raw = json.loads(data)
        value = float(raw["value"])
        step = None if raw["step"] is None else int(raw["step"])
        name = str(raw["name"])
    except (ValueError, KeyError, TypeError, OverflowError):
        return None
    if not name or not math.isfinite(value):
        return None
    return MetricPoint(name=name, value=value, step=step)


def _flush_due(now: float, log: _LogBatcher, metrics: _MetricBatcher) -> None:
    if now >= log.next_flush():
        log.flush()
    if now >= metrics.next_flush():
        metrics.flush()


class _Watch:
    """One running step child, watched by the thread that called `run()`."""

    def __init__(
        self, child: _Child, pipes: _Pipes, output_dir: Path, oom_before: int | None
    ) -> None:
        self.child = child
        self.pipes = pipes
        self.output_dir = output_dir
        self.oom_before = oom_before  # the cgroup's OOM kills when the step started

    def watch(
        self,
        job: StepJob,
        on_log: Callable[[str], None] | None,
        should_cancel: Callable[[], bool] | None,
        on_metric: Callable[[list[MetricPoint]], None] | None = None,
    ) -> StepResult:
        log = _LogBatcher(on_log)
        metrics = _MetricBatcher(on_metric)
        try:
            ending = self._loop(job, log, metrics, should_cancel)
        finally:
            # Whatever happened, nothing of this step keeps running: the child (if it is
            # still finishing its exit) and anything it started in its group.
            pid = self.child.wait_pid()
            if pid is not None:
                with contextlib.suppress(OSError):
                    kill_process_group(pid)
            self._drain(log)
            self.pipes.close()
        if ending != "reported" and pid is not None:
            # When a failed step's run() returns, its child and group are gone, not just
            # signalled (a succeeded one's finish exiting off the critical path).
            self.child.exited.wait(EXIT_REPORT_TIMEOUT_S)
            _wait_group_gone(pid, GROUP_EXIT_TIMEOUT_S)
        log.flush(final=True)
        result = self._result(job, ending)
        if result.status != "succeeded":
            metrics.flush()  # what a failed step logged stays: its result carries none
        result.pid = pid
        return result

    def _loop(
        self,
        job: StepJob,
        log: _LogBatcher,
        metrics: _MetricBatcher,
        should_cancel: Callable[[], bool] | None,
    ) -> str:
        deadline = time.monotonic() + job.timeout_s
        next_cancel_poll = time.monotonic() + CANCEL_POLL_SECONDS if should_cancel else math.inf
        log_r, result_r = self.pipes.log_r, self.pipes.result_r
        poller = select.poll()  # two fds: poll needs no descriptor of its own, unlike epoll
        poller.register(log_r, select.POLLIN)
        poller.register(result_r, select.POLLIN)
        while True:
            now = time.monotonic()
            # Wake at least every 0.2 s: a child that died while something it started still
            # holds its pipes open is only seen through its zygote's exit report.
            flush_at = min(log.next_flush(), metrics.next_flush())
            wake = min(deadline, next_cancel_poll, flush_at, now + CANCEL_POLL_SECONDS)
            for fd, _events in poller.poll(max(0.0, wake - now) * 1000):
                data = self._read(fd)
                if fd == log_r:
                    if data is None:
                        poller.unregister(fd)  # end of file: nobody writes any more
                    else:
                        log.feed(data)
                elif data is None:
                    return "ended"  # the child is gone without saying it reported
                else:
                    metrics.feed(data)
            if metrics.reported:
                return "reported"
            if self.child.exited.is_set():
                return "ended"
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if should_cancel is not None and now >= next_cancel_poll:
                next_cancel_poll = now + CANCEL_POLL_SECONDS
                if should_cancel():
                    return "canceled"
            _flush_due(now, log, metrics)

    @staticmethod
    def _read(fd: int) -> bytes | None:
        """Up to one chunk; b"" if nothing is ready, None at end of file."""
        try:
            data = os.read(fd, _READ_BYTES)
        except BlockingIOError:
            return b""
        return data or None

    def _drain(self, log: _LogBatcher) -> None:
        # What is still in the pipe; bounded, since leftovers of the group may still write
        # until their SIGKILL lands.
        for _ in range(64):
            data = self._read(self.pipes.log_r)
            if not data:
                return
            log.feed(data)

    def _result(self, job: StepJob, ending: str) -> StepResult:
        result_file = self.output_dir / child_layout.RESULT_FILE
        if ending == "timeout":
            limit = f"{job.timeout_s:g}"
            return StepResult("failed", "timeout", f"exceeded its time limit of {limit} s")
        if ending == "canceled":
            return StepResult("canceled", None, "canceled while running")
        if ending == "ended" and not result_file.exists():
            return self._died()
        return self._read_result(job, result_file)

    def _died(self) -> StepResult:
        self.child.exited.wait(EXIT_REPORT_TIMEOUT_S)
        if self.child.error:
            message = f"its zygote could not fork: {self.child.error}"
            return StepResult("failed", "internal_error", message)
        if self.child.zygote_died:
            return StepResult("failed", "internal_error", "its zygote died while it ran")
        if self.child.returncode is None:
            return StepResult("failed", "internal_error", "it ended without an exit status")
        message = describe_returncode(self.child.returncode)
        if self.child.returncode == -9:
            after = oom_kills()
            if self.oom_before is not None and after is not None and after > self.oom_before:
                message += (
                    "; the kernel's out-of-memory killer killed in this worker's memory cgroup "
                    f"while the step ran (oom_kill {self.oom_before} -> {after}): most likely "
                    "the step, out of memory"
                )
        elif self.child.returncode == 0:
            message += " before returning from the step"
        return StepResult("failed", "process_died", message)

    def _read_result(self, job: StepJob, result_file: Path) -> StepResult:
        try:
            raw = json.loads(result_file.read_text(encoding="utf-8"))
            root = (self.output_dir / child_layout.OUTPUTS_DIR).resolve()
            outputs = {
                name: self._output_file(entry, root) for name, entry in raw["outputs"].items()
            }
            metrics = [
                MetricPoint(
                    name=str(m["name"]),
                    value=float(m["value"]),
                    step=None if m["step"] is None else int(m["step"]),
                )
                for m in raw["metrics"]
            ]
            if any(not 0 < len(m.name) <= METRIC_NAME_MAX for m in metrics):
                # log_metric refuses these: only a result the step's own code wrote has one.
                why = f"a metric's name is not 1 to {METRIC_NAME_MAX} characters long"
                return StepResult("failed", "output_invalid", why)
            status, reason, message = raw["status"], raw["reason"], str(raw["message"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            return StepResult("failed", "internal_error", f"unreadable result: {error!r}")
        if status == "succeeded" and set(outputs) != set(job.declared_outputs):
            # The step's own code could have rewritten result.json; trust only what checks.
            return StepResult("failed", "output_invalid", "its outputs do not match")
        if status not in ("succeeded", "failed") or reason not in (None, *get_args(Reason)):
            return StepResult("failed", "internal_error", f"an unknown outcome {status}/{reason}")
        return StepResult(status, reason, message, outputs, metrics)

    def _output_file(self, entry: Mapping[str, Any], outputs: Path) -> OutputFile:
        path = (self.output_dir / entry["file"]).resolve()
        if not path.is_relative_to(outputs):
            raise ValueError(f"an output outside the output folder: {entry['file']}")
        kind = str(entry["kind"])
        exists = path.is_dir() if kind == KIND_DIRECTORY else path.is_file()
        if not exists:
            raise ValueError(f"a reported output is missing: {entry['file']}")
        return OutputFile(path, str(entry["media_type"]), kind)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    # SIGKILLed grandchildren linger as zombies until the zygote (their subreaper) reaps them.
    deadline = time.monotonic() + timeout
    while process_group_exists(pgid) and time.monotonic() < deadline:
        time.sleep(0.005)
