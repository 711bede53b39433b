"""Tokens, syntax tree and parser for the subset of KQL (Kusto) that the fake Azure evaluates.

Resource Graph and Log Analytics both speak KQL. The fake parses the query for real, so an
adapter that builds a wrong query fails here the way it would fail against Azure (400), instead
of passing against a canned answer.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# ---------------------------------------------------------------------------------------------
# errors


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


# ---------------------------------------------------------------------------------------------
# tokens


@dataclass(frozen=True)
class Token:
    """One lexical token; ``value`` holds the decoded literal for strings, numbers and timespans."""

    kind: str  # ident | string | number | timespan | datetime | op | eof
    text: str
    pos: int
    value: Any = None


_HYPHENATED_OPERATORS = (
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "mv-expand",
)
_NEGATABLE_WORDS = (
    "in~",
    "in",
    "has_cs",
    "has",
    "contains_cs",
    "contains",
    "startswith_cs",
    "startswith",
    "endswith_cs",
    "endswith",
    "between",
)
_TIMESPAN_UNITS = {
    "d": dt.timedelta(days=1),
    "day": dt.timedelta(days=1),
    "days": dt.timedelta(days=1),
    "h": dt.timedelta(hours=1),
    "hr": dt.timedelta(hours=1),
    "hrs": dt.timedelta(hours=1),
    "hour": dt.timedelta(hours=1),
    "hours": dt.timedelta(hours=1),
    "m": dt.timedelta(minutes=1),
    "min": dt.timedelta(minutes=1),
    "minute": dt.timedelta(minutes=1),
    "minutes": dt.timedelta(minutes=1),
    "s": dt.timedelta(seconds=1),
    "sec": dt.timedelta(seconds=1),
    "second": dt.timedelta(seconds=1),
    "seconds": dt.timedelta(seconds=1),
    "ms": dt.timedelta(milliseconds=1),
    "milli": dt.timedelta(milliseconds=1),
    "millis": dt.timedelta(milliseconds=1),
    "millisecond": dt.timedelta(milliseconds=1),
    "milliseconds": dt.timedelta(milliseconds=1),
}
_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_]*")
_SYMBOLS = (
    "==",
    "!=",
    "=~",
    "!~",
    "<=",
    ">=",
    "..",
    "<",
    ">",
    "=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "|",
    "+",
    "-",
    "*",
    "/",
    "%",
    ":",
    ";",
)
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


def tokenize(text: str) -> list[Token]:
    """Split query text into tokens; raises :class:`KqlSyntaxError` on anything unknown."""
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        start = i
        # Verbatim string: @'...' / @"..." where a doubled quote stands for one quote.
        if ch == "@" and i + 1 < n and text[i + 1] in "'\"":
            quote = text[i + 1]
            i += 2
            chunks: list[str] = []
            while True:
                if i >= n:
                    raise KqlSyntaxError(
                        "unterminated string literal", start, text[start : start + 10]
                    )
                if text[i] == quote:
                    if i + 1 < n and text[i + 1] == quote:
                        chunks.append(quote)
                        i += 2
                        continue
                    i += 1
                    break
                chunks.append(text[i])
                i += 1
            tokens.append(Token("string", text[start:i], start, "".join(chunks)))
            continue
        if ch in "'\"":
            quote = ch
            i += 1
            chunks = []
            while True:
                if i >= n:
                    raise KqlSyntaxError(
                        "unterminated string literal", start, text[start : start + 10]
                    )
                c = text[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise KqlSyntaxError("unterminated escape in string literal", i, "\\")
                    nxt = text[i + 1]
                    if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6] or ""):
                        chunks.append(chr(int(text[i + 2 : i + 6], 16)))
                        i += 6
                        continue
                    if nxt not in _ESCAPES:
                        raise KqlSyntaxError(f"unknown escape sequence \\{nxt}", i, "\\" + nxt)
                    chunks.append(_ESCAPES[nxt])
                    i += 2
                    continue
                if c == quote:
                    i += 1
                    break
                if c == "\n":
                    raise KqlSyntaxError("newline in string literal", i, quote)
                chunks.append(c)
                i += 1
            tokens.append(Token("string", text[start:i], start, "".join(chunks)))
            continue
        if ch.isdigit():
            match = _NUMBER.match(text, i)
            assert match is not None
            number_text = match.group(0)
            i = match.end()
            unit_match = _IDENT.match(text, i)
            if unit_match and unit_match.group(0).lower() in _TIMESPAN_UNITS:
                unit = unit_match.group(0).lower()
                i = unit_match.end()
                tokens.append(
                    Token(
                        "timespan", text[start:i], start, float(number_text) * _TIMESPAN_UNITS[unit]
                    )
                )
                continue
            if unit_match:
                raise KqlSyntaxError(
                    f"unexpected '{text[start : unit_match.end()]}'",
                    start,
                    text[start : unit_match.end()],
                )
            value: float | int = (
                float(number_text)
                if ("." in number_text or "e" in number_text.lower())
                else int(number_text)
            )
            tokens.append(Token("number", number_text, start, value))
            continue
        if ch == "!":
            if text.startswith("!=", i):
                tokens.append(Token("op", "!=", start))
                i += 2
                continue
            if text.startswith("!~", i):
                tokens.append(Token("op", "!~", start))
                i += 2
                continue
            word = _IDENT.match(text, i + 1)
            if word:
                candidate = word.group(0)
                end = word.end()
                if candidate == "in" and end < n and text[end] == "~":
                    candidate, end = "in~", end + 1
                if candidate in _NEGATABLE_WORDS:
                    tokens.append(Token("op", "!" + candidate, start))
                    i = end
                    continue
            raise KqlSyntaxError("unexpected '!'", start, "!")
        if ch.isalpha() or ch == "_" or ch == "$":
            hyphenated = next((w for w in _HYPHENATED_OPERATORS if text.startswith(w, i)), None)
            if hyphenated and not (
                i + len(hyphenated) < n
                and (text[i + len(hyphenated)].isalnum() or text[i + len(hyphenated)] == "_")
            ):
                tokens.append(Token("ident", hyphenated, start))
                i += len(hyphenated)
                continue
            match = _IDENT.match(text, i)
            assert match is not None
            word_text = match.group(0)
            i = match.end()
            if word_text == "in" and i < n and text[i] == "~":
                tokens.append(Token("op", "in~", start))
                i += 1
                continue
            if word_text in ("datetime", "timespan") and _next_non_space(text, i) == "(":
                # Kusto reads these literals raw: datetime(2024-01-01 10:00) is not an expression.
                open_at = text.index("(", i)
                close_at = text.find(")", open_at)
                if close_at < 0:
                    raise KqlSyntaxError(f"unterminated {word_text} literal", start, word_text)
                inner = text[open_at + 1 : close_at]
                i = close_at + 1
                if word_text == "datetime":
                    try:
                        tokens.append(
                            Token("datetime", text[start:i], start, parse_datetime_literal(inner))
                        )
                    except ValueError as exc:
                        raise KqlSyntaxError(
                            f"invalid datetime literal '{inner}'", start, inner
                        ) from exc
                else:
                    inner_tokens = tokenize(inner.strip())
                    if len(inner_tokens) != 2 or inner_tokens[0].kind != "timespan":
                        raise KqlSyntaxError(f"invalid timespan literal '{inner}'", start, inner)
                    tokens.append(Token("timespan", text[start:i], start, inner_tokens[0].value))
                continue
            tokens.append(Token("ident", word_text, start))
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol is None:
            raise KqlSyntaxError(f"unexpected character '{ch}'", start, ch)
        tokens.append(Token("op", symbol, start))
        i += len(symbol)
    tokens.append(Token("eof", "", n))
    return tokens


def _next_non_space(text: str, i: int) -> str:
    while i < len(text) and text[i].isspace():
        i += 1
    return text[i] if i < len(text) else ""


# ---------------------------------------------------------------------------------------------
# syntax tree: scalar expressions


@dataclass(frozen=True)
class Expr:
    """Base of scalar expressions; ``pos`` points into the query text for error messages."""

    pos: int


@dataclass(frozen=True)
class Literal(Expr):
    """A constant: string, number, bool, datetime, timespan or dynamic value."""

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
class Index(Expr):
    """``target[expr]`` with a computed index."""

    target: Expr
    index: Expr


@dataclass(frozen=True)
class Call(Expr):
    """A function or aggregate call; ``star`` marks a ``*`` argument (``arg_max(x, *)``)."""

    name: str
    args: tuple[Expr, ...]
    star: bool = False


@dataclass(frozen=True)
class Unary(Expr):
    """Unary minus."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary(Expr):
    """Binary operator: arithmetic, comparison, string predicate, and/or."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class InList(Expr):
    """``left in (a, b)`` and its case-insensitive and negated forms."""

    op: str
    left: Expr
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Between(Expr):
    """``left between (low .. high)``."""

    left: Expr
    low: Expr
    high: Expr
    negated: bool


@dataclass(frozen=True)
class ArrayLiteral(Expr):
    """``[a, b]`` inside ``dynamic(...)`` / ``pack_array``."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class BagLiteral(Expr):
    """``{"k": v}`` inside ``dynamic(...)``."""

    pairs: tuple[tuple[str, Expr], ...]


