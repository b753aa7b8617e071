"""A sweep's plan: check the axes whole, expand them into combinations, and say what each
run changes.

Pure functions, no ORM: the services (runs_app/sweeps/services.py) hand in a pipeline
version's resolved spec and a `Catalogue` of module versions; tests call everything here
without a database. What the runs measured is compared in runs_app/sweeps/stats.py.

Vocabulary. An *axis* is a step with a list of *variants*; a variant is
`{"label", "module"?, "params"?}` (DECISIONS.md, Sweeps). A *combination* picks one label per
axis plus a replicate number r; it becomes one run whose `variant` is
`{step: label, ..., "replicate": r}`. A *variant* in the comparison is a combination without
its replicate: the replicates of one variant are its samples.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines_app.specs import (
    MODULE_REF_RE,
    Catalogue,
    ResolvedSpec,
    check_params,
    editable_spec,
    resolve_spec,
    step_bindings,
    topological_order,
)
from workspaces.errors import Problems

# A label names a variant in run rows, URLs and chart legends: short and URL-safe.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LABEL_HELP = "1-64 letters, digits, '_', '.', '+' or '-', starting with a letter or digit"
VARIANT_KEYS = ("label", "module", "params")
# The run's `variant` holds {step: label, "replicate": r}: a step of that name can't be an axis.
REPLICATE_KEY = "replicate"
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


def variant_key(variant: Mapping[str, Any]) -> str:
    """A stored variant's combination as a digest (`PipelineRun.variant_key`, unique in its
    sweep): the same for the same choices and replicate, whatever the order of the keys."""
    choices, replicate = combination_key(variant)
    text = json.dumps([choices, replicate], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        names |= {b.dataset for b in step_bindings(step).values() if b.is_dataset}
    return names


def _module_line(ref: str) -> str:
    return ref.split("@", maxsplit=1)[0]


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
        for binding in step_bindings(spec).values():
            if not binding.is_dataset and binding.step == step and binding.output not in outputs:
                problems.append(
                    f"{ref} does not declare output {binding.output!r}, which step {other!r} binds"
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
    declared = iface.get("params", {}).get(param, {}).get("type")
    return bool(declared != "int")


def _label_ok(
    raw: Mapping[str, Any], path: str, step: str, taken: set[str], problems: Problems
) -> bool:
    for key in raw:
        if key not in VARIANT_KEYS:
            problems.add(f"{path}.{key}", "unknown key (a variant has label, module and params)")
    label = raw.get("label")
    if not isinstance(label, str) or not LABEL_RE.match(label):
        problems.add(f"{path}.label", f"required: a short label ({LABEL_HELP})")
        return False
    if label in taken:
        problems.add(f"{path}.label", f"duplicate label {label!r} on axis {step!r}")
        return False
    return True


def _params_ok(
    iface: Mapping[str, Any],
    carried: dict[str, Any],
    own: dict[str, Any],
    path: str,
    problems: Problems,
) -> dict[str, Any] | None:
    """The variant's params coerced against the module, or None; a carried-over base param
    that no longer fits is the module's problem (the user did not write it)."""
    coerced, param_problems = check_params(iface, {**carried, **own}, f"{path}.params")
    for where, reasons in param_problems.items():
        name = where.removeprefix(f"{path}.params.").split(".")[0]
        for reason in reasons:
            if name in carried and name not in own:
                problems.add(f"{path}.module", f"the base step's param {name!r}: {reason}")
            else:
                problems.add(where, reason)
    return None if param_problems else coerced


def _seeds_ok(
    raw: Mapping[str, Any],
    own: dict[str, Any],
    iface: Mapping[str, Any],
    ref: str,
    seeds: list[str],
    path: str,
    problems: Problems,
) -> bool:
    ok = True
    for param in seeds:
        if param in own:
            problems.add(f"{path}.params.{param}", "set by each replicate (a seed param)")
            ok = False
        # On the base's own module the problem is the seed param's (_check_seed_params).
        if raw.get("module") is not None and _lacks_int_param(iface, param):
            problems.add(f"{path}.module", f"{ref} has no int param {param!r} for the replicate")
            ok = False
    return ok


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
    ok = _label_ok(raw, path, step, taken, problems)
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
    same_line = _module_line(ref) == _module_line(base_step["module"])
    carried = dict(base_step.get("params", {})) if same_line else {}
    coerced = _params_ok(iface, carried, own, path, problems)
    seeds = _seed_targets(seed_params).get(step, [])
    ok = _seeds_ok(raw, own, iface, ref, seeds, path, problems) and ok
    if not ok or coerced is None:
        return None
    variant: dict[str, Any] = {"label": raw["label"]}
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


def _check_axes(
    base_spec: Mapping[str, Any],
    catalogue: Catalogue,
    axes: Mapping[str, Any],
    seeds: list[str],
    problems: Problems,
) -> dict[str, list[dict[str, Any]]]:
    """Each axis's variants checked and normalised (those with problems left out)."""
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
    return checked


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
    checked = _check_axes(base_spec, catalogue, axes, seeds, problems)
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
