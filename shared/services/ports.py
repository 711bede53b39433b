"""The ports the use cases need; adapters and in-memory test fakes implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.domain.ids import ConfigurationId, MachineId, RunId
from shared.domain.machines import MachinePower, OperationResult
from shared.domain.platform import (
    CancelAcceptance,
    HeartbeatReport,
    MachineFacts,
    PatchResult,
    PlatformRun,
    RunMachine,
    RunState,
)
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineClaim,
    MachineRecord,
    RefusedEvent,
    Run,
    RunNote,
    WatchRound,
)
from shared.domain.tasks import Task


class RunLedger(Protocol):
    """Durable record of runs, the events seen, machines, claims, notes and cancel requests.

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

    def list_runs(self) -> Iterator[Run]:
        """Every run the ledger knows (reads the whole history: not for requests or ticks)."""
        ...

    def list_runs_page(
        self,
        *,
        configuration: str | None,
        status: str | None,
        start_from: datetime | None,
        start_to: datetime | None,
        top: int,
        after: str | None,
    ) -> tuple[list[Run], str | None]:
        """One page of runs, newest scheduled start first, filtered by configuration (name or
        id), status (the app's or the platform's) and scheduled start in [from, to); the second
        value continues the listing as `after` (None: no more). ValueError for an `after` that
        is not from this listing."""
        ...

    def find_runs_named(self, configuration_name: str, run_name: str) -> list[Run]:
        """Runs with this run name of every configuration with this name."""
        ...

    def list_open_runs(self) -> Iterator[Run]:
        """Runs not completed yet."""
        ...

    def list_known_configurations(self) -> list[ConfigurationId]:
        """Every configuration the ledger has a run of."""
        ...

    def ensure_indexed(self) -> int:
        """Index runs stored before the ledger had an index (once); how many were indexed."""
        ...

    def remove_runs_before(self, cutoff: datetime, limit: int) -> list[RunId]:
        """Delete up to `limit` runs scheduled before `cutoff`, with all their rows; returns
        the runs removed. Called again until it returns none, it removes them all."""
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

    def add_machines(self, machines: Iterable[MachineRecord]) -> int:
        """Create the machine rows that do not exist yet; returns how many were created."""
        ...

    def save_machines(self, machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        """Create or update several machine rows of one run at once (at most
        MAX_MACHINES_SAVED_TOGETHER, shared/domain/runs.py), each ETag-checked as in
        `save_machine`, all or nothing: when any row changed, vanished or (created) exists,
        LedgerConflict and none is written. Returns them with their new versions, in order.
        ValueError for rows of several runs, one machine twice, or too many rows."""
        ...

    def list_machines(self, run_id: RunId) -> Iterator[MachineRecord]:
        """The machines recorded for a run."""
        ...

    def list_machines_not_seen_running(self, run_id: RunId) -> Iterator[MachineRecord]:
        """The machines of a run but the starts settled (Started, and seen running since: see
        `seen_running`, shared/domain/machine_steps.py), read with the storage's own filter:
        what verify still has to look at, without reading the settled rows every round."""
        ...

    def find_machines(
        self, run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        """The rows of these machines of one run, in one read (a machine without a row is left
        out). The read is one key range from the first to the last of the machines' rows:
        machines next to each other in `in_storage_order` make it as narrow as they are many;
        machines scattered over the run are still read right, only through a wider range (the
        rows in between are read and dropped)."""
        ...

    def in_storage_order(self, machines: Iterable[MachineId]) -> list[MachineId]:
        """These machines in the order the ledger keeps their rows (no request is made): a
        batch cut from this order is one narrow range for `find_machines`."""
        ...

    def find_watch_round(self, run_id: RunId) -> WatchRound | None:
        """The last round the run's watch loop began, or None before its first."""
        ...

    def save_watch_round(self, watch: WatchRound) -> WatchRound:
        """Create or update (ETag-checked) the run's watch round."""
        ...

    def find_claim(self, machine: MachineId) -> MachineClaim | None:
        """Who owns / needs a machine across runs, or None."""
        ...

    def save_claim(self, claim: MachineClaim) -> MachineClaim:
        """Create or update a claim (ETag-checked)."""
        ...

    def delete_claim(self, claim: MachineClaim) -> None:
        """Remove a claim as read (ETag-checked: LedgerConflict if it changed since; one
        removed already is no error, as the storage SDK's delete is idempotent)."""
        ...

    def acquire_lease(self, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
        """Take or renew a named lease; False while another holder's lease is unexpired."""
        ...

    def release_lease(self, name: str, holder: str) -> None:
        """Give a lease back."""
        ...

    def add_note(self, note: RunNote) -> None:
        """Append a note (error, warning, decision) to the run's record."""
        ...

    def list_notes(self, run_id: RunId) -> Iterator[RunNote]:
        """The run's notes, oldest first."""
        ...

    def add_cancel_request(self, request: CancelRequest) -> None:
        """Append a cancel request to the run's audit."""
        ...

    def list_cancel_requests(self, run_id: RunId) -> Iterator[CancelRequest]:
        """The run's cancel requests, oldest first."""
        ...

    def add_refused_event(self, refusal: RefusedEvent) -> RefusedEvent:
        """Keep a delivery the app refused; returns it with its record id."""
        ...

    def list_refused_events(self, limit: int) -> list[RefusedEvent]:
        """The newest `limit` refused deliveries, newest first."""
        ...


class TaskQueue(Protocol):
    """The queue the task worker reads."""

    def send(self, task: Task, delay: timedelta = timedelta(0)) -> None:
        """Enqueue a task, visible after `delay`."""
        ...


class RunMachinesSource(Protocol):
    """Resource Graph, as the orchestration reads it."""

    def list_run_machines(self, run: RunId, subscriptions: Sequence[str]) -> Iterator[RunMachine]:
        """The machines of a run."""
        ...

    def list_patch_results(
        self, run: RunId, subscriptions: Sequence[str], since: datetime, until: datetime
    ) -> Iterator[PatchResult]:
        """Patch installation results naming the run, or from the span `since`..`until`."""
        ...

    def list_runs(
        self, configurations: Sequence[Any], subscriptions: Sequence[str]
    ) -> Iterator[PlatformRun]:
        """Run-level records of these configurations only."""
        ...


class OperationHandle(Protocol):
    """A started operation that can be waited on (the optional OS-disk snapshot)."""

    def wait(self, timeout: float | None = None) -> OperationResult:
        """Wait up to `timeout` seconds for the end."""
        ...


class Machines(Protocol):
    """VM power: read (one, or many in bulk), start, deallocate, snapshot.

    Start and deallocate return once Azure accepted the call; nothing waits for the VM: a later
    read of its power state tells how the operation ended.
    """

    def get_machine(self, machine: MachineId) -> MachineFacts:
        """Power state and tags (one read: the authoritative look before a start)."""
        ...

    def list_power_states(
        self, subscription_id: str, machines: Iterable[MachineId]
    ) -> Iterator[tuple[MachineId, MachinePower]]:
        """The power states of these machines of one subscription, in as few reads as Azure
        allows (a VM Azure does not list is left out; an Arc machine is not manageable).
        AzureCallFailed when the subscription's list cannot be read."""
        ...

    def turn_wait(self, machine: MachineId) -> float:
        """0.0 when `power_turn` would hold a turn for `machine` now; else the seconds until one
        would come. Nothing is taken."""
        ...

    def turn_appointment(self, machines: Sequence[MachineId]) -> float:
        """Seconds until work put off for these machines' write turns should come back to find
        them near. Turns are promised to it after those promised to other put-off work, so
        that put-off work comes back spread over the time the budget hands the turns out
        rather than all at the nearest turn."""
        ...

    def power_turn(self, machine: MachineId) -> AbstractContextManager[float]:
        """Hold this thread's turn for a start or deallocate of `machine` in Azure's write
        budgets: 0.0 while held (the thread's next power operation uses it), else the seconds
        until a turn would come, and nothing is held: the work is better put off than done and
        then refused."""
        ...

    def start(self, machine: MachineId, still_wanted: Callable[[], bool] | None = None) -> None:
        """Send a VM's start; returns once accepted. While Azure only throttles the call,
        `still_wanted` is asked before each retry and a False withdraws it unsent
        (CallWithdrawn); a refusal, a 5xx or no answer raise AzureCallFailed."""
        ...

    def deallocate(self, machine: MachineId) -> None:
        """Send a VM's deallocate; returns once accepted."""
        ...

    def begin_snapshot_os_disk(self, machine: MachineId, snapshot_name: str) -> OperationHandle:
        """Snapshot the VM's OS disk (incremental)."""
        ...


class RunCanceller(Protocol):
    """The maintenance service's run operations."""

    def cancel_run(self, run: RunId) -> CancelAcceptance:
        """Cancel this run with one request; any 2xx is accepted. CancelRefused on a 4xx
        refusal; AzureCallFailed when throttled, on a 5xx, or when no answer came."""
        ...

    def get_run(self, run: RunId) -> RunState:
        """The run's status."""
        ...


class Heartbeats(Protocol):
    """Log Analytics heartbeat reads."""

    def list_last_heartbeats(
        self, workspace_id: str, machines: Sequence[MachineId], since: datetime, until: datetime
    ) -> HeartbeatReport:
        """Last heartbeat per machine in (since, until]."""
        ...


class ReportStore(Protocol):
    """Where run reports are kept."""

    def save_report(self, run_id: RunId, report: Mapping[str, Any]) -> str:
        """Store the report; returns where it is."""
        ...

    def get_report(self, run_id: RunId) -> Mapping[str, Any] | None:
        """The stored report, or None."""
        ...


class Notifier(Protocol):
    """Sends a run's summary to people (a Teams/Slack-style webhook)."""

    def send(self, summary: Mapping[str, Any]) -> None:
        """Deliver once; raise on failure (the task is retried)."""
        ...
