"""Use case: the reconcile tick. Reads run records from Resource Graph, brings the ledger up to
date, and is the safety net for what events cannot be trusted with.

Each tick:
- reads the run-level records of the configurations this app manages (those in the ledger and
  TARGET_CONFIGURATION_IDS) in one query (paged); other configurations in the target
  subscriptions are never read, so other teams' runs never enter the ledger;
- records each run's platform status (normalised; unknown words kept) and where a cancel came
  from (this app's API or gate, a user elsewhere, or a platform failure);
- hands every finished or cancelled run that still owns VMs, and has had no wrap-up, to wrap-up
  (a lost post event);
- records runs whose pre event never came once their cancel window has closed ("pre event
  missed"; a status word such as InProgress seen before T does not decide it);
- re-drives a task stuck past its deadline once, then reports it.

Ticks that overlap (past_due, two instances) are kept apart by a lease in the ledger; every
action is idempotent besides.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from shared.domain.errors import LedgerConflict
from shared.domain.events import InvalidEvent, parse_time
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.platform import PlatformRun
from shared.domain.policy import OrchestrationPolicy
from shared.domain.runs import NoteLevel, Run, RunNote, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.domain.timeline import CancelWindow, Clock, WindowPosition, preparation_due
from shared.domain.vocabulary import CancelSource, PlatformStatus, is_cancelled, is_finished
from shared.services.ports import RunLedger, RunMachinesSource, TaskQueue

log = logging.getLogger(__name__)

LEASE = "reconcile"
LEASE_DURATION = timedelta(minutes=4)
# Runs older than this are history: the reconciler does not add them to the ledger.
LOOKBACK = timedelta(days=2)
# Runs kept in the ledger (RUN_RETENTION_DAYS), and how many older ones one tick removes.
DEFAULT_RETENTION = timedelta(days=90)
RETENTION_BATCH = 50
# A task that has not moved its run for this long after its deadline is re-driven.
STUCK_AFTER = timedelta(minutes=10)


@dataclass
class TickSummary:
    """What a tick did (logged, and returned to tests)."""

    skipped: bool = False
    platform_runs: int = 0
    updated: list[str] = field(default_factory=list)
    handed_to_wrap_up: list[str] = field(default_factory=list)
    missed_pre_events: list[str] = field(default_factory=list)
    redriven: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class Reconciler:
    """The reconcile timer's use case."""

    ledger: RunLedger
    graph: RunMachinesSource
    queue: TaskQueue
    clock: Clock
    policy: OrchestrationPolicy
    target_configurations: tuple[ConfigurationId, ...] = ()
    retention: timedelta = DEFAULT_RETENTION

    def tick(self, past_due: bool = False) -> TickSummary:
        """One reconcile pass; skipped when another tick holds the lease."""
        now = self.clock.now()
        holder = uuid.uuid4().hex  # one per tick: two ticks of one instance also exclude
        if not self.ledger.acquire_lease(LEASE, holder, now, LEASE_DURATION):
            log.info("Reconcile skipped: another tick is running")
            return TickSummary(skipped=True)
        if past_due:
            log.info("Reconcile tick is past due; running it now")
        summary = TickSummary()
        try:
            # Open runs and known configurations come from the ledger's index: the tick costs
            # O(runs under way), not O(history).
            self.ledger.ensure_indexed()
            known = {run.run_id.key: run for run in self.ledger.list_open_runs()}
            platform = self._platform_runs(known.values())
            summary.platform_runs = len(platform)
            for record in platform:
                stored = known.get(record.run_id.key) or self.ledger.find_run(record.run_id)
                run = self._record(stored, record, now, summary)
                if run is not None:
                    known[run.run_id.key] = run
            for key in list(known):
                self._hand_over(known[key], now, summary)
            for run in self.ledger.list_open_runs():
                self._redrive(run, now, summary)
            summary.removed = [
                r.text
                for r in self.ledger.remove_runs_before(now - self.retention, RETENTION_BATCH)
            ]
        finally:
            self.ledger.release_lease(LEASE, holder)
        log.info(
            "Reconcile: %d platform runs, %d updated, %d to wrap-up, %d pre events missed,"
            " %d re-driven, %d stuck, %d removed (retention)",
            summary.platform_runs,
            len(summary.updated),
            len(summary.handed_to_wrap_up),
            len(summary.missed_pre_events),
            len(summary.redriven),
            len(summary.stuck),
            len(summary.removed),
        )
        return summary

    def _platform_runs(self, known: Iterable[Run]) -> list[PlatformRun]:
        """Run records of the configurations this app manages (the ledger's and
        TARGET_CONFIGURATION_IDS), never of every configuration in the target subscriptions:
        those say where machines may be, not which runs are ours."""
        configurations = self._managed_configurations(known)
        if not configurations:
            return []
        subscriptions = sorted({c.subscription_id for c in configurations.values()})
        listed = self.graph.list_runs(list(configurations.values()), subscriptions)
        # Kept to our configurations even if a query answers wider than it was asked.
        return [r for r in listed if r.run_id.configuration.key in configurations]

    def _managed_configurations(self, known: Iterable[Run]) -> dict[str, ConfigurationId]:
        configurations = {c.key: c for c in self.target_configurations}
        # Every configuration the ledger has a run of (from its index), not only the open runs'.
        for configuration in self.ledger.list_known_configurations():
            configurations.setdefault(configuration.key, configuration)
        for run in known:
            configurations.setdefault(run.run_id.configuration.key, run.run_id.configuration)
        return configurations

    def _record(
        self, run: Run | None, record: PlatformRun, now: datetime, summary: TickSummary
    ) -> Run | None:
        status = PlatformStatus.of(record.status)
        if run is None:
            # T as the platform's record gives it; the run name is not documented to be UTC.
            start = _platform_start(record)
            if (start or record.run_id.scheduled_start) < now - LOOKBACK:
                return None
            run = replace(Run.first_seen(record.run_id, now), start=start)
        changed = replace(run, platform_status=status or run.platform_status)
        if is_cancelled(status) and run.cancel_source is None:
            changed = replace(changed, cancel_source=CancelSource.of_message(record.message))
        missed = (
            run.pre_event_at is None
            and not run.pre_event_missed
            and not is_cancelled(status)
            and run.status is not RunStatus.CANCELLED
            and self._window_closed(run, now)
        )
        if missed:
            changed = replace(changed, pre_event_missed=True)
        if changed == run and run.version is not None:
            return run
        try:
            stored = self.ledger.save_run(replace(changed, updated_at=now))
        except LedgerConflict:
            return None  # an event or task wrote first; the next tick looks again
        summary.updated.append(run.run_id.text)
        if missed:
            # Noted only once the flag is stored: a tick that lost the race says nothing.
            summary.missed_pre_events.append(run.run_id.text)
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                f"no pre event was received and the cancel window closed at "
                f"{self._window(run).closes_at.isoformat()}; the platform shows the run "
                f"{status or 'without a status'}",
            )
        return stored

    def _window(self, run: Run) -> CancelWindow:
        return CancelWindow.for_run(
            run.scheduled_start, run.cancellation_cutoff, self.policy.cancel_safety_margin
        )

    def _window_closed(self, run: Run, now: datetime) -> bool:
        """A pre event counts as missed only once the cancel window has closed without it: a
        platform word such as InProgress before T says nothing (it may show from T−40)."""
        return self._window(run).position(now) is WindowPosition.CLOSED

    def _hand_over(self, run: Run, now: datetime, summary: TickSummary) -> None:
        """A finished or cancelled run whose post event never came: start its wrap-up."""
        status = run.platform_status
        if (
            run.status
            in (RunStatus.POST_EVENT_RECEIVED, RunStatus.WRAPPING_UP, RunStatus.COMPLETED)
            or run.wrap_up_requested_at is not None
        ):
            return  # under way already; _redrive catches it if it stalls
        cancelled = is_cancelled(status) or run.status is RunStatus.CANCELLED
        if not cancelled and not is_finished(status):
            return
        owns_machines = any(m.owned_by_run for m in self.ledger.list_machines(run.run_id))
        if not owns_machines and not cancelled and run.pre_event_at is None:
            return  # nothing of ours in it: leave the record as it is
        try:
            self.ledger.save_run(replace(run, wrap_up_requested_at=now, updated_at=now))
        except LedgerConflict:
            return
        reason = "cancelled" if cancelled else f"finished ({status})"
        self._note(
            run.run_id,
            NoteLevel.WARNING,
            f"run {reason} and no post event from after its start reached the app; wrap-up "
            "started by the reconciler",
        )
        self.queue.send(Task(TaskKind.WRAP_UP, run.run_id))
        summary.handed_to_wrap_up.append(run.run_id.text)

    def _redrive(self, run: Run, now: datetime, summary: TickSummary) -> None:
        task = self._stuck_task(run, now)
        if task is None:
            return
        if run.redriven_at is None:
            try:
                self.ledger.save_run(replace(run, redriven_at=now, updated_at=now))
            except LedgerConflict:
                return
            self.queue.send(task)
            summary.redriven.append(run.run_id.text)
            self._note(
                run.run_id,
                NoteLevel.WARNING,
                f"run stuck in {run.status.value}; {task.kind.value} re-driven once",
            )
            return
        if not run.stuck_reported and now - run.redriven_at > STUCK_AFTER:
            try:
                self.ledger.save_run(replace(run, stuck_reported=True, updated_at=now))
            except LedgerConflict:
                return
            summary.stuck.append(run.run_id.text)
            self._note(
                run.run_id,
                NoteLevel.ERROR,
                f"run still stuck in {run.status.value} after a re-drive; look at the "
                "poison queue and the function logs",
            )

    def _stuck_task(self, run: Run, now: datetime) -> Task | None:
        start = run.scheduled_start
        # A pre event far ahead waits for T−40 on purpose: not stuck before then.
        waiting_since = max(run.updated_at, preparation_due(start))
        if run.status is RunStatus.PRE_EVENT_RECEIVED and now - waiting_since > STUCK_AFTER:
            return Task(TaskKind.PREPARE, run.run_id)
        if run.status is RunStatus.PREPARING and now > start:
            return Task(TaskKind.GATE, run.run_id)
        if run.status is RunStatus.POST_EVENT_RECEIVED and now - run.updated_at > STUCK_AFTER:
            return Task(TaskKind.WRAP_UP, run.run_id)
        requested = run.wrap_up_requested_at
        if (
            run.status in (RunStatus.PREPARED, RunStatus.CANCELLED, RunStatus.SCHEDULED)
            and requested is not None
            and now - requested > STUCK_AFTER
        ):
            return Task(TaskKind.WRAP_UP, run.run_id)
        wrap_started = run.wrap_up_started_at
        if (
            run.status is RunStatus.WRAPPING_UP
            and wrap_started is not None
            and now - wrap_started
            > self.policy.wrap_up_wait + self.policy.health_wait + STUCK_AFTER
        ):
            return Task(TaskKind.FINISH, run.run_id)
        return None

    def _note(self, run_id: RunId, level: NoteLevel, message: str) -> None:
        log.warning("Run %s [reconcile]: %s", run_id.text, message)
        self.ledger.add_note(
            RunNote(
                run_id=run_id, at=self.clock.now(), level=level, source="reconcile", message=message
            )
        )


def _platform_start(record: PlatformRun) -> datetime | None:
    """The run record's startDateTime, when it holds a readable time."""
    if not record.start:
        return None
    try:
        return parse_time(record.start, "properties.startDateTime")
    except InvalidEvent:
        log.warning("Run %s: unreadable startDateTime in Resource Graph", record.run_id.text)
        return None
