"""Forms of the pages: params per step (run, clone a run with changes) and the spec editor.

Values are typed as the CLI types them: text that parses as JSON is that value (`128`,
`0.5`, `true`, `"x"`), anything else is the text itself. The services validate; their
DomainError fields (`params.train.hidden`, `steps.train.params.hidden`) are put back next
to the field they name.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

MODULE_FIELD = "__module"


def parse_value(text: str) -> Any:
    """`128` -> 128, `0.5` -> 0.5, `true` -> True, `[1, 2]` -> [1, 2], `adam` -> "adam"."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def show_value(value: Any) -> str:
    """The text a field shows for a value (strings bare, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


class StepParamsForm(forms.Form):
    """One text field per `step.param`, prefilled with its value; optionally a module
    choice per step. `steps` is [{"name", "params": {name: value}, "module": ref,
    "module_choices": [ref, ...]}]."""

    def __init__(
        self, steps: list[dict[str, Any]], *args: Any, with_modules: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.steps = steps
        self.with_modules = with_modules
        for step in steps:
            if with_modules:
                choices = [(ref, ref) for ref in step.get("module_choices") or [step["module"]]]
                self.fields[f"{step['name']}.{MODULE_FIELD}"] = forms.ChoiceField(
                    label=f"{step['name']} module", choices=choices, initial=step["module"]
                )
            for param, value in sorted(step["params"].items()):
                self.fields[f"{step['name']}.{param}"] = forms.CharField(
                    label=param, required=False, initial=show_value(value), strip=True
                )

    def step_fields(self) -> list[dict[str, Any]]:
        """The bound fields grouped by step, for the template."""
        groups = []
        for step in self.steps:
            module = self[f"{step['name']}.{MODULE_FIELD}"] if self.with_modules else None
            params = [self[f"{step['name']}.{param}"] for param in sorted(step["params"])]
            groups.append({"name": step["name"], "module": module, "params": params})
        return groups

    def changed_params(self) -> dict[str, dict[str, Any]]:
        """{step: {param: new value}} for the params whose value differs from the step's."""
        changed: dict[str, dict[str, Any]] = {}
        for step in self.steps:
            for param, current in step["params"].items():
                raw = self.cleaned_data.get(f"{step['name']}.{param}", "")
                if raw == "" and current is not None:
                    continue  # an emptied field keeps the value
                value = parse_value(raw)
                if value != current:
                    changed.setdefault(step["name"], {})[param] = value
        return changed

    def changed_modules(self) -> dict[str, str]:
        if not self.with_modules:
            return {}
        return {
            step["name"]: self.cleaned_data[f"{step['name']}.{MODULE_FIELD}"]
            for step in self.steps
            if self.cleaned_data.get(f"{step['name']}.{MODULE_FIELD}") != step["module"]
        }

    def add_domain_errors(self, fields: dict[str, list[str]]) -> None:
        """Put a DomainError's reasons next to the field each path names; the rest on top."""
        for path, reasons in fields.items():
            parts = path.split(".")
            if parts[0] in ("params", "steps"):
                parts = parts[1:]
            if parts[1:2] == ["params"]:
                parts = [parts[0], *parts[2:]]
            if parts[1:2] == ["module"]:
                parts = [parts[0], MODULE_FIELD]
            name = ".".join(parts[:2])
            for reason in reasons:
                self.add_error(name if name in self.fields else None, f"{path}: {reason}")


class RunForm(StepParamsForm):
    """Start a run of a pipeline version with param overrides."""

    def __init__(self, steps: list[dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        super().__init__(steps, *args, **kwargs)
        self.fields["reuse"] = forms.BooleanField(
            label="Reuse steps whose code, params and inputs did not change",
            required=False,
            initial=True,
        )

    def overrides(self) -> dict[str, Any]:
        return {
            f"{step}.{param}": value
            for step, params in self.changed_params().items()
            for param, value in params.items()
        }


class SpecForm(forms.Form):
    """Clone a pipeline version and edit its spec (YAML or JSON)."""

    spec = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "class": "mono"}),
        strip=False,
    )
    message = forms.CharField(max_length=500, required=False)

    def add_domain_errors(self, fields: dict[str, list[str]]) -> None:
        for path, reasons in fields.items():
            target = (
                "message" if path == "message" else "spec" if path != "non_field_errors" else None
            )
            for reason in reasons:
                self.add_error(target, f"{path}: {reason}")


class DatasetUploadForm(forms.Form):
    """A file as a dataset's next version. Its size was checked by the request's
    Content-Length before the body was read (runs_app.dataset_views)."""

    name = forms.SlugField(max_length=100, help_text="The dataset (made on its first upload).")
    file = forms.FileField()
    media_type = forms.RegexField(
        r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(;.*)?$",
        max_length=100,
        required=False,
        help_text="Guessed from the file's name when left empty (text/csv, ...).",
    )
    message = forms.CharField(required=False, max_length=2000, help_text="What changed.")
