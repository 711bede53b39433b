"""The cancel rule (reference §3) at its exact boundaries, with fakes of our ports."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta

import pytest

from shared.domain.ids import RunId
from shared.domain.runs import CancelOutcome, Run, RunStatus
from shared.domain.tasks import TaskKind
from shared.services.cancellation import (
    CancelAnswer,
    CancelContext,
    CancelSource,
    CancelVerdict,
    cancel_run,
)
from tests.builders import CORRELATION_ID, START, FixedClock, InMemoryRunLedger
from tests.fakes import FakeCanceller, ScheduledQueue

RUN = RunId.parse(CORRELATION_ID)
MARGIN = timedelta(seconds=60)
OPENS = START - timedelta(minutes=40)
CLOSES = START - timedelta(minutes=10) - MARGIN


class Setup:
    def __init__(self) -> None:
        self.clock = FixedClock()
        self.ledger = InMemoryRunLedger()
        self.canceller = FakeCanceller()
        self.queue = ScheduledQueue(self.clock)
        self.context = CancelContext(self.ledger, self.canceller, self.queue, self.clock, MARGIN)

    def cancel(
        self, at: datetime | None = None, dry_run: bool = False, by: str = "oid:ops"
    ) -> CancelAnswer:
        if at is not None:
            self.clock.current = at
        return cancel_run(
            RUN,
            self.context,
            requested_by=by,
            reason="bad patch",
            source=CancelSource.USER,
            dry_run=dry_run,
        )


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_too_early_one_microsecond_before_t_minus_40(setup: Setup) -> None:
    answer = setup.cancel(OPENS - timedelta(microseconds=1))
    assert answer.verdict is CancelVerdict.TOO_EARLY
    assert answer.window.opens_at == OPENS
    assert setup.canceller.cancelled == []


def test_accepted_exactly_at_t_minus_40(setup: Setup) -> None:
    answer = setup.cancel(OPENS)
    assert answer.verdict is CancelVerdict.CANCELLED
    assert setup.canceller.cancelled == [RUN.key]
    run = setup.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    assert run.cancel_source == "User"
    assert [t.kind for t in setup.queue.sent] == [TaskKind.WRAP_UP]


def test_accepted_just_before_the_close_and_refused_at_it(setup: Setup) -> None:
    assert (
        setup.cancel(CLOSES - timedelta(microseconds=1), dry_run=True).verdict
        is CancelVerdict.WOULD_CANCEL
    )
    refused = setup.cancel(CLOSES)
    assert refused.verdict is CancelVerdict.TOO_LATE
    assert refused.window.closes_at == CLOSES
    assert "T-10" in refused.explanation
    assert setup.canceller.cancelled == []


def test_the_events_cutoff_closes_the_window_earlier(setup: Setup) -> None:
    cutoff = START - timedelta(minutes=20)
    setup.ledger.save_run(
        dataclasses.replace(Run.first_seen(RUN, OPENS), cancellation_cutoff=cutoff)
    )
    assert setup.cancel(cutoff - MARGIN).verdict is CancelVerdict.TOO_LATE
    assert setup.cancel(cutoff - MARGIN - timedelta(seconds=1)).verdict is CancelVerdict.CANCELLED


def test_already_cancelled_answers_without_calling_azure(setup: Setup) -> None:
    setup.cancel(OPENS)
    again = setup.cancel(OPENS + timedelta(minutes=1))
    assert again.verdict is CancelVerdict.ALREADY_CANCELLED
    assert setup.canceller.cancelled == [RUN.key]
    outcomes = [c.outcome for c in setup.ledger.cancels]
    assert outcomes == [CancelOutcome.ACCEPTED, CancelOutcome.ALREADY_CANCELLED]


def test_dry_run_never_calls_azure_and_is_audited(setup: Setup) -> None:
    answer = setup.cancel(OPENS + timedelta(minutes=5), dry_run=True)
    assert answer.verdict is CancelVerdict.WOULD_CANCEL
    assert setup.canceller.cancelled == []
    [audit] = setup.ledger.cancels
    assert audit.dry_run
    assert audit.requested_by == "oid:ops"


@pytest.mark.parametrize(
    "status", [RunStatus.POST_EVENT_RECEIVED, RunStatus.WRAPPING_UP, RunStatus.COMPLETED]
)
def test_a_run_in_progress_or_finished_is_not_cancellable(setup: Setup, status: RunStatus) -> None:
    setup.ledger.save_run(dataclasses.replace(Run.first_seen(RUN, OPENS), status=status))
    assert setup.cancel(OPENS + timedelta(minutes=1)).verdict is CancelVerdict.NOT_CANCELLABLE


def test_a_platform_status_in_progress_is_not_cancellable(setup: Setup) -> None:
    setup.ledger.save_run(
        dataclasses.replace(Run.first_seen(RUN, OPENS), platform_status="InProgress")
    )
    assert setup.cancel(OPENS + timedelta(minutes=1)).verdict is CancelVerdict.NOT_CANCELLABLE


def test_azure_refusal_keeps_its_words_and_rereads_the_run(setup: Setup) -> None:
    setup.canceller.refuse = ("CancellationNotAllowed", "too late for this run")
    answer = setup.cancel(OPENS + timedelta(minutes=1))
    assert answer.verdict is CancelVerdict.REFUSED_BY_AZURE
    assert (answer.service_code, answer.service_message) == (
        "CancellationNotAllowed",
        "too late for this run",
    )
    assert answer.platform_status == "Pending"  # re-read after the refusal
    run = setup.ledger.find_run(RUN)
    assert run is not None
    assert run.cancel_requested_at is None  # the mark is cleared, a later try may go ahead
    assert run.status is not RunStatus.CANCELLED


def test_a_cancel_racing_another_sends_one_request(setup: Setup) -> None:
    setup.clock.current = OPENS + timedelta(minutes=2)
    gate = threading.Barrier(2)
    answers = []

    def request(by: str) -> None:
        gate.wait()
        answers.append(
            cancel_run(RUN, setup.context, requested_by=by, reason="race", source=CancelSource.USER)
        )

    threads = [threading.Thread(target=request, args=(who,)) for who in ("api", "app:gate")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert setup.canceller.cancelled == [RUN.key]
    assert sorted(a.verdict.value for a in answers) in (
        ["AlreadyCancelled", "Cancelled"],
        ["CancelInFlight", "Cancelled"],
    )
