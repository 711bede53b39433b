"""The marks a task writes once Azure accepted its starts or deallocates, saved several rows to a
write: all rows of a run share one table partition, so a handful of marks cost one
entity-group transaction instead of one write each.

A mark waits at most a couple of seconds, and never past the task's end. Until it is written
the row keeps its intent (Starting/Deallocating) unmarked, which every other step reads as
"its worker may still be calling Azure" and leaves alone while the intent's lease runs: the
same as during the call itself. A host killed before the marks are written leaves exactly that,
as a worker killed between Azure's answer and its write always did: once the lease lapses,
verify (starts) and finish (deallocations) read the VM's power state and settle the row from
it, or send the call again, which Azure takes as a no-op for a VM already starting or
deallocating. Nothing the app started is lost, and nothing is started that the run did not
want (the intent was written, and the run checked, before the call went out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.domain.errors import LedgerConflict
from shared.domain.runs import MAX_MACHINES_SAVED_TOGETHER, MachineRecord

log = logging.getLogger(__name__)

# Marks written together once this many wait (ARM takes about 10 writes a second per
# subscription, so a busy task fills a write in about a second)...
MARKS_PER_WRITE = 10
# ...or once the oldest has waited this long (callers keep it well under the intent renewer's
# interval, so that a renewal seldom finds a row whose mark is still waiting).
MARK_WAIT_SECONDS = 2.0

Mark = Callable[[MachineRecord], MachineRecord]


@dataclass(frozen=True)
class _Waiting:
    row: MachineRecord  # the row as this task last wrote it (its intent)
    mark: Mark  # the mark, applied to any copy of the row (it keeps a row it does not fit)
    marked: MachineRecord  # mark(row): what the write together stores
    since: float  # time.monotonic() when the answer came


class AcceptedMarks:
    """One task's marks of accepted calls, written together (`save_together`, one run's rows,
    ETag-checked, all or nothing) when MARKS_PER_WRITE wait, when the oldest has waited
    `longest_seconds`, and at `close` (the task's end, also by an exception). When another
    writer changed one of the rows meanwhile, the write together stores nothing, and each mark
    is then written alone on the freshest copy of its row (`save_alone`, which re-reads on a
    conflict), so every mark lands under the same condition as one written at once."""

    def __init__(
        self,
        save_together: Callable[[Sequence[MachineRecord]], list[MachineRecord]],
        save_alone: Callable[[MachineRecord, Mark], MachineRecord],
        *,
        per_write: int = MARKS_PER_WRITE,
        longest_seconds: float = MARK_WAIT_SECONDS,
    ) -> None:
        self._save_together = save_together
        self._save_alone = save_alone
        self._per_write = max(1, min(per_write, MAX_MACHINES_SAVED_TOGETHER))
        self._longest = longest_seconds
        self._waiting: list[_Waiting] = []
        self._recorded: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._timer: threading.Thread | None = None

    def add(self, row: MachineRecord, mark: Mark) -> MachineRecord:
        """The row as the mark leaves it, written soon with others. This is what the step
        returns for the machine: the same row a write at once would have stored, so a task
        decides its retries as it always did."""
        marked = mark(row)
        if marked is row:
            return row  # the row moved on meanwhile: nothing to mark
        with self._wake:
            self._waiting.append(_Waiting(row, mark, marked, time.monotonic()))
            full = len(self._waiting) >= self._per_write or self._closing
            if self._timer is None and not self._closing:
                self._timer = threading.Thread(
                    target=self._flush_when_due, name="accepted-marks", daemon=True
                )
                self._timer.start()
            self._wake.notify_all()
        if full:
            self.flush()
        return marked

    def renewed(self, row: MachineRecord) -> None:
        """The row was written again (its intent renewed) while its mark waited: the mark is
        written on that copy, so the renewal does not make the write together a conflict."""
        key = row.resource_id.lower()
        with self._lock:
            self._waiting = [
                _Waiting(row, w.mark, w.mark(row), w.since)
                if w.row.resource_id.lower() == key
                else w
                for w in self._waiting
            ]

    def recorded(self, row: MachineRecord) -> bool:
        """This row's mark is written (its call's answer is in the ledger)."""
        with self._lock:
            return row.resource_id.lower() in self._recorded

    def flush(self) -> None:
        """Write every waiting mark now. On a storage failure the marks not written wait
        again (the next flush tries them) and the failure is raised."""
        with self._lock:
            taken, self._waiting = self._waiting, []
        for start in range(0, len(taken), MAX_MACHINES_SAVED_TOGETHER):
            group = taken[start : start + MAX_MACHINES_SAVED_TOGETHER]
            try:
                self._write(group)
            except BaseException:
                self._wait_again(taken[start:])
                raise

    def close(self) -> None:
        """The task's end: stop the timer and write what still waits."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        if self._timer is not None:
            self._timer.join()
        self.flush()

    def _write(self, group: list[_Waiting]) -> None:
        run = group[0].row.run_id.text
        try:
            self._save_together([w.marked for w in group])
        except (LedgerConflict, ValueError) as e:
            # A row changed while its mark waited (or, ValueError, a task that named one
            # machine twice): each mark alone, on its row's freshest copy.
            log.info("Run %s: %d marks written one by one: %s", run, len(group), e)
            for number, waiting in enumerate(group):
                try:
                    self._save_alone(waiting.row, waiting.mark)
                except LedgerConflict:
                    # The row kept changing: its other writers decide it, as they did when a
                    # mark written at once lost its races.
                    log.info(
                        "Run %s: %s is being handled by another worker",
                        run,
                        waiting.row.resource_id,
                    )
                except BaseException:
                    self._remember(group[:number])
                    raise
        self._remember(group)

    def _remember(self, written: list[_Waiting]) -> None:
        with self._lock:
            self._recorded.update(w.row.resource_id.lower() for w in written)

    def _wait_again(self, unwritten: list[_Waiting]) -> None:
        with self._lock:
            written = self._recorded
            now = time.monotonic()
            again = [
                _Waiting(w.row, w.mark, w.marked, now)
                for w in unwritten
                if w.row.resource_id.lower() not in written
            ]
            self._waiting = again + self._waiting

    def _flush_when_due(self) -> None:
        while self._wait_until_due():
            try:
                self.flush()
            except Exception as e:  # tried again by the next flush, at the latest at close
                log.warning("Marks of accepted calls not written yet: %s", e)

    def _wait_until_due(self) -> bool:
        """Wait until the oldest mark is due; False once closing (close writes the rest)."""
        with self._wake:
            while not self._closing:
                if self._waiting:
                    due_in = min(w.since for w in self._waiting) + self._longest - time.monotonic()
                    if due_in <= 0:
                        return True
                    self._wake.wait(due_in)
                else:
                    self._wake.wait()
            return False
