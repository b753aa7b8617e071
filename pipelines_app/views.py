"""Design-time pages: thin views over the access helpers and list selectors.

Every workspace object is fetched through pipelines_app/selectors.py, so another
workspace's object is a 404 here exactly as in the API.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from pipelines_app import selectors
from pipelines_app.diffs import files_diff, steps_diff, text_diff
from pipelines_app.forms import SpecForm
from pipelines_app.models import VersionOrigin
from pipelines_app.services import pipeline_version_clone, pipeline_version_update
from pipelines_app.specs import render_spec_yaml
from stepworks.changes import interface_changes
from workspaces.errors import DomainError
from workspaces.models import Role
from workspaces.selectors import role_allows, workspaces_for_user
from workspaces.services import workspace_creation_allowed


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = list(workspaces_for_user(request.user))
    # One workspace is the common case (a laptop install, a small team): skip the chooser.
    if len(workspaces) == 1:
        return redirect("runs:workspace", slug=workspaces[0].slug)
    context = {"workspaces": workspaces, "can_create": workspace_creation_allowed(request.user)}
    return TemplateResponse(request, "pipelines_app/home.html", context)


@login_required
def module_detail(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    module = selectors.get_module_for_user(request.user, slug, name)
    context = {
        "workspace": module.workspace,
        "module": module,
        "versions": selectors.module_version_list(module),
    }
    return TemplateResponse(request, "pipelines_app/module_detail.html", context)


@login_required
def module_version_detail(
    request: HttpRequest, slug: str, name: str, number: int
) -> TemplateResponse:
    version = selectors.get_module_version_for_user(request.user, slug, name, number)
    files = sorted((version.files or {}).items())
    parent = version.parent
    context = {
        "workspace": version.module.workspace,
        "module": version.module,
        "version": version,
        "files": [
            {"path": path, "text": text, "size": len(text.encode()), "language": _language(path)}
            for path, text in files
        ],
        "interface": interface_rows(version.interface or {}),
        "can_edit": role_allows(version.module.workspace, Role.EDITOR),
        "usage": selectors.module_version_usage(version),
        "breakage": selectors.module_version_breakage(version),
        "interface_changes": (
            interface_changes(parent.interface or {}, version.interface or {})
            if parent is not None
            else []
        ),
    }
    return TemplateResponse(request, "pipelines_app/module_version.html", context)


def _language(path: str) -> str:
    """The highlight.js language of a file, by its suffix ("plaintext" when unknown)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return {"py": "python", "yaml": "yaml", "yml": "yaml", "json": "json", "md": "markdown"}.get(
        suffix, "plaintext"
    )


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


