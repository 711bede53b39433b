"""Evaluates parsed KQL over in-memory rows for the fake Resource Graph and Log Analytics.

Rows are plain dicts (column name -> value). Dynamic values are dicts/lists, datetimes are aware
UTC ``datetime`` objects. Every expression is compiled once per query into a Python closure, so
a where-clause over thousands of rows costs one function call per row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kql_syntax import (
    Binary,
    Call,
    ColumnRef,
    Expr,
    KqlError,
    KqlSemanticError,
    KqlSyntaxError,
    Literal,
    Member,
    NamedExpr,
    Operator,
    parse_datetime_literal,
    parse_query,
)

__all__ = [
    "KqlError",
    "KqlSemanticError",
    "KqlSyntaxError",
    "QueryResult",
    "Table",
    "column_type",
    "json_ready",
    "run_query",
    "to_kql_string",
]

Row = dict[str, Any]
Evaluator = Callable[[Row], Any]
Columns = tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A named table: its column order and its rows (rows are never mutated by the engine)."""

    name: str
    columns: Columns
    rows: Sequence[Row]


TableResolver = Callable[[str], Table | None]


@dataclass(frozen=True)
class QueryResult:
    """Columns in output order and the rows; ``limited`` says the query used take/limit."""

    columns: Columns
    rows: list[Row]
    limited: bool


# ---------------------------------------------------------------------------------------------
# value semantics


def format_datetime(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as both services print datetimes."""
    utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def json_ready(value: Any) -> Any:
    """Convert engine values into JSON-serialisable ones (datetimes become text)."""
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def to_kql_string(value: Any) -> str:
    """``tostring()``: null is the empty string, dynamic values become compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, dict | list):
        return json.dumps(json_ready(value), separators=(",", ":"))
    return str(value)


_COLUMN_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "bool"),
    (int, "long"),
    (float, "real"),
    (dt.datetime, "datetime"),
    (str, "string"),
)


def column_type(values: Iterable[Any]) -> str:
    """The Log Analytics column type of a column, from its first non-null value."""
    for value in values:
        if value is not None:
            return next(
                (name for kind, name in _COLUMN_TYPES if isinstance(value, kind)), "dynamic"
            )
    return "string"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equals(left: Any, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is type(right) or (isinstance(left, dict) and isinstance(right, dict)):
        return bool(left == right)
    return False


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """The pair in one orderable type (a string meets a datetime as a datetime), or None."""
    if isinstance(left, dt.datetime) and isinstance(right, str):
        right = _to_datetime(right)
    elif isinstance(left, str) and isinstance(right, dt.datetime):
        left = _to_datetime(left)
    if left is None or right is None:
        return None
    same_kind = (_is_number(left) and _is_number(right)) or any(
        isinstance(left, kind) and isinstance(right, kind) for kind in (str, dt.datetime)
    )
    return (left, right) if same_kind else None


def _compare(left: Any, right: Any) -> int | None:
    pair = _comparable(left, right)
    if pair is None:
        return None
    return int((pair[0] > pair[1]) - (pair[0] < pair[1]))


def _has_term(haystack: str, needle: str) -> bool:
    """Kusto ``has``: the needle must start and end on term boundaries (runs of letters/digits)."""
    if not needle:
        return True
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        starts_on_boundary = start == 0 or not (
            needle[0].isalnum() and haystack[start - 1].isalnum()
        )
        ends_on_boundary = end == len(haystack) or not (
            needle[-1].isalnum() and haystack[end].isalnum()
        )
        if starts_on_boundary and ends_on_boundary:
            return True
        start = haystack.find(needle, start + 1)
    return False


def _to_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_datetime_literal(value)
        except ValueError:
            return None
    return None


def _hashable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(json_ready(value), sort_keys=True)
    return value


def _isempty(value: Any) -> bool:
    return value is None or value == ""


# name -> implementation; every scalar function here takes exactly one argument.
_SCALAR_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "tostring": to_kql_string,
    "tolower": lambda v: to_kql_string(v).lower(),
    "isempty": _isempty,
    "isnotempty": lambda v: not _isempty(v),
    "todatetime": _to_datetime,
    "not": lambda v: None if v is None else not bool(v),
}
_AGGREGATES = frozenset(["count", "min", "max"])
_CONVERSIONS_KEEPING_NAME = frozenset(["tostring", "tolower", "todatetime"])
_ORDERINGS = {"<": (-1,), ">": (1,), "<=": (-1, 0), ">=": (0, 1)}
_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "has": _has_term,
    "contains": lambda hay, needle: needle in hay,
    "startswith": lambda hay, needle: hay.startswith(needle),
}


