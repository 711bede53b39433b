"""The orchestration's rules with in-memory fakes of our ports and a clock the queue moves.

The same scenarios run against the sandbox and Azurite in tests/scenarios/; these pin down the
decisions at their boundaries quickly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.domain.errors import AzureCallFailed, NotificationFailed
from shared.domain.events import EventKind, parse_event
from shared.domain.ids import MachineId, RunId
from shared.domain.machines import MachinePower, PowerState
from shared.domain.policy import OptOutTag, OrchestrationPolicy
from shared.domain.runs import MachineAction, MachineClaim, MachineRecord, NoteLevel, RunStatus
from shared.domain.tasks import Task, TaskKind
from shared.services.intake import follow_up, take_in_event
from shared.services.orchestration import Orchestrator
from tests.builders import (
    CORRELATION_ID,
    POST,
    PRE,
    START,
    SUBSCRIPTION,
    FixedClock,
    InMemoryRunLedger,
    event_grid_event,
)
from tests.fakes import (
    FakeCanceller,
    FakeGraph,
    FakeHeartbeats,
    FakeMachines,
    FakeReports,
    ScheduledQueue,
)

RUN = RunId.parse(CORRELATION_ID)
ANY = frozenset(EventKind)


def vm(name: str) -> MachineId:
    return MachineId.parse(
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/app/providers/Microsoft.Compute/"
        f"virtualMachines/{name}"
    )


ARC = MachineId.parse(
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/onprem/providers/"
    "Microsoft.HybridCompute/machines/arc-01"
)


class World:
    """The app's use cases wired to fakes, driven the way Event Grid and the queue drive it."""

    def __init__(self, **policy: Any) -> None:
        self.clock = FixedClock(START - timedelta(minutes=35))
        self.ledger = InMemoryRunLedger()
        self.queue = ScheduledQueue(self.clock)
        self.graph = FakeGraph()
        self.machines = FakeMachines()
        self.canceller = FakeCanceller()
        self.reports = FakeReports()
        self.heartbeats = FakeHeartbeats()
        defaults: dict[str, Any] = {
            "verify_interval": timedelta(seconds=60),
            "arg_retry": timedelta(seconds=30),
            "start_batch_size": 2,
            "start_concurrency": 4,
        }
        self.orchestrator = Orchestrator(
            ledger=self.ledger,
            queue=self.queue,
            graph=self.graph,
            machines=self.machines,
            canceller=self.canceller,
            reports=self.reports,
            clock=self.clock,
            policy=OrchestrationPolicy(**{**defaults, **policy}),
            heartbeats=self.heartbeats,
        )

    def fleet(self, run: RunId = RUN, **states: PowerState) -> list[MachineId]:
        ids = []
        for name, state in states.items():
            machine = vm(name)
            if machine.key not in self.machines.vms:
                self.machines.add(machine, state)
            ids.append(machine)
        self.graph.machines.setdefault(run.key, []).extend(ids)
        return ids

    def deliver(self, kind: str, **overrides: Any) -> None:
        event = parse_event(event_grid_event(kind, **overrides), ANY)
        outcome = take_in_event(event, self.ledger, self.clock)
        task = follow_up(event, outcome)
        if task is not None:
            self.queue.send(task)

    def work(self, until_minutes_before_start: float | None = None) -> list[Task]:
        until = None
        if until_minutes_before_start is not None:
            until = START - timedelta(minutes=until_minutes_before_start)
        return self.queue.drain(self.orchestrator.handle, until=until)

    def row(self, machine: MachineId, run: RunId = RUN) -> MachineRecord:
        found = self.ledger.find_machine(run, machine.text)
        assert found is not None
        return found


def crash_once_when_start_is_recorded(world: World) -> list[bool]:
    """Our own ledger fails the first write of an accepted start (alone or with others): the
    worker dies after Azure accepted the call and before it recorded so. Returns the list that
    says whether it crashed."""
    crashed: list[bool] = []
    real_save = world.ledger.save_machine
    real_save_together = world.ledger.save_machines

    def crash_if_recording_a_start(machines: Sequence[MachineRecord]) -> None:
        for machine in machines:
            accepted = machine.history and machine.history[-1][2] == "start accepted"
            if machine.action is MachineAction.STARTING and accepted and not crashed:
                crashed.append(True)
                raise RuntimeError("worker died after calling Azure")

    def save(machine: MachineRecord) -> MachineRecord:
        crash_if_recording_a_start([machine])
        return real_save(machine)

    def save_together(machines: Sequence[MachineRecord]) -> list[MachineRecord]:
        crash_if_recording_a_start(machines)
        return real_save_together(machines)

    world.ledger.save_machine = save  # type: ignore[method-assign]
    world.ledger.save_machines = save_together  # type: ignore[method-assign]
    return crashed


