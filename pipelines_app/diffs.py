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


def steps_diff(
    a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Pure: two {step: {"module", "params", "inputs", "code_digest"?}} -> {"only_a",
    "only_b", "changed": [{"name", "changes": [text]}], "unchanged"}. A step changed when
    its module version, its params or its input bindings differ."""
    changed, unchanged = [], []
    for name, sa in a.items():
        sb = b.get(name)
        if sb is None:
            continue
        changes = []
        if sa.get("module") != sb.get("module"):
            digests = sa.get("code_digest"), sb.get("code_digest")
            same = " (same code)" if digests[0] and digests[0] == digests[1] else ""
            changes.append(f"module {sa.get('module')} → {sb.get('module')}{same}")
        pa, pb = sa.get("params") or {}, sb.get("params") or {}
        differing = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
        if differing:
            changes.append("params " + ", ".join(differing))
        ia, ib = sa.get("inputs") or {}, sb.get("inputs") or {}
        for key in sorted(set(ia) | set(ib)):
            if ia.get(key) != ib.get(key):
                changes.append(f"input {key}: {ia.get(key) or '—'} → {ib.get(key) or '—'}")
        if changes:
            changed.append({"name": name, "changes": changes})
        else:
            unchanged.append(name)
    return {
        "only_a": [name for name in a if name not in b],
        "only_b": [name for name in b if name not in a],
        "changed": changed,
        "unchanged": unchanged,
    }
