"""Timer triggers: fire on an NCRONTAB schedule (UTC), one invocation at a time per function.

As in the host, occurrences missed while an invocation overran are skipped, not queued, and
`runOnStartup` fires once when the host starts. The host only reports `past_due` from its
schedule monitor (blob storage); the local host keeps no state, so `past_due` is true when an
occurrence fires more than PAST_DUE_TOLERANCE late (e.g. the machine was asleep).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from sandbox.local_host.invocation import FunctionInvocationError, FunctionInvoker
from sandbox.local_host.ncrontab import CronSchedule
from sandbox.local_host.registry import IndexedFunction

log = logging.getLogger(__name__)

PAST_DUE_TOLERANCE = timedelta(seconds=1)
# Re-read the wall clock at least this often while waiting, so a clock change is noticed.
MAX_WAIT = timedelta(minutes=1)


def utc_now() -> datetime:
    """The current time in UTC, the time zone NCRONTAB schedules are read in."""
    return datetime.now(UTC)


class TimerTrigger:
    """Fires one timer-triggered function on its schedule until stopped."""

    def __init__(
        self,
        function: IndexedFunction,
        schedule: CronSchedule,
        invoker: FunctionInvoker,
        *,
        run_on_startup: bool = False,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.function = function
        self.schedule = schedule
        self._invoker = invoker
        self._run_on_startup = run_on_startup
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"timer-{function.name}", daemon=True
        )

    def start(self) -> None:
        """Start the schedule in a background thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Fire no more; an invocation already running finishes (drain it via the tracker)."""
        self._stopping.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def next_occurrence(self) -> datetime:
        """When the schedule fires next, from now."""
        return self.schedule.next_after(self._clock())

    def _run(self) -> None:
        last: datetime | None = None
        if self._run_on_startup:
            now = self._clock()
            self._fire(now, last, now)
            last = now
        due = self.schedule.next_after(self._clock())
        while not self._stopping.is_set():
            remaining = due - self._clock()
            if remaining > timedelta(0):
                self._stopping.wait(min(remaining, MAX_WAIT).total_seconds())
                continue
            self._fire(due, last, self._clock())
            last = due
            # From now, not from `due`: occurrences that passed during the invocation are
            # skipped, as the host does.
            due = self.schedule.next_after(max(self._clock(), due))

    def _fire(self, due: datetime, last: datetime | None, now: datetime) -> None:
        request = TimerRequest(
            past_due=now - due > PAST_DUE_TOLERANCE,
            schedule_status={
                "Last": last.isoformat() if last else None,
                "Next": self.schedule.next_after(due).isoformat(),
                "LastUpdated": now.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        # A failure is logged by the invoker; the schedule goes on, as in the host.
        with contextlib.suppress(FunctionInvocationError):
            self._invoker.invoke(self.function, request, f"Timer fired at {now.isoformat()}")
