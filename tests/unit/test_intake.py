import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from shared.domain.errors import AzureCallFailed, LedgerConflict, LedgerUnavailable
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import ConfigurationId, RunId
from shared.domain.platform import PlatformRun
from shared.domain.runs import NoteLevel, Run, RunStatus
from shared.domain.tasks import MAX_TASK_DELAY, Task, TaskKind
from shared.services.intake import (
    MAX_ATTEMPTS,
    follow_up,
    is_early_post_event,
    preparation_delay,
    refuse_event,
    take_in_event,
    unmanaged_reason,
)
from tests.builders import (
    CONFIGURATION,
    CORRELATION_ID,
    POST,
    PRE,
    START,
    SUBSCRIPTION,
    FixedClock,
    InMemoryRunLedger,
    event_grid_event,
)
from tests.fakes import FakeGraph

ANY = frozenset(EventKind)
RUN = RunId.parse(CORRELATION_ID)


def test_first_pre_event_creates_the_run() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock()
    outcome = take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    assert not outcome.duplicate
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.PRE_EVENT_RECEIVED
    assert run.pre_event_at == clock.now()
    assert run.cancellation_cutoff == START - timedelta(minutes=10)
    assert len(list(ledger.list_events(RUN))) == 1


def test_redelivered_event_changes_nothing() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock()
    event = parse_event(event_grid_event(PRE), ANY)
    first = take_in_event(event, ledger, clock)
    clock.advance(timedelta(minutes=1))
    for _ in range(10):
        again = take_in_event(event, ledger, clock)
        assert again.duplicate
    assert ledger.find_run(RUN) == first.run
    assert len(list(ledger.list_events(RUN))) == 1


def test_pre_and_post_share_an_id_but_are_both_recorded() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock()
    take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    clock.advance(timedelta(hours=2))
    outcome = take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    assert not outcome.duplicate
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.POST_EVENT_RECEIVED
    assert run.post_event_status == "Succeeded"
    assert run.pre_event_at is not None
    assert run.post_event_at == clock.now()
    assert len(list(ledger.list_events(RUN))) == 2


def test_post_before_pre_keeps_the_run_post_and_records_both() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START + timedelta(hours=1))
    take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    clock.advance(timedelta(minutes=1))
    take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.POST_EVENT_RECEIVED
    assert run.pre_event_at is not None and run.post_event_at is not None
    assert run.pre_event_at > run.post_event_at


def test_a_concurrent_change_is_re_read_and_folded_in() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock()
    take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    clock.advance(timedelta(hours=2))
    post = parse_event(event_grid_event(POST), ANY)

    def someone_else_writes_once() -> None:
        ledger.before_commit.clear()
        run = ledger.find_run(RUN)
        assert run is not None
        ledger.save_run(run.__class__(**{**run.__dict__, "platform_status": "InProgress"}))

    ledger.before_commit.append(someone_else_writes_once)
    take_in_event(post, ledger, clock)
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.platform_status == "InProgress"  # the other writer's change survived
    assert run.status is RunStatus.POST_EVENT_RECEIVED


def test_endless_conflicts_give_up_with_a_conflict_error() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START + timedelta(hours=2))
    take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    calls = []

    def always_change() -> None:
        calls.append(1)
        run = ledger.find_run(RUN)
        assert run is not None
        ledger.save_run(run)

    ledger.before_commit.append(always_change)
    with pytest.raises(LedgerConflict):
        take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    assert len(calls) == MAX_ATTEMPTS


def test_oddities_of_an_event_are_written_once_as_run_notes() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock()
    local = CORRELATION_ID.replace("20261201030000", "20261201040000")
    event = parse_event(
        event_grid_event(PRE, CorrelationId=local, ResourceSubscriptionIds=SUBSCRIPTION), ANY
    )
    take_in_event(event, ledger, clock)
    take_in_event(event, ledger, clock)  # a redelivery adds nothing
    notes = list(ledger.list_notes(RunId.parse(local)))
    assert [n.level for n in notes] == [NoteLevel.WARNING, NoteLevel.WARNING]
    assert any("came as a string" in n.message for n in notes)
    assert any("differs from the run name" in n.message for n in notes)
    stored = ledger.find_run(RunId.parse(local))
    assert stored is not None and stored.scheduled_start == START


