"""Augmentation: none. The baseline of the augmentation axis; it passes the train rows on
unchanged (pandas is imported because its input and output are DataFrames)."""

from __future__ import annotations

import pandas as pd

from stepworks import StepContext


def augment(ctx: StepContext, train: pd.DataFrame) -> dict[str, pd.DataFrame]:
    ctx.log(f"no augmentation: {len(train)} rows")
    return {"train": train}
