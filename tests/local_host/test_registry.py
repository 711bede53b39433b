"""Reading the app's registrations: once, every trigger type, and refusing what cannot be served."""

from __future__ import annotations

import threading

import azure.functions as func
import pytest

from sandbox.local_host import HostKeys, HostStartError, LocalHost
from sandbox.local_host.host_config import HostConfig
from sandbox.local_host.registry import (
    FunctionIndex,
    TriggerType,
    UnsupportedFunction,
    load_function_app,
)
from tests.local_host.sample_function_app import InvocationRecorder, build_app


def test_sample_app_is_indexed_with_every_trigger_type() -> None:
    index = FunctionIndex.from_app(build_app(InvocationRecorder()))
    by_type = {t: [f.name for f in index.of_type(t)] for t in TriggerType}
    assert by_type == {
        TriggerType.HTTP: ["get_item", "health", "purge", "explode", "slow"],
        TriggerType.EVENT_GRID: ["on_grid_event"],
        TriggerType.QUEUE: ["on_work_item"],
        TriggerType.TIMER: ["on_tick"],
    }
    get_item = index.functions["get_item"]
    assert get_item.trigger_argument == "req"
    assert get_item.takes_context is True
    assert index.functions["health"].takes_context is False


def test_a_function_with_another_binding_is_refused_by_name() -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="out", connection="AzureWebJobsStorage")
    def forward(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode())

    with pytest.raises(UnsupportedFunction, match=r"forward: .*queue 'out'"):
        FunctionIndex.from_app(app)


def test_a_trigger_type_the_host_does_not_serve_is_refused() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass

    with pytest.raises(UnsupportedFunction, match="on_blob: trigger type 'blobTrigger'"):
        FunctionIndex.from_app(app)


def test_two_functions_on_the_same_route_and_method_are_refused() -> None:
    app = func.FunctionApp()

    @app.route(route="runs/{id}", methods=["GET"])
    def first(req: func.HttpRequest) -> str:
        return "1"

    @app.route(route="runs/{name}", methods=["GET", "POST"])
    def second(req: func.HttpRequest) -> str:
        return "2"

    with pytest.raises(HostStartError, match="second and first both serve route"):
        LocalHost.start(app, env={})


def test_an_app_named_by_module_is_indexed_afresh_even_if_indexed_before() -> None:
    spec = "tests.local_host.sample_function_app:app"
    FunctionIndex.from_app(load_function_app(spec))
    again = FunctionIndex.from_app(load_function_app(spec))
    assert "on_tick" in again.functions


def test_a_name_that_is_not_a_function_app_is_refused() -> None:
    with pytest.raises(UnsupportedFunction, match=r"is not an azure\.functions\.FunctionApp"):
        load_function_app("tests.local_host.sample_function_app:build_app")


def test_only_the_named_functions_are_served_and_unknown_names_are_refused() -> None:
    app = func.FunctionApp()

    @app.route(route="fine")
    def fine(req: func.HttpRequest) -> str:
        return "ok"

    @app.blob_trigger(arg_name="blob", path="c/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass

    # The function the host cannot serve is left out, so it is not in the way.
    assert list(FunctionIndex.from_app(app, only=["fine"]).functions) == ["fine"]
    with pytest.raises(UnsupportedFunction, match="no function named missing"):
        FunctionIndex.from_app(func.FunctionApp(), only=["missing"])


def test_every_function_of_the_projects_app_can_be_served() -> None:
    index = FunctionIndex.from_app(load_function_app("function_app:app"))
    assert "on_pre_maintenance_event" in index.functions
    assert "on_maintenance_event_message" in index.functions


def test_a_host_that_was_built_but_never_served_stops_at_once() -> None:
    index = FunctionIndex.from_app(build_app(InvocationRecorder()), only=["health"])
    host = LocalHost(index, config=HostConfig(), keys=HostKeys.load({}), port=0, environ={})
    # In a thread, so a stop() that hangs fails the test instead of the suite.
    stopper = threading.Thread(target=host.stop, kwargs={"drain_timeout": 1.0}, daemon=True)
    stopper.start()
    stopper.join(5.0)
    assert not stopper.is_alive()