def test_only_configurations_in_the_allow_list_are_managed() -> None:
    event = parse_event(event_grid_event(PRE), ANY)
    assert unmanaged_reason(event, None) is None
    assert (
        unmanaged_reason(
            event,
            [
                ConfigurationId.parse(
                    CONFIGURATION.upper().replace("SUBSCRIPTIONS", "subscriptions")
                )
            ],
        )
        is None
    )
    other = ConfigurationId.parse(CONFIGURATION.replace("weekly-linux", "monthly"))
    reason = unmanaged_reason(event, [other])
    assert reason is not None and "TARGET_CONFIGURATION_IDS" in reason


class Notifications:
    def __init__(self, fails: bool = False) -> None:
        self.sent: list[object] = []
        self.fails = fails

    def send(self, summary: object) -> None:
        self.sent.append(summary)
        if self.fails:
            raise RuntimeError("webhook down")


def test_a_refusal_is_recorded_sanitised_and_notified() -> None:
    ledger, clock, notifier = InMemoryRunLedger(), FixedClock(), Notifications()
    stored = refuse_event(
        channel="Event Grid (pre)",
        reason="event has no data object",
        event_id="id\nwith\x00controls" + "x" * 1000,
        payload="{" + "y" * 5000 + "\x07}",
        ledger=ledger,
        clock=clock,
        notifier=notifier,
    )
    assert ledger.list_refused_events(10) == [stored]
    assert stored.event_id is not None and stored.event_id.isprintable()
    assert len(stored.event_id) <= 512
    assert len(stored.excerpt) <= 1000 and stored.excerpt.isprintable()
    assert stored.refused_at == clock.now()
    [message] = notifier.sent
    assert isinstance(message, dict) and message["refusedEvent"]["reason"] == stored.reason


def test_a_failing_webhook_does_not_undo_or_fail_a_refusal() -> None:
    ledger, notifier = InMemoryRunLedger(), Notifications(fails=True)
    refuse_event(
        channel="queue",
        reason="payload is not JSON",
        event_id=None,
        payload="nope",
        ledger=ledger,
        clock=FixedClock(),
        notifier=notifier,
    )
    assert len(ledger.list_refused_events(10)) == 1


def test_a_refusal_that_cannot_be_stored_raises_so_the_delivery_is_retried() -> None:
    ledger = InMemoryRunLedger()

    def unavailable(refusal: object) -> object:
        raise LedgerUnavailable("storage down")

    ledger.add_refused_event = unavailable  # type: ignore[method-assign,assignment]
    with pytest.raises(LedgerUnavailable):
        refuse_event(
            channel="queue",
            reason="payload is not JSON",
            event_id=None,
            payload="nope",
            ledger=ledger,
            clock=FixedClock(),
            notifier=None,
        )


def test_a_post_event_before_the_start_is_noted_and_held_without_moving_the_run() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(minutes=35))
    outcome = take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    assert outcome.held and not outcome.duplicate
    run = ledger.find_run(RUN)
    assert run is not None
    assert (run.status, run.post_event_at) == (RunStatus.SCHEDULED, None)
    assert list(ledger.list_events(RUN)) == []  # the real post event is not a duplicate later
    [note] = ledger.list_notes(RUN)
    assert note.level is NoteLevel.WARNING and "before the run's start" in note.message
    assert follow_up(parse_event(event_grid_event(POST), ANY), outcome) is None
    # The real pre event then prepares the run as usual.
    clock.advance(timedelta(minutes=3))
    pre = parse_event(event_grid_event(PRE), ANY)
    after_pre = take_in_event(pre, ledger, clock)
    assert after_pre.run is not None and after_pre.run.status is RunStatus.PRE_EVENT_RECEIVED
    assert follow_up(pre, after_pre) == Task(TaskKind.PREPARE, RUN)


def test_an_early_post_event_delivered_again_is_noted_once_and_another_one_is_noted_too() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(minutes=50))
    post = parse_event(event_grid_event(POST), ANY)
    for _ in range(3):
        assert take_in_event(post, ledger, clock).held
        clock.advance(timedelta(seconds=10))
    other = parse_event({**event_grid_event(POST), "id": "another-post-event"}, ANY)
    assert take_in_event(other, ledger, clock).held
    notes = [n.message for n in ledger.list_notes(RUN)]
    assert len(notes) == 2
    assert "another-post-event" in notes[1] and "another-post-event" not in notes[0]