# ---------------------------------------------------------------------------------------------
# syntax tree: tabular operators


@dataclass(frozen=True)
class NamedExpr:
    """``name = expr`` or a bare ``expr`` (``name`` is None: derived later)."""

    name: str | None
    expr: Expr


@dataclass(frozen=True)
class SortKey:
    """One ``order by`` key."""

    expr: Expr
    descending: bool
    nulls_first: bool | None


@dataclass(frozen=True)
class Operator:
    """Base of tabular operators."""

    pos: int


@dataclass(frozen=True)
class Where(Operator):
    """``where predicate``."""

    predicate: Expr


@dataclass(frozen=True)
class Project(Operator):
    """``project a, b = expr``."""

    items: tuple[NamedExpr, ...]


@dataclass(frozen=True)
class Extend(Operator):
    """``extend a = expr``."""

    items: tuple[NamedExpr, ...]


@dataclass(frozen=True)
class ProjectAway(Operator):
    """``project-away a, b``."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class ProjectKeep(Operator):
    """``project-keep a, b``."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class ProjectRename(Operator):
    """``project-rename new = old``."""

    renames: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OrderBy(Operator):
    """``order by`` / ``sort by``."""

    keys: tuple[SortKey, ...]


@dataclass(frozen=True)
class Take(Operator):
    """``take N`` / ``limit N``."""

    count: Expr


