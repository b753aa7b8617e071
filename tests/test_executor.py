"""The worker-side executor: steps run in fresh children of warm zygotes, with no database.

Each test writes a step module, runs it through a real StepExecutor (real zygotes, real
forks, real signals) and checks the StepResult and the files or processes it leaves.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runs_app.executor.codecache import materialise_code
from runs_app.executor.runner import StepExecutor, StepJob, StepResult, step_environment
from runs_app.executor.runtime import runtime_description, runtime_fingerprint
from stepworks import outputs
from stepworks.outputs import OutputError, load_input, write_output
from tests.helpers import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executor() -> Iterator[StepExecutor]:
    with StepExecutor() as shared:
        yield shared


def make_code(tmp_path: Path, source: str, filename: str = "step.py") -> Path:
    files = {filename: textwrap.dedent(source)}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return materialise_code(files, digest, tmp_path / "code")


def run_step(
    executor: StepExecutor,
    tmp_path: Path,
    source: str,
    *,
    outputs: tuple[str, ...] = (),
    function: str = "main",
    out: str = "out",
    on_log: Callable[[str], None] | None = None,
    **job: Any,
) -> StepResult:
    code_dir = make_code(tmp_path, source)
    step = StepJob(
        code_dir=code_dir,
        entrypoint=f"step.py:{function}",
        output_dir=tmp_path / out,
        declared_outputs=outputs,
        **job,
    )
    return executor.run(step, on_log=on_log)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# -- outputs and inputs by type ----------------------------------------------------------

PRODUCE_EVERY_TYPE = """
    import datetime
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go

    def main(ctx):
        bundle = ctx.work_dir / "bundle"
        (bundle / "nested").mkdir(parents=True)
        (bundle / "a.txt").write_text("alpha")
        (bundle / "nested" / "b.txt").write_text("beta")
        report = ctx.work_dir / "report.csv"
        report.write_text("x,y\\n1,2\\n")
        figure, axes = plt.subplots()
        axes.plot([1, 2, 3])
        return {
            "frame": pd.DataFrame({"x": range(70_000), "y": [0.5] * 70_000}),
            "array": np.arange(12, dtype="float32").reshape(3, 4),
            "summary": {"n": np.int64(3), "mean": np.float32(0.5), "tags": ["a", "b"]},
            "chart": go.Figure(go.Scatter(x=[1, 2], y=[3, 4])),
            "picture": figure,
            "text": "héllo",
            "blob": b"\\x00\\x01",
            "report": report,
            "bundle": bundle,
            "thing": {datetime.date(2024, 1, 2), "x"},
            "count": 7,
        }
