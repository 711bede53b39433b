"""One way to change a ledger row others may be writing at the same moment.

Rows are written with the version they were read at (the storage ETag); a write that lost a
race raises LedgerConflict. `retry_on_conflict` runs a read-change-write attempt again until it
lands, a bounded number of times, and then raises: a change is never given up silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from shared.domain.errors import LedgerConflict

log = logging.getLogger(__name__)

T = TypeVar("T")
# Concurrent writers to one row are few (a handful of workers of one run); a few re-reads settle
# them, and a row that keeps changing beyond this is a fault worth a failed task and its retry.
MAX_CONFLICT_RETRIES = 8


def retry_on_conflict(
    attempt: Callable[[], T], *, what: str, attempts: int = MAX_CONFLICT_RETRIES
) -> T:
    """Run `attempt` (read the row, decide, write it with its version) until no other writer
    got in between; raise LedgerConflict naming `what` after `attempts` lost races."""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except LedgerConflict:
            log.debug("%s changed meanwhile (attempt %d of %d)", what, number, attempts)
    raise LedgerConflict(f"{what} kept changing: gave up after {attempts} attempts")
