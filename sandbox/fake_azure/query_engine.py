"""Evaluates parsed KQL over in-memory rows for the fake Resource Graph and Log Analytics.

Rows are plain dicts (column name -> value). Dynamic values are dicts/lists, datetimes are aware
UTC ``datetime`` objects, timespans are ``timedelta``. Every expression is compiled once per query
into a Python closure, so a where-clause over thousands of rows costs one function call per row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kql_syntax import (
    ArrayLiteral,
    BagLiteral,
    Between,
    Binary,
    Call,
    ColumnRef,
    Count,
    Distinct,
    Expr,
    Extend,
    Index,
    InList,
    Join,
    KqlError,
    KqlSemanticError,
    KqlSyntaxError,
    Literal,
    Member,
    NamedExpr,
    Operator,
    OrderBy,
    Project,
    ProjectAway,
    ProjectKeep,
    ProjectRename,
    Query,
    SortKey,
    Summarize,
    Take,
    Top,
    Unary,
    Where,
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


@dataclass(frozen=True)
class Table:
    """A named table: its column order and its rows (rows are never mutated by the engine)."""

    name: str
    columns: tuple[str, ...]
    rows: Sequence[Row]


TableResolver = Callable[[str], Table | None]


@dataclass(frozen=True)
class QueryResult:
    """Columns in output order and the rows; ``limited`` says the query used take/limit/top."""

    columns: tuple[str, ...]
    rows: list[Row]
    limited: bool


# ---------------------------------------------------------------------------------------------
# value semantics


def format_timespan(value: dt.timedelta) -> str:
    """Kusto's text form of a timespan: ``[-][d.]hh:mm:ss[.fffffff]``."""
    total_ticks = round(value.total_seconds() * 10_000_000)
    sign = "-" if total_ticks < 0 else ""
    total_ticks = abs(total_ticks)
    seconds, ticks = divmod(total_ticks, 10_000_000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    text = (
        f"{sign}{days}.{hours:02d}:{minutes:02d}:{seconds:02d}"
        if days
        else (f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}")
    )
    if ticks:
        text += f".{ticks:07d}"
    return text


def format_datetime(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as both services print datetimes."""
    utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def json_ready(value: Any) -> Any:
    """Convert engine values into JSON-serialisable ones (datetimes and timespans become text)."""
    if isinstance(value, dt.datetime):
        return format_datetime(value)
    if isinstance(value, dt.timedelta):
        return format_timespan(value)
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
    if isinstance(value, dt.timedelta):
        return format_timespan(value)
    if isinstance(value, dict | list):
        return json.dumps(json_ready(value), separators=(",", ":"))
    return str(value)


def column_type(values: Iterable[Any]) -> str:
    """The Log Analytics column type of a column, from its first non-null value."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "long"
        if isinstance(value, float):
            return "real"
        if isinstance(value, dt.datetime):
            return "datetime"
        if isinstance(value, dt.timedelta):
            return "timespan"
        if isinstance(value, str):
            return "string"
        return "dynamic"
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


def _compare(left: Any, right: Any) -> int | None:
    if left is None or right is None:
        return None
    if _is_number(left) and _is_number(right):
        pass
    elif isinstance(left, dt.datetime) and isinstance(right, str):
        right = _to_datetime(right)
    elif isinstance(left, str) and isinstance(right, dt.datetime):
        left = _to_datetime(left)
    elif not (
        (isinstance(left, str) and isinstance(right, str))
        or (isinstance(left, dt.datetime) and isinstance(right, dt.datetime))
        or (isinstance(left, dt.timedelta) and isinstance(right, dt.timedelta))
    ):
        return None
    if left is None or right is None:
        return None
    return int((left > right) - (left < right))


def _has_term(haystack: str, needle: str) -> bool:
    """Kusto ``has``: the needle must start and end on term boundaries (runs of letters/digits)."""
    if not needle:
        return True
    start = 0
    while True:
        index = haystack.find(needle, start)
        if index < 0:
            return False
        end = index + len(needle)
        starts_on_boundary = (
            index == 0 or not needle[0].isalnum() or not haystack[index - 1].isalnum()
        )
        ends_on_boundary = (
            end == len(haystack) or not needle[-1].isalnum() or not haystack[end].isalnum()
        )
        if starts_on_boundary and ends_on_boundary:
            return True
        start = index + 1


def _to_datetime(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_datetime_literal(value)
        except ValueError:
            return None
    return None


def _to_timespan(value: Any) -> dt.timedelta | None:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str):
        match = re.fullmatch(
            r"(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?", value.strip()
        )
        if match:
            sign, days, hours, minutes, seconds, fraction = match.groups()
            result = dt.timedelta(
                days=int(days or 0),
                hours=int(hours),
                minutes=int(minutes),
                seconds=int(seconds),
                microseconds=int((fraction or "0").ljust(7, "0")[:6]),
            )
            return -result if sign else result
    return None


def _to_long(value: Any) -> int | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return int(value)
    if _is_number(value):
        return int(value) if math.isfinite(value) else None
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def _to_real(value: Any) -> float | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if _is_number(value):
        return bool(value != 0)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return None


def _parse_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(json_ready(value), sort_keys=True)
    return value


def _arithmetic(op: str, left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    if op == "+":
        if _is_number(left) and _is_number(right):
            return left + right
        if isinstance(left, dt.datetime) and isinstance(right, dt.timedelta):
            return left + right
        if isinstance(left, dt.timedelta) and isinstance(right, dt.datetime | dt.timedelta):
            return left + right
        return None
    if op == "-":
        if _is_number(left) and _is_number(right):
            return left - right
        if isinstance(left, dt.datetime) and isinstance(right, dt.datetime | dt.timedelta):
            return left - right
        if isinstance(left, dt.timedelta) and isinstance(right, dt.timedelta):
            return left - right
        return None
    if op == "*":
        if _is_number(left) and _is_number(right):
            return left * right
        if isinstance(left, dt.timedelta) and _is_number(right):
            return left * right
        if _is_number(left) and isinstance(right, dt.timedelta):
            return right * left
        return None
    if op == "/":
        if _is_number(left) and _is_number(right):
            if right == 0:
                return None
            if isinstance(left, int) and isinstance(right, int):
                return int(left / right)  # Kusto long division truncates toward zero.
            return left / right
        if isinstance(left, dt.timedelta) and isinstance(right, dt.timedelta):
            return left / right if right else None
        if isinstance(left, dt.timedelta) and _is_number(right):
            return left / right if right else None
        return None
    if op == "%":
        if _is_number(left) and _is_number(right) and right:
            return (
                math.fmod(left, right)
                if isinstance(left, float) or isinstance(right, float)
                else (int(math.fmod(left, right)))
            )
        return None
    raise AssertionError(op)


def _bin(value: Any, size: Any) -> Any:
    if value is None or size is None:
        return None
    if (
        isinstance(value, dt.datetime)
        and isinstance(size, dt.timedelta)
        and size.total_seconds() > 0
    ):
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        steps = math.floor((value - epoch) / size)
        return epoch + size * steps
    if (
        isinstance(value, dt.timedelta)
        and isinstance(size, dt.timedelta)
        and size.total_seconds() > 0
    ):
        return size * math.floor(value / size)
    if _is_number(value) and _is_number(size) and size:
        result = math.floor(value / size) * size
        return int(result) if isinstance(value, int) and isinstance(size, int) else float(result)
    return None


def _substring(text: Any, start: Any, length: Any = None) -> str:
    source = to_kql_string(text)
    begin = max(_to_long(start) or 0, 0)
    if length is None:
        return source[begin:]
    return source[begin : begin + max(_to_long(length) or 0, 0)]


def _split(text: Any, delimiter: Any, index: Any = None) -> list[Any] | None:
    parts: list[Any] = (
        to_kql_string(text).split(to_kql_string(delimiter))
        if to_kql_string(delimiter)
        else [to_kql_string(text)]
    )
    if index is None:
        return parts
    position = _to_long(index)
    if position is None or not -len(parts) <= position < len(parts):
        return []
    return [parts[position]]


def _extract(pattern: Any, group: Any, text: Any) -> str | None:
    try:
        match = re.search(to_kql_string(pattern), to_kql_string(text))
    except re.error:
        return None
    if not match:
        return None
    index = _to_long(group) or 0
    try:
        return match.group(index)
    except IndexError:
        return None


def _isempty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, dict | list) and not value)


def _coalesce(*values: Any) -> Any:
    for value in values:
        if not (value is None or value == ""):
            return value
    return values[-1] if values else None


def _case(*args: Any) -> Any:
    for index in range(0, len(args) - 1, 2):
        if args[index] is True:
            return args[index + 1]
    return args[-1]


def _array_length(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


def _strcat_array(value: Any, delimiter: Any) -> str:
    if not isinstance(value, list):
        return ""
    return to_kql_string(delimiter).join(to_kql_string(v) for v in value)


def _not(value: Any) -> bool | None:
    return None if value is None else not bool(value)


# name -> (min args, max args or None, implementation)
_SCALAR_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., Any]]] = {
    "tostring": (1, 1, to_kql_string),
    "tolower": (1, 1, lambda v: to_kql_string(v).lower()),
    "toupper": (1, 1, lambda v: to_kql_string(v).upper()),
    "strlen": (1, 1, lambda v: len(to_kql_string(v))),
    "isempty": (1, 1, _isempty),
    "isnotempty": (1, 1, lambda v: not _isempty(v)),
    "isnull": (1, 1, lambda v: v is None),
    "isnotnull": (1, 1, lambda v: v is not None),
    "strcat": (1, None, lambda *v: "".join(to_kql_string(x) for x in v)),
    "substring": (2, 3, _substring),
    "split": (2, 3, _split),
    "extract": (3, 3, _extract),
    "replace_string": (
        3,
        3,
        lambda s, a, b: (
            to_kql_string(s).replace(to_kql_string(a), to_kql_string(b))
            if to_kql_string(a)
            else to_kql_string(s)
        ),
    ),
    "indexof": (2, 2, lambda s, sub: to_kql_string(s).find(to_kql_string(sub))),
    "trim_start": (
        2,
        2,
        lambda pattern, s: re.sub("^(?:" + to_kql_string(pattern) + ")+", "", to_kql_string(s)),
    ),
    "trim_end": (
        2,
        2,
        lambda pattern, s: re.sub("(?:" + to_kql_string(pattern) + ")+$", "", to_kql_string(s)),
    ),
    "iff": (3, 3, lambda c, a, b: a if c is True else b),
    "iif": (3, 3, lambda c, a, b: a if c is True else b),
    "case": (3, None, _case),
    "coalesce": (1, None, _coalesce),
    "not": (1, 1, _not),
    "toint": (1, 1, _to_long),
    "tolong": (1, 1, _to_long),
    "toreal": (1, 1, _to_real),
    "todouble": (1, 1, _to_real),
    "tobool": (1, 1, _to_bool),
    "toboolean": (1, 1, _to_bool),
    "todatetime": (1, 1, _to_datetime),
    "totimespan": (1, 1, _to_timespan),
    "todynamic": (1, 1, _parse_json),
    "parse_json": (1, 1, _parse_json),
    "dynamic": (1, 1, lambda v: v),
    "array_length": (1, 1, _array_length),
    "pack_array": (0, None, lambda *v: list(v)),
    "strcat_array": (2, 2, _strcat_array),
    "bin": (2, 2, _bin),
    "floor": (2, 2, _bin),
    "abs": (1, 1, lambda v: abs(v) if _is_number(v) or isinstance(v, dt.timedelta) else None),
}
_AGGREGATES = frozenset(
    [
        "count",
        "countif",
        "dcount",
        "sum",
        "min",
        "max",
        "avg",
        "make_set",
        "make_list",
        "take_any",
        "any",
        "arg_max",
        "arg_min",
    ]
)
_CONVERSIONS_KEEPING_NAME = frozenset(
    [
        "tostring",
        "tolower",
        "toupper",
        "toint",
        "tolong",
        "toreal",
        "todouble",
        "tobool",
        "todatetime",
        "todynamic",
        "parse_json",
        "bin",
        "floor",
    ]
)


