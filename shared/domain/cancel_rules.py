"""The cancel rule (reference §3) as a pure function: may this run be cancelled now, and if
not, why not. Shared by the gate and the operator API through services/cancellation."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain.runs import Run, RunStatus
from shared.domain.timeline import CancelWindow, WindowPosition
from shared.domain.vocabulary import CancelVerdict, is_cancelled

# A "cancel requested" mark older than this is from a request that died before it reached
# Azure: another request may go ahead (after reading the run back).
STALE_REQUEST = timedelta(minutes=2)


def refusal(
    run: Run | None, window: CancelWindow, now: datetime, start: datetime
) -> tuple[CancelVerdict, str] | None:
    """Why a cancel of `run` (None: not in the ledger yet) must not be sent at `now`, or None
    when it may. `start` is T. Before T the window alone decides, whatever word the platform
    shows; from T on the run is under way."""
    platform = run.platform_status if run else None
    if run is not None and (
        run.status is RunStatus.CANCELLED
        or run.cancel_source is not None  # cancelled, and wrap-up may have moved it on since
        or is_cancelled(platform)
    ):
        return (
            CancelVerdict.ALREADY_CANCELLED,
            "the run is already cancelled; Azure was not called again",
        )
    if run is not None and run.status in (
        RunStatus.POST_EVENT_RECEIVED,
        RunStatus.WRAPPING_UP,
        RunStatus.COMPLETED,
    ):
        return (
            CancelVerdict.NOT_CANCELLABLE,
            f"the run is {run.status.value}: only a run that has not started can be cancelled",
        )
    if now >= start:
        # The platform's status between T-40 and T is undocumented: no word decides before T.
        return (
            CancelVerdict.NOT_CANCELLABLE,
            f"the run is under way: patching started at {start.isoformat()} (T); the cancel "
            f"window closed at {window.closes_at.isoformat()}"
            + (f"; Azure shows it {platform}" if platform else ""),
        )
    requested = run.cancel_requested_at if run else None
    if requested is not None and now - requested < STALE_REQUEST:
        return (
            CancelVerdict.IN_FLIGHT,
            f"a cancel was requested at {requested.isoformat()} and is being sent; "
            "not sending another",
        )
    position = window.position(now)
    if position is WindowPosition.TOO_EARLY:
        return (
            CancelVerdict.TOO_EARLY,
            f"the cancel window opens at {window.opens_at.isoformat()} (T-40 minutes)",
        )
    if position is WindowPosition.CLOSED:
        return (
            CancelVerdict.TOO_LATE,
            f"the cancel window closed at {window.closes_at.isoformat()} ({window.closes_because})",
        )
    return None