@login_required
def module_diff(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    """The code of two versions of a module side by side (`?a=1&b=2`, default: the latest
    against its parent)."""
    module = selectors.get_module_for_user(request.user, slug, name)
    versions = list(selectors.module_version_list(module))
    numbers = [v.number for v in versions]
    a, b = _int_or_none(request.GET.get("a")), _int_or_none(request.GET.get("b"))
    if b not in numbers:
        b = numbers[0] if numbers else None
    if a not in numbers:
        a = b - 1 if b is not None and b - 1 in numbers else b
    context: dict[str, Any] = {
        "workspace": module.workspace,
        "module": module,
        "versions": versions,
        "a": a,
        "b": b,
    }
    if a is not None and b is not None:
        old = selectors.get_module_version_for_user(request.user, slug, name, a)
        new = selectors.get_module_version_for_user(request.user, slug, name, b)
        context.update(
            old=old,
            new=new,
            files=files_diff(old.files or {}, new.files or {}, old.ref, new.ref),
            interface_changes=interface_changes(old.interface or {}, new.interface or {}),
            entrypoint_changed=old.entrypoint != new.entrypoint,
        )
    return TemplateResponse(request, "pipelines_app/module_diff.html", context)


@login_required
def pipeline_detail(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    """The version tree; the versions sweeps and workbench tries made are folded away
    unless `?all=1`."""
    pipeline = selectors.get_pipeline_for_user(request.user, slug, name)
    tree = selectors.pipeline_version_tree(pipeline)
    show_all = request.GET.get("all") in ("1", "true")
    made = [row for row in tree if row["version"].origin != VersionOrigin.USER]
    shown = (
        tree if show_all else [row for row in tree if row["version"].origin == VersionOrigin.USER]
    )
    context = {
        "workspace": pipeline.workspace,
        "pipeline": pipeline,
        "versions": [row["version"] for row in tree],
        "tree": shown,
        "show_all": show_all,
        "folded": 0 if show_all else len(made),
    }
    return TemplateResponse(request, "pipelines_app/pipeline_detail.html", context)


@login_required
def pipeline_diff(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    """Two versions of a pipeline: their specs as text and their steps (module, params,
    inputs) compared (`?a=1&b=2`; default: the latest against its parent)."""
    pipeline = selectors.get_pipeline_for_user(request.user, slug, name)
    versions = list(selectors.pipeline_version_list(pipeline))
    numbers = [v.number for v in versions]
    a, b = _int_or_none(request.GET.get("a")), _int_or_none(request.GET.get("b"))
    if b not in numbers:
        b = numbers[0] if numbers else None
    if a not in numbers:
        # pipeline_version_list annotates each version with its parent's number.
        parent = next((getattr(v, "parent_number", None) for v in versions if v.number == b), None)
        a = parent if parent in numbers else b
    context: dict[str, Any] = {
        "workspace": pipeline.workspace,
        "pipeline": pipeline,
        "versions": versions,
        "a": a,
        "b": b,
    }
    if a is not None and b is not None:
        old = selectors.get_pipeline_version_for_user(request.user, slug, name, a)
        new = selectors.get_pipeline_version_for_user(request.user, slug, name, b)
        context.update(
            old=old,
            new=new,
            spec=text_diff(
                render_spec_yaml(old.spec), render_spec_yaml(new.spec), old.ref, new.ref
            ),
            steps=steps_diff(old.spec.get("steps", {}), new.spec.get("steps", {})),
            same=old.digest == new.digest,
        )
    return TemplateResponse(request, "pipelines_app/pipeline_diff.html", context)


@login_required
@require_POST
def pipeline_update(request: HttpRequest, slug: str, name: str, number: int) -> HttpResponse:
    """A new version pinning the newest module versions (or one step's: `step`)."""
    version = selectors.get_pipeline_version_for_user(request.user, slug, name, number, Role.EDITOR)
    try:
        new = pipeline_version_update(version, request.POST.get("step") or None, user=request.user)
    except DomainError as error:
        messages.error(request, str(error))
        return redirect("runs:pipeline_version", slug=slug, name=name, number=number)
    messages.success(request, f"{new.ref} created from {version.ref}: {new.message}.")
    return redirect("runs:pipeline_version", slug=slug, name=name, number=new.number)


@login_required
def pipeline_clone(request: HttpRequest, slug: str, name: str, number: int) -> HttpResponse:
    """Clone a version and edit its spec; problems are shown next to the spec, by path."""
    version = selectors.get_pipeline_version_for_user(request.user, slug, name, number, Role.EDITOR)
    if request.method == "POST":
        form = SpecForm(request.POST)
        if form.is_valid():
            newest = version.pipeline.versions.order_by("-number").values_list("number")[:1]
            before = newest[0][0] if newest else 0
            try:
                new = pipeline_version_clone(
                    version,
                    form.cleaned_data["spec"],
                    form.cleaned_data["message"] or f"edited from @{version.number}",
                    user=request.user,
                )
            except DomainError as error:
                form.add_domain_errors(error.fields or {"spec": [error.message]})
            else:
                if new.number <= before:
                    messages.info(request, f"No change: the spec is the same as {new.ref}.")
                else:
                    messages.success(request, f"{new.ref} created from {version.ref}.")
                return redirect("runs:pipeline_version", slug=slug, name=name, number=new.number)
    else:
        form = SpecForm(initial={"spec": render_spec_yaml(version.spec)})
    context = {
        "workspace": version.pipeline.workspace,
        "pipeline": version.pipeline,
        "version": version,
        "form": form,
    }
    status = 400 if form.is_bound else 200
    return TemplateResponse(request, "pipelines_app/pipeline_clone.html", context, status=status)


def interface_rows(interface: dict[str, Any]) -> dict[str, Any]:
    """A module interface as rows a template prints as they are.

    Defaults are shown as JSON so that `None`, `"None"` and `0` stay distinguishable.
    """
    params = []
    for name, declared in (interface.get("params") or {}).items():
        spec = declared if isinstance(declared, dict) else {"type": declared}
        required = bool(spec.get("required", "default" not in spec))
        params.append(
            {
                "name": name,
                "type": spec.get("type", ""),
                "default": "" if required else _as_json(spec.get("default")),
                "required": required,
            }
        )
    return {
        "inputs": [_name_of(item) for item in interface.get("inputs") or []],
        "outputs": [_name_of(item) for item in interface.get("outputs") or []],
        "params": params,
    }


def _name_of(item: Any) -> str:
    # Inputs and outputs are names; tolerate {"name": ...} entries too.
    return str(item.get("name", item)) if isinstance(item, dict) else str(item)


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
