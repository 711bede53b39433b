"""Every synchronous function runs on the worker's one thread pool, sized as the Python worker
sizes it: min(32, cores + 4), or PYTHON_THREADPOOL_THREAD_COUNT."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from sandbox.local_host.worker_pool import worker_thread_count
from tests.local_host.conftest import StartHost, WorkQueues
from tests.local_host.http_calls import send
from tests.local_host.sample_function_app import InvocationRecorder
from tests.local_host.test_eventgrid_webhook import grid_event, post
from tests.local_host.test_timers_and_admin_api import run_now

WAIT = 10.0


def test_the_pool_has_min_32_cores_plus_4_threads_unless_the_setting_says_otherwise() -> None:
    assert worker_thread_count({}) == min(32, (os.cpu_count() or 1) + 4)
    assert worker_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "48"}) == 48
    assert worker_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": " "}) == worker_thread_count({})


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5"])
def test_a_thread_count_the_worker_would_refuse_falls_back_to_the_default_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        count = worker_thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": value})
    assert count == min(32, (os.cpu_count() or 1) + 4)
    assert "PYTHON_THREADPOOL_THREAD_COUNT" in caplog.text


def test_http_event_grid_queue_and_timer_functions_all_run_on_the_worker_pool(
    start_host: StartHost, recorder: InvocationRecorder, work_queues: WorkQueues
) -> None:
    host = start_host(PYTHON_THREADPOOL_THREAD_COUNT="3")
    assert send("GET", f"{host.url}/api/items/books/1?code={host.function_key}").status == 200
    assert run_now(host, "on_tick", {"input": ""}).status == 202
    assert post(host, [grid_event()]).status == 200
    work_queues.put("work")
    for name in ("on_tick", "on_grid_event", "on_work_item"):
        recorder.wait_for(name, timeout=WAIT)
    names = {n for each in recorder.threads.values() for n in each}
    assert names and all(n.startswith("python-worker") for n in names)
    assert len(names) <= 3


def test_a_request_waits_for_a_worker_thread_while_every_one_is_busy(
    start_host: StartHost, recorder: InvocationRecorder
) -> None:
    host = start_host(PYTHON_THREADPOOL_THREAD_COUNT="1")
    answers: dict[str, int] = {}

    def call(name: str, method: str, path: str) -> None:
        answers[name] = send(method, f"{host.url}/api/{path}?code={host.function_key}").status

    slow = threading.Thread(target=call, args=("slow", "POST", "slow"))
    slow.start()
    recorder.wait_for("slow", timeout=WAIT)
    quick = threading.Thread(target=call, args=("quick", "GET", "items/books/1"))
    quick.start()
    # Both invocations are in the host (at least: the sample app's queue listener may be
    # invoking too); the second cannot start: the only thread is held.
    deadline = time.monotonic() + WAIT
    while host.tracker.in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.tracker.in_flight >= 2
    assert recorder.calls("get_item") == []
    recorder.release.set()
    slow.join(WAIT)
    quick.join(WAIT)
    assert answers == {"slow": 200, "quick": 200}
    assert recorder.threads["get_item"] == recorder.threads["slow"]
