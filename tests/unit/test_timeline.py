from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.timeline import (
    CancelWindow,
    WindowPosition,
    machines_running_deadline,
)
from tests.builders import START

SECOND = timedelta(seconds=1)
MARGIN = timedelta(seconds=60)


def test_window_opens_exactly_at_t_minus_40() -> None:
    window = CancelWindow.for_run(START, None, MARGIN)
    opens = START - timedelta(minutes=40)
    assert window.opens_at == opens
    assert window.position(opens - SECOND) is WindowPosition.TOO_EARLY
    assert window.position(opens - timedelta(microseconds=1)) is WindowPosition.TOO_EARLY
    assert window.position(opens) is WindowPosition.OPEN


def test_window_without_cutoff_closes_at_t_minus_10_minus_margin() -> None:
    window = CancelWindow.for_run(START, None, MARGIN)
    closes = START - timedelta(minutes=10) - MARGIN
    assert window.closes_at == closes
    assert window.position(closes - timedelta(microseconds=1)) is WindowPosition.OPEN
    assert window.position(closes) is WindowPosition.CLOSED
    assert "T-10" in window.closes_because


def test_cutoff_earlier_than_t_minus_10_closes_the_window_earlier() -> None:
    cutoff = START - timedelta(minutes=12)
    window = CancelWindow.for_run(START, cutoff, MARGIN)
    assert window.closes_at == cutoff - MARGIN
    assert window.position(cutoff - MARGIN - SECOND) is WindowPosition.OPEN
    assert window.position(cutoff - MARGIN) is WindowPosition.CLOSED
    assert "CancellationCutOffDateTime" in window.closes_because


def test_cutoff_later_than_t_minus_10_does_not_extend_the_window() -> None:
    # The schema example has a cut-off at T−1; the prose says T−10. We follow the earlier one.
    window = CancelWindow.for_run(START, START - timedelta(minutes=1), MARGIN)
    assert window.closes_at == START - timedelta(minutes=10) - MARGIN


def test_cutoff_exactly_at_t_minus_10_gives_the_same_close() -> None:
    window = CancelWindow.for_run(START, START - timedelta(minutes=10), MARGIN)
    assert window.closes_at == START - timedelta(minutes=11)


def test_margin_is_a_setting_and_zero_margin_closes_at_the_limit() -> None:
    window = CancelWindow.for_run(START, None, timedelta(0))
    assert window.closes_at == START - timedelta(minutes=10)
    assert window.position(START - timedelta(minutes=10) - SECOND) is WindowPosition.OPEN
    assert window.position(START - timedelta(minutes=10)) is WindowPosition.CLOSED
    wide = CancelWindow.for_run(START, None, timedelta(seconds=300))
    assert wide.closes_at == START - timedelta(minutes=15)


def test_cutoff_before_window_opens_leaves_an_empty_window() -> None:
    window = CancelWindow.for_run(START, START - timedelta(minutes=45), MARGIN)
    assert window.closes_at == window.opens_at
    assert window.position(window.opens_at) is WindowPosition.CLOSED
    assert window.position(window.opens_at - SECOND) is WindowPosition.TOO_EARLY


def test_negative_margin_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        CancelWindow.for_run(START, None, timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone"):
        CancelWindow.for_run(START.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone"):
        CancelWindow.for_run(START).position(datetime(2026, 12, 1, 2, 30))


def test_machines_must_run_by_t_minus_15() -> None:
    assert machines_running_deadline(START) == datetime(2026, 12, 1, 2, 45, tzinfo=UTC)
