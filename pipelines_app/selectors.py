"""Workspace-scoped reads: the one access helper per object type.

Nothing else fetches a workspace object by id. An object of a workspace the user is not a
member of is a 404 (never a 403 that would confirm it exists); a member whose role is too low
for the action gets a 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineStep,
    PipelineVersion,
    VersionOrigin,
)
from pipelines_app.specs import step_bindings
from workspaces.models import Role, Workspace
from workspaces.selectors import one_or_404, scoped_or_404


def get_module_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Module:
    return scoped_or_404(Module.objects.all(), user, slug, "module", role=role, name=name)


def get_module_version_for_user(
    user: Any, slug: str, name: str, number: int, role: str = Role.VIEWER
) -> ModuleVersion:
    return scoped_or_404(
        ModuleVersion.objects.select_related("module", "parent__module"),
        user,
        slug,
        "module version",
        role=role,
        workspace_path="module__workspace",
        module__name=name,
        number=number,
    )


def get_pipeline_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Pipeline:
    return scoped_or_404(Pipeline.objects.all(), user, slug, "pipeline", role=role, name=name)


def get_pipeline_version_for_user(
    user: Any, slug: str, name: str, number: int, role: str = Role.VIEWER
) -> PipelineVersion:
    return scoped_or_404(
        PipelineVersion.objects.select_related("pipeline", "parent"),
        user,
        slug,
        "pipeline version",
        role=role,
        workspace_path="pipeline__workspace",
        pipeline__name=name,
        number=number,
    )


def get_dataset_for_user(user: Any, slug: str, name: str, role: str = Role.VIEWER) -> Dataset:
    return scoped_or_404(Dataset.objects.all(), user, slug, "dataset", role=role, name=name)


# --- list reads for the pages ------------------------------------------------------------------
# Each list states its joins and annotations, so a page costs the same few queries for 1 row
# or for 50 (tests pin the counts). Callers pass a workspace already fetched through
# get_workspace_for_user: these never check access themselves.


def module_list(workspace: Workspace) -> QuerySet[Module]:
    """The workspace's modules, each with `version_count` and `latest_number` (None if none)."""
    return Module.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"), latest_number=Max("versions__number")
    )


def module_version_list(module: Module) -> QuerySet[ModuleVersion]:
    """A module's versions, newest first, with `parent_number`; files and interface deferred
    (a list shows neither, and they are the large columns)."""
    return (
        ModuleVersion.objects.filter(module=module)
        .select_related("created_by")
        .annotate(parent_number=F("parent__number"))
        .defer("files", "interface", "imports", "warnings")
        .order_by("-number")
    )


def pipeline_list(workspace: Workspace) -> QuerySet[Pipeline]:
    """The workspace's pipelines, each with `version_count` and `latest_number` (the newest
    version people made: a sweep's variant versions are never "latest")."""
    return Pipeline.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"),
        latest_number=Max("versions__number", filter=Q(versions__origin=VersionOrigin.USER)),
    )


def pipeline_version_list(pipeline: Pipeline) -> QuerySet[PipelineVersion]:
    """A pipeline's versions, newest first, with `parent_number` and `parent_pipeline` (a
    parent may belong to another pipeline when a version was cloned from it)."""
    return (
        PipelineVersion.objects.filter(pipeline=pipeline)
        .select_related("created_by")
        .annotate(
            parent_number=F("parent__number"),
            parent_pipeline=F("parent__pipeline__name"),
            step_count=Count("steps"),
        )
        .defer("source", "spec")
        .order_by("-number")
    )


def pipeline_step_list(version: PipelineVersion) -> QuerySet[PipelineStep]:
    """A version's steps in topological order, with their module versions (files deferred)."""
    return (
        PipelineStep.objects.filter(pipeline_version=version)
        .select_related("module_version__module")
        .defer("module_version__files", "module_version__interface")
        .order_by("position")
    )


