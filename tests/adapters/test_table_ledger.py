"""The Table ledger against real Azurite through the real azure-data-tables client."""

from __future__ import annotations

import dataclasses
import socket
import threading
from datetime import timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.table_ledger import TableRunLedger, build_table_service
from shared.adapters.table_rows import partition_key
from shared.config import StorageConnection
from shared.domain.errors import DuplicateEvent, LedgerConflict, LedgerUnavailable
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import MachineId, RunId
from shared.domain.runs import (
    CancelRequest,
    EventRecord,
    MachineAction,
    MachineClaim,
    MachineKind,
    MachineRecord,
    NoteLevel,
    RefusedEvent,
    Run,
    RunNote,
    RunStatus,
)
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome
from shared.services.intake import take_in_event
from tests.builders import CORRELATION_ID, POST, PRE, START, FixedClock, event_grid_event

ANY = frozenset(EventKind)
RUN = RunId.parse(CORRELATION_ID)
NOW = START - timedelta(minutes=30)
VM = (
    "/subscriptions/1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d/resourceGroups/app/providers/"
    "Microsoft.Compute/virtualMachines/web-01"
)


@pytest.fixture
def ledger(azurite_connection_string: str, table_name: str) -> TableRunLedger:
    service = build_table_service(StorageConnection(connection_string=azurite_connection_string))
    return TableRunLedger(service, table_name)


def test_run_is_keyed_by_configuration_and_run_name() -> None:
    assert partition_key(RUN) == (
        "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d|ops|weekly-linux|20261201030000"
    )
    assert partition_key(
        RunId.parse(CORRELATION_ID.upper().replace("SUBSCRIPTIONS", "subscriptions"))
    ) == partition_key(RUN)


def test_event_and_run_round_trip(ledger: TableRunLedger) -> None:
    event = parse_event(event_grid_event(PRE), ANY)
    run = Run.first_seen(RUN, NOW).after_event(event, NOW)
    stored = ledger.record_event(EventRecord.of(event, NOW), run)
    assert stored.version
    again = ledger.find_run(RUN)
    assert again == stored
    [record] = list(ledger.list_events(RUN))
    assert record == EventRecord.of(event, NOW)


def test_redelivered_event_is_refused_atomically(ledger: TableRunLedger) -> None:
    event = parse_event(event_grid_event(PRE), ANY)
    stored = ledger.record_event(
        EventRecord.of(event, NOW), Run.first_seen(RUN, NOW).after_event(event, NOW)
    )
    later = dataclasses.replace(stored, status=RunStatus.PREPARED, updated_at=NOW + timedelta(1))
    with pytest.raises(DuplicateEvent):
        ledger.record_event(EventRecord.of(event, NOW + timedelta(1)), later)
    assert ledger.find_run(RUN) == stored  # the run row did not change either


def test_stale_run_version_is_a_conflict_and_writes_nothing(ledger: TableRunLedger) -> None:
    pre = parse_event(event_grid_event(PRE), ANY)
    post = parse_event(event_grid_event(POST), ANY)
    first = ledger.record_event(
        EventRecord.of(pre, NOW), Run.first_seen(RUN, NOW).after_event(pre, NOW)
    )
    ledger.save_run(dataclasses.replace(first, platform_status="InProgress"))
    with pytest.raises(LedgerConflict):
        ledger.record_event(EventRecord.of(post, NOW), first.after_event(post, NOW))
    assert [e.kind for e in ledger.list_events(RUN)] == [EventKind.PRE]


def test_creating_a_run_twice_is_a_conflict(ledger: TableRunLedger) -> None:
    ledger.save_run(Run.first_seen(RUN, NOW))
    with pytest.raises(LedgerConflict):
        ledger.save_run(Run.first_seen(RUN, NOW))


def test_two_writers_on_one_version_only_one_wins(ledger: TableRunLedger) -> None:
    base = ledger.save_run(Run.first_seen(RUN, NOW))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def write(status: RunStatus) -> None:
        barrier.wait()
        try:
            ledger.save_run(dataclasses.replace(base, status=status))
            outcomes.append("won")
        except LedgerConflict:
            outcomes.append("conflict")

    threads = [
        threading.Thread(target=write, args=(s,))
        for s in (RunStatus.PREPARING, RunStatus.CANCELLED)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "won"]


