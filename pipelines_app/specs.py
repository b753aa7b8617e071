"""Parse, validate and resolve a pipeline spec: pure functions, no ORM.

A spec names steps; each step runs one module version with params and binds each input to
another step's output (`step.output`) or to a dataset version (`dataset:NAME@N`). The
services hand in a Catalogue (plain data read from the workspace), so everything here is
testable without a database. Every problem is reported at once, each under its path in the
spec (`steps.train.params.hidden`), in one DomainError("invalid_spec").

The resolved spec stores each step's explicit params only (coerced); `effective_params`
fills in the module's defaults where a run needs them (the cache key), so a module's new
default does not silently rewrite old specs.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipelines_app.interfaces import ParamError, coerce_param
from workspaces.errors import Problems

SPEC_ERROR = "invalid_spec"

STEP_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# Module, pipeline and dataset names (SlugFields, used in URLs and refs).
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MODULE_REF_PATTERN = r"^([a-z0-9][a-z0-9_-]{0,99})@(latest|[1-9][0-9]*)$"
DATASET_REF_PATTERN = r"^dataset:([a-z0-9][a-z0-9_-]{0,99})@(latest|[1-9][0-9]*)$"
STEP_OUTPUT_PATTERN = r"^([^.:\s]+)\.([^.\s]+)$"

STEP_NAME_RE = re.compile(STEP_NAME_PATTERN)
NAME_RE = re.compile(NAME_PATTERN)
MODULE_REF_RE = re.compile(MODULE_REF_PATTERN)
DATASET_REF_RE = re.compile(DATASET_REF_PATTERN)
STEP_OUTPUT_RE = re.compile(STEP_OUTPUT_PATTERN)
STEP_KEYS = ("module", "params", "inputs", "timeout", "retries", "resources")
# `resources: {queue: gpu, cpus: 4, memory: 16G, gpus: 1}`: the queue routes the step to the
# workers that serve it; the rest is said for people (shown, not enforced).
QUEUE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
RESERVED_QUEUES = ("steps", "sweeps", "webhooks")
MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*[KMGT]i?B?$", re.IGNORECASE)
# A step's policies (`timeout: 600`, `retries: 2` or `{count, backoff, on}`): how long it may
# run and which failures run it again. They change how a step is run, never what it makes,
# so they are not in its cache key.
RETRY_REASONS = ("user_error", "timeout", "process_died")
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_RETRIES = 20
MAX_BACKOFF_S = 3600.0
DATASET_PREFIX = "dataset:"

SPEC_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Stepworks pipeline spec",
    "description": (
        "Named steps; each runs a module version (name@N or name@latest) with params and "
        "binds its inputs to another step's output (step.output) or a dataset version "
        "(dataset:NAME@N or dataset:NAME@latest)."
    ),
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {
        "steps": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": STEP_NAME_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["module"],
                "additionalProperties": False,
                "properties": {
                    "module": {"type": "string", "pattern": MODULE_REF_PATTERN},
                    "params": {"type": ["object", "null"]},
                    "inputs": {
                        "type": ["object", "null"],
                        "additionalProperties": {
                            "type": "string",
                            "anyOf": [
                                {"pattern": STEP_OUTPUT_PATTERN},
                                {"pattern": DATASET_REF_PATTERN},
                            ],
                        },
                    },
                    "timeout": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "maximum": 7 * 24 * 3600,
                        "description": "The step's time limit in seconds.",
                    },
                    "retries": {
                        "description": (
                            "How often a failed attempt runs again: a count, or count, backoff "
                            "(seconds, doubling) and on (the failure reasons that retry)."
                        ),
                        "anyOf": [
                            {"type": "integer", "minimum": 0, "maximum": 20},
                            {
                                "type": "object",
                                "properties": {
                                    "count": {"type": "integer", "minimum": 0, "maximum": 20},
                                    "backoff": {"type": "number", "minimum": 0, "maximum": 3600},
                                    "on": {
                                        "anyOf": [
                                            {"enum": ["user_error", "timeout", "process_died"]},
                                            {
                                                "type": "array",
                                                "items": {
                                                    "enum": [
                                                        "user_error",
                                                        "timeout",
                                                        "process_died",
                                                    ]
                                                },
                                            },
                                        ]
                                    },
                                },
                            },
                        ],
                    },
                },
            },
        }
    },
}


@dataclass(frozen=True)
class ModuleInfo:
    """One module version as the validator needs it: its row id and interface."""

    id: int
    interface: dict[str, Any]


@dataclass(frozen=True)
class Catalogue:
    """What a spec may refer to in its workspace: {name: {number: ...}}; latest = highest."""

    modules: dict[str, dict[int, ModuleInfo]] = field(default_factory=dict)
    datasets: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedSpec:
    """The canonical spec, its steps in topological order, and its digest."""

    spec: dict[str, Any]
    order: list[str]
    digest: str


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- parsing ----------------------------------------------------------------------------------


class _DuplicateKeys(yaml.YAMLError):
    """Duplicate mapping keys, each as (path in the spec, reason)."""

    def __init__(self, found: list[tuple[str, str]]) -> None:
        super().__init__("duplicate keys")
        self.found = found


# Aliases let a few lines of YAML expand to billions of nodes (or to a loop); a spec is small,
# so past this many nodes, counted with aliases expanded, it is refused before it is built.
MAX_SPEC_NODES = 100_000


def _duplicate_keys(root: yaml.Node) -> list[tuple[str, str]]:
    """Every duplicate mapping key under `root`, walked iteratively within MAX_SPEC_NODES."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    visited = 0
    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > MAX_SPEC_NODES:
            raise yaml.YAMLError(f"the spec has more than {MAX_SPEC_NODES} values")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(node.value)
            )
        elif isinstance(node, yaml.MappingNode):
            found.extend(_mapping_duplicates(node, path))
            for key_node, value_node in node.value:
                here = f"{path}.{key_node.value}" if path else str(key_node.value)
                stack.append((value_node, here))
    return found


