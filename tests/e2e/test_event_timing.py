"""End to end: events at the wrong time. A post event before its run's start must not end the
run (the real pre event would then be ignored); a pre event far ahead of its run waits for
T−40 without asking Azure anything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient

from sandbox.stack import POST, PRE, Stack, running_stack
from tests.e2e.test_maintenance_runs import FLEET, STOPPED, WEB, deliver_ok, e2e_scenario, power

TASK_QUEUE = "maintenance-tasks"
RESOURCE_GRAPH = r"/providers/Microsoft\.ResourceGraph/resources"


@pytest.fixture(scope="module")
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


def test_a_post_event_before_the_start_is_held_until_resource_graph_shows_the_run_ended(
    stack: Stack,
) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, POST, run)  # 32 minutes before the run: no run has ended yet
    stack.settle()
    report = stack.run_report(run)
    assert report["run"]["status"] == "Scheduled"
    assert any("before the run's start" in n["message"] for n in report["notes"])
    # The real pre event is not ignored: the stopped VMs are started for patching.
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    assert stack.run_report(run)["run"]["status"] == "Prepared"
    # The held post event did not end the run; once Resource Graph shows it ended, it is
    # wrapped up and what the app started is stopped.
    stack.tick_reconciler()
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    stack.tick_reconciler()
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    assert power(stack, WEB) == "running"
    assert stack.run_report(run)["run"]["status"] == "Completed"


def test_a_pre_event_far_ahead_is_recorded_and_its_preparation_waits_for_t_minus_40(
    stack: Stack,
) -> None:
    tasks = QueueClient.from_connection_string(stack.storage_connection_string, TASK_QUEUE)
    run = stack.schedule("weekly", FLEET, timedelta(days=30))
    stack.fake.clear_requests()
    try:
        deliver_ok(stack, PRE, run)
        time.sleep(2.5)  # longer than the host's longest wait between polls of the queue
        report = stack.run_report(run)
        assert report["run"]["status"] == "PreEventReceived"
        due = (run.scheduled_start - timedelta(minutes=40)).isoformat()
        assert any(due in n["message"] for n in report["notes"])
        # The preparation waits in the queue, invisible, and nobody asked Azure anything.
        assert tasks.get_queue_properties().approximate_message_count == 1
        assert list(tasks.receive_messages(visibility_timeout=1)) == []
        assert stack.fake.requests_matching("POST", RESOURCE_GRAPH) == []
        assert stack.fake.requests_matching("POST", r"/start$") == []
    finally:
        # The delayed task would keep the shared queue busy for the tests that follow.
        tasks.clear_messages()