def test_concurrent_intake_of_pre_and_post_keeps_both(
    azurite_connection_string: str, table_name: str
) -> None:
    # Two "instances", each with its own client, take in the pre and post event at once (after
    # the run's start: a post event before it would only be noted).
    clock = FixedClock(START + timedelta(hours=2))
    events = [parse_event(event_grid_event(k), ANY) for k in (PRE, POST)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def instance(index: int) -> None:
        service = build_table_service(
            StorageConnection(connection_string=azurite_connection_string)
        )
        ledger = TableRunLedger(service, table_name)
        barrier.wait()
        try:
            take_in_event(events[index], ledger, clock)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=instance, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ledger = TableRunLedger(
        build_table_service(StorageConnection(connection_string=azurite_connection_string)),
        table_name,
    )
    run = ledger.find_run(RUN)
    assert run is not None
    assert run.pre_event_at is not None and run.post_event_at is not None
    assert run.status is RunStatus.POST_EVENT_RECEIVED
    assert sorted(e.kind.short for e in ledger.list_events(RUN)) == ["post", "pre"]


def test_machine_rows_keep_prior_state_and_action_with_etags(ledger: TableRunLedger) -> None:
    machine = MachineRecord(
        run_id=RUN,
        resource_id=VM,
        kind=MachineKind.VIRTUAL_MACHINE,
        prior_power_state="deallocated",
        action=MachineAction.STARTING,
        updated_at=NOW,
        owner_run=RUN.text,
    )
    stored = ledger.save_machine(machine)
    found = ledger.find_machine(RUN, VM.upper())
    assert found == stored
    started = ledger.save_machine(
        dataclasses.replace(stored, action=MachineAction.STARTED, last_power_state="running")
    )
    with pytest.raises(LedgerConflict):
        ledger.save_machine(dataclasses.replace(stored, action=MachineAction.START_FAILED))
    assert [m.action for m in ledger.list_machines(RUN)] == [MachineAction.STARTED]
    assert started.version != stored.version


def test_cancel_requests_are_an_append_only_audit_in_time_order(ledger: TableRunLedger) -> None:
    def request(minutes: int, outcome: CancelOutcome) -> CancelRequest:
        return CancelRequest(
            run_id=RUN,
            request_id=f"r{minutes}",
            requested_at=NOW + timedelta(minutes=minutes),
            requested_by="oid:ops",
            reason="bad patch",
            dry_run=False,
            outcome=outcome,
            window_opens_at=START - timedelta(minutes=40),
            window_closes_at=START - timedelta(minutes=11),
            service_code="Conflict" if outcome is CancelOutcome.REFUSED_BY_AZURE else None,
        )

    ledger.add_cancel_request(request(5, CancelOutcome.REFUSED_BY_AZURE))
    ledger.add_cancel_request(request(1, CancelOutcome.WOULD_CANCEL))
    assert [r.request_id for r in ledger.list_cancel_requests(RUN)] == ["r1", "r5"]
    assert next(iter(ledger.list_cancel_requests(RUN))).outcome is CancelOutcome.WOULD_CANCEL
    # Events, machines and cancels of one run stay apart.
    assert list(ledger.list_events(RUN)) == []
    assert list(ledger.list_machines(RUN)) == []


def test_unreachable_storage_raises_ledger_unavailable_quickly(table_name: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    ledger = TableRunLedger(
        build_table_service(StorageConnection(connection_string=conn)), table_name
    )
    with pytest.raises(LedgerUnavailable):
        ledger.find_run(RUN)


def test_identity_based_connection_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="credential"):
        build_table_service(StorageConnection(table_endpoint="https://x.table.core.windows.net"))


def test_the_table_is_created_once_on_first_use(
    azurite_connection_string: str, table_name: str
) -> None:
    service = TableServiceClient.from_connection_string(azurite_connection_string)
    assert table_name not in [t.name for t in service.list_tables()]
    ledger = TableRunLedger(service, table_name)
    assert ledger.find_run(RUN) is None
    assert table_name in [t.name for t in service.list_tables()]


def test_add_machines_creates_only_missing_rows_in_batches(ledger: TableRunLedger) -> None:
    def machine(i: int) -> MachineRecord:
        return MachineRecord.planned(RUN, VM.replace("web-01", f"web-{i:03d}"), NOW)

    assert ledger.add_machines(machine(i) for i in range(150)) == 150
    # A retry after a crash: 100 of these exist, 60 are new.
    assert ledger.add_machines(machine(i) for i in range(50, 210)) == 60
    rows = list(ledger.list_machines(RUN))
    assert len(rows) == 210
    assert {r.action for r in rows} == {MachineAction.PLANNED}
    assert rows[0].history[0][1] == "Planned"


def test_claims_are_per_machine_across_runs_with_etags(ledger: TableRunLedger) -> None:
    machine = MachineId.parse(VM)
    assert ledger.find_claim(machine) is None
    first = ledger.save_claim(
        MachineClaim(resource_id=VM, owner_run=RUN.text, needed_by=(RUN.text,))
    )
    other = CORRELATION_ID.replace("20261201030000", "20261201031500")
    second = ledger.save_claim(first.needing(other))
    with pytest.raises(LedgerConflict):
        ledger.save_claim(first.needing("x"))
    found = ledger.find_claim(MachineId.parse(VM.upper().replace("SUBSCRIPTIONS", "subscriptions")))
    assert found == second
    assert found.needed_by == (RUN.text, other)
    released = ledger.save_claim(found.released_by(RUN.text))
    assert released.owner_run is None
    assert released.needed_by == (other,)


def test_notes_keep_their_order_and_level(ledger: TableRunLedger) -> None:
    for minute, level in ((2, NoteLevel.ERROR), (1, NoteLevel.INFO)):
        ledger.add_note(
            RunNote(RUN, NOW + timedelta(minutes=minute), level, "test", f"note {minute}")
        )
    notes = list(ledger.list_notes(RUN))
    assert [n.message for n in notes] == ["note 1", "note 2"]
    assert notes[1].level is NoteLevel.ERROR


def test_list_runs_finds_every_run_row(ledger: TableRunLedger) -> None:
    second = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261208030000"))
    ledger.save_run(Run.first_seen(RUN, NOW))
    ledger.save_run(Run.first_seen(second, NOW))
    ledger.add_note(RunNote(RUN, NOW, NoteLevel.INFO, "test", "not a run"))
    assert sorted(r.run_id.run_name for r in ledger.list_runs()) == [
        "20261201030000",
        "20261208030000",
    ]


def test_run_fields_of_later_steps_round_trip(ledger: TableRunLedger) -> None:
    run = dataclasses.replace(
        Run.first_seen(RUN, NOW),
        status=RunStatus.CANCELLED,
        gate_outcome=GateOutcome.CANCELLED,
        gate_detail="2 of 3",
        cancel_source=CancelSource.GATE,
        cancel_requested_at=NOW,
        wrap_up_started_at=NOW,
        completed_at=NOW,
        report_location="https://x/y.json",
    )
    stored = ledger.save_run(run)
    assert ledger.find_run(RUN) == stored


def test_refused_events_round_trip_newest_first(ledger: TableRunLedger) -> None:
    stored = [
        ledger.add_refused_event(
            RefusedEvent(
                refused_at=NOW + timedelta(seconds=seconds),
                channel="Event Grid (pre)",
                reason=f"reason {seconds}",
                event_id=None if seconds == 2 else f"id-{seconds}",
                excerpt='{"id": "x"}',
            )
        )
        for seconds in (1, 3, 2)
    ]
    assert all(r.record_id for r in stored)
    listed = ledger.list_refused_events(10)
    assert [r.reason for r in listed] == ["reason 3", "reason 2", "reason 1"]
    assert listed[1].event_id is None
    assert listed[0] == stored[1]
    assert [r.reason for r in ledger.list_refused_events(2)] == ["reason 3", "reason 2"]
    assert ledger.find_run(RUN) is None  # refusals never make a run


def test_a_run_keeps_t_from_its_events_not_its_name(ledger: TableRunLedger) -> None:
    local = CORRELATION_ID.replace("20261201030000", "20261201040000")
    event = parse_event(event_grid_event(PRE, CorrelationId=local), ANY)
    run = Run.first_seen(event.run, NOW).after_event(event, NOW)
    ledger.record_event(EventRecord.of(event, NOW), run)
    again = ledger.find_run(event.run)
    assert again is not None
    assert again.run_id.run_name == "20261201040000"
    assert again.start == START
    assert again.scheduled_start == START
