import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.events import (
    MAX_EVENT_BYTES,
    EnvelopeSchema,
    EventKind,
    InvalidEvent,
    parse_delivery,
    parse_event,
    parse_time,
)
from tests.builders import (
    CORRELATION_ID,
    OTHER_SUBSCRIPTION,
    POST,
    PRE,
    START,
    SUBSCRIPTION,
    cloud_event,
    event_grid_event,
)

ANY = frozenset(EventKind)
PRE_ONLY = frozenset({EventKind.PRE})


def test_event_grid_pre_event_is_parsed() -> None:
    event = parse_event(event_grid_event(PRE), PRE_ONLY)
    assert event.kind is EventKind.PRE
    assert event.schema is EnvelopeSchema.EVENT_GRID
    assert event.event_id == CORRELATION_ID
    assert event.run.text == CORRELATION_ID
    assert event.start == START
    assert event.end == datetime(2026, 12, 1, 6, 55, tzinfo=UTC)
    assert event.cancellation_cutoff == datetime(2026, 12, 1, 2, 50, tzinfo=UTC)
    assert event.subscription_ids == (SUBSCRIPTION, OTHER_SUBSCRIPTION)
    assert event.event_time == datetime(2026, 12, 1, 2, 25, 4, 123456, tzinfo=UTC)
    assert event.status is None


def test_cloud_event_with_camel_case_data_is_parsed_the_same() -> None:
    grid = parse_event(event_grid_event(POST), ANY)
    cloud = parse_event(cloud_event(POST), ANY)
    assert cloud.schema is EnvelopeSchema.CLOUD_EVENTS
    assert (cloud.kind, cloud.run, cloud.start, cloud.end, cloud.status) == (
        grid.kind,
        grid.run,
        grid.start,
        grid.end,
        grid.status,
    )
    assert cloud.status == "Succeeded"


def test_data_keys_are_read_in_any_case() -> None:
    envelope = event_grid_event(PRE)
    envelope["data"] = {k.upper(): v for k, v in envelope["data"].items()}
    assert parse_event(envelope, ANY).cancellation_cutoff is not None


def test_event_type_is_matched_case_insensitively() -> None:
    envelope = event_grid_event(PRE)
    envelope["eventType"] = PRE.lower()
    assert parse_event(envelope, ANY).kind is EventKind.PRE


def test_unknown_post_status_is_kept_as_is() -> None:
    assert (
        parse_event(event_grid_event(POST, Status="PartiallySucceeded"), ANY).status
        == "PartiallySucceeded"
    )


def test_duplicate_subscription_ids_are_folded() -> None:
    event = parse_event(
        event_grid_event(PRE, ResourceSubscriptionIds=[SUBSCRIPTION, SUBSCRIPTION.upper()]), ANY
    )
    assert event.subscription_ids == (SUBSCRIPTION,)


def test_pre_event_without_cutoff_is_accepted_with_no_cutoff() -> None:
    event = parse_event(event_grid_event(PRE, CancellationCutOffDateTime=None), ANY)
    assert event.cancellation_cutoff is None


def refusal(envelope: Any, expected: frozenset[EventKind] = ANY) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(envelope, expected)
    return caught.value.reason


def test_wrong_event_type_for_the_function_is_refused() -> None:
    assert "is not Microsoft.Maintenance.PreMaintenanceEvent" in refusal(
        event_grid_event(POST), PRE_ONLY
    )


@pytest.mark.parametrize("event_type", ["Microsoft.Storage.BlobCreated", "", None, 5])
def test_non_maintenance_event_types_are_refused(event_type: object) -> None:
    envelope = event_grid_event(PRE)
    envelope["eventType"] = event_type
    assert "not a maintenance event" in refusal(envelope)


def test_missing_data_is_refused() -> None:
    envelope = event_grid_event(PRE)
    del envelope["data"]
    assert "no data object" in refusal(envelope)
    envelope["data"] = "text"
    assert "no data object" in refusal(envelope)


@pytest.mark.parametrize(
    "field",
    [
        "CorrelationId",
        "MaintenanceConfigurationId",
        "StartDateTime",
        "EndDateTime",
    ],
)
def test_missing_required_fields_are_named(field: str) -> None:
    envelope = event_grid_event(PRE)
    del envelope["data"][field]
    assert field in refusal(envelope)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (None, "event has no id"),
        ("", "event has no id"),
        ("   ", "event has no id"),
        ("x" * 600, "event id is too long or holds control characters"),
        ("a\nb", "event id is too long or holds control characters"),
    ],
)
def test_missing_or_odd_ids_are_refused(bad: object, reason: str) -> None:
    envelope = event_grid_event(PRE)
    envelope["id"] = bad
    assert refusal(envelope) == reason


