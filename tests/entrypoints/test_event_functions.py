"""The event functions, called with the objects the Functions worker builds, against Azurite."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.config import ConfigError, Settings
from shared.domain.errors import LedgerUnavailable
from shared.entrypoints.events import (
    on_maintenance_event_message,
    on_post_maintenance_event,
    on_pre_maintenance_event,
)
from tests.builders import (
    CORRELATION_ID,
    POST,
    PRE,
    START,
    FixedClock,
    cloud_event,
    event_grid_event,
)

LOGGER = "shared.entrypoints.events"


def delivered(envelope: dict[str, Any]) -> Any:
    """What the worker hands the function: decoded by azure-functions' own converter."""
    return EventGridEventInConverter.decode(
        meta.Datum(type="json", value=json.dumps(envelope)), trigger_metadata={}
    )


def queue_message(body: bytes) -> QueueMessage:
    return QueueMessage(  # type: ignore[no-untyped-call]
        id="m-1",
        body=body,
        dequeue_count=1,
        pop_receipt="p",
        expiration_time=None,
        insertion_time=None,
        time_next_visible=None,
    )


@pytest.fixture
def storage(azurite_connection_string: str, table_name: str) -> Iterator[TableServiceClient]:
    settings = Settings.from_environ(
        {"AzureWebJobsStorage": azurite_connection_string, "LEDGER_TABLE_NAME": table_name}
    )
    bootstrap.use(bootstrap.Container(settings=settings, clock=FixedClock()))
    yield TableServiceClient.from_connection_string(azurite_connection_string)
    bootstrap.use(None)


def after_the_runs_start() -> None:
    """Move the app's clock past the run's start, when a post event is real."""
    clock = bootstrap.container().clock
    assert isinstance(clock, FixedClock)
    clock.advance(START + timedelta(hours=2) - clock.now())


def rows(storage: TableServiceClient, table_name: str) -> list[dict[str, Any]]:
    if table_name not in [t.name for t in storage.list_tables()]:
        return []
    return [dict(e) for e in storage.get_table_client(table_name).list_entities()]


def test_event_grid_pre_event_is_recorded(storage: TableServiceClient, table_name: str) -> None:
    on_pre_maintenance_event(delivered(event_grid_event(PRE)))
    by_kind = {r["Kind"]: r for r in rows(storage, table_name)}
    assert set(by_kind) == {"run", "event"}
    assert by_kind["run"]["Status"] == "PreEventReceived"
    assert by_kind["run"]["CorrelationId"] == CORRELATION_ID
    assert by_kind["event"]["EventType"] == PRE
    assert by_kind["event"]["Schema"] == "EventGrid"


def test_cloud_event_pre_event_is_recorded(storage: TableServiceClient, table_name: str) -> None:
    event = delivered(cloud_event(PRE))
    assert isinstance(event, func.CloudEvent)
    on_pre_maintenance_event(event)
    [event_row] = [r for r in rows(storage, table_name) if r["Kind"] == "event"]
    assert event_row["Schema"] == "CloudEvents"


def test_ten_deliveries_of_each_event_record_each_once(
    storage: TableServiceClient, table_name: str
) -> None:
    after_the_runs_start()
    for _ in range(10):
        on_pre_maintenance_event(delivered(event_grid_event(PRE)))
        on_post_maintenance_event(delivered(event_grid_event(POST)))
    kinds = sorted(r["Kind"] for r in rows(storage, table_name))
    assert kinds == ["event", "event", "run"]


def test_queue_delivery_feeds_the_same_intake(storage: TableServiceClient, table_name: str) -> None:
    after_the_runs_start()
    on_maintenance_event_message(queue_message(json.dumps(event_grid_event(POST)).encode()))
    on_maintenance_event_message(queue_message(json.dumps([cloud_event(PRE)]).encode()))
    statuses = {
        r["RowKey"].split("|")[1] for r in rows(storage, table_name) if r["Kind"] == "event"
    }
    assert statuses == {"pre", "post"}


