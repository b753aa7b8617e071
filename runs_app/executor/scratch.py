"""Scratch folders for step attempts, made ahead and removed behind, off the critical path.

A step attempt needs a folder of its own: its output folder (with `work/`, its working
directory, and `outputs/`) and room for inputs the worker unpacks. Making and removing one
per step put the file system on every step's critical path: on these machines' ext4 (mounted
with `discard`) removing a directory took about 2 ms and making one 0.1-0.3 ms, more than
the rest of a light step's fork. So a janitor thread keeps a few new folders ready and
removes used ones behind the steps.

A folder is never used twice: a step's sandbox grants it its folder by inode, and a process
the step left behind (one that left its process group) keeps that grant, so a reused folder
would be a channel to the next step, perhaps another workspace's. A new folder for every
attempt closes it.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
from collections import deque
from pathlib import Path

from runs_app.executor.child import OUTPUTS_DIR, WORK_DIR

log = logging.getLogger(__name__)

STEP_DIR = "step"  # the step's output folder inside a scratch folder
READY = 4  # new folders kept ready
_PREFIX = "scratch-"


class _Marker:
    """On the janitor's queue: set `done` when everything before it is done."""

    def __init__(self, done: threading.Event) -> None:
        self.done = done


class ScratchFolders:
    """A worker process's scratch folders, under `root` in a folder of its host and pid."""

    def __init__(self, root: Path, ready: int = READY) -> None:
        self.root = root
        self._want = ready
        self._host = socket.gethostname()
        self._ready: deque[Path] = deque()
        self._work: queue.Queue[Path | _Marker | str | None] = queue.Queue()
        self._janitor: threading.Thread | None = None
        self._folder: Path | None = None
        self._count = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._folder = Path(
            tempfile.mkdtemp(prefix=f"{_PREFIX}{self._host}-{os.getpid()}-", dir=self.root)
        )
        self._janitor = threading.Thread(
            target=self._loop, name="stepworks-scratch-janitor", daemon=True
        )
        self._janitor.start()
        for stale in self._stale():  # a crashed worker of this host left its folders
            self._work.put(stale)
        self._work.put(_REFILL)

    def stop(self) -> None:
        if self._janitor is not None:
            self._work.put(None)
            self._janitor.join(timeout=30)
            self._janitor = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._ready.clear()

    def take(self) -> Path:
        """A new scratch folder: `step/` (the output folder, with empty `work/` and
        `outputs/`) and nothing else; made now if none is ready."""
        try:
            folder = self._ready.popleft()
        except IndexError:
            folder = self._make()
        self._work.put(_REFILL)
        return folder

    def give_back(self, folder: Path) -> None:
        """The attempt is over and its outputs are stored: the folder goes."""
        self._work.put(folder)

    def idle(self, timeout: float = 10.0) -> bool:
        """Until the janitor has done what it was given (tests, shutdown); False on timeout."""
        done = threading.Event()
        self._work.put(_Marker(done))
        return done.wait(timeout)

    def _make(self) -> Path:
        if self._folder is None:
            raise RuntimeError("the scratch folders are not started")
        with self._lock:
            self._count += 1
            number = self._count
        folder = self._folder / f"slot-{number}"
        folder.mkdir()
        (folder / STEP_DIR).mkdir()
        (folder / STEP_DIR / WORK_DIR).mkdir()
        (folder / STEP_DIR / OUTPUTS_DIR).mkdir()
        return folder

    def _loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            try:
                if isinstance(item, _Marker):
                    item.done.set()
                elif isinstance(item, Path):
                    shutil.rmtree(item, ignore_errors=True)
                else:  # _REFILL
                    while len(self._ready) < self._want and self._folder is not None:
                        self._ready.append(self._make())
            except OSError:
                log.warning("scratch folders: %r failed", item, exc_info=True)

    def _stale(self) -> list[Path]:
        """Scratch folders of this host's workers that are no longer running."""
        stale = []
        for path in self.root.glob(f"{_PREFIX}{self._host}-*"):
            pid = path.name.removeprefix(f"{_PREFIX}{self._host}-").partition("-")[0]
            if path != self._folder and pid.isdigit() and not _alive(int(pid)):
                stale.append(path)
        return stale


_REFILL = "refill"  # on the janitor's queue: make folders until READY are ready


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
