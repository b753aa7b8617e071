"""Design-time writes: workspaces, members, module, pipeline and dataset versions.

Each function is one `transaction.atomic()`; slow work (reading files, inspecting code,
hashing, storing bytes) happens before it. A rejected call raises DomainError and writes
nothing. Versions are only ever created, never updated.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

from django.db import transaction

from artifacts.store import artifact_store_bytes, artifact_store_file
from pipelines_app.interfaces import inspect_module
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    InterfaceSource,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
    VersionOrigin,
)
from pipelines_app.selectors import newer_modules
from pipelines_app.specs import (
    NAME_RE,
    Catalogue,
    ModuleInfo,
    editable_spec,
    parse_spec,
    referenced_names,
    render_spec_yaml,
    resolve_spec,
)
from workspaces.audit import audit_record
from workspaces.conf import engine
from workspaces.errors import DomainError
from workspaces.models import AuditVerb, Workspace


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DomainError(
            "invalid_name",
            f"{name!r} is not a valid {what} name.",
            {"name": ["lowercase letters, digits, '_' and '-', starting with a letter or digit"]},
        )


# --- workspaces and members -------------------------------------------------------------------


def module_code_digest(files: Mapping[str, str], entrypoint: str) -> str:
    """sha256 over sorted `relpath\\0sha256(bytes)` lines plus `entrypoint\\0<entrypoint>`."""
    lines = sorted(
        f"{path}\0{hashlib.sha256(text.encode('utf-8')).hexdigest()}"
        for path, text in files.items()
    )
    lines.append(f"entrypoint\0{entrypoint}")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _check_source_size(files: Any) -> None:
    if not isinstance(files, Mapping):
        return  # inspection names the problem
    limit = engine().max_source_bytes
    size = sum(
        len(text.encode("utf-8", "surrogateescape"))
        for text in files.values()
        if isinstance(text, str)
    )
    if size > limit:
        raise DomainError(
            "invalid_module",
            "The module's files are too large.",
            {"files": [f"{size} bytes of source; the limit is {limit}"]},
        )


_Line = TypeVar("_Line", Module, Pipeline, Dataset)


def _locked_line(model: type[_Line], workspace: Workspace, name: str, user: Any) -> _Line:
    """The Module/Pipeline/Dataset row `name`, created on first push, locked (in a transaction).

    The lock serialises concurrent pushes to one line on Postgres, so numbers stay gapless.
    """
    defaults = {"created_by": user} if hasattr(model, "created_by") else {}
    lines = model.objects.select_for_update()
    return lines.get_or_create(workspace=workspace, name=name, defaults=defaults)[0]


def module_version_create(
    workspace: Workspace,
    module_name: str,
    files: dict[str, str],
    entrypoint: str,
    message: str = "",
    interface: dict[str, Any] | None = None,
    user: Any = None,
    parent: ModuleVersion | None = None,
) -> ModuleVersion:
    """Push a new version of a module (the module is created on its first push).

    Its number is the module's previous highest + 1 and its parent defaults to that latest
    version. If the latest version has the same code digest and the same interface, it is
    returned unchanged and nothing is written: pushing the same code twice is a no-op.
    """
    _check_name(module_name, "module")
    _check_source_size(files)
    inspection = inspect_module(files, entrypoint, interface)  # raises before any write
    digest = module_code_digest(files, entrypoint)
    stored_interface = inspection.as_interface()
    with transaction.atomic():
        module = _locked_line(Module, workspace, module_name, user)
        latest = module.versions.order_by("-number").first()
        if latest and latest.code_digest == digest and latest.interface == stored_interface:
            return latest
        if parent is not None and parent.module_id != module.pk:
            raise DomainError(
                "invalid_module",
                "A version's parent must be a version of the same module.",
                {"parent": [f"{parent} is not a version of {module_name}"]},
            )
        return ModuleVersion.objects.create(
            module=module,
            number=latest.number + 1 if latest else 1,
            parent=parent or latest,
            message=message,
            entrypoint=entrypoint,
            files=dict(sorted(files.items())),
            code_digest=digest,
            interface=stored_interface,
            interface_source=(
                InterfaceSource.INFERRED if interface is None else InterfaceSource.EXPLICIT
            ),
            imports=inspection.imports,
            warnings=inspection.warnings,
            created_by=user,
        )


def _source_paths(root: Path) -> list[Path]:
    """Files under a module folder, leaving out caches and dotfiles (.git, .venv, ...)."""
    return sorted(
        path
        for path in root.rglob("*")
        if not any(
            part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts
        )
        and (path.is_file() or path.is_symlink())
    )


def _read_sources(path: Path) -> dict[str, str]:
    """{relative path: text} of a module folder or single file, within MAX_SOURCE_BYTES.

    Bytes that are not UTF-8 are kept (surrogateescape), so inspection names the file.
    """
    limit = engine().max_source_bytes
    if not path.exists():
        raise DomainError(
            "invalid_module", f"{path} does not exist.", {"path": ["no such file or folder"]}
        )
    paths = [path] if path.is_file() else _source_paths(path)
    base = path.parent if path.is_file() else path
    fields: dict[str, list[str]] = {}
    for source in paths:
        if source.is_symlink():
            fields[f"files.{source.relative_to(base).as_posix()}"] = ["symlinks are not followed"]
    size = sum(p.stat().st_size for p in paths if not p.is_symlink())
    if size > limit:
        fields["files"] = [f"{size} bytes of source; the limit is {limit}"]
    if fields:
        raise DomainError("invalid_module", "The module's files cannot be read.", fields)
    return {
        p.relative_to(base).as_posix(): p.read_bytes().decode("utf-8", "surrogateescape")
        for p in paths
    }


def module_version_create_from_dir(
    workspace: Workspace,
    module_name: str,
    path: str | Path,
    entrypoint: str,
    message: str = "",
    interface: dict[str, Any] | None = None,
    user: Any = None,
    parent: ModuleVersion | None = None,
) -> ModuleVersion:
    """module_version_create with the files of a folder (or one file) on this machine."""
    files = _read_sources(Path(path))
    return module_version_create(
        workspace, module_name, files, entrypoint, message, interface, user, parent
    )


# --- pipelines --------------------------------------------------------------------------------


def _catalogue(workspace: Workspace, parsed: Any) -> Catalogue:
    """The module and dataset versions a spec mentions, in two queries."""
    module_names, dataset_names = referenced_names(parsed)
    modules: dict[str, dict[int, ModuleInfo]] = {}
    rows = ModuleVersion.objects.filter(
        module__workspace=workspace, module__name__in=module_names
    ).values_list("module__name", "number", "id", "interface")
    for name, number, pk, interface in rows:
        modules.setdefault(name, {})[number] = ModuleInfo(pk, interface)
    datasets: dict[str, dict[int, int]] = {}
    dataset_rows = DatasetVersion.objects.filter(
        dataset__workspace=workspace, dataset__name__in=dataset_names
    ).values_list("dataset__name", "number", "id")
    for name, number, pk in dataset_rows:
        datasets.setdefault(name, {})[number] = pk
    return Catalogue(modules, datasets)


def pipeline_version_create(
    workspace: Workspace,
    pipeline_name: str,
    spec: str | dict[str, Any],
    message: str = "",
    user: Any = None,
    parent: PipelineVersion | None = None,
    origin: str = VersionOrigin.USER,
) -> PipelineVersion:
    """Validate a spec against the workspace and store it as the pipeline's next version.

    The pipeline is created on its first push; the parent defaults to the latest version
    people made (`mainline`). A sweep's variant versions (`origin="sweep"`) are numbered in
    the same line but never become "latest".
    If the latest version has the same resolved spec (digest), it is returned unchanged.
    """
    _check_name(pipeline_name, "pipeline")
    parsed = parse_spec(spec)
    resolved = resolve_spec(parsed, _catalogue(workspace, parsed))
    source = spec if isinstance(spec, str) else render_spec_yaml(resolved.spec)
    with transaction.atomic():
        pipeline = _locked_line(Pipeline, workspace, pipeline_name, user)
        newest = pipeline.versions.order_by("-number").first()
        latest = newest
        if newest is not None and newest.origin != VersionOrigin.USER:
            latest = pipeline.versions.mainline().order_by("-number").first()
        if origin == VersionOrigin.USER and latest is not None and latest.digest == resolved.digest:
            return latest
        if parent is not None and parent.pipeline_id != pipeline.pk:
            raise DomainError(
                "invalid_spec",
                "A version's parent must be a version of the same pipeline.",
                {"parent": [f"{parent} is not a version of {pipeline_name}"]},
            )
        version = PipelineVersion.objects.create(
            pipeline=pipeline,
            number=newest.number + 1 if newest else 1,
            parent=parent or latest,
            origin=origin,
            message=message,
            source=source,
            spec=resolved.spec,
            digest=resolved.digest,
            created_by=user,
        )
        steps = resolved.spec["steps"]
        PipelineStep.objects.bulk_create(
            PipelineStep(
                pipeline_version=version,
                name=name,
                position=position,
                module_version_id=steps[name]["module_version"],
                params=steps[name]["params"],
                inputs=steps[name]["inputs"],
            )
            for position, name in enumerate(resolved.order)
        )
    return version


def _merged(current: Mapping[str, Any], change: Any) -> dict[str, Any]:
    """`current` with `change` merged in; a None value removes a key."""
    merged = {**current, **(change or {})}
    return {key: value for key, value in merged.items() if value is not None}


def _change_problem(name: str, steps: Mapping[str, Any], change: Any) -> str | None:
    if name not in steps:
        return f"no step {name!r} in the version being cloned"
    if not isinstance(change, Mapping) or set(change) - {"module", "params", "inputs"}:
        return "a change is a mapping with module, params or inputs"
    for key in ("params", "inputs"):
        if change.get(key) is not None and not isinstance(change[key], Mapping):
            return f"{key} must be a mapping"
    return None


def _apply_changes(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A spec with per-step changes: {step: {"module"?, "params"?, "inputs"?}}.

    Params and inputs merge into the step's (a None value removes one); a module of another
    line starts from its own defaults, as a sweep variant does (DECISIONS.md, Sweeps).
    """
    steps = {name: dict(step) for name, step in base["steps"].items()}
    fields: dict[str, list[str]] = {}
    for name, change in changes.items():
        problem = _change_problem(name, steps, change)
        if problem is not None:
            fields[f"steps.{name}"] = [problem]
            continue
        step = steps[name]
        if "module" in change:
            if str(change["module"]).split("@")[0] != step["module"].split("@")[0]:
                step["params"] = {}
            step["module"] = change["module"]
        step["params"] = _merged(step.get("params", {}), change.get("params"))
        step["inputs"] = _merged(step.get("inputs", {}), change.get("inputs"))
    if fields:
        raise DomainError("invalid_spec", "The changes do not fit the pipeline.", fields)
    return {"steps": steps}


