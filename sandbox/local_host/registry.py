"""The app's own registrations: what `FunctionApp.get_functions()` lists, read once.

`get_functions()` can be called once per FunctionApp instance (a second call raises: every name
looks like a duplicate), so the host builds one FunctionIndex per app and everything else reads
the index.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.decorators.function_app import Function

log = logging.getLogger(__name__)

_EXPRESSION = re.compile(r"%([^%]+)%")
# The worker hands a parameter of this name the invocation context, unless a binding owns it.
CONTEXT_PARAMETER = "context"


class TriggerType(enum.StrEnum):
    """The trigger types the local host serves (the `type` of the trigger binding)."""

    HTTP = "httpTrigger"
    EVENT_GRID = "eventGridTrigger"
    QUEUE = "queueTrigger"
    TIMER = "timerTrigger"


class UnsupportedFunction(ValueError):
    """The app has a function the local host cannot serve faithfully; the message says why."""


class MissingSetting(ValueError):
    """A binding refers to an app setting that is not in the environment."""


@dataclass(frozen=True)
class IndexedFunction:
    """One function of the app: its trigger binding and the Python callable behind it."""

    name: str
    trigger_type: TriggerType
    trigger: Mapping[str, Any]
    user_function: Callable[..., Any]
    takes_context: bool
    directory: str

    @property
    def trigger_argument(self) -> str:
        """The parameter that receives the trigger's value."""
        return str(self.trigger["name"])


@dataclass(frozen=True)
class FunctionIndex:
    """Every function of one FunctionApp, by name."""

    functions: Mapping[str, IndexedFunction]

    @classmethod
    def from_app(cls, app: func.FunctionApp, only: Collection[str] | None = None) -> FunctionIndex:
        """Index the app (calls `app.get_functions()`, which works once per instance).

        `only` keeps just the functions named (Core Tools' `--functions`); the others are not
        checked, so a function the host cannot serve can be left out.
        """
        functions: dict[str, IndexedFunction] = {}
        problems: list[str] = []
        listed = app.get_functions()
        wanted = set(only) if only is not None else None
        if wanted is not None:
            unknown = sorted(wanted - {str(f.get_function_name()) for f in listed})
            if unknown:
                raise UnsupportedFunction(f"no function named {', '.join(unknown)} in the app")
        for function in listed:
            if wanted is not None and function.get_function_name() not in wanted:
                continue
            try:
                indexed = _index(function)
            except UnsupportedFunction as problem:
                problems.append(str(problem))
                continue
            functions[indexed.name] = indexed
        if problems:
            raise UnsupportedFunction("; ".join(problems))
        return cls(functions)

    def of_type(self, trigger_type: TriggerType) -> list[IndexedFunction]:
        """The functions with this trigger, in registration order."""
        return [f for f in self.functions.values() if f.trigger_type is trigger_type]

    def __iter__(self) -> Iterator[IndexedFunction]:
        return iter(self.functions.values())


def _index(function: Function) -> IndexedFunction:
    name = str(function.get_function_name())
    bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        raise UnsupportedFunction(f"{name}: expected one trigger, found {len(triggers)}")
    trigger = triggers[0]
    try:
        trigger_type = TriggerType(trigger["type"])
    except ValueError:
        raise UnsupportedFunction(
            f"{name}: trigger type {trigger['type']!r} is not served by the local host"
        ) from None
    others = [
        b
        for b in bindings
        if b is not trigger
        # An HTTP trigger's response is its `$return` http binding: the host serves that.
        and not (trigger_type is TriggerType.HTTP and b.get("type") == "http")
    ]
    if others:
        kinds = ", ".join(f"{b.get('type')} {b.get('name')!r}" for b in others)
        raise UnsupportedFunction(f"{name}: the local host serves no other bindings ({kinds})")
    user_function = function.get_user_function()
    parameters = list(inspect.signature(user_function).parameters)
    extra = [p for p in parameters if p not in (trigger["name"], CONTEXT_PARAMETER)]
    if extra:
        raise UnsupportedFunction(f"{name}: parameters {extra} are not bound to anything")
    return IndexedFunction(
        name=name,
        trigger_type=trigger_type,
        trigger=trigger,
        user_function=user_function,
        takes_context=CONTEXT_PARAMETER in parameters,
        directory=_directory_of(user_function),
    )


def _directory_of(user_function: Callable[..., Any]) -> str:
    try:
        return str(Path(inspect.getfile(user_function)).resolve().parent)
    except TypeError:
        return os.getcwd()


def resolve_binding_expression(text: str, environ: Mapping[str, str], where: str) -> str:
    """Replace each `%SETTING%` with the setting's value, as the host resolves bindings."""

    def value_of(match: re.Match[str]) -> str:
        setting = match.group(1)
        value = environ.get(setting)
        if value is None:
            raise MissingSetting(f"{where}: binding expression %{setting}% names an unset setting")
        return value

    return _EXPRESSION.sub(value_of, text)


def load_function_app(spec: str) -> func.FunctionApp:
    """Import `module:attribute` (attribute defaults to `app`) and return the FunctionApp.

    A FunctionApp can be indexed once; if this one already was (a test did it), the module is
    executed again to get a fresh instance, as a new worker process would.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if isinstance(app, func.FunctionApp) and getattr(app, "functions_bindings", None):
        log.debug("%s was already indexed; importing %s again", spec, module_name)
        module = importlib.reload(sys.modules[module_name])
        app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionApp):
        raise UnsupportedFunction(f"{spec}: {attribute!r} is not an azure.functions.FunctionApp")
    return app
