"""Timer triggers on their schedule, and the admin API that runs non-HTTP functions now."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from sandbox.local_host import HostStartError, LocalHost
from tests.local_host.conftest import StartHost
from tests.local_host.http_calls import Answer, send
from tests.local_host.sample_function_app import InvocationRecorder

IDLE_TIMEOUT = 10.0


def run_now(host: LocalHost, function: str, body: object, key: str | None = None) -> Answer:
    return send(
        "POST",
        f"{host.url}/admin/functions/{function}",
        headers={"x-functions-key": host.master_key if key is None else key},
        json_body=body,
    )


def test_timer_fires_on_its_schedule_from_an_app_setting_with_a_timer_request(
    start_host: StartHost, recorder: InvocationRecorder
) -> None:
    start_host(TICK_SCHEDULE="* * * * * *")  # every second
    first, second = recorder.wait_for("on_tick", count=2, timeout=5.0)
    assert isinstance(first, TimerRequest)
    assert first.past_due is False
    assert second.schedule_status["Last"] is not None
    assert second.schedule_status["Next"] > second.schedule_status["Last"]


def test_bad_schedule_stops_the_host_from_starting_and_names_the_function(
    start_host: StartHost,
) -> None:
    with pytest.raises(HostStartError, match=r"on_tick: .*'every tuesday'"):
        start_host(TICK_SCHEDULE="every tuesday")


def test_admin_api_runs_a_timer_now_and_answers_202(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    assert run_now(host, "on_tick", {"input": ""}).status == 202
    [timer] = recorder.wait_for("on_tick")
    assert isinstance(timer, TimerRequest)
    assert timer.past_due is False
    assert host.wait_idle(IDLE_TIMEOUT)


def test_admin_api_passes_input_to_queue_and_event_grid_functions(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    assert run_now(host, "on_work_item", {"input": "by hand"}).status == 202
    event = {"id": "e-9", "eventType": "Sample.Happened", "subject": "s", "data": {"a": 1}}
    assert run_now(host, "on_grid_event", {"input": json.dumps(event)}).status == 202
    [message] = recorder.wait_for("on_work_item")
    [grid_event] = recorder.wait_for("on_grid_event")
    assert isinstance(message, func.QueueMessage)
    assert message.get_body() == b"by hand"
    assert isinstance(grid_event, func.EventGridEvent)
    assert grid_event.get_json() == {"a": 1}


def test_admin_api_needs_the_master_key_and_a_known_non_http_function(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    assert run_now(host, "on_tick", {"input": ""}, key=host.function_key).status == 401
    assert run_now(host, "on_tick", {"input": ""}, key=host.system_key).status == 401
    assert run_now(host, "no_such_function", {"input": ""}).status == 404
    assert run_now(host, "get_item", {"input": ""}).status == 400
    assert run_now(host, "on_grid_event", {"input": "not an event"}).status == 400
    assert run_now(host, "on_tick", [1, 2]).status == 400
    assert host.wait_idle(IDLE_TIMEOUT)
    assert recorder.calls("on_tick") == []
