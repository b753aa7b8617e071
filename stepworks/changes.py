"""What one module version changes against another, in words (pure: the CLI and the
server's pages both say it so)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def interface_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What a new module interface changes for the steps that used the old one: inputs
    and outputs removed or added, params added (required?), removed, retyped or with a new
    default. The module diff page, the push answer and `stepworks module diff` say it in
    these words."""
    changes = []
    old_inputs, new_inputs = set(old.get("inputs", [])), set(new.get("inputs", []))
    old_outputs, new_outputs = set(old.get("outputs", [])), set(new.get("outputs", []))
    old_params, new_params = old.get("params", {}), new.get("params", {})
    changes += [f"input {name!r} removed" for name in sorted(old_inputs - new_inputs)]
    changes += [f"input {name!r} added" for name in sorted(new_inputs - old_inputs)]
    changes += [f"output {name!r} removed" for name in sorted(old_outputs - new_outputs)]
    changes += [f"output {name!r} added" for name in sorted(new_outputs - old_outputs)]
    for name in sorted(set(old_params) | set(new_params)):
        before, after = old_params.get(name), new_params.get(name)
        if before is None:
            changes.append(f"param {name!r} added{' (required)' if after.get('required') else ''}")
        elif after is None:
            changes.append(f"param {name!r} removed")
        elif before.get("type") != after.get("type"):
            changes.append(f"param {name!r}: type {before.get('type')} -> {after.get('type')}")
        elif (before.get("default"), before.get("required")) != (
            after.get("default"),
            after.get("required"),
        ):
            changes.append(
                f"param {name!r}: default {before.get('default')!r} -> {after.get('default')!r}"
            )
    return changes
