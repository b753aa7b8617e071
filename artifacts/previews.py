"""Previews of artifacts by media type; each reads a bounded head, whatever the size.

The web process never unpickles: pickles are download-only, and HTML, SVG and plotly
figures are only ever rendered inside the sandboxed frame.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from artifacts.models import Artifact, ArtifactKind
from artifacts.store import (
    FRAME_TYPES,
    INLINE_IMAGE_TYPES,
    NPY_TYPE,
    PARQUET_TYPE,
    PICKLE_TYPE,
    PLOTLY_TYPE,
    ArtifactMissing,
    artifact_open,
    directory_manifest,
    media_base,
)

# Previews read a bounded head, whatever the artifact's size.
PREVIEW_ROWS = 20
PREVIEW_TEXT_BYTES = 64 * 1024
PREVIEW_JSON_BYTES = 1024 * 1024
PREVIEW_JSON_NODES = 2000
PREVIEW_FRAME_BYTES = 8 * 1024 * 1024  # plotly/HTML/SVG served into the sandboxed frame
PREVIEW_CELL_CHARS = 200


def _read_head(artifact: Artifact, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes from the start, and whether there was more."""
    with artifact_open(artifact) as handle:
        data = handle.read(limit + 1)
    return data[:limit], len(data) > limit


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


def _parquet_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    with artifact_open(artifact) as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=1 << 20)
        schema = parquet.schema_arrow
        total = parquet.metadata.num_rows
        head: list[list[str]] = []
        for batch in parquet.iter_batches(batch_size=rows):
            columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            head = [[_cell(col[r]) for col in columns] for r in range(batch.num_rows)]
            break  # one batch: the head, never the whole file
    return {
        "kind": "table",
        "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        "rows": head,
        "row_count": total,
        "row_count_exact": True,
    }


def _csv_type(values: list[str]) -> str:
    present = [v for v in values if v != ""]
    if not present:
        return "empty"
    for kind, parse in (("int", int), ("float", float)):
        try:
            for v in present:
                parse(v)
            return kind
        except ValueError:
            continue
    return "str"


def _csv_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if more and lines:
        lines = lines[:-1]  # the last line may be cut in the middle
    parsed = list(csv.reader(io.StringIO("\n".join(lines))))
    header, body = (parsed[0], parsed[1:]) if parsed else ([], [])
    head = body[:rows]
    types = [_csv_type([r[i] if i < len(r) else "" for r in head]) for i in range(len(header))]
    return {
        "kind": "table",
        "columns": [{"name": _cell(n), "type": t} for n, t in zip(header, types, strict=False)],
        "rows": [[_cell(v) for v in r] for r in head],
        # Exact only when the whole file was read; otherwise a lower bound.
        "row_count": len(body),
        "row_count_exact": not more,
    }


def _npy_preview(artifact: Artifact, rows: int) -> dict[str, Any]:
    import numpy as np
    from numpy.lib import format as npy_format

    with artifact_open(artifact) as handle:
        version = npy_format.read_magic(handle)
        # The header is a Python literal read with ast.literal_eval: no pickle involved.
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
        preview: dict[str, Any] = {"kind": "array", "shape": list(shape), "dtype": str(dtype)}
        if dtype.hasobject or fortran or len(shape) > 2:
            return preview
        width = shape[1] if len(shape) == 2 else 1
        count = min(rows, shape[0] if shape else 1) * width
        values = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    if len(shape) == 2:
        preview["rows"] = [
            [_cell(v) for v in values[i * width : (i + 1) * width]]
            for i in range(len(values) // max(width, 1))
        ]
    else:
        preview["rows"] = [[_cell(v)] for v in values]
    return preview


def json_tree(value: Any, budget: list[int] | None = None, key: str = "") -> dict[str, Any]:
    """A JSON value as nested nodes for a `<details>` tree, at most PREVIEW_JSON_NODES."""
    budget = budget if budget is not None else [PREVIEW_JSON_NODES]
    budget[0] -= 1
    if isinstance(value, dict | list):
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        children = []
        for child_key, child in items:
            if budget[0] <= 0:
                break
            children.append(json_tree(child, budget, str(child_key)))
        return {
            "key": key,
            "type": "object" if isinstance(value, dict) else "array",
            "size": len(items),
            "children": children,
            "hidden": len(items) - len(children),
        }
    shown = json.dumps(value, ensure_ascii=False)
    return {"key": key, "type": "value", "value": _cell(shown)}


def _markdown_html(text: str) -> str:
    """Markdown -> HTML with raw HTML off, then sanitised by nh3 (links get rel=noopener)."""
    import nh3
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).render(text)
    return nh3.clean(rendered, url_schemes={"http", "https", "mailto"})