def dataset_list(workspace: Workspace) -> QuerySet[Dataset]:
    """The workspace's datasets with `version_count`, `latest_number`, `latest_size`,
    `latest_media_type` and `latest_at` (when the newest version was pushed)."""
    latest = DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by("-number")
    return Dataset.objects.filter(workspace=workspace).annotate(
        version_count=Count("versions"),
        latest_number=Max("versions__number"),
        latest_size=Subquery(latest.values("artifact__size")[:1]),
        latest_media_type=Subquery(latest.values("artifact__media_type")[:1]),
        latest_at=Max("versions__created_at"),
    )


def pipeline_version_by_ref(workspace: Workspace, ref: str) -> PipelineVersion:
    """`name`, `name@latest` or `name@N` in a workspace the caller already holds; 404 else."""
    name, _, number = ref.partition("@")
    versions = PipelineVersion.objects.select_related("pipeline").filter(
        pipeline__workspace=workspace, pipeline__name=name
    )
    if number in ("", "latest"):
        return one_or_404(versions.mainline().order_by("-number"), "pipeline version")
    if not number.isdigit():
        raise Http404(f"{ref!r} is not NAME, NAME@latest or NAME@N.")
    return one_or_404(versions.filter(number=int(number)), "pipeline version")


# --- reads for the API -------------------------------------------------------------------------


def dataset_version_list(dataset: Dataset) -> QuerySet[DatasetVersion]:
    """A dataset's versions, newest first, with their artifacts and authors."""
    return (
        DatasetVersion.objects.filter(dataset=dataset)
        .select_related("dataset", "artifact", "created_by")
        .order_by("-number")
    )


def get_dataset_version_for_user(
    user: Any, slug: str, name: str, number: int, role: str = Role.VIEWER
) -> DatasetVersion:
    return scoped_or_404(
        DatasetVersion.objects.select_related("dataset", "artifact", "created_by"),
        user,
        slug,
        "dataset version",
        role=role,
        workspace_path="dataset__workspace",
        dataset__name=name,
        number=number,
    )


# --- reads for the pages (explorer issue) ---------------------------------------------------------


def module_version_refs(workspace: Workspace) -> list[str]:
    """Every module version of the workspace as `name@N`, by module then newest first."""
    rows = (
        ModuleVersion.objects.filter(module__workspace=workspace)
        .order_by("module__name", "-number")
        .values_list("module__name", "number")
    )
    return [f"{name}@{number}" for name, number in rows]


def module_version_usage(version: ModuleVersion) -> QuerySet[PipelineStep]:
    """Where a module version is used: its PipelineStep rows with their pipeline versions."""
    return (
        PipelineStep.objects.filter(module_version=version)
        .select_related("pipeline_version__pipeline")
        .defer("pipeline_version__spec", "pipeline_version__source")
        .order_by("pipeline_version__pipeline__name", "-pipeline_version__number", "name")
    )


def binding_problems(
    interface: dict[str, Any], step: dict[str, Any], downstream_outputs: set[str]
) -> list[str]:
    """Why a step of a spec would break if it ran a module with `interface` (pure).

    `step` is the resolved spec's step ({"params", "inputs"}); `downstream_outputs` are the
    outputs of this step that other steps bind.
    """
    problems = []
    declared_inputs = set(interface.get("inputs", []))
    optional = set(interface.get("optional_inputs", []))
    bound = set(step.get("inputs", {}))
    for name in sorted(bound - declared_inputs):
        problems.append(f"binds input {name!r}, which the module no longer has")
    for name in sorted(declared_inputs - bound - optional):
        problems.append(f"does not bind the new required input {name!r}")
    for name in sorted(downstream_outputs - set(interface.get("outputs", []))):
        problems.append(f"a downstream step reads output {name!r}, which the module lacks")
    params = interface.get("params", {})
    for name in sorted(set(step.get("params", {})) - set(params)):
        problems.append(f"sets param {name!r}, which the module no longer has")
    for name, spec in sorted(params.items()):
        if spec.get("required") and name not in step.get("params", {}):
            problems.append(f"does not set the required param {name!r}")
    return problems


