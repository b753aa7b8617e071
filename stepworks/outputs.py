"""Step outputs to files and files back to step inputs, by type (no Django here).

The worker's step child writes what a step returns with `write_output`, and loads what it
receives with `load_input`; the CLI client reads downloaded artifacts with `load_input` too.
pandas, numpy, plotly and matplotlib are never imported here: a value can only be one of
their types if its library is already in `sys.modules`, so the light zygote stays light.

Formats (`OUTPUT_FORMAT_VERSION` is part of the runtime fingerprint, so changing how a type
is written must bump it and invalidates cached results):

| value                         | file                | media type                          |
| ----------------------------- | ------------------- | ----------------------------------- |
| pandas DataFrame              | `.parquet`          | application/vnd.apache.parquet      |
| numpy ndarray                 | `.npy`              | application/x-npy                   |
| dict, list, int, float, bool, None | `.json`        | application/json                    |
| plotly Figure                 | `.plotly.json`      | application/vnd.plotly.v1+json      |
| matplotlib Figure             | `.png`              | image/png                           |
| str                           | `.txt`              | text/plain; charset=utf-8           |
| bytes, bytearray, memoryview  | `.bin`              | application/octet-stream            |
| pathlib.Path to a file        | that file           | guessed from its name               |
| pathlib.Path to a directory   | a copied folder     | inode/directory (kind "directory")  |
| anything else                 | `.pkl`              | application/x-python-pickle         |
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import pickle
import re
import shutil
import stat
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

OUTPUT_FORMAT_VERSION = 1

PARQUET = "application/vnd.apache.parquet"
NPY = "application/x-npy"
JSON = "application/json"
PLOTLY_JSON = "application/vnd.plotly.v1+json"
PNG = "image/png"
TEXT = "text/plain; charset=utf-8"
OCTET_STREAM = "application/octet-stream"
PICKLE = "application/x-python-pickle"
DIRECTORY = "inode/directory"

KIND_FILE = "file"
KIND_DIRECTORY = "directory"

# DECISIONS: previews read one batch, so a bounded row group bounds a preview's memory.
PARQUET_ROW_GROUP_ROWS = 65_536

# Our own formats, recognised when a step returns a Path to such a file, so it previews too.
# Types Python's own table lacks (it has no markdown before 3.13).
_OWN_SUFFIXES = {
    ".parquet": PARQUET,
    ".npy": NPY,
    ".md": "text/markdown",
    ".markdown": "text/markdown",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


_JSON_TYPES = (dict, list, bool, int, float)


class OutputError(ValueError):
    """A step's output cannot be stored in its format (the step fails with output_invalid)."""


@dataclass(frozen=True)
class OutputFile:
    """One serialised output: a file (or a folder when kind is "directory") and its type."""

    path: Path
    media_type: str
    kind: str = KIND_FILE


def write_output(value: Any, folder: Path, name: str) -> OutputFile:
    """Serialise `value` into `folder` as `name` + the format's suffix; raise OutputError."""
    if not _SAFE_NAME.fullmatch(name):
        raise OutputError(f"output name {name!r} is not a plain file name")
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
    try:
        return _write(value, folder, name)
    except OutputError:
        raise
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the worker's disk, not the value, is at fault
        raise OutputError(f"output {name!r} could not be written: {error}") from error
    except Exception as error:  # the libraries' own errors say what is wrong with the value
        kind = type(value).__name__
        raise OutputError(f"output {name!r} ({kind}) could not be written: {error}") from error


def _write(value: Any, folder: Path, name: str) -> OutputFile:
    if isinstance(value, Path):
        return _write_path(value, folder, name)
    if isinstance(value, str):
        target = folder / f"{name}.txt"
        target.write_text(value, encoding="utf-8")
        return OutputFile(target, TEXT)
    if isinstance(value, bytes | bytearray | memoryview):
        target = folder / f"{name}.bin"
        target.write_bytes(value)
        return OutputFile(target, OCTET_STREAM)
    if value is None or isinstance(value, _JSON_TYPES) or _is_numpy_scalar(value):
        target = folder / f"{name}.json"
        target.write_text(_to_json(value, name), encoding="utf-8")
        return OutputFile(target, JSON)

    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return _write_dataframe(value, folder, name)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        target = folder / f"{name}.npy"
        try:
            numpy.save(target, value, allow_pickle=False)
        except ValueError as error:  # object arrays need pickle, which .npy outputs never use
            raise OutputError(
                f"output {name!r} is a numpy array of dtype {value.dtype} that .npy can only "
                f"hold pickled; return a numeric array or a DataFrame ({error})"
            ) from error
        return OutputFile(target, NPY)
    plotly_base = sys.modules.get("plotly.basedatatypes")
    if plotly_base is not None and isinstance(value, plotly_base.BaseFigure):
        target = folder / f"{name}.plotly.json"
        target.write_text(value.to_json(), encoding="utf-8")
        return OutputFile(target, PLOTLY_JSON)
    matplotlib_figure = sys.modules.get("matplotlib.figure")
    if matplotlib_figure is not None and isinstance(value, matplotlib_figure.Figure):
        target = folder / f"{name}.png"
        value.savefig(target, format="png")
        return OutputFile(target, PNG)

    target = folder / f"{name}.pkl"
    try:
        with target.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise OutputError(f"output {name!r} cannot be pickled: {error}") from error
    return OutputFile(target, PICKLE)