"""

EXPECTED_MEDIA = {
    "frame": ("application/vnd.apache.parquet", "file", ".parquet"),
    "array": ("application/x-npy", "file", ".npy"),
    "summary": ("application/json", "file", ".json"),
    "chart": ("application/vnd.plotly.v1+json", "file", ".json"),
    "picture": ("image/png", "file", ".png"),
    "text": ("text/plain; charset=utf-8", "file", ".txt"),
    "blob": ("application/octet-stream", "file", ".bin"),
    "report": ("text/csv", "file", ".csv"),
    "bundle": ("inode/directory", "directory", ""),
    "thing": ("application/x-python-pickle", "file", ".pkl"),
    "count": ("application/json", "file", ".json"),
}


def test_outputs_are_written_by_type(executor: StepExecutor, tmp_path: Path) -> None:
    result = run_step(
        executor, tmp_path, PRODUCE_EVERY_TYPE, outputs=tuple(EXPECTED_MEDIA), scientific=True
    )

    assert (result.status, result.reason) == ("succeeded", None), result.message
    assert set(result.outputs) == set(EXPECTED_MEDIA)
    for name, (media_type, kind, suffix) in EXPECTED_MEDIA.items():
        output = result.outputs[name]
        assert (output.media_type, output.kind) == (media_type, kind), name
        assert output.path.name.endswith(suffix)
        assert output.path.is_relative_to(tmp_path / "out" / "outputs")
    assert result.outputs["picture"].path.read_bytes().startswith(b"\x89PNG")
    assert json.loads(result.outputs["summary"].path.read_text()) == {
        "n": 3,
        "mean": 0.5,
        "tags": ["a", "b"],
    }
    bundle = result.outputs["bundle"].path
    assert (bundle / "nested" / "b.txt").read_text() == "beta"

    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(result.outputs["frame"].path)
    assert parquet.metadata.num_rows == 70_000
    assert parquet.metadata.num_row_groups == 2  # at most 65,536 rows per group

    consume = """
        from pathlib import Path

        def main(ctx, frame, array, summary, chart, picture, text, blob, report, bundle,
                 thing, count):
            return {"types": {
                "frame": [type(frame).__name__, len(frame)],
                "array": [type(array).__name__, list(array.shape), str(array.dtype)],
                "summary": [type(summary).__name__, summary["n"]],
                "chart": [type(chart).__name__, chart["data"][0]["type"]],
                "picture": [type(picture).__name__, picture[:4].hex()],
                "text": [type(text).__name__, text],
                "blob": [type(blob).__name__, blob.hex()],
                "report": [isinstance(report, Path), report.read_text()],
                "bundle": [isinstance(bundle, Path), (bundle / "a.txt").read_text()],
                "thing": [type(thing).__name__, sorted(map(str, thing))],
                "count": [type(count).__name__, count],
            }}
    """
    inputs = {
        name: (output.path, output.media_type, output.kind)
        for name, output in result.outputs.items()
    }
    second = run_step(
        executor,
        tmp_path,
        consume,
        outputs=("types",),
        out="out2",
        inputs=inputs,
        scientific=True,
    )

    assert second.status == "succeeded", second.message
    assert json.loads(second.outputs["types"].path.read_text()) == {
        "frame": ["DataFrame", 70_000],
        "array": ["ndarray", [3, 4], "float32"],
        "summary": ["dict", 3],
        "chart": ["dict", "scatter"],
        "picture": ["bytes", "89504e47"],
        "text": ["str", "héllo"],
        "blob": ["bytes", "0001"],
        "report": [True, "x,y\n1,2\n"],
        "bundle": [True, "alpha"],
        "thing": ["set", ["2024-01-02", "x"]],
        "count": ["int", 7],
    }


def test_params_and_metrics_reach_the_result(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        def main(ctx, *, alpha: float = 1.0, label: str = "a"):
            for epoch in range(3):
                ctx.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
            ctx.log_metric("alpha_seen", alpha)
            return {"echo": {"alpha": alpha, "label": label, "ctx": dict(ctx.params)}}
    """
    result = run_step(
        executor, tmp_path, source, outputs=("echo",), params={"alpha": 0.25, "label": "b"}
    )

    assert result.status == "succeeded", result.message
    echo = json.loads(result.outputs["echo"].path.read_text())
    assert echo == {"alpha": 0.25, "label": "b", "ctx": {"alpha": 0.25, "label": "b"}}
    assert [(m.name, m.value, m.step) for m in result.metrics] == [
        ("loss", 1.0, 0),
        ("loss", 0.5, 1),
        ("loss", pytest.approx(1 / 3), 2),
        ("alpha_seen", 0.25, None),
    ]
    assert result.duration_s > 0 and result.pid


def test_a_metric_name_longer_than_the_servers_column_fails_the_step_where_it_is_logged(
    executor: StepExecutor, tmp_path: Path
) -> None:
    from runs_app.models import Metric
    from stepworks.context import METRIC_NAME_MAX

    source = """
        def main(ctx):
            ctx.log_metric("m" * 201, 1.0)
    """
    result = run_step(executor, tmp_path, source)

    assert Metric._meta.get_field("name").max_length == METRIC_NAME_MAX == 200
    assert (result.status, result.reason) == ("failed", "user_error")
    assert "is 201 characters long; the most is 200" in result.message


# -- logs ------------------------------------------------------------------------------------


def test_stdout_streams_to_on_log_while_the_step_runs(
    executor: StepExecutor, tmp_path: Path
) -> None:
    # The step waits, after printing, for a flag that only the on_log callback creates: it
    # can only finish if its line was delivered while it was still running.
    flag = tmp_path / "seen-the-line"
    source = f"""
        import sys, time
        from pathlib import Path

        def main(ctx):
            print("halfway there")
            print("warning on stderr", file=sys.stderr)
            deadline = time.monotonic() + 20
            while not Path({str(flag)!r}).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the log line was never delivered")
                time.sleep(0.05)
            print("done")
            return {{}}
    """
    chunks: list[str] = []

    def on_log(text: str) -> None:
        chunks.append(text)
        if "halfway there" in "".join(chunks):
            flag.touch()

    result = run_step(executor, tmp_path, source, on_log=on_log)

    assert result.status == "succeeded", result.message
    log = "".join(chunks)
    assert log.index("halfway there") < log.index("done")
    assert "warning on stderr" in log


