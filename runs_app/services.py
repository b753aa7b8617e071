"""Run-time writes that are more than one transition: rerun, rerun from a step, clone with
changes. Each starts a new run linked to the old one (lineage), through the scheduler.
Sweeps (at the end): create, extend, cancel and promote, starting runs the same way."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from artifacts.models import Artifact
from pipelines_app.models import InterfaceSource, ModuleVersion, PipelineVersion
from pipelines_app.services import (
    module_version_create,
    pipeline_version_clone,
    pipeline_version_create,
)
from runs_app import scheduler
from runs_app.models import (
    NOTE_MAX,
    RUN_TERMINAL,
    TAG_RE,
    Event,
    PipelineRun,
    RunListPrefs,
    RunTag,
    StepRun,
    StepStatus,
)
from workspaces.audit import audit_record
from workspaces.errors import DomainError, Problems
from workspaces.models import AuditVerb


def steps_forget(steps: QuerySet[StepRun], *, what: str, user: Any = None) -> int:
    """Forget the cached results of `steps` (a step run, a run's steps, a module version's):
    every succeeded step of the workspace with one of their cache keys stops being a reuse
    source, so the next run that needs one recomputes it. A reused step's key is its
    source's. History stays: the steps, their outputs and an event on each forgotten step
    saying who forgot it and why. Returns how many step runs were forgotten."""
    keyed = steps.exclude(cache_key="").filter(status__in=(StepStatus.SUCCEEDED, StepStatus.REUSED))
    pairs = set(keyed.values_list("workspace_id", "cache_key"))
    if not pairs:
        return 0
    match = Q()
    for workspace_id, key in pairs:
        match |= Q(workspace_id=workspace_id, cache_key=key)
    by = f" by {user.get_username()}" if user is not None else ""
    with transaction.atomic():
        sources = list(
            StepRun.objects.select_for_update()
            .filter(match, status=StepStatus.SUCCEEDED, reuse_forgotten_at__isnull=True)
            .only("pk", "run_id", "status", "attempt")
        )
        StepRun.objects.filter(pk__in=[s.pk for s in sources]).update(
            reuse_forgotten_at=timezone.now()
        )
        Event.objects.bulk_create(
            Event(
                run_id=s.run_id,
                step_id=s.pk,
                old_status=s.status,
                new_status=s.status,
                reason="forgotten",
                message=f"cached result forgotten{by} ({what}): later runs recompute it",
                attempt=s.attempt,
            )
            for s in sources
        )
    return len(sources)


def run_start(version: PipelineVersion, *, user: Any, how: str = "", **options: Any) -> PipelineRun:
    """Start a run of `version` as `user` (scheduler.run_create takes the `options`) and
    record it in the workspace's audit trail. `how` says what made it ("rerun of run 4",
    "workbench"); empty for a run started as such. The scheduler's transaction stays its
    own (it retries itself on a conflict only when it is the outermost one), so the entry
    is written just after it commits."""
    run = scheduler.run_create(version, user=user, **options)
    data = {"pipeline": version.ref, **({"how": how} if how else {})}
    audit_record(run.workspace_id, user, AuditVerb.RUN_STARTED, f"run {run.pk}", data)
    return run


@dataclass
class SourceRun:
    """What run_from_source did: the run, the module versions its steps now pin
    ([{"step", "ref", "created"}]), the pipeline version (and whether it is new), and the
    pipeline's newest run before this one (None for its first)."""

    run: PipelineRun
    modules: list[dict[str, Any]]
    version: PipelineVersion
    version_created: bool
    previous_run: int | None


