"""What a step's code receives as its first argument (no Django here: it runs in a worker's
child process, and in a user's notebook when they try a step by hand)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A metric's name is at most this long (the server's column): a longer one fails the step
# where it is logged, with this reason, on every database alike.
METRIC_NAME_MAX = 200


@dataclass
class MetricPoint:
    name: str
    value: float
    step: int | None = None


@dataclass
class StepContext:
    """The step's view of its run: params, a scratch folder, metrics and log lines.

    `log_metric` records a number (a series when `step` is given); `log` writes a line to the
    step's log (stdout goes there too). Metrics are collected here and reported with the
    step's result, never written to a database by the step's process.
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    work_dir: Path = field(default_factory=Path.cwd)
    run_id: int | None = None
    step_name: str = ""
    metrics: list[MetricPoint] = field(default_factory=list)
    _on_metric: Callable[[MetricPoint], None] | None = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a metric needs a non-empty name")
        if len(name) > METRIC_NAME_MAX:
            raise ValueError(
                f"metric name {name[:40]!r}... is {len(name)} characters long; "
                f"the most is {METRIC_NAME_MAX}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r} is not a finite number: {value!r}")
        point = MetricPoint(name=name, value=number, step=None if step is None else int(step))
        self.metrics.append(point)
        if self._on_metric is not None:
            self._on_metric(point)

    def log(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)
