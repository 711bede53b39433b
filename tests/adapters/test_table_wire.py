"""The ledger's hot requests (shared/adapters/table_wire) against real Azurite, beside the SDK's
own requests for the same rows: reads give the same values, types and ETags, and the same rows
for the same filter across a continuation; writes and transactions store the same rows; keys and
filter values that need escaping; failures as the SDK raises them."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.adapters.table_ledger import TableRunLedger
from shared.adapters.table_rows import (
    is_exists_error,
    is_precondition_error,
    machine_from,
    partition_key,
    run_from,
)
from shared.adapters.table_wire import (
    TableWire,
    answer_parts,
    entity_from,
    entity_json,
    odata_filter,
)
from shared.domain.errors import LedgerUnavailable
from shared.domain.ids import RunId
from shared.domain.runs import MachineAction, MachineRecord, Run, RunStatus
from shared.domain.vocabulary import GateOutcome
from tests.builders import CORRELATION_ID, START, SUBSCRIPTION

RUN = RunId.parse(CORRELATION_ID)
AWKWARD = "it's {odd} @lo 'quoted' ü%&+ ,="


@pytest.fixture
def table(azurite_connection_string: str, table_name: str) -> TableClient:
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    return service.create_table(table_name)


def sdk_view(entity: Mapping[str, Any]) -> dict[str, Any]:
    """An SDK entity's values as plain Python: EntityProperty (Int64) as its value."""
    return {k: (v.value if isinstance(v, EntityProperty) else v) for k, v in entity.items()}


def test_every_kind_of_value_reads_as_the_sdk_reads_it(table: TableClient) -> None:
    moment = datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)
    table.create_entity(
        {
            "PartitionKey": AWKWARD,
            "RowKey": AWKWARD + "row",
            "Text": AWKWARD,
            "Empty": "",
            "When": moment,
            "WhenWhole": moment.replace(microsecond=0),
            "Small": 7,
            "Big": EntityProperty(2**40, EdmType.INT64),
            "Ratio": 0.25,
            "Flag": True,
            "Id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "Blob": b"\x00\xffbytes",
        }
    )
    ours = TableWire(table).get(AWKWARD, AWKWARD + "row")
    theirs = table.get_entity(AWKWARD, AWKWARD + "row")
    assert ours is not None
    assert ours == sdk_view(theirs)
    assert ours.metadata["etag"] == theirs.metadata["etag"]
    assert ours["When"] == moment and ours["When"].tzinfo is not None
    assert ours["Big"] == 2**40 and ours["Blob"] == b"\x00\xffbytes"
    assert "Timestamp" not in ours


def test_dates_with_seven_decimal_places_keep_six_as_the_sdk_does() -> None:
    document = {
        "odata.etag": 'W/"x"',
        "PartitionKey": "p",
        "RowKey": "r",
        "At@odata.type": "Edm.DateTime",
        "At": "2026-12-01T03:00:00.1234567Z",
        "Timestamp": "2026-12-01T03:00:00.1234567Z",
    }
    entity = entity_from(document)
    assert entity["At"] == datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)
    assert entity.metadata == {"etag": 'W/"x"'}
    assert set(entity) == {"PartitionKey", "RowKey", "At"}


def test_ledger_rows_map_to_the_same_records_either_way(
    azurite_connection_string: str, table_name: str
) -> None:
    ledger = TableRunLedger(
        TableServiceClient.from_connection_string(azurite_connection_string), table_name
    )
    machine = MachineRecord.planned(RUN, f"/subscriptions/{SUBSCRIPTION}/{AWKWARD}", START)
    ledger.save_machine(
        machine.moved_to(
            MachineAction.STARTING, START, "start requested", owner_run=RUN.text
        ).answered(AWKWARD, START + timedelta(microseconds=7))
    )
    ledger.save_run(
        dataclasses.replace(
            Run.first_seen(RUN, START),
            status=RunStatus.PREPARING,
            end=START + timedelta(hours=2),
            cancellation_cutoff=START - timedelta(minutes=10),
            pre_event_at=START - timedelta(minutes=40, microseconds=1),
            gate_outcome=GateOutcome.PASSED,
            gate_detail=AWKWARD,
            subscription_ids=(SUBSCRIPTION,),
        )
    )
    partition = partition_key(RUN)
    table = ledger.table
    kinds = []
    for sdk_entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": partition}):
        ours = TableWire(table).get(partition, sdk_entity["RowKey"])
        assert ours is not None
        if sdk_entity["Kind"] == "run":
            assert run_from(ours) == run_from(sdk_entity)
        elif sdk_entity["Kind"] == "machine":
            assert machine_from(ours, RUN) == machine_from(sdk_entity, RUN)
        kinds.append(sdk_entity["Kind"])
    assert sorted(kinds) == ["machine", "run"]


