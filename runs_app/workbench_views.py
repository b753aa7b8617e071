"""The workbench pages: edit a step of a finished run and run it again (runs_app.workbench).

`workbench` shows the step's module files in the editor (read-only for viewers) and its
params; its POST (editors) starts the try. `workbench_interface` re-reads the interface of
the posted text for the editor as you type. `workbench_result` sets the try beside the run
it came from, live until it ends; `workbench_keep` makes its spec the pipeline's next
version.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from pipelines_app.forms import StepParamsForm
from pipelines_app.models import ModuleVersion
from runs_app import selectors, workbench
from runs_app.diffs import run_diff
from runs_app.models import RUN_TERMINAL, PipelineRun, StepRun
from runs_app.views import LIVE_POLL, link_outputs
from workspaces.errors import DomainError
from workspaces.models import Role
from workspaces.selectors import role_allows

FILE_FIELD = "file:"  # a posted file's field is "file:<path>"


def _language(path: str) -> str:
    if path.endswith(".py"):
        return "python"
    if path.endswith((".yaml", ".yml")):
        return "yaml"
    return "text"


def _posted_files(request: HttpRequest, version: ModuleVersion) -> dict[str, str]:
    """The edited files. A browser sends a textarea's line ends as CRLF: they are made LF
    again unless the stored file had CRLF, so unedited code keeps its digest."""
    files = {}
    for key in request.POST:
        if key.startswith(FILE_FIELD):
            path = key.removeprefix(FILE_FIELD)
            text = request.POST[key]
            if "\r\n" not in str(version.files.get(path, "")):
                text = text.replace("\r\n", "\n")
            files[path] = text
    return files


def _step_form(step: StepRun, data: Any = None) -> StepParamsForm:
    spec_steps = [{"name": step.name, "params": dict(step.params or {})}]
    return StepParamsForm(spec_steps, data)


@login_required
@require_http_methods(["GET", "POST"])
def workbench_page(request: HttpRequest, slug: str, run_id: int, name: str) -> HttpResponse:
    role = Role.EDITOR if request.method == "POST" else Role.VIEWER
    step = selectors.get_step_for_user(request.user, slug, run_id, name, role)
    run = step.run
    workspace = run.workspace
    version = ModuleVersion.objects.select_related("module").get(pk=step.module_version_id)
    files = dict(version.files)
    form = _step_form(step, request.POST if request.method == "POST" else None)
    problems: list[dict[str, Any]] = []
    status = 200
    if form.is_bound:
        files = _posted_files(request, version) or files
        if form.is_valid():
            try:
                tried = workbench.try_edit(
                    run,
                    step,
                    files,
                    form.changed_params().get(step.name, {}),
                    user=request.user,
                    message=request.POST.get("message", "").strip()[:500],
                )
            except DomainError as error:
                problems = workbench.problems_of(error)
                form.add_domain_errors(
                    {k: v for k, v in (error.fields or {}).items() if "params" in k.split(".")}
                )
                status = error.status_code if error.status_code != 404 else 400
            else:
                messages.success(
                    request, f"Run {tried.pk} started: {step.name} edited, from run {run.pk}."
                )
                return redirect("runs:workbench_result", slug=slug, run_id=tried.pk)
        else:
            status = 400
    context = {
        "workspace": workspace,
        "run": run,
        "step": step,
        "version": version,
        "files": [
            {"path": path, "text": text, "language": _language(path)}
            for path, text in sorted(files.items())
        ],
        "form": form,
        "problems": problems,
        "interface": version.interface,
        "can_edit": role_allows(workspace, Role.EDITOR),
        "finished": run.status in RUN_TERMINAL,
        "message": request.POST.get("message", "") if form.is_bound else "",
    }
    return TemplateResponse(request, "runs_app/workbench.html", context, status=status)


@login_required
@require_POST
def workbench_interface(request: HttpRequest, slug: str, run_id: int, name: str) -> JsonResponse:
    """{"files": {path: text}} -> the interface they declare, or the problems with it (by
    file and line). Read with ast: nothing posted is ever run."""
    step = selectors.get_step_for_user(request.user, slug, run_id, name, Role.EDITOR)
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "the body is not JSON"}, status=400)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not all(isinstance(t, str) for t in files.values()):
        return JsonResponse({"error": "files: expected an object of path -> text"}, status=400)
    version = ModuleVersion.objects.only("entrypoint", "interface", "interface_source").get(
        pk=step.module_version_id
    )
    return JsonResponse(workbench.inspect(version, files))


def _result_context(request: HttpRequest, run: PipelineRun) -> dict[str, Any]:
    base = run.cloned_from
    assert base is not None  # a workbench run is a clone
    finished = run.status in RUN_TERMINAL
    diff = run_diff(base, run, contents=finished)
    if finished:
        link_outputs(run.workspace, diff["outputs"], base.pk, run.pk)
    recomputed = [s["name"] for s in diff["steps"] if s["b_status"] not in (None, "reused")]
    return {
        "workspace": run.workspace,
        "run": run,
        "base": base,
        "a": base,
        "b": run,
        "sides": [base, run],
        "diff": diff,
        "param_rows": [r for r in diff["params"] if not r["same"]],
        "all_params": False,
        "edited": [c["step"] for c in diff["code"]]
        or [s["name"] for s in diff["graph"]["changed"]],
        "recomputed": recomputed,
        "finished": finished,
        "can_edit": role_allows(run.workspace, Role.EDITOR),
        "poll": LIVE_POLL,
        "compare_url": reverse("runs:compare", args=[run.workspace.slug]),
    }


@login_required
@require_http_methods(["GET"])
def workbench_result(request: HttpRequest, slug: str, run_id: int) -> TemplateResponse:
    """The try beside the run it came from: while it runs, its steps' progress (an htmx
    poll of `?live=1`); once it ends, metrics, params, code and outputs side by side."""
    run = selectors.get_run_for_user(request.user, slug, run_id)
    if not workbench.is_workbench_run(run):
        raise Http404("This run was not started from the workbench.")
    context = _result_context(request, run)
    template = "runs_app/workbench_result.html"
    if request.GET.get("live"):
        template += "#workbench-live"
    return TemplateResponse(request, template, context)


@login_required
@require_POST
def workbench_keep(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id, Role.EDITOR)
    try:
        version = workbench.keep(run, user=request.user)
    except DomainError as error:
        if not workbench.is_workbench_run(run):
            raise Http404(error.message) from error
        context = {**_result_context(request, run), "keep_error": error.message}
        return TemplateResponse(
            request, "runs_app/workbench_result.html", context, status=error.status_code
        )
    messages.success(
        request,
        f"{version.ref} is the edit tried in run {run.pk} (parent "
        f"{version.parent.ref if version.parent else 'none'}).",
    )
    return redirect(
        "runs:pipeline_version", slug=slug, name=version.pipeline.name, number=version.number
    )
