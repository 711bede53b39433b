"""Bulk reads settle many rows at once, and so are their records written: verify's starts seen
running and finish's deallocations seen done go up to 100 rows to a ledger write. A write another
writer got into (a row changed since the round listed it) stores nothing: verify leaves its rows
to its next round, which lists them afresh; finish reads them again, writes them together once
more, and then settles each alone on its freshest copy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
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


def test_a_verify_write_another_writer_got_into_is_left_to_the_next_round() -> None:
    world = World(start_batch_size=150)
    machines = started_fleet(world, 12)
    another_writer = world.ledger.save_machine  # not counted below
    writes = MachineWrites(world.ledger)
    real_list = world.ledger.list_machines
    changed = machines[5]

    def list_then_another_writer(run_id: RunId) -> Iterator[MachineRecord]:
        listed = list(real_list(run_id))
        # Another worker writes one row after verify listed it (e.g. an overlapping round).
        row = world.ledger.find_machine(run_id, changed.text)
        assert row is not None
        another_writer(row)
        # And the listed copy of that row looks like an orphaned start (an old intent whose
        # acceptance is not recorded yet, the VM last seen down), though its VM now runs.
        return iter(
            replace(
                r,
                history=r.history[:-1],
                updated_at=r.updated_at - timedelta(hours=1),
                last_power_state="deallocated",
            )
            if r.resource_id == changed.text
            else r
            for r in listed
        )

    group_reads: list[list[MachineId]] = []
    real_find = world.ledger.find_machines

    def find_machines(
        run_id: RunId, machines: Iterable[MachineId]
    ) -> dict[MachineId, MachineRecord]:
        group_reads.append(list(machines))
        return real_find(run_id, group_reads[-1])

    world.ledger.find_machines = find_machines  # type: ignore[method-assign]
    starts_sent = [t for t in world.queue.sent if t.kind is TaskKind.START]
    world.ledger.list_machines = list_then_another_writer  # type: ignore[method-assign]
    world.work(until_minutes_before_start=33.5)
    world.ledger.list_machines = real_list  # type: ignore[method-assign]
    # The write together was refused as a whole (one row had changed). Its rows were not read
    # again (for rows spread over the run, that read is nearly the whole partition), nothing
    # was written alone, and no VM seen running was taken for an orphaned start.
    assert [len(rows) for rows in writes.together] == [12]
    assert group_reads == []
    assert writes.alone_with("seen running") == []
    assert {world.row(m).action for m in machines} == {MachineAction.STARTING}
    assert [t for t in world.queue.sent if t.kind is TaskKind.GATE] == []
    assert [t for t in world.queue.sent if t.kind is TaskKind.START] == starts_sent
    # The next round lists the rows afresh and settles them, each once.
    world.work(until_minutes_before_start=32.5)
    assert [len(rows) for rows in writes.together] == [12, 12]
    for machine in machines:
        assert world.row(machine).action is MachineAction.STARTED
        assert len([h for h in world.row(machine).history if h[2] == "seen running"]) == 1


def finished_fleet_writes(
    count: int, refusals: int
) -> tuple[World, list[MachineId], MachineWrites]:
    """A run whose `count` VMs were started, then its post event; finish's first writes
    together are refused `refusals` times (another writer got in)."""
    world = World(start_batch_size=150)
    machines = started_fleet(world, count)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    real_together = world.ledger.save_machines

    def refuse_deallocated(machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        if refusals > len(refused) and machines[0].action is MachineAction.DEALLOCATED:
            refused.append(list(machines))
            raise LedgerConflict("changed")
        return real_together(machines)

    refused: list[list[MachineRecord]] = []
    world.ledger.save_machines = refuse_deallocated  # type: ignore[method-assign]
    writes = MachineWrites(world.ledger)  # records each write together, refused ones too
    world.work()
    return world, machines, writes


def test_a_finish_write_another_writer_got_into_is_read_again_and_written_together() -> None:
    world, machines, writes = finished_fleet_writes(12, refusals=1)
    settled = [rows for rows in writes.together if rows[0].action is MachineAction.DEALLOCATED]
    assert [len(rows) for rows in settled] == [12, 12]
    assert writes.alone_with("seen deallocated") == []
    for machine in machines:
        row = world.row(machine)
        assert row.action is MachineAction.DEALLOCATED
        assert len([h for h in row.history if h[2] == "seen deallocated"]) == 1


def test_finish_rows_that_keep_changing_are_settled_one_by_one_on_their_freshest_copies() -> None:
    world, machines, writes = finished_fleet_writes(12, refusals=2)
    settled = [rows for rows in writes.together if rows[0].action is MachineAction.DEALLOCATED]
    assert [len(rows) for rows in settled] == [12, 12]
    alone = writes.alone_with("seen deallocated")
    assert {r.resource_id for r in alone} == {m.text for m in machines}
    for machine in machines:
        row = world.row(machine)
        assert row.action is MachineAction.DEALLOCATED
        assert len([h for h in row.history if h[2] == "seen deallocated"]) == 1


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
