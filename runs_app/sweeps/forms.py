"""Forms of the sweep pages: create a sweep, extend an axis, pick a variant to promote.

The forms only parse what a person typed (labels, module choices, `name=value` lines) into
what runs_app.services takes; the services check everything else. A DomainError's field
paths (`axes.train.1.module`, `variant.params.C`) are put back next to the input they name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django import forms

from pipelines_app.forms import parse_value, show_value
from runs_app.sweeps import stats

SLOT_FIELDS = ("label", "module", "params")
DEFAULT_SLOTS = 3
MORE_SLOTS = 2  # rows per step the form's "More variant rows" button adds
MAX_SLOTS = 12
MAX_REPLICATES = 1000
# Int params that read as seeds: ticked by default as the replicates' seed params.
SEED_NAMES = ("seed", "random_state", "random_seed")


def grouped_module_choices(refs: Iterable[str], blank: str) -> list[Any]:
    """A select's choices: `blank` first, then each module's versions as an optgroup."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for ref in refs:
        groups.setdefault(ref.partition("@")[0], []).append((ref, ref))
    return [("", blank), *groups.items()]


def parse_params_text(text: str) -> tuple[dict[str, Any], list[str]]:
    """`name=value` lines -> ({name: value}, problems). Values parse as JSON when they can
    (`0.5`, `true`, `[1, 2]`), else stay text; blank lines and `#` comments are skipped."""
    params: dict[str, Any] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"line {number}: write name=value, got {line!r}")
        elif name in params:
            problems.append(f"line {number}: {name!r} is set twice")
        else:
            params[name] = parse_value(value.strip())
    return params, problems


def params_text(params: Mapping[str, Any]) -> str:
    """The inverse of parse_params_text, for showing a variant's params."""
    return "\n".join(f"{name}={show_value(value)}" for name, value in params.items())


def _auto_label(ref: str, step: str, taken: set[str]) -> str:
    """A label for a variant given only a module: `train_rf@2` on step `train` -> `rf`
    (then `rf-2`, ... when taken)."""
    name, _, number = ref.partition("@")
    label = name.removeprefix(f"{step}_") or name
    label = label[:60]
    return label if label not in taken else f"{label}-{number}"


def _choice_field(form: forms.Form, name: str) -> forms.ChoiceField:
    field = form.fields[name]
    assert isinstance(field, forms.ChoiceField)
    return field


class _DomainErrorsMixin:
    """Put DomainError reasons on the fields their paths name; the rest go on top."""

    def _put(self, path: str, field: str | None, reasons: Sequence[str]) -> None:
        form: Any = self
        target = field if field in form.fields else None
        for reason in reasons:
            form.add_error(target, reason if target else f"{path}: {reason}")


