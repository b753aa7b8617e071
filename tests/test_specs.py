"""Parsing, validating and resolving pipeline specs: pure, against a catalogue of plain data."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from pipelines_app.specs import (
    SPEC_JSON_SCHEMA,
    Catalogue,
    ModuleInfo,
    editable_spec,
    effective_params,
    render_spec_yaml,
    resolve_spec,
    spec_digest,
    topological_order,
)
from workspaces.errors import DomainError

PREP = {
    "inputs": ["raw"],
    "optional_inputs": [],
    "outputs": ["train", "test"],
    "params": {"test_size": {"type": "float", "required": False, "default": 0.25}},
}
TRAIN = {
    "inputs": ["train", "extra"],
    "optional_inputs": ["extra"],
    "outputs": ["model"],
    "params": {
        "hidden": {"type": "int", "required": False, "default": 32},
        "seed": {"type": "int", "required": True},
        "act": {
            "type": "literal",
            "choices": ["relu", "tanh"],
            "required": False,
            "default": "relu",
        },
    },
}
EVALUATE = {"inputs": ["model", "test"], "optional_inputs": [], "outputs": [], "params": {}}

CATALOGUE = Catalogue(
    modules={
        "prep": {1: ModuleInfo(11, PREP), 2: ModuleInfo(12, PREP)},
        "train_mlp": {1: ModuleInfo(21, TRAIN)},
        "evaluate": {1: ModuleInfo(31, EVALUATE)},
    },
    datasets={"iris": {1: 101, 2: 102}},
)

GOOD = """
steps:
  train:    {module: train_mlp@1, inputs: {train: prep.train}, params: {seed: 0, hidden: 64}}
  evaluate: {module: evaluate@latest, inputs: {model: train.model, test: prep.test}}
  prep:     {module: prep@latest, inputs: {raw: "dataset:iris@latest"}}
"""


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def problems(source: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        resolve_spec(source, CATALOGUE)
    assert caught.value.code == "invalid_spec"
    return caught.value


def with_step(name: str, step: str) -> str:
    """GOOD's prep step plus one more, written as YAML flow."""
    return (
        f'steps:\n  prep: {{module: prep@1, inputs: {{raw: "dataset:iris@1"}}}}\n  {name}: {step}\n'
    )


def test_good_spec_resolves_latest_and_orders_steps_topologically() -> None:
    result = resolve_spec(GOOD, CATALOGUE)
    assert result.order == ["prep", "train", "evaluate"]
    assert result.spec == {
        "steps": {
            "prep": {
                "module": "prep@2",
                "module_version": 12,
                "params": {},
                "inputs": {"raw": "dataset:iris@2"},
            },
            "train": {
                "module": "train_mlp@1",
                "module_version": 21,
                "params": {"hidden": 64, "seed": 0},
                "inputs": {"train": "prep.train"},
            },
            "evaluate": {
                "module": "evaluate@1",
                "module_version": 31,
                "params": {},
                "inputs": {"model": "train.model", "test": "prep.test"},
            },
        }
    }
    assert result.digest == spec_digest(result.spec)


def test_json_text_and_dicts_are_specs_too() -> None:
    as_dict = {"steps": {"prep": {"module": "prep@1", "inputs": {"raw": "dataset:iris@1"}}}}
    from_json = resolve_spec(json.dumps(as_dict), CATALOGUE)
    assert from_json == resolve_spec(as_dict, CATALOGUE)


def test_only_explicit_params_are_stored_and_coerced() -> None:
    result = resolve_spec(
        with_step("t", "{module: prep@1, params: {test_size: 1}, inputs: {raw: prep.train}}"),
        CATALOGUE,
    )
    assert result.spec["steps"]["t"]["params"] == {"test_size": 1.0}
    assert isinstance(result.spec["steps"]["t"]["params"]["test_size"], float)
    assert result.spec["steps"]["prep"]["params"] == {}


def test_effective_params_fill_defaults_so_equal_values_hash_alike() -> None:
    assert effective_params(TRAIN, {"seed": 1}) == {"hidden": 32, "seed": 1, "act": "relu"}
    assert effective_params(PREP, {"test_size": 1}) == effective_params(PREP, {"test_size": 1.0})
    with pytest.raises(DomainError) as caught:
        effective_params(TRAIN, {"hidden": "x"})
    assert caught.value.code == "invalid_params"
    assert caught.value.fields == {
        "params.hidden": ["expected int, got 'x'"],
        "params.seed": ["required param is missing"],
    }


