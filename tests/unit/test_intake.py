from datetime import timedelta

import pytest

from shared.domain.errors import LedgerConflict
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import RunId
from shared.domain.runs import RunStatus
from shared.services.intake import MAX_ATTEMPTS, take_in_event
from tests.builders import (
    CORRELATION_ID,
    POST,
    PRE,
    START,
    FixedClock,
    InMemoryRunLedger,
    event_grid_event,
)

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
    ledger, clock = InMemoryRunLedger(), FixedClock()
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
    ledger, clock = InMemoryRunLedger(), FixedClock()
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
