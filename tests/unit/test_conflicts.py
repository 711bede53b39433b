import pytest

from shared.domain.errors import LedgerConflict
from shared.services.conflicts import retry_on_conflict


def test_an_attempt_that_loses_a_few_races_lands_on_a_later_try() -> None:
    tries: list[int] = []

    def attempt() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise LedgerConflict("someone else wrote first")
        return "stored"

    assert retry_on_conflict(attempt, what="run r", attempts=5) == "stored"
    assert len(tries) == 3


def test_a_row_that_keeps_changing_is_never_given_up_silently() -> None:
    tries: list[int] = []

    def attempt() -> None:
        tries.append(1)
        raise LedgerConflict("someone else wrote first")

    with pytest.raises(LedgerConflict, match="run r kept changing: gave up after 4 attempts"):
        retry_on_conflict(attempt, what="run r", attempts=4)
    assert len(tries) == 4


def test_other_errors_are_not_retried() -> None:
    tries: list[int] = []

    def attempt() -> None:
        tries.append(1)
        raise ValueError("not a race")

    with pytest.raises(ValueError, match="not a race"):
        retry_on_conflict(attempt, what="run r")
    assert len(tries) == 1