def run_from_source(
    workspace: Any,
    pipeline_name: str,
    spec: Mapping[str, Any],
    modules: Mapping[str, Mapping[str, Any]],
    *,
    user: Any,
    message: str = "",
    params: Mapping[str, Any] | None = None,
    reuse: bool = True,
) -> SourceRun:
    """The edit-run loop in one call (`stepworks run FILE.yaml`): push the module of each
    step in `modules` ({step: {"name", "entrypoint", "digest", "files"?}}) as a new version
    only if its code changed, store `spec` with those steps pinned to them as the pipeline's
    next version only if a pin changed, and start a run of it.

    A module given by `digest` alone is the module's latest version when that version has
    this code digest (entrypoint included) and an interface read from the code; otherwise
    nothing is written and a DomainError (409, `module_files_needed`) names each such step's
    `modules.<step>.files`: the caller sends those files and asks again. A module given
    with `files` is pushed as module_version_create pushes it (unchanged code is a no-op)."""
    steps = spec.get("steps")
    if not isinstance(steps, Mapping):
        raise DomainError("invalid_spec", "A spec has a `steps` mapping.", {"spec": ["no steps"]})
    unknown = [step for step in modules if not isinstance(steps.get(step), Mapping)]
    if unknown:
        raise DomainError(
            "invalid_spec",
            "A module was given for a step the spec does not have.",
            {f"modules.{step}": ["no such step in the spec"] for step in unknown},
        )
    latest: dict[str, ModuleVersion] = {}
    for row in (
        ModuleVersion.objects.filter(
            module__workspace=workspace, module__name__in={m["name"] for m in modules.values()}
        )
        .select_related("module")
        .only("pk", "number", "code_digest", "interface_source", "module__name")
        .order_by("-number")
    ):
        latest.setdefault(row.module.name, row)

    def known(source: Mapping[str, Any]) -> ModuleVersion | None:
        found = latest.get(source["name"])
        if (
            found is not None
            and found.code_digest == source.get("digest")
            and found.interface_source == InterfaceSource.INFERRED
        ):
            return found
        return None

    missing = [step for step, m in modules.items() if "files" not in m and known(m) is None]
    if missing:
        raise DomainError(
            "module_files_needed",
            "Send the files of the modules whose code the server does not have.",
            {
                f"modules.{step}.files": [f"no latest version of {modules[step]['name']} has it"]
                for step in missing
            },
            status_code=409,
        )
    pinned = {name: dict(step) for name, step in steps.items()}
    pushed = []
    for step, source in modules.items():
        module = known(source) if "files" not in source else None
        created = False
        if module is None:
            before = latest.get(source["name"])
            module = module_version_create(
                workspace,
                source["name"],
                dict(source["files"]),
                source["entrypoint"],
                message,
                user=user,
            )
            created = before is None or module.pk > before.pk
        pinned[step]["module"] = module.ref
        pushed.append({"step": step, "ref": module.ref, "created": created})
    newest = (
        PipelineVersion.objects.filter(pipeline__workspace=workspace, pipeline__name=pipeline_name)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    version = pipeline_version_create(
        workspace, pipeline_name, {**spec, "steps": pinned}, message, user=user
    )
    previous = (
        PipelineRun.objects.filter(
            workspace=workspace,
            pipeline_version__pipeline_id=version.pipeline_id,
            archived_at__isnull=True,
        )
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    run = run_start(version, user=user, param_overrides=dict(params or {}), reuse=reuse)
    return SourceRun(run, pushed, version, version.pk > (newest or 0), previous)


def run_cancel(run: PipelineRun, *, user: Any) -> bool:
    """Ask the scheduler to cancel the run; recorded when it did (False: already over)."""
    canceled = scheduler.run_cancel(run.pk, by=user)
    if canceled:
        audit_record(run.workspace_id, user, AuditVerb.RUN_CANCELED, f"run {run.pk}")
    return canceled


def runs_delete(runs: QuerySet[PipelineRun], *, user: Any = None, why: str = "") -> int:
    """Delete finished, unpinned runs with their steps, events, logs and metrics, in one
    transaction; the artifacts they held are touched (released to the collector, which
    leaves them a grace period) and their steps stop being reuse sources at once. A run
    that others reused from stays deletable: those steps then say "reused from a deleted
    run". DomainError (409) naming the runs still going or pinned, and nothing deleted."""
    with transaction.atomic():
        rows = list(
            runs.select_for_update().only("pk", "status", "pinned", "workspace").order_by("pk")
        )
        going = [r.pk for r in rows if r.status not in RUN_TERMINAL]
        pinned = [r.pk for r in rows if r.pinned]
        if going:
            raise DomainError(
                "run_active",
                f"Run(s) {_ids(going)} have not finished: cancel them first.",
                {"runs": [f"run {pk} has not finished" for pk in going]},
                status_code=409,
            )
        if pinned:
            raise DomainError(
                "run_pinned",
                f"Run(s) {_ids(pinned)} are pinned (kept): unpin them first.",
                {"runs": [f"run {pk} is pinned" for pk in pinned]},
                status_code=409,
            )
        ids = [r.pk for r in rows]
        held = Q(producers__step__run_id__in=ids) | Q(consumers__step__run_id__in=ids)
        Artifact.objects.filter(held).update(touched_at=timezone.now())
        PipelineRun.objects.filter(pk__in=ids).delete()
        for workspace_id in sorted({r.workspace_id for r in rows}):
            mine = [r.pk for r in rows if r.workspace_id == workspace_id]
            data = {"runs": mine[:200], **({"why": why} if why else {})}
            audit_record(workspace_id, user, AuditVerb.RUNS_DELETED, f"{len(mine)} run(s)", data)
    return len(ids)


def runs_archive(runs: QuerySet[PipelineRun], *, archived: bool = True) -> int:
    """Archive runs (hidden from the runs list, kept whole) or bring them back."""
    return runs.update(archived_at=timezone.now() if archived else None)


def run_pin(run: PipelineRun, *, pinned: bool = True) -> None:
    PipelineRun.objects.filter(pk=run.pk).update(pinned=pinned)
    run.pinned = pinned


MAX_TAGS = 20
_TAG = re.compile(TAG_RE)


def _tag_names(values: list[str] | None, field: str, problems: Problems) -> list[str]:
    """The tags given, stripped and deduplicated in order; each bad one is a problem on
    `field`."""
    names = list(dict.fromkeys(v.strip() for v in values or [] if v.strip()))
    for name in names:
        if not _TAG.match(name):
            problems.add(
                field,
                f"{name[:60]!r}: a tag is 1-50 letters, digits, _ . : - "
                "(starting with a letter or digit)",
            )
    return names


def run_annotate(
    run: PipelineRun,
    *,
    tags: list[str] | None = None,
    add: list[str] | None = None,
    remove: list[str] | None = None,
    note: str | None = None,
    user: Any = None,
) -> dict[str, Any]:
    """Change what people say of a run: `tags` replaces the whole set, `add` and `remove`
    change it (applied after `tags`), `note` replaces the note; what is not given stays.
    Everything is checked before anything is written (a DomainError naming `tags`, `add`,
    `remove` or `note`). Returns what selectors.run_annotations reads."""
    problems = Problems()
    wanted = _tag_names(tags, "tags", problems) if tags is not None else None
    adding = _tag_names(add, "add", problems)
    removing = set(_tag_names(remove, "remove", problems))
    if note is not None and len(note) > NOTE_MAX:
        problems.add("note", f"at most {NOTE_MAX:,} characters, not {len(note):,}")
    if note is not None and "\x00" in note:  # PostgreSQL's text cannot hold it
        problems.add("note", "a note cannot hold a NUL character")
    problems.raise_if_any("invalid_annotation", "annotation")
    with transaction.atomic():
        # Locks the run: two people tagging it at once apply one after the other.
        locked = PipelineRun.objects.select_for_update().only("pk").get(pk=run.pk)
        have = list(RunTag.objects.filter(run=locked).values_list("name", flat=True))
        final = list(wanted if wanted is not None else have)
        final += [name for name in adding if name not in final]
        final = [name for name in final if name not in removing]
        if len(final) > MAX_TAGS:
            field = "tags" if wanted is not None and len(wanted) > MAX_TAGS else "add"
            raise DomainError(
                "invalid_annotation",
                "Too many tags.",
                {field: [f"at most {MAX_TAGS} tags on a run, not {len(final)}"]},
            )
        RunTag.objects.filter(run=locked).exclude(name__in=final).delete()
        RunTag.objects.bulk_create(
            [RunTag(run=locked, name=name, created_by=user) for name in final if name not in have]
        )
        if note is not None:
            PipelineRun.objects.filter(pk=run.pk).update(note=note)
            run.note = note
    return {"run": run.pk, "tags": sorted(final), "note": run.note}


def run_list_columns_set(
    user: Any, workspace: Any, *, metrics: list[str], params: list[str]
) -> None:
    """Remember the columns `user` picked for the workspace's runs list; none picked forgets
    them (the list shows its defaults again)."""
    if not metrics and not params:
        RunListPrefs.objects.filter(user=user, workspace=workspace).delete()
        return
    RunListPrefs.objects.update_or_create(
        user=user, workspace=workspace, defaults={"columns": {"metrics": metrics, "params": params}}
    )


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:10])) + (" …" if len(ids) > 10 else "")


