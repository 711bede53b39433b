"""Composition root: builds settings and adapters lazily, once per process.

Nothing here runs at import time, so the worker indexes functions fast and a bad setting fails
the first call with a message naming it. Tests install their own Container with `use()`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.config import Settings
from shared.domain.timeline import Clock, SystemClock

if TYPE_CHECKING:
    from shared.services.ports import RunLedger


@dataclass
class Container:
    """The process's settings, clock and adapters; adapters are built on first use."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    _ledger: RunLedger | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ledger(self) -> RunLedger:
        """The run ledger (Azure Table storage)."""
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = _build_ledger(self.settings)
        return self._ledger


def _build_ledger(settings: Settings) -> RunLedger:
    from shared.adapters.credentials import storage_credential
    from shared.adapters.table_ledger import TableRunLedger, build_table_service

    storage = settings.storage
    credential = None if storage.connection_string else storage_credential(storage)
    return TableRunLedger(build_table_service(storage, credential), settings.ledger_table)


_container: Container | None = None
_container_lock = threading.Lock()


def container() -> Container:
    """The process-wide container, built from the environment on first call."""
    global _container
    if _container is None:
        with _container_lock:
            if _container is None:
                _container = Container(settings=Settings.from_environ(os.environ))
    return _container


def use(replacement: Container | None) -> None:
    """Install a container (tests), or None to rebuild from the environment on next use."""
    global _container
    with _container_lock:
        _container = replacement
