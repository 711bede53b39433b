"""Use case: read back a run whose cancel Azure only accepted (202, "Cancel"), or whose answer
was lost, and record what Azure finally says."""

from __future__ import annotations

from shared.domain.runs import NoteLevel, RunNote, RunStatus
from shared.domain.tasks import Task
from shared.domain.vocabulary import CancelSource, PlatformStatus, is_confirmed_cancel
from shared.services.cancel_records import (
    CancelContext,
    PendingCancel,
    accept,
    add_note,
    clear_mark,
    last_unconfirmed,
    read_back,
    save_platform_status,
    window_of,
)

# The confirm task reads an accepted cancel back this many times before it says it is unsure.
CONFIRM_ROUNDS = 10


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
    platform, readable = read_back(context, run_id)
    if is_confirmed_cancel(platform):
        if accepted:
            save_platform_status(ledger, run_id, PlatformStatus.of(platform))
            return [
                add_note(context, run_id, NoteLevel.INFO, f"Azure confirms the cancel: {platform}")
            ]
        audit = last_unconfirmed(ledger, run_id)
        requested_by = audit.requested_by if audit else "app:confirm"
        accept(
            PendingCancel(
                context,
                window_of(run, context),
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
        clear_mark(ledger, run_id, platform)
        return [
            add_note(
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
        add_note(
            context,
            run_id,
            NoteLevel.ERROR,
            f"Azure accepted the cancel but still shows {seen} after {CONFIRM_ROUNDS} reads"
            if accepted
            else f"the cancel's answer was lost and Azure's state is still unknown ({seen})",
        )
    ]
