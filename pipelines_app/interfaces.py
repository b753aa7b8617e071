"""Read a module version's interface from its source with `ast`, never by importing it.

The web process never runs user code (DESIGN.md), so everything here is static: the
entrypoint `file.py:function` names a top-level function whose first parameter is the step
context, whose other positional parameters are inputs and whose keyword-only parameters are
params, typed by annotation. Outputs come from a module-level `OUTPUTS = (...)` literal or
from the keys of the dict literal every `return` gives back. When the code says too little
(`**kwargs`, computed outputs), the pusher gives an explicit interface instead.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from workspaces.errors import Problems

PARAM_TYPES = ("int", "float", "str", "bool", "literal", "list", "dict")
SIMPLE_TYPES = frozenset({"int", "float", "str", "bool"})
SUPPORTED_ANNOTATIONS = "int, float, str, bool, Literal[...], list[...] or dict[str, ...]"

# What a worker can import besides the standard library: `stepworks`, the `steps` extra and
# the runtime dependencies of pyproject.toml, as import names (keep in sync with it).
STEP_PACKAGES = frozenset(
    {"numpy", "pandas", "pyarrow", "scipy", "sklearn", "plotly", "matplotlib"}
)
RUNTIME_PACKAGES = frozenset(
    {
        "django",
        "rest_framework",
        "drf_spectacular",
        "drf_spectacular_sidecar",
        "django_filters",
        "environ",
        "dramatiq",
        "django_dramatiq",
        "psycopg",
        "django_htmx",
        "template_partials",
        "whitenoise",
        "gunicorn",
        "nh3",
        "zipstream",
        "storages",
        "yaml",
        "typer",
        "rich",
        "httpx",
    }
)
WORKER_IMPORTABLE = (
    frozenset(sys.stdlib_module_names) | STEP_PACKAGES | RUNTIME_PACKAGES | {"stepworks"}
)

ENTRYPOINT_RE = re.compile(r"^(?P<file>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
# Inputs and outputs are bound as `step.output`, so their names are plain identifiers.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INTERFACE_KEYS = frozenset({"inputs", "optional_inputs", "outputs", "params"})
PARAM_SPEC_KEYS = frozenset({"type", "required", "default", "choices", "items"})


# What `ast.literal_eval` raises on a node that is not a plain literal ({[]: 1} is a TypeError).
LITERAL_ERRORS = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


class ParamError(ValueError):
    """A param value that does not fit its declared type; `path` locates it (`hidden.2`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ModuleInspection:
    """What a module version declares, plus what it imports and what workers would lack."""

    inputs: list[str]
    outputs: list[str]
    params: dict[str, dict[str, Any]]
    imports: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Positional parameters with a default: inputs a spec may leave unbound.
    optional_inputs: list[str] = field(default_factory=list)

    def as_interface(self) -> dict[str, Any]:
        """The JSON stored in `ModuleVersion.interface`."""
        return {
            "inputs": list(self.inputs),
            "optional_inputs": list(self.optional_inputs),
            "outputs": list(self.outputs),
            "params": {name: dict(spec) for name, spec in self.params.items()},
        }


# --- params: coercion -------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_json_data(value: Any, path: str) -> Any:
    """Untyped list/dict contents must still be JSON (they are hashed into the cache key)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamError(path, f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, list | tuple):
        return [_check_json_data(item, f"{path}.{index}") for index, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamError(path, f"keys must be text, got {_describe(key)}")
            out[key] = _check_json_data(item, f"{path}.{key}")
        return out
    raise ParamError(path, f"expected JSON data, got a {_type_name(value)}")


def _fits(kind: str, value: Any) -> bool:
    if isinstance(value, bool):  # bool is an int subclass; only a bool param takes one
        return kind == "bool"
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    return kind == "str" and isinstance(value, str)


def _coerce_scalar(kind: str, value: Any, path: str) -> Any:
    if not _fits(kind, value):
        raise ParamError(path, f"expected {kind}, got {_describe(value)}")
    if kind != "float":
        return value
    if not math.isfinite(value):
        raise ParamError(path, f"expected a finite float, got {value!r}")
    return float(value)


def _coerce_literal(choices: list[Any], value: Any, path: str) -> Any:
    for choice in choices:
        # `True == 1` and `1 == 1.0` in Python; a choice matches only a value of its own kind.
        same_kind = type(choice) is type(value) or (
            isinstance(choice, float) and isinstance(value, int) and not isinstance(value, bool)
        )
        if same_kind and choice == value:
            return choice
    options = ", ".join(repr(choice) for choice in choices)
    raise ParamError(path, f"expected one of {options}, got {_describe(value)}")


def _coerce_items(items: str | None, values: Any, path: str) -> Any:
    if items is None:
        return _check_json_data(values, path)
    return _coerce_scalar(items, values, path)


def coerce_param(spec: dict[str, Any], value: Any, path: str) -> Any:
    """`value` checked against a param spec and coerced to its type (int -> float for floats).

    Raises ParamError (a ValueError) whose `path` is `path` or a part of it (`path.2`).
    """
    kind = spec.get("type")
    if kind in SIMPLE_TYPES:
        return _coerce_scalar(str(kind), value, path)
    if kind == "literal":
        return _coerce_literal(list(spec.get("choices", [])), value, path)
    items = spec.get("items")
    if kind == "list":
        if not isinstance(value, list | tuple):
            raise ParamError(path, f"expected a list, got {_describe(value)}")
        return [_coerce_items(items, item, f"{path}.{i}") for i, item in enumerate(value)]
    if kind == "dict":
        if not isinstance(value, dict):
            raise ParamError(path, f"expected a mapping, got {_describe(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamError(path, f"keys must be text, got {_describe(key)}")
            out[key] = _coerce_items(items, item, f"{path}.{key}")
        return out
    raise ParamError(path, f"unknown param type {kind!r}")


# --- files ------------------------------------------------------------------------------------


def _path_problem(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return "a file path must be non-empty text"
    if path.startswith("/") or "\\" in path or ":" in path or "\x00" in path:
        return "must be a relative path with forward slashes (no '/', '\\' or ':' prefix)"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "must be a normal relative path (no '..', '.' or empty parts)"
    return None


def _content_problem(path: str, source: Any) -> str | None:
    if not isinstance(source, str):
        return f"must be text, got {_type_name(source)}"
    if "\x00" in source:
        return "is a binary file (contains NUL bytes); only text files are accepted"
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes smuggled in with surrogateescape
        return "is not valid UTF-8 text"
    # An empty __init__.py is how a package is marked; any other empty file is a mistake.
    if not source.strip() and PurePosixPath(path).name != "__init__.py":
        return "is empty"
    return None


def _parse_python_files(files: dict[str, str], problems: Problems) -> dict[str, ast.Module]:
    """Every readable .py file parsed; a syntax error anywhere fails the push (with its line)."""
    trees: dict[str, ast.Module] = {}
    if not files:
        problems.add("files", "no files were given")
        return trees
    for path, source in files.items():
        problem = _path_problem(path) or _content_problem(path, source)
        if problem is not None:
            problems.add(f"files.{path}", problem)
            continue
        if not path.endswith(".py"):
            continue
        try:
            trees[path] = ast.parse(source, filename=path)
        except SyntaxError as exc:
            problems.add(f"files.{path}", f"syntax error on line {exc.lineno}: {exc.msg}")
        except (RecursionError, MemoryError):
            problems.add(f"files.{path}", "is nested too deeply to be read")
    return trees


# --- imports ----------------------------------------------------------------------------------


def _local_names(files: dict[str, str], entry_file: str | None) -> set[str]:
    """Names an import may resolve to inside the module itself (its files and packages)."""
    names: set[str] = set()
    entry_dir = str(PurePosixPath(entry_file).parent) if entry_file else "."
    for path in files:
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        pure = PurePosixPath(path)
        names.add(pure.parts[0].removesuffix(".py"))
        if str(pure.parent) == entry_dir:  # siblings of the entry file import by bare name
            names.add(pure.stem)
    return names


def _imported_packages(trees: dict[str, ast.Module]) -> set[str]:
    """Top-level package names of every absolute import, at any depth of the code.

    Imports inside functions count too: they decide which warm interpreter a step needs.
    """
    found: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _imports_and_warnings(
    files: dict[str, str], trees: dict[str, ast.Module], entry_file: str | None
) -> tuple[list[str], list[str]]:
    imports = sorted(_imported_packages(trees) - _local_names(files, entry_file))
    warnings = [
        f"imports {name!r}, which workers do not have"
        for name in imports
        if name not in WORKER_IMPORTABLE
    ]
    return imports, warnings


# --- the entrypoint ---------------------------------------------------------------------------


def _bound_kind(node: ast.stmt, name: str) -> str | None:
    """What a top-level statement binds `name` to, if it binds it at all."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
        return "function"
    if isinstance(node, ast.ClassDef) and node.name == name:
        return "a class"
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(target)):
                return "a variable"
    if isinstance(node, ast.Import | ast.ImportFrom):
        for alias in node.names:
            if (alias.asname or alias.name.split(".")[0]) == name:
                return "an imported name"
    return None


