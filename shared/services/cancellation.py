"""Use case: cancel a run, only inside its window, and say why (reference §3).

Shared by the gate and the operator API, so both follow one rule and never send two cancels:
a request first marks the run "cancel requested" in the ledger (ETag-checked); whoever loses
that race sees the mark and does not call Azure. Every request, refused or not, goes into the
run's audit.

Azure's answers vary (reference §3): any 2xx is an accepted cancel, recorded in the ledger and
the audit before anything else happens. Only a 200/201 saying "Cancelled" is taken as done; a
202, a 204, "Cancel" or an unknown word is "cancel requested", and a confirm task reads the run
later. An answer that never came is ambiguous: the run is read back (applyUpdates GET, then
Resource Graph) before any second PUT. Before T the window alone decides, whatever word the
platform shows; from T on the run is under way and a cancel is refused.
"""

from __future__ import annotations

import logging
from datetime import datetime
from http import HTTPStatus

from shared.domain.cancel_rules import refusal
from shared.domain.errors import AzureCallFailed, CancelRefused
from shared.domain.ids import RunId
from shared.domain.runs import Run
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import CancelWindow
from shared.domain.vocabulary import (
    CancelSource,
    CancelVerdict,
    PlatformStatus,
    is_cancelled,
    is_confirmed_cancel,
)
from shared.services.cancel_records import (
    MAX_ATTEMPTS,
    CancelAnswer,
    CancelContext,
    PendingCancel,
    accept,
    audited,
    clear_mark,
    listed_by_resource_graph,
    mark_requested,
    read_back,
)
from shared.services.conflicts import retry_on_conflict

__all__ = ["CancelAnswer", "CancelContext", "cancel_run"]

log = logging.getLogger(__name__)


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

    def decide() -> CancelAnswer | tuple[Run, PendingCancel, bool]:
        """Refuse (audited), or mark the run "cancel requested" (ETag-checked: a lost race
        reads the run again and decides again)."""
        now = clock.now()
        run = ledger.find_run(run_id)
        # T from the run's events (StartDateTime); the run name only when none was seen.
        start = run.scheduled_start if run else run_id.scheduled_start
        window = CancelWindow.for_run(
            start, run.cancellation_cutoff if run else None, context.safety_margin
        )
        refused = refusal(run, window, now, start)
        if refused is not None or dry_run:
            verdict, why = refused or (
                CancelVerdict.WOULD_CANCEL,
                f"the window is open until {window.closes_at.isoformat()}; a cancel would be sent",
            )
            answer = CancelAnswer(
                verdict,
                why,
                run_id,
                now,
                window,
                run.status.value if run else None,
                run.platform_status if run else None,
            )
            return audited(context, answer, requested_by, reason, dry_run)
        if run is None:
            # No ledger row until Azure says the run exists: a made-up run id leaves nothing
            # behind and never widens the reconciler's queries.
            unknown = _unknown_to_azure(context, run_id, window, now)
            if unknown is not None:
                return audited(context, unknown, requested_by, reason, dry_run)
        earlier_attempt = run is not None and run.cancel_requested_at is not None
        marked = mark_requested(ledger, run_id, run, now)
        return marked, PendingCancel(context, window, requested_by, reason, source), earlier_attempt

    decided = retry_on_conflict(
        decide, what=f"run {run_id.text} while cancelling", attempts=MAX_ATTEMPTS
    )
    if isinstance(decided, CancelAnswer):
        return decided
    marked, request, earlier_attempt = decided
    if earlier_attempt:
        settled = _settle_earlier_attempt(request, marked)
        if settled is not None:
            return settled
    return _send(request, marked)


def _unknown_to_azure(
    context: CancelContext, run_id: RunId, window: CancelWindow, now: datetime
) -> CancelAnswer | None:
    """A refusal when Azure does not know the run (404); None when it does."""
    try:
        context.canceller.get_run(run_id)
    except AzureCallFailed as e:
        if e.status != HTTPStatus.NOT_FOUND:
            if listed_by_resource_graph(context, run_id):
                return None
            raise
        log.error("Cancel refused: Azure does not know run %s: %s", run_id.text, e.message)
        return CancelAnswer(
            CancelVerdict.REFUSED_BY_AZURE,
            f"Azure does not know this run: {e.code}: {e.message}",
            run_id,
            now,
            window,
            service_code=e.code,
            service_message=e.message,
            service_status=e.status,
        )
    return None


