"""The workbench: edit one step of a finished run in the browser and run it again.

`inspect` re-reads an edited module's interface from its text (ast only, never executed),
for the editor as you type. `try_edit` saves the edit as a new module version and starts a
clone of the run in which that step and everything downstream of it are recomputed; the
steps upstream are reused from their pinned outputs. The clone runs a pipeline version of
origin "workbench", which never becomes the pipeline's latest. `keep` makes that spec the
pipeline's next mainline version.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from pipelines_app.interfaces import inspect_module
from pipelines_app.models import InterfaceSource, ModuleVersion, PipelineVersion, VersionOrigin
from pipelines_app.services import (
    module_version_create,
    pipeline_version_clone,
    pipeline_version_create,
)
from pipelines_app.specs import editable_spec
from runs_app.models import RUN_TERMINAL, PipelineRun, RunStatus, StepRun
from runs_app.services import run_start
from workspaces.errors import DomainError

_LINE = re.compile(r"\bline (\d+)\b")


def is_workbench_run(run: PipelineRun) -> bool:
    return bool(
        run.cloned_from_id is not None and run.pipeline_version.origin == VersionOrigin.WORKBENCH
    )


def explicit_interface(version: ModuleVersion) -> dict[str, Any] | None:
    """The interface an edit keeps: a version pushed with an explicit one keeps it (its
    code cannot say it); an inferred one is read again from the edited code."""
    if version.interface_source == InterfaceSource.EXPLICIT:
        return dict(version.interface)
    return None


def inspect(version: ModuleVersion, files: Any) -> dict[str, Any]:
    """The interface `files` (edited text of `version`'s module) declare, or the problems
    that stop it, each with the file and line it points at when it names them."""
    try:
        found = inspect_module(files, version.entrypoint, explicit_interface(version))
    except DomainError as error:
        return {"ok": False, "interface": None, "warnings": [], "problems": problems_of(error)}
    return {
        "ok": True,
        "interface": found.as_interface(),
        "warnings": list(found.warnings),
        "problems": [],
    }


def problems_of(error: DomainError) -> list[dict[str, Any]]:
    """A DomainError's reasons as a list, each with the file and line it names, if any."""
    fields = error.fields or {"non_field_errors": [error.message]}
    problems = []
    for field, reasons in fields.items():
        path = field.removeprefix("files.") if field.startswith("files.") else None
        for reason in reasons:
            line = _LINE.search(reason)
            problems.append(
                {
                    "field": field,
                    "file": path,
                    "line": int(line.group(1)) if line else None,
                    "message": reason,
                }
            )
    return problems


def check_finished(run: PipelineRun) -> None:
    if run.status not in RUN_TERMINAL:
        raise DomainError(
            "run_not_finished",
            f"Run {run.pk} is still {run.status}: edit and rerun a step once it has ended.",
            status_code=409,
        )


def try_edit(
    run: PipelineRun,
    step: StepRun,
    files: dict[str, str],
    params: dict[str, Any],
    *,
    user: Any = None,
    message: str = "",
) -> PipelineRun:
    """Save `files` as the next version of `step`'s module (the same code is not saved
    twice) and start a clone of `run` with that version and `params` ({param: value},
    only those changed) for the step, which runs again with everything downstream of it;
    upstream steps are reused. The run's param overrides carry over. All of it is written,
    or nothing (a new interface that breaks the pipeline is a DomainError naming the
    field)."""
    check_finished(run)
    old = step.module_version
    note = message or f"edited in the workbench from run {run.pk}, step {step.name}"
    with transaction.atomic():
        new = module_version_create(
            run.workspace,
            old.module.name,
            files,
            old.entrypoint,
            message=note,
            interface=explicit_interface(old),
            user=user,
            parent=old,
        )
        change: dict[str, Any] = {"module": new.ref}
        if params:
            change["params"] = params
        version = pipeline_version_clone(
            run.pipeline_version,
            {step.name: change},
            f"workbench: {step.name} {old.ref} -> {new.ref} (run {run.pk})",
            user=user,
            origin=VersionOrigin.WORKBENCH,
        )
        # The run's overrides stay, but for the params the edit changes or no longer has.
        declared = new.interface.get("params", {})
        overrides = {
            key: value
            for key, value in run.param_overrides.items()
            if key.partition(".")[0] != step.name
            or (key.partition(".")[2] in declared and key.partition(".")[2] not in params)
        }
        return run_start(
            version,
            user=user,
            how=f"workbench edit of run {run.pk}, step {step.name}",
            param_overrides=overrides,
            reuse=True,
            force_steps=[step.name],
            cloned_from=run,
        )


def keep(run: PipelineRun, *, user: Any = None) -> PipelineVersion:
    """Make a succeeded workbench run's spec the pipeline's next version (parent: the
    version the edited run ran), so `latest` pins the edit. A spec that is already the
    latest returns that version."""
    if not is_workbench_run(run):
        raise DomainError(
            "not_a_workbench_run", f"Run {run.pk} was not started from the workbench."
        )
    if run.status != RunStatus.SUCCEEDED:
        raise DomainError(
            "run_not_succeeded",
            f"Run {run.pk} is {run.status}: only a run that succeeded can be kept.",
            status_code=409,
        )
    tried = run.pipeline_version
    base = tried.parent or tried
    return pipeline_version_create(
        run.workspace,
        tried.pipeline.name,
        editable_spec(tried.spec),
        f"kept from the workbench: run {run.pk} ({tried.message})",
        user=user,
        parent=base,
        origin=VersionOrigin.USER,
    )
