"""Checking and expanding a sweep's axes: pure functions on a spec and a catalogue."""

from __future__ import annotations

import pytest

from pipelines_app.specs import Catalogue, ModuleInfo
from runs_app.sweeps.plan import (
    Combination,
    promotion_changes,
    run_changes,
    sweep_plan,
    variant_version_spec,
)
from workspaces.errors import DomainError


def _iface(inputs, outputs, **params):
    return {
        "inputs": inputs,
        "optional_inputs": [],
        "outputs": outputs,
        "params": {
            name: {"type": kind, "required": False, "default": default}
            for name, (kind, default) in params.items()
        },
    }


CATALOGUE = Catalogue(
    modules={
        "prep": {1: ModuleInfo(1, _iface(["data"], ["train", "test"], test_size=("float", 0.25)))},
        "prep_pca": {
            1: ModuleInfo(2, _iface(["data"], ["train", "test"], n=("int", 16))),
            2: ModuleInfo(3, _iface(["data"], ["train", "test"], n=("int", 8))),
        },
        "train": {
            1: ModuleInfo(4, _iface(["train"], ["model"], C=("float", 1.0), seed=("int", 0)))
        },
        "train_rf": {
            1: ModuleInfo(5, _iface(["train"], ["model"], depth=("int", 8), seed=("int", 0)))
        },
    },
    datasets={"digits": {1: 9}},
)
BASE = {
    "steps": {
        "prep": {
            "module": "prep@1",
            "module_version": 1,
            "params": {"test_size": 0.3},
            "inputs": {"data": "dataset:digits@1"},
        },
        "train": {
            "module": "train@1",
            "module_version": 4,
            "params": {"C": 2.0, "seed": 0},
            "inputs": {"train": "prep.train"},
        },
    }
}


def plan(axes, replicates=1, seed_params=(), max_runs=1000, name="s"):
    return sweep_plan(
        BASE,
        CATALOGUE,
        name=name,
        axes=axes,
        replicates=replicates,
        seed_params=list(seed_params),
        max_runs=max_runs,
    )


def test_the_product_expands_upstream_axis_slowest_and_replicate_fastest():
    # Given train first: the plan orders axes as the pipeline does (prep before train).
    checked = plan(
        {
            "train": [{"label": "lr"}, {"label": "rf", "module": "train_rf@latest"}],
            "prep": [{"label": "std"}, {"label": "pca", "module": "prep_pca@1"}, {"label": "p8"}],
        },
        replicates=2,
        seed_params=["train.seed"],
    )

    combinations = checked.combinations()
    assert list(checked.axes) == ["prep", "train"]
    assert checked.size == len(combinations) == 3 * 2 * 2
    assert [c.variant() for c in combinations[:5]] == [
        {"prep": "std", "train": "lr", "replicate": 0},
        {"prep": "std", "train": "lr", "replicate": 1},
        {"prep": "std", "train": "rf", "replicate": 0},
        {"prep": "std", "train": "rf", "replicate": 1},
        {"prep": "pca", "train": "lr", "replicate": 0},
    ]
    assert len({c.key for c in combinations}) == 12
    # `latest` is pinned when the sweep is made, so later pushes do not change it.
    assert checked.axes["train"][1] == {"label": "rf", "module": "train_rf@1"}


def test_a_combination_swaps_modules_sets_params_and_the_replicate_seeds():
    checked = plan(
        {
            "prep": [
                {"label": "std"},
                {"label": "pca", "module": "prep_pca@2", "params": {"n": 4}},
            ],
            "train": [
                {"label": "lr", "params": {"C": 0.5}},
                {"label": "rf", "module": "train_rf@1"},
            ],
        },
        replicates=3,
        seed_params=["train.seed"],
    )

    changes = run_changes(
        BASE,
        checked.axes,
        Combination((("prep", "pca"), ("train", "lr")), 2),
        checked.seed_params,
    )

    assert changes.modules == {"prep": "prep_pca@2"}
    assert changes.params == {"prep.n": 4, "train.C": 0.5, "train.seed": 2}
    # A module of another line starts from its own defaults; the base's params stay behind.
    spec = variant_version_spec(BASE, {"prep": "prep_pca@2", "train": "train@1"})
    assert spec["steps"]["prep"] == {"module": "prep_pca@2", "inputs": {"data": "dataset:digits@1"}}
    assert spec["steps"]["train"]["params"] == {"C": 2.0, "seed": 0}  # same line: carried over


def test_a_variant_naming_the_base_module_swaps_nothing():
    checked = plan({"train": [{"label": "same", "module": "train@latest"}]})

    changes = run_changes(BASE, checked.axes, checked.combinations()[0], [])

    assert changes.modules == {} and changes.params == {}


