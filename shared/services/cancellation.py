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
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from http import HTTPStatus

from shared.domain.errors import AzureCallFailed, CancelRefused, LedgerConflict
from shared.domain.ids import RunId
from shared.domain.platform import PlatformRun
from shared.domain.runs import (
    CancelRequest,
    NoteLevel,
    Run,
    RunNote,
    RunStatus,
)
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import CancelWindow, Clock, WindowPosition
from shared.domain.vocabulary import (
    CancelOutcome,
    CancelSource,
    CancelVerdict,
    PlatformStatus,
    is_cancelled,
    is_confirmed_cancel,
)
from shared.services.conflicts import retry_on_conflict
from shared.services.ports import RunCanceller, RunLedger, RunMachinesSource, TaskQueue

log = logging.getLogger(__name__)

# A mark older than this is from a request that died before it reached Azure: try again.
STALE_REQUEST = timedelta(minutes=2)
MAX_ATTEMPTS = 5
# The confirm task reads an accepted cancel back this many times before it says it is unsure.
CONFIRM_ROUNDS = 10


@dataclass(frozen=True)
class CancelContext:
    """The ports and rules a cancel needs."""

    ledger: RunLedger
    canceller: RunCanceller
    queue: TaskQueue
    clock: Clock
    safety_margin: timedelta
    # Resource Graph: where a run is read back when the applyUpdates GET fails.
    graph: RunMachinesSource | None = None
    # How long after an accepted cancel the confirm task reads the run.
    confirm_after: timedelta = timedelta(seconds=30)


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
        refusal = _refusal(run_id, run, window, now, start)
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
                run.platform_status if run else None,
            )
            return _audited(context, answer, requested_by, reason, dry_run)
        if run is None:
            # No ledger row until Azure says the run exists: a made-up run id leaves nothing
            # behind and never widens the reconciler's queries.
            unknown = _unknown_to_azure(context, run_id, window, now)
            if unknown is not None:
                return _audited(context, unknown, requested_by, reason, dry_run)
        earlier_attempt = run is not None and run.cancel_requested_at is not None
        try:
            marked = _mark_requested(ledger, run_id, run, now)
        except LedgerConflict:
            continue  # someone else changed the run: look again
        request = _Request(context, window, requested_by, reason, source)
        if earlier_attempt:
            settled = _settle_earlier_attempt(request, marked)
            if settled is not None:
                return settled
        return _send(request, marked)
    raise LedgerConflict(f"run {run_id.text} kept changing while cancelling")


@dataclass(frozen=True)
class _Request:
    """One cancel request on its way: who asked, why, and the window it was judged by."""

    context: CancelContext
    window: CancelWindow
    requested_by: str
    reason: str
    source: CancelSource


