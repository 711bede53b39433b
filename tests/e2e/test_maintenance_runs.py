"""End to end: the local host serving function_app, the fake Azure and Azurite, driven over HTTP
as Event Grid and an operator drive the deployed app. Each test is one real scenario."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import POST, PRE, Stack, running_stack
from shared import bootstrap
from shared.config import Settings
from shared.domain.runs import MachineAction, MachineRecord
from tests.fake_azure import OTHER_SUBSCRIPTION, SUBSCRIPTION, small_scenario, vm_id

WEB = vm_id(SUBSCRIPTION, "rg-web", "web-01")  # running 24/7
BATCH_1 = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")  # deallocated
BATCH_2 = vm_id(SUBSCRIPTION, "rg-batch", "batch-02")  # stopped
DEV = vm_id(OTHER_SUBSCRIPTION, "rg-dev", "dev-01")  # deallocated, other subscription
ARC = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-onprem/providers/"
    "Microsoft.HybridCompute/machines/onprem-01"
)
STOPPED = [BATCH_1, BATCH_2, DEV]
FLEET = [WEB, *STOPPED, ARC]


def e2e_scenario() -> dict[str, Any]:
    scenario = small_scenario()
    scenario["runs"] = []
    # Azure asks pollers to come back after a second or more; so does the fake here.
    scenario["settings"]["lro_retry_after_seconds"] = 1
    return scenario


@pytest.fixture
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(e2e_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


def power(stack: Stack, machine: str) -> str:
    return str(stack.fake.model.power_state(machine))


def calls(stack: Stack, verb: str, machine: str) -> int:
    name = machine.rsplit("/", 1)[-1]
    return len(stack.fake.requests_matching("POST", rf"/{name}/{verb}$"))


def deliver_ok(stack: Stack, kind: str, run: MaintenanceRun, **data: Any) -> None:
    answer = stack.deliver(kind, run, **data)
    assert answer.status_code == 200, answer.text


def finish_in_azure(stack: Stack, run: MaintenanceRun) -> None:
    """The platform patches and ends the run (patch results appear in ARG)."""
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)


def machines_by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["resourceId"].lower(): m for m in report["machines"]}


def test_pre_event_starts_stopped_vms_leaves_running_ones_and_a_cancel_is_accepted(
    stack: Stack,
) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    assert power(stack, WEB) == "running"
    assert calls(stack, "start", WEB) == 0
    assert [calls(stack, "start", m) for m in STOPPED] == [1, 1, 1]
    report = stack.run_report(run)
    machines = machines_by_id(report)
    assert machines[WEB.lower()]["action"] == "LeftAlone"
    assert machines[ARC.lower()]["action"] == "NotStartable"
    assert machines[BATCH_2.lower()]["powerStateBefore"] == "stopped"
    assert report["gate"]["outcome"] == "Passed"
    # The window (T−40 … T−11) is open: the operator's cancel is accepted.
    answer = stack.cancel(run.correlation_id, "a bad patch was published")
    assert answer.status_code == 200, answer.text
    # The fake answers as the REST spec's example: 202 "Cancel", accepted, not yet done.
    assert answer.json()["outcome"] == "CancelRequested"
    assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
    stack.settle()
    # Read back later, Azure's final word is recorded.
    assert stack.run_report(run)["run"]["platformStatus"] == "Cancelled"
    # A cancelled run is wrapped up: what the app started is stopped again.
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    assert power(stack, WEB) == "running"


def test_post_event_deallocates_only_the_vms_the_app_started(stack: Stack) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    finish_in_azure(stack, run)
    deliver_ok(stack, POST, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["deallocated"] * 3
    assert power(stack, WEB) == "running"
    assert calls(stack, "deallocate", WEB) == 0
    assert [calls(stack, "deallocate", m) for m in STOPPED] == [1, 1, 1]
    report = stack.run_report(run)
    assert report["run"]["status"] == "Completed"
    machines = machines_by_id(report)
    batch = machines[BATCH_1.lower()]
    assert (batch["powerStateBefore"], batch["powerStateAfter"]) == ("deallocated", "deallocated")
    assert [a["action"] for a in batch["actions"]] == [
        "Planned",
        "Starting",
        "Started",
        "Deallocating",
        "Deallocated",
    ]
    assert machines[WEB.lower()]["powerStateAfter"] == "running"
    assert batch["patch"]["status"] == "Succeeded"
    assert report["health"]["checked"] is True


def test_ten_deliveries_of_pre_and_post_act_once(stack: Stack) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    threads = [threading.Thread(target=deliver_ok, args=(stack, PRE, run)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stack.settle()
    finish_in_azure(stack, run)
    for _ in range(10):
        deliver_ok(stack, POST, run)
    stack.settle()
    assert [calls(stack, "start", m) for m in STOPPED] == [1, 1, 1]
    assert [calls(stack, "deallocate", m) for m in STOPPED] == [1, 1, 1]
    events = stack.run_report(run)["timeline"]["events"]
    assert sorted(e["type"].rsplit(".", 1)[-1] for e in events) == [
        "PostMaintenanceEvent",
        "PreMaintenanceEvent",
    ]


def test_a_post_event_before_the_pre_event_starts_nothing(stack: Stack) -> None:
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    finish_in_azure(stack, run)
    deliver_ok(stack, POST, run)
    stack.settle()
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert stack.fake.requests_matching("POST", r"/(start|deallocate)$") == []
    assert stack.run_report(run)["run"]["status"] == "Completed"


def test_a_pre_event_after_the_deadline_still_starts_and_the_cancel_is_refused(
    stack: Stack,
) -> None:
    # The window closes at T-10 minus the 60 s margin: at T-10:30 it is closed.
    run = stack.schedule("weekly", FLEET, timedelta(minutes=10, seconds=30))
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert [power(stack, m) for m in STOPPED] == ["running"] * 3
    notes = [n["message"] for n in stack.run_report(run)["notes"]]
    assert any("T-15" in n for n in notes)
    refused = stack.cancel(run.correlation_id)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    body = refused.json()
    assert body["title"] == "Too late to cancel"
    assert body["windowClosesAt"] < body["now"]
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []


def test_a_vm_that_fails_to_start_over_budget_cancels_the_run(stack: Stack) -> None:
    stack.fake.faults.fail_lro("batch-02", "start")
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    report = stack.run_report(run)
    machines = machines_by_id(report)
    assert machines[BATCH_2.lower()]["action"] == "StartFailed"
    assert machines[BATCH_2.lower()]["error"]["code"] == "AllocationFailed"
    assert report["gate"]["outcome"] == "Cancelled"
    assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
    assert len(stack.fake.requests_matching("PUT", "applyUpdates")) == 1
    # The run is wrapped up: the VMs that did start are deallocated again.
    assert power(stack, BATCH_1) == "deallocated"
    assert power(stack, DEV) == "deallocated"
    assert power(stack, WEB) == "running"
    assert report["cancel"]["requests"][0]["requestedBy"] == "app:gate"


def test_the_gate_outside_the_window_reports_instead_of_cancelling(stack: Stack) -> None:
    stack.fake.faults.fail_lro("batch-02", "start")
    run = stack.schedule("weekly", FLEET, timedelta(minutes=32))
    # A cut-off already past closes this run's window.
    deliver_ok(
        stack,
        PRE,
        run,
        CancellationCutOffDateTime=(run.scheduled_start - timedelta(minutes=33)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    )
    stack.settle()
    report = stack.run_report(run)
    assert report["gate"]["outcome"] == "TooLateToCancel"
    assert stack.fake.requests_matching("PUT", "applyUpdates") == []
    assert stack.fake.model.run_status(run.correlation_id) != "Cancelled"
    assert any(n["level"] == "Error" and n["source"] == "gate" for n in report["notes"])


class CrashAfterStartCall:
    """Our own ledger, failing the first write of an accepted start: the worker dies after
    Azure accepted the call and before it recorded so."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def _crash_if_recording_a_start(self, machines: Sequence[MachineRecord]) -> None:
        for machine in machines:
            recorded_start = machine.history and machine.history[-1][2] == "start accepted"
            if machine.action is MachineAction.STARTING and recorded_start and not self.crashed:
                self.crashed = True
                raise RuntimeError("worker died between the start call and the ledger write")

    def save_machine(self, machine: MachineRecord) -> MachineRecord:
        self._crash_if_recording_a_start([machine])
        result: MachineRecord = self._ledger.save_machine(machine)
        return result

    def save_machines(self, machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        """Accepted starts are marked several to a write."""
        self._crash_if_recording_a_start(machines)
        result: list[MachineRecord] = self._ledger.save_machines(machines)
        return result


def test_a_crash_between_the_start_call_and_the_ledger_write_does_not_start_twice(
    stack: Stack,
) -> None:
    container = bootstrap.Container(settings=Settings.from_environ(os.environ))
    crashing = CrashAfterStartCall(container.ledger)
    container.built["ledger"] = crashing
    bootstrap.use(container)
    run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle(timeout=90)
    assert crashing.crashed
    assert calls(stack, "start", BATCH_1) == 1
    machine = machines_by_id(stack.run_report(run))[BATCH_1.lower()]
    assert machine["action"] == "Started"
    # The retry found the fresh "Starting" intent and left the VM alone; verify saw it run.
    assert [a["action"] for a in machine["actions"]] == ["Planned", "Starting", "Started"]
    assert machine["actions"][-1]["detail"] == "seen running"


def test_two_overlapping_runs_share_a_vm_and_it_is_stopped_once_at_the_end(stack: Stack) -> None:
    first = stack.schedule("weekly", [BATCH_1, WEB], timedelta(minutes=32))
    second = stack.schedule("weekly", [BATCH_1], timedelta(minutes=38))
    deliver_ok(stack, PRE, first)
    stack.settle()
    deliver_ok(stack, PRE, second)
    stack.settle()
    assert machines_by_id(stack.run_report(second))[BATCH_1.lower()]["action"] == "SharedWithRun"
    finish_in_azure(stack, first)
    deliver_ok(stack, POST, first)
    stack.settle()
    assert power(stack, BATCH_1) == "running"  # the second run still needs it
    assert machines_by_id(stack.run_report(first))[BATCH_1.lower()]["action"] == "HandedOver"
    finish_in_azure(stack, second)
    deliver_ok(stack, POST, second)
    stack.settle()
    assert power(stack, BATCH_1) == "deallocated"
    assert calls(stack, "start", BATCH_1) == 1
    assert calls(stack, "deallocate", BATCH_1) == 1
    assert calls(stack, "deallocate", WEB) == 0
