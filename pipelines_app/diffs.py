"""Text diffs of module code, pure (no ORM): the module diff page and the run compare use them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

MAX_DIFF_LINES = 2000  # per file or output: a diff longer than this is cut, and says so


def text_diff(
    before: str | None, after: str | None, label_a: str, label_b: str, context: int = 3
) -> dict[str, Any]:
    """Pure: a unified diff as {"lines": [{"kind": add|del|hunk|same, "text"}], "truncated"}."""
    diff = difflib.unified_diff(
        (before or "").splitlines(),
        (after or "").splitlines(),
        label_a,
        label_b,
        n=context,
        lineterm="",
    )
    lines: list[dict[str, str]] = []
    truncated = False
    for index, line in enumerate(diff):
        if index < 2:
            continue  # the ---/+++ header: the page names both sides itself
        if len(lines) >= MAX_DIFF_LINES:
            truncated = True
            break
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        lines.append({"kind": kind, "text": line})
    return {"lines": lines, "truncated": truncated}


def files_diff(
    a_files: Mapping[str, str], b_files: Mapping[str, str], label_a: str, label_b: str
) -> list[dict[str, Any]]:
    """Pure: a unified diff per changed file of two module versions' `files`:
    [{"path", "status": added|removed|changed, "lines", "truncated"}]."""
    out = []
    for path in sorted(set(a_files) | set(b_files)):
        before, after = a_files.get(path), b_files.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        diff = text_diff(before, after, f"{label_a}/{path}", f"{label_b}/{path}")
        out.append({"path": path, "status": status, **diff})
    return out
