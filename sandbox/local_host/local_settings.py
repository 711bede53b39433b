"""App settings for a local run: local.settings.json's `Values`, put into the environment.

As Core Tools does, a variable already set in the environment wins over the file. Every change
is recorded so an in-process host (tests) can put the environment back when it stops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path


class InvalidLocalSettings(ValueError):
    """local.settings.json is unreadable, encrypted or not the expected shape."""


def read_local_settings(path: Path) -> dict[str, str]:
    """The `Values` of a local.settings.json file, as strings."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as problem:
        raise InvalidLocalSettings(f"{path}: {problem}") from problem
    if not isinstance(document, dict):
        raise InvalidLocalSettings(f"{path}: expected a JSON object")
    if document.get("IsEncrypted"):
        raise InvalidLocalSettings(f"{path}: encrypted settings are not supported; decrypt them")
    values = document.get("Values") or {}
    if not isinstance(values, dict):
        raise InvalidLocalSettings(f"{path}: Values must be an object")
    # Core Tools passes numbers and booleans through as their JSON text.
    return {
        str(name): value if isinstance(value, str) else json.dumps(value)
        for name, value in values.items()
        if value is not None
    }


class EnvironmentOverlay:
    """Changes to the process environment that can be undone."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._originals: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str]) -> None:
        """Set these variables, replacing any current value."""
        for name, value in values.items():
            self._remember(name)
            self._environ[name] = value

    def set_defaults(self, values: Mapping[str, str]) -> list[str]:
        """Set the variables that are not set yet; return the names that were set."""
        applied = []
        for name, value in values.items():
            if name not in self._environ:
                self._remember(name)
                self._environ[name] = value
                applied.append(name)
        return applied

    def restore(self) -> None:
        """Put every changed variable back as it was."""
        for name, original in self._originals.items():
            if original is None:
                self._environ.pop(name, None)
            else:
                self._environ[name] = original
        self._originals.clear()

    def _remember(self, name: str) -> None:
        if name not in self._originals:
            self._originals[name] = self._environ.get(name)
