"""Sweeps: check the axes, expand them into runs, and compare what the runs measured.

Pure functions, no ORM: the services (runs_app/services.py) hand in a pipeline version's
resolved spec and a `Catalogue` of module versions, and the queries (runs_app/sweep_queries.py)
hand in plain rows; tests call everything here without a database.

Vocabulary. An *axis* is a step with a list of *variants*; a variant is
`{"label", "module"?, "params"?}` (DECISIONS.md, Sweeps). A *combination* picks one label per
axis plus a replicate number r; it becomes one run whose `variant` is
`{step: label, ..., "replicate": r}`. A *variant* in the comparison is a combination without
its replicate: the replicates of one variant are its samples.

Statistics. Over the replicates of a variant: mean, sample std (n - 1), and the 95% CI
mean +- t(0.975, n - 1) * s / sqrt(n). A vs B: the difference of means, its Welch-Satterthwaite
CI and Welch's t-test p-value. A figure that is not defined (n < 2, a t or p over zero
variance, a non-finite value) is None, never NaN or inf: NaN/inf break DRF's JSON and
`json_script`. Failed or canceled runs are counted as such, never measured as zeros.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

from pipelines_app.errors import DomainError, Problems
from pipelines_app.specs import (
    MODULE_REF_RE,
    Catalogue,
    ResolvedSpec,
    check_params,
    editable_spec,
    resolve_spec,
    topological_order,
)

# A label names a variant in run rows, URLs and chart legends: short and URL-safe.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LABEL_HELP = "1-64 letters, digits, '_', '.', '+' or '-', starting with a letter or digit"
VARIANT_KEYS = ("label", "module", "params")
# The run's `variant` holds {step: label, "replicate": r}: a step of that name can't be an axis.
REPLICATE_KEY = "replicate"
AGGREGATES = ("last", "min", "max")
DIRECTIONS = ("max", "min")
CONFIDENCE = 0.95
SWEEP_ERROR = "invalid_sweep"


# --- checking and expanding axes ----------------------------------------------------------------


@dataclass(frozen=True)
class Combination:
    """One run of a sweep: a label per axis (in axis order) and a replicate number."""

    choices: tuple[tuple[str, str], ...]
    replicate: int

    def variant(self) -> dict[str, Any]:
        """What `PipelineRun.variant` stores."""
        return {**dict(self.choices), REPLICATE_KEY: self.replicate}

    @property
    def key(self) -> tuple[tuple[tuple[str, str], ...], int]:
        """Identity independent of key order (stored JSON may come back reordered)."""
        return tuple(sorted(self.choices)), self.replicate


def combination_key(variant: Mapping[str, Any]) -> tuple[tuple[tuple[str, str], ...], int]:
    """The `Combination.key` of a stored `PipelineRun.variant`."""
    choices = tuple(sorted((k, str(v)) for k, v in variant.items() if k != REPLICATE_KEY))
    return choices, int(variant.get(REPLICATE_KEY, 0))


@dataclass(frozen=True)
class SweepPlan:
    """Checked, normalised axes: steps in pipeline order, module refs pinned (`name@N`)."""

    name: str
    axes: dict[str, list[dict[str, Any]]]
    replicates: int
    seed_params: list[str]

    @property
    def size(self) -> int:
        return sweep_size(self.axes, self.replicates)

    def combinations(self) -> list[Combination]:
        return expand(self.axes, self.replicates)


@dataclass(frozen=True)
class RunChanges:
    """How one combination's run differs from the base version.

    `modules` ({step: "name@N"}) needs a pipeline version of its own; `params`
    ({"step.param": value}) go to the run as param overrides.
    """

    modules: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def modules_key(self) -> tuple[tuple[str, str], ...]:
        """Runs with the same key share one pipeline version."""
        return tuple(sorted(self.modules.items()))


def sweep_size(axes: Mapping[str, Sequence[Any]], replicates: int) -> int:
    return math.prod(len(variants) for variants in axes.values()) * replicates


def ordered_axes(
    base_spec: Mapping[str, Any], axes: Mapping[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Axes in the pipeline's step order (upstream first), whatever order JSON kept."""
    order = topological_order(base_spec["steps"])
    rank = {name: i for i, name in enumerate(order)}
    return {step: list(axes[step]) for step in sorted(axes, key=lambda s: (rank.get(s, 1e9), s))}


