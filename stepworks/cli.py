"""`stepworks`: the command line over stepworks.Client.

Exit codes: 0 done; 1 the run failed (or was canceled), or a download did not verify;
2 usage or validation error; 3 not found, or not allowed (token, role); 4 the server could
not be reached or failed. Every read command takes --json for scripts (one JSON document on
stdout). The workspace comes from --workspace, else STEPWORKS_WORKSPACE, else the config.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # imported where used: a command's start-up should not wait for them
    from rich.console import Console
    from rich.table import Table

from stepworks.client import (
    Client,
    StepworksError,
    ValidationError,
    load_config,
    save_config,
)


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="stepworks",
        help="Push step code and pipelines, run them, watch, download and compare results.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


app = _new_app()
module_app = typer.Typer(help="Versioned step code.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Pipeline specs.", no_args_is_help=True)
dataset_app = typer.Typer(
    help="Versioned data: a file, or a folder as one zip.", no_args_is_help=True
)
sweep_app = typer.Typer(
    help="Sweeps: every combination of variants x replicates, compared.", no_args_is_help=True
)
members_app = typer.Typer(
    help="Who is in the workspace, with which role (owners change them).", no_args_is_help=True
)
webhook_app = typer.Typer(
    help="Word when work is done: signed POSTs when runs and sweeps end (owners).",
    no_args_is_help=True,
)
app.add_typer(members_app, name="members")
app.add_typer(webhook_app, name="webhook")
app.add_typer(module_app, name="module")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(dataset_app, name="dataset")
app.add_typer(sweep_app, name="sweep")


class LazyConsole:
    """A rich Console made on first use: rich.console takes ~19 ms to import, which a
    command's first request need not wait for."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)


out = LazyConsole(highlight=False, soft_wrap=True)
err = LazyConsole(stderr=True, highlight=False)

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


def warn_newer_modules(run: dict[str, Any]) -> None:
    """A run of a version that does not pin the newest modules says so (on stderr)."""
    newer = run.get("newer_modules") or []
    if newer:
        pins = ", ".join(f"{row['pinned']} (newest {row['latest']})" for row in newer)
        version = f"{run['pipeline']}@{run['version']}"
        err.print(
            f"[yellow]note:[/] {version} pins {pins}: this run uses that code. "
            f"`stepworks pipeline update {version}` makes a version with the newest."
        )


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


def step_changes(pins: Iterable[str], params: Iterable[str]) -> dict[str, dict[str, Any]]:
    """STEP=MODULE@N pins and STEP.PARAM=VALUE params -> {step: {"module"?, "params"?}}, the
    `changes` of a clone."""
    changes: dict[str, dict[str, Any]] = {}
    for text in pins:
        step, sep, module = text.partition("=")
        if not sep or not step or "@" not in module:
            raise ValidationError(f"{text!r}: write it as STEP=MODULE@N")
        changes.setdefault(step, {})["module"] = module
    for text in params:
        key, value = parse_param(text)
        step, _, name = key.partition(".")
        changes.setdefault(step, {}).setdefault("params", {})[name] = value
    return changes


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    from datetime import datetime

    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{seconds:.1f} s"


def steps_table(run: dict[str, Any]) -> Table:
    title = f"run {run['id']} · {run['pipeline']}@{run['version']} · {styled(run['status'])}"
    from rich.table import Table

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
    from rich.table import Table

    table = Table("slug", "name", "role")
    for row in rows:
        table.add_row(row["slug"], row["name"], row["role"])
    out.print(table)


@members_app.command("list")
@handles_errors
def members_list(workspace: Workspace = None, as_json: AsJson = False) -> None:
    """The members of the workspace and their roles."""
    with client_for(workspace) as client:
        rows = client.members()
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("user", "role", "since")
    for row in rows:
        table.add_row(row["username"], row["role"], row["created_at"][:10])
    out.print(table)


ROLES = ("viewer", "editor", "owner")


@members_app.command("set")
@handles_errors
def members_set(
    user: Annotated[str, typer.Argument(help="A username, or the email address of an account.")],
    role: Annotated[str, typer.Argument(help="viewer, editor or owner.")],
    workspace: Workspace = None,
) -> None:
    """Add a member with a role, or change a member's role (owners)."""
    if role not in ROLES:
        raise ValidationError(f"role {role!r}: one of {', '.join(ROLES)}")
    with client_for(workspace) as client:
        row = client.member_set(user, role)
    out.print(f"{row['username']} is now {row['role']}")


@members_app.command("remove")
@handles_errors
def members_remove(
    user: Annotated[str, typer.Argument(help="A username, or the email address of an account.")],
    workspace: Workspace = None,
) -> None:
    """Remove a member from the workspace (owners; never its last owner)."""
    with client_for(workspace) as client:
        row = client.member_set(user, None)
    out.print(f"{row['username']} was removed")


EVENTS = ("run.finished", "run.failed", "sweep.finished")


@webhook_app.command("list")
@handles_errors
def webhook_list(workspace: Workspace = None, as_json: AsJson = False) -> None:
    """The workspace's webhooks (their secrets are shown only when each is added)."""
    with client_for(workspace) as client:
        rows = client.webhooks()
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "url", "events", "active", "added")
    for row in rows:
        events = ", ".join(row["events"])
        active = "yes" if row["active"] else "no"
        table.add_row(str(row["id"]), row["url"], events, active, row["created_at"][:10])
    out.print(table)


