"""End to end: what a whole run costs in ARM reads. Power states are read in bulk (Compute's
status-only list of a subscription's VMs, one read per page), only for machines not settled
yet, and no operation is polled: at most 2 ARM reads per VM started, all told, from prepare to
the report.

The local host, the fake Azure (ARM's buckets on, as by default) and Azurite; the count comes
from the fake's request log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from sandbox.stack import POST, PRE, Stack, running_stack
from tests.fake_azure import SUBSCRIPTION, small_scenario, vm_id

STOPPED = [vm_id(SUBSCRIPTION, "rg-fleet", f"fleet-{i:02d}") for i in range(60)]
RUNNING = [vm_id(SUBSCRIPTION, "rg-fleet", f"always-{i:02d}") for i in range(6)]


def fleet_scenario() -> dict[str, Any]:
    scenario = small_scenario()
    scenario["runs"] = []
    # Boots and deallocations take a few verify and finish rounds, so re-reads would show.
    scenario["settings"]["start_seconds"] = [1.5, 4]
    scenario["settings"]["deallocate_seconds"] = [1.5, 3]
    for machine in [*STOPPED, *RUNNING]:
        scenario["vms"].append(
            {
                "subscription": SUBSCRIPTION,
                "resource_group": "rg-fleet",
                "name": machine.rsplit("/", 1)[-1],
                "power_state": "deallocated" if machine in STOPPED else "running",
            }
        )
    return scenario


@pytest.fixture
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(fleet_scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


def test_a_run_of_sixty_vms_costs_at_most_two_arm_reads_per_vm_started(stack: Stack) -> None:
    run = stack.schedule("weekly", [*STOPPED, *RUNNING], timedelta(minutes=32))
    assert stack.deliver(PRE, run).status_code == 200
    stack.settle(timeout=180)
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    assert stack.deliver(POST, run).status_code == 200
    stack.settle(timeout=180)
    report = stack.run_report(run)
    assert report["run"]["status"] == "Completed"
    actions = Counter(m["action"] for m in report["machines"])
    assert actions["Deallocated"] == len(STOPPED)
    assert [str(stack.fake.model.power_state(m)) for m in STOPPED] == ["deallocated"] * 60

    started = {
        r.path.rsplit("/", 2)[-2]
        for r in stack.fake.requests_matching("POST", r"/start$")
        if r.status == 202
    }
    assert len(started) == len(STOPPED)
    # Every ARM read (a GET against a subscription), whatever it was for.
    reads = [
        r
        for r in stack.fake.requests
        if r.method == "GET" and r.path.lower().startswith("/subscriptions/")
    ]
    by_endpoint = Counter(r.endpoint for r in reads)
    print(
        f"ARM reads for {len(started)} VMs started: {len(reads)} "
        f"({len(reads) / len(started):.2f} per VM) {dict(by_endpoint)}"
    )
    assert by_endpoint["compute.operation"] == 0  # nothing polls an operation
    assert len(reads) <= 2 * len(started), dict(by_endpoint)
