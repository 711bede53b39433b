"""Issue 11's rules with in-memory fakes: ownership follows what the app did, no start after
the run stops wanting starts, nothing ends quietly, the gate counts what is true, the report
says what happened, and a dead worker's work comes back after a lease."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import MachineId, RunId
from shared.domain.machines import MachinePower, PowerState
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    NoteLevel,
    RunStatus,
    WatchRound,
)
from shared.domain.tasks import Task, TaskKind
from shared.services.reporting import summary_message
from tests.builders import POST, PRE, START
from tests.fakes import FakeMachines
from tests.unit.test_orchestration import RUN, World


class LosingMachines(FakeMachines):
    """Azure does what it is asked, then the answer is lost (an error instead), or the VM's
    instance view reports a failure."""

    def __init__(self) -> None:
        super().__init__()
        # Raised after the call was applied (a 5xx or no answer once Azure acted on it).
        self.start_error: AzureCallFailed | None = None
        self.deallocate_error: AzureCallFailed | None = None
        # The VM's instance view reports its start failed with this code, though it came up.
        self.start_reported_failed: str | None = None
        self.deallocate_works = True
        self.start_applies = True

    def start(self, machine: MachineId, still_wanted: Callable[[], bool] | None = None) -> None:
        if self.start_applies:
            super().start(machine)
        else:  # the VM stays as it was, whatever the answer says
            self.calls.append(("start", machine.key))
        if self.start_reported_failed:
            self._vm(machine).failed = self.start_reported_failed
        if self.start_error is not None:
            raise self.start_error

    def deallocate(self, machine: MachineId) -> None:
        if self.deallocate_works:
            super().deallocate(machine)
        else:  # accepted, then it fails: the VM keeps running
            self.calls.append(("deallocate", machine.key))
            self._vm(machine).failed = "OperationNotAllowed"
        if self.deallocate_error is not None:
            raise self.deallocate_error


def losing_world(**policy: object) -> tuple[World, LosingMachines]:
    world = World(**policy)
    machines = LosingMachines()
    world.machines = machines
    world.orchestrator.machines = machines
    return world, machines


def test_a_start_whose_answer_was_lost_is_the_runs_and_is_never_sent_twice() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    machines.start_error = AzureCallFailed("Compute", 502, "BadGateway", "no answer")
    world.deliver(PRE)
    world.work()
    row = world.row(web)
    assert row.action is MachineAction.STARTED
    assert row.owned_by_run
    assert machines.count("start", web) == 1
    assert any(step[2].startswith("answer lost") for step in row.history)
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.row(web).action is MachineAction.DEALLOCATED
    assert machines.count("deallocate", web) == 1


def test_a_start_reported_failed_that_came_up_counts_as_running_at_the_gate() -> None:
    world, machines = losing_world(failure_budget_percent=0)
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    machines.start_reported_failed = "InternalError"
    world.deliver(PRE)
    world.work()
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Passed"
    assert world.canceller.cancelled == []
    assert world.row(web).action is MachineAction.STARTED
    assert not [n for n in world.ledger.list_notes(RUN) if n.level is NoteLevel.ERROR]
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.row(web).action is MachineAction.DEALLOCATED


def test_a_start_failed_that_comes_up_later_is_read_again_at_the_gate() -> None:
    world, machines = losing_world(failure_budget_percent=0)
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    machines.vms[web.key].fails_with = "InternalError"
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    assert world.row(web).action is MachineAction.START_FAILED
    assert world.row(web).error_code == "InternalError"
    machines.vms[web.key].state = PowerState.RUNNING  # Azure brought it up after all
    world.work()  # the gate reads it again
    assert world.row(web).action is MachineAction.STARTED
    run = world.ledger.find_run(RUN)
    assert run is not None and run.gate_outcome == "Passed"


def test_an_accepted_start_is_settled_by_the_power_state_without_waiting_or_an_error() -> None:
    world, _ = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    row = world.row(web)
    assert (row.action, row.history[-1][2]) == (MachineAction.STARTING, "start accepted")
    assert row.owned_by_run
    world.work()
    assert world.row(web).action is MachineAction.STARTED
    assert world.row(web).history[-1][2] == "seen running"
    assert not [n for n in world.ledger.list_notes(RUN) if n.level is NoteLevel.ERROR]


def test_no_start_is_sent_once_the_run_was_cancelled_before_the_task_ran() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    run = world.ledger.find_run(RUN)
    assert run is not None
    world.ledger.save_run(replace(run, status=RunStatus.CANCELLED))
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    assert machines.count("start", web) == 0


def test_a_cancel_landing_between_the_intent_and_the_call_stops_the_start() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    real_save = world.ledger.save_machine

    def save_then_cancel(machine: MachineRecord) -> MachineRecord:
        saved = real_save(machine)
        if machine.action is MachineAction.STARTING:
            run = world.ledger.find_run(RUN)
            assert run is not None
            world.ledger.save_run(replace(run, status=RunStatus.WRAPPING_UP))
        return saved

    world.ledger.save_machine = save_then_cancel  # type: ignore[method-assign]
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    assert machines.count("start", web) == 0
    assert world.row(web).action is MachineAction.PLANNED


def test_a_deallocate_whose_answer_was_lost_is_reported_deallocated() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    machines.deallocate_error = AzureCallFailed("Compute", 503, "ServiceUnavailable", "lost")
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    row = world.row(web)
    assert row.action is MachineAction.DEALLOCATED
    assert machines.count("deallocate", web) == 1
    assert row.history[-1][2] == "found deallocated after the app's deallocate"


def test_a_vm_wrap_up_cannot_stop_is_named_in_an_error_note_the_report_and_the_message() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    machines.deallocate_works = False
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED
    notes = [n for n in world.ledger.list_notes(RUN) if n.source == "wrap-up"]
    assert [n.level for n in notes] == [NoteLevel.ERROR]
    assert web.text in notes[0].message
    report = world.reports.get_report(RUN)
    assert report is not None
    assert any(web.text in n["message"] for n in report["notes"])
    assert web.text in summary_message(run, report)["text"]


def test_a_second_delivery_of_a_verify_round_does_nothing() -> None:
    world, _ = losing_world()
    world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    sent = len(world.queue.sent)
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    after_first = len(world.queue.sent)
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=0))
    assert after_first > sent
    assert len(world.queue.sent) == after_first


def test_start_tasks_lost_with_a_host_are_sent_again_once_the_fan_out_is_quiet_a_lease() -> None:
    world, machines = losing_world(task_lease=timedelta(seconds=45))
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    # The host died holding the start task: only the verify loop is left on the queue.
    world.queue._heap = [
        entry for entry in world.queue._heap if entry[2].kind is not TaskKind.START
    ]
    world.clock.advance(timedelta(seconds=20))
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    assert machines.calls == []
    world.clock.advance(timedelta(seconds=30))
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=2))
    world.work()
    assert machines.count("start", web) == machines.count("start", api) == 1
    assert world.row(web).action is MachineAction.STARTED


def test_a_dead_workers_intent_lapses_after_a_lease_and_the_vm_is_started_once() -> None:
    world, machines = losing_world(task_lease=timedelta(seconds=45))
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    row = world.row(web)
    # A worker wrote its intent and died before its call reached Azure.
    world.ledger.save_machine(
        row.moved_to(MachineAction.STARTING, world.clock.now(), "start requested")
    )
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    assert machines.count("start", web) == 0  # fresh: maybe still on its way
    world.clock.advance(timedelta(seconds=50))
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    assert machines.count("start", web) == 1
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    assert world.row(web).action is MachineAction.STARTED


def test_a_start_refused_with_429_and_then_started_by_someone_else_is_left_alone() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)

    def throttled_while_an_operator_starts_it(
        machine: MachineId, still_wanted: Callable[[], bool] | None = None
    ) -> None:
        machines.calls.append(("start", machine.key))
        machines.vms[machine.key].state = PowerState.RUNNING
        raise AzureCallFailed("Compute", 429, "TooManyRequests", "throttled")

    machines.start = throttled_while_an_operator_starts_it  # type: ignore[method-assign]
    world.deliver(PRE)
    world.work()
    assert world.row(web).action is MachineAction.LEFT_ALONE
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert machines.count("deallocate", web) == 0


class ThrottledReads(LosingMachines):
    """Power reads answer 429 once `throttled` is set (ARM's read bucket is dry)."""

    def __init__(self) -> None:
        super().__init__()
        self.throttled = False

    def list_power_states(
        self, subscription_id: str, machines: Iterable[MachineId]
    ) -> Iterator[tuple[MachineId, MachinePower]]:
        if self.throttled:
            raise AzureCallFailed("Compute", 429, "SubscriptionRequestsThrottled", "later")
        return super().list_power_states(subscription_id, machines)


def gate_after_an_unanswered_start(world: World, machines: ThrottledReads) -> MachineId:
    """A start whose answer was lost and whose VM is still deallocated, then the gate."""
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    machines.start_error = AzureCallFailed("Compute", 503, "ServiceUnavailable", "lost")
    machines.start_applies = False
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web,)))
    assert world.row(web).action is MachineAction.STARTING
    world.orchestrator.handle(Task(TaskKind.GATE, RUN))
    return web


