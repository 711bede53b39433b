"""The storage clients (ledger, task queue, reports) reuse connections: one pooled transport per
storage endpoint, sized for the app's concurrency, carrying each adapter's own time limits.
Real SDK clients against real Azurite."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import report_store, table_ledger, task_queue
from shared.adapters.http_transport import PooledAdapter
from shared.bootstrap import QUEUE_MESSAGES_IN_FLIGHT, Container, http_pool_size
from shared.config import Settings
from shared.domain.ids import RunId
from shared.domain.runs import Run
from shared.domain.tasks import Task, TaskKind
from tests.builders import CONFIGURATION, START

THREADS = 40


@pytest.fixture
def container(azurite_connection_string: str) -> Container:
    return Container(
        settings=Settings.from_environ(
            {
                "AzureWebJobsStorage": azurite_connection_string,
                "ARM_ENDPOINT": "https://127.0.0.1:9",
                "LEDGER_TABLE_NAME": "ledger" + uuid.uuid4().hex[:12],
                "REPORT_CONTAINER": "reports-" + uuid.uuid4().hex[:12],
                "START_CONCURRENCY": "4",
            }
        )
    )


def transport_of(client: Any) -> Any:
    """The transport under a storage client's pipeline (through the SDKs' wrappers)."""
    transport = client._pipeline._transport
    while not hasattr(transport, "session"):
        transport = transport._transport
    return transport


def pool_of(transport: Any, url: str) -> Any:
    adapter = transport.session.get_adapter(url)
    assert isinstance(adapter, PooledAdapter)
    return adapter


def test_the_ledger_queue_and_report_clients_are_on_pooled_transports_with_their_own_limits(
    container: Container,
) -> None:
    ledger: Any = container.ledger
    queue: Any = container.task_queue
    reports: Any = container.reports
    table = transport_of(ledger.table._client._client)
    assert transport_of(ledger._service._client._client) is table  # one for the whole table API
    queues = transport_of(queue._client)
    blobs = transport_of(reports._container)
    assert len({id(table), id(queues), id(blobs)}) == 3  # one per storage endpoint
    for transport, options in (
        (table, table_ledger.CLIENT_OPTIONS),
        (queues, task_queue.CLIENT_OPTIONS),
        (blobs, report_store.CLIENT_OPTIONS),
    ):
        # A client handed a transport no longer applies its own time limits: the transport must.
        assert transport.connection_config.timeout == options["connection_timeout"]
        assert transport.connection_config.read_timeout == options["read_timeout"]
        adapter = pool_of(transport, ledger.table.url)
        assert adapter._pool_maxsize == http_pool_size(container.settings) == 4 * 12 + 32


def test_many_threads_writing_the_ledger_and_the_queue_reuse_connections_without_warnings(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    ledger = container.ledger
    queue = container.task_queue

    def record_and_enqueue(index: int) -> Run:
        name = (START + timedelta(hours=index)).strftime("%Y%m%d%H%M%S")
        run_id = RunId.parse(f"{CONFIGURATION}/providers/microsoft.maintenance/applyupdates/{name}")
        saved = ledger.save_run(Run.first_seen(run_id, START))
        queue.send(Task(TaskKind.PREPARE, run_id))
        return saved

    with ThreadPoolExecutor(THREADS) as pool:
        saved = list(pool.map(record_and_enqueue, range(4 * THREADS)))

    assert len({r.run_id for r in saved}) == 4 * THREADS
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    table: Any = ledger
    for transport in (transport_of(table.table._client._client), transport_of(queue._client)):  # type: ignore[attr-defined]
        [pool] = pool_of(transport, table.table.url).poolmanager.pools._container.values()
        # At most one connection per thread was opened, and each was kept for reuse.
        assert pool.num_connections <= THREADS
        kept = [connection for connection in pool.pool.queue if connection is not None]
        assert len(kept) == pool.num_connections


def test_the_default_pools_are_what_warned(
    azurite_connection_string: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The same load on the SDK's own transport (10 connections): the warning the app used to
    # log by the thousand, so the test above would see one if the pooling were missing.
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    client = task_queue.build_queue_client(
        Settings.from_environ(
            {"AzureWebJobsStorage": azurite_connection_string, "ARM_ENDPOINT": "https://x"}
        ).storage,
        "q" + uuid.uuid4().hex[:12],
    )
    client.create_queue()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: client.send_message(str(i)), range(4 * THREADS)))
    assert [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_the_pools_are_sized_for_the_queue_messages_host_json_lets_run_at_once() -> None:
    host_json = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    queues = host_json["extensions"]["queues"]
    assert queues["batchSize"] + queues["newBatchThreshold"] == QUEUE_MESSAGES_IN_FLIGHT