def module_version_breakage(version: ModuleVersion, limit: int = 200) -> list[dict[str, Any]]:
    """Which pipeline versions using another version of this module would break if they
    switched to `version`: the latest version of each pipeline that uses the module line,
    each with its steps' problems (empty when it would still fit)."""
    rows = (
        PipelineStep.objects.filter(module_version__module_id=version.module_id)
        .exclude(module_version=version)
        .select_related("pipeline_version__pipeline", "module_version")
        .defer("module_version__files")
        .order_by("pipeline_version__pipeline__name", "-pipeline_version__number")
    )
    latest: dict[int, int] = {}
    results: dict[int, dict[str, Any]] = {}
    for row in rows[:limit]:
        pipeline_version = row.pipeline_version
        pipeline_id = pipeline_version.pipeline_id
        if latest.setdefault(pipeline_id, pipeline_version.number) != pipeline_version.number:
            continue  # only each pipeline's latest version that uses the module
        spec_steps = pipeline_version.spec.get("steps", {})
        read = {
            binding.output
            for other in spec_steps.values()
            for binding in step_bindings(other).values()
            if not binding.is_dataset and binding.step == row.name
        }
        problems = binding_problems(version.interface or {}, spec_steps.get(row.name, {}), read)
        entry = results.setdefault(
            pipeline_version.pk, {"pipeline_version": pipeline_version, "steps": []}
        )
        entry["steps"].append(
            {"name": row.name, "uses": row.module_version.ref, "problems": problems}
        )
    out = list(results.values())
    for entry in out:
        entry["breaks"] = any(step["problems"] for step in entry["steps"])
    return out


def pipeline_version_tree(pipeline: Pipeline) -> list[dict[str, Any]]:
    """A pipeline's versions as a tree by parent: [{"version", "depth"}] depth-first, oldest
    root first, children newest first (one query)."""
    versions = list(pipeline_version_list(pipeline))
    ids = {v.pk for v in versions}
    children: dict[int | None, list[PipelineVersion]] = {}
    for version in versions:
        parent = version.parent_id if version.parent_id in ids else None
        children.setdefault(parent, []).append(version)
    rows: list[dict[str, Any]] = []
    stack = [(v, 0) for v in sorted(children.get(None, []), key=lambda v: v.number, reverse=True)]
    while stack:
        version, depth = stack.pop()
        rows.append({"version": version, "depth": depth})
        kids = sorted(children.get(version.pk, []), key=lambda v: v.number)
        stack.extend((kid, depth + 1) for kid in kids)
    return rows


def pipeline_step_list_with_interfaces(version: PipelineVersion) -> QuerySet[PipelineStep]:
    """A version's steps with their module versions' interfaces (for the run form)."""
    return (
        PipelineStep.objects.filter(pipeline_version=version)
        .select_related("module_version__module")
        .defer("module_version__files")
        .order_by("position")
    )


def newer_modules(version: PipelineVersion) -> list[dict[str, Any]]:
    """The steps of `version` whose module has a newer version than the one it pins:
    [{"step", "module", "pinned": "name@N", "latest": "name@M"}] in step order; one query.
    A pipeline version pins exact module versions (`@latest` is read when it is pushed),
    so this is how a run says "you are not running your newest code"."""
    latest = (
        ModuleVersion.objects.filter(module=OuterRef("module_version__module"))
        .order_by("-number")
        .values("number")[:1]
    )
    rows = (
        PipelineStep.objects.filter(pipeline_version=version)
        .annotate(latest=Subquery(latest))
        .filter(latest__gt=F("module_version__number"))
        .order_by("position")
        .values("name", "module_version__module__name", "module_version__number", "latest")
    )
    return [
        {
            "step": row["name"],
            "module": row["module_version__module__name"],
            "pinned": f"{row['module_version__module__name']}@{row['module_version__number']}",
            "latest": f"{row['module_version__module__name']}@{row['latest']}",
        }
        for row in rows
    ]
