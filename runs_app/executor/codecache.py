"""Module versions' source files on a worker's disk, written once per code digest.

A code folder is immutable once in place (its name is the digest of its content), so steps
of the same version share it and a worker materialises it once. It is written into a temp
folder beside its final name and renamed into place: a reader sees no folder or the whole
one, and of two materialisers racing, the loser drops its copy and uses the winner's.
"""

from __future__ import annotations

import compileall
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

_DIGEST = re.compile(r"[A-Za-z0-9_.-]{8,128}")


def materialise_code(files: Mapping[str, str | bytes], digest: str, cache_root: Path) -> Path:
    """The folder `cache_root/<digest>/` holding `files` ({relative path: content})."""
    if not _DIGEST.fullmatch(digest) or digest.startswith("."):
        raise ValueError(f"not a code digest: {digest!r}")
    target = Path(cache_root) / digest
    if target.is_dir():
        return target
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
