"""A small FunctionApp with a function of every trigger type the local host serves.

The host is tested on this app, not on function_app, so its behaviour is pinned generically.
Each function reports what it received to an InvocationRecorder; `build_app` gives a fresh app
per test (a FunctionApp can be indexed once), `app` serves the command-line test.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import azure.functions as func

# Bounds every wait inside a function, so a broken test cannot hang the suite.
FUNCTION_WAIT_SECONDS = 10.0


class InvocationRecorder:
    """What each function was called with, in order; tests wait on it with a timeout."""

    def __init__(self) -> None:
        self._calls: list[tuple[str, Any]] = []
        # The thread each call ran on, by function name.
        self.threads: dict[str, list[str]] = {}
        self._changed = threading.Condition()
        # Functions that must be held in flight wait on this; tests set it to let them go.
        self.release = threading.Event()
        # Queue messages starting with b"together" meet here, proving they run in parallel.
        self.meeting: threading.Barrier | None = None

    def record(self, function_name: str, value: Any) -> None:
        with self._changed:
            self._calls.append((function_name, value))
            self.threads.setdefault(function_name, []).append(threading.current_thread().name)
            self._changed.notify_all()

    def calls(self, function_name: str) -> list[Any]:
        with self._changed:
            return [value for name, value in self._calls if name == function_name]

    def wait_for(self, function_name: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """The first `count` calls of the function; AssertionError if they do not come in time."""
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: len(self.calls(function_name)) >= count, timeout
            )
        calls = self.calls(function_name)
        assert arrived, f"{function_name}: {len(calls)} calls within {timeout} s, wanted {count}"
        return calls[:count]


def build_app(recorder: InvocationRecorder) -> func.FunctionApp:
    """A fresh app whose functions report to `recorder`."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="items/{category}/{item_id}", methods=["GET", "POST"])
    def get_item(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        recorder.record("get_item", req)
        document = {
            "method": req.method,
            "url": req.url,
            "params": dict(req.params),
            "route_params": dict(req.route_params),
            "header": req.headers.get("X-Test-Header"),
            "body": req.get_body().decode(),
            "function_name": context.function_name,
            "invocation_id": context.invocation_id,
        }
        return func.HttpResponse(
            json.dumps(document),
            status_code=201 if req.method == "POST" else 200,
            headers={"X-Item-Category": req.route_params["category"]},
            mimetype="application/json",
        )

    @app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def health(req: func.HttpRequest) -> str:
        recorder.record("health", req)
        return "healthy"

    @app.route(route="maintenance/purge", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
    def purge(req: func.HttpRequest) -> func.HttpResponse:
        recorder.record("purge", req)
        return func.HttpResponse(status_code=202)

    @app.route(route="explode")
    def explode(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("kaboom from explode")

    @app.route(route="slow", methods=["POST"])
    def slow(req: func.HttpRequest) -> str:
        recorder.record("slow", req)
        recorder.release.wait(FUNCTION_WAIT_SECONDS)
        return "finished"

    @app.event_grid_trigger(arg_name="event")
    def on_grid_event(event: func.EventGridEvent) -> None:
        recorder.record("on_grid_event", event)
        if event.get_json().get("fail"):
            raise RuntimeError("event asked to fail")

    @app.queue_trigger(
        arg_name="message", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage"
    )
    def on_work_item(message: func.QueueMessage) -> None:
        recorder.record("on_work_item", message)
        body = message.get_body()
        if body == b"fail":
            raise RuntimeError("message asked to fail")
        if body.startswith(b"together") and recorder.meeting is not None:
            recorder.meeting.wait(FUNCTION_WAIT_SECONDS)
        if body == b"hold":
            recorder.release.wait(FUNCTION_WAIT_SECONDS)

    @app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%")
    def on_tick(timer: func.TimerRequest) -> None:
        recorder.record("on_tick", timer)

    return app


app = build_app(InvocationRecorder())