def test_ties_in_topological_order_are_broken_by_step_name() -> None:
    steps = {name: {"inputs": {}} for name in ("c", "a", "b")}
    steps["a"]["inputs"] = {"x": "c.out"}
    assert topological_order(steps) == ["b", "c", "a"]


def test_digest_does_not_depend_on_key_order() -> None:
    one = resolve_spec(GOOD, CATALOGUE)
    reordered = "\n".join(reversed(yaml_text(GOOD).splitlines()[1:]))
    two = resolve_spec("steps:\n" + reordered, CATALOGUE)
    assert one.digest == two.digest


def test_optional_input_may_be_left_unbound() -> None:
    result = resolve_spec(
        with_step("t", "{module: train_mlp@1, params: {seed: 1}, inputs: {train: prep.train}}"),
        CATALOGUE,
    )
    assert result.spec["steps"]["t"]["inputs"] == {"train": "prep.train"}


def test_rendered_yaml_round_trips_to_the_same_resolved_spec() -> None:
    result = resolve_spec(GOOD, CATALOGUE)
    text = render_spec_yaml(result.spec)
    assert text.index("prep:") < text.index("train:") < text.index("evaluate:")
    assert "module_version" not in text
    assert resolve_spec(text, CATALOGUE).spec == result.spec


def test_json_schema_accepts_a_good_spec_and_rejects_a_bad_shape() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    good = {"steps": {"prep": {"module": "prep@2", "inputs": {"raw": "dataset:iris@latest"}}}}
    jsonschema.validate(good, SPEC_JSON_SCHEMA)
    for bad in ({}, {"steps": {}}, {"steps": {"Bad": {"module": "a@1"}}}, {"steps": {"a": {}}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SPEC_JSON_SCHEMA)


# --- every rejection, with its path and reason --------------------------------------------------


def test_malformed_yaml_names_its_line() -> None:
    error = problems("steps:\n  prep: {module: prep@1\n  train: x\n")
    assert error.fields["spec"][0].startswith("not valid YAML or JSON: line 3")


def test_malformed_json_names_its_line() -> None:
    error = problems('{"steps": {"prep": {"module": "prep@1",}},\n "x": [}\n')
    assert "line 2" in error.fields["spec"][0]


def test_top_level_must_be_a_mapping() -> None:
    assert problems("- a\n- b\n").fields == {
        "spec": ["expected a mapping with a 'steps' key, got a list"]
    }
    assert problems("").fields == {"spec": ["expected a mapping with a 'steps' key, got nothing"]}


def test_unknown_top_level_key() -> None:
    error = problems(GOOD + "stages: {}\n")
    assert error.fields == {"stages": ["unknown key (a spec has only 'steps')"]}


@pytest.mark.parametrize("text", ["steps: {}\n", "name: x\n", "steps: [a]\n"])
def test_a_spec_needs_steps(text: str) -> None:
    assert problems(text).fields["steps"][0].startswith("a pipeline needs at least one step")


@pytest.mark.parametrize("name", ["Train", "1st", "train-mlp", "x" * 64])
def test_bad_step_name(name: str) -> None:
    error = problems(with_step(name, "{module: prep@1, inputs: {raw: prep.train}}"))
    assert error.fields[f"steps.{name}"] == [
        "a step name is lowercase letters, digits and '_', starting a letter"
    ]


def test_duplicate_step_name_is_detected_not_silently_overwritten() -> None:
    text = GOOD + "  prep: {module: prep@1, inputs: {raw: 'dataset:iris@1'}}\n"
    error = problems(text)
    assert error.fields == {
        "steps.prep": ["duplicate step name 'prep' on line 6 (first on line 5)"]
    }


def test_duplicate_json_key_is_detected() -> None:
    error = problems('{"steps": {"a": {"module": "prep@1", "module": "prep@2"}}}')
    assert error.fields["steps.a.module"][0].startswith("duplicate key 'module'")


def test_cycle_names_its_steps() -> None:
    text = """
        steps:
          a: {module: prep@1, inputs: {raw: c.train}}
          b: {module: prep@1, inputs: {raw: a.train}}
          c: {module: prep@1, inputs: {raw: b.test}}
          d: {module: prep@1, inputs: {raw: d.train}}
    """
    error = problems(yaml_text(text))
    assert error.fields == {"steps": ["cycle: a -> b -> c -> a", "cycle: d -> d"]}


def test_binding_to_unknown_step() -> None:
    error = problems(with_step("t", "{module: prep@1, inputs: {raw: nowhere.train}}"))
    assert error.fields == {"steps.t.inputs.raw": ["no step 'nowhere' in this pipeline"]}


def test_binding_to_an_output_the_module_does_not_declare() -> None:
    error = problems(with_step("t", "{module: prep@1, inputs: {raw: prep.model}}"))
    assert error.fields == {
        "steps.t.inputs.raw": [
            "step 'prep' (prep@1) has no output 'model' (its outputs: train, test)"
        ]
    }


def test_malformed_binding() -> None:
    error = problems(with_step("t", "{module: prep@1, inputs: {raw: justaname}}"))
    assert error.fields["steps.t.inputs.raw"][0].startswith("expected 'step.output'")


def test_unknown_module() -> None:
    error = problems(with_step("t", "{module: nope@1}"))
    assert error.fields == {"steps.t.module": ["no module 'nope' in this workspace"]}


def test_unknown_module_version() -> None:
    error = problems(with_step("t", "{module: prep@9, inputs: {raw: prep.train}}"))
    assert error.fields == {"steps.t.module": ["module 'prep' has no version 9 (latest: 2)"]}


@pytest.mark.parametrize("ref", ["prep", "prep@0", "prep@v1", "Prep@1", "42"])
def test_malformed_module_ref(ref: str) -> None:
    error = problems(with_step("t", f"{{module: '{ref}'}}"))
    assert error.fields["steps.t.module"][0].startswith("expected 'name@N' or 'name@latest'")


def test_missing_module() -> None:
    error = problems(with_step("t", "{params: {}}"))
    assert error.fields["steps.t.module"][0].startswith("required")


def test_input_the_module_does_not_declare() -> None:
    error = problems(
        with_step("t", "{module: prep@1, inputs: {raw: prep.train, other: prep.test}}")
    )
    assert error.fields == {
        "steps.t.inputs.other": ["prep@1 has no input 'other' (its inputs: raw)"]
    }


def test_required_input_left_unbound() -> None:
    error = problems(with_step("t", "{module: evaluate@1, inputs: {test: prep.test}}"))
    assert error.fields == {"steps.t.inputs.model": ["required input is not bound"]}


def test_unknown_param() -> None:
    error = problems(
        with_step("t", "{module: prep@1, inputs: {raw: prep.train}, params: {size: 1}}")
    )
    assert error.fields == {
        "steps.t.params.size": ["unknown param (the module's params: test_size)"]
    }


@pytest.mark.parametrize(
    ("params", "path", "reason"),
    [
        ("{seed: abc}", "steps.t.params.seed", "expected int, got 'abc'"),
        ("{seed: 1, hidden: 1.5}", "steps.t.params.hidden", "expected int, got 1.5"),
        ("{seed: true}", "steps.t.params.seed", "expected int, got True"),
        (
            "{seed: 1, act: gelu}",
            "steps.t.params.act",
            "expected one of 'relu', 'tanh', got 'gelu'",
        ),
    ],
)
def test_param_of_the_wrong_type(params: str, path: str, reason: str) -> None:
    error = problems(
        with_step("t", f"{{module: train_mlp@1, inputs: {{train: prep.train}}, params: {params}}}")
    )
    assert error.fields == {path: [reason]}


def test_required_param_missing() -> None:
    error = problems(with_step("t", "{module: train_mlp@1, inputs: {train: prep.train}}"))
    assert error.fields == {"steps.t.params.seed": ["required param is missing"]}


def test_unknown_dataset() -> None:
    error = problems(with_step("t", "{module: prep@1, inputs: {raw: 'dataset:wine@1'}}"))
    assert error.fields == {"steps.t.inputs.raw": ["no dataset 'wine' in this workspace"]}


def test_unknown_dataset_version() -> None:
    error = problems(with_step("t", "{module: prep@1, inputs: {raw: 'dataset:iris@3'}}"))
    assert error.fields == {"steps.t.inputs.raw": ["dataset 'iris' has no version 3 (latest: 2)"]}


def test_unknown_keys_in_a_step() -> None:
    error = problems(
        with_step("t", "{module: prep@1, inputs: {raw: prep.train}, param: {}, image: x}")
    )
    unknown = "unknown key (a step has module, params, inputs, timeout, retries, resources)"
    assert error.fields == {"steps.t.param": [unknown], "steps.t.image": [unknown]}


def test_a_step_must_be_a_mapping() -> None:
    error = problems(with_step("t", "prep@1"))
    assert error.fields["steps.t"][0].startswith("expected a mapping with module")


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    text = """
        steps:
          Bad: {module: nope@1, extra: 1}
          train: {module: train_mlp@1, params: {hidden: x, nope: 1}, inputs: {train: ghost.out}}
          evaluate: {module: evaluate@1, inputs: {model: train.weights}}
    """
    error = problems(yaml_text(text))
    assert error.fields == {
        "steps.Bad": ["a step name is lowercase letters, digits and '_', starting a letter"],
        "steps.Bad.extra": [
            "unknown key (a step has module, params, inputs, timeout, retries, resources)"
        ],
        "steps.Bad.module": ["no module 'nope' in this workspace"],
        "steps.train.params.hidden": ["expected int, got 'x'"],
        "steps.train.params.nope": ["unknown param (the module's params: act, hidden, seed)"],
        "steps.train.params.seed": ["required param is missing"],
        "steps.train.inputs.train": ["no step 'ghost' in this pipeline"],
        "steps.evaluate.inputs.test": ["required input is not bound"],
        "steps.evaluate.inputs.model": [
            "step 'train' (train_mlp@1) has no output 'weights' (its outputs: model)"
        ],
    }
    assert error.message == "The pipeline spec has 9 problems."


def test_a_step_takes_a_timeout_and_retries_in_their_canonical_form() -> None:
    spec = with_step(
        "train",
        "{module: train_mlp@1, inputs: {train: prep.train}, params: {seed: 0}, "
        "timeout: 600, retries: 2}",
    )
    resolved = resolve_spec(spec, CATALOGUE).spec["steps"]

    assert resolved["train"]["timeout"] == 600.0
    assert resolved["train"]["retries"] == {
        "count": 2,
        "backoff": 10.0,
        "on": ["process_died", "timeout", "user_error"],
    }
    assert "timeout" not in resolved["prep"] and "retries" not in resolved["prep"]
    assert editable_spec({"steps": resolved})["steps"]["train"]["timeout"] == 600.0


def test_retries_may_name_their_backoff_and_reasons() -> None:
    spec = with_step(
        "train",
        "{module: train_mlp@1, inputs: {train: prep.train}, params: {seed: 0}, "
        "retries: {count: 3, backoff: 0.5, on: timeout}}",  # YAML reads `on` as true: fine
    )
    resolved = resolve_spec(spec, CATALOGUE).spec["steps"]

    assert resolved["train"]["retries"] == {"count": 3, "backoff": 0.5, "on": ["timeout"]}


@pytest.mark.parametrize(
    ("policy", "path"),
    [
        ("timeout: 0", "steps.train.timeout"),
        ("timeout: ten", "steps.train.timeout"),
        ("timeout: 99999999", "steps.train.timeout"),
        ("retries: -1", "steps.train.retries.count"),
        ("retries: 21", "steps.train.retries.count"),
        ("retries: yes", "steps.train.retries"),
        ("retries: {count: 1, on: [oops]}", "steps.train.retries.on"),
        ("retries: {count: 1, backoff: -2}", "steps.train.retries.backoff"),
        ("retries: {count: 1, wait: 2}", "steps.train.retries.wait"),
    ],
)
def test_a_bad_policy_is_named_by_its_path(policy: str, path: str) -> None:
    error = problems(
        with_step(
            "train",
            "{module: train_mlp@1, inputs: {train: prep.train}, params: {seed: 0}, " + policy + "}",
        )
    )

    assert path in error.fields, error.fields