# ---------------------------------------------------------------------------------------------
# compiling expressions


def _column_getter(name: str) -> Evaluator:
    return lambda row: row.get(name)


def _path_name(expr: Expr) -> str | None:
    if isinstance(expr, ColumnRef):
        return expr.name
    if isinstance(expr, Member):
        base = _path_name(expr.target)
        return None if base is None else f"{base}_{expr.name}"
    if isinstance(expr, Call) and expr.name in _CONVERSIONS_KEEPING_NAME and expr.args:
        return _path_name(expr.args[0])
    return None


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
            target = self.compile(expr.target)
            key = expr.name

            def member(row: Row) -> Any:
                value = target(row)
                return value.get(key) if isinstance(value, dict) else None

            return member
        if isinstance(expr, Index):
            target = self.compile(expr.target)
            index = self.compile(expr.index)

            def indexed(row: Row) -> Any:
                value = target(row)
                position = index(row)
                if isinstance(value, list) and _is_number(position):
                    i = int(position)
                    return value[i] if -len(value) <= i < len(value) else None
                if isinstance(value, dict) and isinstance(position, str):
                    return value.get(position)
                return None

            return indexed
        if isinstance(expr, ArrayLiteral):
            items = [self.compile(item) for item in expr.items]
            return lambda row: [item(row) for item in items]
        if isinstance(expr, BagLiteral):
            pairs = [(key, self.compile(value)) for key, value in expr.pairs]
            return lambda row: {key: value(row) for key, value in pairs}
        if isinstance(expr, Unary):
            operand = self.compile(expr.operand)

            def negate(row: Row) -> Any:
                value = operand(row)
                return -value if _is_number(value) or isinstance(value, dt.timedelta) else None

            return negate
        if isinstance(expr, Binary):
            return self.compile_binary(expr)
        if isinstance(expr, InList):
            return self.compile_in(expr)
        if isinstance(expr, Between):
            left = self.compile(expr.left)
            low = self.compile(expr.low)
            high = self.compile(expr.high)
            negated = expr.negated

            def between(row: Row) -> bool | None:
                value = left(row)
                above = _compare(value, low(row))
                below = _compare(value, high(row))
                if above is None or below is None:
                    return None
                inside = above >= 0 and below <= 0
                return not inside if negated else inside

            return between
        if isinstance(expr, Call):
            return self.compile_call(expr)
        raise KqlSemanticError(f"unsupported expression {type(expr).__name__}", expr.pos)

    def compile_binary(self, expr: Binary) -> Evaluator:
        left = self.compile(expr.left)
        right = self.compile(expr.right)
        op = expr.op
        if op == "and":
            return lambda row: left(row) is True and right(row) is True
        if op == "or":
            return lambda row: left(row) is True or right(row) is True
        if op == "==":
            return lambda row: _equals(left(row), right(row))

        if op == "!=":

            def not_equal(row: Row) -> bool | None:
                result = _equals(left(row), right(row))
                return None if result is None else not result

            return not_equal
        if op in ("=~", "!~"):
            negated = op == "!~"

            def equal_ignoring_case(row: Row) -> bool:
                same = to_kql_string(left(row)).lower() == to_kql_string(right(row)).lower()
                return not same if negated else same

            return equal_ignoring_case
        if op in ("<", ">", "<=", ">="):
            accept = {"<": (-1,), ">": (1,), "<=": (-1, 0), ">=": (0, 1)}[op]

            def ordered(row: Row) -> bool | None:
                result = _compare(left(row), right(row))
                return None if result is None else result in accept

            return ordered
        if op in ("+", "-", "*", "/", "%"):
            return lambda row: _arithmetic(op, left(row), right(row))
        if op == "matches regex":

            def matches(row: Row) -> bool:
                try:
                    return (
                        re.search(to_kql_string(right(row)), to_kql_string(left(row))) is not None
                    )
                except re.error:
                    return False

            return matches
        negated = op.startswith("!")
        word = op.lstrip("!")
        case_sensitive = word.endswith("_cs")
        word = word.removesuffix("_cs")
        tests: dict[str, Callable[[str, str], bool]] = {
            "has": _has_term,
            "contains": lambda hay, needle: needle in hay,
            "startswith": lambda hay, needle: hay.startswith(needle),
            "endswith": lambda hay, needle: hay.endswith(needle),
        }
        if word not in tests:
            raise KqlSemanticError(f"unsupported operator '{op}'", expr.pos, op)
        test = tests[word]

        def string_predicate(row: Row) -> bool:
            haystack = to_kql_string(left(row))
            needle = to_kql_string(right(row))
            if not case_sensitive:
                haystack, needle = haystack.lower(), needle.lower()
            found = test(haystack, needle)
            return not found if negated else found

        return string_predicate

    def compile_in(self, expr: InList) -> Evaluator:
        left = self.compile(expr.left)
        items = [self.compile(item) for item in expr.items]
        negated = expr.op.startswith("!")
        ignore_case = expr.op.endswith("~")
        constant = all(isinstance(item, Literal) for item in expr.items)

        def flatten(values: Iterable[Any]) -> list[Any]:
            flat: list[Any] = []
            for value in values:
                if isinstance(value, list):
                    flat.extend(value)
                else:
                    flat.append(value)
            return flat

        if ignore_case:
            # A constant list (the usual `in~ ('a', ...)` with thousands of ids) becomes one set.
            folded = (
                {to_kql_string(v).lower() for v in flatten(i({}) for i in items)}
                if constant
                else None
            )

            def in_ignoring_case(row: Row) -> bool:
                candidates = (
                    folded
                    if folded is not None
                    else {to_kql_string(v).lower() for v in flatten(i(row) for i in items)}
                )
                found = to_kql_string(left(row)).lower() in candidates
                return not found if negated else found

            return in_ignoring_case

        def in_exact(row: Row) -> bool:
            value = left(row)
            if value is None:
                return negated
            found = any(_equals(value, candidate) for candidate in flatten(i(row) for i in items))
            return not found if negated else found

        return in_exact

    def compile_call(self, expr: Call) -> Evaluator:
        name = expr.name
        if name in _AGGREGATES:
            raise KqlSemanticError(
                f"aggregate function '{name}' is only allowed in summarize", expr.pos, name
            )
        if expr.star:
            raise KqlSemanticError(f"'*' is not a valid argument of '{name}'", expr.pos, name)
        if name == "now":
            self._check_arity(expr, 0, 1)
            offset = self._constant_timespan(expr.args[0]) if expr.args else dt.timedelta(0)
            value = self.now + offset
            return lambda row: value
        if name == "ago":
            self._check_arity(expr, 1, 1)
            span = self._constant_timespan(expr.args[0])
            ago_value = self.now - span
            return lambda row: ago_value
        if name not in _SCALAR_FUNCTIONS:
            raise KqlSemanticError(f"Unknown function: '{name}'", expr.pos, name)
        low, high, function = _SCALAR_FUNCTIONS[name]
        self._check_arity(expr, low, high)
        args = [self.compile(arg) for arg in expr.args]
        if len(args) == 1:
            only = args[0]
            return lambda row: function(only(row))
        return lambda row: function(*(arg(row) for arg in args))

    def _constant_timespan(self, expr: Expr) -> dt.timedelta:
        value = self.compile(expr)({})
        span = _to_timespan(value)
        if span is None:
            raise KqlSemanticError("expected a timespan", expr.pos)
        return span

    @staticmethod
    def _check_arity(expr: Call, low: int, high: int | None) -> None:
        count = len(expr.args)
        if count < low or (high is not None and count > high):
            expected = f"{low}" if low == high else f"{low}..{high if high is not None else 'n'}"
            raise KqlSemanticError(
                f"function '{expr.name}' expects {expected} arguments, got {count}",
                expr.pos,
                expr.name,
            )