def _find_function(tree: ast.Module, function: str, problems: Problems) -> ast.FunctionDef | None:
    """The top-level def the entrypoint names; the last binding wins, as at import time."""
    last: ast.stmt | None = None
    kind: str | None = None
    for node in tree.body:
        bound = _bound_kind(node, function)
        if bound is not None:
            last, kind = node, bound
    if last is None:
        problems.add("entrypoint", f"no top-level function {function!r} in the entry file")
        return None
    if isinstance(last, ast.AsyncFunctionDef):
        problems.add("entrypoint", f"{function!r} is async; a step is a plain function")
        return None
    if not isinstance(last, ast.FunctionDef):
        problems.add("entrypoint", f"{function!r} is {kind}, not a function")
        return None
    return last


def _split_entrypoint(
    entrypoint: Any, files: dict[str, str], problems: Problems
) -> tuple[str, str] | None:
    match = ENTRYPOINT_RE.match(entrypoint) if isinstance(entrypoint, str) else None
    if match is None:
        problems.add("entrypoint", f"expected 'file.py:function', got {_describe(entrypoint)}")
        return None
    entry_file, function = match["file"], match["function"]
    if entry_file not in files:
        problems.add("entrypoint", f"no file {entry_file!r} among the module's files")
        return None
    return entry_file, function