def _path_name(expr: Expr) -> str | None:
    if isinstance(expr, ColumnRef):
        return expr.name
    if isinstance(expr, Member):
        base = _path_name(expr.target)
        return None if base is None else f"{base}_{expr.name}"
    if isinstance(expr, Call) and expr.name in _CONVERSIONS_KEEPING_NAME and expr.args:
        return _path_name(expr.args[0])
    return None


def _negated(test: Callable[[Row], bool | None], negate: bool) -> Evaluator:
    if not negate:
        return test

    def opposite(row: Row) -> bool | None:
        result = test(row)
        return None if result is None else not result

    return opposite


# ---------------------------------------------------------------------------------------------
# compiling expressions


class _ExpressionCompiler:
    """Turns scalar syntax trees into closures, resolving column names against ``columns``."""

    def __init__(self, columns: Sequence[str], now: dt.datetime) -> None:
        self.columns = set(columns)
        self.now = now

    def compile(self, expr: Expr) -> Evaluator:
        if isinstance(expr, Literal):
            value = expr.value
            return lambda row: value
        if isinstance(expr, ColumnRef):
            if expr.name not in self.columns:
                raise KqlSemanticError(
                    f"Failed to resolve scalar expression named '{expr.name}'", expr.pos, expr.name
                )
            name = expr.name
            return lambda row: row.get(name)
        if isinstance(expr, Member):
            target, key = self.compile(expr.target), expr.name

            def member(row: Row) -> Any:
                value = target(row)
                return value.get(key) if isinstance(value, dict) else None

            return member
        if isinstance(expr, Binary):
            return self.compile_binary(expr)
        assert isinstance(expr, Call)
        return self.compile_call(expr)

    def compile_binary(self, expr: Binary) -> Evaluator:
        op = expr.op
        left = self.compile(expr.left)
        if op in ("in", "!in", "in~", "!in~"):
            return self.compile_in(op, left, expr.right)
        if op == "between":
            return self.compile_between(left, *expr.right)
        right = self.compile(expr.right)
        if op == "and":
            return lambda row: left(row) is True and right(row) is True
        if op == "or":
            return lambda row: left(row) is True or right(row) is True
        if op in ("==", "!="):
            return _negated(lambda row: _equals(left(row), right(row)), op == "!=")
        if op in ("=~", "!~"):
            return _negated(
                lambda row: to_kql_string(left(row)).lower() == to_kql_string(right(row)).lower(),
                op == "!~",
            )
        if op in _ORDERINGS:
            accept = _ORDERINGS[op]

            def ordered(row: Row) -> bool | None:
                result = _compare(left(row), right(row))
                return None if result is None else result in accept

            return ordered
        test = _STRING_TESTS[op.lstrip("!")]
        return _negated(
            lambda row: test(to_kql_string(left(row)).lower(), to_kql_string(right(row)).lower()),
            op.startswith("!"),
        )

    def compile_between(self, left: Evaluator, low_expr: Expr, high_expr: Expr) -> Evaluator:
        low, high = self.compile(low_expr), self.compile(high_expr)

        def between(row: Row) -> bool | None:
            value = left(row)
            above, below = _compare(value, low(row)), _compare(value, high(row))
            if above is None or below is None:
                return None
            return above >= 0 and below <= 0

        return between

    def compile_in(self, op: str, left: Evaluator, item_exprs: Sequence[Expr]) -> Evaluator:
        items = [self.compile(item) for item in item_exprs]
        negate = op.startswith("!")
        if op.endswith("~"):
            # A constant list (the usual `in~ ('a', ...)` with thousands of ids) becomes one set.
            if all(isinstance(item, Literal) for item in item_exprs):
                folded = {to_kql_string(i({})).lower() for i in items}
                return _negated(lambda row: to_kql_string(left(row)).lower() in folded, negate)
            return _negated(
                lambda row: (
                    to_kql_string(left(row)).lower()
                    in {to_kql_string(i(row)).lower() for i in items}
                ),
                negate,
            )

        def in_exact(row: Row) -> bool:
            value = left(row)
            if value is None:
                return negate
            return any(_equals(value, item(row)) for item in items) != negate

        return in_exact

    def compile_call(self, expr: Call) -> Evaluator:
        name = expr.name
        if name in _AGGREGATES:
            raise KqlSemanticError(
                f"aggregate function '{name}' is only allowed in summarize", expr.pos, name
            )
        if name in ("now", "ago"):
            span = self._constant_timespan(expr) if name == "ago" else dt.timedelta(0)
            moment = self.now - span
            return lambda row: moment
        if name not in _SCALAR_FUNCTIONS:
            raise KqlSemanticError(f"Unknown function: '{name}'", expr.pos, name)
        _check_arity(expr, 1)
        function = _SCALAR_FUNCTIONS[name]
        argument = self.compile(expr.args[0])
        return lambda row: function(argument(row))

    def _constant_timespan(self, expr: Call) -> dt.timedelta:
        _check_arity(expr, 1)
        span = self.compile(expr.args[0])({})
        if not isinstance(span, dt.timedelta):
            raise KqlSemanticError("expected a timespan", expr.pos)
        return span