def _write_dataframe(frame: Any, folder: Path, name: str) -> OutputFile:
    odd = [column for column in frame.columns if not isinstance(column, str)]
    if odd:
        # Parquet needs string column names; renaming them silently would change the data.
        raise OutputError(
            f"output {name!r}: a DataFrame stored as Parquet needs string column names, "
            f"not {odd[:5]!r}; rename them (e.g. frame.columns = frame.columns.astype(str))"
        )
    target = folder / f"{name}.parquet"
    frame.to_parquet(target, engine="pyarrow", row_group_size=PARQUET_ROW_GROUP_ROWS)
    return OutputFile(target, PARQUET)


def _write_path(source: Path, folder: Path, name: str) -> OutputFile:
    if source.is_dir():
        directory_files(source, name)  # refuses links and special files before any copy
        target = folder / name
        shutil.copytree(source, target, symlinks=True)
        return OutputFile(target, DIRECTORY, KIND_DIRECTORY)
    if not source.is_file():
        raise OutputError(f"output {name!r} is a path to nothing: {source}")
    suffix = ".plotly.json" if source.name.lower().endswith(".plotly.json") else source.suffix
    target = folder / f"{name}{suffix}"
    try:
        # A hard link costs nothing for a large file on the same filesystem (the usual case:
        # the step wrote it into its work folder); a copy otherwise.
        os.link(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)
    return OutputFile(target, guess_media_type(source.name))


def directory_files(root: Path, name: str) -> list[Path]:
    """The regular files under a directory output, sorted. A symlink, a device, a FIFO or a
    socket, or a file hard-linked from outside the folder, is refused by name (OutputError):
    the store must never read, and then serve, bytes from outside the step's own folder.
    The child checks a directory before it copies it; the worker checks again what it stores."""
    found: list[Path] = []
    names_of: dict[tuple[int, int], int] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for entry in sorted([*dirs, *files]):
            path = Path(folder) / entry
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise OutputError(
                    f"output {name!r}: {path.relative_to(root).as_posix()} is not a regular "
                    "file or a folder (a symlink, a device, a FIFO or a socket)"
                )
            key = (info.st_dev, info.st_ino)
            names_of[key] = names_of.get(key, 0) + 1
            found.append(path)
    for path in found:
        info = path.lstat()
        if info.st_nlink > names_of[(info.st_dev, info.st_ino)]:
            raise OutputError(
                f"output {name!r}: {path.relative_to(root).as_posix()} is a hard link to a "
                "file outside the output folder"
            )
    return sorted(found)


def guess_media_type(filename: str) -> str:
    """A file's media type from its name, the same on every host (system tables ignored)."""
    lower = filename.lower()
    if lower.endswith(".plotly.json"):
        return PLOTLY_JSON
    suffix = Path(lower).suffix
    if suffix in _OWN_SUFFIXES:
        return _OWN_SUFFIXES[suffix]
    guessed, _encoding = _mime_table().guess_type(filename, strict=False)
    return guessed or OCTET_STREAM


@cache
def _mime_table() -> mimetypes.MimeTypes:
    # Only Python's built-in table: /etc/mime.types differs between hosts, so a worker's
    # guess would otherwise depend on where it ran.
    return mimetypes.MimeTypes()


def _is_numpy_scalar(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.generic)


def _json_default(value: Any) -> Any:
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.generic):
            return value.item()
        if isinstance(value, numpy.ndarray):
            return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _to_json(value: Any, name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=_json_default, ensure_ascii=False)
    except ValueError as error:
        raise OutputError(
            f"output {name!r} holds NaN or infinity, which JSON cannot hold; replace them with None"
        ) from error
    except (TypeError, RecursionError) as error:
        raise OutputError(
            f"output {name!r} cannot be stored as JSON: {error}; return such values as "
            "outputs of their own"
        ) from error


def load_input(path: Path | str, media_type: str, kind: str = KIND_FILE) -> Any:
    """The value a downstream step receives for a stored output.

    The formats `write_output` produces come back as their type (a plotly figure as its
    JSON dict, a PNG as bytes); a directory comes as its Path, and a file of any other type
    (a step returned a Path to it) as its Path. Pickles are loaded only in a worker's step
    child, never in the web process.
    """
    path = Path(path)
    if kind == KIND_DIRECTORY:
        return path
    base = media_type.split(";", 1)[0].strip().lower()
    if base == PARQUET:
        import pandas

        return pandas.read_parquet(path)
    if base == NPY:
        import numpy

        return numpy.load(path, allow_pickle=False)
    if base in (JSON, PLOTLY_JSON):
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    if base == "text/plain":
        return path.read_text(encoding="utf-8")
    if base in (PNG, OCTET_STREAM):
        return path.read_bytes()
    if base == PICKLE:
        with path.open("rb") as handle:
            return pickle.load(handle)
    return path