@pytest.mark.parametrize(
    ("correlation", "reason"),
    [
        ("/subscriptions/x/resourceGroups/ops", "CorrelationId is not an applyupdates id"),
        (
            CORRELATION_ID.replace("weekly-linux", "weekly'linux"),
            "not a maintenance configuration id",
        ),
        (CORRELATION_ID.replace("weekly-linux", "we|ekly"), "not a maintenance configuration id"),
        (CORRELATION_ID.replace("/ops/", "/../"), "CorrelationId must not contain '..'"),
        (CORRELATION_ID + "\n| project secrets", "CorrelationId is not an applyupdates id"),
    ],
)
def test_correlation_ids_that_are_not_applyupdates_ids_are_refused(
    correlation: str, reason: str
) -> None:
    envelope = event_grid_event(PRE, CorrelationId=correlation)
    envelope["id"] = "event-1"  # the envelope's own id is fine: the CorrelationId is refused
    assert refusal(envelope).startswith(reason)


def test_configuration_id_must_match_the_run() -> None:
    other = CORRELATION_ID.split("/providers/microsoft.maintenance/applyupdates")[0].replace(
        "weekly-linux", "monthly"
    )
    assert "does not match" in refusal(event_grid_event(PRE, MaintenanceConfigurationId=other))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("StartDateTime", "tomorrow", "data.StartDateTime is not an ISO 8601 time: 'tomorrow'"),
        (
            "StartDateTime",
            "2026-13-01T03:00:00Z",
            "data.StartDateTime is not a real time: '2026-13-01T03:00:00Z'",
        ),
        (
            "EndDateTime",
            "2026-12-01T06:55",
            "data.EndDateTime is not an ISO 8601 time: '2026-12-01T06:55'",
        ),
        ("EndDateTime", 1733000000, "data.EndDateTime is not a time string"),
        (
            "CancellationCutOffDateTime",
            "2026-12-01 02:50:00 UTC",
            "data.CancellationCutOffDateTime is not an ISO 8601 time: '2026-12-01 02:50:00 UTC'",
        ),
    ],
)
def test_times_that_do_not_parse_are_refused(field: str, value: object, reason: str) -> None:
    assert refusal(event_grid_event(PRE, **{field: value})) == reason


def test_start_that_differs_from_the_run_name_is_accepted_as_t_and_noted() -> None:
    # A configuration in UTC+1 names its 04:00 local run 20261201040000 while T is 03:00 UTC.
    local_name = CORRELATION_ID.replace("20261201030000", "20261201040000")
    event = parse_event(event_grid_event(PRE, CorrelationId=local_name), ANY)
    assert event.start == START
    assert event.run.run_name == "20261201040000"
    [oddity] = event.oddities
    assert "differs from the run name 20261201040000" in oddity
    assert "T is taken from StartDateTime" in oddity


def test_an_event_whose_start_matches_its_run_name_has_no_oddities() -> None:
    assert parse_event(event_grid_event(PRE), ANY).oddities == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SUBSCRIPTION, (SUBSCRIPTION,)),
        (f"{SUBSCRIPTION},{OTHER_SUBSCRIPTION}", (SUBSCRIPTION, OTHER_SUBSCRIPTION)),
        (f" {SUBSCRIPTION} , {OTHER_SUBSCRIPTION.upper()} ", (SUBSCRIPTION, OTHER_SUBSCRIPTION)),
        (f'["{SUBSCRIPTION}", "{OTHER_SUBSCRIPTION}"]', (SUBSCRIPTION, OTHER_SUBSCRIPTION)),
    ],
)
def test_subscription_ids_as_a_string_are_read_and_noted(value: str, expected: object) -> None:
    event = parse_event(event_grid_event(PRE, ResourceSubscriptionIds=value), ANY)
    assert event.subscription_ids == expected
    assert any("came as a string" in o for o in event.oddities)


@pytest.mark.parametrize("value", [[], "", "   ", None])
def test_empty_or_missing_subscription_ids_fall_back_to_the_configuration_s(
    value: object,
) -> None:
    envelope = event_grid_event(PRE)
    envelope["data"]["ResourceSubscriptionIds"] = value
    if value is None:
        del envelope["data"]["ResourceSubscriptionIds"]
    event = parse_event(envelope, ANY)
    assert event.subscription_ids == (SUBSCRIPTION,)
    assert any("configuration's own subscription" in o for o in event.oddities)


def test_a_topic_that_is_not_the_configuration_is_refused_in_both_schemas() -> None:
    other = CORRELATION_ID.split("/providers/microsoft.maintenance/applyupdates")[0].replace(
        "weekly-linux", "someone-elses"
    )
    grid = event_grid_event(PRE)
    grid["topic"] = other
    assert "is not the system topic of" in refusal(grid)
    cloud = cloud_event(PRE)
    cloud["source"] = "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/accounts/z"
    assert "source" in refusal(cloud)


def test_an_event_without_topic_or_source_is_refused() -> None:
    grid = event_grid_event(PRE)
    del grid["topic"]
    assert "no topic" in refusal(grid)
    cloud = cloud_event(PRE)
    cloud["source"] = ""
    assert "no source" in refusal(cloud)


def test_topic_is_compared_case_insensitively() -> None:
    grid = event_grid_event(PRE)
    grid["topic"] = grid["topic"].lower()
    assert parse_event(grid, ANY).kind is EventKind.PRE


