"""Data prep: a stratified train/test split, then standardize and project onto the first
`n_components` principal components, both fit on the train rows only."""

from __future__ import annotations

import pandas as pd
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stepworks import StepContext

TARGET = "target"


def prep(
    ctx: StepContext,
    data: pd.DataFrame,
    *,
    test_size: float = 0.25,
    split_seed: int = 0,
    n_components: int = 16,
) -> dict[str, pd.DataFrame]:
    features = [c for c in data.columns if c != TARGET]
    train, test = train_test_split(
        data, test_size=test_size, random_state=split_seed, stratify=data[TARGET]
    )
    # svd_solver="full": "auto" picks a randomized solver for some shapes, and this step's
    # output must be the same bytes for the same inputs (reuse depends on it).
    n_components = min(n_components, len(features), len(train))
    projection = make_pipeline(StandardScaler(), PCA(n_components, svd_solver="full"))
    projection.fit(train[features])
    columns = [f"pc_{i:02d}" for i in range(n_components)]
    train_out = pd.DataFrame(projection.transform(train[features]), columns=columns)
    train_out[TARGET] = train[TARGET].to_numpy()
    test_out = pd.DataFrame(projection.transform(test[features]), columns=columns)
    test_out[TARGET] = test[TARGET].to_numpy()
    explained = float(projection[-1].explained_variance_ratio_.sum())
    ctx.log_metric("explained_variance", explained)
    ctx.log(f"{len(features)} features -> {n_components} components ({explained:.1%} variance)")
    return {"train": train_out, "test": test_out}
