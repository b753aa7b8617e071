"""Process-control primitives the zygote, the step child and the worker share.

Linux-only calls (`prctl`) degrade to no-ops elsewhere, so the executor still runs on a
developer's Mac; there a step's child is killed through its process group only.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from pathlib import Path

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36

if sys.platform.startswith("linux"):
    # Resolved once, in the zygote, so a child's call touches as little as possible.
    _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
    _libc_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _libc_prctl.restype = ctypes.c_int
else:
    _libc_prctl = None


def _prctl(option: int, value: int) -> None:
    if _libc_prctl is None:
        return
    if _libc_prctl(option, value, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed: {os.strerror(errno)}")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (so a step never outlives its zygote).

    The kernel sends the signal when the parent *thread* exits; the zygote is
    single-threaded, so that is the zygote. If the parent died before this call, no signal
    will come, hence the check after it.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(128 + signal.SIGKILL)


def become_subreaper() -> None:
    """Adopt the orphaned grandchildren of our children, so we reap them (no zombies pile up
    under a PID 1 that does not reap, as in many containers)."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def kill_process_group(pgid: int) -> bool:
    """SIGKILL a whole process group (a step's child and anything it started); False if gone."""
    if pgid <= 1:  # never 0 (our own group) or -1 (every process we may signal)
        raise ValueError(f"refusing to kill process group {pgid}")
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def process_group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed in this process's
    memory cgroup (v2 `memory.events`, v1 `memory.oom_control`); None where unreadable.
    Read before every step: the file's place is found once per process."""
    for place in _oom_files(os.getpid()):
        try:
            with open(place, encoding="ascii") as handle:
                for entry in handle:
                    name, _, value = entry.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


@functools.lru_cache(maxsize=4)
def _oom_files(pid: int) -> tuple[str, ...]:
    """Where this process's memory cgroup counts its OOM kills (by pid: a forked child that
    asks again reads its own cgroup)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return ()
    places = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            places.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            root = Path("/sys/fs/cgroup/memory")
            places += [root / path.lstrip("/") / "memory.oom_control", root / "memory.oom_control"]
    return tuple(str(place) for place in places)


def describe_returncode(returncode: int) -> str:
    """ "exited with code 3" or "killed by signal 11 (SIGSEGV)" from a subprocess-style code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    return f"killed by signal {number} ({name})"
