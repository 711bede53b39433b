"""HTTP triggers served by the local host: routes, keys, the request built, the response sent."""

from __future__ import annotations

import logging
import threading

import azure.functions as func
import pytest

from sandbox.local_host import LocalHost
from tests.local_host.http_calls import Answer, send
from tests.local_host.sample_function_app import InvocationRecorder


def test_route_params_query_headers_and_body_reach_the_function(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    answer = send(
        "POST",
        f"{host.url}/api/items/tools/hammer%201?colour=red&size=",
        headers={"x-functions-key": host.function_key, "X-Test-Header": "sent"},
        body=b"payload",
    )
    assert answer.status == 201
    document = answer.json()
    assert document["route_params"] == {"category": "tools", "item_id": "hammer 1"}
    assert document["params"] == {"colour": "red", "size": ""}
    assert document["header"] == "sent"
    assert document["body"] == "payload"
    assert document["method"] == "POST"
    assert document["url"].endswith("/api/items/tools/hammer%201?colour=red&size=")
    assert document["function_name"] == "get_item"
    assert document["invocation_id"]
    [request] = recorder.calls("get_item")
    assert isinstance(request, func.HttpRequest)


def test_response_status_headers_and_mimetype_are_sent_back(host: LocalHost) -> None:
    answer = send("GET", f"{host.url}/api/items/books/42?code={host.function_key}")
    assert answer.status == 200
    assert answer.headers["x-item-category"] == "books"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["route_params"] == {"category": "books", "item_id": "42"}


def test_function_key_is_needed_for_function_level_routes(host: LocalHost) -> None:
    url = f"{host.url}/api/items/books/42"
    assert send("GET", url).status == 401
    assert send("GET", url, headers={"x-functions-key": "wrong"}).status == 401
    assert send("GET", f"{url}?code=wrong").status == 401
    assert send("GET", url, headers={"x-functions-key": host.master_key}).status == 200


def test_anonymous_route_needs_no_key_and_a_str_return_is_the_body(host: LocalHost) -> None:
    answer = send("GET", f"{host.url}/api/health")
    assert answer == Answer(200, answer.headers, b"healthy")
    assert answer.headers["content-type"].startswith("text/plain")


def test_admin_level_route_takes_only_the_master_key(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    url = f"{host.url}/api/maintenance/purge"
    assert send("POST", url, headers={"x-functions-key": host.function_key}).status == 401
    assert send("POST", url, headers={"x-functions-key": host.master_key}).status == 202
    assert len(recorder.calls("purge")) == 1


def test_method_not_in_the_binding_and_unknown_routes_are_not_found(host: LocalHost) -> None:
    key = {"x-functions-key": host.master_key}
    assert send("DELETE", f"{host.url}/api/items/books/42", headers=key).status == 404
    assert send("GET", f"{host.url}/api/items/books", headers=key).status == 404
    assert send("GET", f"{host.url}/api/nothing-here", headers=key).status == 404
    assert send("GET", f"{host.url}/items/books/42", headers=key).status == 404


def test_unhandled_exception_is_a_500_with_the_traceback_logged(
    host: LocalHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sandbox.local_host"):
        answer = send("GET", f"{host.url}/api/explode?code={host.function_key}")
    assert answer.status == 500
    failed = [r for r in caplog.records if "Executed 'Functions.explode' (Failed" in r.message]
    assert len(failed) == 1
    assert failed[0].exc_info is not None
    assert isinstance(failed[0].exc_info[1], RuntimeError)
    assert "kaboom from explode" in caplog.text  # the traceback, with the function's message


def test_each_invocation_is_logged_with_function_name_outcome_and_duration(
    host: LocalHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sandbox.local_host"):
        send("GET", f"{host.url}/api/health")
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Executing 'Functions.health' (Reason=") for m in messages)
    assert any(
        m.startswith("Executed 'Functions.health' (Succeeded, Id=") and "Duration=" in m
        for m in messages
    )


def test_stop_waits_for_a_running_request_to_finish(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    answers: list[Answer] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            send("POST", f"{host.url}/api/slow", headers={"x-functions-key": host.function_key})
        )
    )
    caller.start()
    recorder.wait_for("slow")
    stopper = threading.Thread(target=host.stop, kwargs={"drain_timeout": 10.0})
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive(), "stop() returned while an invocation was still running"
    recorder.release.set()
    stopper.join(10.0)
    caller.join(10.0)
    assert not stopper.is_alive()
    assert [a.status for a in answers] == [200]
    assert answers[0].body == b"finished"
