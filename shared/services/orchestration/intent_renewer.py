"""Keeps the intents a task holds fresh while it works, and records the calls Azure accepted."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from shared.domain.runs import MachineRecord
from shared.services.orchestration.accepted_marks import AcceptedMarks, Mark

log = logging.getLogger(__name__)


class IntentRenewer:
    """Keeps the Starting/Deallocating intents a task holds fresh while it sends their calls
    (azure-core's throttle retries can outlast a lease), so a lapsed intent means a dead worker
    (TASK_LEASE_SECONDS) rather than a slow one. An answered call is not renewed: Azure's
    acceptances are marked through `marks` (several rows to a write), and a row whose mark is
    written is let go. Each renewal round first writes the marks still waiting, so a renewal
    does not race them; a row whose mark could not be written is renewed as before."""

    def __init__(
        self,
        renew: Callable[[MachineRecord], MachineRecord | None],
        every_seconds: float,
        marks: AcceptedMarks,
    ) -> None:
        self._renew = renew
        self._every = max(every_seconds, 0.5)
        self._marks = marks
        self._held: dict[str, MachineRecord] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="intent-renewer", daemon=True)

    def hold(self, row: MachineRecord) -> None:
        """Renew this row's intent until its call is answered or the task ends."""
        with self._lock:
            self._held[row.resource_id.lower()] = row

    def record_answer(self, row: MachineRecord, mark: Mark) -> MachineRecord:
        """Mark `row`'s accepted call (written soon, with others: see AcceptedMarks); returns
        the row as the mark leaves it. A row this renewer renewed is marked on its renewed
        copy, so the renewal does not make the mark's write a conflict."""
        with self._lock:
            latest = self._held.get(row.resource_id.lower(), row)
        return self._marks.add(latest, mark)

    def __enter__(self) -> IntentRenewer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self._marks.close()
        finally:
            self._done.set()
            self._thread.join(timeout=self._every + 5)

    def _loop(self) -> None:
        while not self._done.wait(self._every):
            try:
                self._marks.flush()
            except Exception as e:  # its rows stay held: renewed below
                log.warning("Marks of accepted calls not written before renewing: %s", e)
            with self._lock:
                for key in [k for k, r in self._held.items() if self._marks.recorded(r)]:
                    del self._held[key]
                rows = list(self._held.values())
            for row in rows:
                if self._done.is_set():
                    return
                try:
                    renewed = self._renew(row)
                except Exception as e:  # a missed renewal only shortens the lease
                    log.warning("Could not renew the intent on %s: %s", row.resource_id, e)
                    continue
                self._keep(row, renewed)

    def _keep(self, held: MachineRecord, renewed: MachineRecord | None) -> None:
        """Hold the renewed copy (its version is the stored one) while it is still the
        intent that was held."""
        if renewed is None or renewed.action is not held.action:
            return
        with self._lock:
            key = held.resource_id.lower()
            if key not in self._held:
                return
            self._held[key] = renewed
        self._marks.renewed(renewed)
