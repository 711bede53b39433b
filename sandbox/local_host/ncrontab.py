"""NCRONTAB schedules, as the Functions timer trigger reads them.

Six fields: second minute hour day-of-month month day-of-week (five fields: seconds are 0).
Each field takes `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the
field's end), and comma lists of those. Months and days of the week also take three-letter
English names. Days of the week run 0-6 from Sunday.

As in NCrontab (the library the host uses), a time must match BOTH the day of the month and
the day of the week; classic cron matches either when both are restricted.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
WEEKDAY_NAMES = {
    name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])
}

# A schedule that matches nothing (e.g. 30 February) must fail instead of looping forever;
# any satisfiable schedule matches within a leap cycle that skips a century year (8 years).
SEARCH_YEARS = 10


class InvalidSchedule(ValueError):
    """The expression is not a valid NCRONTAB schedule; the message says which part."""


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _FieldSpec("second", 0, 59, {}),
    _FieldSpec("minute", 0, 59, {}),
    _FieldSpec("hour", 0, 23, {}),
    _FieldSpec("day of month", 1, 31, {}),
    _FieldSpec("month", 1, 12, MONTH_NAMES),
    _FieldSpec("day of week", 0, 6, WEEKDAY_NAMES),
)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; `next_after` gives its occurrences."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse six (or five) fields; raise InvalidSchedule naming the bad field."""
        parts = expression.split()
        if len(parts) == 5:
            parts = ["0", *parts]
        if len(parts) != 6:
            raise InvalidSchedule(
                f"{expression!r}: expected 6 fields (second minute hour day month "
                f"day-of-week), got {len(parts)}"
            )
        values = [
            _parse_field(part, spec, expression) for part, spec in zip(parts, _FIELDS, strict=True)
        ]
        return cls(expression, *values)

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires at this second."""
        return (
            moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and self._matches_day(moment)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (same tzinfo, whole seconds)."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        last_year = candidate.year + SEARCH_YEARS
        # Each step jumps to the start of the next month, day, hour, minute or second that can
        # still match, so a search takes at most a few hundred steps.
        while candidate.year <= last_year:
            if candidate.month not in self.months:
                candidate = _start_of_next_month(candidate)
            elif not self._matches_day(candidate):
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
            elif candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
            else:
                return candidate
        raise InvalidSchedule(f"{self.expression!r} has no occurrence within {SEARCH_YEARS} years")

    def _matches_day(self, moment: datetime) -> bool:
        # Python counts weekdays from Monday = 0; NCRONTAB from Sunday = 0.
        weekday = (moment.weekday() + 1) % 7
        return moment.day in self.days and weekday in self.weekdays

    def __str__(self) -> str:
        return self.expression


def _start_of_next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)


def _parse_field(text: str, spec: _FieldSpec, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_parse_item(item, spec))
        except InvalidSchedule as problem:
            raise InvalidSchedule(
                f"{expression!r}: {spec.name} field {text!r}: {problem}"
            ) from None
    return frozenset(values)


def _parse_item(item: str, spec: _FieldSpec) -> range:
    if not item:
        raise InvalidSchedule("empty list item")
    range_text, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise InvalidSchedule(f"step {step_text!r} must be a whole number above 0")
        step = int(step_text)
    if range_text == "*":
        return range(spec.low, spec.high + 1, step)
    first_text, dash, last_text = range_text.partition("-")
    first = _parse_value(first_text, spec)
    if dash:
        last = _parse_value(last_text, spec)
        if last < first:
            raise InvalidSchedule(f"range {range_text!r} runs backwards")
    else:
        # `a/n` means from a to the end of the field, stepping n; a plain `a` is just a.
        last = spec.high if slash else first
    return range(first, last + 1, step)


def _parse_value(text: str, spec: _FieldSpec) -> int:
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if not text.isdigit():
        raise InvalidSchedule(f"{text!r} is not a number")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise InvalidSchedule(f"{value} is outside {spec.low}-{spec.high}")
    return value
