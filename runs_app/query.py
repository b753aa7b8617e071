"""The runs filter language, one grammar for the runs page and the API (`?filter=`) and the
CLI (`stepworks runs --filter`):

    metrics.accuracy > 0.9 and params.train.hidden = 32 and tag = baseline
    status = failed or (pipeline = classify and created >= 2026-12-01)
    not tag = draft and user = ada

A comparison is FIELD OP VALUE; comparisons join with `and`, `or`, `not` and parentheses.
Fields: `metrics.NAME` (a run's final value of that metric, on any step, a reused step's
being its source's), `params.STEP.PARAM` (the value the step ran with), `tag`, `status`,
`pipeline`, `version`, `user`, `sweep`, `created` (a date, YYYY-MM-DD). Ops: = != > >= < <=
(`tag`, `status`, `pipeline`, `user` take only = and !=). Values: numbers, bare words, or
'quoted text'. A mistake is a FilterError naming the column of the token at fault.

`parse` is pure (text -> tree: lark's LALR parser over GRAMMAR, then each comparison
checked); `run_filter` turns a tree into a Q over PipelineRun.

The runs list's order is written the same way, one column with an optional `-` for
descending: `?sort=-metrics.accuracy`, `params.train.hidden`, `created`, ...
(`run_ordering`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from django.db.models import (
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OrderBy,
    OuterRef,
    Q,
    Subquery,
)
from django.db.models.functions import Coalesce
from lark import Lark, Transformer, UnexpectedCharacters, UnexpectedToken
from lark import Token as LarkToken
from lark.exceptions import VisitError

from runs_app.models import Metric, RunStatus, RunTag, StepRun
from workspaces.errors import DomainError

MAX_LENGTH = 2000
MAX_TERMS = 50

_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_KEYWORDS = {"and", "or", "not"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EQUALITY = {"=", "!="}
_FIELDS = ("metrics.NAME", "params.STEP.PARAM", "tag", "status", "pipeline", "version",
           "user", "sweep", "created")  # fmt: skip

# The grammar (lark, LALR). Keywords are case-insensitive and whole words (`android` is a
# word); a keyword where a value belongs is refused after parsing, with its column.
GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: unary (_AND unary)*
?unary: _NOT unary -> negation
      | LPAR or_expr RPAR -> group
      | comparison
comparison: WORD OP (WORD | STRING)
OP: "!=" | ">=" | "<=" | "=" | ">" | "<"
_OR.2: /or(?![A-Za-z0-9_.:+\-])/i
_AND.2: /and(?![A-Za-z0-9_.:+\-])/i
_NOT.2: /not(?![A-Za-z0-9_.:+\-])/i
LPAR: "("
RPAR: ")"
WORD: /[A-Za-z0-9_.:+\-]+/
STRING: /'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"/
%ignore /\s+/
"""
_PARSER = Lark(GRAMMAR, parser="lalr")


class FilterError(DomainError):
    """A filter that does not parse: the message names the column (1-based) of the token."""

    def __init__(self, reason: str, column: int, field: str = "filter") -> None:
        text = f"at column {column}: {reason}"
        super().__init__("invalid_filter", f"The filter does not parse {text}.", {field: [text]})
        self.reason = reason
        self.column = column


@dataclass(frozen=True)
class Token:
    kind: str  # string | op | word | end
    text: str
    column: int  # 1-based


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str
    value: Any
    column: int


@dataclass(frozen=True)
class Node:
    kind: str  # and | or | not
    children: tuple[Any, ...]


def parse(text: str) -> Node | Comparison | None:
    """The tree of `text`, or None when it is blank."""
    if len(text) > MAX_LENGTH:
        raise FilterError(f"a filter is at most {MAX_LENGTH} characters", MAX_LENGTH + 1)
    if not text.strip():
        return None
    try:
        tree = _PARSER.parse(text)
    except UnexpectedCharacters as error:
        # Columns count characters from the start of the text (a newline is one).
        column = (error.pos_in_stream or 0) + 1
        raise FilterError(f"unexpected character {error.char!r}", column) from None
    except UnexpectedToken as error:
        raise _unexpected(error, text) from None
    try:
        result: Node | Comparison = _Build().transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, FilterError):
            raise error.orig_exc from None
        raise
    return result