# ---------------------------------------------------------------------------------------------
# aggregates


@dataclass(frozen=True)
class _Aggregate:
    """One compiled aggregate: output column names and a function from a group's rows to values."""

    names: tuple[str, ...]
    compute: Callable[[list[Row]], tuple[Any, ...]]


def _sort_value(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if _is_number(value):
        return (0, value)
    if isinstance(value, dt.datetime):
        return (1, value.timestamp())
    if isinstance(value, dt.timedelta):
        return (2, value.total_seconds())
    if isinstance(value, str):
        return (3, value)
    return (4, to_kql_string(value))


def _extreme(values: list[Any], largest: bool) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    picker = max if largest else min
    return picker(present, key=_sort_value)


# ---------------------------------------------------------------------------------------------
# running a query


class _QueryRunner:
    def __init__(self, resolve: TableResolver, now: dt.datetime) -> None:
        self.resolve = resolve
        self.now = now

    def run(self, query: Query) -> tuple[tuple[str, ...], list[Row], bool]:
        table = self.resolve(query.table)
        if table is None:
            raise KqlSemanticError(
                f"Table '{query.table}' could not be found", query.table_pos, query.table
            )
        columns: tuple[str, ...] = table.columns
        rows: list[Row] = list(table.rows)
        limited = False
        for operator in query.operators:
            columns, rows = self.apply(operator, columns, rows)
            if isinstance(operator, Take | Top):
                limited = True
        return columns, rows, limited

    def compiler(self, columns: Sequence[str]) -> _ExpressionCompiler:
        return _ExpressionCompiler(columns, self.now)

    def apply(
        self, op: Operator, columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
        if isinstance(op, Where):
            predicate = self.compiler(columns).compile(op.predicate)
            return columns, [row for row in rows if predicate(row) is True]
        if isinstance(op, Project):
            return self.project(op.items, columns, rows)
        if isinstance(op, Extend):
            return self.extend(op.items, columns, rows)
        if isinstance(op, ProjectAway):
            self.require_columns(op.names, columns, op.pos)
            kept = tuple(c for c in columns if c not in op.names)
            return kept, [{c: row.get(c) for c in kept} for row in rows]
        if isinstance(op, ProjectKeep):
            self.require_columns(op.names, columns, op.pos)
            kept = tuple(c for c in columns if c in op.names)
            return kept, [{c: row.get(c) for c in kept} for row in rows]
        if isinstance(op, ProjectRename):
            mapping = {old: new for new, old in op.renames}
            self.require_columns(tuple(mapping), columns, op.pos)
            renamed = tuple(mapping.get(c, c) for c in columns)
            return renamed, [{mapping.get(k, k): v for k, v in row.items()} for row in rows]
        if isinstance(op, OrderBy):
            return columns, self.sort(op.keys, columns, rows)
        if isinstance(op, Take):
            return columns, rows[: self.constant_count(op.count, columns)]
        if isinstance(op, Top):
            count = self.constant_count(op.count, columns)
            return columns, self.sort((op.key,), columns, rows)[:count]
        if isinstance(op, Summarize):
            return self.summarize(op, columns, rows)
        if isinstance(op, Count):
            return ("Count",), [{"Count": len(rows)}]
        if isinstance(op, Distinct):
            return self.distinct(op, columns, rows)
        if isinstance(op, Join):
            return self.join(op, columns, rows)
        raise KqlSemanticError(f"unsupported operator {type(op).__name__}", op.pos)

    @staticmethod
    def require_columns(names: Iterable[str], columns: Sequence[str], pos: int) -> None:
        for name in names:
            if name not in columns:
                raise KqlSemanticError(f"Failed to resolve column named '{name}'", pos, name)

    def constant_count(self, expr: Expr, columns: Sequence[str]) -> int:
        value = self.compiler(columns).compile(expr)({})
        if not _is_number(value) or value < 0:
            raise KqlSemanticError("take/limit/top needs a non-negative number", expr.pos)
        return int(value)

    def named(
        self, items: Sequence[NamedExpr], columns: Sequence[str]
    ) -> list[tuple[str, Evaluator]]:
        compiler = self.compiler(columns)
        compiled: list[tuple[str, Evaluator]] = []
        for ordinal, item in enumerate(items, start=1):
            name = item.name or _path_name(item.expr) or f"Column{ordinal}"
            compiled.append((name, compiler.compile(item.expr)))
        return compiled

    def project(
        self, items: Sequence[NamedExpr], columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
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
        self, items: Sequence[NamedExpr], columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
        current = columns
        for item in items:
            # Each extend item may use the ones before it (Kusto evaluates them left to right).
            ((name, fn),) = self.named([item], current)
            rows = [{**row, name: fn(row)} for row in rows]
            if name not in current:
                current = (*current, name)
        return current, rows

    def sort(self, keys: Sequence[SortKey], columns: Sequence[str], rows: list[Row]) -> list[Row]:
        compiler = self.compiler(columns)
        ordered = list(rows)
        # Stable sorts applied from the last key to the first give a multi-key order.
        for key in reversed(keys):
            evaluate = compiler.compile(key.expr)
            nulls_first = key.nulls_first if key.nulls_first is not None else not key.descending
            null_rank = 0 if nulls_first != key.descending else 2

            def sort_key(
                row: Row, evaluate: Evaluator = evaluate, null_rank: int = null_rank
            ) -> tuple[Any, ...]:
                value = evaluate(row)
                if value is None:
                    return (null_rank,)
                return (1, *_sort_value(value))

            ordered.sort(key=sort_key, reverse=key.descending)
        return ordered

    def distinct(
        self, op: Distinct, columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
        if op.items:
            compiled = self.named([NamedExpr(None, e) for e in op.items], columns)
        else:
            compiled = [(c, _column_getter(c)) for c in columns]
        names = tuple(name for name, _ in compiled)
        seen: set[tuple[Any, ...]] = set()
        result: list[Row] = []
        for row in rows:
            values = tuple(fn(row) for _, fn in compiled)
            key = tuple(_hashable(v) for v in values)
            if key not in seen:
                seen.add(key)
                result.append(dict(zip(names, values, strict=True)))
        return names, result

    def compile_aggregate(self, item: NamedExpr, columns: tuple[str, ...]) -> _Aggregate:
        call = item.expr
        if not isinstance(call, Call) or call.name not in _AGGREGATES:
            raise KqlSemanticError(
                "summarize expects aggregate functions such as count() or max(x)", item.expr.pos
            )
        compiler = self.compiler(columns)
        args = [compiler.compile(a) for a in call.args]
        name = call.name
        arg_name = _path_name(call.args[0]) if call.args else None

        def expect(low: int, high: int) -> None:
            if not low <= len(args) <= high:
                raise KqlSemanticError(
                    f"aggregate '{name}' has the wrong number of arguments", call.pos, name
                )

        if name in ("arg_max", "arg_min"):
            if not args:
                raise KqlSemanticError(f"aggregate '{name}' needs an expression", call.pos, name)
            key_name = item.name or arg_name or f"{name}_"
            if call.star:
                extra = tuple(c for c in columns if c != key_name)
            else:
                extra_names = [_path_name(a) for a in call.args[1:]]
                if any(n is None for n in extra_names):
                    raise KqlSemanticError(
                        f"'{name}' takes column names after the expression", call.pos, name
                    )
                extra = tuple(n for n in extra_names if n is not None)
                self.require_columns(extra, columns, call.pos)
            key_fn = args[0]
            largest = name == "arg_max"

            def arg_extreme(group: list[Row]) -> tuple[Any, ...]:
                best: Row | None = None
                best_value: Any = None
                best_rank: tuple[int, Any] | None = None
                for row in group:
                    value = key_fn(row)
                    if value is None:
                        continue
                    rank = _sort_value(value)
                    if best_rank is None or (rank > best_rank if largest else rank < best_rank):
                        best, best_value, best_rank = row, value, rank
                if best is None:
                    return (None, *(None for _ in extra))
                return (best_value, *(best.get(c) for c in extra))

            return _Aggregate((key_name, *extra), arg_extreme)

        default_name = "count_" if name == "count" else f"{name}_{arg_name or ''}"
        out = item.name or default_name
        if name == "count":
            expect(0, 0)
            return _Aggregate((out,), lambda group: (len(group),))
        if name == "countif":
            expect(1, 1)
            predicate = args[0]
            return _Aggregate(
                (item.name or "countif_",),
                lambda group: (sum(1 for r in group if predicate(r) is True),),
            )
        expect(1, 2 if name in ("make_set", "make_list") else 1)
        value_fn = args[0]

        def non_null(group: list[Row]) -> list[Any]:
            return [v for v in (value_fn(r) for r in group) if v is not None]

        def numbers(group: list[Row]) -> list[Any]:
            return [v for v in non_null(group) if _is_number(v)]

        if name == "dcount":
            return _Aggregate((out,), lambda group: (len({_hashable(v) for v in non_null(group)}),))
        if name == "sum":
            return _Aggregate((out,), lambda group: (sum(numbers(group)),))
        if name == "avg":

            def average(group: list[Row]) -> tuple[Any, ...]:
                values = numbers(group)
                return (sum(values) / len(values) if values else None,)

            return _Aggregate((out,), average)
        if name in ("min", "max"):
            largest = name == "max"
            return _Aggregate(
                (out,), lambda group: (_extreme([value_fn(r) for r in group], largest),)
            )
        if name in ("take_any", "any"):
            return _Aggregate((out,), lambda group: (value_fn(group[0]) if group else None,))
        if name in ("make_set", "make_list"):
            unique = name == "make_set"

            def collect(group: list[Row]) -> tuple[Any, ...]:
                values: list[Any] = []
                seen: set[Any] = set()
                for r in group:
                    value = value_fn(r)
                    if value is None:
                        continue
                    items = value if isinstance(value, list) and unique else [value]
                    for v in items:
                        key = _hashable(v)
                        if unique and key in seen:
                            continue
                        seen.add(key)
                        values.append(v)
                return (values,)

            return _Aggregate((out,), collect)
        raise KqlSemanticError(f"unsupported aggregate '{name}'", call.pos, name)

    def summarize(
        self, op: Summarize, columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
        by = self.named(op.by, columns)
        aggregates = [self.compile_aggregate(item, columns) for item in op.aggregates]
        by_names = [name for name, _ in by]
        output_names: list[str] = list(by_names)
        for aggregate in aggregates:
            for name in aggregate.names:
                # Kusto renames a clash (arg_max(x, *) bringing back a by-column) with a suffix.
                candidate, suffix = name, 1
                while candidate in output_names:
                    candidate = f"{name}{suffix}"
                    suffix += 1
                output_names.append(candidate)
        groups: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Row]]] = {}
        for row in rows:
            values = tuple(fn(row) for _, fn in by)
            key = tuple(_hashable(v) for v in values)
            entry = groups.get(key)
            if entry is None:
                groups[key] = (values, [row])
            else:
                entry[1].append(row)
        if not by and not groups:
            groups[()] = ((), [])
        result: list[Row] = []
        for values, group in groups.values():
            produced: list[Any] = list(values)
            for aggregate in aggregates:
                produced.extend(aggregate.compute(group))
            result.append(dict(zip(output_names, produced, strict=True)))
        return tuple(output_names), result

    def join(
        self, op: Join, columns: tuple[str, ...], rows: list[Row]
    ) -> tuple[tuple[str, ...], list[Row]]:
        right_columns, right_rows, _ = self.run(op.right)
        left_keys = [left for left, _ in op.keys]
        right_keys = [right for _, right in op.keys]
        self.require_columns(left_keys, columns, op.pos)
        self.require_columns(right_keys, right_columns, op.pos)

        def key_of(row: Row, names: list[str]) -> tuple[Any, ...] | None:
            values = tuple(row.get(n) for n in names)
            if any(v is None for v in values):
                return None  # null keys never match in a Kusto join
            return tuple(_hashable(v) for v in values)

        kind = op.kind
        if kind in ("leftanti", "leftantisemi", "leftsemi"):
            right_index = {k for r in right_rows if (k := key_of(r, right_keys)) is not None}
            keep_matches = kind == "leftsemi"
            return columns, [
                r for r in rows if (key_of(r, left_keys) in right_index) == keep_matches
            ]
        if kind in ("rightanti", "rightantisemi", "rightsemi"):
            left_index = {k for r in rows if (k := key_of(r, left_keys)) is not None}
            keep_matches = kind == "rightsemi"
            return right_columns, [
                r for r in right_rows if (key_of(r, right_keys) in left_index) == keep_matches
            ]

        renamed: dict[str, str] = {}
        output = list(columns)
        for name in right_columns:
            candidate, suffix = name, 1
            while candidate in output:
                candidate = f"{name}{suffix}"
                suffix += 1
            renamed[name] = candidate
            output.append(candidate)
        empty_right = {renamed[c]: None for c in right_columns}
        empty_left = dict.fromkeys(columns)

        left_rows = rows
        if kind == "innerunique":
            seen: set[tuple[Any, ...] | None] = set()
            left_rows = []
            for row in rows:
                key = key_of(row, left_keys)
                if key in seen:
                    continue
                seen.add(key)
                left_rows.append(row)
        right_index_rows: dict[tuple[Any, ...], list[Row]] = {}
        for right_row in right_rows:
            key = key_of(right_row, right_keys)
            if key is not None:
                right_index_rows.setdefault(key, []).append(right_row)

        def merged(left_row: Row | None, right_row: Row | None) -> Row:
            out = dict(empty_left) if left_row is None else {c: left_row.get(c) for c in columns}
            if right_row is None:
                out.update(empty_right)
            else:
                out.update({renamed[c]: right_row.get(c) for c in right_columns})
            return out

        result: list[Row] = []
        matched_right: set[int] = set()
        for left_row in left_rows:
            key = key_of(left_row, left_keys)
            matches = right_index_rows.get(key, []) if key is not None else []
            for right_row in matches:
                matched_right.add(id(right_row))
                result.append(merged(left_row, right_row))
            if not matches and kind in ("leftouter", "fullouter"):
                result.append(merged(left_row, None))
        if kind in ("rightouter", "fullouter"):
            for right_row in right_rows:
                if id(right_row) not in matched_right:
                    result.append(merged(None, right_row))
        return tuple(output), result


def run_query(
    text: str, resolve: TableResolver | Mapping[str, Table], *, now: dt.datetime
) -> QueryResult:
    """Parse and evaluate ``text``; table names are looked up case-insensitively.

    Raises :class:`KqlSyntaxError` or :class:`KqlSemanticError` for a query the engine refuses.
    """
    resolver: TableResolver
    if isinstance(resolve, Mapping):
        lowered = {name.lower(): table for name, table in resolve.items()}

        def lookup(name: str) -> Table | None:
            return lowered.get(name.lower())

        resolver = lookup
    else:
        resolver = resolve
    query = parse_query(text)
    columns, rows, limited = _QueryRunner(resolver, now).run(query)
    return QueryResult(columns, rows, limited)
