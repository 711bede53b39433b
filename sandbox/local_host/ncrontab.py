"""NCRONTAB schedules, as the Functions timer trigger reads them, parsed by croniter.

Six fields: second minute hour day-of-month month day-of-week (five fields: seconds are 0).
As in NCrontab (the library the host uses), a time must match BOTH the day of the month and
the day of the week (`day_or=False`); classic cron matches either when both are restricted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

# A schedule that matches nothing (e.g. 30 February) must fail instead of looping forever;
# any satisfiable schedule matches within a leap cycle that skips a century year (8 years).
SEARCH_YEARS = 10
_FIELD_NAMES = ("second", "minute", "hour", "day of month", "month", "day of week")


class InvalidSchedule(ValueError):
    """The expression is not a valid NCRONTAB schedule; the message says which part."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression; `next_after` gives its occurrences."""

    expression: str
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse six (or five) fields; raise InvalidSchedule naming the bad field."""
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            # croniter would read a seventh field as a year; NCRONTAB has none.
            raise InvalidSchedule(
                f"{expression!r}: expected 6 fields (second minute hour day month "
                f"day-of-week), got {len(fields)}"
            )
        schedule = cls(expression, tuple(fields))
        for index, name in enumerate(_FIELD_NAMES):
            alone = ["*"] * 6
            alone[index] = fields[index]
            try:
                croniter(" ".join(alone), second_at_beginning=True)
            except CroniterError as problem:
                raise InvalidSchedule(
                    f"{expression!r}: {name} field {fields[index]!r}: {problem}"
                ) from None
        return schedule

    def _cron(self, start: datetime) -> croniter:
        return croniter(
            " ".join(self.fields),
            start,
            second_at_beginning=True,
            day_or=False,
            max_years_between_matches=SEARCH_YEARS,
        )

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires at this second."""
        return bool(
            croniter.match(" ".join(self.fields), moment, day_or=False, second_at_beginning=True)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (same tzinfo, whole seconds)."""
        try:
            found: datetime = self._cron(moment.replace(microsecond=0)).get_next(datetime)
        except CroniterBadDateError:
            raise InvalidSchedule(
                f"{self.expression!r} has no occurrence within {SEARCH_YEARS} years"
            ) from None
        return found

    def __str__(self) -> str:
        return self.expression