@dataclass(frozen=True)
class Top(Operator):
    """``top N by key``."""

    count: Expr
    key: SortKey


@dataclass(frozen=True)
class Summarize(Operator):
    """``summarize aggregates by keys``."""

    aggregates: tuple[NamedExpr, ...]
    by: tuple[NamedExpr, ...]


@dataclass(frozen=True)
class Count(Operator):
    """``count``."""


@dataclass(frozen=True)
class Distinct(Operator):
    """``distinct a, b`` (empty ``items`` means ``distinct *``)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Join(Operator):
    """``join kind=... (right) on keys``; keys are (left column, right column) pairs."""

    kind: str
    right: Query
    keys: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Query:
    """A table name followed by a pipeline of operators."""

    table: str
    table_pos: int
    operators: tuple[Operator, ...] = field(default_factory=tuple)


JOIN_KINDS = (
    "innerunique",
    "inner",
    "leftouter",
    "leftanti",
    "leftsemi",
    "rightouter",
    "fullouter",
    "rightanti",
    "rightsemi",
    "leftantisemi",
    "rightantisemi",
)


# ---------------------------------------------------------------------------------------------
# parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # token helpers ---------------------------------------------------------------------------
    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at_op(self, *symbols: str) -> bool:
        return self.current.kind == "op" and self.current.text in symbols

    def at_word(self, *words: str) -> bool:
        return self.current.kind == "ident" and self.current.text in words

    def expect_op(self, symbol: str) -> Token:
        if not self.at_op(symbol):
            self.fail(f"expected '{symbol}'")
        return self.advance()

    def expect_word(self, word: str) -> Token:
        if not self.at_word(word):
            self.fail(f"expected '{word}'")
        return self.advance()

    def expect_ident(self) -> Token:
        if self.current.kind != "ident":
            self.fail("expected a name")
        return self.advance()

    def fail(self, message: str) -> None:
        token = self.current
        shown = token.text or "end of query"
        raise KqlSyntaxError(f"{message}, found '{shown}'", token.pos, token.text)

    # query -----------------------------------------------------------------------------------
    def parse(self) -> Query:
        query = self.parse_query()
        if self.at_op(";"):
            self.advance()
        if self.current.kind != "eof":
            self.fail("unexpected text after the query")
        return query

    def parse_query(self) -> Query:
        table = self.expect_ident()
        operators: list[Operator] = []
        while self.at_op("|"):
            self.advance()
            operators.append(self.parse_operator())
        return Query(table.text, table.pos, tuple(operators))

    def parse_operator(self) -> Operator:
        token = self.expect_ident()
        word = token.text
        pos = token.pos
        if word in ("where", "filter"):
            return Where(pos, self.parse_expr())
        if word == "project":
            return Project(pos, self.parse_named_list())
        if word == "extend":
            return Extend(pos, self.parse_named_list())
        if word == "project-away":
            return ProjectAway(pos, self.parse_name_list())
        if word == "project-keep":
            return ProjectKeep(pos, self.parse_name_list())
        if word == "project-rename":
            renames: list[tuple[str, str]] = []
            while True:
                new = self.expect_ident().text
                self.expect_op("=")
                old = self.expect_ident().text
                renames.append((new, old))
                if not self.at_op(","):
                    break
                self.advance()
            return ProjectRename(pos, tuple(renames))
        if word in ("order", "sort"):
            self.expect_word("by")
            keys = [self.parse_sort_key()]
            while self.at_op(","):
                self.advance()
                keys.append(self.parse_sort_key())
            return OrderBy(pos, tuple(keys))
        if word in ("take", "limit"):
            return Take(pos, self.parse_expr())
        if word == "top":
            count = self.parse_additive()
            self.expect_word("by")
            return Top(pos, count, self.parse_sort_key())
        if word == "summarize":
            aggregates: list[NamedExpr] = []
            if not self.at_word("by"):
                aggregates = list(self.parse_named_list())
            by: tuple[NamedExpr, ...] = ()
            if self.at_word("by"):
                self.advance()
                by = self.parse_named_list()
            if not aggregates and not by:
                self.fail("summarize needs an aggregate or a 'by' clause")
            return Summarize(pos, tuple(aggregates), by)
        if word == "count":
            return Count(pos)
        if word == "distinct":
            if self.at_op("*"):
                self.advance()
                return Distinct(pos, ())
            items = [self.parse_expr()]
            while self.at_op(","):
                self.advance()
                items.append(self.parse_expr())
            return Distinct(pos, tuple(items))
        if word == "join":
            return self.parse_join(pos)
        raise KqlSyntaxError(f"unsupported or unknown query operator '{word}'", pos, word)

    def parse_join(self, pos: int) -> Join:
        kind = "innerunique"
        while self.current.kind == "ident" and self.peek().kind == "op" and self.peek().text == "=":
            option = self.advance().text
            self.advance()
            value = self.expect_ident().text
            if option == "kind":
                if value not in JOIN_KINDS:
                    raise KqlSyntaxError(f"unknown join kind '{value}'", pos, value)
                kind = value
            elif not option.startswith("hint"):
                raise KqlSyntaxError(f"unknown join parameter '{option}'", pos, option)
        if self.at_op("("):
            self.advance()
            right = self.parse_query()
            self.expect_op(")")
        else:
            table = self.expect_ident()
            right = Query(table.text, table.pos, ())
        self.expect_word("on")
        keys: list[tuple[str, str]] = []
        while True:
            keys.append(self.parse_join_key())
            if not self.at_op(","):
                break
            self.advance()
        return Join(pos, kind, right, tuple(keys))

    def parse_join_key(self) -> tuple[str, str]:
        if self.at_word("$left", "$right"):
            first_side = self.advance().text
            self.expect_op(".")
            first = self.expect_ident().text
            self.expect_op("==")
            second_side = self.expect_ident().text
            if second_side not in ("$left", "$right") or second_side == first_side:
                self.fail("expected the other side ($left/$right) of the join condition")
            self.expect_op(".")
            second = self.expect_ident().text
            return (first, second) if first_side == "$left" else (second, first)
        name = self.expect_ident().text
        return name, name

    def parse_name_list(self) -> tuple[str, ...]:
        names = [self.expect_ident().text]
        while self.at_op(","):
            self.advance()
            names.append(self.expect_ident().text)
        return tuple(names)

    def parse_named_list(self) -> tuple[NamedExpr, ...]:
        items = [self.parse_named()]
        while self.at_op(","):
            self.advance()
            items.append(self.parse_named())
        return tuple(items)

    def parse_named(self) -> NamedExpr:
        if self.current.kind == "ident" and self.peek().kind == "op" and self.peek().text == "=":
            name = self.advance().text
            self.advance()
            return NamedExpr(name, self.parse_expr())
        return NamedExpr(None, self.parse_expr())

    def parse_sort_key(self) -> SortKey:
        expr = self.parse_expr()
        descending = True  # Kusto sorts descending unless told otherwise.
        nulls_first: bool | None = None
        if self.at_word("asc", "desc"):
            descending = self.advance().text == "desc"
        if self.at_word("nulls"):
            self.advance()
            if not self.at_word("first", "last"):
                self.fail("expected 'first' or 'last'")
            nulls_first = self.advance().text == "first"
        return SortKey(expr, descending, nulls_first)

    # expressions -----------------------------------------------------------------------------
    def parse_expr(self) -> Expr:
        return self.parse_or()

    def parse_or(self) -> Expr:
        left = self.parse_and()
        while self.at_word("or"):
            pos = self.advance().pos
            left = Binary(pos, "or", left, self.parse_and())
        return left

    def parse_and(self) -> Expr:
        left = self.parse_comparison()
        while self.at_word("and"):
            pos = self.advance().pos
            left = Binary(pos, "and", left, self.parse_comparison())
        return left

    _COMPARISON_SYMBOLS = ("==", "!=", "=~", "!~", "<", ">", "<=", ">=")
    _STRING_WORDS = (
        "has",
        "has_cs",
        "contains",
        "contains_cs",
        "startswith",
        "startswith_cs",
        "endswith",
        "endswith_cs",
    )

    def parse_comparison(self) -> Expr:
        left = self.parse_additive()
        token = self.current
        if token.kind == "op" and token.text in self._COMPARISON_SYMBOLS:
            self.advance()
            return Binary(token.pos, token.text, left, self.parse_additive())
        if token.kind == "ident" and token.text in self._STRING_WORDS:
            self.advance()
            return Binary(token.pos, token.text, left, self.parse_additive())
        if token.kind == "ident" and token.text == "matches":
            self.advance()
            self.expect_word("regex")
            return Binary(token.pos, "matches regex", left, self.parse_additive())
        if (
            token.kind == "op"
            and token.text.startswith("!")
            and token.text[1:] in self._STRING_WORDS
        ):
            self.advance()
            return Binary(token.pos, token.text, left, self.parse_additive())
        if (token.kind == "ident" and token.text == "in") or (
            token.kind == "op" and token.text in ("in~", "!in", "!in~")
        ):
            self.advance()
            self.expect_op("(")
            items: list[Expr] = []
            if not self.at_op(")"):
                items.append(self.parse_expr())
                while self.at_op(","):
                    self.advance()
                    items.append(self.parse_expr())
            self.expect_op(")")
            return InList(token.pos, token.text, left, tuple(items))
        if (token.kind == "ident" and token.text == "between") or (
            token.kind == "op" and token.text == "!between"
        ):
            self.advance()
            self.expect_op("(")
            low = self.parse_additive()
            self.expect_op("..")
            high = self.parse_additive()
            self.expect_op(")")
            return Between(token.pos, left, low, high, token.text.startswith("!"))
        return left

    def parse_additive(self) -> Expr:
        left = self.parse_multiplicative()
        while self.at_op("+", "-"):
            token = self.advance()
            left = Binary(token.pos, token.text, left, self.parse_multiplicative())
        return left

    def parse_multiplicative(self) -> Expr:
        left = self.parse_unary()
        while self.at_op("*", "/", "%"):
            token = self.advance()
            left = Binary(token.pos, token.text, left, self.parse_unary())
        return left

    def parse_unary(self) -> Expr:
        if self.at_op("-"):
            token = self.advance()
            return Unary(token.pos, "-", self.parse_unary())
        if self.at_op("+"):
            self.advance()
            return self.parse_unary()
        return self.parse_postfix()

    def parse_postfix(self) -> Expr:
        expr = self.parse_primary()
        while True:
            if self.at_op("."):
                self.advance()
                name_token = self.current
                if name_token.kind != "ident":
                    self.fail("expected a property name after '.'")
                self.advance()
                expr = Member(name_token.pos, expr, name_token.text)
            elif self.at_op("["):
                pos = self.advance().pos
                index = self.parse_expr()
                self.expect_op("]")
                if isinstance(index, Literal) and isinstance(index.value, str):
                    expr = Member(pos, expr, index.value)
                else:
                    expr = Index(pos, expr, index)
            else:
                return expr

    def parse_primary(self) -> Expr:
        token = self.current
        if token.kind in ("string", "number", "timespan", "datetime"):
            self.advance()
            return Literal(token.pos, token.value)
        if token.kind == "op" and token.text == "(":
            self.advance()
            inner = self.parse_expr()
            self.expect_op(")")
            return inner
        if token.kind == "op" and token.text == "[":
            return self.parse_array()
        if token.kind == "op" and token.text == "{":
            return self.parse_bag()
        if token.kind == "ident":
            self.advance()
            if token.text in ("true", "false") and not self.at_op("("):
                return Literal(token.pos, token.text == "true")
            if token.text == "null" and not self.at_op("("):
                return Literal(token.pos, None)
            if self.at_op("("):
                return self.parse_call(token)
            return ColumnRef(token.pos, token.text)
        self.fail("expected an expression")
        raise AssertionError("unreachable")

    def parse_call(self, name: Token) -> Expr:
        self.expect_op("(")
        args: list[Expr] = []
        star = False
        if not self.at_op(")"):
            while True:
                if self.at_op("*"):
                    self.advance()
                    star = True
                else:
                    args.append(self.parse_expr())
                if not self.at_op(","):
                    break
                self.advance()
        self.expect_op(")")
        return Call(name.pos, name.text, tuple(args), star)

    def parse_array(self) -> Expr:
        pos = self.expect_op("[").pos
        items: list[Expr] = []
        if not self.at_op("]"):
            items.append(self.parse_expr())
            while self.at_op(","):
                self.advance()
                items.append(self.parse_expr())
        self.expect_op("]")
        return ArrayLiteral(pos, tuple(items))

    def parse_bag(self) -> Expr:
        pos = self.expect_op("{").pos
        pairs: list[tuple[str, Expr]] = []
        if not self.at_op("}"):
            while True:
                key = self.current
                if key.kind not in ("string", "ident"):
                    self.fail("expected a property name")
                self.advance()
                self.expect_op(":")
                pairs.append((key.value if key.kind == "string" else key.text, self.parse_expr()))
                if not self.at_op(","):
                    break
                self.advance()
        self.expect_op("}")
        return BagLiteral(pos, tuple(pairs))


@lru_cache(maxsize=512)
def parse_query(text: str) -> Query:
    """Parse query text into a :class:`Query`; cached because paging repeats the same text."""
    if not text or not text.strip():
        raise KqlSyntaxError("the query is empty", 0, "")
    return _Parser(text).parse()
