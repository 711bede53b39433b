"""The fake Log Analytics query API through the real LogsQueryClient: Heartbeat queries, the
timespan, partial results and refusals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.monitor.query import (
    LogsQueryClient,
    LogsQueryPartialResult,
    LogsQueryResult,
    LogsQueryStatus,
)

from sandbox.fake_azure import FakeAzure, ManualClock
from sandbox.fake_azure.model import HEARTBEAT_COLUMNS
from sandbox.fake_azure.query_engine import Table, run_query

from .conftest import (
    FAST_RETRIES,
    OTHER_SUBSCRIPTION,
    SUBSCRIPTION,
    WORKSPACE_ID,
    small_scenario,
    vm_id,
)

WEB_01 = vm_id(SUBSCRIPTION, "rg-web", "web-01")
DEV_01 = vm_id(OTHER_SUBSCRIPTION, "rg-dev", "dev-01")


@pytest.fixture
def logs(fake: FakeAzure, credential: ManagedIdentityCredential) -> Iterator[LogsQueryClient]:
    with LogsQueryClient(credential, endpoint=fake.url, **FAST_RETRIES) as client:
        yield client


def last_heartbeats(since: dt.datetime, machines: list[str]) -> str:
    listed = ", ".join(f"'{m}'" for m in machines)
    return (
        "Heartbeat\n"
        f"| where TimeGenerated > datetime({since.strftime('%Y-%m-%dT%H:%M:%S.%fZ')})\n"
        f"| where _ResourceId in~ ({listed})\n"
        "| summarize LastHeartbeat = max(TimeGenerated) by _ResourceId"
    )


def test_last_heartbeat_per_machine_with_typed_columns(
    fake: FakeAzure, logs: LogsQueryClient
) -> None:
    now = fake.model.now()
    fake.model.add_heartbeat(DEV_01, now - dt.timedelta(minutes=40))
    fake.model.add_heartbeat(DEV_01, now - dt.timedelta(minutes=3))
    result = logs.query_workspace(
        WORKSPACE_ID,
        last_heartbeats(now - dt.timedelta(minutes=30), [WEB_01, DEV_01]),
        timespan=dt.timedelta(hours=1),
    )
    assert isinstance(result, LogsQueryResult)
    assert result.status == LogsQueryStatus.SUCCESS
    [table] = result.tables
    assert (table.name, table.columns, table.columns_types) == (
        "PrimaryResult",
        ["_ResourceId", "LastHeartbeat"],
        ["string", "datetime"],
    )
    latest = {row[0]: row[1] for row in table.rows}
    assert set(latest) == {WEB_01.lower(), DEV_01.lower()}  # Log Analytics lower-cases _ResourceId
    assert abs(latest[DEV_01.lower()] - (now - dt.timedelta(minutes=3))) < dt.timedelta(seconds=1)
    [call] = fake.requests_matching("POST", f"^/v1/workspaces/{WORKSPACE_ID}/query$")
    assert call.body["timespan"] == "PT3600.0S"
    assert call.token_resource == fake.url


def test_the_timespan_limits_the_rows_searched(fake: FakeAzure, logs: LogsQueryClient) -> None:
    now = fake.model.now()
    fake.model.add_heartbeat(DEV_01, now - dt.timedelta(hours=3))
    query = f"Heartbeat | where _ResourceId =~ '{DEV_01}' | count"
    narrow = logs.query_workspace(WORKSPACE_ID, query, timespan=dt.timedelta(hours=1))
    wide = logs.query_workspace(WORKSPACE_ID, query, timespan=(now - dt.timedelta(hours=4), now))
    assert isinstance(narrow, LogsQueryResult) and isinstance(wide, LogsQueryResult)
    assert (narrow.tables[0].rows[0][0], wide.tables[0].rows[0][0]) == (0, 1)


def test_partial_mode_answers_an_error_beside_the_tables(
    fake: FakeAzure, logs: LogsQueryClient
) -> None:
    fake.model.add_heartbeat(DEV_01)
    fake.faults.set_log_analytics_partial(True, keep_rows=1)
    result = logs.query_workspace(
        WORKSPACE_ID,
        "Heartbeat | summarize max(TimeGenerated) by _ResourceId",
        timespan=dt.timedelta(hours=1),
    )
    assert isinstance(result, LogsQueryPartialResult)
    assert result.status == LogsQueryStatus.PARTIAL
    assert result.partial_error is not None
    assert result.partial_error.code == "PartialError"
    assert len(result.partial_data[0].rows) == 1


def test_a_bad_query_is_a_400(logs: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        logs.query_workspace(WORKSPACE_ID, "Heartbeat | where", timespan=None)
    assert raised.value.status_code == 400


def test_table_names_are_case_sensitive_as_in_log_analytics(logs: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        logs.query_workspace(WORKSPACE_ID, "heartbeat | take 1", timespan=None)
    assert raised.value.status_code == 400


def test_an_unknown_workspace_is_not_found(logs: LogsQueryClient) -> None:
    with pytest.raises(HttpResponseError) as raised:
        logs.query_workspace(
            "00000000-0000-4000-8000-000000000000", "Heartbeat | take 1", timespan=None
        )
    assert raised.value.status_code == 404


def test_a_503_is_retried_by_the_client(fake: FakeAzure, logs: LogsQueryClient) -> None:
    fake.faults.add_error("loganalytics.query", 503, times=1)
    result = logs.query_workspace(WORKSPACE_ID, "Heartbeat | count", timespan=dt.timedelta(hours=1))
    assert isinstance(result, LogsQueryResult)
    assert [c.status for c in fake.requests_matching("POST", "/query$")] == [503, 200]


def test_a_started_vm_begins_to_send_heartbeats_one_interval_after_it_runs(
    start_fake: Callable[..., FakeAzure],
) -> None:
    clock = ManualClock(dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC))
    scenario = small_scenario()
    scenario["settings"]["auto_heartbeat_seconds"] = 60
    scenario["heartbeats"] = []
    fake = start_fake(scenario, clock=clock)
    batch = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")

    def last_seen() -> dict[str, dt.datetime]:
        rows = fake.model.heartbeat_table().rows
        query = "Heartbeat | summarize last = max(TimeGenerated) by _ResourceId"
        result = run_query(
            query, {"Heartbeat": Table("Heartbeat", HEARTBEAT_COLUMNS, rows)}, now=clock.now()
        )
        return {row["_ResourceId"]: row["last"] for row in result.rows}

    assert last_seen() == {}  # nothing has run a full interval yet
    fake.model.begin_power_operation(batch, "start")
    clock.advance(60)
    seen = last_seen()
    assert batch.lower() not in seen  # running for 59.7 s (start took 0.3 s): no report yet
    assert seen[WEB_01.lower()] == clock.now()  # running since the scenario began
    clock.advance(60)
    assert batch.lower() in last_seen()
    fake.model.set_power_state(batch, "deallocated")
    assert batch.lower() not in last_seen()
