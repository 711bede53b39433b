"""End to end, under races and faults: every VM the app started is stopped again, no VM that was
running before is touched, no action is taken twice, and the report says what happened.

The local host, the fake Azure (write throttle on, so starts queue up and overlap with cancels
and wrap-up) and Azurite. Every assertion comes from the fake's request log and final power
states, or from the run report the operator API serves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import POST, PRE, Stack, running_stack
from tests.fake_azure import SUBSCRIPTION, small_scenario, vm_id

STOPPED = [vm_id(SUBSCRIPTION, "rg-fleet", f"fleet-{i:02d}") for i in range(24)]
RUNNING = [vm_id(SUBSCRIPTION, "rg-fleet", f"always-{i:02d}") for i in range(4)]
FLEET = [*STOPPED, *RUNNING]


def fleet_scenario() -> dict[str, Any]:
    scenario = small_scenario()
    scenario["runs"] = []
    # Starts take a couple of seconds, so a cancel or wrap-up meets VMs still "starting".
    scenario["settings"]["power_transition_seconds"] = 2
    scenario["settings"]["lro_retry_after_seconds"] = 1
    for machine in FLEET:
        scenario["vms"].append(
            {
                "subscription": SUBSCRIPTION,
                "resource_group": "rg-fleet",
                "name": machine.rsplit("/", 1)[-1],
                "power_state": "deallocated" if machine in STOPPED else "running",
                "tags": {"patch-group": "weekly"},
            }
        )
    return scenario


@pytest.fixture
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(
        fleet_scenario(), storage_connection_string=azurite_connection_string
    ) as running:
        # ARM's write bucket, small: the fan-out queues on it and the races are real.
        running.fake.faults.set_write_throttle(capacity=4, refill_per_second=4)
        yield running


def deliver_ok(stack: Stack, kind: str, run: MaintenanceRun) -> None:
    answer = stack.deliver(kind, run)
    assert answer.status_code == 200, answer.text


def applied(stack: Stack, verb: str) -> Counter[str]:
    """Per VM name, how many `verb` calls Azure acted on (answered 202, or applied and the
    answer lost); throttled and refused calls did nothing."""
    counts: Counter[str] = Counter()
    for request in stack.fake.requests_matching("POST", rf"/{verb}$"):
        if request.status == 202 or request.answer_lost:
            counts[request.path.rsplit("/", 2)[-2]] += 1
    return counts


def power(stack: Stack, machine: str) -> str:
    return str(stack.fake.model.power_state(machine))


def machines_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["resourceId"].rsplit("/", 1)[-1]: m for m in report["machines"]}


def wait_for_starts(stack: Stack, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(applied(stack, "start").values()) < count:
        assert time.monotonic() < deadline, "the fan-out did not get that far"
        time.sleep(0.05)


def assert_promise_kept(stack: Stack, report: dict[str, Any]) -> None:
    """0 VMs the app started left running, 0 VMs that ran before touched, 0 double actions,
    and the report's words match what Azure did."""
    starts, deallocations = applied(stack, "start"), applied(stack, "deallocate")
    started = set(starts)
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * len(STOPPED)
    assert [power(stack, m) for m in RUNNING] == ["running"] * len(RUNNING)
    assert not stack.fake.requests_matching("POST", r"/always-\d+/(start|deallocate|powerOff)$")
    assert max(starts.values(), default=0) <= 1, starts
    assert max(deallocations.values(), default=0) <= 1, deallocations
    assert set(deallocations) == started
    assert report["run"]["status"] == "Completed"
    machines = machines_by_name(report)
    for name, machine in machines.items():
        if name in started:
            assert machine["action"] == "Deallocated", machine
        elif name.startswith("always-"):
            assert machine["action"] == "LeftAlone", machine
        else:
            assert machine["action"] not in ("Deallocated", "Started", "Starting"), machine
    assert not [n for n in report["notes"] if n["source"] == "wrap-up" and n["level"] == "Error"]


@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_a_cancel_during_the_start_fan_out_leaves_no_started_vm_running(
    stack: Stack, share: float
) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    wait_for_starts(stack, int(len(STOPPED) * share))
    answer = stack.cancel(run.correlation_id, "cancelled mid fan-out")
    assert answer.status_code in (200, 202), answer.text
    stack.settle(timeout=180)
    report = stack.run_report(run)
    assert_promise_kept(stack, report)
    # The cancel stopped the fan-out: not every stopped VM was started.
    assert len(applied(stack, "start")) < len(STOPPED)


@pytest.mark.parametrize("mode", ["502", "drop"])
def test_a_start_whose_answer_is_lost_after_arm_accepted_it_stays_the_runs(
    stack: Stack, mode: str
) -> None:
    lost = stack.fake.faults.lose_answer("compute.start", mode, times=8)
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=180)
    assert lost.fired == 8
    assert [power(stack, m) for m in STOPPED] == ["running"] * len(STOPPED)
    machines = machines_by_name(stack.run_report(run))
    lost_names = {
        r.path.rsplit("/", 2)[-2]
        for r in stack.fake.requests_matching("POST", r"/start$")
        if r.answer_lost
    }
    assert len(lost_names) == 8
    # The retry found them running: started by the app, not "LeftAlone", never started twice.
    assert {machines[n]["action"] for n in lost_names} == {"Started"}
    assert max(applied(stack, "start").values()) == 1
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    stack.settle(timeout=180)
    assert_promise_kept(stack, stack.run_report(run))


def test_an_unreadable_operation_status_is_settled_by_the_power_state(stack: Stack) -> None:
    # Every operation poll answers 503 (quickly retried, then given up by the SDK): the app
    # never learns how its starts and deallocations ended, only what the VMs' states are.
    stack.fake.faults.add_error("compute.operation", 503, retry_after=0.05)
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=180)
    report = stack.run_report(run)
    machines = machines_by_name(report)
    assert {machines[m.rsplit("/", 1)[-1]]["action"] for m in STOPPED} == {"Started"}
    assert report["gate"]["outcome"] == "Passed"
    assert not [n for n in report["notes"] if "failed" in n["message"]]
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    stack.settle(timeout=180)
    assert_promise_kept(stack, stack.run_report(run))


def test_a_fifth_of_compute_calls_throttled_or_failing_still_keeps_the_promise(
    stack: Stack,
) -> None:
    faults = stack.fake.faults
    faults.reseed(11)
    for status in (429, 500, 502, 503):
        faults.add_error("compute.*", status, probability=0.05, retry_after=0.2)
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=240)
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    stack.settle(timeout=240)
    assert stack.fake.requests_matching("POST", "", status=502)  # the faults did fire
    assert_promise_kept(stack, stack.run_report(run))
    assert len(applied(stack, "start")) == len(STOPPED)
