"""Data prep: a stratified train/test split, then StandardScaler fit on the train rows only
(fitting on all rows would leak the test set's statistics into training)."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from stepworks import StepContext

TARGET = "target"


def prep(
    ctx: StepContext, data: pd.DataFrame, *, test_size: float = 0.25, split_seed: int = 0
) -> dict[str, pd.DataFrame]:
    features = [c for c in data.columns if c != TARGET]
    train, test = train_test_split(
        data, test_size=test_size, random_state=split_seed, stratify=data[TARGET]
    )
    scaler = StandardScaler().fit(train[features])
    # A fresh RangeIndex: the split's shuffled row labels mean nothing downstream and would
    # only be stored as an extra Parquet column.
    train_out = pd.DataFrame(scaler.transform(train[features]), columns=features)
    train_out[TARGET] = train[TARGET].to_numpy()
    test_out = pd.DataFrame(scaler.transform(test[features]), columns=features)
    test_out[TARGET] = test[TARGET].to_numpy()
    ctx.log(f"standardized {len(features)} features; {len(train_out)} train, {len(test_out)} test")
    return {"train": train_out, "test": test_out}
