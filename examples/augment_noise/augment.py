"""Augmentation: append `copies` noisy copies of every train row. The noise is Gaussian with
a standard deviation of `scale` times each feature's own spread, so the same `scale` means
the same thing after standardizing, min-max scaling or PCA."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stepworks import StepContext

TARGET = "target"


def augment(
    ctx: StepContext, train: pd.DataFrame, *, copies: int = 1, scale: float = 0.1, seed: int = 0
) -> dict[str, pd.DataFrame]:
    features = [c for c in train.columns if c != TARGET]
    values = train[features].to_numpy(dtype=np.float64)
    spread = values.std(axis=0)
    # A generator of its own, seeded by the param: the output is a function of the inputs
    # and params alone, which is what makes reusing it correct.
    rng = np.random.default_rng(seed)
    noisy = []
    for _ in range(copies):
        copy = pd.DataFrame(
            values + rng.normal(size=values.shape) * scale * spread, columns=features
        )
        copy[TARGET] = train[TARGET].to_numpy()
        noisy.append(copy)
    out = pd.concat([train, *noisy], ignore_index=True)
    ctx.log_metric("rows", len(out))
    ctx.log(f"added {copies} noisy copies (scale {scale}): {len(train)} -> {len(out)} rows")
    return {"train": out}
