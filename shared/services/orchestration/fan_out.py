"""Work spread over a bounded number of threads, and lists cut into batches."""

from __future__ import annotations

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