def throttled_world() -> tuple[World, ThrottledReads]:
    world = World(failure_budget_percent=0)
    machines = ThrottledReads()
    world.machines = machines
    world.orchestrator.machines = machines
    return world, machines


def test_a_vm_whose_power_cannot_be_read_at_the_gate_is_not_counted_as_a_failure() -> None:
    world, machines = throttled_world()
    real_handle = world.orchestrator.handle

    def handle(task: Task) -> None:
        machines.throttled = task.kind is TaskKind.GATE  # the read bucket runs dry at T−15
        real_handle(task)

    world.orchestrator.handle = handle  # type: ignore[method-assign]
    web = gate_after_an_unanswered_start(world, machines)
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Passed", run.gate_detail
    assert "1 unreadable, not counted" in (run.gate_detail or "")
    assert world.canceller.puts == []
    assert any(n.source == "gate" and "could not be read" in n.message for n in world.ledger.notes)
    assert world.row(web).owned_by_run  # still the run's: wrap-up stops it


def test_a_vm_read_not_running_at_the_gate_still_counts_against_the_budget() -> None:
    world, machines = throttled_world()
    gate_after_an_unanswered_start(world, machines)
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Cancelled", run.gate_detail
    assert "1 of 1" in (run.gate_detail or "")
    assert world.canceller.puts == [RUN.key]