def _unexpected(error: UnexpectedToken, text: str) -> FilterError:
    """What the token at fault should have been, as the reader would say it."""
    token = error.token
    at_end = token.type == "$END"
    column = len(text) + 1 if at_end else (token.start_pos or 0) + 1
    found = "the end" if at_end else repr(str(token))
    expected = set(error.expected)
    before = error.interactive_parser.parser_state.value_stack
    previous = before[-1] if before else None
    if expected <= {"WORD", "STRING"} and previous is not None:
        return FilterError(f"expected a value after {str(previous)!r}", column)
    if expected == {"OP"} and previous is not None:
        return FilterError(
            f"expected = != > >= < <= after {str(previous)!r}, found {found}", column
        )
    if "WORD" in expected:
        return FilterError(f"expected a field ({', '.join(_FIELDS)}), found {found}", column)
    kinds = [getattr(item, "type", "") for item in before]
    if kinds.count("LPAR") > kinds.count("RPAR"):
        return FilterError(f"expected ')', found {found}", column)
    return FilterError(f"expected 'and', 'or' or the end, found {found}", column)


class _Build(Transformer[LarkToken, Any]):
    """The parse tree -> Comparison and Node, each comparison checked (its field known, its
    value the right kind), at most MAX_TERMS of them."""

    def __init__(self) -> None:
        super().__init__()
        self.terms = 0

    def comparison(self, items: list[LarkToken]) -> Comparison:
        field, op, value = (_token(item) for item in items)
        if field.kind == "word" and field.text.lower() in _KEYWORDS:
            raise FilterError(
                f"expected a field ({', '.join(_FIELDS)}), found {field.text!r}", field.column
            )
        if value.kind == "word" and value.text.lower() in _KEYWORDS:
            raise FilterError(f"expected a value after {op.text!r}", value.column)
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterError(f"a filter has at most {MAX_TERMS} comparisons", field.column)
        return _checked(field, op, value)

    def or_expr(self, items: list[Any]) -> Node:
        return Node("or", tuple(items))

    def and_expr(self, items: list[Any]) -> Node:
        return Node("and", tuple(items))

    def negation(self, items: list[Any]) -> Node:
        return Node("not", (items[0],))

    def group(self, items: list[Any]) -> Any:
        return items[1]


def _token(item: LarkToken) -> Token:
    kinds = {"WORD": "word", "STRING": "string", "OP": "op"}
    return Token(kinds.get(item.type, "word"), str(item), (item.start_pos or 0) + 1)


def _unquote(token: Token) -> str:
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    return token.text


def _scalar(token: Token) -> Any:
    """A bare number is a number; everything else (quoted, or a word) is text."""
    if token.kind == "word" and _NUMBER.match(token.text):
        number = float(token.text)
        return (
            int(number)
            if number.is_integer() and "." not in token.text and "e" not in token.text.lower()
            else number
        )
    if token.kind == "word" and token.text.lower() in ("true", "false"):
        return token.text.lower() == "true"
    return _unquote(token)


def _checked(field: Token, op: Token, value: Token) -> Comparison:
    lower = field.text.lower()
    if lower.startswith("metrics."):
        return _metric_comparison(field, op, value)
    if lower.startswith("params."):
        parts = field.text[len("params.") :].split(".", 1)
        # Names only (no `__`): they become a JSON key path, never a lookup.
        if len(parts) != 2 or not all(_NAME.match(p) and "__" not in p for p in parts):
            raise FilterError("name the step and the param: params.STEP.PARAM", field.column)
        return Comparison(f"params.{parts[0]}.{parts[1]}", op.text, _scalar(value), field.column)
    if lower in ("tag", "pipeline", "user", "status"):
        return _label_comparison(lower, field, op, value)
    if lower in ("version", "sweep"):
        number = _scalar(value)
        if isinstance(number, bool) or not isinstance(number, int):
            raise FilterError(
                f"{lower} compares with a whole number, not {value.text!r}", value.column
            )
        return Comparison(lower, op.text, number, field.column)
    if lower == "created":
        try:
            day = dt.date.fromisoformat(_unquote(value))
        except ValueError:
            raise FilterError(
                f"created compares with a date (YYYY-MM-DD), not {value.text!r}", value.column
            ) from None
        return Comparison("created", op.text, day, field.column)
    raise FilterError(f"unknown field {field.text!r}; fields: {', '.join(_FIELDS)}", field.column)


