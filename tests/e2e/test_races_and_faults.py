"""End to end, under races and faults: every VM the app started is stopped again, no VM that was
running before is touched, no action is taken twice, and the report says what happened.

The local host, the fake Azure (write throttle on, so starts queue up and overlap with cancels
and wrap-up) and Azurite. Every assertion comes from the fake's request log and final power
states, or from the run report the operator API serves.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
import requests

from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import MaintenanceRun
from sandbox.local_host import LocalHost
from sandbox.stack import (
    POST,
    PRE,
    HostProcess,
    Stack,
    app_environment,
    clear_app_queues,
    running_stack,
)
from tests.fake_azure import SUBSCRIPTION, small_scenario, vm_id

STOPPED = [vm_id(SUBSCRIPTION, "rg-fleet", f"fleet-{i:02d}") for i in range(24)]
RUNNING = [vm_id(SUBSCRIPTION, "rg-fleet", f"always-{i:02d}") for i in range(4)]
FLEET = [*STOPPED, *RUNNING]


def fleet_scenario() -> dict[str, Any]:
    scenario = small_scenario()
    scenario["runs"] = []
    # Starts take a couple of seconds, so a cancel or wrap-up meets VMs still "starting".
    scenario["settings"]["power_transition_seconds"] = 1.5
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
        fleet_scenario(), storage_connection_string=azurite_connection_string, notify_webhook=True
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
    # The app's own starts compete with the cancel for the subscription's write tokens; an
    # operator whose cancel still comes back throttled asks again.
    for _ in range(3):
        answer = stack.cancel(run.correlation_id, "cancelled mid fan-out")
        if answer.status_code != 502:
            break
    assert answer.status_code in (200, 202), answer.text
    stack.settle(timeout=180)
    assert_promise_kept(stack, stack.run_report(run))


def test_starts_whose_answers_are_lost_after_arm_accepted_them_stay_the_runs(
    stack: Stack,
) -> None:
    # Four answers replaced by a 502, four connections closed without an answer.
    gateway = stack.fake.faults.lose_answer("compute.start", "502", times=4)
    dropped = stack.fake.faults.lose_answer("compute.start", "drop", times=4)
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=180)
    assert (gateway.fired, dropped.fired) == (4, 4)
    assert {r.status for r in stack.fake.requests_matching("POST", "/start$") if r.answer_lost} == {
        0,
        502,
    }
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
    # The faults did fire (which statuses is up to the seeded draw and the threads' order).
    fired = [r for r in stack.fake.requests if r.endpoint.startswith("compute.")]
    assert any(r.status in (429, 500, 502, 503) for r in fired), len(fired)
    assert_promise_kept(stack, stack.run_report(run))
    assert len(applied(stack, "start")) == len(STOPPED)


@pytest.fixture
def killable(azurite_connection_string: str) -> Iterator[Stack]:
    """The stack with the local host in its own process, which a test may SIGKILL. Messages a
    killed host had fetched stay invisible for its whole lease (functionTimeout, 10 minutes,
    as the Functions host's fetch lease): only the app's own leases bring the work back."""
    fake = FakeAzure.start(fleet_scenario())
    fake.faults.set_write_throttle(capacity=4, refill_per_second=4)
    clear_app_queues(azurite_connection_string)
    env = app_environment(
        fake,
        azurite_connection_string,
        "ledger" + uuid.uuid4().hex[:12],
        {"TASK_LEASE_SECONDS": str(TEST_LEASE_SECONDS)},
    )
    host = HostProcess(env)
    session = requests.Session()
    session.trust_env = False
    try:
        host.start()
        yield Stack(
            fake=fake,
            # It answers every call Stack makes of a host (url, keys, webhook_url, wait_idle).
            host=cast(LocalHost, host),
            storage_connection_string=azurite_connection_string,
            ledger_table=env["LEDGER_TABLE_NAME"],
            session=session,
        )
    finally:
        host.stop()
        session.close()
        fake.stop()
        # The killed host's messages would stay leased for minutes and hold up the next
        # tests sharing this Azurite: clear them (Clear Messages takes leased ones too).
        clear_app_queues(azurite_connection_string)


TEST_LEASE_SECONDS = 6


def kill_and_restart(stack: Stack) -> float:
    host = cast(HostProcess, stack.host)
    host.kill()
    killed_at = time.monotonic()
    host.start()
    return killed_at


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


@pytest.mark.alone
def test_a_host_killed_mid_start_resumes_within_a_lease_and_starts_nothing_twice(
    killable: Stack,
) -> None:
    stack = killable
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    wait_for_starts(stack, len(STOPPED) // 3)
    killed_at = kill_and_restart(stack)
    wait_until(lambda: all(power(stack, m) == "running" for m in STOPPED), timeout=90)
    # Well inside the 10-minute message lease: the fan-out came back on the app's lease.
    assert time.monotonic() - killed_at < 10 * TEST_LEASE_SECONDS
    # The dead host's messages stay in the queue for minutes: wait for the run, not the queue.
    wait_until(lambda: stack.run_report(run)["gate"]["outcome"] == "Passed", timeout=60)
    machines = machines_by_name(stack.run_report(run))
    assert {machines[m.rsplit("/", 1)[-1]]["action"] for m in STOPPED} == {"Started"}
    assert max(applied(stack, "start").values()) == 1
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    wait_until(lambda: stack.run_report(run)["run"]["status"] == "Completed", timeout=120)
    assert_promise_kept(stack, stack.run_report(run))


@pytest.mark.alone
def test_a_host_killed_mid_stop_still_deallocates_everything_once_and_says_so(
    killable: Stack,
) -> None:
    stack = killable
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=120)
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    wait_until(lambda: sum(applied(stack, "deallocate").values()) >= len(STOPPED) // 3, 60)
    killed_at = kill_and_restart(stack)
    wait_until(lambda: all(power(stack, m) == "deallocated" for m in STOPPED), timeout=90)
    assert time.monotonic() - killed_at < 10 * TEST_LEASE_SECONDS
    wait_until(lambda: stack.run_report(run)["run"]["status"] == "Completed", timeout=120)
    # Each VM the app deallocated reads "Deallocated", crash or not.
    assert_promise_kept(stack, stack.run_report(run))


def test_a_vm_that_cannot_be_deallocated_ends_the_run_with_an_error_naming_it(
    stack: Stack,
) -> None:
    stuck = STOPPED[3]
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=120)
    stack.fake.faults.fail_lro(stuck.rsplit("/", 1)[-1], "deallocate", code="OperationNotAllowed")
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run)
    stack.settle(timeout=180)
    report = stack.run_report(run)  # GET /api/runs/{configuration}/{run}
    assert report["run"]["status"] == "Completed"
    assert power(stack, stuck) == "running"
    errors = [n for n in report["notes"] if n["source"] == "wrap-up" and n["level"] == "Error"]
    assert len(errors) == 1
    assert stuck in errors[0]["message"]
    assert machines_by_name(report)[stuck.rsplit("/", 1)[-1]]["action"] == "DeallocateFailed"
    # ... and in the notification the webhook received.
    [notification] = [r.body for r in stack.fake.requests_matching("POST", "webhook")]
    assert stuck in notification["text"]
    assert [power(stack, m) for m in STOPPED if m != stuck] == ["deallocated"] * 23