def artifact_preview(artifact: Artifact, rows: int = PREVIEW_ROWS) -> dict[str, Any]:
    """What the artifact page shows, by media type; reads a bounded head only.

    {"kind": "table" | "array" | "image" | "json" | "text" | "markdown" | "frame" |
    "directory" | "download_only" | "none", ...}. Never unpickles; HTML, SVG and plotly
    figures get "frame" (rendered only in the sandboxed iframe).
    """
    try:
        return _preview(artifact, media_base(artifact.media_type), rows)
    except ArtifactMissing as missing:
        return {"kind": "missing", "message": str(missing)}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {"kind": "error", "message": f"{type(error).__name__}: {error}"[:300]}
    except Exception as error:  # pyarrow's errors and friends: a preview never breaks a page
        return {"kind": "error", "message": f"{type(error).__name__}: {error}"[:300]}


def _preview(artifact: Artifact, base: str, rows: int) -> dict[str, Any]:
    if artifact.kind == ArtifactKind.DIRECTORY:
        return {"kind": "directory", "files": directory_manifest(artifact)[:500]}
    readers: dict[str, Callable[[], dict[str, Any]]] = {
        PICKLE_TYPE: lambda: {"kind": "download_only"},
        PARQUET_TYPE: lambda: _parquet_preview(artifact, rows),
        NPY_TYPE: lambda: _npy_preview(artifact, rows),
        "text/csv": lambda: _csv_preview(artifact, rows),
        "text/tab-separated-values": lambda: _csv_preview(artifact, rows),
        "text/markdown": lambda: _markdown_preview(artifact),
    }
    if base in readers:
        return readers[base]()
    if base in INLINE_IMAGE_TYPES:
        return {"kind": "image"}
    if base == PLOTLY_TYPE or base in FRAME_TYPES:
        if artifact.size > PREVIEW_FRAME_BYTES:
            return {"kind": "too_large", "limit": PREVIEW_FRAME_BYTES}
        return {"kind": "frame"}
    if base == "application/json" or base.endswith("+json"):
        return _json_preview(artifact)
    if base.startswith("text/"):
        return _text_preview(artifact)
    return {"kind": "none"}


def _text_preview(artifact: Artifact) -> dict[str, Any]:
    data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
    return {"kind": "text", "text": data.decode("utf-8", "replace"), "truncated": more}


def _json_preview(artifact: Artifact) -> dict[str, Any]:
    if artifact.size > PREVIEW_JSON_BYTES:
        return _text_preview(artifact)
    data, _ = _read_head(artifact, PREVIEW_JSON_BYTES)
    return {"kind": "json", "tree": json_tree(json.loads(data))}


def _markdown_preview(artifact: Artifact) -> dict[str, Any]:
    data, more = _read_head(artifact, PREVIEW_TEXT_BYTES)
    return {
        "kind": "markdown",
        "html": _markdown_html(data.decode("utf-8", "replace")),
        "truncated": more,
    }


def artifact_frame_bytes(artifact: Artifact) -> bytes:
    """The bytes the sandboxed frame shows (bounded); the caller sets the sandbox CSP."""
    data, _ = _read_head(artifact, PREVIEW_FRAME_BYTES)
    return data
