"""The Table ledger alone against real Azurite through the real azure-data-tables client: its keys,
two clients at once, storage that is down. What every RunLedger does is test_ledger_contract.py."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_ledger import TableRunLedger, build_table_service
from shared.adapters.table_rows import partition_key
from shared.config import StorageConnection
from shared.domain.errors import LedgerUnavailable
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import RunId
from shared.domain.runs import (
    MachineAction,
    MachineRecord,
    RunStatus,
)
from shared.services.intake import take_in_event
from tests.builders import CORRELATION_ID, POST, PRE, START, FixedClock, event_grid_event

ANY = frozenset(EventKind)
RUN = RunId.parse(CORRELATION_ID)
NOW = START - timedelta(minutes=30)
VM = (
    "/subscriptions/1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d/resourceGroups/app/providers/"
    "Microsoft.Compute/virtualMachines/web-01"
)


@pytest.fixture
def ledger(azurite_connection_string: str, table_name: str) -> TableRunLedger:
    service = build_table_service(StorageConnection(connection_string=azurite_connection_string))
    return TableRunLedger(service, table_name)


def test_run_is_keyed_by_configuration_and_run_name() -> None:
    assert partition_key(RUN) == (
        "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d|ops|weekly-linux|20261201030000"
    )
    assert partition_key(
        RunId.parse(CORRELATION_ID.upper().replace("SUBSCRIPTIONS", "subscriptions"))
    ) == partition_key(RUN)


def test_concurrent_intake_of_pre_and_post_keeps_both(
    azurite_connection_string: str, table_name: str
) -> None:
    # Two "instances", each with its own client, take in the pre and post event at once (after
    # the run's start: a post event before it would only be noted).
    clock = FixedClock(START + timedelta(hours=2))
    events = [parse_event(event_grid_event(k), ANY) for k in (PRE, POST)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def instance(index: int) -> None:
        service = build_table_service(
            StorageConnection(connection_string=azurite_connection_string)
        )
        ledger = TableRunLedger(service, table_name)
        barrier.wait()
        try:
            take_in_event(events[index], ledger, clock)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=instance, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ledger = TableRunLedger(
        build_table_service(StorageConnection(connection_string=azurite_connection_string)),
        table_name,
    )
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.pre_event_at is not None and run.post_event_at is not None
    assert run.status is RunStatus.POST_EVENT_RECEIVED
    assert sorted(e.kind.short for e in ledger.list_events(RUN)) == ["post", "pre"]


def test_unreachable_storage_raises_ledger_unavailable_quickly(table_name: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    ledger = TableRunLedger(
        build_table_service(StorageConnection(connection_string=conn)), table_name
    )
    with pytest.raises(LedgerUnavailable):
        ledger.find_run(RUN)


def test_identity_based_connection_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="credential"):
        build_table_service(StorageConnection(table_endpoint="https://x.table.core.windows.net"))


def test_the_table_is_created_once_on_first_use(
    azurite_connection_string: str, table_name: str
) -> None:
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    assert table_name not in [t.name for t in service.list_tables()]
    ledger = TableRunLedger(service, table_name)
    assert ledger.find_run(RUN) is None
    assert table_name in [t.name for t in service.list_tables()]


def test_ten_machine_rows_saved_together_cost_one_storage_request(
    azurite_connection_string: str, table_name: str
) -> None:
    requests: list[str] = []
    service = TableServiceClient.from_connection_string(
        azurite_connection_string, raw_request_hook=lambda r: requests.append(r.http_request.url)
    )
    ledger = TableRunLedger(service, table_name)
    rows = [
        ledger.save_machine(MachineRecord.planned(RUN, VM.replace("web-01", f"web-{i:02d}"), NOW))
        for i in range(10)
    ]
    requests.clear()
    later = NOW + timedelta(seconds=1)
    saved = ledger.save_machines(
        [r.moved_to(MachineAction.STARTING, later, "start requested") for r in rows]
    )
    assert len(requests) == 1
    assert requests[0].endswith("/$batch")
    assert [ledger.find_machine(RUN, r.resource_id) for r in rows] == saved
