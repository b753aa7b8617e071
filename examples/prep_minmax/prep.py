"""Data prep: a stratified train/test split, then MinMaxScaler (to [0, 1]) fit on the train
rows only; test values outside the train range fall slightly outside [0, 1], as they should."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from stepworks import StepContext

TARGET = "target"


def prep(
    ctx: StepContext, data: pd.DataFrame, *, test_size: float = 0.25, split_seed: int = 0
) -> dict[str, pd.DataFrame]:
    features = [c for c in data.columns if c != TARGET]
    train, test = train_test_split(
        data, test_size=test_size, random_state=split_seed, stratify=data[TARGET]
    )
    scaler = MinMaxScaler().fit(train[features])
    # A fresh RangeIndex: the split's shuffled row labels mean nothing downstream.
    train_out = pd.DataFrame(scaler.transform(train[features]), columns=features)
    train_out[TARGET] = train[TARGET].to_numpy()
    test_out = pd.DataFrame(scaler.transform(test[features]), columns=features)
    test_out[TARGET] = test[TARGET].to_numpy()
    ctx.log(
        f"min-max scaled {len(features)} features; {len(train_out)} train, {len(test_out)} test"
    )
    return {"train": train_out, "test": test_out}
