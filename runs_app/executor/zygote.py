"""A zygote: a warm, single-threaded interpreter that forks one fresh child per step.

Started by the worker as `python -P -m runs_app.executor.zygote KIND FD` (see runner.py),
never forked from the worker: it holds no Django, no database connection, no secrets and
no threads of ours. `light` imports the standard library and stepworks; `scientific` also
imports numpy, pandas, pyarrow, scipy, scikit-learn, plotly and matplotlib (Agg), so a
step's imports of them are dictionary lookups.

It serves the worker over the SOCK_SEQPACKET socket FD (protocol.py): it forks on request,
reports each child's pid, reaps children as SIGCHLD arrives (off the worker's critical
path: the child has reported its result before it exits) and reports how each exited.
When the worker goes away (end of file on FD) it kills its children's process groups and
exits: the worker may die without cleaning up, and the zygote cannot rely on a
parent-death signal (that fires when the worker *thread* that started it ends).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs_app.executor import protocol
from runs_app.executor.child import run_child, wait_for_step
from runs_app.executor.process import become_subreaper, kill_process_group
from runs_app.executor.sandbox import SystemRules

KINDS = ("light", "scientific")


# What the scientific zygote imports before it forks: the `steps` extra, including the
# scikit-learn estimator families the demo and typical steps use.
SCIENTIFIC_MODULES = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.parquet",
    "scipy",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.neural_network",
    "sklearn.preprocessing",
    "plotly.graph_objects",
    "plotly.io",
    "matplotlib.pyplot",
)


def preload(kind: str) -> None:
    """Import what every child of this kind should find already imported.

    A package missing from this worker is skipped, not fatal: a step that needs it fails
    with its own ImportError, and light steps keep running.
    """
    importlib.import_module("stepworks.outputs")
    if kind != "scientific":
        return
    for name in ("matplotlib", *SCIENTIFIC_MODULES):
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            print(f"scientific zygote: not preloading {name}: {error}", file=sys.stderr)
            continue
        if name == "matplotlib":
            module.use("Agg")  # headless; before pyplot is imported
        elif name == "plotly.graph_objects":
            module.Figure  # noqa: B018  (plotly imports its figure classes lazily)


@dataclass
class _Spare:
    """A child forked and prepared ahead (child.wait_for_step), waiting for its step."""

    pid: int
    channel: socket.socket  # the zygote's end
    keys: frozenset[Any]  # the sandbox rules it inherited


class Zygote:
    def __init__(self, kind: str, control: socket.socket) -> None:
        self.kind = kind
        self.control = control
        self.children: dict[int, int] = {}  # pid -> job id
        self.system_rules: dict[Any, SystemRules] = {}
        self.spare: _Spare | None = None
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def serve(self) -> None:
        # SIGCHLD writes a byte to wake_w (set_wakeup_fd), which wakes the selector.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "sigchld")
        protocol.send(self.control, {"op": "ready", "pid": os.getpid(), "kind": self.kind})
        self.spawn_spare()
        while True:
            for key, _events in self.selector.select():
                if key.data == "sigchld":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                    self.reap()
                    continue
                try:
                    message, fds = protocol.receive(self.control)
                except (ConnectionError, ValueError) as error:
                    print(f"zygote {self.kind}: bad message: {error!r}", file=sys.stderr)
                    if isinstance(error, ConnectionError):
                        return
                    continue
                if message is None:  # the worker is gone
                    return
                self.handle(message, fds)

    def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        job = message.get("job")
        try:
            if message.get("op") != "fork" or len(fds) != 2:
                raise ValueError(f"unexpected request {message.get('op')!r} with {len(fds)} fds")
            spec = message.get("spec")
            if spec is None:
                spec = json.loads(Path(message["spec_file"]).read_text(encoding="utf-8"))
            self.start(int(message["job"]), message, spec, fds)
        except Exception as error:
            protocol.send(self.control, {"op": "fork_failed", "job": job, "error": repr(error)})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.spawn_spare()  # for the next step, after this one is on its way

    def start(
        self, job: int, message: dict[str, Any], spec: dict[str, Any], fds: list[int]
    ) -> None:
        """Start the step: in the spare if it has this step's sandbox rules, else in a child
        forked now. Either way a fresh process that runs this one step."""
        rules = spec.get("sandbox")
        key = SystemRules.key(rules) if rules else None
        if key is not None and key not in self.system_rules:
            self.system_rules[key] = SystemRules(*key)
        spare, self.spare = self.spare, None
        if spare is not None:
            if key is None or key in spare.keys:
                forward = {k: v for k, v in message.items() if k in ("job", "spec", "spec_file")}
                try:
                    protocol.send(spare.channel, forward, fds)
                except OSError:
                    pass  # it died meanwhile: fork one now
                else:
                    spare.channel.close()
                    self.children[spare.pid] = job
                    protocol.send(self.control, {"op": "forked", "job": job, "pid": spare.pid})
                    return
            self._dismiss(spare)
        system = self.system_rules[key] if key is not None else None
        zygote_pid = os.getpid()
        pid = self._fork(lambda: run_child(spec, fds[0], fds[1], zygote_pid, system))
        self.children[pid] = job
        protocol.send(self.control, {"op": "forked", "job": job, "pid": pid})

    def spawn_spare(self) -> None:
        """Fork and prepare the next step's child now, while no step waits for it."""
        if self.spare is not None:
            return
        ours, theirs = protocol.channel()
        zygote_pid = os.getpid()

        def wait() -> None:
            ours.close()
            wait_for_step(theirs, zygote_pid, self.system_rules)

        try:
            pid = self._fork(wait)
        finally:
            theirs.close()
        self.spare = _Spare(pid, ours, frozenset(self.system_rules))

    def _dismiss(self, spare: _Spare) -> None:
        """A spare that will not be used: closing its channel lets it exit (reaped as usual)."""
        spare.channel.close()

    def _fork(self, body: Callable[[], object]) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # what the zygote allocated since the last fork, too (see main)
        pid = os.fork()
        if pid == 0:
            try:
                self._leave()
                body()
            finally:
                os._exit(70)
        return pid

    def _leave(self) -> None:
        """In a new child: drop what belongs to the zygote (its signals, fds, sockets)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        os.close(self.control.detach())
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.spare is not None:
            os.close(self.spare.channel.detach())

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.children.pop(pid, None)
            if job is None:
                if self.spare is not None and self.spare.pid == pid:
                    self.spare.channel.close()
                    self.spare = None  # it died waiting; the next step gets a new one
                continue  # else an orphaned grandchild we adopted as subreaper
            returncode = os.waitstatus_to_exitcode(status)
            message = {"op": "exited", "job": job, "pid": pid, "returncode": returncode}
            with contextlib.suppress(OSError):
                protocol.send(self.control, message)

    def shutdown(self) -> None:
        if self.spare is not None:
            with contextlib.suppress(OSError):
                kill_process_group(self.spare.pid)
        for pid in list(self.children):
            with contextlib.suppress(OSError, ValueError):
                kill_process_group(pid)


def main(argv: list[str]) -> int:
    kind, fd = argv[0], int(argv[1])
    if kind not in KINDS:
        print(f"unknown zygote kind {kind!r}", file=sys.stderr)
        return 2
    control = socket.socket(fileno=fd)
    # Anything an import prints goes to stderr (the worker's), never to a step's log.
    os.dup2(2, 1)
    # Forked children share the zygote's pages until they write to them: with the collector
    # off here and everything frozen before forking, a child's collections don't touch (and
    # so copy) the preloaded objects. Children turn it back on.
    gc.disable()
    # Python 3.12+ warns when forking with threads; OpenBLAS's idle threads are made
    # fork-safe by its own atfork handlers.
    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
    become_subreaper()
    preload(kind)
    gc.freeze()
    zygote = Zygote(kind, control)
    try:
        zygote.serve()
    finally:
        zygote.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
