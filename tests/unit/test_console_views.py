"""What the console counts and marks, and how its timeline scales time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from shared.domain.ids import RunId
from shared.domain.runs import MachineAction, MachineRecord, Run, RunStatus
from shared.entrypoints.console_timeline import MAX_GAP, TimeScale
from shared.services.console_views import attention, machine_counts
from tests.builders import CORRELATION_ID, START

RUN = RunId.parse(CORRELATION_ID)
VM = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-"


def machine(name: str, *steps: MachineAction) -> MachineRecord:
    record = MachineRecord.planned(RUN, VM + name, START - timedelta(minutes=35))
    for step in steps:
        record = record.moved_to(step, START - timedelta(minutes=34))
    return record


def test_a_vm_started_then_stopped_counts_as_started_and_stopped() -> None:
    counts = machine_counts(
        [
            machine("a", MachineAction.STARTING, MachineAction.STARTED, MachineAction.DEALLOCATED),
            machine("b", MachineAction.STARTING, MachineAction.START_FAILED),
            machine("c", MachineAction.LEFT_ALONE),
            machine("d", MachineAction.SKIPPED_OPT_OUT),
            machine("e", MachineAction.NOT_STARTABLE),
        ]
    )
    assert (counts.machines, counts.to_start, counts.started) == (5, 2, 1)
    assert (counts.left_alone, counts.skipped, counts.failed, counts.stopped) == (1, 2, 1, 1)


def test_a_vm_still_owned_after_the_run_ended_needs_attention_but_not_before() -> None:
    run = replace(
        Run.first_seen(RUN, START), status=RunStatus.PREPARED, end=START + timedelta(hours=2)
    )
    owned = [machine("a", MachineAction.STARTING, MachineAction.STARTED)]
    summary = {"correlationId": CORRELATION_ID}
    assert attention(run, summary, owned, 0, (), START) == ()
    later = START + timedelta(hours=3)
    assert attention(run, summary, owned, 0, (), later) == (
        "1 VM(s) the app started may still be running",
    )
    done = replace(run, status=RunStatus.COMPLETED)
    stopped = [machine("a", MachineAction.STARTED, MachineAction.DEALLOCATED)]
    assert attention(done, summary, stopped, 0, (), later) == ()


def test_a_long_quiet_stretch_is_drawn_shortened_and_the_rest_to_scale() -> None:
    moments = [START - timedelta(minutes=10), START, START + timedelta(hours=4)]
    scale = TimeScale(moments, 0.0, 100.0)
    # 10 minutes to scale, then 4 hours drawn as MAX_GAP.
    drawn = 10 + MAX_GAP.total_seconds() / 60
    assert round(scale.x(START), 3) == round(10 / drawn * 100, 3)
    assert round(scale.x(START - timedelta(minutes=5)), 3) == round(5 / drawn * 100, 3)
    assert scale.x(START + timedelta(hours=4)) == 100.0
    assert scale.breaks == [(START, START + timedelta(hours=4))]
    assert scale.x(START - timedelta(hours=1)) == 0.0
