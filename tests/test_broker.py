"""Real brokers, real worker processes: `rundramatiq` on the test database, killed mid-step.

Run only when BROKER_URL is set (`pytest -m broker`, the Postgres leg of CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from dramatiq import Message

from faults.proxy import TcpProxy
from pipelines_app.selectors import pipeline_version_by_ref
from pipelines_app.services import module_version_create, pipeline_version_create
from runs_app import scheduler
from runs_app.models import (
    RUN_TERMINAL,
    Event,
    FailureReason,
    PipelineRun,
    RunStatus,
    StepOutput,
    StepRun,
    StepStatus,
)
from workspaces.models import Workspace

pytestmark = [
    pytest.mark.broker,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.BROKER_URL, reason="needs BROKER_URL (redis:// or amqp://)"),
]

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    """The test database, as a URL the worker processes can be given."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    intervals = settings.STEPWORKS
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "BROKER_URL": settings.BROKER_URL,
        "STEPWORKS_QUEUE_PREFIX": settings.QUEUE_PREFIX,
        "STEPWORKS_DATA_DIR": str(tmp_path / "worker-data"),
        "STEPWORKS_HEARTBEAT_S": str(intervals["HEARTBEAT_S"]),
        "STEPWORKS_LEASE_S": str(intervals["LEASE_S"]),
        "STEPWORKS_REAPER_S": str(intervals["REAPER_S"]),
        "STEPWORKS_DRAIN_S": "2",
        # The workers must write artifacts where this test process reads them.
        "STEPWORKS_ARTIFACTS_ROOT": str(settings.STORAGES["artifacts"]["OPTIONS"]["location"]),
        **extra,
    }


