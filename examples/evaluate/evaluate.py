"""Evaluate a fitted classifier on the held-out rows: accuracy and macro F1 as metrics (and
as a JSON output), the confusion matrix as a table and as a plotly heatmap."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from stepworks import StepContext

TARGET = "target"


def evaluate(ctx: StepContext, model: Any, test: pd.DataFrame) -> dict[str, Any]:
    X, y_true = test.drop(columns=TARGET), test[TARGET]
    y_pred = model.predict(X)
    accuracy = float(accuracy_score(y_true, y_pred))
    f1_macro = float(f1_score(y_true, y_pred, average="macro"))
    ctx.log_metric("accuracy", accuracy)
    ctx.log_metric("f1_macro", f1_macro)

    labels = [str(label) for label in model.classes_]
    counts = confusion_matrix(y_true, y_pred, labels=model.classes_)
    # Parquet needs string column names; the true label is a column, not an index, so the
    # table reads the same in a preview as in pandas.
    confusion = pd.DataFrame(counts, columns=[f"pred_{label}" for label in labels])
    confusion.insert(0, "true", labels)

    report = go.Figure(
        go.Heatmap(
            z=counts,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=counts,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    report.update_layout(
        title=f"Confusion matrix (accuracy {accuracy:.3f}, macro F1 {f1_macro:.3f})",
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
    )
    metrics = {"accuracy": accuracy, "f1_macro": f1_macro, "n_test": len(test)}
    ctx.log(f"accuracy {accuracy:.4f}, macro F1 {f1_macro:.4f} on {len(test)} rows")
    return {"metrics": metrics, "confusion": confusion, "report": report}
