"""`stepworks.Client`: the REST API from Python (a notebook, a CI job, the CLI).

No Django here: httpx in, plain dicts and lists out. Settings come from the arguments, then
the environment (STEPWORKS_URL, STEPWORKS_TOKEN, STEPWORKS_WORKSPACE), then the file
`stepworks login` writes (~/.config/stepworks/config.json).

    from stepworks import Client

    client = Client()                       # or Client(url, token, workspace="demo")
    run = client.run("classify", params={"train.hidden": 128}, wait=True)
    client.download(run, dest="outputs/")   # every output, sha256-verified
    model = client.load_output(run, "train", "model")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from http.client import HTTPConnection, HTTPException, RemoteDisconnected
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from stepworks.changes import interface_changes
from stepworks.outputs import KIND_DIRECTORY, PICKLE, load_input

if TYPE_CHECKING:  # imported where it is used: `stepworks --help` should not wait for it
    import httpx

API_PREFIX = "/api/v1"
RUN_TERMINAL = ("succeeded", "failed", "canceled")
STEP_TERMINAL = ("succeeded", "reused", "failed", "canceled")
CHUNK = 1024 * 1024
LONG_POLL_S = 20  # a run read waits this long for a change (the server allows up to 25)

# (bytes done, bytes total or None) -> None
Progress = Callable[[int, int | None], None]


# --- errors --------------------------------------------------------------------------------


class StepworksError(Exception):
    """A request that did not work; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        fields: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.fields = dict(fields or {})

    def __str__(self) -> str:
        lines = [self.message]
        lines += [
            f"  {path}: {reason}" for path, reasons in self.fields.items() for reason in reasons
        ]
        return "\n".join(lines)


class ValidationError(StepworksError):
    """The server refused the request as given (400, 409, 413, 415) or it was malformed."""

    exit_code = 2


class NotFoundError(StepworksError):
    exit_code = 3


class AuthError(StepworksError):
    """No token, a wrong token (401), or a role that may not do this (403)."""

    exit_code = 3


class ServerError(StepworksError):
    """The server could not be reached, or failed (5xx)."""

    exit_code = 4


class IntegrityError(StepworksError):
    """Downloaded bytes whose sha256 or size is not what the server recorded."""

    exit_code = 1


# --- settings ------------------------------------------------------------------------------


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stepworks" / "config.json"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stepworks"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(values: Mapping[str, Any]) -> Path:
    """Write the config file readable by its owner only (it holds a token)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(values), handle, indent=2)
    os.chmod(temp, 0o600)
    os.replace(temp, path)
    return path


def _setting(explicit: str | None, env: str, config: Mapping[str, Any], key: str) -> str | None:
    if explicit:
        return explicit
    if os.environ.get(env):
        return os.environ[env]
    value = config.get(key)
    return str(value) if value else None


def _run_id(run: Any) -> int:
    """A run id from an id, a numeric string, or a run dict."""
    if isinstance(run, Mapping):
        run = run.get("id", run.get("run"))
    try:
        return int(run)
    except (TypeError, ValueError):
        raise ValidationError(f"{run!r} is not a run id") from None


def _sweep_id(sweep: Any) -> int:
    """A sweep id from an id, a numeric string, or a sweep dict."""
    if isinstance(sweep, Mapping):
        sweep = sweep.get("id", sweep.get("sweep"))
    try:
        return int(sweep)
    except (TypeError, ValueError):
        raise ValidationError(f"{sweep!r} is not a sweep id") from None


def variant_name(variant: str | Mapping[str, Any]) -> str:
    """`step=label, step=label` from {step: label} (a run's `variant`, whose replicate is
    left out, will do); a string is taken as already written so."""
    if isinstance(variant, str):
        return variant
    return ", ".join(f"{step}={label}" for step, label in variant.items() if step != "replicate")


def _choices(variant: str | Mapping[str, Any]) -> dict[str, str]:
    """{step: label} from a mapping or from "step=label, step=label"."""
    if not isinstance(variant, str):
        return {str(k): str(v) for k, v in variant.items() if k != "replicate"}
    choices: dict[str, str] = {}
    for part in variant.split(","):
        step, sep, label = part.strip().partition("=")
        if not sep or not step.strip() or not label.strip():
            raise ValidationError(f"{variant!r}: name a variant as step=label, step=label")
        choices[step.strip()] = label.strip()
    return choices


def _safe_member(dest: Path, name: str) -> Path:
    """Where a zip member goes under `dest`; never outside it."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", ".", "..")]
    parts = [p for p in parts if p != "/"]
    if not parts:
        raise IntegrityError(f"the archive has a member with no usable name: {name!r}")
    target = dest.joinpath(*parts)
    if dest.resolve() not in target.resolve().parents:
        raise IntegrityError(f"the archive's member {name!r} points outside {dest}")
    return target


def _raise_status(status: int, content: bytes, url: str) -> None:
    """The StepworksError an error answer stands for, its message and fields from the
    API's error body when it has one."""
    try:
        body = json.loads(content).get("error", {})
    except (ValueError, AttributeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or f"HTTP {status} from {url}")
    code, fields = body.get("code"), body.get("fields") or {}
    kind: type[StepworksError] = ValidationError
    if status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFoundError
    elif status >= 500:
        kind, message = ServerError, f"The server failed ({status}): {message}"
    raise kind(message, status=status, code=code, fields=fields)


