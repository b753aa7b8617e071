"""Sweep pages: the list, the create form, a sweep's live progress, extend, cancel, promote, and
the comparison with its charts. Thin views over the package's services and selectors."""

from __future__ import annotations

import itertools
from typing import Any

from csp.decorators import csp_update
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    QueryDict,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from pipelines_app.selectors import (
    get_pipeline_version_for_user,
    module_version_refs,
    pipeline_list,
    pipeline_step_list_with_interfaces,
    pipeline_version_by_ref,
)
from pipelines_app.specs import topological_order
from runs_app.models import PipelineRun, Sweep
from runs_app.sweeps import charts, forms, plan, selectors, services, stats
from runs_app.sweeps.forms import ExtendForm, SweepForm
from runs_app.views import URL_SENTINEL, int_or_none
from workspaces.errors import DomainError
from workspaces.models import Role, Workspace
from workspaces.selectors import get_workspace_for_user, role_allows

# --- sweeps ------------------------------------------------------------------------------------
# The sweep pages: list, create from a form, the sweep with live progress and its actions,
# and the comparison. Reads go through sweeps.selectors (a fixed number of queries
# whatever the number of runs), statistics through sweeps.stats, writes through
# runs_app.services; charts are built by runs_app.charts and handed over with json_script.

SWEEPS_PER_PAGE = 50
SWEEP_TABLE_RUNS = 200  # the sweep page lists this many runs; the runs list has them all
SWEEP_POLL = "2s"


