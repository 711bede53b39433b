from datetime import UTC, datetime

import pytest

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
    assert "in~" not in kql.runs_of_configurations(None)


def test_heartbeat_query_uses_utc_and_the_machine_ids() -> None:
    query = kql.heartbeats_since([VM], datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    assert "datetime(2026-12-01T07:00:00.000000Z)" in query
    assert f"_ResourceId in~ ('{VM.text}')" in query


@pytest.mark.parametrize(
    "value",
    ["a'b", 'a"b', "a\\b", "a\nb", "a|b", "a b", "", "a;b", "x" * 600, "a`b", "a{b}"],
)
def test_literals_refuse_anything_outside_arm_id_characters(value: str) -> None:
    with pytest.raises(InvalidId):
        kql._literal(value)


def test_empty_lists_cannot_be_queried() -> None:
    with pytest.raises(InvalidId):
        kql.runs_of_configurations([])
