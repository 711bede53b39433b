"""A start or stop task reads its machines' rows once, together, when it begins; every fan-out
cuts its batches in the ledger's storage order so that read is one short range; and a row read
then, used after the machine waited for its write turn, never lets a power call go out twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import pytest

from shared.domain.errors import LedgerUnavailable
from shared.domain.ids import MachineId, RunId
from shared.domain.machine_steps import DEALLOCATE_ACCEPTED, START_ACCEPTED
from shared.domain.machines import PowerState
from shared.domain.runs import MachineAction, MachineRecord
from shared.domain.tasks import Task, TaskKind
from shared.services.orchestration.fan_out import on_first_use, parallel
from tests.builders import POST, PRE, START, SUBSCRIPTION, InMemoryRunLedger
from tests.unit.test_orchestration import RUN, World, vm


class ReversedLedger(InMemoryRunLedger):
    """An in-memory ledger that keeps its machine rows in the reverse of the usual order: the
    fan-outs must follow the ledger's order, not one of their own."""

    def in_storage_order(self, machines: Iterable[MachineId]) -> list[MachineId]:
        return sorted(machines, key=lambda m: m.key, reverse=True)


def on_ledger(world: World, ledger: InMemoryRunLedger) -> World:
    world.ledger = ledger
    world.orchestrator.ledger = ledger
    return world


def row_reads_by_step(world: World, until: datetime | None = None) -> Counter[tuple[TaskKind, str]]:
    """Work the queue dry (or up to `until`), counting each kind of step's machine-row reads,
    one by one ("find_machine") and in batches ("find_machines")."""
    counts: Counter[tuple[TaskKind, str]] = Counter()
    current: list[TaskKind] = []
    ledger = world.ledger
    one, many = ledger.find_machine, ledger.find_machines

    def find_machine(run_id: RunId, resource_id: str) -> MachineRecord | None:
        counts[current[-1], "find_machine"] += 1
        return one(run_id, resource_id)

    def find_machines(
        run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        counts[current[-1], "find_machines"] += 1
        return many(run_id, machines)

    ledger.find_machine = find_machine  # type: ignore[method-assign]
    ledger.find_machines = find_machines  # type: ignore[method-assign]

    def handle(task: Task) -> None:
        current.append(task.kind)
        counts[task.kind, "tasks"] += 1
        world.orchestrator.handle(task)

    world.queue.drain(handle, until=until)
    ledger.find_machine, ledger.find_machines = one, many  # type: ignore[method-assign]
    return counts


def fleet_of(world: World, count: int) -> list[MachineId]:
    # Named so that the order they are listed in is none of the ledgers' orders.
    names = [f"vm-{(i * 3) % count:02d}" for i in range(count)]
    return world.fleet(RUN, **dict.fromkeys(names, PowerState.DEALLOCATED))


def machines_sent(world: World, kind: TaskKind, since: int = 0) -> list[MachineId]:
    return [m for t in world.queue.sent[since:] if t.kind is kind for m in t.machines]


def test_start_and_stop_tasks_read_their_rows_once_per_task_not_once_per_vm() -> None:
    world = World(start_batch_size=5)
    machines = fleet_of(world, 20)
    world.deliver(PRE)
    reads = row_reads_by_step(world)
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    reads += row_reads_by_step(world)
    for kind in (TaskKind.START, TaskKind.STOP):
        assert reads[kind, "tasks"] == 4
        assert reads[kind, "find_machines"] == 4
        assert reads[kind, "find_machine"] == 0
    assert all(world.machines.count("start", m) == 1 for m in machines)
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)


def test_a_task_put_off_for_its_write_turn_reads_its_rows_once_when_its_turn_comes() -> None:
    world = World(start_batch_size=5)
    machines = fleet_of(world, 10)
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 40.0
    world.deliver(PRE)
    reads = row_reads_by_step(world, until=world.clock.now())
    assert reads[TaskKind.START, "tasks"] == 2
    assert reads[TaskKind.START, "find_machines"] == 0  # no turn came: nothing was read
    assert all(world.row(m).action is MachineAction.PLANNED for m in machines)
    world.machines.turn_waits.clear()
    reads = row_reads_by_step(world)
    assert reads[TaskKind.START, "tasks"] == 2  # the two tasks put off, sent again
    assert reads[TaskKind.START, "find_machines"] == 2
    assert reads[TaskKind.START, "find_machine"] == 0
    assert all(world.machines.count("start", m) == 1 for m in machines)


def test_prepare_and_wrap_up_cut_their_batches_in_the_ledgers_storage_order() -> None:
    world = on_ledger(World(start_batch_size=4), ReversedLedger())
    machines = fleet_of(world, 10)
    world.deliver(PRE)
    world.work()
    in_order = world.ledger.in_storage_order(machines)
    assert in_order != machines
    assert machines_sent(world, TaskKind.START) == in_order
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert machines_sent(world, TaskKind.STOP) == in_order
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)


