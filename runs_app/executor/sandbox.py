"""The Landlock sandbox every step body runs in (Linux 6.12+, Landlock ABI 6 or later).

The worker decides what a step may touch (`step_rules`): read its interpreter and libraries,
its own code snapshot and its own input files; write its own output folder (which holds its
scratch and temp folder). The child applies it to itself (`restrict`) before it loads the
step's code: no new privileges, every inherited descriptor closed but stdio and the result
pipe, then one Landlock domain that also scopes signals and abstract UNIX sockets to the
step's own processes and, with `network="deny"`, refuses every TCP connect and bind.
Landlock is per process and inherited, so whatever the step starts is held by it too.

Landlock governs opening files, not `stat`: a step can still see that a path exists. It does
not govern UDP or connecting to a UNIX socket by its path, which is why the database and the
broker must still ask for a password in production (README, "Step isolation").

Plain ctypes over the three syscalls (`<linux/landlock.h>`), no Django: the zygote's child
calls it with nothing else loaded.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SandboxMode = Literal["required", "off"]
NetworkMode = Literal["allow", "deny"]
MODES: tuple[SandboxMode, ...] = ("required", "off")
NETWORK_MODES: tuple[NetworkMode, ...] = ("allow", "deny")

# The oldest ABI that holds everything we promise: files (1), TCP (4), signal scope (6).
MIN_ABI = 6

# <asm/unistd_64.h>, the same on x86-64 and arm64 (the generic syscall table).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# <linux/landlock.h>: filesystem rights.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # up to MAKE_SYM
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# Rights that make sense on a file (a rule on a file with a folder right is EINVAL).
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_READ_WRITE_DEVICE = _READ_FILE | _WRITE_FILE | _TRUNCATE
_MAKE_REG, _REMOVE_FILE = 1 << 8, 1 << 5
_SHARED_MEMORY = _READ_FILE | _WRITE_FILE | _TRUNCATE | _MAKE_REG | _REMOVE_FILE


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


if sys.platform.startswith("linux"):
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
    _prctl = _libc.prctl
    _prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    _prctl.restype = ctypes.c_int
else:  # a developer's Mac: no Landlock, `abi()` is 0
    _syscall = _prctl = None


class SandboxError(OSError):
    """The step could not be sandboxed; it must not run."""


def abi() -> int:
    """The Landlock ABI this kernel offers, 0 when it has none (or Landlock is disabled)."""
    if _syscall is None:
        return 0
    version = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def unavailable_reason() -> str | None:
    """Why steps cannot be sandboxed here, or None when they can."""
    found = abi()
    if found >= MIN_ABI:
        return None
    if found == 0:
        return "this kernel has no Landlock (Linux 6.12 or later with Landlock enabled is needed)"
    return (
        f"this kernel offers Landlock ABI {found}; signal scoping needs ABI {MIN_ABI} (Linux 6.12)"
    )


def default_mode() -> SandboxMode:
    """`required` wherever the kernel can sandbox, so nobody has to remember to turn it on."""
    return "required" if unavailable_reason() is None else "off"


@dataclass(frozen=True)
class SandboxPolicy:
    """What the worker asks of every step: sandboxed or not, network or not, and the folders
    no step may read even when one of the system folders contains them (the data folder)."""

    mode: SandboxMode = field(default_factory=default_mode)
    network: NetworkMode = "allow"
    private: tuple[str, ...] = ()
    read: tuple[str, ...] = ()  # what every step may also read (a dataset mount)
    write: tuple[str, ...] = ()  # what every step may also write (a shared scratch)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, not {self.mode!r}")
        if self.network not in NETWORK_MODES:
            raise ValueError(f"network mode must be one of {NETWORK_MODES}, not {self.network!r}")


# What every step may read besides its own code and inputs: the interpreter, its libraries,
# the shared libraries they load, time zones, locales, certificates, name resolution, and the
# bits of /proc and /sys that BLAS, os.cpu_count and loky read.
_SYSTEM_READ = (
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/timezone", "/etc/ssl", "/etc/pki", "/etc/ca-certificates", "/etc/mime.types",
    "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf",
    "/etc/host.conf", "/etc/os-release", "/etc/matplotlibrc",
    "/dev/urandom", "/dev/random", "/dev/zero",
    "/proc/cpuinfo", "/proc/meminfo", "/proc/stat",
    "/sys/devices/system/cpu", "/sys/fs/cgroup",
)  # fmt: skip
_DEVICES_READ_WRITE = ("/dev/null", "/dev/full")
# The step library lives beside the product's code; only it is readable of the project.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_STEP_LIBRARY = _PROJECT_ROOT / "stepworks"


def system_read_paths(private: Iterable[str] = ()) -> list[str]:
    """The interpreter's and the system's folders a step may read: none of `private` is among
    them or beneath them, and of the project's own folder only the step library and a venv."""
    roots = [*_SYSTEM_READ, sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]
    venv = Path(sys.prefix).resolve()
    for entry in sys.path:
        path = Path(entry).resolve() if entry else _PROJECT_ROOT
        # Of the project's own folder, only the interpreter's (a venv in it) is readable; a
        # path entry of "/" (a stray PYTHONPATH) would open the whole machine: never.
        if path in (_PROJECT_ROOT, Path("/")) or (
            _PROJECT_ROOT in path.parents and venv not in path.parents
        ):
            continue
        roots.append(str(path))
    roots.append(str(_STEP_LIBRARY))
    hidden = [Path(p).resolve() for p in private]
    allowed: list[str] = []
    for root in dict.fromkeys(roots):
        allowed.extend(_outside(Path(root), hidden))
    return list(dict.fromkeys(allowed))


