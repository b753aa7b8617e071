"""The worker-side executor: runs one step body in a fresh child of a warm zygote.

No Django anywhere in this package: the zygotes import parts of it, and they must stay
clean interpreters. The actor calls `StepExecutor.run(StepJob(...))` and stores what the
returned `StepResult` names.

The names below are imported on first use (PEP 562): `python -m runs_app.executor.zygote`
imports this package too, and every module the zygote holds makes each fork slower (the
worker-side runner and importlib.metadata would double a light zygote's size).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runs_app.executor.codecache import materialise_code
    from runs_app.executor.runner import (
        ExecutorError,
        StepExecutor,
        StepJob,
        StepResult,
        step_environment,
    )
    from runs_app.executor.runtime import runtime_description, runtime_fingerprint
    from stepworks.outputs import OutputFile

_HOMES = {
    "ExecutorError": "runs_app.executor.runner",
    "StepExecutor": "runs_app.executor.runner",
    "StepJob": "runs_app.executor.runner",
    "StepResult": "runs_app.executor.runner",
    "step_environment": "runs_app.executor.runner",
    "materialise_code": "runs_app.executor.codecache",
    "runtime_description": "runs_app.executor.runtime",
    "runtime_fingerprint": "runs_app.executor.runtime",
    "OutputFile": "stepworks.outputs",
}

__all__ = [
    "ExecutorError",
    "OutputFile",
    "StepExecutor",
    "StepJob",
    "StepResult",
    "materialise_code",
    "runtime_description",
    "runtime_fingerprint",
    "step_environment",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