def expand(axes: Mapping[str, Sequence[Mapping[str, Any]]], replicates: int) -> list[Combination]:
    """The Cartesian product in a fixed order: the first axis varies slowest, the replicate
    fastest (so the runs of one variant are created together)."""
    steps = list(axes)
    labels = [[variant["label"] for variant in axes[step]] for step in steps]
    return [
        Combination(tuple(zip(steps, chosen, strict=True)), replicate)
        for chosen in itertools.product(*labels)
        for replicate in range(replicates)
    ]


def referenced_modules(
    base_spec: Mapping[str, Any], axes: Any, extra: Sequence[Any] = ()
) -> set[str]:
    """Module names a check needs in its Catalogue: the base's, the variants' and `extra`
    variants' (best effort on malformed axes: the check reports what is wrong with them)."""
    names = {str(step["module"]).split("@")[0] for step in base_spec["steps"].values()}
    groups = list(axes.values()) if isinstance(axes, Mapping) else []
    for variants in [*groups, list(extra)]:
        for variant in variants if isinstance(variants, list) else []:
            module = variant.get("module") if isinstance(variant, Mapping) else None
            match = MODULE_REF_RE.match(module) if isinstance(module, str) else None
            if match:
                names.add(match[1])
    return names


def referenced_datasets(base_spec: Mapping[str, Any]) -> set[str]:
    """Dataset names the base spec binds (a variant spec is resolved with them)."""
    names = set()
    for step in base_spec["steps"].values():
        for binding in step.get("inputs", {}).values():
            if str(binding).startswith("dataset:"):
                names.add(str(binding).removeprefix("dataset:").rpartition("@")[0])
    return names


def _module_line(ref: str) -> str:
    return ref.split("@")[0]


def _interface(catalogue: Catalogue, ref: str) -> dict[str, Any]:
    name, _, number = ref.partition("@")
    return catalogue.modules[name][int(number)].interface


def _pin(catalogue: Catalogue, raw: Any) -> tuple[str | None, str | None]:
    """(pinned `name@N`, None) or (None, reason)."""
    match = MODULE_REF_RE.match(raw) if isinstance(raw, str) else None
    if match is None:
        return None, f"expected 'name@N' or 'name@latest', got {raw!r}"
    name, wanted = match[1], match[2]
    versions = catalogue.modules.get(name)
    if not versions:
        return None, f"no module {name!r} in this workspace"
    number = max(versions) if wanted == "latest" else int(wanted)
    if number not in versions:
        return None, f"module {name!r} has no version {wanted} (latest: {max(versions)})"
    return f"{name}@{number}", None


def _interface_problems(base_spec: Mapping[str, Any], step: str, ref: str, iface: Any) -> list[str]:
    """Why module `ref` cannot take `step`'s place: the step's input bindings and the outputs
    downstream steps bind must fit (DECISIONS.md, Sweeps)."""
    problems = []
    bound = set(base_spec["steps"][step].get("inputs", {}))
    declared = list(iface.get("inputs", []))
    optional = set(iface.get("optional_inputs", []))
    for name in sorted(bound - set(declared)):
        known = ", ".join(declared) or "none"
        problems.append(f"{ref} has no input {name!r}, which the step binds (its inputs: {known})")
    for name in declared:
        if name not in bound and name not in optional:
            problems.append(f"{ref} needs input {name!r}, which the step does not bind")
    outputs = set(iface.get("outputs", []))
    for other, spec in base_spec["steps"].items():
        for binding in spec.get("inputs", {}).values():
            source, _, output = str(binding).partition(".")
            if source == step and not str(binding).startswith("dataset:") and output not in outputs:
                problems.append(
                    f"{ref} does not declare output {output!r}, which step {other!r} binds"
                )
    return problems


