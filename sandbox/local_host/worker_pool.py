"""The Python worker's thread pool: every synchronous function runs on it, whatever its trigger.

The real worker (azure-functions-python-worker, Python 3.9 and later) runs synchronous
functions on one ThreadPoolExecutor whose size is PYTHON_THREADPOOL_THREAD_COUNT when that is a
whole number >= 1, else the executor's own default, min(32, cores + 4). The host dispatches
HTTP requests, Event Grid deliveries, queue messages and timer firings to the worker as they
come; when every thread is busy they wait in the pool's queue. The local host does the same, so
that work holding a thread (a task waiting on Azure) shows up as answers that wait.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def default_thread_count() -> int:
    """ThreadPoolExecutor's default, which the worker keeps when the setting is unset."""
    return min(32, (os.cpu_count() or 1) + 4)


def worker_thread_count(environ: Mapping[str, str]) -> int:
    """Threads in the worker's pool: PYTHON_THREADPOOL_THREAD_COUNT if valid, else the default
    (an invalid value is warned about and ignored, as the worker does)."""
    value = environ.get(THREAD_COUNT_SETTING)
    if value is None or not value.strip():
        return default_thread_count()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        log.warning(
            "%s must be a whole number >= 1 (got %r); using the default, %d",
            THREAD_COUNT_SETTING,
            value,
            default_thread_count(),
        )
        return default_thread_count()
    return count