def test_start_tasks_lost_with_a_host_are_sent_again_in_storage_order() -> None:
    world = on_ledger(World(start_batch_size=3, task_lease=timedelta(seconds=45)), ReversedLedger())
    machines = fleet_of(world, 7)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    # The host died holding the start tasks: only the verify loop is left on the queue.
    world.queue._heap = [e for e in world.queue._heap if e[2].kind is not TaskKind.START]
    sent_before = len(world.queue.sent)
    world.clock.advance(timedelta(seconds=50))
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    resent = [t for t in world.queue.sent[sent_before:] if t.kind is TaskKind.START]
    assert [len(t.machines) for t in resent] == [3, 3, 1]
    assert machines_sent(world, TaskKind.START, sent_before) == world.ledger.in_storage_order(
        machines
    )


def test_stop_tasks_lost_with_a_host_are_sent_again_by_finish_in_storage_order() -> None:
    world = on_ledger(World(start_batch_size=3, task_lease=timedelta(seconds=45)), ReversedLedger())
    machines = fleet_of(world, 7)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.orchestrator.handle(Task(TaskKind.WRAP_UP, RUN))
    # The host died holding the stop tasks: finish's rounds are left.
    world.queue._heap = [e for e in world.queue._heap if e[2].kind is not TaskKind.STOP]
    sent_before = len(world.queue.sent)
    world.work()
    assert machines_sent(world, TaskKind.STOP, sent_before) == world.ledger.in_storage_order(
        machines
    )
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)


def another_worker_acts_after_the_batch_read(
    world: World, machine: MachineId, act: Callable[[MachineRecord], None]
) -> None:
    """The first batch read that includes `machine` is followed, before any machine's turn,
    by another worker acting on it (a second delivery of the same task, say)."""
    many = world.ledger.find_machines
    done: list[bool] = []

    def find_machines(
        run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        asked = list(machines)
        found = many(run_id, asked)
        if machine in asked and not done:
            done.append(True)
            act(found[machine])
        return found

    world.ledger.find_machines = find_machines  # type: ignore[method-assign]


@pytest.mark.parametrize("call_sent", [True, False], ids=["call sent", "intent only"])
def test_a_start_another_worker_took_after_the_task_read_its_row_is_not_sent_again(
    call_sent: bool,
) -> None:
    world = World(start_batch_size=5)
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)

    def take(row: MachineRecord) -> None:
        now = world.clock.now()
        intent = world.ledger.save_machine(
            row.moved_to(MachineAction.STARTING, now, "start requested", owner_run=RUN.text)
        )
        if call_sent:
            world.machines.start(web)
            world.ledger.save_machine(intent.answered(START_ACCEPTED, now))

    another_worker_acts_after_the_batch_read(world, web, take)
    world.deliver(PRE)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now())
    # The task's copy of web's row said Planned: its write on that version was a conflict
    # (the intent, or "already running" when the VM was up), and the current row decided.
    assert world.machines.count("start", web) == (1 if call_sent else 0)
    assert world.machines.count("start", api) == 1
    assert world.row(web).action is MachineAction.STARTING
    assert world.row(web).history[-1][2] == (START_ACCEPTED if call_sent else "start requested")


@pytest.mark.parametrize("call_sent", [True, False], ids=["call sent", "intent only"])
def test_a_deallocate_another_worker_took_after_the_task_read_its_row_is_not_sent_again(
    call_sent: bool,
) -> None:
    world = World(start_batch_size=5)
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)

    def take(row: MachineRecord) -> None:
        now = world.clock.now()
        intent = world.ledger.save_machine(
            row.moved_to(MachineAction.DEALLOCATING, now, "deallocate requested")
        )
        if call_sent:
            world.machines.deallocate(web)
            world.ledger.save_machine(intent.answered(DEALLOCATE_ACCEPTED, now))

    another_worker_acts_after_the_batch_read(world, web, take)
    world.deliver(POST)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now())
    assert world.machines.count("deallocate", web) == (1 if call_sent else 0)
    assert world.machines.count("deallocate", api) == 1
    assert world.row(web).action is MachineAction.DEALLOCATING
    world.work()  # finish settles web: deallocated, or its lapsed intent is sent again once
    assert world.machines.count("deallocate", web) == 1
    assert world.row(web).action is MachineAction.DEALLOCATED


def test_a_machine_with_no_row_yet_is_created_and_started_by_its_task() -> None:
    world = World(start_batch_size=5)
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    late = vm("late")
    world.machines.add(late, PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now())
    assert world.ledger.find_machine(RUN, late.text) is None
    world.orchestrator.handle(Task(TaskKind.START, RUN, (web, late)))
    assert world.machines.count("start", late) == 1
    assert world.row(late).action is MachineAction.STARTING
    assert world.row(late).owner_run == RUN.text
    assert world.machines.count("start", web) == 1  # its own task started it; not again


def test_what_a_batch_shares_is_loaded_once_by_many_threads_and_again_after_a_failure() -> None:
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        if len(loads) == 1:
            raise LedgerUnavailable("storage did not answer")
        return len(loads)

    rows = on_first_use(load)
    with pytest.raises(LedgerUnavailable):
        rows()
    assert parallel(8, lambda _: rows(), range(32)) == [2] * 32
    assert len(loads) == 2
