"""The cancel rule as a pure function (the use case around it: test_cancellation.py)."""

from dataclasses import replace
from datetime import timedelta

from shared.domain.cancel_rules import STALE_REQUEST, refusal
from shared.domain.ids import RunId
from shared.domain.runs import Run, RunStatus
from shared.domain.timeline import CancelWindow
from shared.domain.vocabulary import CancelSource, CancelVerdict, PlatformStatus
from tests.builders import CORRELATION_ID, START

RUN = Run.first_seen(RunId.parse(CORRELATION_ID), START - timedelta(minutes=45))
WINDOW = CancelWindow.for_run(START, None, timedelta(seconds=60))
INSIDE = START - timedelta(minutes=30)


def verdict_of(run: Run | None, minutes_before_t: float) -> CancelVerdict | None:
    found = refusal(run, WINDOW, START - timedelta(minutes=minutes_before_t), START)
    return None if found is None else found[0]


def test_inside_the_window_a_platform_word_seen_before_t_does_not_refuse() -> None:
    in_progress = replace(RUN, platform_status=PlatformStatus.IN_PROGRESS)
    assert verdict_of(in_progress, 30) is None
    assert verdict_of(None, 30) is None


def test_the_window_bounds_refuse_with_their_own_verdicts() -> None:
    assert verdict_of(RUN, 41) is CancelVerdict.TOO_EARLY
    assert verdict_of(RUN, 10.5) is CancelVerdict.TOO_LATE
    assert verdict_of(RUN, 0) is CancelVerdict.NOT_CANCELLABLE


def test_a_cancelled_run_in_any_form_is_already_cancelled() -> None:
    assert (
        verdict_of(replace(RUN, status=RunStatus.CANCELLED), 30) is CancelVerdict.ALREADY_CANCELLED
    )
    by_gate = replace(RUN, status=RunStatus.WRAPPING_UP, cancel_source=CancelSource.GATE)
    assert verdict_of(by_gate, 30) is CancelVerdict.ALREADY_CANCELLED
    assert (
        verdict_of(replace(RUN, platform_status="Canceled"), 30) is CancelVerdict.ALREADY_CANCELLED
    )


def test_a_fresh_cancel_mark_is_in_flight_and_a_stale_one_is_not() -> None:
    fresh = replace(RUN, cancel_requested_at=INSIDE - timedelta(seconds=5))
    assert verdict_of(fresh, 30) is CancelVerdict.IN_FLIGHT
    stale = replace(RUN, cancel_requested_at=INSIDE - STALE_REQUEST)
    assert verdict_of(stale, 30) is None


def test_a_run_past_its_post_event_is_not_cancellable_and_says_its_state() -> None:
    found = refusal(replace(RUN, status=RunStatus.WRAPPING_UP), WINDOW, INSIDE, START)
    assert found is not None
    assert found[0] is CancelVerdict.NOT_CANCELLABLE
    assert "WrappingUp" in found[1]
