"""The Event Grid webhook: `/runtime/webhooks/eventgrid?functionName=NAME&code=SYSTEM_KEY`.

Answers the subscription handshakes (Event Grid schema: `aeg-event-type: SubscriptionValidation`;
CloudEvents 1.0: an OPTIONS request with `WebHook-Request-Origin`) and delivers notifications:
each event is decoded by azure-functions' own converter, exactly as the Python worker does, and
the function is invoked once per event. A body or an event the host cannot decode answers 400
before any function runs; a function's failure answers 500, so Event Grid retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from sandbox.local_host.http_messages import HostRequest, HostResponse
from sandbox.local_host.invocation import FunctionInvocationError, FunctionInvoker
from sandbox.local_host.keys import HostKeys
from sandbox.local_host.registry import IndexedFunction

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/runtime/webhooks/eventgrid"
EVENT_TYPE_HEADER = "aeg-event-type"
VALIDATION = "SubscriptionValidation"
NOTIFICATION = "Notification"
UNSUBSCRIBE = "Unsubscribe"
REQUEST_ORIGIN_HEADER = "WebHook-Request-Origin"
ALLOWED_ORIGIN_HEADER = "WebHook-Allowed-Origin"


class UndecodableEvent(ValueError):
    """An event the worker's converter cannot turn into its binding value."""


def decode_json(body: bytes | str) -> Any:
    """A request body as JSON; ValueError for what the host cannot parse (not UTF-8, not JSON,
    nested deeper than the parser goes)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("The body is nested too deeply.") from None


def decode_event(envelope: dict[str, Any]) -> Any:
    """The binding value for one event: func.EventGridEvent or func.CloudEvent."""
    try:
        datum = meta.Datum(type="json", value=json.dumps(envelope))
        return EventGridEventInConverter.decode(datum, trigger_metadata={})
    except (ValueError, TypeError, RecursionError, OverflowError) as problem:
        # The worker fails such an event before the function runs (a time it cannot parse,
        # a field of the wrong type); the host refuses it as a bad request.
        raise UndecodableEvent(
            f"Event {describe_value(envelope.get('id'))} cannot be decoded: {problem}"
        ) from None


def describe_value(value: object, limit: int = 80) -> str:
    """A short, one-line rendering of an untrusted value for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EventGridWebhook:
    """Serves the Event Grid-triggered functions of the app."""

    def __init__(
        self, functions: Sequence[IndexedFunction], keys: HostKeys, invoker: FunctionInvoker
    ) -> None:
        # Function names are case-insensitive in the host.
        self._functions = {f.name.lower(): f for f in functions}
        self._keys = keys
        self._invoker = invoker

    def handle(self, request: HostRequest) -> HostResponse:
        """Answer one request to the webhook."""
        if not self._keys.allows_eventgrid(request.presented_key):
            return HostResponse.text(401, "Missing or wrong eventgrid_extension system key.")
        name = request.query_value("functionName") or ""
        function = self._functions.get(name.lower())
        if function is None:
            return HostResponse.text(404, f"No Event Grid function named {name!r}.")
        if request.method == "OPTIONS":
            return _cloudevents_validation(request)
        if request.method != "POST":
            return HostResponse(405, (("Allow", "POST, OPTIONS"),))
        try:
            body = decode_json(request.body)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            return HostResponse.text(400, "The body is not JSON.")
        # The host accepts a batch (array) or, for CloudEvents in structured mode, one event.
        events = [body] if isinstance(body, dict) else body
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return HostResponse.text(400, "The body is not an event or an array of events.")
        event_type = request.header(EVENT_TYPE_HEADER) or ""
        if event_type.lower() == VALIDATION.lower():
            return _validation_response(events)
        if event_type.lower() == NOTIFICATION.lower():
            return self._deliver(function, events)
        if event_type.lower() == UNSUBSCRIBE.lower():
            return HostResponse(202)
        return HostResponse.text(400, f"Unknown {EVENT_TYPE_HEADER} {event_type!r}.")

    def _deliver(self, function: IndexedFunction, events: list[dict[str, Any]]) -> HostResponse:
        try:
            decoded = [(envelope.get("id"), decode_event(envelope)) for envelope in events]
        except UndecodableEvent as problem:
            return HostResponse.text(400, str(problem))
        failed = 0
        # Every event of the batch is tried, so one bad event does not hide the others' logs;
        # Event Grid redelivers the whole batch on any failure, as with the real host.
        for event_id, event in decoded:
            reason = f"EventGrid trigger fired for event {describe_value(event_id)}"
            try:
                self._invoker.invoke(function, event, reason)
            except FunctionInvocationError:
                failed += 1
        if failed:
            return HostResponse.text(500, f"{failed} of {len(events)} events failed.")
        return HostResponse(200)


def _validation_response(events: list[dict[str, Any]]) -> HostResponse:
    data = events[0].get("data") if events else None
    code = data.get("validationCode") if isinstance(data, dict) else None
    if not isinstance(code, str):
        return HostResponse.text(400, "A validation event needs data.validationCode.")
    log.info("Answered an Event Grid subscription validation")
    return HostResponse.json(200, {"validationResponse": code})


def _cloudevents_validation(request: HostRequest) -> HostResponse:
    origin = request.header(REQUEST_ORIGIN_HEADER)
    if not origin:
        return HostResponse.text(400, f"A validation request needs {REQUEST_ORIGIN_HEADER}.")
    return HostResponse(200, ((ALLOWED_ORIGIN_HEADER, origin),))
