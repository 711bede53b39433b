"""Reads that survive what Azure leaves undocumented: per-machine records without `status`
(wrap-up falls back to the run-level status) and patch results whose `maintenanceRunId` is the
CorrelationId, the run name, a bare timestamp or absent."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shared.domain.ids import MachineId
from shared.domain.machines import PowerState
from shared.domain.platform import (
    PatchMatch,
    PatchResult,
    PlatformRun,
    match_patch_results,
    patch_window,
)
from shared.domain.runs import RunStatus
from shared.services.reporting import NO_PATCH_RESULTS, summary_message
from tests.builders import POST, PRE, START
from tests.unit.test_orchestration import RUN, World, vm

WINDOW = patch_window(START, START + timedelta(hours=4))


def result(
    machine: MachineId,
    run_id: str | None,
    started: datetime | None = START + timedelta(minutes=1),
    last_modified: datetime | None = None,
) -> PatchResult:
    return PatchResult(
        machine=machine,
        status="Succeeded",
        installed=2,
        failed=0,
        reboot_status="NotNeeded",
        window_exceeded=False,
        last_modified=last_modified.isoformat() if last_modified else None,
        maintenance_run_id=run_id,
        started=started.strftime("%Y-%m-%dT%H:%M:%SZ") if started else None,
    )


# Wrap-up without per-machine status -------------------------------------------------------


def test_machines_without_status_take_the_post_events_status_and_wrap_up_waits_for_nothing() -> (
    None
):
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.status[RUN.key] = None
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None and run.completed_at is not None
    assert run.completed_at - START - timedelta(hours=1) < timedelta(minutes=5)
    assert not any("unfinished" in n.message for n in world.ledger.notes)


def test_machines_without_status_wait_while_the_run_record_says_in_progress() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.status[RUN.key] = None
    world.graph.runs = [PlatformRun(RUN, "InProgress", None, None, None)]
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST, Status="")
    world.work(until_minutes_before_start=-65)
    assert world.machines.count("deallocate", web) == 0  # the run itself is not finished
    world.graph.runs = [PlatformRun(RUN, "Succeeded", None, None, None)]
    world.work()
    assert world.machines.count("deallocate", web) == 1
    assert not any("unfinished" in n.message for n in world.ledger.notes)


def test_machines_without_status_and_a_run_without_one_do_not_hold_wrap_up() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.status[RUN.key] = None
    world.graph.runs = [PlatformRun(RUN, None, None, None, None)]
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST, Status="")
    world.work()
    assert world.machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert run.completed_at is not None
    assert run.completed_at - START - timedelta(hours=1) < timedelta(minutes=5)


def test_a_machine_that_says_in_progress_still_holds_wrap_up() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.status[RUN.key] = "InProgress"
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work(until_minutes_before_start=-65)
    assert world.machines.count("deallocate", web) == 0


# Patch results ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_id", "how"),
    [
        (RUN.text.upper(), PatchMatch.RUN_ID),
        (RUN.run_name, PatchMatch.RUN_NAME),
        ("2026-12-01T03:00:00Z", PatchMatch.MACHINE_AND_WINDOW),
        ("9/28/2020 02:00:00 PM +00:00", PatchMatch.MACHINE_AND_WINDOW),
        (None, PatchMatch.MACHINE_AND_WINDOW),
        ("", PatchMatch.MACHINE_AND_WINDOW),
    ],
)
def test_a_patch_result_matches_by_run_id_run_name_or_machine_and_window(
    run_id: str | None, how: PatchMatch
) -> None:
    web = vm("web")
    matched = match_patch_results([result(web, run_id)], RUN, {web.key}, *WINDOW)
    assert [(p.machine, h) for p, h in matched] == [(web, how)]


def test_a_result_naming_another_run_or_outside_the_window_or_machines_is_left_out() -> None:
    web, db = vm("web"), vm("db")
    other = RUN.text.replace(RUN.run_name, "20261208030000")
    results = [
        result(web, other),
        result(web, "20261208030000"),
        result(web, None, started=START + timedelta(days=7)),
        result(db, None),  # not one of the run's machines
    ]
    assert match_patch_results(results, RUN, {web.key}, *WINDOW) == []


def test_a_result_without_a_start_matches_on_its_last_change() -> None:
    web = vm("web")
    late = result(web, None, started=None, last_modified=START + timedelta(hours=2))
    assert [h for _, h in match_patch_results([late], RUN, {web.key}, *WINDOW)] == [
        PatchMatch.MACHINE_AND_WINDOW
    ]


def test_one_result_per_machine_and_a_named_one_wins() -> None:
    web = vm("web")
    by_time = result(web, None, last_modified=START + timedelta(hours=3))
    by_name = result(web, RUN.run_name, last_modified=START + timedelta(hours=1))
    [(chosen, how)] = match_patch_results([by_time, by_name], RUN, {web.key}, *WINDOW)
    assert (chosen, how) == (by_name, PatchMatch.RUN_NAME)


def test_the_patch_window_runs_from_before_t_to_after_the_end_or_six_hours() -> None:
    assert patch_window(START, None) == (START - timedelta(minutes=15), START + timedelta(hours=7))


def test_the_report_says_how_results_matched_and_when_none_did() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.graph.patch_results = [result(web, "2026-12-01T03:00:00Z")]
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    report = world.reports.get_report(RUN)
    assert report is not None
    assert report["patchResults"] == {
        "lookedUp": True,
        "matched": 1,
        "matchedBy": {"MachineAndWindow": 1},
        "note": None,
    }
    assert report["machines"][0]["patch"]["matchedBy"] == "MachineAndWindow"
    assert report["machines"][0]["patch"]["maintenanceRunId"] == "2026-12-01T03:00:00Z"


def test_no_matching_patch_result_is_said_in_the_report_and_the_message() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.graph.patch_results = []
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    report = world.reports.get_report(RUN)
    assert report is not None
    assert report["patchResults"]["matched"] == 0
    assert report["patchResults"]["note"] == NO_PATCH_RESULTS
    assert report["machines"][0]["patch"] is None
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert NO_PATCH_RESULTS in summary_message(run, report)["text"]


def test_an_unfinished_runs_live_report_does_not_claim_no_results() -> None:
    from shared.services.reporting import build_report

    world = World()
    world.deliver(PRE)
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert build_report(run, [], world.ledger)["patchResults"] == {"lookedUp": False}