def test_a_query_returns_the_sdks_rows_across_a_continuation(table: TableClient) -> None:
    rows = [
        {"PartitionKey": AWKWARD, "RowKey": f"row|{i:05d}", "N": i, "At": START}
        for i in range(1_150)
    ]
    for start in range(0, len(rows), 100):
        table.submit_transaction([("create", r) for r in rows[start : start + 100]])
    table.create_entity({"PartitionKey": "other", "RowKey": "row|00001", "N": 1})
    template = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
    values = {"pk": AWKWARD, "lo": "row|00010", "hi": "row|01100"}
    ours = list(TableWire(table).query(odata_filter(template, **values)))
    theirs = list(table.query_entities(template, parameters=values))
    assert len(ours) == 1_090  # more than one page of 1,000
    assert ours == [sdk_view(e) for e in theirs]
    assert [e.metadata["etag"] for e in ours] == [e.metadata["etag"] for e in theirs]


def test_a_filter_value_cannot_change_the_filter(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "a", "Name": "x' or 'a' eq 'a"})
    table.create_entity({"PartitionKey": "p", "RowKey": "b", "Name": "y"})
    text = odata_filter("Name eq @name", name="x' or 'a' eq 'a")
    assert text == "Name eq 'x'' or ''a'' eq ''a'"
    assert [e["RowKey"] for e in TableWire(table).query(text)] == ["a"]
    # A value is substituted once: '@lo' inside a value is not a parameter.
    assert odata_filter("A eq @hi and B eq @lo", hi="@lo", lo="z") == "A eq '@lo' and B eq 'z'"


def test_a_filter_refuses_a_missing_or_non_string_value() -> None:
    with pytest.raises(ValueError, match="@hi"):
        odata_filter("A eq @lo and B eq @hi", lo="a")
    with pytest.raises(TypeError):
        odata_filter("A eq @n", n=1)  # type: ignore[arg-type]


def test_a_missing_row_is_none_and_failures_raise_as_the_sdk_does(
    table: TableClient, azurite_connection_string: str
) -> None:
    reads = TableWire(table)
    assert reads.get("p", "nothing here") is None
    gone = TableServiceClient.from_connection_string(azurite_connection_string).get_table_client(
        "tablethatisnotthere"
    )
    with pytest.raises(ResourceNotFoundError):
        list(TableWire(gone).query(odata_filter("PartitionKey eq @pk", pk="p")))
    wrong_key = base64.b64encode(b"not the account key").decode()
    refused = TableServiceClient.from_connection_string(
        azurite_connection_string.replace(
            azurite_connection_string.split("AccountKey=")[1].split(";")[0], wrong_key
        )
    ).get_table_client(table.table_name)
    with pytest.raises(HttpResponseError) as refusal:
        TableWire(refused).get("p", "r")
    assert refusal.value.status_code == 403


def test_the_ledger_reports_a_refused_read_as_unavailable(
    azurite_connection_string: str, table_name: str
) -> None:
    TableServiceClient.from_connection_string(azurite_connection_string).create_table(table_name)
    key = azurite_connection_string.split("AccountKey=")[1].split(";")[0]
    wrong = azurite_connection_string.replace(key, base64.b64encode(b"wrong").decode())
    ledger = TableRunLedger(TableServiceClient.from_connection_string(wrong), table_name)
    # The table exists (the ledger's first use would create it, and be refused there already).
    ledger._table = TableServiceClient.from_connection_string(wrong).get_table_client(table_name)
    with pytest.raises(LedgerUnavailable):
        ledger.find_run(RUN)
    with pytest.raises(LedgerUnavailable):
        list(ledger.list_machines_not_seen_running(RUN))


MOMENT = datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)


def row(key: str, **values: object) -> dict[str, Any]:
    return {"PartitionKey": AWKWARD, "RowKey": key, **values}


def checked(version: str) -> dict[str, Any]:
    """A replace only while the row has this version (the ledger's own writes)."""
    return {
        "mode": UpdateMode.REPLACE,
        "etag": version,
        "match_condition": MatchConditions.IfNotModified,
    }


def stored(table: TableClient) -> list[dict[str, Any]]:
    """Every row as the SDK reads it, without its version."""
    return [
        sdk_view(e) for e in table.query_entities("PartitionKey eq @pk", parameters={"pk": AWKWARD})
    ]


@pytest.fixture
def twin(azurite_connection_string: str, table_name: str) -> TableClient:
    """A second table, written by the SDK, to compare with."""
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    return service.create_table(table_name + "sdk")