@pytest.mark.parametrize(
    ("axes", "kwargs", "path"),
    [
        ({"nope": [{"label": "x"}]}, {}, "axes.nope"),
        ({"train": []}, {}, "axes.train"),
        ({}, {}, "axes"),
        ({"train": [{"label": "x"}, {"label": "x", "params": {"C": 3}}]}, {}, "axes.train.1.label"),
        ({"train": [{"label": "has space"}]}, {}, "axes.train.0.label"),
        ({"train": [{"label": "x", "inputs": {}}]}, {}, "axes.train.0.inputs"),
        ({"train": [{"label": "x", "module": "prep_pca@1"}]}, {}, "axes.train.0.module"),
        ({"prep": [{"label": "x", "module": "train_rf@1"}]}, {}, "axes.prep.0.module"),
        ({"train": [{"label": "x", "module": "train_rf@5"}]}, {}, "axes.train.0.module"),
        ({"train": [{"label": "x", "params": {"depth": 3}}]}, {}, "axes.train.0.params.depth"),
        ({"train": [{"label": "x", "params": {"C": "big"}}]}, {}, "axes.train.0.params.C"),
        (
            {"train": [{"label": "x", "params": {"seed": 4}}]},
            {"replicates": 2, "seed_params": ["train.seed"]},
            "axes.train.0.params.seed",
        ),
        ({"train": [{"label": "x"}]}, {"replicates": 2}, "seed_params"),
        ({"train": [{"label": "x"}]}, {"seed_params": ["prep.test_size"]}, "seed_params.0"),
        ({"train": [{"label": "x"}]}, {"seed_params": ["eval.seed"]}, "seed_params.0"),
        ({"train": [{"label": "x"}]}, {"replicates": 0}, "replicates"),
        ({"train": [{"label": "x"}]}, {"name": " "}, "name"),
        (
            {"train": [{"label": "a"}, {"label": "b"}], "prep": [{"label": "c"}, {"label": "d"}]},
            {"replicates": 2, "seed_params": ["train.seed"], "max_runs": 7},
            "axes",
        ),
    ],
)
def test_each_bad_input_names_its_field(axes, kwargs, path):
    with pytest.raises(DomainError) as error:
        plan(axes, **kwargs)

    assert path in error.value.fields, error.value.fields


def test_a_swapped_module_missing_the_seed_param_is_the_variants_problem():
    catalogue = Catalogue(
        modules={
            **CATALOGUE.modules,
            "train_noseed": {1: ModuleInfo(6, _iface(["train"], ["model"], C=("float", 1.0)))},
        },
        datasets=CATALOGUE.datasets,
    )
    with pytest.raises(DomainError) as error:
        sweep_plan(
            BASE,
            catalogue,
            name="s",
            axes={"train": [{"label": "lr"}, {"label": "ns", "module": "train_noseed@1"}]},
            replicates=2,
            seed_params=["train.seed"],
            max_runs=100,
        )

    assert list(error.value.fields) == ["axes.train.1.module"]


def test_a_base_param_a_newer_version_of_the_line_lacks_is_named_on_the_module():
    base = {
        "steps": {
            **BASE["steps"],
            "prep": {**BASE["steps"]["prep"], "module": "prep_pca@1", "params": {"n": 16}},
        }
    }
    catalogue = Catalogue(
        modules={
            **CATALOGUE.modules,
            "prep_pca": {
                **CATALOGUE.modules["prep_pca"],
                3: ModuleInfo(7, _iface(["data"], ["train", "test"], k=("int", 2))),
            },
        },
        datasets=CATALOGUE.datasets,
    )
    with pytest.raises(DomainError) as error:
        sweep_plan(
            base,
            catalogue,
            name="s",
            axes={"prep": [{"label": "v3", "module": "prep_pca@3"}]},
            replicates=1,
            seed_params=[],
            max_runs=100,
        )

    assert list(error.value.fields) == ["axes.prep.0.module"]
    assert "base step's param 'n'" in error.value.fields["axes.prep.0.module"][0]


def test_promoting_needs_one_known_label_per_axis():
    checked = plan(
        {
            "prep": [
                {"label": "std"},
                {"label": "pca", "module": "prep_pca@2", "params": {"n": 4}},
            ],
            "train": [{"label": "lr"}, {"label": "rf", "module": "train_rf@1"}],
        }
    )

    choices, changes = promotion_changes(
        checked.axes, {"prep": "pca", "train": "lr", "replicate": 1}
    )
    assert choices == {"prep": "pca", "train": "lr"}
    assert changes == {"prep": {"module": "prep_pca@2", "params": {"n": 4}}}
    with pytest.raises(DomainError) as error:
        promotion_changes(checked.axes, {"prep": "nope", "extra": "x"})
    assert set(error.value.fields) == {"variant.prep", "variant.train", "variant.extra"}
