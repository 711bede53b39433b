"""The task worker and its poison-queue function, called with real QueueMessage objects; the
ports behind them are our in-memory fakes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.functions.queue import QueueMessage

from shared import bootstrap
from shared.config import Settings
from shared.domain.ids import RunId
from shared.domain.machines import PowerState
from shared.domain.runs import RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.entrypoints.tasks import max_deliveries, on_poisoned_task, run_task
from tests.builders import CORRELATION_ID, PRE
from tests.unit.test_orchestration import World

RUN = RunId.parse(CORRELATION_ID)


def message(body: bytes, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(  # type: ignore[no-untyped-call]
        id="m-1",
        body=body,
        dequeue_count=dequeue_count,
        pop_receipt="p",
        expiration_time=None,
        insertion_time=None,
        time_next_visible=None,
    )


@pytest.fixture
def world() -> Iterator[World]:
    world = World()
    settings = Settings.from_environ({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    container = bootstrap.Container(settings=settings, clock=world.clock)
    container.built["orchestrator"] = world.orchestrator
    bootstrap.use(container)
    yield world
    bootstrap.use(None)


def test_a_task_message_runs_its_step(world: World) -> None:
    world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    sent_before = len(world.queue.sent)
    run_task(message(Task(TaskKind.PREPARE, RUN).to_json().encode()))
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.PREPARING
    assert [t.kind for t in world.queue.sent[sent_before:]] == [TaskKind.VERIFY, TaskKind.START]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'{"kind": "explode", "run": "x"}',
        b'{"kind": "start", "run": "/subscriptions/x"}',
    ],
)
def test_a_message_that_is_not_a_task_is_refused_and_logged(
    world: World, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="shared.entrypoints.tasks")
    run_task(message(body))
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert "Refused task message" in caplog.records[0].getMessage()


def test_a_poisoned_task_becomes_an_error_note_of_its_run(world: World) -> None:
    world.deliver(PRE)
    # Its first delivery on the poison queue: the count that matters is the task queue's.
    on_poisoned_task(message(Task(TaskKind.START, RUN).to_json().encode(), dequeue_count=1))
    [note] = [n for n in world.ledger.notes if n.source == "poison"]
    assert note.level.value == "Error"
    assert "start" in note.message
    assert f"{max_deliveries()} times" in note.message
    assert max_deliveries() == 5  # host.json's maxDequeueCount


def test_the_delivery_count_falls_back_to_the_hosts_default_without_a_setting(
    tmp_path: Path,
) -> None:
    plain, tuned = tmp_path / "plain.json", tmp_path / "tuned.json"
    plain.write_text('{"version": "2.0"}', encoding="utf-8")
    tuned.write_text('{"extensions": {"queues": {"maxDequeueCount": 3}}}', encoding="utf-8")
    assert max_deliveries(plain) == 5
    assert max_deliveries(tuned) == 3
