"""The event functions, called with the objects the Functions worker builds, against Azurite."""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
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
from shared.domain.errors import LedgerUnavailable, NotificationFailed, StorageUnavailable
from shared.entrypoints.events import (
    on_maintenance_event_message,
    on_post_maintenance_event,
    on_pre_maintenance_event,
)
from tests.builders import (
    CONFIGURATION,
    CORRELATION_ID,
    POST,
    PRE,
    START,
    FixedClock,
    cloud_event,
    event_grid_event,
)

LOGGER = "shared"


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
    """The ledger's rows, but for its run index (tests/adapters/test_table_ledger.py)."""
    if table_name not in [t.name for t in storage.list_tables()]:
        return []
    entities = storage.get_table_client(table_name).list_entities()
    return [dict(e) for e in entities if e["Kind"] != "runindex"]


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


def refused_rows(storage: TableServiceClient, table_name: str) -> list[dict[str, Any]]:
    return [r for r in rows(storage, table_name) if r["Kind"] == "refused"]


def test_wrong_event_type_is_refused_with_one_error_line_and_a_record(
    storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    on_pre_maintenance_event(delivered(event_grid_event(POST)))
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in refusals] == [logging.ERROR]
    message = refusals[0].getMessage()
    assert message.startswith(f"Refused maintenance event {CORRELATION_ID} from Event Grid (pre)")
    assert "PostMaintenanceEvent" in message
    [refused] = rows(storage, table_name)
    assert refused["Kind"] == "refused"
    assert refused["EventId"] == CORRELATION_ID
    assert refused["Channel"] == "Event Grid (pre)"
    assert "PostMaintenanceEvent" in refused["Reason"]
    assert CORRELATION_ID in refused["Excerpt"]


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
    "foreign topic": json.dumps(
        {
            **event_grid_event(PRE),
            "topic": CONFIGURATION.replace("weekly-linux", "someone-elses"),
        }
    ).encode(),
    "1 MB payload": oversized(),
    "binary": b"\x00\xff\xfe" * 10,
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_queue_messages_are_refused_loudly_without_raising_or_a_run(
    name: str, storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    on_maintenance_event_message(queue_message(BAD_BODIES[name]))
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in refusals] == [logging.ERROR]
    message = refusals[0].getMessage()
    assert "\n" not in message and len(message) < 1200
    [refused] = rows(storage, table_name)
    assert refused["Kind"] == "refused"
    assert refused["Channel"].startswith("queue maintenance-events")
    assert len(refused["Excerpt"]) <= 1000 and refused["Excerpt"].isprintable()


@pytest.mark.parametrize(
    "name",
    ["missing data", "wrong type", "quote in id", "bad time", "foreign topic", "1 MB payload"],
)
def test_bad_event_grid_events_are_refused_loudly_without_raising_or_a_run(
    name: str, storage: TableServiceClient, table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    envelope = json.loads(BAD_BODIES[name])
    on_pre_maintenance_event(delivered(envelope))
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.ERROR]
    assert [r["Kind"] for r in rows(storage, table_name)] == ["refused"]


class RecordingNotifier:
    def __init__(self, fails: bool = False) -> None:
        self.sent: list[Any] = []
        self.fails = fails

    def send(self, summary: Any) -> None:
        self.sent.append(summary)
        if self.fails:
            raise NotificationFailed("webhook answered 500")


def guarded_container(
    azurite_connection_string: str, table_name: str, notifier: RecordingNotifier
) -> bootstrap.Container:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage": azurite_connection_string,
            "LEDGER_TABLE_NAME": table_name,
            "TARGET_CONFIGURATION_IDS": CONFIGURATION,
            "NOTIFY_WEBHOOK_URL": "https://hooks.example.invalid/secret-path",
        }
    )
    container = bootstrap.Container(settings=settings, clock=FixedClock())
    container.built["notifier"] = notifier
    return container