def test_wrong_event_type_is_refused_with_one_log_line(
    storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    on_pre_maintenance_event(delivered(event_grid_event(POST)))
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1
    assert "Refused maintenance event from Event Grid (pre)" in refusals[0].getMessage()
    assert "PostMaintenanceEvent" in refusals[0].getMessage()
    assert rows(storage, table_name) == []


def oversized() -> bytes:
    envelope = event_grid_event(PRE)
    envelope["data"]["padding"] = "x" * (1024 * 1024)
    return json.dumps(envelope).encode()


def without_data() -> bytes:
    envelope = event_grid_event(PRE)
    del envelope["data"]
    return json.dumps(envelope).encode()


BAD_BODIES = {
    "not JSON": b"{not json",
    "empty array": b"[]",
    "several events": json.dumps([event_grid_event(PRE), event_grid_event(POST)]).encode(),
    "missing data": without_data(),
    "wrong type": json.dumps(
        {**event_grid_event(PRE), "eventType": "Microsoft.Storage.BlobCreated"}
    ).encode(),
    "not applyupdates": json.dumps(
        event_grid_event(
            PRE, CorrelationId=CORRELATION_ID.replace("applyupdates", "configurationassignments")
        )
    ).encode(),
    "quote in id": json.dumps(
        event_grid_event(PRE, CorrelationId=CORRELATION_ID.replace("weekly-linux", "weekly'linux"))
    ).encode(),
    "pipe in id": json.dumps(
        event_grid_event(PRE, CorrelationId=CORRELATION_ID.replace("weekly-linux", "w|where 1==1"))
    ).encode(),
    "dot-dot in id": json.dumps(
        event_grid_event(PRE, CorrelationId=CORRELATION_ID.replace("/ops/", "/../"))
    ).encode(),
    "newline in id": json.dumps(
        event_grid_event(PRE, CorrelationId=CORRELATION_ID + "\n| project x")
    ).encode(),
    "slash-encoded id": json.dumps(
        event_grid_event(PRE, CorrelationId=CORRELATION_ID.replace("weekly-linux", "a%2F..%2Fb"))
    ).encode(),
    "bad time": json.dumps(event_grid_event(PRE, EndDateTime="soon")).encode(),
    "start not run name": json.dumps(
        event_grid_event(PRE, StartDateTime="2026-12-01T03:30:00Z")
    ).encode(),
    "1 MB payload": oversized(),
    "binary": b"\x00\xff\xfe" * 10,
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_queue_messages_are_refused_without_raising_or_writing(
    name: str, storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    on_maintenance_event_message(queue_message(BAD_BODIES[name]))
    refusals = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in refusals] == [logging.ERROR]
    message = refusals[0].getMessage()
    assert "\n" not in message and len(message) < 600
    assert rows(storage, table_name) == []


@pytest.mark.parametrize(
    "name",
    ["missing data", "wrong type", "quote in id", "bad time", "start not run name", "1 MB payload"],
)
def test_bad_event_grid_events_are_refused_without_raising_or_writing(
    name: str, storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    envelope = json.loads(BAD_BODIES[name])
    on_pre_maintenance_event(delivered(envelope))
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.ERROR]
    assert rows(storage, table_name) == []


def test_queue_message_as_the_host_decodes_base64(
    storage: TableServiceClient, table_name: str
) -> None:
    # Event Grid writes base64 text to the queue; the host decodes it before the function runs.
    wire = base64.b64encode(json.dumps(event_grid_event(PRE)).encode())
    on_maintenance_event_message(queue_message(base64.b64decode(wire)))
    assert len(rows(storage, table_name)) == 2


def test_storage_unreachable_raises_so_event_grid_retries(table_name: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    settings = Settings.from_environ({"AzureWebJobsStorage": conn, "LEDGER_TABLE_NAME": table_name})
    bootstrap.use(bootstrap.Container(settings=settings))
    try:
        with pytest.raises(LedgerUnavailable):
            on_pre_maintenance_event(delivered(event_grid_event(PRE)))
        with pytest.raises(LedgerUnavailable):
            on_maintenance_event_message(queue_message(json.dumps(event_grid_event(PRE)).encode()))
    finally:
        bootstrap.use(None)


def test_a_bad_setting_fails_the_call_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CANCEL_SAFETY_MARGIN_SECONDS", "lots")
    bootstrap.use(None)
    try:
        with pytest.raises(ConfigError, match="CANCEL_SAFETY_MARGIN_SECONDS"):
            on_pre_maintenance_event(delivered(event_grid_event(PRE)))
    finally:
        bootstrap.use(None)
