"""Step isolation (issue 10): every step body runs in a Landlock domain of its own.

Real steps in real zygote children, through the real engine where the attack needs the
engine's folders (the data folder, the code cache, the store): a step of one workspace
tries to read and write what belongs to the worker and to another workspace, and each
attempt ends in PermissionError with nothing changed on disk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from artifacts.store import artifact_open, artifact_storage
from runs_app import scheduler
from runs_app.executor import sandbox
from runs_app.executor.runner import SandboxUnavailable, StepExecutor
from runs_app.executor.sandbox import SandboxPolicy
from runs_app.models import RunStatus, StepRun, StepStatus
from runs_app.worker import NOT_ISOLATED, WorkerServices
from tests.factories import module_version, pipeline_version
from tests.helpers import wait_runs
from tests.test_executor import run_step

pytestmark = pytest.mark.skipif(
    sandbox.unavailable_reason() is not None,
    reason=f"no sandbox on this kernel: {sandbox.unavailable_reason()}",
)

# Each attempt is one expression; the step records the exception's name or "allowed".
ATTACKER = """
import json, os, pathlib

def attempt(action):
    try:
        action()
    except Exception as error:
        return type(error).__name__
    return "allowed"

def run(ctx, x, targets):
    own_code = pathlib.Path(__file__)
    report = {
        "read_database": attempt(lambda: open(targets["database"], "rb").read()),
        "read_secret_key": attempt(lambda: open(targets["secret_key"]).read()),
        "read_other_artifact": attempt(lambda: open(targets["other_artifact"], "rb").read()),
        "read_other_snapshot": attempt(lambda: open(targets["other_snapshot"]).read()),
        "list_code_cache": attempt(lambda: os.listdir(targets["code_cache"])),
        "read_worker_environ": attempt(
            lambda: open(f"/proc/{targets['worker_pid']}/environ", "rb").read()
        ),
        "write_own_snapshot": attempt(lambda: open(own_code, "a").write("# injected")),
        "write_other_snapshot": attempt(lambda: open(targets["other_snapshot"], "a").write("#")),
        "write_own_input": attempt(lambda: open(x, "a").write("tampered")),
        "write_store": attempt(lambda: open(targets["store_file"], "w").write("planted")),
        "signal_worker": attempt(lambda: os.kill(targets["worker_pid"], 0)),
        "signal_zygote": attempt(lambda: os.kill(os.getppid(), 0)),
        "read_own_input": attempt(lambda: pathlib.Path(x).read_text()),
        "write_scratch": attempt(lambda: pathlib.Path(ctx.work_dir, "s.txt").write_text("ok")),
    }
    report["own_input"] = pathlib.Path(x).read_text()
    return {"report": report}
"""

PRODUCER = """
import pathlib

def run(ctx):
    path = pathlib.Path(ctx.work_dir, "data.csv")
    path.write_text("a,b\\n1,2\\n")
    return {"out": path}
"""

VICTIM = """
def run(ctx, k):
    return {"out": {"k": k, "code": "victim v1"}}
