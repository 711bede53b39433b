"""The reconcile tick with fakes of our ports: lost post events, platform cancels, missed pre
events, stuck tasks and overlapping ticks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from shared.domain.ids import ConfigurationId, RunId
from shared.domain.machines import PowerState
from shared.domain.platform import PlatformRun
from shared.domain.runs import MachineAction, Run, RunStatus
from shared.domain.tasks import TaskKind
from shared.services.reconcile import (
    LEASE,
    Reconciler,
)
from tests.builders import CONFIGURATION, CORRELATION_ID, POST, PRE, START, SUBSCRIPTION
from tests.unit.test_orchestration import World

RUN = RunId.parse(CORRELATION_ID)


def reconciler(world: World, **kw: object) -> Reconciler:
    return Reconciler(
        ledger=world.ledger,
        graph=world.graph,
        queue=world.queue,
        clock=world.clock,
        policy=world.orchestrator.policy,
        **kw,  # type: ignore[arg-type]
    )


def platform(status: str, message: str | None = None, run: RunId = RUN) -> PlatformRun:
    return PlatformRun(run_id=run, status=status, start=None, end=None, message=message)


def test_a_lost_post_event_is_made_up_for_by_wrap_up() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.clock.current = START + timedelta(hours=2)
    world.graph.runs = [platform("Succeeded")]
    summary = reconciler(world).tick()
    assert summary.handed_to_wrap_up == [RUN.text]
    world.work()
    assert world.machines.count("deallocate", web) == 1
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert run.platform_status == "Succeeded"
    # The next tick does not hand it over again.
    assert reconciler(world).tick().handed_to_wrap_up == []


def test_a_platform_cancelled_run_is_wrapped_up_and_its_source_recorded() -> None:
    world = World()
    (web,) = world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work()
    world.graph.runs = [
        platform("Canceled", "Maintenance schedule canceled due to internal platform failure")
    ]
    reconciler(world).tick()
    world.work()
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.cancel_source == "Platform"
    assert run.platform_status == "Cancelled"
    assert run.status is RunStatus.COMPLETED
    assert world.machines.count("deallocate", web) == 1


def test_a_run_without_a_pre_event_is_reported_missed_once_its_window_has_closed() -> None:
    world = World()
    ours = reconciler(world, target_configurations=(RUN.configuration,))
    # From T−40 the run may already read InProgress: that says nothing about the pre event.
    world.clock.current = START - timedelta(minutes=38)
    world.graph.runs = [platform("InProgress")]
    assert ours.tick().missed_pre_events == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert (run.platform_status, run.pre_event_missed) == ("InProgress", False)
    # One second before the window closes (T−10 minus the 60 s margin): still not missed.
    world.clock.current = START - timedelta(minutes=11, seconds=1)
    assert ours.tick().missed_pre_events == []
    world.clock.current = START - timedelta(minutes=11)
    assert ours.tick().missed_pre_events == [RUN.text]
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.pre_event_missed
    assert ours.tick().missed_pre_events == []
    notes = [n.message for n in world.ledger.notes if "no pre event" in n.message]
    assert len(notes) == 1
    assert "cancel window closed at 2026-12-01T02:49:00+00:00" in notes[0]


def test_a_run_found_by_the_reconciler_takes_t_from_its_record_not_its_name() -> None:
    """The run name is not documented to be UTC: a configuration in UTC+9 names the 03:00 UTC
    run 12:00. The record's startDateTime is T, so the window is judged from it."""
    world = World()
    ours = reconciler(world, target_configurations=(RUN.configuration,))
    world.clock.current = START - timedelta(minutes=5)  # past the window of the real T
    named_in_tokyo = RunId.of(RUN.configuration, "20261201120000")
    world.graph.runs = [
        dataclasses.replace(
            platform("Pending", run=named_in_tokyo), start=START.isoformat().replace("+00:00", "Z")
        )
    ]
    assert ours.tick().missed_pre_events == [named_in_tokyo.text]
    run = world.ledger.find_run(named_in_tokyo)
    assert run is not None
    assert run.scheduled_start == START