def _seed_targets(seed_params: Sequence[str]) -> dict[str, list[str]]:
    """{step: [param]} of `step.param` seed params."""
    targets: dict[str, list[str]] = {}
    for seed in seed_params:
        step, _, param = seed.partition(".")
        targets.setdefault(step, []).append(param)
    return targets


def _lacks_int_param(iface: Mapping[str, Any], param: str) -> bool:
    return iface.get("params", {}).get(param, {}).get("type") != "int"


def check_variant(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    step: str,
    raw: Any,
    path: str,
    *,
    taken: set[str],
    seed_params: Sequence[str],
    problems: Problems,
) -> dict[str, Any] | None:
    """One variant checked and normalised (module pinned, params coerced), or None.

    Its params are the new module's defaults plus its own; the base step's params carry over
    only when the module line is unchanged, so they are checked against the new version too.
    """
    if not isinstance(raw, Mapping):
        problems.add(path, 'expected {"label": ..., "module"?: "name@N", "params"?: {...}}')
        return None
    for key in raw:
        if key not in VARIANT_KEYS:
            problems.add(f"{path}.{key}", "unknown key (a variant has label, module and params)")
    ok = True
    label = raw.get("label")
    if not isinstance(label, str) or not LABEL_RE.match(label):
        problems.add(f"{path}.label", f"required: a short label ({LABEL_HELP})")
        ok = False
    elif label in taken:
        problems.add(f"{path}.label", f"duplicate label {label!r} on axis {step!r}")
        ok = False
    base_step = base_spec["steps"][step]
    ref = base_step["module"]
    if raw.get("module") is not None:
        pinned, reason = _pin(catalogue, raw["module"])
        if pinned is None:
            problems.add(f"{path}.module", str(reason))
            return None
        ref = pinned
    iface = _interface(catalogue, ref)
    for reason in _interface_problems(base_spec, step, ref, iface):
        problems.add(f"{path}.module", reason)
        ok = False
    own = raw.get("params")
    if own is not None and not isinstance(own, Mapping):
        problems.add(f"{path}.params", "expected a mapping of param -> value")
        return None
    own = dict(own or {})
    carried = (
        dict(base_step.get("params", {}))
        if _module_line(ref) == _module_line(base_step["module"])
        else {}
    )
    coerced, param_problems = check_params(iface, {**carried, **own}, f"{path}.params")
    for where, reasons in param_problems.items():
        name = where.removeprefix(f"{path}.params.").split(".")[0]
        for reason in reasons:
            if name in carried and name not in own:  # the user did not write this one
                problems.add(f"{path}.module", f"the base step's param {name!r}: {reason}")
            else:
                problems.add(where, reason)
        ok = False
    for param in _seed_targets(seed_params).get(step, []):
        if param in own:
            problems.add(f"{path}.params.{param}", "set by each replicate (a seed param)")
            ok = False
        # On the base's own module the problem is the seed param's (_check_seed_params).
        if raw.get("module") is not None and _lacks_int_param(iface, param):
            problems.add(f"{path}.module", f"{ref} has no int param {param!r} for the replicate")
            ok = False
    if not ok:
        return None
    variant: dict[str, Any] = {"label": label}
    if raw.get("module") is not None:
        variant["module"] = ref
    if own:
        variant["params"] = {name: coerced[name] for name in own}
    return variant