def _metric_comparison(field: Token, op: Token, value: Token) -> Comparison:
    metric = field.text[len("metrics.") :]
    if not metric:
        raise FilterError("name the metric: metrics.NAME", field.column)
    number = _scalar(value)
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise FilterError(f"{field.text} compares with a number, not {value.text!r}", value.column)
    return Comparison(f"metrics.{metric}", op.text, float(number), field.column)


def _label_comparison(lower: str, field: Token, op: Token, value: Token) -> Comparison:
    if op.text not in _EQUALITY:
        raise FilterError(f"{lower} takes = or !=, not {op.text!r}", op.column)
    text = _unquote(value)
    if lower == "status":
        text = text.lower()
        if text not in RunStatus.values:
            known = ", ".join(RunStatus.values)
            raise FilterError(f"{value.text!r} is not a status ({known})", value.column)
    return Comparison(lower, op.text, text, field.column)


# --- to a query -------------------------------------------------------------------------------

_LOOKUP = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "=": "exact"}


def run_filter(tree: Node | Comparison | None) -> Q:
    """A Q over PipelineRun for a parsed filter (an empty Q for None)."""
    if tree is None:
        return Q()
    if isinstance(tree, Node):
        parts = [run_filter(child) for child in tree.children]
        if tree.kind == "not":
            return ~parts[0]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if tree.kind == "and" else combined | part
        return combined
    return _comparison(tree)


def _compare(path: str, op: str, value: Any) -> Q:
    if op == "!=":
        return ~Q(**{path: value})
    return Q(**{f"{path}__{_LOOKUP[op]}": value})


def _comparison(c: Comparison) -> Q:
    if c.field.startswith("metrics."):
        name = c.field[len("metrics.") :]
        later = Metric.objects.filter(
            step_id=OuterRef("step_id"), name=name, index__gt=OuterRef("index")
        )
        final = Metric.objects.filter(name=name).exclude(Exists(later))
        matching = final.filter(_compare("value", c.op if c.op != "!=" else "=", c.value))
        # The steps whose final value matches, then their runs and the runs that reused
        # them: uncorrelated subqueries, each read once (a subquery per run took a minute
        # at 10,000 runs on SQLite). The own runs are read through the metric's join to its
        # step (one primary-key probe per match); `StepRun.id IN (matching)` instead made
        # Postgres hash all the steps of every workspace (128 ms for the page at 10,000
        # runs; bench/README.md, bench_pages). Neither side yields a NULL run id, so `!=`
        # (NOT IN) stays right.
        own_runs = matching.values("step__run_id")
        sources = matching.values("step_id")
        reusing_runs = StepRun.objects.filter(reused_from_id__in=sources).values("run_id")
        found = Q(pk__in=own_runs) | Q(pk__in=reusing_runs)
        return ~found if c.op == "!=" else found
    if c.field.startswith("params."):
        step, param = c.field[len("params.") :].split(".", 1)
        steps = StepRun.objects.filter(run_id=OuterRef("pk"), name=step)
        has = steps.filter(_compare(f"params__{param}", c.op if c.op != "!=" else "=", c.value))
        return ~Q(Exists(has)) if c.op == "!=" else Q(Exists(has))
    if c.field == "tag":
        tagged = Exists(RunTag.objects.filter(run_id=OuterRef("pk"), name=c.value))
        return ~Q(tagged) if c.op == "!=" else Q(tagged)
    paths = {
        "status": "status",
        "pipeline": "pipeline_version__pipeline__name",
        "version": "pipeline_version__number",
        "user": "created_by__username",
        "sweep": "sweep_id",
        "created": "created_at__date",
    }
    return _compare(paths[c.field], c.op, c.value)


