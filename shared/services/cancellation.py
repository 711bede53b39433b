"""Use case: cancel a run, only inside its window, and say why (reference §3).

Shared by the gate and the operator API, so both follow one rule and never send two cancels:
a request first marks the run "cancel requested" in the ledger (ETag-checked); whoever loses
that race sees the mark and does not call Azure. Every request, refused or not, goes into the
run's audit.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.domain.errors import AzureCallFailed, CancelRefused, LedgerConflict
from shared.domain.ids import RunId
from shared.domain.runs import CancelOutcome, CancelRequest, Run, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import CancelWindow, Clock, WindowPosition
from shared.services.ports import RunCanceller, RunLedger, TaskQueue

log = logging.getLogger(__name__)

# A mark older than this is from a request that died before it reached Azure: try again.
STALE_REQUEST = timedelta(minutes=2)
MAX_ATTEMPTS = 5
CANCELLED_WORDS = frozenset({"cancel", "cancelled", "canceled"})
NOT_CANCELLABLE_PLATFORM_WORDS = frozenset(
    {"inprogress", "completed", "succeeded", "failed", "completedwithwarnings", "timedout"}
)


class CancelSource(enum.StrEnum):
    """Who cancelled a run."""

    USER = "User"
    GATE = "AppGate"
    PLATFORM = "Platform"


class CancelVerdict(enum.StrEnum):
    """The answer to a cancel request."""

    CANCELLED = "Cancelled"
    ALREADY_CANCELLED = "AlreadyCancelled"
    WOULD_CANCEL = "WouldCancel"
    TOO_EARLY = "TooEarly"
    TOO_LATE = "TooLate"
    NOT_CANCELLABLE = "NotCancellable"
    IN_FLIGHT = "CancelInFlight"
    REFUSED_BY_AZURE = "RefusedByAzure"

    @property
    def outside_window(self) -> bool:
        """Refused because of the time."""
        return self in (CancelVerdict.TOO_EARLY, CancelVerdict.TOO_LATE)


@dataclass(frozen=True)
class CancelContext:
    """The ports and rules a cancel needs."""

    ledger: RunLedger
    canceller: RunCanceller
    queue: TaskQueue
    clock: Clock
    safety_margin: timedelta


@dataclass(frozen=True)
class CancelAnswer:
    """What happened, and the facts behind it (window bounds in UTC, the time of the answer)."""

    verdict: CancelVerdict
    explanation: str
    run_id: RunId
    now: datetime
    window: CancelWindow
    run_status: str | None = None
    platform_status: str | None = None
    service_code: str | None = None
    service_message: str | None = None
    service_status: int | None = None


def cancel_run(
    run_id: RunId,
    context: CancelContext,
    *,
    requested_by: str,
    reason: str,
    source: CancelSource,
    dry_run: bool = False,
) -> CancelAnswer:
    """Cancel `run_id` if its window is open and it is not already cancelled or under way."""
    ledger, clock = context.ledger, context.clock
    for _ in range(MAX_ATTEMPTS):
        now = clock.now()
        run = ledger.find_run(run_id)
        # T from the run's events (StartDateTime); the run name only when none was seen.
        start = run.scheduled_start if run else run_id.scheduled_start
        window = CancelWindow.for_run(
            start, run.cancellation_cutoff if run else None, context.safety_margin
        )
        refusal = _refusal(run_id, run, window, now)
        if refusal is not None:
            return _audited(context, refusal, requested_by, reason, dry_run)
        if dry_run:
            answer = CancelAnswer(
                CancelVerdict.WOULD_CANCEL,
                f"the window is open until {window.closes_at.isoformat()}; a cancel would be sent",
                run_id,
                now,
                window,
                run.status.value if run else None,
            )
            return _audited(context, answer, requested_by, reason, dry_run)
        try:
            marked = _mark_requested(ledger, run_id, run, now)
        except LedgerConflict:
            continue  # someone else changed the run: look again
        return _send(context, marked, window, requested_by, reason, source)
    raise LedgerConflict(f"run {run_id.text} kept changing while cancelling")


def _refusal(
    run_id: RunId, run: Run | None, window: CancelWindow, now: datetime
) -> CancelAnswer | None:
    status = run.status.value if run else None
    platform = run.platform_status if run else None
    if run is not None and (
        run.status is RunStatus.CANCELLED or _word(platform) in CANCELLED_WORDS
    ):
        return CancelAnswer(
            CancelVerdict.ALREADY_CANCELLED,
            "the run is already cancelled; Azure was not called again",
            run_id,
            now,
            window,
            status,
            platform,
        )
    if run is not None and (
        run.status in (RunStatus.POST_EVENT_RECEIVED, RunStatus.WRAPPING_UP, RunStatus.COMPLETED)
        or _word(platform) in NOT_CANCELLABLE_PLATFORM_WORDS
    ):
        return CancelAnswer(
            CancelVerdict.NOT_CANCELLABLE,
            f"the run is {platform or status}: only a run that has not started can be cancelled",
            run_id,
            now,
            window,
            status,
            platform,
        )
    if (
        run is not None
        and run.cancel_requested_at is not None
        and now - run.cancel_requested_at < STALE_REQUEST
    ):
        return CancelAnswer(
            CancelVerdict.IN_FLIGHT,
            f"a cancel was requested at {run.cancel_requested_at.isoformat()} "
            "and is being sent; not sending another",
            run_id,
            now,
            window,
            status,
            platform,
        )
    position = window.position(now)
    if position is WindowPosition.TOO_EARLY:
        return CancelAnswer(
            CancelVerdict.TOO_EARLY,
            f"the cancel window opens at {window.opens_at.isoformat()} (T-40 minutes)",
            run_id,
            now,
            window,
            status,
            platform,
        )
    if position is WindowPosition.CLOSED:
        return CancelAnswer(
            CancelVerdict.TOO_LATE,
            f"the cancel window closed at {window.closes_at.isoformat()} ({window.closes_because})",
            run_id,
            now,
            window,
            status,
            platform,
        )
    return None


def _mark_requested(ledger: RunLedger, run_id: RunId, run: Run | None, now: datetime) -> Run:
    base = run or Run.first_seen(run_id, now)
    return ledger.save_run(replace(base, cancel_requested_at=now, updated_at=now))


def _send(
    context: CancelContext,
    run: Run,
    window: CancelWindow,
    requested_by: str,
    reason: str,
    source: CancelSource,
) -> CancelAnswer:
    now = context.clock.now()
    try:
        state = context.canceller.cancel_run(run.run_id)
    except CancelRefused as e:
        platform = _reread(context, run.run_id)
        _clear_mark(context.ledger, run.run_id, platform)
        answer = CancelAnswer(
            CancelVerdict.REFUSED_BY_AZURE,
            f"Azure refused the cancel: {e.code}: {e.message}",
            run.run_id,
            now,
            window,
            run.status.value,
            platform,
            e.code,
            e.message,
            e.status,
        )
        return _audited(context, answer, requested_by, reason, False)
    except AzureCallFailed:
        _clear_mark(context.ledger, run.run_id, None)
        raise
    stored = _mark_cancelled(context.ledger, run.run_id, source, state.status, now)
    context.queue.send(Task(TaskKind.WRAP_UP, run.run_id))
    answer = CancelAnswer(
        CancelVerdict.CANCELLED,
        f"cancel accepted by Azure (status {state.status or 'not given'})",
        run.run_id,
        now,
        window,
        stored.status.value,
        state.status,
    )
    log.warning("Run %s cancelled by %s (%s): %s", run.run_id.text, requested_by, source, reason)
    return _audited(context, answer, requested_by, reason, False)


def _reread(context: CancelContext, run_id: RunId) -> str | None:
    try:
        return context.canceller.get_run(run_id).status
    except AzureCallFailed as e:
        log.warning("Run %s: status unreadable after a refused cancel: %s", run_id.text, e)
        return None


def _mark_cancelled(
    ledger: RunLedger, run_id: RunId, source: CancelSource, platform: str | None, now: datetime
) -> Run:
    for _ in range(MAX_ATTEMPTS):
        run = ledger.find_run(run_id) or Run.first_seen(run_id, now)
        try:
            return ledger.save_run(
                replace(
                    run,
                    status=RunStatus.CANCELLED,
                    cancel_source=source.value,
                    wrap_up_requested_at=now,
                    platform_status=platform or run.platform_status,
                    updated_at=now,
                )
            )
        except LedgerConflict:
            continue
    raise LedgerConflict(f"run {run_id.text} kept changing after its cancel")


def _clear_mark(ledger: RunLedger, run_id: RunId, platform: str | None) -> None:
    for _ in range(MAX_ATTEMPTS):
        run = ledger.find_run(run_id)
        if run is None:
            return
        cancelled = _word(platform) in CANCELLED_WORDS
        try:
            ledger.save_run(
                replace(
                    run,
                    cancel_requested_at=None,
                    platform_status=platform or run.platform_status,
                    status=RunStatus.CANCELLED if cancelled else run.status,
                )
            )
            return
        except LedgerConflict:
            continue


def _audited(
    context: CancelContext, answer: CancelAnswer, requested_by: str, reason: str, dry_run: bool
) -> CancelAnswer:
    outcome = {
        CancelVerdict.CANCELLED: CancelOutcome.ACCEPTED,
        CancelVerdict.ALREADY_CANCELLED: CancelOutcome.ALREADY_CANCELLED,
        CancelVerdict.WOULD_CANCEL: CancelOutcome.WOULD_CANCEL,
        CancelVerdict.TOO_EARLY: CancelOutcome.REFUSED_OUTSIDE_WINDOW,
        CancelVerdict.TOO_LATE: CancelOutcome.REFUSED_OUTSIDE_WINDOW,
        CancelVerdict.REFUSED_BY_AZURE: CancelOutcome.REFUSED_BY_AZURE,
    }.get(answer.verdict, CancelOutcome.REFUSED_RUN_STATE)
    context.ledger.add_cancel_request(
        CancelRequest(
            run_id=answer.run_id,
            request_id=uuid.uuid4().hex,
            requested_at=answer.now,
            requested_by=requested_by,
            reason=reason,
            dry_run=dry_run,
            outcome=outcome,
            window_opens_at=answer.window.opens_at,
            window_closes_at=answer.window.closes_at,
            detail=answer.explanation,
            service_code=answer.service_code,
            service_message=answer.service_message,
        )
    )
    return answer


def _word(value: str | None) -> str:
    return (value or "").replace(" ", "").lower()