def test_names_arm_accepts_outside_ascii_with_dots_and_parentheses_are_accepted() -> None:
    configuration = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-Ünïcødé.(prod)_東京/providers/"
        "Microsoft.Maintenance/maintenanceConfigurations/wöchentlich.linux(1)-"
    )
    correlation = f"{configuration}/providers/microsoft.maintenance/applyupdates/20261201030000"
    envelope = event_grid_event(
        PRE, CorrelationId=correlation, MaintenanceConfigurationId=configuration
    )
    envelope["topic"] = configuration
    event = parse_event(envelope, ANY)
    assert event.configuration.resource_group == "rg-Ünïcødé.(prod)_東京"
    assert event.configuration.name == "wöchentlich.linux(1)-"


def test_end_before_start_and_cutoff_after_start_are_refused() -> None:
    assert "EndDateTime" in refusal(event_grid_event(PRE, EndDateTime="2026-12-01T02:00:00Z"))
    assert "CancellationCutOff" in refusal(
        event_grid_event(PRE, CancellationCutOffDateTime="2026-12-01T03:05:00Z")
    )


@pytest.mark.parametrize(
    ("subscriptions", "reason"),
    [
        ("1b7a", "subscription id is not a GUID: '1b7a'"),
        (["not-a-guid"], "subscription id is not a GUID: 'not-a-guid'"),
        ([SUBSCRIPTION + "'"], "subscription id is not a GUID"),
        ([None], "subscription id must be a string"),
        (["a"] * 1001, "ResourceSubscriptionIds holds more than 1000 ids"),
        ("[1, 2", "ResourceSubscriptionIds is not a JSON array of ids"),
        (42, "ResourceSubscriptionIds is neither an array nor a string"),
        ({"a": 1}, "ResourceSubscriptionIds is neither an array nor a string"),
    ],
)
def test_bad_subscription_ids_are_refused(subscriptions: object, reason: str) -> None:
    assert refusal(event_grid_event(PRE, ResourceSubscriptionIds=subscriptions)).startswith(reason)


def test_conflicting_duplicate_keys_in_data_are_refused() -> None:
    envelope = event_grid_event(PRE)
    envelope["data"]["startDateTime"] = "2026-12-01T04:00:00Z"
    assert "twice" in refusal(envelope)


def test_cloud_event_with_unknown_specversion_is_refused() -> None:
    envelope = cloud_event(PRE)
    envelope["specversion"] = "0.3"
    assert "specversion" in refusal(envelope)


def test_delivery_accepts_an_object_or_an_array_of_one() -> None:
    text = json.dumps(event_grid_event(PRE))
    assert parse_delivery(text, ANY).kind is EventKind.PRE
    assert parse_delivery(f"[{text}]".encode(), ANY).kind is EventKind.PRE


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "got 0"),
        (b'"text"', "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_deliveries_that_are_not_one_event_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_delivery(body, ANY)


def test_an_array_of_several_events_is_refused() -> None:
    text = json.dumps([event_grid_event(PRE), event_grid_event(POST)])
    with pytest.raises(InvalidEvent, match="got 2"):
        parse_delivery(text, ANY)


def test_a_one_megabyte_payload_is_refused_before_parsing() -> None:
    envelope = event_grid_event(PRE)
    envelope["data"]["padding"] = "x" * (1024 * 1024)
    with pytest.raises(InvalidEvent, match=f"exceeds {MAX_EVENT_BYTES}"):
        parse_delivery(json.dumps(envelope), ANY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T03:00:00Z", START),
        ("2026-12-01T03:00:00.1234567Z", START + timedelta(microseconds=123456)),
        ("2026-12-01T04:00:00+01:00", START),
        ("2026-12-01T03:00:00", START),
        ("2026-12-01 03:00:00z", START),
    ],
)
def test_times_are_read_as_azure_writes_them(text: str, expected: datetime) -> None:
    assert parse_time(text, "t") == expected


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+14:00",  # moving it to UTC leaves the calendar
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z",  # inside the calendar, but no room for the run's arithmetic
        "9999-12-31T23:59:59Z",
    ],
)
def test_times_at_the_ends_of_the_calendar_are_refused_not_crashed_on(value: str) -> None:
    with pytest.raises(InvalidEvent, match=r"data\.EndDateTime"):
        parse_time(value, "data.EndDateTime")
    assert "EndDateTime" in refusal(event_grid_event(PRE, EndDateTime=value))


def test_data_nested_a_thousand_deep_is_refused_in_either_path() -> None:
    deep: object = "x"
    for _ in range(1000):
        deep = {"k": deep}
    envelope = event_grid_event(PRE, Extra=deep)
    nested_1000 = "[" * 1000 + "]" * 1000
    assert "nests deeper" in refusal(envelope)
    text = json.dumps(event_grid_event(PRE, Extra="DEEP")).replace('"DEEP"', nested_1000)
    with pytest.raises(InvalidEvent, match="levels"):
        parse_delivery(text, frozenset(EventKind))
