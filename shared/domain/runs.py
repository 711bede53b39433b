"""What the run ledger records: runs, the events seen, the machines of a run, cancel requests.

Rows carry an opaque `version` (the storage ETag). A row written with a version is only stored if
nobody changed it since it was read, so two instances never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.events import EnvelopeSchema, EventKind, MaintenanceEvent
from shared.domain.ids import RunId
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome, PlatformStatus


class RunStatus(enum.StrEnum):
    """The app's own view of a run (the platform's word is kept apart, in platform_status)."""

    SCHEDULED = "Scheduled"
    PRE_EVENT_RECEIVED = "PreEventReceived"
    PREPARING = "Preparing"
    PREPARED = "Prepared"
    CANCELLED = "Cancelled"
    POST_EVENT_RECEIVED = "PostEventReceived"
    WRAPPING_UP = "WrappingUp"
    COMPLETED = "Completed"

    @property
    def is_wrapping_up_or_done(self) -> bool:
        """True once wrap-up has begun; later events do not move the run back."""
        return self in (RunStatus.WRAPPING_UP, RunStatus.COMPLETED)


class MachineKind(enum.StrEnum):
    """What sort of machine a run holds."""

    VIRTUAL_MACHINE = "VirtualMachine"
    ARC_SERVER = "ArcServer"
    OTHER = "Other"

    @classmethod
    def of(cls, resource_id: str) -> MachineKind:
        """Tell the kind from the ARM resource type in the id."""
        lowered = resource_id.lower()
        if "/providers/microsoft.compute/virtualmachines/" in lowered:
            return cls.VIRTUAL_MACHINE
        if "/providers/microsoft.hybridcompute/machines/" in lowered:
            return cls.ARC_SERVER
        return cls.OTHER


# How the history detail of a call Azure refused outright (a 4xx other than 429) begins.
REFUSED = "refused: "
# The history detail of a failed start found not running at wrap-up: the run no longer owns it.
NOTHING_TO_STOP = "found not running at wrap-up: nothing to stop"


class MachineAction(enum.StrEnum):
    """What the app did, or is doing, to one machine of a run."""

    PLANNED = "Planned"
    LEFT_ALONE = "LeftAlone"
    SHARED_WITH_RUN = "SharedWithRun"
    TOO_LATE_TO_START = "TooLateToStart"
    SKIPPED_OPT_OUT = "SkippedOptOut"
    NOT_STARTABLE = "NotStartable"
    STARTING = "Starting"
    STARTED = "Started"
    START_FAILED = "StartFailed"
    DEALLOCATING = "Deallocating"
    DEALLOCATED = "Deallocated"
    DEALLOCATE_FAILED = "DeallocateFailed"
    ALREADY_STOPPED = "AlreadyStopped"
    HANDED_OVER = "HandedOver"

    @property
    def owned_by_run(self) -> bool:
        """The app started (or is starting) this machine for the run: wrap-up must stop it."""
        return self in (
            MachineAction.STARTING,
            MachineAction.STARTED,
            MachineAction.DEALLOCATING,
            MachineAction.DEALLOCATE_FAILED,
        )


@dataclass(frozen=True)
class Run:
    """One maintenance run, keyed by its configuration and run name."""

    run_id: RunId
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    end: datetime | None = None
    cancellation_cutoff: datetime | None = None
    subscription_ids: tuple[str, ...] = ()
    pre_event_at: datetime | None = None
    post_event_at: datetime | None = None
    post_event_status: str | None = None
    platform_status: PlatformStatus | str | None = None
    gate_outcome: GateOutcome | None = None
    gate_detail: str | None = None
    cancel_source: CancelSource | None = None
    cancel_requested_at: datetime | None = None
    wrap_up_started_at: datetime | None = None
    completed_at: datetime | None = None
    report_location: str | None = None
    pre_event_missed: bool = False
    wrap_up_requested_at: datetime | None = None
    redriven_at: datetime | None = None
    stuck_reported: bool = False
    # T as the platform's events give it (StartDateTime). The run name is not documented to be
    # UTC, so it only stands in for T until an event has been seen.
    start: datetime | None = None
    version: str | None = None

    @property
    def is_active(self) -> bool:
        """Before wrap-up: the run may still need its machines."""
        return self.status in (
            RunStatus.SCHEDULED,
            RunStatus.PRE_EVENT_RECEIVED,
            RunStatus.PREPARING,
            RunStatus.PREPARED,
        )

    @property
    def scheduled_start(self) -> datetime:
        """T: when patching starts (StartDateTime of the events; the run name until one came)."""
        return self.start or self.run_id.scheduled_start

    @classmethod
    def first_seen(cls, run_id: RunId, now: datetime) -> Run:
        """A run the ledger has not stored yet."""
        return cls(run_id=run_id, status=RunStatus.SCHEDULED, created_at=now, updated_at=now)

    def after_event(self, event: MaintenanceEvent, received_at: datetime) -> Run:
        """This run once `event` is taken into account. Order of delivery does not matter."""
        subscriptions = tuple(dict.fromkeys(self.subscription_ids + event.subscription_ids))
        # The pre event's StartDateTime is T; a post event only fills it in when no pre came.
        start = event.start if event.kind is EventKind.PRE or self.start is None else self.start
        changed = dataclasses.replace(
            self,
            end=event.end,
            subscription_ids=subscriptions,
            updated_at=received_at,
            start=start,
        )
        if event.kind is EventKind.PRE:
            status = self.status
            if status is RunStatus.SCHEDULED:
                status = RunStatus.PRE_EVENT_RECEIVED
            return dataclasses.replace(
                changed,
                status=status,
                pre_event_at=self.pre_event_at or received_at,
                cancellation_cutoff=event.cancellation_cutoff or self.cancellation_cutoff,
            )
        status = self.status
        if not status.is_wrapping_up_or_done and status is not RunStatus.CANCELLED:
            status = RunStatus.POST_EVENT_RECEIVED
        return dataclasses.replace(
            changed,
            status=status,
            post_event_at=self.post_event_at or received_at,
            post_event_status=event.status,
        )


@dataclass(frozen=True)
class EventRecord:
    """One event the ledger has seen; (kind, event_id) is unique."""

    run_id: RunId
    kind: EventKind
    event_id: str
    schema: EnvelopeSchema
    received_at: datetime
    event_time: datetime | None
    start: datetime
    end: datetime
    cancellation_cutoff: datetime | None
    subscription_ids: tuple[str, ...]
    status: str | None

    @classmethod
    def of(cls, event: MaintenanceEvent, received_at: datetime) -> EventRecord:
        """The record of `event`, received at `received_at`."""
        return cls(
            run_id=event.run,
            kind=event.kind,
            event_id=event.event_id,
            schema=event.schema,
            received_at=received_at,
            event_time=event.event_time,
            start=event.start,
            end=event.end,
            cancellation_cutoff=event.cancellation_cutoff,
            subscription_ids=event.subscription_ids,
            status=event.status,
        )


@dataclass(frozen=True)
class RefusedEvent:
    """A delivery the app could not use, kept so an operator can see what was turned away.

    `event_id` and `excerpt` are sanitised (printable, bounded): they come from the sender.
    """

    refused_at: datetime
    channel: str
    reason: str
    event_id: str | None
    excerpt: str
    record_id: str = ""


@dataclass(frozen=True)
class MachineRecord:
    """One machine of a run: its power state before the run and what the app did to it."""

    run_id: RunId
    resource_id: str
    kind: MachineKind
    prior_power_state: str | None
    action: MachineAction
    updated_at: datetime
    owner_run: str | None = None
    last_power_state: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    history: tuple[tuple[str, str, str], ...] = ()
    version: str | None = None

    @classmethod
    def planned(cls, run_id: RunId, resource_id: str, at: datetime) -> MachineRecord:
        """A machine of the run as ARG lists it, before the app looks at it."""
        return cls(
            run_id=run_id,
            resource_id=resource_id,
            kind=MachineKind.of(resource_id),
            prior_power_state=None,
            action=MachineAction.PLANNED,
            updated_at=at,
            history=((at.isoformat(), MachineAction.PLANNED.value, "listed by ARG"),),
        )

    @property
    def owned_by_run(self) -> bool:
        """Wrap-up must stop this machine: the app started it, or sent a start for it whose
        answer was a failure (a start Azure reported failed may still have brought it up)."""
        if self.action.owned_by_run:
            return True
        settled = bool(self.history) and self.history[-1][2] == NOTHING_TO_STOP
        return self.action is MachineAction.START_FAILED and self.start_was_sent and not settled

    @property
    def start_was_sent(self) -> bool:
        """A start the app sent for this machine may have taken effect: its latest "Starting"
        intent was neither put back ("Planned": throttled, or the run stopped starting) nor
        refused outright by Azure."""
        sent = False
        for _at, action, detail in self.history:
            if action == MachineAction.STARTING.value:
                sent = True
            elif action == MachineAction.PLANNED.value or (
                action == MachineAction.START_FAILED.value and detail.startswith(REFUSED)
            ):
                sent = False
        return sent

    def moved_to(
        self, action: MachineAction, at: datetime, detail: str = "", **changes: Any
    ) -> MachineRecord:
        """This machine after `action`, with the step added to its history."""
        entry = (at.isoformat(), action.value, detail)
        return dataclasses.replace(
            self, action=action, updated_at=at, history=(*self.history, entry), **changes
        )

    def answered(self, detail: str, at: datetime) -> MachineRecord:
        """This machine once Azure answered the call of its latest step: the step stays one
        entry, its detail says how the call was answered, and `updated_at` dates the answer."""
        if not self.history:
            return dataclasses.replace(self, updated_at=at)
        when, action, _ = self.history[-1]
        return dataclasses.replace(
            self, updated_at=at, history=(*self.history[:-1], (when, action, detail))
        )


# Machine rows saved in one go: all of one run (one table partition), at most as many as the
# Table service's entity-group transaction holds.
MAX_MACHINES_SAVED_TOGETHER = 100


def check_saved_together(machines: Sequence[MachineRecord]) -> None:
    """ValueError unless these rows can be saved in one go: all of one run, each machine once,
    at most MAX_MACHINES_SAVED_TOGETHER."""
    if len(machines) > MAX_MACHINES_SAVED_TOGETHER:
        raise ValueError(
            f"{len(machines)} machine rows in one save; at most {MAX_MACHINES_SAVED_TOGETHER}"
        )
    if len({m.run_id.key for m in machines}) > 1:
        raise ValueError("machine rows of several runs in one save")
    if len({m.resource_id.lower() for m in machines}) < len(machines):
        raise ValueError("one machine twice in one save")


@dataclass(frozen=True)
class WatchRound:
    """The last round a run's watch loop began (verify, gate, finish): a duplicate or stale
    delivery of a round finds it and leaves, so one loop runs. It is a row of its own beside
    the run: taking a round every few seconds neither rewrites the run row (and its index
    rows) nor changes the version the run's other writers hold."""

    run_id: RunId
    mark: str | None = None  # "<step>:<round>:<ISO time>"
    version: str | None = None


