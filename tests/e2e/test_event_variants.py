"""End to end: every shape of maintenance event Azure may send is taken in and acted on, and an
event the app must not use is refused loudly (an ERROR line, a record listed by
GET /api/events/refused, the webhook). Local host + fake Azure + Azurite, driven over HTTP.

The fake plays the undocumented variants as scenario settings: run names in the configuration's
time zone (`run_name_clock`), ResourceSubscriptionIds as a string (`event_subscription_ids`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sandbox.fake_azure.model import MaintenanceRun
from sandbox.stack import POST, PRE, Stack, running_stack
from tests.fake_azure import OTHER_SUBSCRIPTION, SUBSCRIPTION, small_scenario, vm_id

WEB = vm_id(SUBSCRIPTION, "rg-web", "web-01")  # running 24/7
BATCH_1 = vm_id(SUBSCRIPTION, "rg-batch", "batch-01")  # deallocated
BATCH_2 = vm_id(SUBSCRIPTION, "rg-batch", "batch-02")  # stopped
DEV = vm_id(OTHER_SUBSCRIPTION, "rg-dev", "dev-01")  # deallocated, other subscription
WEEKLY = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-maintenance/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly"
)
# Names ARM accepts that the first id patterns refused: letters outside ASCII, dots,
# parentheses, a trailing ')' or '-'.
ODD_GROUP = "rg-Ünïcødé.(prod)_東京"
ODD_VM = vm_id(SUBSCRIPTION, ODD_GROUP, "wëb.01(a)-")
ODD_CONFIGURATION = "wöchentlich.linux(1)"
APP_LOGGER = "shared"


def scenario(**settings: Any) -> dict[str, Any]:
    data = small_scenario()
    data["runs"] = []
    # Azure asks pollers to come back after a second or more; so does the fake here (without
    # a Retry-After the SDK's poller waits its default 30 s).
    data["settings"]["lro_retry_after_seconds"] = 1
    data["settings"].update(settings)
    data["vms"].append(
        {
            "subscription": SUBSCRIPTION,
            "resource_group": ODD_GROUP,
            "name": "wëb.01(a)-",
            "power_state": "deallocated",
        }
    )
    data["maintenance_configurations"] += [
        {"subscription": SUBSCRIPTION, "resource_group": "rg-other-team", "name": "monthly"},
        {"subscription": SUBSCRIPTION, "resource_group": ODD_GROUP, "name": ODD_CONFIGURATION},
        {
            "subscription": SUBSCRIPTION,
            "resource_group": "rg-maintenance",
            "name": "tokyo",
            "time_zone": "Tokyo Standard Time",
        },
    ]
    return data


@pytest.fixture
def stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(scenario(), storage_connection_string=azurite_connection_string) as s:
        yield s


def power(stack: Stack, machine: str) -> str:
    return str(stack.fake.model.power_state(machine))


def deliver_ok(stack: Stack, kind: str, run: MaintenanceRun, **options: Any) -> None:
    answer = stack.deliver(kind, run, **options)
    assert answer.status_code == 200, answer.text


def run_report(stack: Stack, run: MaintenanceRun) -> dict[str, Any]:
    configuration = run.configuration_id.rsplit("/", 1)[-1]
    answer = stack.session.get(
        f"{stack.host.url}/api/runs/{configuration}/{run.name}",
        params={
            "subscriptionId": SUBSCRIPTION,
            "resourceGroup": run.configuration_id.split("/")[4],
        },
        headers={"x-functions-key": stack.host.function_key},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def warnings_of(report: dict[str, Any]) -> list[str]:
    return [n["message"] for n in report["notes"] if n["level"] == "Warning"]


# Run names in the configuration's time zone ----------------------------------------------------


def test_a_run_named_in_the_configuration_s_time_zone_takes_t_from_start_date_time(
    azurite_connection_string: str,
) -> None:
    tokyo_names = scenario(run_name_clock="configuration")
    with running_stack(tokyo_names, storage_connection_string=azurite_connection_string) as stack:
        run = stack.schedule("tokyo", [WEB, BATCH_1], timedelta(minutes=32))
        # The run name is T in Tokyo (UTC+9): read as UTC it would be nine hours late.
        tokyo = run.scheduled_start.astimezone(ZoneInfo("Asia/Tokyo"))
        assert run.name == tokyo.strftime("%Y%m%d%H%M%S")
        deliver_ok(stack, PRE, run)
        stack.settle()
        assert power(stack, BATCH_1) == "running"
        report = run_report(stack, run)
        assert report["run"]["scheduledStart"].startswith(
            run.scheduled_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        )
        assert any(f"differs from the run name {run.name}" in w for w in warnings_of(report))
        assert report["gate"]["outcome"] == "Passed"
        # The window is T−40 … T−11 from StartDateTime, so it is open now; read from the run name
        # it would not open for hours. The cancel PUT names the run by its run name.
        answer = stack.cancel(run.correlation_id, "bad patch")
        assert answer.status_code == 200, answer.text
        [put] = stack.fake.requests_matching("PUT", "applyUpdates")
        assert put.path.endswith(f"/{run.name}")
        assert stack.fake.model.run_status(run.correlation_id) == "Cancelled"
        stack.settle()
        assert power(stack, BATCH_1) == "deallocated"
        assert power(stack, WEB) == "running"


# ResourceSubscriptionIds as a string, a comma list, a JSON string, or empty ---------------------


@pytest.mark.parametrize(
    ("variant", "machines", "note"),
    [
        ("string", [BATCH_1, BATCH_2], "came as a string"),
        ("comma", [BATCH_1, DEV], "came as a string"),
        ("json-string", [BATCH_1, DEV], "came as a string"),
        ("empty", [BATCH_1, BATCH_2], "configuration's own subscription"),
    ],
)
def test_subscription_ids_in_every_shape_start_the_run_s_machines(
    azurite_connection_string: str, variant: str, machines: list[str], note: str
) -> None:
    variant_scenario = scenario(event_subscription_ids=variant)
    with running_stack(
        variant_scenario, storage_connection_string=azurite_connection_string
    ) as stack:
        run = stack.schedule("weekly", machines, timedelta(minutes=32))
        event = stack.event(PRE, run)
        ids = event["data"]["ResourceSubscriptionIds"]
        assert isinstance(ids, list) == (variant == "empty")
        deliver_ok(stack, PRE, run)
        stack.settle()
        assert [power(stack, m) for m in machines] == ["running"] * len(machines)
        assert any(note in w for w in warnings_of(run_report(stack, run)))


# Data keys in any case, either envelope, webhook or queue ---------------------------------------


def test_every_envelope_and_key_case_is_taken_in_through_the_local_host(stack: Stack) -> None:
    cases = [
        (schema, key_case)
        for schema in ("EventGrid", "CloudEvents")
        for key_case in ("pascal", "camel", "lower", "upper")
    ]
    runs = []
    for index, (schema, key_case) in enumerate(cases):
        run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32, seconds=index * 10))
        deliver_ok(stack, PRE, run, schema=schema, key_case=key_case)
        runs.append((run, schema))
    # The queue path, CloudEvents with lower-case keys, the way Event Grid writes to a queue.
    queued = stack.schedule("weekly", [BATCH_2], timedelta(minutes=33, seconds=30))
    stack.deliver_to_queue(stack.event(PRE, queued, schema="CloudEvents", key_case="lower"))
    runs.append((queued, "CloudEvents"))
    stack.settle()
    assert power(stack, BATCH_1) == "running"
    assert power(stack, BATCH_2) == "running"
    for run, schema in runs:
        report = run_report(stack, run)
        [event] = report["timeline"]["events"]
        assert event["schema"] == schema, (run.name, event)
        assert report["run"]["status"] in ("Prepared", "PreEventReceived", "Preparing")
        assert report["machines"], run.name
    assert stack.refused_events() == []


def test_names_arm_accepts_reach_resource_graph_quoted_and_the_vm_is_started(
    stack: Stack,
) -> None:
    run = stack.schedule(ODD_CONFIGURATION, [ODD_VM], timedelta(minutes=32))
    deliver_ok(stack, PRE, run)
    stack.settle()
    assert power(stack, ODD_VM) == "running"
    queries = [c.body["query"] for c in stack.fake.requests_matching("POST", "ResourceGraph")]
    assert any(ODD_CONFIGURATION in q for q in queries)
    report = run_report(stack, run)
    [machine] = report["machines"]
    assert machine["resourceId"].lower() == ODD_VM.lower()
    assert machine["action"] == "Started"


# Refused loudly ------------------------------------------------------------------------------


@pytest.fixture
def guarded_stack(azurite_connection_string: str) -> Iterator[Stack]:
    with running_stack(
        scenario(),
        storage_connection_string=azurite_connection_string,
        settings={"TARGET_CONFIGURATION_IDS": WEEKLY},
        notify_webhook=True,
    ) as s:
        yield s


def test_events_the_app_must_not_use_are_refused_loudly_and_listed(
    guarded_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = guarded_stack
    caplog.set_level(logging.INFO, logger=APP_LOGGER)
    ours = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
    foreign = stack.schedule("monthly", [BATCH_2], timedelta(minutes=32))
    forged_topic = stack.event(PRE, ours)
    forged_topic["topic"] = foreign.configuration_id
    forged_source = stack.event(PRE, ours, schema="CloudEvents")
    forged_source["source"] = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Storage/"
        "storageAccounts/evil"
    )
    not_maintenance = stack.event(PRE, ours)
    not_maintenance["eventType"] = "Microsoft.Storage.BlobCreated"
    no_run_id = stack.event(PRE, ours)
    del no_run_id["data"]["CorrelationId"]
    deliveries = [
        (stack.event(PRE, foreign), "not one the app manages"),
        (forged_topic, "is not the system topic of"),
        (forged_source, "is not the system topic of"),
        (not_maintenance, "is not a maintenance event"),
        (no_run_id, "data.CorrelationId is missing"),
    ]
    for envelope, _ in deliveries:
        # Refused without a 5xx: Event Grid must not retry what can never be used.
        answer = stack.deliver(PRE, ours, envelope=envelope)
        assert answer.status_code == 200, answer.text
    stack.deliver_to_queue({"id": "garbage-1", "hello": "world"})
    stack.settle()

    # Nothing was acted on.
    assert power(stack, BATCH_1) == "deallocated"
    assert power(stack, BATCH_2) == "stopped"
    assert stack.fake.requests_matching("POST", r"/start$") == []

    assert_listed(stack.refused_events(), [reason for _, reason in deliveries])
    assert_logged_and_notified(stack, caplog, len(deliveries), ours, foreign)


def assert_listed(refused: list[dict[str, Any]], reasons: list[str]) -> None:
    """Each refusal is listed, newest first, with its reason and a short excerpt."""
    assert len(refused) == len(reasons) + 1
    listed = [r["reason"] for r in refused]
    for expected in reasons:
        assert any(expected in reason for reason in listed), (expected, listed)
    queued = [r for r in refused if r["channel"].startswith("queue")]
    assert len(queued) == 1 and "garbage-1" in queued[0]["excerpt"]
    assert all(len(r["excerpt"]) <= 1000 for r in refused)
    assert refused == sorted(refused, key=lambda r: r["refusedAt"], reverse=True)


def assert_logged_and_notified(
    stack: Stack, caplog: pytest.LogCaptureFixture, deliveries: int, ours: Any, foreign: Any
) -> None:
    """One ERROR line per refusal, each naming the event id and the reason; the webhook heard
    of each, without its URL in any log line."""
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("Refused maintenance event")
    ]
    assert len(errors) == deliveries + 1
    named = sum(ours.correlation_id in e or foreign.correlation_id in e for e in errors)
    assert named == deliveries
    posts = stack.fake.requests_matching("POST", "webhook")
    assert len(posts) == deliveries + 1
    assert all("refusedEvent" in p.body and "Refused" in p.body["text"] for p in posts)
    assert "_sandbox/webhook" not in "\n".join(r.getMessage() for r in caplog.records)


def test_the_refused_list_needs_a_function_key_and_answers_bad_input_with_problem_json(
    guarded_stack: Stack,
) -> None:
    stack = guarded_stack
    url = f"{stack.host.url}/api/events/refused"
    assert stack.session.get(url, timeout=30).status_code == 401
    for top in ("0", "201", "ten", "-1"):
        answer = stack.session.get(
            url,
            params={"top": top},
            headers={"x-functions-key": stack.host.function_key},
            timeout=30,
        )
        assert answer.status_code == 400, top
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "top" in json.loads(answer.text)["detail"]


def test_a_managed_configuration_s_event_is_still_taken_in_with_the_allow_list_set(
    guarded_stack: Stack,
) -> None:
    stack = guarded_stack
    run = stack.schedule("weekly", [BATCH_1], timedelta(minutes=32))
    deliver_ok(stack, PRE, run, key_case="upper")
    stack.settle()
    assert power(stack, BATCH_1) == "running"
    assert stack.refused_events() == []
    stack.fake.model.complete_run(run.correlation_id, status="Succeeded", results_lag=0)
    deliver_ok(stack, POST, run, schema="CloudEvents")
    stack.settle()
    assert power(stack, BATCH_1) == "deallocated"
