"""Small builders for tests that need module and pipeline versions without the services."""

from __future__ import annotations

import hashlib
from typing import Any

from pipelines_app.models import Module, ModuleVersion, Pipeline, PipelineStep, PipelineVersion
from pipelines_app.specs import spec_digest


def module_version(
    workspace: Any,
    name: str,
    *,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = ("out",),
    params: dict[str, Any] | None = None,
    source: str = "",
    number: int = 1,
) -> ModuleVersion:
    """A module version whose interface is given; `source` becomes its one file."""
    module, _ = Module.objects.get_or_create(workspace=workspace, name=name)
    text = source or f"def run(ctx, {', '.join(inputs)}):\n    return {{}}\n# {name} {number}\n"
    return ModuleVersion.objects.create(
        module=module,
        number=number,
        entrypoint="main.py:run",
        files={"main.py": text},
        code_digest=hashlib.sha256(text.encode()).hexdigest(),
        interface={
            "inputs": list(inputs),
            "outputs": list(outputs),
            "params": params or {},
        },
    )


def pipeline_version(
    workspace: Any, name: str, steps: dict[str, dict[str, Any]], number: int = 1
) -> PipelineVersion:
    """steps: {name: {"module_version": mv, "params": {...}, "inputs": {...}}}, in order."""
    pipeline, _ = Pipeline.objects.get_or_create(workspace=workspace, name=name)
    spec = {
        "steps": {
            step: {
                "module": mv_spec["module_version"].ref,
                "module_version": mv_spec["module_version"].pk,
                "params": mv_spec.get("params", {}),
                "inputs": mv_spec.get("inputs", {}),
            }
            for step, mv_spec in steps.items()
        }
    }
    version = PipelineVersion.objects.create(
        pipeline=pipeline, number=number, spec=spec, digest=spec_digest(spec)
    )
    for position, (step, mv_spec) in enumerate(steps.items()):
        PipelineStep.objects.create(
            pipeline_version=version,
            name=step,
            position=position,
            module_version=mv_spec["module_version"],
            params=mv_spec.get("params", {}),
            inputs=mv_spec.get("inputs", {}),
        )
    return version


def chain(workspace: Any, name: str = "chain", length: int = 3) -> PipelineVersion:
    """s0 -> s1 -> ... each step's `out` feeding the next one's `x`; param `k: int = 0`."""
    params = {"k": {"type": "int", "required": False, "default": 0}}
    steps: dict[str, dict[str, Any]] = {}
    for i in range(length):
        inputs = ("x",) if i else ()
        mv = module_version(workspace, f"m{i}", inputs=inputs, params=params)
        steps[f"s{i}"] = {
            "module_version": mv,
            "inputs": {"x": f"s{i - 1}.out"} if i else {},
        }
    return pipeline_version(workspace, name, steps)
