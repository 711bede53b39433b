"""Keeps the intents a task holds fresh while it works."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from shared.domain.runs import MachineRecord

log = logging.getLogger(__name__)


class IntentRenewer:
    """Keeps the Starting/Deallocating intents a task holds fresh while it sends their calls
    (azure-core's throttle retries can outlast a lease), so a lapsed intent means a dead worker
    (TASK_LEASE_SECONDS) rather than a slow one. An answered call is not renewed."""

    def __init__(self, renew: Callable[[MachineRecord], None], every_seconds: float) -> None:
        self._renew = renew
        self._every = max(every_seconds, 0.5)
        self._held: dict[str, MachineRecord] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="intent-renewer", daemon=True)

    def hold(self, row: MachineRecord) -> None:
        """Renew this row's intent until the task ends."""
        with self._lock:
            self._held[row.resource_id.lower()] = row

    def __enter__(self) -> IntentRenewer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=self._every + 5)

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            with self._lock:
                rows = list(self._held.values())
            for row in rows:
                if self._done.is_set():
                    return
                try:
                    self._renew(row)
                except Exception as e:  # a missed renewal only shortens the lease
                    log.warning("Could not renew the intent on %s: %s", row.resource_id, e)