def filter_q(text: str, field: str = "filter") -> Q:
    """Parse and compile `text`; a FilterError names `field`."""
    try:
        return run_filter(parse(text))
    except FilterError as error:
        raise FilterError(error.reason, error.column, field) from None


# --- the order of the runs list ---------------------------------------------------------------

SORT_COLUMNS = ("id", "pipeline", "status", "duration", "user", "created")
SORT_HELP = "id, pipeline, status, duration, user, created, metrics.NAME, params.STEP.PARAM"
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:/ -]{1,200}$")


class SortError(DomainError):
    def __init__(self, reason: str, field: str = "sort") -> None:
        super().__init__(
            "invalid_sort", f"Cannot sort the runs by that: {reason}.", {field: [reason]}
        )


@dataclass(frozen=True)
class Sort:
    """A parsed `?sort=`: the column (`created`, `metrics.accuracy`, `params.train.hidden`)
    and its direction."""

    column: str
    descending: bool

    @property
    def text(self) -> str:
        return ("-" if self.descending else "") + self.column


def parse_sort(text: str, field: str = "sort") -> Sort:
    """`-metrics.accuracy` -> Sort("metrics.accuracy", descending=True); a SortError naming
    `field` for a column the runs list cannot sort by."""
    text = text.strip()
    descending = text.startswith("-")
    column = text[1:] if descending else text
    if column in SORT_COLUMNS:
        return Sort(column, descending)
    if column.startswith("metrics."):
        if not _METRIC_NAME.match(column[len("metrics.") :]):
            raise SortError(f"{column[:80]!r}: name the metric, metrics.NAME", field)
        return Sort(column, descending)
    if column.startswith("params."):
        parts = column[len("params.") :].split(".")
        # Names only (no `__`): they become a JSON key path, never a lookup.
        if len(parts) != 2 or not all(_NAME.match(p) and "__" not in p for p in parts):
            raise SortError(
                f"{column[:80]!r}: name the step and the param, params.STEP.PARAM", field
            )
        return Sort(column, descending)
    raise SortError(f"unknown column {column[:80]!r}; columns: {SORT_HELP}", field)


def final_metric(name: str) -> Subquery:
    """A run's final value of metric `name` (as its runs list column shows it): the last
    point of the latest step that logged it, a reused step's being its source's."""
    sources = (
        StepRun.objects.filter(run_id=OuterRef(OuterRef("pk")))
        .annotate(source=Coalesce("reused_from_id", "id"))
        .values("source")
    )
    last = (
        Metric.objects.filter(name=name, step_id__in=sources)
        .order_by("-step__position", F("index").desc(nulls_last=True), "-id")
        .values("value")[:1]
    )
    return Subquery(last)


def run_ordering(sort: Sort) -> tuple[dict[str, Any], list[OrderBy | str]]:
    """(annotations, order_by) putting runs in `sort`'s order; runs without a value (no such
    metric, param or end) come last either way, and equal values newest first by id."""
    value: Any
    if sort.column == "id":
        return {}, ["-id" if sort.descending else "id"]
    if sort.column == "pipeline":
        value = F("pipeline_version__pipeline__name")
        extra: list[OrderBy | str] = [
            F("pipeline_version__number").desc()
            if sort.descending
            else F("pipeline_version__number").asc()
        ]
    else:
        extra = []
        if sort.column == "status":
            value = F("status")
        elif sort.column == "user":
            value = F("created_by__username")
        elif sort.column == "created":
            value = F("created_at")
        elif sort.column == "duration":
            value = ExpressionWrapper(
                F("finished_at") - F("started_at"), output_field=DurationField()
            )
        elif sort.column.startswith("metrics."):
            value = final_metric(sort.column[len("metrics.") :])
        else:
            step, param = sort.column[len("params.") :].split(".")
            value = Subquery(
                StepRun.objects.filter(run_id=OuterRef("pk"), name=step)
                .order_by("position")
                .values(f"params__{param}")[:1]
            )
    order = (
        F("sort_value").desc(nulls_last=True)
        if sort.descending
        else F("sort_value").asc(nulls_last=True)
    )
    return {"sort_value": value}, [order, *extra, "-id"]