def _check_seed_params(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    seed_params: Any,
    replicates: Any,
    axes: Mapping[str, Any],
    problems: Problems,
) -> list[str]:
    if seed_params is None:
        seed_params = []
    if not isinstance(seed_params, list | tuple):
        problems.add("seed_params", "expected a list of 'step.param'")
        return []
    seeds: list[str] = []
    for index, seed in enumerate(seed_params):
        path = f"seed_params.{index}"
        step, _, param = seed.partition(".") if isinstance(seed, str) else ("", "", "")
        if not step or not param:
            problems.add(path, f"write a seed param as 'step.param', got {seed!r}")
        elif step not in base_spec["steps"]:
            problems.add(path, f"the pipeline has no step {step!r}")
        elif seed in seeds:
            problems.add(path, f"duplicate seed param {seed!r}")
        else:
            seeds.append(seed)
            variants = axes.get(step)
            uses_base = not isinstance(variants, list) or any(
                not isinstance(v, Mapping) or v.get("module") is None for v in variants
            )
            ref = base_spec["steps"][step]["module"]
            if uses_base and _lacks_int_param(_interface(catalogue, ref), param):
                problems.add(path, f"{ref} has no int param {param!r} for the replicate to set")
    if isinstance(replicates, int) and replicates > 1 and not seed_params:
        # Without a seed every replicate has the same cache key: copies, not samples.
        problems.add("seed_params", "replicates > 1 need a seed param ('step.param') to vary")
    return seeds


def _check_size(axes: Mapping[str, Sequence[Any]], replicates: int, max_runs: int) -> str | None:
    size = sweep_size(axes, replicates)
    if size <= max_runs:
        return None
    factors = " x ".join(str(len(v)) for v in axes.values())
    return f"{factors} variants x {replicates} replicates = {size} runs; the limit is {max_runs}"


def sweep_plan(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    *,
    name: Any,
    axes: Any,
    replicates: Any,
    seed_params: Any,
    max_runs: int,
) -> SweepPlan:
    """Check a whole sweep against its base version and normalise it; every problem is
    reported at once under its field path (`axes.train.1.module`), in one DomainError."""
    problems = Problems()
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        problems.add("name", "required: up to 200 characters")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        problems.add("replicates", f"expected a whole number >= 1, got {replicates!r}")
    if not isinstance(axes, Mapping) or not axes:
        problems.add("axes", "a sweep needs at least one axis: {step: [variant, ...]}")
        axes = {}
    seeds = _check_seed_params(base_spec, catalogue, seed_params, replicates, axes, problems)
    checked: dict[str, list[dict[str, Any]]] = {}
    for step, variants in axes.items():
        path = f"axes.{step}"
        if step == REPLICATE_KEY:
            problems.add(path, f"a step named {REPLICATE_KEY!r} cannot be an axis")
            continue
        if step not in base_spec["steps"]:
            known = ", ".join(base_spec["steps"])
            problems.add(path, f"the pipeline has no step {step!r} (its steps: {known})")
            continue
        if not isinstance(variants, list) or not variants:
            problems.add(path, "an axis is a non-empty list of variants")
            continue
        taken: set[str] = set()
        for index, raw in enumerate(variants):
            variant = check_variant(
                base_spec,
                catalogue,
                step,
                raw,
                f"{path}.{index}",
                taken=taken,
                seed_params=seeds,
                problems=problems,
            )
            if isinstance(raw, Mapping) and isinstance(raw.get("label"), str):
                taken.add(raw["label"])
            if variant is not None:
                checked.setdefault(step, []).append(variant)
    if isinstance(replicates, int) and not isinstance(replicates, bool) and replicates >= 1:
        sized = {
            step: variants
            for step, variants in axes.items()
            if isinstance(variants, list) and variants
        }
        too_big = _check_size(sized, replicates, max_runs)
        if too_big:
            problems.add("axes", too_big)
    problems.raise_if_any(SWEEP_ERROR, "sweep")
    return SweepPlan(name.strip(), ordered_axes(base_spec, checked), replicates, seeds)


