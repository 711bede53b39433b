"""Fixtures for the local host tests: a host serving the sample app against Azurite."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from sandbox.local_host import LocalHost
from tests.local_host.sample_function_app import InvocationRecorder, build_app

# Small batches and a short polling ceiling keep the queue tests quick; the rest is host.json's.
HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "queues": {
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:00",
            "maxPollingInterval": "00:00:00.200",
            "messageEncoding": "base64",
        }
    },
}
# A timer that stays quiet during a test unless the test asks for another schedule.
ONCE_A_YEAR = "0 0 0 1 1 *"
HOST_STOP_SECONDS = 10.0

StartHost = Callable[..., LocalHost]


@dataclass(frozen=True)
class WorkQueues:
    """The sample app's queue and its poison queue, writing base64 as Event Grid does."""

    work: QueueClient
    poison: QueueClient
    unencoded: QueueClient  # the work queue without the base64 policy

    def put(self, text: str) -> str:
        """Send one message (creating the queue if the host has not yet); its id."""
        with contextlib.suppress(ResourceExistsError):
            self.work.create_queue()
        return str(self.work.send_message(text).id)

    def poison_texts(self) -> list[str]:
        """The decoded messages in the poison queue (peeked, left in place)."""
        try:
            peeked = self.poison.peek_messages(max_messages=32)
        except ResourceNotFoundError:  # created by the host when it first poisons a message
            return []
        return [base64.b64decode(str(m.content)).decode() for m in peeked]

    def count(self) -> int:
        """Messages in the work queue, visible or not."""
        return self.work.get_queue_properties().approximate_message_count or 0


@pytest.fixture
def recorder() -> Iterator[InvocationRecorder]:
    """What the sample app's functions received; lets held functions go at the end."""
    recorder = InvocationRecorder()
    yield recorder
    recorder.release.set()


@pytest.fixture
def work_queue_name() -> str:
    """A queue name no other test uses."""
    return f"work-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def start_host(
    azurite_connection_string: str, recorder: InvocationRecorder, work_queue_name: str
) -> Iterator[StartHost]:
    """Start a host serving a fresh sample app; every host is stopped after the test."""
    hosts: list[LocalHost] = []

    def start(host_json: Any = HOST_JSON, **env: str) -> LocalHost:
        settings = {
            "AzureWebJobsStorage": azurite_connection_string,
            "WORK_QUEUE": work_queue_name,
            "TICK_SCHEDULE": ONCE_A_YEAR,
            **env,
        }
        host = LocalHost.start(build_app(recorder), port=0, env=settings, host_json=host_json)
        hosts.append(host)
        return host

    yield start
    recorder.release.set()
    for host in hosts:
        host.stop(drain_timeout=HOST_STOP_SECONDS)


@pytest.fixture
def host(start_host: StartHost) -> LocalHost:
    """A host serving the sample app with the test host.json."""
    return start_host()


@pytest.fixture
def work_queues(azurite_connection_string: str, work_queue_name: str) -> WorkQueues:
    """Clients for the sample app's queue and poison queue."""
    encode = TextBase64EncodePolicy()
    return WorkQueues(
        work=QueueClient.from_connection_string(
            azurite_connection_string, work_queue_name, message_encode_policy=encode
        ),
        poison=QueueClient.from_connection_string(
            azurite_connection_string, f"{work_queue_name}-poison"
        ),
        unencoded=QueueClient.from_connection_string(azurite_connection_string, work_queue_name),
    )