def pipeline_version_clone(
    version: PipelineVersion,
    changes: dict[str, Any] | str,
    message: str = "",
    user: Any = None,
    origin: str = VersionOrigin.USER,
) -> PipelineVersion:
    """A new version of the same pipeline whose parent is `version`.

    `changes` is either a whole spec (text) or {step: {"module"?, "params"?, "inputs"?}}
    applied to `version`'s spec.
    """
    pipeline = version.pipeline
    if isinstance(changes, str):
        spec: str | dict[str, Any] = changes
    else:
        spec = _apply_changes(editable_spec(version.spec), changes)
    return pipeline_version_create(
        pipeline.workspace, pipeline.name, spec, message, user=user, parent=version, origin=origin
    )


def pipeline_version_update(
    version: PipelineVersion, step: str | None = None, user: Any = None
) -> PipelineVersion:
    """A new version of the pipeline that pins the latest version of every module (or only
    of `step`'s), parent `version`, nothing else changed. DomainError when there is nothing
    newer (409) or no such step (400); an interface the pipeline cannot use is the clone's
    usual 400."""
    newer = newer_modules(version)
    if step is not None:
        if not version.steps.filter(name=step).exists():
            raise DomainError(
                "invalid_step", f"{version.ref} has no step {step!r}.", {"step": ["no such step"]}
            )
        newer = [row for row in newer if row["step"] == step]
    if not newer:
        what = f"step {step!r}" if step else "every step"
        raise DomainError(
            "up_to_date",
            f"{version.ref} already pins the latest module version for {what}.",
            status_code=409,
        )
    changes: dict[str, Any] = {row["step"]: {"module": row["latest"]} for row in newer}
    message = "update: " + ", ".join(f"{row['pinned']} -> {row['latest']}" for row in newer)
    return pipeline_version_clone(version, changes, message, user=user)


