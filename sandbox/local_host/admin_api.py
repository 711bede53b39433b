"""The admin API's `POST /admin/functions/{name}`: run a non-HTTP function now.

As with the real host: the master key in `x-functions-key`, a body `{"input": "..."}` (empty
for a timer, the message text for a queue, the event JSON for Event Grid), answer 202 at once
and run the function in the background.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from sandbox.local_host.eventgrid_webhook import UndecodableEvent, decode_event, decode_json
from sandbox.local_host.http_messages import HostRequest, HostResponse
from sandbox.local_host.invocation import FunctionInvocationError, FunctionInvoker
from sandbox.local_host.keys import HostKeys
from sandbox.local_host.registry import FunctionIndex, IndexedFunction, TriggerType
from sandbox.local_host.timers import utc_now

log = logging.getLogger(__name__)

ADMIN_FUNCTIONS_PATH = "/admin/functions/"
ADMIN_REASON = "This function was programmatically called via the host APIs."
# Storage queues keep a message seven days unless told otherwise.
MESSAGE_TIME_TO_LIVE = timedelta(days=7)


class InvalidInput(ValueError):
    """The `input` does not fit the function's trigger."""


class AdminApi:
    """Runs functions on request, with the master key."""

    def __init__(self, index: FunctionIndex, keys: HostKeys, invoker: FunctionInvoker) -> None:
        self._functions = {f.name.lower(): f for f in index}
        self._keys = keys
        self._invoker = invoker

    def handle(self, request: HostRequest, function_name: str) -> HostResponse:
        """Answer `POST /admin/functions/{function_name}`."""
        if not self._keys.is_master(request.presented_key):
            return HostResponse.text(401, "The admin API needs the master key (x-functions-key).")
        if request.method != "POST":
            return HostResponse(405, (("Allow", "POST"),))
        function = self._functions.get(function_name.lower())
        if function is None:
            return HostResponse.text(404, f"No function named {function_name!r}.")
        try:
            trigger_value = self._trigger_value(function, _input_of(request.body))
        except InvalidInput as problem:
            return HostResponse.text(400, str(problem))
        # Counted from now, so wait_idle() cannot slip in before the thread starts.
        self._invoker.tracker.begin()
        threading.Thread(
            target=self._run,
            args=(function, trigger_value),
            name=f"admin-{function.name}",
            daemon=True,
        ).start()
        return HostResponse(202)

    def _run(self, function: IndexedFunction, trigger_value: Any) -> None:
        try:
            # A failure is logged by the invoker; the caller already has its 202.
            with contextlib.suppress(FunctionInvocationError):
                self._invoker.invoke(function, trigger_value, ADMIN_REASON)
        finally:
            self._invoker.tracker.end()

    @staticmethod
    def _trigger_value(function: IndexedFunction, text: str) -> Any:
        if function.trigger_type is TriggerType.TIMER:
            return TimerRequest(past_due=False)
        if function.trigger_type is TriggerType.QUEUE:
            now = utc_now()
            return QueueMessage(  # type: ignore[no-untyped-call]
                id=str(uuid.uuid4()),
                body=text.encode("utf-8"),
                dequeue_count=1,
                expiration_time=now + MESSAGE_TIME_TO_LIVE,
                insertion_time=now,
                time_next_visible=now,
                pop_receipt=None,
            )
        if function.trigger_type is TriggerType.EVENT_GRID:
            try:
                envelope = decode_json(text)
            except ValueError:
                envelope = None
            if not isinstance(envelope, dict):
                raise InvalidInput("input must be one event as a JSON object, in a string")
            try:
                return decode_event(envelope)
            except UndecodableEvent as problem:
                raise InvalidInput(str(problem)) from None
        raise InvalidInput(f"{function.name} is HTTP-triggered: call its route instead")


def _input_of(body: bytes) -> str:
    if not body.strip():
        return ""
    try:
        document = decode_json(body)
    except ValueError:
        raise InvalidInput('the body must be JSON like {"input": ""}') from None
    value = document.get("input", "") if isinstance(document, dict) else None
    if not isinstance(value, str):
        raise InvalidInput('the body must be JSON like {"input": ""} with a string input')
    return value
