"""The fake Maintenance RP: cancelling a run through azure-mgmt-maintenance 2.2.0b4, the refusals,
and how runs, machines and patch results then read in Resource Graph."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.maintenance import MaintenanceManagementClient
from azure.mgmt.maintenance.models import ApplyUpdate, ApplyUpdateProperties

from sandbox.fake_azure import FakeAzure, ManualClock, PatchResult
from sandbox.fake_azure.faults import CancelPolicy

from .conftest import FAST_RETRIES, SUBSCRIPTION, small_scenario, vm_id

START = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
RUN_NAME = "20261201030000"
CANCEL = {"properties": {"status": "Cancel"}}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START - dt.timedelta(minutes=30))


@pytest.fixture
def fake(start_fake: Callable[..., FakeAzure], clock: ManualClock) -> FakeAzure:
    fake = start_fake(clock=clock)
    configuration = fake.model.configurations[0].id
    fake.model.create_run(configuration, START, fake.model.assigned_machines(configuration))
    return fake


@pytest.fixture
def run_id(fake: FakeAzure) -> str:
    return next(r.correlation_id for r in fake.model.runs if r.name == RUN_NAME)


def client(
    fake: FakeAzure, credential: ManagedIdentityCredential, **options: Any
) -> MaintenanceManagementClient:
    return MaintenanceManagementClient(
        credential,
        SUBSCRIPTION,
        base_url=fake.url,
        credential_scopes=[fake.credential_scope],
        **FAST_RETRIES,
        **options,
    )


def answer_as_later_revisions(fake: FakeAzure) -> None:
    """200 with the run's document and "Cancelled": the only success 2.2.0b4 can read."""
    fake.faults.cancel_policy.answer_status = 200
    fake.faults.cancel_policy.answer_body = "run"
    fake.faults.cancel_policy.answer_word = "Cancelled"


@pytest.fixture
def maintenance(
    fake: FakeAzure, credential: ManagedIdentityCredential
) -> Iterator[MaintenanceManagementClient]:
    answer_as_later_revisions(fake)
    with client(fake, credential) as sdk:
        yield sdk


def cancel(sdk: MaintenanceManagementClient, name: str = RUN_NAME) -> ApplyUpdateProperties:
    """Cancel a run of "weekly" the way an adapter would; the properties the service answered."""
    answer = sdk.apply_updates.create_or_update_or_cancel(
        "rg-maintenance",
        "Microsoft.Maintenance",
        "maintenanceConfigurations",
        "weekly",
        name,
        ApplyUpdate(properties=ApplyUpdateProperties(status="Cancel")),
    )
    assert answer.type == "Microsoft.Maintenance/applyUpdates"
    assert answer.properties is not None
    return answer.properties


def arg_rows(fake: FakeAzure, query: str) -> list[dict[str, Any]]:
    answer = requests.post(
        f"{fake.url}/providers/Microsoft.ResourceGraph/resources",
        params={"api-version": "2021-03-01"},
        json={"query": query},
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def raw_put(
    fake: FakeAzure, path: str, body: Any, api_version: str = "2023-09-01-preview"
) -> requests.Response:
    return requests.put(
        f"{fake.url}{path}",
        params={"api-version": api_version},
        json=body,
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=5,
    )


def test_cancel_through_the_sdk_answers_cancelled_and_the_run_reads_cancelled_in_resource_graph(
    fake: FakeAzure, run_id: str, maintenance: MaintenanceManagementClient
) -> None:
    answer = cancel(maintenance)
    assert (answer.status, answer.resource_id) == ("Cancelled", fake.model.configurations[0].id)
    assert fake.model.run_status(run_id) == "Cancelled"
    [put] = fake.requests_matching("PUT", "applyUpdates")
    assert put.path == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-maintenance/providers/Microsoft.Maintenance/"
        f"maintenanceConfigurations/weekly/providers/Microsoft.Maintenance/applyUpdates/{RUN_NAME}"
    )
    assert (put.api_version, put.body, put.status) == ("2025-10-01-preview", CANCEL, 200)
    [run] = arg_rows(
        fake,
        "maintenanceresources "
        "| where type =~ 'microsoft.maintenance/maintenanceconfigurations/applyupdates'"
        f" | where id =~ '{run_id}' | project status = tostring(properties.status), properties",
    )
    assert run["status"] == "Cancelled"
    assert "cancellation API" in run["properties"]["error"]["message"]
    query = (
        "maintenanceresources | where type =~ 'microsoft.maintenance/applyupdates' "
        f"| where properties.correlationId =~ '{run_id}' "
        "| project status = tostring(properties.status)"
    )
    # By default per-machine records carry no status (undocumented); the variant shows it.
    assert {m["status"] for m in arg_rows(fake, query)} == {""}
    fake.model.settings.machine_status_field = "present"
    assert {m["status"] for m in arg_rows(fake, query)} == {"Cancelled"}