def test_a_pre_event_that_came_is_never_reported_missed_whatever_the_platform_says() -> None:
    world = World()
    world.graph.runs = [platform("InProgress")]
    world.deliver(PRE)
    world.clock.current = START + timedelta(minutes=5)
    assert reconciler(world).tick().missed_pre_events == []


def test_a_pending_run_past_its_window_without_a_pre_event_is_reported_missed() -> None:
    world = World()
    world.clock.current = START - timedelta(minutes=5)
    world.graph.runs = [platform("Pending")]
    summary = reconciler(world, target_configurations=(RUN.configuration,)).tick()
    assert summary.missed_pre_events == [RUN.text]


def test_a_cancelled_run_without_a_pre_event_is_not_reported_missed() -> None:
    world = World()
    world.clock.current = START + timedelta(minutes=5)
    world.graph.runs = [platform("Cancelled", "Maintenance cancelled due to platform failure")]
    summary = reconciler(world, target_configurations=(RUN.configuration,)).tick()
    assert summary.missed_pre_events == []


def test_a_run_the_app_cancelled_before_its_pre_event_is_not_reported_missed() -> None:
    world = World()
    world.ledger.save_run(
        dataclasses.replace(Run.first_seen(RUN, world.clock.now()), status=RunStatus.CANCELLED)
    )
    world.clock.current = START - timedelta(minutes=5)
    world.graph.runs = [platform("InProgress")]  # Resource Graph has not caught up yet
    assert reconciler(world).tick().missed_pre_events == []


def test_runs_of_configurations_the_app_does_not_manage_are_never_recorded() -> None:
    world = World()
    world.deliver(PRE)
    world.clock.current = START + timedelta(hours=2)
    foreign_configuration = ConfigurationId.parse(CONFIGURATION.replace("weekly-linux", "theirs"))
    foreign = RunId.parse(RUN.text.replace("weekly-linux", "theirs"))
    # A query that answers wider than asked (or an old infra that scoped by subscription).
    world.graph.runs = [
        platform("Succeeded"),
        platform("Cancelled", "Maintenance cancelled using cancellation API", run=foreign),
        platform("Failed", run=RunId.parse(foreign.text.replace(RUN.run_name, "20261201040000"))),
    ]
    summary = reconciler(world).tick()
    assert summary.platform_runs == 1
    assert [r.run_id.configuration.key for r in world.ledger.list_runs()] == [RUN.configuration.key]
    assert world.graph.runs_asked == [({RUN.configuration.key}, [SUBSCRIPTION])]
    assert foreign_configuration.key not in world.graph.runs_asked[0][0]
    assert not any(foreign.key in t.run_id.key for t in world.queue.sent)


def test_with_no_configuration_to_manage_nothing_is_read() -> None:
    world = World()
    assert reconciler(world).tick().platform_runs == 0
    assert world.graph.runs_asked == []


def test_runs_of_known_configurations_are_read_in_one_query_scoped_to_them() -> None:
    world = World()
    world.deliver(PRE)
    calls: list[tuple[object, list[str]]] = []
    real = world.graph.list_runs

    def recorded(configurations: Any, subscriptions: Sequence[str]) -> Iterator[PlatformRun]:
        calls.append((configurations, list(subscriptions)))
        return real(configurations, subscriptions)

    world.graph.list_runs = recorded  # type: ignore[method-assign]
    other = ConfigurationId.parse(CONFIGURATION.replace("weekly-linux", "monthly"))
    reconciler(world, target_configurations=(other,)).tick()
    [(configurations, subscriptions)] = calls
    assert {c.key for c in configurations} == {RUN.configuration.key, other.key}  # type: ignore[attr-defined]
    assert subscriptions == [RUN.configuration.subscription_id]