def _refusal(
    run_id: RunId, run: Run | None, window: CancelWindow, now: datetime, start: datetime
) -> CancelAnswer | None:
    status = run.status.value if run else None
    platform = run.platform_status if run else None
    if run is not None and (
        run.status is RunStatus.CANCELLED
        or run.cancel_source is not None  # cancelled, and wrap-up may have moved it on since
        or is_cancelled(platform)
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
    if run is not None and run.status in (
        RunStatus.POST_EVENT_RECEIVED,
        RunStatus.WRAPPING_UP,
        RunStatus.COMPLETED,
    ):
        return CancelAnswer(
            CancelVerdict.NOT_CANCELLABLE,
            f"the run is {status}: only a run that has not started can be cancelled",
            run_id,
            now,
            window,
            status,
            platform,
        )
    if now >= start:
        # Before T no platform word decides (the status between T-40 and T is undocumented);
        # from T on the run is under way.
        return CancelAnswer(
            CancelVerdict.NOT_CANCELLABLE,
            f"the run is under way: patching started at {start.isoformat()} (T); the cancel "
            f"window closed at {window.closes_at.isoformat()}"
            + (f"; Azure shows it {platform}" if platform else ""),
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


def _unknown_to_azure(
    context: CancelContext, run_id: RunId, window: CancelWindow, now: datetime
) -> CancelAnswer | None:
    """A refusal when Azure does not know the run (404); None when it does."""
    try:
        context.canceller.get_run(run_id)
    except AzureCallFailed as e:
        if e.status != HTTPStatus.NOT_FOUND:
            if _listed_by_resource_graph(context, run_id):
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


def _mark_requested(ledger: RunLedger, run_id: RunId, run: Run | None, now: datetime) -> Run:
    base = run or Run.first_seen(run_id, now)
    return ledger.save_run(replace(base, cancel_requested_at=now, updated_at=now))


def _send(request: _Request, run: Run) -> CancelAnswer:
    context = request.context
    now = context.clock.now()
    try:
        accepted = context.canceller.cancel_run(run.run_id)
    except CancelRefused as e:
        platform, _readable = _read_back(context, run.run_id)
        _clear_mark(context.ledger, run.run_id, platform)
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
        return _audited(context, answer, request.requested_by, request.reason, False)
    except AzureCallFailed as e:
        return _after_lost_answer(request, run, e)
    return _accept(
        request,
        run.run_id,
        accepted.status,
        confirmed=accepted.confirmed,
        explanation=f"Azure accepted the cancel ({accepted.http_status}, status "
        f"{accepted.status or 'not given'})",
    )


def _accepted_on_read_back(
    request: _Request, run: Run, platform: PlatformStatus | str | None, explanation: str
) -> CancelAnswer | None:
    """The cancel recorded as accepted when the run read back shows it cancelled, else None."""
    if not is_cancelled(platform):
        return None
    return _accept(
        request,
        run.run_id,
        platform,
        confirmed=is_confirmed_cancel(platform),
        explanation=explanation,
    )


def _after_lost_answer(request: _Request, run: Run, error: AzureCallFailed) -> CancelAnswer:
    """No usable answer (no answer, a 5xx, throttled): read the run back before anything."""
    context = request.context
    platform, readable = _read_back(context, run.run_id)
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
        _clear_mark(context.ledger, run.run_id, platform)
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
    return _audited(context, answer, request.requested_by, request.reason, False)


def _settle_earlier_attempt(request: _Request, run: Run) -> CancelAnswer | None:
    """An earlier request marked the run and its answer was never recorded (lost, or the
    worker died): read the run back first. None when Azure shows it not cancelled."""
    context = request.context
    platform, readable = _read_back(context, run.run_id)
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
    return _audited(context, answer, request.requested_by, request.reason, False)


def _accept(
    request: _Request,
    run_id: RunId,
    platform: PlatformStatus | str | None,
    *,
    confirmed: bool,
    explanation: str,
) -> CancelAnswer:
    """Record an accepted cancel in the ledger and the audit, then (only then) queue the
    wrap-up and, when Azure only said it accepted, the confirm task."""
    context = request.context
    now = context.clock.now()
    stored = _mark_cancelled(
        context.ledger, run_id, request.source, PlatformStatus.of(platform), now
    )
    answer = CancelAnswer(
        CancelVerdict.CANCELLED if confirmed else CancelVerdict.CANCEL_REQUESTED,
        explanation,
        run_id,
        now,
        request.window,
        stored.status.value,
        platform,
    )
    _audited(context, answer, request.requested_by, request.reason, False)
    log.warning(
        "Run %s cancelled by %s (%s): %s; %s",
        run_id.text,
        request.requested_by,
        request.source,
        request.reason,
        explanation,
    )
    context.queue.send(Task(TaskKind.WRAP_UP, run_id))
    if not confirmed:
        context.queue.send(Task(TaskKind.CONFIRM_CANCEL, run_id), context.confirm_after)
    return answer


def confirm_cancel(task: Task, context: CancelContext) -> list[RunNote]:
    """Read back a run whose cancel Azure only accepted, or whose answer was lost, and record
    what Azure finally says (the run's platform status and a note). Returns the notes added."""
    ledger, run_id = context.ledger, task.run_id
    run = ledger.find_run(run_id)
    if run is None:
        return []
    # Accepted: the ledger says cancelled (wrap-up may have moved the run on since).
    accepted = run.status is RunStatus.CANCELLED or run.cancel_source is not None
    if accepted and is_confirmed_cancel(run.platform_status):
        return []  # already confirmed (the reconciler read it first)
    if not accepted and run.cancel_requested_at is None:
        return []  # a later request settled it
    platform, readable = _read_back(context, run_id)
    if is_confirmed_cancel(platform):
        if accepted:
            _save_platform_status(ledger, run_id, PlatformStatus.of(platform))
            return [
                _add_note(context, run_id, NoteLevel.INFO, f"Azure confirms the cancel: {platform}")
            ]
        audit = _last_unconfirmed(ledger, run_id)
        requested_by = audit.requested_by if audit else "app:confirm"
        _accept(
            _Request(
                context,
                _window_of(run, context),
                requested_by,
                audit.reason if audit else "(cancel whose answer was lost)",
                CancelSource.GATE if requested_by == "app:gate" else CancelSource.USER,
            ),
            run_id,
            platform,
            confirmed=True,
            explanation=f"the cancel's answer was lost; read back later, the run shows {platform}",
        )
        return []
    if readable and not accepted:
        # The cancel whose answer was lost did not land.
        _clear_mark(ledger, run_id, platform)
        return [
            _add_note(
                context,
                run_id,
                NoteLevel.ERROR,
                "the cancel's answer was lost and Azure shows the run "
                f"{platform or 'without a status'}: it was not cancelled",
            )
        ]
    if task.round + 1 < CONFIRM_ROUNDS:
        context.queue.send(task.next_round(), context.confirm_after)
        return []
    seen = platform if readable else "nothing (the run cannot be read)"
    return [
        _add_note(
            context,
            run_id,
            NoteLevel.ERROR,
            f"Azure accepted the cancel but still shows {seen} after {CONFIRM_ROUNDS} reads"
            if accepted
            else f"the cancel's answer was lost and Azure's state is still unknown ({seen})",
        )
    ]


def _read_back(context: CancelContext, run_id: RunId) -> tuple[str | None, bool]:
    """The run's platform status, and whether that status can be trusted: the applyUpdates
    GET; when it fails, Resource Graph, whose record lags (only its "cancelled" is trusted)."""
    try:
        return context.canceller.get_run(run_id).status, True
    except AzureCallFailed as e:
        log.warning("Run %s: status unreadable through Maintenance: %s", run_id.text, e)
    record = _resource_graph_record(context, run_id)
    if record is None:
        return None, False
    return record.status, is_cancelled(record.status)


def _resource_graph_record(context: CancelContext, run_id: RunId) -> PlatformRun | None:
    if context.graph is None:
        return None
    configuration = run_id.configuration
    try:
        for record in context.graph.list_runs([configuration], [configuration.subscription_id]):
            if record.run_id == run_id:
                return record
    except AzureCallFailed as e:
        log.warning("Run %s: status unreadable through Resource Graph: %s", run_id.text, e)
    return None


def _listed_by_resource_graph(context: CancelContext, run_id: RunId) -> bool:
    return _resource_graph_record(context, run_id) is not None


def _last_unconfirmed(ledger: RunLedger, run_id: RunId) -> CancelRequest | None:
    found = None
    for request in ledger.list_cancel_requests(run_id):
        if request.outcome is CancelOutcome.UNCONFIRMED:
            found = request
    return found


def _window_of(run: Run, context: CancelContext) -> CancelWindow:
    return CancelWindow.for_run(run.scheduled_start, run.cancellation_cutoff, context.safety_margin)


def _save_platform_status(
    ledger: RunLedger, run_id: RunId, platform: PlatformStatus | str | None
) -> None:
    def save() -> None:
        run = ledger.find_run(run_id)
        if run is not None:
            status = PlatformStatus.of(platform) or run.platform_status
            ledger.save_run(replace(run, platform_status=status))

    retry_on_conflict(save, what=f"run {run_id.text}", attempts=MAX_ATTEMPTS)


def _add_note(context: CancelContext, run_id: RunId, level: NoteLevel, message: str) -> RunNote:
    log.log(
        logging.ERROR if level is NoteLevel.ERROR else logging.INFO,
        "Run %s [cancel]: %s",
        run_id.text,
        message,
    )
    note = RunNote(
        run_id=run_id, at=context.clock.now(), level=level, source="cancel", message=message
    )
    context.ledger.add_note(note)
    return note


def _mark_cancelled(
    ledger: RunLedger,
    run_id: RunId,
    source: CancelSource,
    platform: PlatformStatus | str | None,
    now: datetime,
) -> Run:
    def mark() -> Run:
        run = ledger.find_run(run_id) or Run.first_seen(run_id, now)
        return ledger.save_run(
            replace(
                run,
                status=RunStatus.CANCELLED,
                cancel_source=source,
                wrap_up_requested_at=now,
                platform_status=PlatformStatus.of(platform) or run.platform_status,
                updated_at=now,
            )
        )

    return retry_on_conflict(
        mark, what=f"run {run_id.text} after its cancel", attempts=MAX_ATTEMPTS
    )


def _clear_mark(ledger: RunLedger, run_id: RunId, platform: PlatformStatus | str | None) -> None:
    def clear() -> None:
        run = ledger.find_run(run_id)
        if run is None:
            return
        ledger.save_run(
            replace(
                run,
                cancel_requested_at=None,
                platform_status=PlatformStatus.of(platform) or run.platform_status,
                status=RunStatus.CANCELLED if is_cancelled(platform) else run.status,
            )
        )

    retry_on_conflict(clear, what=f"run {run_id.text}", attempts=MAX_ATTEMPTS)


def _audited(
    context: CancelContext, answer: CancelAnswer, requested_by: str, reason: str, dry_run: bool
) -> CancelAnswer:
    context.ledger.add_cancel_request(
        CancelRequest(
            run_id=answer.run_id,
            request_id=uuid.uuid4().hex,
            requested_at=answer.now,
            requested_by=requested_by,
            reason=reason,
            dry_run=dry_run,
            outcome=answer.verdict.audit_outcome,
            window_opens_at=answer.window.opens_at,
            window_closes_at=answer.window.closes_at,
            detail=answer.explanation,
            service_code=answer.service_code,
            service_message=answer.service_message,
        )
    )
    return answer
