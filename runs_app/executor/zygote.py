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
from pathlib import Path
from typing import Any

from runs_app.executor import protocol
from runs_app.executor.child import run_child
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


class Zygote:
    def __init__(self, kind: str, control: socket.socket) -> None:
        self.kind = kind
        self.control = control
        self.children: dict[int, int] = {}  # pid -> job id
        self.system_rules: dict[tuple[tuple[str, ...], ...], SystemRules] = {}
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
            self.fork(int(message["job"]), spec, fds[0], fds[1])
        except Exception as error:
            protocol.send(self.control, {"op": "fork_failed", "job": job, "error": repr(error)})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def fork(self, job: int, spec: dict[str, Any], log_fd: int, result_fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # what the zygote allocated since the last fork, too (see main)
        zygote_pid = os.getpid()
        system = None
        rules = spec.get("sandbox")
        if rules:
            key = SystemRules.key(rules)
            if key not in self.system_rules:
                self.system_rules[key] = SystemRules(*key)
            system = self.system_rules[key]
        pid = os.fork()
        if pid == 0:
            try:
                self._leave()
                run_child(spec, log_fd, result_fd, zygote_pid, system)
            finally:
                os._exit(70)
        self.children[pid] = job
        protocol.send(self.control, {"op": "forked", "job": job, "pid": pid})

    def _leave(self) -> None:
        """In a new child: drop what belongs to the zygote (its signals, fds, socket)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.close()
        os.close(self.control.detach())
        os.close(self.wake_r)
        os.close(self.wake_w)

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
                continue  # an orphaned grandchild we adopted as subreaper
            returncode = os.waitstatus_to_exitcode(status)
            message = {"op": "exited", "job": job, "pid": pid, "returncode": returncode}
            with contextlib.suppress(OSError):
                protocol.send(self.control, message)

    def shutdown(self) -> None:
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
