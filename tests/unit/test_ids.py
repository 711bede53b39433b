import pytest

from shared.domain.ids import (
    ConfigurationId,
    InvalidId,
    RunId,
    parse_run_name,
    parse_subscription_id,
)
from tests.builders import CONFIGURATION, CORRELATION_ID, RUN_NAME, START, SUBSCRIPTION


def test_a_run_name_parses_to_its_scheduled_start_in_utc() -> None:
    assert parse_run_name(RUN_NAME) == START


@pytest.mark.parametrize(
    "name",
    [
        "2026120103000",
        "202612010300000",
        "20261301030000",
        "20261201250000",
        "2026120103000a",
        "",
        "00010101000000",  # T−40 would leave the calendar
        "99991231235959",
    ],
)
def test_run_names_that_are_not_real_times_are_refused(name: str) -> None:
    with pytest.raises(InvalidId):
        parse_run_name(name)


def test_correlation_id_parses_into_configuration_and_start() -> None:
    run = RunId.parse(CORRELATION_ID)
    assert run.configuration.name == "weekly-linux"
    assert run.configuration.resource_group == "ops"
    assert run.configuration.subscription_id == SUBSCRIPTION
    assert run.run_name == RUN_NAME
    assert run.scheduled_start == START
    assert run.text == CORRELATION_ID


def test_ids_compare_case_insensitively_but_keep_their_text() -> None:
    lower = RunId.parse(CORRELATION_ID.lower())
    assert lower == RunId.parse(CORRELATION_ID)
    assert hash(lower) == hash(RunId.parse(CORRELATION_ID))
    assert lower.text == CORRELATION_ID.lower()
    assert ConfigurationId.parse(
        CONFIGURATION.upper().replace("SUBSCRIPTIONS", "subscriptions")
    ) == ConfigurationId.parse(CONFIGURATION)


def test_run_id_of_builds_the_platform_spelling() -> None:
    run = RunId.of(ConfigurationId.parse(CONFIGURATION), RUN_NAME)
    assert run == RunId.parse(CORRELATION_ID)


@pytest.mark.parametrize(
    "bad",
    [
        CORRELATION_ID + "'",
        CORRELATION_ID.replace("weekly-linux", "weekly'linux"),
        CORRELATION_ID.replace("weekly-linux", 'weekly"linux'),
        CORRELATION_ID.replace("weekly-linux", "weekly|linux"),
        CORRELATION_ID.replace("weekly-linux", "weekly..linux"),
        CORRELATION_ID.replace("/ops/", "/../"),
        CORRELATION_ID.replace("/ops/", "/o ps/"),
        CORRELATION_ID + "\n",
        CORRELATION_ID.replace("weekly-linux", "weekly\nlinux"),
        CORRELATION_ID.replace("weekly-linux", "x;drop"),
        CORRELATION_ID.replace("weekly-linux", "a%2Fb"),
        CORRELATION_ID + "?api-version=1",
        CORRELATION_ID + "#x",
        CORRELATION_ID.replace("applyupdates", "applyUpdatesX"),
        CONFIGURATION,
        CORRELATION_ID.replace(SUBSCRIPTION, "not-a-guid"),
        CORRELATION_ID + "/providers/microsoft.maintenance/applyupdates/20261201030000",
        "x" * 600,
        "",
        None,
        42,
    ],
)
def test_correlation_ids_with_query_or_path_characters_are_refused(bad: object) -> None:
    with pytest.raises(InvalidId):
        RunId.parse(bad)


def test_subscription_ids_are_guids_in_lower_case() -> None:
    assert parse_subscription_id(SUBSCRIPTION.upper()) == SUBSCRIPTION
    for bad in ["", "1234", SUBSCRIPTION + "'", SUBSCRIPTION + "\n", None]:
        with pytest.raises(InvalidId):
            parse_subscription_id(bad)
