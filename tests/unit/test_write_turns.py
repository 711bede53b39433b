"""Waiting for Azure's write budget in the queue, not in a worker: a machine whose write turn is
far is put off before anything is read, written or sent for it; wrap-up reads power states once
and its stop tasks carry them."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest

from shared.domain.ids import MachineId
from shared.domain.machines import PowerState
from shared.domain.runs import MachineAction, RunStatus
from shared.domain.tasks import MAX_ROUND, MAX_TASK_BYTES, InvalidTask, Task, TaskKind
from shared.domain.vocabulary import CancelSource, CancelVerdict
from shared.services.cancellation import cancel_run
from tests.builders import POST, PRE, START, SUBSCRIPTION
from tests.unit.test_orchestration import RUN, World, ledger_reads


def reads_by_step(world: World) -> Counter[TaskKind]:
    """Work the queue dry, counting the Azure reads each kind of step made."""
    counts: Counter[TaskKind] = Counter()

    def handle(task: Task) -> None:
        before = len(world.machines.reads)
        world.orchestrator.handle(task)
        counts[task.kind] += len(world.machines.reads) - before

    world.queue.drain(handle)
    return counts


def test_wrap_up_reads_power_states_once_and_its_stop_tasks_read_nothing() -> None:
    world = World(start_batch_size=5)
    machines = world.fleet(RUN, **{f"vm{i:02d}": PowerState.DEALLOCATED for i in range(20)})
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    reads = reads_by_step(world)
    stops = [t for t in world.queue.sent if t.kind is TaskKind.STOP]
    assert len(stops) == 4
    assert all(t.read_at is not None and set(t.powers) == {"running"} for t in stops)
    assert reads[TaskKind.WRAP_UP] == 1  # one bulk read of the one subscription
    assert reads[TaskKind.STOP] == 0
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)


def test_a_stop_task_reads_a_vm_again_when_its_carried_state_is_old_and_says_down() -> None:
    # Finish's first look comes after the stop task's: this is about the stop task alone.
    world = World(start_batch_size=5, arg_retry=timedelta(minutes=5))
    web, db = world.fleet(web=PowerState.DEALLOCATED, db=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    # Wrap-up reads db down (someone stopped it), then its stop task waits for a turn a
    # minute away; meanwhile db is started again (by its owner, say).
    world.machines.vms[db.key].state = PowerState.DEALLOCATED
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 60.0
    world.queue.drain(world.orchestrator.handle, until=world.clock.now())
    world.machines.vms[db.key].state = PowerState.RUNNING
    world.machines.turn_waits.clear()
    reads = reads_by_step(world)
    assert reads[TaskKind.STOP] == 1  # db alone: web's carried "running" still decides
    assert ("get", db.key) in world.machines.reads
    assert world.machines.count("deallocate", db) == 1
    assert world.machines.count("deallocate", web) == 1


def test_a_machine_whose_write_turn_is_far_is_put_off_untouched_until_its_turn_is_near() -> None:
    world = World(start_batch_size=5)
    machines = world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(5)})
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 40.0
    world.deliver(PRE)
    done = world.queue.drain(
        world.orchestrator.handle, until=START - timedelta(minutes=35) + timedelta(seconds=1)
    )
    assert [t.kind for t in done] == [TaskKind.PREPARE, TaskKind.START]
    # Nothing was read or sent, and the rows do not say anything was tried.
    assert world.machines.reads == [] and world.machines.calls == []
    assert all(world.row(m).action is MachineAction.PLANNED for m in machines)
    assert all(len(world.row(m).history) == 1 for m in machines)
    put_off = [(when, t) for when, t in world.queue.pending() if t.kind is TaskKind.START]
    assert len(put_off) == 1
    when, task = put_off[0]
    # Back when the turns promised to it come (the fake promises the turn wait), at the same
    # round, carrying that promise.
    assert when - world.clock.now() == timedelta(seconds=40)
    assert task.turn_at == when
    assert task.round == 0 and set(task.machines) == set(machines)
    world.machines.turn_waits.clear()
    world.work()
    assert all(world.machines.count("start", m) == 1 for m in machines)
    assert all(world.row(m).action is MachineAction.STARTED for m in machines)


def test_a_delivery_whose_turns_are_all_far_reads_nothing_and_a_near_one_stops_with_the_run() -> (
    None
):
    world = World(start_batch_size=5)
    world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(5)})
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 4.0
    world.deliver(PRE)
    world.queue.drain(world.orchestrator.handle, until=START - timedelta(minutes=35))
    real_find_run = world.ledger.find_run
    reads = ledger_reads(world, "find_run")
    (start,) = [t for _, t in world.queue.pending() if t.kind is TaskKind.START]
    world.queue._heap = [e for e in world.queue._heap if e[2].kind is not TaskKind.START]
    world.orchestrator.handle(start)
    assert reads == []  # back on the queue before reading the run or anything else
    (again,) = [t for _, t in world.queue.pending() if t.kind is TaskKind.START]
    assert set(again.machines) == set(start.machines) and again.round == start.round
    # The run stops preparing meanwhile: the delivery whose turns are near reads that, and
    # the loop ends without sending anything.
    prepared = real_find_run(RUN)
    assert prepared is not None and prepared.status is RunStatus.PREPARING
    world.ledger.save_run(replace(prepared, status=RunStatus.CANCELLED))
    world.queue._heap = [e for e in world.queue._heap if e[2].kind is not TaskKind.START]
    world.machines.turn_waits.clear()
    world.orchestrator.handle(again)
    assert reads == [RUN.key]
    assert not [t for _, t in world.queue.pending() if t.kind is TaskKind.START]
    assert world.machines.calls == []


def test_waiting_for_turns_never_gives_a_machine_up_while_the_run_still_prepares() -> None:
    world = World(start_batch_size=5)
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 4.0
    world.deliver(PRE)
    # Far more rounds than a throttled call is allowed (200), each 3 s apart: 15 minutes.
    world.queue.drain(world.orchestrator.handle, until=START - timedelta(minutes=20))
    starts = [t for t in world.queue.sent if t.kind is TaskKind.START]
    assert len(starts) > 200 and all(t.round == 0 for t in starts)  # more than 200 rounds
    world.machines.turn_waits.clear()
    world.work(until_minutes_before_start=15)
    assert world.machines.count("start", web) == 1
    assert world.row(web).action is MachineAction.STARTED
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.PREPARED
    assert not [n for n in world.ledger.notes if "gave up" in n.message]


def test_finish_sends_no_second_stop_task_while_the_stops_are_moving() -> None:
    world = World(start_batch_size=2, arg_retry=timedelta(seconds=20))
    machines = world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(6)})
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    # The first batch goes at once; the others wait 30 s for their turns while finish looks
    # every 20 s: their turns are far, then rows moved less than a lease ago, so the waiting
    # ones are not orphans.
    sent_by_finish: list[Task] = []
    stops_run = 0

    def handle(task: Task) -> None:
        nonlocal stops_run
        late = world.clock.now() >= START + timedelta(hours=1, seconds=25)
        waits = world.machines.turn_waits
        waits[SUBSCRIPTION.lower()] = 0.0 if stops_run == 0 or late else 30.0
        before = len(world.queue.sent)
        world.orchestrator.handle(task)
        stops_run += task.kind is TaskKind.STOP
        if task.kind is TaskKind.FINISH:
            sent_by_finish.extend(t for t in world.queue.sent[before:] if t.kind is TaskKind.STOP)

    world.queue.drain(handle)
    assert sent_by_finish == []
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)


def test_finish_sends_the_stops_again_once_they_went_quiet_a_lease_with_what_it_read() -> None:
    world = World(start_batch_size=2, arg_retry=timedelta(seconds=20))
    machines = world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(4)})
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    # The stop tasks are lost (a poisoned message, say): nothing moves.
    sent_by_finish: list[Task] = []

    def handle(task: Task) -> None:
        if task.kind is TaskKind.STOP and not sent_by_finish:
            return
        before = len(world.queue.sent)
        world.orchestrator.handle(task)
        if task.kind is TaskKind.FINISH:
            sent_by_finish.extend(t for t in world.queue.sent[before:] if t.kind is TaskKind.STOP)

    world.queue.drain(handle)
    assert {m for t in sent_by_finish for m in t.machines} == set(machines)
    assert all(t.read_at is not None and set(t.powers) == {"running"} for t in sent_by_finish)
    assert all(world.machines.count("deallocate", m) == 1 for m in machines)
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines)


def test_a_stop_task_carries_its_power_states_through_the_queue_message() -> None:
    machines = tuple(
        MachineId.parse(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
            f"Microsoft.Compute/virtualMachines/vm{i}"
        )
        for i in range(3)
    )
    read_at = START + timedelta(hours=1)
    task = Task(
        TaskKind.STOP, RUN, machines, 2, powers=("running", None, "deallocated"), read_at=read_at
    )
    again = Task.from_json(task.to_json())
    assert again == task
    assert again.carried_power(machines[2]) == "deallocated"
    assert again.carried_power(machines[1]) is None
    # Some of its machines, later: their own states kept.
    part = again.with_machines([machines[2], machines[0]], 3)
    assert part.powers == ("deallocated", "running") and part.read_at == read_at
    # A plain task stays as it was on the wire.
    assert "powers" not in Task(TaskKind.STOP, RUN, machines).to_json()


@pytest.mark.parametrize(
    ("powers", "read_at"),
    [
        (["running"], "2026-12-01T04:00:00+00:00"),  # one word for two machines
        (["running", 7], "2026-12-01T04:00:00+00:00"),
        (["running", "x" * 41], "2026-12-01T04:00:00+00:00"),
        (["running", None], "yesterday"),
        (["running", None], "2026-12-01T04:00:00"),  # no time zone
    ],
)
def test_a_message_whose_carried_powers_are_malformed_is_not_a_task(
    powers: list[object], read_at: str
) -> None:
    body = {
        "kind": "stop",
        "run": RUN.text,
        "machines": [
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
            f"Microsoft.Compute/virtualMachines/vm{i}"
            for i in range(2)
        ],
        "round": 0,
        "powers": powers,
        "read_at": read_at,
    }
    with pytest.raises(InvalidTask):
        Task.from_json(json.dumps(body))


def test_a_task_carries_the_time_of_its_promised_turns_through_the_queue_message() -> None:
    task = Task(TaskKind.START, RUN, turn_at=START - timedelta(minutes=30))
    assert Task.from_json(task.to_json()) == task
    assert "turn_at" not in Task(TaskKind.START, RUN).to_json()
    for malformed in ("soon", "2026-12-01T04:00:00", 7):
        body = {"kind": "start", "run": RUN.text, "turn_at": malformed}
        with pytest.raises(InvalidTask):
            Task.from_json(json.dumps(body))


def test_a_delivery_early_for_its_promised_turns_goes_back_for_them_keeping_its_place() -> None:
    world = World(start_batch_size=5)
    machines = world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(5)})
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 100.0
    world.deliver(PRE)
    world.queue.drain(
        world.orchestrator.handle, until=START - timedelta(minutes=35) + timedelta(seconds=1)
    )
    assert len(world.machines.appointments) == 1
    ((when, first),) = [(w, t) for w, t in world.queue.pending() if t.kind is TaskKind.START]
    # Promised in 100 s; a queue delay is at most 60 s, so it comes back early...
    assert first.turn_at is not None and first.turn_at - world.clock.now() == timedelta(seconds=100)
    assert when - world.clock.now() == timedelta(seconds=60)
    world.queue.drain(world.orchestrator.handle, until=when)
    # ...and goes back for the same turns, not behind work promised turns since.
    ((again_when, again),) = [(w, t) for w, t in world.queue.pending() if t.kind is TaskKind.START]
    assert again.turn_at == first.turn_at and again_when == first.turn_at
    assert len(world.machines.appointments) == 1
    assert world.machines.reads == [] and world.machines.calls == []
    world.machines.turn_waits.clear()
    world.work()
    assert all(world.machines.count("start", m) == 1 for m in machines)


def test_the_largest_task_the_settings_allow_fits_one_queue_message() -> None:
    # ARM's longest names: resource group 90 characters, VM 64.
    group, name = "g" * 90, "v" * 64
    machines = tuple(
        MachineId.parse(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/"
            f"Microsoft.Compute/virtualMachines/{name[:-3]}{i:03d}"
        )
        for i in range(150)
    )
    task = Task(
        TaskKind.STOP,
        RUN,
        machines,
        MAX_ROUND,
        powers=("deallocating",) * 150,
        read_at=START + timedelta(hours=1),
        turn_at=START + timedelta(hours=1, minutes=10, microseconds=1),
    )
    assert len(task.to_json()) <= MAX_TASK_BYTES


def test_a_cancel_while_vms_wait_for_their_turns_still_records_the_running_ones_left_alone() -> (
    None
):
    world = World(start_batch_size=5)
    stopped = world.fleet(RUN, **{f"vm{i}": PowerState.DEALLOCATED for i in range(3)})
    (db,) = world.fleet(db=PowerState.RUNNING)
    world.machines.turn_waits[SUBSCRIPTION.lower()] = 40.0
    world.deliver(PRE)
    world.queue.drain(world.orchestrator.handle, until=world.clock.now() + timedelta(seconds=1))
    assert world.row(db).action is MachineAction.PLANNED  # put off with the others, unread
    answer = cancel_run(
        RUN,
        world.orchestrator.cancel_context(),
        requested_by="operator",
        reason="bad patch",
        source=CancelSource.USER,
    )
    assert answer.verdict in (CancelVerdict.CANCELLED, CancelVerdict.CANCEL_REQUESTED)
    world.machines.turn_waits.clear()
    world.work()
    assert world.row(db).action is MachineAction.LEFT_ALONE
    assert world.row(db).prior_power_state == "running"
    assert all(world.row(m).action is MachineAction.PLANNED for m in stopped)
    assert world.machines.calls == []
