"""The fake's KQL evaluator: the operators, predicates and functions the app's queries use, and
a refusal (KqlError -> 400 upstream) for what it cannot parse or resolve."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sandbox.fake_azure.query_engine import (
    KqlSemanticError,
    KqlSyntaxError,
    QueryResult,
    Table,
    run_query,
)

NOW = dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC)
RUN = (
    "/subscriptions/1b7a/resourceGroups/ops/providers/Microsoft.Maintenance/"
    "maintenanceConfigurations/weekly/providers/microsoft.maintenance/applyupdates/20261201030000"
)
OTHER_RUN = RUN.replace("weekly/", "monthly/")
COLUMNS = ("id", "name", "type", "subscriptionId", "tags", "properties")


def _record(name: str, correlation: str, status: str, tags: dict[str, str]) -> dict[str, Any]:
    vm = f"/subscriptions/1b7a/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"
    return {
        "id": f"{vm}/providers/microsoft.maintenance/applyupdates/20261201030000",
        "name": name,
        "type": "microsoft.maintenance/applyupdates",
        "subscriptionId": "1b7a",
        "tags": tags,
        "properties": {"correlationId": correlation, "resourceId": vm, "status": status},
    }


ROWS = [
    _record("vm-a", RUN, "Pending", {"env": "prod", "owner": "ops"}),
    _record("vm-b", RUN.upper(), "InProgress", {"env": "dev"}),
    _record("vm-c", OTHER_RUN, "Succeeded", {}),
    {
        "id": "/subscriptions/1b7a/resourceGroups/ops/providers/Microsoft.Maintenance/"
        "maintenanceConfigurations/weekly",
        "name": "weekly",
        "type": "microsoft.maintenance/maintenanceconfigurations",
        "subscriptionId": "1b7a",
        "tags": {},
        "properties": {"maintenanceScope": "InGuestPatch"},
    },
]
HEARTBEATS = Table(
    "Heartbeat",
    ("TimeGenerated", "Computer", "_ResourceId"),
    [
        {"TimeGenerated": NOW - dt.timedelta(minutes=m), "Computer": c, "_ResourceId": f"/x/{c}"}
        for c, m in (("vm-a", 30), ("vm-a", 2), ("vm-b", 90), ("vm-c", 5))
    ],
)


def query(text: str) -> QueryResult:
    tables = {
        "maintenanceresources": Table("maintenanceresources", COLUMNS, ROWS),
        "Heartbeat": HEARTBEATS,
    }
    return run_query(text, tables, now=NOW)


def names(result: QueryResult) -> list[Any]:
    return [row["name"] for row in result.rows]


def test_the_tutorial_machines_of_a_run_query_matches_case_insensitively_and_projects() -> None:
    result = query(
        "maintenanceresources\n"
        "| where type =~ 'microsoft.maintenance/applyupdates'\n"
        f"| where properties.correlationId =~ '{RUN.lower()}'\n"
        "| project id, resourceId = tostring(properties.resourceId)"
    )
    assert result.columns == ("id", "resourceId")
    assert [r["resourceId"].rsplit("/", 1)[1] for r in result.rows] == ["vm-a", "vm-b"]


def test_equality_is_case_sensitive_and_tilde_equality_is_not() -> None:
    assert names(query(f"maintenanceresources | where properties.correlationId == '{RUN}'")) == [
        "vm-a"
    ]
    assert names(query("maintenanceresources | where name != 'vm-a' and type !~ 'X'")) == [
        "vm-b",
        "vm-c",
        "weekly",
    ]


def test_has_matches_whole_terms_only() -> None:
    prefix = RUN.rsplit("/", 1)[0].split("/providers/microsoft.maintenance/applyupdates")[0]
    runs_of_weekly = f"{prefix}/providers/microsoft.maintenance/applyupdates/"
    assert names(
        query(f"maintenanceresources | where properties.correlationId has '{runs_of_weekly}'")
    ) == [
        "vm-a",
        "vm-b",
    ]
    # "week" is only part of the term "weekly": has refuses, contains accepts.
    assert names(query("maintenanceresources | where name has 'week'")) == []
    assert names(query("maintenanceresources | where name contains 'WEEK'")) == ["weekly"]
    assert names(query("maintenanceresources | where name !has 'vm'")) == ["weekly"]


def test_startswith_in_and_in_tilde() -> None:
    assert names(
        query("maintenanceresources | where name startswith 'VM-' | where name in ('vm-a', 'vm-c')")
    ) == [
        "vm-a",
        "vm-c",
    ]
    assert names(query("maintenanceresources | where name in~ ('VM-B', 'WEEKLY')")) == [
        "vm-b",
        "weekly",
    ]
    assert names(query("maintenanceresources | where name !in~ ('VM-B', 'WEEKLY')")) == [
        "vm-a",
        "vm-c",
    ]
    assert names(query("maintenanceresources | where name !in ('vm-a')")) == [
        "vm-b",
        "vm-c",
        "weekly",
    ]


def test_not_or_and_parentheses_combine_as_in_kusto() -> None:
    result = query(
        "maintenanceresources | where not(name == 'vm-a') and (properties.status == 'Succeeded' "
        "or tags.env == 'dev')"
    )
    assert names(result) == ["vm-b", "vm-c"]


def test_tags_by_index_and_by_member_and_isnotempty() -> None:
    assert names(query("maintenanceresources | where tags['env'] == 'prod'")) == ["vm-a"]
    assert names(query("maintenanceresources | where isnotempty(tags.owner)")) == ["vm-a"]
    assert names(query("maintenanceresources | where isempty(tostring(tags.env))")) == [
        "vm-c",
        "weekly",
    ]


def test_string_literals_in_double_quotes_with_escapes() -> None:
    assert names(query('maintenanceresources | where name == "vm-\\u0061"')) == ["vm-a"]
    assert names(query(r"maintenanceresources | where name != 'it\'s' | take 1")) == ["vm-a"]
    assert names(query("maintenanceresources | where name == @'vm-b'")) == ["vm-b"]


def test_extend_tolower_order_and_take() -> None:
    result = query(
        "maintenanceresources | extend status = tolower(tostring(properties.status)) "
        "| where isnotempty(status) | order by status asc | project name, status | take 2"
    )
    assert result.rows == [
        {"name": "vm-b", "status": "inprogress"},
        {"name": "vm-a", "status": "pending"},
    ]
    assert result.limited
    assert names(query("maintenanceresources | order by name desc | limit 1")) == ["weekly"]
    assert names(query("maintenanceresources | sort by name")) == ["weekly", "vm-c", "vm-b", "vm-a"]


def test_project_of_a_dynamic_path_is_named_after_the_path() -> None:
    result = query(
        "maintenanceresources | where name == 'vm-a' "
        "| project properties.status, tostring(tags.env)"
    )
    assert result.rows == [{"properties_status": "Pending", "tags_env": "prod"}]


def test_summarize_count_by_a_column_and_the_count_operator() -> None:
    result = query(
        "maintenanceresources | summarize machines = count() by type | order by type asc"
    )
    assert result.rows == [
        {"type": "microsoft.maintenance/applyupdates", "machines": 3},
        {"type": "microsoft.maintenance/maintenanceconfigurations", "machines": 1},
    ]
    assert query("maintenanceresources | count").rows == [{"Count": 4}]


def test_heartbeat_summarize_max_by_resource_with_datetime_and_ago() -> None:
    result = query(
        "Heartbeat | where TimeGenerated > datetime(2026-12-01T01:30:00.0000000Z) "
        "| where _ResourceId in~ ('/X/VM-A', '/x/vm-b', '/x/vm-c') "
        "| summarize LastHeartbeat = max(TimeGenerated) by _ResourceId | order by _ResourceId asc"
    )
    assert result.rows == [
        {"_ResourceId": "/x/vm-a", "LastHeartbeat": NOW - dt.timedelta(minutes=2)},
        {"_ResourceId": "/x/vm-c", "LastHeartbeat": NOW - dt.timedelta(minutes=5)},
    ]
    recent = query(
        "Heartbeat | where TimeGenerated >= ago(10m) | summarize max(TimeGenerated) by Computer"
    )
    assert sorted(r["Computer"] for r in recent.rows) == ["vm-a", "vm-c"]
    assert "max_TimeGenerated" in recent.columns


@pytest.mark.parametrize(
    "text",
    [
        "maintenanceresources | where",
        "maintenanceresources | where name == 'unterminated",
        "maintenanceresources | where name == 'a' | frobnicate",
        "maintenanceresources | project a = ",
        "maintenanceresources | where name == 'a' extra",
        "| where name == 'a'",
        "",
    ],
)
def test_unparseable_queries_are_refused_as_syntax_errors(text: str) -> None:
    with pytest.raises(KqlSyntaxError):
        query(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("maintenanceresources | where nosuchcolumn == 'a'", "nosuchcolumn"),
        ("maintenanceresources | project name | where type == 'a'", "type"),
        ("maintenanceresources | where frobnicate(name)", "frobnicate"),
        ("resources | take 1", "resources"),
        ("maintenanceresources | where tostring(name, name) == 'a'", "tostring"),
        ("maintenanceresources | where max(name) == 'a'", "summarize"),
    ],
)
def test_unknown_names_are_refused_as_semantic_errors(text: str, fragment: str) -> None:
    with pytest.raises(KqlSemanticError, match=fragment):
        query(text)


def test_a_syntax_error_reports_where_it_happened() -> None:
    with pytest.raises(KqlSyntaxError) as raised:
        query("maintenanceresources | where name = = 'a'")
    assert raised.value.position is not None
    assert raised.value.position > len("maintenanceresources | where name")


def test_every_query_the_app_builds_runs_on_the_fake_tables_and_finds_the_run() -> None:
    """Each builder in shared/adapters/kql.py, fed the demo scenario's ids, parses and answers."""
    from sandbox.fake_azure.faults import FaultPlan
    from sandbox.fake_azure.model import AzureModel, ManualClock
    from sandbox.fake_azure.scenario import apply_scenario, load_scenario
    from shared.adapters import kql
    from shared.domain.ids import ConfigurationId, MachineId, RunId

    clock = ManualClock(NOW)
    model = AzureModel(clock=clock)
    applied = apply_scenario(load_scenario("demo"), model, FaultPlan())
    run = model.get_run(applied.runs["linux"])
    clock.advance(run.scheduled_start - NOW + dt.timedelta(minutes=5))
    model.complete_run(run.correlation_id, results_lag=0)
    clock.advance(120)
    machines = [MachineId.parse(m) for m in run.machine_ids]
    for machine in run.machine_ids:
        model.add_heartbeat(machine, clock.now())
    run_id = RunId.parse(run.correlation_id)
    configuration = ConfigurationId.parse(run.configuration_id)
    since, until = run.scheduled_start - dt.timedelta(hours=1), clock.now()

    def rows(text: str) -> list[dict[str, Any]]:
        names = ("resources", "maintenanceresources", "patchinstallationresources")
        tables = {name: model.arg_table(name) for name in names}
        tables["Heartbeat"] = model.heartbeat_table()
        return run_query(text, {k: v for k, v in tables.items() if v}, now=until).rows

    assert len(machines) > 1
    assert len(rows(kql.machines_of_run(run_id))) == len(machines)
    runs = [r["id"].lower() for r in rows(kql.runs_of_configurations([configuration]))]
    assert run.correlation_id.lower() in runs
    assert len(rows(kql.patch_results_of_run(run_id, since, until))) == len(machines)
    assert len(rows(kql.heartbeats_since(machines, since))) == len(machines)