@dataclass(frozen=True)
class MachineClaim:
    """Which run owns a VM the app started, and which active runs need it running.

    One per machine, across runs: wrap-up of the owner hands the VM to another run that still
    needs it instead of stopping it.
    """

    resource_id: str
    owner_run: str | None = None
    needed_by: tuple[str, ...] = ()
    version: str | None = None

    def needing(self, run_id: str) -> MachineClaim:
        """The claim with `run_id` among the runs that need the machine."""
        if run_id.lower() in (r.lower() for r in self.needed_by):
            return self
        return dataclasses.replace(self, needed_by=(*self.needed_by, run_id))

    def released_by(self, run_id: str) -> MachineClaim:
        """The claim once `run_id` no longer needs (or owns) the machine."""
        needed = tuple(r for r in self.needed_by if r.lower() != run_id.lower())
        owner = (
            None if self.owner_run and self.owner_run.lower() == run_id.lower() else self.owner_run
        )
        return dataclasses.replace(self, needed_by=needed, owner_run=owner)


class NoteLevel(enum.StrEnum):
    """How much a run note matters."""

    INFO = "Info"
    WARNING = "Warning"
    ERROR = "Error"


@dataclass(frozen=True)
class RunNote:
    """Something that happened in a run worth a line in its report (errors, late events,
    poison messages, the gate's decision)."""

    run_id: RunId
    at: datetime
    level: NoteLevel
    source: str
    message: str


@dataclass(frozen=True)
class CancelRequest:
    """One cancel request and its audit: who asked, why, what the window was, what happened."""

    run_id: RunId
    request_id: str
    requested_at: datetime
    requested_by: str
    reason: str
    dry_run: bool
    outcome: CancelOutcome
    window_opens_at: datetime
    window_closes_at: datetime
    detail: str = ""
    service_code: str | None = None
    service_message: str | None = None
