"""The task worker: a queue trigger that runs one orchestration step per message, and a
trigger on its poison queue that records what could not be done."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import azure.functions as func

from shared import bootstrap
from shared.domain.ids import describe_for_log
from shared.domain.tasks import TASK_QUEUE, InvalidTask, Task

log = logging.getLogger(__name__)

# The Functions host's default maxDequeueCount (host.json extensions.queues).
DEFAULT_MAX_DEQUEUE_COUNT = 5
APP_ROOT = Path(__file__).resolve().parents[2]
POISON_QUEUE = f"{TASK_QUEUE}-poison"

bp = func.Blueprint()


@bp.function_name("run_task")
@bp.queue_trigger(arg_name="message", queue_name=TASK_QUEUE, connection="AzureWebJobsStorage")
def run_task(message: func.QueueMessage) -> None:
    """One step of a run (prepare, start, verify, gate, wrap-up, stop, finish, notify).

    An exception leaves the message on the queue: it is retried, and after host.json's
    maxDequeueCount it goes to the poison queue.
    """
    try:
        task = Task.from_json(message.get_body())
    except InvalidTask as refusal:
        log.error(
            "Refused task message %s: %s (body %s)",
            message.id,
            refusal,
            describe_for_log(message.get_body()),
        )
        return
    log.info(
        "Task %s (round %d, %d machines, delivery %s) for run %s",
        task.kind.value,
        task.round,
        len(task.machines),
        message.dequeue_count,
        task.run_id.text,
    )
    bootstrap.container().orchestrator.handle(task)


@bp.function_name("on_poisoned_task")
@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def on_poisoned_task(message: func.QueueMessage) -> None:
    """A task that kept failing: note it in the run's record and report."""
    try:
        task = Task.from_json(message.get_body())
    except InvalidTask:
        log.error(
            "Poison queue holds a message that is not a task: %s",
            describe_for_log(message.get_body()),
        )
        return
    services = bootstrap.container()
    # This message's own count is its deliveries on the poison queue (1 the first time); the
    # task failed as often as the host allows before moving it: host.json's maxDequeueCount.
    services.orchestrator.note_poisoned(task, max_deliveries())


@functools.cache
def max_deliveries(host_json: Path = APP_ROOT / "host.json") -> int:
    """How often the host delivers a failing queue message before it poisons it: host.json's
    extensions.queues.maxDequeueCount, else the Functions default."""
    try:
        document = json.loads(host_json.read_text(encoding="utf-8"))
        count = document["extensions"]["queues"]["maxDequeueCount"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MAX_DEQUEUE_COUNT
    return count if isinstance(count, int) and count > 0 else DEFAULT_MAX_DEQUEUE_COUNT
