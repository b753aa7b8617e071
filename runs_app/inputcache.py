"""A worker host's cache of inputs from a remote store (S3), by digest, under a size cap.

Every worker process and thread of a host shares one folder (`<data dir>/worker-cache/inputs/`):
an input is downloaded once per digest, to a temp file, hashed as it arrives (bytes that do
not hash to their name are refused), made read-only and renamed into place.

A step gets a hard link to the cached file in its own scratch folder: that path is what the
step reads and what its sandbox grants, and nothing else of the cache. Evicting an entry
then never pulls a file from under a running step (its link keeps the bytes until the step's
folder goes), and a step cannot reach another step's inputs through the cache.

The cap is kept least-recently-used first: each use sets the entry's mtime; after a download
the folder is summed and the oldest entries go until it is under the cap. Locks are flock(2)
on one lock file per digest, so they hold between threads and processes alike: a use takes
its digest's lock to look, download and link; the evictor takes an entry's lock without
waiting and skips an entry in use. The evictor deletes a lock file while holding it, so a
locker that opened it before checks that the path is still the file it locked.

No Django here: the worker passes the opener of an artifact's bytes (runs_app/worker.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK = 1024 * 1024
LOCKS = ".locks"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 3600.0  # a temp file this old was left by a crashed download
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evicted: int = 0
    evicted_bytes: int = 0

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


class InputCache:
    """The cache in `root` (see the module docstring); one instance per folder and process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stats = CacheStats()
        self._stats_lock = threading.Lock()

    def provide(
        self,
        sha256: str,
        size: int,
        source: Callable[[], IO[bytes]],
        target: Path,
        cap_bytes: int,
    ) -> Path:
        """`target`, a read-only hard link to the cached bytes of `sha256` (downloaded from
        `source()` when not cached); then, if it downloaded, the cache is brought under
        `cap_bytes`."""
        if not _DIGEST.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256[:80]!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / LOCKS).mkdir(exist_ok=True)
        entry = self.root / sha256
        with self._locked(sha256) as held:
            assert held  # a blocking lock is always taken
            if entry.exists():
                downloaded = False
                with contextlib.suppress(PermissionError):
                    os.utime(entry)  # most recently used
            else:
                self._download(sha256, size, source, entry)
                downloaded = True
            _link_or_copy(entry, target)
        with self._stats_lock:
            if downloaded:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
        if downloaded:
            self.evict(cap_bytes)
        return target

    def evict(self, cap_bytes: int) -> int:
        """Delete least recently used entries not in use until the cache holds at most
        `cap_bytes`; returns the bytes freed. One evictor at a time per folder (another
        that finds it busy returns 0: that one is at it)."""
        with self._locked(".evict", blocking=False, removable=False) as held:
            if not held:
                return 0
            entries, total = self._entries()
            freed = 0
            for _mtime, size, sha256 in sorted(entries):
                if total <= cap_bytes:
                    break
                if self._evict_one(sha256):
                    total -= size
                    freed += size
                    with self._stats_lock:
                        self.stats.evicted += 1
                        self.stats.evicted_bytes += size
            return freed

    def size(self) -> int:
        return self._entries()[1]

    def _evict_one(self, sha256: str) -> bool:
        with self._locked(sha256, blocking=False) as held:
            if not held:  # in use right now: it stays
                return False
            with contextlib.suppress(FileNotFoundError):
                (self.root / sha256).unlink()
            # Still holding it: a locker that opened this file before sees it is gone.
            with contextlib.suppress(FileNotFoundError):
                (self.root / LOCKS / sha256).unlink()
            return True

    def _entries(self) -> tuple[list[tuple[int, int, str]], int]:
        """[(mtime_ns, size, digest)] of the cached entries, and their total size; stale
        temp files of crashed downloads are removed on the way."""
        entries = []
        total = 0
        stale = time.time() - STALE_TEMP_S
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return [], 0
        for item in listing:
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if _DIGEST.fullmatch(item.name):
                entries.append((info.st_mtime_ns, info.st_size, item.name))
                total += info.st_size
            elif item.name.startswith(TEMP_PREFIX) and info.st_mtime < stale:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.path)
        return entries, total

    def _download(
        self, sha256: str, size: int, source: Callable[[], IO[bytes]], entry: Path
    ) -> None:
        temp = self.root / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{sha256}"
        digest = hashlib.sha256()
        written = 0
        try:
            with source() as src, open(temp, "wb") as out:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    written += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256 or written != size:
                raise OSError(
                    errno.EIO,
                    f"input {sha256[:12]} from the store is {written} bytes hashing to "
                    f"{digest.hexdigest()[:12]}, not {size} bytes hashing to its name",
                )
            os.chmod(temp, 0o444)  # steps must not edit what other steps read
            os.replace(temp, entry)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self, name: str, blocking: bool = True, removable: bool = True) -> Iterator[bool]:
        """Hold the flock of `name` (True), or, not blocking, False when someone holds it."""
        path = self.root / LOCKS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                yield False
                return
            if not removable or _same_file(path, fd):
                break
            os.close(fd)  # an evictor removed it between our open and our lock: again
        try:
            yield True
        finally:
            os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _link_or_copy(entry: Path, target: Path) -> None:
    """A hard link to the entry at `target` (a copy where the folders' file system will not
    link them: another mount, no hard links)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(entry, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(entry, target)
        os.chmod(target, 0o444)


_caches: dict[Path, InputCache] = {}
_caches_lock = threading.Lock()


def input_cache(root: Path) -> InputCache:
    """This process's cache of the folder `root` (one, so its counters add up)."""
    with _caches_lock:
        cache = _caches.get(root)
        if cache is None:
            cache = _caches[root] = InputCache(root)
        return cache
