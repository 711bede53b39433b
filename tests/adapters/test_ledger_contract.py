"""The RunLedger contract (shared/services/ports.py): one set of tests, run against the in-memory
ledger the use-case tests use (tests/builders.py) and the Table ledger on real Azurite, so the
fake cannot drift from what it stands in for. Tests of the Table ledger alone (its keys, its
request counts, two clients at once) are in test_table_ledger.py and test_run_index.py."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.table_ledger import TableRunLedger, build_table_service
from shared.config import StorageConnection
from shared.domain.errors import DuplicateEvent, LedgerConflict
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import ConfigurationId, MachineId, RunId
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
    WatchRound,
)
from shared.domain.vocabulary import CancelOutcome, CancelSource, GateOutcome
from shared.services.ports import RunLedger
from tests.builders import CORRELATION_ID, POST, PRE, START, InMemoryRunLedger, event_grid_event

ANY = frozenset(EventKind)
RUN = RunId.parse(CORRELATION_ID)
NOW = START - timedelta(minutes=30)
SUBSCRIPTION = "1b7a0c4e-5d2f-4a8b-9c3d-2e1f0a9b8c7d"
OTHER_SUBSCRIPTION = "c0de0000-1111-4222-8333-444455556666"
VM = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
    "Microsoft.Compute/virtualMachines/web-01"
)
WEEKLY = ConfigurationId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)
WEEKLY_ELSEWHERE = ConfigurationId.parse(
    f"/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/weekly-linux"
)
MONTHLY = ConfigurationId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/ops/providers/"
    "Microsoft.Maintenance/maintenanceConfigurations/monthly"
)
FIRST = datetime(2026, 1, 3, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["in-memory", "table"])
def ledger(request: pytest.FixtureRequest) -> RunLedger:
    """Each test runs twice: on the in-memory fake and on the Table ledger (Azurite)."""
    if request.param == "in-memory":
        return InMemoryRunLedger()
    connection = request.getfixturevalue("azurite_connection_string")
    service = build_table_service(StorageConnection(connection_string=connection))
    return TableRunLedger(service, request.getfixturevalue("table_name"))


def run_of(configuration: ConfigurationId, start: datetime) -> RunId:
    return RunId.of(configuration, start.strftime("%Y%m%d%H%M%S"))


def save(ledger: RunLedger, run_id: RunId, status: RunStatus = RunStatus.SCHEDULED) -> Run:
    return ledger.save_run(dataclasses.replace(Run.first_seen(run_id, NOW), status=status))


def weekly_history(ledger: RunLedger, weeks: int) -> list[RunId]:
    runs = [run_of(WEEKLY, FIRST + timedelta(weeks=n)) for n in range(weeks)]
    for run_id in runs:
        save(ledger, run_id)
    return runs


def page(ledger: RunLedger, top: int = 5, **filters: Any) -> tuple[list[Run], str | None]:
    wanted: dict[str, Any] = {
        "configuration": None,
        "status": None,
        "start_from": None,
        "start_to": None,
        "after": None,
        **filters,
    }
    return ledger.list_runs_page(top=top, **wanted)


def a_machine(run_id: RunId, name: str = "web-01") -> MachineRecord:
    return MachineRecord(
        run_id=run_id,
        resource_id=VM.replace("web-01", name),
        kind=MachineKind.VIRTUAL_MACHINE,
        prior_power_state="deallocated",
        action=MachineAction.PLANNED,
        updated_at=NOW,
    )


# Runs, events, machines, claims, notes, cancel requests, refusals ----------------------


def test_a_run_the_ledger_never_saw_is_none_and_has_no_rows(ledger: RunLedger) -> None:
    assert ledger.find_run(RUN) is None
    assert ledger.find_machine(RUN, VM) is None
    assert ledger.find_claim(MachineId.parse(VM)) is None
    assert list(ledger.list_events(RUN)) == []
    assert list(ledger.list_machines(RUN)) == []
    assert list(ledger.list_notes(RUN)) == []
    assert list(ledger.list_cancel_requests(RUN)) == []
    assert list(ledger.list_runs()) == []
    assert list(ledger.list_open_runs()) == []
    assert ledger.list_known_configurations() == []
    assert ledger.list_refused_events(10) == []
    assert page(ledger) == ([], None)


def test_a_pre_and_a_post_event_with_one_id_are_two_events(ledger: RunLedger) -> None:
    now = START + timedelta(hours=2)
    pre = parse_event(event_grid_event(PRE), ANY)
    post = parse_event(event_grid_event(POST), ANY)
    assert pre.event_id == post.event_id
    first = ledger.record_event(
        EventRecord.of(pre, now), Run.first_seen(RUN, now).after_event(pre, now)
    )
    second = ledger.record_event(EventRecord.of(post, now), first.after_event(post, now))
    assert second.version not in (None, first.version)
    assert sorted(e.kind.short for e in ledger.list_events(RUN)) == ["post", "pre"]
    with pytest.raises(DuplicateEvent):
        ledger.record_event(EventRecord.of(post, now), second)


def test_a_machine_write_without_a_version_over_an_existing_row_is_a_conflict(
    ledger: RunLedger,
) -> None:
    stored = ledger.save_machine(a_machine(RUN))
    with pytest.raises(LedgerConflict):
        ledger.save_machine(a_machine(RUN))
    ledger.save_claim(MachineClaim(resource_id=VM, owner_run=None, needed_by=()))
    with pytest.raises(LedgerConflict):
        ledger.save_claim(MachineClaim(resource_id=VM, owner_run=None, needed_by=()))
    assert ledger.find_machine(RUN, VM) == stored


def test_a_lease_is_held_until_it_expires_or_its_holder_gives_it_back(ledger: RunLedger) -> None:
    minute = timedelta(minutes=1)
    assert ledger.acquire_lease("reconcile", "a", NOW, minute)
    assert not ledger.acquire_lease("reconcile", "b", NOW + timedelta(seconds=59), minute)
    assert ledger.acquire_lease("reconcile", "a", NOW + timedelta(seconds=30), minute)  # renewed
    assert not ledger.acquire_lease("reconcile", "b", NOW + timedelta(seconds=89), minute)
    assert ledger.acquire_lease("reconcile", "b", NOW + timedelta(seconds=91), minute)  # expired
    ledger.release_lease("reconcile", "a")  # not a's any more: nothing happens
    assert not ledger.acquire_lease("reconcile", "a", NOW + timedelta(seconds=92), minute)
    ledger.release_lease("reconcile", "b")
    assert ledger.acquire_lease("reconcile", "a", NOW + timedelta(seconds=93), minute)
    assert ledger.acquire_lease("other", "b", NOW + timedelta(seconds=93), minute)


def test_notes_and_cancel_requests_of_one_run_stay_apart_from_another_runs(
    ledger: RunLedger,
) -> None:
    other = run_of(WEEKLY, FIRST)
    ledger.add_note(RunNote(RUN, NOW, NoteLevel.INFO, "test", "mine"))
    ledger.add_note(RunNote(other, NOW, NoteLevel.WARNING, "test", "theirs"))
    assert [n.message for n in ledger.list_notes(RUN)] == ["mine"]
    assert [n.level for n in ledger.list_notes(other)] == [NoteLevel.WARNING]


def test_event_and_run_round_trip(ledger: RunLedger) -> None:
    event = parse_event(event_grid_event(PRE), ANY)
    run = Run.first_seen(RUN, NOW).after_event(event, NOW)
    stored = ledger.record_event(EventRecord.of(event, NOW), run)
    assert stored.version
    again = ledger.find_run(RUN)
    assert again == stored
    [record] = list(ledger.list_events(RUN))
    assert record == EventRecord.of(event, NOW)


def test_redelivered_event_is_refused_atomically(ledger: RunLedger) -> None:
    event = parse_event(event_grid_event(PRE), ANY)
    stored = ledger.record_event(
        EventRecord.of(event, NOW), Run.first_seen(RUN, NOW).after_event(event, NOW)
    )
    later = dataclasses.replace(stored, status=RunStatus.PREPARED, updated_at=NOW + timedelta(1))
    with pytest.raises(DuplicateEvent):
        ledger.record_event(EventRecord.of(event, NOW + timedelta(1)), later)
    assert ledger.find_run(RUN) == stored  # the run row did not change either


def test_stale_run_version_is_a_conflict_and_writes_nothing(ledger: RunLedger) -> None:
    pre = parse_event(event_grid_event(PRE), ANY)
    post = parse_event(event_grid_event(POST), ANY)
    first = ledger.record_event(
        EventRecord.of(pre, NOW), Run.first_seen(RUN, NOW).after_event(pre, NOW)
    )
    ledger.save_run(dataclasses.replace(first, platform_status="InProgress"))
    with pytest.raises(LedgerConflict):
        ledger.record_event(EventRecord.of(post, NOW), first.after_event(post, NOW))
    assert [e.kind for e in ledger.list_events(RUN)] == [EventKind.PRE]


def test_creating_a_run_twice_is_a_conflict(ledger: RunLedger) -> None:
    ledger.save_run(Run.first_seen(RUN, NOW))
    with pytest.raises(LedgerConflict):
        ledger.save_run(Run.first_seen(RUN, NOW))


def test_two_writers_on_one_version_only_one_wins(ledger: RunLedger) -> None:
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


def test_machine_rows_keep_prior_state_and_action_with_etags(ledger: RunLedger) -> None:
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


def test_machine_rows_saved_together_all_get_new_versions_in_order(ledger: RunLedger) -> None:
    stored = [ledger.save_machine(a_machine(RUN, f"web-{i:03d}")) for i in range(100)]
    marked = [
        m.answered("start accepted", NOW + timedelta(seconds=1))
        for m in (dataclasses.replace(s, action=MachineAction.STARTING) for s in stored)
    ]
    saved = ledger.save_machines(marked)
    assert [m.resource_id for m in saved] == [m.resource_id for m in marked]
    assert all(s.version not in (None, m.version) for s, m in zip(saved, stored, strict=True))
    for row in saved:
        assert ledger.find_machine(RUN, row.resource_id) == row
    # The new versions are the stored ones: each row can be written on with them.
    again = ledger.save_machine(dataclasses.replace(saved[7], action=MachineAction.STARTED))
    assert again.version != saved[7].version
    assert ledger.save_machines([]) == []


def test_the_machines_not_seen_running_leave_out_only_the_starts_settled_running(
    ledger: RunLedger,
) -> None:
    def row(name: str, action: MachineAction, power: str | None) -> MachineRecord:
        return ledger.save_machine(
            dataclasses.replace(a_machine(RUN, name), action=action, last_power_state=power)
        )

    row("settled", MachineAction.STARTED, "running")
    kept = [
        row("planned", MachineAction.PLANNED, None),
        row("starting", MachineAction.STARTING, "starting"),
        row("started-unread", MachineAction.STARTED, None),  # no power state: kept
        row("started-down", MachineAction.STARTED, "deallocated"),
        row("left-alone", MachineAction.LEFT_ALONE, "running"),
    ]
    ledger.save_machine(a_machine(RunId.of(MONTHLY, RUN.run_name), "planned"))  # another run
    listed = list(ledger.list_machines_not_seen_running(RUN))
    assert sorted(m.resource_id for m in listed) == sorted(m.resource_id for m in kept)
    assert {m.resource_id: m for m in listed} == {m.resource_id: m for m in kept}


def test_a_watch_round_is_its_own_row_checked_like_the_others(ledger: RunLedger) -> None:
    run = ledger.save_run(Run.first_seen(RUN, NOW))
    assert ledger.find_watch_round(RUN) is None
    first = ledger.save_watch_round(WatchRound(RUN, "verify:0:2026-12-01T02:20:00+00:00"))
    assert first.version is not None
    assert ledger.find_watch_round(RUN) == first
    with pytest.raises(LedgerConflict):  # created, but one exists
        ledger.save_watch_round(WatchRound(RUN, "verify:0:2026-12-01T02:20:01+00:00"))
    second = ledger.save_watch_round(
        dataclasses.replace(first, mark="verify:1:2026-12-01T02:21:00+00:00")
    )
    with pytest.raises(LedgerConflict):  # written on a version no longer stored
        ledger.save_watch_round(dataclasses.replace(first, mark="gate:0:2026-12-01T02:22:00+00:00"))
    assert ledger.find_watch_round(RUN) == second
    # The run's row, and the version its other writers hold, are untouched by the rounds.
    assert ledger.find_run(RUN) == run
    assert ledger.find_watch_round(RunId.of(MONTHLY, RUN.run_name)) is None


def test_one_machine_row_saved_together_is_checked_like_a_single_save(ledger: RunLedger) -> None:
    stored = ledger.save_machine(a_machine(RUN, "web-1"))
    (saved,) = ledger.save_machines([dataclasses.replace(stored, action=MachineAction.STARTING)])
    assert saved.version not in (None, stored.version)
    assert ledger.find_machine(RUN, stored.resource_id) == saved
    with pytest.raises(LedgerConflict):  # written on a version that is no longer the stored one
        ledger.save_machines([dataclasses.replace(stored, action=MachineAction.LEFT_ALONE)])
    with pytest.raises(LedgerConflict):  # created, but it exists
        ledger.save_machines([a_machine(RUN, "web-1")])
    (created,) = ledger.save_machines([a_machine(RUN, "web-2")])
    assert ledger.find_machine(RUN, created.resource_id) == created


def test_machine_rows_saved_together_are_all_or_nothing_when_one_changed_meanwhile(
    ledger: RunLedger,
) -> None:
    first, second, third = (ledger.save_machine(a_machine(RUN, f"web-{i}")) for i in range(3))
    # Another worker writes the second row after this one read it.
    theirs = ledger.save_machine(dataclasses.replace(second, action=MachineAction.LEFT_ALONE))
    ours = [dataclasses.replace(r, action=MachineAction.STARTING) for r in (first, second, third)]
    with pytest.raises(LedgerConflict):
        ledger.save_machines(ours)
    assert ledger.find_machine(RUN, first.resource_id) == first
    assert ledger.find_machine(RUN, second.resource_id) == theirs
    assert ledger.find_machine(RUN, third.resource_id) == third
    # A new row among them that exists already is a conflict too, and nothing is written.
    new = a_machine(RUN, "web-9")
    with pytest.raises(LedgerConflict):
        ledger.save_machines([ours[0], dataclasses.replace(new, resource_id=third.resource_id)])
    assert ledger.find_machine(RUN, first.resource_id) == first
    created, updated = ledger.save_machines([new, ours[0]])
    assert created.version is not None
    assert ledger.find_machine(RUN, new.resource_id) == created
    assert ledger.find_machine(RUN, first.resource_id) == updated


def test_rows_that_cannot_be_saved_in_one_go_are_refused_before_anything_is_written(
    ledger: RunLedger,
) -> None:
    other_run = run_of(MONTHLY, START)
    one, two = a_machine(RUN, "web-1"), a_machine(RUN, "web-2")
    with pytest.raises(ValueError, match="several runs"):
        ledger.save_machines([one, a_machine(other_run, "web-3")])
    with pytest.raises(ValueError, match="twice"):
        ledger.save_machines([one, dataclasses.replace(one, resource_id=one.resource_id.upper())])
    with pytest.raises(ValueError, match="at most 100"):
        ledger.save_machines([a_machine(RUN, f"web-{i:03d}") for i in range(101)])
    assert list(ledger.list_machines(RUN)) == []
    assert len(ledger.save_machines([one, two])) == 2


def test_cancel_requests_are_an_append_only_audit_in_time_order(ledger: RunLedger) -> None:
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


def test_add_machines_creates_only_missing_rows_in_batches(ledger: RunLedger) -> None:
    def machine(i: int) -> MachineRecord:
        return MachineRecord.planned(RUN, VM.replace("web-01", f"web-{i:03d}"), NOW)

    assert ledger.add_machines(machine(i) for i in range(150)) == 150
    # A retry after a crash: 100 of these exist, 60 are new.
    assert ledger.add_machines(machine(i) for i in range(50, 210)) == 60
    rows = list(ledger.list_machines(RUN))
    assert len(rows) == 210
    assert {r.action for r in rows} == {MachineAction.PLANNED}
    assert rows[0].history[0][1] == "Planned"


def machines_of(count: int) -> list[MachineId]:
    return [MachineId.parse(VM.replace("web-01", f"web-{i:03d}")) for i in range(count)]


def test_a_batch_cut_in_storage_order_reads_exactly_its_own_rows_at_once(
    ledger: RunLedger,
) -> None:
    machines = machines_of(30)
    ledger.add_machines(MachineRecord.planned(RUN, m.text, NOW) for m in machines)
    ordered = ledger.in_storage_order(reversed(machines))
    assert sorted(m.key for m in ordered) == sorted(m.key for m in machines)
    assert ledger.in_storage_order(machines) == ordered  # whatever order they come in
    batch = ordered[10:20]
    found = ledger.find_machines(RUN, batch)
    assert found == {m: ledger.find_machine(RUN, m.text) for m in batch}
    assert all(row.version for row in found.values())


def test_scattered_machines_are_read_right_and_machines_without_rows_are_left_out(
    ledger: RunLedger,
) -> None:
    machines = machines_of(12)
    ledger.add_machines(MachineRecord.planned(RUN, m.text, NOW) for m in machines[:10])
    scattered = ledger.in_storage_order(machines)[::3]  # some of them without rows
    found = ledger.find_machines(RUN, scattered)
    with_rows = [m for m in scattered if m in machines[:10]]
    assert set(found) == set(with_rows)
    assert [found[m].resource_id for m in with_rows] == [m.text for m in with_rows]
    assert ledger.find_machines(RUN, []) == {}


def test_machines_asked_in_another_case_are_found_under_the_ids_asked(ledger: RunLedger) -> None:
    ledger.save_machine(a_machine(RUN))
    asked = MachineId.parse(VM.replace("web-01", "WEB-01").replace("/app/", "/APP/"))
    found = ledger.find_machines(RUN, [asked])
    assert list(found) == [asked]
    assert found[asked].resource_id == VM


def test_rows_read_in_a_batch_are_only_the_runs_own_and_carry_their_versions(
    ledger: RunLedger,
) -> None:
    later = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261201031500"))
    machines = machines_of(5)
    ledger.add_machines(MachineRecord.planned(RUN, m.text, NOW) for m in machines[:3])
    ledger.add_machines(MachineRecord.planned(later, m.text, NOW) for m in machines)
    found = ledger.find_machines(RUN, machines)
    assert set(found) == set(machines[:3])
    assert {row.run_id for row in found.values()} == {RUN}
    # The version read is the row's ETag: a write on it succeeds once, a second is a conflict.
    row = found[machines[0]]
    moved = ledger.save_machine(dataclasses.replace(row, action=MachineAction.STARTING))
    assert ledger.find_machines(RUN, [machines[0]])[machines[0]] == moved
    with pytest.raises(LedgerConflict):
        ledger.save_machine(dataclasses.replace(row, action=MachineAction.LEFT_ALONE))


def test_claims_are_per_machine_across_runs_with_etags(ledger: RunLedger) -> None:
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


def test_a_claim_is_deleted_only_as_read_and_then_is_gone(ledger: RunLedger) -> None:
    machine = MachineId.parse(VM)
    stored = ledger.save_claim(MachineClaim(resource_id=VM, owner_run=RUN.text))
    changed = ledger.save_claim(stored.released_by(RUN.text))
    with pytest.raises(LedgerConflict):
        ledger.delete_claim(stored)  # an old copy: the claim changed since
    assert ledger.find_claim(machine) == changed
    ledger.delete_claim(changed)
    assert ledger.find_claim(machine) is None
    ledger.delete_claim(changed)  # removed already: nothing to do
    with pytest.raises(LedgerConflict):
        ledger.save_claim(changed)  # an update of a removed claim is no create
    assert ledger.find_claim(machine) is None
    recreated = ledger.save_claim(MachineClaim(resource_id=VM, owner_run=RUN.text))
    assert ledger.find_claim(machine) == recreated


def test_notes_keep_their_order_and_level(ledger: RunLedger) -> None:
    for minute, level in ((2, NoteLevel.ERROR), (1, NoteLevel.INFO)):
        ledger.add_note(
            RunNote(RUN, NOW + timedelta(minutes=minute), level, "test", f"note {minute}")
        )
    notes = list(ledger.list_notes(RUN))
    assert [n.message for n in notes] == ["note 1", "note 2"]
    assert notes[1].level is NoteLevel.ERROR


def test_list_runs_finds_every_run_row(ledger: RunLedger) -> None:
    second = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261208030000"))
    ledger.save_run(Run.first_seen(RUN, NOW))
    ledger.save_run(Run.first_seen(second, NOW))
    ledger.add_note(RunNote(RUN, NOW, NoteLevel.INFO, "test", "not a run"))
    assert sorted(r.run_id.run_name for r in ledger.list_runs()) == [
        "20261201030000",
        "20261208030000",
    ]


def test_run_fields_of_later_steps_round_trip(ledger: RunLedger) -> None:
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


def test_refused_events_round_trip_newest_first(ledger: RunLedger) -> None:
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


def test_a_run_keeps_t_from_its_events_not_its_name(ledger: RunLedger) -> None:
    local = CORRELATION_ID.replace("20261201030000", "20261201040000")
    event = parse_event(event_grid_event(PRE, CorrelationId=local), ANY)
    run = Run.first_seen(event.run, NOW).after_event(event, NOW)
    ledger.record_event(EventRecord.of(event, NOW), run)
    again = ledger.find_run(event.run)
    assert again is not None
    assert again.run_id.run_name == "20261201040000"
    assert again.start == START
    assert again.scheduled_start == START


# The run index: pages, filters, open runs, retention -----------------------------------


def test_pages_come_newest_first_and_continue_where_the_last_one_ended(
    ledger: RunLedger,
) -> None:
    runs = weekly_history(ledger, 7)
    first, after = page(ledger, top=3)
    assert [r.run_id for r in first] == runs[::-1][:3]
    assert after is not None
    second, after = page(ledger, top=3, after=after)
    assert [r.run_id for r in second] == runs[::-1][3:6]
    third, after = page(ledger, top=3, after=after)
    assert [r.run_id for r in third] == runs[:1]
    assert after is None
    # Index rows carry the run row's version, so a reader can write the run back.
    assert first[0].version == ledger.find_run(runs[-1]).version  # type: ignore[union-attr]


def test_a_configuration_is_one_range_by_name_or_by_id(ledger: RunLedger) -> None:
    weekly = weekly_history(ledger, 3)
    elsewhere = save(ledger, run_of(WEEKLY_ELSEWHERE, FIRST + timedelta(days=1))).run_id
    monthly = save(ledger, run_of(MONTHLY, FIRST + timedelta(days=2))).run_id
    by_name, _ = page(ledger, top=10, configuration="Weekly-Linux")
    assert {r.run_id for r in by_name} == {*weekly, elsewhere}
    by_id, _ = page(ledger, top=10, configuration=WEEKLY.text.upper().replace("SUB", "sub"))
    assert {r.run_id for r in by_id} == set(weekly)
    assert [r.run_id for r in page(ledger, top=10, configuration="monthly")[0]] == [monthly]


def test_a_status_change_moves_the_run_from_one_status_range_to_the_other(
    ledger: RunLedger,
) -> None:
    first, second = weekly_history(ledger, 2)
    stored = ledger.find_run(first)
    assert stored is not None
    ledger.save_run(
        dataclasses.replace(stored, status=RunStatus.PREPARING, platform_status="InProgress")
    )
    assert [r.run_id for r in page(ledger, status="preparing")[0]] == [first]
    assert [r.run_id for r in page(ledger, status="InProgress")[0]] == [first]
    assert [r.run_id for r in page(ledger, status="Scheduled")[0]] == [second]
    # Status and configuration together.
    assert page(ledger, status="Preparing", configuration="monthly")[0] == []
    assert [r.run_id for r in page(ledger, status="Preparing", configuration=WEEKLY.text)[0]] == [
        first
    ]


def test_a_date_range_is_a_key_range(ledger: RunLedger) -> None:
    runs = weekly_history(ledger, 6)
    found, _ = page(
        ledger,
        top=10,
        start_from=FIRST + timedelta(weeks=2),
        start_to=FIRST + timedelta(weeks=4),
    )
    assert [r.run_id for r in found] == [runs[3], runs[2]]


def test_a_continuation_from_another_listing_is_refused(ledger: RunLedger) -> None:
    weekly_history(ledger, 3)
    _, after = page(ledger, top=1)
    assert after is not None
    with pytest.raises(ValueError, match="continuation"):
        page(ledger, top=1, status="Scheduled", after=after)


def test_a_run_is_found_by_configuration_name_and_run_name(ledger: RunLedger) -> None:
    start = FIRST + timedelta(weeks=1)
    weekly = save(ledger, run_of(WEEKLY, start)).run_id
    elsewhere = save(ledger, run_of(WEEKLY_ELSEWHERE, start)).run_id
    save(ledger, run_of(WEEKLY, FIRST))
    found = ledger.find_runs_named("weekly-linux", weekly.run_name)
    assert {r.run_id for r in found} == {weekly, elsewhere}
    assert ledger.find_runs_named("weekly-linux", "20991231000000") == []


def test_completed_runs_leave_the_open_runs(ledger: RunLedger) -> None:
    first, second, third = weekly_history(ledger, 3)
    stored = ledger.find_run(second)
    assert stored is not None
    ledger.save_run(dataclasses.replace(stored, status=RunStatus.COMPLETED))
    assert {r.run_id for r in ledger.list_open_runs()} == {first, third}
    assert ledger.list_known_configurations() == [WEEKLY]


def test_old_runs_are_removed_in_bounded_batches_with_all_their_rows(
    ledger: RunLedger,
) -> None:
    runs = weekly_history(ledger, 5)
    machine = MachineRecord(
        run_id=runs[0],
        resource_id=f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/"
        "Microsoft.Compute/virtualMachines/web-01",
        kind=MachineKind.VIRTUAL_MACHINE,
        prior_power_state="deallocated",
        action=MachineAction.PLANNED,
        updated_at=NOW,
    )
    ledger.save_machine(machine)
    ledger.save_watch_round(WatchRound(runs[0], "finish:3:2026-01-03T05:00:00+00:00"))
    cutoff = FIRST + timedelta(weeks=3)  # runs 0, 1 and 2 are older
    first_batch = ledger.remove_runs_before(cutoff, limit=2)
    second_batch = ledger.remove_runs_before(cutoff, limit=2)
    assert len(first_batch) == 2 and len(second_batch) == 1
    assert {*first_batch, *second_batch} == {runs[0], runs[1], runs[2]}
    assert ledger.remove_runs_before(cutoff, limit=2) == []
    assert ledger.find_run(runs[0]) is None
    assert list(ledger.list_machines(runs[0])) == []
    assert ledger.find_watch_round(runs[0]) is None
    assert {r.run_id for r in page(ledger, top=10)[0]} == {runs[3], runs[4]}
    assert {r.run_id for r in ledger.list_open_runs()} == {runs[3], runs[4]}
    assert ledger.find_runs_named("weekly-linux", runs[0].run_name) == []
    assert MachineId.parse(machine.resource_id)  # the VM itself is not the ledger's to remove


def test_removed_completed_runs_are_in_no_listing_by_status_configuration_or_name(
    ledger: RunLedger,
) -> None:
    def completed(run_id: RunId) -> Run:
        return ledger.save_run(
            dataclasses.replace(
                Run.first_seen(run_id, NOW), status=RunStatus.COMPLETED, platform_status="Succeeded"
            )
        )

    old = [completed(run_of(WEEKLY, FIRST + timedelta(weeks=n))).run_id for n in range(3)]
    kept = completed(run_of(WEEKLY, FIRST + timedelta(weeks=5)))
    removed = ledger.remove_runs_before(FIRST + timedelta(weeks=4), limit=10)
    assert set(removed) == set(old)
    for filters in (
        {},
        {"status": "Completed"},
        {"status": "Succeeded"},
        {"configuration": "weekly-linux"},
        {"configuration": WEEKLY.text},
    ):
        assert [r.run_id for r in page(ledger, top=10, **filters)[0]] == [kept.run_id], filters
    assert all(ledger.find_runs_named("weekly-linux", r.run_name) == [] for r in old)
    assert list(ledger.list_open_runs()) == []


def test_a_run_written_between_two_pages_neither_repeats_nor_skips_a_run(
    ledger: RunLedger,
) -> None:
    runs = weekly_history(ledger, 4)
    first, after = page(ledger, top=2)
    assert [r.run_id for r in first] == [runs[3], runs[2]]
    newer = save(ledger, run_of(WEEKLY, FIRST + timedelta(weeks=10))).run_id
    second, after = page(ledger, top=2, after=after)
    assert [r.run_id for r in second] == [runs[1], runs[0]]
    assert after is None
    assert page(ledger, top=1)[0][0].run_id == newer


def test_a_continuation_that_is_not_one_is_refused(ledger: RunLedger) -> None:
    weekly_history(ledger, 2)
    with pytest.raises(ValueError, match="continuation"):
        page(ledger, top=1, after="not a continuation")


def test_removing_old_runs_removes_their_events_notes_and_cancel_requests(
    ledger: RunLedger,
) -> None:
    old = RUN
    kept = run_of(WEEKLY, START + timedelta(weeks=1))
    for run_id in (old, kept):
        start, end = run_id.scheduled_start, run_id.scheduled_start + timedelta(hours=4)
        envelope = event_grid_event(
            PRE,
            CorrelationId=run_id.text,
            StartDateTime=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            EndDateTime=end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            CancellationCutOffDateTime=None,
        )
        event = parse_event(envelope, ANY)
        ledger.record_event(EventRecord.of(event, NOW), Run.first_seen(run_id, NOW))
        ledger.add_note(RunNote(run_id, NOW, NoteLevel.INFO, "test", "a note"))
        ledger.add_cancel_request(
            CancelRequest(
                run_id=run_id,
                request_id="r1",
                requested_at=NOW,
                requested_by="oid:ops",
                reason="bad patch",
                dry_run=True,
                outcome=CancelOutcome.WOULD_CANCEL,
                window_opens_at=START - timedelta(minutes=40),
                window_closes_at=START - timedelta(minutes=11),
            )
        )
        ledger.save_machine(a_machine(run_id))
    assert ledger.remove_runs_before(START + timedelta(days=1), limit=10) == [old]
    assert ledger.find_run(old) is None
    for rows in (
        ledger.list_events(old),
        ledger.list_notes(old),
        ledger.list_cancel_requests(old),
        ledger.list_machines(old),
    ):
        assert list(rows) == []
    assert ledger.find_run(kept) is not None
    assert len(list(ledger.list_events(kept))) == 1
    assert len(list(ledger.list_notes(kept))) == 1
    assert len(list(ledger.list_cancel_requests(kept))) == 1
    assert len(list(ledger.list_machines(kept))) == 1


def test_the_index_of_runs_stored_before_it_is_built_once(ledger: RunLedger) -> None:
    runs = weekly_history(ledger, 2)
    first = ledger.ensure_indexed()
    assert first in (0, 2)  # the runs above were indexed as they were saved
    assert ledger.ensure_indexed() == 0
    assert [r.run_id for r in page(ledger)[0]] == runs[::-1]
