"""`stepworks`: the command line over stepworks.Client.

Exit codes: 0 done; 1 the run failed (or was canceled), or a download did not verify;
2 usage or validation error; 3 not found, or not allowed (token, role); 4 the server could
not be reached or failed. Every read command takes --json for scripts (one JSON document on
stdout). The workspace comes from --workspace, else STEPWORKS_WORKSPACE, else the config.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from stepworks.client import (
    Client,
    StepworksError,
    ValidationError,
    load_config,
    save_config,
)

app = typer.Typer(
    name="stepworks",
    help="Push step code and pipelines, run them, watch, download and compare results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
module_app = typer.Typer(help="Versioned step code.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Pipeline specs.", no_args_is_help=True)
app.add_typer(module_app, name="module")
app.add_typer(pipeline_app, name="pipeline")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "pending": "dim",
    "queued": "magenta",
    "running": "blue",
    "following": "cyan",
    "succeeded": "green",
    "reused": "green4",
    "failed": "red",
    "canceled": "yellow",
}

Workspace = Annotated[
    str | None,
    typer.Option(
        "--workspace", "-w", help="Workspace slug (else STEPWORKS_WORKSPACE, else the config)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(func: F) -> F:
    """Turn client errors into a message on stderr and the exit code they stand for."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StepworksError as error:
            err.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def client_for(workspace: str | None = None) -> Client:
    return Client(workspace=workspace)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def parse_param(text: str) -> tuple[str, Any]:
    """`step.param=value`; the value is read as JSON when it parses (1, 0.5, true, "x")."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ValidationError(f"-p {text!r}: write it as STEP.PARAM=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    from datetime import datetime

    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.1f} s"


def steps_table(run: dict[str, Any]) -> Table:
    title = f"run {run['id']} · {run['pipeline']}@{run['version']} · {styled(run['status'])}"
    table = Table(title=title, title_justify="left")
    for column in ("step", "status", "module", "attempts", "time", "note"):
        table.add_column(column)
    for step in run["steps"]:
        note = step["failure_reason"] or ""
        if step.get("reused_from"):
            note = f"reused from run {step['reused_from']['run']}"
        elif step.get("following"):
            note = f"follows run {step['following']['run']}"
        if step["failure_message"] and step["status"] == "failed":
            note = f"{note}: {step['failure_message'].splitlines()[-1][:80]}"
        duration = step["duration_s"]
        table.add_row(
            step["name"],
            styled(step["status"]),
            step["module"],
            str(step["attempt"]),
            f"{duration:.1f} s" if duration is not None else "",
            note,
        )
    return table


def run_exit_code(run: dict[str, Any]) -> int:
    return 0 if run["status"] == "succeeded" else 1


# --- commands --------------------------------------------------------------------------------


@app.command()
@handles_errors
def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8000")],
    token: Annotated[
        str, typer.Option("--token", help="An API token (from the server's API token page).")
    ],
    workspace: Workspace = None,
) -> None:
    """Check a token against the server and store it (mode 0600) for the next commands."""
    with Client(url, token, workspace) as client:
        spaces = client.workspaces()
    if workspace is None and len(spaces) == 1:
        workspace = spaces[0]["slug"]
    if workspace is not None and workspace not in {s["slug"] for s in spaces}:
        raise ValidationError(f"you are not a member of workspace {workspace!r}")
    config = {**load_config(), "url": url.rstrip("/"), "token": token}
    if workspace:
        config["workspace"] = workspace
    path = save_config(config)
    names = ", ".join(s["slug"] for s in spaces) or "none yet"
    out.print(f"Logged in to {url} (workspaces: {names}); saved to {path}")
    if workspace:
        out.print(f"Default workspace: {workspace}")


@app.command()
@handles_errors
def workspaces(as_json: AsJson = False) -> None:
    """The workspaces you are a member of."""
    with client_for() as client:
        rows = client.workspaces()
    if as_json:
        print_json(rows)
        return
    table = Table("slug", "name", "role")
    for row in rows:
        table.add_row(row["slug"], row["name"], row["role"])
    out.print(table)


@module_app.command("push")
@handles_errors
def module_push(
    path: Annotated[Path, typer.Argument(help="The module's folder (or one .py file).")],
    name: Annotated[str, typer.Option("--name", "-n", help="The module's name.")],
    entrypoint: Annotated[str, typer.Option("--entrypoint", "-e", help="file.py:function")],
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Push a folder as the module's next version (unchanged code creates nothing)."""
    with client_for(workspace) as client:
        version = client.module_push(path, name, entrypoint, message)
    if as_json:
        print_json(version)
        return
    verb = "pushed" if version["created"] else "unchanged:"
    out.print(f"{verb} {version['ref']} ({version['code_digest'][:12]})")
    interface = version["interface"]
    out.print(
        f"  inputs: {', '.join(interface.get('inputs', [])) or '-'}; "
        f"outputs: {', '.join(interface.get('outputs', [])) or '-'}; "
        f"params: {', '.join(interface.get('params', {})) or '-'}"
    )
    for warning in version.get("warnings", []):
        err.print(f"[yellow]warning:[/yellow] {warning}")


