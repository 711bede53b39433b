"""Calling a function: the argument the worker would build, logs like the host's, in-flight count.

Every invocation, whatever its trigger, goes through FunctionInvoker, so the host knows when it
is idle (tests and demos wait for that) and what to drain on shutdown. Synchronous functions
run on the worker's one thread pool (see worker_pool.py); the caller (an HTTP request thread, a
queue listener, a timer) waits for the result, as the host waits for the worker's answer.
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
from concurrent.futures import ThreadPoolExecutor
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
        return self.wait_until_in_flight(0, timeout)

    def wait_until_in_flight(self, count: int, timeout: float) -> bool:
        """Block until exactly `count` pieces of work are in flight, or the timeout passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == count, timeout)


class FunctionInvoker:
    """Runs functions with their trigger value and logs each invocation as the host does."""

    def __init__(self, tracker: InvocationTracker, worker_threads: int = 1) -> None:
        self.tracker = tracker
        self.worker_threads = worker_threads
        self._worker_pool = ThreadPoolExecutor(
            max_workers=worker_threads, thread_name_prefix="python-worker"
        )

    def close(self, *, wait: bool) -> None:
        """Release the worker threads (after the host stopped taking work)."""
        self._worker_pool.shutdown(wait=wait, cancel_futures=not wait)

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
                if inspect.iscoroutinefunction(function.user_function):
                    result = function.user_function(**arguments)
                else:
                    # Waiting here includes waiting for a free worker thread, as in the host.
                    result = self._worker_pool.submit(function.user_function, **arguments).result()
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