def extension_check(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    axes: Mapping[str, list[dict[str, Any]]],
    step: Any,
    variant: Any,
    *,
    replicates: int,
    seed_params: Sequence[str],
    max_runs: int,
) -> dict[str, Any]:
    """A variant to append to an existing axis, checked and normalised (paths `step`,
    `variant.label`, `variant.module`, `variant.params.NAME`). Only existing axes grow:
    a new axis would change what every run so far stands for."""
    problems = Problems()
    if not isinstance(step, str) or step not in axes:
        known = ", ".join(axes) or "none"
        problems.add("step", f"the sweep has no axis {step!r} (its axes: {known})")
        problems.raise_if_any(SWEEP_ERROR, "sweep")
    taken = {v["label"] for v in axes[step]}
    checked = check_variant(
        base_spec,
        catalogue,
        step,
        variant,
        "variant",
        taken=taken,
        seed_params=seed_params,
        problems=problems,
    )
    too_big = _check_size({**axes, step: [*axes[step], variant]}, replicates, max_runs)
    if too_big:
        problems.add("variant", too_big)
    problems.raise_if_any(SWEEP_ERROR, "sweep")
    assert checked is not None
    return checked


def _variant_of(axes: Mapping[str, list[dict[str, Any]]], step: str, label: str) -> dict[str, Any]:
    return next(v for v in axes[step] if v["label"] == label)


def run_changes(
    base_spec: Mapping[str, Any],
    axes: Mapping[str, list[dict[str, Any]]],
    combination: Combination,
    seed_params: Sequence[str],
) -> RunChanges:
    """The module swaps and param overrides that make `combination`'s run.

    A variant naming the base step's own module version swaps nothing. Replicate r sets each
    seed param to r.
    """
    modules: dict[str, str] = {}
    params: dict[str, Any] = {}
    for step, label in combination.choices:
        variant = _variant_of(axes, step, label)
        module = variant.get("module")
        if module is not None and module != base_spec["steps"][step]["module"]:
            modules[step] = module
        for name, value in variant.get("params", {}).items():
            params[f"{step}.{name}"] = value
    for seed in seed_params:
        params[seed] = combination.replicate
    return RunChanges(modules, params)


def variant_version_spec(
    base_spec: Mapping[str, Any], modules: Mapping[str, str]
) -> dict[str, Any]:
    """The editable spec of the base with `modules` swapped in: what
    `pipeline_version_clone(base, {step: {"module": ref}})` stores (a module of another line
    starts from its own defaults; a newer version of the same line keeps the step's params)."""
    spec = editable_spec(base_spec)
    for step, ref in modules.items():
        entry = spec["steps"][step]
        if _module_line(ref) != _module_line(entry["module"]):
            entry.pop("params", None)
        entry["module"] = ref
    return spec


def resolve_variant_versions(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    changes: Iterable[RunChanges],
) -> dict[tuple[tuple[str, str], ...], ResolvedSpec]:
    """{modules key: resolved spec} for each distinct module swap (none for the base itself);
    resolving them all up front means no run starts for a sweep that cannot be built."""
    resolved: dict[tuple[tuple[str, str], ...], ResolvedSpec] = {}
    for change in changes:
        if change.modules and change.modules_key not in resolved:
            spec = variant_version_spec(base_spec, change.modules)
            resolved[change.modules_key] = resolve_spec(spec, catalogue)
    return resolved


def variant_name(choices: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """`prep=pca, train=rf`: how a variant is named in messages, tables and legends."""
    pairs = choices.items() if isinstance(choices, Mapping) else choices
    return ", ".join(f"{step}={label}" for step, label in pairs)


# --- statistics -----------------------------------------------------------------------------------


class Row(TypedDict, total=False):
    """One run as the statistics take it (runs_app.sweep_queries.sweep_rows makes them)."""

    run: int
    choices: dict[str, str]  # {step: label}
    replicate: int
    status: str  # the run's status
    values: list[float]  # the metric's values in order (a series by its index)
    value: float | None  # the aggregate of `values`; None when the run logged none


def aggregate_values(values: Sequence[float], how: str) -> float | None:
    """`last`, `min` or `max` of a run's values; None when there is none."""
    if how not in AGGREGATES:
        raise DomainError(
            "invalid_aggregate",
            f"{how!r} is not an aggregate.",
            {"aggregate": [f"one of {', '.join(AGGREGATES)}"]},
        )
    if not values:
        return None
    if how == "last":
        return values[-1]
    return min(values) if how == "min" else max(values)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@functools.lru_cache(maxsize=1024)  # a sweep's variants share a few n - 1: ppf is not free
def t_critical(df: float) -> float | None:
    """t(0.975, df), the two-sided 95% quantile; None without a degree of freedom."""
    if not df or not math.isfinite(df) or df <= 0:
        return None
    from scipy import stats  # imported late: expansion and checks must not need scipy

    return _finite(float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)))


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std and 95% CI of a set of values (None where undefined)."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def ci_half_width(self) -> float | None:
        if self.mean is None or self.ci_high is None:
            return None
        return self.ci_high - self.mean


