"""The fake Resource Graph through the real azure-mgmt-resourcegraph client: paging, scoping,
query errors, lag, quota headers and throttling."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions, QueryResponse

from sandbox.fake_azure import FakeAzure, ManualClock, fleet_scenario

from .conftest import FAST_RETRIES, OTHER_SUBSCRIPTION, SUBSCRIPTION

ARG_URL = "/providers/Microsoft.ResourceGraph/resources"


def machines_of_run(run_id: str) -> str:
    return (
        "maintenanceresources\n"
        "| where type =~ 'microsoft.maintenance/applyupdates'\n"
        f"| where properties.correlationId =~ '{run_id}'\n"
        "| project id, resourceId = tostring(properties.resourceId)\n"
        "| order by id asc"
    )


@pytest.fixture
def arg(fake: FakeAzure, credential: ManagedIdentityCredential) -> Iterator[ResourceGraphClient]:
    with ResourceGraphClient(
        credential, base_url=fake.url, credential_scopes=[fake.credential_scope], **FAST_RETRIES
    ) as client:
        yield client


def ask(
    client: ResourceGraphClient, text: str, subscriptions: list[str], **options: Any
) -> QueryResponse:
    return client.resources(
        QueryRequest(
            subscriptions=subscriptions, query=text, options=QueryRequestOptions(**options)
        )
    )


def names(answer: QueryResponse) -> list[str]:
    return [row["name"] for row in cast(list[dict[str, str]], answer.data)]


def raw_query(
    fake: FakeAzure, body: dict[str, Any], api_version: str = "2021-03-01"
) -> requests.Response:
    return requests.post(
        f"{fake.url}{ARG_URL}",
        params={"api-version": api_version},
        json=body,
        headers={"Authorization": f"Bearer {fake.issue_token()}"},
        verify=str(fake.ca_path),
        timeout=10,
    )


def test_paging_over_2500_machines_returns_each_machine_once_in_pages_of_1000(
    start_fake: Callable[..., FakeAzure],
) -> None:
    fake = start_fake(fleet_scenario(2500, subscriptions=2))
    subscriptions = [s.subscription_id for s in fake.model.subscriptions]
    seen: list[str] = []
    record_ids: list[str] = []
    counts: list[int] = []
    with (
        ManagedIdentityCredential() as credential,
        ResourceGraphClient(
            credential, base_url=fake.url, credential_scopes=[fake.credential_scope]
        ) as client,
    ):
        skip_token = None
        while True:
            page = ask(
                client,
                machines_of_run(fake.run_id("fleet")),
                subscriptions,
                top=1000,
                skip_token=skip_token,
            )
            assert page.total_records == 2500
            assert page.result_truncated == "false"
            counts.append(page.count)
            rows = cast(list[dict[str, str]], page.data)
            seen.extend(row["resourceId"] for row in rows)
            record_ids.extend(row["id"] for row in rows)
            skip_token = page.skip_token
            if not skip_token:
                break
    assert counts == [1000, 1000, 500]
    assert len(set(seen)) == 2500
    assert record_ids == sorted(record_ids)  # `order by id asc` holds across pages
    calls = fake.requests_matching("POST", "ResourceGraph")
    assert [("$skipToken" in c.body["options"]) for c in calls] == [False, True, True]
    assert {c.body["options"]["$top"] for c in calls} == {1000}


def test_a_query_sees_only_the_subscriptions_named_in_the_request(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    text = (
        "resources | where type =~ 'microsoft.compute/virtualmachines' "
        "| project name | order by name asc"
    )
    assert names(ask(arg, text, [OTHER_SUBSCRIPTION])) == ["dev-01"]
    assert names(ask(arg, text, [SUBSCRIPTION])) == [
        "batch-01",
        "batch-02",
        "web-01",
    ]


def test_vm_records_carry_the_power_state_as_resource_graph_reports_it(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    text = (
        "resources | where type =~ 'microsoft.compute/virtualmachines' "
        "| project name, resourceGroup, "
        "state = tostring(properties.extended.instanceView.powerState.code)"
        " | order by name asc"
    )
    rows = cast(list[dict[str, str]], ask(arg, text, [SUBSCRIPTION]).data)
    assert rows[0] == {
        "name": "batch-01",
        "resourceGroup": "rg-batch",
        "state": "PowerState/deallocated",
    }
    assert rows[2]["state"] == "PowerState/running"


def test_take_disables_paging_and_marks_the_result_truncated(
    start_fake: Callable[..., FakeAzure],
) -> None:
    fake = start_fake(fleet_scenario(1500, subscriptions=1))
    answer = raw_query(fake, {"query": "resources | project id | take 1200"})
    body = answer.json()
    assert (body["totalRecords"], body["count"], body["resultTruncated"]) == (1200, 1000, "true")
    assert "$skipToken" not in body


def test_an_unparseable_query_is_a_400_in_resource_graph_shape(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    with pytest.raises(HttpResponseError) as raised:
        ask(arg, "resources | where name == ", [SUBSCRIPTION])
    assert raised.value.status_code == 400
    assert raised.value.error is not None
    assert raised.value.error.code == "BadRequest"
    body = raw_query(fake, {"query": "resources | summarize by"}).json()
    assert body["error"]["code"] == "BadRequest"
    assert body["error"]["details"][0]["code"] == "InvalidQuery"
    assert body["error"]["details"][1]["code"] == "ParserFailure"


def test_an_unknown_column_is_a_400_too(fake: FakeAzure) -> None:
    answer = raw_query(fake, {"query": "resources | where nosuch == 'x'"})
    assert answer.status_code == 400
    assert answer.json()["error"]["details"][0]["code"] == "InvalidQuery"


def test_every_answer_carries_the_user_quota_headers(fake: FakeAzure) -> None:
    fake.faults.add_error("arg", 500, times=1)
    failed = raw_query(fake, {"query": "resources | take 1"})
    ok = raw_query(fake, {"query": "resources | take 1"})
    refused = raw_query(fake, {"query": "resources |"})
    wrong_version = raw_query(fake, {"query": "resources"}, api_version="2015-01-01")
    assert [a.status_code for a in (failed, ok, refused, wrong_version)] == [500, 200, 400, 400]
    assert [
        a.headers["x-ms-user-quota-remaining"] for a in (failed, ok, refused, wrong_version)
    ] == [
        "14",
        "13",
        "12",
        "11",
    ]
    assert refused.headers["x-ms-user-quota-resets-after"].startswith("00:00:0")


def test_table_result_format_answers_columns_and_rows(fake: FakeAzure) -> None:
    body = raw_query(
        fake,
        {
            "subscriptions": [OTHER_SUBSCRIPTION],
            "query": "resources | where type =~ 'microsoft.compute/virtualmachines' "
            "| project name, tags",
            "options": {"resultFormat": "table"},
        },
    ).json()
    assert body["data"]["columns"] == [
        {"name": "name", "type": "string"},
        {"name": "tags", "type": "object"},
    ]
    assert body["data"]["rows"] == [["dev-01", {"patch-group": "weekly"}]]


def test_api_versions_the_service_knows_are_accepted_others_refused(fake: FakeAzure) -> None:
    assert (
        raw_query(fake, {"query": "resources | take 1"}, api_version="2022-10-01").status_code
        == 200
    )
    refused = raw_query(fake, {"query": "resources | take 1"}, api_version="2015-01-01")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "NoRegisteredProviderFound"


def test_a_skip_token_of_another_query_is_refused(start_fake: Callable[..., FakeAzure]) -> None:
    fake = start_fake(fleet_scenario(1100, subscriptions=1))
    first = raw_query(fake, {"query": "resources | project id"}).json()
    other = raw_query(
        fake,
        {"query": "resources | project id, name", "options": {"$skipToken": first["$skipToken"]}},
    )
    assert other.status_code == 400
    assert other.json()["error"]["details"][0]["code"] == "InvalidSkipToken"


def test_run_records_appear_in_resource_graph_only_after_the_lag(
    start_fake: Callable[..., FakeAzure],
) -> None:
    clock = ManualClock(dt.datetime(2026, 12, 1, 2, 25, tzinfo=dt.UTC))
    fake = start_fake(clock=clock)
    configuration = fake.model.configurations[0].id
    machines = fake.model.assigned_machines(configuration)
    run = fake.model.create_run(
        configuration,
        dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC),
        machines,
        arg_lag=10,
        machines_lag=45,
    )
    text = machines_of_run(run.correlation_id)
    runs = (
        "maintenanceresources "
        "| where type =~ 'microsoft.maintenance/maintenanceconfigurations/applyupdates'"
    )

    def count(query: str) -> int:
        return int(raw_query(fake, {"query": query}).json()["totalRecords"])

    assert (count(runs), count(text)) == (1, 0)  # the scenario's own run; ours is not visible yet
    clock.advance(11)
    assert (count(runs), count(text)) == (2, 0)
    clock.advance(35)
    assert count(text) == len(machines) == 5


def test_429_with_retry_after_is_retried_after_the_advertised_wait(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    rule = fake.faults.add_error("arg", 429, times=1, retry_after=1)
    started = time.monotonic()
    answer = ask(arg, "resources | take 1", [SUBSCRIPTION])
    assert time.monotonic() - started >= 0.9
    assert answer.count == 1
    assert rule.fired == 1
    assert [c.status for c in fake.requests_matching("POST", "ResourceGraph")] == [429, 200]


def test_a_429_carries_quota_headers_with_or_without_retry_after(fake: FakeAzure) -> None:
    fake.faults.add_error("arg", 429, times=1, retry_after=3)
    fake.faults.add_error("arg", 429, times=1)
    with_header = raw_query(fake, {"query": "resources"})
    without_header = raw_query(fake, {"query": "resources"})
    assert with_header.headers["Retry-After"] == "3"
    assert with_header.headers["x-ms-user-quota-remaining"] == "0"
    assert with_header.headers["x-ms-user-quota-resets-after"] == "00:00:03"
    assert "Retry-After" not in without_header.headers
    assert without_header.json()["error"]["code"] == "RateLimiting"


def test_429_without_retry_after_reaches_the_caller_because_azure_core_never_retries_it_on_post(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    # azure-core retries a POST only on 500/503/504 or when Retry-After is present: an adapter
    # has to handle this 429 itself.
    fake.faults.add_error("arg", 429, times=1)
    with pytest.raises(HttpResponseError) as raised:
        ask(arg, "resources | take 1", [SUBSCRIPTION])
    assert raised.value.status_code == 429
    assert [c.status for c in fake.requests_matching("POST", "ResourceGraph")] == [429]
    assert ask(arg, "resources | take 1", [SUBSCRIPTION]).count == 1


def test_500_and_503_are_answered_n_times_then_the_query_succeeds(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    fake.faults.add_error("arg", 503, times=2)
    fake.faults.add_error("arg", 500, times=1)
    assert ask(arg, "resources | take 1", [SUBSCRIPTION]).count == 1
    assert [c.status for c in fake.requests_matching("POST", "ResourceGraph")] == [
        503,
        503,
        500,
        200,
    ]


def test_a_persistent_503_surfaces_after_the_clients_retries(
    fake: FakeAzure, arg: ResourceGraphClient
) -> None:
    fake.faults.add_error("arg", 503)
    with pytest.raises(HttpResponseError) as raised:
        ask(arg, "resources | take 1", [SUBSCRIPTION])
    assert raised.value.status_code == 503
    assert len(fake.requests_matching("POST", "ResourceGraph")) == 1 + FAST_RETRIES["retry_status"]


def test_an_enforced_user_quota_throttles_the_sixteenth_query(fake: FakeAzure) -> None:
    fake.faults.set_arg_quota(limit=15, window_seconds=5)
    statuses = [raw_query(fake, {"query": "resources | take 1"}).status_code for _ in range(16)]
    assert statuses == [200] * 15 + [429]
    refused = fake.requests_matching("POST", "ResourceGraph", status=429)
    assert len(refused) == 1