# --- datasets ---------------------------------------------------------------------------------


def dataset_version_create(
    workspace: Workspace,
    dataset_name: str,
    data: bytes | IO[bytes],
    media_type: str,
    message: str = "",
    user: Any = None,
) -> DatasetVersion:
    """Store `data` (bytes, or an open binary file, read in chunks: a big upload never
    sits in memory) as the dataset's next version (the dataset is created on first push).

    If the latest version holds the same bytes with the same media type, it is returned
    unchanged: re-seeding the same data is a no-op. A new version is recorded in the
    workspace's audit trail.
    """
    _check_name(dataset_name, "dataset")
    fields: dict[str, list[str]] = {}
    if not _has_bytes(data):
        fields["data"] = ["a dataset version needs some bytes"]
    if not isinstance(media_type, str) or "/" not in media_type:
        fields["media_type"] = ["a media type such as text/csv"]
    if fields:
        raise DomainError("invalid_dataset", "The dataset version cannot be stored.", fields)
    # The slow I/O (hashing, copying into the store), before the lock.
    if isinstance(data, bytes):
        artifact = artifact_store_bytes(workspace, data, media_type)
    else:
        artifact = artifact_store_file(workspace, data, media_type)
    with transaction.atomic():
        dataset = _locked_line(Dataset, workspace, dataset_name, user)
        latest = dataset.versions.order_by("-number").first()
        if latest is not None and latest.artifact_id == artifact.pk:
            return latest
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=latest.number + 1 if latest else 1,
            artifact=artifact,
            message=message,
            created_by=user,
        )
        audit_record(
            workspace,
            user,
            AuditVerb.DATASET_PUSHED,
            version.ref,
            {"sha256": artifact.sha256, "size": artifact.size, "media_type": media_type},
        )
        return version


def _has_bytes(data: Any) -> bool:
    if isinstance(data, bytes):
        return bool(data)
    if not hasattr(data, "read") or not hasattr(data, "seek"):
        return False
    data.seek(0, os.SEEK_END)
    size = data.tell()
    data.seek(0)
    return bool(size)
