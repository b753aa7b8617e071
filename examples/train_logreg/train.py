"""Model: multinomial logistic regression.

`seed` goes to `random_state` like every model's, so a sweep can set it on any variant; with
the lbfgs solver the problem is convex and the fit does not depend on it (replicates agree).
"""

from __future__ import annotations

import pandas as pd
from sklearn.linear_model import LogisticRegression

from stepworks import StepContext

TARGET = "target"


def train(
    ctx: StepContext, train: pd.DataFrame, *, C: float = 1.0, seed: int = 0
) -> dict[str, LogisticRegression]:
    X, y = train.drop(columns=TARGET), train[TARGET]
    # max_iter above the default 100: min-max scaled features converge more slowly.
    model = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(X, y)
    ctx.log_metric("train_accuracy", model.score(X, y))
    ctx.log(f"logistic regression (C={C}) converged in {int(model.n_iter_.max())} iterations")
    return {"model": model}
