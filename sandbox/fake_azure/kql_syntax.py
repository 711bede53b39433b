"""Tokens, syntax tree and parser for the part of KQL (Kusto) the fake Azure evaluates.

Resource Graph and Log Analytics both speak KQL. The fake parses the query for real, so an
adapter that builds a wrong query fails here the way it would fail against Azure (400), instead
of passing against a canned answer. The grammar is what the app's queries
(`shared/adapters/kql.py`) and the sandbox's own tests use; anything else is refused.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


class KqlError(Exception):
    """A query the engine refuses; ``position`` is a 0-based character offset when known."""

    def __init__(self, message: str, position: int | None = None, token: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.token = token


class KqlSyntaxError(KqlError):
    """The text is not a query this engine can parse."""


class KqlSemanticError(KqlError):
    """The query parses but names something unknown or misuses a function."""


@dataclass(frozen=True)
class Token:
    """One lexical token; ``value`` holds the decoded literal for strings, numbers and timespans."""

    kind: str  # ident | string | number | timespan | datetime | op | eof
    text: str
    pos: int
    value: Any = None


_TIMESPAN_UNITS = {
    "d": dt.timedelta(days=1),
    "h": dt.timedelta(hours=1),
    "m": dt.timedelta(minutes=1),
    "s": dt.timedelta(seconds=1),
    "ms": dt.timedelta(milliseconds=1),
}
# One alternative per token kind, tried in order; negated words must come before `!=`/`!~`.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    |(?P<verbatim>@'(?:[^']|'')*'|@"(?:[^"]|"")*")
    |(?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    |(?P<datetime>datetime\s*\([^)]*\))
    |(?P<timespan>\d+(?:\.\d+)?(?:ms|d|h|m|s)(?![\w]))
    |(?P<number>\d+(?:\.\d+)?(?![\w]))
    |(?P<op>!(?:in~|in|has|contains)(?![\w~])|in~|==|!=|=~|!~|<=|>=|\.\.|[<>=(),.\[\]|;])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}


def parse_datetime_literal(text: str) -> dt.datetime:
    """Parse the inside of ``datetime(...)``; Kusto assumes UTC when no offset is given."""
    raw = text.strip().strip("'\"").strip()
    if not raw:
        raise ValueError("empty datetime")
    normalised = raw.replace(" ", "T", 1) if "T" not in raw and " " in raw else raw
    if normalised.endswith(("Z", "z")):
        normalised = normalised[:-1] + "+00:00"
    # fromisoformat in 3.11 accepts up to 6 fractional digits; Kusto prints 7.
    match = re.match(r"^(.*?\.\d{6})\d+(.*)$", normalised)
    if match:
        normalised = match.group(1) + match.group(2)
    value = dt.datetime.fromisoformat(normalised)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _unescape(body: str, pos: int) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        if code not in _ESCAPES:
            raise KqlSyntaxError(f"unknown escape sequence \\{code}", pos, "\\" + code)
        return _ESCAPES[code]

    return _ESCAPE.sub(one, body)


def _token(kind: str, text: str, pos: int) -> Token:
    if kind == "verbatim":
        quote = text[1]
        return Token("string", text, pos, text[2:-1].replace(quote * 2, quote))
    if kind == "string":
        return Token("string", text, pos, _unescape(text[1:-1], pos))
    if kind == "timespan":
        number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return Token("timespan", text, pos, float(number) * _TIMESPAN_UNITS[unit])
    if kind == "number":
        return Token("number", text, pos, float(text) if "." in text else int(text))
    if kind == "datetime":
        inner = text[text.index("(") + 1 : -1]
        try:
            return Token("datetime", text, pos, parse_datetime_literal(inner))
        except ValueError as exc:
            raise KqlSyntaxError(f"invalid datetime literal '{inner}'", pos, inner) from exc
    return Token(kind, text, pos)


def tokenize(text: str) -> list[Token]:
    """Split query text into tokens; raises :class:`KqlSyntaxError` on anything unknown."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise KqlSyntaxError(f"unexpected character '{text[pos]}'", pos, text[pos])
        if match.lastgroup != "space":
            tokens.append(_token(match.lastgroup, match.group(0), pos))
        pos = match.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


# ---------------------------------------------------------------------------------------------
# syntax tree


@dataclass(frozen=True)
class Expr:
    """Base of scalar expressions; ``pos`` points into the query text for error messages."""

    pos: int


@dataclass(frozen=True)
class Literal(Expr):
    """A constant: string, number, bool, datetime or timespan."""

    value: Any


@dataclass(frozen=True)
class ColumnRef(Expr):
    """A bare identifier naming a column."""

    name: str


@dataclass(frozen=True)
class Member(Expr):
    """``target.name`` or ``target['name']`` on a dynamic value."""

    target: Expr
    name: str


