"""The worker-side executor: runs one step body in a fresh child of a warm zygote.

No Django anywhere in this package: the zygotes import parts of it, and they must stay
clean interpreters. The actor calls `runner.StepExecutor.run(runner.StepJob(...))` and
stores what the returned `StepResult` names.

This file imports nothing: `python -m runs_app.executor.zygote` imports the package too, and
every module a zygote holds makes each fork slower (the worker-side runner and
importlib.metadata would double a light zygote's size). Import from the modules:
runner (StepExecutor, StepJob, StepResult), codecache (materialise_code), runtime
(runtime_fingerprint), child, zygote, protocol, process.
"""
