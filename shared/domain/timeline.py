"""The timeline of one run (T = scheduled start), as pure rules with an injected clock.

See reference/update-manager.md §2 and §3: the cancel window opens at T−40 and closes at
min(CancellationCutOffDateTime, T−10) minus a safety margin; machines should run by T−15.
Intervals are half-open: a window is open at `opens_at` and closed at `closes_at`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

CANCEL_WINDOW_OPENS_BEFORE_START = timedelta(minutes=40)
CANCEL_WINDOW_CLOSES_BEFORE_START = timedelta(minutes=10)
MACHINES_RUNNING_BEFORE_START = timedelta(minutes=15)
DEFAULT_CANCEL_SAFETY_MARGIN = timedelta(seconds=60)
# The times the app accepts from outside: a year of room at each end of the calendar, so that
# the arithmetic around a run (windows, waits, look-backs) never leaves it (OverflowError).
EARLIEST_TIME = datetime(2, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


class Clock(Protocol):
    """Tells the current time (timezone-aware, UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class WindowPosition(enum.StrEnum):
    """Where a moment falls relative to a window."""

    TOO_EARLY = "TooEarly"
    OPEN = "Open"
    CLOSED = "Closed"


@dataclass(frozen=True)
class CancelWindow:
    """When this app may send a cancel for a run, and why it closes when it does."""

    opens_at: datetime
    closes_at: datetime
    closes_because: str

    @classmethod
    def for_run(
        cls,
        scheduled_start: datetime,
        cancellation_cutoff: datetime | None = None,
        safety_margin: timedelta = DEFAULT_CANCEL_SAFETY_MARGIN,
    ) -> CancelWindow:
        """The window of a run starting at `scheduled_start`; the event's cut-off if known."""
        _require_aware(scheduled_start, "scheduled start")
        if safety_margin < timedelta(0):
            raise ValueError("safety margin must not be negative")
        latest = scheduled_start - CANCEL_WINDOW_CLOSES_BEFORE_START
        because = "T-10 minutes"
        if cancellation_cutoff is not None:
            _require_aware(cancellation_cutoff, "cancellation cut-off")
            if cancellation_cutoff < latest:
                latest, because = cancellation_cutoff, "the event's CancellationCutOffDateTime"
        opens = scheduled_start - CANCEL_WINDOW_OPENS_BEFORE_START
        closes = latest - safety_margin
        # A cut-off earlier than T−40 leaves no window at all; keep it empty, never inverted.
        return cls(
            opens_at=opens,
            closes_at=max(opens, closes),
            closes_because=f"{because} minus a {int(safety_margin.total_seconds())} s "
            "safety margin",
        )

    def position(self, now: datetime) -> WindowPosition:
        """Whether `now` is before, inside or after the window."""
        _require_aware(now, "now")
        if now < self.opens_at:
            return WindowPosition.TOO_EARLY
        if now < self.closes_at:
            return WindowPosition.OPEN
        return WindowPosition.CLOSED


def preparation_due(scheduled_start: datetime) -> datetime:
    """When a run's preparation may begin: T−40, the earliest a real pre event comes and the
    moment the run's scope is frozen. A pre event that came before waits until then."""
    _require_aware(scheduled_start, "scheduled start")
    return scheduled_start - CANCEL_WINDOW_OPENS_BEFORE_START


def machines_running_deadline(scheduled_start: datetime) -> datetime:
    """The moment by which machines must run to be patched (T−15)."""
    _require_aware(scheduled_start, "scheduled start")
    return scheduled_start - MACHINES_RUNNING_BEFORE_START


def within_calendar(value: datetime) -> bool:
    """True when `value` (timezone-aware) lies between EARLIEST_TIME and LATEST_TIME."""
    try:
        return EARLIEST_TIME <= value <= LATEST_TIME
    except OverflowError:
        return False


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
