"""Calling a function: the argument the worker would build, logs like the host's, in-flight count.

Every invocation, whatever its trigger, goes through FunctionInvoker, so the host knows when it
is idle (tests and demos wait for that) and what to drain on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sandbox.local_host.invocation_context import InvocationContext
from sandbox.local_host.registry import CONTEXT_PARAMETER, IndexedFunction

log = logging.getLogger(__name__)


class FunctionInvocationError(Exception):
    """The function raised; the original exception is chained as the cause."""

    def __init__(self, function_name: str, invocation_id: str) -> None:
        super().__init__(f"Function {function_name} failed (invocation {invocation_id})")
        self.function_name = function_name
        self.invocation_id = invocation_id


class InvocationTracker:
    """Counts work in flight (invocations, and work about to become one) and waits for zero."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @property
    def in_flight(self) -> int:
        """How much work is running now."""
        with self._changed:
            return self._count

    def begin(self) -> None:
        """One more piece of work; pair with end()."""
        with self._changed:
            self._count += 1

    def end(self) -> None:
        """One piece of work finished."""
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Count the block as work in flight."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    def wait_until_idle(self, timeout: float) -> bool:
        """Block until nothing is in flight or the timeout passes; True if idle."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout)


class FunctionInvoker:
    """Runs functions with their trigger value and logs each invocation as the host does."""

    def __init__(self, tracker: InvocationTracker) -> None:
        self.tracker = tracker

    def invoke(self, function: IndexedFunction, trigger_value: object, reason: str) -> Any:
        """Call the function; raise FunctionInvocationError (from the original) if it raises."""
        invocation_id = str(uuid.uuid4())
        arguments: dict[str, Any] = {function.trigger_argument: trigger_value}
        if function.takes_context:
            arguments[CONTEXT_PARAMETER] = InvocationContext(
                invocation_id, function.name, function.directory
            )
        log.info(
            "Executing 'Functions.%s' (Reason='%s', Id=%s)", function.name, reason, invocation_id
        )
        started = time.perf_counter()
        with self.tracker.tracking():
            try:
                result = function.user_function(**arguments)
                if inspect.isawaitable(result):
                    # The worker runs coroutine functions on an event loop; one loop per
                    # invocation is enough for a development host.
                    result = asyncio.run(_awaited(result))
            except Exception as failure:
                log.exception(
                    "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                    function.name,
                    invocation_id,
                    _milliseconds_since(started),
                )
                raise FunctionInvocationError(function.name, invocation_id) from failure
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            function.name,
            invocation_id,
            _milliseconds_since(started),
        )
        return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _milliseconds_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
