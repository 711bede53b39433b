"""Each machine's decision as a pure function (the steps around them: test_orchestration.py)."""

from datetime import timedelta

from shared.domain.ids import MachineId, RunId
from shared.domain.machine_steps import (
    START_ACCEPTED,
    Next,
    carried_power_decides,
    start_after_reading,
    start_before_reading,
    stop_after_reading,
)
from shared.domain.machines import MachinePower, PowerState
from shared.domain.platform import MachineFacts
from shared.domain.policy import OptOutTag
from shared.domain.runs import MachineAction, MachineRecord
from tests.builders import CORRELATION_ID, START

RUN = RunId.parse(CORRELATION_ID)
GROUP = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers"
VM = f"{GROUP}/Microsoft.Compute/virtualMachines/vm1"
ARC = f"{GROUP}/Microsoft.HybridCompute/machines/arc1"
NOW = START - timedelta(minutes=35)
LEASE = timedelta(seconds=90)
OPT_OUT = OptOutTag("UpdateAutomation", "skip")


def planned(resource_id: str = VM) -> MachineRecord:
    return MachineRecord.planned(RUN, resource_id, NOW - timedelta(minutes=1))


def facts(state: PowerState, tags: dict[str, str] | None = None) -> MachineFacts:
    power = MachinePower(state=state, startable=state.startable)
    return MachineFacts(machine=MachineId.parse(VM), power=power, tags=tags or {})


def after_reading(row: MachineRecord, state: PowerState, **tags: str) -> tuple[Next, object]:
    decision = start_after_reading(row, facts(state, tags), RUN.text, START, NOW, OPT_OUT)
    return decision.next, decision.action


def test_a_planned_vm_is_read_and_an_arc_server_is_never_started() -> None:
    assert start_before_reading(planned(), NOW, LEASE) is None
    arc = start_before_reading(planned(ARC), NOW, LEASE)
    assert arc is not None and arc.next is Next.RECORD
    assert arc.action is MachineAction.NOT_STARTABLE


def test_a_start_in_flight_or_accepted_is_left_to_its_worker_and_to_verify() -> None:
    starting = planned().moved_to(MachineAction.STARTING, NOW - timedelta(seconds=5), "start")
    fresh = start_before_reading(starting, NOW, LEASE)
    assert fresh is not None and fresh.next is Next.LEAVE
    stale = start_before_reading(starting, NOW + LEASE, LEASE)
    assert stale is None  # a dead worker's intent: read again, it may need the start
    accepted = starting.answered(START_ACCEPTED, NOW - timedelta(minutes=30))
    left = start_before_reading(accepted, NOW, LEASE)
    assert left is not None and left.next is Next.LEAVE


def test_the_power_state_decides_what_happens_to_a_vm() -> None:
    assert after_reading(planned(), PowerState.DEALLOCATED) == (Next.START, None)
    assert after_reading(planned(), PowerState.STOPPED) == (Next.START, None)
    assert after_reading(planned(), PowerState.RUNNING) == (Next.ALREADY_UP, None)
    assert after_reading(planned(), PowerState.STOPPING) == (Next.RECORD, MachineAction.LEFT_ALONE)
    opted_out = after_reading(planned(), PowerState.DEALLOCATED, UpdateAutomation="Skip")
    assert opted_out == (Next.RECORD, MachineAction.SKIPPED_OPT_OUT)


def test_a_vm_up_after_the_apps_own_start_is_owned_never_left_alone() -> None:
    sent = planned().moved_to(MachineAction.STARTING, NOW - timedelta(minutes=5), "start")
    decision = start_after_reading(sent, facts(PowerState.RUNNING), RUN.text, START, NOW, OPT_OUT)
    assert decision.next is Next.RECORD
    assert decision.action is MachineAction.STARTED
    assert decision.changes["owner_run"] == RUN.text


def test_no_start_once_patching_began() -> None:
    decision = start_after_reading(
        planned(), facts(PowerState.DEALLOCATED), RUN.text, START, START, OPT_OUT
    )
    assert decision.action is MachineAction.TOO_LATE_TO_START


def test_stop_decisions_deallocate_running_and_stopped_vms_only() -> None:
    started = planned().moved_to(MachineAction.STARTED, NOW, "seen running")
    later = NOW + timedelta(hours=2)
    assert stop_after_reading(started, PowerState.RUNNING, later, LEASE).next is Next.DEALLOCATE
    assert stop_after_reading(started, PowerState.STOPPED, later, LEASE).next is Next.DEALLOCATE
    gone = stop_after_reading(started, PowerState.DEALLOCATED, later, LEASE)
    assert (gone.next, gone.action) == (Next.RELEASE, MachineAction.ALREADY_STOPPED)


def test_a_start_that_never_took_effect_is_released_once_its_worker_is_gone() -> None:
    starting = planned().moved_to(MachineAction.STARTING, NOW, "start")
    soon = NOW + timedelta(seconds=10)
    assert stop_after_reading(starting, PowerState.DEALLOCATED, soon, LEASE).next is Next.LEAVE
    later = stop_after_reading(starting, PowerState.DEALLOCATED, NOW + LEASE, LEASE)
    assert (later.next, later.action) == (Next.RELEASE, MachineAction.ALREADY_STOPPED)


def test_a_failed_start_that_stayed_down_has_nothing_to_stop() -> None:
    failed = planned().moved_to(MachineAction.START_FAILED, NOW, "start failed")
    decision = stop_after_reading(failed, PowerState.DEALLOCATED, NOW, LEASE)
    assert (decision.next, decision.action) == (Next.RELEASE, MachineAction.START_FAILED)
    up = stop_after_reading(failed, PowerState.RUNNING, NOW, LEASE)
    assert up.next is Next.DEALLOCATE


def test_a_carried_up_state_decides_a_stop_however_old_it_is() -> None:
    started = planned().moved_to(MachineAction.STARTED, NOW, "seen running")
    long_ago = NOW - timedelta(minutes=10)
    assert carried_power_decides(started, "running", long_ago, NOW)
    assert carried_power_decides(started, "Starting", long_ago, NOW)


def test_a_carried_down_state_decides_only_while_fresh() -> None:
    started = planned().moved_to(MachineAction.STARTED, NOW, "seen running")
    assert carried_power_decides(started, "deallocated", NOW - timedelta(seconds=10), NOW)
    assert not carried_power_decides(started, "deallocated", NOW - timedelta(seconds=31), NOW)
    assert not carried_power_decides(started, "stopped", NOW - timedelta(minutes=2), NOW)


def test_no_carried_state_decides_for_an_unread_vm_or_a_deallocation_under_way() -> None:
    started = planned().moved_to(MachineAction.STARTED, NOW, "seen running")
    deallocating = started.moved_to(MachineAction.DEALLOCATING, NOW, "deallocate requested")
    assert not carried_power_decides(started, None, NOW, NOW)
    assert not carried_power_decides(deallocating, "running", NOW, NOW)
