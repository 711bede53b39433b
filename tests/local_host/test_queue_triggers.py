"""Queue triggers polling Azurite, with host.json's batch, retry and poison rules."""

from __future__ import annotations

import threading
from datetime import timedelta

import azure.functions as func

from sandbox.local_host import LocalHost
from tests.local_host.conftest import HOST_JSON, StartHost, WorkQueues
from tests.local_host.sample_function_app import InvocationRecorder

IDLE_TIMEOUT = 15.0


def test_base64_message_is_decoded_passed_as_queue_message_and_deleted(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    message_id = work_queues.put("hello queue")
    host = start_host()
    assert host.wait_idle(IDLE_TIMEOUT)
    [message] = recorder.calls("on_work_item")
    assert isinstance(message, func.QueueMessage)
    assert message.get_body() == b"hello queue"
    assert message.id == message_id
    assert message.dequeue_count == 1
    assert message.pop_receipt
    assert message.insertion_time is not None
    assert message.expiration_time is not None
    assert message.time_next_visible is not None
    assert work_queues.count() == 0


def test_missing_queue_is_created_and_later_messages_are_picked_up(
    host: LocalHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    assert host.wait_idle(IDLE_TIMEOUT)
    assert work_queues.work.get_queue_properties().name == work_queues.work.queue_name
    work_queues.put("after start")
    assert [m.get_body() for m in recorder.wait_for("on_work_item")] == [b"after start"]


def test_failing_message_is_retried_then_moved_to_the_poison_queue(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    work_queues.put("fail")
    host = start_host()
    assert host.wait_idle(IDLE_TIMEOUT)
    # maxDequeueCount is 3 in the test host.json.
    assert [m.dequeue_count for m in recorder.calls("on_work_item")] == [1, 2, 3]
    assert work_queues.poison_texts() == ["fail"]
    assert work_queues.count() == 0


def test_message_that_is_not_base64_goes_to_the_poison_queue_without_an_invocation(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    # Sent around the base64 policy, as a misconfigured sender would.
    work_queues.unencoded.create_queue()
    work_queues.unencoded.send_message("not base64 at all!")
    host = start_host()
    assert host.wait_idle(IDLE_TIMEOUT)
    assert recorder.calls("on_work_item") == []
    assert [str(m.content) for m in work_queues.poison.peek_messages()] == ["not base64 at all!"]


def test_a_batch_is_processed_in_parallel(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    # batchSize is 4: four messages that each wait for the other three can only all succeed
    # if they run at the same time.
    recorder.meeting = threading.Barrier(4)
    for n in range(4):
        work_queues.put(f"together {n}")
    host = start_host()
    assert host.wait_idle(IDLE_TIMEOUT)
    calls = recorder.calls("on_work_item")
    assert sorted(m.get_body() for m in calls) == [f"together {n}".encode() for n in range(4)]
    assert [m.dequeue_count for m in calls] == [1, 1, 1, 1]
    assert work_queues.poison_texts() == []


def test_visibility_timeout_delays_the_retry_of_a_failed_message(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    queues = dict(HOST_JSON["extensions"]["queues"], visibilityTimeout="00:00:01")
    work_queues.put("fail")
    host = start_host(host_json={"extensions": {"queues": queues}})
    first, second = recorder.wait_for("on_work_item", count=2, timeout=10.0)[:2]
    assert (first.dequeue_count, second.dequeue_count) == (1, 2)
    # Timed by the queue service's own clock, not the test's: each fetch makes the message
    # invisible for the same lease from the moment it is fetched, so the two fetches are as far
    # apart as the two times. The second fetch came after the first failed plus the visibility
    # timeout (1 s); the service writes whole seconds, rounded down on both.
    assert first.time_next_visible is not None and second.time_next_visible is not None
    assert second.time_next_visible - first.time_next_visible >= timedelta(seconds=1)
    assert host.wait_idle(IDLE_TIMEOUT)


def test_wait_idle_is_false_while_a_message_is_still_being_processed(
    start_host: StartHost, work_queues: WorkQueues, recorder: InvocationRecorder
) -> None:
    work_queues.put("hold")
    host = start_host()
    recorder.wait_for("on_work_item")
    assert host.wait_idle(0.3) is False
    recorder.release.set()
    assert host.wait_idle(IDLE_TIMEOUT) is True
    assert work_queues.count() == 0