# --- params from the signature ----------------------------------------------------------------


class _Unsupported(Exception):
    pass


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _subscript_args(node: ast.Subscript) -> list[ast.expr]:
    return list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]


def _literal_choices(args: list[ast.expr]) -> list[Any]:
    choices = []
    for arg in args:
        try:
            value = ast.literal_eval(arg)
        except LITERAL_ERRORS as exc:
            raise _Unsupported("Literal[...] choices must be literals") from exc
        if not isinstance(value, str | int | float | bool):
            raise _Unsupported("Literal[...] choices must be str, int, float or bool")
        choices.append(value)
    return choices


def _container_spec(kind: str, inner: ast.expr) -> dict[str, Any]:
    inner_spec = _annotation_spec(inner)  # must itself be supported
    spec: dict[str, Any] = {"type": kind}
    if inner_spec["type"] in SIMPLE_TYPES:
        spec["items"] = inner_spec["type"]
    return spec


def _annotation_spec(node: ast.expr) -> dict[str, Any]:
    """A param spec ({"type", "choices"?, "items"?}) from an annotation, or _Unsupported."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # x: "int"
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError as exc:
            raise _Unsupported("the annotation is not valid Python") from exc
    name = _dotted(node)
    if name in SIMPLE_TYPES:
        return {"type": name}
    if name in ("list", "List", "typing.List"):
        return {"type": "list"}
    if name in ("dict", "Dict", "typing.Dict"):
        return {"type": "dict"}
    if isinstance(node, ast.Subscript):
        base = _dotted(node.value) or ""
        args = _subscript_args(node)
        if base.split(".")[-1] == "Literal":
            return {"type": "literal", "choices": _literal_choices(args)}
        if base in ("list", "List", "typing.List") and len(args) == 1:
            return _container_spec("list", args[0])
        if base in ("dict", "Dict", "typing.Dict") and len(args) == 2:
            if _dotted(args[0]) != "str":
                raise _Unsupported("dict keys must be str (params are JSON)")
            return _container_spec("dict", args[1])
    raise _Unsupported(f"unsupported annotation {ast.unparse(node)!r}")


def _spec_from_default(value: Any) -> dict[str, Any]:
    """An unannotated param is typed by its literal default (`*, seed=0` is an int)."""
    for kind, python_type in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, python_type):
            return {"type": kind}
    if isinstance(value, list | tuple):
        return {"type": "list"}
    if isinstance(value, dict):
        return {"type": "dict"}
    raise _Unsupported("needs an annotation")


def _param_spec(arg: ast.arg, default: ast.expr | None, path: str, problems: Problems) -> Any:
    value: Any = None
    if default is not None:
        try:
            value = ast.literal_eval(default)
        except LITERAL_ERRORS:
            problems.add(path, f"the default {ast.unparse(default)!r} is not a literal")
            return None
    try:
        if arg.annotation is not None:
            spec = _annotation_spec(arg.annotation)
        elif default is not None:
            spec = _spec_from_default(value)
        else:
            raise _Unsupported("needs an annotation")
    except _Unsupported as exc:
        problems.add(path, f"{exc}; supported: {SUPPORTED_ANNOTATIONS}")
        return None
    if default is None:
        return {**spec, "required": True}
    try:
        coerced = coerce_param(spec, value, path)
    except ParamError as exc:
        problems.add(path, f"the default does not match its type: {exc.reason}")
        return None
    return {**spec, "required": False, "default": coerced}


def _signature(
    function: ast.FunctionDef, problems: Problems
) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(inputs, optional inputs, params) read from the entrypoint's parameters."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    name = function.name
    if not positional:
        problems.add("entrypoint", f"{name!r} must take the step context as its first parameter")
    if args.vararg is not None:
        problems.add("entrypoint", f"{name!r} takes *{args.vararg.arg}: inputs must be named")
    if args.kwarg is not None:
        problems.add(
            "entrypoint",
            f"{name!r} takes **{args.kwarg.arg}: declare its params or give an explicit interface",
        )
    for arg in args.posonlyargs[1:]:
        problems.add("entrypoint", f"input {arg.arg!r} is positional-only; inputs go by name")
    # Defaults align with the last positional parameters; those inputs may stay unbound.
    first_optional = len(positional) - len(args.defaults)
    inputs = [arg.arg for arg in positional[1:]]
    optional = [arg.arg for index, arg in enumerate(positional) if index >= max(first_optional, 1)]
    params: dict[str, dict[str, Any]] = {}
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        spec = _param_spec(arg, default, f"params.{arg.arg}", problems)
        if spec is not None:
            params[arg.arg] = spec
    return inputs, optional, params


# --- outputs ----------------------------------------------------------------------------------


def _outputs_value(node: ast.stmt) -> ast.expr | None:
    """The value a top-level statement assigns to OUTPUTS, if it does."""
    if isinstance(node, ast.Assign):
        named = any(isinstance(t, ast.Name) and t.id == "OUTPUTS" for t in node.targets)
        return node.value if named else None
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.value if node.target.id == "OUTPUTS" else None
    return None


def _declared_outputs(tree: ast.Module, problems: Problems) -> list[str] | None:
    """A module-level `OUTPUTS = ("a", "b")`, if there is one (the last assignment wins)."""
    value: ast.expr | None = None
    for node in tree.body:
        value = _outputs_value(node) or value
    if value is None:
        return None
    try:
        outputs = ast.literal_eval(value)
    except LITERAL_ERRORS:
        outputs = None
    if not isinstance(outputs, tuple | list) or not all(isinstance(o, str) for o in outputs):
        problems.add("outputs", "OUTPUTS must be a literal tuple or list of names")
        return []
    return list(outputs)


def _returns(function: ast.FunctionDef) -> tuple[list[ast.Return], bool]:
    """The function's own return statements (not nested defs') and whether it yields."""
    found: list[ast.Return] = []
    yields = False
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Return):
            found.append(node)
        elif isinstance(node, ast.Yield | ast.YieldFrom):
            yields = True
        stack.extend(ast.iter_child_nodes(node))
    return sorted(found, key=lambda node: (node.lineno, node.col_offset)), yields


def _return_keys(node: ast.Return) -> list[str] | None:
    if not isinstance(node.value, ast.Dict):
        return None
    keys = []
    for key in node.value.keys:
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None  # `**other` or a computed key
        keys.append(key.value)
    return keys


def _returned_outputs(function: ast.FunctionDef, problems: Problems) -> list[str]:
    """Outputs from the dict literal every `return` gives; none at all means no outputs."""
    returns, yields = _returns(function)
    if yields:
        problems.add("outputs", f"{function.name!r} is a generator; a step returns a dict")
        return []
    valued = [
        node
        for node in returns
        if node.value is not None
        and not (isinstance(node.value, ast.Constant) and node.value.value is None)
    ]
    if not valued:
        return []
    outputs: list[str] | None = None
    for node in returns:
        keys = _return_keys(node)
        if keys is None:
            problems.add(
                "outputs",
                f"the return on line {node.lineno} is not a dict literal with text keys; "
                "declare OUTPUTS = (...) or give an explicit interface",
            )
            return []
        if outputs is not None and set(keys) != set(outputs):
            problems.add(
                "outputs",
                f"the return on line {node.lineno} gives {sorted(keys)}, another gives "
                f"{sorted(outputs)}; declare OUTPUTS = (...) or give an explicit interface",
            )
            return []
        outputs = outputs if outputs is not None else keys
    return outputs or []


def _check_names(names: list[str], path: str, problems: Problems) -> None:
    for name in names:
        if not NAME_RE.match(name):
            problems.add(path, f"{name!r} is not a valid name (letters, digits and '_')")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.add(path, f"names appear twice: {', '.join(duplicates)}")


# --- explicit interfaces ----------------------------------------------------------------------


def _explicit_param(name: str, raw: Any, problems: Problems) -> dict[str, Any] | None:
    path = f"interface.params.{name}"
    if not isinstance(raw, dict):
        problems.add(path, "expected a mapping with a 'type'")
        return None
    unknown = sorted(set(raw) - PARAM_SPEC_KEYS)
    if unknown:
        problems.add(path, f"unknown keys: {', '.join(map(str, unknown))}")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        problems.add(path, f"type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
        return None
    spec: dict[str, Any] = {"type": kind}
    if kind == "literal":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            problems.add(path, "a literal param needs a non-empty list of choices")
            return None
        spec["choices"] = choices
    if kind in ("list", "dict") and raw.get("items") is not None:
        if raw["items"] not in SIMPLE_TYPES:
            problems.add(path, f"items must be one of {', '.join(sorted(SIMPLE_TYPES))}")
            return None
        spec["items"] = raw["items"]
    return _explicit_default(spec, raw, path, problems)


def _explicit_default(
    spec: dict[str, Any], raw: dict[str, Any], path: str, problems: Problems
) -> dict[str, Any] | None:
    required = raw.get("required", "default" not in raw)
    if not isinstance(required, bool) or (required and "default" in raw):
        problems.add(path, "'required' must be a bool, and a required param has no default")
        return None
    if required:
        return {**spec, "required": True}
    if "default" not in raw:
        problems.add(path, "a param that is not required needs a default")
        return None
    try:
        default = coerce_param(spec, raw["default"], path)
    except ParamError as exc:
        problems.add(path, f"the default does not match its type: {exc.reason}")
        return None
    return {**spec, "required": False, "default": default}


def _name_list(interface: dict[str, Any], key: str, problems: Problems) -> list[str]:
    names = interface.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.add(f"interface.{key}", "expected a list of names")
        return []
    _check_names(names, f"interface.{key}", problems)
    return list(names)


def _explicit_interface(
    interface: Any, problems: Problems
) -> tuple[list[str], list[str], list[str], dict[str, dict[str, Any]]]:
    """(inputs, optional inputs, outputs, params) of an explicit interface, shape-checked."""
    if not isinstance(interface, dict):
        problems.add("interface", "expected a mapping with inputs, outputs and params")
        return [], [], [], {}
    unknown = sorted(map(str, set(interface) - INTERFACE_KEYS))
    if unknown:
        problems.add("interface", f"unknown keys: {', '.join(unknown)}")
    inputs = _name_list(interface, "inputs", problems)
    optional = _name_list(interface, "optional_inputs", problems)
    if set(optional) - set(inputs):
        problems.add("interface.optional_inputs", "every optional input must be in inputs")
    outputs = _name_list(interface, "outputs", problems)
    raw_params = interface.get("params", {})
    params: dict[str, dict[str, Any]] = {}
    if not isinstance(raw_params, dict):
        problems.add("interface.params", "expected a mapping of name -> {type, default}")
        raw_params = {}
    for name, raw in raw_params.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.add("interface.params", f"{name!r} is not a valid param name")
            continue
        spec = _explicit_param(name, raw, problems)
        if spec is not None:
            params[name] = spec
    return inputs, optional, outputs, params


# --- the whole inspection ---------------------------------------------------------------------


def inspect_module(
    files: dict[str, str], entrypoint: str, interface: dict[str, Any] | None = None
) -> ModuleInspection:
    """Inspect a module's files statically; raise DomainError("invalid_module") listing
    every problem. With `interface`, the signature and returns are not read (the explicit
    interface is what the code cannot say), but the entrypoint must still exist."""
    problems = Problems()
    if not isinstance(files, dict):
        problems.add("files", "expected a mapping of path -> text")
        problems.raise_if_any("invalid_module", "module")
    trees = _parse_python_files(files, problems)
    located = _split_entrypoint(entrypoint, files, problems)
    entry_file = located[0] if located else None
    imports, warnings = _imports_and_warnings(files, trees, entry_file)
    function = None
    if located is not None and located[0] in trees:
        function = _find_function(trees[located[0]], located[1], problems)
    if interface is not None:
        inputs, optional, outputs, params = _explicit_interface(interface, problems)
        problems.raise_if_any("invalid_module", "module")
        return ModuleInspection(inputs, outputs, params, imports, warnings, optional)
    inputs, optional, params, outputs = [], [], {}, []
    if function is not None and entry_file is not None:
        inputs, optional, params = _signature(function, problems)
        declared = _declared_outputs(trees[entry_file], problems)
        outputs = declared if declared is not None else _returned_outputs(function, problems)
        _check_names(outputs, "outputs", problems)
        if function.decorator_list:
            warnings.append(f"{function.name!r} is decorated; its interface is read as written")
    problems.raise_if_any("invalid_module", "module")
    return ModuleInspection(inputs, outputs, params, imports, warnings, optional)
