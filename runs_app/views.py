"""Run-time pages: thin views over the access helpers, selectors and services.

Every object is fetched through an access helper scoped to the workspace in the URL, so a
run id, step name or digest of another workspace is a 404; a viewer who tries an editor's
action gets a 403. Status only ever changes through runs_app.scheduler (and the services
that call it).
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_http_methods, require_POST

from artifacts import http as artifact_http
from artifacts import previews, store
from pipelines_app.forms import StepParamsForm
from pipelines_app.selectors import (
    get_module_version_for_user,
    module_version_refs,
    newer_modules,
)
from runs_app import charts, downloads, fleet, query, retention, selectors, services
from runs_app.diffs import (
    COMPARE_MAX,
    COMPARE_MIN,
    compare_ids,
    metric_direction,
    pair_diff,
    runs_compare,
)
from runs_app.filters import RunFilter
from runs_app.models import RUN_TERMINAL, STEP_TERMINAL, PipelineRun, StepRun
from workspaces.errors import DomainError
from workspaces.models import Role, Workspace
from workspaces.selectors import get_workspace_for_user, role_allows

RUNS_PER_PAGE = 50
URL_SENTINEL = 987654321  # reversed once into a URL, then replaced per row
MAX_METRIC_COLUMNS = 6
LIVE_POLL = "2s"
LOG_POLL = "1s"
STEP_PREVIEWS = 12  # a step page previews its first outputs inline; the rest are links


def int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


# --- the runs list ---------------------------------------------------------------------------


@login_required
def run_list(request: HttpRequest, slug: str) -> TemplateResponse:
    workspace = get_workspace_for_user(request.user, slug)
    archived = request.GET.get("archived") in ("1", "true")
    runs_of_list = selectors.run_list(workspace, archived)
    filterset = RunFilter(request.GET, queryset=runs_of_list, workspace=workspace)
    # A filter value that does not parse shows its error and matches nothing, rather than
    # being dropped silently (which would show every run as if it matched).
    runs = filterset.qs if filterset.is_valid() else filterset.queryset.none()
    # `q` is what the page called it first: old links keep working.
    expression = request.GET.get("filter", request.GET.get("q", "")).strip()
    query_error = None
    try:
        runs = runs.filter(query.filter_q(expression))
    except query.FilterError as error:
        query_error = error
        runs = runs.none()
    sort, sort_error = _run_sort(request.GET.get("sort", ""))
    if sort is not None:
        annotations, order = query.run_ordering(sort)
        runs = runs.alias(**annotations).order_by(*order)  # ordered by, never read
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    used_metrics = selectors.workspace_metric_names(workspace)
    metric_names, param_keys, columns_from = _list_columns(request, workspace, used_metrics)
    ids = [run.pk for run in page]
    steps = selectors.run_page_steps(ids)
    values = selectors.run_metric_values(ids, metric_names, readers=steps["readers"])
    rows = [
        {
            "run": run,
            "steps": steps["counts"][run.pk],
            "step_total": sum(steps["counts"][run.pk].values()),
            "duration_s": (
                (run.finished_at - run.started_at).total_seconds()
                if run.started_at and run.finished_at
                else None
            ),
            "metrics": [values[run.pk].get(name) for name in metric_names],
            "params": [steps["params"][run.pk].get(key) for key in param_keys],
        }
        for run in page
    ]
    filtered = any(k not in LIST_VIEW_KEYS and v for k, v in request.GET.items())
    context = {
        "workspace": workspace,
        "filterset": filterset,
        "page": page,
        "rows": rows,
        "archived": archived,
        "can_edit": role_allows(workspace, Role.EDITOR),
        "metric_names": metric_names,
        "param_keys": param_keys,
        "columns_from": columns_from,
        "header": _list_header(sort, metric_names, param_keys),
        "sort": sort.text if sort is not None else "",
        "sort_error": sort_error,
        "available_metrics": sorted(used_metrics),
        "available_params": list(dict.fromkeys([*param_keys, *steps["param_keys"]])),
        "filtered": filtered,
        "expression": expression,
        "query_error": query_error,
    }
    return TemplateResponse(request, "runs_app/run_list.html", context)


# Query keys that choose what the list shows or how, not which runs.
LIST_VIEW_KEYS = {"page", "metric", "param", "columns", "sort", "filter", "q"}
MAX_PARAM_COLUMNS = 6
DEFAULT_METRIC_COLUMNS = 3
PARAM_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


def _run_sort(text: str) -> tuple[query.Sort | None, DomainError | None]:
    """The list's order from `?sort=`; a column it cannot sort by is shown, and ignored."""
    if not text.strip():
        return None, None
    try:
        return query.parse_sort(text), None
    except query.SortError as error:
        return None, error