def summarise(values: Iterable[float | None]) -> Summary:
    """Non-finite values are left out. A variant whose replicates agree exactly has std 0 and
    a CI of zero width: that is the formula's value, not an undefined one."""
    sample = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(sample)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = _finite(statistics.fmean(sample))
    if n < 2 or mean is None:
        return Summary(n, mean, None, None, None)
    std = _finite(statistics.stdev(sample))
    t = t_critical(n - 1)
    if std is None or t is None:
        return Summary(n, mean, std, None, None)
    half = t * std / math.sqrt(n)
    return Summary(n, mean, std, _finite(mean - half), _finite(mean + half))


@dataclass(frozen=True)
class RunCounts:
    """What became of a group's runs: measured ones are the samples; failed and canceled runs
    are counted, never measured; `missing` succeeded without a finite value of the metric."""

    total: int = 0
    measured: int = 0
    failed: int = 0
    canceled: int = 0
    unfinished: int = 0
    missing: int = 0


def _counts(rows: Sequence[Row]) -> RunCounts:
    counts = {"failed": 0, "canceled": 0, "unfinished": 0, "measured": 0, "missing": 0}
    for row in rows:
        status = row.get("status")
        if status == "failed":
            counts["failed"] += 1
        elif status == "canceled":
            counts["canceled"] += 1
        elif status != "succeeded":
            counts["unfinished"] += 1
        elif _finite(row.get("value")) is None:
            counts["missing"] += 1
        else:
            counts["measured"] += 1
    return RunCounts(total=len(rows), **counts)


def _samples(rows: Iterable[Row]) -> list[float]:
    """The values of succeeded runs; a failed run's value is never a sample."""
    out = []
    for row in rows:
        value = _finite(row.get("value"))
        if row.get("status") == "succeeded" and value is not None:
            out.append(value)
    return out


@dataclass(frozen=True)
class VariantStats:
    """One variant (a label per axis) over its replicates."""

    choices: dict[str, str]
    name: str
    summary: Summary
    counts: RunCounts
    runs: list[int]
    values: list[float]  # the samples, in replicate order (for strip plots)


@dataclass(frozen=True)
class LevelStats:
    """One choice of one axis, pooled over every other axis and replicate; `effect` is its
    mean minus the grand mean."""

    step: str
    label: str
    summary: Summary
    counts: RunCounts
    effect: float | None


@dataclass(frozen=True)
class Difference:
    """A vs B: mean(A) - mean(B), its Welch-Satterthwaite 95% CI and Welch's p-value."""

    a: dict[str, str]
    b: dict[str, str]
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    df: float | None
    t: float | None
    p_value: float | None


