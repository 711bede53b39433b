"""The cancel rule (reference §3) at its exact boundaries, with fakes of our ports."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta

import pytest

from shared.domain.errors import AzureCallFailed
from shared.domain.ids import RunId
from shared.domain.platform import PlatformRun
from shared.domain.runs import NoteLevel, Run, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.domain.vocabulary import CancelOutcome, CancelSource, CancelVerdict
from shared.services.cancel_confirmation import CONFIRM_ROUNDS, confirm_cancel
from shared.services.cancellation import CancelAnswer, CancelContext, cancel_run
from tests.builders import CORRELATION_ID, START, FixedClock, InMemoryRunLedger
from tests.fakes import FakeCanceller, FakeGraph, ScheduledQueue

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
        self.graph = FakeGraph()
        self.context = CancelContext(
            self.ledger, self.canceller, self.queue, self.clock, MARGIN, graph=self.graph
        )

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
    setup.canceller.answer = (200, "Cancelled")
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
    assert setup.cancel(cutoff - MARGIN - timedelta(seconds=1)).verdict.accepted


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


@pytest.mark.parametrize("word", ["InProgress", "Pending", "Completed", "Failed", "Unheard"])
def test_before_t_the_window_alone_decides_whatever_word_the_platform_shows(
    setup: Setup, word: str
) -> None:
    setup.ledger.save_run(dataclasses.replace(Run.first_seen(RUN, OPENS), platform_status=word))
    assert setup.cancel(OPENS - timedelta(seconds=1)).verdict is CancelVerdict.TOO_EARLY
    assert setup.cancel(CLOSES).verdict is CancelVerdict.TOO_LATE
    assert setup.cancel(OPENS + timedelta(minutes=1)).verdict.accepted
    assert setup.canceller.puts == [RUN.key]


@pytest.mark.parametrize("word", [None, "InProgress", "Pending"])
def test_from_t_on_the_run_is_under_way_and_not_cancellable(setup: Setup, word: str | None) -> None:
    setup.ledger.save_run(dataclasses.replace(Run.first_seen(RUN, OPENS), platform_status=word))
    answer = setup.cancel(START)
    assert answer.verdict is CancelVerdict.NOT_CANCELLABLE
    assert "under way" in answer.explanation
    assert setup.canceller.puts == []
    [audit] = setup.ledger.cancels
    assert audit.outcome is CancelOutcome.REFUSED_RUN_STATE


def test_t_comes_from_the_runs_own_start_not_its_name(setup: Setup) -> None:
    # The run name says 03:00; the event said 03:30 (a configuration in another time zone).
    later = START + timedelta(minutes=30)
    known: Run = Run(
        run_id=RUN, status=RunStatus.PRE_EVENT_RECEIVED, created_at=OPENS, updated_at=OPENS
    )
    if "scheduled_start" in {f.name for f in dataclasses.fields(Run)}:
        known = dataclasses.replace(known, scheduled_start=later)  # type: ignore[call-arg,unused-ignore]
    else:

        class LaterRun(Run):
            @property
            def scheduled_start(self) -> datetime:
                return later

        known = LaterRun(**{f.name: getattr(known, f.name) for f in dataclasses.fields(Run)})
    setup.ledger.save_run(known)
    answer = setup.cancel(START + timedelta(minutes=5))
    assert answer.window.opens_at == later - timedelta(minutes=40)
    assert answer.verdict.accepted


@pytest.mark.parametrize(
    ("status", "word", "verdict"),
    [
        (200, "Cancelled", CancelVerdict.CANCELLED),
        (201, "Cancelled", CancelVerdict.CANCELLED),
        (200, "Canceled", CancelVerdict.CANCELLED),
        (202, "Cancel", CancelVerdict.CANCEL_REQUESTED),
        (202, "Cancelled", CancelVerdict.CANCEL_REQUESTED),
        (200, "Cancel", CancelVerdict.CANCEL_REQUESTED),
        (200, "SomethingNew", CancelVerdict.CANCEL_REQUESTED),
        (200, None, CancelVerdict.CANCEL_REQUESTED),
        (204, None, CancelVerdict.CANCEL_REQUESTED),
    ],
)
def test_any_2xx_is_an_accepted_cancel_recorded_before_anything_else(
    setup: Setup, status: int, word: str | None, verdict: CancelVerdict
) -> None:
    setup.canceller.answer = (status, word)
    seen_when_queued: list[tuple[RunStatus | None, list[CancelOutcome]]] = []
    send = setup.queue.send

    def watching_send(task: Task, delay: timedelta = timedelta(0)) -> None:
        run = setup.ledger.find_run(RUN)
        seen_when_queued.append(
            (run.status if run else None, [c.outcome for c in setup.ledger.cancels])
        )
        send(task, delay)

    setup.queue.send = watching_send  # type: ignore[method-assign]
    answer = setup.cancel()
    assert answer.verdict is verdict
    assert answer.platform_status == word
    run = setup.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert [c.outcome for c in setup.ledger.cancels] == [CancelOutcome.ACCEPTED]
    assert str(status) in setup.ledger.cancels[0].detail
    # The ledger and the audit say "accepted" before the wrap-up (or anything) is queued.
    assert seen_when_queued and all(
        seen == (RunStatus.CANCELLED, [CancelOutcome.ACCEPTED]) for seen in seen_when_queued
    )
    kinds = [t.kind for t in setup.queue.sent]
    assert kinds[0] is TaskKind.WRAP_UP
    assert (TaskKind.CONFIRM_CANCEL in kinds) is (verdict is CancelVerdict.CANCEL_REQUESTED)
    # A repeat sends no PUT.
    assert setup.cancel().verdict is CancelVerdict.ALREADY_CANCELLED
    assert setup.canceller.puts == [RUN.key]


def test_the_confirm_task_records_what_azure_finally_says(setup: Setup) -> None:
    setup.cancel()
    assert setup.ledger.find_run(RUN).platform_status == "Cancel"  # type: ignore[union-attr]
    confirm = next(t for t in setup.queue.sent if t.kind is TaskKind.CONFIRM_CANCEL)
    confirm_cancel(confirm, setup.context)
    run = setup.ledger.find_run(RUN)
    assert run is not None and run.platform_status == "Cancelled"
    assert [(n.level, n.source) for n in setup.ledger.notes] == [(NoteLevel.INFO, "cancel")]
    assert "Cancelled" in setup.ledger.notes[0].message


def test_a_cancel_azure_never_confirms_is_reported_after_the_last_read(setup: Setup) -> None:
    setup.cancel()
    setup.canceller.cancelled.clear()  # Azure keeps showing the run Pending
    confirm = next(t for t in setup.queue.sent if t.kind is TaskKind.CONFIRM_CANCEL)
    for round_ in range(CONFIRM_ROUNDS):
        confirm_cancel(dataclasses.replace(confirm, round=round_), setup.context)
    [note] = setup.ledger.notes
    assert note.level is NoteLevel.ERROR
    assert "Pending" in note.message
    assert setup.ledger.find_run(RUN).status is RunStatus.CANCELLED  # type: ignore[union-attr]


def test_a_lost_answer_is_read_back_and_the_cancel_recorded_without_a_second_put(
    setup: Setup,
) -> None:
    setup.canceller.lose_answer = AzureCallFailed("Maintenance", None, None, "connection reset")
    answer = setup.cancel()
    assert answer.verdict is CancelVerdict.CANCELLED  # read back: Azure shows Cancelled
    assert "lost" in answer.explanation
    assert setup.canceller.puts == [RUN.key]
    assert [c.outcome for c in setup.ledger.cancels] == [CancelOutcome.ACCEPTED]
    assert setup.cancel().verdict is CancelVerdict.ALREADY_CANCELLED
    assert setup.canceller.puts == [RUN.key]


def test_a_lost_answer_falls_back_to_resource_graph_when_the_get_fails(setup: Setup) -> None:
    setup.canceller.lose_answer = AzureCallFailed("Maintenance", 502, "BadGateway", "lost")
    setup.canceller.fail_reads = True
    setup.graph.runs = [PlatformRun(RUN, "Cancelled", None, None, "cancelled using API")]
    answer = setup.cancel()
    assert answer.verdict is CancelVerdict.CANCELLED
    assert setup.canceller.puts == [RUN.key]


def test_a_lost_answer_that_cannot_be_read_back_sends_no_second_put(setup: Setup) -> None:
    setup.ledger.save_run(Run.first_seen(RUN, OPENS))  # the pre event came
    setup.canceller.lose_answer = AzureCallFailed("Maintenance", None, None, "timed out")
    setup.canceller.fail_reads = True
    answer = setup.cancel()
    assert answer.verdict is CancelVerdict.UNCONFIRMED
    assert [c.outcome for c in setup.ledger.cancels] == [CancelOutcome.UNCONFIRMED]
    # Later requests, fresh or stale, read back first and never PUT while Azure is unreadable.
    assert setup.cancel().verdict is CancelVerdict.IN_FLIGHT
    assert setup.cancel(setup.clock.now() + timedelta(minutes=3)).verdict is (
        CancelVerdict.UNCONFIRMED
    )
    assert setup.canceller.puts == [RUN.key]
    # The confirm task reads it once Azure answers again, and records the cancel then.
    setup.canceller.fail_reads = False
    confirm = next(t for t in setup.queue.sent if t.kind is TaskKind.CONFIRM_CANCEL)
    confirm_cancel(confirm, setup.context)
    run = setup.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.CANCELLED
    assert setup.ledger.cancels[-1].outcome is CancelOutcome.ACCEPTED
    assert setup.ledger.cancels[-1].requested_by == "oid:ops"
    assert TaskKind.WRAP_UP in [t.kind for t in setup.queue.sent]
    assert setup.canceller.puts == [RUN.key]


def test_a_failure_that_did_not_land_clears_the_mark_and_is_raised(setup: Setup) -> None:
    setup.canceller.fail_puts = AzureCallFailed("Maintenance", 503, "ServerBusy", "busy")
    with pytest.raises(AzureCallFailed):
        setup.cancel()
    run = setup.ledger.find_run(RUN)
    assert run is not None and run.cancel_requested_at is None
    assert run.status is not RunStatus.CANCELLED


def test_a_run_azure_does_not_know_leaves_no_run_row(setup: Setup) -> None:
    setup.canceller.unknown.add(RUN.key)
    answer = setup.cancel()
    assert answer.verdict is CancelVerdict.REFUSED_BY_AZURE
    assert answer.service_status == 404
    assert setup.ledger.find_run(RUN) is None
    assert list(setup.ledger.list_runs()) == []
    assert setup.canceller.puts == []
    [audit] = setup.ledger.cancels
    assert audit.outcome is CancelOutcome.REFUSED_BY_AZURE


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
        ["AlreadyCancelled", "CancelRequested"],
        ["CancelInFlight", "CancelRequested"],
    )