def test_metrics_reach_on_metric_while_the_step_runs(
    executor: StepExecutor, tmp_path: Path
) -> None:
    # As with the log: the step can only finish once its first points were delivered.
    flag = tmp_path / "seen-the-points"
    source = f"""
        import os, time
        from pathlib import Path

        def main(ctx):
            ctx.log_metric("loss", 0.9, step=0)
            ctx.log_metric("loss", 0.7, step=1)
            deadline = time.monotonic() + 20
            while not Path({str(flag)!r}).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the points were never delivered")
                time.sleep(0.05)
            ctx.log_metric("loss", 0.5, step=2)
            return {{}}
    """
    batches: list[list[tuple[str, float, int | None]]] = []

    def on_metric(points: list[Any]) -> None:
        batches.append([(p.name, p.value, p.step) for p in points])
        flag.touch()

    code_dir = make_code(tmp_path, source)
    job = StepJob(code_dir=code_dir, entrypoint="step.py:main", output_dir=tmp_path / "out")
    result = executor.run(job, on_metric=on_metric)

    assert result.status == "succeeded", result.message
    assert batches[0] == [("loss", 0.9, 0), ("loss", 0.7, 1)]  # one batch, mid-run
    # The whole list comes with the result, which supersedes the live points.
    assert [(m.name, m.value, m.step) for m in result.metrics] == [
        ("loss", 0.9, 0),
        ("loss", 0.7, 1),
        ("loss", 0.5, 2),
    ]


def test_a_failed_steps_live_metrics_are_delivered_and_forged_lines_ignored(
    executor: StepExecutor, tmp_path: Path
) -> None:
    # The result pipe is the step's to write on: what is not a well-formed point is dropped.
    source = """
        import os

        def main(ctx):
            ctx.log_metric("accuracy", 0.25, step=0)
            for fd in range(3, 64):
                try:
                    os.write(fd, b'metric {"name": "x", "value": "nan", "step": null}\\n')
                    os.write(fd, b"metric not json\\n")
                except OSError:
                    pass
            raise RuntimeError("diverged")
    """
    points: list[tuple[str, float, int | None]] = []
    code_dir = make_code(tmp_path, source)
    job = StepJob(code_dir=code_dir, entrypoint="step.py:main", output_dir=tmp_path / "out")
    result = executor.run(
        job, on_metric=lambda batch: points.extend((p.name, p.value, p.step) for p in batch)
    )

    assert (result.status, result.reason) == ("failed", "user_error")
    assert "diverged" in result.message
    assert points == [("accuracy", 0.25, 0)]