@dataclass(frozen=True)
class Comparison:
    metric: str
    step: str | None
    aggregate: str
    direction: str
    axes: dict[str, list[str]]
    variants: list[VariantStats]
    marginals: dict[str, list[LevelStats]]
    overall: Summary
    counts: RunCounts
    best: VariantStats | None
    runner_up: VariantStats | None
    best_vs_runner_up: Difference | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (every float finite or None)."""
        return asdict(self)


def welch(
    a: Sequence[float],
    b: Sequence[float],
    choices_a: Mapping[str, str] | None = None,
    choices_b: Mapping[str, str] | None = None,
) -> Difference:
    """Welch's unequal-variance comparison of two samples.

    se = sqrt(s_a^2/n_a + s_b^2/n_b); df = se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1));
    CI = diff +- t(0.975, df) * se; p is Welch's two-sided t-test (scipy). With n < 2
    on a side, or no variance on either, only the difference is defined.
    """
    sa, sb = summarise(a), summarise(b)
    diff = _finite(sa.mean - sb.mean) if sa.mean is not None and sb.mean is not None else None
    ci_low = ci_high = df = t = p = None
    if sa.n >= 2 and sb.n >= 2 and sa.std is not None and sb.std is not None and diff is not None:
        va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
        se = math.sqrt(va + vb)
        if se > 0:
            df = _finite((va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1)))
            t = _finite(diff / se)
            crit = t_critical(df) if df is not None else None
            if crit is not None:
                ci_low, ci_high = _finite(diff - crit * se), _finite(diff + crit * se)
            from scipy import stats  # late, as in t_critical

            # Welch's test (ttest_ind(equal_var=False)) from the same exact moments as the CI:
            # from raw values scipy warns of "catastrophic cancellation" on equal replicates.
            p = _finite(
                float(
                    stats.ttest_ind_from_stats(
                        sa.mean, sa.std, sa.n, sb.mean, sb.std, sb.n, equal_var=False
                    ).pvalue
                )
            )
    return Difference(
        dict(choices_a or {}),
        dict(choices_b or {}),
        sa.n,
        sb.n,
        sa.mean,
        sb.mean,
        diff,
        ci_low,
        ci_high,
        df,
        t,
        p,
    )


def _axes_labels(
    rows: Sequence[Row], axes: Mapping[str, Sequence[Any]] | None
) -> dict[str, list[str]]:
    """{step: [label, ...]}: the sweep's axes (so a variant with no run yet still shows),
    plus any label the rows hold that they lack."""
    labels: dict[str, list[str]] = {}
    for step, variants in (axes or {}).items():
        labels[step] = [v["label"] if isinstance(v, Mapping) else str(v) for v in variants]
    for row in rows:
        for step, label in row.get("choices", {}).items():
            known = labels.setdefault(step, [])
            if label not in known:
                known.append(label)
    return labels


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise DomainError(
            "invalid_direction",
            f"{direction!r} is not a direction.",
            {"direction": ["max (higher is better) or min (lower is better)"]},
        )


def _better(direction: str, x: float, y: float) -> bool:
    return x > y if direction == "max" else x < y


def compare(
    rows: Sequence[Row],
    *,
    axes: Mapping[str, Sequence[Any]] | None = None,
    direction: str = "max",
    metric: str = "",
    step: str | None = None,
    aggregate: str = "last",
) -> Comparison:
    """The comparison of a sweep's variants on one metric.

    `axes` ({step: [variant or label, ...]}, in display order) lists every variant, also those
    without runs. The best variant has the best mean among those measured at least once (ties:
    the first in axis order); it is compared with the runner-up by Welch's test. Marginal
    effects pool every run with a given choice of an axis (balanced when nothing failed, so
    their mean is then the mean over the other axes).
    """
    _check_direction(direction)
    labels = _axes_labels(rows, axes)
    steps = list(labels)
    by_variant: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        key = tuple(row.get("choices", {}).get(s, "") for s in steps)
        by_variant.setdefault(key, []).append(row)
    variants = []
    for key in itertools.product(*(labels[s] for s in steps)):
        group = sorted(by_variant.get(key, []), key=lambda r: (r.get("replicate", 0), r["run"]))
        choices = dict(zip(steps, key, strict=True))
        samples = _samples(group)
        variants.append(
            VariantStats(
                choices,
                variant_name(choices),
                summarise(samples),
                _counts(group),
                [r["run"] for r in group],
                samples,
            )
        )
    overall = summarise(_samples(rows))
    marginals: dict[str, list[LevelStats]] = {}
    for index, s in enumerate(steps):
        marginals[s] = []
        for label in labels[s]:
            group = [r for key, rs in by_variant.items() if key[index] == label for r in rs]
            summary = summarise(_samples(group))
            effect = (
                _finite(summary.mean - overall.mean)
                if summary.mean is not None and overall.mean is not None
                else None
            )
            marginals[s].append(LevelStats(s, label, summary, _counts(group), effect))
    ranked: list[VariantStats] = []
    for variant in variants:
        if variant.summary.mean is None:
            continue
        position = len(ranked)
        for i, other in enumerate(ranked):
            assert other.summary.mean is not None
            if _better(direction, variant.summary.mean, other.summary.mean):
                position = i
                break
        ranked.insert(position, variant)
    best = ranked[0] if ranked else None
    runner_up = ranked[1] if len(ranked) > 1 else None
    versus = (
        welch(best.values, runner_up.values, best.choices, runner_up.choices)
        if best is not None and runner_up is not None
        else None
    )
    return Comparison(
        metric=metric,
        step=step,
        aggregate=aggregate,
        direction=direction,
        axes=labels,
        variants=variants,
        marginals=marginals,
        overall=overall,
        counts=_counts(rows),
        best=best,
        runner_up=runner_up,
        best_vs_runner_up=versus,
    )


def _matches(row: Row, choices: Mapping[str, str]) -> bool:
    have = row.get("choices", {})
    return all(have.get(step) == label for step, label in choices.items())


def compare_variants(rows: Sequence[Row], a: Mapping[str, str], b: Mapping[str, str]) -> Difference:
    """A vs B for two variants given as {step: label}. A variant naming only some axes
    pools every run that matches it (`{"train": "rf"}` vs `{"train": "mlp"}` compares two
    choices of one axis over all the others)."""
    fields: dict[str, list[str]] = {}
    picked: list[dict[str, str]] = []
    for side, choices in (("a", a), ("b", b)):
        # A run's stored `variant` may be passed as it is: its replicate is not a choice.
        wanted = (
            {k: str(v) for k, v in choices.items() if k != REPLICATE_KEY}
            if isinstance(choices, Mapping)
            else {}
        )
        picked.append(wanted)
        if not wanted:
            fields[side] = ["a variant: {step: label}"]
        elif not any(_matches(row, wanted) for row in rows):
            fields[side] = [f"no run of the sweep is {variant_name(wanted)}"]
    if fields:
        raise DomainError("invalid_variant", "Pick two variants of this sweep.", fields)
    first, second = picked
    return welch(
        _samples(r for r in rows if _matches(r, first)),
        _samples(r for r in rows if _matches(r, second)),
        first,
        second,
    )


def promotion_changes(
    axes: Mapping[str, list[dict[str, Any]]], choices: Any
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """({step: label}, the `pipeline_version_clone` changes that make that variant).

    Every axis needs a label of its own (paths `variant.<step>`); a replicate key is ignored.
    """
    problems = Problems()
    if not isinstance(choices, Mapping):
        problems.add("variant", "a variant: {step: label, ...}")
        problems.raise_if_any("invalid_variant", "variant")
    picked: dict[str, str] = {}
    for step, variants in axes.items():
        labels = [v["label"] for v in variants]
        label = choices.get(step)
        if label is None:
            problems.add(f"variant.{step}", f"pick one of {', '.join(labels)}")
        elif str(label) not in labels:
            problems.add(
                f"variant.{step}", f"no variant {label!r} on this axis ({', '.join(labels)})"
            )
        else:
            picked[step] = str(label)
    for key in choices:
        if key not in axes and key != REPLICATE_KEY:
            problems.add(f"variant.{key}", "not an axis of this sweep")
    problems.raise_if_any("invalid_variant", "variant")
    changes: dict[str, dict[str, Any]] = {}
    for step, label in picked.items():
        variant = _variant_of(axes, step, label)
        change = {key: variant[key] for key in ("module", "params") if variant.get(key)}
        if change:
            changes[step] = change
    return picked, changes