def test_by_default_a_cancel_is_answered_as_the_spec_example_202_cancel(
    fake: FakeAzure, run_id: str
) -> None:
    answer = raw_put(fake, run_id, CANCEL)
    assert answer.status_code == 202
    assert answer.json() == {
        "id": run_id.lower(),
        "name": "weekly",
        "type": "Microsoft.Maintenance/applyUpdates",
        "properties": {"status": "Cancel", "resourceId": "weekly"},
    }
    assert fake.model.run_status(run_id) == "Cancelled"


def test_the_sdk_raises_on_the_spec_examples_202_although_the_run_is_cancelled(
    fake: FakeAzure, run_id: str, credential: ManagedIdentityCredential
) -> None:
    with client(fake, credential) as sdk, pytest.raises(HttpResponseError) as raised:
        cancel(sdk)
    assert raised.value.status_code == 202
    assert fake.model.run_status(run_id) == "Cancelled"


@pytest.mark.parametrize(
    ("status", "body", "word"),
    [
        (200, "run", "Cancelled"),
        (201, "run", "Cancelled"),
        (200, "spec", "Canceled"),
        (202, "run", "Cancel"),
        (200, "spec", "SomethingNew"),
        (200, "none", "Cancelled"),
        (202, "none", "Cancel"),
        (204, "spec", "Cancel"),
    ],
)
def test_each_cancel_answer_variant_is_played(
    fake: FakeAzure, run_id: str, status: int, body: str, word: str
) -> None:
    policy = fake.faults.cancel_policy
    policy.answer_status, policy.answer_body, policy.answer_word = status, body, word
    answer = raw_put(fake, run_id, CANCEL)
    assert answer.status_code == status
    if body == "none" or status == 204:
        assert answer.content == b""
    else:
        assert answer.json()["properties"]["status"] == word
        assert answer.json()["type"] == "Microsoft.Maintenance/applyUpdates"
    assert fake.model.run_status(run_id) == "Cancelled"


def test_a_cancel_answer_that_is_not_2xx_is_refused_as_a_setting() -> None:
    with pytest.raises(ValueError, match="2xx"):
        CancelPolicy(answer_status=409)
    with pytest.raises(ValueError, match="answer_body"):
        CancelPolicy(answer_body="xml")


@pytest.mark.parametrize("status", [502, 0])
def test_a_cancel_can_be_applied_and_its_answer_lost(
    fake: FakeAzure, run_id: str, status: int
) -> None:
    fake.faults.add_error("maintenance.cancel", status, times=1, after_applying=True)
    if status == 0:
        with pytest.raises(requests.ConnectionError):
            raw_put(fake, run_id, CANCEL)
    else:
        assert raw_put(fake, run_id, CANCEL).status_code == 502
    assert fake.model.run_status(run_id) == "Cancelled"
    assert raw_put(fake, run_id, CANCEL).status_code == 200  # already cancelled: 200 again


def test_the_run_status_before_t_is_a_scenario_setting(
    start_fake: Callable[..., FakeAzure], clock: ManualClock
) -> None:
    scenario = small_scenario()
    scenario["settings"]["status_before_start"] = "InProgress"
    fake = start_fake(scenario, clock=clock)
    configuration = fake.model.configurations[0].id
    run = fake.model.create_run(configuration, START, [])
    assert fake.model.run_status(run.correlation_id) == "InProgress"  # T-30
    clock.set(START - dt.timedelta(minutes=41))
    assert fake.model.run_status(run.correlation_id) == "Pending"  # before T-40
    clock.set(START + dt.timedelta(minutes=1))
    assert fake.model.run_status(run.correlation_id) == "InProgress"


