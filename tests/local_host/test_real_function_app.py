"""The real function_app served by the local host: events in over the webhook and the queue,
runs out in the ledger table in Azurite."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from sandbox.local_host import LocalHost
from shared import bootstrap
from shared.entrypoints.events import EVENTS_QUEUE
from tests.builders import CORRELATION_ID, PRE, event_grid_event
from tests.local_host.http_calls import send

ROOT = Path(__file__).resolve().parents[2]
IDLE_TIMEOUT = 20.0


# Event intake only: the task worker and the reconcile timer would call Azure, which these
# tests do not stand up (the e2e tests do, with the sandbox's fake Azure).
INTAKE_FUNCTIONS = (
    "on_pre_maintenance_event",
    "on_post_maintenance_event",
    "on_maintenance_event_message",
)
# Should anything still try Azure, it gets a refused connection on loopback, not the internet.
NOWHERE = "https://127.0.0.1:9"


@pytest.fixture
def start_real_host(
    azurite_connection_string: str, table_name: str
) -> Iterator[Callable[[], LocalHost]]:
    """Start function_app:app as `func start` would: the project's host.json, the sample
    settings, Azurite and a fresh ledger table."""
    hosts: list[LocalHost] = []
    # The app builds its settings once per process, on first use: from the host's environment.
    bootstrap.use(None)

    def start() -> LocalHost:
        env = {
            "AzureWebJobsStorage": azurite_connection_string,
            "LEDGER_TABLE_NAME": table_name,
            "ARM_ENDPOINT": NOWHERE,
            "AZURE_AUTHORITY_HOST": NOWHERE,
            "LOG_ANALYTICS_ENDPOINT": NOWHERE,
        }
        host = LocalHost.start(
            "function_app:app",
            port=0,
            env=env,
            settings_file=ROOT / "local.settings.sample.json",
            host_json=ROOT / "host.json",
            functions=INTAKE_FUNCTIONS,
        )
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop(drain_timeout=10.0)
    bootstrap.use(None)
    # A pre event's preparation waits in the task queue until T−40: leave no task behind for
    # the tests that share this Azurite.
    tasks = QueueClient.from_connection_string(azurite_connection_string, "maintenance-tasks")
    with contextlib.suppress(ResourceNotFoundError):
        tasks.clear_messages()


@pytest.fixture
def events_queue(azurite_connection_string: str) -> QueueClient:
    """The app's events queue, empty, writing base64 as an Event Grid subscription does."""
    queue = QueueClient.from_connection_string(
        azurite_connection_string, EVENTS_QUEUE, message_encode_policy=TextBase64EncodePolicy()
    )
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    queue.clear_messages()
    return queue


def ledger_rows(connection_string: str, table_name: str) -> list[dict[str, Any]]:
    tables = TableServiceClient.from_connection_string(connection_string)
    if table_name not in [t.name for t in tables.list_tables()]:
        return []
    return [dict(e) for e in tables.get_table_client(table_name).list_entities()]


def test_pre_event_posted_to_the_webhook_is_recorded_in_the_ledger(
    start_real_host: Callable[[], LocalHost], azurite_connection_string: str, table_name: str
) -> None:
    host = start_real_host()
    answer = send(
        "POST",
        f"{host.url}/runtime/webhooks/eventgrid"
        f"?functionName=on_pre_maintenance_event&code={host.system_key}",
        headers={"aeg-event-type": "Notification"},
        json_body=[event_grid_event(PRE)],
    )
    assert answer.status == 200
    by_kind = {r["Kind"]: r for r in ledger_rows(azurite_connection_string, table_name)}
    assert by_kind["run"]["Status"] == "PreEventReceived"
    assert by_kind["run"]["CorrelationId"] == CORRELATION_ID
    assert by_kind["event"]["EventType"] == PRE


def test_event_on_the_queue_is_consumed_and_recorded_in_the_ledger(
    start_real_host: Callable[[], LocalHost],
    events_queue: QueueClient,
    azurite_connection_string: str,
    table_name: str,
) -> None:
    # A pre event: a post event before its run's start would only be noted (the run is later).
    events_queue.send_message(json.dumps(event_grid_event(PRE)))
    host = start_real_host()
    assert host.wait_idle(IDLE_TIMEOUT)
    assert events_queue.get_queue_properties().approximate_message_count == 0
    rows = ledger_rows(azurite_connection_string, table_name)
    events = [r for r in rows if r["Kind"] == "event"]
    assert [e["EventType"] for e in events] == [PRE]
    assert [r["CorrelationId"] for r in rows if r["Kind"] == "run"] == [CORRELATION_ID]