def test_a_host_dying_as_it_takes_a_finish_round_leaves_the_loop_going() -> None:
    world, machines = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now())
    # The host dies recording that it took finish round 0 (after reading the run): the
    # message comes back later, but the loop must not wait for that.
    real_save = world.ledger.save_watch_round
    died: list[bool] = []

    def save_watch_round(watch: WatchRound) -> WatchRound:
        if (watch.mark or "").startswith("finish:0:") and not died:
            died.append(True)
            raise RuntimeError("host killed")
        return real_save(watch)

    world.ledger.save_watch_round = save_watch_round  # type: ignore[method-assign]
    finish = next(t for _, t in world.queue.pending() if t.kind is TaskKind.FINISH)
    world.queue._heap = [e for e in world.queue._heap if e[2].kind is not TaskKind.FINISH]
    with pytest.raises(RuntimeError):
        world.orchestrator.handle(finish)
    assert died
    # Round 1 is already on the queue; the redelivered round 0 leaves a second round 1.
    assert [t.round for _, t in world.queue.pending() if t.kind is TaskKind.FINISH] == [1]
    world.orchestrator.handle(finish)
    handled: list[Task] = []

    def handle(task: Task) -> None:
        handled.append(task)
        world.orchestrator.handle(task)

    world.queue.drain(handle)
    assert world.row(web).action is MachineAction.DEALLOCATED
    assert machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED
    rounds = [t.round for t in handled if t.kind is TaskKind.FINISH]
    # The duplicate round 1 did nothing: no round came twice after it.
    assert rounds.count(1) == 2 and all(rounds.count(r) == 1 for r in set(rounds) - {1})


def test_overlapping_finish_rounds_complete_the_run_report_and_notify_once() -> None:
    world, _ = losing_world()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now() + timedelta(seconds=5))
    assert world.row(web).action is MachineAction.DEALLOCATING
    world.machines.vms[web.key].state = PowerState.DEALLOCATED
    # Round 1 is slow: while it reads the patch results, round 2 begins and runs to the end.
    real_patches = world.graph.list_patch_results
    overtaken: list[bool] = []

    def slow_patch_results(*args: Any) -> Any:
        if not overtaken:
            overtaken.append(True)
            world.orchestrator.handle(Task(TaskKind.FINISH, RUN, round=2))
        return real_patches(*args)

    world.graph.list_patch_results = slow_patch_results  # type: ignore[method-assign,assignment]
    saved: list[str] = []
    real_save = world.reports.save_report

    def save_report(run_id: RunId, report: Any) -> str:
        saved.append(run_id.key)
        return real_save(run_id, report)

    world.reports.save_report = save_report  # type: ignore[method-assign]
    before = len(world.queue.sent)
    world.orchestrator.handle(Task(TaskKind.FINISH, RUN, round=1))
    assert overtaken
    notifies = [t for t in world.queue.sent[before:] if t.kind is TaskKind.NOTIFY]
    assert len(notifies) == 1 and saved == [RUN.key]
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED


class RefusingDeallocates(FakeMachines):
    def deallocate(self, machine: MachineId) -> None:
        self.calls.append(("deallocate", machine.key))
        raise AzureCallFailed("Compute", 409, "OperationNotAllowed", "the VM is locked")


def test_finish_names_a_vm_left_running_once_while_it_waits_for_heartbeats() -> None:
    world = World(
        log_analytics_workspace_id="0b5c8a52-3f3e-4d4c-9f1a-6f0d2b7e9c11",
        health_wait=timedelta(minutes=2),
    )
    world.machines = world.orchestrator.machines = RefusingDeallocates()
    web, db = world.fleet(web=PowerState.DEALLOCATED, db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED
    finish_rounds = [t for t in world.queue.sent if t.kind is TaskKind.FINISH]
    assert len(finish_rounds) > 4  # several rounds waited for db's heartbeat
    errors = [(n.source, n.message) for n in world.ledger.notes if n.level is NoteLevel.ERROR]
    assert [s for s, _ in errors].count("wrap-up") == 1
    assert [s for s, _ in errors].count("health") == 1
    assert any(web.text in m for s, m in errors if s == "wrap-up")
    report = world.reports.get_report(RUN)
    assert report is not None
    assert report["health"]["missing"] == [db.text]