@dataclass(frozen=True)
class Call(Expr):
    """A function or aggregate call."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Binary(Expr):
    """Comparison, string predicate, ``in`` list (``right`` is a tuple), and/or."""

    op: str
    left: Expr
    right: Any


@dataclass(frozen=True)
class NamedExpr:
    """``name = expr`` or a bare ``expr`` (``name`` is None: derived later)."""

    name: str | None
    expr: Expr


@dataclass(frozen=True)
class Operator:
    """One tabular operator: ``kind`` is where/project/extend/order/take/summarize/count."""

    pos: int
    kind: str
    items: tuple[Any, ...] = ()
    by: tuple[NamedExpr, ...] = ()


@dataclass(frozen=True)
class Query:
    """A table name followed by a pipeline of operators."""

    table: str
    table_pos: int
    operators: tuple[Operator, ...] = field(default_factory=tuple)


_COMPARISONS = frozenset(
    ("==", "!=", "=~", "!~", "<", ">", "<=", ">=", "has", "!has", "contains", "!contains")
) | {"startswith"}
_IN_LISTS = frozenset(["in", "in~", "!in", "!in~"])


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.current.kind in ("op", "ident") and self.current.text in texts

    def expect(self, text: str) -> Token:
        if not self.at(text):
            self.fail(f"expected '{text}'")
        return self.advance()

    def expect_ident(self) -> Token:
        if self.current.kind != "ident":
            self.fail("expected a name")
        return self.advance()

    def fail(self, message: str) -> None:
        token = self.current
        raise KqlSyntaxError(
            f"{message}, found '{token.text or 'end of query'}'", token.pos, token.text
        )

    def parse(self) -> Query:
        table = self.expect_ident()
        operators: list[Operator] = []
        while self.at("|"):
            self.advance()
            operators.append(self.parse_operator())
        if self.at(";"):
            self.advance()
        if self.current.kind != "eof":
            self.fail("unexpected text after the query")
        return Query(table.text, table.pos, tuple(operators))

    def parse_operator(self) -> Operator:
        token = self.expect_ident()
        word, pos = token.text, token.pos
        if word in ("where", "filter"):
            return Operator(pos, "where", (self.parse_expr(),))
        if word in ("project", "extend"):
            return Operator(pos, word, self.parse_named_list())
        if word in ("order", "sort"):
            self.expect("by")
            return Operator(pos, "order", self.parse_list(self.parse_sort_key))
        if word in ("take", "limit"):
            if self.current.kind != "number" or not isinstance(self.current.value, int):
                self.fail("take/limit needs a non-negative whole number")
            return Operator(pos, "take", (self.advance().value,))
        if word == "summarize":
            return self.parse_summarize(pos)
        if word == "count":
            return Operator(pos, "count")
        raise KqlSyntaxError(f"unsupported or unknown query operator '{word}'", pos, word)

    def parse_summarize(self, pos: int) -> Operator:
        aggregates = () if self.at("by") else self.parse_named_list()
        by: tuple[NamedExpr, ...] = ()
        if self.at("by"):
            self.advance()
            by = self.parse_named_list()
        if not aggregates and not by:
            self.fail("summarize needs an aggregate or a 'by' clause")
        return Operator(pos, "summarize", aggregates, by)

    def parse_list(self, parse_one: Any) -> tuple[Any, ...]:
        items = [parse_one()]
        while self.at(","):
            self.advance()
            items.append(parse_one())
        return tuple(items)

    def parse_named_list(self) -> tuple[NamedExpr, ...]:
        return self.parse_list(self.parse_named)

    def parse_named(self) -> NamedExpr:
        following = self.tokens[min(self.index + 1, len(self.tokens) - 1)]
        if self.current.kind == "ident" and following.text == "=" and following.kind == "op":
            name = self.advance().text
            self.advance()
            return NamedExpr(name, self.parse_expr())
        return NamedExpr(None, self.parse_expr())

    def parse_sort_key(self) -> tuple[Expr, bool]:
        expr = self.parse_expr()
        descending = True  # Kusto sorts descending unless told otherwise.
        if self.at("asc", "desc"):
            descending = self.advance().text == "desc"
        return expr, descending

    def parse_expr(self) -> Expr:
        left = self.parse_and()
        while self.at("or"):
            pos = self.advance().pos
            left = Binary(pos, "or", left, self.parse_and())
        return left

    def parse_and(self) -> Expr:
        left = self.parse_comparison()
        while self.at("and"):
            pos = self.advance().pos
            left = Binary(pos, "and", left, self.parse_comparison())
        return left

    def parse_comparison(self) -> Expr:
        left = self.parse_postfix()
        token = self.current
        if token.kind in ("op", "ident") and token.text in _COMPARISONS:
            self.advance()
            return Binary(token.pos, token.text, left, self.parse_postfix())
        if token.text in _IN_LISTS:
            self.advance()
            self.expect("(")
            items = self.parse_list(self.parse_expr)
            self.expect(")")
            return Binary(token.pos, token.text, left, items)
        if token.text == "between":
            self.advance()
            self.expect("(")
            low = self.parse_postfix()
            self.expect("..")
            high = self.parse_postfix()
            self.expect(")")
            return Binary(token.pos, "between", left, (low, high))
        return left

    def parse_postfix(self) -> Expr:
        expr = self.parse_primary()
        while self.at(".", "["):
            if self.advance().text == ".":
                expr = Member(self.current.pos, expr, self.expect_ident().text)
                continue
            key = self.current
            if key.kind != "string":
                self.fail("expected a quoted property name")
            self.advance()
            self.expect("]")
            expr = Member(key.pos, expr, key.value)
        return expr

    def parse_primary(self) -> Expr:
        token = self.current
        if token.kind in ("string", "number", "timespan", "datetime"):
            self.advance()
            return Literal(token.pos, token.value)
        if self.at("("):
            self.advance()
            inner = self.parse_expr()
            self.expect(")")
            return inner
        if token.kind != "ident":
            self.fail("expected an expression")
        self.advance()
        if self.at("("):
            self.advance()
            args = () if self.at(")") else self.parse_list(self.parse_expr)
            self.expect(")")
            return Call(token.pos, token.text, args)
        constants = {"true": True, "false": False, "null": None}
        if token.text in constants:
            return Literal(token.pos, constants[token.text])
        return ColumnRef(token.pos, token.text)


@lru_cache(maxsize=512)
def parse_query(text: str) -> Query:
    """Parse query text into a :class:`Query`; cached because paging repeats the same text."""
    if not text or not text.strip():
        raise KqlSyntaxError("the query is empty", 0, "")
    return _Parser(text).parse()
