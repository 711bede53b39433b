"""In-memory fakes of our own ports, for use-case tests (the adapters are tested against the
sandbox and Azurite separately)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.errors import AzureCallFailed, CancelRefused
from shared.domain.ids import MachineId, RunId
from shared.domain.machines import MachinePower, OperationOutcome, OperationResult, PowerState
from shared.domain.platform import (
    CancelAcceptance,
    HeartbeatReport,
    MachineFacts,
    PatchResult,
    PlatformRun,
    RunMachine,
    RunState,
)
from shared.domain.tasks import Task
from tests.builders import FixedClock


@dataclass
class FakeVm:
    state: PowerState
    tags: dict[str, str] = field(default_factory=dict)
    # A start of this VM is accepted, then fails with this code (the VM stays down).
    fails_with: str | None = None
    # The code of the VM's last operation when it failed (ProvisioningState/failed/<code>).
    failed: str | None = None


class Done:
    def __init__(self, result: OperationResult) -> None:
        self.result = result

    def wait(self, timeout: float | None = None) -> OperationResult:
        return self.result


class FakeMachines:
    """VMs whose power changes as soon as Azure accepts a call; counts every call, and every
    read apart (`reads`: one per VM read alone, one per bulk read of a subscription)."""

    def __init__(self) -> None:
        self.vms: dict[str, FakeVm] = {}
        self.calls: list[tuple[str, str]] = []
        self.reads: list[tuple[str, str]] = []
        self.turns: list[str] = []
        self.turn_waits: dict[str, float] = {}
        self.appointments: list[tuple[str, ...]] = []

    def add(self, machine: MachineId, state: PowerState, **kw: Any) -> None:
        self.vms[machine.key] = FakeVm(state, **kw)

    def _vm(self, machine: MachineId) -> FakeVm:
        if machine.key not in self.vms:
            raise AzureCallFailed("Compute", 404, "ResourceNotFound", machine.text)
        return self.vms[machine.key]

    def get_machine(self, machine: MachineId) -> MachineFacts:
        self.reads.append(("get", machine.key))
        return MachineFacts(machine, self.get_power(machine), self._vm(machine).tags)

    def get_power(self, machine: MachineId) -> MachinePower:
        if machine.is_arc:
            return MachinePower(None, False)
        vm = self._vm(machine)
        return MachinePower(
            vm.state,
            vm.state.startable,
            failed_code=vm.failed,
            failed_message="no capacity" if vm.failed else None,
        )

    def list_power_states(
        self, subscription_id: str, machines: Iterable[MachineId]
    ) -> Iterator[tuple[MachineId, MachinePower]]:
        self.reads.append(("list", subscription_id.lower()))
        for machine in machines:
            if machine.is_arc:
                yield machine, MachinePower(None, False)
            elif machine.key in self.vms:
                yield machine, self.get_power(machine)

    def turn_wait(self, machine: MachineId) -> float:
        return self.turn_waits.get(machine.subscription_id.lower(), 0.0)

    def turn_appointment(self, machines: Sequence[MachineId]) -> float:
        """The soonest of their subscriptions' `turn_waits` (recorded; no turns are promised
        here, so later work is not pushed back)."""
        self.appointments.append(tuple(m.key for m in machines))
        return min((self.turn_wait(m) for m in machines), default=0.0)

    @contextlib.contextmanager
    def power_turn(self, machine: MachineId) -> Iterator[float]:
        """Every turn is now, unless a test set `turn_waits` (seconds per subscription)."""
        self.turns.append(machine.key)
        yield self.turn_waits.get(machine.subscription_id.lower(), 0.0)

    def start(self, machine: MachineId, still_wanted: Callable[[], bool] | None = None) -> None:
        self.calls.append(("start", machine.key))
        vm = self._vm(machine)
        if vm.fails_with:
            vm.failed = vm.fails_with
            return
        vm.state, vm.failed = PowerState.RUNNING, None

    def deallocate(self, machine: MachineId) -> None:
        self.calls.append(("deallocate", machine.key))
        vm = self._vm(machine)
        vm.state, vm.failed = PowerState.DEALLOCATED, None

    def begin_snapshot_os_disk(self, machine: MachineId, snapshot_name: str) -> Done:
        self.calls.append(("snapshot", machine.key))
        return Done(OperationResult(OperationOutcome.SUCCEEDED))

    def count(self, verb: str, machine: MachineId) -> int:
        return self.calls.count((verb, machine.key))


class FakeGraph:
    """Resource Graph: the machines of each run (possibly after some lag)."""

    def __init__(self) -> None:
        self.machines: dict[str, list[MachineId]] = {}
        self.status: dict[str, str | None] = {}
        self.hidden_rounds: dict[str, int] = {}
        self.runs: list[PlatformRun] = []
        self.runs_asked: list[tuple[set[str], list[str]]] = []
        # Set to answer these patch results instead of one "Succeeded" per machine.
        self.patch_results: list[PatchResult] | None = None

    def list_run_machines(self, run: RunId, subscriptions: Sequence[str]) -> Iterator[RunMachine]:
        if self.hidden_rounds.get(run.key, 0) > 0:
            self.hidden_rounds[run.key] -= 1
            return iter([])
        return iter(
            [
                RunMachine(f"{m.text}/x", m, self.status.get(run.key, "Succeeded"))
                for m in self.machines.get(run.key, [])
            ]
        )

    def list_patch_results(
        self, run: RunId, subscriptions: Sequence[str], since: datetime, until: datetime
    ) -> Iterator[PatchResult]:
        if self.patch_results is not None:
            return iter(self.patch_results)
        return iter(
            [
                PatchResult(m, "Succeeded", 3, 0, "NotNeeded", False, None, run.text)
                for m in self.machines.get(run.key, [])
            ]
        )

    def list_runs(self, configurations: Any, subscriptions: Sequence[str]) -> Iterator[PlatformRun]:
        self.runs_asked.append(({c.key for c in configurations}, list(subscriptions)))
        return iter(self.runs)


class FakeCanceller:
    """The maintenance service's run operations. Answers like the REST spec's example by
    default (202 "Cancel"); `answer` changes the status code and word, `lose_answer` applies
    the cancel and then fails as if the answer never came, `fail_reads` makes the GET fail,
    `unknown` lists run keys Azure does not know."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.puts: list[str] = []
        self.refuse: tuple[str, str] | None = None
        self.answer: tuple[int, str | None] = (202, "Cancel")
        self.lose_answer: AzureCallFailed | None = None
        self.fail_puts: AzureCallFailed | None = None
        self.fail_reads = False
        self.unknown: set[str] = set()
        self.status_before_cancel = "Pending"

    def cancel_run(self, run: RunId) -> CancelAcceptance:
        self.puts.append(run.key)
        if run.key in self.unknown:
            raise CancelRefused("Maintenance", 404, "NotFound", "no such run")
        if self.refuse:
            raise CancelRefused("Maintenance", 409, *self.refuse)
        if self.fail_puts is not None:
            raise self.fail_puts
        self.cancelled.append(run.key)
        if self.lose_answer is not None:
            raise self.lose_answer
        return CancelAcceptance(run, *self.answer)

    def get_run(self, run: RunId) -> RunState:
        if self.fail_reads:
            raise AzureCallFailed("Maintenance", 503, "ServiceUnavailable", "try later")
        if run.key in self.unknown:
            raise AzureCallFailed("Maintenance", 404, "NotFound", "no such run")
        return RunState(
            run, "Cancelled" if run.key in self.cancelled else self.status_before_cancel
        )