def _mapping_duplicates(node: yaml.MappingNode, path: str) -> list[tuple[str, str]]:
    found = []
    first_line: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
        if key not in first_line:
            first_line[key] = line
            continue
        what = "step name" if path == "steps" else "key"
        here = f"{path}.{key_node.value}" if path else key_node.value
        reason = (
            f"duplicate {what} {key_node.value!r} on line {line} (first on line {first_line[key]})"
        )
        found.append((here, reason))
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_document(self, node: yaml.Node) -> Any:
        found = _duplicate_keys(node)
        if found:
            raise _DuplicateKeys(found)
        return super().construct_document(node)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())  # one line, whatever YAML's layout


def parse_spec(source: str | Mapping[str, Any]) -> Any:
    """YAML or JSON text (JSON is YAML) -> plain data; a mapping passes through."""
    if not isinstance(source, str):
        return source
    problems = Problems()
    try:
        return yaml.load(source, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKeys as exc:
        for path, reason in exc.found:
            problems.add(path, reason)
    except yaml.YAMLError as exc:
        problems.add("spec", f"not valid YAML or JSON: {_yaml_problem(exc)}")
    raise problems.error(SPEC_ERROR, "pipeline spec") from None


def referenced_names(parsed: Any) -> tuple[set[str], set[str]]:
    """(module names, dataset names) a parsed spec mentions, for loading a Catalogue.

    Best effort on malformed specs: validation reports what is wrong with them.
    """
    modules: set[str] = set()
    datasets: set[str] = set()
    steps = parsed.get("steps") if isinstance(parsed, Mapping) else None
    for step in steps.values() if isinstance(steps, Mapping) else []:
        if not isinstance(step, Mapping):
            continue
        module = step.get("module")
        ref = MODULE_REF_RE.match(module) if isinstance(module, str) else None
        if ref:
            modules.add(ref[1])
        inputs = step.get("inputs")
        for binding in inputs.values() if isinstance(inputs, Mapping) else []:
            match = DATASET_REF_RE.match(binding) if isinstance(binding, str) else None
            if match:
                datasets.add(match[1])
    return modules, datasets


# --- params -----------------------------------------------------------------------------------


def check_params(
    interface: Mapping[str, Any], params: Any, path: str
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(explicit params coerced, problems by path) for params given to a module version."""
    declared: Mapping[str, Any] = interface.get("params", {})
    problems = Problems()
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        problems.add(path, f"expected a mapping of param -> value, got {_describe(params)}")
        return {}, problems.fields
    coerced: dict[str, Any] = {}
    for name, value in params.items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            problems.add(f"{path}.{name}", f"unknown param (the module's params: {known})")
            continue
        try:
            coerced[name] = coerce_param(declared[name], value, f"{path}.{name}")
        except ParamError as exc:
            problems.add(exc.path, exc.reason)
    for name, spec in declared.items():
        if spec.get("required") and name not in params:
            problems.add(f"{path}.{name}", "required param is missing")
    return coerced, problems.fields


def effective_params(
    interface: Mapping[str, Any], params: Mapping[str, Any] | None, path: str = "params"
) -> dict[str, Any]:
    """Every declared param after defaults, coerced (what the cache key hashes)."""
    coerced, problems = check_params(interface, params or {}, path)
    if problems:
        raise Problems(problems).error("invalid_params", "set of params")
    defaults = {
        name: spec["default"]
        for name, spec in interface.get("params", {}).items()
        if not spec.get("required") and "default" in spec
    }
    return {**defaults, **coerced}


# --- validation -------------------------------------------------------------------------------


@dataclass
class _Step:
    """A step while it is being checked."""

    name: str
    module_ref: str | None = None
    info: ModuleInfo | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    # (input name, upstream step, output) for each `step.output` binding
    upstream: list[tuple[str, str, str]] = field(default_factory=list)
    policies: dict[str, Any] = field(default_factory=dict)  # timeout, retries, as given


def _resolve_number(versions: Mapping[int, Any], wanted: str) -> int | None:
    if not versions:
        return None
    number = max(versions) if wanted == "latest" else int(wanted)
    return number if number in versions else None


def _check_module(step: _Step, raw: Any, catalogue: Catalogue, problems: Problems) -> None:
    path = f"steps.{step.name}.module"
    if raw is None:
        problems.add(path, "required: the module version this step runs (name@N)")
        return
    match = MODULE_REF_RE.match(raw) if isinstance(raw, str) else None
    if match is None:
        problems.add(path, f"expected 'name@N' or 'name@latest', got {_describe(raw)}")
        return
    name, wanted = match[1], match[2]
    versions = catalogue.modules.get(name)
    if not versions:
        problems.add(path, f"no module {name!r} in this workspace")
        return
    number = _resolve_number(versions, wanted)
    if number is None:
        problems.add(path, f"module {name!r} has no version {wanted} (latest: {max(versions)})")
        return
    step.module_ref, step.info = f"{name}@{number}", versions[number]


def _check_dataset(binding: str, path: str, catalogue: Catalogue, problems: Problems) -> str:
    match = DATASET_REF_RE.match(binding)
    if match is None:
        problems.add(path, f"expected 'dataset:NAME@N' or 'dataset:NAME@latest', got {binding!r}")
        return binding
    name, wanted = match[1], match[2]
    versions = catalogue.datasets.get(name)
    if not versions:
        problems.add(path, f"no dataset {name!r} in this workspace")
        return binding
    number = _resolve_number(versions, wanted)
    if number is None:
        problems.add(path, f"dataset {name!r} has no version {wanted} (latest: {max(versions)})")
        return binding
    return f"{DATASET_PREFIX}{name}@{number}"


def _check_inputs(step: _Step, raw: Any, catalogue: Catalogue, problems: Problems) -> None:
    path = f"steps.{step.name}.inputs"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.add(path, f"expected a mapping of input -> binding, got {_describe(raw)}")
        return
    interface = step.info.interface if step.info else None
    declared = list(interface.get("inputs", [])) if interface else []
    for name, binding in raw.items():
        here = f"{path}.{name}"
        if interface is not None and name not in declared:
            known = ", ".join(declared) or "none"
            problems.add(here, f"{step.module_ref} has no input {name!r} (its inputs: {known})")
        if not isinstance(binding, str):
            problems.add(here, f"expected 'step.output' or 'dataset:NAME@N', got {binding!r}")
        elif binding.startswith(DATASET_PREFIX):
            step.inputs[str(name)] = _check_dataset(binding, here, catalogue, problems)
        elif (match := STEP_OUTPUT_RE.match(binding)) is not None:
            step.inputs[str(name)] = binding
            step.upstream.append((str(name), match[1], match[2]))
        else:
            problems.add(here, f"expected 'step.output' or 'dataset:NAME@N', got {binding!r}")
    optional = set(interface.get("optional_inputs", [])) if interface else set()
    for name in declared:
        if name not in raw and name not in optional:
            problems.add(f"{path}.{name}", "required input is not bound")


def _check_step(name: Any, raw: Any, catalogue: Catalogue, problems: Problems) -> _Step | None:
    if not isinstance(name, str):
        problems.add("steps", f"step names must be text, got {name!r}")
        return None
    path = f"steps.{name}"
    if not STEP_NAME_RE.match(name):
        problems.add(path, "a step name is lowercase letters, digits and '_', starting a letter")
    if not isinstance(raw, Mapping):
        problems.add(path, f"expected a mapping with module, params and inputs, got {raw!r}")
        return None
    for key in raw:
        if key not in STEP_KEYS:
            problems.add(
                f"{path}.{key}",
                "unknown key (a step has module, params, inputs, timeout, retries, resources)",
            )
    step = _Step(name)
    step.policies = check_policies(raw, path, problems)
    _check_module(step, raw.get("module"), catalogue, problems)
    if step.info is not None:
        interface = step.info.interface
        step.params, param_problems = check_params(interface, raw.get("params"), f"{path}.params")
        problems.merge(param_problems)
    elif raw.get("params") is not None and not isinstance(raw.get("params"), Mapping):
        problems.add(f"{path}.params", "expected a mapping of param -> value")
    _check_inputs(step, raw.get("inputs"), catalogue, problems)
    return step


def _check_bindings(steps: dict[str, _Step], problems: Problems) -> None:
    """Each `step.output` names a step of this spec and an output its module declares."""
    for step in steps.values():
        for input_name, source, output in step.upstream:
            path = f"steps.{step.name}.inputs.{input_name}"
            upstream = steps.get(source)
            if upstream is None:
                problems.add(path, f"no step {source!r} in this pipeline")
            elif upstream.info is not None:
                outputs = list(upstream.info.interface.get("outputs", []))
                if output not in outputs:
                    known = ", ".join(outputs) or "none"
                    problems.add(
                        path,
                        f"step {source!r} ({upstream.module_ref}) has no output {output!r} "
                        f"(its outputs: {known})",
                    )


# --- bindings and the graph -------------------------------------------------------------------
# The one reader of the binding grammar: everything else (the scheduler, the explorer, sweeps)
# asks these functions what a binding names and which steps feed which.


@dataclass(frozen=True)
class Binding:
    """An input binding, parsed: `step.output` sets step and output; `dataset:NAME@N` sets
    dataset and number (N, or "latest" before the spec is resolved)."""

    text: str
    step: str = ""
    output: str = ""
    dataset: str = ""
    number: str = ""

    @property
    def is_dataset(self) -> bool:
        return bool(self.dataset)

    @property
    def dataset_ref(self) -> str:
        """NAME@N, how a page labels the dataset."""
        return f"{self.dataset}@{self.number}"


def parse_binding(binding: Any) -> Binding | None:
    """The parts of a binding; None when it is neither form."""
    if not isinstance(binding, str):
        return None
    if match := DATASET_REF_RE.match(binding):
        return Binding(binding, dataset=match[1], number=match[2])
    if match := STEP_OUTPUT_RE.match(binding):
        return Binding(binding, step=match[1], output=match[2])
    return None


def step_bindings(step: Any) -> dict[str, Binding]:
    """{input: Binding} of one spec step (raw or resolved); unparsable bindings left out."""
    inputs = step.get("inputs") if isinstance(step, Mapping) else None
    parsed = {}
    for name, text in inputs.items() if isinstance(inputs, Mapping) else []:
        binding = parse_binding(text)
        if binding is not None:
            parsed[str(name)] = binding
    return parsed


def upstream_steps(step: Any) -> list[str]:
    """The steps one spec step reads from, in binding order, each once."""
    names = (b.step for b in step_bindings(step).values() if not b.is_dataset)
    return list(dict.fromkeys(names))


def downstream_steps(steps: Mapping[str, Any], roots: set[str]) -> set[str]:
    """The given steps and every step that consumes them, transitively."""
    result = set(roots)
    for name in topological_order(steps):  # a consumer comes after what it reads
        if name not in result and any(u in result for u in upstream_steps(steps[name])):
            result.add(name)
    return result


def _dependencies(steps: Mapping[str, Any]) -> dict[str, set[str]]:
    """{step: the steps it reads from}, for a spec's `steps` mapping (raw or resolved)."""
    return {name: {u for u in upstream_steps(step) if u in steps} for name, step in steps.items()}


def _kahn(deps: Mapping[str, set[str]]) -> list[str]:
    """Topological order, ties broken by name; steps on a cycle are left out."""
    waiting = {name: len(upstream) for name, upstream in deps.items()}
    downstream: dict[str, list[str]] = {name: [] for name in deps}
    for name, upstream in deps.items():
        for source in upstream:
            downstream[source].append(name)
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for successor in downstream[name]:
            waiting[successor] -= 1
            if waiting[successor] == 0:
                heapq.heappush(ready, successor)
    return order


def _cycles(deps: Mapping[str, set[str]], stuck: set[str]) -> list[list[str]]:
    """One cycle per knot of stuck steps, in data-flow order from its smallest name."""
    cycles: list[list[str]] = []
    covered: set[str] = set()
    for start in sorted(stuck):
        if start in covered:
            continue
        path, seen, node = [start], {start: 0}, start
        while True:  # follow the smallest stuck dependency until a step repeats
            node = min(deps[node] & stuck)
            if node in seen:
                cycle = path[seen[node] :]
                break
            seen[node] = len(path)
            path.append(node)
        cycle.reverse()  # show the data flow (a -> b: b reads a), not the dependencies
        smallest = cycle.index(min(cycle))
        cycle = cycle[smallest:] + cycle[:smallest]
        if not covered & set(cycle):
            cycles.append(cycle)
        covered |= set(path)
    return cycles


def topological_order(steps: Mapping[str, Any]) -> list[str]:
    """The steps of a valid spec in dependency order, ties broken by step name (steps on a
    cycle, which a valid spec has none of, come last by name rather than go missing)."""
    order = _kahn(_dependencies(steps))
    return order + sorted(set(steps) - set(order))


@dataclass(frozen=True)
class StepGraph:
    """A spec's steps as the scheduler walks them: who reads whom, both ways, and how.

    Built once per pipeline version (its spec never changes), so completing a step looks
    at its own successors only, never at the whole spec.
    """

    order: tuple[str, ...]  # dependency order, ties by name
    upstream: Mapping[str, tuple[str, ...]]  # the steps each reads from, each once
    successors: Mapping[str, tuple[str, ...]]  # the steps that read each, directly
    bindings: Mapping[str, Mapping[str, Binding]]  # {step: {input: Binding}}

    def downstream(self, roots: set[str]) -> set[str]:
        """Every step that reads from `roots`, transitively (the roots not included)."""
        found: set[str] = set()
        frontier = list(roots)
        while frontier:
            for successor in self.successors.get(frontier.pop(), ()):
                if successor not in found:
                    found.add(successor)
                    frontier.append(successor)
        return found


def step_graph(steps: Mapping[str, Any]) -> StepGraph:
    """The StepGraph of a spec's `steps` mapping (raw or resolved)."""
    upstream = {
        name: tuple(u for u in upstream_steps(step) if u in steps) for name, step in steps.items()
    }
    successors: dict[str, list[str]] = {name: [] for name in steps}
    order = topological_order(steps)
    for name in order:  # each successor list in dependency order too
        for source in upstream[name]:
            successors[source].append(name)
    return StepGraph(
        order=tuple(order),
        upstream=upstream,
        successors={name: tuple(names) for name, names in successors.items()},
        bindings={name: step_bindings(step) for name, step in steps.items()},
    )


# --- the whole resolution ---------------------------------------------------------------------


def _check_top_level(parsed: Any, problems: Problems) -> Mapping[Any, Any] | None:
    if not isinstance(parsed, Mapping):
        kind = "nothing" if parsed is None else f"a {type(parsed).__name__}"
        problems.add("spec", f"expected a mapping with a 'steps' key, got {kind}")
        return None
    for key in parsed:
        if key != "steps":
            problems.add(str(key), "unknown key (a spec has only 'steps')")
    steps = parsed.get("steps")
    if not isinstance(steps, Mapping) or not steps:
        problems.add("steps", "a pipeline needs at least one step: a mapping of name -> step")
        return None
    return steps


def _canonical(steps: dict[str, _Step], order: list[str]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name in order:
        step = steps[name]
        assert step.info is not None and step.module_ref is not None  # validated above
        resolved[name] = {
            "module": step.module_ref,
            "module_version": step.info.id,
            "params": dict(sorted(step.params.items())),
            "inputs": dict(sorted(step.inputs.items())),
            **step.policies,  # only when given: older specs keep their digests
        }
    return {"steps": resolved}


def check_policies(raw: Mapping[str, Any], path: str, problems: Problems) -> dict[str, Any]:
    """A step's `timeout` (seconds) and `retries` (a count, or {count, backoff, on}), in
    their canonical form ({"timeout": 600.0, "retries": {"count", "backoff", "on"}}); what
    is not given is left out (the settings' defaults apply)."""
    policies: dict[str, Any] = {}
    if raw.get("timeout") is not None:
        timeout = raw["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            problems.add(f"{path}.timeout", f"seconds, a number; got {timeout!r}")
        elif not 0 < timeout <= MAX_TIMEOUT_S:
            problems.add(f"{path}.timeout", f"above 0 and at most {MAX_TIMEOUT_S:g} s (7 days)")
        else:
            policies["timeout"] = float(timeout)
    if raw.get("retries") is not None:
        retries = _check_retries(raw["retries"], f"{path}.retries", problems)
        if retries is not None:
            policies["retries"] = retries
    if raw.get("resources") is not None:
        resources = _check_resources(raw["resources"], f"{path}.resources", problems)
        if resources:
            policies["resources"] = resources
    return policies


def _check_resources(raw: Any, path: str, problems: Problems) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        problems.add(path, f"a mapping with queue, cpus, memory and gpus; got {raw!r}")
        return {}
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{path}.{key}"
        if key == "queue":
            if not isinstance(value, str) or not QUEUE_NAME_RE.match(value):
                problems.add(where, "a queue name: lowercase letters, digits, _ and -")
            elif value in RESERVED_QUEUES:
                problems.add(where, f"{value!r} is Stepworks' own queue")
            else:
                checked["queue"] = value
        elif key in ("cpus", "gpus"):
            whole = key == "gpus"
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            if not ok or (whole and not isinstance(value, int)) or value > 1024:
                problems.add(where, f"a {'whole ' if whole else ''}number from 0 to 1024")
            else:
                checked[key] = value
        elif key == "memory":
            if not (isinstance(value, str) and MEMORY_RE.match(value.strip())):
                problems.add(where, "an amount like 512M or 16G")
            else:
                checked["memory"] = value.strip()
        else:
            problems.add(where, "unknown key (resources has queue, cpus, memory and gpus)")
    return checked


def describe_policies(spec_step: Mapping[str, Any]) -> str:
    """A step's policies for people: "timeout 600 s · 2 retries on timeout (backoff 10 s)";
    "" when it has none of its own (the settings' defaults apply)."""
    parts = []
    if spec_step.get("timeout") is not None:
        parts.append(f"timeout {spec_step['timeout']:g} s")
    retries = spec_step.get("retries")
    if retries is not None:
        count = retries["count"]
        parts.append(
            f"{count} retr{'y' if count == 1 else 'ies'} on {', '.join(retries['on'])} "
            f"(backoff {retries['backoff']:g} s, doubling)"
        )
    resources = spec_step.get("resources") or {}
    if resources.get("queue"):
        parts.append(f"queue {resources['queue']}")
    for key, unit in (("cpus", "CPUs"), ("memory", ""), ("gpus", "GPUs")):
        if key in resources:
            parts.append(f"{resources[key]} {unit}".strip())
    return " · ".join(parts)


def _check_retries(raw: Any, path: str, problems: Problems) -> dict[str, Any] | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"count": raw}
    if not isinstance(raw, Mapping):
        problems.add(path, f"a count, or a mapping with count, backoff and on; got {raw!r}")
        return None
    if True in raw:  # YAML 1.1 reads the key `on` as true (as in GitHub Actions' `on:`)
        raw = {("on" if key is True else key): value for key, value in raw.items()}
    unknown = sorted(str(key) for key in set(raw) - {"count", "backoff", "on"})
    if unknown:
        problems.add(f"{path}.{unknown[0]}", "unknown key (retries has count, backoff and on)")
    count, backoff, on = raw.get("count", 1), raw.get("backoff", 10), raw.get("on", RETRY_REASONS)
    before = sum(map(len, problems.fields.values()))
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_RETRIES:
        problems.add(f"{path}.count", f"a whole number from 0 to {MAX_RETRIES}; got {count!r}")
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, int | float)
        or not (0 <= backoff <= MAX_BACKOFF_S)
    ):
        problems.add(f"{path}.backoff", f"seconds from 0 to {MAX_BACKOFF_S:g}; got {backoff!r}")
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list | tuple) or not on or any(r not in RETRY_REASONS for r in on):
        problems.add(f"{path}.on", f"failure reasons among {', '.join(RETRY_REASONS)}")
    if sum(map(len, problems.fields.values())) != before:
        return None
    return {"count": count, "backoff": float(backoff), "on": sorted(set(on))}


