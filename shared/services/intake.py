"""Use case: take in a maintenance event and record it in the run ledger exactly once, or
refuse it loudly (ERROR line, a refused-event record, the webhook) when it cannot be used."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.domain.errors import AzureCallFailed, DuplicateEvent, LedgerConflict
from shared.domain.events import EventKind, MaintenanceEvent
from shared.domain.ids import ConfigurationId, RunId, describe_for_log
from shared.domain.runs import EventRecord, NoteLevel, RefusedEvent, Run, RunNote, RunStatus
from shared.domain.tasks import MAX_TASK_DELAY, Task, TaskKind
from shared.domain.timeline import Clock, preparation_due
from shared.domain.vocabulary import PlatformStatus, is_cancelled, is_finished
from shared.services.conflicts import retry_on_conflict
from shared.services.ports import Notifier, RunLedger, RunMachinesSource

log = logging.getLogger(__name__)

# Concurrent writers to one run are rare (a pre and a post event, a redelivery); a few re-reads
# settle them.
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class IntakeOutcome:
    """What intake did: the run as stored, and whether this delivery was a duplicate."""

    run: Run | None
    duplicate: bool
    # A post event before its run's start, kept as a note: it does not move the run.
    held: bool = False


def take_in_event(
    event: MaintenanceEvent,
    ledger: RunLedger,
    clock: Clock,
    graph: RunMachinesSource | None = None,
) -> IntakeOutcome:
    """Record `event` and fold it into its run. A redelivered event changes nothing.

    A post event before its run's start is recorded as a note and held, unless the ledger or
    Resource Graph (`graph`, asked only then) shows the run cancelled or ended (see
    `is_early_post_event`); a pre event before T−40 is recorded and noted, and its preparation
    waits for T−40 (`preparation_delay`).
    """
    seen_status = None
    if graph is not None and event.kind is EventKind.POST and clock.now() < event.start:
        seen_status = _platform_status(graph, event.run)

    def record() -> IntakeOutcome:
        """Fold the event into the freshest copy of its run (a lost race raises LedgerConflict
        and is tried again on a fresh read)."""
        now = clock.now()
        current = ledger.find_run(event.run)
        if is_early_post_event(event, current, now, seen_status):
            held = _hold_early_post_event(event, current, ledger, now)
            if held is None:
                raise LedgerConflict(f"run {event.run.text} was created meanwhile")
            return IntakeOutcome(run=held, duplicate=False, held=True)
        updated = (current or Run.first_seen(event.run, now)).after_event(event, now)
        if seen_status is not None:
            updated = replace(updated, platform_status=seen_status)
        try:
            stored = ledger.record_event(EventRecord.of(event, now), updated)
        except DuplicateEvent:
            log.info("Duplicate %s event for run %s ignored", event.kind.short, event.run.text)
            return IntakeOutcome(run=current, duplicate=True)
        log.info(
            "Recorded %s event for run %s; run status %s",
            event.kind.short,
            event.run.text,
            stored.status.value,
        )
        _note_oddities(event, ledger, now)
        due = preparation_due(stored.scheduled_start)
        if event.kind is EventKind.PRE and now < due:
            _note(
                ledger,
                event,
                now,
                NoteLevel.INFO,
                f"pre event received at {now.isoformat()}, before T-40; the run's preparation "
                f"is scheduled for {due.isoformat()} and nothing is asked of Azure until then",
            )
        return IntakeOutcome(run=stored, duplicate=False)

    return retry_on_conflict(record, what=f"run {event.run.text}", attempts=MAX_ATTEMPTS)


def is_early_post_event(
    event: MaintenanceEvent, run: Run | None, now: datetime, seen_status: str | None = None
) -> bool:
    """A post event before its run's scheduled start, for a run that is neither cancelled nor
    seen ended in Resource Graph (`seen_status` now, or the ledger's last reading): no real run
    has ended yet, so it must not end this one (its wrap-up would then ignore the real pre
    event)."""
    # T is the event's StartDateTime: the run name is not documented to be UTC.
    if event.kind is not EventKind.POST or now >= event.start:
        return False
    if run is not None and not run.is_active:
        return False  # cancelled, or wrap-up already under way: nothing left to protect
    for status in (seen_status, None if run is None else run.platform_status):
        if is_cancelled(status) or is_finished(status):
            return False
    return True


def _platform_status(graph: RunMachinesSource, run_id: RunId) -> PlatformStatus | str | None:
    """The run's status in Resource Graph (normalised), or None if it has no record or the
    query failed (the run is then held, and the reconcile timer looks again)."""
    configuration = run_id.configuration
    try:
        for record in graph.list_runs([configuration], [configuration.subscription_id]):
            if record.run_id == run_id:
                return PlatformStatus.of(record.status)
    except AzureCallFailed as e:
        log.warning(
            "Run %s: Resource Graph could not be read for an early post event: %s", run_id.text, e
        )
    return None


def _hold_early_post_event(
    event: MaintenanceEvent, current: Run | None, ledger: RunLedger, now: datetime
) -> Run | None:
    """Keep the early post event as a note on its run (created if new); None on a write race."""
    run = current
    if run is None:
        try:
            run = ledger.save_run(Run.first_seen(event.run, now))
        except LedgerConflict:
            return None
    named = f"post event {describe_for_log(event.event_id)} "
    if any(
        n.source == "intake" and n.message.startswith(named) for n in ledger.list_notes(run.run_id)
    ):
        # Event Grid delivers again until answered: one note per held event is enough.
        log.info("Run %s: early %sdelivered again; still held", event.run.text, named)
        return run
    message = (
        f"{named}(status {describe_for_log(event.status)})"
        f" received at {now.isoformat()}, before the run's start "
        f"{event.start.isoformat()}: recorded and held; the run is wrapped up "
        "after a post event that comes after its start, or once Resource Graph shows it ended"
    )
    log.warning("Run %s: %s", event.run.text, message)
    _note(ledger, event, now, NoteLevel.WARNING, message)
    return run


def preparation_delay(task: Task, now: datetime, start: datetime) -> timedelta:
    """How long to hold a task before it is worth running: a prepare task waits for T−40 of its
    run starting at `start` (in one hop of at most MAX_TASK_DELAY); everything else goes at
    once."""
    if task.kind is not TaskKind.PREPARE:
        return timedelta(0)
    wait = preparation_due(start) - now
    return max(timedelta(0), min(wait, MAX_TASK_DELAY))


def _note(
    ledger: RunLedger, event: MaintenanceEvent, now: datetime, level: NoteLevel, message: str
) -> None:
    note = RunNote(run_id=event.run, at=now, level=level, source="intake", message=message)
    ledger.add_note(note)


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


def _note_oddities(event: MaintenanceEvent, ledger: RunLedger, now: datetime) -> None:
    """What the event held that Azure's documents do not promise: a line in the run's notes
    (and so its report), so an operator sees what the app tolerated."""
    for oddity in event.oddities:
        log.warning("Run %s: %s event: %s", event.run.text, event.kind.short, oddity)
        ledger.add_note(
            RunNote(event.run, now, NoteLevel.WARNING, f"{event.kind.short} event", oddity)
        )


def unmanaged_reason(
    event: MaintenanceEvent, managed: Collection[ConfigurationId] | None
) -> str | None:
    """Why the app must not act on `event`'s configuration, or None when it may.

    With TARGET_CONFIGURATION_IDS set, only those configurations are ours.
    """
    if managed is None or event.configuration in managed:
        return None
    return (
        f"maintenance configuration {event.configuration.text} is not one the app manages "
        "(TARGET_CONFIGURATION_IDS)"
    )


# What of a refused payload is kept: enough to recognise it, never the whole body.
MAX_EXCERPT = 1000
MAX_REFUSED_ID = 512  # as long as an event id may be (events.MAX_EVENT_ID_LENGTH)


def sanitised(text: str, limit: int) -> str:
    """Untrusted text made printable (escapes for the rest) and cut to `limit` characters."""
    printable = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[: limit * 2])
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."


def refuse_event(
    *,
    channel: str,
    reason: str,
    event_id: str | None,
    payload: str,
    ledger: RunLedger,
    clock: Clock,
    notifier: Notifier | None,
) -> RefusedEvent:
    """Refuse a delivery loudly: an ERROR line, a record the operator can list, the webhook.

    Never raises for the event itself (Event Grid would only retry it); a storage failure does
    raise, so the delivery comes again and the refusal is not lost.
    """
    safe_id = None if event_id is None else sanitised(event_id, MAX_REFUSED_ID)
    log.error(
        "Refused maintenance event %s from %s: %s",
        safe_id if safe_id is not None else "(no id)",
        channel,
        sanitised(reason, 500),
    )
    stored = ledger.add_refused_event(
        RefusedEvent(
            refused_at=clock.now(),
            channel=channel,
            reason=sanitised(reason, 2000),
            event_id=safe_id,
            excerpt=sanitised(payload, MAX_EXCERPT),
        )
    )
    if notifier is not None:
        try:
            notifier.send(refusal_message(stored))
        except Exception as e:  # the record is kept; a webhook outage must not retry the event
            log.error(
                "Could not notify about refused event %s: %s (record %s is kept)",
                safe_id if safe_id is not None else "(no id)",
                type(e).__name__,
                stored.record_id,
            )
    return stored


def refusal_message(refusal: RefusedEvent) -> dict[str, object]:
    """The webhook message for a refused event."""
    return {
        "text": (
            f"Refused a maintenance event from {refusal.channel}: {refusal.reason} "
            f"(event id {refusal.event_id or '(none)'}). GET /api/events/refused lists them."
        ),
        "refusedEvent": refusal_document(refusal),
    }


def refusal_document(refusal: RefusedEvent) -> dict[str, object]:
    """A refused event as the HTTP API and the webhook show it."""
    return {
        "id": refusal.record_id,
        "refusedAt": refusal.refused_at.isoformat(),
        "channel": refusal.channel,
        "reason": refusal.reason,
        "eventId": refusal.event_id,
        "excerpt": refusal.excerpt,
    }