def test_a_hundred_megabytes_of_prints_complete(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        import sys

        def main(ctx):
            line = "x" * 1023 + "\\n"
            for _ in range(100 * 1024):
                sys.stdout.write(line)
            print("the end")
            return {"ok": True}
    """
    received = 0
    largest = 0
    tail = ""

    def on_log(text: str) -> None:
        nonlocal received, largest, tail
        received += len(text)
        largest = max(largest, len(text))
        tail = (tail + text)[-100:]

    result = run_step(executor, tmp_path, source, outputs=("ok",), on_log=on_log)

    assert result.status == "succeeded", result.message
    assert received == 100 * 1024 * 1024 + len("the end\n")
    assert tail.endswith("the end\n")
    assert largest <= 2 * 64 * 1024  # handed over in bounded batches, never accumulated


# -- failures --------------------------------------------------------------------------------


def test_an_exception_is_a_user_error_with_its_traceback(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        def helper(value):
            raise ValueError(f"bad value {value}")

        def main(ctx):
            helper(42)
    """
    logs: list[str] = []
    result = run_step(executor, tmp_path, source, on_log=logs.append)

    assert (result.status, result.reason) == ("failed", "user_error")
    assert "ValueError: bad value 42" in result.message
    assert "in helper" in result.message and "step.py" in result.message
    assert 'raise ValueError(f"bad value {value}")' in result.message  # with its source
    assert "runs_app" not in result.message  # the traceback starts at the user's code
    # Paths are the module's own, not the worker's code cache folder.
    assert 'File "step.py", line 3, in helper' in result.message
    assert 'File "step.py", line 6, in main' in result.message
    assert str(tmp_path) not in result.message
    assert "ValueError: bad value 42" in "".join(logs)
    assert 'File "step.py", line 3' in "".join(logs)
    assert result.outputs == {}


def test_a_syntax_error_in_the_module_is_a_user_error(
    executor: StepExecutor, tmp_path: Path
) -> None:
    result = run_step(executor, tmp_path, "def main(ctx):\n    return {\n")

    assert (result.status, result.reason) == ("failed", "user_error")
    assert "SyntaxError" in result.message
    assert "runs_app" not in result.message and "importlib" not in result.message
    assert 'File "step.py", line 2' in result.message


def test_only_the_steps_own_process_reports(executor: StepExecutor, tmp_path: Path) -> None:
    # A process forked by the step (no exec) that returns into the runner must not report.
    source = """
        import os

        def main(ctx):
            pid = os.fork()
            if pid == 0:
                return {"who": "forked copy"}
            os.waitpid(pid, 0)
            return {"who": "the step"}
    """
    result = run_step(executor, tmp_path, source, outputs=("who",))

    assert result.status == "succeeded", result.message
    assert result.outputs["who"].path.read_text() == "the step"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ('{"model": 1, "extra": 2}', "undeclared outputs ['extra']"),
        ("{}", "missing outputs ['model']"),
        ("[1, 2]", "returned list, not a dict"),
        ('{"model": float("nan")}', "NaN or infinity"),
        ('{"model": {"score": float("inf")}}', "NaN or infinity"),
    ],
)
def test_bad_outputs_are_output_invalid(
    executor: StepExecutor, tmp_path: Path, returned: str, expected: str
) -> None:
    source = f"""
        def main(ctx):
            return {returned}
    """
    result = run_step(executor, tmp_path, source, outputs=("model",))

    assert (result.status, result.reason) == ("failed", "output_invalid")
    assert expected in result.message
    assert result.outputs == {}


