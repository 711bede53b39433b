"""Host keys: the function key, the master key and the Event Grid system key.

Like the real host, a caller presents a key in the `x-functions-key` header or the `code` query
parameter. FUNCTION-level HTTP functions accept the function key or the master key; ADMIN-level
ones and the admin API only the master key; the Event Grid webhook the `eventgrid_extension`
system key or the master key.

Each key comes from its environment variable, else from the keys file, else it is generated
at start (and printed, so a developer can use it).
"""

from __future__ import annotations

import enum
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_FUNCTION_KEY = "LOCAL_HOST_FUNCTION_KEY"
ENV_MASTER_KEY = "LOCAL_HOST_MASTER_KEY"
ENV_EVENTGRID_KEY = "LOCAL_HOST_EVENTGRID_KEY"
EVENTGRID_SYSTEM_KEY = "eventgrid_extension"
GENERATED = "generated"

# Keys-file (and ready-file) field → environment variable that overrides it.
_KEY_SOURCES = {
    "function": ENV_FUNCTION_KEY,
    "master": ENV_MASTER_KEY,
    EVENTGRID_SYSTEM_KEY: ENV_EVENTGRID_KEY,
}


class AuthLevel(enum.StrEnum):
    """An HTTP trigger's `authLevel`."""

    ANONYMOUS = "ANONYMOUS"
    FUNCTION = "FUNCTION"
    ADMIN = "ADMIN"


class InvalidKeysFile(ValueError):
    """The keys file is unreadable or not the expected JSON object."""


@dataclass(frozen=True)
class HostKeys:
    """The keys this host accepts, and where each one came from."""

    function: str
    master: str
    eventgrid_extension: str
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def load(cls, environ: Mapping[str, str], keys_file: Path | None = None) -> HostKeys:
        """Environment first, then the keys file, else a fresh random key."""
        from_file: dict[str, str] = {}
        if keys_file is not None:
            from_file = _read_keys_file(keys_file)
        values: dict[str, str] = {}
        sources: dict[str, str] = {}
        for name, variable in _KEY_SOURCES.items():
            if environ.get(variable, "").strip():
                values[name], sources[name] = environ[variable].strip(), variable
            elif from_file.get(name):
                values[name], sources[name] = from_file[name], str(keys_file)
            else:
                values[name], sources[name] = secrets.token_urlsafe(32), GENERATED
        return cls(
            function=values["function"],
            master=values["master"],
            eventgrid_extension=values[EVENTGRID_SYSTEM_KEY],
            sources=sources,
        )

    def as_document(self) -> dict[str, str]:
        """The keys as the keys file (and the ready file) hold them."""
        return {
            "function": self.function,
            "master": self.master,
            EVENTGRID_SYSTEM_KEY: self.eventgrid_extension,
        }

    def allows(self, level: AuthLevel, presented: str | None) -> bool:
        """Whether a caller presenting this key may call a function of this auth level."""
        if level is AuthLevel.ANONYMOUS:
            return True
        if level is AuthLevel.FUNCTION and _same(presented, self.function):
            return True
        return _same(presented, self.master)

    def allows_eventgrid(self, presented: str | None) -> bool:
        """Whether the key opens the Event Grid webhook."""
        return _same(presented, self.eventgrid_extension) or _same(presented, self.master)

    def is_master(self, presented: str | None) -> bool:
        """Whether the key is the master key (the admin API needs it)."""
        return _same(presented, self.master)


def _same(presented: str | None, expected: str) -> bool:
    # Constant-time, so the local host does not teach bad habits to code copied from it.
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _read_keys_file(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as problem:
        raise InvalidKeysFile(f"{path}: {problem}") from problem
    if not isinstance(document, dict) or not all(
        isinstance(document.get(name, ""), str) for name in _KEY_SOURCES
    ):
        raise InvalidKeysFile(
            f"{path}: expected a JSON object with string fields {sorted(_KEY_SOURCES)}"
        )
    return {name: document[name].strip() for name in _KEY_SOURCES if name in document}
