"""The pages that show a workspace's or a pipeline version's runs, and start runs.

The design-time pages (modules, pipelines, their history) live in pipelines_app; these show
run-time rows too, so they live here, above both.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from pipelines_app import selectors as design
from pipelines_app.forms import RunForm
from pipelines_app.models import PipelineVersion
from pipelines_app.specs import describe_policies, effective_params
from runs_app import selectors, services
from workspaces.errors import DomainError
from workspaces.models import Role
from workspaces.selectors import get_workspace_for_user, role_allows

# The workspace home shows this many recent and active runs; the runs list shows the rest.
RECENT_RUNS = 10
ACTIVE_RUNS = 20


@login_required
def workspace_home(request: HttpRequest, slug: str) -> TemplateResponse:
    workspace = get_workspace_for_user(request.user, slug)
    runs = selectors.workspace_run_list(workspace)
    context = {
        "workspace": workspace,
        "run_counts": selectors.workspace_run_counts(workspace),
        "recent_runs": runs[:RECENT_RUNS],
        "active_runs": runs.filter(status__in=selectors.ACTIVE_RUN_STATUSES)[:ACTIVE_RUNS],
        "pipelines": design.pipeline_list(workspace),
        "modules": design.module_list(workspace),
        "datasets": design.dataset_list(workspace),
    }
    return TemplateResponse(request, "runs_app/workspace_home.html", context)


@login_required
def pipeline_version_detail(
    request: HttpRequest, slug: str, name: str, number: int
) -> TemplateResponse:
    version = design.get_pipeline_version_for_user(request.user, slug, name, number)
    return _pipeline_version_page(request, version)


def _pipeline_version_page(
    request: HttpRequest, version: PipelineVersion, form: RunForm | None = None, status: int = 200
) -> TemplateResponse:
    workspace = version.pipeline.workspace
    step_rows = list(design.pipeline_step_list_with_interfaces(version))
    steps = [
        {
            "step": step,
            "params": _as_json(step.params),
            "inputs": sorted((step.inputs or {}).items()),
            "policies": describe_policies(version.spec["steps"].get(step.name, {})),
        }
        for step in step_rows
    ]
    graph = selectors.run_graph(version.spec)
    for node in graph["nodes"]:
        if node["kind"] == "step":
            module, _, module_number = node["module"].partition("@")
            node["href"] = reverse(
                "pipelines:module_version", args=[workspace.slug, module, int(module_number)]
            )
    can_edit = role_allows(workspace, Role.EDITOR)
    context = {
        "workspace": workspace,
        "pipeline": version.pipeline,
        "version": version,
        "steps": steps,
        "graph": graph,
        "can_edit": can_edit,
        "newer_modules": design.newer_modules(version),
        "run_form": form or (RunForm(_form_steps(step_rows)) if can_edit else None),
        "recent_runs": selectors.pipeline_version_runs(version)[:10],
        # The text the user wrote; a version made from a resolved spec alone shows that.
        "source": version.source or json.dumps(version.spec, indent=2, sort_keys=True),
    }
    return TemplateResponse(request, "runs_app/pipeline_version.html", context, status=status)


def _form_steps(step_rows: list[Any]) -> list[dict[str, Any]]:
    """Each step with its effective params (module defaults plus the version's own)."""
    out = []
    for step in step_rows:
        try:
            params = effective_params(step.module_version.interface or {}, step.params)
        except DomainError:
            params = dict(step.params or {})
        out.append({"name": step.name, "params": params, "module": step.module_version.ref})
    return out


@login_required
@require_POST
def pipeline_run(request: HttpRequest, slug: str, name: str, number: int) -> HttpResponse:
    """Start a run of this version with the form's param overrides (editors)."""
    version = design.get_pipeline_version_for_user(request.user, slug, name, number, Role.EDITOR)
    step_rows = list(design.pipeline_step_list_with_interfaces(version))
    form = RunForm(_form_steps(step_rows), request.POST)
    if form.is_valid():
        try:
            run = services.run_start(
                version,
                user=request.user,
                param_overrides=form.overrides(),
                reuse=form.cleaned_data.get("reuse", False),
            )
        except DomainError as error:
            form.add_domain_errors(error.fields or {"non_field_errors": [error.message]})
        else:
            messages.success(request, f"Run {run.pk} started.")
            return redirect("runs:detail", slug=slug, run_id=run.pk)
    return _pipeline_version_page(request, version, form, status=400)


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
