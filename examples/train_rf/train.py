"""Model: a random forest; `seed` drives its bootstrap samples and feature choices."""

from __future__ import annotations

import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from stepworks import StepContext

TARGET = "target"


def train(
    ctx: StepContext,
    train: pd.DataFrame,
    *,
    n_estimators: int = 100,
    max_depth: int = 8,
    seed: int = 0,
) -> dict[str, RandomForestClassifier]:
    X, y = train.drop(columns=TARGET), train[TARGET]
    # n_jobs=1: the worker gives each step one process; joblib's workers would compete with
    # the other steps on the machine's cores.
    model = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1
    ).fit(X, y)
    ctx.log_metric("train_accuracy", model.score(X, y))
    ctx.log(f"random forest: {n_estimators} trees, max depth {max_depth}, seed {seed}")
    return {"model": model}
