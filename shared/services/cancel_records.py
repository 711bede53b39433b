"""What a cancel reads and writes: its context and answer, the run read back, and the ledger
rows (the run's marks, its audit, its notes) a cancel request leaves behind. The decisions are
in services/cancellation (sending) and services/cancel_confirmation (reading back later)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import RunId
from shared.domain.platform import PlatformRun
from shared.domain.runs import CancelRequest, NoteLevel, Run, RunNote, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import CancelWindow, Clock
from shared.domain.vocabulary import (
    CancelOutcome,
    CancelSource,
    CancelVerdict,
    PlatformStatus,
    is_cancelled,
)
from shared.services.conflicts import retry_on_conflict
from shared.services.ports import RunCanceller, RunLedger, RunMachinesSource, TaskQueue

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


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


@dataclass(frozen=True)
class PendingCancel:
    """One cancel request on its way: who asked, why, and the window it was judged by."""

    context: CancelContext
    window: CancelWindow
    requested_by: str
    reason: str
    source: CancelSource


def accept(
    request: PendingCancel,
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
    stored = mark_cancelled(
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
    audited(context, answer, request.requested_by, request.reason, False)
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


def read_back(context: CancelContext, run_id: RunId) -> tuple[str | None, bool]:
    """The run's platform status, and whether that status can be trusted: the applyUpdates
    GET; when it fails, Resource Graph, whose record lags (only its "cancelled" is trusted)."""
    try:
        return context.canceller.get_run(run_id).status, True
    except AzureCallFailed as e:
        log.warning("Run %s: status unreadable through Maintenance: %s", run_id.text, e)
    record = resource_graph_record(context, run_id)
    if record is None:
        return None, False
    return record.status, is_cancelled(record.status)


def resource_graph_record(context: CancelContext, run_id: RunId) -> PlatformRun | None:
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


def listed_by_resource_graph(context: CancelContext, run_id: RunId) -> bool:
    return resource_graph_record(context, run_id) is not None


def last_unconfirmed(ledger: RunLedger, run_id: RunId) -> CancelRequest | None:
    found = None
    for request in ledger.list_cancel_requests(run_id):
        if request.outcome is CancelOutcome.UNCONFIRMED:
            found = request
    return found


def window_of(run: Run, context: CancelContext) -> CancelWindow:
    return CancelWindow.for_run(run.scheduled_start, run.cancellation_cutoff, context.safety_margin)


def mark_requested(ledger: RunLedger, run_id: RunId, run: Run | None, now: datetime) -> Run:
    base = run or Run.first_seen(run_id, now)
    return ledger.save_run(replace(base, cancel_requested_at=now, updated_at=now))


def mark_cancelled(
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


def clear_mark(ledger: RunLedger, run_id: RunId, platform: PlatformStatus | str | None) -> None:
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


def save_platform_status(
    ledger: RunLedger, run_id: RunId, platform: PlatformStatus | str | None
) -> None:
    def save() -> None:
        run = ledger.find_run(run_id)
        if run is not None:
            status = PlatformStatus.of(platform) or run.platform_status
            ledger.save_run(replace(run, platform_status=status))

    retry_on_conflict(save, what=f"run {run_id.text}", attempts=MAX_ATTEMPTS)


def audited(
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


def add_note(context: CancelContext, run_id: RunId, level: NoteLevel, message: str) -> RunNote:
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