class FakeReports:
    def __init__(self) -> None:
        self.reports: dict[str, Mapping[str, Any]] = {}

    def save_report(self, run_id: RunId, report: Mapping[str, Any]) -> str:
        self.reports[run_id.key] = report
        return f"memory://{run_id.run_name}"

    def get_report(self, run_id: RunId) -> Mapping[str, Any] | None:
        return self.reports.get(run_id.key)


class FakeHeartbeats:
    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}

    def list_last_heartbeats(
        self, workspace_id: str, machines: Sequence[MachineId], since: datetime, until: datetime
    ) -> HeartbeatReport:
        return HeartbeatReport(
            {
                m: self.seen[m.key]
                for m in machines
                if m.key in self.seen and self.seen[m.key] > since
            }
        )


class ScheduledQueue:
    """A task queue on the fake clock: `drain` runs tasks in the order they become visible,
    moving the clock forward to each one's time."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self._heap: list[tuple[datetime, int, Task]] = []
        self._order = itertools.count()
        self.sent: list[Task] = []

    def send(self, task: Task, delay: timedelta = timedelta(0)) -> None:
        self.sent.append(task)
        heapq.heappush(self._heap, (self.clock.now() + delay, next(self._order), task))

    def __len__(self) -> int:
        return len(self._heap)

    def pending(self) -> list[tuple[datetime, Task]]:
        """The tasks not yet run, with the time each becomes visible, soonest first."""
        return [(when, task) for when, _, task in sorted(self._heap)]

    def drain(self, handle: Any, limit: int = 2000, until: datetime | None = None) -> list[Task]:
        done: list[Task] = []
        while self._heap and len(done) < limit:
            when, _, task = self._heap[0]
            if until is not None and when > until:
                break
            heapq.heappop(self._heap)
            if when > self.clock.now():
                self.clock.current = when
            handle(task)
            done.append(task)
        assert len(done) < limit, "tasks kept coming"
        return done
