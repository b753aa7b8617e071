"""The iteration loop at the terminal on three modules: edit the middle one, `stepworks run
file.yaml` pushes only it, runs exactly it and its downstream (bodies counted by what they
write), and ends by naming the metrics that moved."""

from __future__ import annotations

from tests.test_cli import cli  # noqa: F401  (the fixture)

PREP = """\
def prep(ctx, *, n: int = 3, trace: str = ""):
    with open(trace, "a") as f:
        f.write("prep\\n")
    return {"data": list(range(n))}
"""

TRAIN = """\
def train(ctx, data, *, scale: float = 2.0, trace: str = ""):
    with open(trace, "a") as f:
        f.write("train\\n")
    ctx.log_metric("score", sum(data) * scale)
    return {"model": {"w": scale}}
"""

EVALUATE = """\
def evaluate(ctx, model, *, trace: str = ""):
    with open(trace, "a") as f:
        f.write("evaluate\\n")
    ctx.log_metric("quality", model["w"] * 10)
    return {"report": {"w": model["w"]}}
"""

SPEC = """\
steps:
  prep: {{module: ./prep, entrypoint: main.py:prep, params: {{trace: '{trace}'}}}}
  train:
    module: ./train
    entrypoint: main.py:train
    inputs: {{data: prep.data}}
    params: {{trace: '{trace}'}}
  evaluate:
    module: ./evaluate
    entrypoint: main.py:evaluate
    inputs: {{model: train.model}}
    params: {{trace: '{trace}'}}
"""


def test_edit_one_of_three_modules_and_only_it_and_its_downstream_run(
    cli,  # noqa: F811
    world,
    embedded_workers,
    tmp_path,
):
    trace = tmp_path / "trace"
    project = tmp_path / "project"
    for folder, source in (("prep", PREP), ("train", TRAIN), ("evaluate", EVALUATE)):
        (project / folder).mkdir(parents=True)
        (project / folder / "main.py").write_text(source)
    (project / "loop.yaml").write_text(SPEC.format(trace=trace))

    first = cli("run", str(project / "loop.yaml"), "--watch")
    assert trace.read_text().split() == ["prep", "train", "evaluate"]
    trace.write_text("")
    (project / "train" / "main.py").write_text(TRAIN.replace('w": scale', 'w": scale * 2'))
    second = cli("run", str(project / "loop.yaml"), "--watch")

    assert "succeeded" in first.output
    assert trace.read_text().split() == ["train", "evaluate"]  # prep's body did not run
    summary = " ".join(second.output.split())
    assert "unchanged: prep@1" in summary and "pushed train@2" in summary
    assert "unchanged: evaluate@1" in summary
    assert "ran train" in summary and "ran evaluate" in summary and "ran prep" not in summary
    assert "evaluate.quality: 20 -> 40 (+20)" in summary
    assert "train.score" not in summary  # it did not move


def test_runs_filter_takes_the_runs_language(cli, world, embedded_workers, tmp_path):  # noqa: F811
    trace = tmp_path / "trace"
    project = tmp_path / "project"
    for folder, source in (("prep", PREP), ("train", TRAIN), ("evaluate", EVALUATE)):
        (project / folder).mkdir(parents=True)
        (project / folder / "main.py").write_text(source)
    (project / "loop.yaml").write_text(SPEC.format(trace=trace))
    first = cli.json("run", str(project / "loop.yaml"), "--watch")
    second = cli.json("run", str(project / "loop.yaml"), "--watch", "-p", "train.scale=4")

    found = cli.json("runs", "--filter", "metrics.score > 10 and params.train.scale = 4")
    wrong = cli("runs", "--filter", "metrics.score > ten", code=2)

    assert [r["id"] for r in found] == [second["id"]] and first["id"] != second["id"]
    assert "at column 17: metrics.score compares with a number, not 'ten'" in wrong.output


