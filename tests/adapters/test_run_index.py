"""The ledger's run index against real Azurite: pages newest first, per configuration and per
status, a single run found by name, open runs, retention in bounded batches, and reads whose
storage request count does not grow with the history."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_ledger import TableRunLedger
from shared.adapters.table_rows import partition_key
from shared.domain.ids import ConfigurationId, MachineId, RunId
from shared.domain.runs import MachineAction, MachineKind, MachineRecord, Run, RunStatus

SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
OTHER_SUBSCRIPTION = "c0de0000-1111-4222-8333-444455556666"
WEEKLY = ConfigurationId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)
WEEKLY_ELSEWHERE = ConfigurationId.parse(
    f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)
MONTHLY = ConfigurationId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/monthly"
)
FIRST = datetime(2026, 1, 3, 3, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


class RequestCounter:
    """Counts the storage requests the SDK sends (azure-core's raw_request_hook)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: Any) -> None:
        self.count += 1


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()


@pytest.fixture
def ledger(
    azurite_connection_string: str, table_name: str, counter: RequestCounter
) -> TableRunLedger:
    service = TableServiceClient.from_connection_string(
        azurite_connection_string, raw_request_hook=counter
    )
    return TableRunLedger(service, table_name)


def run_of(configuration: ConfigurationId, start: datetime) -> RunId:
    return RunId.of(configuration, start.strftime("%Y%m%d%H%M%S"))


def save(ledger: TableRunLedger, run_id: RunId, status: RunStatus = RunStatus.SCHEDULED) -> Run:
    return ledger.save_run(dataclasses.replace(Run.first_seen(run_id, NOW), status=status))


def weekly_history(ledger: TableRunLedger, weeks: int) -> list[RunId]:
    runs = [run_of(WEEKLY, FIRST + timedelta(weeks=n)) for n in range(weeks)]
    for run_id in runs:
        save(ledger, run_id)
    return runs


def page(ledger: TableRunLedger, top: int = 5, **filters: Any) -> tuple[list[Run], str | None]:
    wanted: dict[str, Any] = {
        "configuration": None,
        "status": None,
        "start_from": None,
        "start_to": None,
        "after": None,
        **filters,
    }
    return ledger.list_runs_page(top=top, **wanted)


def test_pages_come_newest_first_and_continue_where_the_last_one_ended(
    ledger: TableRunLedger,
) -> None:
    runs = weekly_history(ledger, 7)
    first, after = page(ledger, top=3)
    assert [r.run_id for r in first] == runs[::-1][:3]
    assert after is not None
    second, after = page(ledger, top=3, after=after)
    assert [r.run_id for r in second] == runs[::-1][3:6]
    third, after = page(ledger, top=3, after=after)
    assert [r.run_id for r in third] == runs[:1]
    assert after is None
    # Index rows carry the run row's version, so a reader can write the run back.
    assert first[0].version == ledger.find_run(runs[-1]).version  # type: ignore[union-attr]


def test_a_configuration_is_one_range_by_name_or_by_id(ledger: TableRunLedger) -> None:
    weekly = weekly_history(ledger, 3)
    elsewhere = save(ledger, run_of(WEEKLY_ELSEWHERE, FIRST + timedelta(days=1))).run_id
    monthly = save(ledger, run_of(MONTHLY, FIRST + timedelta(days=2))).run_id
    by_name, _ = page(ledger, top=10, configuration="Weekly-Linux")
    assert {r.run_id for r in by_name} == {*weekly, elsewhere}
    by_id, _ = page(ledger, top=10, configuration=WEEKLY.text.upper().replace("SUB", "sub"))
    assert {r.run_id for r in by_id} == set(weekly)
    assert [r.run_id for r in page(ledger, top=10, configuration="monthly")[0]] == [monthly]


def test_a_status_change_moves_the_run_from_one_status_range_to_the_other(
    ledger: TableRunLedger,
) -> None:
    first, second = weekly_history(ledger, 2)
    stored = ledger.find_run(first)
    assert stored is not None
    ledger.save_run(
        dataclasses.replace(stored, status=RunStatus.PREPARING, platform_status="InProgress")
    )
    assert [r.run_id for r in page(ledger, status="preparing")[0]] == [first]
    assert [r.run_id for r in page(ledger, status="InProgress")[0]] == [first]
    assert [r.run_id for r in page(ledger, status="Scheduled")[0]] == [second]
    # Status and configuration together.
    assert page(ledger, status="Preparing", configuration="monthly")[0] == []
    assert [r.run_id for r in page(ledger, status="Preparing", configuration=WEEKLY.text)[0]] == [
        first
    ]


def test_a_date_range_is_a_key_range(ledger: TableRunLedger) -> None:
    runs = weekly_history(ledger, 6)
    found, _ = page(
        ledger,
        top=10,
        start_from=FIRST + timedelta(weeks=2),
        start_to=FIRST + timedelta(weeks=4),
    )
    assert [r.run_id for r in found] == [runs[3], runs[2]]


def test_a_continuation_from_another_listing_is_refused(ledger: TableRunLedger) -> None:
    weekly_history(ledger, 3)
    _, after = page(ledger, top=1)
    assert after is not None
    with pytest.raises(ValueError, match="continuation"):
        page(ledger, top=1, status="Scheduled", after=after)


def test_a_run_is_found_by_configuration_name_and_run_name(ledger: TableRunLedger) -> None:
    start = FIRST + timedelta(weeks=1)
    weekly = save(ledger, run_of(WEEKLY, start)).run_id
    elsewhere = save(ledger, run_of(WEEKLY_ELSEWHERE, start)).run_id
    save(ledger, run_of(WEEKLY, FIRST))
    found = ledger.find_runs_named("weekly-linux", weekly.run_name)
    assert {r.run_id for r in found} == {weekly, elsewhere}
    assert ledger.find_runs_named("weekly-linux", "20991231000000") == []


def test_completed_runs_leave_the_open_runs(ledger: TableRunLedger) -> None:
    first, second, third = weekly_history(ledger, 3)
    stored = ledger.find_run(second)
    assert stored is not None
    ledger.save_run(dataclasses.replace(stored, status=RunStatus.COMPLETED))
    assert {r.run_id for r in ledger.list_open_runs()} == {first, third}
    assert ledger.list_known_configurations() == [WEEKLY]


def test_old_runs_are_removed_in_bounded_batches_with_all_their_rows(
    ledger: TableRunLedger,
) -> None:
    runs = weekly_history(ledger, 5)
    machine = MachineRecord(
        run_id=runs[0],
        resource_id=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
        "Microsoft.Compute/virtualMachines/web-01",
        kind=MachineKind.VIRTUAL_MACHINE,
        prior_power_state="deallocated",
        action=MachineAction.PLANNED,
        updated_at=NOW,
    )
    ledger.save_machine(machine)
    cutoff = FIRST + timedelta(weeks=3)  # runs 0, 1 and 2 are older
    first_batch = ledger.remove_runs_before(cutoff, limit=2)
    second_batch = ledger.remove_runs_before(cutoff, limit=2)
    assert len(first_batch) == 2 and len(second_batch) == 1
    assert {*first_batch, *second_batch} == {runs[0], runs[1], runs[2]}
    assert ledger.remove_runs_before(cutoff, limit=2) == []
    assert ledger.find_run(runs[0]) is None
    assert list(ledger.list_machines(runs[0])) == []
    assert {r.run_id for r in page(ledger, top=10)[0]} == {runs[3], runs[4]}
    assert {r.run_id for r in ledger.list_open_runs()} == {runs[3], runs[4]}
    assert ledger.find_runs_named("weekly-linux", runs[0].run_name) == []
    assert MachineId.parse(machine.resource_id)  # the VM itself is not the ledger's to remove


def test_runs_stored_before_the_index_are_indexed_once(
    ledger: TableRunLedger, azurite_connection_string: str, table_name: str
) -> None:
    runs = weekly_history(ledger, 3)
    table = TableServiceClient.from_connection_string(azurite_connection_string).get_table_client(
        table_name
    )
    for entity in list(table.query_entities("PartitionKey eq 'runindex'")):
        table.delete_entity(entity["PartitionKey"], entity["RowKey"])
    assert page(ledger)[0] == []
    assert ledger.index_all_runs() == 3
    assert [r.run_id for r in page(ledger)[0]] == runs[::-1]


def test_a_page_and_a_single_run_cost_the_same_storage_requests_whatever_the_history(
    ledger: TableRunLedger, counter: RequestCounter
) -> None:
    def cost_of_reads() -> tuple[int, int]:
        counter.count = 0
        listed, _ = page(ledger, top=5)
        listed_cost = counter.count
        counter.count = 0
        found = ledger.find_runs_named("weekly-linux", listed[-1].run_id.run_name)
        ledger.find_run(found[0].run_id)
        return listed_cost, counter.count

    weekly_history(ledger, 6)
    small = cost_of_reads()
    runs = [run_of(WEEKLY, FIRST + timedelta(weeks=10, days=n)) for n in range(150)]
    for run_id in runs:
        save(ledger, run_id)
    assert cost_of_reads() == small == (1, 2)
    assert partition_key(runs[0]) != "runindex"


def test_a_reconcile_tick_costs_the_same_whatever_the_completed_history(
    ledger: TableRunLedger, counter: RequestCounter
) -> None:
    from shared.domain.policy import OrchestrationPolicy
    from shared.services.reconcile import Reconciler
    from tests.builders import FixedClock
    from tests.fakes import FakeGraph, ScheduledQueue

    clock = FixedClock(FIRST + timedelta(days=20))  # every run here is within the retention
    reconciler = Reconciler(
        ledger=ledger,
        graph=FakeGraph(),
        queue=ScheduledQueue(clock),
        clock=clock,
        policy=OrchestrationPolicy(),
    )

    def tick_cost() -> int:
        counter.count = 0
        reconciler.tick()
        return counter.count

    under_way = weekly_history(ledger, 2)
    reconciler.tick()  # the first tick indexes what was stored before the index (none here)
    small = tick_cost()
    for n in range(120):
        run_id = run_of(MONTHLY, FIRST - timedelta(days=10, hours=n))
        save(ledger, run_id, RunStatus.COMPLETED)
    assert tick_cost() == small
    assert {r.run_id for r in ledger.list_open_runs()} == set(under_way)