def test_an_early_post_event_does_not_hold_a_prepared_run_back_from_its_real_post() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(minutes=35))
    take_in_event(parse_event(event_grid_event(PRE), ANY), ledger, clock)
    take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    run = ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.PRE_EVENT_RECEIVED
    clock.advance(timedelta(hours=3))
    real = take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock)
    assert not real.duplicate and not real.held
    assert real.run is not None and real.run.status is RunStatus.POST_EVENT_RECEIVED


@pytest.mark.parametrize(
    ("platform_status", "status", "early"),
    [
        (None, RunStatus.SCHEDULED, True),
        ("InProgress", RunStatus.PREPARED, True),
        ("Succeeded", RunStatus.PREPARED, False),  # Resource Graph shows the run ended
        ("Failed", RunStatus.PREPARING, False),
        ("Canceled", RunStatus.PRE_EVENT_RECEIVED, False),  # cancelled outside the app
        (None, RunStatus.CANCELLED, False),  # cancelled by the app
        (None, RunStatus.WRAPPING_UP, False),
    ],
)
def test_a_post_event_before_the_start_is_early_unless_the_run_was_cancelled_or_ended(
    platform_status: str | None, status: RunStatus, early: bool
) -> None:
    now = START - timedelta(minutes=20)
    post = parse_event(event_grid_event(POST), ANY)
    run = dataclasses.replace(
        Run.first_seen(RUN, now), status=status, platform_status=platform_status
    )
    assert is_early_post_event(post, run, now) is early
    assert is_early_post_event(post, None, now)
    assert not is_early_post_event(post, run, START)  # from T on, a post event is real


def test_a_pre_event_before_t_minus_40_is_recorded_and_noted_with_the_preparation_time() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(days=400))
    pre = parse_event(event_grid_event(PRE), ANY)
    outcome = take_in_event(pre, ledger, clock)
    assert outcome.run is not None and outcome.run.status is RunStatus.PRE_EVENT_RECEIVED
    assert len(list(ledger.list_events(RUN))) == 1
    [note] = ledger.list_notes(RUN)
    assert (START - timedelta(minutes=40)).isoformat() in note.message


@pytest.mark.parametrize(
    ("before_start", "delay"),
    [
        (timedelta(minutes=30), timedelta(0)),
        (timedelta(minutes=40), timedelta(0)),
        (timedelta(minutes=41), timedelta(minutes=1)),
        (timedelta(days=3), timedelta(days=3) - timedelta(minutes=40)),
        (timedelta(days=400), MAX_TASK_DELAY),  # the queue hides a message 7 days at most
    ],
)
def test_a_prepare_task_is_held_until_t_minus_40_in_hops_the_queue_allows(
    before_start: timedelta, delay: timedelta
) -> None:
    now = START - before_start
    assert preparation_delay(Task(TaskKind.PREPARE, RUN), now, START) == delay
    assert preparation_delay(Task(TaskKind.WRAP_UP, RUN), now, START) == timedelta(0)


def test_an_early_post_event_counts_when_resource_graph_already_shows_the_run_ended() -> None:
    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(minutes=20))
    graph = FakeGraph()
    graph.runs = [PlatformRun(RUN, "Canceled", None, None, "cancelled using cancellation API")]
    outcome = take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock, graph)
    assert not outcome.held
    assert outcome.run is not None and outcome.run.status is RunStatus.POST_EVENT_RECEIVED
    assert outcome.run.platform_status == "Cancelled"


def test_an_early_post_event_is_held_when_resource_graph_cannot_be_read() -> None:
    class FailingGraph(FakeGraph):
        def list_runs(self, configurations: object, subscriptions: object) -> Iterator[Any]:
            raise AzureCallFailed("Resource Graph", 503, "ServiceUnavailable", "try later")

    ledger, clock = InMemoryRunLedger(), FixedClock(START - timedelta(minutes=20))
    outcome = take_in_event(parse_event(event_grid_event(POST), ANY), ledger, clock, FailingGraph())
    assert outcome.held