def _check_arity(expr: Call, expected: int) -> None:
    if len(expr.args) != expected:
        raise KqlSemanticError(
            f"function '{expr.name}' expects {expected} arguments, got {len(expr.args)}",
            expr.pos,
            expr.name,
        )


def _sort_value(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if _is_number(value):
        return (0, value)
    if isinstance(value, dt.datetime):
        return (1, value.timestamp())
    if isinstance(value, str):
        return (3, value)
    return (4, to_kql_string(value))


# ---------------------------------------------------------------------------------------------
# running a query


@dataclass(frozen=True)
class _Aggregate:
    """One compiled aggregate: its output column name and a function of a group's rows."""

    name: str
    compute: Callable[[list[Row]], Any]


class _QueryRunner:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def apply(self, op: Operator, columns: Columns, rows: list[Row]) -> tuple[Columns, list[Row]]:
        if op.kind == "where":
            predicate = _ExpressionCompiler(columns, self.now).compile(op.items[0])
            return columns, [row for row in rows if predicate(row) is True]
        if op.kind == "project":
            return self.project(op.items, columns, rows)
        if op.kind == "extend":
            return self.extend(op.items, columns, rows)
        if op.kind == "order":
            return columns, self.sort(op.items, columns, rows)
        if op.kind == "take":
            return columns, rows[: op.items[0]]
        if op.kind == "summarize":
            return self.summarize(op, columns, rows)
        return ("Count",), [{"Count": len(rows)}]

    def named(
        self, items: Sequence[NamedExpr], columns: Sequence[str]
    ) -> list[tuple[str, Evaluator]]:
        compiler = _ExpressionCompiler(columns, self.now)
        return [
            (item.name or _path_name(item.expr) or f"Column{ordinal}", compiler.compile(item.expr))
            for ordinal, item in enumerate(items, start=1)
        ]

    def project(
        self, items: Sequence[NamedExpr], columns: Columns, rows: list[Row]
    ) -> tuple[Columns, list[Row]]:
        compiled = self.named(items, columns)
        names = [name for name, _ in compiled]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise KqlSemanticError(
                f"duplicate column name(s) in project: {', '.join(sorted(duplicates))}",
                items[0].expr.pos,
            )
        return tuple(names), [{name: fn(row) for name, fn in compiled} for row in rows]

    def extend(
        self, items: Sequence[NamedExpr], columns: Columns, rows: list[Row]
    ) -> tuple[Columns, list[Row]]:
        current = columns
        for item in items:
            # Each extend item may use the ones before it (Kusto evaluates them left to right).
            ((name, fn),) = self.named([item], current)
            rows = [{**row, name: fn(row)} for row in rows]
            if name not in current:
                current = (*current, name)
        return current, rows

    def sort(
        self, keys: Sequence[tuple[Expr, bool]], columns: Sequence[str], rows: list[Row]
    ) -> list[Row]:
        compiler = _ExpressionCompiler(columns, self.now)
        ordered = list(rows)
        # Stable sorts applied from the last key to the first give a multi-key order; nulls
        # come first ascending and last descending, as in Kusto.
        for expr, descending in reversed(keys):
            evaluate = compiler.compile(expr)

            def sort_key(row: Row, evaluate: Evaluator = evaluate) -> tuple[Any, ...]:
                value = evaluate(row)
                return (0,) if value is None else (1, *_sort_value(value))

            ordered.sort(key=sort_key, reverse=descending)
        return ordered

    def aggregate(self, item: NamedExpr, columns: Columns) -> _Aggregate:
        call = item.expr
        if not isinstance(call, Call) or call.name not in _AGGREGATES:
            raise KqlSemanticError(
                "summarize expects aggregate functions such as count() or max(x)", item.expr.pos
            )
        if call.name == "count":
            _check_arity(call, 0)
            return _Aggregate(item.name or "count_", len)
        _check_arity(call, 1)
        value_of = _ExpressionCompiler(columns, self.now).compile(call.args[0])
        pick = max if call.name == "max" else min

        def extreme(group: list[Row]) -> Any:
            present = [v for v in map(value_of, group) if v is not None]
            return pick(present, key=_sort_value) if present else None

        return _Aggregate(item.name or f"{call.name}_{_path_name(call.args[0]) or ''}", extreme)

    def summarize(
        self, op: Operator, columns: Columns, rows: list[Row]
    ) -> tuple[Columns, list[Row]]:
        by = self.named(op.by, columns)
        aggregates = [self.aggregate(item, columns) for item in op.items]
        names = tuple([name for name, _ in by] + [a.name for a in aggregates])
        groups: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Row]]] = {}
        for row in rows:
            values = tuple(fn(row) for _, fn in by)
            groups.setdefault(tuple(map(_hashable, values)), (values, []))[1].append(row)
        if not by and not groups:
            groups[()] = ((), [])
        return names, [
            dict(zip(names, (*values, *(a.compute(group) for a in aggregates)), strict=True))
            for values, group in groups.values()
        ]


def run_query(
    text: str, resolve: TableResolver | Mapping[str, Table], *, now: dt.datetime
) -> QueryResult:
    """Parse and evaluate ``text``; table names are looked up case-insensitively.

    Raises :class:`KqlSyntaxError` or :class:`KqlSemanticError` for a query the engine refuses.
    """
    if isinstance(resolve, Mapping):
        lowered = {name.lower(): table for name, table in resolve.items()}
        resolve = lambda name: lowered.get(name.lower())  # noqa: E731
    query = parse_query(text)
    table = resolve(query.table)
    if table is None:
        raise KqlSemanticError(
            f"Table '{query.table}' could not be found", query.table_pos, query.table
        )
    columns, rows = table.columns, list(table.rows)
    runner = _QueryRunner(now)
    for operator in query.operators:
        columns, rows = runner.apply(operator, columns, rows)
    return QueryResult(columns, rows, any(op.kind == "take" for op in query.operators))
