"""What the app does with one machine at each step of a run, as pure functions of its ledger
row and what Azure says of it. The services (services/orchestration) read, call and write; the
decisions are here.

A row's last history detail tells whether a worker still waits on its call: a call Azure
accepted (`START_ACCEPTED`, `DEALLOCATE_ACCEPTED`) or whose answer was lost (`ANSWER_LOST`) is
over, and only the VM's power state will tell how it ended.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.domain.ids import MachineId
from shared.domain.machines import PowerState
from shared.domain.platform import MachineFacts
from shared.domain.policy import OptOutTag
from shared.domain.runs import NOTHING_TO_STOP, MachineAction, MachineKind, MachineRecord

# A start or deallocate whose answer was lost (a 5xx, a dropped connection, a timeout): the
# call is over, but whether Azure applied it is unknown, so the VM's power state decides.
ANSWER_LOST = "answer lost"
# A start or deallocate Azure accepted (200/202): nothing waits for the VM; verify (starts) and
# finish (deallocations) settle it from bulk power reads.
START_ACCEPTED = "start accepted"
DEALLOCATE_ACCEPTED = "deallocate accepted"
# A VM its subscription's list of VMs does not hold (deleted, or no VM at all).
NOT_LISTED = "not in its subscription's list of VMs"
# Rows verify watches, and rows the gate counts against the failure budget.
WATCHED = (MachineAction.STARTING, MachineAction.STARTED)
GATE_COUNTED = (
    MachineAction.STARTING,
    MachineAction.STARTED,
    MachineAction.START_FAILED,
    MachineAction.PLANNED,
)
UP = (PowerState.RUNNING, PowerState.STARTING)
# A power state read in bulk this recently may decide a stop even when it says "down".
CARRIED_POWER_FRESH = timedelta(seconds=30)
DOWN = (PowerState.DEALLOCATED, PowerState.STOPPED)


def answer_lost(row: MachineRecord) -> bool:
    """The row's last step is a call whose answer was lost (no worker is waiting on it)."""
    return bool(row.history) and row.history[-1][2].startswith(ANSWER_LOST)


def accepted(row: MachineRecord) -> bool:
    """The row's last step is a start or deallocate Azure accepted: only its end is awaited,
    from the VM's power state."""
    return bool(row.history) and row.history[-1][2] in (START_ACCEPTED, DEALLOCATE_ACCEPTED)


def call_over(row: MachineRecord) -> bool:
    """No worker is calling Azure for the row's last step any more."""
    return answer_lost(row) or accepted(row)


def seen_running(row: MachineRecord) -> bool:
    """A start settled: the VM was seen running since the app started it."""
    return row.action is MachineAction.STARTED and row.last_power_state == PowerState.RUNNING


def not_running_yet(row: MachineRecord) -> bool:
    """A watched machine verify is still waiting for (a failed start is not waited for)."""
    return (
        row.last_power_state != PowerState.RUNNING and row.action is not MachineAction.START_FAILED
    )


def orphaned_start(row: MachineRecord, now: datetime, lease: timedelta) -> bool:
    """A start intent whose worker died before its call reached Azure: not accepted, not
    fresh, and the VM still down."""
    return (
        row.action is MachineAction.STARTING
        and not accepted(row)
        and not intent_is_fresh(row, now, lease)
        and row.last_power_state in (PowerState.DEALLOCATED, PowerState.STOPPED)
    )


def intent_is_fresh(row: MachineRecord, now: datetime, lease: timedelta) -> bool:
    """Written so recently that its worker may still be calling Azure: its call is not over,
    and its worker renews it while it waits (throttle retries included), so a lapsed one is a
    dead worker's."""
    return not call_over(row) and now - row.updated_at < lease


def awaiting_power(row: MachineRecord, now: datetime, lease: timedelta) -> bool:
    """Azure accepted the row's call less than a lease ago: the VM may not show it yet."""
    return accepted(row) and now - row.updated_at < lease


class Next(enum.Enum):
    """What the service does after a decision."""

    LEAVE = "leave"  # nothing to record now: the row stays as it is
    RECORD = "record"  # record the decision's action on the row; done
    ALREADY_UP = "already_up"  # running before the app came: the ownership rules decide
    START = "start"  # claim the VM, record the intent, send the start
    RELEASE = "release"  # record the action and give the VM's claim back
    DEALLOCATE = "deallocate"  # record the intent, send the deallocate


@dataclass(frozen=True)
class Decision:
    """A decision for one machine: what comes next and, to record, the action and its words."""

    next: Next
    action: MachineAction | None = None
    detail: str = ""
    changes: Mapping[str, str] = field(default_factory=dict)

    def applied_to(self, row: MachineRecord, now: datetime) -> MachineRecord:
        """The row with this decision's action recorded."""
        if self.action is None:
            return row
        return row.moved_to(self.action, now, self.detail, **self.changes)


