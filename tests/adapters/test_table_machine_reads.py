"""The Table ledger reads a task's machine rows in one request against real Azurite: a batch
cut in storage order is one key range of exactly its rows, scattered machines are one wider
range, and a read longer than a page follows the service's continuation. What every RunLedger
returns for such a read is in test_ledger_contract.py."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_ledger import TableRunLedger
from shared.domain.ids import MachineId, RunId
from shared.domain.runs import MachineAction, MachineRecord
from tests.builders import CORRELATION_ID, START, SUBSCRIPTION

RUN = RunId.parse(CORRELATION_ID)
OTHER_RUN = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261208030000"))


class RequestRecorder:
    """Records what the SDK sends and gets on the test's own client (azure-core's
    raw_request_hook and raw_response_hook): each request's method and filter, and how many
    rows each answer carried."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.rows_answered: list[int] = []

    def clear(self) -> None:
        self.requests.clear()
        self.rows_answered.clear()

    def on_request(self, request: Any) -> None:
        http = request.http_request
        self.requests.append((http.method, unquote(str(http.query.get("$filter", "")))))

    def on_response(self, response: Any) -> None:
        answer = response.http_response
        if answer.status_code == 200 and "json" in answer.headers.get("content-type", ""):
            self.rows_answered.append(len(json.loads(answer.text()).get("value", [])))


@pytest.fixture
def recorder() -> RequestRecorder:
    return RequestRecorder()


@pytest.fixture
def ledger(
    azurite_connection_string: str, table_name: str, recorder: RequestRecorder
) -> TableRunLedger:
    service = TableServiceClient.from_connection_string(
        azurite_connection_string,
        raw_request_hook=recorder.on_request,
        raw_response_hook=recorder.on_response,
    )
    return TableRunLedger(service, table_name)


def fleet(ledger: TableRunLedger, run_id: RunId, count: int) -> list[MachineId]:
    machines = [
        MachineId.parse(
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
            f"Microsoft.Compute/virtualMachines/vm-{i:04d}"
        )
        for i in range(count)
    ]
    ledger.add_machines(MachineRecord.planned(run_id, m.text, START) for m in machines)
    return machines


def test_each_batch_of_50_cut_in_storage_order_is_read_in_one_request(
    ledger: TableRunLedger, recorder: RequestRecorder
) -> None:
    machines = fleet(ledger, RUN, 300)
    fleet(ledger, OTHER_RUN, 50)  # another run's rows: another partition, never read
    ordered = ledger.in_storage_order(machines)
    for start in range(0, len(ordered), 50):
        batch = ordered[start : start + 50]
        recorder.clear()
        rows = ledger.find_machines(RUN, batch)
        assert len(recorder.requests) == 1
        method, query = recorder.requests[0]
        assert method == "GET" and "RowKey ge" in query and "RowKey le" in query
        assert recorder.rows_answered == [50]  # the range holds the batch's rows, no others
        assert set(rows) == set(batch)
        assert all(rows[m].resource_id == m.text and rows[m].run_id == RUN for m in batch)


def test_scattered_machines_are_one_wider_request_and_only_they_are_returned(
    ledger: TableRunLedger, recorder: RequestRecorder
) -> None:
    machines = fleet(ledger, RUN, 300)
    scattered = ledger.in_storage_order(machines)[::6]
    recorder.clear()
    rows = ledger.find_machines(RUN, scattered)
    assert len(recorder.requests) == 1
    assert 250 < recorder.rows_answered[0] <= 300  # the rows between them are read too
    assert len(scattered) == len(rows) == 50
    assert set(rows) == set(scattered)


def test_a_read_of_more_rows_than_a_page_follows_the_continuation(
    ledger: TableRunLedger, recorder: RequestRecorder
) -> None:
    machines = fleet(ledger, RUN, 1_050)  # the service answers at most 1,000 rows a page
    recorder.clear()
    rows = ledger.find_machines(RUN, machines)
    assert len(recorder.requests) == 2
    assert recorder.rows_answered == [1_000, 50]
    assert set(rows) == set(machines)


def test_no_machines_asked_is_no_request(ledger: TableRunLedger, recorder: RequestRecorder) -> None:
    recorder.clear()
    assert ledger.find_machines(RUN, []) == {}
    assert recorder.requests == []


def test_one_row_saved_together_is_one_plain_write_not_a_transaction(
    ledger: TableRunLedger, recorder: RequestRecorder
) -> None:
    (machine,) = fleet(ledger, RUN, 1)
    row = ledger.find_machine(RUN, machine.text)
    assert row is not None
    recorder.clear()
    ledger.save_machines([row.moved_to(MachineAction.STARTING, START, "start requested")])
    assert [method for method, _ in recorder.requests] == ["PUT"]
    recorder.clear()
    two = fleet(ledger, OTHER_RUN, 2)
    rows = ledger.find_machines(OTHER_RUN, two)
    recorder.clear()
    ledger.save_machines(
        [r.moved_to(MachineAction.STARTING, START, "start requested") for r in rows.values()]
    )
    assert [method for method, _ in recorder.requests] == ["POST"]  # one $batch
