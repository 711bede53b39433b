"""The `context` argument the Python worker passes to functions that declare one."""

from __future__ import annotations

import threading
from typing import cast

import azure.functions as func
from azure.functions import _abc as functions_abc


class _NoException(functions_abc.RpcException):
    """Retry context's exception on a first attempt: there was none."""

    @property
    def source(self) -> str:
        return ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return ""


class _NoRetry(functions_abc.RetryContext):
    """The local host runs no retry policies: every invocation is attempt 0 of 0."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> functions_abc.RpcException:
        return _NoException()


class _NoTrace(functions_abc.TraceContext):
    """No distributed tracing locally: empty W3C trace context."""

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class InvocationContext(func.Context):
    """Invocation id and function name, as `func.Context` exposes them."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._local = threading.local()
        self._local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        # The worker hands out a threading.local instance although the abstract property is
        # annotated with the class; do the same.
        return cast("type[threading.local]", self._local)

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> functions_abc.TraceContext:
        return _NoTrace()

    @property
    def retry_context(self) -> functions_abc.RetryContext:
        return _NoRetry()