def _send(request: PendingCancel, run: Run) -> CancelAnswer:
    context = request.context
    now = context.clock.now()
    try:
        accepted = context.canceller.cancel_run(run.run_id)
    except CancelRefused as e:
        platform, _readable = read_back(context, run.run_id)
        clear_mark(context.ledger, run.run_id, platform)
        log.error("Run %s: Azure refused the cancel: %s: %s", run.run_id.text, e.code, e.message)
        answer = CancelAnswer(
            CancelVerdict.REFUSED_BY_AZURE,
            f"Azure refused the cancel: {e.code}: {e.message}",
            run.run_id,
            now,
            request.window,
            run.status.value,
            platform,
            e.code,
            e.message,
            e.status,
        )
        return audited(context, answer, request.requested_by, request.reason, False)
    except AzureCallFailed as e:
        return _after_lost_answer(request, run, e)
    return accept(
        request,
        run.run_id,
        accepted.status,
        confirmed=accepted.confirmed,
        explanation=f"Azure accepted the cancel ({accepted.http_status}, status "
        f"{accepted.status or 'not given'})",
    )


def _accepted_on_read_back(
    request: PendingCancel, run: Run, platform: PlatformStatus | str | None, explanation: str
) -> CancelAnswer | None:
    """The cancel recorded as accepted when the run read back shows it cancelled, else None."""
    if not is_cancelled(platform):
        return None
    return accept(
        request,
        run.run_id,
        platform,
        confirmed=is_confirmed_cancel(platform),
        explanation=explanation,
    )


def _after_lost_answer(request: PendingCancel, run: Run, error: AzureCallFailed) -> CancelAnswer:
    """No usable answer (no answer, a 5xx, throttled): read the run back before anything."""
    context = request.context
    platform, readable = read_back(context, run.run_id)
    accepted = _accepted_on_read_back(
        request,
        run,
        platform,
        f"Azure's answer to the cancel was lost ({error.status or 'no answer'}); "
        f"read back, the run shows {platform}: the cancel was accepted",
    )
    if accepted is not None:
        return accepted
    if readable:
        # Azure shows the run not cancelled: the request did not land; a later one may.
        clear_mark(context.ledger, run.run_id, platform)
        log.error(
            "Run %s: the cancel failed (%s) and Azure shows the run %s",
            run.run_id.text,
            error,
            platform or "without a status",
        )
        raise error
    # Neither the answer nor the run's state: no second PUT. The mark stays, so a later request
    # reads back first; the confirm task looks again.
    context.queue.send(Task(TaskKind.CONFIRM_CANCEL, run.run_id), context.confirm_after)
    log.error(
        "Run %s: the cancel's answer was lost (%s) and the run cannot be read back",
        run.run_id.text,
        error,
    )
    answer = CancelAnswer(
        CancelVerdict.UNCONFIRMED,
        f"Azure's answer to the cancel was lost ({error.status or 'no answer'}: "
        f"{error.message}) and the run cannot be read back; no second cancel is sent, the app "
        f"reads the run again in {int(context.confirm_after.total_seconds())} s",
        run.run_id,
        context.clock.now(),
        request.window,
        run.status.value,
        run.platform_status,
        error.code,
        error.message,
        error.status,
    )
    return audited(context, answer, request.requested_by, request.reason, False)


def _settle_earlier_attempt(request: PendingCancel, run: Run) -> CancelAnswer | None:
    """An earlier request marked the run and its answer was never recorded (lost, or the
    worker died): read the run back first. None when Azure shows it not cancelled."""
    context = request.context
    platform, readable = read_back(context, run.run_id)
    accepted = _accepted_on_read_back(
        request,
        run,
        platform,
        f"an earlier cancel request reached Azure: the run shows {platform}; "
        "no second cancel was sent",
    )
    if accepted is not None:
        return accepted
    if readable:
        return None
    answer = CancelAnswer(
        CancelVerdict.UNCONFIRMED,
        "an earlier cancel request's answer was lost and the run cannot be read back; no "
        "second cancel is sent until Azure's state is known",
        run.run_id,
        context.clock.now(),
        request.window,
        run.status.value,
        run.platform_status,
    )
    return audited(context, answer, request.requested_by, request.reason, False)