class SweepForm(_DomainErrorsMixin, forms.Form):
    """Create a sweep on a base pipeline version.

    `steps` are the base version's steps in order: [{"name", "module": "name@N",
    "params": {...}, "int_params": [name, ...]}]. Each step gets `slots` variant rows
    (fields `axes.<step>.<slot>.label|module|params`); a row with anything in it is a
    variant, and a step with at least one variant is an axis.
    """

    name = forms.CharField(max_length=200)
    replicates = forms.IntegerField(
        min_value=1,
        max_value=MAX_REPLICATES,
        initial=1,
        help_text="Runs per variant; replicate r sets each seed param to r.",
    )
    seed_params = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The int params each replicate sets (needed when replicates > 1).",
    )
    reuse = forms.BooleanField(
        required=False,
        initial=True,
        label="Reuse steps whose code, params and inputs did not change",
    )
    max_parallel_runs = forms.IntegerField(
        required=False,
        min_value=1,
        label="At most this many runs at once",
        help_text="Leave empty for no cap; a cap leaves workers to others' runs meanwhile.",
    )

    def __init__(
        self,
        steps: list[dict[str, Any]],
        module_refs: Sequence[str],
        *args: Any,
        slots: int = DEFAULT_SLOTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.steps = steps
        self.slots = max(1, min(slots, MAX_SLOTS))
        self.axis_errors: dict[str, list[str]] = {}
        self._slot_of: dict[tuple[str, int], int] = {}
        seeds = [f"{s['name']}.{p}" for s in steps for p in s.get("int_params", [])]
        _choice_field(self, "seed_params").choices = [(seed, seed) for seed in seeds]
        # Ticked by default: the seed of the last step that has one (the model, usually);
        # seeding every step would rerun upstream steps per replicate.
        seedlike = [seed for seed in seeds if seed.partition(".")[2] in SEED_NAMES]
        self.fields["seed_params"].initial = seedlike[-1:]
        for step in steps:
            choices = grouped_module_choices(module_refs, f"same as base ({step['module']})")
            for slot in range(self.slots):
                prefix = f"axes.{step['name']}.{slot}"
                self.fields[f"{prefix}.label"] = forms.CharField(
                    label="Label", required=False, max_length=64, strip=True
                )
                self.fields[f"{prefix}.module"] = forms.ChoiceField(
                    label="Module version", required=False, choices=choices
                )
                self.fields[f"{prefix}.params"] = forms.CharField(
                    label="Params (name=value lines)",
                    required=False,
                    widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
                )

    def axis_fields(self) -> list[dict[str, Any]]:
        """The variant rows by step, for the template."""
        groups = []
        for step in self.steps:
            rows = []
            for slot in range(self.slots):
                prefix = f"axes.{step['name']}.{slot}"
                rows.append({"slot": slot, **{f: self[f"{prefix}.{f}"] for f in SLOT_FIELDS}})
            groups.append(
                {
                    "name": step["name"],
                    "module": step["module"],
                    "params": step.get("params") or {},
                    "rows": rows,
                    "errors": self.axis_errors.get(step["name"], []),
                }
            )
        return groups

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for step in self.steps:
            for slot in range(self.slots):
                field = f"axes.{step['name']}.{slot}.params"
                _, problems = parse_params_text(data.get(field) or "")
                for problem in problems:
                    self.add_error(field, problem)
        return data

    def sweep_kwargs(self) -> dict[str, Any]:
        """What services.sweep_create takes (besides the base version and the user)."""
        data = self.cleaned_data
        axes: dict[str, list[dict[str, Any]]] = {}
        self._slot_of = {}
        for step in self.steps:
            name = step["name"]
            taken: set[str] = set()
            for slot in range(self.slots):
                prefix = f"axes.{name}.{slot}"
                label = data.get(f"{prefix}.label") or ""
                module = data.get(f"{prefix}.module") or ""
                params, _ = parse_params_text(data.get(f"{prefix}.params") or "")
                if not (label or module or params):
                    continue
                if not label and module:
                    label = _auto_label(module, name, taken)
                variant: dict[str, Any] = {"label": label}
                if module:
                    variant["module"] = module
                if params:
                    variant["params"] = params
                taken.add(label)
                self._slot_of[(name, len(axes.get(name, [])))] = slot
                axes.setdefault(name, []).append(variant)
        return {
            "name": data["name"],
            "axes": axes,
            "replicates": data["replicates"],
            "seed_params": list(data.get("seed_params") or []),
            "reuse": bool(data.get("reuse")),
            "max_parallel_runs": data.get("max_parallel_runs"),
        }

    def add_domain_errors(self, fields: Mapping[str, Sequence[str]]) -> None:
        """`axes.train.1.params.C` -> the params box of the row that became variant 1 of
        axis train; `axes.train` -> the train fieldset; `seed_params.0` -> seed params."""
        steps = {s["name"] for s in self.steps}
        for path, reasons in fields.items():
            parts = path.split(".")
            if parts[0] == "seed_params":
                self._put(path, "seed_params", reasons)
            elif parts[0] == "axes" and len(parts) >= 2 and parts[1] in steps:
                if len(parts) == 2:
                    self.axis_errors.setdefault(parts[1], []).extend(reasons)
                    continue
                index = int(parts[2]) if parts[2].isdigit() else -1
                slot = self._slot_of.get((parts[1], index))
                field = parts[3] if len(parts) > 3 and parts[3] in SLOT_FIELDS else "label"
                if slot is None:
                    self.axis_errors.setdefault(parts[1], []).extend(reasons)
                else:
                    self._put(path, f"axes.{parts[1]}.{slot}.{field}", reasons)
            else:
                self._put(path, parts[0], reasons)


class ExtendForm(_DomainErrorsMixin, forms.Form):
    """Append one variant to an axis of a sweep."""

    step = forms.ChoiceField(label="Axis")
    label = forms.CharField(max_length=64, required=False, strip=True)
    module = forms.ChoiceField(label="Module version", required=False)
    params = forms.CharField(
        label="Params (name=value lines)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
    )

    def __init__(
        self, axes: Sequence[str], module_refs: Sequence[str], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        _choice_field(self, "step").choices = [(step, step) for step in axes]
        _choice_field(self, "module").choices = grouped_module_choices(
            module_refs, "same as the base step's"
        )

    def clean_params(self) -> dict[str, Any]:
        params, problems = parse_params_text(self.cleaned_data.get("params") or "")
        if problems:
            raise forms.ValidationError(problems)
        return params

    def variant(self, taken: Iterable[str] = ()) -> dict[str, Any]:
        """The `{"label", "module"?, "params"?}` services.sweep_extend takes."""
        data = self.cleaned_data
        label, module = data.get("label") or "", data.get("module") or ""
        if not label and module:
            label = _auto_label(module, data["step"], set(taken))
        variant: dict[str, Any] = {"label": label}
        if module:
            variant["module"] = module
        if data.get("params"):
            variant["params"] = data["params"]
        return variant

    def add_domain_errors(self, fields: Mapping[str, Sequence[str]]) -> None:
        for path, reasons in fields.items():
            parts = path.split(".")
            if parts[0] == "variant" and len(parts) > 1:
                self._put(path, parts[1], reasons)
            else:
                self._put(path, parts[0], reasons)


def parse_variant(text: str | None, axes: Mapping[str, Sequence[str]]) -> dict[str, str] | None:
    """`prep=pca, train=rf` (or `train=rf`: one choice, the other axes pooled) -> {step:
    label}; None when it does not read as one (a label of no axis is left to the caller's
    check, which names the problem)."""
    if not text:
        return None
    choices: dict[str, str] = {}
    for part in text.split(","):
        step, sep, label = part.strip().partition("=")
        step, label = step.strip(), label.strip()
        if not sep or not step or not label or step not in axes or step in choices:
            return None
        choices[step] = label
    return choices or None


def variant_param(choices: Mapping[str, str]) -> str:
    """The inverse of parse_variant: how a variant is written in a URL."""
    return ", ".join(f"{step}={label}" for step, label in choices.items())


class CompareForm(forms.Form):
    """The compare page's query (`?metric=&step=&aggregate=&direction=&a=&b=&curve=&level=`), with
    the defaults a first visit gets. The API's query serializer (SweepCompareApi) takes the
    same fields with the same defaults: stats.DEFAULT_AGGREGATE and stats.default_direction.

    Nothing here is refused: a value too long is cut, one that does not clean (a NUL) counts
    as absent, and an aggregate or direction that is not one goes on as it is, for the
    statistics' own check to name it in a 400.
    """

    metric = forms.CharField(required=False, strip=True)
    step = forms.CharField(required=False, strip=True)
    aggregate = forms.CharField(required=False, strip=False)
    direction = forms.CharField(required=False, strip=False)
    curve = forms.CharField(required=False, strip=True)
    a = forms.CharField(required=False, strip=True)
    b = forms.CharField(required=False, strip=True)
    level = forms.CharField(required=False, strip=True)

    def __init__(
        self,
        data: Mapping[str, Any],
        metrics: Sequence[Mapping[str, Any]],
        default: tuple[str | None, str | None],
    ) -> None:
        super().__init__(data)
        self.metrics, self.default = metrics, default

    def _steps_logging(self, metric: str) -> set[str]:
        return {m["step"] for m in self.metrics if m["name"] == metric}

    def choice(self) -> dict[str, Any]:
        """metric, step, aggregate, direction, the curve's metric and step, a and b; a step
        is implied when only one step logs the metric."""
        self.is_valid()  # optional text; a field that does not clean (a NUL) counts as absent
        data = {name: self.cleaned_data.get(name) or "" for name in self.fields}
        default_metric, default_step = self.default
        metric = data["metric"][:200] or default_metric or ""
        step = data["step"][:100] or None
        if "metric" not in self.data and step is None:
            step = default_step
        if step is None:
            steps = self._steps_logging(metric)
            step = steps.pop() if len(steps) == 1 else None
        curve = data["curve"][:200]
        if not curve:
            series = [m for m in self.metrics if m["name"] == "loss"]
            curve = series[0]["name"] if series else metric
        curve_steps = self._steps_logging(curve)
        return {
            "metric": metric,
            "step": step,
            "aggregate": (data["aggregate"] or stats.DEFAULT_AGGREGATE)[:20],
            "direction": (data["direction"] or stats.default_direction(metric))[:20],
            "curve": curve,
            "curve_step": curve_steps.pop() if len(curve_steps) == 1 else None,
            "a_text": data["a"][:500],
            "b_text": data["b"][:500],
            "level": data["level"][:20] or str(stats.DEFAULT_LEVEL),
        }