def spec_digest(resolved: Mapping[str, Any]) -> str:
    """sha256 of the resolved spec's canonical JSON."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_spec(source: str | Mapping[str, Any], catalogue: Catalogue) -> ResolvedSpec:
    """Parse, validate against the catalogue and resolve `@latest`; DomainError otherwise."""
    problems = Problems()
    raw_steps = _check_top_level(parse_spec(source), problems)
    if raw_steps is None:
        raise problems.error(SPEC_ERROR, "pipeline spec")
    steps: dict[str, _Step] = {}
    for name, raw in raw_steps.items():
        step = _check_step(name, raw, catalogue, problems)
        if step is not None:
            steps[step.name] = step
    _check_bindings(steps, problems)
    deps = _dependencies({name: {"inputs": step.inputs} for name, step in steps.items()})
    order = _kahn(deps)
    for cycle in _cycles(deps, set(deps) - set(order)):
        problems.add("steps", "cycle: " + " -> ".join([*cycle, cycle[0]]))
    problems.raise_if_any(SPEC_ERROR, "pipeline spec")
    resolved = _canonical(steps, order)
    return ResolvedSpec(resolved, order, spec_digest(resolved))


# --- display ----------------------------------------------------------------------------------


def editable_spec(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved spec as a user writes it (no row ids; empty params/inputs left out)."""
    steps = resolved.get("steps", {})
    out: dict[str, Any] = {}
    for name in topological_order(steps):
        step = steps[name]
        entry: dict[str, Any] = {"module": step["module"]}
        if step.get("params"):
            entry["params"] = dict(step["params"])
        if step.get("inputs"):
            entry["inputs"] = dict(step["inputs"])
        for policy in ("timeout", "retries", "resources"):
            if step.get(policy) is not None:
                entry[policy] = step[policy]
        out[name] = entry
    return {"steps": out}


def render_spec_yaml(resolved: Mapping[str, Any]) -> str:
    """YAML for display and cloning, steps in dependency order."""
    return yaml.safe_dump(
        editable_spec(resolved), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
