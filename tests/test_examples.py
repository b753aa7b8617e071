"""The demo's step code, run in-process on a slice of digits: each step returns exactly the
outputs its code declares, the same inputs and params give the same outputs (reuse depends on
it), and the variants really differ.

`python tests/test_examples.py` runs the whole demo grid on all of digits and prints each
combination's accuracy and each step's time.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from stepworks import StepContext

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# folder -> entrypoint, as seed_demo pushes them (train_mlp_v2 is version 2 of train_mlp)
ENTRYPOINTS = {
    "prep_standardize": "prep.py:prep",
    "prep_minmax": "prep.py:prep",
    "prep_pca": "prep.py:prep",
    "augment_none": "augment.py:augment",
    "augment_noise": "augment.py:augment",
    "train_logreg": "train.py:train",
    "train_rf": "train.py:train",
    "train_mlp": "train.py:train",
    "train_mlp_v2": "train.py:train",
    "evaluate": "evaluate.py:evaluate",
}
PREPS = ["prep_standardize", "prep_minmax", "prep_pca"]
AUGMENTS = ["augment_none", "augment_noise"]
MODELS = ["train_logreg", "train_rf", "train_mlp"]


@cache
def step(folder: str) -> Callable[..., dict[str, Any]]:
    """The entrypoint function, loaded from its file the way a worker sees it: not a package."""
    filename, function = ENTRYPOINTS[folder].split(":")
    spec = importlib.util.spec_from_file_location(f"example_{folder}", EXAMPLES / folder / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function)


def declared_outputs(folder: str) -> set[str]:
    """The keys of the dict literal in every `return` of the entrypoint (read by ast)."""
    filename, function = ENTRYPOINTS[folder].split(":")
    tree = ast.parse((EXAMPLES / folder / filename).read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    key_sets: list[set[str]] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Return):
            assert isinstance(node.value, ast.Dict), f"{folder}: a return without a dict literal"
            keys = [k.value if isinstance(k, ast.Constant) else None for k in node.value.keys]
            assert all(isinstance(k, str) for k in keys), f"{folder}: non-literal output key"
            key_sets.append({str(k) for k in keys})
    assert key_sets and all(keys == key_sets[0] for keys in key_sets), folder
    return key_sets[0]


def call(folder: str, *inputs: Any, **params: Any) -> tuple[dict[str, Any], StepContext]:
    ctx = StepContext(params=params, step_name=folder)
    outputs = step(folder)(ctx, *inputs, **params)
    return outputs, ctx


def metric(ctx: StepContext, name: str) -> float:
    values = [p.value for p in ctx.metrics if p.name == name and p.step is None]
    assert len(values) == 1, f"{name} logged {len(values)} times"
    return values[0]


def digits(rows: int | None = None) -> pd.DataFrame:
    frame = load_digits(as_frame=True).frame
    return frame if rows is None else frame.iloc[:rows].reset_index(drop=True)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    # Enough rows that every class lands in the test split; few enough to stay quick.
    return digits(600)


@pytest.fixture(scope="module")
def prepped(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return call("prep_standardize", data)[0]


def test_every_example_folder_is_a_known_module() -> None:
    folders = {
        p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    }
    assert folders == set(ENTRYPOINTS)
    assert not (EXAMPLES / "__init__.py").exists()  # data for the product, not a package
    for folder in folders:
        # One file per module: seed_demo recognises a pushed version by that file's digest.
        files = [p.name for p in (EXAMPLES / folder).iterdir() if p.name != "__pycache__"]
        assert files == [ENTRYPOINTS[folder].split(":")[0]], folder


@pytest.mark.parametrize("prep", PREPS)
def test_prep_splits_and_scales_on_train_rows(prep: str, data: pd.DataFrame) -> None:
    outputs, _ = call(prep, data, test_size=0.25, split_seed=0)

    assert set(outputs) == declared_outputs(prep) == {"train", "test"}
    train, test = outputs["train"], outputs["test"]
    assert len(train) + len(test) == len(data) and len(test) == 150
    assert list(train.columns) == list(test.columns) and train.columns[-1] == "target"
    assert isinstance(train.index, pd.RangeIndex)
    # every prep splits the same way, so the test rows are the same rows whatever the prep
    standard_test = call("prep_standardize", data)[0]["test"]
    assert test["target"].tolist() == standard_test["target"].tolist()
    features = train.drop(columns="target")
    if prep == "prep_minmax":
        assert features.min().min() == 0.0 and features.max().max() == 1.0
    elif prep == "prep_pca":
        assert features.shape[1] == 16
    else:
        assert np.allclose(features.mean(), 0.0) and features.shape[1] == 64


def test_prep_split_seed_changes_the_split(data: pd.DataFrame) -> None:
    a = call("prep_standardize", data, split_seed=0)[0]["test"]
    b = call("prep_standardize", data, split_seed=1)[0]["test"]
    assert not a.equals(b)


def test_augment_none_passes_train_on(prepped: dict[str, pd.DataFrame]) -> None:
    outputs, _ = call("augment_none", prepped["train"])
    assert set(outputs) == declared_outputs("augment_none") == {"train"}
    pd.testing.assert_frame_equal(outputs["train"], prepped["train"])


def test_augment_noise_appends_noisy_copies(prepped: dict[str, pd.DataFrame]) -> None:
    train = prepped["train"]
    outputs, ctx = call("augment_noise", train, copies=2, scale=0.1, seed=0)

    assert set(outputs) == declared_outputs("augment_noise") == {"train"}
    out = outputs["train"]
    assert len(out) == 3 * len(train) and metric(ctx, "rows") == 3 * len(train)
    pd.testing.assert_frame_equal(out.iloc[: len(train)], train)
    assert out["target"].tolist() == train["target"].tolist() * 3
    copy = out.iloc[len(train) : 2 * len(train)].drop(columns="target").to_numpy()
    noise = copy - train.drop(columns="target").to_numpy()
    assert 0.05 < noise.std() < 0.15  # scale 0.1 of standardized (std 1) features


def test_augment_noise_is_deterministic_and_seeded(prepped: dict[str, pd.DataFrame]) -> None:
    first = call("augment_noise", prepped["train"], seed=3)[0]["train"]
    again = call("augment_noise", prepped["train"], seed=3)[0]["train"]
    other = call("augment_noise", prepped["train"], seed=4)[0]["train"]
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


@pytest.mark.parametrize("model", [*MODELS, "train_mlp_v2"])
def test_model_returns_a_fitted_model_and_train_accuracy(
    model: str, prepped: dict[str, pd.DataFrame]
) -> None:
    outputs, ctx = call(model, prepped["train"])

    assert set(outputs) == declared_outputs(model) == {"model"}
    assert outputs["model"].predict(prepped["test"].drop(columns="target")).shape == (150,)
    assert 0.9 <= metric(ctx, "train_accuracy") <= 1.0


@pytest.mark.parametrize("model", MODELS)
def test_model_is_deterministic_for_the_same_seed(
    model: str, prepped: dict[str, pd.DataFrame]
) -> None:
    X = prepped["test"].drop(columns="target")
    first = call(model, prepped["train"], seed=5)[0]["model"]
    again = call(model, prepped["train"], seed=5)[0]["model"]
    assert np.array_equal(first.predict_proba(X), again.predict_proba(X))


@pytest.mark.parametrize("model", ["train_rf", "train_mlp"])
def test_seed_changes_the_model(model: str, prepped: dict[str, pd.DataFrame]) -> None:
    X = prepped["test"].drop(columns="target")
    zero = call(model, prepped["train"], seed=0)[0]["model"]
    one = call(model, prepped["train"], seed=1)[0]["model"]
    assert zero.random_state == 0 and one.random_state == 1
    assert not np.array_equal(zero.predict_proba(X), one.predict_proba(X))


def test_mlp_logs_its_loss_curve_as_a_series(prepped: dict[str, pd.DataFrame]) -> None:
    outputs, ctx = call("train_mlp", prepped["train"])
    loss = [p for p in ctx.metrics if p.name == "loss"]
    assert [p.step for p in loss] == list(range(outputs["model"].n_iter_))
    assert loss[-1].value < loss[0].value


def test_mlp_v2_differs_from_v1_only_in_its_default_width() -> None:
    v1 = (EXAMPLES / "train_mlp" / "train.py").read_text()
    v2 = (EXAMPLES / "train_mlp_v2" / "train.py").read_text()
    assert v2 == v1.replace("hidden: int = 64", "hidden: int = 128")


def test_evaluate_logs_accuracy_and_returns_its_outputs(prepped: dict[str, pd.DataFrame]) -> None:
    model = call("train_logreg", prepped["train"])[0]["model"]
    outputs, ctx = call("evaluate", model, prepped["test"])

    assert set(outputs) == declared_outputs("evaluate") == {"metrics", "confusion", "report"}
    accuracy = metric(ctx, "accuracy")
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= metric(ctx, "f1_macro") <= 1.0
    assert outputs["metrics"] == {
        "accuracy": accuracy,
        "f1_macro": metric(ctx, "f1_macro"),
        "n_test": 150,
    }
    confusion = outputs["confusion"]
    assert list(confusion.columns) == ["true", *(f"pred_{d}" for d in range(10))]
    assert confusion.drop(columns="true").to_numpy().sum() == 150
    assert np.trace(confusion.drop(columns="true").to_numpy()) == round(accuracy * 150)
    assert outputs["report"].to_plotly_json()["data"][0]["type"] == "heatmap"


def test_the_three_models_differ_in_accuracy_and_the_chain_is_deterministic(
    data: pd.DataFrame,
) -> None:
    def chain(model: str) -> tuple[float, dict[str, Any]]:
        prep = call("prep_standardize", data)[0]
        train = call("augment_noise", prep["train"])[0]["train"]
        fitted = call(model, train)[0]["model"]
        outputs, ctx = call("evaluate", fitted, prep["test"])
        return metric(ctx, "accuracy"), outputs

    accuracies = {}
    for model in MODELS:
        accuracies[model], outputs = chain(model)
        again_accuracy, again = chain(model)
        assert again_accuracy == accuracies[model]
        assert again["metrics"] == outputs["metrics"]
        pd.testing.assert_frame_equal(again["confusion"], outputs["confusion"])
    assert len(set(accuracies.values())) == 3, accuracies


def _grid() -> None:
    """Print every prep x augment x model combination's accuracy, and each step's time."""
    data = digits()
    timings: dict[str, list[float]] = {}

    def timed(folder: str, *inputs: Any, **params: Any) -> tuple[dict[str, Any], StepContext]:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the steps' log lines
            result = call(folder, *inputs, **params)
        timings.setdefault(folder, []).append(time.perf_counter() - start)
        return result

    for folder in ENTRYPOINTS:
        step(folder)  # imports are paid once, in the worker's zygote; not part of a step
    print(f"{'prep':18} {'augment':14} {'model':14} accuracy  f1_macro")
    for prep in PREPS:
        prepped = timed(prep, data)[0]
        for augment in AUGMENTS:
            train = timed(augment, prepped["train"])[0]["train"]
            for model in [*MODELS, "train_mlp_v2"]:
                fitted = timed(model, train)[0]["model"]
                _, ctx = timed("evaluate", fitted, prepped["test"])
                print(
                    f"{prep:18} {augment:14} {model:14} {metric(ctx, 'accuracy'):.4f}    "
                    f"{metric(ctx, 'f1_macro'):.4f}"
                )
    print(f"\n{'step':18} {'mean_s':>7} {'max_s':>7}")
    for folder, seconds in timings.items():
        print(f"{folder:18} {np.mean(seconds):7.3f} {max(seconds):7.3f}")


if __name__ == "__main__":
    _grid()
