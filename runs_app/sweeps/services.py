"""Sweep writes: create, extend, cancel and promote. Each checks everything first (pure,
runs_app/sweeps/plan.py) and only then writes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from pipelines_app.models import DatasetVersion, ModuleVersion, PipelineVersion, VersionOrigin
from pipelines_app.services import pipeline_version_clone
from pipelines_app.specs import Catalogue, ModuleInfo
from runs_app import hints, scheduler
from runs_app.models import RUN_TERMINAL, PipelineRun, Sweep, SweepEvent, SweepEventKind
from runs_app.sweeps import plan
from workspaces.audit import audit_record
from workspaces.conf import engine
from workspaces.errors import DomainError
from workspaces.models import AuditVerb, Workspace

# --- sweeps -----------------------------------------------------------------------------------
# A sweep's writes check everything first (pure, runs_app/sweeps/plan.py) and only then write: the
# pipeline versions its module swaps need, the Sweep row with its event (one transaction),
# then one run per combination through scheduler.run_create, each in its own transaction. One
# transaction over hundreds of runs would hold the database's write lock while the workers
# wait to record results, and would send no step to a worker until the last run was made.


def _user_or_none(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


def _sweep_catalogue(
    workspace: Workspace, base_spec: Mapping[str, Any], axes: Any, extra: Iterable[Any] = ()
) -> Catalogue:
    """The module and dataset versions the base spec and the variants mention: two queries."""
    names = plan.referenced_modules(base_spec, axes, list(extra))
    modules: dict[str, dict[int, ModuleInfo]] = {}
    rows = ModuleVersion.objects.filter(
        module__workspace=workspace, module__name__in=names
    ).values_list("module__name", "number", "id", "interface")
    for name, number, pk, interface in rows:
        modules.setdefault(name, {})[number] = ModuleInfo(pk, interface)
    datasets: dict[str, dict[int, int]] = {}
    dataset_rows = DatasetVersion.objects.filter(
        dataset__workspace=workspace, dataset__name__in=plan.referenced_datasets(base_spec)
    ).values_list("dataset__name", "number", "id")
    for name, number, pk in dataset_rows:
        datasets.setdefault(name, {})[number] = pk
    return Catalogue(modules, datasets)


ModulesKey = tuple[tuple[str, str], ...]


def _swap_labels(
    combinations: Iterable[plan.Combination], changes: Iterable[plan.RunChanges]
) -> dict[ModulesKey, str]:
    """{modules key: "prep=pca, train=rf"}: the labels that swap modules, for a message."""
    labels: dict[ModulesKey, str] = {}
    for combination, change in zip(combinations, changes, strict=True):
        if change.modules and change.modules_key not in labels:
            chosen = dict(combination.choices)
            labels[change.modules_key] = plan.variant_name(
                (step, chosen[step]) for step in change.modules
            )
    return labels


def _variant_versions(
    base: PipelineVersion,
    sweep_name: str,
    resolved: Mapping[ModulesKey, Any],
    labels: Mapping[ModulesKey, str],
    user: Any,
) -> dict[ModulesKey, PipelineVersion]:
    """The pipeline version each distinct module swap runs ({(): base} for none).

    A version of the pipeline with the same resolved spec (digest) is used as it is: the
    clone service only returns an identical spec when it is the pipeline's latest version,
    and after one sweep the latest is rarely the one a second sweep needs.
    """
    versions: dict[ModulesKey, PipelineVersion] = {(): base}
    if not resolved:
        return versions
    existing: dict[str, PipelineVersion] = {}
    digests = {spec.digest for spec in resolved.values()}
    for version in PipelineVersion.objects.filter(
        pipeline_id=base.pipeline_id, digest__in=digests
    ).order_by("number"):
        existing.setdefault(version.digest, version)
    for key, spec in resolved.items():
        found = existing.get(spec.digest)
        if found is None:
            found = pipeline_version_clone(
                base,
                {step: {"module": ref} for step, ref in key},
                message=f"sweep {sweep_name}: {labels[key]}",
                user=_user_or_none(user),
                origin=VersionOrigin.SWEEP,
            )
            existing[found.digest] = found
        versions[key] = found
    return versions


def _sweep_canceled(sweep: Sweep) -> bool:
    return Sweep.objects.filter(pk=sweep.pk, canceled_at__isnull=False).exists()


# How many runs an expander starts between two looks at its sweep (canceled? and its
# heartbeat, `expanding_at`, which tells the reaper it is alive).
_EXPAND_BATCH = 5


def sweep_expand(
    sweep_id: int, *, budget_s: float | None = None, user: Any = None
) -> list[PipelineRun]:
    """Start a run for each combination of the sweep's axes x replicates that has none yet;
    returns the runs it started. With `budget_s`, stop after that many seconds and leave the
    rest to the `expand_sweep` actor (sent after commit); without, go on to the end. When
    every combination has its run, the sweep is marked expanded.

    Safe to run twice at once (the request and the actor, or the reaper's resend): each run
    records its combination (`variant_key`, unique in its sweep), so a combination another
    expander started meanwhile is skipped. Stops when the sweep is canceled.
    """
    sweep = Sweep.objects.select_related("base_version", "workspace").filter(pk=sweep_id).first()
    if sweep is None or sweep.canceled_at is not None or sweep.expanded_at is not None:
        return []
    deadline = None if budget_s is None else time.monotonic() + budget_s
    base = sweep.base_version
    axes = plan.ordered_axes(base.spec, sweep.axes)
    have = set(PipelineRun.objects.filter(sweep=sweep).values_list("variant_key", flat=True))
    missing = [
        c for c in plan.expand(axes, sweep.replicates) if plan.variant_key(c.variant()) not in have
    ]
    runs: list[PipelineRun] = []
    if missing:
        catalogue = _sweep_catalogue(sweep.workspace, base.spec, axes)
        changes = [plan.run_changes(base.spec, axes, c, sweep.seed_params) for c in missing]
        resolved = plan.resolve_variant_versions(base.spec, catalogue, changes)
        starter = user if user is not None else sweep.created_by
        labels = _swap_labels(missing, changes)
        versions = _variant_versions(base, sweep.name, resolved, labels, starter)
        recent: list[PipelineRun] = []
        for index, (combination, change) in enumerate(zip(missing, changes, strict=True)):
            if sweep.max_parallel_runs and _unfinished(sweep) >= sweep.max_parallel_runs:
                # At its cap: the end of one of its runs sends the expander again.
                Sweep.objects.filter(pk=sweep.pk).update(expanding_at=timezone.now())
                _canceled_meanwhile(sweep, recent)
                return runs
            if index % _EXPAND_BATCH == 0:
                if _canceled_meanwhile(sweep, recent):
                    return runs
                recent = []
                Sweep.objects.filter(pk=sweep.pk).update(expanding_at=timezone.now())
                if deadline is not None and time.monotonic() > deadline:
                    transaction.on_commit(lambda: _ask_expander(sweep.pk))
                    return runs
            run = _sweep_run(sweep, combination, change, versions, starter)
            if run is not None:
                runs.append(run)
                recent.append(run)
        if _canceled_meanwhile(sweep, recent):
            return runs
    Sweep.objects.filter(pk=sweep.pk, expanded_at__isnull=True).update(expanded_at=timezone.now())
    return runs


def _unfinished(sweep: Sweep) -> int:
    return PipelineRun.objects.filter(sweep=sweep).exclude(status__in=RUN_TERMINAL).count()


def on_run_finished(sender: Any, run_id: int, status: str, **kwargs: Any) -> None:
    """The receiver of scheduler.run_finished: a run of a sweep that paces its runs
    (max_parallel_runs) ended, so the next may start (the expand_sweep actor). A run the
    signal says is in no sweep needs no query."""
    if "sweep_id" in kwargs and kwargs["sweep_id"] is None:
        return
    paced = (
        PipelineRun.objects.filter(
            pk=run_id,
            sweep__max_parallel_runs__isnull=False,
            sweep__expanded_at__isnull=True,
            sweep__canceled_at__isnull=True,
        )
        .values_list("sweep_id", flat=True)
        .first()
    )
    if paced is not None:
        _ask_expander(paced)


def _ask_expander(sweep_id: int) -> None:
    """Ask for the expand_sweep actor (runs_app.dispatch sends it)."""
    hints.sweeps_due.send(__name__, sweep_ids=[sweep_id])


def _canceled_meanwhile(sweep: Sweep, recent: list[PipelineRun]) -> bool:
    """Whether the sweep was canceled; if so the runs made since the last look are canceled
    too. A cancel that committed before a look sees no run made after it; one that commits
    after it lists the runs made before it, and cancels them itself."""
    if not _sweep_canceled(sweep):
        return False
    for run in recent:
        scheduler.run_cancel(run.pk)
    return True


def _sweep_run(
    sweep: Sweep,
    combination: plan.Combination,
    change: plan.RunChanges,
    versions: Mapping[ModulesKey, PipelineVersion],
    user: Any,
) -> PipelineRun | None:
    """One combination's run; None when another expander started it first."""
    variant = combination.variant()
    try:
        return scheduler.run_create(
            versions[change.modules_key],
            user=user,
            param_overrides=change.params,
            reuse=sweep.reuse,
            sweep=sweep,
            variant=variant,
            variant_key=plan.variant_key(variant),
        )
    except IntegrityError:
        return None


def sweep_create(
    base_version: PipelineVersion,
    *,
    name: str,
    axes: dict[str, list[dict[str, Any]]],
    replicates: int = 1,
    seed_params: Iterable[str] = (),
    user: Any = None,
    reuse: bool = True,
    max_parallel_runs: int | None = None,
) -> Sweep:
    """Check a sweep whole, then start one run per combination of its axes x replicates:
    those it can within STEPWORKS_SWEEP_INLINE_S here, the rest in the expand_sweep actor
    (so a big sweep is accepted at once; its page shows the runs as they start).

    `axes` is {step: [{"label", "module"?, "params"?}, ...]}; replicate r sets each seed
    param (`step.param`, an int param) to r. Any problem is a DomainError naming its field
    (`axes.train.1.module`) and nothing is written. Runs that swap modules run on a version
    of the base pipeline per distinct swap (parent: the base; an identical one is reused).
    With `max_parallel_runs`, at most that many of its runs are unfinished at once.
    """
    if max_parallel_runs is not None and max_parallel_runs < 1:
        raise DomainError(
            "invalid_sweep",
            "The sweep is not valid.",
            {"max_parallel_runs": ["at least 1 (or none: no cap)"]},
        )
    workspace = base_version.pipeline.workspace
    catalogue = _sweep_catalogue(workspace, base_version.spec, axes)
    checked = plan.sweep_plan(
        base_version.spec,
        catalogue,
        name=name,
        axes=axes,
        replicates=replicates,
        seed_params=list(seed_params) if isinstance(seed_params, list | tuple) else seed_params,
        max_runs=engine().sweep_max_runs,
    )
    combinations = checked.combinations()
    changes = [
        plan.run_changes(base_version.spec, checked.axes, c, checked.seed_params)
        for c in combinations
    ]
    resolved = plan.resolve_variant_versions(base_version.spec, catalogue, changes)
    versions = _variant_versions(
        base_version, checked.name, resolved, _swap_labels(combinations, changes), user
    )
    with transaction.atomic():
        sweep = Sweep.objects.create(
            workspace=workspace,
            name=checked.name,
            base_version=base_version,
            axes=checked.axes,
            replicates=checked.replicates,
            seed_params=checked.seed_params,
            reuse=reuse,
            created_by=_user_or_none(user),
            expanding_at=timezone.now(),
            max_parallel_runs=max_parallel_runs,
        )
        SweepEvent.objects.create(
            sweep=sweep,
            kind=SweepEventKind.CREATED,
            data={
                "runs": checked.size,
                "versions": sorted({v.number for k, v in versions.items() if k}),
            },
            by=_user_or_none(user),
        )
        audit_record(
            workspace,
            user,
            AuditVerb.SWEEP_CREATED,
            f"sweep {sweep.pk} ({sweep.name})",
            {"pipeline": base_version.ref, "runs": checked.size},
        )
    sweep_expand(sweep.pk, budget_s=engine().sweep_inline_s, user=user)
    return sweep


def _refuse_if_canceled(sweep: Sweep) -> None:
    if sweep.canceled_at is not None:
        raise DomainError(
            "sweep_canceled",
            "The sweep was canceled.",
            {"sweep": ["a canceled sweep takes no new variants"]},
            status_code=409,
        )


def sweep_extend(
    sweep: Sweep, step: str, variant: dict[str, Any], user: Any = None
) -> list[PipelineRun]:
    """Append a variant to an existing axis and start only the combinations that are new:
    those it can within STEPWORKS_SWEEP_INLINE_S (returned), the rest in the expand_sweep
    actor. Axes are append-only once started; the change is a SweepEvent."""
    _refuse_if_canceled(sweep)
    base = sweep.base_version
    axes = plan.ordered_axes(base.spec, sweep.axes)
    catalogue = _sweep_catalogue(sweep.workspace, base.spec, axes, extra=[variant])
    checked = plan.extension_check(
        base.spec,
        catalogue,
        axes,
        step,
        variant,
        replicates=sweep.replicates,
        seed_params=sweep.seed_params,
        max_runs=engine().sweep_max_runs,
    )
    grown = {**axes, step: [*axes[step], checked]}
    old = {c.key for c in plan.expand(axes, sweep.replicates)}
    combinations = [c for c in plan.expand(grown, sweep.replicates) if c.key not in old]
    changes = [plan.run_changes(base.spec, grown, c, sweep.seed_params) for c in combinations]
    plan.resolve_variant_versions(base.spec, catalogue, changes)  # refuses what cannot run
    with transaction.atomic():
        locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
        _refuse_if_canceled(locked)
        if locked.axes != sweep.axes:
            # Checked against axes someone else has grown since: check again on fresh ones.
            raise DomainError(
                "conflict",
                "The sweep changed meanwhile: reload it and try again.",
                {"variant": ["the axes changed since this sweep was read"]},
                status_code=409,
            )
        locked.axes = grown
        locked.expanded_at = None  # the new combinations have no runs yet
        locked.expanding_at = timezone.now()
        locked.save(update_fields=["axes", "expanded_at", "expanding_at"])
        SweepEvent.objects.create(
            sweep=locked,
            kind=SweepEventKind.EXTENDED,
            data={"step": step, "variant": checked, "runs": len(combinations)},
            by=_user_or_none(user),
        )
        audit_record(
            sweep.workspace_id,
            user,
            AuditVerb.SWEEP_EXTENDED,
            f"sweep {sweep.pk} ({sweep.name})",
            {"step": step, "variant": checked.get("label", ""), "runs": len(combinations)},
        )
    sweep.axes = grown
    return sweep_expand(sweep.pk, budget_s=engine().sweep_inline_s, user=user)


def sweep_cancel(sweep: Sweep, by: Any = None) -> int:
    """Cancel the sweep: no run of it starts any more, and each unfinished one is canceled
    through the scheduler. Returns how many runs this call canceled (0 when none was left)."""
    now = timezone.now()
    with transaction.atomic():
        if Sweep.objects.filter(pk=sweep.pk, canceled_at__isnull=True).update(canceled_at=now):
            SweepEvent.objects.create(
                sweep_id=sweep.pk, kind=SweepEventKind.CANCELED, by=_user_or_none(by)
            )
            audit_record(
                sweep.workspace_id, by, AuditVerb.SWEEP_CANCELED, f"sweep {sweep.pk} ({sweep.name})"
            )
    sweep.canceled_at = Sweep.objects.values_list("canceled_at", flat=True).get(pk=sweep.pk)
    unfinished = PipelineRun.objects.filter(sweep=sweep).exclude(status__in=RUN_TERMINAL)
    return sum(scheduler.run_cancel(pk, by=by) for pk in unfinished.values_list("pk", flat=True))


def sweep_promote(
    sweep: Sweep,
    variant_choices: Mapping[str, Any],
    user: Any = None,
    message: str | None = None,
) -> PipelineVersion:
    """Make a variant ({step: label}; a run's `variant` will do) the next version of the base
    pipeline: parent = the base version, the message names the sweep and the variant. Seed
    params keep the base's values. A spec identical to a version people already made (the
    latest, or an older one: promoting the same variant twice) returns that version and
    writes no copy of it."""
    base = sweep.base_version
    axes = plan.ordered_axes(base.spec, sweep.axes)
    choices, changes = plan.promotion_changes(axes, variant_choices)
    text = message or (
        f"promoted from sweep {sweep.name!r} (#{sweep.pk}): {plan.variant_name(choices)}"
    )
    try:
        with transaction.atomic():  # the version and the event that explains it, or neither
            newest = base.pipeline.versions.aggregate(n=Max("number"))["n"] or 0
            version = pipeline_version_clone(base, changes, text, user=_user_or_none(user))
            twin = (
                base.pipeline.versions.mainline()
                .filter(digest=version.digest, number__lt=version.number)
                .order_by("-number")
                .first()
            )
            if twin is not None and version.number > newest:
                raise _AlreadyThere(twin)  # undoes the copy
            _promoted(sweep, choices, version, user)
    except _AlreadyThere as there:
        version = there.version
        with transaction.atomic():
            _promoted(sweep, choices, version, user)
    return version


class _AlreadyThere(Exception):
    def __init__(self, version: PipelineVersion) -> None:
        super().__init__(version.ref)
        self.version = version


def _promoted(sweep: Sweep, choices: dict[str, Any], version: PipelineVersion, user: Any) -> None:
    SweepEvent.objects.create(
        sweep=sweep,
        kind=SweepEventKind.PROMOTED,
        data={"variant": choices, "version": version.pk, "ref": version.ref},
        by=_user_or_none(user),
    )
    audit_record(
        sweep.workspace_id,
        user,
        AuditVerb.SWEEP_PROMOTED,
        f"sweep {sweep.pk} ({sweep.name})",
        {"variant": plan.variant_name(choices), "version": version.ref},
    )
