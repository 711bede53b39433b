"""Use case: take in a maintenance event and record it in the run ledger exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.domain.errors import DuplicateEvent, LedgerConflict
from shared.domain.events import EventKind, MaintenanceEvent
from shared.domain.runs import EventRecord, Run, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import Clock
from shared.services.ports import RunLedger

log = logging.getLogger(__name__)

# Concurrent writers to one run are rare (a pre and a post event, a redelivery); a few re-reads
# settle them.
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class IntakeOutcome:
    """What intake did: the run as stored, and whether this delivery was a duplicate."""

    run: Run | None
    duplicate: bool


def take_in_event(event: MaintenanceEvent, ledger: RunLedger, clock: Clock) -> IntakeOutcome:
    """Record `event` and fold it into its run. A redelivered event changes nothing."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        now = clock.now()
        current = ledger.find_run(event.run)
        updated = (current or Run.first_seen(event.run, now)).after_event(event, now)
        try:
            stored = ledger.record_event(EventRecord.of(event, now), updated)
        except DuplicateEvent:
            log.info("Duplicate %s event for run %s ignored", event.kind.short, event.run.text)
            return IntakeOutcome(run=current, duplicate=True)
        except LedgerConflict:
            log.info(
                "Run %s changed while recording a %s event (attempt %d); re-reading",
                event.run.text,
                event.kind.short,
                attempt,
            )
            continue
        log.info(
            "Recorded %s event for run %s; run status %s",
            event.kind.short,
            event.run.text,
            stored.status.value,
        )
        return IntakeOutcome(run=stored, duplicate=False)
    raise LedgerConflict(f"run {event.run.text} kept changing over {MAX_ATTEMPTS} attempts")


def follow_up(event: MaintenanceEvent, outcome: IntakeOutcome) -> Task | None:
    """The task an event hands to the worker, if its run still waits for it.

    Also sent for a redelivered event while the run has not moved on: if the first delivery
    died between recording and enqueuing, the redelivery makes up for it. The tasks are
    idempotent, so a second copy does no harm.
    """
    run = outcome.run
    if run is None:
        return None
    if event.kind is EventKind.PRE and run.status is RunStatus.PRE_EVENT_RECEIVED:
        return Task(TaskKind.PREPARE, run.run_id)
    if event.kind is EventKind.POST and run.status is RunStatus.POST_EVENT_RECEIVED:
        return Task(TaskKind.WRAP_UP, run.run_id)
    return None
