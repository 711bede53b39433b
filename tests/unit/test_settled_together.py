"""Bulk reads settle many rows at once, and so are their records written: verify's starts seen
running and finish's deallocations seen done go up to 100 rows to a ledger write; a row another
writer changed since the round listed it is settled alone on its freshest copy, as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from shared.domain.errors import LedgerConflict
from shared.domain.ids import MachineId, RunId
from shared.domain.machines import PowerState
from shared.domain.runs import MachineAction, MachineRecord
from shared.domain.tasks import Task, TaskKind
from tests.builders import POST, PRE, START
from tests.unit.test_accepted_marks import MachineWrites
from tests.unit.test_orchestration import RUN, World


def started_fleet(world: World, count: int) -> list[MachineId]:
    machines = world.fleet(RUN, **{f"web{i:03}": PowerState.DEALLOCATED for i in range(count)})
    world.deliver(PRE)
    world.work(until_minutes_before_start=34.5)  # every start sent; no verify round yet
    return machines


def test_a_verify_round_records_every_vm_come_up_in_one_write_per_hundred() -> None:
    world = World(start_batch_size=150)
    machines = started_fleet(world, 130)
    assert {world.row(m).action for m in machines} == {MachineAction.STARTING}
    writes = MachineWrites(world.ledger)
    world.work(until_minutes_before_start=33.5)  # one verify round: all are up
    assert [len(rows) for rows in writes.together] == [100, 30]
    assert writes.alone_with("seen running") == []
    for machine in machines:
        row = world.row(machine)
        assert (row.action, row.last_power_state) == (MachineAction.STARTED, "running")


def test_a_row_changed_since_the_round_listed_it_is_still_settled_and_its_group_too() -> None:
    world = World(start_batch_size=150)
    machines = started_fleet(world, 12)
    another_writer = world.ledger.save_machine  # not counted below
    writes = MachineWrites(world.ledger)
    real_list = world.ledger.list_machines
    changed = machines[5]

    def list_then_another_writer(run_id: RunId) -> Iterator[MachineRecord]:
        listed = list(real_list(run_id))
        # Another worker writes one row after verify listed it (e.g. a renewal).
        row = world.ledger.find_machine(run_id, changed.text)
        assert row is not None
        another_writer(row)
        return iter(listed)

    world.ledger.list_machines = list_then_another_writer  # type: ignore[method-assign]
    world.work(until_minutes_before_start=33.5)
    world.ledger.list_machines = real_list  # type: ignore[method-assign]
    # The write together was refused as a whole (one row had changed): the rows were read
    # again, in one read, and written together once more.
    assert [len(rows) for rows in writes.together] == [12, 12]
    assert writes.alone_with("seen running") == []
    for machine in machines:
        assert world.row(machine).action is MachineAction.STARTED
        assert len([h for h in world.row(machine).history if h[2] == "seen running"]) == 1


def test_rows_that_keep_changing_are_settled_one_by_one_on_their_freshest_copies() -> None:
    world = World(start_batch_size=150)
    machines = started_fleet(world, 12)
    writes = MachineWrites(world.ledger)
    writes.refuse_together = [LedgerConflict("changed"), LedgerConflict("changed again")]
    world.work(until_minutes_before_start=33.5)
    assert [len(rows) for rows in writes.together] == [12, 12]
    assert {r.resource_id for r in writes.alone_with("seen running")} == {m.text for m in machines}
    for machine in machines:
        assert world.row(machine).action is MachineAction.STARTED
        assert len([h for h in world.row(machine).history if h[2] == "seen running"]) == 1


def test_finish_records_the_deallocations_it_sees_done_in_one_write() -> None:
    world = World(start_batch_size=150)
    machines = started_fleet(world, 40)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    writes = MachineWrites(world.ledger)
    world.work()
    settled = [rows for rows in writes.together if rows[0].action is MachineAction.DEALLOCATED]
    assert [len(rows) for rows in settled] == [40]
    assert writes.alone_with("seen deallocated") == []
    for machine in machines:
        row = world.row(machine)
        assert (row.action, row.last_power_state) == (MachineAction.DEALLOCATED, "deallocated")
        assert world.ledger.find_claim(machine) is None
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert TaskKind.NOTIFY in [t.kind for t in world.queue.sent]
    assert Task(TaskKind.FINISH, RUN) in world.queue.sent