class Fleet:
    """Independent `rundramatiq --processes 1` groups (and reapers) this test can kill."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_worker(self, _host: WorkerHost | None = None, **env: str) -> subprocess.Popen[bytes]:
        """A `rundramatiq` group; with `_host`, on a 'host' of its own (WorkerHost)."""
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        command = [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            "2",
            "--worker-shutdown-timeout",
            "5000",
        ]
        environment = _env(self.tmp_path, **env)
        if _host is not None:
            command = _host.command(command)
            environment.update(_host.env(environment))
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if _host is not None:
            _host.started(proc.pid)
        self.procs.append(proc)
        return proc

    def start_reaper(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / "reaper.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "reaper"],
            cwd=ROOT,
            env=_env(self.tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp_path.glob("*.log"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    yield fleet
    fleet.stop()


def wait_until(predicate: Any, timeout: float, fleet: Fleet, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{fleet.logs()}")


def run_finished(run: PipelineRun) -> bool:
    run.refresh_from_db()
    return run.status in RUN_TERMINAL


def worker_pid(step: StepRun) -> int:
    step.refresh_from_db()
    return int(step.worker.rpartition(":")[2])


def slow_pipeline(workspace: Workspace, seconds: float) -> Any:
    module_version_create(
        workspace,
        "slow",
        {
            "step.py": "import time\n\ndef main(ctx):\n"
            f"    time.sleep({seconds})\n    return {{'out': 'done'}}\n"
        },
        "step.py:main",
    )
    return pipeline_version_create(workspace, "slow", {"steps": {"s": {"module": "slow@1"}}})


def test_the_demo_runs_end_to_end_through_rundramatiq_workers(world, fleet):
    call_command("seed_demo", verbosity=0)
    fleet.start_worker()
    fleet.start_worker()
    version = pipeline_version_by_ref(Workspace.objects.get(slug="demo"), "classify")

    run = scheduler.run_create(version)
    wait_until(lambda: run_finished(run), 180, fleet, "the demo run")

    assert run.status == RunStatus.SUCCEEDED, fleet.logs()
    evaluate = run.steps.get(name="evaluate")
    accuracy = evaluate.metrics.get(name="accuracy").value
    assert 0.5 < accuracy <= 1.0
    assert evaluate.outputs.count() == 3


@pytest.mark.skipif(
    not settings.BROKER_URL.startswith("redis"), reason="RabbitMQ pushes; Redis' consumer polls"
)
def test_an_idle_redis_consumer_is_woken_by_the_next_message_not_by_its_poll():
    broker = dramatiq.get_broker()
    queue = f"{settings.QUEUE_PREFIX}.wake-test"
    broker.declare_queue(queue)
    # An idle poll of a minute, already backed off to it: only a wake-up ends the wait soon.
    consumer = broker.consume(queue, prefetch=1, timeout=60_000)
    consumer.misses = 30
    received: list[str] = []

    def consume() -> None:
        while not received:
            message = next(consumer)
            if message is not None:
                received.append(message.message_id)
                consumer.ack(message)

    waiting = threading.Thread(target=consume, daemon=True)
    waiting.start()
    time.sleep(0.3)  # in its wait (were it not yet, the token left for it ends the wait too)
    sent = broker.enqueue(Message(queue, "wake_test", (), {}, {}))
    waiting.join(timeout=20)
    broker.flush(queue)
    consumer.close()

    assert received == [sent.message_id]


def test_a_worker_killed_mid_step_is_retried_on_another_and_the_run_succeeds(world, fleet):
    version = slow_pipeline(world.workspace, 3)
    first = fleet.start_worker()
    run = scheduler.run_create(version)
    step = run.steps.get()
    wait_until(
        lambda: StepRun.objects.filter(pk=step.pk, status=StepStatus.RUNNING).exists(),
        60,
        fleet,
        "the step to start",
    )
    fleet.start_worker()

    os.kill(worker_pid(step), signal.SIGKILL)  # the worker process, mid-step
    wait_until(lambda: run_finished(run), 90, fleet, "the retried run")

    assert run.status == RunStatus.SUCCEEDED, fleet.logs()
    step.refresh_from_db()
    assert step.attempt == 2
    assert Event.objects.filter(step=step, reason=FailureReason.WORKER_LOST).exists()
    assert first.wait(timeout=30) is not None  # rundramatiq exits as a whole


def test_a_step_whose_worker_dies_on_every_attempt_fails_with_worker_lost_repeatedly(world, fleet):
    version = slow_pipeline(world.workspace, 30)
    fleet.start_reaper()
    run = scheduler.run_create(version)
    step = run.steps.get()
    for attempt in range(1, step.max_attempts + 1):
        fleet.start_worker()
        wait_until(
            lambda a=attempt: StepRun.objects.filter(
                pk=step.pk, status=StepStatus.RUNNING, attempt=a
            ).exists(),
            60,
            fleet,
            f"attempt {attempt} to start",
        )
        os.kill(worker_pid(step), signal.SIGKILL)

    wait_until(lambda: run_finished(run), 60, fleet, "the run to fail")

    step.refresh_from_db()
    assert step.status == StepStatus.FAILED
    assert step.failure_reason == FailureReason.WORKER_LOST_REPEATEDLY
    assert run.status == RunStatus.FAILED


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="the database is taken away through a TCP proxy: PostgreSQL's",
)
def test_runs_end_when_the_database_goes_away_mid_step_and_comes_back(world, fleet, tmp_path):
    """Issue 14's first broken promise: a step that ended while the database was away could
    not record its result, and the worker's heartbeat then renewed the lease of every row
    bearing its name, so the run hung until the worker restarted."""
    db = connection.settings_dict
    proxy = TcpProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432))).start()
    try:
        through_proxy = _database_url().replace(f":{db.get('PORT') or 5432}/", f":{proxy.port}/")
        markers = tmp_path / "markers"  # beside the workers' data folder, which no step may touch
        markers.mkdir()
        marker = markers / "bodies.txt"
        module_version_create(
            world.workspace,
            "blink",
            {
                "step.py": "import time\n\ndef main(ctx, *, i: int = 0, marker: str = ''):\n"
                "    time.sleep(1.0)\n"
                "    with open(marker, 'a') as handle:\n"
                "        handle.write('%d\\n' % i)\n"
                "    return {'out': str(i)}\n"
            },
            "step.py:main",
        )
        version = pipeline_version_create(
            world.workspace,
            "blink",
            {"steps": {"s": {"module": "blink@1", "params": {"marker": str(marker)}}}},
        )
        # A lease longer than the outage: what the worker finishes meanwhile is recorded
        # when the database is back, not lost and retried.
        fleet.start_worker(
            DATABASE_URL=through_proxy,
            STEPWORKS_LEASE_S="6",
            STEPWORKS_STEP_WRITE_DIRS=str(markers),  # the bodies count themselves there
        )
        runs = [scheduler.run_create(version, param_overrides={"s.i": i}) for i in range(4)]
        wait_until(
            lambda: StepRun.objects.filter(run__in=runs, status=StepStatus.RUNNING).count() == 2,
            60,
            fleet,
            "two steps to run",
        )
        proxy.cut()  # the bodies end while the database is away
        time.sleep(2.5)
        proxy.restore()
        for run in runs:
            wait_until(lambda r=run: run_finished(r), 90, fleet, f"run {run.pk} to end")
    finally:
        proxy.close()

    ended = list(StepRun.objects.filter(run__in=runs).values_list("status", "failure_message"))
    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}, (ended, fleet.logs())
    bodies = sorted(marker.read_text().split())
    assert bodies == ["0", "1", "2", "3"], bodies  # each ran once: nothing lost, no retry


def _running(*runs: PipelineRun) -> int:
    return StepRun.objects.filter(run__in=runs, status=StepStatus.RUNNING).count()


def test_a_graceful_deploy_lets_running_steps_finish(world, fleet):
    """Issue 14's second broken promise: on SIGTERM the executor was stopped (its steps
    killed) before dramatiq waited for its threads, so every running step failed with
    internal_error although it needed less than the shutdown timeout."""
    version = slow_pipeline(world.workspace, 2)
    worker = fleet.start_worker(STEPWORKS_DRAIN_S="10")
    # Two runs of the same step: the second may not follow the first (it would not run).
    runs = [scheduler.run_create(version), scheduler.run_create(version, reuse=False)]
    wait_until(lambda: _running(*runs) == 2, 60, fleet, "both steps to run")

    # A deploy: SIGTERM to rundramatiq's main process, which passes it on once (a second
    # SIGTERM makes dramatiq's worker process exit at once: systemd needs KillMode=mixed).
    os.kill(worker.pid, signal.SIGTERM)
    for run in runs:
        wait_until(lambda r=run: run_finished(r), 60, fleet, f"run {run.pk} to end")
    assert worker.wait(timeout=60) is not None

    assert {run.status for run in runs} == {RunStatus.SUCCEEDED}, fleet.logs()
    for step in StepRun.objects.filter(run__in=runs):
        assert step.attempt == 1 and step.failure_reason == ""


def test_a_step_longer_than_the_drain_is_given_back_uncounted_and_runs_elsewhere(world, fleet):
    version = slow_pipeline(world.workspace, 6)
    worker = fleet.start_worker(STEPWORKS_DRAIN_S="1")
    run = scheduler.run_create(version)
    step = run.steps.get()
    wait_until(lambda: _running(run) == 1, 60, fleet, "the step to run")

    os.kill(worker.pid, signal.SIGTERM)
    wait_until(
        lambda: StepRun.objects.filter(pk=step.pk, status=StepStatus.QUEUED).exists(),
        30,
        fleet,
        "the step to be given back",
    )
    assert worker.wait(timeout=60) is not None
    fleet.start_worker()
    wait_until(lambda: run_finished(run), 90, fleet, "the run to end on another worker")

    assert run.status == RunStatus.SUCCEEDED, fleet.logs()
    step.refresh_from_db()
    assert step.attempt == 2
    assert step.max_attempts == settings.STEPWORKS["MAX_ATTEMPTS"] + 1  # not counted
    assert Event.objects.filter(step=step, message__contains="given back").exists()
    assert not Event.objects.filter(step=step, reason=FailureReason.WORKER_LOST).exists()


def _can_make_namespaces() -> tuple[str, str]:
    """Why a worker 'host' cannot have a private data folder (root, unshare, tmpfs), and
    why not a network of its own (a veth link into a network namespace); '' when it can."""
    if os.geteuid() != 0:
        return "not root", "not root"
    if shutil.which("unshare") is None:
        return "no unshare(1)", "no unshare(1)"
    mount = 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d"'
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", mount],
        check=False,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        why = f"unshare -m failed: {probe.stderr.strip()[:200]}"
        return why, why
    if shutil.which("ip") is None:
        return "", "no ip(8)"
    name = f"swp{os.getpid() % 100000}"
    net = subprocess.run(
        f"unshare -n true && ip link add {name} type veth peer name {name}p && ip link del {name}",
        shell=True,
        check=False,
        capture_output=True,
        text=True,
    )
    return "", "" if net.returncode == 0 else f"no veth link: {net.stderr.strip()[:200]}"


class WorkerHost:
    """A worker 'host' on this machine: a mount namespace in which a fresh tmpfs covers its
    data folder (which no other process sees), and, with `network`, a network namespace
    whose one link is a veth pair to this process's side, where TCP forwarders take the
    database, the broker and the bucket to their real addresses. Its workers reach them by
    an address, as on another machine; nothing on this machine's loopback is theirs."""

    def __init__(self, index: int, data: Path, network: bool) -> None:
        self.data = data
        self.network = network
        tag = os.getpid() % 10000
        self.outer, self.inner = f"swh{tag}x{index}", f"swn{tag}x{index}"
        base = 4 * index
        self.address = f"10.213.{tag % 250}.{base + 1}"  # this side of the link
        self.own = f"10.213.{tag % 250}.{base + 2}"
        self.proxies: list[TcpProxy] = []
        self.pid = 0

    def command(self, command: list[str]) -> list[str]:
        setup = 'mount -t tmpfs -o size=2g tmpfs "$0" && exec "$@"'
        unshare = ["unshare", "-m", "--propagation", "private"]
        if self.network:
            # Wait for this side to hand the link in, then bring it and loopback up.
            setup = (
                f"while ! ip link show {self.inner} >/dev/null 2>&1; do sleep 0.05; done; "
                f"ip addr add {self.own}/30 dev {self.inner} && ip link set {self.inner} up "
                f"&& ip link set lo up && {setup}"
            )
            unshare.append("-n")
        return [*unshare, "sh", "-c", setup, str(self.data), *command]

    def env(self, environment: dict[str, str]) -> dict[str, str]:
        """The services' URLs as this host reaches them: the forwarders' addresses, on this
        side of a link made now (its other end goes into the namespace once it exists)."""
        if not self.network:
            return {}
        for command in (
            f"ip link add {self.outer} type veth peer name {self.inner}",
            f"ip addr add {self.address}/30 dev {self.outer}",
            f"ip link set {self.outer} up",
        ):
            subprocess.run(command.split(), check=True, capture_output=True)
        urls = {
            key: environment[key]
            for key in ("DATABASE_URL", "BROKER_URL", "STEPWORKS_S3_ENDPOINT_URL")
            if environment.get(key)
        }
        return {key: self._forwarded(url) for key, url in urls.items()}

    def started(self, pid: int) -> None:
        """Hand the link's other end into the new namespace (its shell waits for it)."""
        self.pid = pid
        # unshare(1) makes the namespaces and then runs the shell: wait for it to have.
        kind = "net" if self.network else "mnt"
        ours = os.readlink(f"/proc/self/ns/{kind}")
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{pid}/ns/{kind}") == ours:
            assert time.monotonic() < deadline, f"worker {pid} got no namespace of its own"
            time.sleep(0.01)
        if self.network:
            command = ["ip", "link", "set", self.inner, "netns", str(pid)]
            subprocess.run(command, check=True, capture_output=True)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        if self.network:  # gone with its namespace, unless the namespace lingers
            subprocess.run(["ip", "link", "del", self.outer], check=False, capture_output=True)

    def _forwarded(self, url: str) -> str:
        parts = urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "localhost"), url
        default = {"postgres": 5432, "redis": 6379, "amqp": 5672, "http": 80}[parts.scheme]
        proxy = TcpProxy(("127.0.0.1", parts.port or default), host=self.address).start()
        self.proxies.append(proxy)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@" if user else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}{self.address}:{proxy.port}"))


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="worker hosts reach the database by address: PostgreSQL's",
)
def test_workers_on_hosts_that_share_no_disk_run_the_demo_and_a_sweep_through_the_bucket(
    world, fleet, tmp_path, s3_bucket
):
    """Issue 15: two worker 'hosts', each with its own data folder (a tmpfs in a mount
    namespace of its own, where this machine lets the test make one), share nothing with
    the web side but the database, the broker and the bucket. One host's workers die
    mid-step; every run still succeeds, every output is in the bucket, and nothing reached
    the data folders as this process sees them. Where the machine lets it, each host also
    has a network of its own and reaches PostgreSQL, the broker and the bucket by address."""
    no_mounts, no_network = _can_make_namespaces()
    storage = settings.STORAGES["artifacts"]["OPTIONS"]
    s3 = {
        "STEPWORKS_ARTIFACTS_BACKEND": "s3",
        "STEPWORKS_S3_BUCKET": storage["bucket_name"],
        "STEPWORKS_S3_ENDPOINT_URL": storage["endpoint_url"],
        "STEPWORKS_S3_PREFIX": storage["location"],
        "AWS_ACCESS_KEY_ID": storage["access_key"],
        "AWS_SECRET_ACCESS_KEY": storage["secret_key"],
        "AWS_DEFAULT_REGION": storage["region_name"],
    }
    hosts = []
    for index, name in enumerate(("host-a", "host-b")):
        data = tmp_path / name
        data.mkdir()
        env = {"STEPWORKS_DATA_DIR": str(data), **s3}
        host = None if no_mounts else WorkerHost(index, data, network=not no_network)
        if host is not None:
            hosts.append(host)
        fleet.start_worker(_host=host, **env)
    if no_mounts:
        print(f"no mount namespaces here ({no_mounts}): the hosts have separate data folders")
    elif no_network:
        print(f"no network namespaces here ({no_network}): the hosts use this loopback")
    ours = os.readlink("/proc/self/ns/net")
    for host in hosts:  # a host of its own: its mounts, and its network where it can
        assert os.readlink(f"/proc/{host.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert (os.readlink(f"/proc/{host.pid}/ns/net") != ours) == host.network
    try:
        _demo_and_sweep_across_hosts(fleet, tmp_path, s3, s3_bucket)
    finally:
        fleet.stop()
        for host in hosts:
            host.close()
    if not no_mounts:
        for name in ("host-a", "host-b"):  # their tmpfs is theirs: this side sees nothing
            assert list((tmp_path / name).iterdir()) == []


def _demo_and_sweep_across_hosts(
    fleet: Fleet, tmp_path: Path, s3: dict[str, str], s3_bucket: Any
) -> None:
    """The demo's run, one host's workers killed mid-step, then a sweep: all succeed, every
    output in the bucket."""
    from runs_app.sweeps import services as sweep_services

    call_command("seed_demo", verbosity=0)
    demo = Workspace.objects.get(slug="demo")
    version = pipeline_version_by_ref(demo, "classify")
    run = scheduler.run_create(version)
    train = run.steps.get(name="train")
    wait_until(
        lambda: StepRun.objects.filter(pk=train.pk, status=StepStatus.RUNNING).exists(),
        180,
        fleet,
        "train to run",
    )
    victim = worker_pid(train)
    os.killpg(os.getpgid(victim), signal.SIGKILL)  # that host's workers, mid-step
    fleet.start_worker(STEPWORKS_DATA_DIR=str(tmp_path / "host-c"), **s3)
    sweep = sweep_services.sweep_create(
        version,
        name="across hosts",
        axes={"train": [{"label": "h16", "params": {"hidden": 16}}, {"label": "h32"}]},
    )
    runs = [run, *PipelineRun.objects.filter(sweep=sweep)]
    for each in runs:
        wait_until(lambda r=each: run_finished(r), 300, fleet, f"run {each.pk}")

    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}, fleet.logs()
    assert Event.objects.filter(step=train, reason=FailureReason.WORKER_LOST).exists()
    keys = set(s3_bucket.object_keys())
    outputs = StepOutput.objects.filter(step__run__in=runs).select_related("artifact")
    assert outputs and all(s3_bucket.key_of(o.artifact.storage_name) in keys for o in outputs)
