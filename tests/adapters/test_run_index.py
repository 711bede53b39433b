"""The Table ledger's run index against real Azurite: reads whose storage request count does not
grow with the history, and runs stored before the index. Its pages, filters, open runs and
retention, as every RunLedger keeps them, are in test_ledger_contract.py."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_ledger import TableRunLedger
from shared.adapters.table_rows import partition_key
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.runs import Run, RunStatus

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


def test_a_new_run_costs_its_own_write_and_one_index_transaction_and_a_change_one_read_more(
    ledger: TableRunLedger, counter: RequestCounter
) -> None:
    save(ledger, run_of(WEEKLY, FIRST - timedelta(weeks=1)))  # the table exists from here on
    run_id = run_of(WEEKLY, FIRST)
    counter.count = 0
    run = save(ledger, run_id)
    assert counter.count == 2  # no index read: a run just created has no index rows
    counter.count = 0
    ledger.save_run(dataclasses.replace(run, status=RunStatus.PREPARING))
    assert counter.count == 3
    assert [r.status for r in page(ledger)[0]] == [RunStatus.PREPARING, RunStatus.SCHEDULED]


def test_a_run_created_again_over_stale_index_rows_is_indexed_as_it_now_is(
    ledger: TableRunLedger, azurite_connection_string: str, table_name: str
) -> None:
    run_id = run_of(WEEKLY, FIRST)
    save(ledger, run_id, RunStatus.PREPARING)
    table = TableServiceClient.from_connection_string(azurite_connection_string).get_table_client(
        table_name
    )
    # The run row goes (a half-done removal, say) and its index rows stay behind.
    run_row = next(iter(table.query_entities(f"PartitionKey eq '{partition_key(run_id)}'")))
    table.delete_entity(run_row["PartitionKey"], run_row["RowKey"])
    save(ledger, run_id, RunStatus.SCHEDULED)
    listed, _ = page(ledger)
    assert [(r.run_id, r.status) for r in listed] == [(run_id, RunStatus.SCHEDULED)]
    assert page(ledger, status=RunStatus.PREPARING)[0] == []


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


def test_removing_a_batch_of_old_runs_costs_two_requests_a_run_and_one_read_besides(
    ledger: TableRunLedger, counter: RequestCounter
) -> None:
    # Each run: one read of its partition, one transaction deleting it; the batch's index rows
    # (6 a completed run: all, cfg, name, named, two statuses) go in one shared transaction.
    for n in range(10):
        ledger.save_run(
            dataclasses.replace(
                Run.first_seen(run_of(MONTHLY, FIRST + timedelta(days=n)), NOW),
                status=RunStatus.COMPLETED,
                platform_status="Succeeded",
            )
        )
    counter.count = 0
    removed = ledger.remove_runs_before(FIRST + timedelta(days=20), limit=10)
    assert len(removed) == 10
    assert counter.count == 1 + 2 * 10 + 1
    assert page(ledger, top=20)[0] == []
