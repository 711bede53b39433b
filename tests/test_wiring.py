"""function_app lists exactly the expected functions, triggers, queues and auth levels."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import azure.functions as func

EXPECTED: dict[str, dict[str, Any]] = {
    "on_pre_maintenance_event": {"type": "eventGridTrigger"},
    "on_post_maintenance_event": {"type": "eventGridTrigger"},
    "on_maintenance_event_message": {
        "type": "queueTrigger",
        "queueName": "maintenance-events",
        "connection": "AzureWebJobsStorage",
    },
    "run_task": {
        "type": "queueTrigger",
        "queueName": "maintenance-tasks",
        "connection": "AzureWebJobsStorage",
    },
    "on_poisoned_task": {
        "type": "queueTrigger",
        "queueName": "maintenance-tasks-poison",
        "connection": "AzureWebJobsStorage",
    },
    "reconcile_runs": {"type": "timerTrigger", "schedule": "%RECONCILE_SCHEDULE%"},
    "cancel_run": {
        "type": "httpTrigger",
        "route": "runs/cancel",
        "methods": ["POST"],
        "authLevel": "FUNCTION",
    },
    "list_runs": {
        "type": "httpTrigger",
        "route": "runs",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "get_run": {
        "type": "httpTrigger",
        "route": "runs/{configuration}/{runName}",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "list_refused_events": {
        "type": "httpTrigger",
        "route": "events/refused",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "openapi": {
        "type": "httpTrigger",
        "route": "openapi.json",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "console_runs": {
        "type": "httpTrigger",
        "route": "console",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "console_run": {
        "type": "httpTrigger",
        "route": "console/run",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "console_report": {
        "type": "httpTrigger",
        "route": "console/report",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "console_cancel": {
        "type": "httpTrigger",
        "route": "console/cancel",
        "methods": ["POST"],
        "authLevel": "FUNCTION",
    },
    "console_refused": {
        "type": "httpTrigger",
        "route": "console/refused",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
    "console_static": {
        "type": "httpTrigger",
        "route": "console/static/{file}",
        "methods": ["GET"],
        "authLevel": "FUNCTION",
    },
}


def fresh_app() -> func.FunctionApp:
    # get_functions() can be called once per FunctionApp instance: import a fresh module.
    sys.modules.pop("function_app", None)
    module = importlib.import_module("function_app")
    app: func.FunctionApp = module.app
    return app


def test_function_app_lists_exactly_the_expected_functions() -> None:
    app = fresh_app()
    functions = {f.get_function_name(): f for f in app.get_functions()}
    assert set(functions) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        bindings = json.loads(functions[name].get_function_json())["bindings"]
        [trigger] = [b for b in bindings if b["type"].endswith("Trigger")]
        assert {k: trigger.get(k) for k in expected} == expected, name
        assert trigger["direction"] == "IN"


def test_http_functions_default_to_function_keys() -> None:
    app = fresh_app()
    assert app.auth_level is func.AuthLevel.FUNCTION
    for function in app.get_functions():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                assert binding["authLevel"] != "ANONYMOUS", function.get_function_name()
