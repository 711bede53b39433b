"""Queue triggers: poll a Storage queue (Azurite locally) the way the host's queue listener does.

Per queue: fetch up to batchSize messages and run them in parallel; fetch again once no more
than newBatchThreshold are still running; when the queue is empty, wait longer between polls,
doubling up to maxPollingInterval. A message is deleted when its function succeeds. On failure
it becomes visible again after visibilityTimeout; once it has been dequeued maxDequeueCount
times it is moved to `<queue>-poison` instead. A message that cannot be decoded (encoding base64)
goes to the poison queue at once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import requests
import requests.adapters
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from sandbox.local_host.host_config import QueueOptions
from sandbox.local_host.invocation import FunctionInvocationError, FunctionInvoker
from sandbox.local_host.registry import IndexedFunction

log = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"
# The host's first wait after an empty poll; it doubles from here up to maxPollingInterval.
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
# Fail fast against a stopped Azurite instead of the SDK's long default retries: the poll loop
# retries anyway.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 1, "connection_timeout": 5, "read_timeout": 30}


def to_function_message(message: StorageQueueMessage, body: bytes) -> FunctionQueueMessage:
    """The `func.QueueMessage` the worker builds from a storage message and its decoded body."""
    return FunctionQueueMessage(  # type: ignore[no-untyped-call]
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        expiration_time=message.expires_on,
        insertion_time=message.inserted_on,
        time_next_visible=message.next_visible_on,
        pop_receipt=message.pop_receipt,
    )


class UndecodableMessage(ValueError):
    """The message text is not in the configured encoding."""


def decode_body(content: object, encoding: str) -> bytes:
    """The message body as bytes: base64-decoded, or the text itself with encoding none."""
    text = "" if content is None else str(content)
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as problem:
        raise UndecodableMessage(str(problem)) from problem


class QueueListener:
    """Polls one queue for one function until stopped."""

    def __init__(
        self,
        function: IndexedFunction,
        queue_name: str,
        connection_string: str,
        options: QueueOptions,
        invoker: FunctionInvoker,
        lease: timedelta,
    ) -> None:
        self.function = function
        self.queue_name = queue_name
        self.poison_queue_name = queue_name + POISON_SUFFIX
        self._options = options
        self._invoker = invoker
        self._tracker = invoker.tracker
        # How long a fetched message stays invisible while its function runs (the host renews
        # this lease; the local host fetches with one long enough for the function timeout).
        self._lease_seconds = max(1, math.ceil(lease.total_seconds()))
        # Up to batchSize + newBatchThreshold messages are deleted or updated at once: a pool
        # that keeps that many connections (the SDK's keeps 10, and warns for every one over).
        transport = _pooled_transport(options.batch_size + options.new_batch_threshold + 2)
        self._queue = QueueClient.from_connection_string(
            connection_string, queue_name, transport=transport, **CLIENT_OPTIONS
        )
        self._poison = QueueClient.from_connection_string(
            connection_string, self.poison_queue_name, transport=transport, **CLIENT_OPTIONS
        )
        if transport.session is not None:
            transport.session.proxies = requests.utils.get_environ_proxies(self._queue.url)
        self._stopping = threading.Event()
        self._running = 0
        self._running_changed = threading.Condition()
        self._pool = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold,
            thread_name_prefix=f"queue-{queue_name}",
        )
        self._thread = threading.Thread(target=self._poll, name=f"poll-{queue_name}", daemon=True)

    def start(self) -> None:
        """Start polling in a background thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching; messages already fetched keep running (drain them via the tracker)."""
        self._stopping.set()
        with self._running_changed:
            self._running_changed.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def close(self, *, wait: bool) -> None:
        """Release the worker threads (after stop)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def is_idle(self) -> bool:
        """No message of this queue is running and the queue holds none (visible or not)."""
        with self._running_changed:
            if self._running:
                return False
        try:
            properties = self._queue.get_queue_properties()
        except ResourceNotFoundError:
            return True  # not created yet: certainly empty
        except AzureError:
            return False
        return properties.approximate_message_count == 0

    def _poll(self) -> None:
        interval = MIN_POLLING_INTERVAL
        created = False
        while not self._stopping.is_set():
            try:
                if not created:
                    _create_if_missing(self._queue)
                    created = True
                self._wait_for_room()
                if self._stopping.is_set():
                    break
                messages = self._fetch()
            except AzureError as problem:
                log.warning("Queue %s: storage error while polling: %s", self.queue_name, problem)
                messages = []
            if not messages:
                self._stopping.wait(interval.total_seconds())
                interval = min(
                    interval * 2, max(self._options.max_polling_interval, MIN_POLLING_INTERVAL)
                )
                continue
            interval = MIN_POLLING_INTERVAL
            for message in messages:
                with self._running_changed:
                    self._running += 1
                self._tracker.begin()
                self._pool.submit(self._process, message)

    def _wait_for_room(self) -> None:
        with self._running_changed:
            self._running_changed.wait_for(
                lambda: (
                    self._running <= self._options.new_batch_threshold or self._stopping.is_set()
                )
            )

    def _fetch(self) -> list[StorageQueueMessage]:
        pages = self._queue.receive_messages(
            messages_per_page=self._options.batch_size, visibility_timeout=self._lease_seconds
        ).by_page()
        # One page is one call to the service: exactly one batch.
        return list(next(pages, []))

    def _process(self, message: StorageQueueMessage) -> None:
        try:
            self._handle(message)
        except AzureError:
            log.exception("Queue %s: storage error on message %s", self.queue_name, message.id)
        except Exception:
            # A bug in the host must not kill the worker thread silently.
            log.exception("Queue %s: local host error on message %s", self.queue_name, message.id)
        finally:
            with self._running_changed:
                self._running -= 1
                self._running_changed.notify_all()
            self._tracker.end()

    def _handle(self, message: StorageQueueMessage) -> None:
        if (
            message.dequeue_count is not None
            and message.dequeue_count > self._options.max_dequeue_count
        ):
            # Dequeued before by a run that never finished it (a crash): give up on it now.
            self._move_to_poison(message)
            return
        try:
            body = decode_body(message.content, self._options.message_encoding)
        except UndecodableMessage as problem:
            log.warning(
                "Queue %s: message %s is not valid %s (%s)",
                self.queue_name,
                message.id,
                self._options.message_encoding,
                problem,
            )
            self._move_to_poison(message)
            return
        reason = f"New queue message detected on '{self.queue_name}'."
        try:
            self._invoker.invoke(self.function, to_function_message(message, body), reason)
        except FunctionInvocationError:
            if (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                self._move_to_poison(message)
            else:
                self._queue.update_message(
                    message,
                    visibility_timeout=math.ceil(self._options.visibility_timeout.total_seconds()),
                )
            return
        self._queue.delete_message(message)

    def _move_to_poison(self, message: StorageQueueMessage) -> None:
        log.warning(
            "Message %s has reached MaxDequeueCount of %d or cannot be decoded. "
            "Moving message to queue '%s'.",
            message.id,
            self._options.max_dequeue_count,
            self.poison_queue_name,
        )
        _create_if_missing(self._poison)
        # The raw text, so the poison message is byte-for-byte what was sent.
        self._poison.send_message(message.content)
        self._queue.delete_message(message)


def _pooled_transport(connections: int) -> RequestsTransport:
    """A transport keeping `connections` connections, carrying CLIENT_OPTIONS' time limits (a
    client handed a transport does not apply its own)."""
    session = requests.Session()
    # requests reads the whole environment (proxy and CA bundle variables, ~/.netrc) on every
    # request; the host reads the CA bundle here and the proxies once its queue's URL is known
    # (netrc never: its credentials would replace the storage account's signature).
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return RequestsTransport(
        session=session,
        session_owner=False,
        connection_verify=bundle or True,
        connection_timeout=CLIENT_OPTIONS["connection_timeout"],
        read_timeout=CLIENT_OPTIONS["read_timeout"],
    )


def _create_if_missing(queue: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