def test_timeout_kills_a_step_blocked_in_c(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        import ctypes

        def main(ctx):
            print("going to sleep", flush=True)
            ctypes.CDLL(None).sleep(30)  # in C: no Python signal handler would ever run
            return {}
    """
    logs: list[str] = []
    started = time.monotonic()
    result = run_step(executor, tmp_path, source, timeout_s=1.0, on_log=logs.append)

    assert (result.status, result.reason) == ("failed", "timeout")
    assert "time limit of 1 s" in result.message
    assert time.monotonic() - started < 15
    assert "going to sleep" in "".join(logs)
    assert result.pid is not None
    assert not group_exists(result.pid)


def test_timeout_kills_grandchildren_too(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        import subprocess, time

        def main(ctx):
            sleeper = subprocess.Popen(["sleep", "60"])
            (ctx.work_dir / "grandchild.pid").write_text(str(sleeper.pid))
            time.sleep(60)
            return {}
    """
    result = run_step(executor, tmp_path, source, timeout_s=1.5)

    assert result.reason == "timeout"
    grandchild = int((tmp_path / "out" / "work" / "grandchild.pid").read_text())
    assert wait_until(lambda: not Path(f"/proc/{grandchild}").exists())
    assert not group_exists(result.pid or 0)


def test_processes_left_behind_by_a_finished_step_are_killed(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        import subprocess

        def main(ctx):
            sleeper = subprocess.Popen(["sleep", "60"])
            return {"pid": sleeper.pid}
    """
    result = run_step(executor, tmp_path, source, outputs=("pid",))

    assert result.status == "succeeded"
    leftover = json.loads(result.outputs["pid"].path.read_text())
    assert wait_until(lambda: not Path(f"/proc/{leftover}").exists())


def test_cancel_kills_a_step_that_ignores_signals(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        import signal

        def main(ctx):
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(number, signal.SIG_IGN)
            print("spinning", flush=True)
            while True:
                pass
    """
    logs: list[str] = []
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return "spinning" in "".join(logs)

    step = StepJob(
        code_dir=make_code(tmp_path, source),
        entrypoint="step.py:main",
        output_dir=tmp_path / "out",
        timeout_s=60,
    )
    result = executor.run(step, on_log=logs.append, should_cancel=should_cancel)

    assert (result.status, result.reason) == ("canceled", None)
    assert polls >= 1
    assert not group_exists(result.pid or 0)


def test_a_segfault_is_process_died_with_its_signal(executor: StepExecutor, tmp_path: Path) -> None:
    source = """
        import ctypes

        def main(ctx):
            ctypes.string_at(0)
    """
    logs: list[str] = []
    result = run_step(executor, tmp_path, source, on_log=logs.append)

    assert (result.status, result.reason) == ("failed", "process_died")
    assert result.message == "killed by signal 11 (SIGSEGV)"
    assert "Segmentation fault" in "".join(logs)  # faulthandler's stack, for the user


def test_a_step_killed_by_sigkill_says_so_and_out_of_memory_only_with_the_kernels_word(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        import os, signal

        def main(ctx):
            os.kill(os.getpid(), signal.SIGKILL)
    """
    result = run_step(executor, tmp_path, source)

    assert (result.status, result.reason) == ("failed", "process_died")
    # No OOM kill happened in this cgroup meanwhile: the message says only what is known.
    assert result.message == "killed by signal 9 (SIGKILL)"


@pytest.mark.parametrize("call", ["os._exit(3)", "sys.exit(3)"])
def test_exiting_is_process_died_with_its_code(
    executor: StepExecutor, tmp_path: Path, call: str
) -> None:
    source = f"""
        import os, sys

        def main(ctx):
            {call}
    """
    result = run_step(executor, tmp_path, source, outputs=("x",))

    assert (result.status, result.reason) == ("failed", "process_died")
    assert result.message == "exited with code 3"


# -- concurrency, isolation, zygotes ---------------------------------------------------------


def test_two_steps_run_concurrently_from_two_threads(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        import time

        def main(ctx, *, n: int):
            start = time.time()
            time.sleep(0.5)
            return {"n": n * 10, "span": [start, time.time()]}
    """
    code_dir = make_code(tmp_path, source)
    results: dict[int, StepResult] = {}

    def worker(n: int) -> None:
        step = StepJob(
            code_dir=code_dir,
            entrypoint="step.py:main",
            output_dir=tmp_path / f"out{n}",
            params={"n": n},
            declared_outputs=["n", "span"],
            scientific=n == 2,
        )
        results[n] = executor.run(step)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == [1, 2, 3]
    spans = []
    for n, result in results.items():
        assert result.status == "succeeded", result.message
        assert json.loads(result.outputs["n"].path.read_text()) == n * 10
        spans.append(json.loads(result.outputs["span"].path.read_text()))
    # Every body was running while every other was: the latest start is before the first end.
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


def test_the_step_environment_has_no_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SECRET_KEY", "django-insecure-xyz")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db/x")
    monkeypatch.setenv("BROKER_URL", "redis://:pw@localhost:6379/0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_abc")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    source = """
        import os

        def main(ctx):
            return {"env": sorted(os.environ)}
    """
    with StepExecutor() as isolated:  # zygotes boot now, from this environment
        result = run_step(isolated, tmp_path, source, outputs=("env",))

    assert result.status == "succeeded", result.message
    names = set(json.loads(result.outputs["env"].path.read_text()))
    assert not names & {
        "SECRET_KEY",
        "DATABASE_URL",
        "BROKER_URL",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "DJANGO_SETTINGS_MODULE",
    }
    assert {"PATH", "OPENBLAS_NUM_THREADS"} <= names


def test_step_environment_keeps_an_allow_list_and_drops_secret_names() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "OMP_NUM_THREADS": "2",
        "SECRET_KEY": "x",
        "DATABASE_URL": "x",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "AWS_ACCESS_KEY_ID": "x",
        "MY_SERVICE_PASSWORD": "x",
        "DATASET_MIRROR": "https://mirror",
        "MIRROR_TOKEN": "x",
        "RANDOM_OTHER": "x",
    }

    clean = step_environment(environ, keep=["DATASET_MIRROR", "MIRROR_TOKEN"])

    assert clean == {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "OMP_NUM_THREADS": "2",
        "DATASET_MIRROR": "https://mirror",
    }


def test_light_children_lack_numpy_and_scientific_ones_have_it(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        import sys

        def main(ctx):
            return {"loaded": {
                name: name in sys.modules for name in ("numpy", "pandas", "sklearn", "django")
            }}
    """
    light = run_step(executor, tmp_path, source, outputs=("loaded",), out="light")
    scientific = run_step(
        executor, tmp_path, source, outputs=("loaded",), out="sci", scientific=True
    )

    assert json.loads(light.outputs["loaded"].path.read_text()) == {
        "numpy": False,
        "pandas": False,
        "sklearn": False,
        "django": False,
    }
    assert json.loads(scientific.outputs["loaded"].path.read_text()) == {
        "numpy": True,
        "pandas": True,
        "sklearn": True,
        "django": False,
    }


def test_children_of_one_zygote_draw_different_random_numbers(
    executor: StepExecutor, tmp_path: Path
) -> None:
    source = """
        import random
        import numpy as np

        def main(ctx):
            return {"draw": [random.random(), float(np.random.random())]}
    """
    draws = [
        json.loads(
            run_step(executor, tmp_path, source, outputs=("draw",), out=f"o{i}", scientific=True)
            .outputs["draw"]
            .path.read_text()
        )
        for i in range(2)
    ]

    assert draws[0][0] != draws[1][0]
    assert draws[0][1] != draws[1][1]


def test_a_killed_zygote_is_restarted(tmp_path: Path) -> None:
    source = """
        def main(ctx):
            return {"ok": 1}
    """
    with StepExecutor() as isolated:
        first = isolated.zygote_pids()["light"]
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: isolated.zygote_pids()["light"] is None)

        result = run_step(isolated, tmp_path, source, outputs=("ok",))

        assert result.status == "succeeded", result.message
        second = isolated.zygote_pids()["light"]
        assert second not in (None, first)

        os.kill(isolated.zygote_pids()["scientific"] or 0, signal.SIGKILL)
        assert wait_until(lambda: isolated.zygote_pids()["scientific"] is None)
        isolated.start()
        assert isolated.zygote_pids()["scientific"] is not None


def test_a_step_whose_zygote_dies_fails_with_internal_error(tmp_path: Path) -> None:
    source = """
        import time

        def main(ctx):
            print("started", flush=True)
            time.sleep(60)
    """
    logs: list[str] = []
    with StepExecutor() as isolated:
        zygote = isolated.zygote_pids()["light"] or 0

        def kill_zygote_once_started() -> bool:
            if "started" in "".join(logs) and isolated.zygote_pids()["light"]:
                os.kill(zygote, signal.SIGKILL)
            return False

        step = StepJob(
            code_dir=make_code(tmp_path, source),
            entrypoint="step.py:main",
            output_dir=tmp_path / "out",
            timeout_s=30,
        )
        result = isolated.run(step, on_log=logs.append, should_cancel=kill_zygote_once_started)

    assert (result.status, result.reason) == ("failed", "internal_error")
    assert "zygote died" in result.message
    assert not group_exists(result.pid or 0)


def test_stop_ends_the_zygotes(tmp_path: Path) -> None:
    isolated = StepExecutor()
    isolated.start()
    pids = isolated.zygote_pids()

    isolated.stop()

    for pid in pids.values():
        assert pid is not None
        assert not Path(f"/proc/{pid}").exists()


def test_stop_kills_running_steps(tmp_path: Path) -> None:
    source = """
        import time

        def main(ctx):
            print("started", flush=True)
            time.sleep(60)
    """
    logs: list[str] = []
    results: list[StepResult] = []
    isolated = StepExecutor()
    isolated.start()
    step = StepJob(
        code_dir=make_code(tmp_path, source),
        entrypoint="step.py:main",
        output_dir=tmp_path / "out",
        timeout_s=60,
    )
    runner = threading.Thread(target=lambda: results.append(isolated.run(step, logs.append)))
    runner.start()
    assert wait_until(lambda: "started" in "".join(logs))

    isolated.stop()
    runner.join(timeout=30)

    assert [(r.status, r.reason) for r in results] == [("failed", "internal_error")]
    assert not group_exists(results[0].pid or 0)


WORKER_THAT_GETS_KILLED = """
import json, sys, time
from pathlib import Path
from runs_app.executor.codecache import materialise_code
from runs_app.executor.runner import StepExecutor, StepJob

folder = Path(sys.argv[1])
source = "import os, time\\ndef main(ctx):\\n    print(os.getpid(), flush=True); time.sleep(60)"
code_dir = materialise_code({"step.py": source}, "a" * 64, folder / "code")
executor = StepExecutor()
executor.start()
print(json.dumps(executor.zygote_pids()), flush=True)
step = StepJob(code_dir=code_dir, entrypoint="step.py:main", output_dir=folder / "out")
executor.run(step, on_log=lambda text: print(text.strip(), flush=True))
"""


def test_zygotes_and_steps_die_with_their_worker(tmp_path: Path) -> None:
    # The worker is SIGKILLed (no stop(), no cleanup): its zygotes see their socket close
    # and take their running steps with them.
    script = tmp_path / "worker.py"
    script.write_text(WORKER_THAT_GETS_KILLED)
    worker = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        zygotes = json.loads(worker.stdout.readline())
        step_pid = int(worker.stdout.readline())
        assert Path(f"/proc/{step_pid}").exists()
    finally:
        worker.kill()
        worker.wait()

    pids = [*zygotes.values(), step_pid]
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids)), pids


def test_the_executor_package_imports_no_django() -> None:
    check = (
        "import sys, runs_app.executor.runner as r, runs_app.executor.runtime as rt;"
        "r.StepExecutor; rt.runtime_fingerprint();"
        "import runs_app.executor.zygote, runs_app.executor.child;"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django'"
    )
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "-c", check],
        check=False,
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr


# -- code folders, runtime, formats ----------------------------------------------------------


def test_materialise_code_writes_once_per_digest_and_survives_a_race(tmp_path: Path) -> None:
    files = {"step.py": "def main(ctx):\n    return {}\n", "lib/helpers.py": "X = 1\n"}
    folders: list[Path] = []
    barrier = threading.Barrier(4)

    def materialise() -> None:
        barrier.wait()
        folders.append(materialise_code(files, "d" * 64, tmp_path))

    threads = [threading.Thread(target=materialise) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert folders == [tmp_path / ("d" * 64)] * 4
    assert (folders[0] / "lib" / "helpers.py").read_text() == "X = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["d" * 64]  # no temp folders left
    with pytest.raises(ValueError, match="must be relative and plain"):
        materialise_code({"../evil.py": ""}, "e" * 64, tmp_path)
    with pytest.raises(ValueError, match="not a code digest"):
        materialise_code(files, "../up", tmp_path)


def test_a_step_imports_its_sibling_modules(executor: StepExecutor, tmp_path: Path) -> None:
    files = {
        "step.py": "from helpers import triple\n\ndef main(ctx):\n    return {'v': triple(2)}\n",
        "helpers.py": "def triple(x):\n    return 3 * x\n",
    }
    code_dir = materialise_code(files, "f" * 64, tmp_path / "code")
    step = StepJob(
        code_dir=code_dir,
        entrypoint="step.py:main",
        output_dir=tmp_path / "out",
        declared_outputs=["v"],
    )

    result = executor.run(step)

    assert result.status == "succeeded", result.message
    assert json.loads(result.outputs["v"].path.read_text()) == 6


def test_an_edited_code_folder_runs_its_source_not_a_stale_pyc(
    executor: StepExecutor, tmp_path: Path
) -> None:
    code_dir = materialise_code(
        {"step.py": "def main(ctx):\n    return {'v': 1}\n"}, "c" * 64, tmp_path
    )
    source = code_dir / "step.py"
    source.chmod(0o644)
    source.write_text("def main(ctx):\n    return {'v': 'edited'}\n")
    step = StepJob(
        code_dir=code_dir,
        entrypoint="step.py:main",
        output_dir=tmp_path / "out",
        declared_outputs=["v"],
    )

    result = executor.run(step)

    assert result.outputs["v"].path.read_text() == "edited"


def test_runtime_fingerprint_names_only_what_changes_results() -> None:
    description = runtime_description()

    assert set(description) == {"python", "system", "machine", "packages", "output_format"}
    assert description["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert set(description["packages"]) == {
        "numpy",
        "pandas",
        "pyarrow",
        "scipy",
        "scikit-learn",
        "plotly",
        "matplotlib",
    }
    assert description["output_format"] == outputs.OUTPUT_FORMAT_VERSION
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    assert runtime_fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


def test_write_output_rejects_what_its_format_cannot_hold(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    with pytest.raises(OutputError, match="NaN"):
        write_output([1.0, math.nan], tmp_path, "values")
    with pytest.raises(OutputError, match="infinity"):
        write_output(math.inf, tmp_path, "value")
    with pytest.raises(OutputError, match="string column names"):
        write_output(pd.DataFrame(np.zeros((2, 2))), tmp_path, "frame")
    with pytest.raises(OutputError, match="dtype object"):
        write_output(np.array([object()]), tmp_path, "array")
    with pytest.raises(OutputError, match="cannot be pickled"):
        write_output(lambda: None, tmp_path, "function")
    with pytest.raises(OutputError, match="not a plain file name"):
        write_output("x", tmp_path, "../escape")


def test_load_input_reads_each_format_back(tmp_path: Path) -> None:
    import numpy as np

    cases: dict[str, Any] = {
        "nothing": None,
        "flag": True,
        "ratio": np.float64(0.5),
        "words": "caf\u00e9",
        "raw": bytearray(b"\x01"),
        "grid": np.eye(2),
    }
    for name, value in cases.items():
        written = write_output(value, tmp_path, name)
        loaded = load_input(written.path, written.media_type, written.kind)
        if isinstance(value, np.ndarray):
            assert (loaded == value).all()
        else:
            assert loaded == value
    assert outputs.guess_media_type("chart.plotly.json") == "application/vnd.plotly.v1+json"
    assert outputs.guess_media_type("table.parquet") == "application/vnd.apache.parquet"
    assert outputs.guess_media_type("weights.unknownext") == "application/octet-stream"
    assert outputs.guess_media_type("REPORT.md") == "text/markdown"  # previewed as markdown


def test_a_code_snapshot_a_step_edited_is_written_again_never_run(tmp_path: Path) -> None:
    from runs_app.executor import codecache

    files = {"step.py": "def main(ctx):\n    return None\n", "lib/util.py": "X = 1\n"}
    folder = materialise_code(files, "c" * 64, tmp_path)
    step_py = folder / "step.py"
    step_py.chmod(0o644)  # what a step on the same worker could do
    step_py.write_text(step_py.read_text() + "import os; os.system('evil')\n")

    again = materialise_code(files, "c" * 64, tmp_path)

    assert again == folder and step_py.read_text() == files["step.py"]
    # A folder this process never saw is checked against the version's files: one written
    # elsewhere and intact is kept; an extra file or a changed byte gets it written again.
    codecache._KNOWN.clear()
    inode = step_py.stat().st_ino
    assert materialise_code(files, "c" * 64, tmp_path) == folder
    assert step_py.stat().st_ino == inode
    codecache._KNOWN.clear()
    (folder / "lib" / "sitecustomize.py").write_text("import os\n")
    materialise_code(files, "c" * 64, tmp_path)
    assert not (folder / "lib" / "sitecustomize.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c" * 64]  # nothing left aside


def test_a_snapshot_whose_bytecode_was_swapped_is_written_again(tmp_path: Path) -> None:
    import importlib.util

    from runs_app.executor import codecache

    files = {"step.py": "def main(ctx):\n    return {'n': 1}\n"}
    folder = materialise_code(files, "b" * 64, tmp_path)
    pyc = Path(importlib.util.cache_from_source(str(folder / "step.py")))
    path = str(folder / "step.py")
    other = compile("def main(ctx):\n    return {'n': 2}\n", path, "exec", dont_inherit=True)
    header = pyc.read_bytes()[:16]  # still "current" for the source: the child would load it
    pyc.chmod(0o644)
    pyc.write_bytes(header + marshal.dumps(other))
    codecache._KNOWN.clear()

    materialise_code(files, "b" * 64, tmp_path)

    swapped = Path(importlib.util.cache_from_source(str(folder / "step.py"))).read_bytes()
    assert marshal.loads(swapped[16:]) == compile(files["step.py"], path, "exec", dont_inherit=True)
