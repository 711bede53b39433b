"""The task queue on Azure Storage queues (azure-storage-queue).

Messages are base64 text (TextBase64EncodePolicy), which is what the Functions queue trigger
expects. A delay is the message's initial visibility timeout.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.adapters.created_once import CreatedOnce
from shared.config import StorageConnection
from shared.domain.errors import StorageUnavailable
from shared.domain.tasks import Task

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from shared.adapters.http_transport import EndpointTransports

MAX_DELAY = timedelta(days=7)  # the service's limit for a visibility timeout
# The event intake enqueues while Event Grid waits (30 s), so a queue that is down must fail in
# seconds. The storage SDK's own retry policy (ExponentialRetry) waits 15 s, then 18 s by default;
# here two retries 1.5 s and 2.25 s apart (0 + 1.5^n, n from 1), 3 s to connect and 5 s for a
# message's answer.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "initial_backoff": 0,
    "increment_base": 1.5,
    "random_jitter_range": 0.5,
    "connection_timeout": 3,
    "read_timeout": 5,
}


def build_queue_client(
    storage: StorageConnection,
    queue_name: str,
    credential: TokenCredential | None = None,
    transports: EndpointTransports | None = None,
) -> QueueClient:
    """A client for one queue of the app's storage account, on the process's pooled transport
    for the queue endpoint when `transports` is given."""
    options: dict[str, Any] = {**CLIENT_OPTIONS, "message_encode_policy": TextBase64EncodePolicy()}
    if transports is not None:
        options = transports.storage_options("queue", options)
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, queue_name, **options)
    if storage.queue_endpoint is None or credential is None:
        raise ValueError("an identity-based connection needs a queue endpoint and a credential")
    return QueueClient(storage.queue_endpoint, queue_name, credential=credential, **options)


class StorageTaskQueue:
    """TaskQueue on a Storage queue; the queue is created on first use, once per process."""

    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self._created = CreatedOnce(self._client.create_queue)

    def send(self, task: Task, delay: timedelta = timedelta(0)) -> None:
        """Enqueue `task`, visible after `delay` (at most 7 days)."""
        seconds = math.ceil(min(max(delay, timedelta(0)), MAX_DELAY).total_seconds())
        try:
            self._created.ensure()
            self._client.send_message(task.to_json(), visibility_timeout=seconds or None)
        except AzureError as e:
            raise StorageUnavailable(
                f"could not enqueue {task.kind} for {task.run_id.text}: {e}"
            ) from e