def test_overlapping_ticks_do_not_both_act() -> None:
    world = World()
    world.deliver(PRE)
    world.clock.current = START + timedelta(hours=2)
    world.graph.runs = [platform("Succeeded")]
    assert world.ledger.acquire_lease(
        LEASE, "another tick", world.clock.now(), timedelta(minutes=4)
    )
    assert reconciler(world).tick(past_due=True).skipped
    assert world.queue.sent == [t for t in world.queue.sent if t.kind is TaskKind.PREPARE]
    world.ledger.release_lease(LEASE, "another tick")
    tick = reconciler(world)
    assert not tick.tick().skipped
    # The tick gave its lease back: the next one, of the same instance, runs too.
    assert not tick.tick().skipped


def test_a_stuck_task_is_re_driven_once_then_reported() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.deliver(PRE)
    world.work(until_minutes_before_start=34.5)  # prepare and start ran; verify is lost
    world.queue._heap.clear()
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.status is RunStatus.PREPARING
    world.clock.current = START + timedelta(minutes=1)
    summary = reconciler(world).tick()
    assert summary.redriven == [RUN.text]
    assert [t.kind for t in world.queue.sent][-1] is TaskKind.GATE
    world.queue._heap.clear()  # the re-drive is lost too
    world.clock.current = START + timedelta(minutes=5)
    assert reconciler(world).tick().stuck == []  # not yet past the grace period
    world.clock.current = START + timedelta(minutes=20)
    assert reconciler(world).tick().stuck == [RUN.text]
    assert reconciler(world).tick().stuck == []  # reported once
    assert any(n.level.value == "Error" and "stuck" in n.message for n in world.ledger.notes)


def test_a_finished_run_that_owns_nothing_is_only_recorded() -> None:
    world = World()
    (db,) = world.fleet(db=PowerState.RUNNING)
    world.deliver(PRE)
    world.work()
    assert world.row(db).action is MachineAction.LEFT_ALONE
    world.clock.current = START + timedelta(hours=2)
    world.deliver(POST)
    world.work()
    world.graph.runs = [platform("Succeeded")]
    summary = reconciler(world).tick()
    assert summary.handed_to_wrap_up == []
    run = world.ledger.find_run(RUN)
    assert run is not None
    assert run.platform_status == "Succeeded"
    assert dataclasses.replace(run).status is RunStatus.COMPLETED


def test_a_pre_event_far_ahead_is_not_stuck_while_it_waits_for_t_minus_40() -> None:
    world = World()
    world.fleet(web=PowerState.DEALLOCATED)
    world.clock.current = START - timedelta(days=20)
    world.deliver(PRE)
    world.queue._heap.clear()  # even with its delayed task lost, it waits until T−40
    world.clock.current = START - timedelta(days=1)
    assert reconciler(world).tick().redriven == []
    world.clock.current = START - timedelta(minutes=31)
    assert reconciler(world).tick().redriven == []  # due at T−40: 9 minutes is not stuck yet
    world.clock.current = START - timedelta(minutes=29)
    assert reconciler(world).tick().redriven == [RUN.text]
    assert [t.kind for t in world.queue.sent][-1] is TaskKind.PREPARE


def test_runs_older_than_the_retention_are_removed_a_bounded_batch_a_tick() -> None:
    from shared.domain.runs import Run
    from shared.services.reconcile import RETENTION_BATCH

    world = World()
    configuration = ConfigurationId.parse(CONFIGURATION)
    now = world.clock.now()
    old = [
        RunId.of(configuration, (now - timedelta(days=100, hours=n)).strftime("%Y%m%d%H%M%S"))
        for n in range(RETENTION_BATCH + 3)
    ]
    recent = RunId.of(configuration, (now - timedelta(days=80)).strftime("%Y%m%d%H%M%S"))
    for run_id in [*old, recent]:
        world.ledger.save_run(
            dataclasses.replace(Run.first_seen(run_id, now), status=RunStatus.COMPLETED)
        )
    first = reconciler(world, retention=timedelta(days=90)).tick()
    assert len(first.removed) == RETENTION_BATCH
    second = reconciler(world, retention=timedelta(days=90)).tick()
    assert len(second.removed) == 3
    assert {*first.removed, *second.removed} == {r.text for r in old}
    assert world.ledger.find_run(recent) is not None
    assert reconciler(world, retention=timedelta(days=90)).tick().removed == []