def test_an_event_of_a_configuration_the_app_does_not_manage_is_refused_and_notified(
    azurite_connection_string: str,
    table_name: str,
    storage: TableServiceClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = RecordingNotifier()
    bootstrap.use(guarded_container(azurite_connection_string, table_name, notifier))
    caplog.set_level(logging.INFO, logger=LOGGER)
    foreign = CONFIGURATION.replace("weekly-linux", "monthly")
    foreign_run = CORRELATION_ID.replace("weekly-linux", "monthly")
    envelope = event_grid_event(PRE, CorrelationId=foreign_run, MaintenanceConfigurationId=foreign)
    envelope["topic"] = foreign
    on_pre_maintenance_event(delivered(envelope))
    [refused] = rows(storage, table_name)
    assert refused["Kind"] == "refused"
    assert "not one the app manages" in refused["Reason"]
    [message] = notifier.sent
    assert message["refusedEvent"]["eventId"] == foreign_run
    assert "TARGET_CONFIGURATION_IDS" in message["text"]
    # Our own configuration's event is still taken in.
    on_pre_maintenance_event(delivered(event_grid_event(PRE)))
    kinds = sorted(r["Kind"] for r in rows(storage, table_name))
    assert kinds == ["event", "refused", "run"]
    assert "secret-path" not in caplog.text


def test_a_webhook_that_fails_does_not_fail_the_refusal(
    azurite_connection_string: str,
    table_name: str,
    storage: TableServiceClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = RecordingNotifier(fails=True)
    bootstrap.use(guarded_container(azurite_connection_string, table_name, notifier))
    caplog.set_level(logging.INFO, logger=LOGGER)
    on_pre_maintenance_event(delivered(event_grid_event(POST)))
    assert len(notifier.sent) == 1
    assert [r["Kind"] for r in rows(storage, table_name)] == ["refused"]
    assert "Could not notify about refused event" in caplog.text
    assert "secret-path" not in caplog.text and "hooks.example" not in caplog.text


def test_oddities_of_an_accepted_event_become_run_notes(
    storage: TableServiceClient, table_name: str
) -> None:
    on_pre_maintenance_event(delivered(event_grid_event(PRE, ResourceSubscriptionIds="")))
    notes = [r for r in rows(storage, table_name) if r["Kind"] == "note"]
    [note] = notes
    assert note["Level"] == "Warning"
    assert "configuration's own subscription" in note["Message"]


def test_queue_message_as_the_host_decodes_base64(
    storage: TableServiceClient, table_name: str
) -> None:
    # Event Grid writes base64 text to the queue; the host decodes it before the function runs.
    wire = base64.b64encode(json.dumps(event_grid_event(PRE)).encode())
    on_maintenance_event_message(queue_message(base64.b64decode(wire)))
    assert len(rows(storage, table_name)) == 2


# Event Grid waits 30 s for an answer; a failure must come well before that so the delivery is
# retried rather than timed out. Generous for a loaded machine, far below 30 s.
ANSWER_WHEN_STORAGE_IS_DOWN_WITHIN_SECONDS = 10.0


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_storage_unreachable_raises_so_event_grid_retries(table_name: str) -> None:
    port = closed_loopback_port()
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    settings = Settings.from_environ({"AzureWebJobsStorage": conn, "LEDGER_TABLE_NAME": table_name})
    bootstrap.use(bootstrap.Container(settings=settings))
    try:
        began = time.monotonic()
        with pytest.raises(LedgerUnavailable):
            on_pre_maintenance_event(delivered(event_grid_event(PRE)))
        assert time.monotonic() - began < ANSWER_WHEN_STORAGE_IS_DOWN_WITHIN_SECONDS
        # A refusal that cannot be recorded is retried too, so it is never lost.
        with pytest.raises(LedgerUnavailable):
            on_pre_maintenance_event(delivered(event_grid_event(POST)))
        with pytest.raises(LedgerUnavailable):
            on_maintenance_event_message(queue_message(json.dumps(event_grid_event(PRE)).encode()))
    finally:
        bootstrap.use(None)


def test_an_unreachable_task_queue_fails_the_event_well_inside_event_grids_30_seconds(
    azurite_connection_string: str, table_name: str
) -> None:
    # The ledger answers (Azurite); the queue and blob endpoints are a closed loopback port. The
    # storage SDK's default retries took about 40 s to give up here.
    port = closed_loopback_port()
    down = f"http://127.0.0.1:{port}/devstoreaccount1"
    conn = re.sub(r"QueueEndpoint=[^;]*", f"QueueEndpoint={down}", azurite_connection_string)
    conn = re.sub(r"BlobEndpoint=[^;]*", f"BlobEndpoint={down}", conn)
    assert f"QueueEndpoint={down}" in conn
    settings = Settings.from_environ({"AzureWebJobsStorage": conn, "LEDGER_TABLE_NAME": table_name})
    bootstrap.use(bootstrap.Container(settings=settings, clock=FixedClock()))
    try:
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match="could not enqueue"):
            on_pre_maintenance_event(delivered(event_grid_event(PRE)))
        assert time.monotonic() - began < ANSWER_WHEN_STORAGE_IS_DOWN_WITHIN_SECONDS
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
