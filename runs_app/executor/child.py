"""What a step's child process does, from the moment the zygote forks it until `os._exit`.

The child: leaves the zygote's session (its pid becomes its process group, which the worker
kills on timeout or cancel), dies with the zygote, writes stdout and stderr to the worker's
log pipe, imports the step's module from its code folder, loads its inputs from local files,
calls the entrypoint, checks and serialises what it returned, writes `result.json`
atomically, tells the worker over the result pipe, and only then exits: a scientific child
takes about 11 ms to exit, which the worker does not wait for.

`SystemExit` raised by the step (`sys.exit(3)`) ends the process with that code and no
result, exactly like `os._exit(3)`: the worker reports both as `process_died`, "exited with
code 3". A step that asks for its process to end has not failed in its own code, and one
rule for both spellings is easier to explain than two.

Layout of the output folder the worker makes and hands over (it owns and removes it):
    result.json    the result, written last
    outputs/       one file (or folder) per output
    work/          the step's working directory and TMPDIR (ctx.work_dir)
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib.util
import json
import marshal
import math
import os
import re
import socket
import sys
import tempfile
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any, NoReturn

from runs_app.executor import protocol
from runs_app.executor.process import die_with_parent
from runs_app.executor.sandbox import SandboxError, SystemRules, restrict
from stepworks.context import METRIC_NAME_MAX, MetricPoint, StepContext
from stepworks.outputs import OutputError, load_input, write_output

RESULT_FILE = "result.json"
OUTPUTS_DIR = "outputs"
WORK_DIR = "work"
# Written to the result pipe once result.json is in place.
REPORTED = b"reported\n"
# Ahead of it, one line per metric the step logs while it runs (JSON after the prefix), so the
# worker can show a curve before the step ends; result.json then holds the whole list.
METRIC_LINE = b"metric "
# An attempt's points beyond these arrive with its result only (the live view is bounded).
LIVE_METRIC_POINTS = 10_000

# The exit code when the child's own machinery failed (EX_SOFTWARE).
_INTERNAL_EXIT = 70
_NOT_NAME = re.compile(r"\W")
_NOT_USER_CODE = (str(Path(__file__).parent), "<frozen importlib")
_TRACEBACK_TAIL_LINES = 60
_TRACEBACK_TAIL_CHARS = 8000
_SCRATCH_VARIABLES = ("TMPDIR", "HOME", "MPLCONFIGDIR", "JOBLIB_TEMP_FOLDER", "XDG_CACHE_HOME")


def prepare(zygote_pid: int) -> None:
    """What a step's child does before it knows its step: its own session and process group
    (which the worker kills on timeout, cancel and end), death with its zygote, no stdin."""
    os.setsid()
    die_with_parent(zygote_pid)
    null = os.open(os.devnull, os.O_RDONLY)  # never the worker's stdin
    os.dup2(null, 0)
    os.close(null)
    # A pipe makes stdout block-buffered; line buffering lets the log stream as it runs.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    faulthandler.enable()  # a segfault leaves the Python stack in fd 2: the step's log


def wait_for_step(
    channel: socket.socket, zygote_pid: int, system_rules: dict[Any, SystemRules]
) -> NoReturn:
    """A spare child: forked and prepared before its step is known, it waits on `channel`
    for its one step (the zygote forwards the worker's request and pipes), runs it, and
    exits. So the fork and the preparation are off the step's critical path; the child is
    as fresh as one forked for the step (it ran nothing else and runs nothing after)."""
    try:
        prepare(zygote_pid)
        message, fds = protocol.receive(channel)
        channel.close()
    except BaseException:
        os._exit(_INTERNAL_EXIT)
    if message is None or len(fds) != 2:
        os._exit(0)  # the zygote let us go unused
    spec = message.get("spec")
    if spec is None:
        spec = json.loads(Path(message["spec_file"]).read_text(encoding="utf-8"))
    rules = spec.get("sandbox")
    system = system_rules.get(SystemRules.key(rules)) if rules else None
    run_child(spec, fds[0], fds[1], zygote_pid, system, prepared=True)


def run_child(
    spec: dict[str, Any],
    log_fd: int,
    result_fd: int,
    zygote_pid: int,
    system: SystemRules | None = None,
    *,
    prepared: bool = False,
) -> NoReturn:
    """Run one step in this freshly forked process; never returns.

    `system` is the zygote's share of the sandbox's rules, given when the spec asks for a
    sandbox; `prepared`, when `prepare` ran already (a spare child).
    """
    code = _INTERNAL_EXIT
    try:
        if not prepared:
            prepare(zygote_pid)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        gc.enable()  # the zygote keeps gc off so its pages stay shared (see zygote.py)
        code = _run(spec, result_fd, system)
    except BaseException:
        with _quietly():
            traceback.print_exc()
    finally:
        with _quietly():
            sys.stdout.flush()
        with _quietly():
            sys.stderr.flush()
        os._exit(code)


def _run(spec: dict[str, Any], result_fd: int, system: SystemRules | None) -> int:
    step_pid = os.getpid()
    output_dir = Path(spec["output_dir"])
    work_dir = output_dir / WORK_DIR
    _enter(work_dir)
    sys.argv = [str(Path(spec["code_dir"]) / _entry_file(spec["entrypoint"]))]
    _reseed_numpy()

    params = dict(spec["params"])
    ctx = StepContext(
        params=params, work_dir=work_dir, run_id=spec.get("run_id"), step_name=spec["step_name"]
    )
    ctx._on_metric = _live_metrics(result_fd, step_pid)

    def report(status: str, reason: str | None, message: str, outputs: Any = None) -> int:
        if os.getpid() != step_pid:
            # A process the step forked (os.fork without exec) returned into our code: only
            # the step's own process may report.
            return 0
        _report(output_dir, result_fd, status, reason, message, outputs or {}, ctx)
        return 0

    problem = _sandbox(spec, system, result_fd)
    if problem:
        return report("failed", "internal_error", problem)

    try:
        function = _load_entrypoint(Path(spec["code_dir"]), spec["entrypoint"])
    except SystemExit as exit_:
        return _exit_code(exit_)
    except BaseException as error:
        return report("failed", "user_error", _traceback_tail(error, spec["code_dir"]))

    try:
        inputs = {
            name: load_input(path, media_type, kind)
            for name, (path, media_type, kind) in spec["inputs"].items()
        }
    except BaseException as error:
        with _quietly():
            traceback.print_exc()
        return report("failed", "internal_error", f"could not load the inputs: {error!r}")

    try:
        returned = function(ctx, **inputs, **params)
    except SystemExit as exit_:
        return _exit_code(exit_)
    except BaseException as error:
        return report("failed", "user_error", _traceback_tail(error, spec["code_dir"]))

    if os.getpid() != step_pid:
        return 0  # a process the step forked returned here: it must not write outputs
    problem = _check_outputs(returned, list(spec["declared_outputs"]))
    if problem:
        return report("failed", "output_invalid", problem)
    try:
        written = _write_outputs(returned or {}, output_dir)
    except _OutputFailed as failed:
        return report("failed", failed.reason, failed.message)
    return report("succeeded", None, "", written)


def _enter(work_dir: Path) -> None:
    os.chdir(work_dir)  # the worker made the folders: every syscall here is on the clock
    # Scratch files (and any library's cache or config) go where the worker cleans up: the
    # host's /tmp and the worker's home are not the step's.
    for name in _SCRATCH_VARIABLES:
        os.environ[name] = str(work_dir)
    tempfile.tempdir = None


def _sandbox(spec: dict[str, Any], system: SystemRules | None, result_fd: int) -> str:
    """Restrict this process as the spec asks, before any of the step's code is loaded;
    what went wrong, or "" (also when the spec asks for no sandbox)."""
    if not spec.get("sandbox"):
        return ""
    try:
        if system is None:
            raise SandboxError(0, "the zygote sent no system rules")
        restrict(system, spec["sandbox"], keep_fds=[result_fd])
    except OSError as error:
        return f"cannot sandbox the step, so it did not run: {error}"
    return ""


class _OutputFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _write_outputs(returned: dict[str, Any], output_dir: Path) -> dict[str, dict[str, str]]:
    """Write each returned output under the outputs folder; {name: {file, media_type, kind}}."""
    written = {}
    folder = output_dir / OUTPUTS_DIR
    for name, value in returned.items():
        try:
            output = write_output(value, folder, name)
        except OutputError as error:
            raise _OutputFailed("output_invalid", str(error)) from error
        except BaseException as error:
            message = f"could not write output {name!r}: {error}"
            raise _OutputFailed("internal_error", message) from error
        written[name] = {
            "file": str(output.path.relative_to(output_dir)),
            "media_type": output.media_type,
            "kind": output.kind,
        }
    return written


def _entry_file(entrypoint: str) -> str:
    return entrypoint.rpartition(":")[0]


def _load_entrypoint(code_dir: Path, entrypoint: str) -> Callable[..., Any]:
    relative, _, function_name = entrypoint.rpartition(":")
    if not relative.endswith(".py") or not function_name:
        raise ValueError(f"entrypoint {entrypoint!r} is not 'file.py:function'")
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"entrypoint {entrypoint!r} is outside the module's code")
    source = code_dir / relative
    # Unique per code digest (the folder's name), so nothing a zygote or another version
    # imported under the same name can be picked up instead.
    digest = _NOT_NAME.sub("_", code_dir.name)[:32]
    module_name = f"_stepworks_{digest}_{_NOT_NAME.sub('_', relative.removesuffix('.py'))}"
    sys.path.insert(0, str(code_dir))  # the step's own helper modules import by name
    module = types.ModuleType(module_name)
    module.__file__ = str(source)
    sys.modules[module_name] = module  # dataclasses and pickle look classes up here
    exec(_code_of(source), module.__dict__)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(f"{relative} has no function {function_name!r}")
    entry: Callable[..., Any] = function
    return entry


def _code_of(source: Path) -> CodeType:
    """The module's code: from its .pyc when that is current, else compiled from source.

    importlib's loader makes the same checks, but in a fresh fork it costs about 1 ms more
    (it touches, and so copies, some 150 more of the zygote's pages): a third of a light
    step's overhead. materialise_code writes the .pyc.
    """
    stat = os.stat(source)
    try:
        with open(importlib.util.cache_from_source(str(source)), "rb") as handle:
            data = handle.read()
    except OSError:
        data = b""
    # A timestamp-based .pyc header: magic, flags 0, source mtime, source size (PEP 552).
    if (
        len(data) > 16
        and data[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(data[4:8], "little") == 0
        and int.from_bytes(data[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(data[12:16], "little") == stat.st_size & 0xFFFFFFFF
    ):
        cached: CodeType = marshal.loads(memoryview(data)[16:])
        return cached
    with open(source, "rb") as handle:
        return compile(handle.read(), str(source), "exec", dont_inherit=True)


def _check_outputs(returned: Any, declared: list[str]) -> str:
    if returned is None and not declared:
        return ""
    if not isinstance(returned, dict):
        return f"the step returned {type(returned).__name__}, not a dict of its outputs {declared}"
    odd_keys = [key for key in returned if not isinstance(key, str)]
    if odd_keys:
        return f"output names must be strings, not {odd_keys[:5]!r}"
    undeclared = sorted(set(returned) - set(declared))
    missing = sorted(set(declared) - set(returned))
    problems = []
    if undeclared:
        problems.append(f"undeclared outputs {undeclared}")
    if missing:
        problems.append(f"missing outputs {missing}")
    if problems:
        return f"the step returned {' and '.join(problems)} (declared: {declared})"
    return ""


def _report(
    output_dir: Path,
    result_fd: int,
    status: str,
    reason: str | None,
    message: str,
    outputs: dict[str, Any],
    ctx: StepContext,
) -> None:
    # Log lines the step printed reach the pipe before the worker learns the step is over.
    with _quietly():
        sys.stdout.flush()
    with _quietly():
        sys.stderr.flush()
    result = {
        "status": status,
        "reason": reason,
        "message": message,
        "outputs": outputs,
        "metrics": _metrics(ctx),
    }
    temporary = output_dir / f".{RESULT_FILE}.tmp"
    temporary.write_text(json.dumps(result, allow_nan=False), encoding="utf-8")
    os.replace(temporary, output_dir / RESULT_FILE)
    os.write(result_fd, REPORTED)


def _live_metrics(result_fd: int, step_pid: int) -> Callable[[MetricPoint], None]:
    """Each point as a line on the result pipe, up to LIVE_METRIC_POINTS.

    A line is far below PIPE_BUF, so it is written whole even if a thread of the step logs
    at the same time; a process the step forked sends nothing (its points are not in the
    result either)."""
    sent = 0

    def send(point: MetricPoint) -> None:
        nonlocal sent
        if sent >= LIVE_METRIC_POINTS or os.getpid() != step_pid:
            return
        sent += 1
        line = {"name": point.name[:METRIC_NAME_MAX], "value": point.value, "step": point.step}
        with _quietly():  # the worker is gone: the step's own end will say so
            os.write(result_fd, METRIC_LINE + json.dumps(line).encode("utf-8") + b"\n")

    return send


def _metrics(ctx: StepContext) -> list[dict[str, Any]]:
    # The step may have tampered with ctx.metrics; keep what is well-formed.
    points = []
    for point in list(getattr(ctx, "metrics", []) or []):
        try:
            value = float(point.value)
            step = None if point.step is None else int(point.step)
            name = str(point.name)
        except (AttributeError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            points.append({"name": name, "value": value, "step": step})
    return points


def _traceback_tail(error: BaseException, code_dir: str) -> str:
    # Start at the user's code: skip our frames and importlib's around it.
    trace = error.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename.startswith(_NOT_USER_CODE):
        trace = trace.tb_next
    summary = traceback.TracebackException(type(error), error, trace)  # reads the lines now
    _name_module_files(summary, str(code_dir).rstrip("/") + "/")
    text = "".join(summary.format())
    with _quietly():
        sys.stderr.write(text)  # the whole traceback goes to the step's log
    lines = text.splitlines()[-_TRACEBACK_TAIL_LINES:]
    return "\n".join(lines)[-_TRACEBACK_TAIL_CHARS:]


def _name_module_files(report: traceback.TracebackException, code_dir: str) -> None:
    """Frames in the module's files show its own paths (`train.py`), not the worker's code
    cache folder; through the chained exceptions too."""
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [report]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            if frame.filename.startswith(code_dir):
                frame.filename = frame.filename[len(code_dir) :]
        filename = getattr(current, "filename", None)  # a SyntaxError's
        if filename and filename.startswith(code_dir):
            current.filename = filename[len(code_dir) :]
        pending += [current.__cause__, current.__context__]


def _exit_code(exit_: SystemExit) -> int:
    # The interpreter's own rules: None is 0, an int is itself, anything else is printed.
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code & 0xFF
    with _quietly():
        print(exit_.code, file=sys.stderr)
    return 1


def _reseed_numpy() -> None:
    # numpy's global generator was seeded once, in the zygote: without this every child
    # would draw the same "random" numbers, unlike a fresh interpreter.
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _quietly() -> contextlib.suppress:
    # Where the child is already failing or about to exit, nothing may raise any more.
    return contextlib.suppress(BaseException)
