"""Work spread over a bounded number of threads, lists cut into batches, and what a batch's
threads share, loaded once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + max(1, size)])


def parallel(workers: int, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Run `work` on each item with at most `workers` at once; exceptions propagate."""
    listed = list(items)
    if not listed:
        return []
    if workers <= 1 or len(listed) == 1:
        return [work(item) for item in listed]
    with ThreadPoolExecutor(max_workers=min(workers, len(listed))) as pool:
        return list(pool.map(work, listed))


def on_first_use(load: Callable[[], R]) -> Callable[[], R]:
    """A function that answers what `load` returns, loading it when it is first asked for (once,
    on whichever thread asks first; the others wait for that answer). A load that raises is
    tried again by the next caller."""
    lock = threading.Lock()
    loaded: list[R] = []

    def get() -> R:
        with lock:
            if not loaded:
                loaded.append(load())
            return loaded[0]

    return get
