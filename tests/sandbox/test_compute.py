"""The fake Compute RP through the real azure-mgmt-compute client: VM reads, start/deallocate as
long-running operations, AllocationFailed, snapshots, and the per-subscription write throttle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import CreationData, Snapshot, SnapshotProperties

from sandbox.fake_azure import FakeAzure, PowerState

from .conftest import FAST_RETRIES, SUBSCRIPTION, vm_id

BATCH_01 = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")
WEB_01 = vm_id(SUBSCRIPTION, "rg-web", "web-01")
POLL = 0.05


@pytest.fixture
def compute(
    fake: FakeAzure, credential: ManagedIdentityCredential
) -> Iterator[ComputeManagementClient]:
    with ComputeManagementClient(
        credential,
        SUBSCRIPTION,
        base_url=fake.url,
        credential_scopes=[fake.credential_scope],
        polling_interval=POLL,
        **FAST_RETRIES,
    ) as client:
        yield client


def power_codes(client: ComputeManagementClient, group: str, name: str) -> list[str]:
    view = client.virtual_machines.instance_view(group, name)
    return [status.code for status in view.statuses or [] if status.code]


def test_get_with_instance_view_reports_provisioning_and_power_state(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    vm = compute.virtual_machines.get("rg-web", "web-01", expand="instanceView")
    assert vm.id == WEB_01
    assert vm.location == "westeurope"
    assert vm.tags == {"always-on": "true", "patch-group": "weekly"}
    assert vm.instance_view is not None
    assert [s.code for s in vm.instance_view.statuses or []] == [
        "ProvisioningState/succeeded",
        "PowerState/running",
    ]
    assert vm.storage_profile is not None and vm.storage_profile.os_disk is not None
    assert vm.storage_profile.os_disk.managed_disk is not None
    assert vm.storage_profile.os_disk.managed_disk.id == fake.model.get_vm(WEB_01).os_disk_id
    [call] = fake.requests_matching("GET", "virtualMachines/web-01$")
    assert (call.api_version, call.query.get("$expand")) == ("2026-04-01", "instanceView")


def test_start_moves_to_starting_at_once_and_to_running_when_the_operation_ends(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    poller = compute.virtual_machines.begin_start("rg-batch", "batch-01")
    assert fake.model.power_state(BATCH_01) == PowerState.STARTING
    assert power_codes(compute, "rg-batch", "batch-01") == [
        "ProvisioningState/updating",
        "PowerState/starting",
    ]
    poller.result()
    assert poller.status() == "Succeeded"
    assert fake.model.power_state(BATCH_01) == PowerState.RUNNING
    [post] = fake.requests_matching("POST", "batch-01/start$")
    assert post.status == 202
    polls = fake.requests_matching(
        "GET", r"/providers/Microsoft\.Compute/locations/westeurope/operations/"
    )
    assert len(polls) >= 2  # polled while in progress, then the final Location GET


def test_deallocate_ends_deallocated(fake: FakeAzure, compute: ComputeManagementClient) -> None:
    compute.virtual_machines.begin_deallocate("rg-web", "web-01").result()
    assert fake.model.power_state(WEB_01) == PowerState.DEALLOCATED
    assert power_codes(compute, "rg-web", "web-01")[-1] == "PowerState/deallocated"


def test_allocation_failed_ends_the_start_operation_failed_and_the_vm_stays_down(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    fake.faults.fail_lro("batch-01", "start", code="AllocationFailed")
    poller = compute.virtual_machines.begin_start("rg-batch", "batch-01")
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.error is not None
    assert raised.value.error.code == "AllocationFailed"
    assert "sufficient capacity" in str(raised.value.message)
    assert fake.model.power_state(BATCH_01) == PowerState.DEALLOCATED


def test_an_unknown_vm_is_resource_not_found(compute: ComputeManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        compute.virtual_machines.begin_start("rg-batch", "no-such-vm")
    assert raised.value.error is not None
    assert raised.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as missing_group:
        compute.virtual_machines.get("rg-nowhere", "web-01")
    assert missing_group.value.error is not None
    assert missing_group.value.error.code == "ResourceGroupNotFound"


def test_an_incremental_snapshot_of_the_os_disk_is_created_as_a_long_running_put(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    disk = fake.model.get_vm(BATCH_01).os_disk_id
    snapshot = compute.snapshots.begin_create_or_update(
        "rg-batch",
        "batch-01-pre-patch",
        Snapshot(
            location="westeurope",
            properties=SnapshotProperties(
                creation_data=CreationData(create_option="Copy", source_resource_id=disk),
                incremental=True,
            ),
            tags={"run": "weekly"},
        ),
    ).result()
    assert (snapshot.name, snapshot.provisioning_state, snapshot.incremental) == (
        "batch-01-pre-patch",
        "Succeeded",
        True,
    )
    [recorded] = fake.model.snapshots
    assert (recorded.source_resource_id, recorded.tags) == (disk, {"run": "weekly"})
    [put] = fake.requests_matching("PUT", "snapshots/batch-01-pre-patch$")
    assert (put.status, put.api_version) == (202, "2026-03-02")
    assert put.body["properties"]["creationData"] == {
        "createOption": "Copy",
        "sourceResourceId": disk,
    }


def test_a_get_answered_429_without_retry_after_is_retried_with_backoff(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    fake.faults.add_error("compute.get", 429, times=2)
    assert compute.virtual_machines.get("rg-web", "web-01").name == "web-01"
    assert [c.status for c in fake.requests_matching("GET", "web-01$")] == [429, 429, 200]


def test_a_start_answered_503_is_retried_by_the_client(
    fake: FakeAzure, compute: ComputeManagementClient
) -> None:
    fake.faults.add_error("compute.start", 503, times=1)
    compute.virtual_machines.begin_start("rg-batch", "batch-01").result()
    assert [c.status for c in fake.requests_matching("POST", "batch-01/start$")] == [503, 202]
    assert fake.model.power_state(BATCH_01) == PowerState.RUNNING


class Seconds:
    """A monotonic clock that moves only when the test (or the SDK's sleep) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SleepMovesTheClock(RequestsTransport):  # type: ignore[misc]
    """azure-core's requests transport whose sleep (a Retry-After, a back-off) moves `clock`
    instead of waiting."""

    def __init__(self, clock: Seconds, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.slept: list[float] = []

    def sleep(self, duration: float) -> None:
        self.slept.append(duration)
        self.clock.advance(duration)


def test_the_write_throttle_is_a_token_bucket_per_subscription(fake: FakeAzure) -> None:
    clock = Seconds()
    fake.faults.set_write_throttle(capacity=2, refill_per_second=5, clock=clock)
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}

    def deallocate(group: str, name: str, subscription: str = SUBSCRIPTION) -> requests.Response:
        return requests.post(
            f"{fake.url}/subscriptions/{subscription}/resourceGroups/{group}/providers/"
            f"Microsoft.Compute/virtualMachines/{name}/deallocate",
            params={"api-version": "2026-04-01"},
            headers=headers,
            verify=str(fake.ca_path),
            timeout=5,
        )

    first, second, third = (deallocate("rg-web", "web-01") for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [202, 202, 429]
    assert first.headers["x-ms-ratelimit-remaining-subscription-writes"] == "1"
    assert third.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    assert third.headers["Retry-After"] == "1"
    assert third.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    # Another subscription has its own bucket; reads are not writes.
    assert deallocate("rg-dev", "dev-01", "c0de5a1e-7b3c-4d9f-8e2a-6f1b0c9d8e27").status_code == 202
    reads = requests.get(
        f"{fake.url}{WEB_01}",
        params={"api-version": "2026-04-01"},
        headers=headers,
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert reads.status_code == 200
    clock.advance(0.25)  # 5 tokens a second: one is back, and only one
    assert deallocate("rg-web", "web-01").status_code == 202
    assert deallocate("rg-web", "web-01").status_code == 429


@pytest.mark.alone
def test_the_sdk_waits_out_a_write_throttle(
    fake: FakeAzure, credential: ManagedIdentityCredential
) -> None:
    clock = Seconds()
    fake.faults.set_write_throttle(capacity=1, refill_per_second=2, clock=clock)
    transport = SleepMovesTheClock(clock)
    with ComputeManagementClient(
        credential,
        SUBSCRIPTION,
        base_url=fake.url,
        credential_scopes=[fake.credential_scope],
        transport=transport,
        **FAST_RETRIES,
    ) as client:
        # The starts only: their polling would move the clock too.
        client.virtual_machines.begin_start("rg-batch", "batch-01", polling=False)
        client.virtual_machines.begin_start("rg-batch", "batch-02", polling=False)
    statuses = [c.status for c in fake.requests_matching("POST", "/start$")]
    assert statuses == [202, 429, 202]
    assert transport.slept == [1.0]  # the 429's Retry-After: 1, honoured


def test_a_second_operation_preempts_the_one_in_flight(fake: FakeAzure) -> None:
    starting = fake.model.begin_power_operation(BATCH_01, "start")
    assert fake.model.power_state(BATCH_01) == PowerState.STARTING
    deallocating = fake.model.begin_power_operation(BATCH_01, "deallocate")
    started, deallocated = (
        fake.model.operation_status(op.operation_id) for op in (starting, deallocating)
    )
    assert started is not None and deallocated is not None
    assert starting.error == {
        "code": "OperationPreempted",
        "message": "Operation execution has been preempted by a more recent operation.",
    }
    # The start never got anywhere, so the VM is back where it was and the deallocate is done.
    assert (started.status, deallocated.status) == ("Failed", "Succeeded")
    assert fake.model.power_state(BATCH_01) == PowerState.DEALLOCATED


def test_unsupported_compute_api_version_is_refused(fake: FakeAzure) -> None:
    answer = requests.get(
        f"{fake.url}{WEB_01}",
        params={"api-version": "2014-01-01"},
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "NoRegisteredProviderFound"