def test_the_console_script_builds_only_the_command_it_runs_and_reads_as_before():
    from typer.main import get_command
    from typer.testing import CliRunner

    from stepworks.cli import app, app_for

    run_only = get_command(app_for(["run", "x.yaml"]))
    group_only = get_command(app_for(["pipeline", "list"]))
    runner = CliRunner()

    assert list(run_only.commands) == ["run"]  # type: ignore[attr-defined]
    assert list(group_only.commands) == ["pipeline"]  # type: ignore[attr-defined]
    for args in (["--help"], [], ["no-such-command"]):
        assert app_for(args) is app
    for args in (["run", "--help"], ["run"], ["pipeline"], ["pipeline", "show", "--help"]):
        slim, whole = runner.invoke(app_for(args), args), runner.invoke(app, args)
        assert (slim.exit_code, slim.output) == (whole.exit_code, whole.output), args


def test_plain_http_serves_only_plain_http_without_a_proxy(monkeypatch):
    from stepworks.client import Client, PlainHttp

    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    plain = PlainHttp.for_url("http://127.0.0.1:8000/base", {}, 5)
    tls = PlainHttp.for_url("https://stepworks.example", {}, 5)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    proxied = PlainHttp.for_url("http://127.0.0.1:8000", {}, 5)

    assert plain is not None and (plain.host, plain.port, plain.base) == (
        "127.0.0.1",
        8000,
        "/base",
    )
    assert tls is None and proxied is None  # httpx serves TLS and proxies, as before
    with Client("https://stepworks.example", "t", "lab") as client:
        assert client._plain is None


def test_the_plain_client_reads_and_writes_as_httpx_did_and_reconnects_for_a_read(
    world, live_server, monkeypatch
):
    import socket

    from stepworks.client import Client, NotFoundError, ServerError, ValidationError
    from tests.helpers import api_token

    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    with Client(live_server.url, api_token(world.owner), "lab") as client:
        assert client._plain is not None
        runs = client.get(client._path("runs", ""), archived=False, limit=5)
        # The server has closed the kept-alive connection: a read is sent again, once.
        client._plain._connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        again = client.get(client._path("runs", ""), archived=True)
        try:
            client.get(client._path("runs", 999999, ""))
        except NotFoundError as error:
            missing = error
        try:
            client.post(client._path("runs", "create", ""), {"pipeline": "nope", "reuse": True})
        except ValidationError as error:
            refused_body = error
        assert client._httpx is None  # JSON requests never made the httpx client
    with Client("http://127.0.0.1:9", "t", "lab") as nowhere:
        try:
            nowhere.get("/api/v1/workspaces/")
        except ServerError as error:
            refused = error

    assert runs["count"] == 0 and again["count"] == 0
    assert missing.status == 404
    assert refused_body.status == 400 and "pipeline" in refused_body.fields
    assert "Cannot reach http://127.0.0.1:9" in str(refused)


def test_the_console_script_exits_with_the_commands_code_its_output_and_exit_handlers(
    tmp_path,
):
    """main() ends the process itself (skipping the interpreter's teardown): the exit code,
    everything printed and the exit handlers are as at a normal exit."""
    import subprocess
    import sys

    script = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(tmp_path / 'ran')!r}).write_text, 'yes')\n"
        "from stepworks.cli import main\n"
        "sys.argv[0] = 'stepworks'\n"
        "main()\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "STEPWORKS_TOKEN": "t"}
    unreachable = {**env, "STEPWORKS_URL": "http://127.0.0.1:9", "STEPWORKS_WORKSPACE": "w"}

    def stepworks(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", script, *args]
        return subprocess.run(command, check=False, env=environ, capture_output=True, text=True)

    helped = stepworks(env, "--help")
    usage = stepworks(env, "run")
    down = stepworks(unreachable, "runs")

    assert helped.returncode == 0 and helped.stdout.rstrip().endswith("─╯")
    assert "Commands" in helped.stdout and "sweep" in helped.stdout
    assert usage.returncode == 2 and "Missing argument 'PIPELINE'" in usage.stderr
    assert down.returncode == 4 and "Cannot reach http://127.0.0.1:9" in down.stderr
    assert (tmp_path / "ran").read_text() == "yes"
