"""Marks of accepted starts and deallocates, written several rows to a write: when ten wait,
when the oldest has waited its time, and at the task's end; a row another writer changed
meanwhile still gets its mark, under the same condition as a mark written at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.domain.errors import LedgerUnavailable
from shared.domain.machine_steps import DEALLOCATE_ACCEPTED, START_ACCEPTED
from shared.domain.machines import PowerState
from shared.domain.runs import MachineAction, MachineRecord
from shared.domain.tasks import Task, TaskKind
from shared.services.orchestration.accepted_marks import AcceptedMarks
from shared.services.orchestration.intent_renewer import IntentRenewer
from tests.builders import POST, PRE, START, InMemoryRunLedger
from tests.unit.test_orchestration import RUN, World, vm

NOW = START - timedelta(minutes=35)


class MachineWrites:
    """What our in-memory ledger was asked to write: each save_machine, each save_machines."""

    def __init__(self, ledger: InMemoryRunLedger) -> None:
        self.alone: list[MachineRecord] = []
        self.together: list[list[MachineRecord]] = []
        self.refuse_together: list[Exception] = []  # raised by the next writes together
        real_alone, real_together = ledger.save_machine, ledger.save_machines

        def alone(machine: MachineRecord) -> MachineRecord:
            self.alone.append(machine)
            return real_alone(machine)

        def together(machines: Sequence[MachineRecord]) -> list[MachineRecord]:
            self.together.append(list(machines))
            if self.refuse_together:
                raise self.refuse_together.pop(0)
            return real_together(machines)

        ledger.save_machine = alone  # type: ignore[method-assign]
        ledger.save_machines = together  # type: ignore[method-assign]

    def alone_with(self, detail: str) -> list[MachineRecord]:
        return [m for m in self.alone if m.history and m.history[-1][2] == detail]


def last_detail(row: MachineRecord | None) -> str:
    assert row is not None
    return row.history[-1][2]


def test_the_accepted_starts_of_a_task_are_marked_in_one_write() -> None:
    world = World(start_batch_size=10)
    machines = world.fleet(RUN, **{f"web{i}": PowerState.DEALLOCATED for i in range(10)})
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    writes = MachineWrites(world.ledger)
    world.orchestrator.handle(Task(TaskKind.START, RUN, tuple(machines)))
    assert [len(rows) for rows in writes.together] == [10]
    assert writes.alone_with(START_ACCEPTED) == []
    for machine in machines:
        row = world.row(machine)
        assert (row.action, last_detail(row)) == (MachineAction.STARTING, START_ACCEPTED)
    # What the task decided from the marks it returned: nothing to try again.
    assert [t for t in world.queue.sent if t.kind is TaskKind.START] == [
        Task(TaskKind.START, RUN, tuple(machines))
    ]


def test_the_accepted_deallocates_of_a_stop_task_are_marked_in_one_write() -> None:
    world = World(start_batch_size=10)
    machines = world.fleet(RUN, **{f"web{i}": PowerState.DEALLOCATED for i in range(10)})
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    writes = MachineWrites(world.ledger)
    world.deliver(POST)
    world.work()
    marked = [
        rows
        for rows in writes.together
        if any(m.history[-1][2] == DEALLOCATE_ACCEPTED for m in rows)
    ]
    assert [len(rows) for rows in marked] == [10]
    assert writes.alone_with(DEALLOCATE_ACCEPTED) == []
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)
    assert [t for t in world.queue.sent if t.kind is TaskKind.STOP and t.round > 0] == []


def started_intents(world: World, *names: str) -> list[MachineRecord]:
    """Rows as a start task leaves them just before it calls Azure."""
    machines = world.fleet(RUN, **{name: PowerState.DEALLOCATED for name in names})
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    return [
        world.ledger.save_machine(
            world.row(m).moved_to(
                MachineAction.STARTING, world.clock.now(), "start requested", owner_run=RUN.text
            )
        )
        for m in machines
    ]


def accept(world: World, row: MachineRecord, renewer: IntentRenewer) -> MachineRecord:
    return world.orchestrator._call(
        row,
        lambda: None,
        MachineAction.PLANNED,
        MachineAction.START_FAILED,
        START_ACCEPTED,
        renewer,
    )


def test_a_row_another_writer_changed_while_its_mark_waited_still_gets_its_mark() -> None:
    world = World()
    first, second, third = started_intents(world, "web1", "web2", "web3")
    writes = MachineWrites(world.ledger)
    with world.orchestrator._renewing() as renewer:
        returned = [accept(world, row, renewer) for row in (first, second, third)]
        assert [last_detail(r) for r in returned] == [START_ACCEPTED] * 3
        assert last_detail(world.row(vm("web1"))) == "start requested"  # waiting
        # Meanwhile another worker renews the second row and settles the third one.
        world.ledger.save_machine(
            replace(world.row(vm("web2")), updated_at=NOW + timedelta(seconds=5))
        )
        world.ledger.save_machine(
            world.row(vm("web3")).moved_to(MachineAction.STARTED, NOW, "seen running")
        )
    # The write together stored nothing; each mark then landed on its row's freshest copy,
    # under the same condition as before (a row settled meanwhile keeps its settlement).
    assert [len(rows) for rows in writes.together] == [3]
    assert last_detail(world.row(vm("web1"))) == START_ACCEPTED
    assert last_detail(world.row(vm("web2"))) == START_ACCEPTED
    assert world.row(vm("web2")).action is MachineAction.STARTING
    assert (world.row(vm("web3")).action, last_detail(world.row(vm("web3")))) == (
        MachineAction.STARTED,
        "seen running",
    )


def test_the_task_end_writes_the_waiting_marks_even_when_it_ends_by_an_exception() -> None:
    world = World()
    (intent,) = started_intents(world, "web1")

    def a_task_that_fails_after_an_accepted_start() -> None:
        with world.orchestrator._renewing() as renewer:
            accept(world, intent, renewer)
            raise RuntimeError("the next machine's step failed")

    with pytest.raises(RuntimeError):
        a_task_that_fails_after_an_accepted_start()
    assert last_detail(world.row(vm("web1"))) == START_ACCEPTED


def mark_of(detail: str) -> Callable[[MachineRecord], MachineRecord]:
    return lambda r: r.answered(detail, NOW + timedelta(seconds=1))


def alone_on_the_stored_copy(
    ledger: InMemoryRunLedger,
) -> Callable[[MachineRecord, Callable[[MachineRecord], MachineRecord]], MachineRecord]:
    def save(row: MachineRecord, mark: Callable[[MachineRecord], MachineRecord]) -> MachineRecord:
        current = ledger.find_machine(row.run_id, row.resource_id)
        assert current is not None
        return ledger.save_machine(mark(current))

    return save


def stored_intents(ledger: InMemoryRunLedger, count: int) -> list[MachineRecord]:
    return [
        ledger.save_machine(
            MachineRecord.planned(RUN, vm(f"web{i}").text, NOW).moved_to(
                MachineAction.STARTING, NOW, "start requested"
            )
        )
        for i in range(count)
    ]


def test_ten_waiting_marks_are_written_at_once_and_the_eleventh_waits() -> None:
    ledger = InMemoryRunLedger()
    writes = MachineWrites(ledger)
    rows = stored_intents(ledger, 11)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=600
    )
    for row in rows[:10]:
        marks.add(row, mark_of(START_ACCEPTED))
    assert [len(group) for group in writes.together] == [10]
    marks.add(rows[10], mark_of(START_ACCEPTED))
    assert last_detail(ledger.find_machine(RUN, rows[10].resource_id)) == "start requested"
    marks.close()
    assert [len(group) for group in writes.together] == [10, 1]
    assert all(last_detail(ledger.find_machine(RUN, r.resource_id)) == START_ACCEPTED for r in rows)


def test_a_waiting_mark_is_written_within_its_wait_while_the_task_goes_on() -> None:
    ledger = InMemoryRunLedger()
    (row,) = stored_intents(ledger, 1)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=0.05
    )
    marks.add(row, mark_of(START_ACCEPTED))
    give_up = time.monotonic() + 10
    while last_detail(ledger.find_machine(RUN, row.resource_id)) != START_ACCEPTED:
        assert time.monotonic() < give_up, "the mark was never written"
        time.sleep(0.01)
    assert marks.recorded(row)
    marks.close()


def test_marks_a_storage_failure_kept_out_wait_and_the_next_flush_writes_them() -> None:
    ledger = InMemoryRunLedger()
    writes = MachineWrites(ledger)
    writes.refuse_together.append(LedgerUnavailable("storage down"))
    rows = stored_intents(ledger, 2)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=600
    )
    for row in rows:
        marks.add(row, mark_of(START_ACCEPTED))
    with pytest.raises(LedgerUnavailable):
        marks.flush()
    assert not marks.recorded(rows[0])
    marks.close()
    assert all(last_detail(ledger.find_machine(RUN, r.resource_id)) == START_ACCEPTED for r in rows)
    assert all(marks.recorded(r) for r in rows)


def renewal_recorder(
    ledger: InMemoryRunLedger,
) -> tuple[list[str], Callable[[MachineRecord], MachineRecord | None], threading.Event]:
    renewed: list[str] = []
    done = threading.Event()

    def renew(held: MachineRecord) -> MachineRecord | None:
        renewed.append(held.resource_id)
        done.set()
        current = ledger.find_machine(held.run_id, held.resource_id)
        assert current is not None
        return ledger.save_machine(replace(current, updated_at=current.updated_at))

    return renewed, renew, done


def test_a_renewal_round_writes_the_waiting_marks_first_and_lets_their_rows_go() -> None:
    ledger = InMemoryRunLedger()
    accepted, unanswered = stored_intents(ledger, 2)
    renewed, renew, round_done = renewal_recorder(ledger)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=600
    )
    with IntentRenewer(renew, 0.5, marks) as renewer:
        renewer.hold(accepted)
        renewer.hold(unanswered)
        renewer.record_answer(accepted, mark_of(START_ACCEPTED))
        assert round_done.wait(10)
        assert last_detail(ledger.find_machine(RUN, accepted.resource_id)) == START_ACCEPTED
    assert set(renewed) == {unanswered.resource_id}


def test_a_row_whose_mark_could_not_be_written_is_still_renewed_and_marked_after() -> None:
    ledger = InMemoryRunLedger()
    writes = MachineWrites(ledger)
    writes.refuse_together.append(LedgerUnavailable("storage down"))
    (intent,) = stored_intents(ledger, 1)
    renewed, renew, round_done = renewal_recorder(ledger)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=600
    )
    with IntentRenewer(renew, 0.5, marks) as renewer:
        renewer.hold(intent)
        renewer.record_answer(intent, mark_of(START_ACCEPTED))
        assert round_done.wait(10)
    assert renewed[0] == intent.resource_id
    # Marked on the renewed copy: written together, no conflict with the renewal.
    assert last_detail(ledger.find_machine(RUN, intent.resource_id)) == START_ACCEPTED
    assert [len(group) for group in writes.together] == [1, 1]
    assert writes.alone_with(START_ACCEPTED) == []


def test_a_machine_named_twice_in_a_task_still_gets_its_mark() -> None:
    ledger = InMemoryRunLedger()
    (row,) = stored_intents(ledger, 1)
    marks = AcceptedMarks(
        ledger.save_machines, alone_on_the_stored_copy(ledger), longest_seconds=600
    )
    marks.add(row, mark_of(START_ACCEPTED))
    marks.add(row, mark_of(START_ACCEPTED))
    marks.close()
    assert last_detail(ledger.find_machine(RUN, row.resource_id)) == START_ACCEPTED