LEAVE = Decision(Next.LEAVE)


def start_before_reading(row: MachineRecord, now: datetime, lease: timedelta) -> Decision | None:
    """A start task's decision that needs no read of the VM, or None to read it."""
    if row.action not in (MachineAction.PLANNED, MachineAction.STARTING):
        return LEAVE  # handled by an earlier delivery
    if row.action is MachineAction.STARTING and (accepted(row) or intent_is_fresh(row, now, lease)):
        # Azure accepted the start (verify settles it), or another worker wrote "Starting"
        # moments ago and may be calling Azure right now.
        return LEAVE
    if row.kind is not MachineKind.VIRTUAL_MACHINE:
        return Decision(
            Next.RECORD,
            MachineAction.NOT_STARTABLE,
            "Arc-enabled server: the app does not manage its power",
        )
    return None


def start_after_reading(
    row: MachineRecord,
    facts: MachineFacts,
    run_text: str,
    scheduled_start: datetime,
    now: datetime,
    opt_out: OptOutTag,
) -> Decision:
    """A start task's decision once the VM's power state and tags are read."""
    state = facts.power.state
    word = str(state)
    seen = {"prior_power_state": row.prior_power_state or word, "last_power_state": word}
    if row.start_was_sent and state in UP:
        # A start went out before (a crash, or an answer that was lost): the VM is up because
        # of it, so it is the run's. Never sent again, never "LeftAlone".
        return Decision(
            Next.RECORD,
            MachineAction.STARTED,
            f"found {state} on retry; not started again",
            {"owner_run": run_text, "last_power_state": word},
        )
    if opt_out.matches(facts.tags):
        return Decision(Next.RECORD, MachineAction.SKIPPED_OPT_OUT, "carries the opt-out tag", seen)
    if state in UP:
        return Decision(Next.ALREADY_UP, changes=seen)
    if not (isinstance(state, PowerState) and state.startable):
        return Decision(
            Next.RECORD, MachineAction.LEFT_ALONE, f"power state {state}: not started", seen
        )
    if now >= scheduled_start:
        return Decision(Next.RECORD, MachineAction.TOO_LATE_TO_START, "patching has begun", seen)
    return Decision(Next.START, changes=seen)


def carried_power_decides(
    row: MachineRecord, carried: str | None, read_at: datetime, now: datetime
) -> bool:
    """Whether the power state wrap-up read for a VM (at `read_at`) may decide its stop. Yes
    when the VM was up: deallocating is right whatever happened since (at worst Azure is asked
    to deallocate a VM already down), or when it was read moments ago. No for a row whose
    deallocate is already under way, and for an old read saying the VM was down: what happened
    since decides, so the VM is read again."""
    if carried is None or row.action is MachineAction.DEALLOCATING:
        return False
    return PowerState.of(carried) in UP or now - read_at < CARRIED_POWER_FRESH


def stop_after_reading(
    row: MachineRecord, state: PowerState | str, now: datetime, lease: timedelta
) -> Decision:
    """A stop task's decision for a VM the run owns, once its power state is read (a
    Deallocating row's settlement from that state comes first: see the wrap-up step)."""
    word = str(state)
    if row.action is MachineAction.STARTING and state in DOWN:
        if intent_is_fresh(row, now, lease) or awaiting_power(row, now, lease):
            # Its start call may still be on its way to Azure, or was accepted moments ago.
            return LEAVE
        return Decision(
            Next.RELEASE,
            MachineAction.ALREADY_STOPPED,
            f"found {state}: the app's start never took effect",
            {"last_power_state": word},
        )
    if row.action is MachineAction.START_FAILED and state not in UP:
        # Its start failed and it did not come up: it stays "StartFailed" in the report.
        return Decision(
            Next.RELEASE, MachineAction.START_FAILED, NOTHING_TO_STOP, {"last_power_state": word}
        )
    if row.action is MachineAction.DEALLOCATING and state is PowerState.DEALLOCATING:
        return LEAVE  # the app's deallocate is under way; finish looks again
    if state not in (*UP, PowerState.STOPPED, PowerState.STOPPING):
        return Decision(
            Next.RELEASE,
            MachineAction.ALREADY_STOPPED,
            f"found {state}",
            {"last_power_state": word},
        )
    # "stopped" still bills for compute: deallocate it too.
    return Decision(Next.DEALLOCATE, MachineAction.DEALLOCATING, "deallocate requested")


def machine_of(row: MachineRecord) -> MachineId:
    """The machine a row is about."""
    return MachineId.parse(row.resource_id)
