"""Design-time pages: thin views over the access helpers and list selectors.

Every workspace object is fetched through pipelines_app/selectors.py, so another
workspace's object is a 404 here exactly as in the API.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from pipelines_app import selectors

# The workspace home shows this many recent and active runs; the runs list shows the rest.
RECENT_RUNS = 10
ACTIVE_RUNS = 20


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = list(selectors.workspaces_for_user(request.user))
    # One workspace is the common case (a laptop install, a small team): skip the chooser.
    if len(workspaces) == 1:
        return redirect("pipelines:workspace", slug=workspaces[0].slug)
    return TemplateResponse(request, "pipelines_app/home.html", {"workspaces": workspaces})


@login_required
def workspace_home(request: HttpRequest, slug: str) -> TemplateResponse:
    workspace = selectors.get_workspace_for_user(request.user, slug)
    runs = selectors.workspace_run_list(workspace)
    context = {
        "workspace": workspace,
        "run_counts": selectors.workspace_run_counts(workspace),
        "recent_runs": runs[:RECENT_RUNS],
        "active_runs": runs.filter(status__in=selectors.ACTIVE_RUN_STATUSES)[:ACTIVE_RUNS],
        "pipelines": selectors.pipeline_list(workspace),
        "modules": selectors.module_list(workspace),
        "datasets": selectors.dataset_list(workspace),
    }
    return TemplateResponse(request, "pipelines_app/workspace_home.html", context)


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
    context = {
        "workspace": version.module.workspace,
        "module": version.module,
        "version": version,
        "files": [{"path": path, "text": text, "size": len(text.encode())} for path, text in files],
        "interface": interface_rows(version.interface or {}),
    }
    return TemplateResponse(request, "pipelines_app/module_version.html", context)


@login_required
def pipeline_detail(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    pipeline = selectors.get_pipeline_for_user(request.user, slug, name)
    context = {
        "workspace": pipeline.workspace,
        "pipeline": pipeline,
        "versions": selectors.pipeline_version_list(pipeline),
    }
    return TemplateResponse(request, "pipelines_app/pipeline_detail.html", context)


@login_required
def pipeline_version_detail(
    request: HttpRequest, slug: str, name: str, number: int
) -> TemplateResponse:
    version = selectors.get_pipeline_version_for_user(request.user, slug, name, number)
    steps = [
        {
            "step": step,
            "params": _as_json(step.params),
            "inputs": sorted((step.inputs or {}).items()),
        }
        for step in selectors.pipeline_step_list(version)
    ]
    context = {
        "workspace": version.pipeline.workspace,
        "pipeline": version.pipeline,
        "version": version,
        "steps": steps,
        # The text the user wrote; a version made from a resolved spec alone shows that.
        "source": version.source or json.dumps(version.spec, indent=2, sort_keys=True),
    }
    return TemplateResponse(request, "pipelines_app/pipeline_version.html", context)


def interface_rows(interface: dict[str, Any]) -> dict[str, Any]:
    """A module interface as rows a template prints as they are.

    Defaults are shown as JSON so that `None`, `"None"` and `0` stay distinguishable.
    """
    params = []
    for name, spec in (interface.get("params") or {}).items():
        spec = spec if isinstance(spec, dict) else {"type": spec}
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
