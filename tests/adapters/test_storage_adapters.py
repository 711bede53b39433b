"""Task queue and report store against real Azurite through the real SDK clients."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient

from shared.adapters.report_store import BlobReportStore, build_container_client, report_blob_name
from shared.adapters.task_queue import StorageTaskQueue, build_queue_client
from shared.config import StorageConnection
from shared.domain.errors import StorageUnavailable
from shared.domain.ids import MachineId, RunId
from shared.domain.tasks import Task, TaskKind
from tests.builders import CORRELATION_ID, SUBSCRIPTION

RUN = RunId.parse(CORRELATION_ID)
VM = MachineId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
    "Microsoft.Compute/virtualMachines/web-01"
)


@pytest.fixture
def storage(azurite_connection_string: str) -> StorageConnection:
    return StorageConnection(connection_string=azurite_connection_string)


def test_tasks_are_base64_messages_the_functions_trigger_reads(
    storage: StorageConnection, azurite_connection_string: str
) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    queue = StorageTaskQueue(build_queue_client(storage, name))
    task = Task(TaskKind.START, RUN, (VM,), round=2)
    queue.send(task)
    raw = QueueClient.from_connection_string(azurite_connection_string, name)
    [message] = list(raw.receive_messages())
    assert Task.from_json(base64.b64decode(message.content)) == task


def test_a_delayed_task_stays_invisible_until_its_time(
    storage: StorageConnection, azurite_connection_string: str
) -> None:
    name = "q" + uuid.uuid4().hex[:12]
    StorageTaskQueue(build_queue_client(storage, name)).send(
        Task(TaskKind.VERIFY, RUN), timedelta(seconds=30)
    )
    raw = QueueClient.from_connection_string(azurite_connection_string, name)
    assert list(raw.receive_messages()) == []
    assert raw.get_queue_properties().approximate_message_count == 1


def test_unreachable_queue_storage_raises_storage_unavailable() -> None:
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    )
    queue = StorageTaskQueue(build_queue_client(StorageConnection(connection_string=conn), "q1"))
    with pytest.raises(StorageUnavailable):
        queue.send(Task(TaskKind.VERIFY, RUN))


def test_reports_are_saved_read_and_overwritten(storage: StorageConnection) -> None:
    reports = BlobReportStore(build_container_client(storage, "r" + uuid.uuid4().hex[:12]))
    assert reports.get_report(RUN) is None
    location = reports.save_report(RUN, {"run": {"status": "Completed"}, "notes": []})
    assert location.endswith(report_blob_name(RUN))
    reports.save_report(RUN, {"run": {"status": "Completed"}, "notes": [{"message": "late"}]})
    assert reports.get_report(RUN) == {
        "run": {"status": "Completed"},
        "notes": [{"message": "late"}],
    }
    assert json.dumps(reports.get_report(RUN))


def test_report_blob_names_follow_the_run_key() -> None:
    assert report_blob_name(RUN) == (f"{SUBSCRIPTION}/ops/weekly-linux/20261201030000.json")
