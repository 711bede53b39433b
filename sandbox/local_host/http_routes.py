"""Route templates of HTTP triggers, matched as the host's ASP.NET routing does.

Supported: literal segments (case-insensitive), `{name}`, `{name?}` (optional, last segments),
`{*name}` (catch-all), `{name:int}` and the other simple constraints below; a parameter can
share a segment with literal text (`files/{name}.{ext}`). Route values are URL-decoded.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass

log = logging.getLogger(__name__)

_PARAMETER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[^/]+",
}

# Precedence of a segment, lowest first, as ASP.NET orders routes: literal text beats a
# constrained parameter, which beats a plain one, then optional, then catch-all.
_LITERAL, _CONSTRAINED, _MIXED, _PARAMETER_ONLY, _OPTIONAL, _CATCH_ALL = range(6)


class InvalidRoute(ValueError):
    """The route template cannot be parsed; the message says why."""


@dataclass(frozen=True)
class RouteTemplate:
    """A parsed route template that matches request paths."""

    template: str
    pattern: re.Pattern[str]
    parameter_names: tuple[str, ...]
    precedence: tuple[int, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        """Parse a route template such as `runs/{configuration}/{runName}`."""
        stripped = template.strip("/")
        segments = stripped.split("/") if stripped else []
        pieces: list[str] = []
        names: list[str] = []
        precedence: list[int] = []
        for position, segment in enumerate(segments):
            last = position == len(segments) - 1
            regex, kind = _segment(segment, names, last, template)
            pieces.append(regex)
            precedence.append(kind)
        return cls(
            template=stripped,
            pattern=re.compile(f"^{''.join(pieces)}/?$", re.IGNORECASE),
            parameter_names=tuple(names),
            precedence=tuple(precedence),
        )

    def match(self, path: str) -> dict[str, str] | None:
        """Route values if the path (below the route prefix, no query) matches, else None."""
        normalized = "/" + path.strip("/") if path.strip("/") else ""
        found = self.pattern.match(normalized)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, name in enumerate(self.parameter_names):
            value = found.group(f"p{index}")
            if value is not None:
                values[name] = urllib.parse.unquote(value)
        return values

    @property
    def sort_key(self) -> tuple[int, ...]:
        """Order routes most specific first (compare with `sorted`), segment by segment."""
        return self.precedence


def _segment(segment: str, names: list[str], last: bool, template: str) -> tuple[str, int]:
    if not segment:
        raise InvalidRoute(f"{template!r}: empty segment")
    tokens = _PARAMETER.findall(segment)
    if not tokens:
        if "{" in segment or "}" in segment:
            raise InvalidRoute(f"{template!r}: unbalanced braces in {segment!r}")
        return "/" + re.escape(segment), _LITERAL
    whole = len(tokens) == 1 and segment == "{" + tokens[0] + "}"
    if not whole:
        return _mixed_segment(segment, names, template), _MIXED
    token = tokens[0]
    if token.startswith("*"):
        if not last:
            raise InvalidRoute(f"{template!r}: a catch-all parameter must be the last segment")
        name = token.lstrip("*")
        names.append(name)
        return f"(?:/(?P<p{len(names) - 1}>.*))?", _CATCH_ALL
    optional = token.endswith("?")
    name, constraint_regex = _parameter(token.rstrip("?"), template)
    names.append(name)
    group = f"(?P<p{len(names) - 1}>{constraint_regex})"
    if optional:
        # Only the trailing segments may be optional, as in ASP.NET routing.
        if not last:
            log.warning(
                "Route %r: optional parameter %r is not last; treated as required", template, name
            )
            return "/" + group, _PARAMETER_ONLY
        return f"(?:/{group})?", _OPTIONAL
    return "/" + group, _CONSTRAINED if constraint_regex != "[^/]+" else _PARAMETER_ONLY


def _mixed_segment(segment: str, names: list[str], template: str) -> str:
    regex = "/"
    position = 0
    for found in _PARAMETER.finditer(segment):
        regex += re.escape(segment[position : found.start()])
        name, constraint_regex = _parameter(found.group(1), template)
        names.append(name)
        # Greedy, so `{name}.{ext}` splits `a.b.c` at the last dot, as ASP.NET does.
        regex += f"(?P<p{len(names) - 1}>{constraint_regex})"
        position = found.end()
    return regex + re.escape(segment[position:])


def _parameter(token: str, template: str) -> tuple[str, str]:
    name, _, constraint = token.partition(":")
    if not name or not re.fullmatch(r"\w+", name):
        raise InvalidRoute(f"{template!r}: bad parameter name {name!r}")
    if not constraint:
        return name, "[^/]+"
    kind = constraint.split("(")[0].lower()
    if kind in _CONSTRAINTS:
        return name, _CONSTRAINTS[kind]
    log.warning("Route %r: constraint %r is not checked by the local host", template, constraint)
    return name, "[^/]+"
