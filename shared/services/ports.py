"""The ports the use cases need; adapters and in-memory test fakes implement them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from shared.domain.ids import RunId
from shared.domain.runs import CancelRequest, EventRecord, MachineRecord, Run


class RunLedger(Protocol):
    """Durable record of runs, the events seen, machines and cancel requests.

    Writes of rows that carry a `version` succeed only if the stored row still has that version
    (LedgerConflict otherwise); rows without a version are created, and fail with LedgerConflict
    if they already exist. Storage failures raise LedgerUnavailable.
    """

    def find_run(self, run_id: RunId) -> Run | None:
        """The run, or None if the ledger has never seen it."""
        ...

    def save_run(self, run: Run) -> Run:
        """Create or update a run (ETag-checked); returns it with its new version."""
        ...

    def record_event(self, event: EventRecord, run: Run) -> Run:
        """Atomically store `event` and `run`; DuplicateEvent if the event was seen before."""
        ...

    def list_events(self, run_id: RunId) -> Iterator[EventRecord]:
        """The events recorded for a run."""
        ...

    def find_machine(self, run_id: RunId, resource_id: str) -> MachineRecord | None:
        """One machine of a run, or None."""
        ...

    def save_machine(self, machine: MachineRecord) -> MachineRecord:
        """Create or update a machine row (ETag-checked); returns it with its new version."""
        ...

    def list_machines(self, run_id: RunId) -> Iterator[MachineRecord]:
        """The machines recorded for a run."""
        ...

    def add_cancel_request(self, request: CancelRequest) -> None:
        """Append a cancel request to the run's audit."""
        ...

    def list_cancel_requests(self, run_id: RunId) -> Iterator[CancelRequest]:
        """The run's cancel requests, oldest first."""
        ...
