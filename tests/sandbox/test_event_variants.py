"""The fake plays the undocumented shapes of maintenance events as scenario settings: run names in
the configuration's time zone, ResourceSubscriptionIds as a string, data keys in any case, both
envelopes. The defaults are the published examples (UTC run names, an array)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import requests

from sandbox.fake_azure import FakeAzure
from sandbox.fake_azure.model import AzureModel, ModelSettings, VmSpec
from sandbox.fake_azure.scenario import Scenario, ScenarioError

from .conftest import OTHER_SUBSCRIPTION, SUBSCRIPTION, small_scenario, vm_id

START = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)
MACHINES = [
    vm_id(SUBSCRIPTION, "rg-batch", "batch-01"),
    vm_id(OTHER_SUBSCRIPTION, "rg-dev", "dev-01"),
]


def model_with(**settings: Any) -> tuple[AzureModel, str]:
    model = AzureModel(settings=ModelSettings(**settings))
    for subscription in (SUBSCRIPTION, OTHER_SUBSCRIPTION):
        model.add_subscription(subscription)
    model.add_vms(
        [
            VmSpec(subscription_id=SUBSCRIPTION, resource_group="rg-batch", name="batch-01"),
            VmSpec(subscription_id=OTHER_SUBSCRIPTION, resource_group="rg-dev", name="dev-01"),
        ]
    )
    configuration = model.add_maintenance_configuration(
        SUBSCRIPTION, "rg-maintenance", "weekly", time_zone="W. Europe Standard Time"
    )
    return model, configuration.id


def test_by_default_run_names_are_utc_and_subscriptions_an_array() -> None:
    model, configuration = model_with()
    run = model.create_run(configuration, START, MACHINES)
    assert run.name == "20261201030000"
    event = model.maintenance_event(run.correlation_id, "pre")
    assert event["data"]["ResourceSubscriptionIds"] == [SUBSCRIPTION, OTHER_SUBSCRIPTION]
    assert event["data"]["StartDateTime"] == "2026-12-01T03:00:00Z"
    assert event["topic"] == configuration
    assert event["eventType"] == "Microsoft.Maintenance.PreMaintenanceEvent"


def test_run_names_in_the_configuration_s_time_zone_keep_t_in_utc() -> None:
    model, configuration = model_with(run_name_clock="configuration")
    run = model.create_run(configuration, START, MACHINES)
    assert run.name == "20261201040000"  # 03:00 UTC is 04:00 in Berlin in December
    assert run.scheduled_start == START
    data = model.maintenance_event(run.correlation_id, "pre")["data"]
    assert data["StartDateTime"] == "2026-12-01T03:00:00Z"
    assert data["CorrelationId"].endswith("/20261201040000")
    # The per-run override plays the variant in a default scenario too.
    plain, configuration = model_with()
    later = plain.create_run(configuration, START, MACHINES, run_name_clock="configuration")
    assert later.name == "20261201040000"


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("string", SUBSCRIPTION),
        ("comma", f"{SUBSCRIPTION},{OTHER_SUBSCRIPTION}"),
        ("json-string", json.dumps([SUBSCRIPTION, OTHER_SUBSCRIPTION])),
        ("empty", []),
    ],
)
def test_subscription_ids_are_sent_in_the_scenario_s_shape(style: str, expected: Any) -> None:
    model, configuration = model_with(event_subscription_ids=style)
    run = model.create_run(configuration, START, MACHINES)
    data = model.maintenance_event(run.correlation_id, "post")["data"]
    assert data["ResourceSubscriptionIds"] == expected
    assert data["Status"] == "Succeeded"


@pytest.mark.parametrize(
    ("key_case", "key"),
    [
        ("pascal", "CorrelationId"),
        ("camel", "correlationId"),
        ("lower", "correlationid"),
        ("upper", "CORRELATIONID"),
    ],
)
def test_cloud_events_and_key_cases_are_played(key_case: str, key: str) -> None:
    model, configuration = model_with()
    run = model.create_run(configuration, START, MACHINES)
    event = model.maintenance_event(
        run.correlation_id, "pre", schema="CloudEvents", key_case=key_case
    )
    assert event["specversion"] == "1.0"
    assert event["source"] == configuration
    assert event["type"] == "Microsoft.Maintenance.PreMaintenanceEvent"
    assert event["data"][key] == run.correlation_id


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="run_name_clock"):
        ModelSettings(run_name_clock="local")
    with pytest.raises(ValueError, match="event_subscription_ids"):
        ModelSettings(event_subscription_ids="csv")
    data = small_scenario()
    data["settings"]["typo_setting"] = "x"
    with pytest.raises(ScenarioError):
        Scenario.from_dict(data)


def test_scenario_settings_choose_the_variants(start_fake: Any) -> None:
    data = small_scenario()
    data["settings"].update(run_name_clock="configuration", event_subscription_ids="comma")
    data["maintenance_configurations"][0]["time_zone"] = "Tokyo Standard Time"
    fake: FakeAzure = start_fake(data)
    [run] = fake.model.runs
    assert run.name == run.scheduled_start.astimezone(dt.timezone(dt.timedelta(hours=9))).strftime(
        "%Y%m%d%H%M%S"
    )
    event = fake.model.maintenance_event(run.correlation_id, "pre")
    assert isinstance(event["data"]["ResourceSubscriptionIds"], str)


def test_the_webhook_sink_accepts_posts_and_logs_them(fake: FakeAzure) -> None:
    answer = requests.post(
        f"{fake.url}/_sandbox/webhook/notifications",
        json={"text": "hello"},
        verify=str(fake.ca_path),
        timeout=10,
    )
    assert answer.status_code == 200
    [logged] = fake.requests_matching("POST", "webhook")
    assert logged.body == {"text": "hello"}