def run_rerun(run: PipelineRun, *, from_step: str | None = None, user: Any = None) -> PipelineRun:
    """A new run of the same version and overrides, reusing what succeeded; with
    `from_step`, that step and everything downstream of it run again (forced)."""
    how = f"rerun of run {run.pk}" + (f" from step {from_step}" if from_step else "")
    return run_start(
        run.pipeline_version,
        user=user,
        how=how,
        param_overrides=run.param_overrides,
        reuse=run.reuse,
        force_steps=[from_step] if from_step else (),
        rerun_of=run,
    )


def run_clone(
    run: PipelineRun,
    *,
    changes: dict[str, Any] | None = None,
    param_overrides: dict[str, Any] | None = None,
    message: str = "",
    user: Any = None,
) -> PipelineRun:
    """A run of the same pipeline with other module versions or params.

    `changes` ({step: {"module"?, "params"?, "inputs"?}}) makes a new pipeline version whose
    parent is the run's; `param_overrides` apply on top. Unchanged steps are reused.
    """
    version = run.pipeline_version
    if changes:
        version = pipeline_version_clone(
            version, changes, message or f"cloned from run {run.pk}", user=user
        )
    overrides = dict(run.param_overrides)
    for step, change in (changes or {}).items():
        for key in list(overrides):
            # A changed module or param replaces the old run's override of it.
            replaced = "module" in change or key.partition(".")[2] in change.get("params", {})
            if key.partition(".")[0] == step and replaced:
                del overrides[key]
    overrides.update(param_overrides or {})
    return run_start(
        version,
        user=user,
        how=f"clone of run {run.pk}",
        param_overrides=overrides,
        reuse=run.reuse,
        cloned_from=run,
    )