def test_stopped_vms_are_started_and_running_ones_left_alone() -> None:
    world = World()
    web, db, app = world.fleet(
        web=PowerState.DEALLOCATED, db=PowerState.RUNNING, app=PowerState.STOPPED
    )
    world.deliver(PRE)
    world.work()
    assert world.machines.count("start", web) == 1
    assert world.machines.count("start", app) == 1
    assert world.machines.count("start", db) == 0
    assert world.row(web).action is MachineAction.STARTED
    assert world.row(web).prior_power_state == "deallocated"
    assert world.row(db).action is MachineAction.LEFT_ALONE
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.PREPARED
    assert run.gate_outcome == "Passed"


def test_post_event_deallocates_only_what_the_app_started() -> None:
    world = World()
    web, db = world.fleet(web=PowerState.DEALLOCATED, db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.machines.count("deallocate", web) == 1
    assert world.machines.count("deallocate", db) == 0
    assert world.machines.vms[db.key].state is PowerState.RUNNING
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    report = world.reports.get_report(RUN)
    assert report is not None
    by_id = {m["resourceId"]: m for m in report["machines"]}
    assert by_id[web.text]["powerStateBefore"] == "deallocated"
    assert by_id[web.text]["powerStateAfter"] == "deallocated"
    assert by_id[web.text]["action"] == "Deallocated"
    assert [a["action"] for a in by_id[web.text]["actions"]] == [
        "Planned",
        "Starting",
        "Started",
        "Deallocating",
        "Deallocated",
    ]
    assert by_id[db.text]["action"] == "LeftAlone"
    assert by_id[db.text]["patch"]["status"] == "Succeeded"
    assert TaskKind.NOTIFY in [t.kind for t in world.queue.sent]


def test_ten_deliveries_of_pre_and_post_act_once() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    for _ in range(10):
        world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    for _ in range(10):
        world.deliver(POST)
    world.work()
    assert world.machines.calls.count(("start", web.key)) == 1
    assert world.machines.calls.count(("deallocate", web.key)) == 1


def test_post_before_pre_after_the_start_starts_nothing_and_completes_the_run() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    world.deliver(PRE)
    world.work()
    assert world.machines.calls == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED


def test_a_post_event_before_the_start_is_held_and_the_real_pre_event_still_starts_vms() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(POST)  # at T−35, for a run Resource Graph does not show ended
    assert world.work() == []
    world.deliver(PRE)
    world.work(until_minutes_before_start=14)
    assert world.machines.count("start", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.PREPARED
    # The real post event, after the run, wraps it up: the VM the app started is stopped.
    world.clock.current = START + timedelta(hours=2)
    world.deliver(POST)
    world.work()
    assert world.machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None and run.status is RunStatus.COMPLETED


def test_a_pre_event_far_ahead_asks_azure_nothing_until_t_minus_40() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    listed: list[datetime] = []
    list_run_machines = world.graph.list_run_machines

    def listing(run: RunId, subscriptions: Any) -> Any:
        listed.append(world.clock.now())
        return list_run_machines(run, subscriptions)

    world.graph.list_run_machines = listing  # type: ignore[method-assign]
    world.clock.current = START - timedelta(days=30)
    world.deliver(PRE)
    hops = world.work(until_minutes_before_start=40.5)
    # 30 days in hops of at most 6 (a queue message hides 7 days at most), nothing asked.
    assert [t.kind for t in hops] == [TaskKind.PREPARE] * 5
    assert listed == [] and world.machines.calls == []
    world.work(until_minutes_before_start=14)
    assert listed[0] == START - timedelta(minutes=40)
    assert world.machines.count("start", web) == 1


def test_pre_event_after_t_minus_15_still_starts_but_notes_it() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.clock.current = START - timedelta(minutes=12)
    world.deliver(PRE)
    world.work()
    assert world.machines.count("start", web) == 1
    assert any("T-15" in n.message for n in world.ledger.notes)


def test_pre_event_after_patching_began_starts_nothing() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.clock.current = START + timedelta(seconds=1)
    world.deliver(PRE)
    world.work()
    assert world.machines.calls == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "SkippedLatePreEvent"


def test_arc_machines_are_not_startable_and_never_called() -> None:
    world = World()
    world.graph.machines[RUN.key] = [ARC]
    world.deliver(PRE)
    world.work()
    assert world.row(ARC).action is MachineAction.NOT_STARTABLE
    assert world.machines.calls == []


def test_opted_out_machines_are_skipped() -> None:
    world = World(opt_out_tag=OptOutTag.parse("UpdateAutomation=skip"))
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.machines.vms[web.key].tags = {"updateautomation": "SKIP"}
    world.deliver(PRE)
    world.work()
    assert world.row(web).action is MachineAction.SKIPPED_OPT_OUT
    assert world.machines.calls == []


def test_arg_lag_is_waited_out_before_t_minus_15() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.graph.hidden_rounds[RUN.key] = 3
    world.deliver(PRE)
    world.work()
    assert world.machines.count("start", web) == 1
    prepares = [t for t in world.queue.sent if t.kind is TaskKind.PREPARE]
    assert [t.round for t in prepares] == [0, 1, 2, 3]


def test_failed_starts_over_budget_cancel_the_run_inside_the_window() -> None:
    world = World(failure_budget_percent=10)
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    world.deliver(PRE)
    world.work()
    assert world.canceller.cancelled == [RUN.key]
    assert world.row(api).action is MachineAction.START_FAILED
    assert world.row(api).error_code == "AllocationFailed"
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED  # cancelled, then wrapped up
    assert run.gate_outcome == "Cancelled"
    assert run.cancel_source == "AppGate"
    assert world.machines.count("deallocate", web) == 1  # what was started is stopped again
    [audit] = world.ledger.cancels
    assert audit.requested_by == "app:gate"


def test_the_gate_confirms_a_cancel_azure_only_accepted() -> None:
    world = World(failure_budget_percent=10)
    _, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    world.deliver(PRE)
    kinds = [t.kind for t in world.work()]
    assert kinds.count(TaskKind.CONFIRM_CANCEL) == 1  # 202 "Cancel": read back later
    run = world.ledger.find_run(RUN)
    assert run is not None and run.platform_status == "Cancelled"
    assert any("Azure confirms the cancel" in n.message for n in world.ledger.notes)


@pytest.mark.parametrize(
    "failure",
    [
        AzureCallFailed("Maintenance", 503, "ServerBusy", "busy"),
        AzureCallFailed("Maintenance", 429, "SubscriptionRequestsThrottled", "later"),
    ],
)
def test_a_gate_cancel_that_fails_is_reported_and_never_sent_again(
    failure: AzureCallFailed,
) -> None:
    world = World(failure_budget_percent=10)
    _, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    world.canceller.fail_puts = failure
    world.deliver(PRE)
    world.work()
    assert world.canceller.puts == [RUN.key]
    run = world.ledger.find_run(RUN)
    assert run is not None and run.gate_outcome == "CancelFailed"
    assert any(n.level is NoteLevel.ERROR and n.source == "gate" for n in world.ledger.notes)


def test_failures_within_budget_pass_the_gate() -> None:
    world = World(failure_budget_percent=50)
    _, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    world.deliver(PRE)
    world.work()
    assert world.canceller.cancelled == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Passed"
    assert "1 of 2" in (run.gate_detail or "")


def test_gate_outside_the_window_records_too_late_and_does_not_cancel() -> None:
    world = World()
    (api,) = world.fleet(api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    # The event's cut-off closes the window before the gate can run.
    world.deliver(PRE, CancellationCutOffDateTime="2026-12-01T02:26:00Z")
    world.work()
    assert world.canceller.cancelled == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "TooLateToCancel"
    assert "closed at 2026-12-01T02:25:00+00:00" in (run.gate_detail or "")


def test_a_crash_after_the_start_call_does_not_start_twice() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    crash_once_when_start_is_recorded(world)
    world.deliver(PRE)
    with pytest.raises(RuntimeError):
        world.work()
    # The queue hands the failed message out again.
    # The queue hands the failed message out again at once: the intent is fresh (its worker
    # might still be calling), so the retry leaves it to verify.
    world.queue.send(Task(TaskKind.START, RUN, (web,)))
    world.work()
    assert world.machines.count("start", web) == 1
    assert world.row(web).action is MachineAction.STARTED
    assert world.row(web).history[-1][2] == "seen running"


def test_a_retry_after_the_intent_lease_checks_the_vm_instead_of_starting_it() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    crash_once_when_start_is_recorded(world)
    world.deliver(PRE)
    with pytest.raises(RuntimeError):
        world.work(until_minutes_before_start=34.9)
    world.queue._heap.clear()  # verify was lost too
    world.clock.advance(timedelta(minutes=6))  # past the intent's lease
    world.queue.send(Task(TaskKind.START, RUN, (web,)))
    world.work()
    assert world.machines.count("start", web) == 1
    assert "not started again" in world.row(web).history[-1][2]


def test_a_worker_that_died_before_its_start_call_is_made_up_for() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    real_start = world.machines.start
    died: list[bool] = []

    def die_once(machine: MachineId, still_wanted: Any = None) -> Any:
        if not died:
            died.append(True)
            raise RuntimeError("worker died after writing Starting")
        return real_start(machine)

    world.machines.start = die_once  # type: ignore[method-assign]
    world.deliver(PRE)
    with pytest.raises(RuntimeError):
        world.work()
    world.work()  # verify keeps looking; once the intent is stale it starts the VM again
    assert world.machines.count("start", web) == 1
    assert world.row(web).action is MachineAction.STARTED
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Passed"


def test_overlapping_runs_share_a_vm_and_ownership_passes_on() -> None:
    world = World()
    second = RunId.parse(CORRELATION_ID.replace("20261201030000", "20261201031500"))
    (shared,) = world.fleet(shared=PowerState.DEALLOCATED)
    world.fleet(second, shared=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START - timedelta(minutes=20)
    second_event = {
        "CorrelationId": second.text,
        "StartDateTime": "2026-12-01T03:15:00Z",
        "CancellationCutOffDateTime": "2026-12-01T03:05:00Z",
    }
    world.deliver(PRE, **second_event)
    world.work(until_minutes_before_start=-1)
    assert world.row(shared, second).action is MachineAction.SHARED_WITH_RUN
    # The first run ends while the second still needs the VM: it is handed over, not stopped.
    world.clock.current = START + timedelta(minutes=5)
    world.deliver(POST)
    world.work(until_minutes_before_start=-20)
    assert world.machines.count("deallocate", shared) == 0
    assert world.row(shared).action is MachineAction.HANDED_OVER
    assert world.row(shared, second).action is MachineAction.STARTED
    world.clock.current = START + timedelta(minutes=30)
    world.deliver(POST, **second_event)
    world.work()
    assert world.machines.count("start", shared) == 1
    assert world.machines.count("deallocate", shared) == 1
    # Nobody owns or needs it any more: no claim is left behind.
    assert world.ledger.find_claim(shared) is None


def ledger_reads(world: World, method: str) -> list[str]:
    """Records each call of the ledger's read `method` (the key of what it reads: a machine,
    a run) the app makes from now on."""
    reads: list[str] = []
    real_read = getattr(world.ledger, method)

    def read(target: MachineId | RunId) -> Any:
        reads.append(target.key)
        return real_read(target)

    setattr(world.ledger, method, read)
    return reads


def claim_reads(world: World) -> list[str]:
    """Records each claim read (the machine's id) the app makes from now on."""
    return ledger_reads(world, "find_claim")


def test_each_weeks_run_claims_a_vm_without_reading_and_leaves_no_claim() -> None:
    world = World()
    web, app = world.fleet(web=PowerState.DEALLOCATED, app=PowerState.STOPPED)
    reads = claim_reads(world)
    world.deliver(PRE)
    world.work()
    assert reads == []  # created in one write each: no claim existed
    claim = world.ledger.find_claim(web)
    assert claim is not None
    assert (claim.owner_run, claim.needed_by) == (RUN.text, (RUN.text,))
    reads.clear()  # the test's own read just above
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.machines.count("deallocate", web) == 1
    assert world.machines.count("deallocate", app) == 1
    # Read once each, by its stop task: the hand-over check, and the release after Azure
    # accepted the deallocate starts from that read (the settlement reads none).
    assert sorted(reads) == sorted([web.key, app.key])
    assert world.ledger.find_claim(web) is None
    assert world.ledger.find_claim(app) is None


def test_a_deallocate_whose_answer_was_lost_still_releases_the_claim_when_settled() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    real_deallocate = world.machines.deallocate

    def applied_but_unanswered(machine: MachineId) -> None:
        real_deallocate(machine)
        raise AzureCallFailed("Compute", None, "ConnectionError", "no answer")

    world.machines.deallocate = applied_but_unanswered  # type: ignore[method-assign]
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.machines.count("deallocate", web) == 1
    assert world.row(web).action is MachineAction.DEALLOCATED
    assert world.ledger.find_claim(web) is None


def test_a_claim_left_by_an_older_version_is_read_and_taken_over() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.ledger.save_claim(MachineClaim(resource_id=web.text, owner_run=None, needed_by=()))
    reads = claim_reads(world)
    world.deliver(PRE)
    world.work()
    assert world.machines.count("start", web) == 1
    assert world.row(web).action is MachineAction.STARTED
    assert reads.count(web.key) == 1  # the create was a conflict: read once, then updated
    claim = world.ledger.find_claim(web)
    assert claim is not None
    assert claim.owner_run == RUN.text


def test_a_vm_running_before_the_run_is_never_stopped_even_if_started_elsewhere() -> None:
    world = World()
    (db,) = world.fleet(db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.machines.calls == []
    assert world.row(db).action is MachineAction.LEFT_ALONE


def test_health_check_reports_machines_without_a_heartbeat() -> None:
    world = World(
        log_analytics_workspace_id="0b5c8a52-3f3e-4d4c-9f1a-6f0d2b7e9c11",
        health_wait=timedelta(minutes=2),
    )
    db, cache = world.fleet(db=PowerState.RUNNING, cache=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.heartbeats.seen[db.key] = START + timedelta(hours=1, minutes=1)
    world.deliver(POST)
    world.work()
    report = world.reports.get_report(RUN)
    assert report is not None
    assert report["health"]["missing"] == [cache.text]
    assert report["health"]["expected"] == 2


def test_the_gate_waits_for_the_window_to_open_when_verify_finishes_early() -> None:
    world = World()
    (api,) = world.fleet(api=PowerState.DEALLOCATED)
    world.machines.vms[api.key].fails_with = "AllocationFailed"
    world.clock.current = START - timedelta(minutes=43)  # the pre event came 3 minutes early
    world.deliver(PRE)
    world.work(until_minutes_before_start=40.5)
    assert world.canceller.cancelled == []
    world.work()
    assert world.canceller.cancelled == [RUN.key]


def test_throttled_starts_are_retried_later_not_failed() -> None:
    world = World()
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    throttled: list[str] = []
    real_start = world.machines.start

    def throttle_first_calls(machine: MachineId, still_wanted: Any = None) -> Any:
        if len(throttled) < 3:
            throttled.append(machine.key)
            raise AzureCallFailed("Compute", 429, "TooManyRequests", "write limit")
        return real_start(machine)

    world.machines.start = throttle_first_calls  # type: ignore[method-assign]
    world.deliver(PRE)
    world.work()
    assert world.row(web).action is MachineAction.STARTED
    assert world.row(api).action is MachineAction.STARTED
    assert world.machines.count("start", web) == 1
    assert world.machines.count("start", api) == 1
    rounds = [t.round for t in world.queue.sent if t.kind is TaskKind.START]
    assert max(rounds) >= 1
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.gate_outcome == "Passed"


def test_with_snapshots_on_each_vm_is_snapshotted_before_it_is_started() -> None:
    world = World(snapshot_before_start=True)
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    assert [verb for verb, key in world.machines.calls if key == web.key] == ["snapshot", "start"]


def test_a_failing_webhook_never_holds_up_the_run() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)

    class DownWebhook:
        def send(self, summary: Any) -> None:
            raise NotificationFailed("webhook answered 503")

    world.orchestrator.notifier = DownWebhook()
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    with pytest.raises(NotificationFailed):
        world.work()  # the notify task fails and would be retried by the queue
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert world.reports.get_report(RUN) is not None
    assert world.machines.count("deallocate", web) == 1


def test_a_poisoned_task_is_noted_in_the_run_and_its_report() -> None:
    world = World()
    world.fleet(web=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    world.orchestrator.note_poisoned(Task(TaskKind.NOTIFY, RUN), dequeue_count=5)
    report = world.reports.get_report(RUN)
    assert report is not None
    assert report["notes"][-1]["source"] == "poison"
    assert "failed 5 times" in report["notes"][-1]["message"]
    assert any(n.source == "poison" for n in world.ledger.notes)


def test_a_start_answer_that_comes_after_wrap_up_began_does_not_undo_it() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    starting = world.row(web).moved_to(MachineAction.STARTING, world.clock.now(), "stale copy")
    # Meanwhile wrap-up deallocated the VM; then the old start answer arrives.
    world.ledger.save_machine(
        world.row(web).moved_to(MachineAction.DEALLOCATED, world.clock.now(), "deallocated")
    )
    with world.orchestrator._renewing() as renewer:
        world.orchestrator._call(
            starting,
            lambda: None,
            MachineAction.PLANNED,
            MachineAction.START_FAILED,
            "start accepted",
            renewer,
        )
    assert world.row(web).action is MachineAction.DEALLOCATED


def other_subscription_vm(name: str) -> MachineId:
    return MachineId.parse(
        "/subscriptions/0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f/resourceGroups/app/providers/"
        f"Microsoft.Compute/virtualMachines/{name}"
    )


def test_power_states_are_read_in_bulk_and_only_for_subscriptions_with_unsettled_vms() -> None:
    world = World()
    web, api = world.fleet(web=PowerState.DEALLOCATED, api=PowerState.DEALLOCATED)
    far = other_subscription_vm("far")
    world.machines.add(far, PowerState.DEALLOCATED)
    world.graph.machines[RUN.key].append(far)
    world.deliver(PRE)
    world.orchestrator.handle(Task(TaskKind.PREPARE, RUN))
    for batch in ((web, api), (far,)):
        world.orchestrator.handle(Task(TaskKind.START, RUN, batch))
    assert [verb for verb, _ in world.machines.reads] == ["get"] * 3  # one look before each start
    world.machines.vms[far.key].state = PowerState.STARTING  # still booting
    world.machines.reads.clear()
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=1))
    # One bulk read per subscription, not one read per VM.
    assert sorted(world.machines.reads) == sorted(
        [("list", web.subscription_id), ("list", far.subscription_id)]
    )
    assert world.row(web).action is MachineAction.STARTED
    world.machines.reads.clear()
    world.orchestrator.handle(Task(TaskKind.VERIFY, RUN, round=2))
    # web and api were seen running: only the subscription of the one still booting is read.
    assert world.machines.reads == [("list", far.subscription_id)]


def test_a_whole_run_reads_azure_at_most_twice_per_vm_started() -> None:
    world = World(start_batch_size=5)
    names = {f"vm{i:02d}": PowerState.DEALLOCATED for i in range(20)}
    machines = world.fleet(RUN, **names, db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    started = sum(world.machines.count("start", m) for m in machines)
    assert started == 20
    assert all(world.row(m).action is MachineAction.DEALLOCATED for m in machines[:20])
    assert len(world.machines.reads) <= 2 * started, world.machines.reads


class RoleOnResourceGroupsOnly(FakeMachines):
    """The app's role is assigned per resource group: the subscription-wide list is refused."""

    def list_power_states(
        self, subscription_id: str, machines: Iterable[MachineId]
    ) -> Iterator[tuple[MachineId, MachinePower]]:
        self.reads.append(("list", subscription_id))
        raise AzureCallFailed("Compute", 403, "AuthorizationFailed", "no read at the subscription")


def test_a_refused_bulk_read_falls_back_to_one_read_per_vm_and_the_run_still_wraps_up() -> None:
    world = World()
    world.machines = world.orchestrator.machines = RoleOnResourceGroupsOnly()
    web, db = world.fleet(web=PowerState.DEALLOCATED, db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    assert world.row(web).action is MachineAction.STARTED
    world.clock.current = START + timedelta(hours=1)
    world.deliver(POST)
    world.work()
    assert world.row(web).action is MachineAction.DEALLOCATED
    assert world.machines.count("deallocate", web) == 1
    assert world.machines.count("deallocate", db) == 0
    assert ("get", web.key) in world.machines.reads[2:]  # read alone after the refusal


def test_verify_records_how_a_start_ends_not_each_state_the_vm_passes_through() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work(until_minutes_before_start=34.5)  # started; the first verify round is later
    assert world.row(web).action is MachineAction.STARTING
    world.machines.vms[web.key].state = PowerState.STARTING  # still booting
    before = world.row(web)
    world.work(until_minutes_before_start=33.5)  # one verify round
    assert world.row(web) == before  # "starting" was read, and not written
    world.machines.vms[web.key].state = PowerState.RUNNING
    world.work()
    assert world.row(web).action is MachineAction.STARTED
    assert world.row(web).last_power_state == "running"
