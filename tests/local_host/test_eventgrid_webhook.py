"""The Event Grid webhook: handshakes, delivery with the worker's binding objects, status codes."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from sandbox.local_host import LocalHost
from tests.local_host.http_calls import Answer, send
from tests.local_host.sample_function_app import InvocationRecorder

NOTIFICATION = {"aeg-event-type": "Notification"}


def grid_event(event_id: str = "e-1", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": "/subscriptions/s/resourceGroups/g",
        "subject": "thing",
        "eventType": "Sample.Happened",
        "eventTime": "2026-12-01T02:25:04.1234567Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": {"colour": "red", **data},
    }


def cloud_event(event_id: str = "c-1") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/subscriptions/s/resourceGroups/g",
        "type": "Sample.Happened",
        "time": "2026-12-01T02:25:04Z",
        "subject": "thing",
        "data": {"colour": "blue"},
    }


def post(
    host: LocalHost,
    body: Any,
    *,
    function: str = "on_grid_event",
    key: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Answer:
    url = f"{host.url}/runtime/webhooks/eventgrid?functionName={function}"
    url += f"&code={host.system_key if key is None else key}"
    if raw is not None:
        return send("POST", url, headers=headers or NOTIFICATION, body=raw)
    return send("POST", url, headers=headers or NOTIFICATION, json_body=body)


def test_subscription_validation_echoes_the_validation_code(host: LocalHost) -> None:
    validation = grid_event(validationCode="512d38b6-c7b8-40c8-89fe-f46f9e9622b6")
    validation["eventType"] = "Microsoft.EventGrid.SubscriptionValidationEvent"
    answer = post(host, [validation], headers={"aeg-event-type": "SubscriptionValidation"})
    assert answer.status == 200
    assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_notification_invokes_the_function_once_per_event_with_an_event_grid_event(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    answer = post(host, [grid_event("e-1"), grid_event("e-2")])
    assert answer.status == 200
    events = recorder.calls("on_grid_event")
    assert [e.id for e in events] == ["e-1", "e-2"]
    assert all(isinstance(e, func.EventGridEvent) for e in events)
    assert events[0].event_type == "Sample.Happened"
    assert events[0].get_json() == {"colour": "red"}
    assert events[0].event_time is not None


def test_cloud_events_arrive_as_cloud_event_objects_in_a_batch_or_alone(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    assert post(host, [cloud_event("c-1")]).status == 200
    # CloudEvents in structured mode: one event, not an array.
    assert post(host, cloud_event("c-2")).status == 200
    events = recorder.calls("on_grid_event")
    assert [e.id for e in events] == ["c-1", "c-2"]
    assert all(isinstance(e, func.CloudEvent) for e in events)
    assert events[0].get_json() == {"colour": "blue"}


def test_a_failing_event_answers_500_so_event_grid_retries(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    answer = post(host, [grid_event("ok"), grid_event("bad", fail=True)])
    assert answer.status == 500
    assert [e.id for e in recorder.calls("on_grid_event")] == ["ok", "bad"]


def test_system_key_is_required_and_the_function_key_is_not_enough(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    url = f"{host.url}/runtime/webhooks/eventgrid?functionName=on_grid_event"
    assert send("POST", url, headers=NOTIFICATION, json_body=[grid_event()]).status == 401
    assert post(host, [grid_event()], key=host.function_key).status == 401
    assert post(host, [grid_event()], key="wrong").status == 401
    assert post(host, [grid_event()], key=host.master_key).status == 200
    assert len(recorder.calls("on_grid_event")) == 1


def test_unknown_function_is_404_and_bad_bodies_are_400(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    assert post(host, [grid_event()], function="nope").status == 404
    assert post(host, [grid_event()], function="get_item").status == 404
    assert post(host, None, raw=b"{not json").status == 400
    assert post(host, "just a string").status == 400
    assert post(host, [grid_event(), 7]).status == 400
    assert post(host, [grid_event()], headers={"aeg-event-type": "Surprise"}).status == 400
    assert recorder.calls("on_grid_event") == []


def test_what_the_host_cannot_decode_is_400_and_no_event_of_the_batch_runs(
    host: LocalHost, recorder: InvocationRecorder
) -> None:
    nested = b"[" * 1000 + b"]" * 1000  # deeper than json.loads goes (RecursionError)
    assert post(host, None, raw=nested).status == 400
    assert post(host, None, raw=b"\xff\xfe[]").status == 400
    for event_time in ("yesterday", "0001-01-01T00:00:00+14:00", 1733000000):
        bad = grid_event("bad")
        bad["eventTime"] = event_time
        answer = post(host, [grid_event("ok"), bad])
        assert (answer.status, b"'bad' cannot be decoded" in answer.body) == (400, True)
    assert recorder.calls("on_grid_event") == []


def test_the_admin_api_answers_400_for_input_it_cannot_decode(host: LocalHost) -> None:
    url = f"{host.url}/admin/functions/on_grid_event"
    headers = {"x-functions-key": host.master_key}
    nested = "[" * 1000 + "]" * 1000
    assert send("POST", url, headers=headers, body=nested.encode()).status == 400
    assert send("POST", url, headers=headers, json_body={"input": nested}).status == 400
    undecodable = {"id": "x", "eventTime": "0001-01-01T00:00:00+14:00", "data": {}}
    answer = send("POST", url, headers=headers, json_body={"input": json.dumps(undecodable)})
    assert answer.status == 400


def test_cloudevents_options_handshake_allows_the_requesting_origin(host: LocalHost) -> None:
    url = f"{host.url}/runtime/webhooks/eventgrid?functionName=on_grid_event&code={host.system_key}"
    answer = send("OPTIONS", url, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert answer.status == 200
    assert answer.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert send("OPTIONS", url).status == 400