"""


def _succeeded(run: Any) -> None:
    wait_runs(run)
    failures = list(
        StepRun.objects.filter(run=run).values_list("name", "status", "failure_message")
    )
    assert run.status == RunStatus.SUCCEEDED, failures


def _output(run: Any, step: str, name: str) -> Any:
    item = StepRun.objects.get(run=run, name=step).outputs.get(name=name)
    with artifact_open(item.artifact) as handle:
        return json.loads(handle.read())


@pytest.fixture
def decoy() -> Iterator[Path]:
    """A file in the data folder, beside the database and the secret key."""
    path = Path(settings.DATA_DIR) / f"decoy-{uuid.uuid4().hex}.sqlite3"
    path.write_text("users and tokens")
    yield path
    path.unlink()


def test_a_step_reaches_its_own_inputs_and_nothing_of_the_worker_or_another_workspace(
    world: Any, embedded_workers: Any, decoy: Path
) -> None:
    victim_version = module_version(
        world.other_workspace, "victim", params={"k": {"type": "int"}}, source=VICTIM
    )
    victim = pipeline_version(
        world.other_workspace,
        "victim",
        {"v": {"module_version": victim_version, "params": {"k": 1}}},
    )
    before = scheduler.run_create(victim)
    _succeeded(before)
    snapshot = Path(settings.DATA_DIR) / "worker-cache" / "code" / victim_version.code_digest
    other_snapshot = snapshot / "main.py"
    snapshot_text = other_snapshot.read_text()
    other_artifact = StepRun.objects.get(run=before).outputs.get().artifact
    store = Path(artifact_storage().location)
    database = settings.DATABASES["default"]["NAME"]
    secret_key = Path(settings.DATA_DIR) / "secret_key"
    targets = {
        "database": str(database) if Path(str(database)).is_file() else str(decoy),
        "secret_key": str(secret_key) if secret_key.exists() else str(decoy),
        "other_artifact": artifact_storage().path(other_artifact.storage_name),
        "other_snapshot": str(other_snapshot),
        "code_cache": str(snapshot.parent),
        "worker_pid": os.getpid(),  # embedded: the worker is this process
        "store_file": str(store / "planted"),
    }
    producer = module_version(world.workspace, "producer", source=PRODUCER)
    attacker = module_version(
        world.workspace,
        "attacker",
        inputs=("x",),
        outputs=("report",),
        params={"targets": {"type": "dict"}},
        source=ATTACKER,
    )
    pipeline = pipeline_version(
        world.workspace,
        "attack",
        {
            "p": {"module_version": producer},
            "a": {
                "module_version": attacker,
                "inputs": {"x": "p.out"},
                "params": {"targets": targets},
            },
        },
    )

    attack = scheduler.run_create(pipeline)
    _succeeded(attack)
    report = _output(attack, "a", "report")

    denied = {
        name: outcome
        for name, outcome in report.items()
        if name.startswith(("read_", "write_", "list_", "signal_"))
    }
    assert denied.pop("read_own_input") == "allowed"
    assert denied.pop("write_scratch") == "allowed"
    assert denied == dict.fromkeys(denied, "PermissionError"), report
    assert report["own_input"] == "a,b\n1,2\n"
    # Nothing changed on disk.
    assert other_snapshot.read_text() == snapshot_text
    assert decoy.read_text() == "users and tokens"
    assert not (store / "planted").exists()
    with artifact_open(StepRun.objects.get(run=attack, name="p").outputs.get().artifact) as f:
        assert f.read() == b"a,b\n1,2\n"
    # The other workspace's next run executes its own, unchanged code.
    victim_again = pipeline_version(
        world.other_workspace,
        "victim",
        {"v": {"module_version": victim_version, "params": {"k": 2}}},
        number=2,
    )
    after = scheduler.run_create(victim_again)
    _succeeded(after)
    assert StepRun.objects.get(run=after).status == StepStatus.SUCCEEDED
    assert _output(after, "v", "out") == {"k": 2, "code": "victim v1"}


def test_what_a_step_starts_is_held_by_the_same_sandbox(tmp_path: Path) -> None:
    source = """
        import os, subprocess, sys

        def main(ctx):
            from joblib import Parallel, delayed

            def peek(_):  # nested: loky's workers get it by value, not by module name
                try:
                    open("/etc/passwd").read()
                except PermissionError:
                    return "denied"
                return "read"

            child = subprocess.run(
                [sys.executable, "-c", "open('/etc/passwd')"], capture_output=True, text=True
            )
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(write_end, peek(0).encode())
                os._exit(0)
            os.waitpid(pid, 0)
            forked = os.read(read_end, 100).decode()
            loky = Parallel(n_jobs=2, backend="loky")(delayed(peek)(i) for i in range(2))
            return {"out": {
                "subprocess": "PermissionError" in child.stderr,
                "forked": forked,
                "loky": loky,
            }}
    """
    with StepExecutor(sandbox=SandboxPolicy(mode="required")) as executor:
        result = run_step(executor, tmp_path, source, outputs=("out",), scientific=True)

    assert result.status == "succeeded", result.message
    value = json.loads(Path(result.outputs["out"].path).read_text())
    assert value == {"subprocess": True, "forked": "denied", "loky": ["denied"] * 2}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


CONNECT = """
    import socket

    def main(ctx, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except PermissionError:
            return {"out": "denied"}
        return {"out": "connected"}
"""


@pytest.mark.parametrize(("network", "expected"), [("allow", "connected"), ("deny", "denied")])
def test_network_deny_refuses_tcp_and_allow_lets_a_step_fetch(
    tmp_path: Path, listener: socket.socket, network: str, expected: str
) -> None:
    policy = SandboxPolicy(mode="required", network=network)  # type: ignore[arg-type]
    with StepExecutor(sandbox=policy) as executor:
        result = run_step(
            executor,
            tmp_path,
            CONNECT,
            outputs=("out",),
            params={"port": listener.getsockname()[1]},
        )

    assert result.status == "succeeded", result.message
    assert Path(result.outputs["out"].path).read_text() == expected


def test_a_folder_inside_a_private_one_is_never_readable(tmp_path: Path) -> None:
    shared = tmp_path / "datasets"
    (shared / "public").mkdir(parents=True)
    (shared / "public" / "iris.csv").write_text("x\n1\n")
    (shared / "private").mkdir()
    (shared / "private" / "key").write_text("k")
    source = """
        def main(ctx, paths):
            found = {}
            for path in paths:
                try:
                    found[path] = open(path).read()
                except PermissionError:
                    found[path] = "denied"
            return {"out": found}
    """
    policy = SandboxPolicy(mode="required", private=(str(shared / "private"),), read=(str(shared),))
    paths = [str(shared / "public" / "iris.csv"), str(shared / "private" / "key")]
    with StepExecutor(sandbox=policy) as executor:
        result = run_step(executor, tmp_path, source, outputs=("out",), params={"paths": paths})

    assert result.status == "succeeded", result.message
    found = json.loads(Path(result.outputs["out"].path).read_text())
    assert found == {paths[0]: "x\n1\n", paths[1]: "denied"}


def test_required_without_landlock_refuses_to_start_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runs_app.executor import runner

    monkeypatch.setattr(runner, "unavailable_reason", lambda: "this kernel has no Landlock")
    executor = StepExecutor(sandbox=SandboxPolicy(mode="required"))

    with pytest.raises(SandboxUnavailable, match="STEPWORKS_STEP_SANDBOX=off"):
        executor.start()
    assert executor.zygote_pids() == {"light": None, "scientific": None}


def test_off_warns_at_boot_and_steps_then_see_the_worker_s_files(
    settings: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path, transactional_db: None
) -> None:
    settings.STEPWORKS = {**settings.STEPWORKS, "STEP_SANDBOX": "off"}
    services = WorkerServices(reaper=False)
    with caplog.at_level(logging.WARNING, logger="runs_app.worker"):
        services.start()
    try:
        assert NOT_ISOLATED in caplog.text
        source = """
            def main(ctx):
                return {"out": len(open("/etc/passwd").read()) > 0}
        """
        result = run_step(services.executor, tmp_path, source, outputs=("out",))
        assert Path(result.outputs["out"].path).read_text() == "true"
    finally:
        services.stop()


def test_the_zygote_s_rules_cost_is_paid_once_and_a_child_holds_no_inherited_descriptor(
    tmp_path: Path,
) -> None:
    source = """
        import os

        def main(ctx):
            return {"out": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}
    """
    with StepExecutor(sandbox=SandboxPolicy(mode="required")) as executor:
        result = run_step(executor, tmp_path, source, outputs=("out",))

    assert result.status == "succeeded", result.message
    fds = json.loads(Path(result.outputs["out"].path).read_text())
    # stdin, stdout, stderr, the result pipe, and the one listdir holds open.
    assert len(fds) == 5 and fds[:3] == [0, 1, 2], fds


def test_the_sandbox_names_no_path_of_the_project_but_the_step_library() -> None:
    project = Path(__file__).resolve().parents[1]
    paths = [Path(p) for p in sandbox.system_read_paths(private=[str(settings.DATA_DIR)])]

    inside = [p for p in paths if p == project or project in p.parents]
    assert project / "stepworks" in inside
    assert all(p == project / "stepworks" or Path(sys.prefix) in (p, *p.parents) for p in inside)
    assert not any(Path(settings.DATA_DIR) in (p, *p.parents) for p in paths)