@pytest.mark.parametrize("api_version", ["2023-09-01-preview", "2023-10-01-preview", "2025-11-01"])
def test_every_api_version_with_cancel_is_accepted(
    fake: FakeAzure, credential: ManagedIdentityCredential, api_version: str
) -> None:
    answer_as_later_revisions(fake)
    with client(fake, credential, api_version=api_version) as sdk:
        assert cancel(sdk).status == "Cancelled"


def test_an_api_version_without_cancel_is_refused_with_400(
    fake: FakeAzure, credential: ManagedIdentityCredential, run_id: str
) -> None:
    with (
        client(fake, credential, api_version="2023-04-01") as sdk,
        pytest.raises(HttpResponseError) as raised,
    ):
        cancel(sdk)
    assert raised.value.status_code == 400
    assert fake.model.run_status(run_id) == "InProgress"  # T−30: the default variant


def test_path_segments_and_body_keys_match_case_insensitively(fake: FakeAzure, run_id: str) -> None:
    lowered_path = (
        run_id.lower()
    )  # resourcegroups, microsoft.maintenance, maintenanceconfigurations
    assert "/resourcegroups/" in lowered_path
    answer = raw_put(fake, lowered_path, {"Properties": {"Status": "Cancel"}})
    assert answer.status_code == 202
    assert answer.json()["properties"]["status"] == "Cancel"


def test_a_cancel_after_the_cut_off_is_refused_with_409(
    fake: FakeAzure, run_id: str, clock: ManualClock, maintenance: MaintenanceManagementClient
) -> None:
    clock.set(START - dt.timedelta(minutes=9))  # cut-off defaults to T-10
    with pytest.raises(HttpResponseError) as raised:
        cancel(maintenance)
    assert raised.value.status_code == 409
    assert raised.value.error is not None
    assert raised.value.error.code == "CancellationNotAllowed"
    assert "cut-off" in str(raised.value.error.message)
    assert fake.model.run_status(run_id) == "InProgress"  # T−30: the default variant


def test_a_cancel_at_the_cut_off_itself_is_still_honoured(
    fake: FakeAzure, run_id: str, clock: ManualClock, maintenance: MaintenanceManagementClient
) -> None:
    clock.set(START - dt.timedelta(minutes=10))
    assert cancel(maintenance).status == "Cancelled"


