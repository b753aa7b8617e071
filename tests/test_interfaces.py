"""Reading a step's interface from its source, statically (no database, no import)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipelines_app.interfaces import ParamError, coerce_param, inspect_module
from workspaces.errors import DomainError


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def inspect(source: str, extra_files: dict[str, str] | None = None) -> Any:
    return inspect_module({"step.py": src(source), **(extra_files or {})}, "step.py:run")


def rejection(files: dict[str, Any], entrypoint: str = "step.py:run", **kw: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        inspect_module(files, entrypoint, **kw)
    assert caught.value.code == "invalid_module"
    return caught.value


TRAIN = """
    from typing import Literal

    def run(ctx, features, labels, *, C: float = 1.0, seed: int = 0):
        return {"model": features, "report": labels}
"""


def test_first_param_is_context_positional_are_inputs_keyword_only_are_params() -> None:
    result = inspect(TRAIN)
    assert result.inputs == ["features", "labels"]
    assert result.outputs == ["model", "report"]
    assert result.params == {
        "C": {"type": "float", "required": False, "default": 1.0},
        "seed": {"type": "int", "required": False, "default": 0},
    }
    assert result.as_interface() == {
        "inputs": ["features", "labels"],
        "optional_inputs": [],
        "outputs": ["model", "report"],
        "params": result.params,
    }


@pytest.mark.parametrize(
    ("annotation", "default", "spec"),
    [
        ("int", "3", {"type": "int", "required": False, "default": 3}),
        ("float", "1", {"type": "float", "required": False, "default": 1.0}),
        ("str", "'adam'", {"type": "str", "required": False, "default": "adam"}),
        ("bool", "True", {"type": "bool", "required": False, "default": True}),
        (
            "Literal['a', 'b']",
            "'b'",
            {"type": "literal", "choices": ["a", "b"], "required": False, "default": "b"},
        ),
        (
            "typing.Literal[1, 2]",
            "1",
            {"type": "literal", "choices": [1, 2], "required": False, "default": 1},
        ),
        (
            "list[int]",
            "[1, 2]",
            {"type": "list", "items": "int", "required": False, "default": [1, 2]},
        ),
        ("list[list[int]]", "[]", {"type": "list", "required": False, "default": []}),
        (
            "dict[str, float]",
            "{'a': 1}",
            {"type": "dict", "items": "float", "required": False, "default": {"a": 1.0}},
        ),
        ("'int'", "-2", {"type": "int", "required": False, "default": -2}),
        ("int", None, {"type": "int", "required": True}),
        ("Literal['x']", None, {"type": "literal", "choices": ["x"], "required": True}),
    ],
)
def test_every_param_type_is_read_from_its_annotation(
    annotation: str, default: str | None, spec: dict[str, Any]
) -> None:
    tail = "" if default is None else f" = {default}"
    result = inspect(f"import typing\ndef run(ctx, *, p: {annotation}{tail}):\n    return {{}}\n")
    assert result.params == {"p": spec}


def test_unannotated_param_is_typed_by_its_literal_default() -> None:
    result = inspect("def run(ctx, *, seed=0, rate=0.5, name='x', on=False):\n    pass\n")
    assert {name: spec["type"] for name, spec in result.params.items()} == {
        "seed": "int",
        "rate": "float",
        "name": "str",
        "on": "bool",
    }


def test_positional_input_with_default_is_optional() -> None:
    result = inspect("def run(ctx, train, extra=None):\n    return {'out': train}\n")
    assert result.inputs == ["train", "extra"]
    assert result.optional_inputs == ["extra"]


def test_outputs_from_module_level_outputs_literal_win_over_returns() -> None:
    result = inspect("OUTPUTS = ('model', 'scores')\ndef run(ctx):\n    return make()\n")
    assert result.outputs == ["model", "scores"]


def test_outputs_are_keys_of_the_dict_literal_every_return_gives() -> None:
    result = inspect(
        """
        def run(ctx, x):
            def helper():
                return 42  # a nested function's return is not the step's
            if x:
                return {"a": 1, "b": 2}
            return {"b": 3, "a": 4}
        """
    )
    assert result.outputs == ["a", "b"]


def test_function_without_return_has_no_outputs() -> None:
    assert inspect("def run(ctx):\n    ctx.log('hi')\n").outputs == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("    return make()\n", "the return on line 2 is not a dict literal"),
        ("    return {**other}\n", "not a dict literal with text keys"),
        (
            "    if x:\n        return {'a': 1}\n    return {'b': 1}\n",
            "the return on line 4 gives ['b'], another gives ['a']",
        ),
        ("    if x:\n        return {'a': 1}\n    return\n", "the return on line 4"),
        ("    yield {'a': 1}\n", "is a generator"),
    ],
)
def test_undeterminable_outputs_need_an_explicit_interface(body: str, reason: str) -> None:
    error = rejection({"step.py": f"def run(ctx, x):\n{body}"})
    assert reason in error.fields["outputs"][0]


def test_outputs_not_a_literal_is_rejected() -> None:
    error = rejection({"step.py": "OUTPUTS = make()\ndef run(ctx):\n    pass\n"})
    assert error.fields["outputs"] == ["OUTPUTS must be a literal tuple or list of names"]


def test_imports_are_top_level_packages_and_unknown_ones_warn() -> None:
    result = inspect(
        """
        import os.path
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from . import sibling
        import helpers
        import torch.nn

        def run(ctx):
            import pandas
            from xgboost import XGBClassifier
        """,
        {"helpers.py": "X = 1\n"},
    )
    assert result.imports == ["numpy", "os", "pandas", "sklearn", "torch", "xgboost"]
    assert result.warnings == [
        "imports 'torch', which workers do not have",
        "imports 'xgboost', which workers do not have",
    ]


def test_imports_of_the_modules_own_package_are_not_external() -> None:
    files = {"step.py": "from lib.io import load\ndef run(ctx):\n    pass\n", "lib/io.py": "x=1\n"}
    assert inspect_module(files, "step.py:run").imports == []


def test_code_that_would_run_on_import_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = f"""
        open({str(marker)!r}, "w").write("executed")
        raise SystemExit(3)

        def run(ctx, *, n: int = 1):
            return {{"out": n}}
    """
    result = inspect(source)
    assert result.params["n"]["default"] == 1
    assert not marker.exists()


def test_every_file_problem_is_reported_at_once() -> None:
    error = rejection(
        {
            "step.py": "def run(ctx):\n    pass\n",
            "broken.py": "x = 1\ndef f(:\n",
            "empty.py": "   \n",
            "data.bin": "PK\x00\x03",
            "bad.txt": "caf\udce9",
            "/etc/passwd": "root",
            "../up.py": "x = 1",
            "a//b.py": "x = 1",
            "pkg/__init__.py": "",
        }
    )
    assert error.fields["files.broken.py"] == ["syntax error on line 2: invalid syntax"]
    assert error.fields["files.empty.py"] == ["is empty"]
    assert "binary file" in error.fields["files.data.bin"][0]
    assert error.fields["files.bad.txt"] == ["is not valid UTF-8 text"]
    assert "relative path" in error.fields["files./etc/passwd"][0]
    assert "no '..'" in error.fields["files.../up.py"][0]
    assert "no '..'" in error.fields["files.a//b.py"][0]
    assert "files.pkg/__init__.py" not in error.fields  # an empty __init__.py is normal
    assert error.message == "The module has 7 problems."


def test_no_files_is_rejected() -> None:
    assert rejection({}).fields["files"] == ["no files were given"]


@pytest.mark.parametrize(
    ("entrypoint", "reason"),
    [
        ("step.py", "expected 'file.py:function', got 'step.py'"),
        ("step:run", "expected 'file.py:function'"),
        ("step.py:run-it", "expected 'file.py:function'"),
        ("other.py:run", "no file 'other.py' among the module's files"),
        ("step.py:missing", "no top-level function 'missing' in the entry file"),
        ("step.py:Model", "'Model' is a class, not a function"),
        ("step.py:RATE", "'RATE' is a variable, not a function"),
        ("step.py:coro", "'coro' is async; a step is a plain function"),
    ],
)
def test_entrypoint_problems(entrypoint: str, reason: str) -> None:
    source = "RATE = 1\nclass Model:\n    pass\nasync def coro(ctx):\n    pass\n"
    error = rejection({"step.py": source}, entrypoint)
    assert error.fields["entrypoint"][0].startswith(reason)


def test_syntax_error_in_entry_file_gives_its_line() -> None:
    error = rejection({"step.py": "def run(ctx):\n    return {\n"})
    assert error.fields["files.step.py"][0].startswith("syntax error on line 2")


@pytest.mark.parametrize(
    ("signature", "field", "reason"),
    [
        ("ctx, *, p: complex = 1", "params.p", "unsupported annotation 'complex'"),
        ("ctx, *, p: int | None = None", "params.p", "unsupported annotation 'int | None'"),
        ("ctx, *, p: dict[int, str] = {}", "params.p", "dict keys must be str"),
        ("ctx, *, p", "params.p", "needs an annotation"),
        ("ctx, *, p: int = 'a'", "params.p", "the default does not match its type"),
        ("ctx, *, p: bool = 1", "params.p", "expected bool, got 1"),
        ("ctx, *, p: int = make()", "params.p", "the default 'make()' is not a literal"),
        ("ctx, *, p: Literal['a'] = 'z'", "params.p", "expected one of 'a', got 'z'"),
        ("", "entrypoint", "must take the step context as its first parameter"),
        ("ctx, *rows", "entrypoint", "takes *rows: inputs must be named"),
        ("ctx, **params", "entrypoint", "takes **params: declare its params"),
    ],
)
def test_signature_problems(signature: str, field: str, reason: str) -> None:
    source = f"from typing import Literal\ndef run({signature}):\n    pass\n"
    error = rejection({"step.py": source})
    assert reason in error.fields[field][0]


def test_explicit_interface_replaces_what_the_code_cannot_say() -> None:
    source = "def run(ctx, **kwargs):\n    return build(kwargs)\n"
    interface = {
        "inputs": ["train"],
        "outputs": ["model"],
        "params": {
            "depth": {"type": "int", "default": 3},
            "mode": {"type": "literal", "choices": ["a", "b"]},
        },
    }
    result = inspect_module({"step.py": source}, "step.py:run", interface)
    assert result.as_interface() == {
        "inputs": ["train"],
        "optional_inputs": [],
        "outputs": ["model"],
        "params": {
            "depth": {"type": "int", "required": False, "default": 3},
            "mode": {"type": "literal", "choices": ["a", "b"], "required": True},
        },
    }


def test_explicit_interface_shape_is_validated() -> None:
    interface = {
        "inputs": "train",
        "outputs": ["a.b"],
        "params": {"p": {"type": "complex"}, "q": {"type": "int", "default": "x"}},
        "extra": 1,
    }
    error = rejection({"step.py": "def run(ctx):\n    pass\n"}, interface=interface)
    assert error.fields["interface"] == ["unknown keys: extra"]
    assert error.fields["interface.inputs"] == ["expected a list of names"]
    assert "'a.b' is not a valid name" in error.fields["interface.outputs"][0]
    assert "type must be one of" in error.fields["interface.params.p"][0]
    assert "expected int, got 'x'" in error.fields["interface.params.q"][0]


def test_explicit_interface_still_needs_the_function() -> None:
    error = rejection({"step.py": "x = 1\n"}, interface={"inputs": [], "outputs": []})
    assert error.fields["entrypoint"] == ["no top-level function 'run' in the entry file"]


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"type": "int"}, 3, 3),
        ({"type": "float"}, 3, 3.0),
        ({"type": "float"}, 2.5, 2.5),
        ({"type": "bool"}, False, False),
        ({"type": "str"}, "x", "x"),
        ({"type": "literal", "choices": ["a", 1]}, 1, 1),
        ({"type": "literal", "choices": [0.5, 1.0]}, 1, 1.0),
        ({"type": "list", "items": "float"}, [1, 2.5], [1.0, 2.5]),
        ({"type": "list"}, [1, "a", {"b": None}], [1, "a", {"b": None}]),
        ({"type": "dict", "items": "int"}, {"a": 1}, {"a": 1}),
    ],
)
def test_coerce_param_accepts_and_normalises(
    spec: dict[str, Any], value: Any, expected: Any
) -> None:
    result = coerce_param(spec, value, "p")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("spec", "value", "path", "reason"),
    [
        ({"type": "int"}, True, "p", "expected int, got True"),
        ({"type": "int"}, 1.5, "p", "expected int, got 1.5"),
        ({"type": "float"}, "1", "p", "expected float, got '1'"),
        ({"type": "float"}, float("nan"), "p", "expected a finite float, got nan"),
        ({"type": "bool"}, 1, "p", "expected bool, got 1"),
        ({"type": "str"}, 5, "p", "expected str, got 5"),
        ({"type": "literal", "choices": [1, 2]}, True, "p", "expected one of 1, 2, got True"),
        ({"type": "list", "items": "int"}, [1, "x"], "p.1", "expected int, got 'x'"),
        ({"type": "list"}, "abc", "p", "expected a list, got 'abc'"),
        ({"type": "dict", "items": "str"}, {"k": 1}, "p.k", "expected str, got 1"),
        ({"type": "dict"}, [1], "p", "expected a mapping, got [1]"),
    ],
)
def test_coerce_param_rejects_with_a_located_reason(
    spec: dict[str, Any], value: Any, path: str, reason: str
) -> None:
    with pytest.raises(ParamError) as caught:
        coerce_param(spec, value, "p")
    assert (caught.value.path, caught.value.reason) == (path, reason)
    assert isinstance(caught.value, ValueError)
