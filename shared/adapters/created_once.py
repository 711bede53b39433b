"""Create a storage container or queue on first use, once per process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from azure.core.exceptions import ResourceExistsError


class CreatedOnce:
    """Runs `create` the first time `ensure()` is called; "already exists" counts as done."""

    def __init__(self, create: Callable[[], object]) -> None:
        self._create = create
        self._done = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Create it unless this process already has."""
        if self._done:
            return
        with self._lock:
            if not self._done:
                with contextlib.suppress(ResourceExistsError):
                    self._create()
                self._done = True