@webhook_app.command("add")
@handles_errors
def webhook_add(
    url: Annotated[str, typer.Argument(help="Where to POST: an http(s) URL.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help=f"One of {', '.join(EVENTS)} (repeatable; all)."),
    ] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Add a webhook; prints its secret, which signs every payload (shown this once)."""
    events = list(event or EVENTS)
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise ValidationError(f"--event {unknown[0]!r}: one of {', '.join(EVENTS)}")
    with client_for(workspace) as client:
        row = client.webhook_add(url, events)
    if as_json:
        print_json(row)
        return
    out.print(f"webhook {row['id']}: {row['url']} on {', '.join(row['events'])}")
    out.print(f"secret (shown once): {row['secret']}")
    out.print("each POST carries X-Stepworks-Signature: sha256=<HMAC-SHA256 of the body>")


@webhook_app.command("remove")
@handles_errors
def webhook_remove(
    webhook_id: Annotated[int, typer.Argument(help="The webhook's id (webhook list).")],
    workspace: Workspace = None,
) -> None:
    """Delete a webhook and its delivery log; what it had not sent yet is not sent."""
    with client_for(workspace) as client:
        client.webhook_remove(webhook_id)
    out.print(f"webhook {webhook_id} was removed")


@webhook_app.command("test")
@handles_errors
def webhook_test(
    webhook_id: Annotated[int, typer.Argument(help="The webhook's id (webhook list).")],
    workspace: Workspace = None,
) -> None:
    """Queue a test delivery (`ping`); a worker sends it, and `webhook log` shows how it went."""
    with client_for(workspace) as client:
        row = client.webhook_test(webhook_id)
    out.print(f"test delivery {row['id']} queued: see stepworks webhook log {webhook_id}")


@webhook_app.command("log")
@handles_errors
def webhook_log(
    webhook_id: Annotated[int, typer.Argument(help="The webhook's id (webhook list).")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=200)] = 20,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """The webhook's newest deliveries: event, status, and each attempt's answer."""
    with client_for(workspace) as client:
        rows = client.webhook_deliveries(webhook_id, limit=limit)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "event", "subject", "status", "attempts", "last answer", "at")
    for row in rows:
        last = row["tries"][-1] if row["tries"] else None
        answer = "-"
        if last is not None:
            answer = str(last["status_code"] or last["error"][:40] or "-")
            answer += f" ({last['latency_ms']} ms)" if last["latency_ms"] is not None else ""
        table.add_row(
            str(row["id"]), row["event"], row["subject"], row["status"],
            str(row["attempts"]), answer, row["created_at"][:19],
        )  # fmt: skip
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
    for broken in version.get("breaks", []):
        for step in broken["steps"]:
            err.print(
                f"[yellow]breaks:[/yellow] {broken['pipeline']} step {step['step']} (uses "
                f"{step['uses']}) would not fit: {'; '.join(map(str, step['problems']))}"
            )


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


def _ref(text: str) -> tuple[str, int | None]:
    """NAME or NAME@N (NAME@latest: the newest)."""
    name, _, number = text.partition("@")
    if number and number != "latest" and not number.isdigit():
        raise ValidationError(f"{text!r}: give it as NAME or NAME@N")
    return name, int(number) if number.isdigit() else None


@pipeline_app.command("list")
@handles_errors
def pipeline_list(workspace: Workspace = None, as_json: AsJson = False) -> None:
    """The workspace's pipelines."""
    with client_for(workspace) as client:
        pipelines = client.pipelines()
    if as_json:
        print_json(pipelines)
        return
    for row in pipelines:
        out.print(f"{row['name']}  ({row.get('version_count', '?')} versions)", highlight=False)


@pipeline_app.command("show")
@handles_errors
def pipeline_show(
    pipeline: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """A pipeline version: the module version each step pins, and newer ones if any."""
    name, number = _ref(pipeline)
    with client_for(workspace) as client:
        version = client.pipeline_version(name, number)
    if as_json:
        print_json(version)
        return
    out.print(f"{version['ref']}: {version['message'] or 'no message'}", highlight=False)
    newer = {row["step"]: row["latest"] for row in version.get("newer_modules", [])}
    for step in version["steps"]:
        note = f"  (newer: {newer[step['name']]})" if step["name"] in newer else ""
        out.print(f"  {step['name']}: {step['module']}{note}", highlight=False)


@pipeline_app.command("pull")
@handles_errors
def pipeline_pull(
    pipeline: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write it here.")] = None,
    workspace: Workspace = None,
) -> None:
    """A pipeline version's spec as YAML, every step pinned (name@N): to stdout or a file."""
    import yaml

    name, number = _ref(pipeline)
    with client_for(workspace) as client:
        version = client.pipeline_version(name, number)
    text = yaml.safe_dump(version["spec"], sort_keys=False)
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {version['ref']} to {output}", highlight=False)


@module_app.command("list")
@handles_errors
def module_list(workspace: Workspace = None, as_json: AsJson = False) -> None:
    """The workspace's modules."""
    with client_for(workspace) as client:
        modules = client.modules()
    if as_json:
        print_json(modules)
        return
    for row in modules:
        out.print(f"{row['name']}  ({row.get('version_count', '?')} versions)", highlight=False)


@module_app.command("show")
@handles_errors
def module_show(
    module: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """A module version: its entrypoint, interface and files."""
    name, number = _ref(module)
    with client_for(workspace) as client:
        version = client.module_version(name, number)
    if as_json:
        print_json(version)
        return
    interface = version["interface"]
    out.print(f"{version['ref']} ({version['entrypoint']}): {version['message'] or 'no message'}")
    out.print(
        f"  inputs: {', '.join(interface.get('inputs', [])) or '-'}; "
        f"outputs: {', '.join(interface.get('outputs', [])) or '-'}; "
        f"params: {', '.join(interface.get('params', {})) or '-'}",
        highlight=False,
    )
    for path in sorted(version["files"]):
        out.print(f"  {path}", highlight=False)


@module_app.command("diff")
@handles_errors
def module_diff(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The module.")],
    a: Annotated[
        int | None, typer.Argument(metavar="A", help="The old version (default: B - 1).")
    ] = None,
    b: Annotated[
        int | None, typer.Argument(metavar="B", help="The new version (default: the newest).")
    ] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Two versions of a module as a unified diff, after their interface changes.

    NAME alone: the newest version against the one before (the first version: every file
    added); NAME A: version A against the newest; NAME A B: A against B."""
    with client_for(workspace) as client:
        diff = client.module_diff(name, a, b)
    if as_json:
        print_json(diff)
        return
    old = diff["a"]["ref"] if diff["a"] else "nothing"
    lines = [f"{old} -> {diff['b']['ref']}"]
    if diff["entrypoint"]:
        entrypoint = diff["entrypoint"]
        lines.append(f"entrypoint: {entrypoint['a'] or 'nothing'} -> {entrypoint['b']}")
    lines += [f"interface: {change}" for change in diff["interface"]]
    if len(lines) == 1 and not diff["files"]:
        lines[0] += ": the same files, entrypoint and interface"
    typer.echo("\n".join(lines))
    sys.stdout.write("".join(row["diff"] for row in diff["files"]))


@module_app.command("pull")
@handles_errors
def module_pull(
    module: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    to: Annotated[
        Path | None, typer.Option("--to", help="The folder to write (default: ./NAME).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into a folder that has files (others stay)."),
    ] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Write a module version's files into a folder, to edit and push again.

    A folder that has files is refused without --force (which overwrites the version's
    files and leaves the others); so is a version with a file path that is absolute or
    leaves the folder. Nothing is written when refused."""
    name, number = _ref(module)
    with client_for(workspace) as client:
        pulled = client.module_pull(name, number, dest=to, force=force)
    if as_json:
        print_json(pulled)
        return
    out.print(f"wrote {pulled['ref']} to {pulled['dest']}/: {len(pulled['files'])} files")
    if pulled["kept"]:
        err.print(
            f"[yellow]note:[/] {pulled['dest']}/ also has {', '.join(pulled['kept'])}, which "
            f"{pulled['ref']} has not: left as they were (a push takes them along)"
        )


@pipeline_app.command("update")
@handles_errors
def pipeline_update(
    pipeline: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    step: Annotated[
        str | None, typer.Option("--step", "-s", help="Only this step's module.")
    ] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Make a version that pins the newest version of every module (or one step's)."""
    name, _, number = pipeline.partition("@")
    if number and not number.isdigit():
        raise ValidationError(f"{pipeline!r}: give the pipeline as NAME or NAME@N")
    with client_for(workspace) as client:
        version = client.pipeline_update(name, int(number) if number else None, step=step)
    if as_json:
        print_json(version)
        return
    out.print(f"{version['ref']}: {version['message']}")


Pins = Annotated[
    list[str] | None,
    typer.Option("--step", "-s", help="STEP=MODULE@N: that module version (repeatable)."),
]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="STEP.PARAM=VALUE (repeatable; VALUE read as JSON)."),
]


@pipeline_app.command("clone")
@handles_errors
def pipeline_clone(
    pipeline: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@N.")],
    step: Pins = None,
    param: Params = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Make the pipeline's next version from this one, with some steps changed.

    --step pins another module version (one of another name starts from its own param
    defaults); --param sets a param. The new version's parent is this one."""
    changes = step_changes(step or [], param or [])
    if not changes:
        raise ValidationError("say what changes: --step STEP=MODULE@N or --param STEP.PARAM=VALUE")
    name, number = _ref(pipeline)
    with client_for(workspace) as client:
        version = client.pipeline_clone(name, number, changes=changes, message=message)
    if as_json:
        print_json(version)
        return
    if version["created"]:
        out.print(f"cloned {version['parent']} to {version['ref']}", highlight=False)
    else:
        out.print(f"unchanged: {version['ref']} (the changes change nothing)", highlight=False)


@app.command()
@handles_errors
def run(
    pipeline: Annotated[
        str, typer.Argument(help="PIPELINE, PIPELINE@latest, PIPELINE@N or a FILE.yaml")
    ],
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
    """Start a run; with --watch, follow it and exit 1 unless it succeeded.

    PIPELINE may be a pipeline file (FILE.yaml): the module folders it names by path
    (`module: ./folder`, `entrypoint: file.py:function`) are pushed when they changed, then
    the spec; the run follows, and with --watch ends by comparing it with the pipeline's
    previous run (which steps ran and why, the metrics that moved)."""
    params = dict(parse_param(p) for p in param or [])
    local = Path(pipeline)
    with client_for(workspace) as client:
        previous = None
        if local.suffix in (".yaml", ".yml", ".json") and local.is_file():
            # One request pushes the changed folders and the spec and starts the run.
            started = client.run_file(local, params=params, reuse=not no_reuse)
            pushed = started["pushed"]
            # Plain lines: rich need not load before the run is followed (see watch_run).
            for module in pushed["modules"]:
                verb = "pushed" if module["created"] else "unchanged:"
                typer.echo(f"{verb} {module['ref']} (step {module['step']})", err=True)
            verb = "pushed" if pushed["pipeline_version"]["created"] else "unchanged:"
            typer.echo(f"{verb} {pushed['pipeline_version']['ref']}", err=True)
            previous = started["previous_run"]
        else:
            started = client.run(pipeline, params=params, reuse=not no_reuse)
        warn_newer_modules(started)
        if not watch:
            if as_json:
                print_json(started)
            else:
                out.print(
                    f"started run {started['id']} ({started['pipeline']}@{started['version']})"
                )
            return
        compare_with = previous if not as_json else None
        final = watch_run(client, started, as_json, compare_with)
        if as_json:
            print_json(final)
        if previous is not None and not as_json:
            print_loop_summary(client, previous, final)
    if not as_json:
        out.print(f"run {final['id']} {styled(final['status'])}")
    raise typer.Exit(run_exit_code(final))


def watch_run(
    client: Client, run: dict[str, Any], as_json: bool, compare_with: int | None = None
) -> dict[str, Any]:
    """Wait for a run to finish: a live table of its steps on a terminal, else the final
    table once (nothing with --json: the caller prints the run). With `compare_with`, the
    finished run comes with its `comparison` to that run."""
    if as_json:
        return client.wait(run)
    if not sys.stdout.isatty():
        # The table needs rich (~20 ms to import): a thread imports it while this one
        # waits on the long-poll's socket, so the run's end is printed without that wait.
        loading = threading.Thread(target=_load_rich, daemon=True)
        loading.start()
        final = client.wait(run, compare_with=compare_with)
        loading.join()
        out.print(steps_table(final))
        return final
    from rich.live import Live

    with Live(steps_table(run), console=out.console, refresh_per_second=8) as live:
        return client.wait(
            run, on_update=lambda r: live.update(steps_table(r)), compare_with=compare_with
        )


def _load_rich() -> None:
    time.sleep(0.002)  # the long-poll's request goes out first, not after a GIL hand-off
    import rich.table  # noqa: F401

    out.console  # noqa: B018  (made here, not on the critical path)


def print_loop_summary(client: Client, previous: int, final: dict[str, Any]) -> None:
    """After `run FILE.yaml --watch`: which steps ran (and why) and which metrics moved,
    against the pipeline's previous run (from the final answer's `comparison`; read apart
    from a server that does not fold it in)."""
    comparison = final.get("comparison")
    if comparison is None:
        ran_steps = [s["name"] for s in final["steps"] if s["status"] != "reused"]
        reasons = [
            {
                "step": name,
                "why": client.step(final["id"], name).get("reuse", {}).get("summary", ""),
            }
            for name in ran_steps
        ]
        comparison = {"ran": reasons, "metrics": client.compare(previous, final["id"])["metrics"]}
    out.print(f"compared with run {previous}:")
    for step in comparison["ran"]:
        out.print(f"  ran {step['step']}: {step['why']}", highlight=False)
    if not comparison["ran"]:
        out.print("  every step was reused")
    moved = [row for row in comparison["metrics"] if not row["same"]]
    for row in moved:
        delta = row.get("delta")
        change = f" ({delta:+.4g})" if isinstance(delta, int | float) else ""
        out.print(
            f"  {row['key']}: {_cell(row['a'])} -> {_cell(row['b'])}{change}", highlight=False
        )
    if not moved:
        out.print("  no metric moved")


@app.command()
@handles_errors
def runs(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only runs in this status.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--filter",
            "-f",
            help="The runs filter language, as on the runs page: "
            "'metrics.accuracy > 0.9 and params.train.hidden = 32 and tag = baseline'.",
        ),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            help="One column, '-' first for descending: id, pipeline, status, duration, user, "
            "created, metrics.NAME, params.STEP.PARAM (e.g. -metrics.accuracy).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """The workspace's runs, newest first (or in --sort's order)."""
    with client_for(workspace) as client:
        rows = client.runs(
            limit=limit, status=status or None, pipeline=pipeline, filter=where, sort=sort
        )
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "status", "pipeline", "steps", "by", "created", "took", "tags")
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
            ", ".join(row.get("tags", [])),
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
    if detail.get("tags"):
        out.print("tags: " + ", ".join(detail["tags"]), highlight=False)
    if detail.get("note"):
        out.print("note: " + detail["note"], highlight=False, markup=False)
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
    if chunk.get("from_run"):
        err.print(f"(reused: the log of run {chunk['from_run']}'s {step})", highlight=False)
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
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            columns = (
                TextColumn("run {task.fields[run]}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err.console) as progress:
                task = progress.add_task("download", total=None, run=run_id)

                def advance(done: int, total: int | None) -> None:
                    progress.update(task, completed=done, total=total)

                manifest = client.download(run_id, step=step, dest=output, progress=advance)
    missing = manifest.get("missing", [])
    if as_json:
        print_json(manifest)
    else:
        size = sum(row["size"] for row in manifest["files"])
        out.print(
            f"{len(manifest['files'])} files, {size} bytes, sha256 verified, in {output}/ "
            "(with manifest.json)"
        )
        for row in manifest["files"]:
            out.print(f"  {row['path']}  {row['sha256'][:12]}")
    for row in missing:
        err.print(
            f"missing: {row['step']}.{row['output']} (sha256 {row['sha256'][:12]}): the "
            "store lost its bytes; a new run of the step rebuilds them"
        )
    if missing:
        raise typer.Exit(1)


@app.command()
@handles_errors
def compare(
    run_ids: Annotated[
        list[int], typer.Argument(metavar="RUN RUN [RUN...]", help="2 to 10 run ids.")
    ],
    all_rows: Annotated[bool, typer.Option("--all", help="Also rows that are the same.")] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Runs side by side: with two, the modules, params and metrics that differ (and the
    deltas); with 3 to 10, the params that differ and every metric, ★ the best of each."""
    if not 2 <= len(set(run_ids)) <= 10:
        raise ValidationError(f"name 2 to 10 runs to compare, not {len(set(run_ids))}")
    if len(run_ids) > 2:
        with client_for(workspace) as client:
            comparison = client.compare_runs(run_ids)
        if as_json:
            print_json(comparison)
        else:
            print_comparison(comparison, all_rows)
        return
    a, b = run_ids
    with client_for(workspace) as client:
        diff = client.compare(a, b)
    if as_json:
        print_json(diff)
        return
    from rich.table import Table

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


def print_comparison(comparison: dict[str, Any], all_rows: bool = False) -> None:
    """3 to 10 runs: a column per run; the params that differ (all with --all) and every
    metric, ★ marking the best of a row (higher, or lower for a loss or an error)."""
    from rich.table import Table

    runs = comparison["runs"]
    table = Table("", *(f"run {run['id']}" for run in runs))
    table.add_row("pipeline", *(f"{run['pipeline']}@{run['version']}" for run in runs))
    table.add_row("status", *(styled(run["status"]) for run in runs))
    params = [row for row in comparison["params"] if all_rows or not row["same"]]
    if params:
        table.add_section()
    for row in params:
        table.add_row(f"param {row['key']}", *(_cell(value) for value in row["values"]))
    if comparison["metrics"]:
        table.add_section()
    for row in comparison["metrics"]:
        cells = [
            ("★ " if best else "") + _cell(value)
            for value, best in zip(row["values"], row["best"], strict=True)
        ]
        table.add_row(f"metric {row['key']} ({row['direction']})", *cells)
    out.print(table)
    counts = comparison["differences"]
    same = len(comparison["params"]) - counts["params"]
    note = f" ({same} the same; --all shows them)" if same and not all_rows else ""
    out.print(f"{counts['params']} params differ{note}; {counts['metrics']} metrics differ")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


@app.command()
@handles_errors
def rerun(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    from_step: Annotated[
        str | None,
        typer.Option("--from-step", help="Run this step and everything downstream again."),
    ] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Run a run again (same version and overrides, reusing what did not change)."""
    with client_for(workspace) as client:
        started = client.rerun(run_id, from_step=from_step)
    if as_json:
        print_json(started)
        return
    what = f"from step {from_step}" if from_step else "reusing what did not change"
    out.print(f"started run {started['id']}: a rerun of run {run_id}, {what}")


@app.command()
@handles_errors
def clone(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    change: Annotated[
        list[str] | None,
        typer.Option("--change", "-c", help="STEP.PARAM=VALUE (repeatable; VALUE read as JSON)."),
    ] = None,
    module: Annotated[
        list[str] | None,
        typer.Option("--module", help="STEP=MODULE@N: that module version (repeatable)."),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the steps live until the run finishes.")
    ] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Run a run again with some params or module versions changed, reusing the rest.

    As on the run's clone page: --module makes a new pipeline version (parent: the run's),
    with that step's --change params in it; a --change of a step whose module stays is a
    param override on top of the run's own. With --watch, follow the new run and exit 1
    unless it succeeded."""
    changes = step_changes(module or [], change or [])
    params = {
        f"{step}.{name}": value
        for step, changed in changes.items()
        if "module" not in changed
        for name, value in changed.get("params", {}).items()
    }
    changes = {step: changed for step, changed in changes.items() if "module" in changed}
    with client_for(workspace) as client:
        started = client.clone(run_id, changes=changes, params=params, message=message)
        warn_newer_modules(started)
        final = watch_run(client, started, as_json) if watch else None
    if as_json:
        print_json(final or started)
    elif final is None:
        version = f"{started['pipeline']}@{started['version']}"
        out.print(f"started run {started['id']}: a clone of run {run_id} ({version})")
    else:
        out.print(f"run {final['id']} {styled(final['status'])}")
    if final is not None:
        raise typer.Exit(run_exit_code(final))


@app.command()
@handles_errors
def cancel(
    run_id: Annotated[int, typer.Argument(metavar="RUN")], workspace: Workspace = None
) -> None:
    """Cancel a run that has not finished."""
    with client_for(workspace) as client:
        detail = client.cancel(run_id)
    out.print(f"run {detail['id']}: {styled(detail['status'])} (cancel requested)")


RunIds = Annotated[list[int], typer.Argument(metavar="RUN...", help="Run ids.")]


@app.command()
@handles_errors
def delete(run_ids: RunIds, workspace: Workspace = None) -> None:
    """Delete finished runs (all or none): their steps, logs and metrics go, and their
    artifacts go to the collector unless another run holds them. Pinned runs are refused."""
    with client_for(workspace) as client:
        count = client.delete_runs(run_ids)
    out.print(f"deleted {count} run(s)")


@app.command()
@handles_errors
def archive(
    run_ids: RunIds,
    restore: Annotated[bool, typer.Option("--restore", help="Bring them back.")] = False,
    workspace: Workspace = None,
) -> None:
    """Archive runs: hidden from `stepworks runs` and the runs list, kept whole."""
    with client_for(workspace) as client:
        count = client.archive_runs(run_ids, archived=not restore)
    out.print(f"{'restored' if restore else 'archived'} {count} run(s)")


@app.command()
@handles_errors
def pin(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    off: Annotated[bool, typer.Option("--off", help="Unpin it.")] = False,
    workspace: Workspace = None,
) -> None:
    """Pin a run so that it is never deleted (by hand or by retention); --off unpins."""
    with client_for(workspace) as client:
        client.pin(run_id, pinned=not off)
    out.print(f"run {run_id} {'unpinned' if off else 'pinned'}")


@app.command()
@handles_errors
def tag(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    tags: Annotated[
        list[str] | None, typer.Argument(metavar="[TAG...]", help="Tags to add.")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", "-r", help="A tag to take off (repeatable).")
    ] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Tag a run (find it later with `runs --filter "tag = NAME"`); --remove takes tags off.
    Without tags, print the run's tags."""
    with client_for(workspace) as client:
        if tags or remove:
            answer = client.annotate(run_id, add=tags or [], remove=remove or [])
        else:
            answer = client.annotations(run_id)
    if as_json:
        print_json(answer)
        return
    out.print(f"run {run_id}: {', '.join(answer['tags']) or 'no tags'}", highlight=False)


@app.command()
@handles_errors
def note(
    run_id: Annotated[int, typer.Argument(metavar="RUN")],
    text: Annotated[
        str | None, typer.Argument(metavar="[TEXT]", help="The note; '-' reads it from stdin.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the note.")] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Write a run's note (it replaces the one there); without TEXT, print it."""
    if clear and text is not None:
        raise ValidationError("give a TEXT or --clear, not both")
    if text == "-":
        text = sys.stdin.read()
    with client_for(workspace) as client:
        if text is not None or clear:
            answer = client.annotate(run_id, note="" if clear else text)
        else:
            answer = client.annotations(run_id)
    if as_json:
        print_json(answer)
    elif text is not None or clear:
        out.print(f"run {run_id}: note {'cleared' if clear else 'saved'}")
    elif answer["note"]:
        sys.stdout.write(answer["note"].rstrip("\n") + "\n")
    else:
        err.print(f"run {run_id} has no note")


@app.command()
@handles_errors
def forget(
    run_id: Annotated[int | None, typer.Argument(metavar="[RUN]")] = None,
    step: Annotated[str | None, typer.Option("--step", "-s", help="Only this step.")] = None,
    module: Annotated[
        str | None, typer.Option("--module", "-m", help="Every result of NAME@N instead.")
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Forget cached results (a run's, a step's, or a module version's): later runs
    recompute them instead of reusing them. History and outputs stay."""
    if (run_id is None) == (module is None):
        raise ValidationError("give either a RUN (with --step for one step) or --module NAME@N")
    with client_for(workspace) as client:
        count = client.forget(run_id, step=step, module=module)
    what = module or (f"step {step} of run {run_id}" if step else f"run {run_id}")
    out.print(f"forgot {count} cached result(s) of {what}: later runs recompute them")


# --- datasets --------------------------------------------------------------------------------


def _size(size: int | None) -> str:
    if size is None:
        return ""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TB"


@dataset_app.command("push")
@handles_errors
def dataset_push(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE | NAME PATH",
            help="A file or a folder (pushed as one zip), with --name; or the older form "
            "NAME PATH.",
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The dataset (made on its first push).")
    ] = None,
    media_type: Annotated[
        str | None,
        typer.Option("--media-type", help="text/csv, ... (default: from the file's name)."),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Push a file or a folder as the dataset's next version (the same bytes: nothing):
    `stepworks dataset push FILE --name NAME [-m MESSAGE]` (`dataset push NAME PATH` works
    too).

    A folder goes up as one zip (application/zip) of its files, dotfiles and __pycache__
    left out, in name order with fixed timestamps: the same files are the same bytes. A
    spec binds a version as dataset:NAME@N."""
    if name is not None and len(paths) == 1:
        path = Path(paths[0])
    elif name is None and len(paths) == 2:
        name, path = paths[0], Path(paths[1])
    else:
        raise ValidationError("give FILE --name NAME (or NAME PATH)")
    with client_for(workspace) as client:
        version = client.dataset_push(path, name, media_type, message)
    if as_json:
        print_json(version)
        return
    verb = "pushed" if version["created"] else "unchanged:"
    artifact = version["artifact"]
    out.print(
        f"{verb} {version['ref']} ({artifact['media_type']}, {_size(artifact['size'])}, "
        f"sha256 {artifact['sha256'][:12]})",
        highlight=False,
    )


@dataset_app.command("list")
@handles_errors
def dataset_list(workspace: Workspace = None, as_json: AsJson = False) -> None:
    """The workspace's datasets, with their latest version."""
    with client_for(workspace) as client:
        rows = client.datasets()
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("name", "latest version", "size", "created")
    for row in rows:
        latest = row["latest_number"]
        table.add_row(
            row["name"],
            "" if latest is None else str(latest),
            _size(row["latest_size"]),
            row["created_at"][:19].replace("T", " "),
        )
    out.print(table)


# --- sweeps ----------------------------------------------------------------------------------

AXIS_HELP = "STEP=VARIANT[,VARIANT...], repeatable: one axis (see VARIANTS below)."
VARIANT_SYNTAX = """\
VARIANTS. A variant is MODULE@N[:LABEL][{PARAM=VALUE,...}]: that module version
(MODULE@latest too) in the step's place, a short LABEL, and param overrides (each VALUE
read as JSON when it parses, e.g. 0.5, true, [1, 2]; text otherwise).

The label defaults to the module's name (MODULE-N when the axis has that name already).
:LABEL{PARAM=VALUE,...} keeps the base step's module and changes only params.

Examples: --axis 'train=train_rf@1,train_mlp@2' gives labels train_rf and train_mlp;
--axis 'train=train_mlp@2:wide{hidden=256},train_mlp@2:narrow{hidden=32}';
--axis 'prep=:holdout50{test_size=0.5},:holdout25{test_size=0.25}'.
"""


def _split_top(text: str, sep: str = ",") -> list[str]:
    """`text` split on `sep` outside {...}, [...] and "..." (params hold commas)."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def parse_variant(text: str, taken: set[str]) -> dict[str, Any]:
    """One VARIANT of --axis (see VARIANT_HELP) -> {"label", "module"?, "params"?}."""
    head, brace, rest = text.strip().partition("{")
    params: dict[str, Any] = {}
    if brace:
        if not rest.endswith("}"):
            raise ValidationError(f"{text!r}: params go in one {{...}} at the end")
        for pair in _split_top(rest[:-1]):
            if not pair.strip():
                continue
            name, sep, raw = pair.partition("=")
            if not sep or not name.strip():
                raise ValidationError(f"{text!r}: write params as {{PARAM=VALUE,...}}")
            try:
                params[name.strip()] = json.loads(raw.strip())
            except ValueError:
                params[name.strip()] = raw.strip()
    module, _, label = head.strip().partition(":")
    module, label = module.strip(), label.strip()
    if module and "@" not in module:
        raise ValidationError(
            f"{text!r}: write the module as MODULE@N or MODULE@latest, or :LABEL for the "
            "base step's module"
        )
    if not module and not label:
        raise ValidationError(f"{text!r}: a variant needs MODULE@N or :LABEL")
    if not label:
        name, _, number = module.partition("@")
        label = name if name not in taken else f"{name}-{number}"
    variant: dict[str, Any] = {"label": label}
    if module:
        variant["module"] = module
    if params:
        variant["params"] = params
    return variant


def parse_axes(
    texts: list[str], labels: Mapping[str, Iterable[str]] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """--axis STEP=VARIANT,... options -> {step: [variant, ...]} (a step named twice grows);
    `labels` are those the axes have already, which a default label avoids."""
    axes: dict[str, list[dict[str, Any]]] = {}
    for text in texts:
        step, sep, variants = text.partition("=")
        if not sep or not step.strip() or not variants.strip():
            raise ValidationError(f"--axis {text!r}: write it as STEP=VARIANT[,VARIANT...]")
        axis = axes.setdefault(step.strip(), [])
        existing = set((labels or {}).get(step.strip(), ()))
        for part in _split_top(variants):
            if not part.strip():
                raise ValidationError(f"--axis {text!r}: an empty variant")
            axis.append(parse_variant(part, existing | {v["label"] for v in axis}))
    return axes


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _mean_ci(summary: dict[str, Any]) -> str:
    mean, high = summary["mean"], summary["ci_high"]
    if mean is None:
        return "n/a"
    return f"{_num(mean)} ± {_num(high - mean)}" if high is not None else f"{_num(mean)} ± n/a"


def _ci(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"[{_num(low)}, {_num(high)}]"


def _choice_key(variant: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in variant.items() if k != "replicate")


def sweep_table(sweep: dict[str, Any]) -> Table:
    """One row per variant: its replicates' statuses; the caption is the progress."""
    base = f"{sweep['pipeline']}@{sweep['version']}"
    title = f"sweep {sweep['id']} · {sweep['name']} · {base}"
    if sweep["status"] == "canceled":
        title += " · [yellow]canceled[/]"
    steps = list(sweep["axes"])
    from rich.table import Table

    table = Table(*steps, "runs", title=title, title_justify="left")
    by_variant: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for run in sweep["runs"]:
        by_variant.setdefault(_choice_key(run["variant"]), []).append(run)
    for key, runs in by_variant.items():
        chosen = dict(key)
        cells = ", ".join(f"{run['id']} {styled(run['status'])}" for run in runs)
        table.add_row(*(chosen.get(step, "") for step in steps), cells)
    progress = sweep["progress"]
    runs, done_steps = progress["runs"], progress["steps"]
    table.caption = (
        f"runs {runs['done']}/{progress['expected']} done (succeeded {runs['succeeded']}, "
        f"failed {runs['failed']}, canceled {runs['canceled']}) · steps executed "
        f"{done_steps['executed']}, reused {done_steps['reused']}"
    )
    table.caption_justify = "left"
    return table


def sweep_exit_code(sweep: dict[str, Any]) -> int:
    runs = sweep["progress"]["runs"]
    return 0 if runs["total"] and runs["succeeded"] == runs["total"] else 1


def _watch_sweep(client: Client, sweep: dict[str, Any], as_json: bool) -> dict[str, Any]:
    if as_json or not sys.stdout.isatty():
        return client.sweep_wait(sweep)
    from rich.live import Live

    with Live(sweep_table(sweep), console=out.console, refresh_per_second=4) as live:
        return client.sweep_wait(sweep, on_update=lambda s: live.update(sweep_table(s)))


def _describe_variant(variant: dict[str, Any]) -> str:
    parts = [variant["label"]]
    if variant.get("module"):
        parts.append(variant["module"])
    parts += [f"{k}={json.dumps(v)}" for k, v in variant.get("params", {}).items()]
    return " ".join(parts)


@sweep_app.command("create", epilog=VARIANT_SYNTAX)
@handles_errors
def sweep_create(
    pipeline: Annotated[str, typer.Argument(help="The base: PIPELINE or PIPELINE@N")],
    name: Annotated[str, typer.Option("--name", "-n", help="The sweep's name.")],
    axis: Annotated[list[str], typer.Option("--axis", "-a", help=AXIS_HELP)],
    replicates: Annotated[
        int, typer.Option("--replicates", "-r", min=1, help="Runs per variant.")
    ] = 1,
    seed: Annotated[
        list[str] | None,
        typer.Option("--seed", help="STEP.PARAM (int) each replicate sets to its number."),
    ] = None,
    no_reuse: Annotated[
        bool, typer.Option("--no-reuse", help="Run every step again; reuse nothing.")
    ] = False,
    max_parallel: Annotated[
        int | None,
        typer.Option("--max-parallel", min=1, help="At most N of its runs at once (fair share)."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show progress live until every run finished.")
    ] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Start a sweep: a run per combination of variants x replicates (--watch: exit 1 unless
    all succeeded)."""
    axes = parse_axes(axis)
    with client_for(workspace) as client:
        sweep = client.sweep_create(
            pipeline,
            name,
            axes,
            replicates,
            seed_params=seed or (),
            reuse=not no_reuse,
            max_parallel_runs=max_parallel,
        )
        if watch:
            sweep = _watch_sweep(client, sweep, as_json)
    if as_json:
        print_json(sweep)
    elif watch:
        out.print(sweep_table(sweep))
    else:
        out.print(
            f"started sweep {sweep['id']} on {sweep['pipeline']}@{sweep['version']}: "
            f"{len(sweep['runs'])} run(s)"
        )
        for step, variants in sweep["axes"].items():
            out.print(f"  {step}: " + "; ".join(_describe_variant(v) for v in variants))
    if watch:
        raise typer.Exit(sweep_exit_code(sweep))


@sweep_app.command("list")
@handles_errors
def sweep_list(
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="active or canceled.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this base.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """The workspace's sweeps, newest first."""
    with client_for(workspace) as client:
        rows = client.sweeps(limit=limit, status=status, pipeline=pipeline)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("id", "name", "base", "axes", "runs", "status", "created")
    for row in rows:
        runs = row["runs"]
        state = row["status"] if row["status"] == "canceled" or not row["finished"] else "done"
        table.add_row(
            str(row["id"]),
            row["name"],
            f"{row['pipeline']}@{row['version']}",
            " x ".join(f"{step} {len(v)}" for step, v in row["axes"].items()),
            f"{runs['succeeded']}/{row['expected_runs']} ok, {runs['failed']} failed",
            state,
            row["created_at"][:19].replace("T", " "),
        )
    out.print(table)


@sweep_app.command("show")
@handles_errors
def sweep_show(
    sweep_id: Annotated[int, typer.Argument(metavar="SWEEP", help="The sweep's id.")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """A sweep: its axes, progress, and each variant's runs."""
    with client_for(workspace) as client:
        sweep = client.sweep(sweep_id)
    if as_json:
        print_json(sweep)
        return
    for step, variants in sweep["axes"].items():
        out.print(f"{step}: " + "; ".join(_describe_variant(v) for v in variants))
    seeds = ", ".join(sweep["seed_params"]) or "none"
    out.print(f"replicates {sweep['replicates']} (seed params: {seeds})")
    out.print(sweep_table(sweep))


@sweep_app.command("compare")
@handles_errors
def sweep_compare(
    sweep_id: Annotated[int, typer.Argument(metavar="SWEEP")],
    metric: Annotated[str, typer.Option("--metric", "-m", help="A metric the runs log.")],
    step: Annotated[
        str | None, typer.Option("--step", help="The step that logs it (when several do).")
    ] = None,
    aggregate: Annotated[
        str, typer.Option("--aggregate", help="last, min or max of a run's values.")
    ] = "last",
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="max (higher is better) or min; by default min for a metric whose name says "
            "lower is better (loss, error, ...), else max.",
        ),
    ] = None,
    a: Annotated[
        str | None, typer.Option("--a", help="A variant, 'step=label,...', to test against --b.")
    ] = None,
    b: Annotated[str | None, typer.Option("--b", help="The other variant.")] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """The variants on one metric: mean ± 95% CI, the best marked, marginal effects."""
    with client_for(workspace) as client:
        result = client.sweep_compare(sweep_id, metric, step, aggregate, direction, a=a, b=b)
    if as_json:
        print_json(result)
        return
    steps = list(result["axes"])
    best = result["best"]["name"] if result["best"] else None
    verdict = result.get("verdict") or {}
    # The star only for a winner the test names; else the best mean is only the best mean.
    winner = best if verdict.get("clear") else None
    where = f"{result['step']}.{metric}" if result["step"] else metric
    better = "higher" if result["direction"] == "max" else "lower"
    title = f"sweep {sweep_id} · {where} ({result['aggregate']}; {better} is better)"
    from rich.table import Table

    table = Table(*steps, "n", "mean ± 95% CI", "95% CI", "std", "not measured", "", title=title)
    table.title_justify = "left"
    for variant in result["variants"]:
        s, c = variant["summary"], variant["counts"]
        notes = [f"{c[k]} {k}" for k in ("failed", "canceled", "unfinished", "missing") if c[k]]
        is_best = variant["name"] == winner
        table.add_row(
            *(variant["choices"].get(step_name, "") for step_name in steps),
            str(s["n"]),
            _mean_ci(s),
            _ci(s["ci_low"], s["ci_high"]),
            _num(s["std"]),
            ", ".join(notes),
            "[bold green]★ best[/]" if is_best else "",
            style="bold" if is_best else None,
        )
    out.print(table)
    effects = Table("axis", "choice", "n", "mean ± 95% CI", "effect", title="marginal effects")
    effects.title_justify = "left"
    for axis_step, levels in result["marginals"].items():
        for level in levels:
            effect = level["effect"]
            effects.add_row(
                axis_step,
                level["label"],
                str(level["summary"]["n"]),
                _mean_ci(level["summary"]),
                "n/a" if effect is None else f"{effect:+.4g}",
            )
        effects.add_section()
    out.print(effects)
    if best is not None:
        s = result["best"]["summary"]
        label = "best" if winner else "best mean"
        out.print(
            f"{label}: {best} · mean {_num(s['mean'])}, 95% CI {_ci(s['ci_low'], s['ci_high'])}, "
            f"n={s['n']}"
        )
        if verdict and not winner:
            out.print(f"no clear winner: {verdict.get('reason', '')}")
    for label, diff in (
        ("vs runner-up", result["best_vs_runner_up"]),
        ("A vs B", result["a_vs_b"]),
    ):
        if diff is None:
            continue
        other = ", ".join(f"{k}={v}" for k, v in diff["b"].items())
        mine = ", ".join(f"{k}={v}" for k, v in diff["a"].items())
        out.print(
            f"{label}: {mine} - {other} = {_num(diff['diff'])}, 95% CI "
            f"{_ci(diff['ci_low'], diff['ci_high'])}, Welch p = {_num(diff['p_value'])}"
        )


@sweep_app.command("extend", epilog=VARIANT_SYNTAX)
@handles_errors
def sweep_extend(
    sweep_id: Annotated[int, typer.Argument(metavar="SWEEP")],
    axis: Annotated[
        str, typer.Argument(metavar="STEP=VARIANT[,VARIANT...]", help="As create's --axis.")
    ],
    watch: Annotated[
        bool, typer.Option("--watch", help="Show progress live until every run finished.")
    ] = False,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Add variants to an existing axis; only the new combinations run."""
    added: list[dict[str, Any]] = []
    with client_for(workspace) as client:
        labels = {
            step: [v["label"] for v in variants]
            for step, variants in client.sweep(sweep_id)["axes"].items()
        }
        ((step, variants),) = parse_axes([axis], labels).items()
        for variant in variants:
            added.append(client.sweep_extend(sweep_id, step, variant))
        final = _watch_sweep(client, client.sweep(sweep_id), as_json) if watch else None
    if as_json:
        print_json(final or added)
    else:
        for row in added:
            out.print(
                f"added {row['step']}: {_describe_variant(row['variant'])} "
                f"({len(row['runs'])} new runs)"
            )
        if final is not None:
            out.print(sweep_table(final))
    if final is not None:
        raise typer.Exit(sweep_exit_code(final))


@sweep_app.command("cancel")
@handles_errors
def sweep_cancel(
    sweep_id: Annotated[int, typer.Argument(metavar="SWEEP")],
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a sweep: no run of it starts any more, unfinished ones are canceled."""
    with client_for(workspace) as client:
        sweep = client.sweep_cancel(sweep_id)
    if as_json:
        print_json(sweep)
        return
    out.print(f"sweep {sweep['id']} canceled ({sweep['canceled_runs']} runs canceled now)")


@sweep_app.command("promote")
@handles_errors
def sweep_promote(
    sweep_id: Annotated[int, typer.Argument(metavar="SWEEP")],
    variant: Annotated[
        str,
        typer.Option("--variant", "-v", help="'step=label,...' with a label for every axis."),
    ],
    message: Annotated[str | None, typer.Option("--message", "-m")] = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Make a variant the next version of the sweep's base pipeline."""
    with client_for(workspace) as client:
        version = client.sweep_promote(sweep_id, variant, message)
    if as_json:
        print_json(version)
        return
    verb = "promoted to" if version["created"] else "already the latest:"
    out.print(f"{verb} {version['ref']} (parent {version['parent']}): {version['message']}")


def app_for(args: list[str]) -> typer.Typer:
    """The app with only the command, or the command group, that `args` starts with: click
    builds each command's parameters from its signature when the app runs, and the whole
    tree (~55 commands) costs more than any one command's start-up. No command, an option
    first (--help) or a name that is none of ours get the whole app, so help and "No such
    command" read as they always did."""
    name = args[0] if args and not args[0].startswith("-") else None
    commands = [
        c
        for c in app.registered_commands
        if name == (c.name or typer.main.get_command_name(getattr(c.callback, "__name__", "")))
    ]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    slim = _new_app()
    slim.registered_commands = commands
    slim.registered_groups = groups
    # A callback keeps it a group (one command alone would become the whole program, its
    # name then read as its first argument): `stepworks NAME ...` parses as in the full app.
    slim.callback()(_group)
    return slim


def _group() -> None:
    pass


def main() -> None:
    """The console script `stepworks`."""
    # httpx imports its own command line client (click, pygments, rich.syntax: ~23 ms) when
    # those are installed, as typer's dependencies make them; this process never calls it.
    # Imported as None, httpx falls back to a stub `httpx.main`; nothing else changes.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        app_for(sys.argv[1:])()
    except SystemExit as done:
        if done.code is not None and not isinstance(done.code, int):
            raise
        code = done.code or 0
    else:
        code = 0
    # The interpreter's own teardown (collecting every module typer, rich, yaml and ours
    # loaded: ~20 ms here, after the command's last line) is skipped: the exit handlers
    # run and the streams are flushed as at a normal exit, then the process ends.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
