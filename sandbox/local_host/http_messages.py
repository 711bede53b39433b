"""Requests and responses as the host's handlers see them, independent of the HTTP server."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

KEY_HEADER = "x-functions-key"
KEY_QUERY_PARAMETER = "code"


@dataclass(frozen=True)
class HostRequest:
    """One HTTP request: method, path and query (still percent-encoded), headers, body."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    base_url: str

    @property
    def url(self) -> str:
        """The full URL the caller used."""
        return f"{self.base_url}{self.path}" + (f"?{self.query}" if self.query else "")

    def header(self, name: str) -> str | None:
        """The first value of a header, whatever its case, or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_map(self) -> dict[str, str]:
        """Headers with lower-case names; repeated headers joined with a comma, per RFC 9110."""
        merged: dict[str, str] = {}
        for key, value in self.headers:
            name = key.lower()
            merged[name] = f"{merged[name]}, {value}" if name in merged else value
        return merged

    def query_params(self) -> dict[str, str]:
        """Query parameters, first value of each."""
        params: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(self.query, keep_blank_values=True):
            params.setdefault(key, value)
        return params

    def query_value(self, name: str) -> str | None:
        """One query parameter, or None."""
        return self.query_params().get(name)

    @property
    def presented_key(self) -> str | None:
        """The key the caller presented: header first, then `code` in the query."""
        return self.header(KEY_HEADER) or self.query_value(KEY_QUERY_PARAMETER)


@dataclass(frozen=True)
class HostResponse:
    """What the host answers."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def text(cls, status: int, message: str) -> HostResponse:
        """A short plain-text answer from the host itself (errors, acknowledgements)."""
        return cls(status, (("Content-Type", "text/plain; charset=utf-8"),), message.encode())

    @classmethod
    def json(cls, status: int, document: Any) -> HostResponse:
        """A JSON answer from the host itself."""
        body = json.dumps(document).encode()
        return cls(status, (("Content-Type", "application/json; charset=utf-8"),), body)