def _outside(root: Path, hidden: Sequence[Path]) -> list[str]:
    """`root`, or when it holds a hidden folder, each of its entries that is not one."""
    if not root.exists():
        return []
    resolved = root.resolve()
    if any(resolved == h or h in resolved.parents for h in hidden):
        return []  # inside a hidden folder
    if not any(resolved in h.parents for h in hidden):
        return [str(root)]
    # A system folder holds a hidden one (say the data folder under /usr/local/lib/...):
    # allow its other entries, one level at a time down to the hidden folder.
    allowed: list[str] = []
    for entry in sorted(resolved.iterdir()):
        allowed.extend(_outside(entry, hidden))
    return allowed


class SystemRules:
    """The part of every step's rules that is the same for all: the system folders, opened
    once by the zygote (O_PATH descriptors in ready-made rule structures), so that a child
    only hands them to the kernel. A child closes its copies of the descriptors."""

    def __init__(
        self, private: Sequence[str] = (), read: Sequence[str] = (), write: Sequence[str] = ()
    ) -> None:
        handled_fs = _FS_ABI1 | _REFER | _TRUNCATE | _IOCTL_DEV
        scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        self.handled_fs = handled_fs
        self.rulesets = {
            "allow": _RulesetAttr(handled_access_fs=handled_fs, scoped=scoped),
            "deny": _RulesetAttr(
                handled_access_fs=handled_fs,
                handled_access_net=_NET_BIND_TCP | _NET_CONNECT_TCP,
                scoped=scoped,
            ),
        }
        self.rules: list[_PathBeneathAttr] = []
        hidden = [Path(p).resolve() for p in private]
        for path in system_read_paths(private):
            self._add(path, _READ)
        for root in read:
            for path in _outside(Path(root), hidden):
                self._add(path, _READ)
        for root in write:
            for path in _outside(Path(root), hidden):
                self._add(path, handled_fs)
        for path in _DEVICES_READ_WRITE:
            self._add(path, _READ_WRITE_DEVICE)
        # Named semaphores and shared memory (multiprocessing, loky, torch's DataLoader) live
        # in /dev/shm: a step may make and use its own there, by a name it knows, but not
        # list the folder (no READ_DIR), so another step's names stay unguessed.
        self._add("/dev/shm", _SHARED_MEMORY)

    @staticmethod
    def key(rules: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
        """What a zygote caches its SystemRules by: the parts of `rules` they are made of."""
        return tuple(tuple(rules[name]) for name in ("private", "shared_read", "shared_write"))

    def _add(self, path: str, access: int) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, PermissionError):
            return  # /lib32 on a machine without it, a folder this user may not open
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        self.rules.append(_PathBeneathAttr(allowed_access=access, parent_fd=fd))


def step_rules(
    policy: SandboxPolicy, *, code_dir: str, inputs: Iterable[str], output_dir: str
) -> dict[str, Any] | None:
    """The rules for one step (JSON for the zygote and its child), None when sandboxing is off."""
    if policy.mode == "off":
        return None
    return {
        "private": list(policy.private),
        "shared_read": list(policy.read),
        "shared_write": list(policy.write),
        "read": [code_dir, *inputs],
        "write": [output_dir],
        "network": policy.network,
    }


def restrict(system: SystemRules, rules: dict[str, Any], keep_fds: Sequence[int]) -> None:
    """Sandbox this process for good (raises SandboxError, and then the step must not run).

    Closes every descriptor but 0, 1, 2 and `keep_fds` before the domain takes effect:
    Landlock checks new opens only, so a descriptor inherited from the zygote would be a
    way around it.
    """
    attr = system.rulesets[rules["network"]]
    ruleset = _check(
        _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0),
        "landlock_create_ruleset",
    )
    try:
        for rule in system.rules:
            _add_rule(ruleset, rule, "a system folder")
        # /proc/self is the process that opens it: this child, so it is opened here.
        for path in ("/proc/self", *rules["read"]):
            _allow(ruleset, path, _READ)
        for path in rules["write"]:
            _allow(ruleset, path, system.handled_fs)
        _close_inherited([*keep_fds, ruleset])
        _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_syscall(_SYS_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        _add_rule(ruleset, _PathBeneathAttr(allowed_access=access, parent_fd=fd), path)
    finally:
        os.close(fd)


def _add_rule(ruleset: int, rule: _PathBeneathAttr, what: str) -> None:
    _check(
        _syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0),
        f"landlock_add_rule({what})",
    )


def _close_inherited(keep_fds: Sequence[int]) -> None:
    low = 3
    for fd in sorted(set(keep_fds)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise SandboxError(errno, f"{what}: {os.strerror(errno)}")
    return result
