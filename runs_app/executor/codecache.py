"""Module versions' source files on a worker's disk, written once per code digest.

A code folder is immutable once in place (its name is the digest of its content), so steps
of the same version share it and a worker materialises it once. It is written into a temp
folder beside its final name and renamed into place: a reader sees no folder or the whole
one, and of two materialisers racing, the loser drops its copy and uses the winner's.

It is never trusted blindly: every use checks it. A folder this process wrote or checked
must still stat as it did (inode, size, mtime and ctime of every file: a write, a chmod or
a utime changes the ctime, which no unprivileged process can set back); one it has not
seen (another worker process wrote it, or this one restarted) must hold exactly the
version's files and their own bytecode. A folder that does not check is set aside and
written again, never run: a step that edited another version's code (issue 10) changes
nothing but its own run.
"""

from __future__ import annotations

import compileall
import errno
import importlib.util
import marshal
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

_DIGEST = re.compile(r"[A-Za-z0-9_.-]{8,128}")
# {folder: {relative path: (inode, size, mtime, ctime)}} of the folders this process wrote or
# checked.
Stats = dict[str, tuple[int, ...]]
_KNOWN: dict[Path, Stats] = {}
_KNOWN_LOCK = threading.Lock()


def materialise_code(files: Mapping[str, str | bytes], digest: str, cache_root: Path) -> Path:
    """The folder `cache_root/<digest>/` holding `files` ({relative path: content})."""
    if not _DIGEST.fullmatch(digest) or digest.startswith("."):
        raise ValueError(f"not a code digest: {digest!r}")
    target = Path(cache_root) / digest
    if target.is_dir():
        if _intact(target, files):
            return target
        _set_aside(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:16]}-", dir=target.parent))
    try:
        for relative, content in files.items():
            path = temporary / _safe_relative(relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode("utf-8") if isinstance(content, str) else content
            with path.open("wb") as handle:
                handle.write(data)
                handle.flush()
                # A cache entry is trusted forever: after a crash it must not be half there.
                os.fsync(handle.fileno())
            path.chmod(0o444)  # a step must not edit code the next step of its version runs
        # Bytecode now, once, instead of a compile in every step child (which, being
        # short-lived, may not write it back, e.g. under PYTHONDONTWRITEBYTECODE).
        compileall.compile_dir(temporary, ddir=str(target), quiet=2, workers=1)
        temporary.chmod(0o755)
        os.rename(temporary, target)
        with _KNOWN_LOCK:
            _KNOWN[target] = _stats(target)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        lost_race = error.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir()
        if not lost_race:
            raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def _safe_relative(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or any(p in ("..", "", ".") for p in path.parts):
        raise ValueError(f"a module file path must be relative and plain: {relative!r}")
    return path


def _stats(folder: Path) -> Stats:
    """{relative path: (inode, size, mtime, ctime)} of every file under `folder`; anything
    but a regular file or a folder (a symlink, say) gets a mark no check accepts."""
    found: Stats = {}
    pending = [("", os.fspath(folder))]
    while pending:
        prefix, path = pending.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                relative = prefix + entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    pending.append((relative + "/", entry.path))
                elif stat.S_ISREG(info.st_mode):
                    found[relative] = (
                        info.st_ino,
                        info.st_size,
                        info.st_mtime_ns,
                        info.st_ctime_ns,
                    )
                else:
                    found[relative] = (-1,)
    return found


def _intact(target: Path, files: Mapping[str, str | bytes]) -> bool:
    current = _stats(target)
    with _KNOWN_LOCK:
        known = _KNOWN.get(target)
    if known is not None:
        return current == known
    if not _holds_exactly(target, files, current):
        return False
    with _KNOWN_LOCK:
        _KNOWN[target] = current
    return True


def _holds_exactly(target: Path, files: Mapping[str, str | bytes], current: Stats) -> bool:
    """The version's files, byte for byte, and no other file but their own bytecode."""
    allowed: set[str] = set()
    for relative, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        name = _safe_relative(relative).as_posix()
        if len(current.get(name, ())) != 4 or (target / name).read_bytes() != data:
            return False
        allowed.add(name)
        if name.endswith(".py"):
            source = target / name
            cached = Path(importlib.util.cache_from_source(str(source)))
            pyc = cached.relative_to(target).as_posix()
            if pyc in current and not _bytecode_of(cached, source, data):
                return False
            allowed.add(pyc)
    return set(current) <= allowed


def _bytecode_of(cached: Path, source: Path, data: bytes) -> bool:
    """Whether a .pyc the step child would load (its header matches the source, see
    child._code_of) holds the code of that source; one it would not load is harmless."""
    raw = cached.read_bytes()
    info = source.stat()
    current_header = (
        len(raw) > 16
        and raw[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(raw[4:8], "little") == 0
        and int.from_bytes(raw[8:12], "little") == int(info.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(raw[12:16], "little") == info.st_size & 0xFFFFFFFF
    )
    if not current_header:
        return True
    try:
        loaded = marshal.loads(memoryview(raw)[16:])
    except (EOFError, ValueError, TypeError):
        return False
    return bool(loaded == compile(data, str(source), "exec", dont_inherit=True))


def _set_aside(target: Path) -> None:
    """Move a folder that did not check out of the way (renaming is atomic), then delete it."""
    with _KNOWN_LOCK:
        _KNOWN.pop(target, None)
    aside = target.parent / f".tmp-stale-{target.name[:16]}-{os.getpid()}-{threading.get_ident()}"
    try:
        os.rename(target, aside)
    except FileNotFoundError:
        return  # another materialiser set it aside first
    shutil.rmtree(aside, ignore_errors=True)