def test_writes_and_transactions_store_what_the_sdk_stores(
    table: TableClient, twin: TableClient
) -> None:
    values = {
        "Text": AWKWARD,
        "When": MOMENT,
        "Small": -7,
        "Big": 2**40,
        "Ratio": 0.5,
        "Flag": False,
        "Gone": None,
    }
    wire = TableWire(table)
    first = wire.write(row("a", **values), None)
    wire.write(row("a", **{**values, "Text": "replaced"}), first)
    merged = wire.transact(
        [
            ("create", row("b", **values)),
            ("upsert", row("c", **values), {"mode": UpdateMode.REPLACE}),
            ("upsert", row("a", Extra="merged"), {"mode": UpdateMode.MERGE}),
        ]
    )
    wire.transact(
        [
            (
                "update",
                row("b", Text="b again"),
                {
                    "mode": UpdateMode.REPLACE,
                    "etag": merged[0]["etag"],
                    "match_condition": MatchConditions.IfNotModified,
                },
            ),
            ("update", row("c", Other=1), {"mode": UpdateMode.MERGE}),
        ]
    )
    wire.transact([("create", row("d"))])
    wire.transact([("delete", row("d"))])

    sdk_values = {**values, "Big": EntityProperty(2**40, EdmType.INT64)}
    twin.create_entity(row("a", **sdk_values))
    twin.update_entity(row("a", **{**sdk_values, "Text": "replaced"}), mode=UpdateMode.REPLACE)
    twin.submit_transaction(
        [
            ("create", row("b", **sdk_values)),
            ("upsert", row("c", **sdk_values), {"mode": UpdateMode.REPLACE}),
            ("upsert", row("a", Extra="merged"), {"mode": UpdateMode.MERGE}),
        ]
    )
    twin.update_entity(row("b", Text="b again"), mode=UpdateMode.REPLACE)
    twin.update_entity(row("c", Other=1), mode=UpdateMode.MERGE)

    assert stored(table) == stored(twin)
    assert [r["RowKey"] for r in stored(table)] == ["a", "b", "c"]
    assert stored(table)[0]["Extra"] == "merged" and stored(table)[0]["Text"] == "replaced"


def test_each_operation_gets_the_version_the_row_now_has(table: TableClient) -> None:
    wire = TableWire(table)
    answers = wire.transact([("create", row(f"r{i}", N=i)) for i in range(100)])
    versions = {e["RowKey"]: e.metadata["etag"] for e in table.query_entities("N ge 0")}
    assert [a["etag"] for a in answers] == [versions[f"r{i}"] for i in range(100)]
    again = wire.write(row("r0", N=5), answers[0]["etag"])
    assert table.get_entity(AWKWARD, "r0").metadata["etag"] == again


def test_a_failed_transaction_names_its_operation_and_stores_nothing(table: TableClient) -> None:
    wire = TableWire(table)
    version = wire.write(row("kept", N=1), None)
    wire.write(row("kept", N=2), version)  # `version` is stale from here on
    cases: list[tuple[list[tuple[Any, ...]], int, int]] = [
        ([("create", row("new")), ("create", row("kept"))], 1, 409),
        (
            [
                (
                    "update",
                    row("kept", N=3),
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": version,
                        "match_condition": MatchConditions.IfNotModified,
                    },
                ),
                ("create", row("new")),
            ],
            0,
            412,
        ),
        ([("create", row("new")), ("update", row("missing"), {"mode": UpdateMode.MERGE})], 1, 404),
    ]
    for operations, index, status in cases:
        with pytest.raises(TableTransactionError) as failed:
            wire.transact(operations)
        assert (failed.value.index, failed.value.status_code) == (index, status)
        assert is_exists_error(failed.value) is (status == 409)
        assert is_precondition_error(failed.value) is (status == 412)
        assert [r["RowKey"] for r in stored(table)] == ["kept"]
        assert stored(table)[0]["N"] == 2


def test_a_failed_write_raises_what_the_sdk_raises(table: TableClient) -> None:
    wire = TableWire(table)
    version = wire.write(row("a"), None)
    with pytest.raises(ResourceExistsError):
        wire.write(row("a"), None)
    wire.write(row("a", N=1), version)
    with pytest.raises(ResourceModifiedError):
        wire.write(row("a", N=2), version)
    with pytest.raises(ResourceNotFoundError):
        wire.write(row("never"), version)


def test_values_the_ledger_never_stores_are_refused() -> None:
    for value in (b"bytes", uuid.uuid4(), MachineAction.STARTED, EntityProperty(1, EdmType.INT64)):
        with pytest.raises(TypeError):
            entity_json(row("a", Value=value))


def test_an_answer_whose_creates_carry_their_rows_is_read_too() -> None:
    """Azure answers a create with the row unless asked not to: the part's body is skipped."""
    text = (
        "--batchresponse_1\nContent-Type: multipart/mixed; boundary=changesetresponse_2\n\n"
        "--changesetresponse_2\nContent-Type: application/http\n"
        "Content-Transfer-Encoding: binary\n\n"
        'HTTP/1.1 201 Created\nETag: W/"one"\nContent-Type: application/json\n\n'
        '{"PartitionKey":"p","RowKey":"a","Note":"--changesetresponse_3"}\n'
        "--changesetresponse_2\nContent-Type: application/http\n"
        "Content-Transfer-Encoding: binary\n\n"
        'HTTP/1.1 204 No Content\nEtag: W/"two"\n\n\n'
        "--changesetresponse_2--\n--batchresponse_1--\n"
    )
    parts = answer_parts(text, "batchresponse_1")
    assert [(status, headers["etag"]) for status, headers, _ in parts] == [
        (201, 'W/"one"'),
        (204, 'W/"two"'),
    ]
