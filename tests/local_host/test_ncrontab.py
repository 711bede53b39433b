"""NCRONTAB schedules (croniter underneath): fields, lists, ranges, steps, names, occurrences."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.local_host.ncrontab import CronSchedule, InvalidSchedule


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def occurrences(expression: str, start: str, count: int) -> list[str]:
    schedule = CronSchedule.parse(expression)
    moment = at(start)
    found = []
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment.strftime("%Y-%m-%d %H:%M:%S"))
    return found


def test_every_five_minutes_fires_on_the_minute_boundaries() -> None:
    assert occurrences("0 */5 * * * *", "2026-12-01T02:58:30", 3) == [
        "2026-12-01 03:00:00",
        "2026-12-01 03:05:00",
        "2026-12-01 03:10:00",
    ]


def test_next_occurrence_is_strictly_after_the_given_time() -> None:
    assert occurrences("0 0 * * * *", "2026-12-01T03:00:00", 1) == ["2026-12-01 04:00:00"]
    assert occurrences("* * * * * *", "2026-12-01T03:00:00.5", 1) == ["2026-12-01 03:00:01"]


def test_seconds_field_with_list_and_range() -> None:
    assert occurrences("10,20-22 * * * * *", "2026-12-01T03:00:15", 4) == [
        "2026-12-01 03:00:20",
        "2026-12-01 03:00:21",
        "2026-12-01 03:00:22",
        "2026-12-01 03:01:10",
    ]


def test_range_with_step_and_value_with_step() -> None:
    assert occurrences("0 10-30/10 5/6 * * *", "2026-12-01T05:15:00", 5) == [
        "2026-12-01 05:20:00",
        "2026-12-01 05:30:00",
        "2026-12-01 11:10:00",
        "2026-12-01 11:20:00",
        "2026-12-01 11:30:00",
    ]
    assert occurrences("0 0 5/6 * * *", "2026-12-01T17:00:00", 2) == [
        "2026-12-01 23:00:00",
        "2026-12-02 05:00:00",
    ]


def test_weekdays_by_number_and_name_cross_into_next_week() -> None:
    # 2026-12-04 is a Friday.
    assert occurrences("0 30 9 * * 1-5", "2026-12-04T10:00:00", 2) == [
        "2026-12-07 09:30:00",
        "2026-12-08 09:30:00",
    ]
    assert occurrences("0 30 9 * * mon-fri", "2026-12-04T10:00:00", 1) == ["2026-12-07 09:30:00"]


def test_month_names_and_year_rollover() -> None:
    assert occurrences("0 0 0 1 jan,JUL *", "2026-07-01T00:00:00", 2) == [
        "2027-01-01 00:00:00",
        "2027-07-01 00:00:00",
    ]


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab() -> None:
    # The 13th that is a Friday (0=Sunday ... 5=Friday): 2026-02-13, then 2026-03-13.
    assert occurrences("0 0 12 13 * 5", "2026-01-01T00:00:00", 2) == [
        "2026-02-13 12:00:00",
        "2026-03-13 12:00:00",
    ]


def test_the_29th_of_february_waits_for_a_leap_year() -> None:
    assert occurrences("0 0 6 29 2 *", "2026-03-01T00:00:00", 1) == ["2028-02-29 06:00:00"]


def test_five_fields_mean_second_zero() -> None:
    assert occurrences("*/15 * * * *", "2026-12-01T03:01:00", 1) == ["2026-12-01 03:15:00"]


def test_matches_is_true_only_at_a_scheduled_second() -> None:
    schedule = CronSchedule.parse("30 0 3 * * *")
    assert schedule.matches(at("2026-12-01T03:00:30"))
    assert not schedule.matches(at("2026-12-01T03:00:31"))


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * * *  * *", "expected 6 fields"),
        ("0 60 * * * *", "minute field '60': .*out of range"),
        ("0 0 24 * * *", "hour field"),
        ("0 0 0 0 * *", "day of month field"),
        ("0 0 0 * 13 *", "month field"),
        ("0 0 0 * * 8", "day of week field"),
        ("*/0 * * * * *", "second field '\\*/0': .*step '0'"),
        ("0 0 0 * * funday", "day of week field 'funday'"),
        ("0 1,,2 * * * *", "minute field '1,,2'"),
    ],
)
def test_invalid_expressions_name_the_bad_field(expression: str, problem: str) -> None:
    with pytest.raises(InvalidSchedule, match=problem):
        CronSchedule.parse(expression)


def test_schedule_that_never_fires_is_refused_instead_of_looping() -> None:
    with pytest.raises(InvalidSchedule, match="no occurrence"):
        CronSchedule.parse("0 0 0 30 2 *").next_after(at("2026-01-01T00:00:00"))
