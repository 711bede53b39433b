"""Every request the fake Azure answered, for tests to assert on what the app actually sent."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "<redacted>"


@dataclass(frozen=True)
class RecordedRequest:
    """One answered request; the Authorization header's value is never kept."""

    time: dt.datetime
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    status: int
    endpoint: str
    duration_ms: float
    token_resource: str | None = None
    client_id: str | None = None
    # The service did what was asked, but its answer was replaced by a 5xx or never sent
    # (a lost-answer fault): ``status`` is what the client got, 0 for no answer at all.
    answer_lost: bool = False

    @property
    def api_version(self) -> str | None:
        """The api-version query parameter, if any."""
        return self.query.get("api-version")


class RequestLog:
    """Thread-safe, append-only (until cleared) list of :class:`RecordedRequest`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []

    def append(self, entry: RecordedRequest) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[RecordedRequest]:
        """A copy of everything recorded so far, oldest first."""
        with self._lock:
            return list(self._entries)

    def matching(
        self,
        method: str | None = None,
        path_regex: str | None = None,
        *,
        endpoint: str | None = None,
        status: int | None = None,
    ) -> list[RecordedRequest]:
        """Requests with that method, a path matching ``path_regex`` (case-insensitive search),
        that endpoint name and that status; None means any."""
        pattern = re.compile(path_regex, re.IGNORECASE) if path_regex else None
        return [
            entry
            for entry in self.entries
            if (method is None or entry.method.upper() == method.upper())
            and (pattern is None or pattern.search(entry.path))
            and (endpoint is None or entry.endpoint == endpoint)
            and (status is None or entry.status == status)
        ]

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy headers, replacing secrets (bearer tokens, the identity header) with a marker."""
    cleaned: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "authorization":
            scheme = value.split(" ", 1)[0] if value else ""
            cleaned[name] = f"{scheme} {REDACTED}".strip()
        elif lowered in ("x-identity-header", "secret"):
            cleaned[name] = REDACTED
        else:
            cleaned[name] = value
    return cleaned