@login_required
def sweep_list(request: HttpRequest, slug: str) -> TemplateResponse:
    workspace = get_workspace_for_user(request.user, slug)
    page = Paginator(selectors.workspace_sweeps(workspace), SWEEPS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    rows = [
        {"sweep": sweep, "size": plan.sweep_size(sweep.axes, sweep.replicates)} for sweep in page
    ]
    context = {
        "workspace": workspace,
        "page": page,
        "rows": rows,
        "can_edit": role_allows(workspace, Role.EDITOR),
    }
    return TemplateResponse(request, "runs_app/sweep_list.html", context)


def _form_steps(version: Any) -> list[dict[str, Any]]:
    """The base version's steps for the sweep form, with each one's int params (seeds)."""
    steps = []
    for row in pipeline_step_list_with_interfaces(version):
        declared = (row.module_version.interface or {}).get("params", {})
        steps.append(
            {
                "name": row.name,
                "module": row.module_version.ref,
                "params": dict(row.params or {}),
                "int_params": [p for p, spec in declared.items() if spec.get("type") == "int"],
            }
        )
    return steps


def _base_version(request: HttpRequest, workspace: Workspace, slug: str) -> Any:
    """The base version `?pipeline=NAME&version=N` (the latest without a number)."""
    name = request.GET.get("pipeline") or request.POST.get("pipeline") or ""
    number = int_or_none(request.GET.get("version") or request.POST.get("version"))
    if not name:
        return None
    if number is not None:
        return get_pipeline_version_for_user(request.user, slug, name, number, Role.EDITOR)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise Http404("No such pipeline.")
    return pipeline_version_by_ref(workspace, name)


@login_required
def sweep_new(request: HttpRequest, slug: str) -> HttpResponse:
    """Create a sweep from a form: per step of the base version, variant rows (label,
    module version, params); replicates and seed params. Problems are shown next to the
    inputs their paths name, on a 400 page, and nothing is started."""
    workspace = get_workspace_for_user(request.user, slug, Role.EDITOR)
    version = _base_version(request, workspace, slug)
    context: dict[str, Any] = {"workspace": workspace, "version": version}
    if version is None:
        context["pipelines"] = list(pipeline_list(workspace).order_by("name"))
        return TemplateResponse(request, "runs_app/sweep_new.html", context)
    slots = int_or_none(request.POST.get("slots") or request.GET.get("slots"))
    slots = slots or forms.DEFAULT_SLOTS
    data = request.POST if request.method == "POST" else None
    initial: dict[str, Any] = {"name": f"{version.ref} sweep"}
    if data is not None and "more" in data:
        # More rows: the same form, unbound (no errors yet), with what was typed kept.
        initial = {key: data.getlist(key) if key == "seed_params" else data[key] for key in data}
        initial["reuse"] = "reuse" in data
        data, slots = None, slots + forms.MORE_SLOTS
    steps, refs = _form_steps(version), module_version_refs(workspace)
    form = SweepForm(steps, refs, data, slots=slots, initial=initial)
    status = 200
    if data is not None:
        status = 400
        if form.is_valid():
            try:
                sweep = services.sweep_create(version, user=request.user, **form.sweep_kwargs())
            except DomainError as error:
                form.add_domain_errors(error.fields)
                context["error"] = error
            else:
                started = sweep.runs.count()
                messages.success(request, f"Sweep {sweep.name!r}: {started} runs started.")
                return redirect("runs:sweep_detail", slug=slug, sweep_id=sweep.pk)
    context.update(form=form, slots=form.slots, can_add_slots=form.slots < forms.MAX_SLOTS)
    return TemplateResponse(request, "runs_app/sweep_new.html", context, status=status)


def _axis_labels(axes: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {step: [v["label"] for v in variants] for step, variants in axes.items()}


def _default_metric(
    metrics: list[dict[str, Any]], order: list[str]
) -> tuple[str | None, str | None]:
    """(metric, step) a sweep shows first: the first metric of the last step in pipeline
    order that logs one (an evaluation step, usually)."""
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(metrics, key=lambda m: (-rank.get(m["step"], -1), m["name"]))
    return (ranked[0]["name"], ranked[0]["step"]) if ranked else (None, None)


def _run_rows(
    sweep: Sweep, axes: dict[str, list[str]], metric: str | None, step: str | None
) -> list[dict[str, Any]]:
    """The sweep's runs for its table: labels in axis order, replicate, status, the value of
    `metric` (None when not logged or none chosen), the run's URL. Three queries."""
    rows: list[Any]
    try:
        rows = selectors.sweep_rows(sweep, metric or "", step) if metric else []
    except DomainError:
        rows = []
    if not rows:  # no metric yet: the runs without values
        rows = [
            {
                "run": pk,
                "choices": {k: str(v) for k, v in variant.items() if k != plan.REPLICATE_KEY},
                "replicate": int(variant.get(plan.REPLICATE_KEY, 0)),
                "status": status,
                "value": None,
            }
            for pk, variant, status in PipelineRun.objects.filter(sweep=sweep)
            .order_by("pk")
            .values_list("pk", "variant", "status")
        ]
    # Reversed once and filled in per row (a 1,000-run sweep re-renders every poll).
    href = reverse("runs:detail", args=[sweep.workspace.slug, URL_SENTINEL])
    shown = [
        {
            **row,
            "labels": [row["choices"].get(s, "—") for s in axes],
            "href": href.replace(f"/{URL_SENTINEL}/", f"/{row['run']}/"),
        }
        for row in rows[:SWEEP_TABLE_RUNS]
    ]
    if len(rows) > SWEEP_TABLE_RUNS:
        shown.append({"more": len(rows) - SWEEP_TABLE_RUNS})
    return shown


def _event_rows(workspace: Workspace, sweep: Sweep) -> list[dict[str, Any]]:
    """The sweep's history, each promotion with the URL of the version it made."""
    rows = []
    for event in sweep.events.select_related("by").order_by("at", "id"):
        href = None
        name, _, number = str(event.data.get("ref") or "").rpartition("@")
        if event.kind == "promoted" and name and number.isdigit():
            href = reverse("runs:pipeline_version", args=[workspace.slug, name, int(number)])
        rows.append({"event": event, "href": href})
    return rows


def _sweep_context(
    request: HttpRequest, workspace: Workspace, sweep: Sweep, **extra: Any
) -> dict[str, Any]:
    axes = selectors.sweep_axes(sweep)
    labels = _axis_labels(axes)
    metrics = selectors.sweep_metrics(sweep)
    metric, step = _default_metric(metrics, topological_order(sweep.base_version.spec["steps"]))
    progress = selectors.sweep_progress(sweep)
    can_edit = role_allows(workspace, Role.EDITOR)
    context = {
        "workspace": workspace,
        "sweep": sweep,
        "axes": axes,
        "labels": labels,
        "progress": progress,
        "active": not progress["finished"],
        "metric": metric,
        "metric_step": step,
        "rows": _run_rows(sweep, labels, metric, step),
        "can_edit": can_edit,
        "poll": SWEEP_POLL,
        "events": _event_rows(workspace, sweep),
        "compare_url": reverse("runs:sweep_compare", args=[workspace.slug, sweep.pk]),
    }
    if can_edit and "extend_form" not in extra and sweep.canceled_at is None:
        context["extend_form"] = ExtendForm(list(axes), module_version_refs(workspace))
    context.update(extra)
    return context


def _sweep_for(request: HttpRequest, slug: str, sweep_id: int, role: str = Role.VIEWER) -> Any:
    """(workspace with the user's role, sweep): 404 for a stranger, 403 below `role`."""
    sweep = selectors.get_sweep_for_user(request.user, slug, sweep_id, role)
    return sweep.workspace, sweep


@login_required
def sweep_detail(request: HttpRequest, slug: str, sweep_id: int) -> TemplateResponse:
    workspace, sweep = _sweep_for(request, slug, sweep_id)
    context = _sweep_context(request, workspace, sweep)
    return TemplateResponse(request, "runs_app/sweep_detail.html", context)


@login_required
def sweep_live(request: HttpRequest, slug: str, sweep_id: int) -> TemplateResponse:
    """The live part of the sweep page (progress and runs) for htmx polling; it stops
    polling itself once every run of the sweep is terminal."""
    workspace, sweep = _sweep_for(request, slug, sweep_id)
    context = _sweep_context(request, workspace, sweep)
    return TemplateResponse(request, "runs_app/sweep_detail.html#live", context)


@login_required
@require_POST
def sweep_cancel(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    _, sweep = _sweep_for(request, slug, sweep_id, Role.EDITOR)
    canceled = services.sweep_cancel(sweep, by=request.user)
    messages.success(request, f"Sweep {sweep.name!r} canceled ({canceled} unfinished runs).")
    return redirect("runs:sweep_detail", slug=slug, sweep_id=sweep.pk)


@login_required
@require_POST
def sweep_extend(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    """Append a variant to an axis: only the new combinations run."""
    workspace, sweep = _sweep_for(request, slug, sweep_id, Role.EDITOR)
    axes = selectors.sweep_axes(sweep)
    form = ExtendForm(list(axes), module_version_refs(workspace), request.POST)
    status = 400
    if form.is_valid():
        step = form.cleaned_data["step"]
        taken = [v["label"] for v in axes.get(step, [])]
        try:
            runs = services.sweep_extend(sweep, step, form.variant(taken), user=request.user)
        except DomainError as error:
            form.add_domain_errors(error.fields or {"variant": [error.message]})
            status = error.status_code
        else:
            messages.success(request, f"Axis {step}: a variant added, {len(runs)} new runs.")
            return redirect("runs:sweep_detail", slug=slug, sweep_id=sweep.pk)
    context = _sweep_context(request, workspace, sweep, extend_form=form)
    return TemplateResponse(request, "runs_app/sweep_detail.html", context, status=status)


@login_required
@require_POST
def sweep_promote(request: HttpRequest, slug: str, sweep_id: int) -> HttpResponse:
    """Make a variant (`variant.<step>` = label for each axis) the next version of the base
    pipeline; then show that version."""
    workspace, sweep = _sweep_for(request, slug, sweep_id, Role.EDITOR)
    choices = {
        key.removeprefix("variant."): str(request.POST[key])
        for key in request.POST
        if key.startswith("variant.")
    }
    newest = sweep.base_version.pipeline.versions.order_by("-number").first()
    try:
        version = services.sweep_promote(sweep, choices, user=request.user)
    except DomainError as error:
        context = _sweep_context(request, workspace, sweep, promote_error=error)
        return TemplateResponse(request, "runs_app/sweep_detail.html", context, status=400)
    if newest is not None and version.number <= newest.number:
        messages.info(
            request,
            f"{plan.variant_name(choices)} of sweep {sweep.name!r} is already {version.ref}: "
            "no copy was made.",
        )
    else:
        messages.success(
            request,
            f"{version.ref} is {plan.variant_name(choices)} of sweep {sweep.name!r} "
            f"(parent {sweep.base_version.ref}).",
        )
    return redirect(
        "runs:pipeline_version", slug=slug, name=version.pipeline.name, number=version.number
    )


@login_required
# The parallel-coordinates chart is one of plotly's WebGL (regl) traces, which compile their
# shaders with `new Function`: this page alone may eval (never inline script).
@csp_update({"script-src": ["'unsafe-eval'"]})  # type: ignore[arg-type]  # typed for (request) views
def sweep_compare(request: HttpRequest, slug: str, sweep_id: int) -> TemplateResponse:
    """The comparison on one metric: variants (mean, std, 95% CI, n, failed; the best
    marked), marginal effects per axis, A vs B (Welch), and the four charts. Every choice is
    in the URL (`?metric=&step=&aggregate=&direction=&a=&b=&curve=`), so it can be shared.
    Bad input (an unknown metric, a variant of no axis) is a 400 page that says so."""
    workspace, sweep = _sweep_for(request, slug, sweep_id)
    axes = selectors.sweep_axes(sweep)
    labels = _axis_labels(axes)
    metrics = selectors.sweep_metrics(sweep)
    order = topological_order(sweep.base_version.spec["steps"])
    choice = forms.CompareForm(request.GET, metrics, _default_metric(metrics, order)).choice()
    context: dict[str, Any] = {
        "workspace": workspace,
        "sweep": sweep,
        "labels": labels,
        "metrics": metrics,
        "metric_names": sorted({m["name"] for m in metrics}),
        "metric_steps": sorted({m["step"] for m in metrics}),
        "aggregates": stats.AGGREGATES,
        "directions": stats.DIRECTIONS,
        "levels": [str(level) for level in stats.LEVELS],
        "can_edit": role_allows(workspace, Role.EDITOR),
        "variant_options": _variant_options(labels),
        **choice,
    }
    errors: list[DomainError] = []
    rows: list[Any] = []
    comparison = None
    if not metrics and "metric" not in request.GET:
        # Nothing logged yet (the first steps are still running): an empty page, not a 400.
        context["nothing_logged"] = True
        return TemplateResponse(request, "runs_app/sweep_compare.html", context)
    try:
        rows = selectors.sweep_rows(sweep, choice["metric"], choice["step"], choice["aggregate"])
        comparison = stats.compare(
            rows,
            axes=axes,
            direction=choice["direction"],
            metric=choice["metric"],
            step=choice["step"],
            aggregate=choice["aggregate"],
            level=choice["level"],
        )
    except DomainError as error:
        errors.append(error)
    if comparison is not None:
        context.update(_comparison_context(request, choice, comparison, rows, labels, errors))
        context["charts"] = _sweep_charts(sweep, comparison, rows, labels, choice)
    context["errors"] = errors
    status = max((e.status_code for e in errors), default=200)
    return TemplateResponse(request, "runs_app/sweep_compare.html", context, status=status)


def _variant_options(labels: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The A/B pickers' options: every full variant, then each single choice of an axis
    (its runs pooled over the other axes)."""
    steps = list(labels)
    full = [
        forms.variant_param(dict(zip(steps, combo, strict=True)))
        for combo in itertools.product(*(labels[s] for s in steps))
    ]
    options = [(value, value) for value in full]
    if len(steps) > 1:
        for step in steps:
            for label in labels[step]:
                value = forms.variant_param({step: label})
                options.append((value, f"{value} (other axes pooled)"))
    return options


def _comparison_context(
    request: HttpRequest,
    choice: dict[str, Any],
    comparison: stats.Comparison,
    rows: list[Any],
    labels: dict[str, list[str]],
    errors: list[DomainError],
) -> dict[str, Any]:
    best = comparison.best.choices if comparison.best else None
    runner = comparison.runner_up.choices if comparison.runner_up else None
    verdict = comparison.verdict
    p_values = verdict.p_values if verdict else {}
    variant_rows = [
        {
            "v": v,
            "labels": list(v.choices.values()),
            "top": v.choices == best,
            # The badge and the green row only for a clear winner (stats.Verdict).
            "best": v.choices == best and verdict is not None and verdict.clear,
            "runner_up": v.choices == runner,
            "p": p_values.get(v.name),
            "has_p": v.name in p_values,
            "param": forms.variant_param(v.choices),
            "promote": [(f"variant.{s}", label) for s, label in v.choices.items()],
        }
        for v in comparison.variants
    ]
    a_text = choice["a_text"] or (forms.variant_param(best) if best else "")
    b_text = choice["b_text"] or (forms.variant_param(runner) if runner else "")
    a, b = forms.parse_variant(a_text, labels), forms.parse_variant(b_text, labels)
    versus = None
    if a_text and b_text:
        fields = {
            side: [f"{text!r} is not a variant of this sweep (write step=label, ...)"]
            for side, text, parsed in (("a", a_text, a), ("b", b_text, b))
            if parsed is None
        }
        try:
            if fields:
                raise DomainError("invalid_variant", "Pick two variants of this sweep.", fields)
            assert a is not None and b is not None
            versus = stats.compare_variants(rows, a, b)
        except DomainError as error:
            errors.append(error)
    return {
        "comparison": comparison,
        "range_text": _range_text(comparison.value_range),
        "any_clipped": any(v.summary.clipped for v in comparison.variants),
        "variant_rows": variant_rows,
        "a_param": a_text,
        "b_param": b_text,
        "versus": versus,
        "share_query": _share_query(request, comparison, a_text, b_text),
    }


def _range_text(value_range: tuple[float | None, float | None] | None) -> str:
    """[0, 1], [0, ∞) or (-∞, 1]: a metric's known range as people write it."""
    if value_range is None:
        return ""
    low, high = value_range
    left = "(-∞" if low is None else f"[{low:g}"
    right = "∞)" if high is None else f"{high:g}]"
    return f"{left}, {right}"


def _share_query(
    request: HttpRequest, comparison: stats.Comparison, a_text: str, b_text: str
) -> str:
    query = QueryDict(mutable=True)
    query["metric"] = comparison.metric
    if comparison.step:
        query["step"] = comparison.step
    query["aggregate"] = comparison.aggregate
    query["direction"] = comparison.direction
    if comparison.verdict is not None:
        query["level"] = f"{comparison.verdict.level:g}"
    if a_text and b_text:
        query["a"], query["b"] = a_text, b_text
    if request.GET.get("curve"):
        query["curve"] = request.GET["curve"]
    return query.urlencode()


def _sweep_charts(
    sweep: Sweep,
    comparison: stats.Comparison,
    rows: list[Any],
    labels: dict[str, list[str]],
    choice: dict[str, Any],
) -> dict[str, Any]:
    """The four charts' figures (plain data for json_script)."""
    data = comparison.as_dict()
    same = choice["curve"] == choice["metric"] and choice["curve_step"] == choice["step"]
    curve_rows: list[Any] = rows if same else []
    curve_error = None
    if not same:
        try:
            curve_rows = selectors.sweep_rows(sweep, choice["curve"], choice["curve_step"])
        except DomainError as error:
            curve_error = error.message
    return {
        "bars": charts.sweep_bars_figure(data),
        "parcoords": charts.sweep_parcoords_figure(
            rows, labels, comparison.metric, comparison.direction
        ),
        "effects": charts.sweep_effect_figures(data),
        "curves": charts.sweep_curves_figure(curve_rows, choice["curve"]),
        "curve_error": curve_error,
    }