@pipeline_app.command("push")
@handles_errors
def pipeline_push(
    spec: Annotated[Path, typer.Argument(help="The spec file (YAML or JSON).")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The pipeline (default: the file's name).")
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Validate a spec and store it as the pipeline's next version."""
    if not spec.is_file():
        raise ValidationError(f"{spec} is not a file")
    with client_for(workspace) as client:
        version = client.pipeline_push(spec, name or spec.stem, message)
    if as_json:
        print_json(version)
        return
    verb = "pushed" if version["created"] else "unchanged:"
    steps = ", ".join(f"{s['name']} ({s['module']})" for s in version["steps"])
    out.print(f"{verb} {version['ref']}: {steps}")


@app.command()
@handles_errors
def run(
    pipeline: Annotated[str, typer.Argument(help="PIPELINE, PIPELINE@latest or PIPELINE@N")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="STEP.PARAM=VALUE (repeatable; VALUE read as JSON)."),
    ] = None,
    no_reuse: Annotated[
        bool, typer.Option("--no-reuse", help="Run every step again; reuse nothing.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the steps live until the run finishes.")
    ] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Start a run; with --watch, follow it and exit 1 unless it succeeded."""
    params = dict(parse_param(p) for p in param or [])
    with client_for(workspace) as client:
        started = client.run(pipeline, params=params, reuse=not no_reuse)
        if not watch:
            if as_json:
                print_json(started)
            else:
                out.print(
                    f"started run {started['id']} ({started['pipeline']}@{started['version']})"
                )
            return
        if as_json or not sys.stdout.isatty():
            final = client.wait(started)
            if as_json:
                print_json(final)
            else:
                out.print(steps_table(final))
        else:
            with Live(steps_table(started), console=out, refresh_per_second=8) as live:
                final = client.wait(started, on_update=lambda r: live.update(steps_table(r)))
    if not as_json:
        out.print(f"run {final['id']} {styled(final['status'])}")
    raise typer.Exit(run_exit_code(final))


@app.command()
@handles_errors
def runs(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only runs in this status.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """The workspace's runs, newest first."""
    with client_for(workspace) as client:
        rows = client.runs(limit=limit, status=status or None, pipeline=pipeline)
    if as_json:
        print_json(rows)
        return
    table = Table("id", "status", "pipeline", "steps", "by", "created", "took")
    for row in rows:
        counts = row.get("step_counts", {})
        done = sum(counts.get(s, 0) for s in ("succeeded", "reused"))
        table.add_row(
            str(row["id"]),
            styled(row["status"]),
            f"{row['pipeline']}@{row['version']}",
            f"{done}/{sum(counts.values())}",
            row["created_by"] or "",
            row["created_at"][:19].replace("T", " "),
            _duration(row["started_at"], row["finished_at"]),
        )
    out.print(table)


@app.command()
@handles_errors
def show(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="The run's id.")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """A run and its steps."""
    with client_for(workspace) as client:
        detail = client.get_run(run_id)
    if as_json:
        print_json(detail)
        return
    out.print(steps_table(detail))
    if detail["params"]:
        out.print("params: " + ", ".join(f"{k}={v!r}" for k, v in detail["params"].items()))
    for step in detail["steps"]:
        for output in step["outputs"]:
            artifact = output["artifact"]
            out.print(
                f"  {step['name']}.{output['name']}: {artifact['media_type']}, "
                f"{artifact['size']} bytes, sha256 {artifact['sha256'][:12]}"
            )


@app.command()
@handles_errors
def logs(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    step: Annotated[str, typer.Argument(metavar="STEP")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the step finishes.")
    ] = False,
    attempt: Annotated[int | None, typer.Option("--attempt", min=1)] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """A step's log; --follow tails it while the step runs."""
    with client_for(workspace) as client:
        if follow and not as_json:
            for text in client.follow_logs(run_id, step):
                sys.stdout.write(text)
                sys.stdout.flush()
            return
        chunk = client.logs(run_id, step, offset=0, attempt=attempt)
    if as_json:
        print_json(chunk)
        return
    sys.stdout.write(chunk["text"])
    sys.stdout.flush()


@app.command()
@handles_errors
def download(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    step: Annotated[
        list[str] | None, typer.Option("--step", "-s", help="Only this step's outputs.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write into.")] = Path(
        "."
    ),
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Download a run's outputs (or one step's) and verify every file's sha256."""
    with client_for(workspace) as client:
        if as_json or not sys.stderr.isatty():
            manifest = client.download(run_id, step=step, dest=output)
        else:
            columns = (
                TextColumn("run {task.fields[run]}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err) as progress:
                task = progress.add_task("download", total=None, run=run_id)

                def advance(done: int, total: int | None) -> None:
                    progress.update(task, completed=done, total=total)

                manifest = client.download(run_id, step=step, dest=output, progress=advance)
    if as_json:
        print_json(manifest)
        return
    size = sum(row["size"] for row in manifest["files"])
    out.print(
        f"{len(manifest['files'])} files, {size} bytes, sha256 verified, in {output}/ "
        "(with manifest.json)"
    )
    for row in manifest["files"]:
        out.print(f"  {row['path']}  {row['sha256'][:12]}")


@app.command()
@handles_errors
def compare(
    a: Annotated[int, typer.Argument(metavar="RUN")],
    b: Annotated[int, typer.Argument(metavar="RUN")],
    all_rows: Annotated[bool, typer.Option("--all", help="Also rows that are the same.")] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Two runs side by side: modules, params and metrics that differ."""
    with client_for(workspace) as client:
        diff = client.compare(a, b)
    if as_json:
        print_json(diff)
        return
    table = Table("", f"run {a}", f"run {b}", "Δ")
    table.add_row("status", styled(diff["a"]["status"]), styled(diff["b"]["status"]), "")
    for section in ("modules", "params", "metrics"):
        rows = [r for r in diff[section] if all_rows or not r["same"]]
        if rows:
            table.add_section()
        for row in rows:
            delta = row.get("delta")
            table.add_row(
                f"{section[:-1]} {row['key']}",
                _cell(row["a"]),
                _cell(row["b"]),
                f"{delta:+.4g}" if isinstance(delta, int | float) else "",
            )
    out.print(table)
    counts = diff["differences"]
    out.print(
        f"{counts['modules']} module, {counts['params']} param and {counts['metrics']} "
        "metric differences"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


@app.command()
@handles_errors
def cancel(
    run_id: Annotated[int, typer.Argument(metavar="RUN")], workspace: Workspace = None
) -> None:
    """Cancel a run that has not finished."""
    with client_for(workspace) as client:
        detail = client.cancel(run_id)
    out.print(f"run {detail['id']}: {styled(detail['status'])} (cancel requested)")


def main() -> None:
    """The console script `stepworks`."""
    app()


if __name__ == "__main__":
    main()