def _list_columns(
    request: HttpRequest, workspace: Workspace, used_metrics: list[str]
) -> tuple[list[str], list[str], str]:
    """The metric and param columns to show and where they come from: "url" (a link names
    them), "picked" (the column chooser, remembered for this user), "saved" (what this user
    picked last time) or "default" (the workspace's most used metrics)."""
    metrics = list(dict.fromkeys(m for m in request.GET.getlist("metric") if m))
    metrics = [m[:200] for m in metrics][:MAX_METRIC_COLUMNS]
    params = list(dict.fromkeys(p for p in request.GET.getlist("param") if PARAM_KEY.match(p)))
    params = params[:MAX_PARAM_COLUMNS]
    chooser = request.GET.get("columns")
    if chooser in ("1", "reset"):
        if chooser == "reset":
            metrics, params = [], []
        services.run_list_columns_set(request.user, workspace, metrics=metrics, params=params)
        if metrics or params:
            return metrics, params, "picked"
    elif metrics or params:
        return metrics, params, "url"
    else:
        saved = selectors.run_list_columns(request.user, workspace)
        if saved is not None:
            return (
                saved["metrics"][:MAX_METRIC_COLUMNS],
                saved["params"][:MAX_PARAM_COLUMNS],
                "saved",
            )
    return used_metrics[:DEFAULT_METRIC_COLUMNS], [], "default"


# (sort key, label, numeric, first click sorts descending); None: not sortable.
FIXED_COLUMNS: tuple[tuple[str | None, str, bool, bool], ...] = (
    ("id", "Run", False, True),
    ("pipeline", "Pipeline", False, False),
    ("status", "Status", False, False),
    (None, "Steps", False, False),
    ("duration", "Duration", False, True),
    ("user", "By", False, False),
    ("created", "Created", False, True),
)


def _list_header(
    sort: query.Sort | None, metrics: list[str], params: list[str]
) -> list[dict[str, Any]]:
    """The runs list's column headers: [{"label", "key", "numeric", "aria_sort", "next"}];
    `next` is the `?sort=` a click asks for: the other direction when the column is the
    sorted one, else its natural first direction (newest, largest, or a metric's better end
    first: accuracy high to low, loss low to high)."""
    current = sort or query.Sort("created", descending=True)
    columns = [
        *FIXED_COLUMNS,
        *((f"metrics.{m}", m, True, metric_direction(m) == "max") for m in metrics),
        *((f"params.{p}", p, True, False) for p in params),
    ]
    header = []
    for key, label, numeric, descending_first in columns:
        column: dict[str, Any] = {"label": label, "key": key, "numeric": numeric}
        if key is not None:
            active = key == current.column
            descending = not current.descending if active else descending_first
            column["next"] = ("-" if descending else "") + key
            column["aria_sort"] = (
                ("descending" if current.descending else "ascending") if active else "none"
            )
        header.append(column)
    return header


# --- the run explorer --------------------------------------------------------------------------


def _explorer_context(
    request: HttpRequest, workspace: Workspace, run: PipelineRun
) -> dict[str, Any]:
    steps = selectors.run_step_list(run)
    graph = selectors.run_graph(run.pipeline_version.spec, steps)
    # URLs are reversed once and filled in per row: a 200-step run renders in well under
    # 100 ms only when the template does no per-row reversing.
    step_url = reverse("runs:step", args=[workspace.slug, URL_SENTINEL, "__step__"])
    module_url = reverse("pipelines:module_version", args=[workspace.slug, "__mod__", URL_SENTINEL])

    def step_href(run_id: int, name: str) -> str:
        return step_url.replace(f"/{URL_SENTINEL}/", f"/{run_id}/").replace("__step__", name)

    def module_href(version: Any) -> str:
        return module_url.replace("__mod__", version.module.name).replace(
            f"/{URL_SENTINEL}/", f"/{version.number}/"
        )

    rows = [
        {
            "step": step,
            "href": step_href(run.pk, step.name),
            "module_href": module_href(step.module_version),
            "reused_href": (
                step_href(step.reused_from.run_id, step.name) if step.reused_from else None
            ),
        }
        for step in steps
    ]
    run_metrics = selectors.run_metrics(steps)  # drawn live while steps log them
    hrefs = {step.name: step_href(run.pk, step.name) for step in steps}
    summary = selectors.run_results(run, steps)
    if summary["failure"]:
        summary["failure"]["href"] = hrefs[summary["failure"]["step"]]
    for node in graph["nodes"]:
        if node["kind"] == "step":
            node["href"] = hrefs.get(node["id"]) or step_href(run.pk, node["id"])
    return {
        "workspace": workspace,
        "run": run,
        "steps": steps,
        "rows": rows,
        "graph": graph,
        "timeline": charts.timeline_rows(steps, timezone.now()),
        "run_metrics": run_metrics,
        "summary": summary,
        "metric_figures": charts.metric_figures(run_metrics["series"]),
        "active": selectors.run_is_active(run),
        "can_edit": role_allows(workspace, Role.EDITOR),
        "poll": LIVE_POLL,
    }


@login_required
def run_detail(request: HttpRequest, slug: str, run_id: int) -> TemplateResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id)
    workspace = run.workspace
    context = _explorer_context(request, workspace, run)
    context["newer_modules"] = newer_modules(run.pipeline_version)  # not in the live part
    context["annotations"] = selectors.run_annotations(run)
    return TemplateResponse(request, "runs_app/run_detail.html", context)


ANNOTATIONS = "runs_app/_run_annotations.html"


def _tags_from_text(text: str) -> list[str]:
    """The tags typed in the page's one field, separated by commas or spaces."""
    return [t for t in text.replace(",", " ").split() if t]