class PlainHttp:
    """JSON requests over one kept-alive http.client connection, for a plain-HTTP server
    with no proxy variable set: the edit-run loop's few calls without importing httpx
    (~30 ms of a command's start-up). `for_url` says None for anything else (https://, a
    proxy), which httpx then serves as before. Query values and bodies are encoded as
    httpx encodes them (true/false; compact UTF-8 JSON, no NaN)."""

    PROXY_VARIABLES = ("http_proxy", "all_proxy")

    def __init__(self, host: str, port: int, base: str, headers: Mapping[str, str], timeout: float):
        self.host, self.port, self.base = host, port, base
        self.headers = dict(headers)
        self.timeout = timeout
        self._connection: HTTPConnection | None = None

    @classmethod
    def for_url(cls, url: str, headers: Mapping[str, str], timeout: float) -> PlainHttp | None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return None
        if any(k.lower() in cls.PROXY_VARIABLES and v for k, v in os.environ.items()):
            return None
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"), headers, timeout)

    def request(
        self, method: str, path: str, query: Mapping[str, Any], body: Any
    ) -> tuple[int, bytes]:
        """(status, body) of one request; a kept-alive connection the server has closed
        meanwhile is opened again once for a GET (a POST is not sent twice)."""
        target = self.base + path
        if query:
            target += "?" + urlencode(
                [(k, _query_text(v)) for k, values in query.items() for v in _listed(values)]
            )
        headers = dict(self.headers)
        data = None
        if body is not None:
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            data = text.encode("utf-8")
            headers["Content-Type"] = "application/json"
        reused = self._connection is not None
        try:
            return self._send(method, target, data, headers)
        except (ConnectionResetError, BrokenPipeError, RemoteDisconnected):
            self.close()
            if not reused or method != "GET":
                raise
            return self._send(method, target, data, headers)

    def _send(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._connection.request(method, target, body=data, headers=headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _query_text(value: Any) -> str:
    if value is True or value is False:
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- the client ----------------------------------------------------------------------------


class Client:
    """The Stepworks REST API. Every method returns plain data (dicts, lists, paths)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        workspace: str | None = None,
        *,
        timeout: float = 60.0,
        cache_dir: str | Path | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        config = load_config()
        resolved_url = _setting(url, "STEPWORKS_URL", config, "url")
        if not resolved_url:
            raise ValidationError(
                "No server: pass url=, set STEPWORKS_URL, or run `stepworks login URL --token T`."
            )
        self.url = resolved_url.rstrip("/")
        self.token = _setting(token, "STEPWORKS_TOKEN", config, "token")
        self.workspace = _setting(workspace, "STEPWORKS_WORKSPACE", config, "workspace")
        self.cache_dir = Path(cache_dir) if cache_dir else cache_path()
        headers = {"Accept": "application/json", "User-Agent": "stepworks-client"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        self._headers = headers
        self._timeout = timeout
        self._transport = transport
        self._httpx: httpx.Client | None = None
        # JSON reads and writes to a plain-HTTP server with no proxy set skip httpx (and
        # its ~30 ms import) for http.client; TLS, proxies, uploads, downloads and a given
        # transport stay with httpx, which the first of them loads.
        self._plain = PlainHttp.for_url(self.url, headers, timeout) if transport is None else None

    @property
    def _http(self) -> httpx.Client:
        if self._httpx is None:
            import httpx

            self._httpx = httpx.Client(
                base_url=self.url,
                headers=self._headers,
                timeout=self._timeout,
                transport=self._transport if self._transport is not None else _default_transport(),
            )
        return self._httpx

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        if self._httpx is not None:
            self._httpx.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------

    def _only_workspace(self) -> str:
        """The caller's one workspace, when none was chosen (a URL and a token are enough
        for someone in exactly one); otherwise say how to choose."""
        slugs = [w["slug"] for w in self.workspaces()]
        if len(slugs) == 1:
            self.workspace = slugs[0]
            return self.workspace
        choices = f"you are in: {', '.join(slugs)}" if slugs else "you are in none yet"
        raise ValidationError(
            "Choose a workspace: --workspace SLUG (workspace= in Python) or "
            f"STEPWORKS_WORKSPACE; {choices}."
        )

    def _path(self, *parts: Any, workspace: str | None = None) -> str:
        space = workspace or self.workspace or self._only_workspace()
        tail = "/".join(quote(str(p), safe="") for p in parts)
        return f"{API_PREFIX}/workspaces/{quote(space, safe='')}/{tail}"

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success or response.status_code == 304:
            return
        _raise_status(response.status_code, response.content, str(response.request.url))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; errors become StepworksError subclasses."""
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServerError(f"Cannot reach {self.url}: {error}") from error
        self._raise_for(response)
        return response

    def _json(self, method: str, path: str, query: Mapping[str, Any], body: Any) -> Any:
        """A JSON request by http.client (see PlainHttp), its answer's JSON."""
        assert self._plain is not None
        try:
            status, content = self._plain.request(method, path, query, body)
        except (OSError, HTTPException) as error:
            raise ServerError(f"Cannot reach {self.url}: {error}") from error
        if not (200 <= status < 300 or status == 304):
            _raise_status(status, content, f"{self.url}{path}")
        return json.loads(content)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        if self._plain is not None:
            answer: dict[str, Any] = self._json("GET", path, query, None)
            return answer
        data: dict[str, Any] = self.request("GET", path, params=query).json()
        return data

    def post(self, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if self._plain is not None and not kwargs:
            answer: dict[str, Any] = self._json("POST", path, {}, body)
            return answer
        if body is not None:
            kwargs["json"] = body
        data: dict[str, Any] = self.request("POST", path, **kwargs).json()
        return data

    @contextmanager
    def _named(self, kind: str, name: str) -> Iterator[None]:
        """Inside, a 404 when the workspace has no `kind` ("module", "pipeline", "dataset")
        called `name` becomes "No module 'x' in workspace 'w'. Did you mean 'y'?"; a 404 for
        something else (a version number, a step) stays as the server wrote it."""
        try:
            yield
        except NotFoundError as error:
            raise self._not_found(kind, name, error) from None

    @contextmanager
    def _pipeline_named(self, ref: str) -> Iterator[None]:
        """Inside, a start whose body named a pipeline version the workspace lacks (a 400
        on `pipeline`: bad input to the API) becomes "not found" for whoever typed `ref`
        (NAME, NAME@N): exit 3, with a "did you mean" when the name is unknown."""
        try:
            yield
        except ValidationError as error:
            reasons = error.fields.get("pipeline", [])
            if not any(reason.startswith("no pipeline version") for reason in reasons):
                raise
            missing = NotFoundError(str(error), status=error.status, code=error.code)
            raise self._not_found("pipeline", ref.partition("@")[0], missing) from None

    def _not_found(self, kind: str, name: str, error: StepworksError) -> StepworksError:
        """The error to raise for a `kind` named `name` the server did not find: "No module
        'x' in workspace 'w'. Did you mean 'y'?" when the workspace has no such name (a
        NotFoundError, exit 3); `error` itself when it has (the version was the problem)
        or the names cannot be read."""
        try:
            names = [row["name"] for row in self.paginate(self._path(f"{kind}s", ""))]
        except StepworksError:
            return error  # the workspace is the problem, and the error says so
        if name in names:
            return error
        import difflib

        message = f"No {kind} {name!r} in workspace {self.workspace!r}."
        close = difflib.get_close_matches(name, names, n=3)
        if close:
            message += f" Did you mean {' or '.join(map(repr, close))}?"
        return NotFoundError(message, status=error.status, code=error.code)

    def paginate(self, path: str, limit: int | None = None, **params: Any) -> list[dict[str, Any]]:
        """Every row of a list endpoint (or the first `limit`), page by page."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page_size = 200 if limit is None else min(200, limit - len(rows))
            page = self.get(path, limit=page_size, offset=offset, **params)
            rows.extend(page["results"])
            offset += len(page["results"])
            if not page.get("next") or not page["results"] or (limit and len(rows) >= limit):
                return rows

    # --- workspaces ------------------------------------------------------------------------

    def workspaces(self) -> list[dict[str, Any]]:
        return self.paginate(f"{API_PREFIX}/workspaces/")

    def members(self, workspace: str | None = None) -> list[dict[str, Any]]:
        return self.paginate(self._path("members", "", workspace=workspace))

    def member_set(self, user: str, role: str | None) -> dict[str, Any]:
        """Give `user` (a username or an email address) `role` in the workspace; None
        removes them. Owners only; the last owner can be neither demoted nor removed."""
        return self.post(self._path("members", "set", ""), {"username": user, "role": role})

    # --- webhooks --------------------------------------------------------------------------

    def webhooks(self) -> list[dict[str, Any]]:
        """The workspace's webhooks (owners), without their secrets."""
        return self.paginate(self._path("webhooks", ""))

    def webhook_add(self, url: str, events: list[str]) -> dict[str, Any]:
        """A new webhook for `events` (run.finished, run.failed, sweep.finished); the answer
        holds its `secret`, which signs every payload, and no later answer does."""
        return self.post(self._path("webhooks", "create", ""), {"url": url, "events": events})

    def webhook_remove(self, webhook_id: int) -> dict[str, Any]:
        return self.post(self._path("webhooks", webhook_id, "delete", ""))

    def webhook_test(self, webhook_id: int) -> dict[str, Any]:
        """Queue a `ping` delivery (a worker sends it); its log shows the attempts."""
        return self.post(self._path("webhooks", webhook_id, "test", ""))

    def webhook_deliveries(self, webhook_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The webhook's newest deliveries, each with its attempts."""
        return self.paginate(self._path("webhooks", webhook_id, "deliveries", ""), limit=limit)

    # --- modules ---------------------------------------------------------------------------

    def modules(self) -> list[dict[str, Any]]:
        return self.paginate(self._path("modules", ""))

    def module_versions(self, name: str) -> list[dict[str, Any]]:
        with self._named("module", name):
            return self.paginate(self._path("modules", name, "versions", ""))

    def module_version(self, name: str, number: int | None = None) -> dict[str, Any]:
        """Version `number` of module `name` (default: its newest)."""
        if number is None:
            number = _newest(self.module_versions(name), f"module {name!r}")
        with self._named("module", name):
            return self.get(self._path("modules", name, "versions", number, ""))

    def module_diff(self, name: str, a: int | None = None, b: int | None = None) -> dict[str, Any]:
        """Version `a` of module `name` against version `b` (default: the newest); `a`
        defaults to b - 1, or to nothing (every file added) when b is the first version.

        Returns {"module", "a", "b" ({"number", "ref"}; "a" None for nothing), "entrypoint"
        ({"a", "b"} when it changed, else None), "interface" (what changed, a sentence
        each), "files": [{"path", "status": added|removed|changed, "diff"}]}, each diff a
        unified diff's text."""
        new = self.module_version(name, b)
        if a is None and new["number"] > 1:
            a = new["number"] - 1
        old = None if a is None else self.module_version(name, a)
        old_entrypoint = old["entrypoint"] if old else None
        return {
            "module": name,
            "a": {"number": old["number"], "ref": old["ref"]} if old else None,
            "b": {"number": new["number"], "ref": new["ref"]},
            "entrypoint": (
                {"a": old_entrypoint, "b": new["entrypoint"]}
                if old_entrypoint != new["entrypoint"]
                else None
            ),
            "interface": interface_changes(old["interface"] if old else {}, new["interface"]),
            "files": files_diff(
                old["files"] if old else {}, new["files"], old["ref"] if old else None, new["ref"]
            ),
        }

    def module_pull(
        self,
        name: str,
        number: int | None = None,
        dest: str | Path | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Write a module version's files (default: the newest's) into folder `dest`
        (default: ./NAME). Refused, with nothing written, when `dest` is not empty (unless
        `force`: then the version's files overwrite those with their paths and other files
        stay) or when a file's path is absolute or climbs out of `dest`.

        Returns {"ref", "dest", "files", "kept"}; "kept": files already in `dest` that the
        version has not, which a `module push` of the folder would take along."""
        version = self.module_version(name, number)
        folder = Path(dest) if dest is not None else Path(name)
        if folder.exists() and not folder.is_dir():
            raise ValidationError(f"{folder} is a file: pull into a folder")
        targets = {rel: _plain_path(folder, rel, version["ref"]) for rel in version["files"]}
        if folder.is_dir() and any(folder.iterdir()) and not force:
            raise ValidationError(
                f"{folder} is not empty: pull into another folder, or overwrite its files with "
                "--force (force=True)"
            )
        existing = _folder_files(folder) if force and folder.is_dir() else []
        kept = [rel for rel, _ in existing if rel not in targets]
        for rel, target in sorted(targets.items()):
            target.parent.mkdir(parents=True, exist_ok=True)
            # The server keeps bytes that are not UTF-8 as surrogates: this gives them back.
            target.write_bytes(version["files"][rel].encode("utf-8", "surrogateescape"))
        return {"ref": version["ref"], "dest": str(folder), "files": sorted(targets), "kept": kept}

    def module_push(
        self,
        source: str | Path | Mapping[str, str],
        name: str,
        entrypoint: str,
        message: str = "",
        interface: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Push a folder (or one file, or a {path: text} map) as the module's next version;
        unchanged code returns the latest version (its `created` is then False)."""
        path = self._path("modules", name, "versions", "create", "")
        if isinstance(source, Mapping):
            body = {"files": dict(source), "entrypoint": entrypoint, "message": message}
            if interface is not None:
                body["interface"] = dict(interface)
            response = self.request("POST", path, json=body)
        else:
            files = module_files(Path(source))
            data: dict[str, Any] = {
                "entrypoint": entrypoint,
                "message": message,
                "paths": [rel for rel, _ in files],
            }
            if interface is not None:
                data["interface"] = json.dumps(interface)
            uploads = [("files", (Path(rel).name, content)) for rel, content in files]
            response = self.request("POST", path, data=data, files=uploads)
        return {**response.json(), "created": response.status_code == 201}

    # --- pipelines -------------------------------------------------------------------------

    def pipelines(self) -> list[dict[str, Any]]:
        return self.paginate(self._path("pipelines", ""))

    def pipeline_versions(self, name: str) -> list[dict[str, Any]]:
        with self._named("pipeline", name):
            return self.paginate(self._path("pipelines", name, "versions", ""))

    def pipeline_version(self, name: str, number: int | None = None) -> dict[str, Any]:
        """Version `number` of pipeline `name` (default: its newest)."""
        if number is None:
            number = _newest(self.pipeline_versions(name), f"pipeline {name!r}")
        with self._named("pipeline", name):
            return self.get(self._path("pipelines", name, "versions", number, ""))

    def pipeline_push(
        self, spec: str | Path | Mapping[str, Any], name: str, message: str = ""
    ) -> dict[str, Any]:
        """Store a spec (a YAML/JSON file, its text, or a mapping) as the next version."""
        if isinstance(spec, Path) or (
            isinstance(spec, str) and "\n" not in spec and Path(spec).is_file()
        ):
            spec = Path(spec).read_text(encoding="utf-8")
        body = {"spec": dict(spec) if isinstance(spec, Mapping) else spec, "message": message}
        response = self.request(
            "POST", self._path("pipelines", name, "versions", "create", ""), json=body
        )
        return {**response.json(), "created": response.status_code == 201}

    def pipeline_push_file(self, path: str | Path, message: str = "") -> dict[str, Any]:
        """Push a pipeline file and the module folders it names by path, then the spec.

        A step may say `module: ./folder` (relative to the file) with `entrypoint:
        file.py:function` and an optional `name:` (default: the folder's name): the folder is
        pushed as a new version of that module only if its files changed, and the step is
        rewritten to `name@N` before the spec reaches the server (which never sees a local
        path). The pipeline is named after the file; a new version is made only if a pin
        changed. Returns the pipeline version (`created`) with `modules`: [{"step", "ref",
        "created"}] for the folders pushed."""
        source = Path(path)
        spec, folders = _pipeline_file(source)
        pushed = []
        for step_name, (folder, name, entrypoint) in folders.items():
            version = self.module_push(folder, name, entrypoint, message)
            spec["steps"][step_name]["module"] = version["ref"]
            pushed.append({"step": step_name, "ref": version["ref"], "created": version["created"]})
        result = self.pipeline_push(spec, source.stem, message)
        return {**result, "modules": pushed}

    def run_file(
        self,
        path: str | Path,
        params: Mapping[str, Any] | None = None,
        reuse: bool = True,
        message: str = "",
    ) -> dict[str, Any]:
        """pipeline_push_file and run in one request (the server's runs/from-source/): the
        started run, with `pushed` ({"modules": [{"step", "ref", "created"}],
        "pipeline_version": {"ref", "created"}}) and `previous_run` (the pipeline's newest
        run before it, or None).

        Each module folder goes by its code digest alone when this machine last saw the
        server hold that digest as the module's latest version (the cache folder's
        pushed.json), else with its files; the server answers 409 for a digest it lacks, and
        the request is made again with those files."""
        source = Path(path)
        spec, folders = _pipeline_file(source)
        endpoint = self._path("runs", "from-source", "")  # resolves the workspace first
        known_path = self.cache_dir / "pushed.json"
        place = f"{self.url} {self.workspace}"
        try:
            known = json.loads(known_path.read_text()).get(place, {})
        except (OSError, ValueError, AttributeError):
            known = {}
        modules: dict[str, dict[str, Any]] = {}
        texts: dict[str, dict[str, str]] = {}
        pushed_apart = []
        for step_name, (folder, name, entrypoint) in folders.items():
            files = module_files(folder)
            try:
                texts[step_name] = {rel: content.decode("utf-8") for rel, content in files}
            except UnicodeDecodeError:  # bytes JSON cannot carry: the upload path names them
                version = self.module_push(folder, name, entrypoint, message)
                spec["steps"][step_name]["module"] = version["ref"]
                pushed_apart.append({"step": step_name, **version})
                continue
            digest = code_digest(files, entrypoint)
            modules[step_name] = {"name": name, "entrypoint": entrypoint, "digest": digest}
            if known.get(name) != digest:
                modules[step_name]["files"] = texts[step_name]
        body = {
            "pipeline": source.stem,
            "spec": spec,
            "modules": modules,
            "message": message,
            "params": dict(params or {}),
            "reuse": reuse,
        }
        try:
            run = self.post(endpoint, body)
        except StepworksError as error:
            if error.code != "module_files_needed":
                raise
            for field in error.fields:  # "modules.<step>.files"
                step_name = field.split(".")[1]
                modules[step_name]["files"] = texts[step_name]
            run = self.post(endpoint, body)
        rows = {row["step"]: row for row in run["pushed"]["modules"]}
        for row in pushed_apart:
            rows[row["step"]] = {"step": row["step"], "ref": row["ref"], "created": row["created"]}
        run["pushed"]["modules"] = [rows[step] for step in folders if step in rows]
        known.update({m["name"]: m["digest"] for m in modules.values()})
        with suppress(OSError, ValueError, AttributeError):
            known_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                places = json.loads(known_path.read_text())
            except (OSError, ValueError):
                places = {}
            places[place] = known
            temp = known_path.with_name(f".{known_path.name}.{os.getpid()}")
            temp.write_text(json.dumps(places))
            os.replace(temp, known_path)
        return run

    def pipeline_update(
        self, name: str, number: int | None = None, step: str | None = None
    ) -> dict[str, Any]:
        """A new version of pipeline `name` (its version `number`, default the newest) that
        pins the newest version of every module, or only of `step`'s."""
        if number is None:
            number = _newest(self.pipeline_versions(name), f"pipeline {name!r}")
        path = self._path("pipelines", name, "versions", number, "update", "")
        with self._named("pipeline", name):
            return self.post(path, {"step": step})

    def pipeline_clone(
        self,
        name: str,
        number: int | None = None,
        changes: Mapping[str, Any] | None = None,
        spec: str | None = None,
        message: str = "",
    ) -> dict[str, Any]:
        """A new version of pipeline `name` whose parent is its version `number` (default:
        the newest): `changes` ({step: {"module"?: "name@N", "params"?: {...}, "inputs"?:
        {...}}}; a None param or input removes it) applied to its spec, or a whole `spec`
        (YAML/JSON text). `created` is False when that changes nothing (the answer is then
        the version itself)."""
        if number is None:
            number = _newest(self.pipeline_versions(name), f"pipeline {name!r}")
        body: dict[str, Any] = {"message": message}
        if spec is not None:
            body["spec"] = spec
        else:
            body["changes"] = dict(changes or {})
        path = self._path("pipelines", name, "versions", number, "clone", "")
        with self._named("pipeline", name):
            response = self.request("POST", path, json=body)
        return {**response.json(), "created": response.status_code == 201}

    # --- datasets --------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        return self.paginate(self._path("datasets", ""))

    def dataset_push(
        self, file: str | Path, name: str, media_type: str | None = None, message: str = ""
    ) -> dict[str, Any]:
        """Upload a file, or a folder as one zip, as dataset `name`'s next version (the
        dataset is made on its first push). The server guesses a file's media type from its
        name unless `media_type` says; a folder is application/zip, its files (dotfiles and
        __pycache__ left out) in name order with fixed timestamps, so the same folder is the
        same bytes. The same bytes as the latest version return it (`created` False)."""
        path = Path(file)
        if not path.exists():
            raise ValidationError(f"{path} does not exist")
        if path.is_dir():
            with tempfile.TemporaryFile() as zipped:
                _zip_folder(path, zipped)
                zip_type = media_type or "application/zip"
                return self._dataset_upload(name, zipped, f"{name}.zip", zip_type, message)
        with path.open("rb") as handle:
            return self._dataset_upload(name, handle, path.name, media_type, message)

    def _dataset_upload(
        self, name: str, handle: IO[bytes], filename: str, media_type: str | None, message: str
    ) -> dict[str, Any]:
        data = {"message": message, **({"media_type": media_type} if media_type else {})}
        response = self.request(
            "POST",
            self._path("datasets", name, "versions", "create", ""),
            data=data,
            files={"file": (filename, handle)},
        )
        return {**response.json(), "created": response.status_code == 201}

    # --- runs ------------------------------------------------------------------------------

    def run(
        self,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        reuse: bool = True,
        wait: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Start a run of `name`, `name@latest` or `name@N`; with wait=True, return it
        finished."""
        body = {"pipeline": pipeline, "params": dict(params or {}), "reuse": reuse}
        with self._pipeline_named(pipeline):
            run = self.post(self._path("runs", "create", ""), body)
        return self.wait(run, timeout=timeout) if wait else run

    def runs(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """Runs newest first; filters: status, pipeline, version, sweep, created_by,
        created_after, created_before (ISO 8601), and `filter`, the runs filter language
        ("metrics.accuracy > 0.9 and tag = baseline"); `sort="-metrics.accuracy"` orders
        them by a column (id, pipeline, status, duration, user, created, metrics.NAME,
        params.STEP.PARAM)."""
        return self.paginate(self._path("runs", ""), limit=limit, **filters)

    def get_run(self, run: Any) -> dict[str, Any]:
        return self.get(self._path("runs", _run_id(run), ""))

    def wait(
        self,
        run: Any,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        compare_with: Any = None,
    ) -> dict[str, Any]:
        """Wait for a run to finish; `on_update` sees every state read.

        Each read after the first is a long-poll the server answers at the run's next
        change (or after LONG_POLL_S), so the end is known within a round trip of it;
        without `on_update` it is answered only at the run's end. A server without
        long-polls (no `last_event`) is read every `poll_s`. A run given as the unfinished
        state a start returned (with its `last_event`) is not read again first. With
        `compare_with` (a run), the finished run comes with `comparison`: the steps that
        ran and why, and the metric rows against that run."""
        deadline = None if timeout is None else time.monotonic() + timeout
        path = self._path("runs", _run_id(run), "")
        extra = {} if compare_with is None else {"compare_with": _run_id(compare_with)}
        until = "change" if on_update is not None else "end"
        given = isinstance(run, Mapping) and run.get("last_event") is not None
        if given and run.get("status") not in RUN_TERMINAL:
            current = dict(run)
        else:
            current = self.get(path, **extra)
        while True:
            if on_update is not None:
                on_update(current)
            if current["status"] in RUN_TERMINAL:
                return current
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise StepworksError(f"run {current['id']} did not finish in {timeout} s")
            last = current.get("last_event")
            if last is None:
                time.sleep(poll_s)
                current = self.get(path, **extra)
                continue
            wait_s = LONG_POLL_S if remaining is None else min(LONG_POLL_S, math.ceil(remaining))
            current = self.get(path, wait=wait_s, after_event=last, until=until, **extra)

    def cancel(self, run: Any) -> dict[str, Any]:
        return self.post(self._path("runs", _run_id(run), "cancel", ""))

    def delete_runs(self, runs: list[Any]) -> int:
        """Delete finished, unpinned runs (all or none); returns how many."""
        body = {"runs": [_run_id(r) for r in runs]}
        return int(self.post(self._path("runs", "delete", ""), body)["deleted"])

    def archive_runs(self, runs: list[Any], archived: bool = True) -> int:
        """Archive runs (hidden from lists, kept), or bring them back."""
        body = {"runs": [_run_id(r) for r in runs], "archived": archived}
        answer = self.post(self._path("runs", "archive", ""), body)
        return int(answer.get("archived", answer.get("restored", 0)))

    def pin(self, run: Any, pinned: bool = True) -> dict[str, Any]:
        """Pin a run (never deleted) or unpin it."""
        return self.post(self._path("runs", _run_id(run), "pin", ""), {"pinned": pinned})

    def annotations(self, run: Any) -> dict[str, Any]:
        """A run's tags and note: {"run", "tags", "note"}."""
        return self.get(self._path("runs", _run_id(run), "annotations", ""))

    def annotate(
        self,
        run: Any,
        *,
        tags: Iterable[str] | None = None,
        add: Iterable[str] | None = None,
        remove: Iterable[str] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Change a run's tags and note: `tags` replaces the set, `add` and `remove` change
        it, `note` replaces the note (`""` clears it); what is not given stays. Returns
        {"run", "tags", "note"}."""
        body: dict[str, Any] = {}
        for key, values in (("tags", tags), ("add", add), ("remove", remove)):
            if values is not None:
                body[key] = list(values)
        if note is not None:
            body["note"] = note
        path = self._path("runs", _run_id(run), "annotations", "")
        data: dict[str, Any] = self.request("PUT", path, json=body).json()
        return data

    def forget(self, run: Any = None, step: str | None = None, module: str | None = None) -> int:
        """Forget cached results so later runs recompute them: a run's, one step's of a
        run, or a module version's (`module="name@N"`). Returns how many were forgotten."""
        if module is not None:
            name, _, number = module.partition("@")
            if not name or not number.isdigit():
                raise ValidationError(f"{module!r}: give the module version as NAME@N")
            with self._named("module", name):
                path = self._path("modules", name, "versions", number, "forget", "")
                return int(self.post(path)["forgotten"])
        if run is None:
            raise ValidationError("Say what to forget: a run (and a step), or a module@N.")
        if step is not None:
            path = self._path("runs", _run_id(run), "steps", step, "forget", "")
        else:
            path = self._path("runs", _run_id(run), "forget", "")
        return int(self.post(path)["forgotten"])

    def rerun(self, run: Any, from_step: str | None = None) -> dict[str, Any]:
        return self.post(self._path("runs", _run_id(run), "rerun", ""), {"from_step": from_step})

    def clone(
        self,
        run: Any,
        changes: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        message: str = "",
    ) -> dict[str, Any]:
        """Start a run like `run` with other module versions or params. `changes` ({step:
        {"module"?: "name@N", "params"?: {...}}}) make a new version of its pipeline (parent:
        the run's); `params` ({"step.param": value}) apply on top of the run's own; what did
        not change is reused."""
        body = {"changes": dict(changes or {}), "params": dict(params or {}), "message": message}
        return self.post(self._path("runs", _run_id(run), "clone", ""), body)

    def events(self, run: Any) -> list[dict[str, Any]]:
        return self.paginate(self._path("runs", _run_id(run), "events", ""))

    def lineage(self, run: Any) -> dict[str, Any]:
        return self.get(self._path("runs", _run_id(run), "lineage", ""))

    def compare(self, a: Any, b: Any) -> dict[str, Any]:
        """Two runs side by side: modules, params and metrics with b - a deltas."""
        return self.get(self._path("runs", "compare", ""), a=_run_id(a), b=_run_id(b))

    def compare_runs(self, runs: Iterable[Any]) -> dict[str, Any]:
        """2 to 10 runs side by side: {"runs", "params" (those that differ first), "metrics"
        (each with its values, `direction` and `best`), "steps" (which runs share each
        step's cache key), "series" (step-wise metrics), "differences"}."""
        ids = ",".join(str(_run_id(run)) for run in runs)
        return self.get(self._path("runs", "compare", ""), runs=ids)

    # --- sweeps ----------------------------------------------------------------------------

    def sweeps(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """Sweeps newest first; filters: pipeline, version, status (active, canceled), name,
        created_by, created_after, created_before."""
        return self.paginate(self._path("sweeps", ""), limit=limit, **filters)

    def sweep(self, sweep: Any) -> dict[str, Any]:
        """A sweep with its axes, progress, events and every run's variant and status."""
        return self.get(self._path("sweeps", _sweep_id(sweep), ""))

    def sweep_create(
        self,
        pipeline: str,
        name: str,
        axes: Mapping[str, Any],
        replicates: int = 1,
        seed_params: Iterable[str] = (),
        reuse: bool = True,
        wait: bool = False,
        timeout: float | None = None,
        max_parallel_runs: int | None = None,
    ) -> dict[str, Any]:
        """Start a sweep of `pipeline` (`name`, `name@N`): axes are {step: [{"label",
        "module"?: "name@N", "params"?: {...}}]}; replicate r sets each seed param
        (`step.param`) to r; at most `max_parallel_runs` of its runs at once (None: no
        cap). With wait=True, return it once every run has finished."""
        body = {
            "pipeline": pipeline,
            "name": name,
            "axes": {step: list(variants) for step, variants in axes.items()},
            "replicates": replicates,
            "seed_params": list(seed_params),
            "reuse": reuse,
            "max_parallel_runs": max_parallel_runs,
        }
        with self._pipeline_named(pipeline):
            sweep = self.post(self._path("sweeps", "create", ""), body)
        return self.sweep_wait(sweep, timeout=timeout) if wait else sweep

    def sweep_wait(
        self,
        sweep: Any,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll a sweep until every run it will have has finished; `on_update` sees each
        state read."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.sweep(sweep)
            if on_update is not None:
                on_update(current)
            if current["progress"]["finished"]:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise StepworksError(f"sweep {current['id']} did not finish in {timeout} s")
            time.sleep(poll_s)

    def sweep_runs(self, sweep: Any, status: str | list[str] | None = None) -> list[dict[str, Any]]:
        return self.paginate(self._path("sweeps", _sweep_id(sweep), "runs", ""), status=status)

    def sweep_metrics(self, sweep: Any) -> dict[str, Any]:
        """{"steps": {step: [metric, ...]}, "metrics": [{"step", "name", "runs"}]}."""
        return self.get(self._path("sweeps", _sweep_id(sweep), "metrics", ""))

    def sweep_compare(
        self,
        sweep: Any,
        metric: str,
        step: str | None = None,
        aggregate: str = "last",
        direction: str | None = None,
        a: str | Mapping[str, Any] | None = None,
        b: str | Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The variants on one metric (mean, std, 95% CI, n; failed runs counted), marginal
        effects per axis, the best variant; A vs B (Welch) when `a` and `b` are variants
        ({step: label} or "step=label, ..."). Without `direction` the server picks, as the
        compare page does: min for a loss- or error-like metric name, else max."""
        return self.get(
            self._path("sweeps", _sweep_id(sweep), "compare", ""),
            metric=metric,
            step=step,
            aggregate=aggregate,
            direction=direction,
            a=None if a is None else variant_name(a),
            b=None if b is None else variant_name(b),
        )

    def sweep_extend(
        self,
        sweep: Any,
        step: str,
        variant: Mapping[str, Any],
        wait: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Append a variant ({"label", "module"?, "params"?}) to the axis `step`; only the
        new combinations run. Returns {"sweep", "step", "variant", "runs"} (runs: the new
        ones; with wait=True, as they finished)."""
        path = self._path("sweeps", _sweep_id(sweep), "extend", "")
        added = self.post(path, {"step": step, "variant": dict(variant)})
        if wait:
            final = self.sweep_wait(added["sweep"], timeout=timeout)
            new = {run["id"] for run in added["runs"]}
            added["runs"] = [run for run in final["runs"] if run["id"] in new]
        return added

    def sweep_cancel(self, sweep: Any) -> dict[str, Any]:
        """Cancel the sweep and its unfinished runs (`canceled_runs`: how many)."""
        return self.post(self._path("sweeps", _sweep_id(sweep), "cancel", ""))

    def sweep_promote(
        self, sweep: Any, variant: str | Mapping[str, Any], message: str | None = None
    ) -> dict[str, Any]:
        """Make a variant ({step: label} or "step=label, ...") the next version of the base
        pipeline; `created` is False when that version existed already."""
        choices = _choices(variant)
        body: dict[str, Any] = {"variant": choices}
        if message:
            body["message"] = message
        response = self.request(
            "POST", self._path("sweeps", _sweep_id(sweep), "promote", ""), json=body
        )
        return {**response.json(), "created": response.status_code == 201}

    # --- steps -----------------------------------------------------------------------------

    def step(self, run: Any, step: str) -> dict[str, Any]:
        return self.get(self._path("runs", _run_id(run), "steps", step, ""))

    def logs(
        self, run: Any, step: str, offset: int | None = 0, attempt: int | None = None
    ) -> dict[str, Any]:
        """{"text", "offset", "next_offset", "attempt", "attempts", "complete"}: the log of
        one attempt from byte `offset` (None: its last 256 KiB)."""
        path = self._path("runs", _run_id(run), "steps", step, "log", "")
        return self.get(path, offset=offset, attempt=attempt)

    def follow_logs(self, run: Any, step: str, poll_s: float = 0.5) -> Iterator[str]:
        """Yield a step's log text as it is written, until the step has finished."""
        offset = 0
        attempt: int | None = None
        while True:
            chunk = self.logs(run, step, offset=offset, attempt=attempt)
            if attempt is not None and chunk["attempts"] and max(chunk["attempts"]) > attempt:
                attempt, offset = max(chunk["attempts"]), 0  # a retry: its log starts over
                continue
            attempt = chunk["attempt"]
            if chunk["text"]:
                yield chunk["text"]
            offset = chunk["next_offset"]
            if chunk["complete"]:
                return
            time.sleep(poll_s)

    def metrics(self, run: Any, step: str, name: str | None = None) -> list[dict[str, Any]]:
        return self.paginate(
            self._path("runs", _run_id(run), "steps", step, "metrics", ""), name=name
        )

    # --- artifacts and downloads -----------------------------------------------------------

    def artifact(self, sha256: str) -> dict[str, Any]:
        return self.get(self._path("artifacts", sha256, ""))

    def _save_stream(
        self, path: str, target: Path, params: Mapping[str, Any] | None, progress: Progress | None
    ) -> tuple[str, int]:
        """Stream a download into `target`; (sha256, size) of what arrived."""
        import httpx

        digest = hashlib.sha256()
        size = 0
        try:
            # A server with presigned downloads (STEPWORKS_S3_PRESIGNED=1) answers 302 to
            # its bucket; httpx drops our Authorization header on the way to another host.
            with self._http.stream("GET", path, params=params, follow_redirects=True) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        if progress is not None:
                            progress(size, total)
        except httpx.TransportError as error:
            raise ServerError(f"Download from {self.url} failed: {error}") from error
        return digest.hexdigest(), size

    def download_artifact(
        self, sha256: str, dest: str | Path, progress: Progress | None = None
    ) -> Path:
        """An artifact's bytes into file `dest`, verified against its sha256."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.part")
        got, _size = self._save_stream(
            self._path("artifacts", sha256, "download", ""), temp, None, progress
        )
        if got != sha256:
            temp.unlink(missing_ok=True)
            raise IntegrityError(f"artifact {sha256[:12]}: received bytes hash to {got[:12]}")
        os.replace(temp, target)
        return target

    def download(
        self,
        run: Any,
        step: str | list[str] | None = None,
        dest: str | Path = ".",
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Every output of a run (or of one or more steps) into `dest`, each file checked
        against the sha256 and size in the zip's manifest.

        Returns the manifest ({"run", "files": [{"path", "sha256", "size", "step",
        "output", "local_path"}], "missing": [{"step", "output", "sha256"}], "lineage"});
        `dest` also gets manifest.json. "missing" lists outputs whose bytes the server's
        store lost: they are not in the zip (the CLI reports them and exits 1).
        """
        run_id = _run_id(run)
        steps = [step] if isinstance(step, str) else list(step or [])
        folder = Path(dest)
        path = self._path("runs", run_id, "outputs.zip")
        # The zip waits in the temp folder: a run that is not found creates nothing in dest.
        fd, temp_name = tempfile.mkstemp(prefix=".stepworks-", suffix=".zip")
        os.close(fd)
        temp = Path(temp_name)
        try:
            self._save_stream(path, temp, {"step": steps} if steps else None, progress)
            folder.mkdir(parents=True, exist_ok=True)
            return _extract_verified(temp, folder)
        finally:
            temp.unlink(missing_ok=True)

    def load_output(self, run: Any, step: str, name: str, *, allow_pickle: bool = False) -> Any:
        """A step's output as a Python value, by its media type (a DataFrame from Parquet, an
        array from .npy, JSON data, text, bytes; a directory as a local Path).

        Pickles are code: they load only with allow_pickle=True, for outputs you trust.
        """
        detail = self.step(run, step)
        output = next((o for o in detail["outputs"] if o["name"] == name), None)
        if output is None:
            known = ", ".join(o["name"] for o in detail["outputs"]) or "none"
            raise NotFoundError(f"step {step!r} has no output {name!r} (its outputs: {known})")
        artifact = output["artifact"]
        media_type, kind, sha256 = artifact["media_type"], artifact["kind"], artifact["sha256"]
        if media_type.split(";")[0].strip() == PICKLE and not allow_pickle:
            raise ValidationError(
                f"{step}.{name} is a pickle; pickles run code when loaded: pass "
                "allow_pickle=True if you trust it"
            )
        store = self.cache_dir / "artifacts"
        if kind == KIND_DIRECTORY:
            folder = store / f"{sha256}.d"
            if not folder.exists():
                zipped = self.download_artifact_zip(sha256, store / f"{sha256}.zip")
                staging = Path(tempfile.mkdtemp(prefix=".stepworks-", dir=store))
                try:
                    with zipfile.ZipFile(zipped) as archive:
                        for member in archive.infolist():
                            if not member.is_dir():
                                target = _safe_member(staging, member.filename)
                                target.parent.mkdir(parents=True, exist_ok=True)
                                with archive.open(member) as src, target.open("wb") as out:
                                    shutil.copyfileobj(src, out)
                    os.replace(staging, folder)
                finally:
                    zipped.unlink(missing_ok=True)
                    shutil.rmtree(staging, ignore_errors=True)
            return load_input(folder, media_type, kind)
        cached = store / sha256
        if not cached.exists():
            self.download_artifact(sha256, cached)
        return load_input(cached, media_type, kind)

    def download_artifact_zip(self, sha256: str, dest: Path) -> Path:
        """A directory artifact as the zip the server streams (its files are checked when
        extracted by zipfile's CRCs)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._save_stream(self._path("artifacts", sha256, "download", ""), dest, None, None)
        return dest


def _default_transport() -> httpx.BaseTransport:
    """httpx's default transport, whose CA bundle loads at the first https:// request rather
    than when the client is made (~20 ms that a plain-HTTP server never needs)."""
    import httpx

    class DeferredTLS(httpx.BaseTransport):
        def __init__(self) -> None:
            self._by_scheme: dict[str, httpx.HTTPTransport] = {}

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            scheme = request.url.scheme
            if scheme not in self._by_scheme:
                # verify=False only where no TLS can happen: a plain http:// connection.
                plain = {"verify": False} if scheme == "http" else {}
                self._by_scheme[scheme] = httpx.HTTPTransport(**plain)  # type: ignore[arg-type]
            return self._by_scheme[scheme].handle_request(request)

        def close(self) -> None:
            for transport in self._by_scheme.values():
                transport.close()

    return DeferredTLS()


def _newest(versions: list[dict[str, Any]], what: str) -> int:
    """The highest version number among `versions`; NotFoundError when there is none."""
    if not versions:
        raise NotFoundError(f"{what} has no versions")
    return max(int(v["number"]) for v in versions)


def _pipeline_file(source: Path) -> tuple[dict[str, Any], dict[str, tuple[Path, str, str]]]:
    """A pipeline file's spec, less the `entrypoint:` and `name:` of each step that names a
    module folder by path, and those steps: {step: (folder, module name, entrypoint)}."""
    import yaml

    spec = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not isinstance(spec.get("steps"), dict):
        raise ValidationError(f"{source}: a pipeline file has a `steps:` mapping")
    folders = {}
    for step_name, step in spec["steps"].items():
        module = step.get("module") if isinstance(step, dict) else None
        if not isinstance(module, str) or not module.startswith(("./", "../", "/")):
            continue
        folder = (source.parent / module).resolve()
        entrypoint = step.pop("entrypoint", None)
        if not entrypoint:
            raise ValidationError(
                f"{source}: step {step_name!r} names the folder {module}: give its "
                "`entrypoint: file.py:function` too"
            )
        folders[step_name] = (folder, step.pop("name", None) or folder.name, entrypoint)
    return spec, folders


def code_digest(files: Iterable[tuple[str, bytes]], entrypoint: str) -> str:
    """A module version's code digest, as the server computes it: sha256 over the sorted
    `relpath\\0sha256(bytes)` lines plus `entrypoint\\0<entrypoint>`."""
    lines = sorted(f"{rel}\0{hashlib.sha256(content).hexdigest()}" for rel, content in files)
    lines.append(f"entrypoint\0{entrypoint}")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of each regular file a push takes from `folder`: dotfiles,
    __pycache__ and symlinks are left out, as the server does for a folder it reads."""
    files = []
    for item in sorted(folder.rglob("*")):
        rel = item.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if item.is_file() and not item.is_symlink():
            files.append((rel.as_posix(), item))
    return files


def module_files(path: Path) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of a module folder or one file; dotfiles and __pycache__ are
    left out, as the server does for a folder it reads."""
    if not path.exists():
        raise ValidationError(f"{path} does not exist")
    if path.is_file():
        return [(path.name, path.read_bytes())]
    files = [(rel, item.read_bytes()) for rel, item in _folder_files(path)]
    if not files:
        raise ValidationError(f"{path} has no files")
    return files


def _zip_folder(folder: Path, handle: IO[bytes]) -> None:
    """A folder's files as a zip into `handle` (rewound after), the same bytes for the same
    files (sorted, fixed timestamps and modes): a dataset pushed twice is one version."""
    files = _folder_files(folder)
    if not files:
        raise ValidationError(f"{folder} has no files")
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, item in files:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with item.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    handle.seek(0)


def _plain_path(dest: Path, relative: str, ref: str) -> Path:
    """Where a module version's file goes under `dest`; ValidationError for a path that is
    absolute or climbs out of it (the worker refuses those too)."""
    path = PurePosixPath(relative)
    target = dest.joinpath(*path.parts)
    plain = not path.is_absolute() and bool(path.parts) and ".." not in path.parts
    if not plain or dest.resolve() not in target.resolve().parents:
        raise ValidationError(
            f"{ref} has a file {relative!r} whose path is absolute or leaves the folder: "
            "nothing was written"
        )
    return target


def files_diff(
    a_files: Mapping[str, str], b_files: Mapping[str, str], a_ref: str | None, b_ref: str
) -> list[dict[str, Any]]:
    """Pure: a unified diff per file that differs between two versions' {path: text}:
    [{"path", "status": added|removed|changed, "diff"}] (a side without it is /dev/null)."""
    import difflib

    out = []
    for path in sorted(set(a_files) | set(b_files)):
        before, after = a_files.get(path), b_files.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        lines = difflib.unified_diff(
            (before or "").splitlines(),
            (after or "").splitlines(),
            f"{a_ref}/{path}" if before is not None else "/dev/null",
            f"{b_ref}/{path}" if after is not None else "/dev/null",
            lineterm="",
        )
        out.append({"path": path, "status": status, "diff": "".join(f"{x}\n" for x in lines)})
    return out


def _extract_verified(archive_path: Path, dest: Path) -> dict[str, Any]:
    """Extract a run zip by its manifest, checking each file's sha256 and size."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as error:
        raise IntegrityError(f"the download is not a zip: {error}") from error
    with archive:
        try:
            manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
        except (KeyError, ValueError) as error:
            raise IntegrityError(f"the zip has no readable manifest.json: {error}") from error
        for row in manifest.get("files", []):
            target = _safe_member(dest, row["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            size = 0
            temp = target.with_name(f".{target.name}.part")
            try:
                with archive.open(row["path"]) as src, temp.open("wb") as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            except (KeyError, zipfile.BadZipFile) as error:
                temp.unlink(missing_ok=True)
                raise IntegrityError(f"{row['path']}: {error}") from error
            if digest.hexdigest() != row["sha256"] or size != row["size"]:
                temp.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{row['path']}: expected sha256 {row['sha256'][:12]} ({row['size']} "
                    f"bytes), got {digest.hexdigest()[:12]} ({size} bytes)"
                )
            os.replace(temp, target)
            row["local_path"] = str(target)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest
