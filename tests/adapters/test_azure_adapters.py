"""The Azure adapters, through the real SDK clients over real HTTPS, against the sandbox's fake
Azure (its own CA via REQUESTS_CA_BUNDLE, tokens from its managed-identity endpoint). Retry
waits are shortened through client options, never by patching the SDK."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from sandbox.fake_azure import FakeAzure
from shared.adapters.compute import ComputeMachines
from shared.adapters.credentials import (
    OneRequestAtATime,
    azure_credential,
    running_with_platform_identity,
)
from shared.adapters.log_analytics import LogAnalyticsHeartbeats
from shared.adapters.maintenance import THROTTLED_CANCEL_TRIES, MaintenanceRuns
from shared.adapters.resource_graph import ResourceGraphMachines
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.errors import (
    AzureCallFailed,
    CallWithdrawn,
    CancelRefused,
    ResourceGraphQueryRefused,
)
from shared.domain.ids import InvalidId, MachineId, RunId
from shared.domain.machines import PowerState
from tests.fake_azure import CLIENT_ID, FAST_RETRIES, SUBSCRIPTION, WORKSPACE_ID, vm_id

CONFIGURATION = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-maintenance/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly"
)
WEB = MachineId.parse(vm_id(SUBSCRIPTION, "rg-web", "web-01"))
BATCH = MachineId.parse(vm_id(SUBSCRIPTION, "rg-batch", "batch-01"))
ARC = MachineId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-onprem/providers/"
    "Microsoft.HybridCompute/machines/onprem-01"
)
INJECTIONS = [
    CONFIGURATION + "/providers/microsoft.maintenance/applyupdates/20261201030000' or 1==1",
    CONFIGURATION + "/providers/microsoft.maintenance/applyupdates/20261201030000\n| take 1",
    CONFIGURATION.replace("weekly", "we|ekly") + "/providers/microsoft.maintenance/applyupdates/"
    "20261201030000",
    CONFIGURATION.replace("weekly", 'x\\"y') + "/providers/microsoft.maintenance/applyupdates/"
    "20261201030000",
    CONFIGURATION.replace("rg-maintenance", "..") + "/providers/microsoft.maintenance/"
    "applyupdates/20261201030000",
]


@pytest.fixture
def credential_for(fake: FakeAzure) -> ManagedIdentityCredential:
    return ManagedIdentityCredential(client_id=CLIENT_ID)


@pytest.fixture
def graph(fake: FakeAzure, credential_for: ManagedIdentityCredential) -> ResourceGraphMachines:
    return ResourceGraphMachines.build(credential_for, fake.url, **FAST_RETRIES)


@pytest.fixture
def compute(fake: FakeAzure, credential_for: ManagedIdentityCredential) -> ComputeMachines:
    return ComputeMachines.build(credential_for, fake.url, polling_interval=0.05, **FAST_RETRIES)


def run_of(fake: FakeAzure, machines: list[str], minutes: int = 35) -> RunId:
    start = (datetime.now(UTC) + timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    run = fake.model.create_run(CONFIGURATION, start, machines, arg_lag=0, machines_lag=0)
    return RunId.parse(run.correlation_id)


# Resource Graph --------------------------------------------------------------------------


def test_machines_of_a_run_page_over_2500_machines(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    from sandbox.fake_azure.model import VmSpec

    specs = [
        VmSpec(
            subscription_id=SUBSCRIPTION,
            resource_group="rg-fleet",
            name=f"vm-{i:04d}",
            power_state="deallocated",
        )
        for i in range(2500)
    ]
    fake.model.add_vms(specs)
    ids = [vm_id(SUBSCRIPTION, "rg-fleet", f"vm-{i:04d}") for i in range(2500)]
    run = run_of(fake, ids)
    fake.clear_requests()
    listed = list(graph.list_run_machines(run, [SUBSCRIPTION]))
    assert len(listed) == 2500
    assert len({m.machine.key for m in listed}) == 2500
    calls = fake.requests_matching("POST", "ResourceGraph")
    assert len(calls) == 3
    assert [c.body["options"].get("$skipToken") is None for c in calls] == [True, False, False]
    assert all(c.body["options"]["$top"] == 1000 for c in calls)
    assert all(c.body["subscriptions"] == [SUBSCRIPTION] for c in calls)


def test_arg_429_with_retry_after_is_honoured_by_the_client(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    run = run_of(fake, [WEB.text])
    fake.faults.add_error("arg", 429, times=1, retry_after=0.05)
    assert [m.machine for m in graph.list_run_machines(run, [SUBSCRIPTION])] == [WEB]
    assert [c.status for c in fake.requests_matching("POST", "ResourceGraph")][-2:] == [429, 200]


def test_arg_429_without_retry_after_is_backed_off_by_the_clients_retry_policy(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    run = run_of(fake, [WEB.text])
    fake.faults.add_error("arg", 429, times=2)
    fake.clear_requests()
    assert [m.machine for m in graph.list_run_machines(run, [SUBSCRIPTION])] == [WEB]
    assert [c.status for c in fake.requests_matching("POST", "ResourceGraph")] == [429, 429, 200]


def test_a_query_over_args_user_quota_is_sent_again_after_its_retry_after(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    # ARG's own throttle: one query a second per user, a 429 with Retry-After past that.
    run = run_of(fake, [WEB.text])
    fake.faults.set_arg_quota(limit=1, window_seconds=1.0)
    fake.clear_requests()
    assert [m.machine for m in graph.list_run_machines(run, [SUBSCRIPTION])] == [WEB]
    assert [m.machine for m in graph.list_run_machines(run, [SUBSCRIPTION])] == [WEB]
    calls = fake.requests_matching("POST", "ResourceGraph")
    assert [c.status for c in calls] == [200, 429, 200]
    # The same POST again, once the quota window (Retry-After: 1) was over.
    assert calls[2].body == calls[1].body
    assert (calls[2].time - calls[1].time).total_seconds() >= 0.9


def test_arg_throttling_that_never_ends_surfaces_as_a_refusal(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    run = run_of(fake, [WEB.text])
    fake.faults.add_error("arg", 429)
    with pytest.raises(ResourceGraphQueryRefused) as raised:
        list(graph.list_run_machines(run, [SUBSCRIPTION]))
    assert raised.value.status == 429


@pytest.mark.parametrize("bad", INJECTIONS)
def test_injection_strings_are_refused_before_any_request_leaves(
    fake: FakeAzure, graph: ResourceGraphMachines, bad: str
) -> None:
    fake.clear_requests()
    with pytest.raises(InvalidId):
        list(graph.list_run_machines(bad, [SUBSCRIPTION]))
    with pytest.raises(InvalidId):
        list(
            graph.list_runs(
                [bad.split("/providers/microsoft.maintenance/applyupdates")[0] + "'"],
                [SUBSCRIPTION],
            )
        )
    with pytest.raises(InvalidId):
        list(
            graph.list_run_machines(
                RunId.parse(
                    CONFIGURATION + "/providers/microsoft.maintenance/applyupdates/20261201030000"
                ),
                [SUBSCRIPTION + "' or 1==1"],
            )
        )
    assert fake.requests == []


def test_runs_patch_results_and_assignments_are_read(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    run = run_of(fake, [WEB.text, BATCH.text], minutes=-120)
    fake.model.complete_run(
        run.text,
        status="Succeeded",
        results={BATCH.text: {"status": "Failed", "failed_patch_count": 2}},
        results_lag=0,
    )
    runs = {r.run_id: r for r in graph.list_runs([CONFIGURATION], [SUBSCRIPTION])}
    assert runs[run].status == "Succeeded"
    start = fake.model.get_run(run.text).scheduled_start
    since, until = start - timedelta(minutes=15), start + timedelta(hours=5)
    patches = {p.machine: p for p in graph.list_patch_results(run, [SUBSCRIPTION], since, until)}
    assert patches[BATCH].status == "Failed"
    assert patches[BATCH].failed == 2
    assert patches[WEB].status == "Succeeded"
    # The default maintenanceRunId is a bare timestamp, as in the one public sample.
    assert patches[WEB].maintenance_run_id == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert patches[WEB].started == patches[WEB].maintenance_run_id


@pytest.mark.parametrize("variant", ["timestamp", "correlation_id", "run_name", "absent"])
def test_patch_results_are_found_by_name_or_time_whatever_maintenance_run_id_holds(
    fake: FakeAzure, graph: ResourceGraphMachines, variant: str
) -> None:
    fake.model.settings.maintenance_run_id = variant
    run = run_of(fake, [WEB.text, BATCH.text], minutes=-120)
    earlier = run_of(fake, [WEB.text], minutes=-3 * 24 * 60)
    start = fake.model.get_run(run.text).scheduled_start
    fake.model.complete_run(run.text, status="Succeeded", results_lag=0)
    long_ago = fake.model.get_run(earlier.text).scheduled_start + timedelta(hours=1)
    fake.model.complete_run(
        earlier.text,
        status="Succeeded",
        default_result={"last_modified_date_time": long_ago},
        results_lag=0,
    )
    found = list(
        graph.list_patch_results(
            run, [SUBSCRIPTION], start - timedelta(minutes=15), start + timedelta(hours=5)
        )
    )
    # The run's two results, never the one from three days before.
    assert sorted(p.machine.key for p in found) == sorted([WEB.key, BATCH.key])
    assert all(p.started == start.strftime("%Y-%m-%dT%H:%M:%SZ") for p in found)


def test_an_arg_refusal_keeps_its_status_code_and_message(
    fake: FakeAzure, graph: ResourceGraphMachines
) -> None:
    run = run_of(fake, [WEB.text])
    fake.faults.add_error("arg", 400, times=1, code="InvalidQuery", message="bad query text")
    with pytest.raises(ResourceGraphQueryRefused) as raised:
        list(graph.list_run_machines(run, [SUBSCRIPTION]))
    assert (raised.value.status, raised.value.code) == (400, "InvalidQuery")
    assert "bad query text" in raised.value.message
    assert not raised.value.is_transient


# Compute ---------------------------------------------------------------------------------


def test_power_state_tags_start_and_deallocate_without_waiting(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.model.settings.power_transition_seconds = 0.3
    facts = compute.get_machine(BATCH)
    assert facts.power.state is PowerState.DEALLOCATED
    assert facts.power.startable
    assert facts.tags["patch-group"] == "weekly"
    compute.start(BATCH)  # returns once Azure accepted it: the VM is still booting
    assert compute.get_power(BATCH).state is PowerState.STARTING
    assert wait_for_power(compute, BATCH, PowerState.RUNNING)
    compute.deallocate(BATCH)
    assert wait_for_power(compute, BATCH, PowerState.DEALLOCATED)
    starts = fake.requests_matching("POST", r"batch-01/start$")
    assert [r.status for r in starts] == [202]
    # Nothing polled the operations: the power reads tell how they ended.
    assert fake.requests_matching("GET", "/operations/") == []


def wait_for_power(compute: ComputeMachines, machine: MachineId, state: PowerState) -> bool:
    deadline = time.monotonic() + 10
    while compute.get_power(machine).state is not state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_failed_start_shows_in_the_power_read_with_azure_words(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.model.settings.power_transition_seconds = 0.1
    fake.faults.fail_lro("batch-01", "start")
    compute.start(BATCH)  # accepted: the failure comes later
    assert wait_for_power(compute, BATCH, PowerState.DEALLOCATED)
    [(_, power)] = compute.list_power_states(SUBSCRIPTION, [BATCH])
    assert power.state is PowerState.DEALLOCATED
    assert power.failed_code == "AllocationFailed"
    assert power.failed_message
    assert compute.get_power(BATCH).failed_code == "AllocationFailed"


def test_power_states_in_bulk_page_through_the_subscriptions_status_only_list(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.model.settings.vm_list_page_size = 3
    names = [f"fleet-{i:02d}" for i in range(10)]
    for name in names:
        fake.model.add_vm(SUBSCRIPTION, "rg-fleet", name, power_state="deallocated")
    fake.model.set_power_state(vm_id(SUBSCRIPTION, "rg-fleet", "fleet-09"), "running")
    fake.clear_requests()
    asked = [MachineId.parse(vm_id(SUBSCRIPTION, "rg-fleet", n)) for n in names]
    powers = dict(compute.list_power_states(SUBSCRIPTION, [*asked, WEB, ARC]))
    assert powers[WEB].state is PowerState.RUNNING
    assert powers[asked[9]].state is PowerState.RUNNING
    assert {powers[m].state for m in asked[:9]} == {PowerState.DEALLOCATED}
    assert powers[asked[0]].startable
    # The Arc machine is not in Compute's list: not manageable, and no request for it.
    assert (powers[ARC].state, powers[ARC].startable) == (None, False)
    assert "Arc" in powers[ARC].note
    pages = fake.requests_matching("GET", r"/providers/Microsoft\.Compute/virtualMachines$")
    # 14 VMs in the subscription (10 + web, 2 batch... sorted by id), 3 a page: every page read
    # once, each one ARM read against the subscription's read bucket.
    assert len(pages) == 5
    assert {r.query.get("statusOnly") for r in pages} == {"true"}
    assert all(r.status == 200 for r in pages)
    remaining = [
        int(r.headers.get("x-ms-ratelimit-remaining-subscription-reads", "0")) for r in pages
    ]
    assert remaining == sorted(remaining, reverse=True)


def test_a_bulk_read_stops_paging_once_every_machine_asked_about_was_seen(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.model.settings.vm_list_page_size = 1
    fake.clear_requests()
    powers = dict(compute.list_power_states(SUBSCRIPTION, [BATCH]))
    assert powers[BATCH].state is PowerState.DEALLOCATED
    # batch-01 sorts first in its subscription: one page was enough.
    assert len(fake.requests_matching("GET", r"Compute/virtualMachines$")) == 1
    gone = MachineId.parse(vm_id(SUBSCRIPTION, "rg-batch", "no-such-vm"))
    assert dict(compute.list_power_states(SUBSCRIPTION, [gone])) == {}


def test_arc_machines_are_not_manageable_and_no_request_is_sent(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.clear_requests()
    assert not compute.get_power(ARC).startable
    assert [power.startable for _, power in compute.list_power_states(SUBSCRIPTION, [ARC])] == [
        False
    ]
    with pytest.raises(AzureCallFailed):
        compute.start(ARC)
    with pytest.raises(AzureCallFailed):
        compute.deallocate(ARC)
    assert fake.requests == []


def test_a_failing_bulk_read_fails_as_a_transient_azure_call(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.faults.add_error("compute.list", 503)
    with pytest.raises(AzureCallFailed) as raised:
        dict(compute.list_power_states(SUBSCRIPTION, [BATCH]))
    assert raised.value.is_transient


def test_a_refused_bulk_read_says_so_with_azures_words(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.faults.add_error(
        "compute.list", 403, code="AuthorizationFailed", message="no read on the subscription"
    )
    with pytest.raises(AzureCallFailed) as raised:
        dict(compute.list_power_states(SUBSCRIPTION, [BATCH]))
    assert raised.value.is_refusal
    assert (raised.value.status, raised.value.code) == (403, "AuthorizationFailed")
    assert "no read on the subscription" in raised.value.message


def test_a_vm_that_is_gone_is_a_refusal_with_azures_words(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    gone = MachineId.parse(vm_id(SUBSCRIPTION, "rg-batch", "no-such-vm"))
    with pytest.raises(AzureCallFailed) as raised:
        compute.get_machine(gone)
    assert raised.value.is_refusal
    assert raised.value.status == 404
    assert raised.value.code


def test_the_reads_taken_apart_by_hand_speak_the_sdks_api_version(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.clear_requests()
    compute.start(BATCH)  # through the SDK's own operation
    compute.get_machine(BATCH)
    dict(compute.list_power_states(SUBSCRIPTION, [BATCH]))
    [sent] = fake.requests_matching("POST", r"/virtualMachines/batch-01/start$")
    [read] = fake.requests_matching("GET", r"/virtualMachines/batch-01$")
    [listed] = fake.requests_matching("GET", r"Compute/virtualMachines$")
    assert read.query.get("$expand") == "instanceView"
    versions = {r.query.get("api-version") for r in (sent, read, listed)}
    assert len(versions) == 1


def test_write_throttle_429s_are_retried_by_the_client(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    fake.faults.set_write_throttle(capacity=1, refill_per_second=20)
    compute.start(BATCH)
    compute.deallocate(BATCH)
    assert [r.status for r in fake.requests_matching("POST", r"batch-01/deallocate$")][-1] == 202


@pytest.mark.parametrize(("mode", "status"), [("502", 502), ("drop", None), ("timeout", None)])
def test_a_start_whose_answer_is_lost_fails_transiently_though_azure_applied_it(
    fake: FakeAzure, compute: ComputeMachines, mode: str, status: int | None
) -> None:
    fake.faults.lose_answer("compute.start", mode, times=1, seconds=0.2)
    with pytest.raises(AzureCallFailed) as raised:
        compute.start(BATCH)
    assert raised.value.status == status
    assert raised.value.is_transient
    # A 502 to a POST is not retried by azure-core, nor is a POST that got no answer.
    [start] = fake.requests_matching("POST", r"batch-01/start$")
    assert start.answer_lost
    assert compute.get_power(BATCH).state in (PowerState.STARTING, PowerState.RUNNING)


def test_a_start_only_ever_throttled_is_withdrawn_unsent_once_no_longer_wanted(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    # Retry-After 1 s: short enough for the pacing retry policy to re-send it in place.
    fake.faults.set_write_throttle(capacity=1, refill_per_second=1.0)
    compute.start(WEB)  # spends the only token: the next write is throttled
    asked: list[bool] = []

    def still_wanted() -> bool:
        asked.append(True)
        return False

    with pytest.raises(CallWithdrawn) as raised:
        compute.start(BATCH, still_wanted)
    assert raised.value.status == 429
    assert asked == [True]
    assert [r.status for r in fake.requests_matching("POST", r"batch-01/start$")] == [429]
    assert compute.get_power(BATCH).state is PowerState.DEALLOCATED


def test_a_start_whose_first_answer_may_have_been_applied_is_never_withdrawn(
    fake: FakeAzure, compute: ComputeMachines
) -> None:
    # A 500 to a POST is retried by azure-core, and ARM may have acted on it: seen through.
    fake.faults.add_error("compute.start", 500, times=1)
    fake.faults.add_error("compute.start", 429, times=1, retry_after=0.05)
    compute.start(BATCH, lambda: False)
    assert [r.status for r in fake.requests_matching("POST", r"batch-01/start$")] == [
        500,
        429,
        202,
    ]


def test_an_incremental_snapshot_of_the_os_disk(fake: FakeAzure, compute: ComputeMachines) -> None:
    assert compute.begin_snapshot_os_disk(BATCH, "batch-01-osdisk-um-test").wait(30).succeeded
    [put] = fake.requests_matching("PUT", "snapshots/batch-01-osdisk-um-test")
    assert put.body["properties"]["incremental"] is True
    assert put.body["properties"]["creationData"]["createOption"] == "Copy"


# Maintenance -----------------------------------------------------------------------------


def maintenance(fake: FakeAzure, version: str = "2023-09-01-preview") -> MaintenanceRuns:
    return MaintenanceRuns.build(
        ManagedIdentityCredential(client_id=CLIENT_ID), fake.url, version, **FAST_RETRIES
    )


def test_cancel_sends_the_documented_put_and_accepts_the_spec_examples_202(
    fake: FakeAzure,
) -> None:
    run = run_of(fake, [WEB.text], minutes=30)
    accepted = maintenance(fake).cancel_run(run.text)
    assert (accepted.http_status, accepted.status, accepted.confirmed) == (202, "Cancel", False)
    [put] = fake.requests_matching("PUT", "applyUpdates")
    assert put.path.lower() == run.text.lower()
    assert put.api_version == "2023-09-01-preview"
    assert put.body == {"properties": {"status": "Cancel"}}
    assert put.headers["Content-Type"] == "application/json"
    assert put.token_resource is not None  # through the SDK client's own credential policy
    assert maintenance(fake).get_run(run).status == "Cancelled"


@pytest.mark.parametrize(
    ("status", "body", "word", "read", "confirmed"),
    [
        (200, "run", "Cancelled", "Cancelled", True),
        (201, "run", "Cancelled", "Cancelled", True),
        (200, "spec", "Canceled", "Canceled", True),
        (202, "spec", "Cancel", "Cancel", False),
        (202, "run", "Cancelled", "Cancelled", False),
        (200, "spec", "SomethingNew", "SomethingNew", False),
        (200, "none", "Cancelled", None, False),
        (202, "none", "Cancel", None, False),
        (204, "none", "Cancel", None, False),
    ],
)
def test_every_2xx_cancel_answer_is_accepted_through_the_sdk_client(
    fake: FakeAzure, status: int, body: str, word: str, read: str | None, confirmed: bool
) -> None:
    policy = fake.faults.cancel_policy
    policy.answer_status, policy.answer_body, policy.answer_word = status, body, word
    run = run_of(fake, [WEB.text], minutes=30)
    accepted = maintenance(fake).cancel_run(run)
    assert (accepted.http_status, accepted.status, accepted.confirmed) == (
        status,
        read,
        confirmed,
    )
    assert len(fake.requests_matching("PUT", "applyUpdates")) == 1


@pytest.mark.parametrize(("status", "kind"), [(502, 502), (500, 500), (0, None)])
def test_a_lost_answer_raises_after_exactly_one_put(
    fake: FakeAzure, status: int, kind: int | None
) -> None:
    fake.faults.add_error("maintenance.cancel", status, after_applying=True)
    run = run_of(fake, [WEB.text], minutes=30)
    with pytest.raises(AzureCallFailed) as raised:
        maintenance(fake).cancel_run(run)
    assert not isinstance(raised.value, CancelRefused)
    assert raised.value.status == kind
    assert raised.value.is_transient
    assert len(fake.requests_matching("PUT", "applyUpdates")) == 1  # no automatic re-send
    assert maintenance(fake).get_run(run).status == "Cancelled"  # Azure did it


def test_a_throttled_cancel_is_not_a_refusal(fake: FakeAzure) -> None:
    fake.faults.add_error("maintenance.cancel", 429, retry_after=0.05)
    run = run_of(fake, [WEB.text], minutes=30)
    with pytest.raises(AzureCallFailed) as raised:
        maintenance(fake).cancel_run(run)
    assert not isinstance(raised.value, CancelRefused)
    assert raised.value.status == 429
    # ARM did nothing with a 429: sent again after Retry-After, a bounded number of times.
    assert len(fake.requests_matching("PUT", "applyUpdates")) == THROTTLED_CANCEL_TRIES


def test_a_cancel_throttled_by_the_apps_own_fan_out_goes_through_once_a_token_is_back(
    fake: FakeAzure,
) -> None:
    fake.faults.add_error("maintenance.cancel", 429, times=2, retry_after=0.05)
    run = run_of(fake, [WEB.text], minutes=30)
    maintenance(fake).cancel_run(run)
    assert [r.status for r in fake.requests_matching("PUT", "applyUpdates")][:2] == [429, 429]
    assert maintenance(fake).get_run(run).status == "Cancelled"


def test_a_cancel_for_a_run_azure_does_not_know_is_refused_with_404(fake: FakeAzure) -> None:
    run = RunId.parse(
        CONFIGURATION + "/providers/microsoft.maintenance/applyupdates/20261208030000"
    )
    with pytest.raises(CancelRefused) as raised:
        maintenance(fake).cancel_run(run)
    assert (raised.value.status, raised.value.code) == (404, "NotFound")


def test_a_refused_cancel_keeps_the_services_code_and_message(fake: FakeAzure) -> None:
    run = run_of(fake, [WEB.text], minutes=5)  # past the platform's cut-off
    with pytest.raises(CancelRefused) as raised:
        maintenance(fake).cancel_run(run)
    assert raised.value.status == 409
    assert raised.value.code
    assert raised.value.message
    assert not raised.value.is_transient


def test_cancel_api_version_is_the_setting(fake: FakeAzure) -> None:
    run = run_of(fake, [WEB.text], minutes=30)
    maintenance(fake, "2025-11-01").cancel_run(run)
    [put] = fake.requests_matching("PUT", "applyUpdates")
    assert put.api_version == "2025-11-01"


# Log Analytics ---------------------------------------------------------------------------


def test_heartbeats_since_a_moment(fake: FakeAzure) -> None:
    now = datetime.now(UTC)
    fake.model.add_heartbeat(BATCH.text, now - timedelta(minutes=1), workspace_id=WORKSPACE_ID)
    heartbeats = LogAnalyticsHeartbeats.build(
        ManagedIdentityCredential(client_id=CLIENT_ID), fake.url, **FAST_RETRIES
    )
    report = heartbeats.list_last_heartbeats(
        WORKSPACE_ID, [BATCH, WEB], now - timedelta(minutes=10), now
    )
    assert BATCH in report.last_seen
    assert report.complete


def test_partial_results_are_used_and_flagged(fake: FakeAzure) -> None:
    now = datetime.now(UTC)
    fake.model.add_heartbeat(BATCH.text, now - timedelta(minutes=1), workspace_id=WORKSPACE_ID)
    fake.faults.set_log_analytics_partial(keep_rows=1)
    heartbeats = LogAnalyticsHeartbeats.build(
        ManagedIdentityCredential(client_id=CLIENT_ID), fake.url, **FAST_RETRIES
    )
    report = heartbeats.list_last_heartbeats(
        WORKSPACE_ID, [BATCH, WEB], now - timedelta(minutes=10), now
    )
    assert not report.complete
    assert report.partial_errors


# Credentials -----------------------------------------------------------------------------


def test_with_a_platform_identity_the_app_uses_the_managed_identity(fake: FakeAzure) -> None:
    assert running_with_platform_identity()
    container = Container(
        settings=Settings.from_environ(
            {
                "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                "MANAGED_IDENTITY_CLIENT_ID": CLIENT_ID,
                "ARM_ENDPOINT": fake.url,
            }
        )
    )
    credential = container.credential
    assert isinstance(credential, OneRequestAtATime)
    assert isinstance(credential._inner, ManagedIdentityCredential)
    assert container.credential is credential  # one credential per process
    assert container.resource_graph is container.resource_graph
    token = credential.get_token(fake.credential_scope)
    assert token.token


def test_without_a_platform_identity_no_credential_probes_imds(
    monkeypatch: pytest.MonkeyPatch, start_fake: Callable[..., Any]
) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.delenv("MSI_ENDPOINT", raising=False)
    credential = azure_credential(None, "https://login.example.invalid")
    assert isinstance(credential, DefaultAzureCredential)
    kinds = [type(c).__name__ for c in credential.credentials]
    assert "ManagedIdentityCredential" not in kinds
    assert "WorkloadIdentityCredential" not in kinds


ARM_NAMES = [
    ("rg-Ünïcødé.(prod)_東京", "wëb.01(a)-", "wöchentlich.linux(1)"),
    ("rg.with.dots", "vm.with.dots", "mc.v2.0"),
    ("(paren)", "vm(1)", "(weekly)"),
]


@pytest.mark.parametrize(("group", "vm", "configuration_name"), ARM_NAMES)
def test_names_arm_accepts_are_quoted_into_queries_and_found(
    fake: FakeAzure, graph: ResourceGraphMachines, group: str, vm: str, configuration_name: str
) -> None:
    from sandbox.fake_azure.model import VmSpec

    fake.model.add_vms([VmSpec(subscription_id=SUBSCRIPTION, resource_group=group, name=vm)])
    configuration = fake.model.add_maintenance_configuration(
        SUBSCRIPTION, group, configuration_name
    )
    machine = MachineId.parse(vm_id(SUBSCRIPTION, group, vm))
    start = (datetime.now(UTC) + timedelta(minutes=35)).replace(second=0, microsecond=0)
    created = fake.model.create_run(configuration.id, start, [machine.text], arg_lag=0)
    run = RunId.parse(created.correlation_id)
    fake.clear_requests()
    assert [m.machine for m in graph.list_run_machines(run, [SUBSCRIPTION])] == [machine]
    assert [r.run_id for r in graph.list_runs([configuration.id], [SUBSCRIPTION])] == [run]
    queries = [c.body["query"] for c in fake.requests_matching("POST", "ResourceGraph")]
    assert all(configuration_name in q for q in queries)