@login_required
@require_http_methods(["GET", "POST"])
def run_annotations(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    """A run's tags and note, edited in place: GET shows them (`?edit=1`, editors: the form),
    POST saves them. htmx gets the section back to swap in; a plain browser gets a page with
    the form, and after saving goes back to the run."""
    htmx = request.headers.get("HX-Request") == "true"
    editing = request.method == "POST" or request.GET.get("edit") == "1"
    run = selectors.get_run_for_user(
        request.user, slug, run_id, role=Role.EDITOR if editing else Role.VIEWER
    )
    context: dict[str, Any] = {
        "workspace": run.workspace,
        "run": run,
        "can_edit": role_allows(run.workspace, Role.EDITOR),
        "annotations": selectors.run_annotations(run),
    }
    if request.method == "POST":
        tags_text = request.POST.get("tags", "")
        note = request.POST.get("note", "").replace("\r\n", "\n")
        try:
            context["annotations"] = services.run_annotate(
                run, tags=_tags_from_text(tags_text), note=note, user=request.user
            )
        except DomainError as error:
            context.update(errors=error.fields or {}, tags_text=tags_text, note=note)
            name = f"{ANNOTATIONS}#form" if htmx else "runs_app/run_annotations.html"
            return TemplateResponse(request, name, context, status=200 if htmx else 400)
        if not htmx:
            messages.success(request, f"Run {run.pk}: tags and note saved.")
            return redirect("runs:detail", slug=slug, run_id=run.pk)
        return TemplateResponse(request, f"{ANNOTATIONS}#display", context)
    if editing:
        context.update(
            tags_text=" ".join(context["annotations"]["tags"]),
            note=context["annotations"]["note"],
        )
        if not htmx:
            return TemplateResponse(request, "runs_app/run_annotations.html", context)
    return TemplateResponse(request, f"{ANNOTATIONS}#{'form' if editing else 'display'}", context)


@login_required
def run_live(request: HttpRequest, slug: str, run_id: int) -> TemplateResponse:
    """The live part of the explorer (graph data, status, steps, timeline) for htmx polling;
    it stops polling itself once the run is terminal."""
    run = selectors.get_run_for_user(request.user, slug, run_id)
    workspace = run.workspace
    context = _explorer_context(request, workspace, run)
    return TemplateResponse(request, "runs_app/run_detail.html#live", context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id, role=Role.EDITOR)
    if services.run_cancel(run, user=request.user):
        messages.success(request, f"Run {run.pk}: cancel requested.")
    else:
        messages.info(request, f"Run {run.pk} had already finished; nothing to cancel.")
    return redirect("runs:detail", slug=slug, run_id=run.pk)


@login_required
def storage_page(request: HttpRequest, slug: str) -> TemplateResponse:
    """What the workspace stores: by pipeline, step and media type, over time, the biggest
    artifacts, and what retention would free."""
    workspace = get_workspace_for_user(request.user, slug)
    storage = selectors.workspace_storage(workspace)
    figures = [
        (
            "storage-by-pipeline",
            "By pipeline",
            charts.storage_bars_figure(storage["by_pipeline"], "pipeline"),
        ),
        (
            "storage-by-media-type",
            "By media type",
            charts.storage_bars_figure(storage["by_media_type"], "media_type"),
        ),
        ("storage-over-time", "Over time", charts.storage_over_time_figure(storage["over_time"])),
    ]
    context = {
        "workspace": workspace,
        "storage": storage,
        "figures": [{"element_id": i, "name": n, "figure": f} for i, n, f in figures],
        "plan": retention.retention_plan(workspace),
    }
    return TemplateResponse(request, "runs_app/storage.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def retention_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The workspace's retention policy, what it would delete now, and (owners) its form and
    an "apply now" button."""
    workspace = get_workspace_for_user(request.user, slug)
    status = 200
    error = ""
    if request.method == "POST":
        workspace = get_workspace_for_user(request.user, slug, Role.OWNER)
        if request.POST.get("action") == "apply":
            plan = retention.retention_apply(workspace, user=request.user)
            messages.success(request, f"Deleted {len(plan.runs)} run(s) the policy does not keep.")
            return redirect("runs:retention", slug=slug)
        try:
            retention.policy_set(
                workspace,
                enabled=request.POST.get("enabled") == "on",
                keep_last=_positive_or_none(request.POST.get("keep_last")),
                keep_days=_positive_or_none(request.POST.get("keep_days")),
                user=request.user,
            )
        except (DomainError, ValueError) as problem:
            error, status = str(problem), 400
        else:
            messages.success(request, "Retention policy saved.")
            return redirect("runs:retention", slug=slug)
    policy = retention.policy_of(workspace)
    context = {
        "workspace": workspace,
        "policy": policy,
        "plan": retention.retention_plan(workspace, policy),
        "can_own": role_allows(workspace, Role.OWNER),
        "error": error,
    }
    return TemplateResponse(request, "runs_app/retention.html", context, status=status)


def _positive_or_none(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{text!r}: a whole number of 1 or more, or empty")
    return int(text)


BULK_ACTIONS = ("archive", "restore", "delete")


@login_required
@require_POST
def runs_bulk(request: HttpRequest, slug: str) -> HttpResponse:
    """Archive, restore or delete the runs ticked in the runs list (editors), or compare
    them (anyone who sees them: off to the compare page's shareable address)."""
    action = request.POST.get("action")
    role = Role.VIEWER if action == "compare" else Role.EDITOR
    workspace = get_workspace_for_user(request.user, slug, role)
    back = request.POST.get("back", "")
    if not back.startswith(f"/w/{workspace.slug}/runs/"):
        back = reverse("runs:list", args=[workspace.slug])
    if action == "compare":
        try:
            ids = compare_ids(request.POST.getlist("runs"))
        except DomainError as error:
            messages.error(request, f"{error.message} Tick {COMPARE_MIN} to {COMPARE_MAX} runs.")
            return redirect(back)
        compare = reverse("runs:compare", args=[workspace.slug])
        return redirect(f"{compare}?runs={','.join(map(str, ids))}")
    ids = [int(v) for v in request.POST.getlist("runs") if v.isdigit()]
    if action not in BULK_ACTIONS or not ids:
        messages.error(request, "Tick the runs first, then choose archive, restore or delete.")
        return redirect(back)
    runs = PipelineRun.objects.filter(workspace=workspace, pk__in=ids)
    try:
        if action == "delete":
            messages.success(
                request, f"Deleted {services.runs_delete(runs, user=request.user)} run(s)."
            )
        else:
            count = services.runs_archive(runs, archived=action == "archive")
            messages.success(
                request, f"{'Archived' if action == 'archive' else 'Restored'} {count} run(s)."
            )
    except DomainError as error:
        messages.error(request, str(error))
    return redirect(back)


@login_required
@require_POST
def run_pin(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id, role=Role.EDITOR)
    pinned = request.POST.get("pinned") != "0"
    services.run_pin(run, pinned=pinned)
    messages.success(request, f"Run {run.pk} {'pinned: never deleted' if pinned else 'unpinned'}.")
    return redirect("runs:detail", slug=slug, run_id=run.pk)


def _forgot(request: HttpRequest, count: int, what: str) -> None:
    if count:
        messages.success(
            request, f"Forgot {count} cached result(s) of {what}: later runs recompute them."
        )
    else:
        messages.info(request, f"{what.capitalize()} has no cached result to forget.")


@login_required
@require_POST
def run_forget(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id, role=Role.EDITOR)
    what = f"run {run.pk}"
    _forgot(request, services.steps_forget(run.steps.all(), what=what, user=request.user), what)
    return redirect("runs:detail", slug=slug, run_id=run.pk)


@login_required
@require_POST
def step_forget(request: HttpRequest, slug: str, run_id: int, name: str) -> HttpResponse:
    step = selectors.get_step_for_user(request.user, slug, run_id, name, role=Role.EDITOR)
    what = f"step {step.name} of run {run_id}"
    steps = StepRun.objects.filter(pk=step.pk)
    _forgot(request, services.steps_forget(steps, what=what, user=request.user), what)
    return redirect("runs:step", slug=slug, run_id=run_id, name=step.name)


@login_required
@require_POST
def module_version_forget(request: HttpRequest, slug: str, name: str, number: int) -> HttpResponse:
    version = get_module_version_for_user(request.user, slug, name, number, role=Role.EDITOR)
    what = f"module {version.ref}"
    steps = StepRun.objects.filter(module_version=version)
    _forgot(request, services.steps_forget(steps, what=what, user=request.user), what)
    return redirect("pipelines:module_version", slug=slug, name=name, number=number)


@login_required
@require_POST
def run_rerun(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id, role=Role.EDITOR)
    from_step = request.POST.get("from_step") or None
    try:
        new = services.run_rerun(run, from_step=from_step, user=request.user)
    except DomainError as error:
        messages.error(request, str(error))
        return redirect("runs:detail", slug=slug, run_id=run.pk)
    what = f"from step {from_step}" if from_step else "reusing what did not change"
    messages.success(request, f"Run {new.pk} started: a rerun of run {run.pk}, {what}.")
    return redirect("runs:detail", slug=slug, run_id=new.pk)


def _clone_steps(run: PipelineRun, steps: list[StepRun], refs: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "name": step.name,
            "params": dict(step.params or {}),
            "module": step.module_version.ref,
            "module_choices": refs,
        }
        for step in steps
    ]


@login_required
def run_clone(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    """Clone a run with changes: another module version for a step, other params."""
    run = selectors.get_run_for_user(request.user, slug, run_id, role=Role.EDITOR)
    workspace = run.workspace
    steps = selectors.run_step_list(run)
    spec_steps = _clone_steps(run, steps, module_version_refs(workspace))
    data = request.POST if request.method == "POST" else None
    form = StepParamsForm(spec_steps, data, with_modules=True)
    message = request.POST.get("message", "") if data else ""
    if form.is_bound and form.is_valid():
        params = form.changed_params()
        modules = form.changed_modules()
        changes = {
            name: {"module": ref, **({"params": params[name]} if name in params else {})}
            for name, ref in modules.items()
        }
        overrides = {
            f"{name}.{param}": value
            for name, values in params.items()
            if name not in modules
            for param, value in values.items()
        }
        try:
            new = services.run_clone(
                run, changes=changes, param_overrides=overrides, message=message, user=request.user
            )
        except DomainError as error:
            form.add_domain_errors(error.fields or {"non_field_errors": [error.message]})
        else:
            messages.success(request, f"Run {new.pk} started: a clone of run {run.pk}.")
            return redirect("runs:detail", slug=slug, run_id=new.pk)
    context = {"workspace": workspace, "run": run, "form": form, "message": message}
    return TemplateResponse(request, "runs_app/run_clone.html", context)


@login_required
def run_lineage(request: HttpRequest, slug: str, run_id: int) -> TemplateResponse:
    run = selectors.get_run_for_user(request.user, slug, run_id)
    workspace = run.workspace
    lineage = selectors.run_lineage(run)
    _link_lineage(workspace, lineage)
    nodes = {node["id"]: node for node in lineage["nodes"]}
    edge_rows = [
        {**edge, "from": nodes[edge["source"]], "to": nodes[edge["target"]]}
        for edge in lineage["edges"]
        if edge["kind"] != "step_of"
    ]
    context = {"workspace": workspace, "run": run, "lineage": lineage, "edge_rows": edge_rows}
    return TemplateResponse(request, "runs_app/run_lineage.html", context)


def _link_lineage(workspace: Workspace, lineage: dict[str, Any]) -> None:
    """Give each lineage node the URL of its page."""
    for node in lineage["nodes"]:
        if node["kind"] == "run":
            node["href"] = reverse("runs:detail", args=[workspace.slug, node["id"][4:]])
        elif node["kind"] == "step":
            node["href"] = reverse("runs:step", args=[workspace.slug, node["run"], node["name"]])
        elif node["kind"] == "artifact":
            node["href"] = reverse("runs:artifact", args=[workspace.slug, node["sha256"]])


@login_required
def run_outputs_zip(request: HttpRequest, slug: str, run_id: int) -> HttpResponseBase:
    """The run's outputs (or `?step=a&step=b`'s) as one streamed zip with manifest.json."""
    run = selectors.get_run_for_user(request.user, slug, run_id)
    steps = [s for s in request.GET.getlist("step") if s] or None
    try:
        return downloads.audited(downloads.run_zip_response(run, steps), request.user, run=run)
    except DomainError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain; charset=utf-8")


# --- steps -----------------------------------------------------------------------------------


def _log_context(step: StepRun, request: HttpRequest) -> dict[str, Any]:
    attempts = selectors.step_log_attempts(step)
    wanted = int_or_none(request.GET.get("attempt"))
    attempt = wanted if wanted in attempts else (attempts[-1] if attempts else step.attempt)
    query = request.GET.get("q", "").strip()[:200]
    context: dict[str, Any] = {"attempts": attempts, "attempt": attempt, "query": query}
    if query:
        context["search"] = selectors.step_log_search(step, attempt, query)
    else:
        context["log"] = selectors.step_log_tail(step, attempt)
    context["log_live"] = step.status not in STEP_TERMINAL and not query
    return context


@login_required
def step_detail(request: HttpRequest, slug: str, run_id: int, name: str) -> TemplateResponse:
    step = selectors.get_step_for_user(request.user, slug, run_id, name)
    workspace = step.run.workspace
    source = selectors.results_source(step)  # a reused step shows its source's results
    metrics = selectors.step_metrics(source)
    io = selectors.step_io(step)
    for number, output in enumerate(io["outputs"]):  # each reads a bounded head of its bytes
        output["preview"] = (
            previews.artifact_preview(output["artifact"]) if number < STEP_PREVIEWS else None
        )
    context = {
        "workspace": workspace,
        "run": step.run,
        "step": step,
        "io": io,
        "previews_shown": STEP_PREVIEWS,
        "metrics": metrics,
        "figures": charts.metric_figures(metrics["series"]),
        "explanation": selectors.reuse_explanation(step),
        "waiting_for": fleet.waiting_for(step),
        "can_edit": role_allows(workspace, Role.EDITOR),
        "run_finished": step.run.status in RUN_TERMINAL,
        "poll": LOG_POLL,
        "metrics_poll": LIVE_POLL,
        "metrics_live": step.status not in STEP_TERMINAL,
        "results_from_run": source.run_id if source.pk != step.pk else None,
        **_log_context(source, request),
    }
    return TemplateResponse(request, "runs_app/step_detail.html", context)


@login_required
def step_metrics(request: HttpRequest, slug: str, run_id: int, name: str) -> TemplateResponse:
    """htmx: the next metrics poller, and the metrics table and charts out of band when
    points arrived since `seen` or the step ended (then the poller polls no more)."""
    step = selectors.get_step_for_user(request.user, slug, run_id, name)
    source = selectors.results_source(step)
    metrics = selectors.step_metrics(source)
    live = step.status not in STEP_TERMINAL
    context = {
        "workspace": step.run.workspace,
        "run": step.run,
        "step": step,
        "metrics": metrics,
        "figures": charts.metric_figures(metrics["series"]),
        "metrics_poll": LIVE_POLL,
        "metrics_live": live,
        "results_from_run": source.run_id if source.pk != step.pk else None,
        "changed": not live or metrics["count"] != int_or_none(request.GET.get("seen")),
        "oob": True,
    }
    return TemplateResponse(request, "runs_app/_step_metrics_update.html", context)


@login_required
def step_log(request: HttpRequest, slug: str, run_id: int, name: str) -> TemplateResponse:
    """htmx: with `after`, the log text since that byte offset (appended out of band) and
    the next poller; without it, the whole log section (tail or search results)."""
    step = selectors.get_step_for_user(request.user, slug, run_id, name)
    source = selectors.results_source(step)  # a reused step's log is its source's
    workspace = step.run.workspace
    after = int_or_none(request.GET.get("after"))
    context: dict[str, Any] = {"workspace": workspace, "run": step.run, "step": step}
    context["poll"] = LOG_POLL
    if after is not None:
        attempt = int_or_none(request.GET.get("attempt")) or source.attempt
        context.update(
            attempt=attempt,
            log=selectors.step_log_tail(source, attempt, after=after),
            log_live=step.status not in STEP_TERMINAL,
            appended=True,
        )
        return TemplateResponse(request, "runs_app/step_detail.html#log-poller", context)
    context.update(_log_context(source, request))
    return TemplateResponse(request, "runs_app/step_detail.html#log-body", context)


# --- artifacts ---------------------------------------------------------------------------------


@login_required
def artifact_detail(request: HttpRequest, slug: str, sha256: str) -> TemplateResponse:
    artifact = selectors.get_artifact_for_user(request.user, slug, sha256)
    workspace = artifact.workspace
    usage = selectors.artifact_usage(artifact)
    lineage = selectors.artifact_lineage(artifact)
    _link_lineage(workspace, lineage)
    context = {
        "workspace": workspace,
        "artifact": artifact,
        "preview": previews.artifact_preview(artifact),
        "usage": usage,
        "lineage": lineage,
        "filename": _artifact_filename(artifact, usage),
    }
    return TemplateResponse(request, "runs_app/artifact_detail.html", context)


def _artifact_filename(artifact: Any, usage: dict[str, Any] | None = None) -> str:
    usage = usage if usage is not None else selectors.artifact_usage(artifact, limit=1)
    name = None
    if usage["original"] is not None:
        name = usage["original"].name
    elif usage["datasets"]:
        name = usage["datasets"][0].dataset.name
    return store.artifact_filename(artifact, name)


@login_required
def artifact_download(request: HttpRequest, slug: str, sha256: str) -> HttpResponseBase:
    artifact = selectors.get_artifact_for_user(request.user, slug, sha256)
    response = artifact_http.artifact_download_response(
        request, artifact, _artifact_filename(artifact)
    )
    return downloads.audited(response, request.user, artifact=artifact)


@login_required
def artifact_image(request: HttpRequest, slug: str, sha256: str) -> HttpResponseBase:
    """A raster image for the preview's <img>; any other type is a 404."""
    artifact = selectors.get_artifact_for_user(request.user, slug, sha256)
    return artifact_http.artifact_inline_image_response(artifact)


@login_required
@xframe_options_sameorigin
def artifact_frame(request: HttpRequest, slug: str, sha256: str) -> HttpResponseBase:
    """The sandboxed preview of user HTML, SVG or a plotly figure.

    The response carries its own Content-Security-Policy (artifacts.http.FRAME_CSP):
    `sandbox allow-scripts`, never allow-same-origin, so the browser gives it an opaque
    origin and nothing in it can read the app's cookies or call the app as the user; and
    no fetch, form or outside resource, so it cannot beacon anywhere.

    Its active content renders only when the browser fetches it as a frame
    (`Sec-Fetch-Dest: iframe`): opened as a document (a tab, a link) it redirects to the
    artifact's page, so the artifact's script never has a top-level tab to navigate.
    """
    artifact = selectors.get_artifact_for_user(request.user, slug, sha256)
    if request.headers.get("Sec-Fetch-Dest") != "iframe":
        return redirect("runs:artifact", slug, sha256)
    if artifact.kind != "file":
        raise Http404("Nothing to show in a frame.")
    preview = previews.artifact_preview(artifact)
    if preview["kind"] != "frame":
        raise Http404("This artifact is not previewed in a frame.")
    base = store.media_base(artifact.media_type)
    data = previews.artifact_frame_bytes(artifact)
    response: HttpResponseBase
    if base == store.PLOTLY_TYPE:
        import json

        try:
            figure = json.loads(data)
        except ValueError:
            figure = {"data": [], "layout": {"title": {"text": "Not a valid plotly figure"}}}
        response = TemplateResponse(request, "runs_app/plotly_frame.html", {"figure": figure})
        response.render()
    else:
        response = HttpResponse(data, content_type=base)
    response["Content-Security-Policy"] = artifact_http.FRAME_CSP
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# --- compare -----------------------------------------------------------------------------------


@login_required
def run_compare(request: HttpRequest, slug: str) -> TemplateResponse:
    """2 to 10 runs side by side (`?runs=1,2,3`, or `?a=&b=` for two): params that differ
    first, metrics with the best of each row, step-wise metrics overlaid, which runs share
    each step's cache key, and two of them (`a` and `b`, the first two by default) in
    detail: params, graph, code and outputs. Without runs, a form to pick them."""
    workspace = get_workspace_for_user(request.user, slug)
    a_id, b_id = int_or_none(request.GET.get("a")), int_or_none(request.GET.get("b"))
    wanted = [v for v in request.GET.getlist("runs") if v.strip()]
    if not wanted and a_id is not None and b_id is not None:
        wanted = [f"{a_id},{b_id}"]
    context: dict[str, Any] = {
        "workspace": workspace,
        "compare_url": reverse("runs:compare", args=[slug]),
        "limits": (COMPARE_MIN, COMPARE_MAX),
        "a_id": a_id,
    }
    error = None
    if wanted:
        try:
            ids = compare_ids(wanted)
        except DomainError as problem:
            error = problem
        else:
            context.update(_compare_context(request, slug, ids, a_id, b_id))
            return TemplateResponse(request, "runs_app/compare.html", context)
    context["error"] = error
    context["recent"] = list(selectors.run_list(workspace)[:30])
    return TemplateResponse(request, "runs_app/compare.html", context, status=400 if error else 200)


def _compare_context(
    request: HttpRequest, slug: str, ids: list[int], a_id: int | None, b_id: int | None
) -> dict[str, Any]:
    runs = selectors.get_runs_for_user(request.user, slug, ids)
    comparison = runs_compare(runs)
    by_id = {run.pk: run for run in runs}
    # The pair shown in detail: `a` and `b` when both are among the runs, else the first two.
    if a_id not in by_id or b_id not in by_id or a_id == b_id:
        a_id, b_id = ids[0], ids[1]
    a, b = by_id[a_id], by_id[b_id]
    diff = pair_diff(comparison["facts"][a.pk], comparison["facts"][b.pk], a, b)
    all_params = request.GET.get("params") == "all"
    link_outputs(runs[0].workspace, diff["outputs"], a.pk, b.pk)
    runs_text = ",".join(map(str, ids))
    for row in comparison["metrics"]:
        row["cells"] = list(zip(row["values"], row["best"], strict=True))
    return {
        "runs": runs,
        "runs_text": runs_text,
        "comparison": comparison,
        "same_params": [row for row in comparison["params"] if row["same"]],
        "columns": list(zip(runs, comparison["runs"], strict=True)),
        "curves": charts.compare_curve_figures(comparison["series"]),
        "share_url": request.build_absolute_uri(
            f"{reverse('runs:compare', args=[slug])}?runs={runs_text}"
        ),
        "a": a,
        "b": b,
        "sides": [a, b],
        "diff": diff,
        "all_params": all_params,
        "param_rows": [r for r in diff["params"] if all_params or not r["same"]],
    }


def link_outputs(workspace: Workspace, pairs: list[dict[str, Any]], a_id: int, b_id: int) -> None:
    """Give each side of each output pair its run, artifact page and image URLs."""
    page = reverse("runs:artifact", args=[workspace.slug, "0" * 64])
    image = reverse("runs:artifact_image", args=[workspace.slug, "0" * 64])
    for pair in pairs:
        pair["sides"] = []
        for key, run_id in (("a", a_id), ("b", b_id)):
            artifact = pair[key]
            sha = artifact["sha256"] if artifact else None
            pair["sides"].append(
                {
                    "run": run_id,
                    "artifact": artifact,
                    "href": page.replace("0" * 64, sha) if sha else None,
                    "image_href": image.replace("0" * 64, sha) if sha else None,
                    "preview": pair.get(f"{key}_preview"),
                }
            )
        pair["a_href"] = pair["sides"][0]["href"]
