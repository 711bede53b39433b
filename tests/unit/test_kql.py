from datetime import UTC, datetime

import pytest

from sandbox.fake_azure.kql_syntax import tokenize
from shared.adapters import kql
from shared.domain.ids import ConfigurationId, InvalidId, MachineId, RunId
from tests.builders import CONFIGURATION, CORRELATION_ID, SUBSCRIPTION

RUN = RunId.parse(CORRELATION_ID)
VM = MachineId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/Microsoft.Compute/"
    "virtualMachines/web-01"
)


def test_machines_query_is_the_tutorial_query_with_a_quoted_run_id() -> None:
    query = kql.machines_of_run(RUN)
    assert query.splitlines() == [
        "maintenanceresources",
        "| where type =~ 'microsoft.maintenance/applyupdates'",
        f"| where properties.correlationId =~ '{CORRELATION_ID}'",
        "| project id, resourceId = tostring(properties.resourceId), "
        "status = tostring(properties.status)",
        "| order by id asc",
    ]


def test_runs_query_covers_all_configurations_in_one_query() -> None:
    other = ConfigurationId.parse(CONFIGURATION.replace("weekly-linux", "monthly-win"))
    query = kql.runs_of_configurations([ConfigurationId.parse(CONFIGURATION), other])
    assert f"in~ ('{CONFIGURATION}', '{other.text}')" in query
    assert "maintenanceconfigurations/applyupdates" in query


def test_runs_query_always_names_its_configurations() -> None:
    # Never "every configuration in the subscriptions": other teams' runs live there too.
    query = kql.runs_of_configurations([ConfigurationId.parse(CONFIGURATION)])
    assert f"| where properties.maintenanceConfigurationId in~ ('{CONFIGURATION}')" in query


def test_patch_results_query_matches_run_id_run_name_or_the_time_window() -> None:
    query = kql.patch_results_of_run(
        RUN, datetime(2026, 12, 1, 2, 45, tzinfo=UTC), datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    )
    assert f"runId =~ '{CORRELATION_ID}'" in query
    assert f"runId =~ '{RUN.run_name}'" in query
    window = (
        "between (datetime(2026-12-01T02:45:00.000000Z) .. datetime(2026-12-01T08:00:00.000000Z))"
    )
    assert f"todatetime(properties.startDateTime) {window}" in query
    assert f"todatetime(properties.lastModifiedDateTime) {window}" in query


def test_patch_results_query_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        kql.patch_results_of_run(RUN, datetime(2026, 12, 1), datetime(2026, 12, 2, tzinfo=UTC))


def test_heartbeat_query_uses_utc_and_the_machine_ids() -> None:
    query = kql.heartbeats_since([VM], datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    assert "datetime(2026-12-01T07:00:00.000000Z)" in query
    assert f"_ResourceId in~ ('{VM.text}')" in query


INJECTIONS = [
    "a'b",
    'a"b',
    "a\\b",
    "a|b",
    "a b",
    "a;b",
    "x" * 600,
    "a`b",
    "a{b}",
    "' or 1==1 //",
    "\\' | take 1 //",
    "x\\",
    "@'verbatim'",
]
ARM_NAMES = [
    "rg-Ünïcødé.(prod)_東京",
    "wöchentlich.linux(1)-",
    "name.with.dots",
    "(parenthesised)",
]


@pytest.mark.parametrize("value", INJECTIONS + ARM_NAMES)
def test_literals_hold_any_printable_value_as_exactly_one_kql_string(value: str) -> None:
    literal = kql._literal(value)
    # The sandbox's KQL lexer follows KQL's string-literal rules: the whole literal is one
    # string token whose value is the input, so nothing after it can become query text.
    tokens = tokenize(literal)
    assert [t.kind for t in tokens] == ["string", "eof"]
    assert tokens[0].value == value
    assert tokens[0].text == literal


@pytest.mark.parametrize("value", ["", "a\nb", "a\rb", "a\x00b", "a\u2028b", "x" * 3000])
def test_literals_refuse_empty_oversized_and_non_printable_values(value: str) -> None:
    with pytest.raises(InvalidId):
        kql._literal(value)


def test_a_run_of_a_configuration_arm_allows_is_queried_with_its_name_intact() -> None:
    configuration = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-Ünïcødé.(prod)_東京/providers/"
        "Microsoft.Maintenance/maintenanceConfigurations/wöchentlich.linux(1)-"
    )
    run = RunId.parse(
        f"{configuration}/providers/microsoft.maintenance/applyupdates/20261201030000"
    )
    query = kql.machines_of_run(run)
    strings = [t.value for t in tokenize(query) if t.kind == "string"]
    assert run.text in strings


def test_empty_lists_cannot_be_queried() -> None:
    with pytest.raises(InvalidId):
        kql.runs_of_configurations([])