def test_cancelling_an_unknown_run_is_not_found(maintenance: MaintenanceManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        cancel(maintenance, "20261208030000")
    assert raised.value.status_code == 404


def test_cancelling_twice_answers_cancelled_again_unless_configured_as_conflict(
    fake: FakeAzure, maintenance: MaintenanceManagementClient
) -> None:
    cancel(maintenance)
    assert cancel(maintenance).status == "Cancelled"
    fake.faults.cancel_policy.already_cancelled = "conflict"
    with pytest.raises(HttpResponseError) as raised:
        cancel(maintenance)
    assert raised.value.status_code == 409


def test_a_forced_refusal_answers_the_configured_error(
    fake: FakeAzure, run_id: str, maintenance: MaintenanceManagementClient
) -> None:
    fake.faults.cancel_policy.refuse = {"status": 400, "code": "BadRequest", "message": "not now"}
    with pytest.raises(HttpResponseError) as raised:
        cancel(maintenance)
    assert (raised.value.status_code, raised.value.error.code if raised.value.error else None) == (
        400,
        "BadRequest",
    )
    assert fake.model.run_status(run_id) == "InProgress"  # T−30: the default variant


def test_a_put_that_is_not_a_cancel_is_refused(fake: FakeAzure, run_id: str) -> None:
    answer = raw_put(fake, run_id, {"properties": {"status": "Pending"}})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadRequest"


def test_get_returns_the_run(
    fake: FakeAzure, maintenance: MaintenanceManagementClient, clock: ManualClock
) -> None:
    def status() -> str | None:
        got = maintenance.apply_updates.get(
            "rg-maintenance",
            "Microsoft.Maintenance",
            "maintenanceConfigurations",
            "weekly",
            RUN_NAME,
        )
        assert got.name == RUN_NAME
        return None if got.properties is None else got.properties.status

    assert status() == "InProgress"  # T−30: by default the run reads InProgress from T−40
    fake.model.settings.status_before_start = "Pending"
    assert status() == "Pending"
    clock.set(START + dt.timedelta(minutes=1))
    assert status() == "InProgress"


@pytest.mark.parametrize("variant", ["InProgress", "Pending"])
def test_before_t_minus_40_a_run_reads_pending_and_from_t_in_progress(
    fake: FakeAzure, run_id: str, clock: ManualClock, variant: str
) -> None:
    fake.model.settings.status_before_start = variant
    clock.set(START - dt.timedelta(minutes=41))
    assert fake.model.run_status(run_id) == "Pending"
    clock.set(START - dt.timedelta(minutes=40))
    assert fake.model.run_status(run_id) == variant
    clock.set(START - dt.timedelta(seconds=1))
    assert fake.model.run_status(run_id) == variant
    clock.set(START)
    assert fake.model.run_status(run_id) == "InProgress"


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("timestamp", "2026-12-01T03:00:00Z"),
        ("correlation_id", "run id"),
        ("run_name", RUN_NAME),
        ("absent", None),
    ],
)
def test_maintenance_run_id_of_patch_results_follows_the_variant(
    fake: FakeAzure, run_id: str, clock: ManualClock, variant: str, expected: str | None
) -> None:
    fake.model.settings.maintenance_run_id = variant
    clock.set(START + dt.timedelta(hours=1))
    fake.model.complete_run(run_id, status="Succeeded", results_lag=0)
    rows = arg_rows(fake, "patchinstallationresources | project properties, id | order by id asc")
    assert len(rows) == 5
    wanted = run_id if expected == "run id" else expected
    assert {r["properties"].get("maintenanceRunId") for r in rows} == {wanted}
    assert all(("maintenanceRunId" in r["properties"]) is (wanted is not None) for r in rows)


def test_a_completed_run_has_patch_results_and_machine_statuses_in_resource_graph(
    fake: FakeAzure, run_id: str, clock: ManualClock
) -> None:
    batch = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")
    clock.set(START + dt.timedelta(hours=1))
    fake.model.complete_run(
        run_id,
        status="CompletedWithWarnings",
        results={
            batch: PatchResult(
                batch, run_id, status="Failed", failed_patch_count=2, reboot_status="Failed"
            )
        },
    )
    fake.model.settings.maintenance_run_id = "correlation_id"
    fake.model.settings.machine_status_field = "present"
    results = arg_rows(
        fake,
        "patchinstallationresources | where type has 'patchinstallationresults' "
        f"| where properties.maintenanceRunId =~ '{run_id}' "
        "| project id, properties | order by id asc",
    )
    assert len(results) == 5  # three VMs and dev-01 in the other subscription, plus the Arc server
    failed = [r for r in results if r["id"].lower().startswith(batch.lower())]
    assert failed[0]["properties"]["status"] == "Failed"
    assert failed[0]["properties"]["failedPatchCount"] == 2
    assert {r["properties"]["status"] for r in results if r not in failed} == {"Succeeded"}
    statuses = arg_rows(
        fake,
        "maintenanceresources | where properties.correlationId =~ "
        f"'{run_id}' | summarize count() by status = tostring(properties.status), type",
    )
    assert {(s["type"].rsplit("/", 1)[-1], s["status"], s["count_"]) for s in statuses} == {
        ("applyupdates", "CompletedWithWarnings", 1),
        ("applyupdates", "Succeeded", 4),
        ("applyupdates", "Failed", 1),
    }


def test_a_platform_cancellation_reads_as_an_internal_platform_failure(
    fake: FakeAzure, run_id: str
) -> None:
    fake.model.cancel_run(run_id, by="platform")
    [run] = arg_rows(
        fake,
        f"maintenanceresources | where id =~ '{run_id}' "
        "| project message = tostring(properties.error.message)",
    )
    assert "internal platform failure" in run["message"]
